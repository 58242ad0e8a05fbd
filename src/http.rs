//! HTTP/1.1 message syntax (RFC 9112) and the rules ferricorn applies on top of httparse:
//! limits, Host, message body framing, the chunked transfer coding, and the response head.
//!
//! Everything here is pure (bytes in, decisions out) so it is unit-tested and fuzzable apart
//! from sockets.

use std::mem::MaybeUninit;
use std::ops::Range;

/// Request limits (SPEC §2, gunicorn's `limit_request_*`), already resolved (no zero).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request-line in bytes, without CRLF; longer → 414.
    pub request_line: usize,
    /// Most header fields; more → 431.
    pub fields: usize,
    /// Longest field line in bytes, with CRLF; longer → 431.
    pub field_size: usize,
    /// Largest body in bytes; `None` = unlimited; larger → 413.
    pub body: Option<u64>,
}

impl Limits {
    /// The most bytes a request head may take before it is refused with 431.
    pub fn max_head(&self) -> usize {
        self.request_line + 2 + (self.fields + 1) * self.field_size + 2
    }
}

/// An error answered by the server itself: the status and a reason for the debug log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Status code (400, 408, 413, 414, 431, 501, 505...).
    pub status: u16,
    /// Why, for the debug log.
    pub why: &'static str,
}

const fn reject(status: u16, why: &'static str) -> Reject {
    Reject { status, why }
}

/// A header field of a parsed head: byte ranges into the connection buffer.
#[derive(Clone, Debug)]
pub struct FieldRange {
    /// The name's bytes.
    pub name: Range<usize>,
    /// The value's bytes (httparse already trimmed surrounding whitespace).
    pub value: Range<usize>,
}

/// A complete request head: ranges into the buffer it was parsed from.
#[derive(Clone, Debug, Default)]
pub struct Head {
    /// Length of the head including the final empty line.
    pub len: usize,
    /// The method token.
    pub method: Range<usize>,
    /// The request-target as sent.
    pub target: Range<usize>,
    /// The request-line without CRLF (for the access log).
    pub request_line: Range<usize>,
    /// HTTP minor version: 0 or 1.
    pub minor: u8,
    /// Header fields in wire order (names with `_` already dropped).
    pub fields: Vec<FieldRange>,
}

/// Result of trying to parse a head from the start of a buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A complete head (in the `Head` passed in).
    Complete,
    /// More bytes are needed.
    Partial,
    /// The head is invalid: answer with this status and close.
    Invalid(Reject),
}

fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Whether `line` (the start of a request-line) names an HTTP major version other than 1.
fn other_major_version(line: &[u8]) -> bool {
    line.windows(6)
        .rev()
        .find(|w| w.starts_with(b"HTTP/"))
        .is_some_and(|w| (b'2'..=b'9').contains(&w[5]))
}

/// Checks the limits on the first bytes of a head, complete or not (RFC 9112 §3, gunicorn's
/// limits): the request-line without CRLF at most `request_line` bytes (else 414), every
/// further line, CRLF included, at most `field_size` bytes (else 431), the whole head at
/// most [`Limits::max_head`] (else 431). Each rule only fails more as bytes arrive, so the
/// verdict does not depend on how the head was split into reads.
fn check_limits(buf: &[u8], limits: &Limits) -> Result<(), Reject> {
    let mut lines = buf.split_inclusive(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        let first = first.strip_suffix(b"\n").unwrap_or(first);
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        if first.len() > limits.request_line {
            return Err(reject(414, "request-line too long"));
        }
    }
    if lines.any(|line| line.len() > limits.field_size) {
        return Err(reject(431, "header field line too long"));
    }
    if buf.len() > limits.max_head() {
        return Err(reject(431, "request head too large"));
    }
    Ok(())
}

