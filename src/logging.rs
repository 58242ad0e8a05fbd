//! The error log and the access log, in gunicorn's formats.
//!
//! Error log lines: `[2026-11-20 23:26:00 +0000] [PID] [INFO] message`.
//! Access log lines: rendered by the access_log module from `access_log_format`.
//!
//! Each line is written with one write(2) on a file opened with O_APPEND, so lines from the
//! master, the workers and their threads never interleave. The destinations are plain file
//! descriptor numbers held in atomics: reopening (USR1) swaps the file behind the number with
//! dup2, without a lock on the logging path.

use ferricorn_sdk::abi;
use std::fmt::Display;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static ERROR_FD: AtomicI32 = AtomicI32::new(2);
static ACCESS_FD: AtomicI32 = AtomicI32::new(-1);
/// `capture_output` in this process (a worker): stdout and stderr follow the error log file.
static CAPTURE: AtomicBool = AtomicBool::new(false);
/// The access log's path, for the write-failure report (read only on that path).
static ACCESS_PATH: Mutex<String> = Mutex::new(String::new());
/// Access log lines lost since the last report.
static ACCESS_LOST: AtomicU64 = AtomicU64::new(0);
/// When write failures of the access log were last reported, in seconds since the epoch.
static ACCESS_REPORTED: AtomicU64 = AtomicU64::new(0);
/// Write failures of the access log are reported at most this often (seconds).
const REPORT_EVERY: u64 = 60;

/// Log levels, as gunicorn's `loglevel` (ordered by severity); each value is its gateway ABI
/// number (`FC_LOG_*`, the numbers a plugin logs with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum LogLevel {
    /// Everything, including per-request rejections.
    Debug = abi::FC_LOG_DEBUG,
    /// Normal operation: listeners, workers starting and stopping.
    Info = abi::FC_LOG_INFO,
    /// Something unexpected that ferricorn worked around.
    Warning = abi::FC_LOG_WARNING,
    /// A failure.
    Error = abi::FC_LOG_ERROR,
    /// A failure that stops the server.
    Critical = abi::FC_LOG_CRITICAL,
}

const LEVELS: [(&str, LogLevel); 5] = [
    ("debug", LogLevel::Debug),
    ("info", LogLevel::Info),
    ("warning", LogLevel::Warning),
    ("error", LogLevel::Error),
    ("critical", LogLevel::Critical),
];

impl LogLevel {
    /// The level of a plugin's log call (`FC_LOG_*`); an unknown number is an error.
    pub fn from_abi(level: i32) -> LogLevel {
        LEVELS
            .iter()
            .map(|(_, l)| *l)
            .find(|l| *l as i32 == level)
            .unwrap_or(LogLevel::Error)
    }

    /// Parses `debug`, `info`, `warning`, `error` or `critical` (case-insensitive).
    pub fn parse(text: &str) -> Option<LogLevel> {
        LEVELS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, level)| *level)
    }

    /// The upper-case name used in log lines, e.g. `INFO`.
    pub fn label(self) -> &'static str {
        ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"][self as usize]
    }
}

/// Where the logs go and what is written: `errorlog` (`-` = stderr), `accesslog` (`-` =
/// stdout, `None` = off) and `loglevel`, as the configuration gives them.
#[derive(Clone, Copy, Debug)]
pub struct LogTargets<'a> {
    /// `errorlog`.
    pub errorlog: &'a str,
    /// `accesslog`.
    pub accesslog: Option<&'a str>,
    /// `loglevel`.
    pub level: LogLevel,
}

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

/// Checks, without creating anything, that every log file `config` names can be opened
/// for appending: an existing file is opened, a missing one needs a writable directory
/// (`--check-config`). Errors: one line naming the setting and the file.
pub fn check_paths(targets: &LogTargets<'_>) -> Result<(), String> {
    let named = [
        ("errorlog", Some(targets.errorlog)),
        ("accesslog", targets.accesslog),
    ];
    for (key, path) in named {
        let Some(path) = path.filter(|p| *p != "-") else {
            continue;
        };
        let file = std::path::Path::new(path);
        let result = if file.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(file)
                .map(drop)
        } else {
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(std::io::Error::from)
        };
        result.map_err(|e| format!("{key}: cannot open log file {path}: {e}"))?;
    }
    Ok(())
}

