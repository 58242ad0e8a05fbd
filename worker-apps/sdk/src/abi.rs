//! The gateway ABI, version 1: the `#[repr(C)]` types a plugin and the server exchange.
//!
//! This module is the single Rust definition of the ABI; the server and the SDK both use it,
//! and `worker-apps/include/ferricorn.h` is the same ABI for C. A plugin exports
//! `ferricorn_app`, returning a static [`FcAppDescriptor`]; the server calls its `init` once
//! per worker process, `handle` once per request (from several threads unless the plugin
//! says otherwise), and `shutdown` at a graceful exit. Structs only grow at their end, and
//! each starts with its `size`, so each side reads only what the other has. All strings are byte slices (`FcStr`), not NUL-terminated, except
//! the descriptor's `name`. Everything a request points to is borrowed for the duration of one
//! `handle` call only.

use std::ffi::{c_char, c_void};

/// Major version of the gateway ABI this crate speaks. The server refuses any other major.
pub const ABI_VERSION: u32 = 1;

/// Name of the one symbol a plugin exports: `const FcAppDescriptor *ferricorn_app(void)`.
pub const ENTRY_SYMBOL: &str = "ferricorn_app";

/// Status: success.
pub const FC_OK: i32 = 0;
/// Status: the app failed (init failed, or handle failed: the server answers 500 if it can).
pub const FC_ERR_APP: i32 = -1;
/// Status: a call made in the wrong state (e.g. `start_response` after the first body byte).
pub const FC_ERR_STATE: i32 = -2;
/// Status: an invalid argument (status outside 100..=999, a header with CR, LF or NUL, ...).
pub const FC_ERR_INVALID: i32 = -3;
/// Status: the client connection failed or was closed.
pub const FC_ERR_IO: i32 = -4;
/// Status: the client stalled past the server's timeout.
pub const FC_ERR_TIMEOUT: i32 = -5;
/// Status: the request body exceeds `limit_request_body`.
pub const FC_ERR_TOO_LARGE: i32 = -6;
/// Status: the request body's framing is malformed (bad chunked transfer coding).
pub const FC_ERR_BAD_REQUEST: i32 = -7;
/// The server cannot do this here (`sendfile` on a TLS connection, or not a regular file);
/// nothing was done: do it another way (write the bytes).
pub const FC_ERR_UNSUPPORTED: i32 = -8;

/// Status (ABI 1.4): the WebSocket connection is closed (or closing, or never was); nothing
/// was sent.
pub const FC_ERR_CLOSED: i32 = -9;
/// Status (ABI 1.4): the WebSocket connection's send queue is full (`websocket_send_buffer`
/// bytes wait for a client that reads slowly); nothing was queued: try again later, or drop
/// the message.
pub const FC_ERR_WOULD_BLOCK: i32 = -10;

/// WebSocket opcode (RFC 6455 §5.2) of a text message (UTF-8).
pub const FC_WS_TEXT: i32 = 1;
/// WebSocket opcode of a binary message.
pub const FC_WS_BINARY: i32 = 2;

/// `FcAppDescriptor::flags`: `handle` may run on several threads at once.
pub const FC_APP_THREAD_SAFE: u32 = 1;

/// `FcRequest::flags`: other threads of this process may call `handle` concurrently (WSGI `wsgi.multithread`).
pub const FC_REQ_MULTITHREAD: u32 = 1;
/// `FcRequest::flags`: other processes serve the same app (WSGI `wsgi.multiprocess`).
pub const FC_REQ_MULTIPROCESS: u32 = 2;
/// `FcRequest::flags`: this process will serve only this one request (WSGI `wsgi.run_once`).
pub const FC_REQ_RUN_ONCE: u32 = 4;

/// Log levels for `FcResponder::log`, as in the server's `loglevel` setting.
pub const FC_LOG_DEBUG: i32 = 0;
/// Log level info.
pub const FC_LOG_INFO: i32 = 1;
/// Log level warning.
pub const FC_LOG_WARNING: i32 = 2;
/// Log level error.
pub const FC_LOG_ERROR: i32 = 3;
/// Log level critical.
pub const FC_LOG_CRITICAL: i32 = 4;

