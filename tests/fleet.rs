//! In a fleet (issue #14): a real nginx in front of two ferricorn instances, restarted one
//! after the other under load without a failed request; and the README's deployment
//! snippets (nginx, HAProxy, Kubernetes) checked by the tools that read them. Tests that need
//! nginx or haproxy are ignored, with the reason, where they are not installed
//! (`.ci/run` installs both).

mod common;

use common::{wait_for, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn readme() -> String {
    // The deployment guide, where the proxy snippets are.
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/README.md")).unwrap()
}

/// The README's first fenced block in `language` that contains `marker`.
fn snippet_with(language: &str, marker: &str) -> String {
    let text = readme();
    let fence = format!("```{language}\n");
    text.match_indices(&fence)
        .map(|(at, _)| {
            let start = at + fence.len();
            let end = start + text[start..].find("```").unwrap();
            text[start..end].to_string()
        })
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("a ```{language} block with {marker:?} in the README"))
}

/// The README's first fenced block in `language`.
fn snippet(language: &str) -> String {
    snippet_with(language, "")
}

fn program(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/local/sbin", "/usr/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// nginx with `http` (the body of an http block) in `dir`, not daemonised.
fn nginx_config(dir: &std::path::Path, http: &str) -> PathBuf {
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/b;\n proxy_temp_path {d}/p;\n\
             fastcgi_temp_path {d}/f;\n uwsgi_temp_path {d}/u;\n scgi_temp_path {d}/s;\n{http}\n}}\n"
        ),
    )
    .unwrap();
    conf
}

struct Nginx(Child);

impl Drop for Nginx {
    /// TERM (nginx's fast shutdown, which ends its workers too), SIGKILL after 5 s: a master
    /// killed outright would leave its workers running, holding the test's output open.
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the child this struct owns, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port for nginx or HAProxy to bind, away from those the kernel gives out.
fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up by default), where the servers these
    // tests bind to port 0 are given theirs: a port picked here and bound by nginx a moment
    // later cannot be taken meanwhile by another test's server.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 4_000) as u16;
    for _ in 0..8_000 {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 8_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// One GET through `port` on a new connection; the status, or why it failed.
fn get(port: u16) -> Result<u16, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}

/// Restarts the ferricorn at `port` (TERM, wait for its exit, start again on the port).
fn restart(server: &mut Server, port: u16) -> Server {
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
    Server::start(
        "hello",
        &format!("workers: 2\nbind: [\"127.0.0.1:{port}\"]\n"),
        &[],
    )
}

