//! The process environment gunicorn's settings control: `chdir` and `umask` at startup,
//! `raw_env`, `user`, `group` and `cpu_scheduling_policy` in every worker (and trial-load
//! child) right after fork, and process titles (`proc_name`).

use crate::config::Config;
use std::ffi::CString;

/// Startup (master, before anything is opened): `chdir`, then `umask`.
/// Errors: one line naming the directory.
pub fn apply_startup(config: &Config) -> Result<(), String> {
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| format!("chdir: cannot change to {}: {e}", dir.display()))?;
    }
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// The signals the master and its workers handle (HUP, TERM, INT, QUIT, TTIN, TTOU, USR1,
/// USR2, WINCH, CHLD): blocked in the master across fork(2) (see
/// [`fork_with_signals_blocked`]).
pub const FORK_BLOCKED: [nix::sys::signal::Signal; 10] = {
    use nix::sys::signal::Signal::*;
    [
        SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD,
    ]
};

fn fork_set() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for signal in FORK_BLOCKED {
        set.add(signal);
    }
    set
}

/// fork(2) with [`FORK_BLOCKED`] blocked across it (sigprocmask(2)), restored in the parent.
/// The child starts with them blocked: a signal sent to it before it has installed its own
/// handlers stays pending (it would otherwise hit the master's inherited handler, whose
/// registrations the child forgets, and be lost) until it calls [`unblock_fork_signals`].
///
/// # Safety
///
/// As [`nix::unistd::fork`]: the calling process must be single-threaded (the master, or the
/// command line before serving), so that the child may run any code.
pub unsafe fn fork_with_signals_blocked() -> nix::Result<nix::unistd::ForkResult> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&fork_set()), Some(&mut old));
    // SAFETY: the caller guarantees the process is single-threaded.
    let forked = unsafe { nix::unistd::fork() };
    if !matches!(forked, Ok(nix::unistd::ForkResult::Child)) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    forked
}

/// In a forked child, once its own signal handlers are installed: unblocks
/// [`FORK_BLOCKED`], delivering what arrived meanwhile.
pub fn unblock_fork_signals() {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&fork_set()),
        None,
    );
}

/// Descriptors a worker needs besides its connections (listeners, epoll, pipes, log files,
/// the app's own), for the RLIMIT_NOFILE check.
pub const WORKER_OWN_DESCRIPTORS: u64 = 64;

/// At startup, raises RLIMIT_NOFILE's soft limit to its hard limit (as nginx's
/// `worker_rlimit_nofile` would, and systemd's `LimitNOFILE=` sets both), inherited by every
/// worker. Returns a warning, naming both numbers, when `worker_connections` plus
/// [`WORKER_OWN_DESCRIPTORS`] still does not fit (getrlimit(2), setrlimit(2)).
pub fn raise_nofile_limit(worker_connections: usize) -> Option<String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising soft up to hard is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let need = worker_connections as u64 + WORKER_OWN_DESCRIPTORS;
    (need > limit.rlim_cur).then(|| {
        format!(
            "worker_connections ({worker_connections}) plus about {WORKER_OWN_DESCRIPTORS} descriptors of each worker's own exceed RLIMIT_NOFILE (soft {}, hard {}): raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower worker_connections; when descriptors run out, a worker pauses accepting",
            limit.rlim_cur, limit.rlim_max
        )
    })
}

/// `cpu_scheduling_policy`: the Linux scheduling policy of a worker's threads (sched(7)),
/// set in the worker before its first thread starts (threads inherit it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedPolicy {
    /// SCHED_BATCH: a wakeup never preempts the running task (the kernel's fair class treats
    /// the thread as CPU-bound); the default.
    Batch,
    /// SCHED_OTHER: the kernel's default policy.
    Other,
}

impl SchedPolicy {
    /// Puts the calling thread (and the threads it starts later) under this policy, with
    /// the static priority 0 both policies require. Errors: the errno of
    /// sched_setscheduler(2), e.g. EPERM under a seccomp or container policy that forbids it.
    pub fn apply(self) -> Result<(), nix::errno::Errno> {
        let policy = match self {
            SchedPolicy::Batch => libc::SCHED_BATCH,
            SchedPolicy::Other => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 = this thread.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        nix::errno::Errno::result(rc).map(drop)
    }
}

/// In a freshly forked child, before the app is loaded: sets `raw_env`, then switches to
/// `group` and `user` (setgid, initgroups, setuid, as gunicorn's workers do), so the app
/// never runs with the master's privileges. Errors: one line naming the user or group.
pub fn enter_worker(config: &Config) -> Result<(), String> {
    for (key, value) in &config.raw_env {
        // The child is single-threaded here (just forked), so changing the environment is safe.
        std::env::set_var(key, value);
    }
    if let Some(gid) = config.group {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))
            .map_err(|e| format!("group: cannot switch to gid {gid}: {e}"))?;
    }
    if let Some(uid) = config.user {
        let uid = nix::unistd::Uid::from_raw(uid);
        if nix::unistd::geteuid().is_root() {
            let gid = config
                .group
                .map(nix::unistd::Gid::from_raw)
                .unwrap_or_else(nix::unistd::getegid);
            if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
                let name = CString::new(user.name).unwrap_or_default();
                nix::unistd::initgroups(&name, gid)
                    .map_err(|e| format!("user: cannot set the groups of uid {uid}: {e}"))?;
            }
        }
        nix::unistd::setuid(uid).map_err(|e| format!("user: cannot switch to uid {uid}: {e}"))?;
    }
    if let Err(e) = config.cpu_scheduling_policy.apply() {
        // Not worth failing the boot for: the worker serves under the inherited policy.
        crate::logging::warning(format_args!(
            "cpu_scheduling_policy: cannot set {:?}: {e}",
            config.cpu_scheduling_policy
        ));
    }
    Ok(())
}

/// The name shown in titles: `proc_name`, else the app's file name, else `ferricorn`.
pub fn display_name(config: &Config) -> String {
    config
        .proc_name
        .clone()
        .or_else(|| {
            config
                .app_path
                .as_deref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "ferricorn".into())
}

/// Sets this process's title: the command line `ps` shows (the argv area, as setproctitle
/// does; its length bounds the title) and the 15-byte thread name `top` shows
/// (prctl PR_SET_NAME). Best effort: failures are ignored.
pub fn set_title(title: &str) {
    if let Ok(name) = CString::new(title.as_bytes()[..title.len().min(15)].to_vec()) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let Some((start, end)) = argv_area() else {
        return;
    };
    let len = end - start;
    if len < 2 {
        return;
    }
    let n = title.len().min(len - 1);
    // SAFETY: [arg_start, arg_end) is this process's own argv string area (proc_pid_stat(5),
    // fields 48-49), mapped writable on the initial stack for the process's lifetime. The
    // arguments were parsed and copied before any title is set; afterwards nothing reads argv.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area.fill(0);
        area[..n].copy_from_slice(&title.as_bytes()[..n]);
    }
}

/// (arg_start, arg_end) from /proc/self/stat: fields 48 and 49 (Linux ≥ 3.5).
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // `after` starts at field 3 (state): field N is fields[N - 3].
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// The resident memory of process `pid` in bytes, from `/proc/PID/statm` (its second field,
/// in pages; proc(5)); `None` if the process is gone or the file unreadable.
pub fn resident_bytes(pid: nix::unistd::Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
