//! The connection driver: a thin layer of I/O around the protocol state machine
//! ([`crate::http::h1::proto::ServerConn`]): recv(2) into the connection's buffer, the head's events,
//! the gateway call with the responder callbacks, writev(2) of the bytes the machine frames,
//! timers, error responses and lingering close.
//!
//! A connection is driven by one worker thread at a time (its owner; see `worker`). [`drive`]
//! runs until the connection would block (it stays registered, edge-triggered) or must close.
//! Only the app's call holds a thread: a body up to `body_buffer` is read before it
//! ([`Phase::Body`]), and a response the socket did not take is sent after it
//! ([`Phase::Send`], up to `response_buffer`).

mod exchange;
pub mod proto;

use crate::access_log::{AccessEntry, UpgradeRequest};
use crate::forwarded::Forwarded;
use crate::http::h1::proto::response::ResponseBuffers;
use crate::http::h1::proto::{Buffered, Event, Outcome, ServerConn};
use crate::http::ws::deflate::Params;
use crate::http::ws::handshake::{self, Upgrade};
use crate::http::ws::hub::Hub;
use crate::http::{self, Framing, Head, Limits, Reject};
use crate::logging;
use crate::logging::LogLevel;
use crate::transport::proxy::{self, Mode as ProxyMode};
use crate::transport::{
    AddrText, Backlog, Io, Next, Readiness, Transport, FIRST_BUFFER, READ_CHUNK,
};
use crate::worker::call::{app_call, count_request};
use crate::worker::context::Context;
use exchange::Exchange;
use ferricorn_sdk::abi::{FcField, FcRequest, FcStr};
use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most request-body bytes read and discarded after the app returns without reading them all;
/// past this the connection is closed instead of kept alive.
const MAX_DRAIN: u64 = 1024 * 1024;
/// How long a connection lingers after an error response, reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
const MAX_LINGER_BYTES: usize = 1024 * 1024;
/// How long a stopping worker lets a connection between requests stay silent before it
/// closes it: the next request of a client that just read its response, or the first bytes
/// of a connection accepted just before the stop, may still be on their way (closing then
/// would reset a request the client has sent).
const STOP_GRACE: Duration = Duration::from_millis(250);
/// Request states a serving thread keeps for the next connections ([`Scratch::recycle`]):
/// one is enough when each connection's request is read in one go; a few more cover those
/// that another thread began.
const SPARES: usize = 4;
/// A thread's lent read buffer larger than this is freed when given back.
const KEEP_READ_BUFFER: usize = 64 * 1024;
/// A spare request state's input buffers larger than this are freed rather than kept.
const KEEP_SPARE: usize = 4 * FIRST_BUFFER;

/// Where a connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the first byte of the next request (the keepalive deadline applies).
    Idle,
    /// Part of a request head has arrived (the header_timeout deadline applies).
    Head,
    /// A request head is in; its body (up to body_buffer) is still arriving (the timeout
    /// deadline applies, from the last bytes received).
    Body,
    /// The app returned; the rest of its response waits for the client to read it (the
    /// timeout deadline applies, from the last bytes sent).
    Send,
    /// An error response was sent; reading and discarding until EOF or the deadline.
    Linger,
}

/// A client connection owned by a worker: between requests only its descriptor, its
/// peer's name, its phase and deadline, and its TLS session; the state of a request in
/// progress is in [`Active`], taken when its first bytes arrive and given back after it.
pub struct Conn {
    /// The socket, its TLS session and the names of its two ends.
    pub transport: Transport,
    /// A PROXY header may still come before the first request (`proxy_protocol`, from a peer
    /// in `proxy_allow_ips`).
    proxy_pending: bool,
    /// The peer is in `forwarded_allow_ips`: its forwarding headers are believed.
    trusted: bool,
    /// Within one [`drive`]: the last recv(2) returned less than it asked for, so the socket
    /// had nothing more, and epoll will report whatever arrives next. Reading again would
    /// only return EAGAIN (one system call per request saved, as nginx does).
    drained: bool,
    /// Where the connection is between requests.
    pub phase: Phase,
    /// When the current phase times out.
    pub deadline: Instant,
    /// Bytes read and dropped in phase [`Phase::Linger`].
    lingered: usize,
    /// The request in progress; `None` while the connection waits for a request's first
    /// bytes (kept alive or just accepted) or lingers.
    active: Option<Box<Active>>,
    /// The WebSocket id of the connection once the app accepted an upgrade (0: none).
    websocket: u64,
    /// The request that opened the WebSocket, for the access log line at its close.
    upgrade_request: Option<Box<UpgradeRequest>>,
    /// The permessage-deflate parameters of the accepted WebSocket.
    deflate: Option<Params>,
}

/// What a connection holds only while a request is in progress (nginx's request as against
/// its connection): input not consumed yet, the protocol machine, response bytes not sent.
/// Taken from the serving thread's spares when a request's first bytes arrive and given
/// back when the connection is between requests again ([`Scratch::spare`],
/// [`Scratch::recycle`]), so an idle connection holds no buffer (issue #27).
pub(crate) struct Active {
    /// Unconsumed input: the next request's head (and what follows it) starts at byte 0.
    buf: Vec<u8>,
    /// Body bytes the app's thread read from the socket after `buf` ran out.
    stage: Vec<u8>,
    /// Response bytes the client has not taken yet.
    out: Backlog,
    /// What to do with the connection once `out` is sent (phase [`Phase::Send`]).
    after: Option<Served>,
    /// The machine found a request head at the start of `buf`; its body is awaited.
    request_ready: bool,
    /// The protocol state.
    proto: ServerConn,
}

impl Active {
    /// Nothing of a request is held: no input, no response waiting.
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.out.is_empty() && !self.request_ready
    }
}

