//! The master process: single-threaded, never loads the app itself. It binds the
//! listeners, forks and supervises workers, and handles signals.
//!
//! Structure: an event loop (signals arrive through a self-pipe, workers report over one pipe
//! each, children are reaped, timers checked) followed by a reconcile step that compares the
//! desired workers (generation, count) with the actual ones, spawning and retiring to match.
//! A reload bumps the generation; old workers are retired one by one as new ones report ready.
//!
//! Files: this one holds the state and the event loop (signals, reports, reaping, spawning);
//! `plan` the pure decisions (worker states, what to spawn, retire or kill); `reload` HUP
//! (the trial load, the new generation) and USR2; `commands` what `ferricorn ctl` asks.

mod commands;
pub mod control;
pub mod metrics;
mod plan;
pub mod probe;
mod reload;
pub mod reuseport;
pub mod upgrade;

use crate::config::{self, Config, Overrides};
use crate::listeners::{self, ListenOptions, Listener};
use crate::logging;
use crate::master::probe::Probe;
use crate::master::reuseport::WorkerSockets;
use crate::process;
use crate::report::Report;
use crate::scoreboard::{Counters, Scoreboard};
use crate::systemd;
use crate::transport::tls;
use crate::worker;
use control::{Answer, Command, Stop};
use metrics::Restart;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, ForkResult, Pid};
use plan::{plan, state_name, Action, Kill, Wanted, WorkerState, WorkerView};
use signal_hook::consts::signal::*;
use signal_hook::SigId;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the event loop sleeps at most between checks.
const TICK: Duration = Duration::from_millis(250);
/// How often the workers' resident memory is read for max_worker_rss.
const RSS_CHECK: Duration = Duration::from_secs(1);
/// Deadline for workers to exit after a quick stop (INT/QUIT) before SIGKILL.
const QUICK_STOP: Duration = Duration::from_secs(2);
/// First and largest delay before respawning after a worker died while booting.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The signals the master handles, each behind a flag, all waking a self-pipe.
struct Signals {
    /// The self-pipe's read end (`None` in a forked child, which closed it).
    wake: Option<OwnedFd>,
    wake_write: Option<OwnedFd>,
    flags: Vec<(i32, Arc<AtomicBool>)>,
    ids: Vec<SigId>,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        let (wake, wake_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("cannot create the signal pipe: {e}"))?;
        let mut signals = Signals {
            wake: Some(wake),
            wake_write: Some(wake_write),
            flags: Vec::new(),
            ids: Vec::new(),
        };
        for sig in process::FORK_BLOCKED.map(|s| s as i32) {
            let flag = Arc::new(AtomicBool::new(false));
            let err = |e: std::io::Error| format!("cannot handle signal {sig}: {e}");
            signals
                .ids
                .push(signal_hook::flag::register(sig, flag.clone()).map_err(err)?);
            // Each registration owns a duplicate of the pipe's write end.
            let write_end = signals
                .wake_write
                .as_ref()
                .map(OwnedFd::try_clone)
                .transpose()
                .map_err(err)?
                .ok_or_else(|| format!("cannot handle signal {sig}: no signal pipe"))?;
            signals
                .ids
                .push(signal_hook::low_level::pipe::register_raw(sig, write_end).map_err(err)?);
            signals.flags.push((sig, flag));
        }
        Ok(signals)
    }

    /// Whether `sig` arrived since the last call.
    fn take(&self, sig: i32) -> bool {
        self.flags
            .iter()
            .find(|(s, _)| *s == sig)
            .is_some_and(|(_, flag)| flag.swap(false, Ordering::AcqRel))
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        let Some(wake) = &self.wake else { return };
        while matches!(nix::unistd::read(wake, &mut buf), Ok(n) if n > 0) {}
    }

    /// In a forked child: remove the master's actions, so a signal to the child never writes
    /// to the master's pipe, and close the pipe. The child then installs its own.
    fn forget_in_child(&mut self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
        self.wake = None;
        self.wake_write = None;
    }
}

