//! Response framing (RFC 9112 §6, RFC 9110 §6.4.1, §9.3.2): the app gives a status, fields
//! and body bytes; the server decides Content-Length, chunked or close-delimited, writes the
//! head and frames the body into an output buffer. No app can break the framing: bytes past
//! a declared Content-Length are dropped, HEAD/204/304 carry no body, and the connection is
//! closed after any response whose framing the app spoiled.

use crate::http;

/// Body bytes buffered before they are sent: a response that ends within this is sent with a
/// Content-Length; writes are coalesced up to this before a chunk is framed.
pub const RESPONSE_BUFFER: usize = 16 * 1024;

/// Why the app's response call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// An invalid status, reason or field (never sent): the request is answered 500.
    Invalid(String),
    /// Too late: the first body byte already fixed the head.
    State,
}

/// How the response body is framed on the wire (RFC 9112 §6.1–6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyOut {
    /// Not decided yet (head not sent).
    Pending,
    /// Content-Length: the body has exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    UntilClose,
    /// No body is sent (HEAD, 1xx, 204, 304).
    Nothing,
}

/// A response's buffers, lent to each exchange and taken back (no allocation per request
/// once they have grown; idle connections hold none).
#[derive(Default, Debug)]
pub struct ResponseBuffers {
    /// The app's validated header fields, serialized as `Name: value\r\n` lines.
    pub headers: Vec<u8>,
    /// Where start_response builds them before they replace `headers`.
    staging: Vec<u8>,
    /// The reason phrase given by the app (empty: the standard one).
    reason: Vec<u8>,
    /// Body bytes not framed yet.
    pending: Vec<u8>,
    /// Wire bytes ready to send (the driver sends and clears them).
    pub out: Vec<u8>,
    /// The server's fields of a 101 that accepts a protocol switch ([`Response::offer_upgrade`]).
    upgrade: Vec<u8>,
}

impl ResponseBuffers {
    fn clear(&mut self) {
        self.headers.clear();
        self.staging.clear();
        self.reason.clear();
        self.pending.clear();
        self.out.clear();
        self.upgrade.clear();
    }
}

/// The request facts that framing depends on.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts {
    /// HTTP minor version of the request (0 or 1).
    pub minor: u8,
    /// The method is HEAD.
    pub is_head: bool,
    /// The client allows keep-alive.
    pub keep_alive: bool,
}

/// One response being produced.
#[derive(Debug, Default)]
pub struct Response {
    request: RequestFacts,
    /// The server allows keep-alive after this response (keepalive on, not stopping).
    pub allow_keep_alive: bool,
    status: u16,
    app_length: Option<u64>,
    out: Option<BodyOut>,
    /// Body bytes the app wrote (all of them, kept or not).
    written: u64,
    /// Body bytes framed into the output.
    framed: u64,
    /// Bytes dropped past the declared Content-Length.
    overflow: bool,
    /// The head announced keep-alive.
    keep_alive: bool,
    /// The response ended (its last byte framed).
    ended: bool,
    /// An error response replaced the app's (or the response was abandoned).
    failed: bool,
    /// The status line sent (0 before).
    sent_status: u16,
    /// The app may answer 101 (Switching Protocols): the request asked for a protocol the
    /// server speaks ([`Response::offer_upgrade`]).
    upgradable: bool,
    /// The Date field value for the head (IMF-fixdate, RFC 9110 §5.6.7), set by the driver.
    date: [u8; 29],
    /// The buffers (lent by the driver).
    pub buffers: ResponseBuffers,
}

impl Response {
    /// A response to a request with `request`'s facts, building in `buffers` (cleared).
    pub fn new(request: RequestFacts, mut buffers: ResponseBuffers) -> Response {
        buffers.clear();
        Response {
            request,
            status: 200,
            out: Some(BodyOut::Pending),
            date: *b"Thu, 01 Jan 1970 00:00:00 GMT",
            buffers,
            ..Response::default()
        }
    }

