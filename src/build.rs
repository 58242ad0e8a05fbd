//! Build script of the ferricorn package (it only serves the tests): sets cfgs for what the
//! machine has, so that tests needing it run when it is there and are reported as ignored
//! (skipped, with the reason) otherwise, never counted as passed:
//! - `have_nginx`, `have_haproxy`, `have_strace`: the programs are installed (on PATH or in
//!   /usr/sbin);
//! - `have_prometheus_client`: `python3` imports the Prometheus Python client (its strict
//!   OpenMetrics parser reads `/metrics` in a test);
//! - `have_wstest`: Autobahn|Testsuite's `wstest` is in `target/wstest-venv` (`.ci/run`
//!   makes it with pyenv's Python 2.7) or on PATH (tests/autobahn.rs).

use std::path::{Path, PathBuf};

fn installed(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .any(|dir| dir.join(program).is_file())
}

fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(have_nginx, have_haproxy, have_strace, have_prometheus_client, have_wstest)"
    );
    println!("cargo::rerun-if-env-changed=PATH");
    // Watch only paths that exist: a missing one would rerun this script at every build.
    for program in ["/usr/sbin/nginx", "/usr/sbin/haproxy", "/usr/bin/strace"] {
        if Path::new(program).exists() {
            println!("cargo::rerun-if-changed={program}");
        }
    }
    if installed("nginx") {
        println!("cargo::rustc-cfg=have_nginx");
    }
    if installed("haproxy") {
        println!("cargo::rustc-cfg=have_haproxy");
    }
    if installed("strace") {
        println!("cargo::rustc-cfg=have_strace");
    }
    let imports = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(std::process::Stdio::null())
        .status();
    if imports.is_ok_and(|s| s.success()) {
        println!("cargo::rustc-cfg=have_prometheus_client");
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wstest-venv/bin/wstest");
    if venv.is_file() {
        println!("cargo::rerun-if-changed={}", venv.display());
    }
    if venv.is_file() || installed("wstest") {
        println!("cargo::rustc-cfg=have_wstest");
    }
}
