//! Behind a proxy (issue #14): forwarding headers believed only from `forwarded_allow_ips`,
//! `secure_scheme_headers` and `Forwarded: proto=` for url_scheme, `real_ip_header` for
//! REMOTE_ADDR (the TCP peer stays in peer_addr), and `reuse_port`.

mod common;

use common::{run_to_exit, wait_for, Server};
use std::time::Duration;

fn echo(server: &Server, fields: &str) -> serde_json::Value {
    server.echo(format!("GET /whoami HTTP/1.1\r\nHost: a\r\n{fields}\r\n").as_bytes())
}

#[test]
fn a_trusted_peer_sets_the_scheme_and_nothing_else_by_default() {
    // Default forwarded_allow_ips: 127.0.0.1 and ::1, our peer here.
    let server = Server::start("echo", "workers: 1\n", &[]);
    for fields in [
        "X-Forwarded-Proto: https\r\n",
        "X-FORWARDED-SSL: on\r\n",
        "X-Forwarded-Protocol: ssl\r\n",
        "Forwarded: for=1.2.3.4;proto=https\r\n",
    ] {
        let json = echo(&server, fields);
        assert_eq!(json["url_scheme"], "https", "{fields}");
    }
    let json = echo(
        &server,
        "X-Forwarded-Proto: http\r\nX-Forwarded-For: 1.2.3.4\r\n",
    );
    assert_eq!(json["url_scheme"], "http");
    assert_eq!(
        json["REMOTE_ADDR"], "127.0.0.1",
        "real_ip_header is unset: REMOTE_ADDR is the TCP peer"
    );
    assert_eq!(json["PEER_ADDR"], "127.0.0.1");
    assert_eq!(json["PEER_PORT"], json["REMOTE_PORT"]);
}

#[test]
fn headers_from_an_untrusted_peer_change_nothing() {
    for real_ip_header in ["X-Forwarded-For", "X-Real-IP", "Forwarded"] {
        let server = Server::start(
            "echo",
            &format!("workers: 1\nforwarded_allow_ips: [\"10.0.0.1\", \"192.168.0.0/16\"]\nreal_ip_header: {real_ip_header}\n"),
            &[],
        );
        for fields in [
            "X-Forwarded-Proto: https\r\n",
            "X-Forwarded-Protocol: ssl\r\n",
            "X-Forwarded-Ssl: on\r\n",
            "Forwarded: for=1.2.3.4;proto=https\r\n",
            "X-Forwarded-For: 1.2.3.4\r\n",
            "X-Real-IP: 1.2.3.4\r\n",
        ] {
            let json = echo(&server, fields);
            assert_eq!(json["url_scheme"], "http", "{real_ip_header}: {fields}");
            assert_eq!(
                json["REMOTE_ADDR"], "127.0.0.1",
                "{real_ip_header}: {fields}"
            );
        }
    }
}

#[test]
fn real_ip_header_gives_the_rightmost_untrusted_address() {
    let server = Server::start(
        "echo",
        "workers: 1\nforwarded_allow_ips: \"127.0.0.1, 10.0.0.0/8\"\nreal_ip_header: x-forwarded-for\n",
        &[],
    );
    let json = echo(&server, "X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.1.1.1\r\n");
    assert_eq!(json["REMOTE_ADDR"], "1.2.3.4");
    assert_eq!(json["REMOTE_PORT"], "");
    assert_eq!(
        json["PEER_ADDR"], "127.0.0.1",
        "the TCP peer stays available"
    );
    // Malformed: ignored, never an error.
    let json = echo(&server, "X-Forwarded-For: 1.2.3.4, not-an-address\r\n");
    assert_eq!(json["REMOTE_ADDR"], "127.0.0.1");
    let forwarded = Server::start("echo", "workers: 1\nreal_ip_header: Forwarded\n", &[]);
    let json = echo(
        &forwarded,
        "Forwarded: for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1\r\n",
    );
    assert_eq!(json["REMOTE_ADDR"], "2001:db8::1");
    assert_eq!(json["url_scheme"], "https");
    let real_ip = Server::start("echo", "workers: 1\nreal_ip_header: X-Real-IP\n", &[]);
    assert_eq!(
        echo(&real_ip, "X-Real-IP: 9.9.9.9\r\n")["REMOTE_ADDR"],
        "9.9.9.9"
    );
}

