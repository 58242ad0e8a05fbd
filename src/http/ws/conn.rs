//! The WebSocket session's driver: the I/O around the protocol machine ([`super::proto`]).
//! It reads the client's frames, hands whole messages to the app (`ws_message`, on the
//! thread driving the connection, through the same bracket as `handle`), sends the
//! machine's replies and what the app queued in the connection's [`Outbox`] from any thread,
//! pings an idle client every `websocket_ping_interval`, and ends the connection with the
//! closing handshake (or at a timeout), telling the app once (`ws_close`).

use super::hub::{Ended, Hub, Outbox};
use super::proto::{code, Closing, Event, Machine, Payload};
use crate::access_log::UpgradeRequest;
use crate::http::h1::{Scratch, Switched};
use crate::logging;
use crate::transport::{Backlog, Next, Readiness, Transport};
use crate::worker::call::{app_call, TIMER_THREAD};
use crate::worker::context::Context;
use ferricorn_sdk::abi;
use std::sync::Arc;
use std::time::Instant;

/// Most bytes read per recv(2): a 16 KiB message and its header in one read.
const READ_CHUNK: usize = 64 * 1024;
/// Close code the app hears when the connection ended without a close frame (RFC 6455
/// §7.1.5: never sent on the wire).
const ABNORMAL: u16 = 1006;
/// Close code the app hears when the client's close frame had none (RFC 6455 §7.1.5).
const NO_STATUS: u16 = 1005;

/// One WebSocket connection.
pub struct Conn {
    /// The socket, its TLS session and the names of its two ends.
    pub transport: Transport,
    /// The id the app knows it by.
    id: u64,
    machine: Machine,
    /// Client bytes not parsed yet.
    input: Vec<u8>,
    /// What other threads queued for this connection.
    outbox: Arc<Outbox>,
    /// Bytes the socket has not taken yet.
    out: Backlog,
    /// When the session's current wait times out (see [`expired`]).
    pub deadline: Instant,
    /// A ping went out and its pong has not come back.
    awaiting_pong: bool,
    /// How the connection ended, for the app's `ws_close`: code and reason.
    ended: Option<(u16, Vec<u8>)>,
    /// The request that opened it and when, for the access log line at the close (access
    /// logging on), and the bytes sent since.
    logged: Option<Box<(UpgradeRequest, Instant, u64)>>,
}

impl Conn {
    /// The session of an upgraded connection (`switched`: its transport, the app's id for
    /// it, the bytes the client sent after its request), served under epoll `token`.
    pub fn new(ctx: &Context, switched: Switched, token: u64) -> Conn {
        let Switched {
            mut transport,
            id,
            leftover: input,
            request,
            deflate,
        } = switched;
        let hub = Hub::get().expect("a WebSocket is accepted only once the hub is installed");
        // Messages go out as they are made (nginx sets tcp_nodelay on upgraded connections).
        transport.no_delay();
        let outbox = hub.open(id, token, deflate);
        let machine = Machine::new(ctx.websocket.max_message);
        ctx.count_websocket(1);
        Conn {
            transport,
            id,
            machine: match deflate {
                Some(_) => machine.with_deflate(),
                None => machine,
            },
            input,
            outbox,
            out: Backlog::default(),
            deadline: Instant::now() + ctx.websocket.ping_interval,
            awaiting_pong: false,
            ended: None,
            logged: request.map(|r| Box::new((*r, Instant::now(), 0))),
        }
    }

    /// Output waits for the client to make room.
    pub fn sending(&self) -> bool {
        !self.out.is_empty()
    }

    /// The connection is now served under epoll `token` (its slot and generation).
    pub fn attach(&self, token: u64) {
        self.outbox.attach(token);
    }
}

/// Serves what the connection has: reads and handles the client's frames, delivers
/// messages, sends replies and queued messages. Returns when it would block or must close.
pub fn drive(ctx: &Context, conn: &mut Conn, scratch: &mut Scratch, ready: Readiness) -> Next {
    let now = scratch.now();
    let mut closing = None;
    if ready.readable || ready.hangup || !conn.input.is_empty() {
        // The thread's buffer takes the input while the connection is driven: between
        // reads a connection keeps only the start of a frame not complete yet.
        let mut input = scratch.lend_buffer();
        input.extend_from_slice(&conn.input);
        conn.input = input;
        closing = read(ctx, conn, now);
        if closing.is_none() {
            handle_frames(ctx, conn, scratch);
        }
        let input = std::mem::take(&mut conn.input);
        conn.input = input.as_slice().to_vec();
        scratch.give_back_buffer(input);
    }
    let next = closing.unwrap_or_else(|| flush(ctx, conn, now));
    if next == Next::Close {
        conn.outbox.seal();
    }
    next
}

