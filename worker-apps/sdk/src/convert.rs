//! Conversions for Rust users, each behind a cargo feature of the SDK:
//! - `serde`: [`Request::json`] reads the body as JSON, [`Response::json`] sends a value as
//!   JSON (with `serde_json`);
//! - `http`: [`Request::http_parts`] gives the request line and header fields as the `http`
//!   crate's [`http::request::Parts`], [`Response::send_http`] sends an
//!   `http::Response<Vec<u8>>`.

#[cfg(any(feature = "serde", feature = "http"))]
use crate::{HandlerResult, Request, Response};
#[cfg(any(feature = "serde", feature = "http"))]
use std::io;

/// Why [`Request::json`] has no value.
#[cfg(feature = "serde")]
#[derive(Debug)]
pub enum JsonError {
    /// The body is longer than the limit given.
    TooLarge,
    /// The body could not be read (the client went away, stalled, or sent a broken body).
    Body(io::Error),
    /// The body is not JSON of the expected shape (serde_json's reason).
    Invalid(serde_json::Error),
}

#[cfg(feature = "serde")]
impl JsonError {
    /// The status to answer: 413 (too large), 400 (anything else).
    pub fn status(&self) -> u16 {
        match self {
            JsonError::TooLarge => 413,
            _ => 400,
        }
    }
}

#[cfg(feature = "serde")]
impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::TooLarge => f.write_str("body too large"),
            JsonError::Body(e) => write!(f, "cannot read the body: {e}"),
            JsonError::Invalid(e) => write!(f, "invalid JSON: {e}"),
        }
    }
}

#[cfg(feature = "serde")]
impl std::error::Error for JsonError {}

#[cfg(feature = "serde")]
impl Request<'_> {
    /// The body (at most `limit` bytes) parsed as JSON into `T`. Errors: [`JsonError`]
    /// (answer its [`JsonError::status`]).
    pub fn json<T: serde::de::DeserializeOwned>(&mut self, limit: usize) -> Result<T, JsonError> {
        let body = self
            .body_up_to(limit)
            .map_err(JsonError::Body)?
            .ok_or(JsonError::TooLarge)?;
        serde_json::from_slice(&body).map_err(JsonError::Invalid)
    }
}

#[cfg(feature = "serde")]
impl Response<'_> {
    /// Sends `value` as a whole JSON response: `status`, `Content-Type: application/json`,
    /// the serialized value and a newline. Errors: serialization's, or the responder's.
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, status: u16, value: &T) -> HandlerResult {
        let mut body = serde_json::to_vec(value)?;
        body.push(b'\n');
        self.send(status, "application/json", &body)
    }
}

#[cfg(feature = "http")]
impl Request<'_> {
    /// The request's method, target (as sent), version and header fields (in order, each
    /// line once) as [`http::request::Parts`], for code written against the `http` crate.
    /// Errors: a method, target or field the `http` crate refuses (the server has already
    /// refused what HTTP/1.1 forbids, so this is rare).
    pub fn http_parts(&self) -> Result<http::request::Parts, http::Error> {
        let version = match self.server_protocol() {
            "HTTP/1.0" => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        };
        let mut builder = http::Request::builder()
            .method(self.method())
            .uri(self.raw_uri())
            .version(version);
        for (name, value) in self.headers() {
            builder = builder.header(name, value);
        }
        Ok(builder.body(())?.into_parts().0)
    }
}

#[cfg(feature = "http")]
impl Response<'_> {
    /// Sends `response` whole: its status, its header fields (a `Content-Length` is added
    /// when it has none: the body is known), and its body. Errors: `InvalidInput` for a
    /// header value that is not visible ASCII, or the responder's.
    pub fn send_http(&mut self, response: http::Response<Vec<u8>>) -> HandlerResult {
        let (parts, body) = response.into_parts();
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            let value = value
                .to_str()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            fields.push((name.as_str(), value));
        }
        let length = body.len().to_string();
        if !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            fields.push(("Content-Length", &length));
        }
        self.start(parts.status.as_u16(), &fields)?;
        self.write(&body)?;
        Ok(())
    }
}

#[cfg(all(test, feature = "serde", feature = "http"))]
mod tests {
    use crate::abi::{self, FcField, FcRequest, FcResponder, FcStr};
    use crate::{Request, Response};
    use std::ffi::c_void;

    /// One exchange as a server would see it: the body to hand out, and the response.
    #[derive(Default)]
    struct Exchange {
        body_in: Vec<u8>,
        read: usize,
        status: u16,
        headers: Vec<(String, String)>,
        body_out: Vec<u8>,
    }

    fn exchange<'a>(ctx: *mut c_void) -> &'a mut Exchange {
        // SAFETY: every responder of these tests has a live `Exchange` of the test as ctx.
        unsafe { &mut *(ctx as *mut Exchange) }
    }