/// A borrowed byte string: `len` bytes at `ptr`. An absent value is `ptr == NULL, len == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FcStr {
    /// First byte, or NULL when the value is absent.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl FcStr {
    /// The absent value (NULL, 0).
    pub const NULL: FcStr = FcStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `bytes` (the caller keeps them alive as long as the `FcStr` is used).
    pub fn new(bytes: &[u8]) -> FcStr {
        FcStr {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes, or `None` when absent.
    ///
    /// # Safety
    /// `ptr` must be NULL or point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_bytes<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else {
            // SAFETY: non-null, and the caller guarantees `len` readable bytes for `'a`.
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
        }
    }
}

/// A name/value pair: a header or trailer field (RFC 9110 §5), or one `app.config` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FcField {
    /// Field name as sent (header names keep the client's case).
    pub name: FcStr,
    /// Field value, with leading and trailing whitespace removed.
    pub value: FcStr,
}

/// One request, in CGI/WSGI terms (RFC 3875 §4.1, PEP 3333). Borrowed for one `handle` call.
#[repr(C)]
#[derive(Debug)]
pub struct FcRequest {
    /// `sizeof(FcRequest)` as the server was compiled. Fields are only ever appended: a plugin
    /// built against a newer header reads a field only if `size` covers it.
    pub size: u32,
    /// `FC_REQ_*` bits.
    pub flags: u32,
    /// REQUEST_METHOD, e.g. `GET`.
    pub request_method: FcStr,
    /// RAW_URI: the request-target exactly as sent (RFC 9112 §3.2).
    pub raw_uri: FcStr,
    /// SCRIPT_NAME: the mount point; always empty in this server.
    pub script_name: FcStr,
    /// PATH_INFO: the path of the target, percent-decoded (may contain any byte).
    pub path_info: FcStr,
    /// QUERY_STRING: the part after `?`, not decoded; empty when there is none.
    pub query_string: FcStr,
    /// SERVER_PROTOCOL: `HTTP/1.0` or `HTTP/1.1`.
    pub server_protocol: FcStr,
    /// SERVER_NAME: the listener's host (IP address or unix socket path).
    pub server_name: FcStr,
    /// SERVER_PORT: the listener's port in decimal (empty for unix sockets).
    pub server_port: FcStr,
    /// REMOTE_ADDR: the peer's IP address (empty for unix sockets).
    pub remote_addr: FcStr,
    /// REMOTE_PORT: the peer's port in decimal (empty for unix sockets).
    pub remote_port: FcStr,
    /// wsgi.url_scheme: `http`, or `https` on a TLS listener (or from a trusted proxy's
    /// `secure_scheme_headers`).
    pub url_scheme: FcStr,
    /// CONTENT_TYPE, or absent.
    pub content_type: FcStr,
    /// CONTENT_LENGTH in bytes, or -1 when the request has none (chunked or no body).
    pub content_length: i64,
    /// The header fields in wire order (names with `_` already dropped).
    pub headers: *const FcField,
    /// Number of entries at `headers`.
    pub header_count: usize,
    /// Appended in ABI 1.1 (present when `size` covers it, see [`FcRequest::has_peer`]): the
    /// TCP peer's address, as REMOTE_ADDR would be without `real_ip_header` (REMOTE_ADDR may
    /// name the client a trusted proxy forwarded for).
    pub peer_addr: FcStr,
    /// Appended in ABI 1.1: the TCP peer's port, decimal text.
    pub peer_port: FcStr,
    /// Appended in ABI 1.2 (present when `size` covers it, see [`FcRequest::has_tls`]): the
    /// TLS version of the connection, `TLSv1.3` or `TLSv1.2` (nginx's `$ssl_protocol`);
    /// absent (NULL) on plain HTTP.
    pub tls_version: FcStr,
    /// Appended in ABI 1.2: the cipher suite's IANA name (e.g. `TLS_AES_128_GCM_SHA256`);
    /// absent on plain HTTP.
    pub tls_cipher: FcStr,
    /// Appended in ABI 1.2: the client certificate's subject (RFC 4514, e.g. `CN=client,
    /// O=Example`), when the client sent one (`cert_reqs`); absent otherwise.
    pub tls_client_subject: FcStr,
    /// Appended in ABI 1.4 (present when `size` covers it, see
    /// [`FcRequest::has_websocket`]): non-zero when the request is a valid WebSocket
    /// upgrade (RFC 6455 §4.1) and the app has [`FcAppDescriptor::ws_message`]. The app
    /// accepts it by answering status 101 (the server adds `Upgrade`, `Connection` and
    /// `Sec-WebSocket-Accept`; the app may add `Sec-WebSocket-Protocol`) and refuses it with
    /// any other response. Once accepted, this id names the connection in
    /// [`FcServer::ws_send`], [`FcServer::ws_close`] and the callbacks; ids are never reused
    /// within a worker process.
    pub websocket: u64,
}