/// Reads what the socket has into the input. `Some` when the connection must close (the
/// client left or the read failed).
fn read(ctx: &Context, conn: &mut Conn, now: Instant) -> Option<Next> {
    if conn.machine.closing() == Closing::Done {
        return None;
    }
    loop {
        match conn.transport.io().recv_up_to(&mut conn.input, READ_CHUNK) {
            Ok((0, _)) => {
                conn.ended.get_or_insert((ABNORMAL, Vec::new()));
                return Some(Next::Close);
            }
            Ok((n, short)) => {
                ctx.count_bytes(n, 0);
                conn.awaiting_pong = false;
                if conn.out.is_empty() && conn.machine.closing() == Closing::Open {
                    conn.deadline = now + ctx.websocket.ping_interval;
                }
                if short {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                conn.ended.get_or_insert((ABNORMAL, Vec::new()));
                return Some(Next::Close);
            }
        }
    }
}

/// Runs the machine over the input, delivering whole messages to the app in order.
fn handle_frames(ctx: &Context, conn: &mut Conn, scratch: &mut Scratch) {
    let mut pos = 0;
    loop {
        let (used, event) = conn.machine.next(&mut conn.input[pos..]);
        match &event {
            Event::Incomplete => break,
            Event::Handled => {}
            Event::Pong => conn.awaiting_pong = false,
            Event::Message { text, payload } => {
                let range = match payload {
                    Payload::Input(range) => Some(pos + range.start..pos + range.end),
                    Payload::Assembled => None,
                };
                deliver(ctx, conn, scratch, *text, range);
                take_outbox(conn);
            }
            Event::Closed(peer) => {
                let reason = conn.machine.peer_reason().to_vec();
                conn.ended
                    .get_or_insert((peer.unwrap_or(NO_STATUS), reason));
            }
            Event::Failed(failure) => {
                conn.ended.get_or_insert((*failure, Vec::new()));
            }
        }
        pos += used;
        if matches!(event, Event::Closed(_) | Event::Failed(_)) {
            pos = conn.input.len();
            break;
        }
    }
    conn.input.drain(..pos);
}

/// Gives one message to the app (`range` in the input, or the machine's assembled one).
fn deliver(
    ctx: &Context,
    conn: &mut Conn,
    scratch: &mut Scratch,
    text: bool,
    range: Option<std::ops::Range<usize>>,
) {
    let opcode = if text {
        abi::FC_WS_TEXT
    } else {
        abi::FC_WS_BINARY
    };
    let data = match &range {
        Some(range) => &conn.input[range.clone()],
        None => conn.machine.message(),
    };
    ctx.count_ws_message_in();
    // Sends to this connection from the callback need no wakeup: it is flushed next.
    let (status, timing) = super::hub::driving(conn.id, || {
        // The thread's clock reading (after its wakeup or its last app call), as for requests.
        app_call(ctx, scratch.thread(), scratch.now(), || {
            ctx.app.ws_message(conn.id, opcode, data)
        })
    });
    scratch.set_now(timing.finished);
    if range.is_none() {
        conn.machine.message_taken();
    }
    if status != abi::FC_OK && conn.machine.close(code::INTERNAL, b"") {
        // As gunicorn's "Error handling request": the app's own log line, if any, says why.
        logging::error(format_args!(
            "Error handling WebSocket message on connection {} from {}: the app returned {status}; closing with 1011",
            conn.id,
            conn.transport.remote.addr()
        ));
        conn.ended.get_or_insert((code::INTERNAL, Vec::new()));
        conn.outbox.seal();
    }
}

/// Moves what the app queued (and its close, after it) behind the machine's frames, so
/// that frames go out in the order they were made: an echo queued by a callback before a
/// later frame failed the connection still precedes the close.
fn take_outbox(conn: &mut Conn) {
    if conn.machine.closing() != Closing::Open {
        return;
    }
    if let Some((code, reason)) = conn.outbox.take(&mut conn.machine.out) {
        conn.machine.close(code, &reason);
        conn.ended.get_or_insert((code, reason));
        conn.outbox.seal();
    }
}

/// Moves the machine's replies and the app's queued messages (and close) to the socket.
fn flush(ctx: &Context, conn: &mut Conn, now: Instant) -> Next {
    take_outbox(conn);
    let bytes = std::mem::take(&mut conn.machine.out);
    if !bytes.is_empty() {
        conn.out.push(&bytes);
    }
    let had = conn.out.len();
    let sent = conn.out.send(&mut conn.transport.io());
    ctx.count_bytes(0, had - conn.out.len());
    if let Some(logged) = &mut conn.logged {
        logged.2 += (had - conn.out.len()) as u64;
    }
    conn.outbox.set_unsent(conn.out.len());
    match sent {
        Err(_) => {
            conn.ended.get_or_insert((ABNORMAL, Vec::new()));
            Next::Close
        }
        Ok(false) => {
            if conn.out.len() < had {
                conn.deadline = now + ctx.stall_timeout;
            }
            Next::Wait
        }
        // All sent: the server closes the TCP connection first once both close frames
        // have passed (RFC 6455 §7.1.1).
        Ok(true) if conn.machine.closing() == Closing::Done => Next::Close,
        Ok(true) => {
            if conn.machine.closing() == Closing::Sent && had > 0 {
                conn.deadline = now + ctx.stall_timeout;
            }
            Next::Wait
        }
    }
}

/// The timer's look at a connection whose deadline passed: closes (true) one whose pong,
/// closing handshake or stalled output timed out; pings one that was quiet for
/// `websocket_ping_interval` (false: it goes on).
pub fn expired(ctx: &Context, conn: &mut Conn, now: Instant) -> bool {
    if now < conn.deadline {
        return false;
    }
    if conn.awaiting_pong || !conn.out.is_empty() || conn.machine.closing() != Closing::Open {
        conn.ended.get_or_insert((ABNORMAL, Vec::new()));
        return true;
    }
    conn.machine.ping(b"ferricorn");
    conn.awaiting_pong = true;
    conn.deadline = now + ctx.stall_timeout;
    flush(ctx, conn, now) == Next::Close
}

/// A stopping worker keeps its WebSocket connections until `graceful_timeout` (see
/// [`going_away`]): never idle.
pub fn idle_at_stop(_ctx: &Context, _conn: &mut Conn, _now: Instant) -> bool {
    false
}

/// The worker is stopping for good: starts the closing handshake with 1001 (Going Away) so
/// that the client reconnects to a new worker. True when the connection can close at once.
pub fn going_away(ctx: &Context, conn: &mut Conn, now: Instant) -> bool {
    if conn.machine.close(code::GOING_AWAY, b"server restarting") {
        conn.ended.get_or_insert((code::GOING_AWAY, Vec::new()));
        conn.outbox.seal();
        conn.deadline = now + ctx.stall_timeout;
    }
    flush(ctx, conn, now) == Next::Close
}

/// The connection is closing: forgets its id and tells the app (`ws_close`) once.
pub fn end(ctx: &Context, conn: &mut Conn, thread: usize) {
    if let Some(hub) = Hub::get() {
        hub.close(conn.id);
    }
    ctx.count_websocket(-1);
    if let Some(logged) = conn.logged.take() {
        let (request, opened, sent) = *logged;
        logging::access(&request.render(&ctx.access_format, sent, opened.elapsed()));
    }
    let (code, reason) = conn.ended.take().unwrap_or((ABNORMAL, Vec::new()));
    if logging::enabled(logging::LogLevel::Debug) {
        logging::debug(format_args!(
            "WebSocket {} from {:?} closed: {code}",
            conn.id, conn.transport.remote
        ));
    }
    let ended = Ended {
        id: conn.id,
        code,
        reason,
    };
    match (thread, Hub::get()) {
        // The app may block in ws_close: never on the timer's thread.
        (TIMER_THREAD, Some(hub)) => hub.defer_close_callback(ended),
        _ => close_callback(ctx, thread, ended),
    }
}

/// Tells the app a connection ended (`ws_close`), on serving thread `thread`, through the
/// bracket every app call takes.
pub fn close_callback(ctx: &Context, thread: usize, ended: Ended) {
    let _ = app_call(ctx, thread, Instant::now(), || {
        ctx.app.ws_close(ended.id, ended.code, &ended.reason)
    });
}
