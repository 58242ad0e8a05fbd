//! The gateway ABI: the C header agrees with the Rust definitions, C plugins are
//! served, the descriptor checks, request-body streaming and limits, the start_response rules.

mod common;

use common::{compile_c, plugin, read_response, repo_path, run_to_exit, wait_for, Server};
use ferricorn_sdk::abi::{self, FcAppDescriptor, FcField, FcRequest, FcResponder, FcStr};
use std::io::{BufReader, Read, Write};
use std::mem::{offset_of, size_of};
use std::time::Duration;

/// The lines `tests/c/layout.c` must print, computed from the Rust definitions.
fn rust_layout() -> Vec<String> {
    let mut lines = Vec::new();
    let mut size = |name: &str, n: usize| lines.push(format!("{name} size {n}"));
    size("FcStr", size_of::<FcStr>());
    size("FcField", size_of::<FcField>());
    size("FcRequest", size_of::<FcRequest>());
    size("FcResponder", size_of::<FcResponder>());
    size("FcAppDescriptor", size_of::<FcAppDescriptor>());
    size("FcServer", size_of::<abi::FcServer>());
    let offsets = [
        ("FcStr.ptr", offset_of!(FcStr, ptr)),
        ("FcStr.len", offset_of!(FcStr, len)),
        ("FcField.name", offset_of!(FcField, name)),
        ("FcField.value", offset_of!(FcField, value)),
        ("FcRequest.size", offset_of!(FcRequest, size)),
        ("FcRequest.flags", offset_of!(FcRequest, flags)),
        (
            "FcRequest.request_method",
            offset_of!(FcRequest, request_method),
        ),
        ("FcRequest.raw_uri", offset_of!(FcRequest, raw_uri)),
        ("FcRequest.script_name", offset_of!(FcRequest, script_name)),
        ("FcRequest.path_info", offset_of!(FcRequest, path_info)),
        (
            "FcRequest.query_string",
            offset_of!(FcRequest, query_string),
        ),
        (
            "FcRequest.server_protocol",
            offset_of!(FcRequest, server_protocol),
        ),
        ("FcRequest.server_name", offset_of!(FcRequest, server_name)),
        ("FcRequest.server_port", offset_of!(FcRequest, server_port)),
        ("FcRequest.remote_addr", offset_of!(FcRequest, remote_addr)),
        ("FcRequest.remote_port", offset_of!(FcRequest, remote_port)),
        ("FcRequest.url_scheme", offset_of!(FcRequest, url_scheme)),
        (
            "FcRequest.content_type",
            offset_of!(FcRequest, content_type),
        ),
        (
            "FcRequest.content_length",
            offset_of!(FcRequest, content_length),
        ),
        ("FcRequest.headers", offset_of!(FcRequest, headers)),
        (
            "FcRequest.header_count",
            offset_of!(FcRequest, header_count),
        ),
        ("FcRequest.peer_addr", offset_of!(FcRequest, peer_addr)),
        ("FcRequest.peer_port", offset_of!(FcRequest, peer_port)),
        ("FcRequest.tls_version", offset_of!(FcRequest, tls_version)),
        ("FcRequest.tls_cipher", offset_of!(FcRequest, tls_cipher)),
        (
            "FcRequest.tls_client_subject",
            offset_of!(FcRequest, tls_client_subject),
        ),
        ("FcRequest.websocket", offset_of!(FcRequest, websocket)),
        ("FcResponder.size", offset_of!(FcResponder, size)),
        ("FcResponder.ctx", offset_of!(FcResponder, ctx)),
        (
            "FcResponder.start_response",
            offset_of!(FcResponder, start_response),
        ),
        ("FcResponder.write", offset_of!(FcResponder, write)),
        ("FcResponder.read_body", offset_of!(FcResponder, read_body)),
        ("FcResponder.trailers", offset_of!(FcResponder, trailers)),
        ("FcResponder.log", offset_of!(FcResponder, log)),
        ("FcResponder.flush", offset_of!(FcResponder, flush)),
        ("FcResponder.sendfile", offset_of!(FcResponder, sendfile)),
        (
            "FcAppDescriptor.abi_version",
            offset_of!(FcAppDescriptor, abi_version),
        ),
        ("FcAppDescriptor.size", offset_of!(FcAppDescriptor, size)),
        ("FcAppDescriptor.name", offset_of!(FcAppDescriptor, name)),
        ("FcAppDescriptor.flags", offset_of!(FcAppDescriptor, flags)),
        ("FcAppDescriptor.init", offset_of!(FcAppDescriptor, init)),
        (
            "FcAppDescriptor.handle",
            offset_of!(FcAppDescriptor, handle),
        ),
        (
            "FcAppDescriptor.shutdown",
            offset_of!(FcAppDescriptor, shutdown),
        ),
        (
            "FcAppDescriptor.attach",
            offset_of!(FcAppDescriptor, attach),
        ),
        (
            "FcAppDescriptor.ws_message",
            offset_of!(FcAppDescriptor, ws_message),
        ),
        (
            "FcAppDescriptor.ws_close",
            offset_of!(FcAppDescriptor, ws_close),
        ),
        ("FcServer.size", offset_of!(abi::FcServer, size)),
        ("FcServer.ws_send", offset_of!(abi::FcServer, ws_send)),
        ("FcServer.ws_close", offset_of!(abi::FcServer, ws_close)),
    ];
    for (name, offset) in offsets {
        lines.push(format!("{name} offset {offset}"));
    }
    let constants: [(&str, i64); 23] = [
        ("FC_ABI_VERSION", abi::ABI_VERSION.into()),
        ("FC_ERR_UNSUPPORTED", abi::FC_ERR_UNSUPPORTED.into()),
        ("FC_ERR_CLOSED", abi::FC_ERR_CLOSED.into()),
        ("FC_ERR_WOULD_BLOCK", abi::FC_ERR_WOULD_BLOCK.into()),
        ("FC_WS_TEXT", abi::FC_WS_TEXT.into()),
        ("FC_WS_BINARY", abi::FC_WS_BINARY.into()),
        ("FC_OK", abi::FC_OK.into()),
        ("FC_ERR_APP", abi::FC_ERR_APP.into()),
        ("FC_ERR_STATE", abi::FC_ERR_STATE.into()),
        ("FC_ERR_INVALID", abi::FC_ERR_INVALID.into()),
        ("FC_ERR_IO", abi::FC_ERR_IO.into()),
        ("FC_ERR_TIMEOUT", abi::FC_ERR_TIMEOUT.into()),
        ("FC_ERR_TOO_LARGE", abi::FC_ERR_TOO_LARGE.into()),
        ("FC_ERR_BAD_REQUEST", abi::FC_ERR_BAD_REQUEST.into()),
        ("FC_APP_THREAD_SAFE", abi::FC_APP_THREAD_SAFE.into()),
        ("FC_REQ_MULTITHREAD", abi::FC_REQ_MULTITHREAD.into()),
        ("FC_REQ_MULTIPROCESS", abi::FC_REQ_MULTIPROCESS.into()),
        ("FC_REQ_RUN_ONCE", abi::FC_REQ_RUN_ONCE.into()),
        ("FC_LOG_DEBUG", abi::FC_LOG_DEBUG.into()),
        ("FC_LOG_INFO", abi::FC_LOG_INFO.into()),
        ("FC_LOG_WARNING", abi::FC_LOG_WARNING.into()),
        ("FC_LOG_ERROR", abi::FC_LOG_ERROR.into()),
        ("FC_LOG_CRITICAL", abi::FC_LOG_CRITICAL.into()),
    ];
    for (name, value) in constants {
        lines.push(format!("{name} value {value}"));
    }
    lines.push(format!("FC_ENTRY_SYMBOL string {}", abi::ENTRY_SYMBOL));
    lines.sort();
    lines
}