impl Conn {
    /// The HTTP/1.1 session of a connection just accepted (`transport`, from peer address
    /// `peer_ip`), waiting for its first request: its header_timeout runs from `now`. Its
    /// forwarding headers and PROXY header count if `peer_ip` is trusted for them.
    pub fn new(
        transport: Transport,
        peer_ip: Option<std::net::IpAddr>,
        ctx: &Context,
        now: Instant,
    ) -> Conn {
        let ip = peer_ip;
        Conn {
            transport,
            trusted: ip.is_some_and(|ip| ctx.forwarding.allow.contains(ip)),
            proxy_pending: ctx.proxy_mode != ProxyMode::Off
                && ip.is_some_and(|ip| ctx.proxy_allow.contains(ip)),
            drained: false,
            phase: Phase::Head,
            deadline: now + ctx.header_timeout,
            lingered: 0,
            active: None,
            websocket: 0,
            upgrade_request: None,
            deflate: None,
        }
    }
}

impl Conn {
    /// After [`Next::Upgrade`]: the transport, the WebSocket id the app accepted, and the
    /// bytes the client sent after its request (the first frames).
    pub fn into_websocket(self) -> Switched {
        Switched {
            // Exactly what is left: the request state's buffer is not kept.
            leftover: self.active.map(|a| a.buf.to_vec()).unwrap_or_default(),
            transport: self.transport,
            id: self.websocket,
            request: self.upgrade_request,
            deflate: self.deflate,
        }
    }

    /// Output waits for the client to make room: a response (phase [`Phase::Send`]) or TLS
    /// records (the handshake's).
    pub fn sending(&self) -> bool {
        self.phase == Phase::Send || self.tls_pending()
    }

    /// TLS records wait for room in the socket.
    fn tls_pending(&self) -> bool {
        self.transport.tls.as_ref().is_some_and(|s| s.pending())
    }

    /// A TLS handshake is under way: no HTTP can be said yet.
    fn handshaking(&self) -> bool {
        self.transport.tls.as_ref().is_some_and(|s| s.handshaking())
    }
}

/// A connection that switched to WebSocket ([`Conn::into_websocket`]).
pub struct Switched {
    /// The socket and its TLS session.
    pub transport: Transport,
    /// The WebSocket id the app accepted.
    pub id: u64,
    /// What the client sent after its request (the first frames).
    pub leftover: Vec<u8>,
    /// The request, for the access log line at the close (when access logging is on).
    pub request: Option<Box<UpgradeRequest>>,
    /// permessage-deflate's parameters, when negotiated.
    pub deflate: Option<Params>,
}

/// Per-thread scratch space, reused for every request a thread serves.
pub struct Scratch {
    /// This thread's index in [`Context::busy`].
    thread: usize,
    fields: Vec<FcField>,
    path: Vec<u8>,
    /// Lent to each exchange's response and taken back (no allocation per request once
    /// grown, and idle connections hold none).
    buffers: ResponseBuffers,
    /// The monotonic clock as last read by this thread: at each wakeup ([`Scratch::tick`])
    /// and after each app call. Deadlines are counted from it.
    now: Instant,
    /// Request state given back by connections between requests, for the next to take
    /// (at most [`SPARES`]).
    #[expect(
        clippy::vec_box,
        reason = "connections hold their request state boxed: a spare moves as a pointer"
    )]
    spares: Vec<Box<Active>>,
    /// A read buffer lent to sessions that keep none between reads ([`Scratch::lend_buffer`]).
    read_buffer: Vec<u8>,
}

impl Scratch {
    /// Scratch space for serving thread number `thread`.
    pub fn new(thread: usize) -> Scratch {
        Scratch {
            thread,
            fields: Vec::new(),
            path: Vec::new(),
            buffers: ResponseBuffers::default(),
            now: Instant::now(),
            spares: Vec::new(),
            read_buffer: Vec::new(),
        }
    }

    /// Request state for a connection whose request's first bytes may be arriving: a spare
    /// one (its buffers' capacity kept), or a new one.
    fn spare(&mut self, limits: Limits) -> Box<Active> {
        self.spares.pop().unwrap_or_else(|| {
            Box::new(Active {
                buf: Vec::new(),
                stage: Vec::new(),
                out: Backlog::default(),
                after: None,
                request_ready: false,
                proto: ServerConn::new(limits),
            })
        })
    }

    /// Takes back the request state of a connection now between requests (or ending): kept
    /// for the next request with its buffers emptied (those grown past [`KEEP_SPARE`] freed),
    /// or freed when [`SPARES`] are kept already.
    fn recycle(&mut self, mut active: Box<Active>) {
        if self.spares.len() >= SPARES {
            return;
        }
        for buf in [&mut active.buf, &mut active.stage] {
            buf.clear();
            if buf.capacity() > KEEP_SPARE {
                *buf = Vec::new();
            }
        }
        active.out = Backlog::default();
        active.after = None;
        active.request_ready = false;
        active.proto.reset();
        self.spares.push(active);
    }

    /// Reads the clock; the worker calls it after each epoll_wait, so the requests served in
    /// one wakeup share one reading (nginx updates its time once per event loop iteration).
    pub fn tick(&mut self) {
        self.now = Instant::now();
    }

    /// The clock as [`Scratch::tick`] last read it.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The thread's read buffer (empty), for a session that keeps none between reads (a
    /// WebSocket's); give it back with [`Scratch::give_back_buffer`].
    pub fn lend_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.read_buffer)
    }

    /// Takes the read buffer back, emptied (freed if it grew past [`KEEP_READ_BUFFER`]).
    pub fn give_back_buffer(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        if buffer.capacity() <= KEEP_READ_BUFFER {
            self.read_buffer = buffer;
        }
    }

    /// A later reading of the clock (after an app call).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// This serving thread's index in the pool.
    pub fn thread(&self) -> usize {
        self.thread
    }
}

