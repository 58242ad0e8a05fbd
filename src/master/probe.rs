//! The trial load (`--check-config` and every reload): the app of a configuration is
//! loaded in a child process (its TLS files read, the worker's user taken, the plugin
//! dlopened, its ABI checked, `init` and `shutdown` called), so a broken plugin can neither
//! crash nor pollute the master. The master runs it without waiting ([`Probe::step`] from
//! its event loop: metrics, the control socket, reaping, signals and the watchdog go on
//! while a slow `init` runs); the command line waits for it ([`probe`]).

use crate::config::Config;
use crate::gateway;
use crate::process;
use crate::transport::tls;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, ForkResult, Pid};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Longest a trial load may take; past it the child is killed and the load failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// A trial load under way: the child, the pipe its one-line result comes through, and the
/// configuration it loads (handed back with the result).
#[derive(Debug)]
pub struct Probe {
    child: Pid,
    /// The read end (non-blocking); `None` once it reported end of file.
    pipe: Option<OwnedFd>,
    message: Vec<u8>,
    /// How the child ended, once reaped (here or by the master's reaping of all children).
    status: Option<WaitStatus>,
    deadline: Instant,
    config: Config,
}

impl Probe {
    /// Forks the trial load of `config`'s app. `in_child` runs first in the child (the master
    /// closes what is its own there). Signals are blocked across the fork and unblocked in the
    /// child after `in_child`. Errors: no app configured, no pipe, no fork (one line each).
    pub fn start(config: Config, in_child: &mut dyn FnMut()) -> Result<Probe, String> {
        let Some(path) = config.app_path.clone() else {
            return Err(
                "no app configured: set app.path in the configuration or pass the plugin path"
                    .into(),
            );
        };
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        // SAFETY: the calling process is single-threaded (the master, or the command line
        // before serving), so the child is a complete copy in which any code may run.
        let forked = unsafe { process::fork_with_signals_blocked() };
        match forked.map_err(|e| format!("cannot fork the trial load: {e}"))? {
            ForkResult::Child => {
                drop(read_end);
                in_child();
                process::unblock_fork_signals();
                // The key may be readable by root only: loaded before the user switch, as the
                // master does.
                let loaded = trial_tls(&config)
                    .and_then(|()| process::enter_worker(&config))
                    .and_then(|()| gateway::trial_load(&path, &config.app_config));
                let (code, message) = match loaded {
                    Ok(name) => (0, name),
                    Err(e) => (1, e),
                };
                let _ = nix::unistd::write(&write_end, message.as_bytes());
                std::process::exit(code);
            }
            ForkResult::Parent { child } => Ok(Probe {
                child,
                pipe: Some(read_end),
                message: Vec::new(),
                status: None,
                deadline: Instant::now() + PROBE_TIMEOUT,
                config,
            }),
        }
    }

    /// The child's pid.
    pub fn child(&self) -> Pid {
        self.child
    }

    /// The pipe to poll for the result, while it is open.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(|fd| fd.as_fd())
    }

    /// The child was reaped elsewhere (the master reaps all its children) with `status`.
    pub fn reaped(&mut self, status: WaitStatus) {
        self.status = Some(status);
    }

    /// Moves the trial load on without waiting: reads what the child wrote, reaps it once
    /// its pipe is closed, kills it past [`PROBE_TIMEOUT`]. `Some` once it is over: the
    /// app's name, or the one-line reason it failed.
    pub fn step(&mut self) -> Option<Result<String, String>> {
        self.read();
        if self.pipe.is_none() && self.status.is_none() {
            match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => self.status = Some(status),
                Err(e) => return Some(Err(format!("trial load: cannot wait for it: {e}"))),
            }
        }
        if let (None, Some(status)) = (&self.pipe, self.status) {
            return Some(self.outcome(status));
        }
        if Instant::now() < self.deadline {
            return None;
        }
        self.abort();
        Some(Err(format!(
            "plugin {}: trial load timed out",
            self.plugin()
        )))
    }

    /// In another child of the master (a worker forked while this runs): closes the pipe's
    /// read end, which is the master's alone.
    pub fn forget_in_child(&mut self) {
        self.pipe = None;
    }

    /// Ends the trial load now (SIGKILL, reaped).
    pub fn abort(&mut self) {
        if self.status.is_none() {
            let _ = kill(self.child, Signal::SIGKILL);
            self.status = waitpid(self.child, None).ok();
        }
        self.pipe = None;
    }

    /// The configuration that was loaded.
    pub fn into_config(self) -> Config {
        self.config
    }

    /// Waits until the trial load is over (for the command line): [`Probe::step`]'s result.
    pub fn wait(mut self) -> Result<String, String> {
        loop {
            if let Some(result) = self.step() {
                return result;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            let timeout = PollTimeout::try_from(ms.min(100)).unwrap_or(PollTimeout::MAX);
            match self.poll_fd() {
                Some(fd) => {
                    let _ = nix::poll::poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout);
                }
                // The pipe is closed: the child is about to be reaped.
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn read(&mut self) {
        let Some(fd) = &self.pipe else { return };
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break self.pipe = None,
                Ok(n) => self.message.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => break self.pipe = None,
            }
        }
    }

    fn plugin(&self) -> String {
        self.config
            .app_path
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    }

    fn outcome(&self, status: WaitStatus) -> Result<String, String> {
        let message = String::from_utf8_lossy(&self.message).into_owned();
        match status {
            WaitStatus::Exited(_, 0) => Ok(message),
            WaitStatus::Exited(_, _) => Err(message),
            WaitStatus::Signaled(_, signal, _) => Err(format!(
                "plugin {}: crashed during trial load ({signal})",
                self.plugin()
            )),
            other => Err(format!(
                "plugin {}: trial load ended unexpectedly: {other:?}",
                self.plugin()
            )),
        }
    }
}

/// Trial-loads the app of `config` in a child process and waits for it: the app's name, or
/// the one-line reason it failed (`--check-config`, and the command line before serving).
/// Call it only while the process is single-threaded.
pub fn probe(config: &Config) -> Result<String, String> {
    Probe::start(config.clone(), &mut || {})?.wait()
}

/// Loads the TLS files of `config` (if any), as the master will: their one-line error.
fn trial_tls(config: &Config) -> Result<(), String> {
    config
        .tls()
        .map_or(Ok(()), |settings| tls::load(&settings).map(drop))
}
