//! The ferricorn SDK: write a ferricorn plugin in safe Rust.
//!
//! A plugin is a `cdylib` crate that implements [`App`] and exports it with [`export_app!`]:
//!
//! ```
//! use ferricorn_sdk::{App, AppConfig, HandlerResult, Request, Response};
//! struct Hello;
//! impl App for Hello {
//!     fn init(_config: &AppConfig) -> Result<Self, String> { Ok(Hello) }
//!     fn handle(&self, _req: &mut Request, res: &mut Response) -> HandlerResult {
//!         res.send(200, "text/plain", b"Hello, World!\n")
//!     }
//! }
//! ferricorn_sdk::export_app!(Hello, "hello");
//! ```
//!
//! The ABI itself is in [`abi`]; [`router`] is a small method + path router.

#![warn(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

pub mod abi;
mod convert;
mod ffi;
pub mod per_thread;
pub mod router;
pub mod websocket;

#[cfg(feature = "serde")]
pub use convert::JsonError;
pub use ffi::{descriptor, ffi_handle, ffi_init, ffi_shutdown};
pub use per_thread::PerThread;
pub use router::{Params, Router};
pub use websocket::{Message, SendError, WebSocket};

use abi::{FcField, FcRequest, FcResponder, FcStr};
use std::borrow::Cow;
use std::io;

/// The error type handlers return; any error becomes a 500 if no response was started.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What a handler returns.
pub type HandlerResult = Result<(), Error>;

/// A handler error the app has already written to the error log (with
/// [`Response::log`]): the server answers 500 (or cuts a response already started) and logs
/// nothing more about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged;

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the app logged the error")
    }
}

impl std::error::Error for Logged {}

/// Severity for [`Response::log`], as the server's `loglevel` setting; each value is its
/// ABI number (`FC_LOG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Debug.
    Debug = abi::FC_LOG_DEBUG,
    /// Info.
    Info = abi::FC_LOG_INFO,
    /// Warning.
    Warning = abi::FC_LOG_WARNING,
    /// Error.
    Error = abi::FC_LOG_ERROR,
    /// Critical.
    Critical = abi::FC_LOG_CRITICAL,
}

/// A ferricorn application. One value is created per worker process by [`App::init`] and
/// shared by all the worker's threads (hence `Sync`): keep mutable state behind a `Mutex`,
/// `RwLock` or atomics.
pub trait App: Send + Sync + Sized + 'static {
    /// Called once per worker after fork, with `app.config` from the server's configuration.
    /// An `Err(message)` fails the worker's boot; the server logs the message.
    fn init(config: &AppConfig) -> Result<Self, String>;

    /// Serves one request. An `Err` or a panic becomes a 500 when nothing was sent yet
    /// (otherwise the connection is closed); the worker keeps serving.
    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult;

    /// Called once when the worker exits gracefully.
    fn shutdown(&self) {}

    /// Whether the app takes WebSocket connections (ABI 1.4): then a request that asks for
    /// one carries [`Request::websocket`], and [`App::ws_message`] and [`App::ws_close`]
    /// are called for the connections it accepts.
    const WEBSOCKET: bool = false;

    /// One whole message from WebSocket `ws`; calls for one connection come one at a time
    /// and in order. An `Err` or a panic closes the connection with 1011.
    fn ws_message(&self, ws: WebSocket, message: Message<'_>) -> HandlerResult {
        let _ = (ws, message);
        Ok(())
    }

    /// WebSocket `ws` ended with `code` (see [`abi::FcWsCloseFn`]) and `reason`; sends to it
    /// fail from now on.
    fn ws_close(&self, ws: WebSocket, code: u16, reason: &str) {
        let _ = (ws, code, reason);
    }
}

/// The `app.config` map of the server configuration, as string pairs in file order.
#[derive(Debug, Default, Clone)]
pub struct AppConfig {
    entries: Vec<(String, String)>,
}

impl AppConfig {
    /// Builds a config from pairs (useful in unit tests of an app).
    pub fn new(entries: Vec<(String, String)>) -> AppConfig {
        AppConfig { entries }
    }