fn debug_reject(conn: &Conn, reject: Reject) {
    debug_rejected(
        conn.transport.remote.addr(),
        conn.transport.remote.port(),
        reject,
    );
}

/// Logs a refused request at debug level with the peer and the reason (issue #6).
fn debug_rejected(remote_addr: &str, remote_port: &str, reject: Reject) {
    if logging::enabled(LogLevel::Debug) {
        logging::debug(format_args!(
            "rejected request from {remote_addr}:{remote_port} with {}: {}",
            reject.status, reject.why
        ));
    }
}

/// A thread's formatted Date value and the monotonic instant its second ends.
struct DateCache {
    until: Option<Instant>,
    text: String,
}

thread_local! {
    static DATE: RefCell<DateCache> = const {
        RefCell::new(DateCache { until: None, text: String::new() })
    };
}

/// Calls `f` with the IMF-fixdate for the Date header (RFC 9110 §6.6.1) at `now` (a recent
/// reading of the monotonic clock), formatted at most once per second per thread; the wall
/// clock is read only when the cached second is over.
fn with_date<R>(now: Instant, f: impl FnOnce(&str) -> R) -> R {
    DATE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.until.is_none_or(|until| now >= until) {
            let wall = std::time::SystemTime::now();
            let into_second = wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            // `now` was read before `wall`: the cached second ends no later than the real one.
            let left = Duration::from_nanos(1_000_000_000 - u64::from(into_second));
            cache.until = Some(now + left);
            cache.text = httpdate::fmt_http_date(wall);
        }
        f(&cache.text)
    })
}

/// Sends an error response the server generates itself (`Connection: close`), best effort.
fn send_error(io: &mut Io<'_>, status: u16, extra: &str, timeout: Duration) {
    let bytes = with_date(Instant::now(), |date| {
        http::error_response(status, date, extra)
    });
    io.write_all(&bytes, timeout);
}

/// Answers a connection past `worker_connections` with `503 Service Unavailable`
/// and `Retry-After: 1`, then closes it the way an error response does: half-closed, what the
/// client sends is read and dropped until it closes or [`LINGER`] passes, so that close(2)
/// never sends a reset that could destroy the 503 before the client reads it.
pub fn refuse(ctx: &Context, conn: &mut Conn) -> Next {
    ctx.count_rejected(503);
    debug_reject(
        conn,
        Reject {
            status: 503,
            why: "worker_connections reached",
        },
    );
    send_error(
        &mut conn.transport.io(),
        503,
        "Retry-After: 1\r\n",
        ctx.stall_timeout,
    );
    start_linger(conn)
}

/// Sends `503 Service Unavailable` with Retry-After to a connection over worker_connections
/// when not even a slot for [`refuse`] is left, without waiting: the caller closes it at once.
pub fn refuse_overload(fd: BorrowedFd<'_>) {
    let bytes = with_date(Instant::now(), |date| {
        http::error_response(503, date, "Retry-After: 1\r\n")
    });
    let _ = nix::sys::uio::writev(fd, &[IoSlice::new(&bytes)]);
}

/// Answers `reject`, half-closes and switches to lingering (RFC 9112 §9.6: the client must be
/// able to read the response before the connection goes away).
fn fail(ctx: &Context, conn: &mut Conn, reject: Reject) -> Next {
    debug_reject(conn, reject);
    ctx.count_rejected(reject.status);
    if conn.handshaking() {
        // No HTTP before the handshake is done.
        return Next::Close;
    }
    send_error(
        &mut conn.transport.io(),
        reject.status,
        handshake::error_fields(reject.status),
        ctx.stall_timeout,
    );
    start_linger(conn)
}
/// Closes a connection whose client asked for it and sent nothing more: if nothing else
/// arrived, close(2) at once, as nginx does (a lingering close costs a wakeup and two system
/// calls per connection); otherwise the lingering close. `promised`: see
/// [`Served::CloseAsked`].
fn close_asked(conn: &mut Conn, promised: bool) -> Next {
    if promised && conn.drained {
        // The last recv emptied the socket and the client may not send more.
        conn.transport.io().close_notify();
        return Next::Close;
    }
    // Bytes that arrived since the last recv (an HTTP/1.0 client pipelining, which nothing
    // forbids it) would make close(2) send RST, which can cost the client the response (the
    // conformance corpus sent byte by byte caught this): peek first.
    let mut probe = [0u8; 1];
    match nix::sys::socket::recv(
        conn.transport.socket.as_raw_fd(),
        &mut probe,
        nix::sys::socket::MsgFlags::MSG_PEEK,
    ) {
        Ok(0) | Err(nix::errno::Errno::EAGAIN) => {
            conn.transport.io().close_notify();
            Next::Close
        }
        _ => start_linger(conn),
    }
}

fn start_linger(conn: &mut Conn) -> Next {
    conn.transport.io().close_notify();
    let _ = nix::sys::socket::shutdown(
        conn.transport.socket.as_raw_fd(),
        nix::sys::socket::Shutdown::Write,
    );
    conn.phase = Phase::Linger;
    conn.deadline = Instant::now() + LINGER;
    linger(conn)
}

fn linger(conn: &mut Conn) -> Next {
    let mut sink = [0u8; 4096];
    loop {
        match nix::unistd::read(conn.transport.socket.as_fd(), &mut sink) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                conn.lingered += n;
                if conn.lingered > MAX_LINGER_BYTES {
                    return Next::Close;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => return Next::Wait,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Next::Close,
        }
    }
}