/// The status for a head httparse refused: decided on the shortest prefix of `buf` that
/// httparse refuses (found by bisection; refusal only persists as bytes arrive), so that the
/// answer is the same however the head was split into reads.
fn refusal(buf: &[u8], limits: &Limits) -> Reject {
    let fails = |len: usize| {
        let mut storage = vec![httparse::EMPTY_HEADER; limits.fields];
        httparse::Request::new(&mut storage)
            .parse(&buf[..len])
            .err()
    };
    let (mut ok, mut bad) = (0, buf.len());
    while bad - ok > 1 {
        let mid = ok + (bad - ok) / 2;
        if fails(mid).is_some() {
            bad = mid;
        } else {
            ok = mid;
        }
    }
    let prefix = &buf[..bad];
    if let Err(r) = check_limits(prefix, limits) {
        return r;
    }
    match fails(bad) {
        Some(httparse::Error::TooManyHeaders) => reject(431, "too many header fields"),
        Some(httparse::Error::Version) if other_major_version(prefix) => {
            reject(505, "unsupported HTTP major version")
        }
        _ => reject(400, "malformed request head"),
    }
}

/// Parses a request head at the start of `buf` into `head` (RFC 9112 §2–§5 via httparse),
/// applying `limits`. Up to 128 fields are parsed into a stack array (no allocation).
pub fn parse_head(buf: &[u8], limits: &Limits, head: &mut Head) -> Parsed {
    // Uninitialised field slots: httparse writes only those it fills (initialising all of
    // them cost a 3 KiB memset per request).
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut heap;
    let storage: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.fields <= stack.len() {
        &mut stack[..limits.fields]
    } else {
        heap = std::iter::repeat_with(MaybeUninit::uninit)
            .take(limits.fields)
            .collect::<Vec<_>>();
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return match check_limits(buf, limits) {
                Ok(()) => Parsed::Partial,
                Err(r) => Parsed::Invalid(r),
            }
        }
        Err(_) => return Parsed::Invalid(refusal(buf, limits)),
    };
    if let Err(r) = check_limits(&buf[..len], limits) {
        return Parsed::Invalid(r);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Invalid(reject(400, "incomplete request-line"));
    };
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(0);
    head.len = len;
    head.method = range_in(buf, method.as_bytes());
    head.target = range_in(buf, target.as_bytes());
    head.request_line = 0..line_end - usize::from(line_end > 0 && buf[line_end - 1] == b'\r');
    head.minor = minor;
    head.fields.clear();
    for field in req.headers.iter() {
        // Field names containing `_` are dropped, as gunicorn and nginx do (SPEC §4): they are
        // ambiguous with `-` once mapped to CGI variable names.
        if field.name.contains('_') {
            continue;
        }
        head.fields.push(FieldRange {
            name: range_in(buf, field.name.as_bytes()),
            value: range_in(buf, field.value),
        });
    }
    Parsed::Complete
}

/// How the request's message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// What the server needs to know about a request beyond its head's syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Semantics {
    /// Body framing.
    pub framing: Framing,
    /// Whether the client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (HTTP/1.1).
    pub expect_continue: bool,
    /// Index in `Head::fields` of Content-Type, if any.
    pub content_type: Option<usize>,
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Parses a Content-Length value: exactly 1*DIGIT (RFC 9110 §8.6). A list (`5, 5`), a sign,
/// whitespace inside, overflow, or a second Content-Length field are rejected rather than
/// reconciled (RFC 9112 §6.3 rule 5 allows either; rejecting leaves nothing to smuggle).
fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, Reject> {
    if seen.is_some() {
        return Err(reject(400, "more than one Content-Length"));
    }
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(reject(400, "invalid Content-Length"));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(reject(400, "Content-Length overflow"))
}

/// RFC 9112 §3.2: origin-form (`/path`) for any method but CONNECT, absolute-form
/// (`http://host/path`), authority-form (`host:port`) only for CONNECT, asterisk-form (`*`)
/// only for OPTIONS. Anything else (a relative path) is 400.
fn check_target(method: &[u8], target: &[u8]) -> Result<(), Reject> {
    let is_scheme = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
    };
    let ok = match target {
        b"*" => method == b"OPTIONS",
        [b'/', ..] => method != b"CONNECT",
        _ if method == b"CONNECT" => !target.contains(&b'/') && target.contains(&b':'),
        _ => target
            .windows(3)
            .position(|w| w == b"://")
            .is_some_and(|end| is_scheme(&target[..end])),
    };
    if ok {
        Ok(())
    } else {
        Err(reject(
            400,
            "request-target form not allowed for this method",
        ))
    }
}

