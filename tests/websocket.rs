//! WebSocket (RFC 6455) against the real server and the `echo` plugin, which accepts an
//! upgrade on any path and sends every message back: the handshake and its refusals, messages
//! whole and fragmented, pings, the closing handshake, and hostile or broken clients
//! (unmasked frames, oversized messages, invalid UTF-8 split across fragments, fragmented
//! control frames, a client that never answers a ping).

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A test client: the handshake, masked frames out, frames in.
struct Client {
    tcp: TcpStream,
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
        let mut tcp = server.connect();
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
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(self.tcp.read(&mut byte), Ok(0) | Err(_))
    }
}

fn read_head(tcp: &mut TcpStream) -> String {
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
    let mut c = Client { tcp };
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
