//! Operations (issue #4): access log format, process environment and privileges, titles.

mod common;

use common::{booted_pids, pid_in, wait_for, Server};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The first worker pid the log shows.
fn first_worker(server: &Server) -> i32 {
    wait_for("a booted worker", Duration::from_secs(10), || {
        booted_pids(&server.log_text()).first().copied()
    })
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

#[test]
fn access_log_uses_gunicorns_atoms() {
    let dir = common::scratch_dir();
    let access = dir.join("access.log");
    let config = format!(
        "workers: 1\naccesslog: {}\naccess_log_format: '%(h)s \"%(r)s\" %(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(b)s %(u)s {{%({{X-Request-Id}}i)s}} {{%({{Content-Type}}o)s}} %(p)s %(D)s'\n",
        access.display()
    );
    let server = Server::start("chaos", &config, &[]);
    let response = server.send(
        b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    let line = wait_for("the access log line", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&access).ok()?;
        text.lines()
            .find(|l| l.contains("/sleep?ms=1 HTTP/1.1\" GET"))
            .map(String::from)
    });
    let worker = first_worker(&server);
    let expected = format!(
        "127.0.0.1 \"GET /sleep?ms=1 HTTP/1.1\" GET /sleep ms=1 HTTP/1.1 200 11 11 alice {{abc-123}} {{text/plain}} <{worker}> "
    );
    assert!(line.starts_with(&expected), "{line}\nwant {expected}");
    let micros: u64 = line
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("D is a number");
    assert!(micros >= 1000, "D counts the 1 ms sleep: {micros}");
    // A bad format is refused at startup, naming the key.
    let (status, out) = common::run_to_exit(&[
        "--access-logformat",
        "%(h)s %(nope)s",
        "--check-config",
        &common::plugin("hello").display().to_string(),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains("--access-logformat") && out.contains("unknown atom %(nope)s"),
        "{out}"
    );
}

#[test]
fn raw_env_chdir_umask_and_titles() {
    let dir = common::scratch_dir();
    let socket = dir.join("app.sock");
    let plugin = common::plugin("chaos");
    let plugin_dir = plugin.parent().unwrap();
    // app.path is relative to chdir; the unix socket is created under umask 077.
    let config = format!(
        "workers: 1\nbind: [\"127.0.0.1:0\", \"unix:{}\"]\nchdir: {}\numask: \"077\"\nraw_env: [\"FERRICORN_TEST_GREETING=hi there\"]\nproc_name: shop\n",
        socket.display(),
        plugin_dir.display()
    );
    let server = Server::start("libchaos.so", &config, &[]);
    assert_eq!(
        server.get("/env?name=FERRICORN_TEST_GREETING").text(),
        "hi there\n"
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "socket created under umask 077: {mode:o}");
    assert_eq!(cmdline(server.pid()), "ferricorn: master [shop]");
    assert_eq!(cmdline(first_worker(&server)), "ferricorn: worker [shop]");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid())).unwrap();
    assert_eq!(comm.trim(), "ferricorn: mast");
}

#[test]
fn workers_switch_to_user_and_group() {
    let root = nix::unistd::geteuid().is_root();
    let (user, group) = ("nobody", "nogroup");
    let Ok(Some(nobody)) = nix::unistd::User::from_name(user) else {
        panic!("this test needs a `nobody` user");
    };
    let config = format!("workers: 1\nuser: {user}\ngroup: {group}\n");
    if !root {
        // Without privileges the switch fails: the first generation cannot boot and the
        // master exits 3 with the reason.
        let mut server = Server::spawn("hello", &config, &[]);
        let status = server.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(3));
        assert!(
            server.log_text().contains("cannot switch to"),
            "{}",
            server.log_text()
        );
        return;
    }
    let server = Server::start("hello", &config, &[]);
    let worker = first_worker(&server);
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert!(
        uids.iter().all(|u| *u == nobody.uid.to_string()),
        "worker runs as nobody: {uid_line}"
    );
    let master = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(
        master.contains("Uid:\t0\t"),
        "the master keeps root to bind and reload"
    );
    assert_eq!(server.get("/").status, 200);
    // An unknown user is a config error naming the key.
    let (code, out) = common::run_to_exit(&["--user", "no-such-user-here", "--check-config"]);
    assert_eq!(code.code(), Some(1));
    assert!(
        out.contains("--user") && out.contains("no such user"),
        "{out}"
    );
}

