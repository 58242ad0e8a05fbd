//! Shared helpers for the integration tests: build the example plugins, start the real
//! `ferricorn` binary on an ephemeral port, wait for readiness, talk HTTP/1.1 over real sockets.
//! Every wait is bounded in time; every server started is stopped by its `Drop`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The ferricorn binary cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferricorn"))
}

fn target_profile_dir() -> PathBuf {
    binary()
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// The path of plugin `name`: a C plugin (`c-hello`, `c-wordcount`) is compiled from
/// `worker-apps/NAME/*.c` with [`compile_c`]; a Rust one (`hello`, `echo`, `tasks`, `chaos`,
/// `ferricorn_wsgi`) is
/// built with the other example plugins once per test binary (`cargo test` does not build
/// cdylib members by itself).
pub fn plugin(name: &str) -> PathBuf {
    if name.starts_with("c-") {
        let dir = repo_path(&format!("worker-apps/{name}"));
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "c"))
            .collect();
        sources.sort();
        let file = format!("lib{}.so", name.replace('-', "_"));
        return compile_c(&file, &sources, &["-fPIC", "-shared"]);
    }
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target_dir = target_profile_dir()
            .parent()
            .expect("target dir")
            .to_path_buf();
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "hello",
            "-p",
            "echo",
            "-p",
            "chat",
            "-p",
            "tasks",
            "-p",
            "chaos",
            "-p",
            "ferricorn-wsgi",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if target_profile_dir()
            .file_name()
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the plugins");
        assert!(status.success(), "building the example plugins failed");
    });
    let path = target_profile_dir().join(format!("lib{name}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// `relative` inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Compiles the C `sources` against `worker-apps/include/ferricorn.h` into `file` in the
/// target directory, with the header's promised flags (`-std=c99 -Wall -Wextra -Werror`)
/// plus `extra` (`-fPIC -shared` for a plugin, `-DNAME=VALUE`, ...), and returns its path.
/// The compiler is `$CC`, else `cc`. Writes to a temporary name and renames, so test binaries
/// running at once never load a half-written file.
pub fn compile_c(file: &str, sources: &[PathBuf], extra: &[&str]) -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let out = target_profile_dir().join(file);
    let tmp = target_profile_dir().join(format!(
        "{file}.{}.{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&compiler)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        .arg("-I")
        .arg(repo_path("worker-apps/include"))
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .args(sources)
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "compiling {sources:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename the compiled plugin");
    out
}

/// A fresh scratch directory for one test.
pub fn scratch_dir() -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferricorn-test-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `f` every 20 ms until it returns Some, failing the test after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running ferricorn master started by a test.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
    /// Set for a TLS server: [`Server::stream`] and the GET helpers speak TLS with it.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Runs ferricorn to completion with `args` (for config errors); returns (status, stderr).
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("run ferricorn");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status, text)
}

impl Server {
    /// Starts ferricorn with the YAML `config` (written to a file, `bind` on port 0 added
    /// unless given) plus `args`, and waits until a worker answers. The app is `app`: a
    /// plugin name for [`plugin`], or a path to a shared object (containing `/` or ending
    /// in `.so`; a relative one is resolved by the server), or empty when `config` or `args`
    /// name it.
    pub fn start(app: &str, config: &str, args: &[&str]) -> Server {
        let server = Server::spawn(app, config, args);
        server.wait_ready();
        server
    }

    /// Starts ferricorn without waiting for a worker to answer.
    pub fn spawn(app: &str, config: &str, args: &[&str]) -> Server {
        Server::spawn_env(app, config, args, &[])
    }

    /// [`Server::spawn`] with extra environment variables for the master.
    pub fn spawn_env(app: &str, config: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn_with(app, config, args, env, None)
    }

    /// [`Server::start`] with RLIMIT_NOFILE set to `nofile` (soft and hard) for the server.
    pub fn start_with_nofile(app: &str, config: &str, nofile: u64) -> Server {
        let server = Server::spawn_with(app, config, &[], &[], Some(nofile));
        server.wait_ready();
        server
    }

