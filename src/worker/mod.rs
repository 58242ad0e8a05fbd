//! A worker process: loads the app, then a pool of `threads` threads serves the
//! shared listeners around one epoll set, leader/followers style ([`crate::worker::pool`]): one
//! thread waits in epoll at a time and serves what it got, and sleeping threads are woken only
//! when the awake ones are blocked in the app. Listeners are registered with EPOLLEXCLUSIVE
//! (one waiting worker woken per new connection across all workers); connections once, at
//! accept, edge-triggered for input and output, and served by one thread at a time (an
//! owner per connection: an event for a connection another thread is serving is left to that
//! thread, which looks again before it lets go). A connection is in the set between
//! requests, while its head or a body up to body_buffer arrives, and while a response up to
//! response_buffer is sent, so slow and idle clients never hold a thread.
//!
//! Connections are spread by load through the scoreboard ([`crate::scoreboard`]): a worker
//! holding more connections than another moves itself to the back of the listeners' queue
//! of waiting workers after it accepts.
//!
//! The worker's main thread runs the timers (keepalive, header_timeout, timeout, lingering),
//! the heartbeat to the master, signals, and the graceful stop.

mod balance;
pub(crate) mod call;
pub mod context;
pub mod pool;
pub mod session;
mod slots;

use crate::config::Config;
use crate::gateway;
use crate::http::h1::{self, Conn, Scratch};
use crate::http::ws::{self, hub::Hub};
use crate::http::Limits;
use crate::listeners::{self, Listener};
use crate::logging;
use crate::process;
use crate::report::Report;
use crate::scoreboard::Place;
use crate::transport;
use crate::transport::tls;
use crate::transport::Readiness;
use crate::transport::{Next, Transport};
use crate::worker::pool::{Pool, Ready, Work};
use context::{Context, LocalName, WebSocketSettings};
use ferricorn_sdk::abi;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use session::Session;
use slots::{Slot, Slots};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Exit status of a worker that could not boot (gunicorn's WORKER_BOOT_ERROR).
pub const BOOT_ERROR: i32 = 3;

/// Token bit marking a listener in epoll data.
const LISTENER: u64 = 1 << 63;
/// The epoll token of the WebSocket hub's notifier (other threads queued messages).
const NOTIFIER: u64 = u64::MAX;

/// Events taken per epoll_wait by the leading thread.
const BATCH: usize = 64;
/// Pending-event bits of a connection's cell (see [`Cell`]).
const PENDING_READ: u8 = 1;
const PENDING_WRITE: u8 = 2;
const PENDING_HANGUP: u8 = 4;
/// Connections accepted per listener event. One, as nginx does by default (multi_accept
/// off): the listener is level-triggered, so epoll reports it again while connections wait,
/// and an accept4(2) that finds the queue empty is not cheap (the kernel allocates and frees
/// a socket for it: 5 % of a worker's CPU time with `Connection: close` traffic).
const ACCEPT_PER_EVENT: usize = 1;
/// Most connections accepted when a thread looks at the queue without an event (the idle
/// poll, a stopping worker draining its wakeup).
const ACCEPT_DRAIN: usize = 64;
/// Connection slots beyond `worker_connections` for refusals: a connection past the limit
/// gets its 503 and a lingering close in one of them ([`h1::refuse`]); only when
/// these are taken too is a refusal closed at once.
const REFUSAL_SLOTS: usize = 32;
/// How often the main thread checks timers and signals.
const TICK: Duration = Duration::from_millis(100);
/// How often the worker tells the master it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Client stall limit when `timeout` is 0.
const DEFAULT_STALL: Duration = Duration::from_secs(30);
/// How long a worker stops watching its listeners after accept(2) found no descriptor or
/// memory left (EMFILE, ENFILE, ENOBUFS, ENOMEM), as nginx does (its accept delay is 500 ms).
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// A listening socket as the worker uses it.
#[derive(Clone, Debug)]
struct Socket {
    fd: RawFd,
    /// TCP, not a unix socket.
    is_tcp: bool,
    /// Its connections' TLS configuration, on a TLS listener ([`Config::tls_for`]).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TCP_DEFER_ACCEPT is on: an accepted connection's first bytes are there, so it is read
    /// at once ([`serve_accepted`]).
    deferred: bool,
    /// This worker's own socket (`reuseport`): no other worker accepts from it.
    own: bool,
}

struct Shared {
    ctx: Context,
    epoll: Epoll,
    listeners: Vec<Socket>,
    /// `worker_connections` slots, then [`REFUSAL_SLOTS`].
    slots: Slots,
    open: AtomicUsize,
    /// Accepting is paused (descriptor or memory exhaustion) until this many milliseconds
    /// after `ctx.epoch`; 0 = not paused.
    accept_paused_until: AtomicU64,
    /// The shared listeners are out of the epoll set since this many milliseconds after
    /// `ctx.epoch`, plus one, so that the others take the queued connections
    /// ([`balance::park`]); 0 = not parked.
    parked_at: AtomicU64,
    /// In an exhaustion episode: logged once at its start, cleared by the next accept.
    exhausted: AtomicBool,
    /// Threads inside [`accept_ready`]: a stopping worker exits only when none is, so that
    /// a connection accepted just before the listeners closed is served, not reset.
    accepting: AtomicUsize,
}

/// The epoll registration of listener number `index`: one waiting worker woken per event.
fn listener_event(index: usize) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
        LISTENER | index as u64,
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

struct Signals {
    graceful: Arc<AtomicBool>,
    quick: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
}

fn register_signals() -> std::io::Result<Signals> {
    use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
    let signals = Signals {
        graceful: Arc::new(AtomicBool::new(false)),
        quick: Arc::new(AtomicBool::new(false)),
        reopen: Arc::new(AtomicBool::new(false)),
    };
    signal_hook::flag::register(SIGTERM, signals.graceful.clone())?;
    signal_hook::flag::register(SIGINT, signals.quick.clone())?;
    signal_hook::flag::register(SIGQUIT, signals.quick.clone())?;
    signal_hook::flag::register(SIGUSR1, signals.reopen.clone())?;
    Ok(signals)
}

fn jittered_max_requests(config: &Config) -> u64 {
    if config.max_requests == 0 {
        return 0;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
        ^ u64::from(std::process::id());
    config.max_requests + seed % (config.max_requests_jitter + 1)
}

/// Runs a worker in a freshly forked child; returns its exit status (0 after a graceful stop,
/// [`BOOT_ERROR`] if the app could not be loaded). `sockets`: with `reuseport`, the socket
/// this worker accepts from for each listener (in listener order; its own, or the
/// listener's); `None`: the listeners, shared. `report` is the write end of the pipe to the
/// master; `master` is the master's pid (the worker stops if it changes); `place` is the
/// worker's slot on the master's scoreboard, if it has one.
pub fn run(
    config: &Config,
    tls: Option<Arc<crate::transport::tls::Tls>>,
    listeners: &[Listener],
    sockets: Option<&[RawFd]>,
    report_fd: OwnedFd,
    master: nix::unistd::Pid,
    place: Option<Place>,
) -> i32 {
    logging::info(format_args!(
        "Booting worker with pid: {}",
        std::process::id()
    ));
    if config.capture_output {
        logging::capture_output();
    }
    process::set_title(&format!(
        "ferricorn: worker [{}]",
        process::display_name(config)
    ));
    if let Err(e) = process::enter_worker(config) {
        return boot_failed(&report_fd, &e);
    }
    // SIGTERM when the master dies (even by SIGKILL): a graceful stop that closes the
    // listeners at once (prctl(2) PR_SET_PDEATHSIG; set after the user switch, which clears
    // it). The main thread's getppid check covers a master that died before the call.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let signals = match register_signals() {
        Ok(s) => s,
        Err(e) => return boot_failed(&report_fd, &format!("cannot install signal handlers: {e}")),
    };
    // The master forked this process with its signals blocked: what was sent meanwhile
    // reaches the handlers just installed.
    process::unblock_fork_signals();
    let Some(path) = &config.app_path else {
        return boot_failed(&report_fd, "no app.path configured");
    };
    let app = match gateway::load(path).and_then(|plugin| gateway::init(plugin, &config.app_config))
    {
        Ok(app) => app,
        Err(e) => return boot_failed(&report_fd, &e),
    };
    if let Some(place) = &place {
        place
            .mine()
            .claim(std::process::id(), config.threads as u32);
    }
    let shared = match build(config, tls, listeners, sockets, app, place) {
        Ok(shared) => Arc::new(shared),
        Err(e) => return boot_failed(&report_fd, &e),
    };
    // Ready before the first request can be served: the master must never see a worker that
    // served requests as one that died while booting.
    Report::Ready.send(&report_fd);
    for i in 0..config.threads {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ferricorn-{i}"))
            .spawn(move || serve_loop(&shared, i));
        if let Err(e) = spawned {
            logging::error(format_args!("Worker cannot start a thread: {e}"));
            return BOOT_ERROR;
        }
    }
    if config.threads > 1 {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ferricorn-monitor".into())
            .spawn(move || shared.ctx.pool.monitor());
        if let Err(e) = spawned {
            logging::error(format_args!("Worker cannot start a thread: {e}"));
            return BOOT_ERROR;
        }
    }
    supervise(&shared, config, &signals, &report_fd, master);
    let now = Instant::now();
    let in_app = (0..config.threads)
        .filter(|&i| shared.ctx.pool.busy_for(i, now).is_some())
        .count();
    if in_app == 0 {
        // ws_close callbacks the serving threads did not take before the exit.
        for ended in Hub::get().map(Hub::take_ended).unwrap_or_default() {
            ws::conn::close_callback(&shared.ctx, call::TIMER_THREAD, ended);
        }
        // The ABI promises shutdown only after the last handle call returned.
        shared.ctx.app.shutdown();
    } else {
        logging::warning(format_args!(
            "Worker (pid:{}) exiting with {in_app} request(s) still in the app (graceful_timeout or request_timeout); app shutdown skipped",
            std::process::id()
        ));
    }
    0
}

fn boot_failed(report_fd: &OwnedFd, message: &str) -> i32 {
    let one_line = message.replace('\n', " ");
    logging::error(format_args!("Worker failed to boot: {one_line}"));
    Report::BootError(one_line).send(report_fd);
    BOOT_ERROR
}

fn build(
    config: &Config,
    tls: Option<Arc<crate::transport::tls::Tls>>,
    listeners: &[Listener],
    sockets: Option<&[RawFd]>,
    app: gateway::App,
    place: Option<Place>,
) -> Result<Shared, String> {
    let epoll =
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll_create: {e}"))?;
    let socket_of = |i: usize| sockets.and_then(|s| s.get(i).copied());
    let accept_from: Vec<Socket> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Socket {
            fd: socket_of(i).unwrap_or(l.raw_fd()),
            is_tcp: l.is_tcp,
            tls: tls
                .as_ref()
                .filter(|_| l.is_tcp && config.tls_for(&l.address))
                .map(|tls| tls.for_listener(&l.address).clone()),
            deferred: listeners::deferred(l),
            own: socket_of(i).is_some_and(|fd| fd != l.raw_fd()),
        })
        .collect();
    // With sockets of its own, the worker lets go of the shared ones: a listener must close
    // once the master and the workers accepting from it are gone.
    let shared_copies = accept_from.iter().zip(listeners).filter(|(s, _)| s.own);
    listeners::close_in_place(shared_copies.map(|(_, l)| l.raw_fd()));
    for (i, socket) in accept_from.iter().enumerate() {
        // SAFETY: the master keeps the listeners and the per-worker sockets open, and so
        // does this process (until close_listeners puts /dev/null in their place).
        let fd = unsafe { BorrowedFd::borrow_raw(socket.fd) };
        epoll
            .add(fd, listener_event(i))
            .map_err(|e| format!("epoll_ctl {}: {e}", listeners[i].url()))?;
    }
    let capacity = config.worker_connections;
    let epoch = Instant::now();
    let mut request_flags = abi::FC_REQ_MULTIPROCESS;
    if config.threads > 1 {
        request_flags |= abi::FC_REQ_MULTITHREAD;
    }
    let ctx = Context {
        app,
        limits: Limits {
            request_line: config.limit_request_line,
            fields: config.limit_request_fields,
            field_size: config.limit_request_field_size,
            body: config.limit_request_body,
            head: config.limit_request_head,
        },
        forwarding: config.forwarding(),
        proxy_mode: config.proxy_protocol,
        proxy_allow: config.proxy_allow_ips.clone(),
        keepalive: config.keepalive,
        header_timeout: config.header_timeout,
        stall_timeout: config.timeout.unwrap_or(DEFAULT_STALL),
        listeners: listeners
            .iter()
            .map(|l| LocalName {
                name: l.server_name.clone(),
                port: l.server_port.clone(),
            })
            .collect(),
        stopping: AtomicBool::new(false),
        requests: Default::default(),
        max_requests: jittered_max_requests(config),
        request_flags,
        access_format: config.access_log_format.clone(),
        retiring: AtomicBool::new(false),
        pool: Pool::new(config.threads, epoch),
        body_buffer: config.body_buffer,
        response_buffer: config.response_buffer,
        place,
        epoch,
        websocket: WebSocketSettings {
            max_message: config.websocket_max_message,
            ping_interval: config.websocket_ping_interval,
            send_buffer: config.websocket_send_buffer,
        },
    };
    if ctx.app.takes_websocket() {
        // Sends from any thread wake the event loop through the hub's notifier.
        let hub = Hub::install(config.websocket_send_buffer, ctx.place)
            .map_err(|e| format!("eventfd for WebSocket sends: {e}"))?;
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, NOTIFIER);
        epoll
            .add(hub.notifier(), event)
            .map_err(|e| format!("epoll_ctl (WebSocket notifier): {e}"))?;
    }
    Ok(Shared {
        ctx,
        epoll,
        listeners: accept_from,
        slots: Slots::new(capacity, REFUSAL_SLOTS),
        open: AtomicUsize::new(0),
        accept_paused_until: AtomicU64::new(0),
        parked_at: AtomicU64::new(0),
        exhausted: AtomicBool::new(false),
        accepting: AtomicUsize::new(0),
    })
}