/// Fields that must not appear in a trailer section (RFC 9110 §6.5.1): framing, routing,
/// request modifiers and content metadata the recipient may already have acted on.
pub fn forbidden_in_trailers(name: &[u8]) -> bool {
    const FORBIDDEN: [&[u8]; 13] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"trailer",
        b"te",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"expect",
        b"content-type",
        b"content-encoding",
        b"content-range",
        b"authorization",
    ];
    FORBIDDEN.iter().any(|f| name.eq_ignore_ascii_case(f))
}

/// Applies RFC 9112/9110 rules to a parsed head: Host, framing, Connection, Expect, limits.
pub fn semantics(buf: &[u8], head: &Head, limits: &Limits) -> Result<Semantics, Reject> {
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut has_transfer_encoding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut content_type = None;
    check_target(&buf[head.method.clone()], &buf[head.target.clone()])?;
    for (i, field) in head.fields.iter().enumerate() {
        let name = &buf[field.name.clone()];
        let value = &buf[field.value.clone()];
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            length = Some(content_length(value, length)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_transfer_encoding = true;
            codings.extend(tokens(value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"content-type") {
            // A singleton field (RFC 9110 §8.3): two values are ambiguous.
            if content_type.is_some() {
                return Err(reject(400, "more than one Content-Type"));
            }
            content_type = Some(i);
        }
    }
    // RFC 9112 §3.2: a client MUST send Host in HTTP/1.1; a server MUST answer 400 to a request
    // without it or with more than one.
    if hosts > 1 || (head.minor == 1 && hosts == 0) {
        return Err(reject(400, "HTTP/1.1 request without exactly one Host"));
    }
    let framing = if has_transfer_encoding {
        // RFC 9112 §6.1: Transfer-Encoding is HTTP/1.1; §6.3 rule 3: with Content-Length the
        // message is a smuggling attempt: reject rather than pick one.
        if head.minor == 0 {
            return Err(reject(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if length.is_some() {
            return Err(reject(400, "both Content-Length and Transfer-Encoding"));
        }
        framing_of_codings(&codings)?
    } else {
        match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    if let (Framing::Length(n), Some(max)) = (framing, limits.body) {
        if n > max {
            return Err(reject(413, "Content-Length exceeds limit_request_body"));
        }
    }
    let keep_alive = match head.minor {
        1 => !close,
        _ => keep_alive_token && !close,
    };
    Ok(Semantics {
        framing,
        keep_alive,
        expect_continue: expect_continue && head.minor == 1,
        content_type,
    })
}

/// RFC 9112 §6.3 rule 4 / §7: `chunked` must be the final coding, once. Only chunked framing
/// is decoded; codings applied before it (`gzip, chunked`) are left to the app, which sees the
/// Transfer-Encoding field. Without a final chunked the length is unknown: 501 for a coding
/// we do not know, 400 when chunked is present but not last (RFC 9112 §6.1).
fn framing_of_codings(codings: &[&[u8]]) -> Result<Framing, Reject> {
    let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings {
        [] => Err(reject(400, "empty Transfer-Encoding")),
        [.., last] if !chunked(last) => {
            if codings.iter().any(chunked) {
                Err(reject(400, "chunked is not the final transfer coding"))
            } else {
                Err(reject(501, "unsupported transfer coding"))
            }
        }
        [rest @ .., _] if rest.iter().any(chunked) => {
            Err(reject(400, "chunked applied more than once"))
        }
        _ => Ok(Framing::Chunked),
    }
}

/// Splits a request-target into (path, query) the way `urllib.parse.urlsplit` does: origin
/// form `/p?q#f`, absolute form `http://host/p?q`, asterisk `*`; authority form gives ("", "").
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let rest = if target.starts_with(b"/") || target == b"*" {
        target
    } else if let Some(at) = target.windows(3).position(|w| w == b"://") {
        let after = &target[at + 3..];
        let start = after
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(after.len());
        &after[start..]
    } else {
        return (b"", b"");
    };
    let rest = rest.split(|&b| b == b'#').next().unwrap_or_default();
    match rest.iter().position(|&b| b == b'?') {
        Some(q) => (&rest[..q], &rest[q + 1..]),
        None => (rest, b""),
    }
}

/// Percent-decodes `input` into `out` (RFC 3986 §2.1); malformed escapes are kept as is.
pub fn percent_decode(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
}

/// Errors from the chunked decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Malformed chunk framing (RFC 9112 §7.1): answered with 400.
    Malformed(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size { digits: u8 },
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLine { len: usize },
    TrailerLf { len: usize },
    Done,
}

/// Most bytes of chunk extensions accepted per chunk line.
pub const MAX_CHUNK_EXTENSION: usize = 4096;

/// An incremental decoder for the chunked transfer coding (RFC 9112 §7.1), strict about
/// framing: hex sizes without sign or overflow, CRLF line ends (bare LF rejected), extensions
/// and trailers bounded.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    remaining: u64,
    extension_len: usize,
    max_trailer_line: usize,
    max_trailers: usize,
    trailers: Vec<u8>,
}

impl ChunkedDecoder {
    /// A decoder whose trailer section may have up to `max_trailers` lines of at most
    /// `max_trailer_line` bytes (the head limits apply to trailers too).
    pub fn new(max_trailer_line: usize, max_trailers: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0 },
            remaining: 0,
            extension_len: 0,
            max_trailer_line,
            max_trailers,
            trailers: Vec::new(),
        }
    }

    /// Whether the last chunk and the trailer section were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The raw trailer section (field lines with CRLF, ending with the empty line), once done.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Decodes from `input` into `out`; returns (bytes consumed, bytes produced). Stops at
    /// the end of the body (see [`is_done`](Self::is_done)), as soon as `out` is full (no
    /// framing byte after the last data byte is looked at), or when `input` is exhausted.
    /// An empty `out` consumes nothing.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let mut used = 0;
        let mut produced = 0;
        while used < input.len() && produced < out.len() && self.state != ChunkState::Done {
            if self.state == ChunkState::Data {
                let n = (input.len() - used)
                    .min(out.len() - produced)
                    .min(self.remaining as usize);
                if n == 0 {
                    break;
                }
                out[produced..produced + n].copy_from_slice(&input[used..used + n]);
                used += n;
                produced += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            self.step(input[used])?;
            used += 1;
        }
        Ok((used, produced))
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use ChunkState::*;
        let bad = |why| Err(ChunkError::Malformed(why));
        self.state = match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return bad("chunk-size too large");
                }
                self.remaining = self.remaining << 4 | (b as char).to_digit(16).unwrap_or(0) as u64;
                Size { digits: digits + 1 }
            }
            (Size { digits: 0 }, _) => return bad("chunk-size is not hexadecimal"),
            (Size { .. } | SizeSpace, b' ' | b'\t') => SizeSpace,
            (Size { .. } | SizeSpace, b';') => {
                self.extension_len = 0;
                Extension
            }
            (Size { .. } | SizeSpace | Extension, b'\r') => SizeLf,
            (Size { .. } | SizeSpace, _) => return bad("invalid byte after chunk-size"),
            (Extension, b'\n') => return bad("bare LF in chunk line"),
            (Extension, _) => {
                self.extension_len += 1;
                if self.extension_len > MAX_CHUNK_EXTENSION {
                    return bad("chunk extension too long");
                }
                if b < 0x20 && b != b'\t' || b == 0x7f {
                    return bad("control character in chunk extension");
                }
                Extension
            }
            (SizeLf, b'\n') if self.remaining == 0 => TrailerLine { len: 0 },
            (SizeLf, b'\n') => Data,
            (SizeLf, _) => return bad("chunk line without LF after CR"),
            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return bad("chunk data not followed by CRLF"),
            (DataLf, b'\n') => {
                self.remaining = 0;
                Size { digits: 0 }
            }
            (DataLf, _) => return bad("chunk data not followed by CRLF"),
            (TrailerLine { len }, b'\r') => TrailerLf { len },
            (TrailerLine { .. }, b'\n') => return bad("bare LF in trailer section"),
            (TrailerLine { len }, _) => {
                if len + 3 > self.max_trailer_line {
                    return bad("trailer field line too long");
                }
                self.trailers.push(b);
                TrailerLine { len: len + 1 }
            }
            (TrailerLf { len }, b'\n') => {
                self.trailers.extend_from_slice(b"\r\n");
                if len == 0 {
                    Done
                } else if self.trailers.iter().filter(|&&c| c == b'\n').count() > self.max_trailers
                {
                    return bad("too many trailer fields");
                } else {
                    TrailerLine { len: 0 }
                }
            }
            (TrailerLf { .. }, _) => return bad("trailer line without LF after CR"),
            (Data | Done, _) => self.state,
        };
        Ok(())
    }
}

