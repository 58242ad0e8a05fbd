//! Threads run app code only (issue #12): slow uploaders and clients that do not read their
//! responses hold no thread; bodies up to body_buffer are buffered before the app runs;
//! connections are spread over the workers by load.

mod common;

use common::{read_response, Server};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Opens a connection with a `read_timeout`.
fn connect(server: &Server, read_timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream.set_read_timeout(Some(read_timeout)).unwrap();
    stream
}

/// A fresh GET on a new connection, answered within 5 s (the server's `timeout`, which
/// would free a held thread, is 30 s in these tests: an answer within 5 s means no thread
/// was held).
fn fresh_get(server: &Server, path: &str) -> common::Response {
    let mut stream = connect(server, Duration::from_secs(5));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut BufReader::new(stream)).expect("a fresh request answered within 5 s")
}

#[test]
fn slow_uploaders_and_non_reading_clients_hold_no_thread() {
    // response_buffer 32 MiB: room for a 20 MB response, more than the kernel's socket
    // buffers hold on loopback (a few MB), so the response must wait in the server.
    let server = Server::start(
        "chaos",
        "workers: 1\nthreads: 2\ntimeout: 30\nresponse_buffer: 33554432\n",
        &[],
    );
    // 20 uploaders (10x the threads) that send a head and the start of a chunked body, then
    // stall; the body is well under body_buffer, so the event loop waits for it.
    let uploaders: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&server, Duration::from_secs(5));
            s.write_all(
                b"POST /read-time HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            )
            .unwrap();
            s
        })
        .collect();
    // 4 clients (2x the threads) that ask for 20 MB and read none of it: the response fits
    // response_buffer, so the thread returns to the pool and the event loop holds the rest.
    let readers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&server, Duration::from_secs(10));
            s.write_all(b"GET /big?bytes=20000000 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let response = fresh_get(&server, "/pid");
    assert_eq!(response.status, 200);
    // The stalled ones are still served once they go on: an uploader finishes its body...
    let mut uploader = uploaders.into_iter().next().unwrap();
    uploader.write_all(b"0\r\n\r\n").unwrap();
    let done = read_response(&mut BufReader::new(uploader)).expect("the upload is answered");
    assert!(done.text().starts_with("5 bytes in "), "{}", done.text());
    assert!(reported_ms(&done.text()) < 250, "{}", done.text());
    // ...and a reader gets its whole response.
    let mut reader = BufReader::new(readers.into_iter().next().unwrap());
    let big = read_response(&mut reader).expect("the big response");
    assert_eq!(big.body.len(), 20_000_000);
}

/// POSTs a 20000-byte body in two halves 500 ms apart; returns the app's report.
fn post_in_two_halves(server: &Server) -> String {
    let mut stream = connect(server, Duration::from_secs(10));
    stream
        .write_all(b"POST /read-time HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n")
        .unwrap();
    stream.write_all(&[b'a'; 10_000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stream.write_all(&[b'b'; 10_000]).unwrap();
    read_response(&mut BufReader::new(stream)).unwrap().text()
}

fn reported_ms(report: &str) -> u64 {
    report
        .split(" in ")
        .nth(1)
        .and_then(|t| t.trim_end_matches(" ms\n").parse().ok())
        .unwrap_or_else(|| panic!("unexpected report {report:?}"))
}

#[test]
fn a_body_under_body_buffer_is_complete_before_the_app_runs() {
    let buffered = Server::start("chaos", "workers: 1\nthreads: 1\n", &[]);
    let report = post_in_two_halves(&buffered);
    assert!(report.starts_with("20000 bytes in "), "{report}");
    assert!(
        reported_ms(&report) < 250,
        "the app waited for the body: {report}"
    );
    // The same with body_buffer 0: the app is called at the head and waits for the rest.
    let streamed = Server::start("chaos", "workers: 1\nthreads: 1\nbody_buffer: 0\n", &[]);
    let report = post_in_two_halves(&streamed);
    assert!(
        reported_ms(&report) >= 400,
        "expected a streamed body: {report}"
    );
}

#[test]
fn a_response_over_response_buffer_waits_for_the_client() {
    // response_buffer 64 KiB: a client not reading 20 MB holds the only thread until it reads
    // (the contrast to the test above, so that test can tell).
    let server = Server::start(
        "chaos",
        "workers: 1\nthreads: 1\nresponse_buffer: 65536\ntimeout: 30\n",
        &[],
    );
    let mut hog = connect(&server, Duration::from_secs(10));
    hog.write_all(b"GET /big?bytes=20000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut fresh = connect(&server, Duration::from_millis(1500));
    fresh
        .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        fresh.read(&mut byte).is_err(),
        "the only thread should be waiting for the non-reading client"
    );
    // Once the hog reads, its thread finishes and the fresh request is served.
    let big = read_response(&mut BufReader::new(hog)).unwrap();
    assert_eq!(big.body.len(), 20_000_000);
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(fresh);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(
        rest.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// `n` connections to `port` started at once (non-blocking connects, as wrk makes them),
/// returned once all are established, blocking with a 10 s read timeout.
fn burst(port: u16, n: usize) -> Vec<TcpStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::{AsFd, OwnedFd};
    let addr = SockaddrIn::new(127, 0, 0, 1, port);
    let sockets: Vec<OwnedFd> = (0..n)
        .map(|_| {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => fd,
                Err(e) => panic!("connect: {e}"),
            }
        })
        .collect();
    sockets
        .into_iter()
        .map(|fd| {
            let mut poll = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            )];
            nix::poll::poll(&mut poll, nix::poll::PollTimeout::from(10_000u16)).unwrap();
            let stream = TcpStream::from(fd);
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
        })
        .collect()
}

