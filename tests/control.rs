//! `control_socket` and `ferricorn ctl` (issue #15): gunicorn's command names against a real
//! master.

mod common;

use common::{booted_pids, ctl, exited, wait_for, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn ok(socket: &Path, args: &[&str]) -> String {
    let (code, out, err) = ctl(socket, args);
    assert_eq!(code, 0, "ctl {args:?}: {out}{err}");
    out
}

fn start() -> (Server, std::path::PathBuf) {
    let dir = common::scratch_dir();
    let socket = dir.join("ferricorn.ctl");
    let config = format!("workers: 2\ncontrol_socket: {}\n", socket.display());
    let server = Server::start("chaos", &config, &[]);
    wait_for("both workers", Duration::from_secs(20), || {
        (booted_pids(&server.log_text()).len() == 2).then_some(())
    });
    (server, socket)
}

#[test]
fn show_commands_and_the_socket_mode() {
    let (server, socket) = start();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control_socket_mode defaults to 600");
    for _ in 0..5 {
        assert_eq!(server.get("/pid").status, 200);
    }
    let workers = ok(&socket, &["show", "workers"]);
    let lines: Vec<&str> = workers.lines().collect();
    assert!(
        lines[0].starts_with("PID") && lines[0].contains("REQUESTS"),
        "{workers}"
    );
    assert_eq!(lines.len(), 3, "a header and two workers: {workers}");
    for pid in booted_pids(&server.log_text()) {
        assert!(workers.contains(&pid.to_string()), "{workers}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["show", "workers", "--json"])).unwrap();
    let rows = json["result"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r["state"] == "ready" && r["threads"] == 4));
    let stats = ok(&socket, &["show", "stats"]);
    // The five GETs, plus the harness's readiness request.
    assert!(
        stats.contains("workers: 2") && stats.contains("requests: 6"),
        "{stats}"
    );
    let listeners = ok(&socket, &["show", "listeners"]);
    assert!(
        listeners.contains(&format!("http://127.0.0.1:{}", server.port)),
        "{listeners}"
    );
    let config = ok(&socket, &["show", "config"]);
    assert!(
        config.contains("workers: 2") && config.contains("control_socket:"),
        "{config}"
    );
    let (code, _, err) = ctl(&socket, &["restart", "everything"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown command `restart everything`"),
        "{err}"
    );
    let (code, _, err) = ctl(Path::new("/nonexistent/ferricorn.ctl"), &["show", "stats"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/ferricorn.ctl"), "{err}");
}

#[test]
fn worker_commands_reload_reopen_and_shutdown() {
    let (mut server, socket) = start();
    assert!(ok(&socket, &["worker", "add"]).contains("workers: 3"));
    wait_for("a third worker", Duration::from_secs(20), || {
        (booted_pids(&server.log_text()).len() == 3).then_some(())
    });
    assert!(ok(&socket, &["worker", "remove", "2"]).contains("workers: 1"));
    wait_for("two workers to leave", Duration::from_secs(20), || {
        let log = server.log_text();
        (booted_pids(&log)
            .iter()
            .filter(|&&p| exited(&log, p))
            .count()
            == 2)
            .then_some(())
    });
    let log = server.log_text();
    let alive = *booted_pids(&log)
        .iter()
        .find(|&&p| !exited(&log, p))
        .unwrap();
    assert!(ok(&socket, &["worker", "kill", &alive.to_string()]).contains("stopping"));
    wait_for(
        "the killed worker's replacement",
        Duration::from_secs(20),
        || {
            let log = server.log_text();
            (exited(&log, alive) && booted_pids(&log).len() == 4).then_some(())
        },
    );
    let (code, _, err) = ctl(&socket, &["worker", "kill", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no worker with pid 1"), "{err}");
    assert!(ok(&socket, &["reload"]).contains("generation: 2"));
    // The reloaded configuration says 2 workers again: two of the new generation.
    wait_for("the new generation", Duration::from_secs(20), || {
        (booted_pids(&server.log_text()).len() == 6).then_some(())
    });
    assert_eq!(ok(&socket, &["reopen"]).trim(), "reopened");
    assert_eq!(server.get("/pid").status, 200);
    assert_eq!(ok(&socket, &["shutdown"]).trim(), "stopping");
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn shutdown_quick_stops_at_once() {
    let (mut server, socket) = start();
    let port = server.port;
    // A request still in the app does not hold up a quick stop.
    let sleeper = std::thread::spawn(move || {
        let mut client = common::Client::new(port);
        client.get("/sleep?ms=20000").is_err()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ok(&socket, &["shutdown", "quick"]).trim(), "stopping");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(sleeper.join().unwrap(), "the sleeping request was cut off");
    // A stopping or stopped server takes no more commands.
    let (code, _, err) = ctl(&socket, &["show", "stats"]);
    assert_eq!(code, 1, "{err}");
}

/// Sends `input` as one write to the control socket; the raw answer.
fn raw(socket: &Path, input: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn no_command_can_take_the_master_down() {
    let (server, socket) = start();
    for count in [
        "9223372036854775807",
        "18446744073709551614",
        "18446744073709551616",
        "1025",
    ] {
        let (code, _, err) = ctl(&socket, &["worker", "add", count]);
        assert_eq!(code, 1, "worker add {count}: {err}");
        assert!(err.contains("not a count from 1 to 1024"), "{err}");
    }
    // Within the bound per command, but past it in total.
    let (code, _, err) = ctl(&socket, &["worker", "add", "1024"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exceed the maximum of 1024"), "{err}");
    let answer = raw(&socket, b"worker add 1\nshutdown quick\n");
    assert!(
        answer.contains("one command per connection"),
        "two commands in one write are refused as such: {answer}"
    );
    let stats = ok(&socket, &["--json", "show", "stats"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["result"]["workers_wanted"], 2, "{stats}");
    assert_eq!(server.get("/pid").status, 200, "the master serves on");
    assert!(!server.log_text().contains("panicked"));
}