/// Serves everything the connection has ready: sends what its last response left, parses
/// heads, waits for bodies up to body_buffer, serves requests (pipelined ones too), reads
/// more when a head or body is incomplete. Returns when it would block or must close. The
/// request state ([`Active`]) is the thread's spare while the connection is between requests.
pub fn drive(ctx: &Context, conn: &mut Conn, scratch: &mut Scratch, ready: Readiness) -> Next {
    if conn.phase != Phase::Send {
        if let Some(session) = conn.transport.tls.as_mut().filter(|s| s.pending()) {
            // Handshake records the socket did not take.
            match session.flush(conn.transport.socket.as_fd()) {
                Ok(true) => {}
                Ok(false) => return Next::Wait,
                Err(_) => return Next::Close,
            }
        }
    }
    match conn.phase {
        Phase::Linger => return linger(conn),
        Phase::Send => {}
        // A writable edge with nothing to send.
        _ if !ready.readable && !ready.hangup => return Next::Wait,
        _ => {}
    }
    if conn.proxy_pending && conn.transport.tls.is_some() {
        match proxy_header_in_clear(ctx, conn) {
            Ok(true) => {}
            Ok(false) => return Next::Wait,
            Err(reject) => return fail(ctx, conn, reject),
        }
    }
    let mut active = match conn.active.take() {
        Some(active) => active,
        None => scratch.spare(ctx.limits),
    };
    let next = drive_active(ctx, conn, &mut active, scratch, ready);
    let between = matches!(conn.phase, Phase::Idle | Phase::Head) && active.is_empty();
    if next == Next::Upgrade {
        // The bytes after the request are the new protocol's: handed over with the state.
        conn.active = Some(active);
    } else if next == Next::Close || conn.phase == Phase::Linger || between {
        scratch.recycle(active);
    } else {
        conn.active = Some(active);
    }
    next
}

/// [`drive`] with the connection's request state `a`.
fn drive_active(
    ctx: &Context,
    conn: &mut Conn,
    a: &mut Active,
    scratch: &mut Scratch,
    ready: Readiness,
) -> Next {
    if conn.phase == Phase::Send {
        if let Some(next) = send_backlog(ctx, conn, a, scratch.now) {
            return next;
        }
    }
    conn.drained = false;
    loop {
        if conn.proxy_pending && !a.buf.is_empty() {
            if let Err(reject) = proxy_header(ctx, conn, a) {
                return fail(ctx, conn, reject);
            }
        }
        if !a.buf.is_empty() && !conn.proxy_pending {
            if !a.request_ready {
                match a.proto.next_event(&a.buf, READ_CHUNK) {
                    Event::Request => a.request_ready = true,
                    Event::Reject(reject) => return fail(ctx, conn, reject),
                    Event::NeedData(_) => {}
                    // Between exchanges the machine reads heads; anything else means it is done.
                    _ => return start_linger(conn),
                }
            }
            if a.request_ready && body_ready(ctx, conn, a, scratch.now) {
                a.request_ready = false;
                let forwarded = match forwarded(ctx, conn, a) {
                    Ok(forwarded) => forwarded,
                    Err(reject) => return fail(ctx, conn, reject),
                };
                let upgrade = match websocket_upgrade(ctx, a) {
                    Ok(upgrade) => upgrade,
                    Err(reject) => return fail(ctx, conn, reject),
                };
                let served = serve(ctx, conn, a, scratch, forwarded, upgrade);
                if !a.out.is_empty() || conn.tls_pending() {
                    // The socket is full: the event loop sends the rest when the client reads
                    // (the writer's EAGAIN means an EPOLLOUT edge follows).
                    a.after = Some(served);
                    conn.phase = Phase::Send;
                    conn.deadline = scratch.now + ctx.stall_timeout;
                    return Next::Wait;
                }
                match after_response(conn, served) {
                    Some(next) => return next,
                    None => continue,
                }
            }
        }
        if conn.drained {
            return Next::Wait;
        }
        if let Some(next) = read_more(ctx, conn, a, scratch.now, ready) {
            return next;
        }
    }
}

/// One recv(2) into the request state's input: `None` when bytes came (the phase's deadline
/// moves on), or what the driver returns (the socket is empty, closed or failed).
fn read_more(
    ctx: &Context,
    conn: &mut Conn,
    a: &mut Active,
    now: Instant,
    ready: Readiness,
) -> Option<Next> {
    match conn.transport.io().recv(&mut a.buf) {
        Ok((0, _)) => Some(Next::Close),
        Ok((n, short)) => {
            ctx.count_bytes(n, 0);
            conn.drained = short && !ready.hangup;
            match conn.phase {
                Phase::Idle => {
                    conn.phase = Phase::Head;
                    conn.deadline = now + ctx.header_timeout;
                }
                Phase::Body => conn.deadline = now + ctx.stall_timeout,
                _ => {}
            }
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(Next::Wait),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::InvalidData && logging::enabled(LogLevel::Debug) {
                logging::debug(format_args!(
                    "TLS with {:?} failed: {e}",
                    conn.transport.remote
                ));
            }
            Some(Next::Close)
        }
    }
}

/// Phase [`Phase::Send`]: sends what waits. `Some` when the driver returns that (the socket is
/// still full, or the connection ends); `None` when all was sent and the connection goes on.
fn send_backlog(ctx: &Context, conn: &mut Conn, a: &mut Active, now: Instant) -> Option<Next> {
    let before = a.out.len();
    let sent = a.out.send(&mut conn.transport.io());
    ctx.count_bytes(0, before - a.out.len());
    match sent {
        Ok(true) => {}
        Ok(false) => {
            if a.out.len() < before {
                conn.deadline = now + ctx.stall_timeout;
            }
            return Some(Next::Wait);
        }
        Err(_) => return Some(Next::Close),
    }
    (conn.phase, conn.deadline) = match a.buf.is_empty() {
        true => (Phase::Idle, now + ctx.keepalive.unwrap_or_default()),
        false => (Phase::Head, now + ctx.header_timeout),
    };
    let served = a.after.take().unwrap_or(Served::Close);
    after_response(conn, served)
}

