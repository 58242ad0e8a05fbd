//! A worker's WebSocket connections as the app reaches them: connection ids, each
//! connection's send queue ([`Outbox`]) and the notifier that wakes the event loop when
//! another thread queued something (an eventfd in the worker's epoll set). The app's
//! [`FcServer`] functions land here, from any thread: they never touch a connection itself,
//! only its queue, so a send to a connection that is gone finds no queue and fails cleanly.

use ferricorn_sdk::abi::{self, FcServer, FcStr};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::deflate::{self, Params};
use super::proto::{self, MAX_CONTROL};

/// Messages shorter than this (bytes) are sent uncompressed even with permessage-deflate.
const COMPRESS_FROM: usize = 64;
use crate::scoreboard::Place;

thread_local! {
    /// The connection whose message this thread is handing to the app (0: none).
    static DRIVING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs `f` (an app callback for connection `id`, on the thread driving it): sends to `id`
/// meanwhile wake nobody, since the driver flushes the connection after the callback.
pub fn driving<R>(id: u64, f: impl FnOnce() -> R) -> R {
    let outer = DRIVING.with(|d| d.replace(id));
    let result = f();
    DRIVING.with(|d| d.set(outer));
    result
}

/// The worker process's hub, made once at the worker's start ([`Hub::install`]).
static HUB: OnceLock<Hub> = OnceLock::new();

/// The functions given to the plugin's `attach` (ABI 1.4).
pub static SERVER: FcServer = FcServer {
    size: std::mem::size_of::<FcServer>() as u32,
    ws_send,
    ws_close,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What waits to go out on one connection, filled by any thread, emptied by the connection's
/// owner in the event loop.
#[derive(Default)]
struct Queue {
    /// Framed messages not handed to the connection yet.
    bytes: Vec<u8>,
    /// A close the app asked for (code, reason), sent after `bytes`.
    close: Option<(u16, Vec<u8>)>,
    /// The connection is gone or closing: nothing more is taken.
    closed: bool,
}

/// A connection that ended whose `ws_close` callback waits for a serving thread (the
/// timer closed it: the app is not called from the timer's thread).
#[derive(Debug)]
pub struct Ended {
    /// The connection's id.
    pub id: u64,
    /// The close code the app hears (1006 when no close frame came).
    pub code: u16,
    /// The close reason the app hears.
    pub reason: Vec<u8>,
}

/// One WebSocket connection's send queue.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Bytes the connection took from the queue and has not sent yet (its owner updates
    /// it): they count against `websocket_send_buffer` too.
    unsent: AtomicUsize,
    /// The epoll token the connection is served under (its slot and generation).
    token: AtomicU64,
    /// permessage-deflate's parameters, when negotiated: messages are compressed.
    deflate: Option<Params>,
}

impl Outbox {
    /// Moves what waits into `out` (appended); returns the close the app asked for, if any.
    pub fn take(&self, out: &mut Vec<u8>) -> Option<(u16, Vec<u8>)> {
        let mut queue = lock(&self.queue);
        if out.is_empty() {
            std::mem::swap(out, &mut queue.bytes);
        } else {
            out.append(&mut queue.bytes);
        }
        queue.close.take()
    }

    /// Takes no more messages (the connection is closing or gone).
    pub fn seal(&self) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        queue.bytes = Vec::new();
    }

    /// The connection holds `bytes` taken from the queue and not sent yet.
    pub fn set_unsent(&self, bytes: usize) {
        self.unsent.store(bytes, Ordering::Release);
    }

    /// The connection is now served under epoll `token`.
    pub fn attach(&self, token: u64) {
        self.token.store(token, Ordering::Release);
    }
}