    fn spawn_with(
        app: &str,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Server {
        let dir = scratch_dir();
        let log = dir.join("error.log");
        let config_path = dir.join("ferricorn.yaml");
        let mut yaml = String::new();
        if !config.lines().any(|l| l.starts_with("bind:")) {
            yaml.push_str("bind: [\"127.0.0.1:0\"]\n");
        }
        yaml.push_str(&format!("errorlog: {}\n", log.display()));
        let app_path = if app.is_empty() {
            None
        } else if app.contains('/') || app.ends_with(".so") {
            Some(PathBuf::from(app))
        } else {
            Some(plugin(app))
        };
        if let Some(path) = app_path {
            yaml.push_str(&format!("app:\n  path: {}\n", path.display()));
        }
        yaml.push_str(config);
        std::fs::write(&config_path, yaml).expect("write config");
        let mut command = Command::new(binary());
        command
            .arg("-c")
            .arg(&config_path)
            .args(args)
            // As a user runs it: not with the library path cargo sets for tests.
            .env_remove("LD_LIBRARY_PATH")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: the hook runs in the forked child before exec and only calls
            // setrlimit(2), which is async-signal-safe, on a value it owns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command.spawn().expect("start ferricorn");
        let mut server = Server {
            child: Some(child),
            port: 0,
            dir,
            log,
            config: config_path,
            tls: None,
        };
        server.port = server.wait_listening();
        server
    }

    /// [`Server::start`] for a TLS server (its `config` sets certfile and keyfile): requests
    /// go over TLS with `client`.
    pub fn start_tls(
        app: &str,
        config: &str,
        args: &[&str],
        client: std::sync::Arc<rustls::ClientConfig>,
    ) -> Server {
        let mut server = Server::spawn(app, config, args);
        server.tls = Some(client);
        server.wait_ready();
        server
    }

    /// [`Server::start`], or with `tls` [`Server::start_tls`] with its certificate added to
    /// `config` and a client without a certificate.
    pub fn start_maybe_tls(app: &str, config: &str, tls: Option<&Pki>) -> Server {
        match tls {
            None => Server::start(app, config, &[]),
            Some(pki) => Server::start_tls(
                app,
                &format!("{config}{}", pki.config()),
                &[],
                pki.client(false),
            ),
        }
    }

    /// Waits for the first `Listening at: http://` (or `https://`) line and returns its port.
    pub fn wait_listening(&self) -> u16 {
        wait_for("the Listening at: line", Duration::from_secs(20), || {
            let text = self.log_text();
            let line = text.lines().find(|l| l.contains("Listening at: http"))?;
            let after = line.split("://").nth(1)?;
            let port = after.split_whitespace().next()?.rsplit(':').next()?;
            port.parse().ok()
        })
    }

    /// Waits until a request succeeds (a worker has booted and serves).
    pub fn wait_ready(&self) {
        wait_for("a worker to answer", Duration::from_secs(20), || {
            self.try_get("/").ok().filter(|r| r.status > 0)
        });
    }

    /// The error log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child process this test started and has not reaped.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the master to exit (at most `limit`) and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the master to exit", limit, || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }

    /// Waits (at most 20 s) for the master with `pid` (this one, or one it started by USR2)
    /// to log its goodbye line.
    pub fn wait_master_gone(&self, pid: i32) {
        wait_for("the master to stop", Duration::from_secs(20), || {
            self.log_text()
                .contains(&format!("[{pid}] [INFO] Shutting down: Master"))
                .then_some(())
        });
    }

    /// Stops a master this server started by USR2 (not our child): TERM, then waits for its
    /// goodbye line.
    pub fn stop_new_master(&self, pid: i32) {
        // SAFETY: kill(2) on the new master the test's own server started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait_master_gone(pid);
    }

    /// Opens a connection to the server.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
    }

    /// Sends `raw` on a new connection and reads one response.
    pub fn send(&self, raw: &[u8]) -> Response {
        let mut stream = self.stream().expect("connect");
        stream.write_all(raw).expect("send request");
        read_response(&mut BufReader::new(stream)).expect("read response")
    }

