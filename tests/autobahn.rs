//! Autobahn|Testsuite's fuzzing client (`wstest -m fuzzingclient`, the reference WebSocket
//! conformance suite) against the `echo` plugin: every case of sections 1 to 10 (framing,
//! pings, reserved bits, opcodes, fragmentation, UTF-8, the closing handshake, limits and
//! performance, misc) must end OK or INFORMATIONAL (the suite also counts NON-STRICT as
//! passing: invalid UTF-8 failed later than it could be; not here), and every case of
//! sections 12 and 13 (permessage-deflate with its parameters) OK. `.ci/run` installs wstest
//! (Python 2.7) into target/wstest-venv; without it the test is reported as skipped.

mod common;

use common::Server;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Behaviours taken as passing: Autobahn's, less NON-STRICT.
const PASSING: [&str; 2] = ["OK", "INFORMATIONAL"];

fn wstest() -> PathBuf {
    let venv = common::repo_path("target/wstest-venv/bin/wstest");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("wstest")
    }
}

/// Runs the fuzzing client on `cases` against `server`; returns each case's behaviour.
fn fuzz(server: &Server, cases: &[&str]) -> BTreeMap<String, String> {
    let dir = common::scratch_dir();
    let reports = dir.join("reports");
    let spec = serde_json::json!({
        "outdir": reports,
        "servers": [{"agent": "ferricorn", "url": format!("ws://127.0.0.1:{}", server.port)}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    });
    let spec_path = dir.join("fuzzingclient.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let mut child = std::process::Command::new(wstest())
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run wstest");
    let status = common::wait_for("wstest to finish", Duration::from_secs(600), || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "wstest failed: {status}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["ferricorn"]
        .as_object()
        .expect("the agent's results")
        .iter()
        .map(|(case, result)| {
            let behavior = result["behavior"].as_str().unwrap_or("?").to_string();
            (case.clone(), behavior)
        })
        .collect()
}

/// Runs `cases` against a fresh echo server; every case must end in one of `passing`, and
/// at least `expected` cases must have run.
fn run_sections(cases: &[&str], passing: &[&str], expected: usize) {
    let server = Server::start(
        "echo",
        "workers: 1\nwebsocket_max_message: 16777216\nwebsocket_send_buffer: 33554432\n",
        &[],
    );
    let results = fuzz(&server, cases);
    let mut summary: BTreeMap<&str, usize> = BTreeMap::new();
    for behavior in results.values() {
        *summary.entry(behavior.as_str()).or_default() += 1;
    }
    eprintln!("Autobahn {cases:?}: {} cases: {summary:?}", results.len());
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, b)| !passing.contains(&b.as_str()))
        .collect();
    assert!(
        results.len() >= expected,
        "every case ran: {}",
        results.len()
    );
    assert!(failed.is_empty(), "failing cases: {failed:?}");
}

#[test]
#[cfg_attr(
    not(have_wstest),
    ignore = "Autobahn's wstest is not installed (.ci/run installs it)"
)]
fn autobahn_sections_1_to_10_pass() {
    let cases = [
        "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*",
    ];
    run_sections(&cases, &PASSING, 301);
}

#[test]
#[cfg_attr(
    not(have_wstest),
    ignore = "Autobahn's wstest is not installed (.ci/run installs it)"
)]
fn autobahn_compression_sections_12_and_13_pass() {
    run_sections(&["12.*", "13.*"], &["OK"], 216);
}