#[test]
fn bad_forwarding_settings_name_the_key() {
    let dir = common::scratch_dir();
    for (yaml, key) in [
        ("real_ip_header: X-Client\n", "real_ip_header"),
        (
            "forwarded_allow_ips: \"10.0.0.0/40\"\n",
            "forwarded_allow_ips",
        ),
        ("forwarded_allow_ips: example.com\n", "forwarded_allow_ips"),
        ("reuse_port: maybe\n", "reuse_port"),
    ] {
        let file = dir.join("bad.yaml");
        std::fs::write(&file, yaml).unwrap();
        let (status, out) = run_to_exit(&["-c", &file.display().to_string(), "--check-config"]);
        assert_eq!(status.code(), Some(1), "{yaml}: {out}");
        assert!(out.contains(&format!("key `{key}`")), "{yaml}: {out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reuse_port_lets_two_masters_share_a_port() {
    let first = Server::start("hello", "workers: 1\nreuse_port: true\n", &[]);
    let port = first.port;
    let bind = format!("workers: 1\nbind: [\"127.0.0.1:{port}\"]\n");
    // Without reuse_port the second master cannot bind.
    let (status, out) = run_to_exit(&[
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--workers",
        "1",
        &common::plugin("hello").display().to_string(),
    ]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("Address already in use"), "{out}");
    let mut second = Server::start("hello", &format!("{bind}reuse_port: true\n"), &[]);
    assert_eq!(second.port, port);
    // Either may take a connection; once the second stops, the first serves them all.
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(20)).code(), Some(0));
    for _ in 0..20 {
        let response = wait_for("an answer", Duration::from_secs(5), || {
            first.try_get("/").ok()
        });
        assert_eq!(response.status, 200);
    }
}

#[test]
fn proxy_protocol_sets_the_client_and_server_addresses() {
    let server = Server::start("echo", "workers: 1\nproxy_protocol: auto\n", &[]);
    let get = "GET /p HTTP/1.1\r\nHost: a\r\n\r\n";
    let json =
        server.echo(format!("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n{get}").as_bytes());
    assert_eq!(json["REMOTE_ADDR"], "192.0.2.7");
    assert_eq!(json["REMOTE_PORT"], "40000");
    assert_eq!(json["SERVER_NAME"], "198.51.100.1");
    assert_eq!(json["SERVER_PORT"], "443");
    assert_eq!(
        json["PEER_ADDR"], "127.0.0.1",
        "the TCP peer stays available"
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09,
    ]);
    v2.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
    ]);
    v2.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    v2.extend_from_slice(get.as_bytes());
    let json = server.echo(&v2);
    assert_eq!(json["REMOTE_ADDR"], "2001:db8::9");
    assert_eq!(json["REMOTE_PORT"], "40000");
    assert_eq!(json["SERVER_PORT"], "80");
    // auto: no header is fine.
    assert_eq!(server.echo(get.as_bytes())["REMOTE_ADDR"], "127.0.0.1");
    // A malformed header: 400.
    let response = server.send(format!("PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\n{get}").as_bytes());
    assert_eq!(response.status, 400);

    let required = Server::start("echo", "workers: 1\nproxy_protocol: v1\n", &[]);
    assert_eq!(
        required.send(get.as_bytes()).status,
        400,
        "v1 requires the header"
    );
    // From a peer not in proxy_allow_ips the header is not read: it is a bad request-line.
    let untrusted = Server::start(
        "echo",
        "workers: 1\nproxy_protocol: auto\nproxy_allow_ips: \"10.0.0.1\"\n",
        &[],
    );
    let response =
        untrusted.send(format!("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n{get}").as_bytes());
    assert_eq!(response.status, 400);
    assert_eq!(untrusted.echo(get.as_bytes())["REMOTE_ADDR"], "127.0.0.1");
}

