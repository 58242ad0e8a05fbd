//! The WSGI plugin (`worker-apps/wsgi`) through the real binary: PEP 3333 checked by
//! `wsgiref.validate.validator` around the apps of `tests/wsgi/apps.py`, errors as gunicorn
//! reports them, streaming both ways with bounded memory, Python threads, the command line
//! a gunicorn user types, and reloads.

mod common;

use common::{read_response, run_to_exit, wait_for, Server};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

/// The directory of the test apps.
fn apps_dir() -> std::path::PathBuf {
    common::repo_path("tests/wsgi")
}

/// A server for `spec` (a `module:callable` of tests/wsgi) with `extra` configuration.
fn serve(spec: &str, extra: &str) -> Server {
    let plugin = common::plugin("ferricorn_wsgi");
    let config = format!(
        "wsgi_app: \"{spec}\"\nchdir: {}\n{extra}",
        apps_dir().display()
    );
    Server::start(&plugin.display().to_string(), &config, &[])
}

/// The one server most tests share: `apps:route`, 2 workers of 4 threads.
fn routed() -> Server {
    serve("apps:route", "workers: 2\nthreads: 4\n")
}

fn post(server: &Server, path: &str, headers: &str, body: &[u8]) -> common::Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    server.send(&raw)
}

fn json(response: &common::Response) -> serde_json::Value {
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("JSON")
}

/// `clients` keep-alive clients at once, each GETting `path` `each` times on `port`: every
/// answer as (status, body text), or the client's error.
fn concurrently(
    port: u16,
    clients: usize,
    each: usize,
    path: &'static str,
) -> Vec<Result<(u16, String), String>> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = common::Client::new(port);
                (0..each)
                    .map(|_| client.get(path).map(|r| (r.status, r.text())))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect()
}