#[test]
fn c_header_layout_matches_the_rust_abi() {
    let program = compile_c("ferricorn-layout", &[repo_path("tests/c/layout.c")], &[]);
    let out = std::process::Command::new(&program)
        .output()
        .expect("run the layout program");
    assert!(out.status.success());
    let mut c_lines: Vec<String> = String::from_utf8(out.stdout)
        .expect("text")
        .lines()
        .map(String::from)
        .collect();
    c_lines.sort();
    let rust_lines = rust_layout();
    for line in &rust_lines {
        assert!(c_lines.contains(line), "C side differs: want `{line}`");
    }
    assert_eq!(c_lines, rust_lines);
}

#[test]
fn c_hello_is_served_through_the_real_server() {
    let server = Server::start("c-hello", "workers: 1\n", &[]);
    let response = server.get("/anything");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!\n");
    assert_eq!(response.header("content-length"), Some("14"));
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.header("server"), Some("ferricorn"));
    assert!(response.header("date").is_some());
    let post = server.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert!(
        server.log_text().contains("Using app `c-hello`"),
        "{}",
        server.log_text()
    );
}

#[test]
fn descriptor_and_symbol_checks_name_plugin_expected_and_found() {
    let source = [repo_path("tests/c/descriptor.c")];
    let flags = ["-fPIC", "-shared"];
    let cases: [(&str, &str, String); 3] = [
        (
            "libbent_version.so",
            "-DDESCRIPTOR_VERSION=2",
            format!(
                "ABI version mismatch: expected {}, found 2",
                abi::ABI_VERSION
            ),
        ),
        (
            "libbent_size.so",
            "-DDESCRIPTOR_SIZE=8",
            format!(
                "descriptor too small: expected at least {} bytes, found 8",
                FcAppDescriptor::SIZE_BEFORE_ATTACH
            ),
        ),
        (
            "libbent_entry.so",
            "-DNO_ENTRY",
            "missing entry symbol `ferricorn_app`".to_string(),
        ),
    ];
    for (file, define, message) in cases {
        let path = compile_c(file, &source, &[&flags[..], &[define]].concat());
        let shown = path.display().to_string();
        let (status, out) = run_to_exit(&["--check-config", &shown]);
        assert_eq!(status.code(), Some(1), "{define}: {out}");
        assert!(out.contains(&shown), "{define}: names the plugin: {out}");
        assert!(
            out.contains(&message),
            "{define}: want `{message}` in {out}"
        );
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    }
    // The same descriptor unbent loads.
    let good = compile_c("libbent_good.so", &source, &flags);
    let (status, out) = run_to_exit(&["--check-config", &good.display().to_string()]);
    assert_eq!(status.code(), Some(0), "{out}");
}