/// A serving thread: takes the next queued event, or leads (waits in epoll for a batch of
/// events, queues all but the first and serves that), or sleeps as a follower; repeats.
fn serve_loop(shared: &Shared, thread: usize) {
    let mut scratch = Scratch::new(thread);
    let mut events = [EpollEvent::empty(); BATCH];
    let pool = &shared.ctx.pool;
    pool.started(thread);
    loop {
        match pool.next() {
            Work::Serve(ready) => {
                scratch.tick();
                dispatch(shared, ready, &mut scratch);
            }
            Work::Lead => {
                balance::unpark(shared);
                let n = transport::sys::epoll_wait(shared.epoll.0.as_raw_fd(), &mut events, 500)
                    .unwrap_or(0);
                let first = pool.led(events[..n].iter().map(|e| Ready {
                    token: e.data(),
                    events: e.events().bits(),
                }));
                scratch.tick();
                match first {
                    Some(ready) => dispatch(shared, ready, &mut scratch),
                    None => idle_poll(shared, &mut scratch),
                }
            }
            Work::Nothing => {}
        }
    }
}

/// EPOLLEXCLUSIVE wakes one waiter per new connection; if that waiter's process died or
/// stopped before accepting, nobody else is woken for it. A leader whose wait ended without
/// events looks at the accept queues itself, so nothing waits long.
fn idle_poll(shared: &Shared, scratch: &mut Scratch) {
    if shared.ctx.stopping.load(Ordering::Acquire) {
        return;
    }
    for listener in 0..shared.listeners.len() {
        accept_ready(shared, listener, ACCEPT_DRAIN, Some(&mut *scratch));
    }
}