/// A worker as the master sees it.
struct Worker {
    generation: u64,
    report: Option<OwnedFd>,
    pending: Vec<u8>,
    state: WorkerState,
    started: Instant,
    last_seen: Instant,
    /// Why it could not boot, as it reported.
    boot_error: Option<String>,
    /// Its slot on the scoreboard, if it got one.
    slot: Option<usize>,
    /// Its number among the workers of its generation (0, 1, ...): with `reuseport`, the
    /// socket it accepts from ([`WorkerSockets`]).
    number: usize,
    /// Consecutive RSS readings above max_worker_rss.
    rss_over: u8,
    /// Why it is being replaced, once that is known (counted when it exits).
    replaced: Option<Restart>,
}

/// The master's state.
struct Master {
    config: Config,
    /// The configuration's TLS, loaded (`None`: plain HTTP); new workers serve with it.
    tls: Option<Arc<tls::Tls>>,
    overrides: Overrides,
    listeners: Vec<Listener>,
    signals: Signals,
    pid: Pid,
    generation: u64,
    desired: usize,
    workers: BTreeMap<Pid, Worker>,
    /// `reuseport` (read at startup): each worker number's own listening sockets.
    worker_sockets: Option<WorkerSockets>,
    /// The worker count `worker_sockets` was sized for.
    sockets_for: usize,
    booted: bool,
    backoff: Duration,
    next_spawn: Instant,
    stop_deadline: Option<Instant>,
    /// Where the listeners came from: systemd-activated ones are kept as they are by reloads.
    origin: Origin,
    /// The pidfile this master wrote: `pidfile`, or `pidfile.oldbin` during an upgrade.
    pidfile: Option<PathBuf>,
    /// A new master started by USR2 that has not exited.
    upgrade_child: Option<Pid>,
    /// The listening sockets were handed to a new master: never unlink unix socket files.
    handed_over: bool,
    /// systemd was told READY=1 (after the first worker is ready).
    notified_ready: bool,
    /// A reload is under way: READY=1 is due once the new generation serves in full.
    reload_pending: bool,
    watchdog: Option<systemd::Watchdog>,
    /// The workers' shared counters (`None` if it could not be mapped: no balancing).
    scoreboard: Option<Scoreboard>,
    /// When the workers' RSS was last read (max_worker_rss).
    last_rss_check: Instant,
    /// `metrics_bind`'s server, if set and bound.
    metrics: Option<control::Server>,
    /// `control_socket`'s server, if set.
    control: Option<control::Server>,
    /// When the master started (for `show stats`).
    started: Instant,
    /// When binding `metrics_bind` was last tried.
    last_metrics_bind: Instant,
    /// The request counters of the workers that exited (so no count goes backwards).
    retired: Box<Counters>,
    /// Workers replaced, by [`Restart::ALL`] order.
    restarts: [u64; 5],
    /// Reloads that succeeded, and that failed.
    reloads: (u64, u64),
    /// A reload's trial load under way.
    probe: Option<Probe>,
    /// WINCH asked for no workers since the last reload started: the reload's new generation
    /// starts with none (a HUP after the WINCH starts workers again, as in nginx).
    held: bool,
}

/// Where the master's listening sockets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Bound from `bind` by this process.
    Bound,
    /// Passed by systemd (LISTEN_FDS): `bind` is ignored, reloads keep them.
    SocketActivated,
    /// Handed over by the previous master on USR2: this master tells systemd it is the main
    /// process (MAINPID=) once it serves.
    Upgrade,
}

/// The master's sockets at startup, already bound or inherited.
#[derive(Debug)]
pub struct Listening {
    /// The listening sockets, one per `bind` address (or as systemd or USR2 passed them).
    pub listeners: Vec<Listener>,
    /// Where they came from.
    pub origin: Origin,
    /// The per-worker sockets the previous master handed over on USR2 (`reuseport`); empty
    /// otherwise.
    pub worker_sockets: WorkerSockets,
}