    /// Sends `raw` on a new connection, reads one response, then reads until the server
    /// closes the connection; returns the response and whatever came after it.
    pub fn send_then_close(&self, raw: &[u8]) -> (Response, Vec<u8>) {
        let mut stream = self.stream().expect("connect");
        stream.write_all(raw).expect("send request");
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader).expect("read response");
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
        (response, rest)
    }

    /// Sends `raw` and parses the response body as JSON (the echo app's answer).
    pub fn echo(&self, raw: &[u8]) -> serde_json::Value {
        let response = self.send(raw);
        assert_eq!(response.status, 200, "{}", response.text());
        serde_json::from_slice(&response.body).expect("JSON body")
    }

    /// A new connection, over TLS for a TLS server (the handshake happens at the first
    /// read or write).
    pub fn stream(&self) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => Stream::tls(tcp, config.clone()),
        })
    }

    /// GET `path` on a new connection.
    pub fn try_get(&self, path: &str) -> std::io::Result<Response> {
        let mut stream = self.stream()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )?;
        read_response(&mut BufReader::new(stream))
    }

    /// A keep-alive connection that has been served one `GET /` (200), left open.
    pub fn held_connection(&self) -> BufReader<TcpStream> {
        self.try_held_connection()
            .expect("a 200 on a held connection")
    }

    /// [`Server::held_connection`], or `None` if the server did not answer 200.
    pub fn try_held_connection(&self) -> Option<BufReader<TcpStream>> {
        let mut reader = BufReader::new(self.connect());
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send request");
        let response = read_response(&mut reader).ok()?;
        (response.status == 200).then_some(reader)
    }

    /// GET `path`, panicking on failure.
    pub fn get(&self, path: &str) -> Response {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own, not yet reaped child: quick stop, then SIGKILL.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client connection: plain TCP, or TLS over it (rustls).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// TLS over `tcp` with `config`, for the server name `localhost`.
    pub fn tls(tcp: TcpStream, config: std::sync::Arc<rustls::ClientConfig>) -> Stream {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        let conn = rustls::ClientConnection::new(config, name).expect("a TLS client");
        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// Ends the client's sending side: close_notify first with TLS, then shutdown(2).
    pub fn half_close(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Write);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) if s.conn.is_handshaking() => s.read(buf),
            // Once the handshake is done, reading never writes first (rustls's StreamOwned
            // flushes pending records before each read, and a server that already closed
            // after its response would turn that into EPIPE before the response is read,
            // where a plain socket returns the response).
            Stream::Tls(s) => loop {
                match s.conn.reader().read(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
                if s.conn.read_tls(&mut s.sock)? == 0 {
                    return Ok(0);
                }
                s.conn
                    .process_new_packets()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Test certificates made with rcgen, as PEM files in a directory: a CA, a server
/// certificate for `localhost` and 127.0.0.1 signed by it, and a client certificate
/// (`CN=test client`) signed by it.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    /// Makes the files in `dir`.
    pub fn new(dir: &std::path::Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("a key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ferricorn test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA");
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            ca_params,
            ca_key,
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        let (cert, key) = pki.issue("localhost", true);
        std::fs::write(&pki.cert, cert).unwrap();
        std::fs::write(&pki.key, key).unwrap();
        let (cert, key) = pki.issue("test client", false);
        std::fs::write(&pki.client_cert, cert).unwrap();
        std::fs::write(&pki.client_key, key).unwrap();
        pki
    }

    /// A new certificate with common name `cn` signed by the CA (for `localhost` and
    /// 127.0.0.1 when `server`), and its key: (certificate PEM, key PEM).
    pub fn issue(&self, cn: &str, server: bool) -> (String, String) {
        let names = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        self.issue_for(cn, names, server)
    }

    /// A certificate with common name `cn` for the subjectAltName `names`, signed by the CA,
    /// for a server (or a client), and its key: (certificate PEM, key PEM).
    pub fn issue_for(&self, cn: &str, names: Vec<String>, server: bool) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Runs `f` with test certificates in a scratch directory, removed afterwards.
    pub fn with<R>(f: impl FnOnce(&Pki) -> R) -> R {
        let dir = scratch_dir();
        let result = f(&Pki::new(&dir));
        let _ = std::fs::remove_dir_all(dir);
        result
    }

    /// The server's `certfile`/`keyfile` lines for a configuration.
    pub fn config(&self) -> String {
        format!(
            "certfile: {}\nkeyfile: {}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// A TLS client that trusts the CA, optionally presenting the client certificate.
    pub fn client(&self, with_certificate: bool) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = if with_certificate {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&self.client_key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }
}

/// A parsed HTTP response.
#[derive(Debug, Default, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server said it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Reads one response (Content-Length, chunked, or until close) from `reader`. A HEAD
/// response has no body: use [`read_head_response`].
pub fn read_response(reader: &mut impl BufRead) -> std::io::Result<Response> {
    let mut response = read_head_response(reader)?;
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| bad(format!("chunk size {line:?}")))?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("content-length"))?;
        response.body = vec![0u8; len];
        reader.read_exact(&mut response.body)?;
    } else if response.status >= 200 && response.status != 204 && response.status != 304 {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// Reads a status line and header fields only.
pub fn read_head_response(reader: &mut impl BufRead) -> std::io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {line:?}")))?;
    let mut response = Response {
        status,
        ..Response::default()
    };
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("field {line:?}")))?;
        response
            .headers
            .push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(response)
}