/// The largest number the answers (200s, each a number) give. Panics on any other answer.
fn peak_of(answers: Vec<Result<(u16, String), String>>) -> u32 {
    answers
        .into_iter()
        .map(|answer| {
            let (status, text) = answer.expect("a response");
            assert_eq!(status, 200, "{text}");
            text.parse::<u32>().expect("a number")
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn environ_has_the_cgi_and_wsgi_variables() {
    let server = routed();
    let response = post(
        &server,
        "/environ/caf%C3%A9%20x%2Fy?a=1&b=%20",
        "Content-Type: text/plain\r\nX-Foo: 1\r\nX-Foo: 2\r\n",
        b"hello world",
    );
    let env = json(&response);
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["SCRIPT_NAME"], "");
    // PATH_INFO: the percent-decoded bytes, read as latin-1 (PEP 3333's native strings).
    let expected: Vec<u8> = b"/environ/caf\xc3\xa9 x/y".to_vec();
    let bytes: Vec<u8> = env["path_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, expected);
    assert_eq!(env["QUERY_STRING"], "a=1&b=%20");
    assert_eq!(env["RAW_URI"], "/environ/caf%C3%A9%20x%2Fy?a=1&b=%20");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["CONTENT_LENGTH"], "11");
    assert!(env.get("HTTP_CONTENT_TYPE").is_none() && env.get("HTTP_CONTENT_LENGTH").is_none());
    assert_eq!(env["HTTP_X_FOO"], "1,2");
    assert_eq!(env["HTTP_HOST"], "t");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    assert_eq!(env["SERVER_PORT"], server.port.to_string());
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env["SERVER_SOFTWARE"]
        .as_str()
        .unwrap()
        .starts_with("ferricorn/"));
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.multithread"], true);
    assert_eq!(env["wsgi.multiprocess"], true);
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(env["wsgi.input_terminated"], true);
    assert_eq!(env["body"], "hello world");
    // Python installed no signal handler: the worker owns its signals.
    assert_eq!(
        server.get("/signals").text(),
        "None None",
        "no Python handler (None: the handler is not one Python installed)"
    );
    // A chunked body: no CONTENT_LENGTH, the body read to its end.
    let env = json(&server.send(
        b"POST /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ));
    assert!(env.get("CONTENT_LENGTH").is_none(), "{env}");
    assert_eq!(env["body"], "hello world");
}

#[test]
fn input_reads_lines_and_answers_100_continue_at_the_first_read() {
    let server = routed();
    let body = b"line one\nline two\nthree\nfour\nfive";
    let lines = json(&post(&server, "/lines", "", body));
    assert_eq!(lines["first"], "line ");
    assert_eq!(lines["second"], "one\n");
    assert_eq!(lines["third"], serde_json::json!(["line two\n"]));
    assert_eq!(
        lines["rest"],
        serde_json::json!(["three\n", "four\n", "five"])
    );
    assert_eq!(lines["end"], "");
    // Expect: 100-continue: the interim response comes before the body is sent.
    let mut stream = server.connect();
    stream
        .write_all(b"POST /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    reader.read_line(&mut line).unwrap();
    stream.write_all(b"hello").unwrap();
    let env = json(&read_response(&mut reader).unwrap());
    assert_eq!(env["body"], "hello");
}

#[test]
fn responses_stream_write_wrap_files_and_honour_exc_info() {
    let server = routed();
    let stream = server.get("/stream");
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    assert_eq!(stream.text(), "part 0\npart 1\npart 2\n");
    assert_eq!(server.get("/write").text(), "written, then returned\n");
    let file = server.get("/file");
    let source = std::fs::read(apps_dir().join("apps.py")).unwrap();
    assert_eq!(file.body, source);
    let error_page = server.get("/exc_info");
    assert_eq!(error_page.status, 503);
    assert_eq!(error_page.header("retry-after"), Some("1"));
    assert_eq!(error_page.text(), "sorry\n");
    // A one-item list gets a Content-Length, also past the server's 16 KiB buffer.
    let big = server.get("/big_list");
    assert_eq!(big.header("content-length"), Some("100000"));
    assert_eq!(big.header("transfer-encoding"), None);
    assert_eq!(big.body.len(), 100_000);
    // The reason phrase and header values are latin-1: sent as those bytes.
    let (_, raw) = server.send_then_close(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /reason HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(
        raw.windows(28)
            .any(|w| w == b"HTTP/1.1 418 I'm a teapot \xe9\r"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let (_, raw) = server.send_then_close(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /latin1_header HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(raw.windows(14).any(|w| w == b"X-Name: caf\xe9\r\n"));
    assert!(
        !server.log_text().contains("Error handling"),
        "the validator found nothing wrong: {}",
        server.log_text()
    );
}

#[test]
fn file_wrapper_sends_regular_files_with_sendfile_and_reads_them_over_tls() {
    let source = std::fs::read(apps_dir().join("apps.py")).unwrap();
    let check = |server: &Server, expected_position: usize| {
        let marker = common::scratch_dir().join("position");
        let response = server.get(&format!("/sendfile?marker={}", marker.display()));
        assert_eq!(response.status, 200);
        assert_eq!(response.body, &source[10..]);
        assert_eq!(
            response.header("content-length"),
            Some((source.len() - 10).to_string().as_str())
        );
        wait_for(
            "close() to record the position",
            Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&marker).ok()?;
                (!text.is_empty()).then_some(text)
            },
        );
        let position = std::fs::read_to_string(&marker).unwrap();
        assert_eq!(
            position,
            expected_position.to_string(),
            "where the file was left"
        );
    };
    // Plain TCP: sendfile(2), which leaves the file's position where the app put it.
    check(&routed(), 10);
    // TLS: the server cannot; the plugin reads the file (to its end) and writes it.
    common::Pki::with(|pki| {
        let plugin = common::plugin("ferricorn_wsgi");
        let config = format!(
            "wsgi_app: apps:route\nchdir: {}\nworkers: 1\n{}",
            apps_dir().display(),
            pki.config()
        );
        let server = Server::start_tls(
            &plugin.display().to_string(),
            &config,
            &[],
            pki.client(false),
        );
        check(&server, source.len());
    });
}

#[test]
fn app_errors_are_500s_with_the_traceback_logged_and_the_worker_serves_on() {
    let server = routed();
    for (path, logged) in [
        ("/boom", "RuntimeError: boom before the response"),
        (
            "/str_body",
            "the response iterable must yield bytes, not str",
        ),
        ("/bad_header", "a header value is not latin-1"),
        ("/bad_status", "the status must be a code from 200 to 999"),
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 500, "{path}");
        wait_for(logged, Duration::from_secs(10), || {
            server.log_text().contains(logged).then_some(())
        });
    }
    let log = server.log_text();
    let entry = log
        .split("[ERROR] Error handling request /boom")
        .nth(1)
        .expect("the gunicorn-style entry");
    assert!(
        entry.starts_with("\nTraceback (most recent call last):")
            && entry.contains("apps.py\", line")
            && entry.contains("in boom"),
        "one entry with the traceback: {entry}"
    );
    // After the first body byte: the response is cut, never passed off as complete.
    let mut stream = server.connect();
    stream
        .write_all(b"GET /late_boom HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("first part"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "no last chunk: {text}");
    // exc_info after the head went out: start_response re-raises it, the response is cut.
    let mut stream = server.connect();
    stream
        .write_all(b"GET /late_exc_info HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("first part") && !text.contains("never sent"),
        "{text}"
    );
    assert!(!text.ends_with("0\r\n\r\n"), "no last chunk: {text}");
    wait_for("the re-raised exception", Duration::from_secs(10), || {
        server
            .log_text()
            .contains("KeyError: 'late trouble'")
            .then_some(())
    });
    // wsgi.errors goes to the error log; the workers are the same ones as before.
    assert_eq!(server.get("/errors").status, 200);
    wait_for("the wsgi.errors line", Duration::from_secs(10), || {
        server.log_text().contains("from wsgi.errors").then_some(())
    });
    assert_eq!(
        common::booted_pids(&server.log_text()).len(),
        2,
        "no worker died"
    );
}

/// The pid a `/pid` request reports, and that worker's peak RSS in bytes.
fn peak_rss(pid: i32) -> u64 {
    common::status_bytes(pid, "VmHWM")
}

#[test]
fn large_bodies_stream_both_ways_with_bounded_worker_memory() {
    let server = serve("apps:route", "workers: 1\nthreads: 2\n");
    let pid: i32 = server.get("/pid").text().parse().unwrap();
    let before = peak_rss(pid);
    const SIZE: usize = 64 << 20;
    let mut stream = server.connect();
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {SIZE}\r\n\r\n"
    )
    .unwrap();
    let piece = vec![b'u'; 1 << 20];
    for _ in 0..SIZE / piece.len() {
        stream.write_all(&piece).unwrap();
    }
    let answer = json(&read_response(&mut BufReader::new(stream)).unwrap());
    assert_eq!(answer["bytes"], SIZE);
    // 64 MiB out, streamed by a generator of 64 KiB pieces, read to the end.
    let marker = common::scratch_dir().join("closed");
    let mut stream = server.connect();
    write!(
        stream,
        "GET /closing?marker={}&chunks=1024 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        marker.display()
    )
    .unwrap();
    let response = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!(response.body.len(), SIZE);
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "the worker's peak RSS grew by {grown} bytes for 64 MiB each way"
    );
}

#[test]
fn close_is_called_when_the_client_goes_away_mid_response() {
    let server = routed();
    let marker = common::scratch_dir().join("closed");
    let mut stream = server.connect();
    write!(
        stream,
        "GET /closing?marker={}&chunks=100000 HTTP/1.1\r\nHost: t\r\n\r\n",
        marker.display()
    )
    .unwrap();
    let mut first = [0u8; 4096];
    stream.read_exact(&mut first).unwrap();
    drop(stream);
    wait_for("close() to be called", Duration::from_secs(20), || {
        marker.exists().then_some(())
    });
}

#[test]
fn threads_run_python_requests_at_once() {
    // Four requests must be inside the app together (a threading.Barrier of 4) to answer.
    let plugin = common::plugin("ferricorn_wsgi");
    let config = format!(
        "wsgi_app: apps:route\nchdir: {}\nworkers: 1\nthreads: 4\nraw_env: [\"BARRIER_PARTIES=4\"]\n",
        apps_dir().display()
    );
    let server = Server::start(&plugin.display().to_string(), &config, &[]);
    for answer in concurrently(server.port, 4, 1, "/together") {
        assert_eq!(answer.map(|(status, _)| status), Ok(200));
    }
}

#[test]
fn a_sleeping_app_gets_workers_times_threads_requests_at_once() {
    // 2 workers x 4 threads, 16 clients at once on a view that sleeps 50 ms: each worker
    // runs as many requests as it has threads (Python threads, the GIL released in sleep).
    let server = serve("apps:route", "workers: 2\nthreads: 4\n");
    let peak = peak_of(concurrently(server.port, 16, 1, "/sleepy_peak"));
    assert_eq!(
        peak, 4,
        "a worker ran `threads` requests at once, never more"
    );
}

#[test]
fn python_objects_used_outside_their_request_raise() {
    let server = serve("apps:route", "workers: 1\nthreads: 2\n");
    assert_eq!(server.get("/keep_input").text(), "kept\n");
    let response = post(&server, "/use_kept_input", "", b"body");
    assert_eq!(response.text(), "ValueError ValueError");
    assert_eq!(server.get("/hello").status, 200);
}

/// Voluntary context switches of every thread of process `pid` so far (proc(5)).
fn voluntary_switches(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn a_cpu_bound_python_app_does_not_make_threads_wait_for_the_gil() {
    // A CPU-bound app with 4 threads: the pool must not hand requests to threads that would
    // only wait for the GIL (each wait, and each 5 ms GIL switch, is a context switch). One
    // thread computes at a time (measured: 0.35 voluntary switches per request; 2.3 when every
    // slow call counts as blocking).
    let server = serve("apps:route", "workers: 1\nthreads: 4\n");
    let pid: i32 = server.get("/pid").text().parse().unwrap();
    let before = voluntary_switches(pid);
    for answer in concurrently(server.port, 8, 10, "/burn") {
        assert_eq!(answer.map(|(status, _)| status), Ok(200));
    }
    let per_request = (voluntary_switches(pid) - before) as f64 / 80.0;
    eprintln!("switches per request: {per_request:.2}");
    assert!(
        per_request < 1.2,
        "{per_request:.1} voluntary context switches per CPU-bound request"
    );
}

#[test]
fn capture_output_puts_what_the_app_prints_in_the_error_log() {
    let server = serve("apps:route", "workers: 1\ncapture_output: true\n");
    assert_eq!(server.get("/prints").text(), "printed\n");
    wait_for(
        "print() and logging in the error log",
        Duration::from_secs(10),
        || {
            let log = server.log_text();
            (log.contains("printed by the app") && log.contains("logged by the app")).then_some(())
        },
    );
    // The plugin's startup line (stderr) lands there too.
    assert!(server.log_text().contains("wsgi: Python 3."));
    // Without it, the error log has none of it (stdout and stderr are the master's).
    let server = serve("apps:route", "workers: 1\n");
    assert_eq!(server.get("/prints").text(), "printed\n");
    assert!(!server.log_text().contains("printed by the app"));
}

#[test]
fn a_view_that_computes_then_waits_gets_more_threads() {
    // 3 ms of Python then a 2 ms wait: the calls block (the thread sleeps in them), so the
    // pool gives the app more threads, whose waits overlap another's computing.
    let server = serve("apps:route", "workers: 1\nthreads: 4\n");
    let peak = peak_of(concurrently(server.port, 8, 10, "/mixed_peak"));
    assert!(peak >= 2, "at most {peak} request(s) in the app at once");
}

#[test]
fn a_factory_call_names_the_app() {
    let server = serve("apps:factory('hi', punctuation='?')", "workers: 1\n");
    assert_eq!(server.get("/").text(), "hi?");
}

#[test]
fn import_errors_are_one_line_at_check_config() {
    let dir = apps_dir().display().to_string();
    for (spec, expected) in [
        (
            "broken:application",
            &[
                "cannot import 'broken'",
                "ImportError: this module is broken on purpose",
                "broken.py:10",
            ][..],
        ),
        (
            "apps:nothing",
            &["failed to find attribute 'nothing' in 'apps'"][..],
        ),
        (
            "no_such_module",
            &["cannot import 'no_such_module'", "No module named"][..],
        ),
    ] {
        let (status, out) =
            run_to_exit(&["--chdir", &dir, "-b", "127.0.0.1:0", "--check-config", spec]);
        assert_eq!(status.code(), Some(1), "{spec}: {out}");
        let errors: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(spec.split(':').next().unwrap()))
            .collect();
        for text in expected {
            assert!(out.contains(text), "{spec}: {text}: {out}");
        }
        assert!(!errors.is_empty(), "{out}");
        assert!(!out.contains("Traceback"), "one line, no traceback: {out}");
    }
}

#[test]
fn a_virtualenv_of_another_python_version_is_one_line() {
    let venv = common::scratch_dir();
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::write(venv.join("bin/python"), "").unwrap();
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /opt/py/bin\nversion = 3.0.1\n",
    )
    .unwrap();
    let dir = apps_dir().display().to_string();
    let setting = format!("virtualenv={}", venv.display());
    let (status, out) = run_to_exit(&[
        "--chdir",
        &dir,
        "--app-config",
        &setting,
        "--check-config",
        "apps:hello",
    ]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("was made with Python 3.0; this WSGI plugin embeds Python 3."),
        "{out}"
    );
    let (status, out) = run_to_exit(&[
        "--chdir",
        &dir,
        "--app-config",
        "virtualenv=/nonexistent",
        "--check-config",
        "apps:hello",
    ]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("virtualenv /nonexistent: not a virtualenv"),
        "{out}"
    );
}

#[test]
fn the_positional_module_callable_selects_the_bundled_plugin() {
    let dir = apps_dir().display().to_string();
    let (status, out) = run_to_exit(&["--chdir", &dir, "--check-config", "apps:hello"]);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("app `wsgi` loads"), "{out}");
    assert!(out.contains("wsgi: Python 3."), "which Python: {out}");
    // As a gunicorn user types it: flags, then module:callable.
    common::plugin("ferricorn_wsgi");
    let server = Server::start(
        "",
        "",
        &["--chdir", &dir, "-w", "1", "--threads", "2", "apps:hello"],
    );
    assert_eq!(server.get("/").text(), "Hello, World!\n");
    assert!(server.log_text().contains("libferricorn_wsgi.so"));
}

#[test]
fn hup_reloads_the_code_under_load_and_keeps_serving_through_a_broken_module() {
    let dir = common::scratch_dir();
    let source = std::fs::read_to_string(apps_dir().join("apps.py")).unwrap();
    std::fs::write(dir.join("apps.py"), &source).unwrap();
    let plugin = common::plugin("ferricorn_wsgi");
    let config = format!(
        "wsgi_app: apps:route\nchdir: {}\nworkers: 2\n",
        dir.display()
    );
    let server = Server::start(&plugin.display().to_string(), &config, &[]);
    assert_eq!(server.get("/version").text(), "one");
    // A broken module: the reload is refused, the old generation serves on.
    std::fs::write(
        dir.join("apps.py"),
        format!("{source}\nraise SystemError('half-written')\n"),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_for("the refused reload", Duration::from_secs(20), || {
        server.log_text().contains("half-written").then_some(())
    });
    assert_eq!(server.get("/version").text(), "one");
    // The fixed code, under load: no request fails and the change is visible.
    reload_under_load(&server, &dir.join("apps.py"), &source, "/hello");
}

/// Rewrites `file` from `source` with `VERSION = "second"` (a new size: Python's bytecode
/// cache compares mtime and size), sends HUP while 4 clients GET `path`, and checks that no
/// request failed and that, once the old generation stopped, only the new code answers
/// `/version`.
fn reload_under_load(server: &Server, file: &std::path::Path, source: &str, path: &'static str) {
    std::fs::write(
        file,
        source.replace("VERSION = \"one\"", "VERSION = \"second\""),
    )
    .unwrap();
    let mut signalled = false;
    let failures = common::load_while(
        server.port,
        4,
        path,
        || {
            if !signalled {
                server.signal(libc::SIGHUP);
                signalled = true;
            }
            server.get("/version").text() == "second"
        },
        50,
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    wait_for(
        "only the new code to answer",
        Duration::from_secs(20),
        || {
            (0..8)
                .all(|_| server.get("/version").text() == "second")
                .then_some(())
        },
    );
}

/// A virtualenv with Flask and Django (`target/wsgi-venv`), made once (python3 -m venv, pip).
fn venv() -> std::path::PathBuf {
    static VENV: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let target = common::binary()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = target.join("wsgi-venv");
        let python = dir.join("bin/python");
        let ready = |python: &std::path::Path| {
            std::process::Command::new(python)
                .args(["-c", "import flask, django"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ready(&python) {
            run(std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&dir));
            run(std::process::Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "flask", "django"]));
        }
        assert!(
            ready(&python),
            "Flask and Django do not import in {}",
            dir.display()
        );
        dir
    })
    .clone()
}

/// Runs `command` to success (its output shown on failure).
fn run(command: &mut std::process::Command) -> String {
    let out = command.output().expect("run a command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed: {text}");
    text
}

#[test]
fn serves_a_flask_app_from_a_virtualenv_and_reloads_its_code_under_load() {
    let venv = venv();
    let dir = common::scratch_dir();
    let source = std::fs::read_to_string(apps_dir().join("flask_app.py")).unwrap();
    std::fs::write(dir.join("flask_app.py"), &source).unwrap();
    let plugin = common::plugin("ferricorn_wsgi");
    let config = format!(
        "wsgi_app: flask_app:app\nchdir: {}\nworkers: 2\nthreads: 4\napp.config:\n  virtualenv: {}\n",
        dir.display(),
        venv.display()
    );
    let server = Server::start(&plugin.display().to_string(), &config, &[]);
    let data: serde_json::Value = serde_json::from_slice(&server.get("/json?a=1").body).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"framework": "flask", "args": {"a": "1"}})
    );
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbob\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\n12345\r\n--{boundary}--\r\n"
    );
    let form = post(
        &server,
        "/form",
        &format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        body.as_bytes(),
    );
    assert_eq!(form.text(), "hello bob, 5 bytes of file\n");
    let stream = server.get("/stream?who=me&n=3");
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        stream.text(),
        "piece 0 for me\npiece 1 for me\npiece 2 for me\n"
    );
    assert_eq!(server.get("/nope").status, 404);
    assert_eq!(server.get("/version").text(), "one");
    reload_under_load(&server, &dir.join("flask_app.py"), &source, "/json");
}

