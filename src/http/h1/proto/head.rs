//! The request head and the trailer section: a linear incremental scan for their end, with
//! the line grammar and limits checked byte by byte, then one parse of the complete head
//! (request-line here, field lines with httparse).

use crate::http::{reject, FieldRange, Head, Limits, Reject, Trailer};
use std::ops::Range;

/// Where a [`HeadScan`] is scanning: a request head starts with the request-line, a trailer
/// section (RFC 9112 §7.1.2) with field lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Request-line, field lines, empty line (RFC 9112 §2.1).
    Head,
    /// Field lines, empty line.
    Trailers,
}

/// The outcome of [`HeadScan::scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// No end yet; call again with the same bytes and more after them.
    Partial,
    /// The section ends after `len` bytes (its final empty line included).
    Complete {
        /// Bytes of the section.
        len: usize,
    },
    /// Refused: answer with this status and close.
    Invalid(Reject),
}

/// An incremental scan for the end of a request head or trailer section. Each call goes on
/// from where the last one stopped, so every byte is looked at once however the section is
/// split into reads (linear in its length). Checked on the way, each at the byte where it
/// first fails, so the verdict does not depend on the split either:
/// - every line ends with CRLF: a bare LF or bare CR is 400 (RFC 9112 §2.2 lets a server
///   refuse them; a proxy that splits lines otherwise would see a different request);
/// - no control character but HTAB (RFC 9110 §5.5, RFC 9112 §3): 400 at once, so a TLS
///   handshake or binary garbage is answered without waiting for a line end;
/// - the request-line without CRLF at most `limits.request_line` bytes (414), each field
///   line with its CRLF at most `limits.field_size` (431), at most `limits.fields` field lines
///   (431), the whole section at most `limits.head` bytes (431).
///
/// Empty lines before a request-line are skipped (RFC 9112 §2.2), within `limits.head`.
#[derive(Clone, Debug)]
pub struct HeadScan {
    section: Section,
    /// Bytes scanned so far, from the start of the section.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// The last byte scanned was a CR.
    cr: bool,
    /// The request-line without CRLF, once complete (heads only).
    request_line: Option<Range<usize>>,
    /// Complete field lines so far.
    fields: usize,
}

impl HeadScan {
    /// A scan at the start of a section.
    pub fn new(section: Section) -> HeadScan {
        HeadScan {
            section,
            pos: 0,
            line_start: 0,
            cr: false,
            request_line: None,
            fields: 0,
        }
    }

    fn in_request_line(&self) -> bool {
        self.section == Section::Head && self.request_line.is_none()
    }

    /// Scans `buf` (the section from its first byte: what an earlier call saw, then more).
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Scan {
        let mut i = self.pos;
        while i < buf.len() {
            let b = buf[i];
            i += 1;
            if self.cr {
                self.cr = false;
                if b != b'\n' {
                    return self.invalid(i, limits, "bare CR in request head");
                }
                if let Some(r) = self.over_limit(i, 2, limits) {
                    return Scan::Invalid(r);
                }
                let empty = i - self.line_start == 2;
                if self.in_request_line() {
                    if !empty {
                        self.request_line = Some(self.line_start..i - 2);
                    }
                } else if empty {
                    self.pos = i;
                    return Scan::Complete { len: i };
                } else {
                    self.fields += 1;
                    if self.fields > limits.fields {
                        return Scan::Invalid(reject(431, "too many header fields"));
                    }
                }
                self.line_start = i;
            } else if b == b'\r' {
                self.cr = true;
            } else if b == b'\n' {
                return self.invalid(i, limits, "bare LF in request head");
            } else if b < 0x20 && b != b'\t' || b == 0x7f {
                return self.invalid(i, limits, "control character in request head");
            }
        }
        self.pos = i;
        match self.over_limit(i, usize::from(self.cr), limits) {
            Some(r) => Scan::Invalid(r),
            None => Scan::Partial,
        }
    }

    /// The verdict for a bad byte just before `at`: a limit the bytes before it already
    /// exceeded wins, as it failed first.
    fn invalid(&self, at: usize, limits: &Limits, why: &'static str) -> Scan {
        Scan::Invalid(self.over_limit(at, 0, limits).unwrap_or(reject(400, why)))
    }

    /// The limit that the first `at` bytes exceed, if any; of two, the one exceeded at the
    /// earlier byte. `eol`: line-end bytes (CR, LF) at the end of the current line, which the
    /// request-line's length does not count.
    fn over_limit(&self, at: usize, eol: usize, limits: &Limits) -> Option<Reject> {
        let line = at - self.line_start;
        let mut first: Option<(usize, Reject)> = None;
        let mut note = |exceeded_at: usize, r: Reject| {
            if first.is_none_or(|(p, _)| exceeded_at < p) {
                first = Some((exceeded_at, r));
            }
        };
        if self.in_request_line() {
            if line - eol > limits.request_line {
                note(
                    self.line_start + limits.request_line + 1,
                    reject(414, "request-line too long"),
                );
            }
        } else if line > limits.field_size {
            note(
                self.line_start + limits.field_size + 1,
                reject(431, "header field line too long"),
            );
        }
        if at > limits.head {
            note(limits.head + 1, reject(431, "request head too large"));
        }
        first.map(|(_, r)| r)
    }
}

