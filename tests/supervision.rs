//! Master behaviour: respawn, reload (HUP), graceful stop (TERM), over the real binary.

mod common;

use common::{booted_pids, exited, load_while, wait_for, Client, Server};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn killed_worker_is_replaced() {
    let server = Server::start("chaos", "workers: 1\n", &[]);
    let victim: i32 = server.get("/pid").text().trim().parse().unwrap();
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let replacement = wait_for("a replacement worker", Duration::from_secs(15), || {
        let pid: i32 = server.try_get("/pid").ok()?.text().trim().parse().ok()?;
        (pid != victim).then_some(pid)
    });
    assert_ne!(replacement, victim);
    assert!(server
        .log_text()
        .contains(&format!("Worker (pid:{victim}) was sent SIGKILL!")));
}

#[test]
fn five_hups_under_load_lose_nothing_and_replace_every_worker() {
    let server = Server::start("chaos", "workers: 2\ngraceful_timeout: 10\n", &[]);
    let first = wait_for("two booted workers", Duration::from_secs(10), || {
        let pids = booted_pids(&server.log_text());
        (pids.len() >= 2).then_some(pids)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, failures, port) =
                (stop.clone(), ok.clone(), failures.clone(), server.port);
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match client.get("/pid") {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    for round in 1..=5 {
        wait_for("requests flowing", Duration::from_secs(10), || {
            (ok.load(Ordering::Relaxed) > 200 * round).then_some(())
        });
        server.signal(libc::SIGHUP);
        let complete = format!("Reload complete: generation {}", round + 1);
        wait_for("the reload", Duration::from_secs(20), || {
            server.log_text().contains(&complete).then_some(())
        });
    }
    wait_for(
        "every first-generation worker to exit",
        Duration::from_secs(20),
        || {
            let log = server.log_text();
            first.iter().all(|pid| exited(&log, *pid)).then_some(())
        },
    );
    let served_before = ok.load(Ordering::Relaxed);
    wait_for(
        "requests after the reloads",
        Duration::from_secs(10),
        || (ok.load(Ordering::Relaxed) > served_before + 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    for _ in 0..20 {
        let pid: i32 = server.get("/pid").text().trim().parse().unwrap();
        assert!(
            !first.contains(&pid),
            "request served by first-generation worker {pid}"
        );
    }
}

#[test]
fn failed_reload_keeps_serving() {
    let server = Server::start("hello", "workers: 1\n", &[]);
    let good = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&server.config, format!("{good}threads: zero\n")).unwrap();
    server.signal(libc::SIGHUP);
    wait_for("the reload to fail", Duration::from_secs(10), || {
        server
            .log_text()
            .contains("Reload failed, keeping the current workers")
            .then_some(())
    });
    assert!(server.log_text().contains("key `threads`"));
    let broken_plugin = good.replace("libhello.so", "libmissing.so");
    std::fs::write(&server.config, broken_plugin).unwrap();
    server.signal(libc::SIGHUP);
    wait_for("the second reload to fail", Duration::from_secs(10), || {
        server
            .log_text()
            .contains("libmissing.so: no such file")
            .then_some(())
    });
    assert_eq!(server.get("/").status, 200);
    assert!(!server.log_text().contains("starting generation 2"));
}

#[test]
fn term_lets_in_flight_request_finish_and_master_exits_zero() {
    let mut server = Server::start("chaos", "workers: 1\n", &[]);
    let port = server.port;
    let slow = std::thread::spawn(move || Client::new(port).get("/sleep?ms=1500"));
    wait_for(
        "the request to reach the app",
        Duration::from_secs(5),
        || {
            server
                .log_text()
                .contains("chaos: sleeping 1500 ms")
                .then_some(())
        },
    );
    server.signal(libc::SIGTERM);
    let response = slow.join().unwrap().expect("in-flight request completes");
    assert_eq!(response.text(), "slept 1500 ms\n");
    assert!(
        response.closes(),
        "the answer during a stop closes the connection"
    );
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let server = Server::start("hello", "workers: 1\n", &[]);
    server.signal(libc::SIGTTIN);
    wait_for("a second worker", Duration::from_secs(10), || {
        (booted_pids(&server.log_text()).len() == 2).then_some(())
    });
    server.signal(libc::SIGTTOU);
    wait_for("a worker to retire", Duration::from_secs(10), || {
        let log = server.log_text();
        booted_pids(&log)
            .iter()
            .any(|pid| exited(&log, *pid))
            .then_some(())
    });
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn failing_init_stops_startup_with_the_apps_message() {
    // The startup trial load runs the app's init in a child before any worker is forked.
    let (status, out) = common::run_to_exit(&[
        "--bind",
        "127.0.0.1:0",
        "--app-config",
        "fail_init=true",
        &common::plugin("chaos").display().to_string(),
    ]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("init failed on purpose"), "{out}");
}

#[test]
fn abort_loses_only_that_worker() {
    let server = Server::start("chaos", "workers: 2\n", &[]);
    // The aborting request gets no response; the connection just ends.
    let _ = server.try_get("/abort");
    wait_for(
        "the master to log the abort",
        Duration::from_secs(15),
        || {
            server
                .log_text()
                .contains("was sent SIGABRT!")
                .then_some(())
        },
    );
    for _ in 0..20 {
        assert_eq!(
            server.get("/pid").status,
            200,
            "other requests are unaffected"
        );
    }
    wait_for("a replacement worker", Duration::from_secs(15), || {
        (booted_pids(&server.log_text()).len() == 3).then_some(())
    });
}

/// Runs `clients` keep-alive clients doing `each` GETs of `path`; returns the failures.
fn load(port: u16, clients: usize, each: usize, path: &'static str) -> Vec<String> {
    load_while(port, clients, path, || true, each)
}

#[test]
fn max_requests_recycles_workers_without_failed_requests() {
    let server = Server::start(
        "chaos",
        "workers: 2\nmax_requests: 40\nmax_requests_jitter: 10\n",
        &[],
    );
    // Until six workers have booted: the first two were each replaced twice.
    let recycled = || booted_pids(&server.log_text()).len() >= 6;
    let failures = load_while(server.port, 4, "/pid", recycled, 0);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let log = server.log_text();
    assert!(recycled(), "workers were recycled: {log}");
    assert!(log.contains("asked to be replaced"), "{log}");
}

#[test]
fn max_worker_rss_recycles_a_leaking_worker_without_failed_requests() {
    let dir = common::scratch_dir();
    let socket = dir.join("ctl");
    let server = Server::start(
        "chaos",
        &format!(
            "workers: 1\nmax_worker_rss: 48\ncontrol_socket: {}\n",
            socket.display()
        ),
        &[],
    );
    let first = booted_pids(&server.log_text())[0];
    // A worker of a few MiB stays: readings below the limit change nothing.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(booted_pids(&server.log_text()), vec![first]);
    assert_eq!(server.get("/leak?mb=64").status, 200);
    // Under load, until the leaking worker has been replaced and has exited.
    let replaced = || common::exited(&server.log_text(), first);
    let failures = load_while(server.port, 4, "/pid", replaced, 0);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let log = server.log_text();
    assert!(replaced(), "{log}");
    assert!(
        log.contains(&format!("Worker (pid:{first}) uses "))
            && log.contains("above max_worker_rss (48 MiB): replacing it"),
        "{log}"
    );
    assert_eq!(booted_pids(&log).len(), 2, "one replacement: {log}");
    // Counted with reason rss.
    let out = std::process::Command::new(common::binary())
        .args(["ctl", "-s"])
        .arg(&socket)
        .args(["show", "stats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(stats.contains(" rss=1 "), "{stats}");
}

#[test]
fn request_timeout_replaces_the_worker_and_others_are_served() {
    let server = Server::start(
        "chaos",
        "workers: 1\nthreads: 4\nrequest_timeout: 1\ngraceful_timeout: 10\n",
        &[],
    );
    let first = booted_pids(&server.log_text())[0];
    let port = server.port;
    let stuck = std::thread::spawn(move || {
        let mut client = Client::new(port);
        client.get("/sleep?ms=30000")
    });
    wait_for("the request_timeout line", Duration::from_secs(10), || {
        server
            .log_text()
            .contains("longer than request_timeout (1s)")
            .then_some(())
    });
    // Meanwhile and afterwards, other requests are served (by the replacement).
    let failures = load(server.port, 2, 20, "/pid");
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    wait_for("the stuck worker to exit", Duration::from_secs(10), || {
        common::exited(&server.log_text(), first).then_some(())
    });
    assert!(
        stuck.join().unwrap().is_err(),
        "the stuck request is abandoned"
    );
    let now = server.get("/pid").text();
    assert_ne!(now.trim(), first.to_string(), "a new worker serves");
}

#[test]
fn silent_worker_is_killed_after_timeout() {
    let server = Server::start("hello", "workers: 1\ntimeout: 2\n", &[]);
    let first = booted_pids(&server.log_text())[0];
    // SAFETY: kill(2) on a worker of the server this test started: stop it so it cannot
    // heartbeat.
    unsafe { libc::kill(first, libc::SIGSTOP) };
    wait_for("WORKER TIMEOUT", Duration::from_secs(15), || {
        server
            .log_text()
            .contains(&format!("WORKER TIMEOUT (pid:{first})"))
            .then_some(())
    });
    wait_for("a replacement", Duration::from_secs(15), || {
        (booted_pids(&server.log_text()).len() == 2).then_some(())
    });
    server.wait_ready();
}

#[test]
fn graceful_timeout_bounds_a_graceful_stop() {
    let mut server = Server::start("chaos", "workers: 1\ngraceful_timeout: 1\n", &[]);
    let port = server.port;
    let sleeper = std::thread::spawn(move || Client::new(port).get("/sleep?ms=60000"));
    wait_for("the sleep to start", Duration::from_secs(10), || {
        server.log_text().contains("chaos: sleeping").then_some(())
    });
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    let log = server.log_text();
    // The worker gives up at graceful_timeout by itself, or the master kills it then.
    assert!(
        log.contains("exiting with 1 request(s) still in the app")
            || log.contains("SIGKILL! (graceful_timeout)"),
        "{log}"
    );
    assert!(sleeper.join().unwrap().is_err());
}

#[test]
fn boot_failures_after_a_good_start_back_off_and_never_stop_the_master() {
    let dir = common::scratch_dir();
    let trigger = dir.join("break-init");
    let setting = format!("fail_init_if_exists={}", trigger.display());
    let mut server = Server::start("chaos", "workers: 1\n", &["--app-config", &setting]);
    let first = booted_pids(&server.log_text())[0];
    // From now on every new worker fails its init; kill the serving one.
    std::fs::write(&trigger, "").unwrap();
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let retries = |log: &str| {
        log.lines()
            .filter(|l| l.contains("init failed on purpose") && l.contains("retrying in"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while retries(&server.log_text()) < 3 {
        assert!(
            Instant::now() < deadline,
            "no three failed boots: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log_text();
    assert!(log.contains("retrying in 0.25s"), "{log}");
    assert!(log.contains("retrying in 0.50s"), "backoff doubles: {log}");
    let running = server.child.as_mut().map(|c| c.try_wait());
    assert!(
        matches!(running, Some(Ok(None))),
        "the master is still running: {running:?}"
    );
    std::fs::remove_file(&trigger).unwrap();
    server.wait_ready();
}