#[test]
fn a_value_that_is_not_an_address_never_makes_the_proxy_the_client() {
    // Before: any unparsable element made REMOTE_ADDR the proxy's own address (127.0.0.1),
    // which passes "localhost only" checks.
    let xff = Server::start("echo", "workers: 1\nreal_ip_header: X-Forwarded-For\n", &[]);
    for (value, client) in [
        // What nginx forwards when the client sent `X-Forwarded-For: garbage`.
        ("garbage, 127.0.0.2", "127.0.0.2"),
        ("6.6.6.6, garbage, 9.9.9.9", "9.9.9.9"),
        ("garbage, 9.9.9.9:5678", "9.9.9.9"),
        ("unknown, [2001:db8::7]:80, 127.0.0.1", "2001:db8::7"),
    ] {
        let json = echo(&xff, &format!("X-Forwarded-For: {value}\r\n"));
        assert_eq!(json["REMOTE_ADDR"], client, "X-Forwarded-For: {value}");
    }
    let forwarded = Server::start("echo", "workers: 1\nreal_ip_header: Forwarded\n", &[]);
    for (value, client) in [
        ("for=unknown, for=6.6.6.6", "6.6.6.6"),
        ("for=_hidden, for=\"[2001:db8::1]:80\"", "2001:db8::1"),
        ("for=6.6.6.6, for=_obfuscated", "127.0.0.1"),
    ] {
        let json = echo(&forwarded, &format!("Forwarded: {value}\r\n"));
        assert_eq!(json["REMOTE_ADDR"], client, "Forwarded: {value}");
    }
}

#[test]
fn scheme_headers_that_disagree_are_refused() {
    let server = Server::start("echo", "workers: 1\n", &[]);
    // nginx sets X-Forwarded-Proto; a client adds another scheme header.
    for fields in [
        "X-Forwarded-Proto: http\r\nX-Forwarded-Ssl: on\r\n",
        "X-Forwarded-Proto: http\r\nX-Forwarded-Protocol: ssl\r\n",
        "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n",
        "X-Forwarded-Proto: http\r\nForwarded: for=1.2.3.4;proto=https\r\n",
    ] {
        let response = server.send(format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").as_bytes());
        assert_eq!(response.status, 400, "{fields}");
        assert!(response.closes(), "{fields}");
    }
    let json = echo(
        &server,
        "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n",
    );
    assert_eq!(json["url_scheme"], "https", "headers that agree");
    // From an untrusted peer the headers are not read at all: no 400.
    let untrusted = Server::start(
        "echo",
        "workers: 1\nforwarded_allow_ips: \"10.0.0.1\"\n",
        &[],
    );
    let json = echo(
        &untrusted,
        "X-Forwarded-Proto: http\r\nX-Forwarded-Ssl: on\r\n",
    );
    assert_eq!(json["url_scheme"], "http");
}

#[test]
fn behind_proxy_protocol_only_a_trusted_client_may_forward() {
    let server = Server::start(
        "echo",
        "workers: 1\nproxy_protocol: auto\nreal_ip_header: X-Forwarded-For\n",
        &[],
    );
    let get =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    // A TCP-mode proxy passes the client's own headers through: not believed.
    let json =
        server.echo(format!("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n{get}").as_bytes());
    assert_eq!(json["url_scheme"], "http");
    assert_eq!(json["REMOTE_ADDR"], "192.0.2.7");
    // The client the PROXY header names is itself a trusted proxy: believed.
    let json =
        server.echo(format!("PROXY TCP4 127.0.0.1 198.51.100.1 40000 443\r\n{get}").as_bytes());
    assert_eq!(json["url_scheme"], "https");
    assert_eq!(json["REMOTE_ADDR"], "6.6.6.6");
}
