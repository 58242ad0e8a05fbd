//! HTTPS (issue #17): certfile/keyfile on every TCP listener, the TLS facts the app
//! sees, client certificates, what a plain-HTTP or silent client gets on a TLS port, HUP
//! reloading certificates (a broken one refused, the old generation serving), USR2 with TLS,
//! and a plugin built against an older request layout. Certificates are made at test time
//! with rcgen ([`Pki`]); the client is rustls.

mod common;

use common::{
    compile_c, pid_in, read_response, repo_path, run_to_exit, wait_for, Pki, Server, Stream,
};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// GET `path` on a new TLS connection with `client`; the response and the server's
/// certificate (DER).
fn get_over_tls(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(common::Response, Vec<u8>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = Stream::tls(tcp, client.clone());
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader)?;
    let cert = match reader.get_ref() {
        Stream::Tls(s) => s
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        Stream::Plain(_) => Vec::new(),
    };
    Ok((response, cert))
}

fn json(response: &common::Response) -> serde_json::Value {
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("JSON body")
}

#[test]
fn https_gives_the_app_the_tls_facts_and_keeps_connections_alive() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    let server = Server::start_maybe_tls("echo", "workers: 1\nbody_buffer: 1024\n", Some(&pki));
    let log = server.log_text();
    assert!(
        log.contains("Listening at: https://127.0.0.1:"),
        "no https listener line:\n{log}"
    );
    let echo = json(&server.get("/facts?x=1"));
    assert_eq!(echo["url_scheme"], "https");
    assert_eq!(echo["tls_version"], "TLSv1.3");
    let cipher = echo["tls_cipher"].as_str().unwrap_or_default();
    assert!(cipher.starts_with("TLS_"), "cipher {cipher:?}");
    assert!(echo["tls_client_subject"].is_null());
    assert_eq!(echo["QUERY_STRING"], "x=1");
    // Keep-alive over one TLS connection, with a body larger than body_buffer streamed to
    // the app and echoed back (the response backlog over TLS).
    let mut reader = BufReader::new(server.stream().unwrap());
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        let head = format!(
            "POST /raw HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        reader.get_mut().write_all(head.as_bytes()).unwrap();
        reader.get_mut().write_all(&body).unwrap();
        let response = read_response(&mut reader).unwrap();
        assert_eq!(response.status, 200, "round {round}");
        assert!(response.body == body, "round {round}: body differs");
        assert!(!response.closes());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn big_and_streamed_responses_arrive_whole_over_tls() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    // response_buffer below the response: the app's write waits for the client (the
    // encrypted backlog drains through epoll as the client reads).
    let server = Server::start_maybe_tls(
        "chaos",
        "workers: 1\nthreads: 2\nresponse_buffer: 65536\n",
        Some(&pki),
    );
    let big = server.get("/big?bytes=5000000");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 5_000_000);
    let streamed = server.get("/stream?chunks=50&size=10000");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body.len(), 500_000);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plain_http_garbage_and_silence_on_a_tls_port_are_closed() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    let server = Server::start_maybe_tls(
        "echo",
        "workers: 1\nheader_timeout: 2\nloglevel: debug\n",
        Some(&pki),
    );
    for sent in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        &b"\x00\x01garbage\xff\xfe\r\n\r\n"[..],
    ] {
        let mut tcp = server.connect();
        let started = Instant::now();
        tcp.write_all(sent).unwrap();
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "closed only after {:?}",
            started.elapsed()
        );
        assert!(
            !got.starts_with(b"HTTP/"),
            "an HTTP answer on a TLS port: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    wait_for("the debug line", Duration::from_secs(5), || {
        server
            .log_text()
            .contains("TLS with 127.0.0.1:")
            .then_some(())
    });
    // A client that never sends its hello is closed once header_timeout passes.
    let mut silent = server.connect();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );
    assert!(got.is_empty(), "{got:?}");
    // The server still serves.
    assert_eq!(server.get("/").status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn client_certificates_required_and_optional() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    // gunicorn's cert_reqs number: 2 is ssl.CERT_REQUIRED.
    let required = format!(
        "workers: 1\nca_certs: {}\ncert_reqs: 2\n{}",
        pki.ca.display(),
        pki.config()
    );
    let server = Server::start_tls("echo", &required, &[], pki.client(true));
    let echo = json(&server.get("/"));
    assert_eq!(echo["tls_client_subject"], "CN=test client");
    let refused = get_over_tls(server.port, &pki.client(false), "/");
    assert!(refused.is_err(), "served without a client certificate");
    drop(server);
    let optional = format!(
        "workers: 1\nca_certs: {}\ncert_reqs: optional\n{}",
        pki.ca.display(),
        pki.config()
    );
    let server = Server::start_tls("echo", &optional, &[], pki.client(false));
    assert!(json(&server.get("/"))["tls_client_subject"].is_null());
    let (response, _) = get_over_tls(server.port, &pki.client(true), "/").unwrap();
    assert_eq!(json(&response)["tls_client_subject"], "CN=test client");
    let _ = std::fs::remove_dir_all(dir);
}