/// Serves one event: a listener's (accept) or a connection's.
fn dispatch(shared: &Shared, ready: Ready, scratch: &mut Scratch) {
    if ready.token == NOTIFIER {
        // Messages queued from other threads: each connection's owner sends them.
        let Some(hub) = Hub::get() else {
            return;
        };
        for token in hub.take_ready() {
            let (index, generation) = ((token & 0xffff_ffff) as usize, (token >> 32) as u32);
            connection_ready(shared, index, generation, PENDING_WRITE, scratch);
        }
        // The app's ws_close for connections the timer closed runs here, on a serving thread.
        for ended in hub.take_ended() {
            ws::conn::close_callback(&shared.ctx, scratch.thread(), ended);
        }
        return;
    }
    if ready.token & LISTENER != 0 {
        let listener = (ready.token & !LISTENER) as usize;
        // With a blocking app, the leader waits in epoll (where the listener is reported)
        // only when the queued events are served, which may take long: take what waits then,
        // as long as this worker does not hold more than its share.
        let most = match shared.ctx.pool.slow() {
            true => ACCEPT_DRAIN,
            false => ACCEPT_PER_EVENT,
        };
        if balance::park(shared, listener) {
            return;
        }
        accept_ready(shared, listener, most, Some(scratch));
        balance::yield_listener(shared, listener);
        return;
    }
    let flags = EpollFlags::from_bits_truncate(ready.events);
    let mut bits = 0;
    if flags.contains(EpollFlags::EPOLLIN) {
        bits |= PENDING_READ;
    }
    if flags.contains(EpollFlags::EPOLLOUT) {
        bits |= PENDING_WRITE;
    }
    if flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
        bits |= PENDING_HANGUP;
    }
    connection_ready(
        shared,
        (ready.token & 0xffff_ffff) as usize,
        (ready.token >> 32) as u32,
        bits,
        scratch,
    );
}

