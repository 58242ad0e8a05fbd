//! The access log format: gunicorn's `access_log_format` (its "atoms"), parsed once per worker
//! and rendered into one line per request.
//!
//! A format is text with `%(NAME)s` atoms (`%%` is a literal `%`), as in Python's `%` operator
//! with a dict, which is how gunicorn applies it. Atoms (gunicorn's `glogging.Logger.atoms`):
//! `h` remote address, `l` `-`, `u` user name from Basic authorization, `t` date in brackets,
//! `r` request line, `m` method, `U` path (percent-decoded, without query), `q` query string,
//! `H` protocol, `s` status, `B` response body bytes, `b` the same or `-` for none, `f`
//! Referer, `a` User-Agent, `T` seconds, `M` milliseconds, `D` microseconds, `L` decimal
//! seconds the request took, `p` `<PID>`, `{NAME}i` a request header, `{NAME}o` a response
//! header. Missing values are `-`.

use base64::Engine as _;
use std::fmt::Write as _;
use std::time::Duration;

/// gunicorn's default `access_log_format`, as a literal: [`DEFAULT_FORMAT`] and the settings
/// table's default (which quotes it for YAML) are both made from it.
#[macro_export]
macro_rules! default_access_format {
    () => {
        r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#
    };
}

/// gunicorn's default `access_log_format`.
pub const DEFAULT_FORMAT: &str = default_access_format!();

/// One piece of a parsed format.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    Literal(String),
    /// A single-letter atom (`h`, `l`, ...).
    Letter(char),
    /// `{name}i`: a request header, name lower-cased.
    RequestHeader(String),
    /// `{name}o`: a response header, name lower-cased.
    ResponseHeader(String),
}

const LETTERS: &str = "hlutrmUqHsBbfaTMDLp";

/// A parsed `access_log_format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFormat {
    atoms: Vec<Atom>,
}

/// The request that opened a WebSocket, kept (only while access logging is on) for the line
/// written when the connection closes: the request head's bytes and what was derived from
/// them.
#[derive(Debug)]
pub struct UpgradeRequest {
    /// The request head as received (request-line and fields).
    pub head_bytes: Vec<u8>,
    /// The head's ranges into `head_bytes`.
    pub head: crate::http::Head,
    /// `h`: the client's address.
    pub remote_addr: String,
    /// `U`: PATH_INFO.
    pub path: Vec<u8>,
    /// `q`: QUERY_STRING.
    pub query: Vec<u8>,
}