#[test]
#[cfg_attr(not(have_nginx), ignore = "needs nginx (apt install nginx-light)")]
fn rolling_restart_behind_nginx_fails_no_request() {
    let (a_port, b_port, front) = (free_port(), free_port(), free_port());
    let start = |port: u16| {
        Server::start(
            "hello",
            &format!("workers: 2\nbind: [\"127.0.0.1:{port}\"]\n"),
            &[],
        )
    };
    let mut a = start(a_port);
    let mut b = start(b_port);
    let dir = common::scratch_dir();
    let conf = nginx_config(
        &dir,
        &format!(
            "upstream ferricorn {{ server 127.0.0.1:{a_port} max_fails=0; server 127.0.0.1:{b_port} max_fails=0; keepalive 16; }}\n\
             server {{ listen 127.0.0.1:{front};\n location / {{ proxy_pass http://ferricorn;\n\
             proxy_http_version 1.1;\n proxy_set_header Connection \"\";\n\
             proxy_next_upstream error timeout http_502 http_503; }} }}"
        ),
    );
    let _nginx = Nginx(
        Command::new(program("nginx"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    wait_for("nginx", Duration::from_secs(10), || {
        get(front).ok().filter(|&s| s == 200)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                    sent.fetch_add(1, Ordering::Relaxed);
                    match get(front) {
                        Ok(200) => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
                failures
            })
        })
        .collect();
    wait_for("load", Duration::from_secs(10), || {
        (sent.load(Ordering::Relaxed) > 200).then_some(())
    });
    let a2 = restart(&mut a, a_port);
    let before_b = sent.load(Ordering::Relaxed);
    wait_for("load on the new a", Duration::from_secs(10), || {
        (sent.load(Ordering::Relaxed) > before_b + 200).then_some(())
    });
    let b2 = restart(&mut b, b_port);
    let after = sent.load(Ordering::Relaxed);
    wait_for("load after both", Duration::from_secs(10), || {
        (sent.load(Ordering::Relaxed) > after + 200).then_some(())
    });
    stop.store(true, Ordering::Release);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let total = sent.load(Ordering::Relaxed);
    eprintln!(
        "rolling restart: {total} requests, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    drop((a2, b2));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[cfg_attr(not(have_nginx), ignore = "needs nginx (apt install nginx-light)")]
fn readme_nginx_snippet_is_valid() {
    let dir = common::scratch_dir();
    let port = free_port();
    let body = snippet("nginx").replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let conf = nginx_config(&dir, &body);
    let out = Command::new(program("nginx"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[cfg_attr(not(have_haproxy), ignore = "needs haproxy (apt install haproxy)")]
fn readme_haproxy_snippet_is_valid() {
    let dir = common::scratch_dir();
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, snippet("haproxy")).unwrap();
    let out = Command::new(program("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(snippet("haproxy").contains("send-proxy-v2"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn readme_kubernetes_snippet_fits_the_settings() {
    let text = snippet_with("yaml", "kind: Deployment");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace period");
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let graceful = args
        .windows(2)
        .find(|w| w[0] == "--graceful-timeout")
        .and_then(|w| w[1].parse::<u64>().ok())
        .expect("--graceful-timeout in the args");
    let pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .and_then(|c| c.last())
        .and_then(|c| c.as_str())
        .and_then(|c| c.trim_start_matches("sleep ").parse::<u64>().ok())
        .expect("a preStop sleep");
    assert!(
        grace > graceful + pre_stop,
        "terminationGracePeriodSeconds {grace} must exceed the preStop delay {pre_stop} plus graceful_timeout {graceful}"
    );
    assert!(container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .is_some());
    let (status, out) = common::run_to_exit(
        &[
            &["--check-config"][..],
            &args,
            &[&common::plugin("hello").display().to_string()],
        ]
        .concat()
        .into_iter()
        .filter(|a| !a.starts_with("/app/"))
        .collect::<Vec<_>>(),
    );
    assert_eq!(
        status.code(),
        Some(0),
        "the container's flags are valid: {out}"
    );
}

/// Every forwarding header ferricorn reads (secure_scheme_headers' defaults, `Forwarded`,
/// and what real_ip_header may name).
const FORWARDING_HEADERS: [&str; 6] = [
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Forwarded-Proto",
    "X-Forwarded-Ssl",
    "X-Forwarded-Protocol",
    "Forwarded",
];

#[test]
fn readme_proxy_snippets_set_or_clear_every_forwarding_header() {
    let nginx = snippet("nginx");
    let haproxy = snippet("haproxy");
    let kubernetes = snippet_with("yaml", "kind: Deployment");
    let clear: serde_yaml::Value = serde_yaml::Deserializer::from_str(&kubernetes)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).expect("YAML"))
        .find(|d| d["metadata"]["name"] == "clear-forwarding-headers")
        .expect("the ingress-nginx ConfigMap that clears headers");
    for header in FORWARDING_HEADERS {
        assert!(
            nginx.contains(&format!("proxy_set_header {header} ")),
            "nginx snippet leaves {header} as the client sent it"
        );
        assert!(
            haproxy.contains(&format!("del-header {header}\n"))
                || haproxy.contains(&format!("set-header {header} ")),
            "HAProxy snippet leaves {header} as the client sent it"
        );
        // ingress-nginx sets these three itself (use-forwarded-headers: false).
        let set_by_ingress = ["X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto"];
        assert!(
            set_by_ingress.contains(&header) || clear["data"][header] == "",
            "the Kubernetes ingress snippet leaves {header} as the client sent it"
        );
    }
}

/// A connection to `port` from `source` (a loopback address other than 127.0.0.1, so that
/// the client is not a trusted proxy).
fn connect_from(source: std::net::Ipv4Addr, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::OwnedFd;
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
    )
    .unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            port,
        )),
    )
    .unwrap();
    TcpStream::from(fd)
}

#[test]
#[cfg_attr(not(have_nginx), ignore = "needs nginx (apt install nginx-light)")]
fn readme_nginx_snippet_lets_no_spoofed_forwarding_header_through() {
    let server = Server::start("echo", "workers: 1\nreal_ip_header: X-Forwarded-For\n", &[]);
    let dir = common::scratch_dir();
    let front = free_port();
    let body = snippet("nginx")
        .replace("listen 80;", &format!("listen 127.0.0.1:{front};"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{}", server.port));
    let conf = nginx_config(&dir, &body);
    let _nginx = Nginx(
        Command::new(program("nginx"))
            .arg("-c")
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let client = std::net::Ipv4Addr::new(127, 0, 0, 3);
    wait_for("nginx", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", front)).ok()
    });
    let mut stream = connect_from(client, front);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /whoami HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\
              X-Forwarded-Ssl: on\r\nX-Forwarded-Protocol: ssl\r\n\
              Forwarded: for=127.0.0.1;proto=https\r\nX-Real-IP: 127.0.0.1\r\n\
              X-Forwarded-For: garbage\r\n\r\n",
        )
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..])
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(json["url_scheme"], "http", "{json}");
    assert_eq!(json["REMOTE_ADDR"], client.to_string(), "{json}");
    let names: Vec<String> = json["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
        .collect();
    for cleared in ["x-forwarded-ssl", "x-forwarded-protocol", "forwarded"] {
        assert!(
            !names.contains(&cleared.to_string()),
            "{cleared} reached the app: {json}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