    /// Sets the Date field value of the head (an IMF-fixdate, 29 bytes; the driver reads the
    /// clock, this type does not). Other lengths are ignored.
    pub fn set_date(&mut self, date: &str) {
        if let Ok(bytes) = date.as_bytes().try_into() {
            self.date = bytes;
        }
    }

    /// Lets the app answer 101 (Switching Protocols, RFC 9110 §15.2.2) to a request that asked
    /// for a protocol the server speaks; `fields` (`Name: value\r\n` lines: Upgrade,
    /// Connection, the protocol's own) go in that 101's head. The app's fields of the same
    /// names are dropped from it.
    pub fn offer_upgrade(&mut self, fields: &[u8]) {
        self.upgradable = true;
        self.buffers.upgrade.clear();
        self.buffers.upgrade.extend_from_slice(fields);
    }

    /// Whether the response was a 101: the connection now speaks the other protocol.
    pub fn switched(&self) -> bool {
        self.sent_status == 101 && !self.failed
    }

    /// Whether an error replaced the response or the app spoiled its framing (bytes past
    /// the Content-Length, or fewer than it).
    pub fn failed_or_spoiled(&self) -> bool {
        self.failed || self.overflow || self.short().is_some()
    }

    /// Gives the buffers back for the next exchange.
    pub fn take_buffers(&mut self) -> ResponseBuffers {
        std::mem::take(&mut self.buffers)
    }

    fn framing(&self) -> BodyOut {
        self.out.unwrap_or(BodyOut::Pending)
    }

    /// Whether the head was sent (or fixed by the first body byte).
    pub fn committed(&self) -> bool {
        self.framing() != BodyOut::Pending || !self.buffers.pending.is_empty() || self.written > 0
    }

    /// The status that was sent, 0 if none yet.
    pub fn sent_status(&self) -> u16 {
        self.sent_status
    }

    /// Body bytes framed for the client.
    pub fn body_sent(&self) -> u64 {
        self.framed
    }