#[test]
fn serves_a_django_project_from_its_directory_as_gunicorn_does() {
    let venv = venv();
    let dir = common::scratch_dir();
    let python = venv.join("bin/python");
    run(std::process::Command::new(venv.join("bin/django-admin"))
        .args(["startproject", "mysite"])
        .current_dir(&dir));
    let project = dir.join("mysite");
    run(std::process::Command::new(&python)
        .args(["manage.py", "startapp", "notes"])
        .current_dir(&project));
    std::fs::write(
        project.join("notes/models.py"),
        "from django.db import models\n\n\nclass Note(models.Model):\n    text = models.CharField(max_length=100)\n",
    )
    .unwrap();
    std::fs::write(
        project.join("notes/views.py"),
        "from django.http import JsonResponse\n\nfrom .models import Note\n\n\ndef index(request):\n    return JsonResponse({\"notes\": [n.text for n in Note.objects.order_by(\"id\")]})\n",
    )
    .unwrap();
    std::fs::write(
        project.join("mysite/urls.py"),
        "from django.urls import path\n\nfrom notes import views\n\nurlpatterns = [path(\"notes/\", views.index)]\n",
    )
    .unwrap();
    let settings = project.join("mysite/settings.py");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("\nINSTALLED_APPS += [\"notes\"]\nALLOWED_HOSTS = [\"*\"]\nDEBUG = False\n");
    std::fs::write(&settings, text).unwrap();
    for args in [
        &["manage.py", "makemigrations", "notes"][..],
        &["manage.py", "migrate", "-v", "0"][..],
        &[
            "manage.py",
            "shell",
            "-c",
            "from notes.models import Note; Note.objects.create(text='from sqlite')",
        ][..],
    ] {
        run(std::process::Command::new(&python)
            .args(args)
            .current_dir(&project));
    }
    common::plugin("ferricorn_wsgi");
    // As a gunicorn user runs it: in the project's directory, the venv active.
    let project_dir = project.display().to_string();
    let server = Server::spawn_env(
        "",
        "",
        &[
            "--chdir",
            &project_dir,
            "-w",
            "2",
            "--threads",
            "4",
            "mysite.wsgi:application",
        ],
        &[("VIRTUAL_ENV", &venv.display().to_string())],
    );
    server.wait_ready();
    let notes = server.get("/notes/");
    assert_eq!(notes.status, 200, "{}", server.log_text());
    assert_eq!(notes.text(), "{\"notes\": [\"from sqlite\"]}");
    assert_eq!(server.get("/nope").status, 404);
}

