//! One client connection: reading request heads without holding a thread, serving each
//! complete request through the gateway (body in, response out), keep-alive, pipelining,
//! error responses and lingering close (SPEC §4).
//!
//! A connection is driven by whichever worker thread epoll wakes for it (EPOLLONESHOT, so one
//! at a time). [`drive`] runs until the connection would block, then the worker re-arms it.

use crate::access_log::{AccessEntry, AccessFormat};
use crate::config::LogLevel;
use crate::gateway::App;
use crate::http::{self, ChunkedDecoder, Framing, Head, Limits, Parsed, Reject};
use crate::logging;
use ferricorn_sdk::abi::{self, FcField, FcRequest, FcResponder, FcStr};
use std::cell::RefCell;
use std::ffi::c_void;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes of response body buffered before the head is sent; a response that fits is sent with
/// Content-Length in one write, a longer one without a length is chunked.
const RESPONSE_BUFFER: usize = 16 * 1024;
/// Most request-body bytes read and discarded after the app returns without reading them all;
/// past this the connection is closed instead of kept alive.
const MAX_DRAIN: u64 = 1024 * 1024;
/// How long a connection lingers after an error response, reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
const MAX_LINGER_BYTES: usize = 1024 * 1024;
/// Most bytes read from the socket per recv(2).
const READ_CHUNK: usize = 16 * 1024;
/// A connection's first read buffer (allocated at its first read): a typical request head
/// fits; it doubles as needed, up to what the head limits allow. Idle connections thus cost
/// about 2 KiB each, not READ_CHUNK.
const FIRST_BUFFER: usize = 2048;

/// The listener a connection arrived on, as the request's SERVER_NAME and SERVER_PORT.
#[derive(Clone, Debug)]
pub struct LocalName {
    /// SERVER_NAME.
    pub name: String,
    /// SERVER_PORT.
    pub port: String,
}

/// Everything a worker's threads share to serve connections.
pub struct Context {
    /// The initialised app.
    pub app: App,
    /// Request limits.
    pub limits: Limits,
    /// Idle time allowed between requests; `None` = no keep-alive.
    pub keepalive: Option<Duration>,
    /// Time allowed to receive a complete head.
    pub header_timeout: Duration,
    /// Longest a client may stall while its request is being served (reading the body,
    /// accepting the response).
    pub stall_timeout: Duration,
    /// One entry per listener, in listener order.
    pub listeners: Vec<LocalName>,
    /// Set when the worker is stopping: responses say `Connection: close`.
    pub stopping: AtomicBool,
    /// Requests served by this worker.
    pub requests: AtomicU64,
    /// Stop after this many requests (0 = never).
    pub max_requests: u64,
    /// FC_REQ_* flags for every request.
    pub request_flags: u32,
    /// `access_log_format`, parsed.
    pub access_format: AccessFormat,
    /// Set when this worker asked the master for a replacement (max_requests reached).
    pub retiring: AtomicBool,
    /// Per serving thread: when its current app call started, in milliseconds since
    /// `epoch` plus one; 0 while the thread is not in the app (for request_timeout).
    pub busy: Vec<AtomicU64>,
    /// The origin of `busy` times.
    pub epoch: Instant,
}

impl Context {
    /// How long thread `i` has been in the app, if it is.
    pub fn busy_for(&self, i: usize, now: Instant) -> Option<Duration> {
        let started = self.busy.get(i)?.load(Ordering::Acquire);
        (started > 0)
            .then(|| now.saturating_duration_since(self.epoch + Duration::from_millis(started - 1)))
    }
}

/// Where a connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the first byte of the next request (the keepalive deadline applies).
    Idle,
    /// Part of a request head has arrived (the header_timeout deadline applies).
    Head,
    /// An error response was sent; reading and discarding until EOF or the deadline.
    Linger,
}

/// A client connection owned by a worker.
pub struct Conn {
    /// The socket (non-blocking).
    pub fd: OwnedFd,
    /// Index of the listener it was accepted on.
    pub listener: usize,
    /// REMOTE_ADDR.
    pub remote_addr: String,
    /// REMOTE_PORT.
    pub remote_port: String,
    /// Where the connection is between requests.
    pub phase: Phase,
    /// When the current phase times out.
    pub deadline: Instant,
    buf: Vec<u8>,
    stage: Vec<u8>,
    head: Head,
    lingered: usize,
    /// A TCP connection whose TCP_NODELAY is not set yet (set once it is kept alive).
    nodelay_pending: bool,
    /// Within one [`drive`]: the last recv(2) returned less than it asked for, so the socket
    /// had nothing more, and epoll will report whatever arrives next. Reading again would
    /// only return EAGAIN (one system call per request saved, as nginx does).
    drained: bool,
}

/// What the worker does with a connection after [`drive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Re-arm it in epoll and wait for more input.
    Wait,
    /// Close it.
    Close,
}

