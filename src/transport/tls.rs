//! TLS with rustls (issue #17): gunicorn's `certfile`, `keyfile`, `ca_certs` and
//! `cert_reqs` turned into a [`ServerConfig`] ([`load`]), and one connection's TLS session
//! over a non-blocking socket ([`Session`]): records in with read(2), plaintext out to the
//! connection driver, plaintext in from the responder, records out with writev(2), never
//! waiting. The driver runs the handshake in the event loop like any other input, bounded by
//! `header_timeout`.
//!
//! The master loads the files (as root, before a worker switches user) at startup and on HUP,
//! after the reload's probe child loaded them first; the workers it forks share the result.
//! rustls's aws-lc-rs provider: TLS 1.2 and 1.3 with rustls's default cipher suites, X25519
//! and P-256 key exchange, stateless session tickets (one key per master generation).

use crate::listeners::Address;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `cert_reqs` (gunicorn, after Python's `ssl.CERT_NONE/OPTIONAL/REQUIRED`): whether the
/// handshake asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `none` (0): no client certificate is asked for.
    None,
    /// `optional` (1): asked for; a client may send none, but one it sends must chain to
    /// `ca_certs`.
    Optional,
    /// `required` (2): a handshake without a certificate that chains to `ca_certs` fails.
    Required,
}

/// The TLS settings as configured: file paths, not yet read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `certfile`: PEM, the server's certificate first, then the chain.
    pub certfile: PathBuf,
    /// `keyfile`: PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: PathBuf,
    /// `ca_certs`: PEM CA certificates for client certificates.
    pub ca_certs: Option<PathBuf>,
    /// `cert_reqs`.
    pub client_auth: ClientAuth,
    /// `certificates`: more (certfile, keyfile) pairs, chosen by SNI.
    pub sni: Vec<(PathBuf, PathBuf)>,
    /// `listener_certificates`: listeners (by address) with a certificate of their own, and
    /// the PEM file holding its chain and key.
    pub listeners: Vec<(Address, PathBuf)>,
}

/// The ALPN protocol offered (RFC 7301): HTTP/1.1 only.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Most response bytes a session holds encrypted and unsent (rustls's buffer limit, applied
/// to the plaintext accepted by [`Session::send`]): beyond it the driver's backlog holds them.
const SEND_LIMIT: usize = 64 * 1024;

/// The rustls configurations of the TLS listeners: one for every listener, except those
/// with a certificate of their own (`listener_certificates`).
#[derive(Debug)]
pub struct Tls {
    default: Arc<ServerConfig>,
    listeners: Vec<(Address, Arc<ServerConfig>)>,
}

impl Tls {
    /// The configuration for connections to the listener bound at `address`.
    pub fn for_listener(&self, address: &Address) -> &Arc<ServerConfig> {
        let own = self.listeners.iter().find(|(a, _)| a == address);
        own.map_or(&self.default, |(_, config)| config)
    }
}

