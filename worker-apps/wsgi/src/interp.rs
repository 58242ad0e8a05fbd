//! Starting CPython inside a worker: after fork, once, from the plugin's `init`. Python gets
//! no signal handlers (the worker owns its signals), unbuffered stdout and stderr (`print()`
//! reaches the terminal or journal at once), a virtualenv's site-packages when one is
//! configured or active, and libpython's symbols made global so that C extension modules
//! (which are not linked against libpython) load.

use pyo3::ffi;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// The interpreter this plugin was built against (`sys.executable` of the build's Python).
const BUILT_WITH: &str = env!("FERRICORN_WSGI_PYTHON");
/// Its version, `MAJOR.MINOR`.
const BUILT_VERSION: &str = env!("FERRICORN_WSGI_PYTHON_VERSION");

/// The Python version (`MAJOR.MINOR`) a virtualenv was made with, from its `pyvenv.cfg`
/// (`version` or `version_info`).
fn venv_version(cfg: &str) -> Option<String> {
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key.trim(), "version" | "version_info").then(|| {
            let mut parts = value.trim().split('.');
            format!(
                "{}.{}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            )
        })
    })
}

/// Where the interpreter and the app's code come from (the plugin's `app.config`).
#[derive(Debug, Clone, Default)]
pub struct Interpreter {
    /// `virtualenv`: a venv directory whose packages are used (uWSGI's `home`); default: the
    /// active `VIRTUAL_ENV`.
    pub virtualenv: Option<PathBuf>,
    /// `pythonpath`: directories put first on `sys.path`, in order (gunicorn's `pythonpath`).
    pub pythonpath: Vec<PathBuf>,
}

/// Makes libpython's symbols global in the process: the plugin was loaded with RTLD_LOCAL,
/// so libpython, loaded as its dependency, was too, and extension modules could not find
/// the C API. Errors: the library cannot be found or reopened.
fn make_libpython_global() -> Result<(), String> {
    // SAFETY: an all-zero Dl_info (null pointers) is a valid value of the plain C struct.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let symbol = ffi::Py_IsInitialized as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`, a valid local.
    if unsafe { libc::dladdr(symbol, &mut info) } == 0 || info.dli_fname.is_null() {
        return Err("cannot find the Python shared library (dladdr)".into());
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic linker.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    // SAFETY: reopening a library that is already loaded (RTLD_NOLOAD) only changes its
    // symbol scope; the handle is kept for the life of the process.
    let handle = unsafe {
        libc::dlopen(
            path.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_GLOBAL,
        )
    };
    if handle.is_null() {
        return Err(format!(
            "cannot make {} global (dlopen)",
            path.to_string_lossy()
        ));
    }
    Ok(())
}

/// The error of a failed PyStatus, if it failed.
fn status_error(status: ffi::PyStatus) -> Option<String> {
    // SAFETY: PyStatus_Exception only reads the status value.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return None;
    }
    let message = if status.err_msg.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: err_msg is a static NUL-terminated string set by CPython.
        unsafe { CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    Some(message)
}

/// The interpreter executable CPython computes its paths from: the virtualenv's
/// `bin/python` (so that its `pyvenv.cfg` makes it `sys.prefix`), else the Python the plugin
/// was built against.
fn executable(virtualenv: Option<&Path>) -> Result<Option<PathBuf>, String> {
    match virtualenv {
        Some(venv) => {
            let python = venv.join("bin").join("python");
            if !venv.join("pyvenv.cfg").is_file() || !python.exists() {
                return Err(format!(
                    "virtualenv {}: not a virtualenv (no pyvenv.cfg and bin/python)",
                    venv.display()
                ));
            }
            let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap_or_default();
            match venv_version(&cfg) {
                Some(version) if version != BUILT_VERSION => Err(format!(
                    "virtualenv {} was made with Python {version}; this WSGI plugin embeds Python {BUILT_VERSION} (make the venv with it, or rebuild ferricorn with that Python as python3)",
                    venv.display()
                )),
                _ => Ok(Some(python)),
            }
        }
        None if BUILT_WITH.is_empty() => Ok(None),
        None => Ok(Some(PathBuf::from(BUILT_WITH))),
    }
}

/// Starts CPython in this process (the worker's first thread, before any request) and
/// returns with the GIL released. Errors: one line (the virtualenv is not one, CPython could
/// not start).
pub fn start(interpreter: &Interpreter) -> Result<(), String> {
    // SAFETY: querying the interpreter state is always allowed.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Err("Python is already running in this process".into());
    }
    make_libpython_global()?;
    let executable = executable(interpreter.virtualenv.as_deref())?;
    // SAFETY: a zeroed PyConfig is what PyConfig_InitPythonConfig expects to fill; every
    // string given to PyConfig_SetBytesString is a valid NUL-terminated local; the config is
    // cleared after use, as the C API requires.
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        config.buffered_stdio = 0;
        if let Some(path) = &executable {
            let text = CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| "the interpreter path contains a NUL byte".to_string())?;
            let program = std::ptr::addr_of_mut!(config.program_name);
            let set = ffi::PyConfig_SetBytesString(&mut config, program, text.as_ptr());
            if let Some(e) = status_error(set) {
                ffi::PyConfig_Clear(&mut config);
                return Err(format!("cannot configure Python: {e}"));
            }
            let exe = std::ptr::addr_of_mut!(config.executable);
            let set = ffi::PyConfig_SetBytesString(&mut config, exe, text.as_ptr());
            if let Some(e) = status_error(set) {
                ffi::PyConfig_Clear(&mut config);
                return Err(format!("cannot configure Python: {e}"));
            }
        }
        let started = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if let Some(e) = status_error(started) {
            return Err(format!("cannot start Python: {e}"));
        }
        // The worker's first thread keeps its thread state; the GIL is free for the pool.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

thread_local! {
    /// This thread has a Python thread state of its own for good (see [`keep_thread_state`]).
    static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives the calling serving thread a Python thread state that lives as long as the thread,
/// so that each request's GIL acquisition is a plain acquire (without it every request
/// would create and destroy one). Call without the GIL.
pub fn keep_thread_state() {
    if REGISTERED.with(std::cell::Cell::get) {
        return;
    }
    // SAFETY: Python is initialized (init ran before any handle) and this thread does not
    // hold the GIL; the GILState_Ensure is never released, which keeps the thread state; the
    // GIL itself is released at once.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
    }
    REGISTERED.with(|r| r.set(true));
}

#[cfg(test)]
mod tests {
    use super::venv_version;

    #[test]
    fn the_venv_version_is_read_from_pyvenv_cfg() {
        let cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.7\n";
        assert_eq!(venv_version(cfg).as_deref(), Some("3.11"));
        assert_eq!(
            venv_version("version_info = 3.12.1.final.0\n").as_deref(),
            Some("3.12")
        );
        assert_eq!(venv_version("home = /usr/bin\n"), None);
    }
}