/// A keep-alive client that reconnects whenever the server closes (as a load generator does),
/// counting requests that failed.
pub struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    /// GET `path`; a transport error or a non-200 status is an Err.
    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .map_err(|e| format!("connect: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(stream));
        }
        let reader = self.conn.as_mut().expect("connected");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        let result = reader
            .get_mut()
            .write_all(request.as_bytes())
            .and_then(|_| read_response(reader));
        match result {
            Ok(response) => {
                if response.closes() {
                    self.conn = None;
                }
                if response.status == 200 {
                    Ok(response)
                } else {
                    Err(format!("status {}", response.status))
                }
            }
            Err(e) => {
                self.conn = None;
                Err(e.to_string())
            }
        }
    }
}

/// The pid in `path`, if the file holds one.
pub fn pid_in(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Pids of the workers the log says booted, in order.
pub fn booted_pids(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|l| l.split("Booting worker with pid: ").nth(1))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Whether the log says worker `pid` exited (any way).
pub fn exited(log: &str, pid: i32) -> bool {
    log.contains(&format!("Worker (pid:{pid}) exited"))
        || log.contains(&format!("Worker (pid:{pid}) was sent"))
}

/// Runs `clients` keep-alive clients GETting `path`, each at least `min_each` times and then
/// until `done()` (checked every 20 ms, at most 30 s); returns the failures.
pub fn load_while(
    port: u16,
    clients: usize,
    path: &'static str,
    mut done: impl FnMut() -> bool,
    min_each: usize,
) -> Vec<String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let mut failures = Vec::new();
                let mut n = 0;
                while n < min_each || !stop.load(Ordering::Acquire) {
                    if let Err(e) = client.get(path) {
                        failures.push(e);
                    }
                    n += 1;
                }
                failures
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

/// Runs `ferricorn ctl -s SOCKET ARGS`: (exit code, stdout, stderr).
pub fn ctl(socket: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("ctl")
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("run ferricorn ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The metrics port from the master's `Metrics at:` line.
pub fn metrics_port(server: &Server) -> u16 {
    wait_for("the Metrics at: line", Duration::from_secs(20), || {
        let log = server.log_text();
        let line = log.lines().find(|l| l.contains("Metrics at: http://"))?;
        let after = line.split("Metrics at: http://").nth(1)?;
        let host_port = after.split('/').next()?;
        host_port.rsplit(':').next()?.parse().ok()
    })
}

/// The pids of `master`'s children (its workers, and a trial load while one runs).
pub fn children(master: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A size field of /proc/PID/status (`VmRSS`, `VmHWM`…) in bytes.
pub fn status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        * 1024
}

/// Raises this test process's RLIMIT_NOFILE soft limit to its hard limit; returns it.
pub fn raise_own_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct this function owns.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// TCP_DEFER_ACCEPT of a listening socket as getsockopt(2) reads it (0: off).
pub fn tcp_defer_accept(socket: &impl std::os::fd::AsRawFd) -> i32 {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a local c_int.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(done, 0, "getsockopt TCP_DEFER_ACCEPT");
    value
}

/// SIGTERM to a process the test started indirectly (a master under strace, the new master
/// of a USR2 upgrade) when dropped, so that a failed assertion leaves no server running.
pub struct TermOnDrop(pub i32);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        // 0 or 1 would signal the test's process group or init.
        if self.0 > 1 {
            // SAFETY: kill(2) on a process this test started (its pid read from its own log
            // or pidfile); if it already exited, the signal goes nowhere (the pid is not
            // reused within a test).
            unsafe { libc::kill(self.0, libc::SIGTERM) };
        }
    }
}