impl FcRequest {
    /// `size` of a request from a server that predates [`FcRequest::peer_addr`].
    pub const SIZE_BEFORE_PEER: u32 = std::mem::offset_of!(FcRequest, peer_addr) as u32;
    /// `size` of a request from a server that predates [`FcRequest::tls_version`] (ABI 1.1).
    pub const SIZE_BEFORE_TLS: u32 = std::mem::offset_of!(FcRequest, tls_version) as u32;
    /// `size` of a request from a server that predates [`FcRequest::websocket`] (ABI 1.3).
    pub const SIZE_BEFORE_WEBSOCKET: u32 = std::mem::offset_of!(FcRequest, websocket) as u32;

    /// The WebSocket id of an upgrade request the app may accept (0: none, or a server that
    /// predates ABI 1.4).
    pub fn websocket_id(&self) -> u64 {
        if self.size as usize >= std::mem::offset_of!(FcRequest, websocket) + 8 {
            self.websocket
        } else {
            0
        }
    }

    /// Whether the server that made this request filled `peer_addr` and `peer_port` (its
    /// `size` covers them).
    pub fn has_peer(&self) -> bool {
        self.size >= Self::SIZE_BEFORE_TLS
    }

    /// Whether the server that made this request filled the `tls_*` fields (its `size`
    /// covers them; they are absent on plain HTTP even then).
    pub fn has_tls(&self) -> bool {
        self.size as usize
            >= std::mem::offset_of!(FcRequest, tls_client_subject) + std::mem::size_of::<FcStr>()
    }
}

/// What the server gives `handle` to read the body and send the response (WSGI's
/// `start_response`, `write` and `wsgi.input`). Every function takes `ctx` as first argument.
/// Valid for one `handle` call, on the calling thread only.
#[repr(C)]
pub struct FcResponder {
    /// `sizeof(FcResponder)` as the server was compiled (functions are only ever appended).
    pub size: u32,
    /// Opaque server state; pass it back unchanged.
    pub ctx: *mut c_void,
    /// Sets status (200..=999) and header fields. May be called again until the first body
    /// byte is written (even if the server still buffers it); the last call wins. Returns FC_OK, FC_ERR_INVALID (the call is
    /// ignored) or FC_ERR_STATE (body already started). The server adds Date, Server,
    /// Connection and Content-Length or chunked framing itself.
    pub start_response: unsafe extern "C" fn(
        ctx: *mut c_void,
        status: u16,
        reason: FcStr,
        headers: *const FcField,
        header_count: usize,
    ) -> i32,
    /// Appends body bytes. The server coalesces writes and sends at 16 KiB, at `flush`, or
    /// when `handle` returns; bytes past a Content-Length the app gave are dropped (logged,
    /// and the connection closes after the response). Returns FC_OK, FC_ERR_IO or FC_ERR_TIMEOUT.
    /// Without an earlier `start_response`, the response is `200 OK`.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize) -> i32,
    /// Reads up to `cap` bytes of the decoded request body into `buf`. Returns the count,
    /// 0 at the end of the body, or a negative FC_ERR_* status (FC_ERR_INVALID for a NULL
    /// `buf` or a `cap` of 0).
    pub read_body: unsafe extern "C" fn(ctx: *mut c_void, buf: *mut u8, cap: usize) -> i64,
    /// After `read_body` returned 0: the trailer fields of a chunked body (none otherwise).
    /// Stores a pointer valid until `handle` returns. Returns FC_OK or FC_ERR_STATE.
    pub trailers:
        unsafe extern "C" fn(ctx: *mut c_void, out: *mut *const FcField, count: *mut usize) -> i32,
    /// Writes `message` to the server's error log at `level` (FC_LOG_*).
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: i32, message: FcStr),
    /// Appended in ABI 1.1 (present when `size` covers it, see [`FcResponder::has_flush`]):
    /// sends what the app has written so far (the head, and the buffered body as one chunk
    /// when chunked) instead of waiting for 16 KiB or the end of `handle`. Returns FC_OK,
    /// FC_ERR_IO, FC_ERR_TIMEOUT or FC_ERR_STATE (after a refused start_response).
    pub flush: unsafe extern "C" fn(ctx: *mut c_void) -> i32,
    /// Appended in ABI 1.3 (present when `size` covers it, see
    /// [`FcResponder::has_sendfile`]): sends `count` bytes of the open regular file `fd`
    /// from byte `offset` as body bytes, with sendfile(2) (after what was written before;
    /// framed like `write`'s bytes; the file's offset is not changed). Returns the bytes
    /// taken (fewer than `count` only at the end of the file), or FC_ERR_UNSUPPORTED
    /// (a TLS connection, or `fd` is not a regular file: nothing was done, write the bytes
    /// instead), FC_ERR_IO, FC_ERR_TIMEOUT or FC_ERR_STATE.
    pub sendfile: unsafe extern "C" fn(ctx: *mut c_void, fd: i32, offset: u64, count: u64) -> i64,
}

