//! A simulated connection around [`ServerConn`]: a client's byte stream arriving in given
//! pieces, a scripted app, and the bytes the client receives. The fuzz target
//! (`tests/fuzz`) and the property tests drive the server's own state machine through it,
//! the way the connection driver does (the head stays at the front of the buffer while it
//! is served, the app pulls the body, the server drains what the app left, then keep-alive
//! or close), and [`check_responses`] verifies what a client would see.

use super::response::ResponseBuffers;
use super::{Buffered, Event, Outcome, ServerConn, Unread};
use crate::http::{self, Framing, Limits, Reject, Trailer};

/// What the simulated app does with one request.
#[derive(Clone, Debug, Default)]
pub struct AppScript {
    /// Response status (100..=999; outside 200..=999 the app's start is refused: 500).
    pub status: u16,
    /// A Content-Length the app declares, if any.
    pub declared: Option<u64>,
    /// Sizes of the body writes (bytes of a repeating pattern).
    pub writes: Vec<usize>,
    /// Call flush after this many writes.
    pub flush_after: Option<usize>,
    /// Read at most this many body bytes before answering (`None`: all of it).
    pub read_limit: Option<u64>,
    /// Bytes per read_body call (at least 1).
    pub read_size: usize,
}

/// A request as the simulated app saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    /// The head's bytes, final empty line included.
    pub head: Vec<u8>,
    /// The method is HEAD.
    pub is_head: bool,
    /// Body framing.
    pub framing: Framing,
    /// The body bytes the app read.
    pub body: Vec<u8>,
    /// Trailer fields, when the app read the whole chunked body.
    pub trailers: Vec<Trailer>,
}

/// Everything that happened on a simulated connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// Requests served, in order.
    pub requests: Vec<SeenRequest>,
    /// The refusal that ended the connection, if one did (head or body).
    pub reject: Option<Reject>,
    /// The bytes sent to the client.
    pub output: Vec<u8>,
    /// The refusal came before a request was served (a bad head): its error response
    /// answers no served request.
    pub head_refused: bool,
    /// The stream ended while the app read the last request's body: it got no response.
    pub cut_short: bool,
}

impl Transcript {
    /// Checks the output with [`check_responses`]: well framed, and exactly one final
    /// response per request served (plus the error response to a refused head).
    pub fn check(&self) -> Result<(), String> {
        let mut heads: Vec<bool> = self.requests.iter().map(|r| r.is_head).collect();
        if self.head_refused {
            heads.push(false);
        }
        let count = check_responses(&self.output, &heads)?;
        let expected = heads.len() - usize::from(self.cut_short);
        if count != expected {
            return Err(format!("{count} responses for {expected} requests"));
        }
        Ok(())
    }
}

/// Most unread body bytes the server reads past to keep a connection alive (as the driver).
const MAX_DRAIN: u64 = 1024 * 1024;

/// Bytes of the simulated app's body writes: a repeating pattern.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| b'a' + ((offset + i) % 26) as u8)
        .collect()
}

/// The body the simulated driver waits for before it calls the app (its `body_buffer`).
const BODY_BUFFER: usize = 1024;

/// The input side: the connection's buffer and the pieces still to arrive.
struct Wire<'p> {
    buf: Vec<u8>,
    pieces: std::slice::Iter<'p, &'p [u8]>,
    /// Pieces taken while the app reads a body.
    fills_in_body: usize,
}

impl Wire<'_> {
    /// Appends the next piece; false at the end of the stream.
    fn fill(&mut self) -> bool {
        match self.pieces.next() {
            Some(piece) => {
                self.buf.extend_from_slice(piece);
                true
            }
            None => false,
        }
    }
}

