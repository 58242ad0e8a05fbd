//! `tasks` (SPEC §6): a small JSON API on the SDK router.
//!
//! - `GET /health` → `{"status":"ok"}`
//! - `GET /tasks` → the list; `POST /tasks` with `{"title": "..."}` → 201 and the new task
//! - `GET /tasks/{id}`, `DELETE /tasks/{id}` → the task / 204, or 404
//!
//! State is per worker process (each worker has its own list), shared by the worker's threads
//! through a `Mutex`: the recommended pattern for state in a ferricorn app.

use ferricorn_sdk::{App, AppConfig, HandlerResult, Params, Request, Response, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Serialize, Clone)]
struct Task {
    id: u64,
    title: String,
    done: bool,
}

#[derive(Deserialize)]
struct NewTask {
    title: String,
    #[serde(default)]
    done: bool,
}

#[derive(Default)]
struct Store {
    next_id: u64,
    tasks: BTreeMap<u64, Task>,
}

/// The tasks app: a router over a mutex-protected store.
pub struct Tasks {
    router: Router<Mutex<Store>>,
    store: Mutex<Store>,
}

const MAX_BODY: usize = 64 * 1024;

fn json(res: &mut Response<'_>, status: u16, value: &impl Serialize) -> HandlerResult {
    let mut body = serde_json::to_vec(value)?;
    body.push(b'\n');
    res.send(status, "application/json", &body)
}

fn error(res: &mut Response<'_>, status: u16, message: &str) -> HandlerResult {
    json(res, status, &serde_json::json!({ "error": message }))
}

fn health(
    _: &Mutex<Store>,
    _: &mut Request<'_>,
    res: &mut Response<'_>,
    _: &Params,
) -> HandlerResult {
    json(res, 200, &serde_json::json!({ "status": "ok" }))
}

fn list(
    store: &Mutex<Store>,
    _: &mut Request<'_>,
    res: &mut Response<'_>,
    _: &Params,
) -> HandlerResult {
    let tasks: Vec<Task> = store
        .lock()
        .map_err(|_| "store poisoned")?
        .tasks
        .values()
        .cloned()
        .collect();
    json(res, 200, &tasks)
}

fn create(
    store: &Mutex<Store>,
    req: &mut Request<'_>,
    res: &mut Response<'_>,
    _: &Params,
) -> HandlerResult {
    let body = match req.body_to_vec(MAX_BODY) {
        Ok(body) => body,
        Err(_) => return error(res, 413, "body too large"),
    };
    let new: NewTask = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => return error(res, 400, &format!("invalid task: {e}")),
    };
    let task = {
        let mut store = store.lock().map_err(|_| "store poisoned")?;
        store.next_id += 1;
        let task = Task {
            id: store.next_id,
            title: new.title,
            done: new.done,
        };
        store.tasks.insert(task.id, task.clone());
        task
    };
    json(res, 201, &task)
}

fn task_id(params: &Params) -> Option<u64> {
    params.get("id").and_then(|id| id.parse().ok())
}

fn show(
    store: &Mutex<Store>,
    _: &mut Request<'_>,
    res: &mut Response<'_>,
    params: &Params,
) -> HandlerResult {
    let task = task_id(params).and_then(|id| store.lock().ok()?.tasks.get(&id).cloned());
    match task {
        Some(task) => json(res, 200, &task),
        None => error(res, 404, "no such task"),
    }
}

fn delete(
    store: &Mutex<Store>,
    _: &mut Request<'_>,
    res: &mut Response<'_>,
    params: &Params,
) -> HandlerResult {
    let removed = task_id(params).and_then(|id| store.lock().ok()?.tasks.remove(&id));
    match removed {
        Some(_) => {
            res.start(204, &[])?;
            Ok(())
        }
        None => error(res, 404, "no such task"),
    }
}

impl App for Tasks {
    fn init(_config: &AppConfig) -> Result<Self, String> {
        let router = Router::new()
            .route("GET", "/health", health)
            .route("GET", "/tasks", list)
            .route("POST", "/tasks", create)
            .route("GET", "/tasks/{id}", show)
            .route("DELETE", "/tasks/{id}", delete);
        Ok(Tasks {
            router,
            store: Mutex::new(Store::default()),
        })
    }

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        self.router.dispatch(&self.store, req, res)
    }
}

ferricorn_sdk::export_app!(Tasks, "tasks");
