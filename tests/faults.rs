//! Fault injection (issue #13) against the real binary: descriptor exhaustion, a paused
//! worker, a killed master.

mod common;

use common::{booted_pids, read_response, wait_for, Server};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// CPU time (user + system) of process `pid` so far, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn descriptor_exhaustion_pauses_accepting_and_is_logged_once() {
    let server = Server::start_with_nofile("hello", "workers: 1\nthreads: 2\n", 64);
    let log = server.log_text();
    assert!(
        log.contains("exceed RLIMIT_NOFILE (soft 64, hard 64)"),
        "startup warning: {log}"
    );
    let worker = *booted_pids(&log).last().expect("a worker");
    // More connections than the worker has descriptors: the queue keeps the rest.
    let held: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).expect("connect"))
        .collect();
    wait_for("the exhaustion logged", Duration::from_secs(10), || {
        server
            .log_text()
            .contains("Too many open files")
            .then_some(())
    });
    let before = cpu_seconds(worker);
    let lines_before = server.log_text().matches("accept failed").count();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let busy = cpu_seconds(worker) - before;
    let window = started.elapsed().as_secs_f64();
    assert!(
        busy < 0.3 * window,
        "the worker spun: {busy:.2} s of CPU in {window:.1} s"
    );
    // Once per episode: an episode ends only when an accept succeeds (a connection of the
    // server's own closing, such as the readiness probe's, can end one), never per retry.
    let lines = server.log_text().matches("accept failed").count();
    assert!(
        lines - lines_before <= 1 && lines <= 3,
        "logged once per episode, not per retry:\n{}",
        server.log_text()
    );
    drop(held);
    // Descriptors come back: accepting resumes and requests are served.
    let response = wait_for("a request served again", Duration::from_secs(10), || {
        server.try_get("/").ok().filter(|r| r.status == 200)
    });
    assert_eq!(response.text(), "Hello, World!\n");
    assert!(server
        .log_text()
        .contains("accepting again after descriptor exhaustion"));
}

/// Opens `n` keep-alive connections, each served one request.
fn kept_alive(server: &Server, n: usize, request: &[u8]) -> Vec<BufReader<TcpStream>> {
    (0..n)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(request).unwrap();
            let mut reader = BufReader::new(stream);
            assert_eq!(read_response(&mut reader).unwrap().status, 200);
            reader
        })
        .collect()
}

fn answered(clients: &mut [BufReader<TcpStream>]) -> usize {
    clients
        .iter_mut()
        .filter_map(|c| read_response(c).ok())
        .filter(|r| r.status == 200)
        .count()
}

#[test]
fn requests_that_wait_past_keepalive_are_answered_not_closed() {
    // A connection whose next request has arrived is not idle, however long no thread could
    // read it: here the only thread is in the app for longer than keepalive.
    let server = Server::start(
        "chaos",
        "workers: 1
threads: 1
keepalive: 1
",
        &[],
    );
    let request = b"GET /pid HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut clients = kept_alive(&server, 40, request);
    let mut busy = server.connect();
    busy.write_all(b"GET /sleep?ms=2500 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    wait_for("the thread in the app", Duration::from_secs(5), || {
        server
            .log_text()
            .contains("chaos: sleeping 2500 ms")
            .then_some(())
    });
    for client in &mut clients {
        client.get_mut().write_all(request).unwrap();
    }
    assert_eq!(
        answered(&mut clients),
        40,
        "requests that waited for a thread"
    );

    // The same with the worker paused (SIGSTOP) for longer than keepalive.
    let worker = *booted_pids(&server.log_text()).last().expect("a worker");
    let mut clients = kept_alive(&server, 40, request);
    // SAFETY: kill(2) on the worker this test's server forked.
    unsafe { libc::kill(worker, libc::SIGSTOP) };
    for client in &mut clients {
        client.get_mut().write_all(request).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: as above.
    unsafe { libc::kill(worker, libc::SIGCONT) };
    assert_eq!(
        answered(&mut clients),
        40,
        "requests that waited for the paused worker"
    );
}

