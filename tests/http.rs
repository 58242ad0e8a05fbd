//! HTTP/1.1 behaviour of the real server, over real sockets.

mod common;

use common::{read_response, wait_for, Server};
use std::io::{BufReader, Read, Write};
use std::time::Duration;

#[test]
fn get_through_hello() {
    let server = Server::start("hello", "workers: 1\n", &[]);
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!\n");
    assert_eq!(response.header("server"), Some("ferricorn"));
    assert!(response.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(response.header("content-length"), Some("14"));
}

#[test]
fn head_has_length_but_no_body() {
    let server = Server::start("hello", "workers: 1\n", &[]);
    let mut stream = server.connect();
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let head = common::read_head_response(&mut reader).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("14"));
    // The next bytes must be the second response, not a body.
    let next = read_response(&mut reader).unwrap();
    assert_eq!(next.text(), "Hello, World!\n");
}

#[test]
fn hundred_requests_on_one_keep_alive_connection() {
    let server = Server::start("chaos", "workers: 2\n", &[]);
    let mut reader = BufReader::new(server.connect());
    let mut pids = std::collections::HashSet::new();
    for i in 0..100 {
        reader
            .get_mut()
            .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let response = read_response(&mut reader).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 200, "request {i}");
        assert!(!response.closes(), "request {i} closed the connection");
        pids.insert(response.text());
    }
    assert_eq!(pids.len(), 1, "one connection is served by one worker");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    let mut stream = server.connect();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(
            format!("POST /n{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nab{i}").as_bytes(),
        );
    }
    stream.write_all(&batch).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..5 {
        let response = read_response(&mut reader).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(json["PATH_INFO"], format!("/n{i}"));
        assert_eq!(json["CONTENT_LENGTH"], 3);
    }
}