    /// The value for `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs in order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

/// The bytes of `s` (empty when absent).
///
/// # Safety
/// `s` must be NULL or point to `s.len` bytes that stay valid for `'a`.
unsafe fn str_bytes<'a>(s: FcStr) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { s.as_bytes() }.unwrap_or(&[])
}

/// One request, borrowed for one `handle` call, with the CGI/WSGI variables (REQUEST_METHOD,
/// PATH_INFO, QUERY_STRING, ...). Implements
/// [`std::io::Read`] over the decoded body.
pub struct Request<'a> {
    raw: &'a FcRequest,
    responder: &'a FcResponder,
}

impl<'a> Request<'a> {
    /// A string of this request: valid for `'a`, as [`Request::from_raw`] requires.
    fn text(&self, s: FcStr) -> &'a [u8] {
        // SAFETY: from_raw's contract: every string of the request is NULL or valid for the
        // whole handle call, which `'a` does not outlive.
        unsafe { str_bytes(s) }
    }

    /// Wraps the raw request; used by the export glue.
    ///
    /// # Safety
    /// `raw` and `responder` must be the pointers the server passed to `handle`.
    pub unsafe fn from_raw(raw: &'a FcRequest, responder: &'a FcResponder) -> Request<'a> {
        Request { raw, responder }
    }

    /// REQUEST_METHOD, e.g. `"GET"`.
    pub fn method(&self) -> &'a str {
        std::str::from_utf8(self.text(self.raw.request_method)).unwrap_or("")
    }
    /// RAW_URI: the request-target as sent.
    pub fn raw_uri(&self) -> &'a [u8] {
        self.text(self.raw.raw_uri)
    }
    /// SCRIPT_NAME (empty: apps are mounted at the root).
    pub fn script_name(&self) -> &'a [u8] {
        self.text(self.raw.script_name)
    }
    /// PATH_INFO: the percent-decoded path, as bytes.
    pub fn path_info(&self) -> &'a [u8] {
        self.text(self.raw.path_info)
    }
    /// PATH_INFO as text (invalid UTF-8 replaced).
    pub fn path(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.path_info())
    }
    /// QUERY_STRING, not decoded.
    pub fn query_string(&self) -> &'a str {
        std::str::from_utf8(self.text(self.raw.query_string)).unwrap_or("")
    }
    /// The first query parameter named `name`, not decoded (`a=1&b=2`).
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.query_string().split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
    /// SERVER_PROTOCOL: `HTTP/1.0` or `HTTP/1.1`.
    pub fn server_protocol(&self) -> &'a str {
        std::str::from_utf8(self.text(self.raw.server_protocol)).unwrap_or("")
    }
    /// SERVER_NAME.
    pub fn server_name(&self) -> &'a [u8] {
        self.text(self.raw.server_name)
    }
    /// SERVER_PORT, decimal text.
    pub fn server_port(&self) -> &'a [u8] {
        self.text(self.raw.server_port)
    }
    /// REMOTE_ADDR.
    pub fn remote_addr(&self) -> &'a [u8] {
        self.text(self.raw.remote_addr)
    }
    /// REMOTE_PORT, decimal text.
    pub fn remote_port(&self) -> &'a [u8] {
        self.text(self.raw.remote_port)
    }
    /// The TCP peer's address: REMOTE_ADDR unless `real_ip_header` replaced it with the
    /// client a trusted proxy forwarded for. (From a server older than ABI 1.1, REMOTE_ADDR.)
    pub fn peer_addr(&self) -> &'a [u8] {
        if self.raw.has_peer() {
            self.text(self.raw.peer_addr)
        } else {
            self.remote_addr()
        }
    }
    /// The TCP peer's port (see [`Request::peer_addr`]).
    pub fn peer_port(&self) -> &'a [u8] {
        if self.raw.has_peer() {
            self.text(self.raw.peer_port)
        } else {
            self.remote_port()
        }
    }
    /// wsgi.url_scheme: `http`, or `https` (TLS, or a trusted proxy said so).
    pub fn url_scheme(&self) -> &'a [u8] {
        self.text(self.raw.url_scheme)
    }
    /// The connection's TLS version (`TLSv1.3`, `TLSv1.2`); `None` on plain HTTP or from a
    /// server older than ABI 1.2.
    pub fn tls_version(&self) -> Option<&'a [u8]> {
        self.tls_field(self.raw.tls_version)
    }
    /// The TLS cipher suite's IANA name (e.g. `TLS_AES_128_GCM_SHA256`); `None` as for
    /// [`Request::tls_version`].
    pub fn tls_cipher(&self) -> Option<&'a [u8]> {
        self.tls_field(self.raw.tls_cipher)
    }
    /// The client certificate's subject (RFC 4514, e.g. `CN=client`), when the client sent
    /// one (`cert_reqs`); `None` otherwise.
    pub fn tls_client_subject(&self) -> Option<&'a [u8]> {
        self.tls_field(self.raw.tls_client_subject)
    }
    fn tls_field(&self, field: FcStr) -> Option<&'a [u8]> {
        if !self.raw.has_tls() {
            return None;
        }
        // SAFETY: as for `bytes`: valid for the whole `handle` call; the size rule says the
        // server filled the field.
        unsafe { field.as_bytes() }
    }
    /// CONTENT_TYPE, if sent.
    pub fn content_type(&self) -> Option<&'a [u8]> {
        // SAFETY: as for `bytes`: valid for the whole `handle` call.
        unsafe { self.raw.content_type.as_bytes() }
    }
    /// CONTENT_LENGTH in bytes, if the request has one.
    pub fn content_length(&self) -> Option<u64> {
        u64::try_from(self.raw.content_length).ok()
    }
    /// The WebSocket this request asks for (RFC 6455 §4.1, checked by the server), when the
    /// app takes WebSockets ([`App::WEBSOCKET`]): accept it with
    /// [`Response::accept_websocket`], or answer anything else to refuse it.
    pub fn websocket(&self) -> Option<WebSocket> {
        let id = self.raw.websocket_id();
        (id != 0).then(|| WebSocket::from_id(id))
    }
    /// `FC_REQ_*` flags (multithread, multiprocess, run_once).
    pub fn flags(&self) -> u32 {
        self.raw.flags
    }
    /// The header fields in wire order, as (name, value) bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        // SAFETY: from_raw's contract: the header array and its strings are valid for the
        // whole handle call, which `'a` does not outlive.
        unsafe { fields(self.raw.headers, self.raw.header_count) }
    }
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Reads up to `buf.len()` bytes of the decoded body; `Ok(0)` at the end. The first read
    /// sends `100 Continue` when the client asked for it.
    pub fn read_body(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            // `std::io::Read` semantics; the server refuses a zero-capacity read.
            return Ok(0);
        }
        let r = self.responder;
        // SAFETY: ctx and read_body come from the server for this call; buf is valid for writes
        // of buf.len() bytes.
        let n = unsafe { (r.read_body)(r.ctx, buf.as_mut_ptr(), buf.len()) };
        usize::try_from(n).map_err(|_| status_error(n as i32))
    }

    /// Reads the whole body, failing with `InvalidData` past `limit` bytes.
    pub fn body_to_vec(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        self.body_up_to(limit)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "body too large"))
    }

    /// The whole body, or `None` once it passes `limit` bytes. Errors: [`Request::read_body`]'s.
    fn body_up_to(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.read_body(&mut chunk)?;
            if n == 0 {
                return Ok(Some(out));
            }
            if out.len() + n > limit {
                return Ok(None);
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// Trailer fields of a chunked body; empty before the body was read to its end.
    pub fn trailers(&self) -> Vec<(&'a [u8], &'a [u8])> {
        let r = self.responder;
        let mut ptr: *const FcField = std::ptr::null();
        let mut count = 0usize;
        // SAFETY: ctx and trailers come from the server; the out-pointers are valid locals.
        let rc = unsafe { (r.trailers)(r.ctx, &mut ptr, &mut count) };
        if rc != abi::FC_OK {
            return Vec::new();
        }
        // SAFETY: the server's trailer array is valid until handle returns (ABI contract),
        // which `'a` does not outlive.
        unsafe { fields(ptr, count) }.collect()
    }
}

impl io::Read for Request<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf)
    }
}

