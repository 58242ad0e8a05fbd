//! USR2 binary upgrade, as nginx and gunicorn do it: the master forks and execs the binary
//! (as it now is on disk) with its original arguments, handing over its listening sockets;
//! the new master serves beside the old one until the operator retires the old one (WINCH,
//! then TERM) or rolls back (HUP the old master, TERM the new one).
//!
//! The sockets travel as inherited descriptors named in the environment variable
//! [`LISTEN_ENV`]: one `FD ADDRESS` pair per line, ADDRESS as written in `bind`, so that the
//! new master's reloads recognise them. With `reuseport`, each worker's own socket travels
//! too, as `FD/N ADDRESS` (worker number N's socket on the listener ADDRESS).

use crate::listeners::{self, Address, Listener};
use crate::master::reuseport::WorkerSockets;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// Environment variable naming the listening descriptors handed to a new master.
pub const LISTEN_ENV: &str = "FERRICORN_LISTEN_FDS";

static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// Saves the process arguments for a later upgrade; call first thing in `main`, before
/// process titles overwrite the argv area.
pub fn save_args() {
    let _ = ARGS.set(std::env::args_os().collect());
}

/// The binary to exec: the file at this executable's path now (after an upgrade replaced the
/// file, `/proc/self/exe` ends in ` (deleted)`; the new file has the old name).
fn binary() -> Result<CString, String> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot find this executable: {e}"))?;
    let bytes = exe.as_os_str().as_bytes();
    let path = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    CString::new(path).map_err(|e| e.to_string())
}

/// The listening sockets a master hands over on USR2, or a new master was handed.
#[derive(Debug, Default)]
pub struct Handover {
    /// The listeners, with their configured addresses.
    pub listeners: Vec<Listener>,
    /// With `reuseport`: each worker number's own sockets.
    pub worker_sockets: WorkerSockets,
}

/// `FD ADDRESS` lines for `listeners`, then `FD/N ADDRESS` lines for `worker_sockets`.
fn describe_all(listeners: &[Listener], worker_sockets: Option<&WorkerSockets>) -> String {
    let mut text: String = listeners
        .iter()
        .map(|l| format!("{} {}\n", l.raw_fd(), listeners::describe(&l.address)))
        .collect();
    for (address, number, fd) in worker_sockets.into_iter().flat_map(WorkerSockets::each) {
        text.push_str(&format!("{fd}/{number} {}\n", listeners::describe(address)));
    }
    text
}

/// Forks and execs a new master with the original arguments, `listeners` and
/// `worker_sockets` handed over. Returns the new master's pid. Call only from the
/// single-threaded master.
pub fn spawn_new_master(
    listeners: &[Listener],
    worker_sockets: Option<&WorkerSockets>,
) -> Result<nix::unistd::Pid, String> {
    let args: Vec<CString> = ARGS
        .get()
        .ok_or("the original arguments were not saved")?
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let program = binary()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != LISTEN_ENV)
        .filter_map(|(k, v)| {
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            CString::new(pair).ok()
        })
        .collect();
    env.push(
        CString::new(format!(
            "{LISTEN_ENV}={}",
            describe_all(listeners, worker_sockets)
        ))
        .map_err(|e| e.to_string())?,
    );
    let mut fds: Vec<RawFd> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
    let own = worker_sockets.into_iter().flat_map(WorkerSockets::each);
    fds.extend(own.map(|(_, _, fd)| fd));
    // SAFETY: the master is single-threaded; the child only calls async-signal-safe functions
    // (fcntl, execve, _exit) on data prepared before the fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            for fd in &fds {
                // SAFETY: clears close-on-exec on our own listening descriptors so the new
                // binary inherits them.
                unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
            }
            let _ = nix::unistd::execve(&program, &args, &env);
            // SAFETY: exec failed; leave the forked copy at once without running destructors
            // or atexit handlers of the old master.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(child),
    }
}

/// What a previous master handed over ([`LISTEN_ENV`]), adopted with their configured
/// addresses; empty when not started by an upgrade. The variable is removed so that workers
/// and later upgrades do not see it. Errors: one line naming the bad entry.
pub fn inherited() -> Result<Handover, String> {
    let Some(text) = std::env::var_os(LISTEN_ENV) else {
        return Ok(Handover::default());
    };
    // The CLI calls this before the master forks anything: the process is single-threaded.
    std::env::remove_var(LISTEN_ENV);
    let mut handover = Handover::default();
    for line in text.to_string_lossy().lines().filter(|l| !l.is_empty()) {
        let bad = |what: &str| format!("{LISTEN_ENV}: bad {what} in {line:?}");
        let (fd, address) = line.split_once(' ').ok_or_else(|| bad("entry"))?;
        let (fd, number) = match fd.split_once('/') {
            Some((fd, number)) => (fd, Some(number.parse().map_err(|_| bad("number"))?)),
            None => (fd, None),
        };
        let fd = fd.parse().map_err(|_| bad("descriptor"))?;
        let listener = listeners::adopt(Address::parse(address)?, fd)?;
        match number {
            None => handover.listeners.push(listener),
            Some(number) => {
                let sockets = &mut handover.worker_sockets;
                sockets.adopt(listener.address, number, listener.fd);
            }
        }
    }
    Ok(handover)
}