/// Milliseconds since the context's epoch (the clock of `accept_paused_until`).
fn millis(shared: &Shared) -> u64 {
    shared.ctx.epoch.elapsed().as_millis() as u64
}

fn accept_paused(shared: &Shared) -> bool {
    shared.accept_paused_until.load(Ordering::Acquire) != 0
}

/// The listeners leave (`watch` false) or rejoin this worker's epoll set.
fn watch_listeners(shared: &Shared, watch: bool) {
    for (index, &Socket { fd: raw, .. }) in shared.listeners.iter().enumerate() {
        // SAFETY: the listener descriptors stay open for the whole life of the worker (a
        // closed one is replaced by /dev/null, see close_listeners).
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let _ = if watch {
            shared.epoll.add(fd, listener_event(index))
        } else {
            shared.epoll.delete(fd)
        };
    }
}

/// accept(2) found no descriptor or memory left: stop watching the listeners for
/// [`ACCEPT_PAUSE`] (level-triggered, they would wake a thread again at once, and the accept
/// would fail again: a busy loop), logged once per episode. The main thread resumes.
fn pause_accepting(shared: &Shared, error: nix::errno::Errno) {
    let until = millis(shared) + ACCEPT_PAUSE.as_millis() as u64;
    shared.accept_paused_until.store(until, Ordering::Release);
    watch_listeners(shared, false);
    if !shared.exhausted.swap(true, Ordering::AcqRel) {
        logging::error(format_args!(
            "accept failed: {error} with {} connections open: not accepting for {} ms at a time until it succeeds (logged once)",
            shared.open.load(Ordering::Acquire),
            ACCEPT_PAUSE.as_millis()
        ));
    }
}

/// Called by the main thread each tick: rejoins the listeners once the pause is over.
fn resume_accepting(shared: &Shared) {
    let until = shared.accept_paused_until.load(Ordering::Acquire);
    if until == 0 || millis(shared) < until || shared.ctx.stopping.load(Ordering::Acquire) {
        return;
    }
    shared.accept_paused_until.store(0, Ordering::Release);
    // Re-adding reports connections already queued, so they are tried at once.
    watch_listeners(shared, true);
}