/// The name/value pairs of `count` fields at `ptr`.
///
/// # Safety
/// `ptr` must be NULL or point to `count` fields whose strings, like the array, stay valid
/// for `'a`.
unsafe fn fields<'a>(
    ptr: *const FcField,
    count: usize,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    let slice: &'a [FcField] = if ptr.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, count) }
    };
    // SAFETY: guaranteed by the caller: each field's strings are valid for 'a.
    slice
        .iter()
        .map(|f| unsafe { (str_bytes(f.name), str_bytes(f.value)) })
}

fn status_error(status: i32) -> io::Error {
    let (kind, what) = match status {
        abi::FC_ERR_IO => (io::ErrorKind::ConnectionAborted, "client connection failed"),
        abi::FC_ERR_TIMEOUT => (io::ErrorKind::TimedOut, "client timed out"),
        abi::FC_ERR_TOO_LARGE => (io::ErrorKind::InvalidData, "request body too large"),
        abi::FC_ERR_BAD_REQUEST => (io::ErrorKind::InvalidData, "malformed request body"),
        abi::FC_ERR_STATE => (io::ErrorKind::Other, "call made in the wrong state"),
        abi::FC_ERR_INVALID => (io::ErrorKind::InvalidInput, "invalid argument"),
        _ => (io::ErrorKind::Other, "gateway error"),
    };
    io::Error::new(kind, what)
}