/// Runs the stream `pieces` through a [`ServerConn`] with `limits`; `app(i)` scripts the
/// answer to request number `i`. A refusal is answered with the server's error response.
pub fn run(pieces: &[&[u8]], limits: Limits, app: &dyn Fn(usize) -> AppScript) -> Transcript {
    let mut conn = ServerConn::new(limits);
    let mut wire = Wire {
        buf: Vec::new(),
        pieces: pieces.iter(),
        fills_in_body: 0,
    };
    let mut t = Transcript {
        requests: Vec::new(),
        reject: None,
        output: Vec::new(),
        head_refused: false,
        cut_short: false,
    };
    let mut buffers = ResponseBuffers::default();
    loop {
        match conn.next_event(&wire.buf, 4096) {
            Event::Request => {
                let script = app(t.requests.len());
                conn.lend(std::mem::take(&mut buffers));
                conn.response().allow_keep_alive = true;
                let served = serve(&mut conn, &mut wire, &script, &mut t);
                buffers = conn.reclaim();
                if !served {
                    return t;
                }
            }
            Event::NeedData(0) => {
                if !wire.fill() {
                    return t;
                }
            }
            Event::Reject(r) => {
                t.output
                    .extend_from_slice(&http::error_response(r.status, "-", ""));
                t.reject = Some(r);
                t.head_refused = true;
                return t;
            }
            _ => return t,
        }
    }
}

