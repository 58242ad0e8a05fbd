//! WebSocket (RFC 6455) against the real server and the `echo` plugin, which accepts an
//! upgrade on any path and sends every message back: the handshake and its refusals, messages
//! whole and fragmented, pings, the closing handshake, and hostile or broken clients
//! (unmasked frames, oversized messages, invalid UTF-8 split across fragments, fragmented
//! control frames, a client that never answers a ping).

mod common;

use common::children;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A test client: the handshake, masked frames out, frames in.
struct Client {
    tcp: common::Stream,
}

/// One frame as the client reads it.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A masked client frame (RFC 6455 §5.2).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x1f, 0x8b, 0x77, 0xe0];
    let mut out = vec![if fin { 0x80 | opcode } else { opcode }];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The upgrade request for `path` with `extra` header lines.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

impl Client {
    /// Connects and upgrades; returns the client and the 101's head.
    fn open(server: &Server, extra: &str) -> (Client, String) {
        let mut tcp = server.stream().expect("connect");
        tcp.write_all(upgrade_request("/ws", extra).as_bytes())
            .expect("send the upgrade");
        let head = read_head(&mut tcp);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        (Client { tcp }, head)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).expect("send");
    }

    /// Reads one frame (the server's are never masked).
    fn read(&mut self) -> Frame {
        let mut head = [0u8; 2];
        self.tcp.read_exact(&mut head).expect("a frame's head");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.tcp.read_exact(&mut n).unwrap();
                u64::from(u16::from_be_bytes(n))
            }
            127 => {
                let mut n = [0u8; 8];
                self.tcp.read_exact(&mut n).unwrap();
                u64::from_be_bytes(n)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.tcp
            .read_exact(&mut payload)
            .expect("a frame's payload");
        Frame {
            fin: head[0] & 0x80 != 0,
            opcode: head[0] & 0x0f,
            payload,
        }
    }

    /// Reads a close frame; returns its code.
    fn read_close(&mut self) -> u16 {
        let frame = self.read();
        assert_eq!(frame.opcode, 8, "expected a close frame, got {frame:?}");
        u16::from_be_bytes([frame.payload[0], frame.payload[1]])
    }

    /// Whether the server closed the TCP connection (EOF within 5 s).
    fn closed(&mut self) -> bool {
        self.tcp
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(self.tcp.read(&mut byte), Ok(0) | Err(_))
    }
}

