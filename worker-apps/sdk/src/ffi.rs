//! The glue between the C ABI and the safe [`App`] trait. Panics are caught here and never
//! unwind into the server (that would be undefined behaviour across the C ABI); each becomes one error-log line with its message and
//! location, through the responder's `log` (the server's log format), and a 500.

use crate::abi::{self, FcAppDescriptor, FcField, FcRequest, FcResponder};
use crate::{App, AppConfig, Level, Request, Response};
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// The thread is inside a call from the server (init or handle): a panic is recorded
    /// for the glue to log, not printed.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// The last panic of this thread inside a call: "at FILE:LINE:COL: message".
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the plugin's panic hook (the plugin has its own copy of std) once: inside a call
/// from the server the panic's message and location are kept for one log line (no
/// backtrace is captured, whatever RUST_BACKTRACE says, and no lock is taken); elsewhere (a
/// thread of the app's own) one line goes to stderr.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info.location().map_or_else(String::new, |l| {
                format!(" at {}:{}:{}", l.file(), l.line(), l.column())
            });
            let text = format!("{at}: {}", panic_message(info.payload()).escape_debug());
            if IN_CALL.with(Cell::get) {
                PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                eprintln!("ferricorn app: panicked{text}");
            }
        }));
    });
}

/// Runs `f` as a call from the server: panics are caught, and their text returned.
fn call<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    IN_CALL.with(|c| c.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_CALL.with(|c| c.set(false));
    result.map_err(|payload| {
        PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| format!(": {}", panic_message(&*payload).escape_debug()))
    })
}

/// Builds the static descriptor for `A`; `name` must end with a NUL byte.
pub const fn descriptor<A: App>(name: &'static str) -> FcAppDescriptor {
    FcAppDescriptor {
        abi_version: abi::ABI_VERSION,
        size: std::mem::size_of::<FcAppDescriptor>() as u32,
        name: name.as_ptr() as *const c_char,
        flags: abi::FC_APP_THREAD_SAFE,
        init: ffi_init::<A>,
        handle: ffi_handle::<A>,
        shutdown: ffi_shutdown::<A>,
        attach: Some(crate::websocket::ffi_attach),
        ws_message: if A::WEBSOCKET {
            Some(ffi_ws_message::<A>)
        } else {
            None
        },
        ws_close: if A::WEBSOCKET {
            Some(ffi_ws_close::<A>)
        } else {
            None
        },
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Copies `message` into the server's error buffer, truncated and NUL-terminated.
fn write_error(message: &str, err: *mut c_char, cap: usize) {
    if err.is_null() || cap == 0 {
        return;
    }
    let n = message.len().min(cap - 1);
    // SAFETY: the server passes a buffer of `cap` writable bytes; we write n + 1 <= cap.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), err as *mut u8, n);
        *err.add(n) = 0;
    }
}

/// `init` for `A`: builds the [`AppConfig`], calls [`App::init`], boxes the state.
///
/// # Safety
/// Called by the server with the arguments described in [`abi::FcInitFn`].
pub unsafe extern "C" fn ffi_init<A: App>(
    config: *const FcField,
    count: usize,
    state: *mut *mut c_void,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    install_panic_hook();
    let result = call(|| {
        // SAFETY: the server passes `count` config fields valid for this call; they are copied
        // into owned strings before it returns.
        let entries = unsafe { crate::fields(config, count) }
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        A::init(&AppConfig::new(entries))
    });
    match result {
        Ok(Ok(app)) => {
            // SAFETY: `state` is a valid out-pointer from the server.
            unsafe { *state = Box::into_raw(Box::new(app)) as *mut c_void };
            abi::FC_OK
        }
        Ok(Err(message)) => {
            write_error(&message, err, err_cap);
            abi::FC_ERR_APP
        }
        Err(panic) => {
            write_error(&format!("init panicked{panic}"), err, err_cap);
            abi::FC_ERR_APP
        }
    }
}

/// `handle` for `A`: wraps the request and responder, calls [`App::handle`], catches panics.
///
/// # Safety
/// Called by the server with the state from `ffi_init::<A>` and valid request/responder.
pub unsafe extern "C" fn ffi_handle<A: App>(
    state: *mut c_void,
    request: *const FcRequest,
    responder: *const FcResponder,
) -> i32 {
    // SAFETY: the server passes the state ffi_init created and pointers valid for this call.
    let (app, request, responder) = unsafe { (&*(state as *const A), &*request, &*responder) };
    let result = call(|| {
        // SAFETY: these are the pointers the server passed to this handle call.
        let (mut req, mut res) = unsafe {
            (
                Request::from_raw(request, responder),
                Response::from_raw(responder),
            )
        };
        app.handle(&mut req, &mut res)
    });
    // SAFETY: the responder stays valid for this call.
    let res = unsafe { Response::from_raw(responder) };
    match result {
        Ok(Ok(())) => abi::FC_OK,
        Ok(Err(e)) if e.is::<crate::Logged>() => abi::FC_ERR_APP,
        Ok(Err(e)) => {
            res.log(Level::Error, &format!("handler error: {e}"));
            abi::FC_ERR_APP
        }
        Err(panic) => {
            res.log(Level::Error, &format!("handler panicked{panic}"));
            abi::FC_ERR_APP
        }
    }
}

/// `ws_message` for `A`: calls [`App::ws_message`], catching panics (an error closes the
/// connection with 1011, as the ABI says).
///
/// # Safety
/// Called by the server with the state from `ffi_init::<A>` and `len` bytes at `data`.
pub unsafe extern "C" fn ffi_ws_message<A: App>(
    state: *mut c_void,
    conn: u64,
    opcode: i32,
    data: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the server passes the state ffi_init created and `len` bytes valid for the call.
    let (app, data) = unsafe {
        let data = if len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(data, len)
        };
        (&*(state as *const A), data)
    };
    let message = match (opcode, std::str::from_utf8(data)) {
        (abi::FC_WS_TEXT, Ok(text)) => crate::Message::Text(text),
        _ => crate::Message::Binary(data),
    };
    match call(|| app.ws_message(crate::WebSocket::from_id(conn), message)) {
        Ok(Ok(())) => abi::FC_OK,
        _ => abi::FC_ERR_APP,
    }
}

/// `ws_close` for `A`: calls [`App::ws_close`], catching panics.
///
/// # Safety
/// Called by the server with the state from `ffi_init::<A>` and a valid `reason`.
pub unsafe extern "C" fn ffi_ws_close<A: App>(
    state: *mut c_void,
    conn: u64,
    code: i32,
    reason: abi::FcStr,
) {
    // SAFETY: as for ffi_ws_message; `reason` is valid for the call.
    let (app, reason) = unsafe { (&*(state as *const A), reason.as_bytes().unwrap_or(&[])) };
    let reason = String::from_utf8_lossy(reason);
    let code = u16::try_from(code).unwrap_or(1006);
    let _ = call(|| app.ws_close(crate::WebSocket::from_id(conn), code, &reason));
}

/// `shutdown` for `A`: calls [`App::shutdown`] and frees the state.
///
/// # Safety
/// Called once by the server with the state from `ffi_init::<A>`.
pub unsafe extern "C" fn ffi_shutdown<A: App>(state: *mut c_void) {
    if state.is_null() {
        return;
    }
    // SAFETY: `state` came from Box::into_raw in ffi_init and is released exactly once here.
    let app = unsafe { Box::from_raw(state as *mut A) };
    let _ = call(move || {
        app.shutdown();
        drop(app);
    });
}