fn check(status: i32) -> io::Result<()> {
    if status == abi::FC_OK {
        Ok(())
    } else {
        Err(status_error(status))
    }
}

/// `n` in decimal, written at the end of `buf` (no allocation).
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // The bytes are ASCII digits.
    std::str::from_utf8(&buf[start..]).unwrap_or("0")
}

/// The response side of one request (WSGI `start_response` + `write`).
pub struct Response<'a> {
    responder: &'a FcResponder,
}

impl<'a> Response<'a> {
    /// Accepts the WebSocket the request asks for ([`Request::websocket`]): a 101 (Switching
    /// Protocols), with `Sec-WebSocket-Protocol: protocol` when the app picks one of those
    /// the client offered. Once `handle` returns, messages go to [`App::ws_message`].
    pub fn accept_websocket(&mut self, protocol: Option<&str>) -> io::Result<()> {
        match protocol {
            Some(p) => self.start(101, &[("Sec-WebSocket-Protocol", p)]),
            None => self.start(101, &[]),
        }
    }

    /// Wraps the raw responder; used by the export glue.
    ///
    /// # Safety
    /// `responder` must be the pointer the server passed to `handle`.
    pub unsafe fn from_raw(responder: &'a FcResponder) -> Response<'a> {
        Response { responder }
    }

    /// Sets the status and header fields; callable again until the first body byte.
    /// Errors: `InvalidInput` for a bad status or a header with CR/LF/NUL, `Other` after the body started.
    pub fn start(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        self.start_fields(
            status,
            b"",
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    /// [`Response::start`] with any bytes: a reason phrase (empty: the standard one for
    /// `status`) and header fields as (name, value) bytes (WSGI's latin-1 header strings,
    /// say), from any iterator that knows its length: no allocation for up to 8. The server
    /// refuses CR, LF and NUL, and names that are not RFC 9110 tokens (`InvalidInput`).
    pub fn start_raw<'h>(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: impl ExactSizeIterator<Item = (&'h [u8], &'h [u8])>,
    ) -> io::Result<()> {
        self.start_fields(status, reason, headers)
    }

    fn start_fields<'h>(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: impl ExactSizeIterator<Item = (&'h [u8], &'h [u8])>,
    ) -> io::Result<()> {
        let field = |(n, v): (&[u8], &[u8])| FcField {
            name: FcStr::new(n),
            value: FcStr::new(v),
        };
        let reason = if reason.is_empty() {
            FcStr::NULL
        } else {
            FcStr::new(reason)
        };
        // Up to 8 fields go in a stack array: no allocation for a typical response.
        let mut stack = [FcField {
            name: FcStr::NULL,
            value: FcStr::NULL,
        }; 8];
        let heap: Vec<FcField>;
        let count = headers.len();
        let fields: &[FcField] = if count <= stack.len() {
            for (slot, pair) in stack.iter_mut().zip(headers) {
                *slot = field(pair);
            }
            &stack[..count]
        } else {
            heap = headers.map(field).collect();
            &heap
        };
        let r = self.responder;
        // SAFETY: ctx/start_response from the server; `fields`, `reason` and the strings they
        // borrow live until the call returns (the server copies them).
        check(unsafe { (r.start_response)(r.ctx, status, reason, fields.as_ptr(), fields.len()) })
    }

    /// Writes body bytes (streaming; the server frames them).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let r = self.responder;
        // SAFETY: ctx/write from the server; data is valid for reads of data.len() bytes.
        check(unsafe { (r.write)(r.ctx, data.as_ptr(), data.len()) })
    }