impl Conn {
    /// A freshly accepted connection, idle until its first byte (deadline: header_timeout).
    /// A connection accepted on listener `listener` from `remote` (REMOTE_ADDR, REMOTE_PORT);
    /// `is_tcp` for TCP (TCP_NODELAY is set once the connection is kept alive: a connection
    /// that ends after one response, written in one writev, does not need it).
    pub fn new(
        fd: OwnedFd,
        listener: usize,
        remote: (String, String),
        is_tcp: bool,
        ctx: &Context,
    ) -> Conn {
        Conn {
            fd,
            listener,
            remote_addr: remote.0,
            remote_port: remote.1,
            phase: Phase::Head,
            deadline: Instant::now() + ctx.header_timeout,
            buf: Vec::new(),
            stage: Vec::new(),
            head: Head::default(),
            lingered: 0,
            nodelay_pending: is_tcp,
            drained: false,
        }
    }
}

/// Per-thread scratch space, reused for every request a thread serves.
pub struct Scratch {
    /// This thread's index in [`Context::busy`].
    thread: usize,
    fields: Vec<FcField>,
    path: Vec<u8>,
    buffers: ResponseBuffers,
    /// The monotonic clock as last read by this thread: at each wakeup ([`Scratch::tick`])
    /// and after each app call. Deadlines are counted from it.
    now: Instant,
}

/// The response's byte buffers, lent to each exchange and taken back (no allocation per
/// request once they have grown).
#[derive(Default)]
struct ResponseBuffers {
    /// The app's validated header fields, serialized.
    headers: Vec<u8>,
    /// Where start_response builds them before they replace `headers`.
    staging: Vec<u8>,
    /// The response head being sent.
    head: Vec<u8>,
    /// Body bytes buffered before the head is sent.
    pending: Vec<u8>,
}

impl ResponseBuffers {
    fn cleared(mut self) -> ResponseBuffers {
        self.headers.clear();
        self.staging.clear();
        self.head.clear();
        self.pending.clear();
        self
    }
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
        }
    }

    /// Reads the clock; the worker calls it after each epoll_wait, so the requests served in
    /// one wakeup share one reading (nginx updates its time once per event loop iteration).
    pub fn tick(&mut self) {
        self.now = Instant::now();
    }
}

fn debug_reject(conn: &Conn, reject: Reject) {
    debug_rejected(&conn.remote_addr, &conn.remote_port, reject);
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

/// Writes `n` in base `radix` (10 or 16, lower-case) right-aligned at the end of `tail`,
/// without `fmt`; returns the index of the first digit. `tail` must hold the digits (20 for
/// any u64 in decimal, 16 in hex).
fn write_digits(mut n: u64, radix: u64, tail: &mut [u8]) -> usize {
    let mut at = tail.len();
    loop {
        at -= 1;
        tail[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            return at;
        }
    }
}

/// Appends the decimal digits of `n` (status codes, Content-Length).
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let start = write_digits(n, 10, &mut digits);
    out.extend_from_slice(&digits[start..]);
}

/// Appends the field line `Content-Length: N` (RFC 9110 §8.6).
fn push_content_length(head: &mut Vec<u8>, n: u64) {
    head.extend_from_slice(b"Content-Length: ");
    push_decimal(head, n);
    head.extend_from_slice(b"\r\n");
}

/// The chunk-size line `HEX\r\n` for a chunk of `len` bytes (RFC 9112 §7.1), written at the
/// end of `buf` without allocating (one per streamed write).
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    buf[16] = b'\r';
    buf[17] = b'\n';
    let start = write_digits(len as u64, 16, &mut buf[..16]);
    &buf[start..]
}