impl UpgradeRequest {
    /// The line for the WebSocket's close: status 101, `body_bytes` the bytes sent to the
    /// client over the session, `elapsed` the session's duration.
    pub fn render(&self, format: &AccessFormat, body_bytes: u64, elapsed: Duration) -> Vec<u8> {
        let bytes = &self.head_bytes;
        let request_header = |name: &str| {
            self.head
                .fields
                .iter()
                .find(|f| bytes[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|f| &bytes[f.value.clone()])
        };
        let entry = AccessEntry {
            remote_addr: &self.remote_addr,
            request_line: &bytes[self.head.request_line.clone()],
            method: &bytes[self.head.method.clone()],
            path: &self.path,
            query: &self.query,
            protocol: "HTTP/1.1",
            status: 101,
            body_bytes,
            elapsed,
            request_header: &request_header,
            response_header: &|_| None,
        };
        format.render(&entry)
    }
}

/// What one request contributes to its access log line.
pub struct AccessEntry<'a> {
    /// `h`: the peer's address (empty for unix sockets: `-`).
    pub remote_addr: &'a str,
    /// `r`: the request-line, e.g. `GET /a?b HTTP/1.1`.
    pub request_line: &'a [u8],
    /// `m`: the method.
    pub method: &'a [u8],
    /// `U`: PATH_INFO (percent-decoded).
    pub path: &'a [u8],
    /// `q`: QUERY_STRING.
    pub query: &'a [u8],
    /// `H`: `HTTP/1.0` or `HTTP/1.1`.
    pub protocol: &'a str,
    /// `s`: the status sent.
    pub status: u16,
    /// `B`, `b`: response body bytes sent.
    pub body_bytes: u64,
    /// `T`, `M`, `D`, `L`: from the complete request head to the end of the response.
    pub elapsed: Duration,
    /// `{NAME}i`, `f`, `a`, `u`: a request header by lower-case name.
    pub request_header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    /// `{NAME}o`: a response header by lower-case name.
    pub response_header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

impl AccessFormat {
    /// Parses a gunicorn `access_log_format`. Errors name the unknown atom or the unclosed
    /// `%(`, e.g. `unknown atom %(x)s`.
    pub fn parse(format: &str) -> Result<AccessFormat, String> {
        let mut atoms = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                literal.push('%');
                rest = after;
                continue;
            }
            let Some(inner) = rest.strip_prefix('(') else {
                return Err(format!(
                    "`%` must start an atom `%(NAME)s` or be `%%`, at {rest:?}"
                ));
            };
            let close = inner
                .find(')')
                .ok_or_else(|| format!("unclosed atom `%({inner}`"))?;
            let name = &inner[..close];
            let after = &inner[close + 1..];
            let mut conversion = after.chars();
            if !matches!(conversion.next(), Some('s' | 'd')) {
                return Err(format!("atom `%({name})` must end with `s`"));
            }
            rest = conversion.as_str();
            if !literal.is_empty() {
                atoms.push(Atom::Literal(std::mem::take(&mut literal)));
            }
            atoms.push(atom(name)?);
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            atoms.push(Atom::Literal(literal));
        }
        Ok(AccessFormat { atoms })
    }

    /// Renders the line for `entry`, with a final newline. Bytes that are not printable ASCII,
    /// and `"` and `\`, are escaped as `\xNN`, so a client cannot forge log lines.
    pub fn render(&self, entry: &AccessEntry<'_>) -> Vec<u8> {
        let mut line = String::with_capacity(160);
        for atom in &self.atoms {
            match atom {
                Atom::Literal(text) => line.push_str(text),
                Atom::Letter(c) => letter(&mut line, *c, entry),
                Atom::RequestHeader(name) => bytes(&mut line, (entry.request_header)(name)),
                Atom::ResponseHeader(name) => bytes(&mut line, (entry.response_header)(name)),
            }
        }
        line.push('\n');
        line.into_bytes()
    }
}

fn atom(name: &str) -> Result<Atom, String> {
    let header = |suffix: char| {
        name.strip_prefix('{')
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.strip_suffix('}'))
            .filter(|n| !n.is_empty())
            .map(str::to_ascii_lowercase)
    };
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if LETTERS.contains(c) => Ok(Atom::Letter(c)),
        _ => {
            if let Some(h) = header('i') {
                Ok(Atom::RequestHeader(h))
            } else if let Some(h) = header('o') {
                Ok(Atom::ResponseHeader(h))
            } else {
                Err(format!("unknown atom %({name})s"))
            }
        }
    }
}

/// Appends `value` escaped, or `-` when absent or empty.
fn bytes(line: &mut String, value: Option<&[u8]>) {
    match value {
        Some(v) if !v.is_empty() => {
            for &b in v {
                if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                    line.push(b as char);
                } else {
                    let _ = write!(line, "\\x{b:02x}");
                }
            }
        }
        _ => line.push('-'),
    }
}

/// The user name of a `Basic` Authorization header (RFC 7617), as gunicorn's `u` atom.
fn basic_user(authorization: &[u8]) -> Option<Vec<u8>> {
    let (scheme, credentials) =
        authorization.split_at(authorization.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[..colon].to_vec())
}

