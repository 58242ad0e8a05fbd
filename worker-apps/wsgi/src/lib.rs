//! ferricorn's bundled WSGI plugin: serves a Python WSGI application (PEP 3333) with
//! CPython embedded in each worker, started after fork by `init`.
//!
//! `app.config` keys (ferricorn fills the first two from `wsgi_app` and `pythonpath`):
//! - `module`: the application, gunicorn's syntax: `package.module:callable` or
//!   `package.module:factory(literal, ...)` (a call, as gunicorn 20.1 and later); the callable
//!   defaults to `application`.
//! - `pythonpath`: directories put first on `sys.path`, comma separated (gunicorn's
//!   `pythonpath`); the working directory (after `chdir`) is put on it too, as gunicorn does.
//! - `virtualenv`: a venv whose packages are used (uWSGI's `home`); default: the active
//!   `VIRTUAL_ENV`, else the Python this plugin was built against.
//!
//! Threads are Python threads (gunicorn's gthread): each of the worker's serving threads
//! takes the GIL to run the app and releases it whenever the server does I/O for it.

#![warn(clippy::undocumented_unsafe_blocks)]

mod current;
mod environ;
mod interp;
mod respond;
mod streams;

use ferricorn_sdk::{App, AppConfig, HandlerResult, Request, Response};
use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::path::PathBuf;

/// The loaded application of one worker.
struct Wsgi {
    /// The WSGI callable.
    app: Py<PyAny>,
    /// What every environ shares.
    shared: environ::Shared,
    /// The helper module (`support.py`): error formatting.
    support: Py<PyModule>,
}

/// The settings of `app.config`. Errors: a missing `module`.
fn settings(config: &AppConfig) -> Result<(String, interp::Interpreter), String> {
    let spec = config
        .get("module")
        .filter(|m| !m.trim().is_empty())
        .ok_or("no application: set `wsgi_app` (or the positional module:callable)")?
        .trim()
        .to_string();
    let split = |text: &str| -> Vec<PathBuf> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect()
    };
    let virtualenv = config
        .get("virtualenv")
        .map(str::to_string)
        .or_else(|| std::env::var("VIRTUAL_ENV").ok())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let interpreter = interp::Interpreter {
        virtualenv,
        pythonpath: config.get("pythonpath").map(split).unwrap_or_default(),
    };
    Ok((spec, interpreter))
}

/// Puts the working directory, then `pythonpath`, first on `sys.path` (gunicorn's order:
/// pythonpath entries before the directory it changed to).
fn extend_sys_path(py: Python<'_>, pythonpath: &[PathBuf]) -> PyResult<()> {
    let path = py.import("sys")?.getattr("path")?;
    let cwd = std::env::current_dir().map_err(pyo3::exceptions::PyOSError::new_err)?;
    path.call_method1("insert", (0, cwd.to_string_lossy()))?;
    for dir in pythonpath.iter().rev() {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        path.call_method1("insert", (0, dir.to_string_lossy()))?;
    }
    Ok(())
}

/// Imports the support module and the application; one line per failure.
fn load(py: Python<'_>, spec: &str, interpreter: &interp::Interpreter) -> Result<Wsgi, String> {
    let code = std::ffi::CString::new(include_str!("support.py"))
        .map_err(|_| "wsgi: support.py contains a NUL byte".to_string())?;
    let support = PyModule::from_code(py, &code, c"ferricorn_wsgi.py", c"ferricorn_wsgi")
        .map_err(|e| format!("wsgi: cannot load the support module: {e}"))?;
    extend_sys_path(py, &interpreter.pythonpath).map_err(|e| format!("wsgi: sys.path: {e}"))?;
    let python: String = support
        .call_method0("where_python")
        .and_then(|w| w.extract())
        .unwrap_or_default();
    log_startup(&format!("wsgi: {python}; app {spec}"));
    let app = support.call_method1("load", (spec,)).map_err(|e| {
        let line = support
            .call_method1("describe", (e.value(py),))
            .and_then(|d| d.extract::<String>())
            .unwrap_or_else(|_| e.to_string());
        format!("wsgi app {spec}: {line}")
    })?;
    Ok(Wsgi {
        app: app.unbind(),
        shared: environ::Shared::new(py).map_err(|e| format!("wsgi: {e}"))?,
        support: support.unbind(),
    })
}

/// One line in the server's log format on stderr (init has no responder to log through).
fn log_startup(message: &str) {
    let mut now: libc::time_t = 0;
    // SAFETY: an all-zero tm (and its null zone pointer) is a valid value of the C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut text = [0u8; 64];
    // SAFETY: time/localtime_r/strftime write into the valid locals given; the format is a
    // NUL-terminated literal and `text` has room for its output (strftime returns 0 if not).
    let n = unsafe {
        libc::time(&mut now);
        libc::localtime_r(&now, &mut tm);
        libc::strftime(
            text.as_mut_ptr().cast(),
            text.len(),
            c"[%Y-%m-%d %H:%M:%S %z]".as_ptr(),
            &tm,
        )
    };
    let date = String::from_utf8_lossy(&text[..n]);
    eprintln!("{date} [{}] [INFO] {message}", std::process::id());
}

impl App for Wsgi {
    fn init(config: &AppConfig) -> Result<Self, String> {
        let (spec, interpreter) = settings(config)?;
        interp::start(&interpreter).map_err(|e| format!("wsgi: {e}"))?;
        Python::attach(|py| load(py, &spec, &interpreter))
    }

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        interp::keep_thread_state();
        respond::serve(self, req, res)
    }

    fn shutdown(&self) {
        // Run the app's atexit handlers, as a Python process exiting would.
        Python::attach(|py| {
            if let Ok(atexit) = py.import("atexit") {
                let _ = atexit.call_method0("_run_exitfuncs");
            }
        });
    }
}

ferricorn_sdk::export_app!(Wsgi, "wsgi");