/// The worker's WebSocket registry.
pub struct Hub {
    /// The last id given out (ids start at 1; 0 means none).
    last_id: AtomicU64,
    /// Open connections by id.
    conns: Mutex<HashMap<u64, Arc<Outbox>>>,
    /// Tokens of connections whose queue was filled by a thread other than their owner.
    ready: Mutex<Vec<u64>>,
    /// Connections whose `ws_close` callback waits for a serving thread.
    ended: Mutex<Vec<Ended>>,
    /// Wakes the worker's epoll_wait when `ready` or `ended` stops being empty.
    notifier: EventFd,
    /// `websocket_send_buffer`: bytes a connection's queue may hold.
    send_buffer: usize,
    /// This worker's scoreboard slot, for the message counters.
    place: Option<Place>,
}

impl Hub {
    /// Makes this process's hub (once; later calls return the first). Errors: eventfd(2)'s.
    /// `place`: the worker's scoreboard slot (messages sent are counted there).
    pub fn install(send_buffer: usize, place: Option<Place>) -> nix::Result<&'static Hub> {
        if let Some(hub) = HUB.get() {
            return Ok(hub);
        }
        let notifier =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(HUB.get_or_init(|| Hub {
            last_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            ready: Mutex::new(Vec::new()),
            ended: Mutex::new(Vec::new()),
            notifier,
            send_buffer,
            place,
        }))
    }

    /// This process's hub, once installed.
    pub fn get() -> Option<&'static Hub> {
        HUB.get()
    }

    /// The notifier's descriptor, for the worker's epoll set (readable when connections
    /// have messages queued by other threads: see [`Hub::take_ready`]).
    pub fn notifier(&self) -> BorrowedFd<'_> {
        self.notifier.as_fd()
    }

    /// A new connection id, for a request the app may accept as a WebSocket.
    pub fn next_id(&self) -> u64 {
        self.last_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Opens the queue of accepted connection `id`, served under epoll `token`, sending
    /// compressed messages when `deflate` was negotiated.
    pub fn open(&self, id: u64, token: u64, deflate: Option<Params>) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            deflate,
            queue: Mutex::new(Queue::default()),
            unsent: AtomicUsize::new(0),
            token: AtomicU64::new(token),
        });
        lock(&self.conns).insert(id, Arc::clone(&outbox));
        outbox
    }

    /// Connection `id` is gone: its queue is sealed and forgotten (sends fail from now on).
    pub fn close(&self, id: u64) {
        if let Some(outbox) = lock(&self.conns).remove(&id) {
            outbox.seal();
        }
    }

    /// The tokens of connections with messages queued by other threads since the last call;
    /// resets the notifier.
    pub fn take_ready(&self) -> Vec<u64> {
        let _ = self.notifier.read();
        std::mem::take(&mut *lock(&self.ready))
    }

    /// Hands the app's `ws_close` for `ended` to the serving threads (see
    /// [`Hub::take_ended`]) and wakes one.
    pub fn defer_close_callback(&self, ended: Ended) {
        lock(&self.ended).push(ended);
        let _ = self.notifier.write(1);
    }

    /// The connections whose `ws_close` callback waits, taken by a serving thread after the
    /// notifier woke it.
    pub fn take_ended(&self) -> Vec<Ended> {
        std::mem::take(&mut *lock(&self.ended))
    }

    fn outbox(&self, id: u64) -> Option<Arc<Outbox>> {
        lock(&self.conns).get(&id).cloned()
    }

    /// Tells the event loop that `outbox` has something to send.
    fn notify(&self, outbox: &Outbox) {
        let mut ready = lock(&self.ready);
        ready.push(outbox.token.load(Ordering::Acquire));
        if ready.len() == 1 {
            let _ = self.notifier.write(1);
        }
    }

    /// [`FcServer::ws_send`].
    pub fn send(&self, id: u64, opcode: i32, data: &[u8]) -> i32 {
        let kind = match opcode {
            abi::FC_WS_TEXT if std::str::from_utf8(data).is_ok() => Data::Text,
            abi::FC_WS_BINARY => Data::Binary,
            _ => return abi::FC_ERR_INVALID,
        };
        if data.len() + 14 > self.send_buffer {
            return abi::FC_ERR_TOO_LARGE;
        }
        let Some(outbox) = self.outbox(id) else {
            return abi::FC_ERR_CLOSED;
        };
        let was_empty = {
            let mut queue = lock(&outbox.queue);
            if queue.closed || queue.close.is_some() {
                return abi::FC_ERR_CLOSED;
            }
            let unsent = outbox.unsent.load(Ordering::Acquire);
            if unsent + queue.bytes.len() + data.len() + 14 > self.send_buffer {
                return abi::FC_ERR_WOULD_BLOCK;
            }
            let was_empty = queue.bytes.is_empty();
            match &outbox.deflate {
                // Small messages gain little; RFC 7692 lets a message go uncompressed.
                Some(params) if data.len() >= COMPRESS_FROM => {
                    let mut compressed = Vec::with_capacity(data.len() / 2 + 16);
                    deflate::deflate_message(params, data, &mut compressed);
                    proto::frame_with(&mut queue.bytes, OpCode::Data(kind), &compressed, true);
                }
                _ => proto::frame(&mut queue.bytes, OpCode::Data(kind), data),
            }
            was_empty
        };
        if let Some(place) = &self.place {
            let counters = &place.mine().counters;
            counters.ws_messages_out.fetch_add(1, Ordering::Relaxed);
        }
        if was_empty && DRIVING.with(|d| d.get()) != id {
            self.notify(&outbox);
        }
        abi::FC_OK
    }

    /// [`FcServer::ws_close`].
    pub fn request_close(&self, id: u64, code: i32, reason: &[u8]) -> i32 {
        let valid = matches!(code, 1000 | 1001 | 1008 | 1011 | 3000..=4999);
        if !valid || std::str::from_utf8(reason).is_err() {
            return abi::FC_ERR_INVALID;
        }
        let Some(outbox) = self.outbox(id) else {
            return abi::FC_ERR_CLOSED;
        };
        {
            let mut queue = lock(&outbox.queue);
            if queue.closed || queue.close.is_some() {
                return abi::FC_ERR_CLOSED;
            }
            let reason = cut_utf8(reason, MAX_CONTROL - 2).to_vec();
            queue.close = Some((code as u16, reason));
        }
        self.notify(&outbox);
        abi::FC_OK
    }
}