/// What one accept4(2) gave.
enum Accepted {
    /// A connection, counted as open, with its slot.
    Conn(usize, Conn),
    /// Nothing to serve (refused, aborted); try the next.
    Next,
    /// Nothing more now (the queue is empty, or accepting is paused or failed).
    Stop,
}

/// Accepts up to `most` connections from listener number `listener`; a serving thread
/// (`scratch`) serves each at once on a deferred listener ([`serve_accepted`]), otherwise it
/// is registered to wait for its request in epoll.
fn accept_ready(shared: &Shared, listener: usize, most: usize, mut scratch: Option<&mut Scratch>) {
    let Some(socket) = shared.listeners.get(listener) else {
        return;
    };
    if accept_paused(shared) {
        return;
    }
    // The serving thread's reading of the clock after its epoll_wait (one per wakeup).
    let now = scratch.as_ref().map_or_else(Instant::now, |s| s.now());
    for n in 0..most {
        // Past the first, only this worker's share; a stopping worker takes all that wait
        // (it serves them during its graceful stop, and its listeners close next).
        if n > 0 && !shared.ctx.stopping.load(Ordering::Acquire) && balance::overloaded(shared) {
            return;
        }
        // A stopping worker exits only when no thread is between accept4 and counting the
        // connection as open, so that one accepted as the listeners closed is served.
        shared.accepting.fetch_add(1, Ordering::SeqCst);
        let accepted = accept_one(shared, listener, socket, now);
        shared.accepting.fetch_sub(1, Ordering::SeqCst);
        let (index, conn) = match accepted {
            Accepted::Conn(index, conn) => (index, conn),
            Accepted::Next => continue,
            Accepted::Stop => return,
        };
        match scratch.as_deref_mut().filter(|_| socket.deferred) {
            Some(scratch) => serve_accepted(shared, index, conn, scratch),
            // Wait for the request in epoll, as nginx does without `deferred`: on loopback
            // and fast links it usually arrives after the accept, so reading at once would
            // mostly cost an EAGAIN.
            None => occupy(shared, index, Session::Http1(conn)),
        }
    }
}

/// One accept4(2) on `socket` (listener number `listener`): the connection with a slot and
/// its TLS session, or a 503 past `worker_connections`, or why accepting stops. `now`: the
/// time its header_timeout runs from.
fn accept_one(shared: &Shared, listener: usize, socket: &Socket, now: Instant) -> Accepted {
    let (client, remote) = match listeners::accept_client(socket.fd) {
        Ok(accepted) => accepted,
        Err(nix::errno::Errno::EAGAIN) => return Accepted::Stop,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => return Accepted::Next,
        Err(e) if listeners::out_of_resources(e) => {
            pause_accepting(shared, e);
            return Accepted::Stop;
        }
        // A stopping worker closes its listeners while a thread may still accept.
        Err(_) if shared.ctx.stopping.load(Ordering::Acquire) => return Accepted::Stop,
        Err(e) => {
            logging::warning(format_args!("accept failed: {e}"));
            return Accepted::Stop;
        }
    };
    if shared.exhausted.swap(false, Ordering::AcqRel) {
        logging::info(format_args!(
            "accepting again after descriptor exhaustion ({} connections open)",
            shared.open.load(Ordering::Acquire)
        ));
    }
    let is_tcp = socket.is_tcp;
    let tls_config = socket.tls.as_ref();
    let Some(index) = shared.slots.take() else {
        refuse(
            shared,
            client,
            listener,
            remote,
            is_tcp,
            tls_config.is_some(),
        );
        return Accepted::Next;
    };
    let tls = match tls_config.map(tls::Session::new).transpose() {
        Ok(session) => session.map(Box::new),
        Err(e) => {
            logging::debug(format_args!("TLS session refused: {e}"));
            shared.slots.release(index);
            return Accepted::Next;
        }
    };
    let transport = Transport::new(client, listener, remote, is_tcp, tls);
    let conn = Conn::new(transport, remote.map(|r| r.ip()), &shared.ctx, now);
    count_open(shared, 1);
    Accepted::Conn(index, conn)
}

/// Serves a connection just accepted (in slot `index`, not registered yet) at once: with
/// `defer_accept` its first bytes are there, so the request is read and answered before
/// the connection ever enters epoll, which it does only if it must wait (nginx reads a
/// deferred connection at once too). A connection that closes after its response costs no
/// epoll_ctl(2) at all.
fn serve_accepted(shared: &Shared, index: usize, conn: Conn, scratch: &mut Scratch) {
    let mut session = Session::Http1(conn);
    let ready = Readiness {
        readable: true,
        hangup: false,
    };
    match session.drive(&shared.ctx, scratch, ready) {
        Next::Wait => occupy(shared, index, session),
        // The generation (and so the token) comes with the slot: attached in `occupy`, and
        // driven again there for the frames that came with the request.
        Next::Upgrade => occupy(shared, index, session.upgraded(&shared.ctx, 0)),
        Next::Close => {
            session.end(&shared.ctx, scratch.thread());
            drop(session);
            count_open(shared, -1);
            shared.slots.release(index);
        }
    }
}