    /// Sets status (200..=999), reason (empty: the standard one) and fields, like WSGI's
    /// start_response: callable again until the first body byte (the last call wins).
    /// Fields must be tokens with values free of CR, LF, NUL and other controls (RFC 9110
    /// §5.1, §5.5). Content-Length is taken as the declared length; Connection,
    /// Transfer-Encoding, Keep-Alive, Date and Server are the server's and dropped.
    pub fn start<'f>(
        &mut self,
        status: u16,
        reason: &[u8],
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
    ) -> Result<(), ResponseError> {
        if self.committed() || self.failed {
            return Err(ResponseError::State);
        }
        let mut headers = std::mem::take(&mut self.buffers.staging);
        headers.clear();
        let result = validate(status, reason, fields, &mut headers, self.upgradable);
        match result {
            Ok(app_length) => {
                self.status = status;
                self.buffers.reason.clear();
                self.buffers.reason.extend_from_slice(reason);
                self.buffers.staging = std::mem::replace(&mut self.buffers.headers, headers);
                self.app_length = app_length;
                Ok(())
            }
            Err(e) => {
                self.buffers.staging = headers;
                Err(e)
            }
        }
    }

    /// Appends body bytes. Returns true when the output buffer holds at least
    /// [`RESPONSE_BUFFER`] bytes and should be sent now.
    pub fn write(&mut self, data: &[u8]) -> Result<bool, ResponseError> {
        if self.failed || self.ended {
            return Err(ResponseError::State);
        }
        self.written += data.len() as u64;
        match self.framing() {
            BodyOut::Nothing => {}
            BodyOut::Pending if self.request.is_head => {}
            BodyOut::Pending | BodyOut::Chunked => {
                self.buffers.pending.extend_from_slice(data);
                if self.buffers.pending.len() >= RESPONSE_BUFFER {
                    self.emit();
                }
            }
            BodyOut::Length(n) => self.frame_limited(data, n),
            BodyOut::UntilClose => {
                self.buffers.out.extend_from_slice(data);
                self.framed += data.len() as u64;
            }
        }
        Ok(self.buffers.out.len() >= RESPONSE_BUFFER)
    }

    /// Prepares `len` body bytes that the driver sends from elsewhere (a file, with
    /// sendfile(2)): frames what was written before them, then, when chunked, their chunk-size
    /// line, all into the output buffer, which must be sent before them. Returns how many of
    /// them to send: `len`, fewer past a Content-Length (the rest is dropped, as `write`
    /// drops it), none for HEAD, 204 and 304. Call [`Response::external_sent`] after sending.
    pub fn external(&mut self, len: u64) -> Result<u64, ResponseError> {
        if self.failed || self.ended {
            return Err(ResponseError::State);
        }
        self.emit();
        self.written += len;
        let send = match self.framing() {
            BodyOut::Length(n) => {
                let room = n.saturating_sub(self.framed);
                self.overflow |= len > room;
                len.min(room)
            }
            BodyOut::Chunked | BodyOut::UntilClose => len,
            BodyOut::Nothing | BodyOut::Pending => 0,
        };
        if self.framing() == BodyOut::Chunked && send > 0 {
            let mut line = [0u8; 18];
            let size = usize::try_from(send).unwrap_or(usize::MAX);
            self.buffers
                .out
                .extend_from_slice(chunk_size_line(size, &mut line));
        }
        Ok(send)
    }

    /// `sent` of the bytes [`Response::external`] asked for went out: counts them and, when
    /// chunked, ends their chunk. Fewer than asked (the file was shorter) spoils the framing:
    /// the connection closes after the response.
    pub fn external_sent(&mut self, asked: u64, sent: u64) {
        self.framed += sent;
        if sent < asked {
            self.failed = true;
            return;
        }
        if self.framing() == BodyOut::Chunked && sent > 0 {
            self.buffers.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends what the app has written so far (the head, and the body as a chunk when
    /// chunked): the output buffer then holds everything written.
    pub fn flush(&mut self) {
        if !self.failed && !self.ended {
            self.emit();
        }
    }

    /// Ends the response after the app returned: frames the rest and the last chunk. A
    /// response without a declared length that fits in the buffer gets a Content-Length;
    /// HEAD gets the length GET would have had when the server knows it.
    pub fn end(&mut self) {
        if self.failed || self.ended {
            return;
        }
        if self.framing() == BodyOut::Pending {
            let length = self.app_length.unwrap_or(if self.request.is_head {
                self.written
            } else {
                self.buffers.pending.len() as u64
            });
            self.commit(Some(length));
        }
        self.emit();
        if self.framing() == BodyOut::Chunked {
            self.buffers.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.ended = true;
    }

    /// Replaces the response with the server's error response `status` if nothing was sent
    /// yet; the connection closes after it. Returns whether it was sent.
    pub fn fail(&mut self, status: u16) -> bool {
        let unsent = !self.failed && self.framing() == BodyOut::Pending;
        self.failed = true;
        if unsent {
            self.buffers.pending.clear();
            let mut bytes = http::error_response(status, &date_text(&self.date), "");
            if self.request.is_head {
                // The head GET would get, without its body (RFC 9110 §9.3.2).
                let head_len = bytes
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |p| p + 4);
                bytes.truncate(head_len);
            }
            self.buffers.out.extend_from_slice(&bytes);
            self.sent_status = status;
        }
        unsent
    }

    /// The request this responds to was HTTP/1.1 (not 1.0).
    pub fn request_is_http11(&self) -> bool {
        self.request.minor == 1
    }

    /// Whether the connection may serve another request after this response, as far as
    /// the response goes: it ended, was framed as announced, and announced keep-alive.
    pub fn keeps_alive(&self) -> bool {
        let complete = match self.framing() {
            BodyOut::Length(n) => self.framed == n,
            _ => true,
        };
        self.ended && !self.failed && self.keep_alive && !self.overflow && complete
    }

    /// Whether the response ended shorter than its Content-Length (the app's fault).
    pub fn short(&self) -> Option<(u64, u64)> {
        match self.framing() {
            BodyOut::Length(n) if self.ended && !self.request.is_head && self.framed < n => {
                Some((self.framed, n))
            }
            _ => None,
        }
    }

    /// Whether bytes past the declared Content-Length were dropped.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Commits the head if needed and frames the pending bytes.
    fn emit(&mut self) {
        if self.framing() == BodyOut::Pending {
            self.commit(None);
        }
        let pending = std::mem::take(&mut self.buffers.pending);
        match self.framing() {
            BodyOut::Chunked if !pending.is_empty() => {
                let mut line = [0u8; 18];
                let out = &mut self.buffers.out;
                out.extend_from_slice(chunk_size_line(pending.len(), &mut line));
                out.extend_from_slice(&pending);
                out.extend_from_slice(b"\r\n");
                self.framed += pending.len() as u64;
            }
            BodyOut::Length(n) => self.frame_limited(&pending, n),
            BodyOut::UntilClose => {
                self.buffers.out.extend_from_slice(&pending);
                self.framed += pending.len() as u64;
            }
            _ => {}
        }
        self.buffers.pending = pending;
        self.buffers.pending.clear();
    }

    /// Frames `data` under a Content-Length of `n`, dropping what goes past it.
    fn frame_limited(&mut self, data: &[u8], n: u64) {
        let room = n.saturating_sub(self.framed);
        let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.overflow |= take < data.len();
        self.buffers.out.extend_from_slice(&data[..take]);
        self.framed += take as u64;
    }

    /// Decides framing and keep-alive and writes the head. `length`: the body's length when
    /// the response is complete (None while streaming).
    fn commit(&mut self, length: Option<u64>) {
        let status = self.status;
        let request = self.request;
        let no_body = http::status_has_no_body(status);
        let framing = if no_body || request.is_head {
            BodyOut::Nothing
        } else if let Some(n) = self.app_length.or(length) {
            BodyOut::Length(n)
        } else if request.minor == 1 {
            BodyOut::Chunked
        } else {
            BodyOut::UntilClose
        };
        // What GET would have said, for HEAD (RFC 9110 §9.3.2).
        let announced = if request.is_head && !no_body {
            match self.app_length.or(length) {
                Some(n) => BodyOut::Length(n),
                None if request.minor == 1 => BodyOut::Chunked,
                None => BodyOut::UntilClose,
            }
        } else {
            framing
        };
        self.out = Some(framing);
        // Known before the head goes out: say that the connection closes.
        self.overflow |= matches!(framing, BodyOut::Length(n) if self.written > n);
        let switching = status == 101;
        self.keep_alive = !self.overflow
            && request.keep_alive
            && self.allow_keep_alive
            && announced != BodyOut::UntilClose
            && !switching;
        let out = &mut self.buffers.out;
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(status));
        out.push(b' ');
        if self.buffers.reason.is_empty() {
            out.extend_from_slice(http::reason(status).as_bytes());
        } else {
            out.extend_from_slice(&self.buffers.reason);
        }
        out.extend_from_slice(b"\r\nServer: ferricorn\r\nDate: ");
        out.extend_from_slice(&self.date);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.buffers.headers);
        match announced {
            BodyOut::Length(n) => push_content_length(out, n),
            BodyOut::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        if switching {
            out.extend_from_slice(&self.buffers.upgrade);
        } else if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if request.minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.sent_status = status;
    }
}

fn date_text(date: &[u8; 29]) -> String {
    String::from_utf8_lossy(date).into_owned()
}

/// Validates the app's status, reason and fields, serializing the fields the server passes
/// on into `headers`; returns the declared Content-Length. `upgradable`: 101 is allowed.
fn validate<'f>(
    status: u16,
    reason: &[u8],
    fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
    headers: &mut Vec<u8>,
    upgradable: bool,
) -> Result<Option<u64>, ResponseError> {
    let invalid = |what: String| Err(ResponseError::Invalid(what));
    let allowed = (200..=999).contains(&status) || (status == 101 && upgradable);
    if !allowed {
        return invalid(format!("invalid status {status}"));
    }
    if !http::is_field_value(reason) {
        return invalid("reason phrase contains a control character".into());
    }
    let mut app_length = None;
    for (name, value) in fields {
        if !http::is_token(name) || !http::is_field_value(value) {
            return invalid(format!(
                "invalid header field {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = http::parse_content_length(value.trim_ascii());
            match parsed {
                Some(n) if app_length.is_none_or(|m| m == n) => app_length = Some(n),
                _ => return invalid("invalid Content-Length".into()),
            }
            continue;
        }
        // The server owns framing and connection management, Date and Server.
        const SERVERS: [&[u8]; 5] = [
            b"connection",
            b"transfer-encoding",
            b"keep-alive",
            b"date",
            b"server",
        ];
        if SERVERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        // A 101's switch is described by the server's fields (Response::offer_upgrade).
        const SWITCH: [&[u8]; 3] = [
            b"upgrade",
            b"sec-websocket-accept",
            b"sec-websocket-extensions",
        ];
        if status == 101 && SWITCH.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        headers.extend_from_slice(name);
        headers.extend_from_slice(b": ");
        headers.extend_from_slice(value);
        headers.extend_from_slice(b"\r\n");
    }
    Ok(app_length)
}

/// Writes `n` in base `radix` (10 or 16, lower-case) right-aligned at the end of `tail`,
/// without `fmt`; returns the index of the first digit. `tail` must hold the digits (20 for
/// any u64 in decimal, 16 in hex).
fn write_digits(mut n: u64, radix: u64, tail: &mut [u8]) -> usize {
    let mut at = tail.len();
    loop {
        at -= 1;
        tail[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            return at;
        }
    }
}

/// Appends the decimal digits of `n` (status codes, Content-Length).
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let start = write_digits(n, 10, &mut digits);
    out.extend_from_slice(&digits[start..]);
}

/// Appends the field line `Content-Length: N` (RFC 9110 §8.6).
fn push_content_length(head: &mut Vec<u8>, n: u64) {
    head.extend_from_slice(b"Content-Length: ");
    push_decimal(head, n);
    head.extend_from_slice(b"\r\n");
}

/// The chunk-size line `HEX\r\n` for a chunk of `len` bytes (RFC 9112 §7.1), written at the
/// end of `buf` without allocating.
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    buf[16] = b'\r';
    buf[17] = b'\n';
    let start = write_digits(len as u64, 16, &mut buf[..16]);
    &buf[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET11: RequestFacts = RequestFacts {
        minor: 1,
        is_head: false,
        keep_alive: true,
    };

    fn response(request: RequestFacts) -> Response {
        let mut r = Response::new(request, ResponseBuffers::default());
        r.allow_keep_alive = true;
        r
    }

    fn text(r: &Response) -> String {
        String::from_utf8_lossy(&r.buffers.out).into_owned()
    }

    fn length(n: &str) -> [(&[u8], &[u8]); 1] {
        [(b"Content-Length", n.as_bytes())]
    }

    #[test]
    fn a_small_body_gets_a_content_length_in_one_piece() {
        let mut r = response(GET11);
        r.start(200, b"", [(&b"X-A"[..], &b"1"[..])]).unwrap();
        assert_eq!(r.write(b"hello"), Ok(false));
        assert!(r.buffers.out.is_empty(), "nothing framed before the end");
        r.end();
        let out = text(&r);
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\nServer: ferricorn\r\nDate: "),
            "{out}"
        );
        assert!(
            out.ends_with("X-A: 1\r\nContent-Length: 5\r\n\r\nhello"),
            "{out}"
        );
        assert!(r.keeps_alive());
    }

    #[test]
    fn bytes_past_the_content_length_are_dropped_and_the_connection_closes() {
        let mut r = response(GET11);
        r.start(200, b"", length("5")).unwrap();
        r.write(b"0123456789").unwrap();
        r.end();
        let out = text(&r);
        assert!(
            out.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n01234"),
            "{out}"
        );
        assert!(r.overflowed() && !r.keeps_alive());
        // Streamed past the length after the head went out: dropped, and no keep-alive.
        let mut r = response(GET11);
        r.start(200, b"", length("20000")).unwrap();
        r.write(&[b'a'; 16384]).unwrap();
        r.write(&[b'b'; 8000]).unwrap();
        r.end();
        assert_eq!(r.body_sent(), 20000);
        assert!(!r.keeps_alive());
    }

    #[test]
    fn a_101_is_allowed_only_when_offered_and_carries_the_servers_switch_fields() {
        let upgrade = [
            (&b"Upgrade"[..], &b"h2c"[..]),
            (b"Sec-WebSocket-Protocol", b"chat"),
        ];
        let mut r = response(GET11);
        assert!(matches!(
            r.start(101, b"", upgrade),
            Err(ResponseError::Invalid(_))
        ));
        let mut r = response(GET11);
        r.offer_upgrade(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
        r.start(101, b"", upgrade).unwrap();
        r.end();
        let out = text(&r);
        assert!(
            out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{out}"
        );
        assert!(
            out.ends_with(
                "Sec-WebSocket-Protocol: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            ),
            "{out}"
        );
        assert!(
            !out.contains("h2c") && !out.contains("Content-Length"),
            "{out}"
        );
        assert!(r.switched() && !r.keeps_alive());
        // Offered but refused: an ordinary response, no switch.
        let mut r = response(GET11);
        r.offer_upgrade(b"Upgrade: websocket\r\n");
        r.start(404, b"", []).unwrap();
        r.end();
        assert!(!r.switched() && !text(&r).contains("Upgrade"));
    }

    #[test]
    fn a_short_body_closes_the_connection() {
        let mut r = response(GET11);
        r.start(200, b"", length("10")).unwrap();
        r.write(b"abc").unwrap();
        r.end();
        assert_eq!(r.short(), Some((3, 10)));
        assert!(!r.keeps_alive());
    }

    #[test]
    fn writes_are_coalesced_into_16_kib_chunks() {
        let mut r = response(GET11);
        let mut sends = 0;
        let mut wire = Vec::new();
        for _ in 0..200 {
            if r.write(&[b'x'; 100]).unwrap() {
                // The driver sends the output and clears it.
                sends += 1;
                wire.append(&mut r.buffers.out);
            }
        }
        r.end();
        wire.append(&mut r.buffers.out);
        assert_eq!(sends, 1);
        let out = String::from_utf8_lossy(&wire).into_owned();
        assert!(out.contains("Transfer-Encoding: chunked"), "{out}");
        let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(
            body.matches("\r\n").count(),
            6,
            "two chunks and the last one: {body:?}"
        );
        assert!(body.starts_with("4010\r\n") && body.ends_with("0\r\n\r\n"));
    }

    #[test]
    fn flush_frames_what_was_written() {
        let mut r = response(GET11);
        r.write(b"first").unwrap();
        r.flush();
        let out = text(&r);
        assert!(
            out.ends_with("Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"),
            "{out}"
        );
        assert_eq!(r.start(500, b"", []), Err(ResponseError::State));
        r.buffers.out.clear();
        r.flush();
        assert!(
            r.buffers.out.is_empty(),
            "no empty chunk (it would end the body)"
        );
        r.end();
        assert_eq!(text(&r), "0\r\n\r\n");
    }

    #[test]
    fn head_gets_the_length_get_would_have_and_no_body() {
        let head = RequestFacts {
            is_head: true,
            ..GET11
        };
        let mut r = response(head);
        for _ in 0..200 {
            assert_eq!(r.write(&[b'x'; 100]), Ok(false));
        }
        r.end();
        let out = text(&r);
        assert!(out.ends_with("Content-Length: 20000\r\n\r\n"), "{out}");
        // Flushed early, the length is unknown: the framing GET would get, no length.
        let mut r = response(head);
        r.write(b"abc").unwrap();
        r.flush();
        r.end();
        let out = text(&r);
        assert!(out.ends_with("Transfer-Encoding: chunked\r\n\r\n"), "{out}");
        assert!(!out.contains("Content-Length"));
        assert!(r.keeps_alive());
        // The app's declared length is GET's.
        let mut r = response(head);
        r.start(200, b"", length("7")).unwrap();
        r.end();
        assert!(text(&r).ends_with("Content-Length: 7\r\n\r\n"));
    }

    #[test]
    fn no_body_for_204_and_304_and_close_delimited_for_http_1_0() {
        for status in [204, 304] {
            let mut r = response(GET11);
            r.start(status, b"", length("5")).unwrap();
            r.write(b"hello").unwrap();
            r.end();
            let out = text(&r);
            assert!(
                out.ends_with("\r\n\r\n") && !out.contains("Content-Length"),
                "{out}"
            );
            assert!(r.keeps_alive());
        }
        let old = RequestFacts { minor: 0, ..GET11 };
        let mut r = response(old);
        r.write(&[b'x'; 20000]).unwrap();
        r.end();
        let out = text(&r);
        assert!(out.contains("Connection: close") && !out.contains("Transfer-Encoding"));
        assert!(!r.keeps_alive());
    }

    #[test]
    fn invalid_responses_are_refused_and_replaced() {
        let mut r = response(GET11);
        for (status, name, value) in [
            (42, &b"X"[..], &b"1"[..]),
            (200, b"X-Evil", b"a\r\nInjected: yes"),
            (200, b"Bad Name", b"1"),
            (200, b"Content-Length", b"-1"),
            (200, b"Content-Length", b"+5"),
        ] {
            assert!(matches!(
                r.start(status, b"", [(name, value)]),
                Err(ResponseError::Invalid(_))
            ));
        }
        assert!(r.fail(500));
        assert!(text(&r).starts_with("HTTP/1.1 500 "));
        assert!(!r.keeps_alive());
        // The server's own fields win over the app's.
        let mut r = response(GET11);
        r.start(
            200,
            b"",
            [(&b"Connection"[..], &b"upgrade"[..]), (b"Server", b"x")],
        )
        .unwrap();
        r.end();
        let out = text(&r);
        assert!(
            !out.contains("upgrade") && out.matches("Server:").count() == 1,
            "{out}"
        );
    }

    #[test]
    fn external_bytes_are_framed_like_written_ones() {
        let facts = RequestFacts {
            minor: 1,
            is_head: false,
            keep_alive: true,
        };
        let mut r = response(facts);
        r.write(b"abc").unwrap();
        assert_eq!(r.external(5), Ok(5));
        assert!(text(&r).ends_with("3\r\nabc\r\n5\r\n"), "{}", text(&r));
        r.external_sent(5, 5);
        r.end();
        assert!(text(&r).ends_with("5\r\n\r\n0\r\n\r\n"));
        // Under a Content-Length: what goes past it is not sent.
        let mut r = response(facts);
        r.start(200, b"", length("4")).unwrap();
        assert_eq!(r.external(10), Ok(4));
        r.external_sent(4, 4);
        assert!(r.overflowed());
        // HEAD: counted, not sent.
        let mut r = response(RequestFacts {
            is_head: true,
            ..facts
        });
        assert_eq!(r.external(7), Ok(0));
    }

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(1000, &mut buf), b"3e8\r\n");
        let max = format!("{:x}\r\n", usize::MAX);
        assert_eq!(chunk_size_line(usize::MAX, &mut buf), max.as_bytes());
    }

    #[test]
    fn decimals_without_fmt() {
        for n in [0, 7, 200, 1000, 65535, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