/// Byte `i` of the test upload: not periodic in any small power of two, so a lost, doubled or
/// reordered chunk shows.
fn upload_byte(i: usize) -> u8 {
    ((i * 31 + i / 4093) % 251) as u8
}

/// VmHWM (peak resident set) of `pid` in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

#[test]
fn chunked_64_mib_upload_round_trips_with_bounded_worker_memory() {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 61_440;
    let server = Server::start("echo", "workers: 1\nlimit_request_body: 0\n", &[]);
    let log = server.log_text();
    let worker = *common::booted_pids(&log)
        .first()
        .unwrap_or_else(|| panic!("{log}"));
    let stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer
            .write_all(b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut sent = 0;
        while sent < TOTAL {
            let n = CHUNK.min(TOTAL - sent);
            let chunk: Vec<u8> = (sent..sent + n).map(upload_byte).collect();
            writer.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
            writer.write_all(&chunk).unwrap();
            writer.write_all(b"\r\n").unwrap();
            sent += n;
        }
        writer.write_all(b"0\r\n\r\n").unwrap();
    });
    let response = read_response(&mut BufReader::new(stream)).unwrap();
    sender.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), TOTAL, "every byte came back");
    let first_bad = (0..TOTAL).find(|&i| response.body[i] != upload_byte(i));
    assert_eq!(first_bad, None, "the body round-trips intact");
    let peak_mib = peak_rss_kib(worker) / 1024;
    eprintln!("worker peak RSS after a 64 MiB upload: {peak_mib} MiB");
    assert!(
        peak_mib < 24,
        "worker peak RSS {peak_mib} MiB: the body must be streamed, not buffered"
    );
}