#[test]
fn python_workers_are_recycled_replaced_when_stuck_and_drained_on_term() {
    let plugin = common::plugin("ferricorn_wsgi").display().to_string();
    let config = format!(
        "wsgi_app: apps:route\nchdir: {}\nworkers: 1\nthreads: 4\nmax_requests: 5\nrequest_timeout: 1\ngraceful_timeout: 2\n",
        apps_dir().display()
    );
    let mut server = Server::start(&plugin, &config, &[]);
    // max_requests recycles a Python worker like any other.
    let first = server.get("/pid").text();
    wait_for("a recycled worker", Duration::from_secs(20), || {
        (server.get("/pid").text() != first).then_some(())
    });
    // A request stuck in a Python busy loop: past request_timeout its worker is replaced,
    // then killed; requests go on being served.
    let mut stuck = server.connect();
    stuck
        .write_all(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_for(
        "the stuck worker to be replaced",
        Duration::from_secs(20),
        || {
            server
                .log_text()
                .contains("a request has run longer than request_timeout")
                .then_some(())
        },
    );
    let mut rest = Vec::new();
    let _ = stuck.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the stuck request got no answer, its worker was killed"
    );
    assert_eq!(server.get("/hello").status, 200);
    // TERM: a Python request in flight (300 ms, within request_timeout) finishes before the
    // worker exits.
    let entered = common::scratch_dir().join("entered");
    let mut slow = server.connect();
    write!(
        slow,
        "GET /slow?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        entered.display()
    )
    .unwrap();
    wait_for(
        "the request to be in the app",
        Duration::from_secs(20),
        || entered.exists().then_some(()),
    );
    server.signal(libc::SIGTERM);
    let response = read_response(&mut BufReader::new(slow))
        .unwrap_or_else(|e| panic!("{e}: {}", server.log_text()));
    assert_eq!(response.text(), "finished\n");
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

/// GETs `/metrics` from the master's metrics listener on `port`; the body.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    read_response(&mut BufReader::new(stream)).unwrap().text()
}