impl FcResponder {
    /// `size` of a responder from a server that predates [`FcResponder::flush`].
    pub const SIZE_BEFORE_FLUSH: u32 = std::mem::offset_of!(FcResponder, flush) as u32;

    /// `size` of a responder from a server that predates [`FcResponder::sendfile`].
    pub const SIZE_BEFORE_SENDFILE: u32 = std::mem::offset_of!(FcResponder, sendfile) as u32;

    /// Whether the server that made this responder has [`FcResponder::sendfile`].
    pub fn has_sendfile(&self) -> bool {
        self.size as usize
            >= std::mem::offset_of!(FcResponder, sendfile) + std::mem::size_of::<usize>()
    }

    /// Whether the server that made this responder has [`FcResponder::flush`] (its `size`
    /// covers the field; a server built before it passes a smaller size).
    pub fn has_flush(&self) -> bool {
        self.size as usize
            >= std::mem::offset_of!(FcResponder, flush) + std::mem::size_of::<usize>()
    }
}

/// `init(config, config_count, &state, err, err_cap)`: called once per worker after fork with
/// `app.config` as fields. On failure, writes a NUL-terminated message of at most `err_cap`
/// bytes into `err` and returns a non-zero status.
pub type FcInitFn = unsafe extern "C" fn(
    config: *const FcField,
    config_count: usize,
    state: *mut *mut c_void,
    err: *mut c_char,
    err_cap: usize,
) -> i32;

/// `handle(state, request, responder)`: serves one request; returns FC_OK or an FC_ERR_* status.
pub type FcHandleFn = unsafe extern "C" fn(
    state: *mut c_void,
    request: *const FcRequest,
    responder: *const FcResponder,
) -> i32;

/// `shutdown(state)`: called once at graceful worker exit; frees the state.
pub type FcShutdownFn = unsafe extern "C" fn(state: *mut c_void);

