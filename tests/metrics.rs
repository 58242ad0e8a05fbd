//! `metrics_bind` (issue #15): Prometheus metrics served by the master, summed over the
//! workers past and present.

mod common;

use common::{booted_pids, metrics_port, read_response, wait_for, Server};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET `path` on the metrics port: (status, body).
fn scrape_path(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let response = read_response(&mut BufReader::new(stream)).expect("a metrics response");
    (response.status, response.text())
}

fn scrape(port: u16) -> String {
    let (status, body) = scrape_path(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `series` (name and labels as printed), 0 if absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const PID_OK: &str = "ferricorn_requests_total{status=\"200\",method=\"GET\"}";

fn get_pids(server: &Server, n: usize) {
    for _ in 0..n {
        assert_eq!(server.get("/pid").status, 200);
    }
}

#[test]
fn counters_equal_the_requests_across_workers_even_after_one_is_killed() {
    let server = Server::start(
        "chaos",
        "bind: [\"127.0.0.1:0\"]\nworkers: 2\nmetrics_bind: 127.0.0.1:0\n",
        &[],
    );
    let port = metrics_port(&server);
    wait_for("both workers", Duration::from_secs(20), || {
        (booted_pids(&server.log_text()).len() == 2).then_some(())
    });
    get_pids(&server, 50);
    let text = scrape(port);
    assert_eq!(sample(&text, PID_OK), 50, "{text}");
    assert_eq!(sample(&text, "ferricorn_workers"), 2, "{text}");
    assert!(
        text.contains("ferricorn_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("ferricorn_listen_queue{listener="), "{text}");
    assert!(text.contains("ferricorn_worker_rss_bytes{pid="), "{text}");
    // Kill a worker that served some of them: its counts are kept.
    let victim = booted_pids(&server.log_text())[0];
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_for("a replacement", Duration::from_secs(20), || {
        (booted_pids(&server.log_text()).len() == 3).then_some(())
    });
    get_pids(&server, 30);
    let text = scrape(port);
    assert_eq!(sample(&text, PID_OK), 80, "{text}");
    assert_eq!(
        sample(&text, "ferricorn_worker_restarts_total{reason=\"crash\"}"),
        1,
        "{text}"
    );
    // A refused request is counted as the server's own answer.
    let mut stream = server.connect();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut BufReader::new(stream)).unwrap().status,
        400
    );
    let text = scrape(port);
    assert_eq!(
        sample(&text, "ferricorn_rejected_total{status=\"400\"}"),
        1,
        "{text}"
    );
    assert_eq!(scrape_path(port, "/other").0, 404);
}

#[test]
fn scrapes_answer_during_a_reload_and_count_it() {
    let server = Server::start(
        "chaos",
        "bind: [\"127.0.0.1:0\"]\nworkers: 2\nmetrics_bind: 127.0.0.1:0\n",
        &[],
    );
    let port = metrics_port(&server);
    get_pids(&server, 10);
    let first = booted_pids(&server.log_text());
    server.signal(libc::SIGHUP);
    // Scrape until the old workers have exited: every scrape answers, no count goes back.
    let mut last = 0;
    let mut during = 0;
    wait_for("the reload to finish", Duration::from_secs(30), || {
        let text = scrape(port);
        let served = sample(&text, PID_OK);
        assert!(served >= last, "{served} after {last}");
        last = served;
        let log = server.log_text();
        let done = first.iter().all(|&pid| common::exited(&log, pid));
        if !done {
            during += 1;
        }
        done.then_some(())
    });
    assert!(
        during > 0,
        "no scrape happened while old workers were still serving"
    );
    get_pids(&server, 5);
    let text = scrape(port);
    assert_eq!(sample(&text, PID_OK), 15, "{text}");
    assert_eq!(
        sample(&text, "ferricorn_reloads_total{result=\"success\"}"),
        1,
        "{text}"
    );
    assert_eq!(
        sample(&text, "ferricorn_worker_restarts_total{reason=\"reload\"}"),
        2,
        "{text}"
    );
}

#[test]
fn a_slow_scrape_client_does_not_stop_the_master() {
    let server = Server::start(
        "chaos",
        "bind: [\"127.0.0.1:0\"]\nworkers: 1\nmetrics_bind: 127.0.0.1:0\n",
        &[],
    );
    let port = metrics_port(&server);
    // Half a request, never finished: the master goes on (another scrape is answered,
    // and the server keeps serving).
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    assert!(scrape(port).contains("ferricorn_workers 1"));
    assert_eq!(server.get("/pid").status, 200);
    // Half a request, then the end of input: closed at once (not polled until its deadline).
    let mut gone = TcpStream::connect(("127.0.0.1", port)).unwrap();
    gone.write_all(b"GET /metr").unwrap();
    gone.shutdown(std::net::Shutdown::Write).unwrap();
    gone.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut gone, &mut rest).expect("closed within 2 s");
    assert!(rest.is_empty());
    // A whole request whose client half-closes at once is still answered.
    let mut eager = TcpStream::connect(("127.0.0.1", port)).unwrap();
    eager.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    eager.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut eager, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// CPU time (user + system) of process `pid` so far, in clock ticks (proc(5)).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_master_out_of_descriptors_pauses_scrapes_instead_of_spinning() {
    // 32 descriptors for the master: scrape connections left open exhaust them.
    let server = Server::start_with_nofile(
        "chaos",
        "bind: [\"127.0.0.1:0\"]\nworkers: 1\nmetrics_bind: 127.0.0.1:0\n",
        32,
    );
    let port = metrics_port(&server);
    let held: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    wait_for("the accept failure line", Duration::from_secs(10), || {
        server.log_text().contains("accept failed").then_some(())
    });
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.pid()) - before;
    // A spinning loop would use about 200 ticks (100 per second); a paused one a few.
    assert!(used < 50, "the master used {used} ticks in 2 s");
    let log = server.log_text();
    assert_eq!(
        log.matches("accept failed").count(),
        1,
        "logged once: {log}"
    );
    // The app's workers serve on.
    assert_eq!(server.get("/pid").status, 200);
    drop(held);
}

/// The Prometheus Python client's strict OpenMetrics parser, on stdin; prints the families.
const STRICT_PARSER: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
for family in parse(sys.stdin.read()):\n    print(family.name, family.type, len(family.samples))\n";

#[test]
#[cfg_attr(
    not(have_prometheus_client),
    ignore = "needs the Prometheus Python client (pip install prometheus_client)"
)]
fn a_strict_openmetrics_parser_reads_every_family() {
    let server = Server::start(
        "chaos",
        "workers: 2\nmetrics_bind: \"127.0.0.1:0\"\nmax_worker_rss: 4096\n",
        &[],
    );
    let port = metrics_port(&server);
    get_pids(&server, 5);
    assert_eq!(server.get("/nowhere").status, 404);
    let text = scrape(port);
    assert!(
        text.contains("ferricorn_request_duration_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    let mut parser = std::process::Command::new("python3")
        .args(["-c", STRICT_PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = parser.wait_with_output().unwrap();
    let families = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for family in [
        "ferricorn_requests",
        "ferricorn_request_duration_seconds histogram",
    ] {
        assert!(families.contains(family), "{family} missing: {families}");
    }
}
