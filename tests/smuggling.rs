//! Message framing and request-smuggling rules (issue #6), each case citing the RFC 9112 /
//! RFC 9110 section it follows, sent to the real server (echo app). A refused request gets its
//! status, `Connection: close`, and nothing after it: a request smuggled behind it is never
//! answered. Anything that is not HTTP gets a 400 at once.

mod common;

use common::{read_response, Pki, Server};
use std::io::{BufReader, Read, Write};
use std::time::Duration;

/// A request hidden behind the case's bytes: it must never be answered.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Sends `raw` + [`SMUGGLED`], half-closes, and returns the status of the only response.
fn verdict(server: &Server, raw: &str) -> Result<u16, String> {
    let mut stream = server.stream().map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{raw}{SMUGGLED}").as_bytes())
        .map_err(|e| e.to_string())?;
    stream.half_close();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader).map_err(|e| e.to_string())?;
    if response.status >= 400 {
        if !response.closes() {
            return Err(format!("{} without Connection: close", response.status));
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        if !rest.is_empty() {
            return Err(format!(
                "bytes after the error response: {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
    }
    Ok(response.status)
}

const POST: &str = "POST /raw HTTP/1.1\r\nHost: a\r\n";
const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n";

/// With 4 threads per worker (the default) connections are one-shot in epoll.
#[test]
fn framing_and_smuggling_rules() {
    framing_and_smuggling_rules_with(4, None);
}

/// With 1 thread per worker connections are edge-triggered in epoll.
#[test]
fn framing_and_smuggling_rules_single_thread() {
    framing_and_smuggling_rules_with(1, None);
}

/// The hostile corpus over TLS (issue #17): the same verdicts once records carry the bytes.
#[test]
fn framing_and_smuggling_rules_over_tls() {
    Pki::with(|pki| framing_and_smuggling_rules_with(4, Some(pki)));
}

fn framing_and_smuggling_rules_with(threads: usize, tls: Option<&Pki>) {
    let config = format!("workers: 1\nthreads: {threads}\nlimit_request_body: 100\nlimit_request_line: 200\nlimit_request_field_size: 300\n");
    let server = Server::start_maybe_tls("echo", &config, tls);
    let long_extension = "a".repeat(5000);
    let long_trailer = "v".repeat(400);
    let long_target = "x".repeat(300);
    let long_field = "y".repeat(400);
    let body_101 = "z".repeat(101);
    let cases: Vec<(&str, String, u16)> = vec![
        // RFC 9112 §6.3 rule 3: Content-Length with Transfer-Encoding is a smuggling attempt.
        ("CL with TE", format!("{POST}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400),
        ("TE with CL", format!("{POST}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), 400),
        // RFC 9112 §6.3 rule 5, RFC 9110 §8.6: several or list-form lengths are refused, equal or not.
        ("two CL differing", format!("{POST}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), 400),
        ("two CL equal", format!("{POST}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), 400),
        ("CL list", format!("{POST}Content-Length: 5, 5\r\n\r\nhello"), 400),
        // RFC 9110 §8.6: Content-Length = 1*DIGIT: no sign, no inner space, no hex, no overflow.
        ("CL plus sign", format!("{POST}Content-Length: +5\r\n\r\nhello"), 400),
        ("CL minus sign", format!("{POST}Content-Length: -5\r\n\r\nhello"), 400),
        ("CL inner space", format!("{POST}Content-Length: 1 0\r\n\r\nhelloworld"), 400),
        ("CL hex", format!("{POST}Content-Length: 0x5\r\n\r\nhello"), 400),
        ("CL overflow", format!("{POST}Content-Length: 99999999999999999999999\r\n\r\n"), 400),
        // RFC 9110 §5.5: OWS around a field value is not part of it.
        ("CL with OWS", format!("{POST}Content-Length:  5 \r\n\r\nhello"), 200),
        // RFC 9112 §6.1: chunked must be the final coding, applied once; TE is HTTP/1.1 only.
        ("TE unknown", format!("{POST}Transfer-Encoding: gzip\r\n\r\n"), 501),
        ("TE chunked not last", format!("{POST}Transfer-Encoding: chunked, gzip\r\n\r\n"), 400),
        ("TE chunked twice", format!("{POST}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"), 400),
        ("TE split chunked twice", format!("{POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400),
        ("TE empty", format!("{POST}Transfer-Encoding: \r\n\r\n"), 400),
        ("TE in HTTP/1.0", "POST /raw HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("TE gzip then chunked", format!("{POST}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 200),
        // RFC 9112 §7.1: chunk-size = 1*HEXDIG, no sign, no overflow, no junk, CRLF line ends.
        ("chunk-size overflow", format!("{POST}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"), 400),
        ("chunk-size junk", format!("{POST}Transfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size sign", format!("{POST}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size leading space", format!("{POST}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-size hex prefix", format!("{POST}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"), 400),
        ("bare LF after chunk-size", format!("{POST}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"), 400),
        ("bare LF after chunk data", format!("{POST}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"), 400),
        ("chunk data too long", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"), 400),
        ("last chunk bare LF", format!("{POST}Transfer-Encoding: chunked\r\n\r\n0\n\r\n"), 400),
        // RFC 9112 §7.1.1: chunk extensions are allowed but bounded (4 KiB per chunk line).
        ("short extension", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n"), 200),
        ("long extension", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3;{long_extension}\r\nabc\r\n0\r\n\r\n"), 400),
        // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS
        // chunk-ext-val ] ), a name is a token, a value a token or a quoted-string.
        ("extension with BWS", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3 ; a = b ;c\r\nabc\r\n0\r\n\r\n"), 200),
        ("extension quoted", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3;a=\"b; \\\"c\"\r\nabc\r\n0;z\r\n\r\n"), 200),
        ("extension empty", format!("{POST}Transfer-Encoding: chunked\r\n\r\n2;\r\nab\r\n0\r\n\r\n"), 400),
        ("extension unbalanced quote", format!("{POST}Transfer-Encoding: chunked\r\n\r\n5;a=\"b; c\r\nhello\r\n0\r\n\r\n"), 400),
        ("space after size", format!("{POST}Transfer-Encoding: chunked\r\n\r\na \r\n0123456789\r\n0\r\n\r\n"), 400),
        ("extension name not a token", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3;a@b\r\nabc\r\n0\r\n\r\n"), 400),
        ("extension value empty", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3;a=\r\nabc\r\n0\r\n\r\n"), 400),
        ("extension trailing BWS", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3;a \r\nabc\r\n0\r\n\r\n"), 400),
        // RFC 9112 §7.1.2, RFC 9110 §6.5.1: trailers bounded, field syntax, no framing fields.
        ("trailer ok", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n"), 200),
        // The head's limits apply to the trailer section: a field line over
        // limit_request_field_size is 431, as in a head.
        ("trailer too long", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: {long_trailer}\r\n\r\n"), 431),
        ("trailer Content-Length", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n"), 400),
        ("trailer space before colon", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX : 1\r\n\r\n"), 400),
        ("trailer bare LF", format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: 1\n\r\n"), 400),
        // RFC 9112 §5.1: no whitespace between field name and colon; RFC 9110 §5.5: no CTL
        // in values; RFC 9112 §5.2: obs-fold is rejected; RFC 9110 §5.1: a name is a token.
        ("space before colon", format!("{GET}X-A : 1\r\n\r\n"), 400),
        ("CTL in value", format!("{GET}X-A: a\x01b\r\n\r\n"), 400),
        ("NUL in value", format!("{GET}X-A: a\0b\r\n\r\n"), 400),
        ("obs-fold", format!("{GET}X-A: a\r\n b\r\n\r\n"), 400),
        ("empty name", format!("{GET}: a\r\n\r\n"), 400),
        ("name with slash", format!("{GET}X/A: a\r\n\r\n"), 400),
        // RFC 9112 §2.2: a server MAY reject a bare LF or bare CR anywhere in the head; we do
        // (gunicorn 27 and llhttp too): a proxy that does not split lines on a lone LF would
        // see one request where a lenient server sees two.
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1; RFC 9110 §7.2 with RFC 3986 §3.2.2:
        // its value is uri-host [":" port].
        ("Host missing", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".into(), 400),
        ("Host twice", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".into(), 400),
        ("Host twice in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n".into(), 400),
        ("Host with userinfo", "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n".into(), 400),
        ("Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".into(), 400),
        ("Host with a bad port", "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n".into(), 400),
        ("Host with two ports", "GET / HTTP/1.1\r\nHost: a:80:81\r\n\r\n".into(), 400),
        ("Host unclosed IP-literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n".into(), 400),
        ("Host bad percent-encoding", "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n".into(), 400),
        ("Host name and port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n".into(), 200),
        ("Host IP-literal and port", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n".into(), 200),
        ("Host sub-delims", "GET / HTTP/1.1\r\nHost: 0.0.0.0=5000\r\n\r\n".into(), 200),
        ("Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n".into(), 200),
        ("Host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n".into(), 200),
        ("no Host in HTTP/1.0", "GET / HTTP/1.0\r\n\r\n".into(), 200),
        ("bare LF in head", "GET / HTTP/1.1\nHost: a\n\n".into(), 400),
        ("bare LF smuggles a Content-Length", "GET / HTTP/1.1\r\nHost: localhost\r\nDummy: x\nContent-Length: 23\r\n\r\nGET / HTTP/1.1\r\nDummy: GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        ("bare LF smuggles chunked", format!("{POST}x:x\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400),
        ("bare LF ends the request-line", "GET / HTTP/1.1\nHost: a\r\n\r\n".into(), 400),
        ("bare CR in a field", format!("{GET}X-A: a\rb\r\n\r\n"), 400),
        ("bare CR ends a field", format!("{GET}X-A: a\rX-B: b\r\n\r\n"), 400),
        ("leading empty line", format!("\r\n{GET}\r\n"), 200),
        // RFC 9112 §3: request-line = method SP request-target SP HTTP-version, single spaces.
        ("double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("no version", "GET /\r\nHost: a\r\n\r\n".into(), 400),
        ("tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("method not a token", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        // RFC 9112 §3.2: the target's form must fit the method.
        ("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("asterisk for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        // RFC 9112 §2.3: only HTTP/1.x; another major version may get 505.
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n".into(), 505),
        // RFC 9110 §2.5: a higher minor version is served as the highest we have, 1.1.
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n".into(), 200),
        ("HTTP/1.9", "GET / HTTP/1.9\r\nHost: a\r\n\r\n".into(), 200),
        ("HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n".into(), 400),
        ("HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n".into(), 505),
        ("HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n".into(), 400),
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1; HTTP/1.0 may omit it.
        ("no Host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n".into(), 200),
        // Limits (gunicorn's limit_request_*): 414, 431, 413.
        ("request-line over limit", format!("GET /{long_target} HTTP/1.1\r\nHost: a\r\n\r\n"), 414),
        ("field over limit", format!("{GET}X-A: {long_field}\r\n\r\n"), 431),
        ("CL over limit", format!("{POST}Content-Length: 101\r\n\r\n{body_101}"), 413),
        ("chunked over limit", format!("{POST}Transfer-Encoding: chunked\r\n\r\n65\r\n{body_101}\r\n0\r\n\r\n"), 413),
    ];
    let mut wrong = Vec::new();
    for (what, raw, want) in &cases {
        match verdict(&server, raw) {
            Ok(got) if got == *want => {}
            Ok(got) => wrong.push(format!("{what}: want {want}, got {got}")),
            Err(e) => wrong.push(format!("{what}: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn pipelined_requests_after_a_body_start_at_the_right_byte() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    let mut stream = server.connect();
    // A Content-Length body, a chunked body with trailers, then a GET: all in one write.
    stream
        .write_all(
            b"POST /raw HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nGET /\
              POST /raw HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nGET \r\n0\r\nX-T: 1\r\n\r\n\
              GET /third?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let first = read_response(&mut reader).unwrap();
    assert_eq!(first.text(), "GET /", "the body is data, not a request");
    let second = read_response(&mut reader).unwrap();
    assert_eq!(second.text(), "GET ");
    let third = read_response(&mut reader).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(json["RAW_URI"], "/third?x=1");
}

#[test]
fn tls_and_binary_garbage_get_400_at_once() {
    // header_timeout is long, and the client waits at most 5 s: only an immediate answer passes.
    let server = Server::start("echo", "workers: 1\nheader_timeout: 60\n", &[]);
    let client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5e, 0x8f, 0x1a,
    ];
    let garbage: Vec<u8> = (0u32..64).map(|i| (i * 97 % 256) as u8).collect();
    let nul_start: &[u8] = b"\0\0\0\0GET / HTTP/1.1\r\n";
    for (what, bytes) in [
        ("TLS ClientHello", client_hello),
        ("binary garbage", &garbage[..]),
        ("NUL bytes", nul_start),
    ] {
        let mut stream = server.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The connection stays open on our side: the server must not wait for more bytes.
        stream.write_all(bytes).unwrap();
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader)
            .unwrap_or_else(|e| panic!("{what}: no immediate answer: {e}"));
        assert_eq!(response.status, 400, "{what}");
        assert!(response.closes(), "{what}");
        let mut rest = Vec::new();
        let n = reader.read_to_end(&mut rest);
        assert!(n.is_ok(), "{what}: the server closes the connection: {n:?}");
    }
}

#[test]
fn rejections_are_logged_at_debug_with_peer_and_reason() {
    let server = Server::start("echo", "workers: 1\nloglevel: debug\n", &[]);
    let head = verdict(&server, "GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n");
    assert_eq!(head, Ok(400));
    let body = verdict(
        &server,
        &format!("{POST}Transfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n"),
    );
    assert_eq!(body, Ok(400));
    let log = common::wait_for("two debug lines", Duration::from_secs(5), || {
        let log = server.log_text();
        (log.matches("[DEBUG] rejected request from 127.0.0.1:")
            .count()
            >= 2)
            .then_some(log)
    });
    assert!(log.contains("with 400: malformed request head"), "{log}");
    assert!(
        log.contains("with 400: invalid byte after chunk-size"),
        "{log}"
    );
}

#[test]
fn a_higher_minor_version_is_served_as_http_1_1() {
    // RFC 9110 §2.5: a recipient handles HTTP/1.x with x above its own as its own version.
    let server = Server::start("echo", "workers: 1\n", &[]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /v HTTP/1.2\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200 "), "{status_line:?}");
    let json: serde_json::Value = server.echo(b"GET /v HTTP/1.3\r\nHost: a\r\n\r\n");
    assert_eq!(json["SERVER_PROTOCOL"], "HTTP/1.1");
}

#[test]
fn limit_request_head_bounds_the_whole_head_and_the_trailers() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    // 60 fields of 8000 bytes: each within limit_request_field_size, 480 KB in all.
    let field = "f".repeat(8000);
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..60 {
        raw.push_str(&format!("X-{i}: {field}\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(verdict(&server, &raw), Ok(431));
    // Just under the default 65536 bytes passes.
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..8 {
        raw.push_str(&format!("X-{i}: {field}\r\n"));
    }
    raw.push_str("\r\n");
    assert!(raw.len() < 65536);
    assert_eq!(verdict(&server, &raw), Ok(200));

    let small = Server::start("echo", "workers: 1\nlimit_request_head: 1024\n", &[]);
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..30 {
        raw.push_str(&format!("X-{i}: {}\r\n", "v".repeat(40)));
    }
    raw.push_str("\r\n");
    assert_eq!(verdict(&small, &raw), Ok(431));
    let mut trailers = String::new();
    for i in 0..30 {
        trailers.push_str(&format!("X-{i}: {}\r\n", "v".repeat(40)));
    }
    let chunked =
        format!("{POST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n{trailers}\r\n");
    assert_eq!(verdict(&small, &chunked), Ok(431));
}

#[test]
fn bytes_past_the_content_length_never_reach_the_next_response() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    let mut stream = server.connect();
    // Two requests on one keep-alive connection: the first app response declares 5 bytes
    // and writes 10.
    stream
        .write_all(
            b"GET /overflow?length=5&bytes=10 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /pid HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let first = read_response(&mut reader).unwrap();
    assert_eq!(first.text(), "01234");
    assert!(
        first.closes(),
        "the connection closes after a spoiled response"
    );
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing after it: {:?}",
        String::from_utf8_lossy(&rest)
    );
    common::wait_for("the overflow logged", Duration::from_secs(5), || {
        server
            .log_text()
            .contains("wrote more than its Content-Length")
            .then_some(())
    });
}

/// Reads a chunked response's head and returns its chunk sizes (the raw framing).
fn chunk_sizes(reader: &mut impl std::io::BufRead) -> Vec<usize> {
    let head = common::read_head_response(reader).unwrap();
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    std::iter::from_fn(|| Some(read_chunk(reader)).filter(|c| !c.is_empty()))
        .map(|c| c.len())
        .collect()
}

/// Reads one chunk (size line, data, CRLF) and returns its data; empty for the last chunk.
fn read_chunk(reader: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let size = usize::from_str_radix(line.trim(), 16).unwrap();
    let mut data = vec![0u8; size + 2];
    reader.read_exact(&mut data).unwrap();
    assert_eq!(&data[size..], b"\r\n", "chunk data ends with CRLF");
    data.truncate(size);
    data
}

#[test]
fn streamed_writes_are_coalesced_and_head_gets_the_true_length() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    // 20000 bytes written 100 at a time: one chunk per 16 KiB, not one per write.
    let mut stream = server.connect();
    stream
        .write_all(b"GET /stream?chunks=200&size=100 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let sizes = chunk_sizes(&mut BufReader::new(stream));
    assert_eq!(sizes.iter().sum::<usize>(), 20000);
    assert!(sizes.len() <= 2, "{} chunks: {sizes:?}", sizes.len());
    // HEAD of the same: the length GET's body has, no body, and the connection stays open.
    let mut stream = server.connect();
    stream
        .write_all(
            b"HEAD /stream?chunks=200&size=100 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /pid HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let head = common::read_head_response(&mut reader).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("20000"));
    assert_eq!(head.header("transfer-encoding"), None);
    let next = read_response(&mut reader).unwrap();
    assert_eq!(
        next.status, 200,
        "the next response follows the HEAD directly"
    );
    assert!(next.text().trim().parse::<u32>().is_ok(), "{}", next.text());
}

#[test]
fn flush_sends_what_was_written_before_the_app_returns() {
    // body_buffer 0: the app is called at once, not after the body arrived (a full-duplex
    // exchange, which waiting for the body would deadlock until timeout).
    let server = Server::start("chaos", "workers: 1\nbody_buffer: 0\n", &[]);
    let mut stream = server.connect();
    // The app writes "first", flushes, then waits for the body: the client sends the body
    // only once it has read "first", so without flush neither side would move.
    stream
        .write_all(b"POST /flush HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let head = common::read_head_response(&mut reader).unwrap();
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(read_chunk(&mut reader), b"first\n");
    stream.write_all(b"abc").unwrap();
    let rest: Vec<u8> =
        std::iter::from_fn(|| Some(read_chunk(&mut reader)).filter(|c| !c.is_empty()))
            .flatten()
            .collect();
    assert_eq!(rest, b"second after 3 body bytes\n");
}