/// The standard reason phrase for `status` (RFC 9110 §15), or "Unknown".
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Whether a response with `status` never has content (RFC 9110 §6.4.1: 1xx, 204, 304).
pub fn status_has_no_body(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Whether `bytes` is a valid field name (RFC 9110 §5.1: a token).
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `bytes` may be sent as a field value or reason phrase: no CR, LF, NUL or other
/// control character except HTAB (RFC 9110 §5.5).
pub fn is_field_value(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b >= 0x20 && b != 0x7f || b == b'\t')
}

/// A complete error response the server sends itself, with `Connection: close`.
pub fn error_response(status: u16, date: &str, extra: &str) -> Vec<u8> {
    let body = format!("{} {}\n", status, reason(status));
    format!(
        "HTTP/1.1 {status} {}\r\nServer: ferricorn\r\nDate: {date}\r\nConnection: close\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// How many bytes of `cap` the next read of a chunked body may decode, `read` bytes having
/// been decoded so far: at most one byte past `limit` (`limit_request_body`), so a body over
/// the limit is refused at the same byte however its reads were split, before any framing
/// error behind that byte is seen.
pub fn body_room(limit: Option<u64>, read: u64, cap: usize) -> usize {
    match limit {
        Some(max) => cap.min(usize::try_from(max.saturating_sub(read) + 1).unwrap_or(usize::MAX)),
        None => cap,
    }
}

/// A trailer field (RFC 9112 §7.1.2): name and value bytes.
pub type Trailer = (Vec<u8>, Vec<u8>);

/// Parses the raw trailer section a [`ChunkedDecoder`] collected (field lines, then the empty
/// line) with the same field syntax as a head (RFC 9112 §5: no space before the colon, no
/// obs-fold, no CTL), keeping at most `max_fields` fields; names with `_` are dropped as in
/// heads. Errors: 400 for malformed syntax, too many fields, or a field that must not be a
/// trailer ([`forbidden_in_trailers`]).
pub fn parse_trailers(raw: &[u8], max_fields: usize) -> Result<Vec<Trailer>, Reject> {
    if raw.is_empty() || raw == b"\r\n" {
        return Ok(Vec::new());
    }
    let mut storage = vec![httparse::EMPTY_HEADER; max_fields.clamp(1, 1024)];
    let fields = match httparse::parse_headers(raw, &mut storage) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => return Err(reject(400, "incomplete trailer section")),
        Err(_) => return Err(reject(400, "malformed trailer field")),
    };
    let mut out = Vec::with_capacity(fields.len());
    for field in fields.iter().filter(|f| !f.name.contains('_')) {
        if forbidden_in_trailers(field.name.as_bytes()) {
            return Err(reject(400, "field not allowed in trailers"));
        }
        out.push((field.name.as_bytes().to_vec(), field.value.to_vec()));
    }
    Ok(out)
}

/// One request as [`read_requests`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRequest {
    /// The head's bytes (request-line and fields, with the final empty line).
    pub head: Vec<u8>,
    /// Framing decided by [`semantics`].
    pub framing: Framing,
    /// The decoded message body.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<Trailer>,
}