    /// Sends what was written so far instead of waiting for 16 KiB or the end of `handle`
    /// (the responder's `flush`, ABI 1.1). With a server that predates it, a no-op: that
    /// server sends at 16 KiB and at the end anyway.
    pub fn flush(&mut self) -> io::Result<()> {
        let r = self.responder;
        if !r.has_flush() {
            return Ok(());
        }
        // SAFETY: ctx/flush from the server, which has the field (its size covers it).
        check(unsafe { (r.flush)(r.ctx) })
    }

    /// Sends `count` bytes of the open regular file `fd` from `offset` as body bytes with
    /// sendfile(2) (the responder's `sendfile`, ABI 1.3), after what was written before.
    /// Returns the bytes taken (fewer only at the end of the file), or `None` when the
    /// server cannot (a TLS connection, not a regular file, a server that predates it):
    /// then nothing was done and the app writes the bytes itself. Errors: as `write`.
    pub fn sendfile(&mut self, fd: i32, offset: u64, count: u64) -> io::Result<Option<u64>> {
        let r = self.responder;
        if !r.has_sendfile() {
            return Ok(None);
        }
        // SAFETY: ctx/sendfile from the server, which has the field (its size covers it);
        // `fd` is the caller's, only read by the server during the call.
        let n = unsafe { (r.sendfile)(r.ctx, fd, offset, count) };
        match i32::try_from(n) {
            Ok(abi::FC_ERR_UNSUPPORTED) => Ok(None),
            _ if n < 0 => Err(status_error(i32::try_from(n).unwrap_or(abi::FC_ERR_IO))),
            _ => Ok(Some(n as u64)),
        }
    }

    /// Sends a whole response: `status`, `Content-Type: content_type` and `body`.
    pub fn send(&mut self, status: u16, content_type: &str, body: &[u8]) -> HandlerResult {
        let mut digits = [0u8; 20];
        let len = decimal(body.len(), &mut digits);
        self.start(
            status,
            &[("Content-Type", content_type), ("Content-Length", len)],
        )?;
        self.write(body)?;
        Ok(())
    }

    /// Writes `message` to the server's error log.
    pub fn log(&self, level: Level, message: &str) {
        let level = level as i32;
        let r = self.responder;
        // SAFETY: ctx/log from the server; the message is borrowed for the call only.
        unsafe { (r.log)(r.ctx, level, FcStr::new(message.as_bytes())) }
    }
}

/// `write!`, `BufWriter` and `io::copy` work on a response: `write` sends all of `buf` (the
/// server buffers and frames it), `flush` is [`Response::flush`].
impl io::Write for Response<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Response::write(self, buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Response::flush(self)
    }
}

