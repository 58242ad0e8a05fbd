//! The request a serving thread is handling, for the Python objects of its environ
//! (`wsgi.input`, `wsgi.errors`, the `write` callable): they reach the server's responder
//! through this thread-local while `handle` runs, and only then. A Python object kept past
//! its request (stored globally, or handed to another thread) finds no request of its serial
//! number and raises instead of touching a responder that is gone.

use ferricorn_sdk::{Request, Response};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

/// The request and response of one `handle` call.
pub struct Exchange<'r, 'q, 's> {
    /// The request (CGI variables, the body reader).
    pub req: &'r mut Request<'q>,
    /// The response (start_response, write, flush, log).
    pub res: &'r mut Response<'s>,
}

thread_local! {
    /// The exchange this thread is handling (null between requests, and while one call
    /// through [`with`] uses it).
    static CURRENT: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
    /// The serial number (unique in the process) of the request this thread handles now (or
    /// handled last).
    static SERIAL: Cell<u64> = const { Cell::new(0) };
}

/// Why a Python object could not reach its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Runs `f` with `exchange` made current on this thread under a new serial number (passed to
/// `f`); the exchange is forgotten when `f` returns or unwinds.
pub fn enter<R>(exchange: &mut Exchange<'_, '_, '_>, f: impl FnOnce(u64) -> R) -> R {
    struct Reset(*mut c_void);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    // Unique in the process: an object handed to another thread never matches its request.
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    SERIAL.with(|s| s.set(serial));
    let before = CURRENT.with(|c| c.replace(exchange as *mut Exchange as *mut c_void));
    let _reset = Reset(before);
    f(serial)
}

/// Runs `f` with the exchange of request `serial`, if this thread is handling it now and no
/// other call is using it (the exchange is taken out for the duration of `f`, so that two
/// mutable borrows of it never exist). Errors: [`Gone`].
pub fn with<R>(serial: u64, f: impl FnOnce(&mut Exchange<'_, '_, '_>) -> R) -> Result<R, Gone> {
    if SERIAL.with(Cell::get) != serial {
        return Err(Gone);
    }
    let raw = CURRENT.with(|c| c.replace(std::ptr::null_mut()));
    if raw.is_null() {
        return Err(Gone);
    }
    struct Restore(*mut c_void);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(raw);
    // SAFETY: `raw` was set by `enter` on this thread from an exchange that outlives the
    // `enter` call we are inside of (the serial matches, and `enter` clears it before it
    // returns); it was taken out of CURRENT above, so this is the only reference to it.
    let exchange = unsafe { &mut *(raw as *mut Exchange<'_, '_, '_>) };
    Ok(f(exchange))
}

/// Runs `f` with whatever exchange this thread is handling now (for `wsgi.errors`, one object
/// shared by every request). Errors: [`Gone`] when the thread handles none, or it is in use.
pub fn with_any<R>(f: impl FnOnce(&mut Exchange<'_, '_, '_>) -> R) -> Result<R, Gone> {
    with(SERIAL.with(Cell::get), f)
}