/// Serves one request like the driver's exchange; false when the connection ends.
fn serve(
    conn: &mut ServerConn,
    wire: &mut Wire<'_>,
    script: &AppScript,
    t: &mut Transcript,
) -> bool {
    // As the driver: wait for a body up to BODY_BUFFER before the app runs.
    let head_len = conn.head().len;
    let buffered = loop {
        match conn.body_buffered(&wire.buf[head_len..], BODY_BUFFER) {
            Buffered::Partial if wire.fill() => {}
            answer => break answer,
        }
    };
    let head = conn.take_head();
    let mut seen = SeenRequest {
        head: wire.buf[..head.len].to_vec(),
        is_head: &wire.buf[head.method.clone()] == b"HEAD",
        framing: conn.semantics().framing,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    wire.buf.drain(..head.len);
    conn.put_head(head);
    // The app reads the body.
    let limit = script.read_limit.unwrap_or(u64::MAX);
    let mut failure = None;
    if !conn.body_done() && limit > 0 {
        conn.want_body();
        let wanted = script.read_size.max(1);
        wire.fills_in_body = 0;
        let read = read_body(conn, wire, limit, wanted, &mut seen.body);
        // A body said to be complete is read without waiting for the client.
        assert!(
            buffered != Buffered::Complete || wire.fills_in_body == 0,
            "body_buffered said Complete, yet the body needed more input"
        );
        match read {
            Ok(()) => seen.trailers = conn.trailers().to_vec(),
            Err(Some(r)) => failure = Some(r),
            Err(None) => {
                t.output.append(&mut conn.response().buffers.out);
                t.requests.push(seen);
                t.cut_short = true;
                return false;
            }
        }
    }
    // The app answers.
    let response = conn.response();
    let mut refused = false;
    let length = script.declared.map(|n| n.to_string());
    let fields: Vec<(&[u8], &[u8])> = length
        .iter()
        .map(|n| (&b"Content-Length"[..], n.as_bytes()))
        .collect();
    if response.start(script.status, b"", fields).is_err() {
        refused = true;
    }
    let mut written = 0u64;
    for (i, &size) in script.writes.iter().enumerate() {
        if !refused && response.write(&pattern(written, size)).is_ok() {
            written += size as u64;
        }
        if script.flush_after == Some(i + 1) && !refused {
            response.flush();
        }
    }
    match failure {
        Some(r) => {
            response.fail(r.status);
            t.reject = Some(r);
        }
        None if refused => {
            response.fail(500);
        }
        None => conn.end_response(),
    }
    // The server drains what the app left of the body.
    if failure.is_none() && conn.unread() == Unread::Body && conn.response().keeps_alive() {
        let mut sink = Vec::new();
        if let Err(Some(r)) = read_body(conn, wire, MAX_DRAIN, 8192, &mut sink) {
            t.reject = Some(r);
        }
    }
    t.output.append(&mut conn.response().buffers.out);
    t.requests.push(seen);
    conn.finish() == Outcome::KeepAlive
}

/// Reads up to `limit` body bytes, `size` at a time, into `body`. Err(Some) for a refused
/// body, Err(None) at the end of the stream.
fn read_body(
    conn: &mut ServerConn,
    wire: &mut Wire<'_>,
    limit: u64,
    size: usize,
    body: &mut Vec<u8>,
) -> Result<(), Option<Reject>> {
    let start = conn.body_read();
    while conn.body_read() - start < limit {
        let left = limit - (conn.body_read() - start);
        let want = size.min(usize::try_from(left).unwrap_or(usize::MAX));
        match conn.next_event(&wire.buf, want) {
            Event::Data(range) => {
                body.extend_from_slice(&wire.buf[range.clone()]);
                wire.buf.drain(..range.end);
            }
            Event::EndOfMessage(used) => {
                wire.buf.drain(..used);
                return Ok(());
            }
            Event::NeedData(used) => {
                wire.buf.drain(..used);
                if wire.buf.is_empty() {
                    if !wire.fill() {
                        return Err(None);
                    }
                    wire.fills_in_body += 1;
                }
            }
            Event::Reject(r) => return Err(Some(r)),
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Parses `output` as the responses a client would read, for requests whose methods were
/// HEAD or not (`heads`, in order), and checks their framing (RFC 9112 §6.3): interim 100
/// responses, then one final response per request with a valid status line; a body exactly
/// as long as its Content-Length, or valid chunked coding, or (no length, HTTP/1.0 style)
/// running to the end; none after HEAD, 1xx, 204 or 304; nothing after a response that says
/// `Connection: close` or ends with the connection. The simulated app's bodies (responses
/// without Content-Type) must be a prefix of its write pattern, so a misframed response
/// shows as a body holding another response's bytes. A response cut short at the very end
/// (an app that wrote less than its Content-Length) ends the check. Returns the number of
/// final responses.
pub fn check_responses(output: &[u8], heads: &[bool]) -> Result<usize, String> {
    let mut at = 0;
    let mut count = 0;
    while at < output.len() {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(&output[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Err(format!("incomplete head at {at}")),
            Err(e) => return Err(format!("bad response head at {at}: {e}")),
        };
        let status = parsed.code.unwrap_or(0);
        let field = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        at += len;
        if status == 100 {
            continue;
        }
        let is_head = *heads
            .get(count)
            .ok_or_else(|| format!("response {count} has no request"))?;
        count += 1;
        let closes = field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let length = field("content-length");
        let chunked = field("transfer-encoding").is_some();
        let from_app = field("content-type").is_none();
        if length.is_some() && chunked {
            return Err("Content-Length with Transfer-Encoding".into());
        }
        let body = if is_head || http::status_has_no_body(status) {
            Vec::new()
        } else if let Some(length) = length {
            let n: usize = length.parse().map_err(|_| format!("bad length {length}"))?;
            let end = (at + n).min(output.len());
            let body = output[at..end].to_vec();
            at = end;
            body
        } else if chunked {
            let (used, body) = dechunk(&output[at..])?;
            at += used;
            body
        } else {
            if !closes {
                return Err("a body delimited by close without Connection: close".into());
            }
            let body = output[at..].to_vec();
            at = output.len();
            body
        };
        if from_app && body != pattern(0, body.len()) {
            return Err(format!(
                "response {count}: body is not the app's: {:?}",
                String::from_utf8_lossy(&body)
            ));
        }
        if closes && at < output.len() {
            return Err(format!(
                "{} bytes after Connection: close",
                output.len() - at
            ));
        }
    }
    Ok(count)
}

/// A chunked body at the start of `bytes` (strict: hex sizes, CRLF, no extensions, empty
/// trailer section): the bytes it takes and the decoded body. A body cut short at the end
/// of `bytes` takes all of them.
fn dechunk(bytes: &[u8]) -> Result<(usize, Vec<u8>), String> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok((bytes.len(), body));
        };
        let text = std::str::from_utf8(&bytes[at..at + line]).map_err(|e| e.to_string())?;
        let size =
            usize::from_str_radix(text, 16).map_err(|_| format!("bad chunk-size {text:?}"))?;
        at += line + 2;
        if size == 0 {
            return match bytes.get(at..at + 2) {
                Some(b"\r\n") => Ok((at + 2, body)),
                Some(_) => Err("trailer section or junk after the last chunk".into()),
                None => Ok((bytes.len(), body)),
            };
        }
        if bytes.len() < at + size + 2 {
            body.extend_from_slice(&bytes[at..bytes.len().min(at + size)]);
            return Ok((bytes.len(), body));
        }
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        body.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
}