/// Opens the error and access logs named in `config` and sets the level.
/// Errors: one line naming the file that could not be opened.
pub fn configure(targets: &LogTargets<'_>) -> Result<(), String> {
    point(&ERROR_FD, Some(targets.errorlog), 2)?;
    if CAPTURE.load(Ordering::Acquire) {
        redirect_stdio();
    }
    point(&ACCESS_FD, targets.accesslog, 1)?;
    if let Ok(mut path) = ACCESS_PATH.lock() {
        *path = targets.accesslog.unwrap_or_default().to_string();
    }
    LEVEL.store(targets.level as u8, Ordering::Release);
    Ok(())
}

/// Makes this process's stdout and stderr the error log file, now and after every reopen
/// (gunicorn's `capture_output`, for a worker: what an app prints lands in the error log).
/// Nothing changes while the error log is stderr.
pub fn capture_output() {
    CAPTURE.store(true, Ordering::Release);
    redirect_stdio();
}

/// Points descriptors 1 and 2 at the error log file, if it is one.
fn redirect_stdio() {
    let fd = ERROR_FD.load(Ordering::Acquire);
    if fd <= 2 {
        return;
    }
    for stdio in [1, 2] {
        // SAFETY: dup2 atomically replaces this process's stdout/stderr with a duplicate of
        // the error log descriptor it owns; nothing else holds those numbers as files.
        unsafe { libc::dup2(fd, stdio) };
    }
}

/// Reopens the log files in place (USR1, for logrotate without copytruncate).
pub fn reopen(targets: &LogTargets<'_>) {
    if let Err(e) = configure(targets) {
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

/// Writes one line; false if the write failed or was short.
fn write_line(fd: i32, line: &[u8]) -> bool {
    if fd < 0 {
        return true;
    }
    // SAFETY: writes from a valid buffer to a log descriptor.
    let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    n == line.len() as isize
}

/// Counts a lost access log line and reports the losses in the error log, at most once a
/// [`REPORT_EVERY`] seconds per process, with how many lines were lost.
fn access_failed(error: std::io::Error) {
    ACCESS_LOST.fetch_add(1, Ordering::AcqRel);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = ACCESS_REPORTED.load(Ordering::Acquire);
    if last != 0 && now < last + REPORT_EVERY {
        return;
    }
    if ACCESS_REPORTED
        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let lost = ACCESS_LOST.swap(0, Ordering::AcqRel);
    let path = ACCESS_PATH.lock().map(|p| p.clone()).unwrap_or_default();
    self::error(format_args!(
        "access log {path}: write failed ({error}); {lost} line(s) lost since the last report (reported at most once every {REPORT_EVERY} s)"
    ));
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
    // A failed error log write has nowhere left to be reported.
    write_line(ERROR_FD.load(Ordering::Acquire), line.as_bytes());
}

/// Makes panics of the server's own code one error-log line each (message and location; no
/// backtrace, and no lock: the line is one write(2)), instead of the default multi-line
/// stderr text that threads interleave. Set once at startup; forked workers inherit it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map_or_else(String::new, |l| {
            format!(" at {}:{}:{}", l.file(), l.line(), l.column())
        });
        let thread = std::thread::current();
        error(format_args!(
            "panic in thread {}{at}: {}",
            thread.name().unwrap_or("?"),
            message.escape_debug()
        ));
    }));
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

/// Whether an access log is configured (check before building an access log entry).
pub fn access_enabled() -> bool {
    ACCESS_FD.load(Ordering::Relaxed) >= 0
}

/// Writes one rendered access log line (rendered by the access_log module).
pub fn access(line: &[u8]) {
    if !write_line(ACCESS_FD.load(Ordering::Acquire), line) {
        access_failed(std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::LogLevel;
    use ferricorn_sdk::abi;

    #[test]
    fn abi_numbers_are_the_levels() {
        assert_eq!(LogLevel::from_abi(abi::FC_LOG_DEBUG), LogLevel::Debug);
        assert_eq!(LogLevel::from_abi(abi::FC_LOG_CRITICAL), LogLevel::Critical);
        assert_eq!(LogLevel::from_abi(99), LogLevel::Error);
        assert_eq!(
            LogLevel::from_abi(ferricorn_sdk::Level::Warning as i32),
            LogLevel::Warning
        );
    }
}