/// Puts `session` in slot `index` (a new generation of it, nothing pending) and registers
/// its connection with epoll.
fn occupy(shared: &Shared, index: usize, session: Session) {
    let cell = shared.slots.cell(index);
    let mut slot = lock(&cell.slot);
    slot.generation = slot.generation.wrapping_add(1);
    // A response the socket did not take in full (served at accept) waits for room.
    slot.watch_output = session.sending();
    session.attach(token(index, slot.generation));
    // A session that just switched protocols may have input already read: drive it.
    let switched = matches!(session, Session::WebSocket(_));
    slot.session = Some(Box::new(session));
    cell.pending
        .store(if switched { PENDING_READ } else { 0 }, Ordering::Release);
    register(shared, index, &mut slot);
    publish_deadline(shared, index, &slot);
    // The connection's first bytes may have been reported, to a thread that found the slot
    // locked, between the registration and here.
    unlock(shared, index, slot);
}

/// Lets go of slot `index`, held by a thread that does not serve events (the accepting one,
/// the timer): an event that arrived meanwhile found the slot locked and was left to the
/// holder, so it is queued for a serving thread.
fn unlock(shared: &Shared, index: usize, slot: MutexGuard<'_, Slot>) {
    let generation = slot.generation;
    drop(slot);
    if shared.slots.cell(index).pending.load(Ordering::SeqCst) != 0 {
        shared.ctx.pool.push(Ready {
            token: token(index, generation),
            events: 0,
        });
    }
}

/// A connection past `worker_connections`: a 503 and a lingering close in a refusal slot
/// (not counted as open), or, with none left or on TLS (no HTTP before a handshake), a 503
/// written at once (plain) and a close.
fn refuse(
    shared: &Shared,
    client: OwnedFd,
    listener: usize,
    remote: Option<std::net::SocketAddr>,
    is_tcp: bool,
    tls: bool,
) {
    let index = match tls {
        false => shared.slots.take_refusal(),
        true => None,
    };
    let Some(index) = index else {
        if !tls {
            h1::refuse_overload(client.as_fd());
        }
        shared.ctx.count_rejected(503);
        logging::debug("worker_connections reached: answered 503 and closed");
        return;
    };
    let transport = Transport::new(client, listener, remote, is_tcp, None);
    let mut conn = Conn::new(
        transport,
        remote.map(|r| r.ip()),
        &shared.ctx,
        Instant::now(),
    );
    match h1::refuse(&shared.ctx, &mut conn) {
        Next::Wait => occupy(shared, index, Session::Http1(conn)),
        Next::Close | Next::Upgrade => shared.slots.release(index),
    }
}

/// Adds `delta` (±1) to the open connections, here and on the scoreboard.
fn count_open(shared: &Shared, delta: isize) {
    let open = if delta > 0 {
        shared.open.fetch_add(1, Ordering::AcqRel) + 1
    } else {
        shared.open.fetch_sub(1, Ordering::AcqRel) - 1
    };
    if let Some(place) = &shared.ctx.place {
        place
            .mine()
            .connections
            .store(open as u32, Ordering::Relaxed);
    }
}

/// An event for connection `index` of `generation` (`bits`: PENDING_*): the calling thread
/// serves it if no other thread owns the connection; otherwise the owner does, as it looks at
/// the pending bits again after each drive, before and after it lets go.
fn connection_ready(
    shared: &Shared,
    index: usize,
    generation: u32,
    bits: u8,
    scratch: &mut Scratch,
) {
    let Some(cell) = shared.slots.get(index) else {
        return;
    };
    cell.pending.fetch_or(bits, Ordering::SeqCst);
    loop {
        let mut slot = match cell.slot.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // The owner sees the bits once it is done.
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let bits = cell.pending.swap(0, Ordering::SeqCst);
        if bits == 0 {
            return;
        }
        if slot.generation != generation || slot.session.is_none() {
            return;
        }
        let ready = Readiness {
            readable: bits & PENDING_READ != 0,
            hangup: bits & PENDING_HANGUP != 0,
        };
        serve_slot(shared, index, &mut slot, ready, scratch);
        drop(slot);
        if cell.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
    }
}