/// What follows a response that was sent in full: `None` to go on with the next request.
fn after_response(conn: &mut Conn, served: Served) -> Option<Next> {
    match served {
        Served::KeepAlive => {
            // Keep-alive responses must not wait for the client's ACK of the previous one
            // (Nagle's algorithm): disable it, as nginx does.
            conn.transport.no_delay();
            None
        }
        // Half-close and drain rather than close(2): closing with unread input sends RST,
        // which can destroy the response before the client reads it.
        Served::Close => Some(start_linger(conn)),
        Served::CloseAsked { promised } => Some(close_asked(conn, promised)),
        Served::Upgrade => Some(Next::Upgrade),
    }
}

/// Whether the request whose head is at the start of the buffer can be served now: its body
/// is buffered, or too large to wait for (`body_buffer`). If not, the connection waits in
/// phase [`Phase::Body`].
fn body_ready(ctx: &Context, conn: &mut Conn, a: &mut Active, now: Instant) -> bool {
    let head_len = a.proto.head().len;
    match a.proto.body_buffered(&a.buf[head_len..], ctx.body_buffer) {
        Buffered::Partial => {
            if conn.phase != Phase::Body {
                conn.phase = Phase::Body;
                conn.deadline = now + ctx.stall_timeout;
            }
            false
        }
        Buffered::Complete | Buffered::Stream => true,
    }
}

/// The head's fields as (name, value) byte slices of `buf`.
fn fields_of<'b>(
    buf: &'b [u8],
    head: &'b Head,
) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + Clone + 'b {
    head.fields
        .iter()
        .map(move |f| (&buf[f.name.clone()], &buf[f.value.clone()]))
}

/// What the forwarding headers of the request at the start of the buffer say: read only
/// from a trusted peer (nothing otherwise), once per request. Errors: 400 when they disagree
/// about the scheme ([`crate::forwarded::SchemeConflict`]).
fn forwarded(ctx: &Context, conn: &Conn, a: &Active) -> Result<Forwarded, Reject> {
    if !conn.trusted {
        return Ok(Forwarded::default());
    }
    ctx.forwarding
        .read(fields_of(&a.buf, a.proto.head()))
        .map_err(|_| Reject {
            status: 400,
            why: "forwarding headers disagree about the scheme (secure_scheme_headers)",
        })
}

/// Reads a PROXY header at the start of the buffer, if one is complete or known absent:
/// REMOTE_ADDR/PORT become the client's, SERVER_NAME/PORT the address it connected to (a
/// `LOCAL` or `UNKNOWN` header leaves them). Errors: 400 (malformed, or missing where
/// `proxy_protocol` requires one).
fn proxy_header(ctx: &Context, conn: &mut Conn, a: &mut Active) -> Result<(), Reject> {
    match proxy::parse(&a.buf, ctx.proxy_mode) {
        proxy::Parsed::NeedData => return Ok(()),
        proxy::Parsed::Absent => {}
        proxy::Parsed::Invalid(reject) => return Err(reject),
        proxy::Parsed::Header { len, header } => {
            a.buf.drain(..len);
            apply_proxy_header(ctx, conn, &header);
        }
    }
    conn.proxy_pending = false;
    Ok(())
}

/// On a TLS connection, a PROXY header comes in clear before the handshake: it is looked at
/// in the socket (MSG_PEEK) and taken out of it once complete, and the rest is the TLS
/// session's. Ok(true) once it was read or is known absent, Ok(false) while more of it is
/// to come. Errors: as [`proxy_header`]'s (the connection closes: no HTTP before TLS).
fn proxy_header_in_clear(ctx: &Context, conn: &mut Conn) -> Result<bool, Reject> {
    let mut window = [0u8; proxy::MAX_HEADER];
    let flags = nix::sys::socket::MsgFlags::MSG_PEEK;
    let seen = match nix::sys::socket::recv(conn.transport.socket.as_raw_fd(), &mut window, flags) {
        Ok(n) => n,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(false),
        // The TLS session's read reports the error or the end.
        Err(_) => 0,
    };
    if seen == 0 {
        conn.proxy_pending = false;
        return Ok(true);
    }
    match proxy::parse(&window[..seen], ctx.proxy_mode) {
        proxy::Parsed::NeedData => return Ok(false),
        proxy::Parsed::Absent => {}
        proxy::Parsed::Invalid(reject) => return Err(reject),
        proxy::Parsed::Header { len, header } => {
            // Takes exactly the header's bytes (they are in the socket: just peeked).
            let taken = nix::unistd::read(conn.transport.socket.as_fd(), &mut window[..len]);
            if taken != Ok(len) {
                return Err(Reject {
                    status: 400,
                    why: "PROXY header could not be read back",
                });
            }
            apply_proxy_header(ctx, conn, &header);
        }
    }
    conn.proxy_pending = false;
    Ok(true)
}

/// What a PROXY header says becomes the connection's: REMOTE_ADDR/PORT the client's (the
/// TCP peer kept as `peer`), SERVER_NAME/PORT the address it connected to.
fn apply_proxy_header(ctx: &Context, conn: &mut Conn, header: &proxy::Header) {
    if let Some(source) = header.source {
        // Forwarding headers are believed only from a client that is itself a trusted
        // proxy: a TCP-mode proxy passes the client's own ones through.
        conn.trusted = ctx.forwarding.allow.contains(source.ip());
        let peer = std::mem::replace(&mut conn.transport.remote, AddrText::new(Some(source)));
        conn.transport.peer = Some(Box::new(peer));
    }
    if let Some(destination) = header.destination {
        conn.transport.local = Some(Box::new(AddrText::new(Some(destination))));
    }
}