/// Runs the master until it stops; returns the process exit status. `overrides` are the
/// command-line settings re-applied on every reload.
pub fn run(config: Config, overrides: Overrides, listening: Listening) -> i32 {
    let Listening {
        listeners,
        origin,
        worker_sockets,
    } = listening;
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            logging::critical(&e);
            return 1;
        }
    };
    let pid = nix::unistd::getpid();
    process::set_title(&format!(
        "ferricorn: master [{}]",
        process::display_name(&config)
    ));
    for listener in &listeners {
        logging::info(format_args!(
            "Listening at: {} ({pid})",
            listener.url_for(config.tls_for(&listener.address))
        ));
    }
    if let Some(path) = &config.pidfile {
        if let Err(e) = std::fs::write(path, format!("{pid}\n")) {
            logging::critical(format_args!("cannot write pidfile {}: {e}", path.display()));
            return 1;
        }
    }
    logging::info(format_args!(
        "Using worker: threads ({} per worker)",
        config.threads
    ));
    let config_pidfile = config.pidfile.clone();
    let metrics = config
        .metrics_bind
        .as_ref()
        .and_then(|a| bind_metrics(a, true));
    let control = match &config.control_socket {
        None => None,
        Some(path) => match bind_control(path, config.control_socket_mode) {
            Ok(server) => Some(server),
            Err(e) => {
                logging::critical(format_args!("control_socket: {e}"));
                return 1;
            }
        },
    };
    let tls = match config.tls().as_ref().map(tls::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            logging::critical(&e);
            return 1;
        }
    };
    let mut master = Master {
        tls,
        desired: config.workers,
        config,
        overrides,
        listeners,
        signals,
        pid,
        generation: 1,
        workers: BTreeMap::new(),
        worker_sockets: None,
        sockets_for: 0,
        booted: false,
        backoff: BACKOFF_MIN,
        next_spawn: Instant::now(),
        stop_deadline: None,
        origin,
        pidfile: config_pidfile,
        upgrade_child: None,
        handed_over: false,
        notified_ready: false,
        reload_pending: false,
        watchdog: systemd::Watchdog::from_env(),
        last_rss_check: Instant::now(),
        metrics,
        control,
        started: Instant::now(),
        last_metrics_bind: Instant::now(),
        retired: Counters::zeroed(),
        restarts: [0; 5],
        reloads: (0, 0),
        probe: None,
        held: false,
        scoreboard: match Scoreboard::new(0) {
            Ok(board) => Some(board),
            Err(e) => {
                logging::warning(format_args!(
                    "cannot map the scoreboard ({e}): connections are not spread by load"
                ));
                None
            }
        },
    };
    master.worker_sockets = match (master.config.reuseport, master.origin) {
        (false, _) => None,
        (true, Origin::SocketActivated) => {
            logging::info("reuseport: the sockets from systemd stay shared by the workers");
            None
        }
        (true, _) => Some(worker_sockets),
    };
    let code = master.event_loop();
    master.cleanup();
    code
}

impl Master {
    fn event_loop(&mut self) -> i32 {
        loop {
            self.wait();
            if let Some(watchdog) = &mut self.watchdog {
                watchdog.tick();
            }
            self.handle_signals();
            self.read_reports();
            self.serve_metrics();
            self.serve_control();
            let code = self.reap();
            self.step_probe();
            if let Some(code) = code {
                self.stop(Signal::SIGTERM, self.config.graceful_timeout);
                self.finish_stop();
                return code;
            }
            if self.stop_deadline.is_some() && self.workers.is_empty() {
                logging::info("Shutting down: Master");
                return 0;
            }
            self.check_rss();
            self.reconcile();
        }
    }