#[test]
fn a_killed_master_frees_the_port_and_in_flight_requests_finish() {
    let server = Server::start("chaos", "workers: 2\n", &[]);
    let port = server.port;
    let workers = booted_pids(&server.log_text());
    assert_eq!(workers.len(), 2);
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        read_response(&mut BufReader::new(stream))
    });
    wait_for("the request in the app", Duration::from_secs(5), || {
        server
            .log_text()
            .contains("chaos: sleeping 3000 ms")
            .then_some(())
    });
    server.signal(libc::SIGKILL);
    let killed = Instant::now();
    // The workers notice at once and close their listeners: new clients are refused, not
    // left in an accept queue that nobody serves.
    wait_for(
        "the port to be free",
        Duration::from_secs(5),
        || match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    let freed = killed.elapsed();
    assert!(
        freed < Duration::from_millis(1000),
        "the port is free {freed:?} after the kill, long before the in-flight request ends"
    );
    let response = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.text(), "slept 3000 ms\n");
    wait_for("the workers to exit", Duration::from_secs(10), || {
        workers.iter().all(|&pid| !alive(pid)).then_some(())
    });
    for pid in workers.into_iter().filter(|&pid| alive(pid)) {
        // SAFETY: kill(2) on a worker this test's server forked, should it still run.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[test]
fn panics_are_one_log_line_each_and_answered_500() {
    let server = Server::spawn_env(
        "chaos",
        "workers: 1\nthreads: 4\n",
        &[],
        &[("RUST_BACKTRACE", "1")],
    );
    server.wait_ready();
    let port = server.port;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = common::Client::new(port);
                // Client::get takes anything but 200 as an error naming the status.
                (0..5)
                    .map(|_| match client.get("/panic") {
                        Ok(r) => r.status.to_string(),
                        Err(e) => e,
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| s == "status 500"),
        "every panic is a 500: {statuses:?}"
    );
    let log = wait_for("40 panic lines", Duration::from_secs(10), || {
        let log = server.log_text();
        (log.matches("handler panicked at ").count() >= 40).then_some(log)
    });
    assert_eq!(log.matches("handler panicked at ").count(), 40, "{log}");
    assert!(log.contains("chaos/src/lib.rs:"), "the location: {log}");
    for line in log.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('['), "not a log line: {line:?}");
    }
    assert!(!log.contains("stack backtrace") && !log.contains("rust_begin_unwind"));
}

#[test]
fn log_files_are_checked_and_access_log_losses_reported() {
    let dir = common::scratch_dir();
    let config = dir.join("bad-log.yaml");
    std::fs::write(
        &config,
        format!(
            "app:\n  path: {}\naccesslog: /nonexistent-ferricorn-dir/access.log\n",
            common::plugin("hello").display()
        ),
    )
    .unwrap();
    let (status, out) =
        common::run_to_exit(&["--check-config", "-c", &config.display().to_string()]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("accesslog: cannot open log file /nonexistent-ferricorn-dir/access.log"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);

    let server = Server::start("hello", "workers: 1\naccesslog: /dev/full\n", &[]);
    for _ in 0..10 {
        assert_eq!(server.get("/").status, 200);
    }
    let log = wait_for("the loss reported", Duration::from_secs(5), || {
        let log = server.log_text();
        log.contains("access log /dev/full: write failed")
            .then_some(log)
    });
    assert!(log.contains("line(s) lost since the last report"), "{log}");
    assert_eq!(
        log.matches("access log /dev/full: write failed").count(),
        1,
        "at most once a minute: {log}"
    );
}

/// VmHWM (peak resident set) of `pid` in bytes.
fn peak_rss(pid: i32) -> u64 {
    common::status_bytes(pid, "VmHWM")
}

#[test]
fn memory_under_many_incomplete_heads_stays_within_the_bound() {
    const CONNECTIONS: usize = 1000;
    const HEAD_LIMIT: usize = 65536;
    assert!(
        common::raise_own_nofile() > CONNECTIONS as u64 + 100,
        "descriptors for the test"
    );
    let server = Server::start(
        "hello",
        "workers: 1\nworker_connections: 1100\nheader_timeout: 60\n",
        &[],
    );
    let worker = *booted_pids(&server.log_text()).last().expect("a worker");
    let baseline = peak_rss(worker);
    // Each connection sends a head just under limit_request_head (within the other limits:
    // 64 fields of 1000 bytes), without its end.
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    while head.len() < HEAD_LIMIT - 1100 {
        head.extend_from_slice(format!("X-{}: {}\r\n", head.len(), "v".repeat(1000)).as_bytes());
    }
    let held: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(&head).expect("send the head");
            stream
        })
        .collect();
    // Wait until the worker has read them all (its resident set stops growing).
    let mut last = 0;
    let peak = wait_for("the heads read", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = peak_rss(worker);
        let settled = now == last && now > baseline + (CONNECTIONS * head.len() / 2) as u64;
        last = now;
        settled.then_some(now)
    });
    // The README's bound: connections × limit_request_head plus 32 MiB of the worker's own.
    let bound = (CONNECTIONS * HEAD_LIMIT) as u64 + 32 * 1024 * 1024;
    eprintln!(
        "worker VmHWM: {} KiB idle, {} KiB with {CONNECTIONS} heads of {} bytes (bound {} KiB)",
        baseline / 1024,
        peak / 1024,
        head.len(),
        bound / 1024
    );
    assert!(peak <= bound, "VmHWM {peak} over {bound}");
    drop(held);
    assert_eq!(server.get("/").status, 200);
}