/// Reads up to READ_CHUNK bytes from `fd`, appending to `buf` (allocated at FIRST_BUFFER
/// bytes, doubled when less than a quarter of it is free). Returns the byte count and
/// whether it was less than asked for (the socket's receive queue is now empty).
fn read_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    if buf.capacity() - buf.len() < FIRST_BUFFER / 4 {
        buf.reserve(buf.len().max(FIRST_BUFFER));
    }
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(READ_CHUNK);
    // recv(2) rather than read(2): the socket call path, without the VFS read path's file
    // position handling.
    // SAFETY: recv writes at most `want` bytes into the vector's spare capacity, which is
    // allocated and unaliased; set_len below only covers bytes the kernel reported written.
    let n = unsafe { libc::recv(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised exactly `n` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok((n as usize, (n as usize) < want))
}

/// Waits until `fd` is ready for `events`, at most `timeout`. False on timeout or error.
fn wait_ready(fd: BorrowedFd<'_>, events: nix::poll::PollFlags, timeout: Duration) -> bool {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [nix::poll::PollFd::new(fd, events)];
    loop {
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Writes all of `bufs`, waiting (at most `timeout` per stall) when the socket is full.
fn write_all(fd: BorrowedFd<'_>, mut bufs: &mut [IoSlice<'_>], timeout: Duration) -> bool {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match nix::sys::uio::writev(fd, bufs) {
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(nix::errno::Errno::EAGAIN) => {
                if !wait_ready(fd, nix::poll::PollFlags::POLLOUT, timeout) {
                    return false;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Sends an error response the server generates itself (`Connection: close`), best effort.
fn send_error(fd: BorrowedFd<'_>, status: u16, extra: &str, timeout: Duration) {
    let bytes = with_date(Instant::now(), |date| {
        http::error_response(status, date, extra)
    });
    write_all(fd, &mut [IoSlice::new(&bytes)], timeout);
}

/// Sends `503 Service Unavailable` with Retry-After to a connection over worker_connections,
/// without waiting: the caller closes it at once (SPEC §2).
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
    send_error(conn.fd.as_fd(), reject.status, "", ctx.stall_timeout);
    start_linger(conn)
}

/// Closes a connection whose client asked for it and sent nothing more: if nothing else
/// arrived, close(2) at once, as nginx does (a lingering close costs a wakeup and two system
/// calls per connection); otherwise the lingering close. `promised`: see
/// [`Served::CloseAsked`].
fn close_asked(conn: &mut Conn, promised: bool) -> Next {
    if promised && conn.drained {
        // The last recv emptied the socket and the client may not send more.
        return Next::Close;
    }
    // Bytes that arrived since the last recv (an HTTP/1.0 client pipelining, which nothing
    // forbids it) would make close(2) send RST, which can cost the client the response (the
    // conformance corpus sent byte by byte caught this): peek first.
    let mut probe = [0u8; 1];
    match nix::sys::socket::recv(
        conn.fd.as_raw_fd(),
        &mut probe,
        nix::sys::socket::MsgFlags::MSG_PEEK,
    ) {
        Ok(0) | Err(nix::errno::Errno::EAGAIN) => Next::Close,
        _ => start_linger(conn),
    }
}

fn start_linger(conn: &mut Conn) -> Next {
    let _ = nix::sys::socket::shutdown(conn.fd.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    conn.phase = Phase::Linger;
    conn.deadline = Instant::now() + LINGER;
    conn.buf.clear();
    linger(conn)
}

fn linger(conn: &mut Conn) -> Next {
    let mut sink = [0u8; 4096];
    loop {
        match nix::unistd::read(conn.fd.as_fd(), &mut sink) {
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

/// Serves everything the connection has ready: parses heads, serves requests (pipelined ones
/// too), reads more when a head is incomplete. Returns when it would block or must close.
/// `hangup`: epoll reported EPOLLRDHUP/EPOLLHUP/EPOLLERR, so the socket is read until it
/// says so (end of input) even after a short read.
pub fn drive(ctx: &Context, conn: &mut Conn, scratch: &mut Scratch, hangup: bool) -> Next {
    if conn.phase == Phase::Linger {
        return linger(conn);
    }
    conn.drained = false;
    loop {
        if !conn.buf.is_empty() {
            let mut head = std::mem::take(&mut conn.head);
            let parsed = http::parse_head(&conn.buf, &ctx.limits, &mut head);
            conn.head = head;
            match parsed {
                Parsed::Complete => match serve(ctx, conn, scratch) {
                    Served::KeepAlive => {
                        if conn.nodelay_pending {
                            // Keep-alive responses must not wait for the client's ACK of the
                            // previous one (Nagle's algorithm): disable it, as nginx does.
                            conn.nodelay_pending = false;
                            let _ = nix::sys::socket::setsockopt(
                                &conn.fd,
                                nix::sys::socket::sockopt::TcpNoDelay,
                                &true,
                            );
                        }
                        continue;
                    }
                    // Half-close and drain rather than close(2): closing with unread input
                    // sends RST, which can destroy the response before the client reads it.
                    Served::Close => return start_linger(conn),
                    Served::CloseAsked { promised } => return close_asked(conn, promised),
                    Served::Reject(reject) => return fail(ctx, conn, reject),
                },
                Parsed::Invalid(reject) => return fail(ctx, conn, reject),
                Parsed::Partial => {}
            }
        }
        if conn.drained {
            return Next::Wait;
        }
        match read_into(conn.fd.as_fd(), &mut conn.buf) {
            Ok((0, _)) => return Next::Close,
            Ok((_, short)) => {
                conn.drained = short && !hangup;
                if conn.phase == Phase::Idle {
                    conn.phase = Phase::Head;
                    conn.deadline = scratch.now + ctx.header_timeout;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

/// Called by the worker's timer for a connection that is not being served: true if it must be
/// closed now (idle past keepalive, lingering done, or head past header_timeout after a 408).
pub fn expired(conn: &mut Conn, now: Instant) -> bool {
    if now < conn.deadline {
        return false;
    }
    if conn.phase == Phase::Head {
        let reject = Reject {
            status: 408,
            why: "request head not received within header_timeout",
        };
        debug_reject(conn, reject);
        // Best effort and non-blocking: the timer thread must not wait on a slow client.
        let bytes = with_date(now, |date| http::error_response(408, date, ""));
        let _ = nix::sys::uio::writev(conn.fd.as_fd(), &[IoSlice::new(&bytes)]);
    }
    true
}

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
    Reject(Reject),
}

/// Serves the complete head at the start of `conn.buf`.
fn serve(ctx: &Context, conn: &mut Conn, scratch: &mut Scratch) -> Served {
    let sem = match http::semantics(&conn.buf, &conn.head, &ctx.limits) {
        Ok(sem) => sem,
        Err(reject) => return Served::Reject(reject),
    };
    let count = ctx.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if ctx.max_requests > 0
        && count >= ctx.max_requests
        && !ctx.retiring.swap(true, Ordering::AcqRel)
    {
        // The master starts a replacement and stops this worker once it is ready; until then
        // this worker keeps serving (gunicorn stops at once and resets connections, #3038).
        logging::info(format_args!(
            "Autorestarting worker after {count} requests (max_requests): asking for a replacement"
        ));
    }
    let Conn {
        fd,
        listener,
        remote_addr,
        remote_port,
        buf,
        stage,
        head,
        ..
    } = conn;
    let buf_all: &[u8] = buf;
    let (path, query) = http::split_target(&buf_all[head.target.clone()]);
    http::percent_decode(path, &mut scratch.path);
    scratch.fields.clear();
    scratch.fields.extend(head.fields.iter().map(|f| FcField {
        name: FcStr::new(&buf_all[f.name.clone()]),
        value: FcStr::new(&buf_all[f.value.clone()]),
    }));
    let local = &ctx.listeners[*listener];
    let protocol: &[u8] = if head.minor == 1 {
        b"HTTP/1.1"
    } else {
        b"HTTP/1.0"
    };
    let request = FcRequest {
        size: std::mem::size_of::<FcRequest>() as u32,
        flags: ctx.request_flags,
        request_method: FcStr::new(&buf_all[head.method.clone()]),
        raw_uri: FcStr::new(&buf_all[head.target.clone()]),
        script_name: FcStr::new(b""),
        path_info: FcStr::new(&scratch.path),
        query_string: FcStr::new(query),
        server_protocol: FcStr::new(protocol),
        server_name: FcStr::new(local.name.as_bytes()),
        server_port: FcStr::new(local.port.as_bytes()),
        remote_addr: FcStr::new(remote_addr.as_bytes()),
        remote_port: FcStr::new(remote_port.as_bytes()),
        url_scheme: FcStr::new(b"http"),
        content_type: sem.content_type.map_or(FcStr::NULL, |i| {
            FcStr::new(&buf_all[head.fields[i].value.clone()])
        }),
        content_length: match sem.framing {
            Framing::Length(n) => n as i64,
            Framing::None if field(buf_all, head, b"content-length").is_some() => 0,
            _ => -1,
        },
        headers: scratch.fields.as_ptr(),
        header_count: scratch.fields.len(),
    };
    stage.clear();
    let is_head = &buf_all[head.method.clone()] == b"HEAD";
    let mut exchange = Exchange::new(
        ctx,
        fd.as_fd(),
        head,
        &buf_all[head.len..],
        stage,
        sem,
        is_head,
    );
    exchange.buffers = std::mem::take(&mut scratch.buffers);
    let responder = exchange.responder();
    // The clock is read once per wakeup (scratch.now) and once after the app returns; access
    // logging wants this request's own start.
    let started = if logging::access_enabled() {
        Instant::now()
    } else {
        scratch.now
    };
    let busy = ctx.busy.get(scratch.thread);
    if let Some(busy) = busy {
        busy.store(
            started.duration_since(ctx.epoch).as_millis() as u64 + 1,
            Ordering::Release,
        );
    }
    let status = ctx.app.handle(&request, &responder);
    if let Some(busy) = busy {
        busy.store(0, Ordering::Release);
    }
    let finished = Instant::now();
    scratch.now = finished;
    let keep_alive = exchange.finish(status, finished);
    if let (Some(status), Some(why)) = (exchange.failure, exchange.body_error) {
        debug_rejected(remote_addr, remote_port, Reject { status, why });
    }
    if logging::access_enabled() {
        let facts = RequestFacts {
            buf: buf_all,
            head,
            remote_addr,
            path: &scratch.path,
            query,
            protocol,
            started,
        };
        log_access(ctx, &facts, &exchange);
    }
    let consumed = head.len + exchange.pre_pos;
    let stage_pos = exchange.stage_pos;
    // Body reads leave the socket in an unknown state: read it again before waiting.
    conn.drained &= !exchange.read_socket;
    scratch.buffers = exchange.take_buffers();
    let promised = head.minor == 1;
    let asked_close = !sem.keep_alive
        && status == abi::FC_OK
        && exchange.failure.is_none()
        && matches!(exchange.body, BodyIn::Done);
    drop(exchange);
    buf.drain(..consumed);
    buf.extend_from_slice(&stage[stage_pos..]);
    // Bytes already buffered are the start of the next (pipelined) head.
    (conn.phase, conn.deadline) = match conn.buf.is_empty() {
        true => (Phase::Idle, finished + ctx.keepalive.unwrap_or_default()),
        false => (Phase::Head, finished + ctx.header_timeout),
    };
    if keep_alive {
        Served::KeepAlive
    } else if asked_close && conn.buf.is_empty() {
        Served::CloseAsked { promised }
    } else {
        Served::Close
    }
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

fn log_access(ctx: &Context, r: &RequestFacts<'_>, exchange: &Exchange<'_>) {
    let request_header = |name: &str| field(r.buf, r.head, name.as_bytes());
    let response_header = |name: &str| response_field(&exchange.buffers.headers, name.as_bytes());
    let entry = AccessEntry {
        remote_addr: r.remote_addr,
        request_line: &r.buf[r.head.request_line.clone()],
        method: &r.buf[r.head.method.clone()],
        path: r.path,
        query: r.query,
        protocol: std::str::from_utf8(r.protocol).unwrap_or("-"),
        status: exchange.sent_status,
        body_bytes: exchange.body_sent,
        elapsed: r.started.elapsed(),
        request_header: &request_header,
        response_header: &response_header,
    };
    logging::access(&ctx.access_format.render(&entry));
}

/// The request body as the server decodes it.
enum BodyIn {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    Done,
}

/// How the response body is framed on the wire (RFC 9112 §6.1–6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyOut {
    /// Not decided yet (head not sent).
    Pending,
    /// Content-Length: the body has exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    UntilClose,
    /// No body is sent (HEAD, 204, 304).
    Nothing,
}

/// One request/response exchange: the state behind the responder the app calls.
struct Exchange<'a> {
    ctx: &'a Context,
    fd: BorrowedFd<'a>,
    minor: u8,
    is_head: bool,
    client_keep_alive: bool,
    // Request body.
    pre: &'a [u8],
    pre_pos: usize,
    stage: &'a mut Vec<u8>,
    stage_pos: usize,
    body: BodyIn,
    body_read: u64,
    expect_continue: bool,
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
    trailer_fields: Vec<FcField>,
    /// A status to answer instead of the app's response, if nothing was sent yet.
    failure: Option<u16>,
    /// Why the request body was refused (400/408/413), for the debug log.
    body_error: Option<&'static str>,
    // Response.
    status: u16,
    reason: Vec<u8>,
    /// headers, staging, head, pending: see [`ResponseBuffers`].
    buffers: ResponseBuffers,
    app_length: Option<u64>,
    out: BodyOut,
    body_sent: u64,
    sent_status: u16,
    keep_alive: bool,
    broken: bool,
    /// The exchange read from the socket (request body).
    read_socket: bool,
}

fn guard(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(abi::FC_ERR_APP)
}

/// Recovers the exchange from the responder's ctx.
///
/// # Safety
/// `ctx` must be the pointer `Exchange::responder` stored, during that exchange's handle call.
unsafe fn exchange<'x>(ctx: *mut c_void) -> &'x mut Exchange<'x> {
    // SAFETY: guaranteed by the caller: ctx points to a live Exchange on the serving thread's
    // stack, and the app calls the responder only from that thread during handle.
    unsafe { &mut *(ctx as *mut Exchange<'x>) }
}

/// Reads `count` fields at `ptr` (a borrowed array from the app).
///
/// # Safety
/// `ptr` must be NULL or point to `count` valid fields whose strings are valid.
unsafe fn app_fields<'x>(ptr: *const FcField, count: usize) -> &'x [FcField] {
    if ptr.is_null() || count == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller (the app passes `count` fields valid for the call).
        unsafe { std::slice::from_raw_parts(ptr, count) }
    }
}

unsafe extern "C" fn cb_start_response(
    ctx: *mut c_void,
    status: u16,
    reason: FcStr,
    headers: *const FcField,
    count: usize,
) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call; the app passes its own arrays and
        // strings valid for the duration of this call.
        let (ex, fields, reason) =
            unsafe { (exchange(ctx), app_fields(headers, count), reason.as_bytes()) };
        ex.start_response(status, reason.unwrap_or_default(), fields)
    })
}

unsafe extern "C" fn cb_write(ctx: *mut c_void, data: *const u8, len: usize) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call; data/len describe the app's buffer.
        let (ex, data) = unsafe { (exchange(ctx), FcStr { ptr: data, len }.as_bytes()) };
        ex.write(data.unwrap_or_default())
    })
}

unsafe extern "C" fn cb_read_body(ctx: *mut c_void, buf: *mut u8, cap: usize) -> i64 {
    catch_unwind(AssertUnwindSafe(|| {
        if buf.is_null() || cap == 0 {
            return i64::from(abi::FC_ERR_INVALID);
        }
        // SAFETY: ctx is the exchange of this handle call; buf/cap describe the app's writable
        // buffer, valid for this call.
        let (ex, out) = unsafe { (exchange(ctx), std::slice::from_raw_parts_mut(buf, cap)) };
        match ex.read_body(out) {
            Ok(n) => n as i64,
            Err(status) => i64::from(status),
        }
    }))
    .unwrap_or(i64::from(abi::FC_ERR_APP))
}

unsafe extern "C" fn cb_trailers(
    ctx: *mut c_void,
    out: *mut *const FcField,
    count: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call.
        let ex = unsafe { exchange(ctx) };
        if !matches!(ex.body, BodyIn::Done) || out.is_null() || count.is_null() {
            return abi::FC_ERR_STATE;
        }
        // SAFETY: out and count are the app's valid out-pointers (checked non-null above).
        unsafe {
            *out = ex.trailer_fields.as_ptr();
            *count = ex.trailer_fields.len();
        }
        abi::FC_OK
    })
}

unsafe extern "C" fn cb_log(_ctx: *mut c_void, level: i32, message: FcStr) {
    let _ = catch_unwind(|| {
        let level = match level {
            abi::FC_LOG_DEBUG => LogLevel::Debug,
            abi::FC_LOG_INFO => LogLevel::Info,
            abi::FC_LOG_WARNING => LogLevel::Warning,
            abi::FC_LOG_CRITICAL => LogLevel::Critical,
            _ => LogLevel::Error,
        };
        // SAFETY: the app passes a message valid for this call.
        let text = unsafe { message.as_bytes() }.unwrap_or_default();
        logging::log(level, String::from_utf8_lossy(text));
    });
}

impl<'a> Exchange<'a> {
    fn new(
        ctx: &'a Context,
        fd: BorrowedFd<'a>,
        head: &'a Head,
        pre: &'a [u8],
        stage: &'a mut Vec<u8>,
        sem: http::Semantics,
        is_head: bool,
    ) -> Exchange<'a> {
        let limits = &ctx.limits;
        let body = match sem.framing {
            Framing::None => BodyIn::Done,
            Framing::Length(n) => BodyIn::Length(n),
            Framing::Chunked => BodyIn::Chunked(Box::new(ChunkedDecoder::new(
                limits.field_size,
                limits.fields,
            ))),
        };
        Exchange {
            ctx,
            fd,
            minor: head.minor,
            is_head,
            client_keep_alive: sem.keep_alive,
            pre,
            pre_pos: 0,
            stage,
            stage_pos: 0,
            expect_continue: sem.expect_continue && !matches!(body, BodyIn::Done),
            body,
            body_read: 0,
            trailers: Vec::new(),
            trailer_fields: Vec::new(),
            failure: None,
            body_error: None,
            status: 200,
            reason: Vec::new(),
            buffers: ResponseBuffers::default(),
            app_length: None,
            out: BodyOut::Pending,
            body_sent: 0,
            sent_status: 0,
            keep_alive: false,
            broken: false,
            read_socket: false,
        }
    }

    fn responder(&mut self) -> FcResponder {
        FcResponder {
            size: std::mem::size_of::<FcResponder>() as u32,
            ctx: self as *mut Exchange<'a> as *mut c_void,
            start_response: cb_start_response,
            write: cb_write,
            read_body: cb_read_body,
            trailers: cb_trailers,
            log: cb_log,
        }
    }

    // ----- request body -----

    /// Makes sure unread input is available (reading from the socket if needed).
    fn fill(&mut self) -> Result<(), i32> {
        if self.pre_pos < self.pre.len() || self.stage_pos < self.stage.len() {
            return Ok(());
        }
        self.stage.clear();
        self.stage_pos = 0;
        // Bodies are read in large pieces (the stage buffer lives as long as the connection).
        self.stage.reserve(READ_CHUNK);
        loop {
            self.read_socket = true;
            match read_into(self.fd, self.stage) {
                Ok((0, _)) => return Err(abi::FC_ERR_IO),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !wait_ready(
                        self.fd,
                        nix::poll::PollFlags::POLLIN,
                        self.ctx.stall_timeout,
                    ) {
                        return Err(abi::FC_ERR_TIMEOUT);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(abi::FC_ERR_IO),
            }
        }
    }

    /// The unread input and the body decoder, borrowed together.
    fn input_and_body(&mut self) -> (&[u8], &mut BodyIn) {
        let input = if self.pre_pos < self.pre.len() {
            &self.pre[self.pre_pos..]
        } else {
            &self.stage[self.stage_pos..]
        };
        (input, &mut self.body)
    }

    fn advance(&mut self, n: usize) {
        if self.pre_pos < self.pre.len() {
            self.pre_pos += n;
        } else {
            self.stage_pos += n;
        }
    }

    fn send_continue(&mut self) -> Result<(), i32> {
        if !self.expect_continue || self.out != BodyOut::Pending {
            return Ok(());
        }
        self.expect_continue = false;
        let msg = b"HTTP/1.1 100 Continue\r\n\r\n";
        if write_all(self.fd, &mut [IoSlice::new(msg)], self.ctx.stall_timeout) {
            Ok(())
        } else {
            Err(abi::FC_ERR_IO)
        }
    }

    /// Reads decoded body bytes into `out`: Ok(0) at the end; Err(status) on failure, which
    /// also records the error status to answer (400, 408, 413) if nothing was sent yet.
    fn read_body(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        if out.is_empty() || matches!(self.body, BodyIn::Done) {
            return Ok(0);
        }
        self.send_continue()?;
        let result = self.read_some(out);
        if let Err(status) = result {
            self.body = BodyIn::Done;
            let (failure, why) = match status {
                abi::FC_ERR_BAD_REQUEST => (400, self.body_error.unwrap_or("malformed body")),
                abi::FC_ERR_TOO_LARGE => (413, "body exceeds limit_request_body"),
                abi::FC_ERR_TIMEOUT => (408, "body stalled past timeout"),
                _ => {
                    self.broken = true;
                    return result;
                }
            };
            self.failure = Some(failure);
            self.body_error = Some(why);
        }
        result
    }

    fn read_some(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        loop {
            match &mut self.body {
                BodyIn::Done => return Ok(0),
                BodyIn::Length(0) => {
                    self.body = BodyIn::Done;
                    return Ok(0);
                }
                BodyIn::Length(_) => {
                    self.fill()?;
                    // `fill` does not change the body state: this is still Length.
                    let (input, BodyIn::Length(remaining)) = self.input_and_body() else {
                        return Err(abi::FC_ERR_APP);
                    };
                    let n = input
                        .len()
                        .min(out.len())
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    out[..n].copy_from_slice(&input[..n]);
                    *remaining -= n as u64;
                    self.advance(n);
                    self.body_read += n as u64;
                    return Ok(n);
                }
                BodyIn::Chunked(decoder) if decoder.is_done() => {
                    self.finish_trailers()?;
                    return Ok(0);
                }
                BodyIn::Chunked(_) => {
                    self.fill()?;
                    let room = http::body_room(self.ctx.limits.body, self.body_read, out.len());
                    // `fill` does not change the body state: this is still Chunked.
                    let (input, BodyIn::Chunked(decoder)) = self.input_and_body() else {
                        return Err(abi::FC_ERR_APP);
                    };
                    let decoded = decoder.decode(input, &mut out[..room]);
                    let (used, produced) = match decoded {
                        Ok(counts) => counts,
                        Err(http::ChunkError::Malformed(why)) => {
                            self.body_error = Some(why);
                            return Err(abi::FC_ERR_BAD_REQUEST);
                        }
                    };
                    self.advance(used);
                    self.body_read += produced as u64;
                    if self.ctx.limits.body.is_some_and(|max| self.body_read > max) {
                        return Err(abi::FC_ERR_TOO_LARGE);
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }

    /// Parses the trailer section once the chunked body is done and exposes it to the app.
    /// Fields forbidden in trailers (RFC 9110 §6.5.1) make the request a 400.
    fn finish_trailers(&mut self) -> Result<(), i32> {
        let BodyIn::Chunked(decoder) = std::mem::replace(&mut self.body, BodyIn::Done) else {
            return Ok(());
        };
        self.trailers =
            http::parse_trailers(decoder.trailers(), self.ctx.limits.fields).map_err(|r| {
                self.body_error = Some(r.why);
                abi::FC_ERR_BAD_REQUEST
            })?;
        self.trailer_fields = self
            .trailers
            .iter()
            .map(|(n, v)| FcField {
                name: FcStr::new(n),
                value: FcStr::new(v),
            })
            .collect();
        Ok(())
    }

    // ----- response -----

    fn start_response(&mut self, status: u16, reason: &[u8], fields: &[FcField]) -> i32 {
        // The first body byte fixes the head, even while it is still buffered.
        if self.out != BodyOut::Pending || !self.buffers.pending.is_empty() {
            return abi::FC_ERR_STATE;
        }
        let mut headers = std::mem::take(&mut self.buffers.staging);
        headers.clear();
        let mut app_length = None;
        let mut problem = None;
        if !(200..=999).contains(&status) {
            problem = Some(format!("invalid status {status}"));
        } else if !http::is_field_value(reason) {
            problem = Some("reason phrase contains a control character".into());
        }
        for field in fields {
            // SAFETY: the app's field strings are valid for this call (ABI contract).
            let (name, value) = unsafe {
                (
                    field.name.as_bytes().unwrap_or_default(),
                    field.value.as_bytes().unwrap_or_default(),
                )
            };
            if !http::is_token(name) || !http::is_field_value(value) {
                problem = Some(format!(
                    "invalid header field {:?}",
                    String::from_utf8_lossy(name)
                ));
                break;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                match std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    Some(n) => app_length = Some(n),
                    None => {
                        problem = Some("invalid Content-Length".into());
                        break;
                    }
                }
                continue;
            }
            // The server owns framing and connection management, Date and Server.
            if [
                &b"connection"[..],
                b"transfer-encoding",
                b"keep-alive",
                b"date",
                b"server",
            ]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            {
                continue;
            }
            headers.extend_from_slice(name);
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(value);
            headers.extend_from_slice(b"\r\n");
        }
        if let Some(problem) = problem {
            logging::error(format_args!(
                "app {}: refused response: {problem}",
                self.ctx.app.name()
            ));
            self.failure = Some(500);
            self.buffers.staging = headers;
            return abi::FC_ERR_INVALID;
        }
        self.status = status;
        self.reason = reason.to_vec();
        self.buffers.staging = std::mem::replace(&mut self.buffers.headers, headers);
        self.app_length = app_length;
        self.failure = self.failure.filter(|&s| s != 500);
        abi::FC_OK
    }

    fn write(&mut self, data: &[u8]) -> i32 {
        if self.broken {
            return abi::FC_ERR_IO;
        }
        if self.failure == Some(500) {
            return abi::FC_ERR_STATE;
        }
        if self.out == BodyOut::Pending {
            self.buffers.pending.extend_from_slice(data);
            if self.buffers.pending.len() >= RESPONSE_BUFFER {
                let mut pending = std::mem::take(&mut self.buffers.pending);
                self.commit(false, Instant::now());
                self.send_body(&pending);
                pending.clear();
                self.buffers.pending = pending;
            }
        } else {
            self.send_body(data);
        }
        if self.broken {
            abi::FC_ERR_IO
        } else {
            abi::FC_OK
        }
    }

    /// Decides framing and keep-alive and sends the head (with the whole body if `final_`);
    /// `now` dates it.
    fn commit(&mut self, final_: bool, now: Instant) {
        let ctx = self.ctx;
        if !final_ {
            // A streamed response: its pieces must not wait for ACKs (Nagle's algorithm).
            // Fails harmlessly on unix sockets.
            let _ = nix::sys::socket::setsockopt(
                &self.fd,
                nix::sys::socket::sockopt::TcpNoDelay,
                &true,
            );
        }
        self.out = if http::status_has_no_body(self.status) || self.is_head {
            BodyOut::Nothing
        } else if let Some(n) = self.app_length {
            BodyOut::Length(n)
        } else if final_ {
            BodyOut::Length(self.buffers.pending.len() as u64)
        } else if self.minor == 1 {
            BodyOut::Chunked
        } else {
            BodyOut::UntilClose
        };
        self.keep_alive = self.client_keep_alive
            && ctx.keepalive.is_some()
            && !ctx.stopping.load(Ordering::Acquire)
            && self.out != BodyOut::UntilClose;
        let mut head = std::mem::take(&mut self.buffers.head);
        head.clear();
        let reason: &[u8] = if self.reason.is_empty() {
            http::reason(self.status).as_bytes()
        } else {
            &self.reason
        };
        head.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut head, u64::from(self.status));
        head.push(b' ');
        head.extend_from_slice(reason);
        head.extend_from_slice(b"\r\nServer: ferricorn\r\nDate: ");
        with_date(now, |date| head.extend_from_slice(date.as_bytes()));
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(&self.buffers.headers);
        match self.out {
            BodyOut::Length(n) => push_content_length(&mut head, n),
            BodyOut::Chunked => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            BodyOut::Nothing if self.is_head => {
                let n = self.app_length.unwrap_or(self.buffers.pending.len() as u64);
                if !http::status_has_no_body(self.status) {
                    push_content_length(&mut head, n);
                }
            }
            _ => {}
        }
        if !self.keep_alive {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if self.minor == 0 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");
        self.sent_status = self.status;
        let mut pending = std::mem::take(&mut self.buffers.pending);
        let body: &[u8] = if final_ && self.out != BodyOut::Nothing {
            &pending
        } else {
            &[]
        };
        if !write_all(
            self.fd,
            &mut [IoSlice::new(&head), IoSlice::new(body)],
            ctx.stall_timeout,
        ) {
            self.broken = true;
        }
        self.body_sent += body.len() as u64;
        pending.clear();
        self.buffers.pending = pending;
        self.buffers.head = head;
    }

    /// Gives the response buffers back (cleared) for the next exchange.
    fn take_buffers(&mut self) -> ResponseBuffers {
        std::mem::take(&mut self.buffers).cleared()
    }

    fn send_body(&mut self, data: &[u8]) {
        if data.is_empty() || self.broken {
            return;
        }
        let timeout = self.ctx.stall_timeout;
        let ok = match self.out {
            BodyOut::Nothing | BodyOut::Pending => true,
            BodyOut::Chunked => {
                let mut line = [0u8; 18];
                let size = chunk_size_line(data.len(), &mut line);
                write_all(
                    self.fd,
                    &mut [
                        IoSlice::new(size),
                        IoSlice::new(data),
                        IoSlice::new(b"\r\n"),
                    ],
                    timeout,
                )
            }
            BodyOut::Length(n) => {
                let room = n.saturating_sub(self.body_sent);
                let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                if take < data.len() {
                    // More bytes than the app's Content-Length: sending them would corrupt the
                    // next response on this connection.
                    logging::error(format_args!(
                        "app {}: wrote more than its Content-Length {n}",
                        self.ctx.app.name()
                    ));
                    self.keep_alive = false;
                }
                write_all(self.fd, &mut [IoSlice::new(&data[..take])], timeout)
            }
            BodyOut::UntilClose => write_all(self.fd, &mut [IoSlice::new(data)], timeout),
        };
        if ok {
            self.body_sent += data.len() as u64;
        } else {
            self.broken = true;
        }
    }

    /// Completes the response after the app returned `status` at `now`; true if the
    /// connection may serve another request.
    fn finish(&mut self, status: i32, now: Instant) -> bool {
        if self.broken {
            // The client went away or stalled while writing: nothing more can be sent.
            return false;
        }
        if status != abi::FC_OK && self.failure.is_none() {
            self.failure = Some(500);
        }
        if let Some(failure) = self.failure {
            if self.out == BodyOut::Pending {
                send_error(self.fd, failure, "", self.ctx.stall_timeout);
                self.sent_status = failure;
            }
            return false;
        }
        if self.out == BodyOut::Pending {
            self.commit(true, now);
        } else if self.out == BodyOut::Chunked && !self.broken {
            self.broken = !write_all(
                self.fd,
                &mut [IoSlice::new(b"0\r\n\r\n")],
                self.ctx.stall_timeout,
            );
        }
        if let BodyOut::Length(n) = self.out {
            if self.body_sent < n {
                logging::error(format_args!(
                    "app {}: response shorter than its Content-Length ({} of {n} bytes); closing",
                    self.ctx.app.name(),
                    self.body_sent
                ));
                return false;
            }
        }
        self.keep_alive && !self.broken && self.drain_body()
    }

    /// Reads and discards what the app left of the request body, so the next request on the
    /// connection starts at the right byte. False if that is not possible cheaply.
    fn drain_body(&mut self) -> bool {
        if matches!(self.body, BodyIn::Done) {
            return true;
        }
        if self.expect_continue {
            // The client waits for 100 Continue that will never come: it will not send the body.
            return false;
        }
        let mut sink = [0u8; 8192];
        let start = self.body_read;
        while self.body_read - start <= MAX_DRAIN {
            match self.read_body(&mut sink) {
                Ok(0) => return !self.broken,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_size_line, push_decimal, with_date};
    use std::time::{Duration, Instant, SystemTime};

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(1000, &mut buf), b"3e8\r\n");
        let max = format!("{:x}\r\n", usize::MAX);
        assert_eq!(chunk_size_line(usize::MAX, &mut buf), max.as_bytes());
    }

    #[test]
    fn decimals_without_fmt() {
        for n in [0, 7, 200, 1000, 65535, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

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