/// The reference model of how a connection consumes a request stream that arrives in
/// `pieces` (any split of the same bytes must give the same result): heads parsed with
/// [`parse_head`] on everything buffered so far, then [`semantics`], then the body by its
/// framing ([`ChunkedDecoder`] for chunked, with `limits.body`), then the next pipelined
/// request. Returns the complete requests in order and, if the stream was refused, the
/// refusal (after which nothing more is read). An incomplete last request is neither.
/// Used by the fuzz target (`tests/fuzz`) and the split property test.
pub fn read_requests(pieces: &[&[u8]], limits: &Limits) -> (Vec<ModelRequest>, Option<Reject>) {
    let mut requests = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut current: Option<(ModelRequest, Option<ChunkedDecoder>)> = None;
    let mut out = [0u8; 4096];
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let Some((request, decoder)) = current.as_mut() else {
                let mut head = Head::default();
                match parse_head(&buf, limits, &mut head) {
                    Parsed::Partial => break,
                    Parsed::Invalid(r) => return (requests, Some(r)),
                    Parsed::Complete => {}
                }
                let framing = match semantics(&buf, &head, limits) {
                    Ok(s) => s.framing,
                    Err(r) => return (requests, Some(r)),
                };
                let model = ModelRequest {
                    head: buf[..head.len].to_vec(),
                    framing,
                    body: Vec::new(),
                    trailers: Vec::new(),
                };
                let decoder = (framing == Framing::Chunked)
                    .then(|| ChunkedDecoder::new(limits.field_size, limits.fields));
                buf.drain(..head.len);
                current = Some((model, decoder));
                continue;
            };
            let done = match (request.framing, decoder.as_mut()) {
                (_, Some(decoder)) => {
                    let room = body_room(limits.body, request.body.len() as u64, out.len());
                    let (used, produced) = match decoder.decode(&buf, &mut out[..room]) {
                        Ok(counts) => counts,
                        Err(ChunkError::Malformed(why)) => {
                            return (requests, Some(reject(400, why)))
                        }
                    };
                    buf.drain(..used);
                    request.body.extend_from_slice(&out[..produced]);
                    if limits
                        .body
                        .is_some_and(|max| request.body.len() as u64 > max)
                    {
                        return (
                            requests,
                            Some(reject(413, "chunked body exceeds limit_request_body")),
                        );
                    }
                    if !decoder.is_done() {
                        if used == 0 && produced == 0 {
                            break;
                        }
                        continue;
                    }
                    match parse_trailers(decoder.trailers(), limits.fields) {
                        Ok(trailers) => request.trailers = trailers,
                        Err(r) => return (requests, Some(r)),
                    }
                    true
                }
                (Framing::Length(n), None) => {
                    let take = buf.len().min((n - request.body.len() as u64) as usize);
                    request.body.extend(buf.drain(..take));
                    request.body.len() as u64 == n
                }
                (_, None) => true,
            };
            if !done {
                break;
            }
            if let Some((request, _)) = current.take() {
                requests.push(request);
            }
        }
    }
    (requests, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 4094,
        fields: 100,
        field_size: 8190,
        body: None,
    };

    fn parse(buf: &[u8]) -> (Parsed, Head) {
        let mut head = Head::default();
        let p = parse_head(buf, &LIMITS, &mut head);
        (p, head)
    }

    fn sem(raw: &[u8]) -> Result<Semantics, Reject> {
        let (p, head) = parse(raw);
        assert!(matches!(p, Parsed::Complete), "{p:?}");
        semantics(raw, &head, &LIMITS)
    }

    #[test]
    fn parses_a_simple_head() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nX_Y: 1\r\n\r\nrest";
        let (p, head) = parse(raw);
        assert!(matches!(p, Parsed::Complete));
        assert_eq!(&raw[head.target.clone()], b"/a?b");
        assert_eq!(head.fields.len(), 1, "underscore names are dropped");
        assert_eq!(head.len, raw.len() - 4);
        assert_eq!(&raw[head.request_line.clone()], b"GET /a?b HTTP/1.1");
    }

    #[test]
    fn partial_and_limits() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHo").0, Parsed::Partial));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(5000));
        assert!(matches!(
            parse(long.as_bytes()).0,
            Parsed::Invalid(Reject { status: 414, .. })
        ));
        let field = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert!(matches!(
            parse(field.as_bytes()).0,
            Parsed::Invalid(Reject { status: 431, .. })
        ));
        assert!(matches!(
            parse(b"GET / HTTP/2.0\r\n\r\n").0,
            Parsed::Invalid(Reject { status: 505, .. })
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").0,
            Parsed::Invalid(Reject { status: 400, .. })
        ));
    }

    #[test]
    fn framing_rules() {
        assert_eq!(
            sem(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().framing,
            Framing::None
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Chunked
        );
        assert_eq!(sem(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n")
                .unwrap_err()
                .status,
            501
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            sem(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(sem(b"GET / HTTP/1.1\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            sem(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert!(sem(b"GET / HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn keep_alive_rules() {
        assert!(
            sem(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !sem(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!sem(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            sem(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn targets() {
        assert_eq!(split_target(b"/a/b?x=1#f"), (&b"/a/b"[..], &b"x=1"[..]));
        assert_eq!(split_target(b"http://h:80/p?q"), (&b"/p"[..], &b"q"[..]));
        assert_eq!(split_target(b"*"), (&b"*"[..], &b""[..]));
        assert_eq!(split_target(b"example.com:443"), (&b""[..], &b""[..]));
        let mut out = Vec::new();
        percent_decode(b"/a%20b%2Fc%zz%4", &mut out);
        assert_eq!(out, b"/a b/c%zz%4");
    }

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new(8190, 100);
        let mut body = Vec::new();
        let mut out = [0u8; 7];
        for piece in input.chunks(split.max(1)) {
            let mut piece = piece;
            while !piece.is_empty() && !d.is_done() {
                let (used, produced) = d.decode(piece, &mut out)?;
                body.extend_from_slice(&out[..produced]);
                piece = &piece[used..];
            }
        }
        assert!(d.is_done());
        Ok((body, d.trailers().to_vec()))
    }

    #[test]
    fn chunked_any_split() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 1..input.len() {
            let (body, trailers) = decode_all(input, split).unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(trailers, b"X-T: 1\r\n\r\n");
        }
    }

    #[test]
    fn chunked_rejects_bad_framing() {
        for bad in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"zz\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            let mut d = ChunkedDecoder::new(8190, 100);
            assert!(
                d.decode(bad, &mut [0u8; 64]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Fuzzer findings: the verdict must not depend on how the bytes were split into reads.
    #[test]
    fn verdicts_do_not_depend_on_the_split() {
        let limits = Limits {
            request_line: 64,
            body: Some(3),
            ..LIMITS
        };
        // An invalid byte early, then a request-line past the limit: 400 at the invalid byte,
        // whether or not the long rest has arrived.
        let line = [&b"GET /a\x01"[..], &[b'b'; 100], b" HTTP/1.1\r\n\r\n"].concat();
        let whole = read_requests(&[&line], &limits);
        assert_eq!(whole.1.map(|r| r.status), Some(400));
        assert_eq!(read_requests(&[&line[..8], &line[8..]], &limits), whole);
        // A chunk over limit_request_body, then bad framing: 413 at the byte past the limit.
        let body = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX";
        let whole = read_requests(&[body], &limits);
        assert_eq!(whole.1.map(|r| r.status), Some(413));
        let cut = body.len() - 3;
        assert_eq!(read_requests(&[&body[..cut], &body[cut..]], &limits), whole);
    }
}