/// Reads `settings`' files and builds the rustls configurations for every TLS connection.
/// Errors: one line naming the file (unreadable, not PEM, no certificate or key in it, a key
/// that does not match the certificate, CAs that cannot be used).
pub fn load(settings: &TlsSettings) -> Result<Arc<Tls>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let default = server_config(settings, &provider, None)?;
    let listeners = settings
        .listeners
        .iter()
        .map(|(address, pem)| {
            Ok((
                address.clone(),
                server_config(settings, &provider, Some(pem))?,
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok(Arc::new(Tls { default, listeners }))
}

/// One rustls configuration: the client-certificate rules of `settings`, and its
/// certificates: `own` (a PEM file with a listener's chain and key), or else `certfile` and
/// `keyfile` (with the `certificates` chosen by SNI).
fn server_config(
    settings: &TlsSettings,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    own: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (settings.client_auth, &settings.ca_certs) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(path)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "ca_certs")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_certs {}: {e}", path.display()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("ca_certs {}: {e}", path.display()))?,
            )
        }
    };
    let (cert, key, setting) = match own {
        Some(pem) => (pem, pem, "listener_certificates"),
        None => (
            settings.certfile.as_path(),
            settings.keyfile.as_path(),
            "certfile",
        ),
    };
    let mut config = match (own, settings.sni.is_empty()) {
        (Some(_), _) | (None, true) => {
            let chain = read_certs(cert, setting)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                let which = if own.is_some() { setting } else { "keyfile" };
                format!(
                    "{which} {}: no usable private key: {}",
                    key.display(),
                    pem_error(e)
                )
            })?;
            builder
                .with_single_cert(chain, key_der)
                .map_err(|e| match own {
                    Some(pem) => format!("{setting} {}: {e}", pem.display()),
                    None => format!(
                        "certfile {} with keyfile {}: {e}",
                        cert.display(),
                        key.display()
                    ),
                })?
        }
        (None, false) => {
            let default = certified(cert, key, provider)?;
            let mut by_name = Vec::new();
            for (cert, key) in &settings.sni {
                let certified = certified(cert, key, provider)?;
                for name in dns_names(&certified, cert)? {
                    by_name.push((name, certified.clone()));
                }
            }
            builder.with_cert_resolver(Arc::new(BySni { by_name, default }))
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// A certificate chain and its key, ready to serve. Errors name the files: unreadable, not
/// PEM, or a key that does not match the certificate.
fn certified(
    cert: &Path,
    key: &Path,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let chain = read_certs(cert, "certificates")?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "certificates: {}: no usable private key: {}",
            key.display(),
            pem_error(e)
        )
    })?;
    let certified =
        rustls::sign::CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
            format!(
                "certificates: {} with {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(certified))
}

/// The DNS names a certificate serves (its subjectAltName; `*.example.com` kept as is),
/// lower case. Errors: a certificate with none, naming the file.
fn dns_names(certified: &rustls::sign::CertifiedKey, path: &Path) -> Result<Vec<String>, String> {
    let leaf = certified
        .end_entity_cert()
        .map_err(|e| format!("certificates: {}: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("certificates: {}: {e}", path.display()))?;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(name) => {
                        Some(name.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(format!(
            "certificates: {}: no DNS name in its subjectAltName to choose it by",
            path.display()
        ));
    }
    Ok(names)
}

/// Chooses the certificate by the name the client asks for (SNI, RFC 6066 §3): an exact
/// name, else a `*.` wildcard for its first label; the default (`certfile`) otherwise.
#[derive(Debug)]
struct BySni {
    by_name: Vec<(String, Arc<rustls::sign::CertifiedKey>)>,
    default: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        let found = self.by_name.iter().find(|(n, _)| *n == name).or_else(|| {
            self.by_name
                .iter()
                .find(|(n, _)| Some(n) == wildcard.as_ref())
        });
        Some(found.map_or(&self.default, |(_, c)| c).clone())
    }
}

/// The certificates in PEM file `path` (setting `key`). Errors name the key and the file.
fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "nothing of that kind in the file".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// What a handshake settled, for the app (`FcRequest.tls_*`) and the debug log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `TLSv1.3` or `TLSv1.2` (nginx's `$ssl_protocol` spelling).
    pub version: &'static str,
    /// The cipher suite's IANA name, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The client certificate's subject (RFC 4514 string, as x509-parser writes it), when
    /// the client sent one; empty otherwise.
    pub client_subject: String,
}

/// One connection's TLS session over a non-blocking socket.
pub struct Session {
    conn: ServerConnection,
    /// Decrypted bytes rustls holds that [`Session::recv`] has not handed out.
    plaintext: usize,
    /// The last read(2) returned less than asked: the socket's queue was empty then.
    socket_drained: bool,
    /// The client sent close_notify, or closed TCP.
    closed: bool,
    facts: Option<Facts>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("facts", &self.facts)
            .finish()
    }
}