    /// Sleeps until a signal, a worker report, or the tick.
    fn wait(&self) {
        let mut fds: Vec<PollFd<'_>> = self
            .signals
            .wake
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.extend(
            self.workers
                .values()
                .filter_map(|w| w.report.as_ref())
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        fds.extend(
            self.probe
                .as_ref()
                .and_then(Probe::poll_fd)
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        for server in self.metrics.iter().chain(self.control.iter()) {
            fds.extend(
                server
                    .poll_fds()
                    .into_iter()
                    .map(|(fd, flags)| PollFd::new(fd, flags)),
            );
        }
        let _ = nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(TICK.as_millis() as i32).unwrap_or(PollTimeout::MAX),
        );
        self.signals.drain();
    }

    fn handle_signals(&mut self) {
        let s = &self.signals;
        let (hup, term, int, quit) = (
            s.take(SIGHUP),
            s.take(SIGTERM),
            s.take(SIGINT),
            s.take(SIGQUIT),
        );
        let (ttin, ttou, usr1, usr2, winch) = (
            s.take(SIGTTIN),
            s.take(SIGTTOU),
            s.take(SIGUSR1),
            s.take(SIGUSR2),
            s.take(SIGWINCH),
        );
        s.take(SIGCHLD);
        if int || quit {
            logging::info("Handling signal: quick stop (INT/QUIT)");
            self.stop(Signal::SIGQUIT, QUICK_STOP);
            return;
        }
        if term {
            logging::info("Handling signal: term");
            self.stop(Signal::SIGTERM, self.config.graceful_timeout);
            return;
        }
        if self.stop_deadline.is_some() {
            return;
        }
        if hup {
            // A failure is logged and counted; the current workers serve on.
            let _ = self.reload();
        }
        if ttin && self.desired < config::MAX_WORKERS {
            self.desired += 1;
            logging::info(format_args!(
                "Handling signal: ttin: {} workers",
                self.desired
            ));
        }
        if ttou && self.desired > 1 {
            self.desired -= 1;
            logging::info(format_args!(
                "Handling signal: ttou: {} workers",
                self.desired
            ));
        }
        if winch {
            logging::info("Handling signal: winch: stopping all workers gracefully");
            self.desired = 0;
            self.held = true;
        }
        if usr1 {
            logging::reopen(&self.config.log_targets());
            logging::info("Handling signal: usr1: reopened log files");
            self.signal_all(Signal::SIGUSR1);
        }
        if usr2 {
            self.upgrade();
        }
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(*pid, signal);
        }
    }