fn read_head(tcp: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("response head cut: {other:?} after {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn echo_server(config: &str) -> Server {
    Server::start("echo", &format!("workers: 1\n{config}"), &[])
}

#[test]
fn the_handshake_answers_101_with_the_accept_key_and_the_first_offered_protocol() {
    let server = echo_server("");
    let (_, head) = Client::open(&server, "Sec-WebSocket-Protocol: chat, superchat\r\n");
    // RFC 6455 §1.3's example key and answer.
    assert!(
        head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: Upgrade\r\n"), "{head}");
    assert!(
        head.contains("\r\nSec-WebSocket-Protocol: chat\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("Content-Length") && !head.contains("chunked"),
        "{head}"
    );
}

#[test]
fn a_malformed_upgrade_is_refused_400_or_426_with_the_version() {
    let server = echo_server("");
    let refused = |request: String| server.send(request.as_bytes());
    let wrong_version = upgrade_request("/", "").replace("Version: 13", "Version: 8");
    let r = refused(wrong_version);
    assert_eq!(r.status, 426);
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
    let no_key =
        upgrade_request("/", "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(refused(no_key).status, 400);
    let short_key = upgrade_request("/", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    assert_eq!(refused(short_key).status, 400);
    let post = upgrade_request("/", "").replacen("GET", "POST", 1);
    assert_eq!(refused(post).status, 400);
    // A plain request still works on the same server.
    assert_eq!(server.get("/x").status, 200);
}

#[test]
fn messages_come_back_whole_fragmented_large_and_after_a_ping() {
    let server = echo_server("");
    let (mut c, _) = Client::open(&server, "");
    c.send(&frame(true, 1, "héllo".as_bytes()));
    assert_eq!(
        c.read(),
        Frame {
            fin: true,
            opcode: 1,
            payload: "héllo".as_bytes().to_vec()
        }
    );
    c.send(&frame(true, 2, &[0, 1, 2, 255]));
    assert_eq!(c.read().payload, vec![0, 1, 2, 255]);
    // Fragments with a ping between them: the pong first, then the whole message.
    let mut bytes = frame(false, 1, b"frag");
    bytes.extend(frame(true, 9, b"are you there"));
    bytes.extend(frame(false, 0, b"men"));
    bytes.extend(frame(true, 0, b"ted"));
    c.send(&bytes);
    assert_eq!(
        c.read(),
        Frame {
            fin: true,
            opcode: 10,
            payload: b"are you there".to_vec()
        }
    );
    assert_eq!(c.read().payload, b"fragmented");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.send(&frame(true, 2, &big));
    let back = c.read();
    assert_eq!((back.opcode, back.payload.len()), (2, big.len()));
    assert!(back.payload == big);
    // The closing handshake: the code echoed, then the server closes the TCP connection.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    c.send(&frame(true, 8, &close));
    assert_eq!(c.read_close(), 1000);
    assert!(
        c.closed(),
        "the server closes the TCP connection after the handshake"
    );
}

#[test]
fn frames_sent_with_the_upgrade_request_are_served() {
    let server = echo_server("");
    let mut tcp = server.connect();
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(frame(true, 1, b"early"));
    tcp.write_all(&bytes).unwrap();
    let head = read_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut c = Client {
        tcp: common::Stream::Plain(tcp),
    };
    assert_eq!(c.read().payload, b"early");
}

/// Sends `bytes` on a new WebSocket and returns the close code the server answers with; the
/// server must then close the connection.
fn close_code_for(server: &Server, bytes: &[u8]) -> u16 {
    let (mut c, _) = Client::open(server, "");
    c.send(bytes);
    let code = c.read_close();
    assert!(
        c.closed(),
        "the connection is closed after a protocol failure"
    );
    code
}

#[test]
fn protocol_violations_close_with_1002() {
    let server = echo_server("");
    let unmasked = [0x81, 2, b'h', b'i'];
    assert_eq!(close_code_for(&server, &unmasked), 1002);
    assert_eq!(
        close_code_for(&server, &frame(false, 9, b"ping in pieces")),
        1002
    );
    assert_eq!(close_code_for(&server, &frame(true, 9, &[b'x'; 126])), 1002);
    assert_eq!(
        close_code_for(&server, &frame(true, 0, b"no message to continue")),
        1002
    );
    assert_eq!(
        close_code_for(&server, &frame(true, 5, b"reserved opcode")),
        1002
    );
    let mut rsv = frame(true, 1, b"rsv2");
    rsv[0] |= 0x20;
    assert_eq!(close_code_for(&server, &rsv), 1002);
    assert_eq!(
        close_code_for(&server, &frame(true, 8, &1005u16.to_be_bytes())),
        1002
    );
    // The server is still fine.
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_message_over_websocket_max_message_closes_with_1009() {
    let server = echo_server("websocket_max_message: 1000\n");
    let (mut c, _) = Client::open(&server, "");
    c.send(&frame(true, 2, &[7; 1000]));
    assert_eq!(c.read().payload.len(), 1000);
    // Over the limit in fragments, each under it.
    let mut bytes = frame(false, 2, &[1; 600]);
    bytes.extend(frame(true, 0, &[2; 600]));
    c.send(&bytes);
    assert_eq!(c.read_close(), 1009);
    assert!(c.closed());
}

#[test]
fn invalid_utf8_split_across_fragments_closes_with_1007_at_the_fragment() {
    let server = echo_server("");
    let (mut c, _) = Client::open(&server, "");
    // "é" cut between fragments is fine.
    let mut bytes = frame(false, 1, b"caf\xc3");
    bytes.extend(frame(true, 0, b"\xa9"));
    c.send(&bytes);
    assert_eq!(c.read().payload, "café".as_bytes());
    // C3 followed by 28 is not UTF-8: the close comes before the message's last fragment
    // is even sent (fail fast, RFC 6455 §8.1).
    c.send(&frame(false, 1, b"caf\xc3"));
    c.send(&frame(false, 0, b"\x28 and more"));
    assert_eq!(c.read_close(), 1007);
    assert!(c.closed());
}

/// The app's `ws_close` for a connection the timer closed (its pong never came) runs on a
/// serving thread, like every other callback, not on the worker's timer thread, where an app
/// that blocks in it would hold up every connection's timers. An app's failing `ws_message`
/// closes with 1011 and an error line.
#[test]
fn ws_close_after_a_timeout_runs_on_a_serving_thread_and_an_app_error_is_logged() {
    let server = Server::start(
        "chaos",
        "workers: 1\nwebsocket_ping_interval: 1\ntimeout: 3\n",
        &[],
    );
    let (mut c, _) = Client::open(&server, "");
    assert_eq!(c.read().opcode, 9, "pinged");
    let closed_on = common::wait_for("the ws_close callback", Duration::from_secs(15), || {
        let names = server.get("/ws-closed").text();
        (!names.is_empty()).then_some(names)
    });
    assert!(
        closed_on.starts_with("ferricorn-") && !closed_on.contains("monitor"),
        "ws_close ran on {closed_on:?}"
    );
    // A message the app fails on closes the connection with 1011, and the error log says so.
    let (mut c, _) = Client::open(&server, "");
    c.send(&frame(true, 1, b"fail"));
    assert_eq!(c.read_close(), 1011);
    common::wait_for("the error line", Duration::from_secs(5), || {
        server
            .log_text()
            .contains("Error handling WebSocket message on connection")
            .then_some(())
    });
}

#[test]
fn a_client_that_never_answers_a_ping_is_closed() {
    // `timeout` also bounds a worker's silence: 3 s leaves its heartbeat room.
    let server = echo_server("websocket_ping_interval: 1\ntimeout: 3\n");
    let (mut c, _) = Client::open(&server, "");
    let started = Instant::now();
    let ping = c.read();
    assert_eq!(ping.opcode, 9, "a quiet client is pinged: {ping:?}");
    // No pong: the server gives up after `timeout` (plus a sweep).
    c.tcp
        .tcp()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(c.tcp.read(&mut byte), Ok(0) | Err(_)),
        "closed when no pong came"
    );
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_secs(3) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // A client that answers stays.
    let (mut c, _) = Client::open(&server, "");
    for _ in 0..2 {
        let ping = c.read();
        assert_eq!(ping.opcode, 9);
        c.send(&frame(true, 10, &ping.payload));
    }
    c.send(&frame(true, 1, b"still here"));
    let mut frame_in = c.read();
    while frame_in.opcode == 9 {
        frame_in = c.read();
    }
    assert_eq!(frame_in.payload, b"still here");
}

/// Joins chat room `room` on `server`.
fn join(server: &Server, room: &str) -> Client {
    let mut tcp = server.connect();
    tcp.write_all(upgrade_request(&format!("/rooms/{room}/socket"), "").as_bytes())
        .unwrap();
    let head = read_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    Client {
        tcp: common::Stream::Plain(tcp),
    }
}

/// POSTs `body` to room `room`'s messages; returns the answer's JSON.
fn post(server: &Server, room: &str, body: &[u8]) -> serde_json::Value {
    let mut raw = format!(
        "POST /rooms/{room}/messages HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let r = server.send(&raw);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("json")
}

fn members(server: &Server, room: &str) -> u64 {
    let r = server.get(&format!("/rooms/{room}"));
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["members"]
        .as_u64()
        .unwrap()
}

#[test]
fn chat_messages_reach_every_member_and_http_posts_reach_the_sockets() {
    let server = Server::start("chat", "workers: 1\n", &[]);
    let (mut a, mut b) = (join(&server, "lobby"), join(&server, "lobby"));
    let mut other = join(&server, "kitchen");
    a.send(&frame(true, 1, b"hi from a"));
    assert_eq!(a.read().payload, b"hi from a");
    assert_eq!(b.read().payload, b"hi from a");
    let answer = post(&server, "lobby", b"from the web");
    assert_eq!(answer["delivered"], 2);
    assert_eq!(a.read().payload, b"from the web");
    assert_eq!(b.read().payload, b"from the web");
    // The other room heard nothing: its next message is its own.
    other.send(&frame(true, 1, b"kitchen only"));
    assert_eq!(other.read().payload, b"kitchen only");
    // A member that leaves is forgotten (ws_close), and sends to it stop.
    b.send(&frame(true, 8, &1000u16.to_be_bytes()));
    assert_eq!(b.read_close(), 1000);
    common::wait_for("b to leave", Duration::from_secs(5), || {
        (members(&server, "lobby") == 1).then_some(())
    });
    assert_eq!(post(&server, "lobby", b"again")["delivered"], 1);
    // A plain GET to the socket's path is told to upgrade.
    let r = server.get("/rooms/lobby/socket");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("Upgrade"), Some("websocket"));
}

#[test]
fn a_plugin_thread_pushes_through_a_hup_and_old_sockets_get_1001_at_graceful_timeout() {
    let server = Server::start(
        "chat",
        "workers: 1\ngraceful_timeout: 3\n",
        &["--app-config", "tick_ms=50"],
    );
    let master = server.pid();
    let old = children(master);
    let mut c = join(&server, "r");
    let tick = c.read();
    assert!(tick.payload.starts_with(b"tick "), "{tick:?}");
    let hup = Instant::now();
    server.signal(libc::SIGHUP);
    // The new worker takes new connections while the old one keeps pushing to its socket.
    common::wait_for("a new worker", Duration::from_secs(10), || {
        children(master)
            .iter()
            .any(|p| !old.contains(p))
            .then_some(())
    });
    let mut ticks_after_hup = 0;
    let code = loop {
        let frame = c.read();
        match frame.opcode {
            1 => ticks_after_hup += 1,
            8 => break u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
            other => panic!("opcode {other}"),
        }
    };
    let waited = hup.elapsed();
    assert_eq!(code, 1001, "Going Away");
    assert!(
        ticks_after_hup >= 20,
        "the old worker kept pushing: {ticks_after_hup}"
    );
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "1001 one second before graceful_timeout: {waited:?}"
    );
    // The client answers the close; the old worker then exits without waiting longer.
    c.send(&frame(true, 8, &1001u16.to_be_bytes()));
    assert!(c.closed());
    common::wait_for("the old worker to exit", Duration::from_secs(5), || {
        children(master)
            .iter()
            .all(|p| !old.contains(p))
            .then_some(())
    });
    // Reconnecting reaches the new generation, which pushes too.
    let mut again = join(&server, "r");
    assert!(again.read().payload.starts_with(b"tick "));
}

#[test]
fn a_client_that_stops_reading_is_bounded_by_the_send_buffer_and_closed_after_timeout() {
    let server = Server::start(
        "chat",
        "workers: 1\nwebsocket_send_buffer: 262144\ntimeout: 3\n",
        &[],
    );
    let worker = children(server.pid())[0];
    let mut reader = join(&server, "r");
    let _stalled = join(&server, "r");
    let before = common::status_bytes(worker, "VmRSS");
    let chunk = vec![b'x'; 32 * 1024];
    let mut full = 0;
    for _ in 0..200 {
        // 6.4 MB pushed in all: the stalled client's queue fills and stays full.
        let answer = post(&server, "r", &chunk);
        full += answer["full"].as_u64().unwrap();
        let got = reader.read();
        assert_eq!(got.payload.len(), chunk.len());
    }
    // The kernel's socket buffers take a few MB first; then the queue fills.
    assert!(full > 10, "sends to the stalled client would block: {full}");
    let grown = common::status_bytes(worker, "VmRSS").saturating_sub(before);
    assert!(grown < 4 << 20, "worker RSS grew {grown} bytes");
    // Nothing taken for `timeout`: the stalled client is closed and leaves the room.
    common::wait_for(
        "the stalled client to be closed",
        Duration::from_secs(10),
        || (members(&server, "r") == 1).then_some(()),
    );
}

#[test]
fn term_sends_1001_and_the_worker_exits_once_clients_answer() {
    let mut server = echo_server("graceful_timeout: 3\n");
    let (mut c, _) = Client::open(&server, "");
    c.send(&frame(true, 1, b"before"));
    assert_eq!(c.read().payload, b"before");
    let term = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(c.read_close(), 1001);
    c.send(&frame(true, 8, &1001u16.to_be_bytes()));
    assert!(c.closed());
    server.wait_exit(Duration::from_secs(10));
    assert!(term.elapsed() < Duration::from_secs(5));
}

/// GETs `path` from the metrics listener at `port`.
fn scrape(port: u16) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    text
}

/// The value of the sample `series` in a scrape, if there.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn metrics_control_and_access_log_count_websockets() {
    let dir = common::scratch_dir();
    let access = dir.join("access.log");
    let socket = dir.join("control.sock");
    let server = echo_server(&format!(
        "metrics_bind: 127.0.0.1:0\naccesslog: {}\ncontrol_socket: {}\n",
        access.display(),
        socket.display()
    ));
    let port = common::metrics_port(&server);
    let (mut a, _) = Client::open(&server, "");
    let (mut b, _) = Client::open(&server, "");
    for c in [&mut a, &mut b] {
        c.send(&frame(true, 1, b"one"));
        assert_eq!(c.read().payload, b"one");
    }
    a.send(&frame(true, 2, &[9; 1000]));
    assert_eq!(a.read().payload.len(), 1000);
    let text = scrape(port);
    assert_eq!(sample(&text, "ferricorn_websockets "), Some(2), "{text}");
    assert_eq!(
        sample(&text, "ferricorn_websocket_messages_received_total "),
        Some(3)
    );
    assert_eq!(
        sample(&text, "ferricorn_websocket_messages_sent_total "),
        Some(3)
    );
    let (status, out, _) = common::ctl(&socket, &["show", "workers"]);
    assert_eq!(status, 0, "{out}");
    let mut rows = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    let header = rows.next().unwrap_or_default();
    let column = header.iter().position(|h| *h == "WEBSOCKETS").expect(&out);
    assert_eq!(
        rows.next().unwrap_or_default().get(column),
        Some(&"2"),
        "{out}"
    );
    // The upgrade is logged as a 101 at once; the close adds a line with the session's
    // bytes sent (3 frames: 5 + 5 + 1004 bytes to `a`... counted per connection).
    a.send(&frame(true, 8, &1000u16.to_be_bytes()));
    assert_eq!(a.read_close(), 1000);
    assert!(a.closed());
    let lines = common::wait_for(
        "the close's access log line",
        Duration::from_secs(5),
        || {
            let log = std::fs::read_to_string(&access).ok()?;
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("101"))
                .map(String::from)
                .collect();
            (lines.len() >= 3).then_some(lines)
        },
    );
    assert!(
        lines.iter().all(|l| l.contains("\"GET /ws HTTP/1.1\" 101")),
        "{lines:?}"
    );
    // The close line's bytes: the echo of "one" (5), of 1000 bytes (1004) and the close (4).
    assert!(
        lines.iter().any(|l| l.contains("\" 101 1013 ")),
        "{lines:?}"
    );
    common::wait_for("the gauge to drop", Duration::from_secs(5), || {
        (sample(&scrape(port), "ferricorn_websockets ") == Some(1)).then_some(())
    });
}

#[test]
fn a_c_plugin_built_from_the_header_alone_echoes() {
    let server = Server::start("c-ws-echo", "workers: 1\n", &[]);
    assert_eq!(server.get("/").text(), "connect with a WebSocket\n");
    let (mut c, _) = Client::open(&server, "");
    c.send(&frame(true, 1, b"from C"));
    assert_eq!(
        c.read(),
        Frame {
            fin: true,
            opcode: 1,
            payload: b"from C".to_vec()
        }
    );
    c.send(&frame(true, 2, &[1, 2, 3]));
    assert_eq!(c.read().payload, vec![1, 2, 3]);
}

#[test]
fn wss_works_through_rustls_unchanged() {
    common::Pki::with(|pki| {
        let server = Server::start_maybe_tls("echo", "workers: 1\n", Some(pki));
        let (mut c, head) = Client::open(&server, "");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        c.send(&frame(true, 1, b"over TLS"));
        assert_eq!(c.read().payload, b"over TLS");
        let big = vec![b'z'; 100_000];
        c.send(&frame(true, 2, &big));
        assert_eq!(c.read().payload.len(), big.len());
        c.send(&frame(true, 8, &1000u16.to_be_bytes()));
        assert_eq!(c.read_close(), 1000);
    });
}

#[test]
fn ten_thousand_idle_websockets_on_one_worker() {
    const N: usize = 10_000;
    let limit = common::raise_own_nofile();
    if limit < (N + 500) as u64 {
        panic!(
            "RLIMIT_NOFILE's hard limit {limit} is below the {} this test needs",
            N + 500
        );
    }
    let server =
        Server::start_with_nofile("echo", "workers: 1\nworker_connections: 12000\n", limit);
    let worker = children(server.pid())[0];
    // Warm up: the first connections grow the slot table and the threads' buffers.
    let (mut first, _) = Client::open(&server, "");
    first.send(&frame(true, 1, b"warm"));
    assert_eq!(first.read().payload, b"warm");
    let before = common::status_bytes(worker, "VmRSS");
    let request = upgrade_request("/", "");
    let mut held = Vec::with_capacity(N);
    for chunk in 0..N / 500 {
        // 500 at a time: the accept queue (backlog) is never overrun.
        let mut batch: Vec<TcpStream> = (0..500).map(|_| server.connect()).collect();
        for tcp in &mut batch {
            tcp.write_all(request.as_bytes()).unwrap();
        }
        for tcp in &mut batch {
            let head = read_head(tcp);
            assert!(
                head.starts_with("HTTP/1.1 101"),
                "connection {}: {head}",
                chunk * 500
            );
        }
        held.extend(batch);
    }
    let after = common::status_bytes(worker, "VmRSS");
    let per_connection = after.saturating_sub(before) / N as u64;
    eprintln!("{N} idle WebSockets: worker RSS {before} -> {after} bytes, {per_connection} per connection");
    assert!(
        per_connection < 2048,
        "{per_connection} bytes per idle WebSocket"
    );
    // Every one of them still works.
    for (i, tcp) in held.iter_mut().enumerate().step_by(997) {
        tcp.write_all(&frame(true, 1, format!("n{i}").as_bytes()))
            .unwrap();
        let mut c = Client {
            tcp: common::Stream::Plain(tcp.try_clone().unwrap()),
        };
        assert_eq!(c.read().payload, format!("n{i}").as_bytes());
    }
}
