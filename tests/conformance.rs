//! HTTP/1.1 request-parsing conformance: gunicorn's corpus (`tests/conformance`, MIT),
//! each case sent in several chunkings to the echo app, compared with `ferricorn_expect`.

mod common;

use base64::Engine;
use common::{read_response, Pki, Response, Server};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The corpus directory: `requests/`, `manifest.json`.
fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// Splits `len` bytes into pieces: whole, byte by byte (small cases), seeded random splits.
fn chunkings(len: usize) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![("whole".to_string(), vec![len])];
    if len < 1024 {
        out.push(("bytewise".into(), vec![1; len]));
    }
    for seed in [1u64, 7, 42] {
        let mut state = seed;
        let mut pieces = Vec::new();
        let mut left = len;
        while left > 0 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((state >> 33) as usize % 64 + 1).min(left);
            pieces.push(n);
            left -= n;
        }
        out.push((format!("seed{seed}"), pieces));
    }
    out
}

fn exchange(server: &Server, bytes: &[u8], pieces: &[usize]) -> Vec<Result<Response, String>> {
    let mut stream = server.stream().expect("connect");
    stream.tcp().set_nodelay(true).unwrap();
    let mut at = 0;
    for n in pieces {
        if stream.write_all(&bytes[at..at + n]).is_err() {
            break;
        }
        at += n;
    }
    stream.half_close();
    stream
        .tcp()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    loop {
        match read_response(&mut reader) {
            Ok(r) => {
                let stop = r.status != 200;
                out.push(Ok(r));
                if stop {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

/// Compares one echoed request with an expected one; returns the first difference.
fn compare(got: &Value, want: &Value) -> Result<(), String> {
    let field = |k: &str| got[k].as_str().unwrap_or_default().to_string();
    let checks = [
        (
            "method",
            field("REQUEST_METHOD"),
            want["method"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "target",
            field("RAW_URI"),
            want["target"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "version",
            field("SERVER_PROTOCOL"),
            want["version"].as_str().unwrap_or_default().to_string(),
        ),
    ];
    for (what, g, w) in checks {
        if g != w {
            return Err(format!("{what}: got {g:?}, want {w:?}"));
        }
    }
    if let Some(query) = want["query"].as_str() {
        if field("QUERY_STRING") != query {
            return Err(format!(
                "query: got {:?}, want {query:?}",
                field("QUERY_STRING")
            ));
        }
    }
    let upper = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap_or_default().to_ascii_uppercase(),
                            p[1].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if upper(&got["headers"]) != upper(&want["headers"]) {
        return Err(format!(
            "headers: got {:?}, want {:?}",
            got["headers"], want["headers"]
        ));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(got["body_base64"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let want_body = base64::engine::general_purpose::STANDARD
        .decode(want["body"].as_str().unwrap_or_default())
        .unwrap_or_default();
    if body != want_body {
        return Err(format!(
            "body: got {:?}, want {:?}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&want_body)
        ));
    }
    if upper(&got["trailers"]) != upper(&want["trailers"]) {
        return Err(format!(
            "trailers: got {:?}, want {:?}",
            got["trailers"], want["trailers"]
        ));
    }
    Ok(())
}

fn check(outcome: &Value, responses: &[Result<Response, String>]) -> Result<(), String> {
    let statuses = |v: &Value| -> Vec<u64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    let kind = outcome["outcome"].as_str().unwrap_or_default();
    let expected_requests = outcome["requests"].as_array().cloned().unwrap_or_default();
    let mut i = 0;
    for want in &expected_requests {
        let got = match responses.get(i) {
            Some(Ok(r)) if r.status == 200 => r,
            other => {
                return Err(format!(
                    "request {i}: expected an echo, got {:?}",
                    other.map(|r| r.as_ref().map(|r| r.status))
                ))
            }
        };
        let json: Value =
            serde_json::from_slice(&got.body).map_err(|e| format!("request {i}: bad JSON {e}"))?;
        compare(&json, want).map_err(|e| format!("request {i}: {e}"))?;
        i += 1;
    }
    let rest = &responses[i..];
    match kind {
        "requests" if rest.is_empty() => Ok(()),
        "requests" => Err(format!(
            "unexpected extra responses: {:?}",
            rest.iter()
                .map(|r| r.as_ref().map(|r| r.status))
                .collect::<Vec<_>>()
        )),
        "reject" | "requests_then_reject" => match rest {
            [Ok(r)] if statuses(&outcome["status"]).contains(&u64::from(r.status)) => Ok(()),
            other => Err(format!(
                "expected one of {:?}, got {:?}",
                statuses(&outcome["status"]),
                other
                    .iter()
                    .map(|r| r.as_ref().map(|r| r.status))
                    .collect::<Vec<_>>()
            )),
        },
        "no_response_or_400" => match rest {
            [] => Ok(()),
            [Ok(r)] if r.status == 400 => Ok(()),
            other => Err(format!(
                "expected nothing or 400, got {:?}",
                other
                    .iter()
                    .map(|r| r.as_ref().map(|r| r.status))
                    .collect::<Vec<_>>()
            )),
        },
        other => Err(format!("unknown outcome {other}")),
    }
}

/// With 4 threads per worker connections are one-shot in epoll (re-armed after each wait).
#[test]
fn gunicorn_request_corpus() {
    run_corpus(4, None);
}

/// With 1 thread per worker connections are edge-triggered in epoll (registered once).
#[test]
fn gunicorn_request_corpus_single_thread() {
    run_corpus(1, None);
}

/// The whole corpus over TLS (issue #17): the same answers once records carry the bytes.
#[test]
fn gunicorn_request_corpus_over_tls() {
    Pki::with(|pki| run_corpus(4, Some(pki)));
}

/// Replays the corpus against servers with `threads` per worker (over TLS with `tls`).
fn run_corpus(threads: usize, tls: Option<&Pki>) {
    let dir = corpus();
    let manifest: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &manifest {
        let mut limits = String::new();
        match case["requires"].as_str() {
            None => {}
            // The corpus' PROXY protocol cases, against a server that reads either version
            // when present (gunicorn's `proxy_protocol: true` is `auto`).
            // Over TLS they are left to the plain runs: a PROXY header comes before the
            // handshake, in clear, and ferricorn refuses proxy_protocol with TLS.
            Some("proxy_protocol") if tls.is_some() => continue,
            Some("proxy_protocol") => limits.push_str("proxy_protocol: auto\n"),
            Some(other) => panic!("a case requires {other}, which this test does not know"),
        }
        if let Some(config) = case["config"].as_object() {
            for (key, value) in config.iter().filter(|(k, _)| k.starts_with("limit_")) {
                let n = value.as_u64().unwrap_or(0);
                let n = if key == "limit_request_line" {
                    n.min(8190)
                } else {
                    n
                };
                limits.push_str(&format!("{key}: {n}\n"));
            }
        }
        let server = servers.entry(limits.clone()).or_insert_with(|| {
            // keepalive well past the client's 5 s read timeout: a server that missed the
            // client's half-close would be caught waiting, not saved by the idle timer.
            let config = format!("workers: 1\nthreads: {threads}\nkeepalive: 60\n{limits}");
            Server::start_maybe_tls("echo", &config, tls)
        });
        let bytes = std::fs::read(dir.join(case["file"].as_str().unwrap())).unwrap();
        let name = format!(
            "{}/{}",
            case["kind"].as_str().unwrap(),
            case["name"].as_str().unwrap()
        );
        for (how, pieces) in chunkings(bytes.len()) {
            ran += 1;
            let responses = exchange(server, &bytes, &pieces);
            if let Err(e) = check(&case["ferricorn_expect"], &responses) {
                failures.push(format!("{name} [{how}]: {e}"));
            }
        }
    }
    assert!(ran > 300, "only {ran} exchanges ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} exchanges failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