    /// Begins stopping: `signal` to every worker, SIGKILL after `grace`.
    fn stop(&mut self, signal: Signal, grace: Duration) {
        if let Some(mut probe) = self.probe.take() {
            probe.abort();
            logging::info("Reload abandoned: the server is stopping");
            self.answer_reload_waiters(control::error("reload abandoned: the server is stopping"));
        }
        if self.stop_deadline.is_none() {
            systemd::stopping();
            // Stop accepting now, as gunicorn's arbiter does: new clients are refused (a load
            // balancer tries another upstream at once) instead of waiting in a queue that no
            // stopping worker serves. Socket files are still unlinked at exit.
            listeners::close_in_place(self.listeners.iter().map(Listener::raw_fd));
        }
        self.signal_all(signal);
        let deadline = Instant::now() + grace;
        self.stop_deadline = Some(self.stop_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// Waits for every worker to exit (SIGKILL at the deadline); used when the master must exit.
    fn finish_stop(&mut self) {
        while !self.workers.is_empty() {
            self.wait();
            self.reap();
            // Stopping: only the kills of workers past the deadline.
            self.reconcile();
        }
    }

    fn read_reports(&mut self) {
        let now = Instant::now();
        for (pid, worker) in self.workers.iter_mut() {
            let Some(fd) = &worker.report else { continue };
            let mut buf = [0u8; 1024];
            loop {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) => {
                        worker.report = None;
                        break;
                    }
                    Ok(n) => {
                        worker.pending.extend_from_slice(&buf[..n]);
                        worker.last_seen = now;
                    }
                    Err(_) => break,
                }
            }
            while let Some(end) = worker.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = worker.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                let Some(report) = Report::decode(&line) else {
                    logging::debug(format_args!("worker {pid}: unknown report {line:?}"));
                    continue;
                };
                if report == Report::Ready {
                    worker.state = worker.state.reported_ready();
                    if !self.notified_ready {
                        self.notified_ready = true;
                        let status = format!("serving, generation {}", self.generation);
                        if self.origin == Origin::Upgrade {
                            systemd::main_pid(self.pid.as_raw() as u32, &status);
                        } else {
                            systemd::ready(&status);
                        }
                    }
                    if worker.generation == self.generation {
                        self.booted = true;
                        self.backoff = BACKOFF_MIN;
                    }
                    logging::debug(format_args!(
                        "worker {pid} ready (generation {})",
                        worker.generation
                    ));
                } else if report == Report::ReplaceMe && worker.state == WorkerState::Ready {
                    worker.state = worker.state.asked_replacement();
                    worker.replaced = Some(Restart::MaxRequests);
                    logging::info(format_args!(
                        "Worker (pid:{pid}) asked to be replaced; starting a new worker first"
                    ));
                } else if let Report::BootError(message) = report {
                    worker.boot_error = Some(message);
                }
            }
        }
    }

    /// Reaps exited workers. Returns an exit status if the master must stop: no worker of
    /// the first generation could boot.
    fn reap(&mut self) -> Option<i32> {
        let mut fatal = None;
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return fatal,
                Ok(status) => status,
            };
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, signal, _) => (pid, None, Some(signal)),
                _ => continue,
            };
            self.read_reports();
            if let Some(probe) = self.probe.as_mut().filter(|p| p.child() == pid) {
                probe.reaped(status);
                continue;
            }
            if self.upgrade_child == Some(pid) {
                self.upgrade_ended(pid, code, signal);
                continue;
            }
            let Some(worker) = self.workers.remove(&pid) else {
                continue;
            };
            if let (Some(board), Some(index)) = (&self.scoreboard, worker.slot) {
                if let Some(slot) = board.slot(index) {
                    self.retired.add(&slot.counters);
                    slot.release();
                }
            }
            let crashed = worker.state.booted()
                && worker.state.deadline().is_none()
                && self.stop_deadline.is_none();
            let reason = worker.replaced.or(crashed.then_some(Restart::Crash));
            if let Some(reason) = reason {
                let i = Restart::ALL.iter().position(|&r| r == reason).unwrap_or(0);
                self.restarts[i] += 1;
            }
            match (code, signal) {
                (Some(0), _) => logging::info(format_args!("Worker (pid:{pid}) exited")),
                (Some(code), _) => {
                    logging::error(format_args!("Worker (pid:{pid}) exited with code {code}"))
                }
                (_, Some(signal))
                    if worker.state.deadline().is_some() && signal == Signal::SIGKILL =>
                {
                    logging::warning(format_args!(
                        "Worker (pid:{pid}) was sent SIGKILL! (graceful_timeout)"
                    ))
                }
                (_, Some(signal)) => {
                    logging::error(format_args!("Worker (pid:{pid}) was sent {signal}!"))
                }
                _ => {}
            }
            if worker.state.booted() {
                continue;
            }
            let reason = worker
                .boot_error
                .clone()
                .unwrap_or_else(|| format!("died while booting ({})", describe(code, signal)));
            if code == Some(worker::BOOT_ERROR) && !self.booted && self.stop_deadline.is_none() {
                logging::critical(format_args!("Worker failed to boot, stopping: {reason}"));
                eprintln!("ferricorn: worker failed to boot: {reason}");
                fatal = Some(worker::BOOT_ERROR);
            } else {
                logging::error(format_args!(
                    "Worker (pid:{pid}) failed to boot: {reason}; retrying in {:.2}s",
                    self.backoff.as_secs_f64()
                ));
                self.next_spawn = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Brings the actual workers in line with the desired ones (or, while stopping, ends
    /// those past their time): [`plan`] decides, this applies its actions.
    fn reconcile(&mut self) {
        let now = Instant::now();
        let views: Vec<WorkerView> = self
            .workers
            .iter()
            .map(|(pid, w)| self.view(*pid, w, now))
            .collect();
        self.size_worker_sockets(false);
        let wanted = Wanted {
            generation: self.generation,
            workers: self.desired,
            may_spawn: now >= self.next_spawn,
            reload_pending: self.reload_pending,
            stopping: self.stop_deadline.is_some(),
        };
        for action in plan(&views, &wanted) {
            match action {
                Action::Spawn => self.spawn(),
                Action::Retire(pid) => self.retire(pid),
                Action::Kill(pid, why) => self.kill(pid, why, now),
                Action::ReloadComplete { ready } => {
                    self.reload_pending = false;
                    logging::info(format_args!(
                        "Reload complete: generation {} serves with {ready} workers",
                        self.generation
                    ));
                    systemd::ready(&format!(
                        "serving, generation {}, {ready} workers",
                        self.generation
                    ));
                }
            }
        }
    }

    /// Moves the scrapes of `metrics_bind` on, without waiting; binds it if that failed
    /// before (once a second: a master started by USR2 gets the port once the old one
    /// exits).
    fn serve_metrics(&mut self) {
        if self.metrics.is_none() && self.last_metrics_bind.elapsed() >= RSS_CHECK {
            self.last_metrics_bind = Instant::now();
            self.metrics = self
                .config
                .metrics_bind
                .as_ref()
                .and_then(|a| bind_metrics(a, false));
        }
        let Some(mut server) = self.metrics.take() else {
            return;
        };
        server.serve(metrics::head_complete, &mut |head| {
            Answer::Now(metrics::answer(head, &mut || {
                metrics::render(self.snapshot())
            }))
        });
        self.metrics = Some(server);
    }

    /// Moves the control socket's commands on, without waiting.
    fn serve_control(&mut self) {
        let Some(mut server) = self.control.take() else {
            return;
        };
        server.serve(control::line_complete, &mut |line| self.command(line));
        self.control = Some(server);
    }

    /// The metrics now: the live workers' slots plus the retired totals, and the master's
    /// own counts.
    fn snapshot(&self) -> metrics::Snapshot {
        let counters = Counters::zeroed();
        counters.add(&self.retired);
        let (mut connections, mut threads_busy, mut websockets) = (0, 0, 0);
        if let Some(board) = &self.scoreboard {
            for slot in self.workers.values().filter_map(|w| board.slot(w.slot?)) {
                if slot.in_use() {
                    counters.add(&slot.counters);
                    connections += u64::from(slot.connections.load(Ordering::Relaxed));
                    threads_busy += u64::from(slot.busy.load(Ordering::Relaxed));
                    websockets += u64::from(slot.websockets.load(Ordering::Relaxed));
                }
            }
        }
        metrics::Snapshot {
            counters,
            connections,
            threads_busy,
            websockets,
            workers: self.workers.len() as u64,
            restarts: self.restarts,
            reloads: self.reloads,
            listen_queue: self
                .listeners
                .iter()
                .filter(|l| l.is_tcp)
                .filter_map(|l| Some((l.url(), metrics::listen_queue(l.fd.as_fd())?)))
                .collect(),
            worker_rss: self
                .workers
                .keys()
                .filter_map(|pid| Some((pid.to_string(), process::resident_bytes(*pid)?)))
                .collect(),
        }
    }

    /// max_worker_rss: once a second, reads each serving worker's resident memory; one
    /// above the limit at two readings in a row leaves (a replacement first, then a graceful
    /// stop, as after max_requests).
    fn check_rss(&mut self) {
        let Some(limit) = self.config.max_worker_rss else {
            return;
        };
        if self.last_rss_check.elapsed() < RSS_CHECK {
            return;
        }
        self.last_rss_check = Instant::now();
        for (pid, worker) in self.workers.iter_mut() {
            if worker.state != WorkerState::Ready {
                continue;
            }
            let Some(rss) = process::resident_bytes(*pid) else {
                continue;
            };
            if rss <= limit {
                worker.rss_over = 0;
                continue;
            }
            worker.rss_over += 1;
            if worker.rss_over >= 2 {
                logging::info(format_args!(
                    "Worker (pid:{pid}) uses {} MiB, above max_worker_rss ({} MiB): replacing it",
                    rss >> 20,
                    limit >> 20
                ));
                worker.state = worker.state.asked_replacement();
                worker.replaced = Some(Restart::Rss);
            }
        }
    }

    /// How [`plan`] sees worker `pid` at `now`.
    fn view(&self, pid: Pid, w: &Worker, now: Instant) -> WorkerView {
        let deadline = w.state.deadline();
        let overdue =
            deadline.is_some_and(|d| now >= d) || self.stop_deadline.is_some_and(|d| now >= d);
        // A booting worker has until `timeout` after its start to report.
        let silent_since = match w.state.booted() {
            true => w.last_seen,
            false => w.started.max(w.last_seen),
        };
        let silent = deadline.is_none()
            && self
                .config
                .timeout
                .is_some_and(|t| now.duration_since(silent_since) > t);
        WorkerView {
            pid,
            generation: w.generation,
            number: w.number,
            ready: w.state.booted(),
            retiring: deadline.is_some(),
            leaving: w.state == WorkerState::Leaving,
            overdue,
            silent,
        }
    }

    /// SIGKILL for a worker past its time ([`Kill`]); it then counts as stopping.
    fn kill(&mut self, pid: Pid, why: Kill, now: Instant) {
        if why == Kill::Silent {
            logging::critical(format_args!("WORKER TIMEOUT (pid:{pid})"));
        }
        let _ = kill(pid, Signal::SIGKILL);
        if let Some(worker) = self.workers.get_mut(&pid) {
            if why == Kill::Silent {
                worker.replaced = Some(Restart::Timeout);
            }
            if worker.state.deadline().is_none() {
                worker.state = worker.state.stopping(now);
            }
        }
    }

    fn retire(&mut self, pid: Pid) {
        let generation = self.generation;
        if let Some(worker) = self.workers.get_mut(&pid) {
            if worker.generation != generation && worker.replaced.is_none() {
                worker.replaced = Some(Restart::Reload);
            }
            let _ = kill(pid, Signal::SIGTERM);
            worker.state = worker
                .state
                .stopping(Instant::now() + self.config.graceful_timeout);
        }
    }

    fn spawn(&mut self) {
        let (report_read, report_write) = match pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
            Ok(pair) => pair,
            Err(e) => {
                logging::error(format_args!("cannot create a worker pipe: {e}"));
                self.next_spawn = Instant::now() + self.backoff;
                return;
            }
        };
        let slot = self.scoreboard.as_ref().and_then(|board| {
            board.free_slot(|i| self.workers.values().any(|w| w.slot == Some(i)))
        });
        let place = slot.and_then(|i| self.scoreboard.as_ref()?.place(i));
        let number = self.free_number();
        // SAFETY: the master is single-threaded (it never starts a thread), so the child is a
        // complete copy in which any code may run.
        match unsafe { process::fork_with_signals_blocked() } {
            Ok(ForkResult::Child) => {
                drop(report_read);
                self.close_in_child();
                let sockets: Option<Vec<std::os::fd::RawFd>> =
                    self.worker_sockets.as_mut().map(|sockets| {
                        let listeners = self.listeners.iter();
                        let own = listeners.map(|l| sockets.socket_for(l, number)).collect();
                        sockets.keep_only_in_child(number);
                        own
                    });
                let code = worker::run(
                    &self.config,
                    self.tls.clone(),
                    &self.listeners,
                    sockets.as_deref(),
                    report_write,
                    self.pid,
                    place,
                );
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                let now = Instant::now();
                self.workers.insert(
                    child,
                    Worker {
                        generation: self.generation,
                        report: Some(report_read),
                        pending: Vec::new(),
                        state: WorkerState::Booting,
                        started: now,
                        last_seen: now,
                        boot_error: None,
                        slot,
                        number,
                        rss_over: 0,
                        replaced: None,
                    },
                );
            }
            Err(e) => {
                logging::error(format_args!("cannot fork a worker: {e}"));
                self.next_spawn = Instant::now() + self.backoff;
            }
        }
    }

    /// The lowest worker number no serving worker of the current generation has (one that
    /// asked to be replaced, or is stopping, gives its number to its successor).
    fn free_number(&self) -> usize {
        let taken: Vec<usize> = self
            .workers
            .values()
            .filter(|w| w.generation == self.generation)
            .filter(|w| w.state.deadline().is_none() && w.state != WorkerState::Leaving)
            .map(|w| w.number)
            .collect();
        (0..).find(|n| !taken.contains(n)).unwrap_or(0)
    }

    /// With `reuseport`, sizes the per-worker sockets for the workers wanted (and the
    /// listeners there are), once that changed. With no worker wanted (WINCH) only the
    /// listeners stay: after USR2 the new master holds the per-worker sockets too and its
    /// workers take from them; otherwise a queue no worker would take from closes.
    fn size_worker_sockets(&mut self, listeners_changed: bool) {
        let Some(sockets) = self.worker_sockets.as_mut() else {
            return;
        };
        let count = self.desired.max(1);
        if count == self.sockets_for && !listeners_changed {
            return;
        }
        sockets.resize(&self.listeners, count, self.config.listen_options());
        self.sockets_for = count;
    }

    /// In a forked child (worker or trial load): closes what is the master's alone (the
    /// metrics and control listeners, the signal pipe, the other workers' report pipes) and
    /// forgets the master's signal actions.
    fn close_in_child(&mut self) {
        drop(self.metrics.take());
        drop(self.control.take());
        self.signals.forget_in_child();
        for worker in self.workers.values_mut() {
            drop(worker.report.take());
        }
        if let Some(probe) = &mut self.probe {
            probe.forget_in_child();
        }
    }

    fn cleanup(&self) {
        if let Some(path) = &self.pidfile {
            let _ = std::fs::remove_file(path);
        }
        if self.handed_over {
            // The new master serves on the same socket files.
            return;
        }
        for listener in &self.listeners {
            listeners::unlink(listener);
        }
        if let Some(server) = &self.control {
            listeners::unlink(server.listener());
        }
    }
}