/// The server's functions a plugin may call from any thread at any time (ABI 1.4), given
/// once to [`FcAppDescriptor::attach`] before `init`. Functions are only ever appended.
#[repr(C)]
pub struct FcServer {
    /// `sizeof(FcServer)` as the server was compiled.
    pub size: u32,
    /// Sends one message (`opcode` [`FC_WS_TEXT`], which must be UTF-8, or
    /// [`FC_WS_BINARY`]; `len` bytes at `data`, copied before it returns) on WebSocket
    /// `conn`. Returns FC_OK (queued; the worker's event loop sends it), FC_ERR_CLOSED,
    /// FC_ERR_WOULD_BLOCK (the connection's queue holds `websocket_send_buffer` bytes),
    /// FC_ERR_TOO_LARGE (larger than `websocket_send_buffer` itself) or FC_ERR_INVALID (an
    /// unknown opcode, text that is not UTF-8). Safe on any thread, inside or outside a
    /// callback, and with an id whose connection is gone.
    pub ws_send: unsafe extern "C" fn(conn: u64, opcode: i32, data: *const u8, len: usize) -> i32,
    /// Starts the closing handshake of WebSocket `conn` with `code` (1000, 1001, 1008,
    /// 1011, or 3000..=4999; RFC 6455 §7.4) and `reason` (UTF-8, at most 123 bytes, cut
    /// beyond). Returns FC_OK, FC_ERR_CLOSED or FC_ERR_INVALID. Messages queued before it
    /// are sent first; `ws_close` of the descriptor follows when the connection ends.
    pub ws_close: unsafe extern "C" fn(conn: u64, code: i32, reason: FcStr) -> i32,
}

/// `attach(server)` (ABI 1.4): called once per worker process before `init` with the
/// server's functions; `server` stays valid for the life of the process.
pub type FcAttachFn = unsafe extern "C" fn(server: *const FcServer);

/// `ws_message(state, conn, opcode, data, len)` (ABI 1.4): one whole message from the client
/// of WebSocket `conn` ([`FC_WS_TEXT`]: valid UTF-8, or [`FC_WS_BINARY`]), valid for the
/// call. Calls for one connection come one at a time and in order, on the worker's serving
/// threads. Returns FC_OK, or an error status: the server closes the connection with 1011.
pub type FcWsMessageFn = unsafe extern "C" fn(
    state: *mut c_void,
    conn: u64,
    opcode: i32,
    data: *const u8,
    len: usize,
) -> i32;

/// `ws_close(state, conn, code, reason)` (ABI 1.4): WebSocket `conn` has ended, once per
/// accepted connection and after its last `ws_message`: `code` is the client's close code
/// (1005 when its close frame had none), or the server's (1001 at a stop, 1002/1007/1009 for
/// a client that broke the protocol), or 1006 when the connection was lost without a close
/// frame; `reason` the close frame's reason. Sends to `conn` fail with FC_ERR_CLOSED from
/// now on.
pub type FcWsCloseFn =
    unsafe extern "C" fn(state: *mut c_void, conn: u64, code: i32, reason: FcStr);

/// The static descriptor a plugin's entry symbol returns. Fields may only ever be appended;
/// `size` tells the server how many the plugin knows.
#[repr(C)]
pub struct FcAppDescriptor {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// `sizeof(FcAppDescriptor)` as the plugin was compiled.
    pub size: u32,
    /// The app's name, NUL-terminated, static.
    pub name: *const c_char,
    /// `FC_APP_*` bits.
    pub flags: u32,
    /// See [`FcInitFn`].
    pub init: FcInitFn,
    /// See [`FcHandleFn`].
    pub handle: FcHandleFn,
    /// See [`FcShutdownFn`].
    pub shutdown: FcShutdownFn,
    /// Appended in ABI 1.4, may be NULL: see [`FcAttachFn`].
    pub attach: Option<FcAttachFn>,
    /// Appended in ABI 1.4, may be NULL (the app takes no WebSocket: an upgrade request is an
    /// ordinary request to it): see [`FcWsMessageFn`].
    pub ws_message: Option<FcWsMessageFn>,
    /// Appended in ABI 1.4, may be NULL: see [`FcWsCloseFn`].
    pub ws_close: Option<FcWsCloseFn>,
}

impl FcAppDescriptor {
    /// `size` of a descriptor built before ABI 1.4 (the smallest the server takes).
    pub const SIZE_BEFORE_ATTACH: u32 = std::mem::offset_of!(FcAppDescriptor, attach) as u32;
}

// SAFETY: the descriptor is immutable static data: a pointer to a static string and function
// pointers, all safe to read from any thread.
unsafe impl Sync for FcAppDescriptor {}

/// Signature of the entry symbol [`ENTRY_SYMBOL`].
pub type FcEntryFn = unsafe extern "C" fn() -> *const FcAppDescriptor;
