//! The error log and the access log, in gunicorn's formats.
//!
//! Error log lines: `[2026-11-20 23:26:00 +0000] [PID] [INFO] message`.
//! Access log lines: rendered by [`crate::access_log`] from `access_log_format`.
//!
//! Each line is written with one write(2) on a file opened with O_APPEND, so lines from the
//! master, the workers and their threads never interleave. The destinations are plain file
//! descriptor numbers held in atomics: reopening (USR1) swaps the file behind the number with
//! dup2, without a lock on the logging path.

use crate::config::{Config, LogLevel};
use std::fmt::Display;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static ERROR_FD: AtomicI32 = AtomicI32::new(2);
static ACCESS_FD: AtomicI32 = AtomicI32::new(-1);

fn open_append(path: &str) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {path}: {e}"))
}

/// Points `slot` at `target` (`-` = `stdio_fd`), reusing the slot's descriptor number when it
/// already owns a file so that other threads never see a closed descriptor.
fn point(slot: &AtomicI32, target: Option<&str>, stdio_fd: i32) -> Result<(), String> {
    let current = slot.load(Ordering::Acquire);
    let new_fd = match target {
        None => -1,
        Some("-") => stdio_fd,
        Some(path) => {
            let file = open_append(path)?;
            if current > 2 {
                // SAFETY: dup2 atomically replaces our own log descriptor `current` with the new
                // file; `file` is closed when it drops, `current` stays valid throughout.
                unsafe { libc::dup2(file.as_raw_fd(), current) };
                return Ok(());
            }
            file.into_raw_fd()
        }
    };
    slot.store(new_fd, Ordering::Release);
    if current > 2 && current != new_fd {
        // SAFETY: `current` was a log file descriptor this module opened and no longer publishes.
        unsafe { libc::close(current) };
    }
    Ok(())
}

/// Opens the error and access logs named in `config` and sets the level.
/// Errors: one line naming the file that could not be opened.
pub fn configure(config: &Config) -> Result<(), String> {
    point(&ERROR_FD, Some(&config.errorlog), 2)?;
    point(&ACCESS_FD, config.accesslog.as_deref(), 1)?;
    LEVEL.store(config.loglevel as u8, Ordering::Release);
    Ok(())
}

/// Reopens the log files in place (USR1, for logrotate without copytruncate).
pub fn reopen(config: &Config) {
    if let Err(e) = configure(config) {
        error(format_args!("reopening logs: {e}"));
    }
}

/// Whether messages at `level` are written.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// `strftime` of the current local time with `format` (a NUL-terminated C format).
pub(crate) fn now_formatted(format: &std::ffi::CStr) -> String {
    let mut buf = [0u8; 64];
    // SAFETY: time/localtime_r/strftime are called with valid pointers to locals; strftime
    // writes at most buf.len() bytes and returns how many.
    let n = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm)
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn write_line(fd: i32, line: &[u8]) {
    if fd < 0 {
        return;
    }
    // SAFETY: writes from a valid buffer to a log descriptor; a failed write is ignored (there is
    // nowhere left to report it).
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

/// Writes `message` to the error log at `level`, if enabled.
pub fn log(level: LogLevel, message: impl Display) {
    if !enabled(level) {
        return;
    }
    let line = format!(
        "[{}] [{}] [{}] {message}\n",
        now_formatted(c"%Y-%m-%d %H:%M:%S %z"),
        std::process::id(),
        level.label()
    );
    write_line(ERROR_FD.load(Ordering::Acquire), line.as_bytes());
}

/// Debug-level message.
pub fn debug(message: impl Display) {
    log(LogLevel::Debug, message)
}
/// Info-level message.
pub fn info(message: impl Display) {
    log(LogLevel::Info, message)
}
/// Warning-level message.
pub fn warning(message: impl Display) {
    log(LogLevel::Warning, message)
}
/// Error-level message.
pub fn error(message: impl Display) {
    log(LogLevel::Error, message)
}
/// Critical-level message.
pub fn critical(message: impl Display) {
    log(LogLevel::Critical, message)
}

/// Whether an access log is configured (check before building an [`AccessEntry`]).
pub fn access_enabled() -> bool {
    ACCESS_FD.load(Ordering::Relaxed) >= 0
}

/// Writes one rendered access log line (see [`crate::access_log`]).
pub fn access(line: &[u8]) {
    write_line(ACCESS_FD.load(Ordering::Acquire), line);
}