/// Most field slots parsed on the stack; a head with more uses a heap array.
const STACK_FIELDS: usize = 16;

impl HeadScan {
    /// Parses the complete head `buf` (`buf.len()` is the `len` of [`Scan::Complete`]) that
    /// this scan found into `head`: the request-line by RFC 9112 §3 (`method SP
    /// request-target SP HTTP-version`, single spaces, method a token, target visible
    /// bytes), the field lines with httparse (RFC 9112 §5: no space before the colon, no
    /// obs-fold). HTTP/1.x with x above 1 is served as HTTP/1.1 (RFC 9110 §2.5); another
    /// major version is 505. Field names containing `_` are dropped, as gunicorn and nginx
    /// do. Errors: 400, 505.
    pub fn parse(&self, buf: &[u8], head: &mut Head) -> Result<(), Reject> {
        let line = self
            .request_line
            .clone()
            .ok_or(reject(400, "no request-line"))?;
        parse_request_line(buf, line.clone(), head)?;
        head.len = buf.len();
        head.request_line = line.clone();
        let fields_start = line.end + 2;
        let count = self.fields;
        let mut stack = [httparse::EMPTY_HEADER; STACK_FIELDS];
        let mut heap;
        let storage: &mut [httparse::Header<'_>] = if count <= STACK_FIELDS {
            &mut stack[..count]
        } else {
            heap = vec![httparse::EMPTY_HEADER; count];
            &mut heap
        };
        let fields = match httparse::parse_headers(&buf[fields_start..], storage) {
            Ok(httparse::Status::Complete((_, fields))) => fields,
            _ => return Err(reject(400, "malformed request head")),
        };
        head.fields.clear();
        for field in fields.iter().filter(|f| !f.name.contains('_')) {
            head.fields.push(FieldRange {
                name: range_in(buf, field.name.as_bytes()),
                value: range_in(buf, field.value),
            });
        }
        Ok(())
    }

    /// Parses a complete trailer section `buf` into name/value pairs with the same field
    /// syntax as a head (RFC 9112 §7.1.2, §5), dropping names with `_`. Errors: 400.
    pub fn parse_trailers(&self, buf: &[u8]) -> Result<Vec<Trailer>, Reject> {
        let mut storage = vec![httparse::EMPTY_HEADER; self.fields];
        match httparse::parse_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete((_, fields))) => Ok(fields
                .iter()
                .filter(|f| !f.name.contains('_'))
                .map(|f| (f.name.as_bytes().to_vec(), f.value.to_vec()))
                .collect()),
            _ => Err(reject(400, "malformed trailer field")),
        }
    }
}

fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// A byte of a request-target: visible ASCII, or obs-text as httparse allows (RFC 9112 §3.2).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `request-line = method SP request-target SP HTTP-version` (RFC 9112 §3), at `line` in
/// `buf`, into `head`'s method, target and minor version.
fn parse_request_line(buf: &[u8], line: Range<usize>, head: &mut Head) -> Result<(), Reject> {
    let text = &buf[line.clone()];
    let malformed = reject(400, "malformed request-line");
    let sp1 = text.iter().position(|&b| b == b' ').ok_or(malformed)?;
    let rest = &text[sp1 + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ').ok_or(malformed)?;
    let (method, target, version) = (&text[..sp1], &rest[..sp2], &rest[sp2 + 1..]);
    if !crate::http::is_token(method)
        || target.is_empty()
        || !target.iter().all(|&b| is_target_byte(b))
    {
        return Err(malformed);
    }
    // HTTP-version = "HTTP" "/" DIGIT "." DIGIT (RFC 9112 §2.3).
    let [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] = *version else {
        return Err(malformed);
    };
    if !major.is_ascii_digit() || !minor.is_ascii_digit() {
        return Err(malformed);
    }
    if major != b'1' {
        return Err(reject(505, "unsupported HTTP major version"));
    }
    head.minor = u8::from(minor != b'0');
    head.method = line.start..line.start + sp1;
    head.target = line.start + sp1 + 1..line.start + sp1 + 1 + sp2;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 64,
        fields: 4,
        field_size: 32,
        body: None,
        head: 200,
    };

    fn verdict(raw: &[u8]) -> Scan {
        HeadScan::new(Section::Head).scan(raw, &LIMITS)
    }

    fn status(raw: &[u8]) -> Option<u16> {
        match verdict(raw) {
            Scan::Invalid(r) => Some(r.status),
            _ => None,
        }
    }

    #[test]
    fn each_byte_is_scanned_once_however_the_head_arrives() {
        let limits = Limits {
            request_line: 4094,
            fields: 1001,
            field_size: 8190,
            body: None,
            head: 1 << 20,
        };
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..1000 {
            head.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(50)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let mut scan = HeadScan::new(Section::Head);
        let mut fed = 0;
        while fed < head.len() {
            fed = (fed + 60).min(head.len());
            let before = scan.pos;
            match scan.scan(&head[..fed], &limits) {
                Scan::Partial => assert_eq!(scan.pos, fed),
                Scan::Complete { len } => assert_eq!(len, head.len()),
                Scan::Invalid(r) => panic!("{r:?}"),
            }
            // Only the new bytes were looked at.
            assert!(scan.pos - before <= 60);
        }
        let mut parsed = Head::default();
        scan.parse(&head, &mut parsed).unwrap();
        assert_eq!(parsed.fields.len(), 1001);
    }

    #[test]
    fn line_ends_are_crlf_only() {
        assert_eq!(status(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: a\x01\r\n"), Some(400));
        // HTAB and obs-text are field content.
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: a\tb\xff\r\n\r\n"), None);
        // A leading empty line is skipped (RFC 9112 §2.2).
        let raw = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scan = HeadScan::new(Section::Head);
        assert_eq!(scan.scan(raw, &LIMITS), Scan::Complete { len: raw.len() });
        let mut head = Head::default();
        scan.parse(raw, &mut head).unwrap();
        assert_eq!(&raw[head.method.clone()], b"GET");
    }

    #[test]
    fn limits_fail_at_the_byte_that_exceeds_them() {
        let long_line = [b"GET /".as_slice(), &[b'a'; 60], b" HTTP/1.1"].concat();
        assert_eq!(status(&long_line), Some(414), "before any line end");
        let field = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'b'; 40]].concat();
        assert_eq!(status(&field), Some(431));
        let fields = b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n";
        assert_eq!(status(fields), Some(431));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..4 {
            big.extend_from_slice(b"X-Long: 0123456789012345678\r\n");
        }
        assert!(matches!(verdict(&big), Scan::Partial));
        big.extend_from_slice(b"\r\n");
        assert_eq!(
            verdict(&big),
            Scan::Complete { len: big.len() },
            "all at the limits"
        );
        // A bad byte past a limit reports the limit, which failed first.
        let bad_after = [&long_line[..], b"\x01"].concat();
        assert_eq!(status(&bad_after), Some(414));
        let bad_before = [b"GET /\x01".as_slice(), &[b'a'; 80]].concat();
        assert_eq!(status(&bad_before), Some(400));
        // limit_request_head below the request-line limit: whichever is exceeded first.
        let tight = Limits { head: 20, ..LIMITS };
        let line = [b"GET /".as_slice(), &[b'a'; 30]].concat();
        assert!(matches!(
            HeadScan::new(Section::Head).scan(&line, &tight),
            Scan::Invalid(Reject { status: 431, .. })
        ));
    }

    fn parsed(raw: &[u8]) -> Result<Head, Reject> {
        let mut scan = HeadScan::new(Section::Head);
        let Scan::Complete { len } = scan.scan(raw, &LIMITS) else {
            panic!("incomplete: {:?}", String::from_utf8_lossy(raw));
        };
        let mut head = Head::default();
        scan.parse(&raw[..len], &mut head).map(|()| head)
    }

    #[test]
    fn request_line_grammar() {
        let ok = parsed(b"OPTIONS * HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(ok.minor, 0);
        assert_eq!(parsed(b"GET / HTTP/1.2\r\n\r\n").unwrap().minor, 1);
        assert_eq!(parsed(b"GET / HTTP/1.9\r\n\r\n").unwrap().minor, 1);
        for (raw, want) in [
            (&b"GET / HTTP/2.0\r\n\r\n"[..], 505),
            (b"GET / HTTP/0.9\r\n\r\n", 505),
            (b"GET / HTTP/1.10\r\n\r\n", 400),
            (b"GET / HTTP/1\r\n\r\n", 400),
            (b"GET / http/1.1\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1 \r\n\r\n", 400),
            (b"GET\t/ HTTP/1.1\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\n\r\n", 400),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX : 1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n: 1\r\n\r\n", 400),
        ] {
            let status = match verdict(raw) {
                Scan::Invalid(r) => r.status,
                _ => parsed(raw).map_or_else(|r| r.status, |_| 200),
            };
            assert_eq!(status, want, "{:?}", String::from_utf8_lossy(raw));
        }
        let head = parsed(b"GET /a HTTP/1.1\r\nHost: x\r\nX_Y: 1\r\nZ: \t2 \r\n\r\n").unwrap();
        assert_eq!(head.fields.len(), 2, "names with _ are dropped");
    }
}