/// Drives the slot's connection, then leaves it registered (edge-triggered: the next input,
/// output room or hangup reports it again) or closes it.
fn serve_slot(
    shared: &Shared,
    index: usize,
    slot: &mut Slot,
    ready: Readiness,
    scratch: &mut Scratch,
) {
    let Some(session) = slot.session.as_mut() else {
        return;
    };
    let mut next = session.drive(&shared.ctx, scratch, ready);
    if next == Next::Upgrade {
        if let Some(old) = slot.session.take() {
            let new = old.upgraded(&shared.ctx, token(index, slot.generation));
            slot.session = Some(Box::new(new));
        }
        let Some(session) = slot.session.as_mut() else {
            return;
        };
        // The frames that came with the request are read already.
        let ready = Readiness {
            readable: true,
            hangup: ready.hangup,
        };
        next = session.drive(&shared.ctx, scratch, ready);
    }
    let Some(session) = slot.session.as_mut() else {
        return;
    };
    match next {
        Next::Wait if session.sending() && !slot.watch_output => {
            // The first response that waits for room: from now on epoll reports room too.
            // Modifying the registration looks at readiness again, so room that came since
            // the write's EAGAIN is reported, not lost.
            slot.watch_output = true;
            if watch(
                shared,
                session.transport().socket.as_fd(),
                index,
                slot.generation,
                Watch::Output,
            )
            .is_err()
            {
                close(shared, index, slot, scratch.thread());
            }
        }
        Next::Wait => {}
        Next::Close | Next::Upgrade => close(shared, index, slot, scratch.thread()),
    }
    publish_deadline(shared, index, slot);
}

/// Copies the deadline of the slot's connection (none: `u64::MAX`) where the timer reads it
/// without locking ([`slots::Cell::deadline`]); called by whoever holds the slot after the
/// connection's phase may have changed.
fn publish_deadline(shared: &Shared, index: usize, slot: &Slot) {
    let at = slot.session.as_ref().map_or(u64::MAX, |session| {
        let since = session
            .deadline()
            .saturating_duration_since(shared.ctx.epoch);
        since.as_millis() as u64
    });
    shared
        .slots
        .cell(index)
        .deadline
        .store(at, Ordering::Release);
}

/// What a connection's epoll registration is for ([`watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    /// A new connection: input and hangup; room for output too if it is `sending` already.
    New { sending: bool },
    /// A registered connection whose response now waits for room.
    Output,
}

/// Registers (or, for [`Watch::Output`], re-registers) a connection in the epoll set,
/// edge-triggered: input and hangup, and room for output once a response waits for it
/// (nginx registers both at once; output is left out until needed, since epoll would report
/// every new connection as writable at once, an event per connection for nothing).
fn watch(
    shared: &Shared,
    fd: BorrowedFd<'_>,
    index: usize,
    generation: u32,
    what: Watch,
) -> nix::Result<()> {
    let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    if matches!(what, Watch::Output | Watch::New { sending: true }) {
        flags |= EpollFlags::EPOLLOUT;
    }
    let mut event = EpollEvent::new(flags, token(index, generation));
    match what {
        Watch::Output => shared.epoll.modify(fd, &mut event),
        Watch::New { .. } => shared.epoll.add(fd, event),
    }
}

/// Registers a new connection, once for its whole life (see [`watch`]).
fn register(shared: &Shared, index: usize, slot: &mut Slot) {
    let Some(session) = slot.session.as_ref() else {
        return;
    };
    let what = Watch::New {
        sending: slot.watch_output,
    };
    let fd = session.transport().socket.as_fd();
    if watch(shared, fd, index, slot.generation, what).is_err() {
        close(shared, index, slot, usize::MAX);
    }
}

/// Closes the slot's connection (its session ends first: a WebSocket tells the app);
/// `thread`: the calling serving thread's index (`usize::MAX` for another thread).
fn close(shared: &Shared, index: usize, slot: &mut Slot, thread: usize) {
    if let Some(mut session) = slot.session.take() {
        session.end(&shared.ctx, thread);
        if !shared.slots.is_refusal(index) {
            count_open(shared, -1);
        }
        shared.slots.release(index);
    }
}

/// Closes connections whose deadline passed (those not being served right now), and, in a
/// stopping worker, those between requests ([`h1::idle_at_stop`]). Connections whose
/// published deadline is still ahead are not locked (one load each: with 50,000 idle
/// connections a sweep costs a few hundred microseconds).
fn sweep(shared: &Shared) {
    let now = Instant::now();
    let now_ms = now.saturating_duration_since(shared.ctx.epoch).as_millis() as u64;
    let stopping = shared.ctx.stopping.load(Ordering::Acquire);
    for (index, cell) in shared.slots.iter() {
        if !stopping && cell.deadline.load(Ordering::Acquire) > now_ms {
            continue;
        }
        let Ok(mut slot) = cell.slot.try_lock() else {
            continue;
        };
        let expired = match slot.session.as_mut() {
            Some(session) => {
                session.expired(&shared.ctx, now)
                    || (stopping && session.idle_at_stop(&shared.ctx, now))
            }
            None => false,
        };
        if expired {
            close(shared, index, &mut slot, call::TIMER_THREAD);
        }
        publish_deadline(shared, index, &slot);
        unlock(shared, index, slot);
    }
}