    unsafe extern "C" fn start(
        ctx: *mut c_void,
        status: u16,
        _: FcStr,
        f: *const FcField,
        n: usize,
    ) -> i32 {
        let ex = exchange(ctx);
        ex.status = status;
        // SAFETY: the SDK passes `n` fields whose strings live for the call.
        let fields = unsafe { std::slice::from_raw_parts(f, n) };
        let text = |s: FcStr| {
            // SAFETY: as above.
            String::from_utf8_lossy(unsafe { s.as_bytes() }.unwrap_or(&[])).into_owned()
        };
        ex.headers = fields
            .iter()
            .map(|f| (text(f.name), text(f.value)))
            .collect();
        abi::FC_OK
    }
    unsafe extern "C" fn write(ctx: *mut c_void, data: *const u8, len: usize) -> i32 {
        // SAFETY: the SDK passes `len` readable bytes.
        exchange(ctx)
            .body_out
            .extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
        abi::FC_OK
    }
    unsafe extern "C" fn read_body(ctx: *mut c_void, buf: *mut u8, cap: usize) -> i64 {
        let ex = exchange(ctx);
        let n = cap.min(ex.body_in.len() - ex.read);
        // SAFETY: the SDK passes `cap` writable bytes; `n` is at most that.
        unsafe { std::ptr::copy_nonoverlapping(ex.body_in[ex.read..].as_ptr(), buf, n) };
        ex.read += n;
        n as i64
    }
    unsafe extern "C" fn trailers(_: *mut c_void, _: *mut *const FcField, _: *mut usize) -> i32 {
        abi::FC_OK
    }
    unsafe extern "C" fn log(_: *mut c_void, _: i32, _: FcStr) {}
    unsafe extern "C" fn flush(_: *mut c_void) -> i32 {
        abi::FC_OK
    }
    unsafe extern "C" fn sendfile(_: *mut c_void, _: i32, _: u64, _: u64) -> i64 {
        abi::FC_ERR_UNSUPPORTED.into()
    }

    fn responder(ex: &mut Exchange) -> FcResponder {
        FcResponder {
            size: std::mem::size_of::<FcResponder>() as u32,
            ctx: ex as *mut Exchange as *mut c_void,
            start_response: start,
            write,
            read_body,
            trailers,
            log,
            flush,
            sendfile,
        }
    }

    fn request(method: &'static [u8], uri: &'static [u8], fields: &[FcField]) -> FcRequest {
        // SAFETY: FcRequest holds only integers and raw pointers, for which zero is valid
        // (NULL strings, no headers); the fields used below are then set.
        let mut raw: FcRequest = unsafe { std::mem::zeroed() };
        raw.size = std::mem::size_of::<FcRequest>() as u32;
        raw.request_method = FcStr::new(method);
        raw.raw_uri = FcStr::new(uri);
        raw.server_protocol = FcStr::new(b"HTTP/1.1");
        raw.content_length = -1;
        raw.headers = fields.as_ptr();
        raw.header_count = fields.len();
        raw
    }

    #[test]
    fn json_in_and_out() {
        let raw = request(b"POST", b"/tasks", &[]);
        for (body, limit, want) in [
            (&br#"{"title":"a"}"#[..], 100, Ok(())),
            (&br#"{"title":"a"}"#[..], 5, Err(413)),
            (&b"not json"[..], 100, Err(400)),
        ] {
            let mut ex = Exchange {
                body_in: body.to_vec(),
                ..Exchange::default()
            };
            let responder = responder(&mut ex);
            // SAFETY: a request and responder of this test, valid for the calls below.
            let mut req = unsafe { Request::from_raw(&raw, &responder) };
            let got = req.json::<serde_json::Value>(limit);
            assert_eq!(got.as_ref().map(|_| ()).map_err(|e| e.status()), want);
            if let Ok(value) = got {
                assert_eq!(value["title"], "a");
                // SAFETY: as above.
                let mut res = unsafe { Response::from_raw(&responder) };
                res.json(201, &value).unwrap();
            }
        }
        let mut ex = Exchange::default();
        let responder = responder(&mut ex);
        // SAFETY: as above.
        let mut res = unsafe { Response::from_raw(&responder) };
        res.json(201, &serde_json::json!({ "id": 1 })).unwrap();
        assert_eq!(ex.status, 201);
        assert_eq!(
            ex.headers[0],
            ("Content-Type".into(), "application/json".into())
        );
        assert_eq!(ex.body_out, b"{\"id\":1}\n");
    }

    #[test]
    fn http_parts_and_send_http() {
        let fields = [
            FcField {
                name: FcStr::new(b"Host"),
                value: FcStr::new(b"example.com"),
            },
            FcField {
                name: FcStr::new(b"X-A"),
                value: FcStr::new(b"1"),
            },
            FcField {
                name: FcStr::new(b"X-A"),
                value: FcStr::new(b"2"),
            },
        ];
        let raw = request(b"GET", b"/x?y=1", &fields);
        let mut ex = Exchange::default();
        let responder = responder(&mut ex);
        // SAFETY: a request and responder of this test, valid for the calls below.
        let req = unsafe { Request::from_raw(&raw, &responder) };
        let parts = req.http_parts().unwrap();
        assert_eq!(parts.method, http::Method::GET);
        assert_eq!(parts.uri, "/x?y=1");
        assert_eq!(parts.version, http::Version::HTTP_11);
        let xa: Vec<_> = parts.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        // SAFETY: as above.
        let mut res = unsafe { Response::from_raw(&responder) };
        let response = http::Response::builder()
            .status(202)
            .header("X-B", "b")
            .body(b"hi".to_vec())
            .unwrap();
        res.send_http(response).unwrap();
        assert_eq!(ex.status, 202);
        assert_eq!(
            ex.headers,
            [
                ("x-b".into(), "b".into()),
                ("Content-Length".into(), "2".into())
            ]
        );
        assert_eq!(ex.body_out, b"hi");
    }
}