/// The socket as rustls's reader and writer, recording whether a read came up short.
struct Socket<'a> {
    fd: BorrowedFd<'a>,
    short: bool,
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv(2) writes at most buf.len() bytes into buf, a valid, unaliased slice.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.short = (n as usize) < buf.len();
        Ok(n as usize)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        nix::sys::uio::writev(self.fd, bufs).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Session {
    /// A session for a connection just accepted, waiting for the client's hello.
    /// Errors: rustls's (a configuration it cannot use).
    pub fn new(config: &Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        let mut conn = ServerConnection::new(config.clone())?;
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Session {
            conn,
            plaintext: 0,
            socket_drained: false,
            closed: false,
            facts: None,
        })
    }

    /// The handshake is not finished yet.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// What the handshake settled; `None` until it is finished.
    pub fn facts(&self) -> Option<&Facts> {
        self.facts.as_ref()
    }

    /// Encrypted bytes wait to be written (the socket was full).
    pub fn pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends up to `want` decrypted bytes to `buf`, reading and decrypting records from
    /// `fd` as needed (and answering the handshake). Returns the count (0: the client closed)
    /// and whether the socket had nothing more (edge-triggered epoll reports what comes
    /// next). Errors: read(2)'s (WouldBlock: nothing decrypted yet), InvalidData for a TLS
    /// failure (after the alert was sent, best effort).
    pub fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        want: usize,
    ) -> io::Result<(usize, bool)> {
        loop {
            if self.plaintext > 0 {
                let n = self.plaintext.min(want);
                let old = buf.len();
                buf.resize(old + n, 0);
                let got = match self.conn.reader().read(&mut buf[old..]) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => {
                        buf.truncate(old);
                        return Err(e);
                    }
                };
                buf.truncate(old + got);
                self.plaintext = self.plaintext.saturating_sub(got);
                if got > 0 {
                    return Ok((got, self.plaintext == 0 && self.socket_drained));
                }
                self.plaintext = 0;
            }
            if self.closed {
                return Ok((0, true));
            }
            let mut socket = Socket { fd, short: false };
            if self.conn.read_tls(&mut socket)? == 0 {
                self.closed = true;
                return Ok((0, true));
            }
            self.socket_drained = socket.short;
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert rustls queued for the client.
                    let _ = self.flush(fd);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            self.plaintext = state.plaintext_bytes_to_read();
            self.closed = state.peer_has_closed();
            if self.facts.is_none() && !self.conn.is_handshaking() {
                self.facts = Some(self.settled());
            }
            // Handshake messages, tickets and key updates for the client.
            self.flush(fd)?;
        }
    }

    /// Encrypts as much of `data` as fits (after sending what waits) and writes what the
    /// socket takes now: the count of `data`'s bytes taken (less than asked once the socket
    /// is full; epoll reports room). `data` may be empty, to send what waits.
    /// Errors: writev(2)'s other than EAGAIN.
    pub fn send(&mut self, fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        loop {
            if !self.flush(fd)? || done == data.len() {
                return Ok(done);
            }
            let n = self.conn.writer().write(&data[done..])?;
            if n == 0 {
                return Ok(done);
            }
            done += n;
        }
    }

    /// Writes the encrypted bytes that wait: true once none is left, false when the socket is
    /// full. Errors: writev(2)'s other than EAGAIN.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut socket = Socket { fd, short: false };
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues close_notify (RFC 8446 §6.1) and sends it without waiting.
    pub fn close_notify(&mut self, fd: BorrowedFd<'_>) {
        if !self.conn.is_handshaking() {
            self.conn.send_close_notify();
        }
        let _ = self.flush(fd);
    }

    fn settled(&self) -> Facts {
        let version = match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .map(|name| match name.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => name.to_string(),
            })
            .unwrap_or_default();
        let client_subject = self
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| x509_parser::parse_x509_certificate(cert).ok())
            .map(|(_, cert)| cert.subject().to_string())
            .unwrap_or_default();
        Facts {
            version,
            cipher,
            client_subject,
        }
    }
}