/// The longest start of `text` (UTF-8) of at most `max` bytes that ends on a character.
fn cut_utf8(text: &[u8], max: usize) -> &[u8] {
    let mut end = text.len().min(max);
    while end > 0 && end < text.len() && (text[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    &text[..end]
}

unsafe extern "C" fn ws_send(conn: u64, opcode: i32, data: *const u8, len: usize) -> i32 {
    let Some(hub) = Hub::get() else {
        return abi::FC_ERR_CLOSED;
    };
    if data.is_null() && len > 0 {
        return abi::FC_ERR_INVALID;
    }
    let data = match len {
        0 => &[][..],
        // SAFETY: the plugin passes `len` readable bytes at `data` for the call (ABI 1.4).
        _ => unsafe { std::slice::from_raw_parts(data, len) },
    };
    hub.send(conn, opcode, data)
}

unsafe extern "C" fn ws_close(conn: u64, code: i32, reason: FcStr) -> i32 {
    let Some(hub) = Hub::get() else {
        return abi::FC_ERR_CLOSED;
    };
    // SAFETY: the plugin passes a valid FcStr for the call (ABI 1.4).
    let reason = unsafe { reason.as_bytes() }.unwrap_or(&[]);
    hub.request_close(conn, code, reason)
}

#[cfg(test)]
mod tests {
    use super::cut_utf8;

    #[test]
    fn reasons_are_cut_on_a_character() {
        assert_eq!(cut_utf8("héllo".as_bytes(), 2), b"h");
        assert_eq!(cut_utf8("héllo".as_bytes(), 3), "hé".as_bytes());
        assert_eq!(cut_utf8(b"abc", 10), b"abc");
    }
}