/// Called by the worker's timer for a connection that is not being served: true if it must be
/// closed now (idle past keepalive, lingering done, a client not reading its response for
/// timeout, or head past header_timeout or body stalled past timeout, after a 408).
/// An idle connection whose client has sent its next request (bytes wait in the socket, not
/// read yet: the worker was paused or busy) is not idle: it moves to the head phase and is
/// served, never closed unanswered.
pub fn expired(ctx: &Context, conn: &mut Conn, now: Instant) -> bool {
    if now < conn.deadline {
        return false;
    }
    if conn.phase == Phase::Idle && has_input(conn.transport.socket.as_fd()) {
        conn.phase = Phase::Head;
        conn.deadline = now + ctx.header_timeout;
        return false;
    }
    if matches!(conn.phase, Phase::Head | Phase::Body) {
        let reject = Reject {
            status: 408,
            why: match conn.phase {
                Phase::Head => "request head not received within header_timeout",
                _ => "request body stalled past timeout",
            },
        };
        debug_reject(conn, reject);
        ctx.count_rejected(408);
        if conn.handshaking() {
            // A handshake not done within header_timeout: no HTTP to answer it with.
            return true;
        }
        // Best effort and non-blocking: the timer thread must not wait on a slow client.
        let bytes = with_date(now, |date| http::error_response(408, date, ""));
        let _ = conn.transport.io().write_some(&bytes);
    }
    true
}

/// Called by a stopping worker's timer (TERM, a reload, max_requests) for a connection that
/// is not being served: true if it is between requests and must be closed now, as nginx and
/// gunicorn close idle connections on a graceful stop. Between requests means silent for
/// [`STOP_GRACE`] since its last response (keep-alive) or since it was accepted. A connection
/// whose next request already waits in the socket is not idle: it moves to the head phase and
/// is served (with `Connection: close`). A TLS connection in its handshake is not idle.
pub fn idle_at_stop(ctx: &Context, conn: &mut Conn, now: Instant) -> bool {
    // When the phase began: its deadline less the time it allows.
    let since = |allowed: Duration| conn.deadline.checked_sub(allowed);
    let silent_since = match conn.phase {
        Phase::Idle => since(ctx.keepalive.unwrap_or_default()),
        Phase::Head if conn.active.is_none() && !conn.handshaking() => since(ctx.header_timeout),
        _ => None,
    };
    let silent = silent_since.is_some_and(|at| now.saturating_duration_since(at) >= STOP_GRACE);
    if !silent {
        return false;
    }
    if has_input(conn.transport.socket.as_fd()) {
        conn.phase = Phase::Head;
        conn.deadline = now + ctx.header_timeout;
        return false;
    }
    true
}

/// Whether bytes wait in the socket's receive queue (a non-blocking MSG_PEEK).
fn has_input(fd: BorrowedFd<'_>) -> bool {
    let mut probe = [0u8; 1];
    let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    matches!(nix::sys::socket::recv(fd.as_raw_fd(), &mut probe, flags), Ok(n) if n > 0)
}

#[derive(Clone, Copy, Debug)]
enum Served {
    KeepAlive,
    /// The server ends the connection (or the exchange left input unread): lingering close.
    Close,
    /// The client asked to close and everything it sent was read: a plain close is safe.
    /// `promised`: an HTTP/1.1 client that sent `Connection: close`, which must not send
    /// anything more (RFC 9112 §9.6).
    CloseAsked {
        promised: bool,
    },
    /// The app accepted a WebSocket upgrade: the connection speaks it from now on.
    Upgrade,
}

