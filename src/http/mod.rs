//! HTTP/1.1 vocabulary (RFC 9110, RFC 9112) shared by the protocol state machine (the
//! proto module, which tests these rules) and the connection driver: limits, refusals, the parsed head, request
//! semantics (Host, message body framing, Connection, Expect), request-targets, reason
//! phrases and the server's own error responses. Everything here is pure.

pub mod h1;
pub mod ws;

use std::ops::Range;

/// Request limits (gunicorn's `limit_request_*`), already resolved (no zero).
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
    /// Most bytes of a whole head (request-line, field lines, line ends) or trailer section;
    /// more → 431 (`limit_request_head`).
    pub head: usize,
}

impl Limits {
    /// The defaults of the settings (gunicorn's `limit_request_*`, and `limit_request_head`):
    /// 4094-byte request-line, 100 fields of 8190 bytes, no body limit, 64 KiB heads.
    pub const DEFAULTS: Limits = Limits {
        request_line: 4094,
        fields: 100,
        field_size: 8190,
        body: None,
        head: 65536,
    };
}

/// An error answered by the server itself: the status and a reason for the debug log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Status code (400, 408, 413, 414, 431, 501, 505...).
    pub status: u16,
    /// Why, for the debug log.
    pub why: &'static str,
}

/// A [`Reject`] with `status` and `why`.
pub const fn reject(status: u16, why: &'static str) -> Reject {
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

/// How the request's message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body.
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// What the server needs to know about a request beyond its head's syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
    parse_content_length(value).ok_or(reject(400, "Content-Length overflow"))
}

/// A Content-Length value: exactly 1*DIGIT that fits in a u64 (RFC 9110 §8.6); no sign,
/// no inner space, no list. The one parser for requests and for the app's responses.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
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

/// Whether `value` is a valid Host field value (RFC 9110 §7.2: `uri-host [ ":" port ]`, with
/// RFC 3986 §3.2.2's `IP-literal / IPv4address / reg-name` and §3.2.3's `port = *DIGIT`). An
/// empty value is valid (a target without an authority). No userinfo (`a@b`), no spaces.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &rest[..end];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !ok {
                    return false;
                }
                (&b""[..], &rest[end + 1..])
            }
            None => return false,
        },
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (&value[..end], &value[end..])
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(b":")
            .is_some_and(|p| p.iter().all(u8::is_ascii_digit));
    port_ok && reg_name(host)
}

/// RFC 3986 §3.2.2 `reg-name = *( unreserved / pct-encoded / sub-delims )` (an IPv4 address
/// is one too).
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let hex = host.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        i += 1;
    }
    true
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
            if !valid_host(value) {
                return Err(reject(400, "invalid Host"));
            }
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

/// A trailer field (RFC 9112 §7.1.2): name and value bytes.
pub type Trailer = (Vec<u8>, Vec<u8>);
