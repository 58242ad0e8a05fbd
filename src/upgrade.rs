//! USR2 binary upgrade, as nginx and gunicorn do it: the master forks and execs the binary
//! (as it now is on disk) with its original arguments, handing over its listening sockets;
//! the new master serves beside the old one until the operator retires the old one (WINCH,
//! then TERM) or rolls back (HUP the old master, TERM the new one).
//!
//! The sockets travel as inherited descriptors named in the environment variable
//! [`LISTEN_ENV`]: one `FD ADDRESS` pair per line, ADDRESS as written in `bind`, so that the
//! new master's reloads recognise them.

use crate::listeners::{self, Address, Listener};
use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
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

/// `FD ADDRESS` lines for `listeners`.
fn describe_all(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(|l| format!("{} {}\n", l.raw_fd(), listeners::describe(&l.address)))
        .collect()
}

/// Forks and execs a new master with the original arguments and `listeners` handed over.
/// Returns the new master's pid. Call only from the single-threaded master.
pub fn spawn_new_master(listeners: &[Listener]) -> Result<nix::unistd::Pid, String> {
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
        CString::new(format!("{LISTEN_ENV}={}", describe_all(listeners)))
            .map_err(|e| e.to_string())?,
    );
    let fds: Vec<i32> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
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

/// The listeners a previous master handed over ([`LISTEN_ENV`]), adopted with their
/// configured addresses; empty when not started by an upgrade. The variable is removed so
/// that workers and later upgrades do not see it.
pub fn inherited_listeners() -> Result<Vec<Listener>, String> {
    let Some(text) = std::env::var_os(LISTEN_ENV) else {
        return Ok(Vec::new());
    };
    // The CLI calls this before the master forks anything: the process is single-threaded.
    std::env::remove_var(LISTEN_ENV);
    let text = text.to_string_lossy().into_owned();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (fd, address) = line
                .split_once(' ')
                .ok_or_else(|| format!("{LISTEN_ENV}: bad entry {line:?}"))?;
            let fd = fd
                .parse()
                .map_err(|_| format!("{LISTEN_ENV}: bad descriptor in {line:?}"))?;
            listeners::adopt(Address::parse(address)?, fd)
        })
        .collect()
}