/// The CGI/WSGI view of the request whose head is `head` in `buf` on `conn` (PATH_INFO
/// decoded into `scratch.path`, the fields listed in `scratch.fields`; REMOTE_ADDR from
/// `client` when a trusted proxy forwarded it; url scheme https on TLS or when `https` was
/// forwarded), with its query string and protocol text. The FcRequest points into `buf`,
/// `scratch`, `client` and `conn`: it is valid while they are not changed.
#[allow(clippy::too_many_arguments)]
fn request_of<'b>(
    ctx: &Context,
    conn: &Conn,
    buf: &'b [u8],
    head: &Head,
    sem: &http::Semantics,
    scratch: &mut Scratch,
    client: Option<&AddrText>,
    https: bool,
    websocket: u64,
) -> (FcRequest, &'b [u8], &'static [u8]) {
    let (remote_addr, remote_port) = (conn.transport.remote.addr(), conn.transport.remote.port());
    let (path, query) = http::split_target(&buf[head.target.clone()]);
    http::percent_decode(path, &mut scratch.path);
    scratch.fields.clear();
    scratch.fields.extend(head.fields.iter().map(|f| FcField {
        name: FcStr::new(&buf[f.name.clone()]),
        value: FcStr::new(&buf[f.value.clone()]),
    }));
    let (client_addr, client_port) = match client {
        Some(client) => (client.addr(), ""),
        None => (remote_addr, remote_port),
    };
    let facts = conn.transport.tls.as_ref().and_then(|s| s.facts());
    let url_scheme: &[u8] = if https || conn.transport.tls.is_some() {
        b"https"
    } else {
        b"http"
    };
    let tls_text = |text: Option<&str>| {
        text.filter(|t| !t.is_empty())
            .map_or(FcStr::NULL, |t| FcStr::new(t.as_bytes()))
    };
    let listener = &ctx.listeners[conn.transport.listener];
    let (server_name, server_port) = match &conn.transport.local {
        Some(local) => (local.addr(), local.port()),
        None => (listener.name.as_str(), listener.port.as_str()),
    };
    let protocol: &'static [u8] = if head.minor == 1 {
        b"HTTP/1.1"
    } else {
        b"HTTP/1.0"
    };
    let peer = conn.transport.peer.as_ref();
    let request = FcRequest {
        size: std::mem::size_of::<FcRequest>() as u32,
        flags: ctx.request_flags,
        request_method: FcStr::new(&buf[head.method.clone()]),
        raw_uri: FcStr::new(&buf[head.target.clone()]),
        script_name: FcStr::new(b""),
        path_info: FcStr::new(&scratch.path),
        query_string: FcStr::new(query),
        server_protocol: FcStr::new(protocol),
        server_name: FcStr::new(server_name.as_bytes()),
        server_port: FcStr::new(server_port.as_bytes()),
        remote_addr: FcStr::new(client_addr.as_bytes()),
        remote_port: FcStr::new(client_port.as_bytes()),
        url_scheme: FcStr::new(url_scheme),
        content_type: sem.content_type.map_or(FcStr::NULL, |i| {
            FcStr::new(&buf[head.fields[i].value.clone()])
        }),
        content_length: match sem.framing {
            Framing::Length(n) => n as i64,
            Framing::None if field(buf, head, b"content-length").is_some() => 0,
            _ => -1,
        },
        headers: scratch.fields.as_ptr(),
        header_count: scratch.fields.len(),
        peer_addr: FcStr::new(peer.map_or(remote_addr, |p| p.addr()).as_bytes()),
        peer_port: FcStr::new(peer.map_or(remote_port, |p| p.port()).as_bytes()),
        tls_version: tls_text(facts.map(|f| f.version)),
        tls_cipher: tls_text(facts.map(|f| f.cipher.as_str())),
        tls_client_subject: tls_text(facts.map(|f| f.client_subject.as_str())),
        websocket,
    };
    (request, query, protocol)
}

/// Serves the request whose head the machine found at the start of `conn.buf`; `forwarded`
/// is what its forwarding headers said ([`forwarded`]).
fn serve(
    ctx: &Context,
    conn: &mut Conn,
    a: &mut Active,
    scratch: &mut Scratch,
    forwarded: Forwarded,
    upgrade: Option<Offer>,
) -> Served {
    count_request(ctx);
    // The forwarded client's address, as REMOTE_ADDR (the header gives no port).
    let client = forwarded
        .client
        .map(|ip| AddrText::new(Some(std::net::SocketAddr::new(ip, 0))));
    let Active {
        buf,
        stage,
        out,
        proto,
        ..
    } = a;
    let buf_all: &[u8] = buf;
    // The head's ranges, held apart while the exchange borrows the machine.
    let head = proto.take_head();
    let sem = proto.semantics();
    let (request, query, protocol) = request_of(
        ctx,
        conn,
        buf_all,
        &head,
        &sem,
        scratch,
        client.as_ref(),
        forwarded.https,
        upgrade.map_or(0, |o| o.id),
    );
    let Transport {
        socket,
        remote,
        tls,
        ..
    } = &mut conn.transport;
    let (remote_addr, remote_port) = (remote.addr(), remote.port());
    let client_addr = client.as_ref().map_or(remote_addr, |c| c.addr());
    stage.clear();
    proto.lend(std::mem::take(&mut scratch.buffers));
    if let Some(offer) = &upgrade {
        proto.response().offer_upgrade(&switch_fields(offer));
    }
    with_date(scratch.now, |date| proto.response().set_date(date));
    proto.response().allow_keep_alive =
        ctx.keepalive.is_some() && !ctx.stopping.load(Ordering::Acquire);
    let io = Io::new(socket, tls);
    let mut exchange = Exchange::new(ctx, io, proto, &buf_all[head.len..], stage, out);
    let responder = exchange.responder();
    // The clock is read once per wakeup (scratch.now) and once after the app returns; access
    // logging wants this request's own start.
    let started = if logging::access_enabled() {
        Instant::now()
    } else {
        scratch.now
    };
    let (status, crate::worker::call::Timing { finished, took }) =
        app_call(ctx, scratch.thread, started, || {
            ctx.app.handle(&request, &responder)
        });
    scratch.now = finished;
    exchange.shed = ctx.shed_load(took);
    let outcome = exchange.finish(status, finished);
    let facts = RequestFacts {
        buf: buf_all,
        head: &head,
        // The client's address, as nginx's realip module logs it.
        remote_addr: client_addr,
        path: &scratch.path,
        query,
        protocol,
        started,
    };
    account(ctx, &mut exchange, &facts, (remote_addr, remote_port), took);
    if outcome == Outcome::Upgrade && logging::access_enabled() {
        conn.upgrade_request = Some(Box::new(UpgradeRequest {
            head_bytes: buf_all[..head.len].to_vec(),
            head: head.clone(),
            remote_addr: client_addr.to_string(),
            path: scratch.path.clone(),
            query: query.to_vec(),
        }));
    }
    let consumed = head.len + exchange.pre_pos;
    let stage_pos = exchange.stage_pos;
    // Body reads leave the socket in an unknown state: read it again before waiting.
    conn.drained &= !exchange.read_socket;
    drop(exchange);
    scratch.buffers = proto.reclaim();
    proto.put_head(head);
    buf.drain(..consumed);
    buf.extend_from_slice(&stage[stage_pos..]);
    // Bytes already buffered are the start of the next (pipelined) head.
    (conn.phase, conn.deadline) = match buf.is_empty() {
        true => (Phase::Idle, finished + ctx.keepalive.unwrap_or_default()),
        false => (Phase::Head, finished + ctx.header_timeout),
    };
    match outcome {
        Outcome::KeepAlive => Served::KeepAlive,
        Outcome::Close {
            client_asked: true,
            promised,
        } if buf.is_empty() => Served::CloseAsked { promised },
        Outcome::Close { .. } => Served::Close,
        Outcome::Upgrade => {
            conn.websocket = upgrade.map_or(0, |o| o.id);
            conn.deflate = upgrade.and_then(|o| o.deflate);
            Served::Upgrade
        }
    }
}