/// Replaces `path` with `text` in one rename, so the master never reads half a file.
fn replace(path: &std::path::Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[test]
fn hup_reloads_certificates_and_a_broken_one_keeps_the_old_serving() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    let client = pki.client(false);
    let server = Server::start_tls(
        "echo",
        &format!("workers: 2\n{}", pki.config()),
        &[],
        client.clone(),
    );
    let first = get_over_tls(server.port, &client, "/").unwrap().1;
    // A request loop on new connections (a handshake each) for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (stop, seen, failures, client) =
                (stop.clone(), seen.clone(), failures.clone(), client.clone());
            let port = server.port;
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                    match get_over_tls(port, &client, "/") {
                        Ok((r, cert)) if r.status == 200 => {
                            let mut seen = seen.lock().unwrap();
                            if !seen.contains(&cert) {
                                seen.push(cert);
                            }
                        }
                        Ok((r, _)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    let reload_failures = |n: usize| {
        wait_for("the reload to be refused", Duration::from_secs(20), || {
            let log = server.log_text();
            (log.matches("Reload failed").count() >= n).then_some(log)
        })
    };
    // Not a certificate: refused, naming the file.
    replace(&pki.cert, "not a certificate\n");
    server.signal(libc::SIGHUP);
    let log = reload_failures(1);
    let line = log.lines().find(|l| l.contains("Reload failed")).unwrap();
    assert!(
        line.contains("certfile") && line.contains(&pki.cert.display().to_string()),
        "{line}"
    );
    // A certificate whose key is not the keyfile's: refused, naming both files.
    let (other_cert, other_key) = pki.issue("localhost", true);
    replace(&pki.cert, &other_cert);
    server.signal(libc::SIGHUP);
    let log = reload_failures(2);
    let line = log
        .lines()
        .filter(|l| l.contains("Reload failed"))
        .nth(1)
        .unwrap();
    assert!(line.contains(&pki.key.display().to_string()), "{line}");
    assert_eq!(get_over_tls(server.port, &client, "/").unwrap().1, first);
    // The new certificate with its key: new connections get it.
    replace(&pki.key, &other_key);
    server.signal(libc::SIGHUP);
    wait_for("the new certificate", Duration::from_secs(20), || {
        let (_, cert) = get_over_tls(server.port, &client, "/").ok()?;
        (cert != first).then_some(())
    });
    wait_for("the reload to complete", Duration::from_secs(20), || {
        server.log_text().contains("Reload complete").then_some(())
    });
    // The loops too (they may be between requests when the main thread saw it).
    wait_for(
        "the loops to get the new certificate",
        Duration::from_secs(20),
        || (seen.lock().unwrap().len() >= 2).then_some(()),
    );
    stop.store(true, Ordering::Release);
    for handle in loops {
        handle.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen.lock().unwrap().len(), 2, "both certificates served");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_settings_errors_name_the_key_or_the_file() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    let hello = common::plugin("hello").display().to_string();
    let check = |yaml: &str| {
        let path = dir.join("check.yaml");
        std::fs::write(&path, yaml).unwrap();
        run_to_exit(&["--check-config", "-c", path.to_str().unwrap(), &hello])
    };
    let missing = dir.join("missing.pem");
    let cases = [
        (
            format!(
                "certfile: {}\nkeyfile: {}\n",
                missing.display(),
                pki.key.display()
            ),
            format!("certfile {}", missing.display()),
        ),
        (
            format!("keyfile: {}\n", pki.key.display()),
            "keyfile is set but certfile is not".into(),
        ),
        (
            format!("{}cert_reqs: required\n", pki.config()),
            "cert_reqs: required needs ca_certs".into(),
        ),
        (
            format!(
                "certfile: {}\nkeyfile: {}\n",
                pki.cert.display(),
                pki.client_key.display()
            ),
            format!("keyfile {}", pki.client_key.display()),
        ),
        (
            format!("{}ciphers: HIGH\n", pki.config()),
            "rustls picks safe defaults".into(),
        ),
    ];
    for (yaml, want) in cases {
        let (status, out) = check(&yaml);
        assert_eq!(status.code(), Some(1), "{yaml}: {out}");
        assert!(out.contains(&want), "{yaml}: want {want:?} in {out}");
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    }
    let (status, out) = check(&pki.config());
    assert_eq!(status.code(), Some(0), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_plugin_built_against_the_abi_1_0_layout_is_served_over_tls() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    let source = [repo_path("tests/c/responder_1_0.c")];
    let plugin = compile_c("libresponder_1_0_tls.so", &source, &["-fPIC", "-shared"]);
    let server = Server::start_maybe_tls(&plugin.display().to_string(), "workers: 1\n", Some(&pki));
    let response = server.get("/");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.body, vec![b'o'; 20000]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usr2_upgrade_keeps_serving_tls() {
    let dir = common::scratch_dir();
    let pki = Pki::new(&dir);
    let pidfile = dir.join("ferricorn.pid");
    let client = pki.client(false);
    let server = Server::start_tls(
        "echo",
        &format!(
            "workers: 1\npidfile: {}\n{}",
            pidfile.display(),
            pki.config()
        ),
        &[],
        client.clone(),
    );
    let old = server.pid();
    server.signal(libc::SIGUSR2);
    let new = wait_for("the new master's pidfile", Duration::from_secs(20), || {
        pid_in(&pidfile).filter(|p| *p != old)
    });
    wait_for("the new master's worker", Duration::from_secs(20), || {
        (common::booted_pids(&server.log_text()).len() >= 2).then_some(())
    });
    // The old master stops; the new one serves HTTPS on the inherited socket.
    server.signal(libc::SIGTERM);
    server.wait_master_gone(old);
    let (response, _) = get_over_tls(server.port, &client, "/").unwrap();
    assert_eq!(json(&response)["url_scheme"], "https");
    server.stop_new_master(new);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn past_worker_connections_a_tls_connection_is_closed_without_http() {
    Pki::with(|pki| {
        let server =
            Server::start_maybe_tls("echo", "workers: 1\nworker_connections: 1\n", Some(pki));
        // The one connection a worker may hold, kept alive after its response.
        let mut held = BufReader::new(server.stream().unwrap());
        held.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut held).unwrap().status, 200);
        // Before a handshake there is no way to say 503: the next one is just closed.
        let mut tcp = server.connect();
        let started = Instant::now();
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    });
}

/// The port of the `Listening at: URL` line whose URL starts with `prefix`.
fn listening_port(server: &Server, prefix: &str) -> u16 {
    wait_for("the Listening at: line", Duration::from_secs(20), || {
        let log = server.log_text();
        let line = log.lines().find_map(|l| {
            l.split("Listening at: ")
                .nth(1)
                .filter(|u| u.starts_with(prefix))
        })?;
        line.split_whitespace()
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    })
}

/// Plain and TLS listeners side by side: `https://ADDR` entries of `bind` speak TLS with
/// `certfile`/`keyfile`, the others stay plain; a plain client on the TLS port gets no
/// HTTP, and an `https://` entry without `certfile` is a configuration error.
#[test]
fn plain_and_tls_listeners_side_by_side() {
    Pki::with(|pki| {
        let config = format!(
            "workers: 1\nbind: [\"127.0.0.1:0\", \"https://127.0.0.2:0\"]\n{}",
            pki.config()
        );
        let server = Server::start("hello", &config, &[]);
        let plain = listening_port(&server, "http://127.0.0.1:");
        let tls = listening_port(&server, "https://127.0.0.2:");
        let mut stream = TcpStream::connect(("127.0.0.1", plain)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let response = read_response(&mut BufReader::new(stream)).unwrap();
        assert_eq!(response.status, 200, "plain on the plain listener");
        let tcp = TcpStream::connect(("127.0.0.2", tls)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = Stream::tls(tcp, pki.client(false));
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let response = read_response(&mut BufReader::new(stream)).unwrap();
        assert_eq!(response.status, 200, "TLS on the https:// listener");
        let mut stream = TcpStream::connect(("127.0.0.2", tls)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "no HTTP on the TLS port: {answer:?}"
        );
    });
    refused(
        &["-b", "https://127.0.0.1:0"],
        "an https:// address needs certfile and keyfile",
    );
}

/// The PROXY protocol in front of TLS (HAProxy in TCP mode with `send-proxy-v2` to a TLS
/// listener): the header is read in clear, the rest is the TLS session's; the app sees the
/// client's address and `https`. A v1 header works the same; a broken one closes the
/// connection without HTTP (none can be said before the handshake).
#[test]
fn proxy_protocol_in_front_of_tls() {
    Pki::with(|pki| {
        let config = format!("workers: 1\nproxy_protocol: auto\n{}", pki.config());
        let server = Server::start_tls("echo", &config, &[], pki.client(false));
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[203, 0, 113, 9, 127, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb]);
        let v1 = b"PROXY TCP4 198.51.100.7 127.0.0.1 4242 443\r\n".to_vec();
        for (header, client) in [(v2, "203.0.113.9"), (v1, "198.51.100.7")] {
            let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            tcp.write_all(&header).unwrap();
            let mut stream = Stream::tls(tcp, pki.client(false));
            write!(
                stream,
                "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let response = read_response(&mut BufReader::new(stream)).unwrap();
            assert_eq!(response.status, 200);
            let echo = json(&response);
            assert_eq!(echo["REMOTE_ADDR"], client, "{echo}");
            assert_eq!(echo["url_scheme"], "https", "{echo}");
        }
        let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(b"PROXY TCP4 not-an-address\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    });
}

/// The certificate a TLS server presents to a client asking for `name` (SNI).
fn certificate_for(port: u16, client: &Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(client.clone(), server_name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let response = read_response(&mut BufReader::new(&mut stream)).unwrap();
    assert_eq!(response.status, 200);
    stream.conn.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Several certificates chosen by SNI (`certificates`): a client asking for a name one of
/// them has (exactly, or under its `*.` wildcard) gets it; one asking for `localhost` gets
/// `certfile`'s. A HUP reloads them.
#[test]
fn certificates_are_chosen_by_sni() {
    Pki::with(|pki| {
        let dir = pki.ca.parent().unwrap().to_path_buf();
        let (other, other_key) = pki.issue_for("other", vec!["other.test".into()], true);
        let (wild, wild_key) = pki.issue_for("wild", vec!["*.wild.test".into()], true);
        let mut config = format!("workers: 1\n{}certificates:\n", pki.config());
        for (name, cert, key) in [("other", &other, &other_key), ("wild", &wild, &wild_key)] {
            let (c, k) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}-key.pem")),
            );
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            config.push_str(&format!("  {}: {}\n", c.display(), k.display()));
        }
        let client = pki.client(false);
        let server = Server::start_tls("hello", &config, &[], client.clone());
        let default = der_of(&std::fs::read_to_string(&pki.cert).unwrap());
        assert_eq!(certificate_for(server.port, &client, "localhost"), default);
        assert_eq!(
            certificate_for(server.port, &client, "other.test"),
            der_of(&other)
        );
        assert_eq!(
            certificate_for(server.port, &client, "a.wild.test"),
            der_of(&wild)
        );
        // HUP reloads them with the rest.
        let (renewed, renewed_key) =
            pki.issue_for("other, renewed", vec!["other.test".into()], true);
        std::fs::write(dir.join("other.pem"), &renewed).unwrap();
        std::fs::write(dir.join("other-key.pem"), &renewed_key).unwrap();
        server.signal(libc::SIGHUP);
        wait_for("the reload", Duration::from_secs(20), || {
            server.log_text().contains("Reload complete").then_some(())
        });
        wait_for("the renewed certificate", Duration::from_secs(20), || {
            let now = certificate_for(server.port, &client, "other.test");
            (now == der_of(&renewed)).then_some(())
        });
    });
    refused(
        &["--certificate", "a.pem=a.key"],
        "certificates need certfile and keyfile",
    );
}

/// A TLS listener with a certificate of its own (`listener_certificates`: a PEM file with
/// its chain and key), beside one serving `certfile`; a name that is not a TLS `bind` entry
/// is a configuration error.
#[test]
fn a_listener_may_have_its_own_certificate() {
    Pki::with(|pki| {
        let dir = pki.ca.parent().unwrap().to_path_buf();
        let (own, own_key) = pki.issue("own", true);
        let pem = dir.join("own-combined.pem");
        std::fs::write(&pem, format!("{own}{own_key}")).unwrap();
        let config = format!(
            "workers: 1\nbind: [\"https://127.0.0.1:0\", \"https://127.0.0.2:0\"]\n{}listener_certificates:\n  \"https://127.0.0.2:0\": {}\n",
            pki.config(),
            pem.display()
        );
        let client = pki.client(false);
        let server = Server::start_tls("hello", &config, &[], client.clone());
        let first = listening_port(&server, "https://127.0.0.1:");
        let second = listening_port(&server, "https://127.0.0.2:");
        let default = der_of(&std::fs::read_to_string(&pki.cert).unwrap());
        assert_eq!(certificate_at("127.0.0.1", first, &client), default);
        assert_eq!(certificate_at("127.0.0.2", second, &client), der_of(&own));
        // HUP reloads it with the rest.
        let (renewed, renewed_key) = pki.issue("own, renewed", true);
        std::fs::write(&pem, format!("{renewed}{renewed_key}")).unwrap();
        server.signal(libc::SIGHUP);
        wait_for("the reload", Duration::from_secs(20), || {
            server.log_text().contains("Reload complete").then_some(())
        });
        wait_for("the renewed certificate", Duration::from_secs(20), || {
            (certificate_at("127.0.0.2", second, &client) == der_of(&renewed)).then_some(())
        });
    });
    refused(
        &["--listener-certificate", "https://127.0.0.9:1=x.pem"],
        "is not a TLS address of bind",
    );
}

/// The certificate the TLS server at `ip`:`port` presents (asking for `localhost`).
fn certificate_at(ip: &str, port: u16, client: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = TcpStream::connect((ip, port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = Stream::tls(tcp, client.clone());
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    match reader.get_ref() {
        Stream::Tls(s) => s.conn.peer_certificates().unwrap()[0].to_vec(),
        _ => unreachable!("a TLS stream"),
    }
}

/// `ferricorn ARGS --check-config` refuses the configuration (exit 1), saying `says`.
fn refused(args: &[&str], says: &str) {
    let mut all = args.to_vec();
    all.extend(["--check-config", "/nonexistent.so"]);
    let (status, out) = run_to_exit(&all);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains(says), "{says:?} in {out}");
}