/// Exports `$app` (a type implementing [`App`]) as a ferricorn plugin named `$name`:
/// defines the entry symbol `ferricorn_app` returning a static descriptor.
#[macro_export]
macro_rules! export_app {
    ($app:ty, $name:literal) => {
        /// Entry symbol of this ferricorn plugin (gateway ABI v1).
        #[unsafe(no_mangle)]
        pub extern "C" fn ferricorn_app() -> *const $crate::abi::FcAppDescriptor {
            static DESCRIPTOR: $crate::abi::FcAppDescriptor =
                $crate::descriptor::<$app>(concat!($name, "\0"));
            &DESCRIPTOR
        }
    };
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), "0");
        assert_eq!(decimal(14, &mut buf), "14");
        assert_eq!(decimal(1_000_000, &mut buf), "1000000");
        assert_eq!(decimal(usize::MAX, &mut buf), usize::MAX.to_string());
    }
}

#[cfg(test)]
mod responder_tests {
    use super::*;
    use std::ffi::c_void;

    unsafe extern "C" fn start(
        _: *mut c_void,
        _: u16,
        _: FcStr,
        _: *const FcField,
        _: usize,
    ) -> i32 {
        abi::FC_OK
    }
    unsafe extern "C" fn write(_: *mut c_void, _: *const u8, _: usize) -> i32 {
        abi::FC_OK
    }
    unsafe extern "C" fn read_body(_: *mut c_void, _: *mut u8, _: usize) -> i64 {
        0
    }
    unsafe extern "C" fn trailers(_: *mut c_void, _: *mut *const FcField, _: *mut usize) -> i32 {
        abi::FC_OK
    }
    unsafe extern "C" fn log(_: *mut c_void, _: i32, _: FcStr) {}
    unsafe extern "C" fn flush(ctx: *mut c_void) -> i32 {
        // SAFETY: the test passes a pointer to its counter as ctx.
        unsafe { *(ctx as *mut u32) += 1 };
        abi::FC_OK
    }

    fn responder(size: u32, flushes: &mut u32) -> FcResponder {
        FcResponder {
            size,
            ctx: flushes as *mut u32 as *mut c_void,
            start_response: start,
            write,
            read_body,
            trailers,
            log,
            flush,
            sendfile,
        }
    }

    unsafe extern "C" fn sendfile(_: *mut c_void, _: i32, _: u64, count: u64) -> i64 {
        count as i64
    }

    #[test]
    fn sendfile_is_called_only_when_the_server_has_it() {
        let mut flushes = 0;
        let new = responder(std::mem::size_of::<FcResponder>() as u32, &mut flushes);
        // SAFETY: a responder of this test's own, valid for the calls below.
        let mut res = unsafe { Response::from_raw(&new) };
        assert_eq!(res.sendfile(3, 0, 10).unwrap(), Some(10));
        let old = responder(FcResponder::SIZE_BEFORE_SENDFILE, &mut flushes);
        // SAFETY: as above; the size says the server predates sendfile.
        let mut res = unsafe { Response::from_raw(&old) };
        assert_eq!(res.sendfile(3, 0, 10).unwrap(), None);
    }

    #[test]
    fn flush_is_called_only_when_the_server_has_it() {
        use std::io::Write;
        let mut flushes = 0;
        let new = responder(std::mem::size_of::<FcResponder>() as u32, &mut flushes);
        // SAFETY: a responder of this test's own, valid for the calls below.
        let mut res = unsafe { Response::from_raw(&new) };
        write!(res, "{}", 42).unwrap();
        res.flush().unwrap();
        assert_eq!(flushes, 1);
        let mut flushes = 0;
        let old = responder(FcResponder::SIZE_BEFORE_FLUSH, &mut flushes);
        // SAFETY: as above; the size says the server predates flush.
        let mut res = unsafe { Response::from_raw(&old) };
        res.flush().unwrap();
        assert_eq!(
            flushes, 0,
            "an older server's responder has no flush to call"
        );
    }
}
