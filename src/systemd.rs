//! The systemd service protocol (sd_notify(3), sd_listen_fds(3)) through the `sd-notify`
//! crate: READY/RELOADING/STOPPING/STATUS/MAINPID/WATCHDOG notifications and socket
//! activation. Every call is a no-op when the master does not run under systemd
//! (`NOTIFY_SOCKET`, `LISTEN_FDS`, `WATCHDOG_USEC` unset).

use crate::listeners::{self, Address, Listener};
use crate::logging;
use sd_notify::NotifyState;
use std::time::{Duration, Instant};

/// Sends `states` to the service manager; a failure is logged at debug level (systemd acts
/// on a missing READY=1 by its own timeout).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        logging::debug(format_args!("sd_notify failed: {e}"));
    }
}

/// `READY=1` with a `STATUS=` line: the service serves (after start-up or a reload).
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (systemd ≥ 253 reload protocol), at the start of a HUP.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// `STOPPING=1`: a graceful or quick stop began.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A `STATUS=` line, e.g. the worker count.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// `MAINPID=` (and `READY=1`): this process replaces the previous master (USR2 upgrade).
pub fn main_pid(pid: u32, status: &str) {
    notify(&[
        NotifyState::MainPid(pid),
        NotifyState::Ready,
        NotifyState::Status(status),
    ]);
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for (`WATCHDOG_USEC`).
pub struct Watchdog {
    interval: Duration,
    last: Instant,
}

impl Watchdog {
    /// The watchdog systemd enabled for this process, if any. Removes `WATCHDOG_USEC` and
    /// `WATCHDOG_PID` from the environment, so that workers do not inherit them.
    pub fn from_env() -> Option<Watchdog> {
        // SAFETY: called by the master before it forks anything; the master never starts a
        // thread, so nothing reads the environment concurrently.
        let limit = unsafe { sd_notify::watchdog_enabled_and_unset_env() }?;
        Some(Watchdog {
            interval: limit / 2,
            last: Instant::now() - limit,
        })
    }

    /// Sends `WATCHDOG=1` if half the interval passed since the last one.
    pub fn tick(&mut self) {
        if self.last.elapsed() >= self.interval {
            notify(&[NotifyState::Watchdog]);
            self.last = Instant::now();
        }
    }
}

/// The listening sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), adopted
/// as listeners with their names, or an empty list without socket activation. The variables
/// are removed from the environment so that workers do not see them.
pub fn activated_listeners() -> Result<Vec<(Listener, String)>, String> {
    // SAFETY: called by the CLI before the master forks or starts anything; the process is
    // single-threaded, so nothing reads the environment concurrently.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
        .map_err(|e| format!("socket activation: {e}"))?;
    fds.map(|(fd, name)| Ok((listeners::adopt(Address::Fd(fd), fd)?, name)))
        .collect()
}
