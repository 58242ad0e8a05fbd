//! `tasks`: a small JSON API on the SDK router, backed by SQLite (rusqlite with its bundled
//! SQLite: nothing to install).
//!
//! - `GET /health` → `{"status":"ok"}`
//! - `GET /tasks[?limit=N]` → the first N tasks (default 100, at most 1000) by id;
//!   `POST /tasks` with `{"title": "...", "done": false}` → 201 and the new task
//! - `GET /tasks/{id}`, `DELETE /tasks/{id}` → the task / 204, or 404
//!
//! `app.config.database` is the SQLite file (default `tasks.sqlite3` in the working
//! directory). Init creates the schema and switches the file to WAL mode; every serving
//! thread then opens its own connection on first use ([`PerThread`], the SDK's way to hold
//! per-thread resources). All workers share the file, so every worker sees every task, and
//! tasks survive worker restarts, reloads and server restarts.

use ferricorn_sdk::{App, AppConfig, HandlerResult, Params, PerThread, Request, Response, Router};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Clone)]
struct Task {
    id: i64,
    title: String,
    done: bool,
}

#[derive(Deserialize)]
struct NewTask {
    title: String,
    #[serde(default)]
    done: bool,
}

/// One connection per serving thread.
type Db = PerThread<Connection>;

/// The tasks app: a router over per-thread SQLite connections.
pub struct Tasks {
    router: Router<Db>,
    db: Db,
}

const MAX_BODY: usize = 64 * 1024;
/// How long a writer waits for another to finish (workers and threads share the file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn open(path: &str) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| format!("tasks: database {path}: {e}"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
        .map_err(|e| format!("tasks: database {path}: {e}"))?;
    Ok(conn)
}

fn error(res: &mut Response<'_>, status: u16, message: &str) -> HandlerResult {
    res.json(status, &serde_json::json!({ "error": message }))
}

fn task(row: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: row.get(0)?,
        title: row.get(1)?,
        done: row.get(2)?,
    })
}

fn health(_: &Db, _: &mut Request<'_>, res: &mut Response<'_>, _: &Params) -> HandlerResult {
    res.json(200, &serde_json::json!({ "status": "ok" }))
}

fn list(db: &Db, req: &mut Request<'_>, res: &mut Response<'_>, _: &Params) -> HandlerResult {
    let limit: i64 = req
        .query("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(0, 1000);
    let tasks = db.with(|conn| {
        let mut statement =
            conn.prepare_cached("SELECT id, title, done FROM tasks ORDER BY id LIMIT ?1")?;
        let rows = statement.query_map([limit], task)?;
        rows.collect::<rusqlite::Result<Vec<Task>>>()
    })??;
    res.json(200, &tasks)
}

fn create(db: &Db, req: &mut Request<'_>, res: &mut Response<'_>, _: &Params) -> HandlerResult {
    let new: NewTask = match req.json(MAX_BODY) {
        Ok(new) => new,
        Err(e) => return error(res, e.status(), &format!("invalid task: {e}")),
    };
    let task = db.with(|conn| {
        conn.prepare_cached("INSERT INTO tasks (title, done) VALUES (?1, ?2) RETURNING id")?
            .query_row(params![new.title, new.done], |row| row.get(0))
            .map(|id| Task {
                id,
                title: new.title,
                done: new.done,
            })
    })??;
    res.json(201, &task)
}

fn task_id(params: &Params) -> Option<i64> {
    params.get("id").and_then(|id| id.parse().ok())
}

fn show(db: &Db, _: &mut Request<'_>, res: &mut Response<'_>, params: &Params) -> HandlerResult {
    let Some(id) = task_id(params) else {
        return error(res, 404, "no such task");
    };
    let found = db.with(|conn| {
        conn.prepare_cached("SELECT id, title, done FROM tasks WHERE id = ?1")?
            .query_row([id], task)
            .optional()
    })??;
    match found {
        Some(task) => res.json(200, &task),
        None => error(res, 404, "no such task"),
    }
}

fn delete(db: &Db, _: &mut Request<'_>, res: &mut Response<'_>, params: &Params) -> HandlerResult {
    let Some(id) = task_id(params) else {
        return error(res, 404, "no such task");
    };
    let removed = db.with(|conn| {
        conn.prepare_cached("DELETE FROM tasks WHERE id = ?1")?
            .execute([id])
    })??;
    if removed == 0 {
        return error(res, 404, "no such task");
    }
    res.start(204, &[])?;
    Ok(())
}

impl App for Tasks {
    fn init(config: &AppConfig) -> Result<Self, String> {
        let path = config
            .get("database")
            .unwrap_or("tasks.sqlite3")
            .to_string();
        let conn = open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| {
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS tasks (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        title TEXT NOT NULL,
                        done INTEGER NOT NULL DEFAULT 0
                    )",
                )
            })
            .map_err(|e| format!("tasks: database {path}: {e}"))?;
        let router = Router::new()
            .route("GET", "/health", health)
            .route("GET", "/tasks", list)
            .route("POST", "/tasks", create)
            .route("GET", "/tasks/{id}", show)
            .route("DELETE", "/tasks/{id}", delete);
        Ok(Tasks {
            router,
            db: PerThread::new(move || open(&path)),
        })
    }

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        self.router.dispatch(&self.db, req, res)
    }
}

ferricorn_sdk::export_app!(Tasks, "tasks");
