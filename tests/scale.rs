//! Idle and slow clients never starve the server (issue #5): a connection holds a thread only
//! while a complete request is being served. Functional checks only; speed is measured by
//! `scripts/bench`.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;

const IDLE: usize = 400;
const SLOW: usize = 100;

/// 2 threads per worker: connections are one-shot in epoll.
#[test]
fn idle_and_half_sent_connections_do_not_starve_requests() {
    idle_and_slow(2);
}

/// 1 thread per worker: connections are edge-triggered in epoll.
#[test]
fn idle_and_half_sent_connections_do_not_starve_a_single_thread() {
    idle_and_slow(1);
}

/// 500 held connections would starve a thread-per-connection server.
fn idle_and_slow(threads: usize) {
    let server = Server::start(
        "hello",
        &format!(
            "workers: 2\nthreads: {threads}\nworker_connections: 1000\nkeepalive: 3\nheader_timeout: 3\n"
        ),
        &[],
    );
    let mut idle: Vec<_> = (0..IDLE).map(|_| server.held_connection()).collect();
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..SLOW {
        let mut stream = server.connect();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        slow.push(stream);
    }
    // Every held connection is open; requests on fresh connections are served all the same.
    let failures = common::load_while(server.port, 4, "/", || true, 50);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // The half-sent heads get 408 after header_timeout and are closed.
    for stream in slow.iter_mut().take(10) {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    }
    // The idle keep-alive connections are closed after keepalive (EOF, no response).
    for reader in idle.iter_mut().take(10) {
        let mut rest = Vec::new();
        let n = reader.read_to_end(&mut rest);
        assert!(
            n.is_ok() && rest.is_empty(),
            "closed quietly: {n:?} {rest:?}"
        );
    }
    let log = server.log_text();
    assert!(!log.contains("WORKER TIMEOUT"), "{log}");
}

/// EPOLLEXCLUSIVE would hand nearly every new connection to the same worker while it has an
/// idle thread; a worker holding more than 256 connections yields its place in the queue.
#[test]
fn many_connections_spread_over_the_workers() {
    let server = Server::start("chaos", "workers: 2\nworker_connections: 2000\n", &[]);
    let mut held = Vec::new();
    let mut per_worker = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..800 {
        let mut reader = std::io::BufReader::new(server.connect());
        reader
            .get_mut()
            .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let response = common::read_response(&mut reader).unwrap();
        *per_worker.entry(response.text()).or_default() += 1;
        held.push(reader);
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers hold connections: {per_worker:?}"
    );
    assert!(
        per_worker.values().all(|&n| n >= 200),
        "connections are spread: {per_worker:?}"
    );
}