/// A datagram socket standing in for systemd's notify socket in `dir`, and its path for
/// NOTIFY_SOCKET.
fn fake_systemd(dir: &std::path::Path) -> (std::os::unix::net::UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (socket, path.display().to_string())
}

/// Reads notifications from the fake systemd socket until one contains `want` (at most 20 s).
fn expect_notification(socket: &std::os::unix::net::UnixDatagram, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no `{want}` notification"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == want) {
                return message;
            }
        }
    }
}

#[test]
fn speaks_the_systemd_notify_protocol() {
    let dir = common::scratch_dir();
    let (socket, notify) = fake_systemd(&dir);
    let env = [
        ("NOTIFY_SOCKET", notify.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let server = Server::spawn_env("hello", "workers: 2\n", &[], &env);
    let ready = expect_notification(&socket, "READY=1");
    assert!(ready.contains("STATUS=serving, generation 1"), "{ready}");
    server.wait_ready();
    expect_notification(&socket, "WATCHDOG=1");
    server.signal(libc::SIGHUP);
    let reloading = expect_notification(&socket, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = expect_notification(&socket, "READY=1");
    assert!(ready.contains("generation 2, 2 workers"), "{ready}");
    assert_eq!(server.get("/").status, 200);
    server.signal(libc::SIGTERM);
    expect_notification(&socket, "STOPPING=1");
}

#[test]
fn serves_on_sockets_passed_by_systemd() {
    socket_activation(None);
}

/// TLS applies to activated sockets too (issue #17).
#[test]
fn serves_tls_on_sockets_passed_by_systemd() {
    common::Pki::with(|pki| socket_activation(Some(pki)));
}

/// Starts the server as systemd's socket activation does (over TLS with `tls`), reloads it.
fn socket_activation(tls: Option<&common::Pki>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let activated = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = activated.local_addr().unwrap().port();
    let raw = activated.as_raw_fd();
    let dir = common::scratch_dir();
    let log = dir.join("error.log");
    let config = dir.join("ferricorn.yaml");
    std::fs::write(
        &config,
        format!(
            "bind: [\"127.0.0.1:0\"]\nworkers: 1\nerrorlog: {}\napp:\n  path: {}\n{}",
            log.display(),
            common::plugin("hello").display(),
            tls.map(|pki| pki.config()).unwrap_or_default()
        ),
    )
    .unwrap();
    // As systemd does: the socket is fd 3, LISTEN_PID is the server's own pid (the shell's,
    // which `exec` keeps).
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec {} -c {}",
        common::binary().display(),
        config.display()
    );
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the forked child before exec
    // and only put the test's listening socket at fd 3 without close-on-exec (dup2 clears
    // it on the copy; if the socket already is fd 3, fcntl clears it).
    unsafe {
        command.pre_exec(move || {
            let ok = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(raw, 3) >= 0
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = command.spawn().expect("start ferricorn under sh");
    // The test's copy of the socket (the same open socket), to read its options.
    let shared_socket = activated;
    let server = Server {
        child: Some(child),
        port,
        dir,
        log,
        config,
        tls: tls.map(|pki| pki.client(false)),
    };
    let listening = server.wait_listening();
    assert_eq!(
        listening, port,
        "serves on the passed socket, not on `bind`"
    );
    server.wait_ready();
    assert!(
        server
            .log_text()
            .contains("Using 1 socket(s) from systemd (web)"),
        "{}",
        server.log_text()
    );
    // A reload keeps the activated socket, and its options: the unit did not ask for
    // TCP_DEFER_ACCEPT (DeferAcceptSec=), so `defer_accept` (on by default) leaves it off.
    server.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(20), || {
        server.log_text().contains("Reload complete").then_some(())
    });
    assert_eq!(server.get("/").status, 200);
    assert_eq!(common::tcp_defer_accept(&shared_socket), 0);
}

#[test]
fn usr2_upgrade_then_winch_and_term_lose_no_request() {
    usr2_upgrade("");
}

/// With `reuseport` the old master hands its per-worker sockets to the new master, whose
/// workers accept from them: retiring the old master closes no queue (closing a
/// SO_REUSEPORT socket resets the connections waiting in it).
#[test]
fn usr2_upgrade_with_reuseport_loses_no_request() {
    let log = usr2_upgrade("reuseport: true\n");
    assert!(
        log.contains("handed over by the previous master, and 1 worker socket(s)"),
        "{log}"
    );
}

/// USR2, then WINCH and TERM to the old master, under load (4 clients); `extra`: more
/// configuration. Returns the log.
fn usr2_upgrade(extra: &str) -> String {
    let dir = common::scratch_dir();
    let pidfile = dir.join("ferricorn.pid");
    let oldbin = dir.join("ferricorn.pid.oldbin");
    let config = format!("workers: 2\npidfile: {}\n{extra}", pidfile.display());
    let (notify, notify_env) = fake_systemd(&dir);
    let mut server = Server::spawn_env(
        "chaos",
        &config,
        &[],
        &[("NOTIFY_SOCKET", notify_env.as_str())],
    );
    server.wait_ready();
    let old = server.pid();
    assert_eq!(pid_in(&pidfile), Some(old));
    let log_of = |server: &Server| server.log_text();
    let mut new = 0;
    let failures = common::load_while(
        server.port,
        4,
        "/pid",
        || {
            // USR2, wait for the new master's workers, WINCH and TERM the old master.
            server.signal(libc::SIGUSR2);
            new = wait_for("the new pidfile", Duration::from_secs(20), || {
                pid_in(&pidfile).filter(|p| *p != old && pid_in(&oldbin) == Some(old))
            });
            wait_for("the new master's workers", Duration::from_secs(20), || {
                (booted_pids(&log_of(&server)).len() >= 4).then_some(())
            });
            server.signal(libc::SIGWINCH);
            wait_for("the old workers to stop", Duration::from_secs(20), || {
                let log = log_of(&server);
                let first: Vec<i32> = booted_pids(&log).into_iter().take(2).collect();
                first.iter().all(|p| common::exited(&log, *p)).then_some(())
            });
            server.signal(libc::SIGTERM);
            true
        },
        50,
    );
    // The new master is stopped at the end, also when an assertion fails.
    let _new_master = common::TermOnDrop(new);
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // The new master told systemd it is the main process now.
    expect_notification(&notify, &format!("MAINPID={new}"));
    assert_eq!(
        server.get("/").status,
        404,
        "the new master serves (chaos: 404 for /)"
    );
    assert_eq!(
        pid_in(&pidfile),
        Some(new),
        "the pidfile is the new master's"
    );
    assert!(!oldbin.exists(), "the old master removed its .oldbin");
    server.stop_new_master(new);
    server.log_text()
}

#[test]
fn failed_upgrade_leaves_the_old_master_in_charge() {
    let dir = common::scratch_dir();
    let pidfile = dir.join("ferricorn.pid");
    let config = format!("workers: 1\npidfile: {}\n", pidfile.display());
    let server = Server::start("hello", &config, &[]);
    // The new master will read a broken configuration and exit 1.
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&server.config, format!("{text}no_such_setting: 1\n")).unwrap();
    server.signal(libc::SIGUSR2);
    wait_for("the failed upgrade", Duration::from_secs(20), || {
        server.log_text().contains("stays in charge").then_some(())
    });
    assert_eq!(
        pid_in(&pidfile),
        Some(server.pid()),
        "the pidfile is restored"
    );
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn usr1_reopens_logs_after_logrotate_moves_them() {
    let dir = common::scratch_dir();
    let access = dir.join("access.log");
    let config = format!("workers: 2\naccesslog: {}\n", access.display());
    let server = Server::start("hello", &config, &[]);
    assert_eq!(server.get("/before").status, 200);
    // logrotate without copytruncate: rename, then USR1.
    std::fs::rename(&access, dir.join("access.log.1")).unwrap();
    std::fs::rename(&server.log, dir.join("error.log.1")).unwrap();
    server.signal(libc::SIGUSR1);
    wait_for(
        "the error log to be reopened",
        Duration::from_secs(10),
        || {
            server
                .log_text()
                .contains("reopened log files")
                .then_some(())
        },
    );
    // Workers reopen on their next tick; every request after that lands in the new file.
    wait_for(
        "requests logged in the new access log",
        Duration::from_secs(10),
        || {
            let _ = server.get("/after");
            let text = std::fs::read_to_string(&access).ok()?;
            (text.matches("GET /after").count() >= 3).then_some(())
        },
    );
    let rotated = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
    assert!(rotated.contains("GET /before"), "{rotated}");
}

#[test]
fn winch_stops_the_workers_and_hup_brings_them_back() {
    let server = Server::start("hello", "workers: 2\n", &[]);
    server.signal(libc::SIGWINCH);
    wait_for("both workers to stop", Duration::from_secs(10), || {
        let log = server.log_text();
        booted_pids(&log)
            .iter()
            .all(|p| common::exited(&log, *p))
            .then_some(())
    });
    assert!(
        server.log_text().contains("Listening at"),
        "the master keeps its sockets"
    );
    server.signal(libc::SIGHUP);
    server.wait_ready();
}

/// Issue #23: a slow trial load does not stop the watchdog pings (systemd would kill a
/// master that stays silent past WatchdogSec).
#[test]
fn the_watchdog_is_pinged_while_a_slow_reload_loads() {
    let dir = common::scratch_dir();
    let (socket, notify) = fake_systemd(&dir);
    let env = [
        ("NOTIFY_SOCKET", notify.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let server = Server::spawn_env("chaos", "workers: 1\n", &[], &env);
    expect_notification(&socket, "READY=1");
    // The new configuration's app takes 3 s to initialise.
    let yaml = std::fs::read_to_string(&server.config).unwrap();
    let slow = yaml.replacen(
        "app:\n",
        "app:\n  config:\n    init_sleep_ms: \"3000\"\n",
        1,
    );
    std::fs::write(&server.config, slow).unwrap();
    server.signal(libc::SIGHUP);
    expect_notification(&socket, "RELOADING=1");
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !message.contains("READY=1"),
                "the reload finished early: {message}"
            );
            pings += message.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!(
        pings >= 4,
        "{pings} watchdog pings in the first 2 s of the trial load"
    );
    let ready = expect_notification(&socket, "READY=1");
    assert!(ready.contains("generation 2"), "{ready}");
}

/// SCHED_OTHER and SCHED_BATCH as /proc reports them (sched(7)).
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// The scheduling policy of each thread of process `pid`: field 41 of
/// /proc/PID/task/TID/stat (proc(5)), counted after the command's closing parenthesis.
fn thread_policies(pid: i32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
            after_comm.split(' ').nth(41 - 3).unwrap().parse().unwrap()
        })
        .collect()
}

/// `cpu_scheduling_policy`: every thread of a worker runs under SCHED_BATCH by default and
/// under SCHED_OTHER when asked; the master keeps the policy it was started with.
#[test]
fn workers_run_under_the_cpu_scheduling_policy() {
    for (config, want) in [
        ("", SCHED_BATCH),
        ("cpu_scheduling_policy: other\n", SCHED_OTHER),
        ("cpu_scheduling_policy: batch\n", SCHED_BATCH),
    ] {
        let server = Server::start("hello", &format!("workers: 1\nthreads: 2\n{config}"), &[]);
        assert_eq!(server.get("/").status, 200);
        let worker = thread_policies(first_worker(&server));
        assert!(
            worker.len() >= 3 && worker.iter().all(|&p| p == want),
            "{config:?}: worker threads' policies {worker:?}, want {want}"
        );
        let master = thread_policies(server.pid());
        assert!(
            master.iter().all(|&p| p == SCHED_OTHER),
            "{config:?}: master {master:?}"
        );
    }
}