/// Whether the request at the start of `a.buf` asks for a WebSocket the app could accept:
/// its id and `Sec-WebSocket-Accept` (RFC 6455 §4.2), `None` for an ordinary request (or an
/// app that takes no WebSocket: the upgrade is then an ordinary request to it). Errors: a
/// malformed upgrade (400, 426).
fn websocket_upgrade(ctx: &Context, a: &Active) -> Result<Option<Offer>, Reject> {
    let Some(hub) = Hub::get().filter(|_| ctx.app.takes_websocket()) else {
        return Ok(None);
    };
    let head = a.proto.head();
    let fields = fields_of(&a.buf, head);
    match handshake::check(&a.buf[head.method.clone()], head.minor, fields) {
        Upgrade::No => Ok(None),
        Upgrade::Invalid(reject) => Err(reject),
        Upgrade::Valid { accept, deflate } => Ok(Some(Offer {
            id: hub.next_id(),
            accept,
            deflate,
        })),
    }
}

/// The server's fields of the 101 that accepts `offer` (RFC 6455 §4.2.2, RFC 7692 §5).
fn switch_fields(offer: &Offer) -> Vec<u8> {
    let mut fields = Vec::with_capacity(200);
    fields
        .extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    fields.extend_from_slice(&offer.accept);
    fields.extend_from_slice(b"\r\n");
    if let Some(deflate) = &offer.deflate {
        fields.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        fields.extend_from_slice(deflate.response().as_bytes());
        fields.extend_from_slice(b"\r\n");
    }
    fields
}

/// A WebSocket upgrade the app may accept: the connection's id, `Sec-WebSocket-Accept`, and
/// the permessage-deflate parameters the server would answer.
#[derive(Clone, Copy, Debug)]
struct Offer {
    id: u64,
    accept: [u8; 28],
    deflate: Option<Params>,
}

fn field<'b>(buf: &'b [u8], head: &Head, name: &[u8]) -> Option<&'b [u8]> {
    head.fields
        .iter()
        .find(|f| buf[f.name.clone()].eq_ignore_ascii_case(name))
        .map(|f| &buf[f.value.clone()])
}

/// What the access log needs to know about a request besides the exchange.
struct RequestFacts<'b> {
    buf: &'b [u8],
    head: &'b Head,
    remote_addr: &'b str,
    path: &'b [u8],
    query: &'b [u8],
    protocol: &'b [u8],
    started: Instant,
}

/// The value of the app's response header `name` (lower case) in `headers` (serialized
/// `Name: value\r\n` lines).
fn response_field<'h>(headers: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    headers
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], line[colon + 1..].trim_ascii()))
        })
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// After a request's app call (`took`): the debug line and count of a refused body
/// (`peer`: the TCP peer's address and port), the worker's scoreboard counters, the
/// access-log entry.
fn account(
    ctx: &Context,
    exchange: &mut Exchange<'_>,
    facts: &RequestFacts<'_>,
    peer: (&str, &str),
    took: Duration,
) {
    if let (Some(status), Some(why)) = (exchange.failure, exchange.body_error) {
        debug_rejected(peer.0, peer.1, Reject { status, why });
        ctx.count_rejected(status);
    }
    if let Some(place) = &ctx.place {
        let status = exchange.proto.response().sent_status();
        let method = &facts.buf[facts.head.method.clone()];
        place.mine().counters.request(method, status, took);
    }
    if logging::access_enabled() {
        log_access(ctx, facts, exchange);
    }
}

fn log_access(ctx: &Context, r: &RequestFacts<'_>, exchange: &mut Exchange<'_>) {
    let request_header = |name: &str| field(r.buf, r.head, name.as_bytes());
    let response = exchange.proto.response();
    let (status, body_bytes) = (response.sent_status(), response.body_sent());
    let headers = &response.buffers.headers;
    let response_header = |name: &str| response_field(headers, name.as_bytes());
    let entry = AccessEntry {
        remote_addr: r.remote_addr,
        request_line: &r.buf[r.head.request_line.clone()],
        method: &r.buf[r.head.method.clone()],
        path: r.path,
        query: r.query,
        protocol: std::str::from_utf8(r.protocol).unwrap_or("-"),
        status,
        body_bytes,
        elapsed: r.started.elapsed(),
        request_header: &request_header,
        response_header: &response_header,
    };
    logging::access(&ctx.access_format.render(&entry));
}

#[cfg(test)]
mod tests {
    use super::with_date;
    use std::time::{Duration, Instant, SystemTime};

    #[test]
    fn date_follows_the_wall_clock_across_seconds() {
        let start = Instant::now();
        let date_at = |t: Instant| with_date(t, |d| httpdate::parse_http_date(d).unwrap());
        let first = date_at(start);
        let wall = SystemTime::now();
        assert!(first <= wall && wall.duration_since(first).unwrap() < Duration::from_secs(2));
        // A reading from the same second reuses the text; one two seconds on formats anew.
        assert_eq!(date_at(start), first);
        std::thread::sleep(Duration::from_millis(2100));
        let later = date_at(Instant::now());
        assert!(later.duration_since(first).unwrap() >= Duration::from_secs(2));
    }
}