/// Binds `control_socket` at `path`, created with file mode `mode` at once: the umask is set
/// to its complement while bind(2) creates the file (the master is single-threaded), so there
/// is no window with another mode and no chmod through a path that could have become a
/// symlink. Errors name the path.
fn bind_control(path: &std::path::Path, mode: u32) -> Result<control::Server, String> {
    use nix::sys::stat::{umask, Mode};
    let address = listeners::Address::Unix(path.to_path_buf());
    let before = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = listeners::bind_listener(&address, ListenOptions::plain(control::BACKLOG));
    umask(before);
    let server = control::Server::new(bound?);
    logging::info(format_args!("Control socket at: {}", server.url()));
    Ok(server)
}

/// Binds `metrics_bind` at `address`; on failure logs why (if `first`, the first attempt)
/// and returns `None`: the master serves on and tries again each second.
fn bind_metrics(address: &listeners::Address, first: bool) -> Option<control::Server> {
    match listeners::bind_listener(address, ListenOptions::plain(control::BACKLOG)) {
        Ok(listener) => {
            let server = control::Server::new(listener);
            logging::info(format_args!("Metrics at: {}/metrics", server.url()));
            Some(server)
        }
        Err(e) => {
            if first {
                logging::error(format_args!("metrics_bind: {e}; trying again each second"));
            }
            None
        }
    }
}

fn describe(code: Option<i32>, signal: Option<Signal>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit code {code}"),
        (_, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".into(),
    }
}