#[test]
fn body_limits_give_413_before_or_while_reading() {
    let server = Server::start("echo", "workers: 1\nlimit_request_body: 1000\n", &[]);
    // Content-Length over the limit: refused before the app runs, so no 100 Continue either.
    let (response, rest) = server.send_then_close(
        b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(response.status, 413, "no 100 Continue first");
    assert!(response.closes() && rest.is_empty());
    // A chunked body crosses the limit while the app reads it.
    let chunk = "x".repeat(600);
    let raw = format!(
        "POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let response = server.send(raw.as_bytes());
    assert_eq!(response.status, 413);
    assert!(response.closes());
    // At the limit exactly, it is served.
    let body = "y".repeat(1000);
    let raw = format!("POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{body}");
    assert_eq!(server.send(raw.as_bytes()).text(), body);
}

#[test]
fn stalled_body_gets_408_when_nothing_was_sent() {
    let server = Server::start("echo", "workers: 1\ntimeout: 2\n", &[]);
    let response =
        server.send(b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    assert_eq!(response.status, 408);
    assert!(response.closes());
    assert_eq!(server.get("/raw").status, 200, "the worker still serves");
}

#[test]
fn start_response_rules() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    let restart = server.get("/response?case=restart");
    assert_eq!(restart.status, 201, "the last start_response wins");
    assert_eq!(restart.header("x-second"), Some("yes"));
    assert_eq!(restart.header("x-first"), None);
    assert_eq!(restart.text(), "second wins\n");

    let late = server.get("/response?case=late");
    assert_eq!(late.status, 200, "the head is fixed by the first body byte");
    assert_eq!(
        late.text(),
        "a\nlate start_response refused: call made in the wrong state\n"
    );

    for case in ["crlf", "nul", "status"] {
        let mut stream = server.connect();
        write!(
            stream,
            "GET /response?case={case} HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 500 "), "{case}: {text:?}");
        assert!(!text.contains("Injected"), "{case}: {text:?}");
        assert!(!text.contains("X-Evil"), "{case}: {text:?}");
    }
    let log = wait_for("three refusals in the log", Duration::from_secs(5), || {
        let log = server.log_text();
        (log.matches("refused response").count() == 3).then_some(log)
    });
    assert!(log.contains("invalid header field \"X-Evil\""), "{log}");
    assert!(log.contains("invalid status 42"), "{log}");
    assert_eq!(server.get("/pid").status, 200, "the worker still serves");
}

#[test]
fn first_generation_failing_init_makes_the_master_exit_nonzero() {
    let dir = common::scratch_dir();
    let marker = dir.join("initialised");
    // The startup trial load's init succeeds (it creates the marker); every worker's fails.
    let setting = format!("fail_init_marker={}", marker.display());
    let mut server = Server::spawn("chaos", "workers: 2\n", &["--app-config", &setting]);
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("exists: not the first init"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tasks_app_routes_with_parameters_404_and_405() {
    let dir = common::scratch_dir();
    let database = format!("database={}", dir.join("tasks.sqlite3").display());
    let server = Server::start("tasks", "workers: 1\n", &["--app-config", &database]);
    let id = create_task(&server, "water the plants");
    let shown = server.get(&format!("/tasks/{id}"));
    assert_eq!(shown.status, 200);
    assert!(
        shown.text().contains("water the plants"),
        "{}",
        shown.text()
    );
    let listed = server.get("/tasks");
    assert!(listed.text().contains("water the plants"));
    let deleted = server.send(format!("DELETE /tasks/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    assert_eq!(deleted.status, 204);
    assert_eq!(server.get(&format!("/tasks/{id}")).status, 404, "gone");
    assert_eq!(server.get("/nowhere").status, 404, "no route");
    let put = server.send(b"PUT /tasks HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST, HEAD"));
    let bad = server.send(b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n{{{");
    assert_eq!(bad.status, 400);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn c_wordcount_reads_bodies_trailers_and_config() {
    let server = Server::start(
        "c-wordcount",
        "workers: 1\n",
        &["--app-config", "stats_path=/counts"],
    );
    let text = "hello world\nfoo  bar baz\n";
    let counted = server.send(
        format!(
            "POST /wc HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    );
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert_eq!(counted.header("content-type"), Some("application/json"));
    assert_eq!(
        counted.text(),
        "{\"bytes\":25,\"lines\":2,\"words\":5,\"trailers\":0}\n"
    );
    let chunked = server.send(
        b"PUT / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na b\r\n0\r\nX-Sum: 1\r\n\r\n",
    );
    assert_eq!(
        chunked.text(),
        "{\"bytes\":3,\"lines\":0,\"words\":2,\"trailers\":1}\n"
    );
    assert_eq!(
        server.get("/counts").text(),
        "{\"requests\":2,\"bytes\":28}\n"
    );
    let other = server.send(b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(other.status, 405);
    assert_eq!(other.header("allow"), Some("POST, PUT"));
    let over =
        server.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert_eq!(over.status, 400, "a read_body error returned by the app");

    let path = plugin("c-wordcount").display().to_string();
    let (status, out) = run_to_exit(&["--check-config", "--app-config", "stats_path=nope", &path]);
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains("stats_path must start with '/' (got \"nope\")"),
        "{out}"
    );
}

#[test]
fn readme_c_plugin_compiles_and_serves() {
    let readme =
        std::fs::read_to_string(repo_path("worker-apps/README.md")).expect("the plugin guide");
    let section = readme.split("### In C").nth(1).expect("an `In C` section");
    let code = section
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a C code block");
    let dir = common::scratch_dir();
    let source = dir.join("hello.c");
    std::fs::write(&source, code).unwrap();
    let plugin = compile_c("libreadme_hello.so", &[source], &["-fPIC", "-shared"]);
    let server = Server::start(&plugin.display().to_string(), "workers: 1\n", &[]);
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello, World!\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_plugin_built_against_the_responder_before_flush_still_works() {
    // The responder grew (`flush`); a plugin compiled against the older, smaller
    // struct must be served unchanged, and the size rule tells a newer one what it has.
    assert!(FcResponder::SIZE_BEFORE_FLUSH < size_of::<FcResponder>() as u32);
    assert!(FcRequest::SIZE_BEFORE_PEER < size_of::<FcRequest>() as u32);
    assert!(FcRequest::SIZE_BEFORE_TLS < size_of::<FcRequest>() as u32);
    let source = [repo_path("tests/c/responder_1_0.c")];
    let plugin = compile_c("libresponder_1_0.so", &source, &["-fPIC", "-shared"]);
    let server = Server::start(&plugin.display().to_string(), "workers: 1\n", &[]);
    let response = server.get("/");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.body, vec![b'o'; 20000]);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    let response = server.get("/has-flush");
    assert_eq!(response.text(), "flush: yes\n");
}

#[test]
fn a_plugin_is_a_file_path_and_load_errors_give_the_loaders_reason() {
    // A bare file name is the file in the working directory, not a library-path search
    // (the server runs without cargo's LD_LIBRARY_PATH here).
    let plugin = plugin("hello");
    let dir = plugin.parent().unwrap().to_path_buf();
    let out = std::process::Command::new(common::binary())
        .args(["--check-config", "libhello.so"])
        .current_dir(&dir)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Not a shared object: the dynamic loader's own words.
    let scratch = common::scratch_dir();
    let bogus = scratch.join("bogus.so");
    std::fs::write(&bogus, vec![b'x'; 4096]).unwrap();
    let (status, out) = run_to_exit(&["--check-config", &bogus.display().to_string()]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("invalid ELF header"), "{out}");
    assert!(!out.contains("dlopen failed"), "{out}");
    let _ = std::fs::remove_dir_all(scratch);
}

/// POSTs a task with `title` to the tasks app; returns its id.
fn create_task(server: &Server, title: &str) -> u64 {
    let body = format!(r#"{{"title": "{title}"}}"#);
    let created = server.send(
        format!(
            "POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let task: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    task["id"].as_u64().expect("an id")
}

#[test]
fn tasks_are_shared_by_workers_and_survive_worker_and_server_restarts() {
    let dir = common::scratch_dir();
    let database = format!("database={}", dir.join("tasks.sqlite3").display());
    let args = ["--app-config", database.as_str()];
    let server = Server::start("tasks", "workers: 2\n", &args);
    let id = create_task(&server, "shared by all workers");
    // Every worker sees it: new connections go to either worker.
    for _ in 0..10 {
        let listed = server.get("/tasks?limit=1000");
        assert!(
            listed.text().contains("shared by all workers"),
            "{}",
            listed.text()
        );
    }
    // Both workers killed: their replacements still have it.
    let workers = common::booted_pids(&server.log_text());
    for &pid in &workers {
        // SAFETY: kill(2) on workers this test's server forked.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_for("two new workers", Duration::from_secs(20), || {
        (common::booted_pids(&server.log_text()).len() >= workers.len() + 2).then_some(())
    });
    let shown = wait_for(
        "the task from a new worker",
        Duration::from_secs(10),
        || {
            server
                .try_get(&format!("/tasks/{id}"))
                .ok()
                .filter(|r| r.status == 200)
        },
    );
    assert!(shown.text().contains("shared by all workers"));
    drop(server);
    // A new server on the same file.
    let server = Server::start("tasks", "workers: 2\n", &args);
    assert_eq!(
        server.get(&format!("/tasks/{id}")).status,
        200,
        "kept across a restart"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