/// In a worker whose `graceful_timeout` is about to run out: every WebSocket starts its
/// closing handshake with 1001 (Going Away), so that its client reconnects to a new worker
/// rather than see the connection cut; those that can close at once are closed.
fn sweep_going_away(shared: &Shared) {
    let now = Instant::now();
    for (index, cell) in shared.slots.iter() {
        let Ok(mut slot) = cell.slot.try_lock() else {
            continue;
        };
        let gone = slot
            .session
            .as_mut()
            .is_some_and(|session| session.going_away(&shared.ctx, now));
        if gone {
            close(shared, index, &mut slot, call::TIMER_THREAD);
        }
        publish_deadline(shared, index, &slot);
        unlock(shared, index, slot);
    }
}

/// How long before a stopping worker's `graceful_timeout` runs out its WebSockets get their
/// 1001 (at most half of `graceful_timeout`): time for the closing handshake.
const GOING_AWAY_LEAD: Duration = Duration::from_secs(1);

/// Threads that have been in the app longer than `request_timeout`.
fn stuck_threads(shared: &Shared, config: &Config) -> usize {
    let Some(limit) = config.request_timeout else {
        return 0;
    };
    let now = Instant::now();
    (0..config.threads)
        .filter(|&i| shared.ctx.pool.busy_for(i, now).is_some_and(|d| d > limit))
        .count()
}

/// Stops accepting: the listeners leave this worker's epoll set, then the connections already
/// queued are taken (and served during the graceful stop): a wakeup this worker received but
/// did not act on would otherwise leave them waiting for the next connection to wake another
/// worker.
fn stop_accepting(shared: &Shared) {
    watch_listeners(shared, false);
    shared.accept_paused_until.store(0, Ordering::Release);
    for listener in 0..shared.listeners.len() {
        accept_ready(shared, listener, ACCEPT_DRAIN, None);
    }
    close_listeners(shared);
}

/// Closes this worker's copies of the listening sockets, so that once the master (and the
/// other workers) have closed theirs the port is free, and a client is refused rather than
/// left in an accept queue nobody serves. The descriptor numbers stay valid (/dev/null is
/// put in their place with dup2), so a thread still about to accept gets an error, never
/// another file that reused the number.
fn close_listeners(shared: &Shared) {
    listeners::close_in_place(shared.listeners.iter().map(|l| l.fd));
}

/// The worker's main thread: timers, heartbeat, signals, graceful stop, max_requests and
/// request_timeout. Returns when the worker should exit: after a graceful stop, when the
/// connections are done (those of threads stuck past request_timeout excepted, which are
/// abandoned) or graceful_timeout passed.
fn supervise(
    shared: &Shared,
    config: &Config,
    signals: &Signals,
    report_fd: &OwnedFd,
    master: nix::unistd::Pid,
) {
    let mut last_beat = Instant::now();
    let mut stop_deadline: Option<Instant> = None;
    let mut going_away_at: Option<Instant> = None;
    let mut asked_replacement = false;
    loop {
        std::thread::sleep(TICK);
        if signals.quick.load(Ordering::Acquire) {
            std::process::exit(0);
        }
        if signals.reopen.swap(false, Ordering::AcqRel) {
            logging::reopen(&config.log_targets());
        }
        let asked = signals.graceful.load(Ordering::Acquire) || nix::unistd::getppid() != master;
        if asked && !shared.ctx.stopping.swap(true, Ordering::AcqRel) {
            logging::info(format_args!("Worker exiting (pid: {})", std::process::id()));
        }
        let stuck = stuck_threads(shared, config);
        if stuck > 0 && !shared.ctx.stopping.swap(true, Ordering::AcqRel) {
            logging::error(format_args!(
                "Worker (pid:{}): a request has run longer than request_timeout ({}s); \
                 no longer accepting, replacement requested",
                std::process::id(),
                config.request_timeout.unwrap_or_default().as_secs()
            ));
        }
        if !asked_replacement && (stuck > 0 || shared.ctx.retiring.load(Ordering::Acquire)) {
            Report::ReplaceMe.send(report_fd);
            asked_replacement = true;
        }
        if shared.ctx.stopping.load(Ordering::Acquire) && stop_deadline.is_none() {
            let now = Instant::now();
            stop_deadline = Some(now + config.graceful_timeout);
            let lead = GOING_AWAY_LEAD.min(config.graceful_timeout / 2);
            going_away_at = Some(now + config.graceful_timeout - lead);
            stop_accepting(shared);
        }
        resume_accepting(shared);
        balance::unpark(shared);
        sweep(shared);
        if going_away_at.is_some_and(|at| Instant::now() >= at) && Hub::get().is_some() {
            sweep_going_away(shared);
        }
        if let Some(deadline) = stop_deadline {
            // Connections held by stuck threads never finish: do not wait for them.
            // The listeners are closed by now: a thread still accepting either gets an error
            // or a connection that `open` counts before it leaves accept_ready; so `accepting`
            // is read first, then `open`.
            let idle = shared.accepting.load(Ordering::SeqCst) == 0
                && shared.open.load(Ordering::SeqCst) <= stuck;
            if idle || Instant::now() >= deadline {
                return;
            }
        }
        if last_beat.elapsed() >= HEARTBEAT {
            Report::Heartbeat.send(report_fd);
            last_beat = Instant::now();
        }
    }
}