/// `ferricorn_requests_total` for 200 answers to GET, from a scrape.
fn ok_gets(text: &str) -> u64 {
    let series = "ferricorn_requests_total{status=\"200\",method=\"GET\"}";
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn metrics_max_worker_rss_and_usr2_treat_python_workers_like_any_other() {
    let dir = common::scratch_dir();
    let pidfile = dir.join("ferricorn.pid");
    let plugin = common::plugin("ferricorn_wsgi").display().to_string();
    let config = format!(
        "wsgi_app: apps:route\nchdir: {}\nworkers: 1\nmetrics_bind: 127.0.0.1:0\nmax_worker_rss: 80\npidfile: {}\n",
        apps_dir().display(),
        pidfile.display()
    );
    let mut server = Server::start(&plugin, &config, &[]);
    // Python requests are counted like any other.
    let port = common::metrics_port(&server);
    let before = ok_gets(&scrape(port));
    for _ in 0..20 {
        assert_eq!(server.get("/hello").status, 200);
    }
    wait_for("20 more requests counted", Duration::from_secs(10), || {
        (ok_gets(&scrape(port)) >= before + 20).then_some(())
    });
    // A Python worker past max_worker_rss is replaced.
    let first = server.get("/pid").text();
    wait_for(
        "the leaking worker to be replaced",
        Duration::from_secs(30),
        || {
            let pid = server.get("/grow").text();
            (pid != first && server.log_text().contains("above max_worker_rss")).then_some(())
        },
    );
    // USR2: a new master with new Python workers takes over; the old one retires.
    let old = server.pid();
    server.signal(libc::SIGUSR2);
    let new = wait_for("the new master's pidfile", Duration::from_secs(20), || {
        common::pid_in(&pidfile).filter(|p| *p != old)
    });
    let _new_master = common::TermOnDrop(new);
    // Booted so far: the first worker and its replacement; then the new master's.
    wait_for("the new master's worker", Duration::from_secs(20), || {
        (common::booted_pids(&server.log_text()).len() >= 3).then_some(())
    });
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(server.get("/hello").text(), "Hello, World!\n");
    server.stop_new_master(new);
}
