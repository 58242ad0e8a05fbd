//! `chat`: WebSocket chat rooms within one worker process.
//!
//! - `GET /rooms/{room}/socket` with a WebSocket upgrade joins `room`; every text or binary
//!   message a member sends goes to every member of the room (the sender too).
//! - `POST /rooms/{room}/messages` sends the request body to every member, from the HTTP
//!   request's thread (a push outside any WebSocket callback); the answer says how many got
//!   it, and how many were skipped because their send queue was full (they read too slowly).
//! - `GET /rooms/{room}` answers the number of members.
//! - With `app.config.tick_ms`, a thread of the app's own sends `tick N` to every member of
//!   every room each `tick_ms` milliseconds (a push from a thread the server does not know).
//!
//! Rooms live in one worker: members on other workers are not reached. Fanning out across
//! workers (or machines) takes a broker all workers subscribe to (Redis pub/sub, NATS, a
//! database's LISTEN/NOTIFY); ferricorn does not provide one.

use ferricorn_sdk::router::Params;
use ferricorn_sdk::{
    App, AppConfig, HandlerResult, Message, Request, Response, Router, SendError, WebSocket,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Members of each room, and each member's room.
#[derive(Default)]
struct Rooms {
    members: HashMap<String, BTreeSet<WebSocket>>,
    room_of: HashMap<WebSocket, String>,
}

fn lock(rooms: &Mutex<Rooms>) -> MutexGuard<'_, Rooms> {
    rooms.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who got a message.
#[derive(Default)]
struct Delivery {
    delivered: usize,
    full: usize,
}

/// Sends `message` to every member of `room` (outside the lock: a send never blocks, but
/// the member list may be long).
fn broadcast(rooms: &Mutex<Rooms>, room: &str, message: Message<'_>) -> Delivery {
    let members: Vec<WebSocket> = lock(rooms)
        .members
        .get(room)
        .map(|m| m.iter().copied().collect())
        .unwrap_or_default();
    let mut delivery = Delivery::default();
    for ws in members {
        let sent = match message {
            Message::Text(text) => ws.send_text(text),
            Message::Binary(data) => ws.send_binary(data),
        };
        match sent {
            Ok(()) => delivery.delivered += 1,
            Err(SendError::WouldBlock) => delivery.full += 1,
            Err(_) => {}
        }
    }
    delivery
}

/// The chat app: the rooms, and the ticker thread's stop flag.
pub struct Chat {
    rooms: Arc<Mutex<Rooms>>,
    router: Router<Chat>,
    stop: Arc<AtomicBool>,
}

fn join(
    chat: &Chat,
    _: &mut Request<'_>,
    res: &mut Response<'_>,
    p: &Params,
    ws: WebSocket,
) -> HandlerResult {
    let room = p.get("room").unwrap_or_default().to_string();
    res.accept_websocket(None)?;
    let mut rooms = lock(&chat.rooms);
    rooms.members.entry(room.clone()).or_default().insert(ws);
    rooms.room_of.insert(ws, room);
    Ok(())
}

fn post(chat: &Chat, req: &mut Request<'_>, res: &mut Response<'_>, p: &Params) -> HandlerResult {
    let body = req.body_to_vec(1 << 20)?;
    let room = p.get("room").unwrap_or_default();
    let message = match std::str::from_utf8(&body) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(&body),
    };
    let d = broadcast(&chat.rooms, room, message);
    let json = format!("{{\"delivered\":{},\"full\":{}}}\n", d.delivered, d.full);
    res.send(200, "application/json", json.as_bytes())
}

fn count(chat: &Chat, _: &mut Request<'_>, res: &mut Response<'_>, p: &Params) -> HandlerResult {
    let room = p.get("room").unwrap_or_default();
    let n = lock(&chat.rooms).members.get(room).map_or(0, BTreeSet::len);
    res.send(
        200,
        "application/json",
        format!("{{\"members\":{n}}}\n").as_bytes(),
    )
}

/// Sends `tick N` to every member every `every`, until `stop`.
fn ticker(rooms: Arc<Mutex<Rooms>>, every: Duration, stop: Arc<AtomicBool>) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(every);
        n += 1;
        let names: Vec<String> = lock(&rooms).members.keys().cloned().collect();
        let text = format!("tick {n}");
        for room in names {
            broadcast(&rooms, &room, Message::Text(&text));
        }
    }
}

impl App for Chat {
    const WEBSOCKET: bool = true;

    fn init(config: &AppConfig) -> Result<Self, String> {
        let rooms = Arc::new(Mutex::new(Rooms::default()));
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(ms) = config.get("tick_ms") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("app.config.tick_ms: not a number: {ms}"))?;
            let (rooms, stop) = (Arc::clone(&rooms), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("chat-ticker".into())
                .spawn(move || ticker(rooms, Duration::from_millis(ms.max(1)), stop))
                .map_err(|e| format!("ticker thread: {e}"))?;
        }
        let router = Router::new()
            .websocket("/rooms/{room}/socket", join)
            .route("POST", "/rooms/{room}/messages", post)
            .route("GET", "/rooms/{room}", count);
        Ok(Chat {
            rooms,
            router,
            stop,
        })
    }

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        self.router.dispatch(self, req, res)
    }

    fn ws_message(&self, ws: WebSocket, message: Message<'_>) -> HandlerResult {
        let room = lock(&self.rooms).room_of.get(&ws).cloned();
        if let Some(room) = room {
            broadcast(&self.rooms, &room, message);
        }
        Ok(())
    }

    fn ws_close(&self, ws: WebSocket, _code: u16, _reason: &str) {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.room_of.remove(&ws) {
            if let Some(members) = rooms.members.get_mut(&room) {
                members.remove(&ws);
                if members.is_empty() {
                    rooms.members.remove(&room);
                }
            }
        }
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

ferricorn_sdk::export_app!(Chat, "chat");