#[test]
fn a_burst_against_a_blocking_app_spreads_over_the_workers() {
    let server = Server::start("chaos", "workers: 2\nthreads: 16\n", &[]);
    common::wait_for("both workers", Duration::from_secs(20), || {
        (common::booted_pids(&server.log_text()).len() == 2).then_some(())
    });
    // Give the second worker a moment to reach its accept loop (it reports ready first).
    std::thread::sleep(Duration::from_millis(300));
    // 32 connections opened at once (the capacity), each sending a 40 ms request at once,
    // as a load generator does; then each makes two more on its keep-alive connection and
    // asks which worker it is on. Without balancing, the first worker in the listener's
    // queue keeps most of them (32 and 0, 28 and 4 were seen).
    let port = server.port;
    let streams: Vec<TcpStream> = burst(port, 32)
        .into_iter()
        .map(|mut s| {
            s.write_all(b"GET /sleep?ms=40 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let clients: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let first = read_response(&mut reader).expect("the first response");
                assert_eq!(first.status, 200);
                // A worker that is overloaded while another is not closes a kept-alive
                // connection after a response: the client reconnects, as wrk does.
                let mut closed = first.closes();
                let mut answer = String::new();
                for path in ["/sleep?ms=40", "/sleep?ms=40", "/sleep?ms=40", "/pid"] {
                    if closed {
                        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        reader = BufReader::new(stream);
                    }
                    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
                    reader.get_mut().write_all(request.as_bytes()).unwrap();
                    let response = read_response(&mut reader).expect("a response");
                    closed = response.closes();
                    answer = response.text();
                }
                answer
            })
        })
        .collect();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for client in clients {
        *per_worker.entry(client.join().unwrap()).or_default() += 1;
    }
    eprintln!("connections per worker: {per_worker:?}");
    assert_eq!(per_worker.len(), 2, "{per_worker:?}");
    let most = per_worker.values().max().copied().unwrap_or(0);
    assert!(
        most <= 20,
        "one worker holds {most} of 32 connections: {per_worker:?}"
    );
}

#[test]
fn a_request_pipelined_behind_a_waiting_response_is_served_after_it() {
    // A 20 MB response the client reads only later, then a second request sent behind it
    // on the same connection: the event loop finishes the first, then serves the second.
    let server = Server::start(
        "chaos",
        "workers: 1\nthreads: 1\nresponse_buffer: 33554432\n",
        &[],
    );
    let mut stream = connect(&server, Duration::from_secs(10));
    stream
        .write_all(b"GET /big?bytes=20000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream
        .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Meanwhile the only thread is free.
    assert_eq!(fresh_get(&server, "/pid").status, 200);
    let mut reader = BufReader::new(stream);
    let big = read_response(&mut reader).unwrap();
    assert_eq!(big.body.len(), 20_000_000);
    assert!(big.body.iter().all(|&b| b == b'b'));
    let pid = read_response(&mut reader).unwrap();
    assert_eq!(pid.status, 200);
    assert!(pid.text().trim().parse::<u32>().is_ok(), "{}", pid.text());
}

#[test]
fn a_request_that_blocks_now_and_then_does_not_hold_up_the_others() {
    // An app whose calls are fast, but one of them sleeps 3 s: the thread that took it is
    // seen to block (asleep in the kernel, in one call for 2 ms) and a sleeping thread takes
    // over the event loop, so the other requests are served meanwhile.
    let server = Server::start("chaos", "workers: 1\nthreads: 2\n", &[]);
    for _ in 0..20 {
        assert_eq!(fresh_get(&server, "/pid").status, 200);
    }
    let port = server.port;
    let sleeper = std::thread::spawn(move || {
        let mut client = common::Client::new(port);
        client.get("/sleep?ms=3000").map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..10 {
        let mut stream = connect(&server, Duration::from_secs(2));
        write!(
            stream,
            "GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let response = read_response(&mut BufReader::new(stream))
            .expect("served within 2 s while another request sleeps in the app");
        assert_eq!(response.status, 200);
    }
    assert_eq!(sleeper.join().unwrap(), Ok(200));
}

#[test]
fn a_body_stalled_past_timeout_gets_408_and_a_reader_stalled_past_it_is_closed() {
    // timeout 2 s: the stall limit for a body the event loop waits for, and for a client
    // that does not take its response.
    let server = Server::start(
        "chaos",
        "workers: 1\nthreads: 1\ntimeout: 2\nresponse_buffer: 33554432\n",
        &[],
    );
    let mut uploader = connect(&server, Duration::from_secs(10));
    uploader
        .write_all(b"POST /read-time HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_response(&mut BufReader::new(uploader)).expect("an answer to the stall");
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // A client that stops reading a 20 MB response: closed once it stalls for `timeout`,
    // so it can never read all of it.
    let mut reader = connect(&server, Duration::from_secs(10));
    reader
        .write_all(b"GET /big?bytes=20000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    assert!(
        got.len() < 20_000_000,
        "closed before the end: got {} bytes",
        got.len()
    );
    // Meanwhile the server serves on.
    assert_eq!(fresh_get(&server, "/pid").status, 200);
}