#[test]
fn chunked_upload_through_echo_raw() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    let mut stream = server.connect();
    let mut expected = Vec::new();
    let mut wire = b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..50u32 {
        let chunk: Vec<u8> = (0..(i * 37 + 1)).map(|j| (i + j) as u8).collect();
        wire.extend_from_slice(format!("{:x};ext=x\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(&chunk);
        wire.extend_from_slice(b"\r\n");
        expected.extend_from_slice(&chunk);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    // Send in small pieces, so the body arrives while the app is reading it.
    for piece in wire.chunks(333) {
        stream.write_all(piece).unwrap();
    }
    let response = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("transfer-encoding"),
        Some("chunked"),
        "no length known: chunked"
    );
    assert_eq!(response.body, expected);
}

#[test]
fn echo_json_for_query_string_and_percent_encoded_path() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    let json = server.echo(b"GET /caf%C3%A9/a%20b%2Fc?x=1&y=%2F HTTP/1.1\r\nHost: example\r\nX-Thing: v\r\nX_Dropped: 1\r\nConnection: close\r\n\r\n");
    assert_eq!(json["REQUEST_METHOD"], "GET");
    assert_eq!(json["RAW_URI"], "/caf%C3%A9/a%20b%2Fc?x=1&y=%2F");
    // Latin-1 view of the decoded bytes: "é" is the two bytes C3 A9.
    assert_eq!(json["PATH_INFO"], "/caf\u{c3}\u{a9}/a b/c");
    assert_eq!(json["QUERY_STRING"], "x=1&y=%2F");
    assert_eq!(json["SCRIPT_NAME"], "");
    assert_eq!(json["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(json["SERVER_PORT"], server.port.to_string());
    assert_eq!(json["SERVER_NAME"], "127.0.0.1");
    assert_eq!(json["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(json["url_scheme"], "http");
    assert_eq!(json["CONTENT_LENGTH"], serde_json::Value::Null);
    assert_eq!(json["CONTENT_TYPE"], serde_json::Value::Null);
    assert_eq!(
        json["headers"],
        serde_json::json!([
            ["Host", "example"],
            ["X-Thing", "v"],
            ["Connection", "close"]
        ])
    );
    assert_eq!(json["body_base64"], "");
}

#[test]
fn chunked_trailers_reach_the_app() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    let json = server.echo(b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n");
    assert_eq!(json["body_base64"], "YWJj");
    assert_eq!(json["trailers"], serde_json::json!([["X-Sum", "42"]]));
}

/// Sends `raw` on a new connection and returns the status of the one response, checking the
/// server closes the connection afterwards.
fn status_and_close(server: &Server, raw: &[u8]) -> u16 {
    let (response, rest) = server.send_then_close(raw);
    assert!(
        response.closes(),
        "an error response says Connection: close"
    );
    assert!(
        rest.is_empty(),
        "nothing after an error response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    response.status
}

#[test]
fn error_statuses() {
    let server = Server::start("echo", "workers: 1\nlimit_request_body: 10\n", &[]);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(5000));
    let long_field = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "x".repeat(9000)
    );
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many_fields = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let cases: [(&str, &[u8], u16); 11] = [
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (
            "Content-Length with Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        ("unknown coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("body over limit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("long request-line", long_line.as_bytes(), 414),
        ("long field", long_field.as_bytes(), 431),
        ("101 fields", many_fields.as_bytes(), 431),
        (
            "bad chunk size",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
    ];
    for (what, raw, status) in cases {
        assert_eq!(status_and_close(&server, raw), status, "{what}");
    }
}

#[test]
fn app_panic_is_a_500_and_the_worker_lives() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    let before = server.get("/pid").text();
    assert_eq!(server.get("/panic").status, 500);
    assert_eq!(
        server.get("/pid").text(),
        before,
        "same worker still serving"
    );
}

#[test]
fn streamed_response_is_chunked_and_complete() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    let response = server.get("/stream?chunks=100&size=1000");
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.body.len(), 100_000);
}

#[test]
fn http10_response_without_length_is_close_delimited() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    let response = server.send(b"GET /stream?chunks=20&size=1000 HTTP/1.0\r\n\r\n");
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.body.len(), 20_000);
}

#[test]
fn incomplete_head_gets_408_after_header_timeout() {
    let server = Server::start("hello", "workers: 1\nheader_timeout: 1\n", &[]);
    let mut stream = server.connect();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
}

#[test]
fn serves_unix_and_ipv6_listeners_too() {
    let dir = common::scratch_dir();
    let socket = dir.join("app.sock");
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut bind = format!("bind: [\"127.0.0.1:0\", \"unix:{}\"", socket.display());
    if ipv6 {
        bind.push_str(", \"[::1]:0\"");
    }
    bind.push_str("]\nworkers: 1\n");
    let server = Server::start("echo", &bind, &[]);
    let log = server.log_text();
    assert!(
        log.contains(&format!("Listening at: unix:{} (", socket.display())),
        "{log}"
    );
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .write_all(b"GET /u HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_response(&mut BufReader::new(stream)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(json["SERVER_NAME"], socket.display().to_string());
    assert_eq!(json["REMOTE_ADDR"], "");
    if ipv6 {
        let port: u16 = log
            .lines()
            .find_map(|l| l.split("Listening at: http://[::1]:").nth(1))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("an IPv6 listening line");
        let mut stream = std::net::TcpStream::connect(("::1", port)).unwrap();
        stream
            .write_all(b"GET /6 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let response = read_response(&mut BufReader::new(stream)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(json["REMOTE_ADDR"], "::1");
    }
    drop(server);
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn expect_100_continue_is_answered_when_the_app_reads() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    let mut reader = BufReader::new(server.connect());
    reader
        .get_mut()
        .write_all(
            b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let interim = common::read_head_response(&mut reader).unwrap();
    assert_eq!(interim.status, 100);
    reader.get_mut().write_all(b"hello").unwrap();
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.text(), "hello");
    // An app that answers without reading gets no 100 Continue, and the connection closes
    // (the client will not send a body it was never asked for).
    let hello = Server::start("hello", "workers: 1\n", &[]);
    let (response, rest) = hello.send_then_close(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(response.status, 405, "hello answers POST without reading");
    assert!(rest.is_empty(), "no 100 Continue after the final response");
}

#[test]
fn connections_beyond_worker_connections_get_503() {
    let server = Server::start("hello", "workers: 1\nworker_connections: 2\n", &[]);
    // The readiness probe's connection may still hold a slot for a moment after its
    // response: hold two connections once both slots are free.
    let held = wait_for("two free slots", Duration::from_secs(5), || {
        let held: Vec<_> = (0..2).map(|_| server.try_held_connection()).collect();
        held.into_iter().collect::<Option<Vec<_>>>()
    });
    let response = server.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    drop(held);
}