fn letter(line: &mut String, c: char, e: &AccessEntry<'_>) {
    let micros = e.elapsed.as_micros();
    match c {
        'h' => bytes(line, Some(e.remote_addr.as_bytes())),
        'l' => line.push('-'),
        'u' => {
            let user = (e.request_header)("authorization").and_then(basic_user);
            bytes(line, user.as_deref());
        }
        't' => {
            line.push('[');
            line.push_str(&crate::logging::now_formatted(c"%d/%b/%Y:%H:%M:%S %z"));
            line.push(']');
        }
        'r' => bytes(line, Some(e.request_line)),
        'm' => bytes(line, Some(e.method)),
        'U' => bytes(line, Some(e.path)),
        'q' => bytes(line, Some(e.query)),
        'H' => line.push_str(e.protocol),
        's' => {
            let _ = write!(line, "{}", e.status);
        }
        'B' => {
            let _ = write!(line, "{}", e.body_bytes);
        }
        'b' if e.body_bytes == 0 => line.push('-'),
        'b' => {
            let _ = write!(line, "{}", e.body_bytes);
        }
        'f' => bytes(line, (e.request_header)("referer")),
        'a' => bytes(line, (e.request_header)("user-agent")),
        'T' => {
            let _ = write!(line, "{}", e.elapsed.as_secs());
        }
        'M' => {
            let _ = write!(line, "{}", e.elapsed.as_millis());
        }
        'D' => {
            let _ = write!(line, "{micros}");
        }
        'L' => {
            let _ = write!(line, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        }
        'p' => {
            let _ = write!(line, "<{}>", std::process::id());
        }
        _ => line.push('-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(
        request: &'a dyn Fn(&str) -> Option<&'a [u8]>,
        response: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> AccessEntry<'a> {
        AccessEntry {
            remote_addr: "10.0.0.1",
            request_line: b"GET /a%20b?x=1 HTTP/1.1",
            method: b"GET",
            path: b"/a b",
            query: b"x=1",
            protocol: "HTTP/1.1",
            status: 201,
            body_bytes: 0,
            elapsed: Duration::from_micros(1_234_567),
            request_header: request,
            response_header: response,
        }
    }

    #[test]
    fn renders_every_atom() {
        let request = |name: &str| match name {
            "user-agent" => Some(&b"curl/8 \"quoted\""[..]),
            "authorization" => Some(&b"Basic YWxpY2U6c2VjcmV0"[..]),
            "x-forwarded-for" => Some(&b"192.0.2.1"[..]),
            _ => None,
        };
        let response = |name: &str| (name == "content-type").then_some(&b"text/plain"[..]);
        let format = AccessFormat::parse(
            "%(h)s %(l)s %(u)s %(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(b)s %(f)s %(a)s %(T)s %(M)s %(D)s %(L)s %({X-Forwarded-For}i)s %({Content-Type}o)s %({missing}o)s 100%%",
        )
        .unwrap();
        let line = String::from_utf8(format.render(&entry(&request, &response))).unwrap();
        assert_eq!(
            line,
            "10.0.0.1 - alice GET /a b x=1 HTTP/1.1 201 0 - - curl/8 \\x22quoted\\x22 1 1234 1234567 1.234567 192.0.2.1 text/plain - 100%\n"
        );
    }

    #[test]
    fn default_format_and_errors() {
        let format = AccessFormat::parse(DEFAULT_FORMAT).unwrap();
        let none = |_: &str| None;
        let line = String::from_utf8(format.render(&entry(&none, &none))).unwrap();
        assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
        assert!(
            line.ends_with("] \"GET /a%20b?x=1 HTTP/1.1\" 201 - \"-\" \"-\"\n"),
            "{line}"
        );
        assert_eq!(
            AccessFormat::parse("%(x)s"),
            Err("unknown atom %(x)s".to_string())
        );
        assert!(AccessFormat::parse("%(h").is_err());
        assert!(AccessFormat::parse("%h").is_err());
        assert!(AccessFormat::parse("%(h)").is_err());
    }
}
