//! Listening sockets: parsing `bind` addresses, binding them in the master (SO_REUSEADDR,
//! `backlog`), and describing them the way gunicorn logs them (`http://127.0.0.1:8000`,
//! `unix:/run/app.sock`).

use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, UnixAddr,
};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// One `bind` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT` or `[V6]:PORT`; port 0 = ephemeral.
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `fd://N`: an already-listening socket inherited from the parent.
    Fd(RawFd),
}

/// The scheme a `bind` entry may start with: `http://ADDR` is plain, `https://ADDR` TLS
/// (with `certfile`/`keyfile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `https://`.
    Https,
}

/// `text`'s scheme, if it starts with one, and the address after it.
pub fn split_scheme(text: &str) -> (Option<Scheme>, &str) {
    if let Some(rest) = text.strip_prefix("https://") {
        return (Some(Scheme::Https), rest);
    }
    match text.strip_prefix("http://") {
        Some(rest) => (Some(Scheme::Http), rest),
        None => (None, text),
    }
}

impl Address {
    /// Parses `HOST:PORT`, `[V6]:PORT`, `unix:PATH` or `fd://N`; a TCP address may start
    /// with `http://` or `https://` (see [`split_scheme`]). A host name is resolved (first
    /// address). Errors say what was wrong with the text.
    pub fn parse(text: &str) -> Result<Address, String> {
        let (scheme, rest) = split_scheme(text);
        if scheme.is_some() {
            return match Address::parse(rest)? {
                Address::Tcp(addr) => Ok(Address::Tcp(addr)),
                _ => Err(format!(
                    "`{text}`: http:// and https:// go with HOST:PORT only"
                )),
            };
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("`{text}`: unix: needs a path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(n) = text.strip_prefix("fd://") {
            return n
                .parse::<RawFd>()
                .ok()
                .filter(|&fd| fd >= 0)
                .map(Address::Fd)
                .ok_or_else(|| format!("`{text}`: fd:// needs a file descriptor number"));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Address::Tcp(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| {
            format!("`{text}`: expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N")
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{text}`: invalid port `{port}`"))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Address::Tcp(SocketAddr::new(ip, port)));
        }
        (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(Address::Tcp)
            .ok_or_else(|| format!("`{text}`: cannot resolve host `{host}`"))
    }
}

/// A bound, listening socket, shared by the master and all workers.
#[derive(Debug)]
pub struct Listener {
    /// The address as configured (port 0 stays 0 here, so reloads match it).
    pub address: Address,
    /// The listening socket (non-blocking, close-on-exec).
    pub fd: OwnedFd,
    /// SERVER_NAME for requests on this socket: the bound IP or the unix path.
    pub server_name: String,
    /// SERVER_PORT: the bound port in decimal, empty for unix sockets.
    pub server_port: String,
    /// Whether this is a TCP socket (TCP_NODELAY applies).
    pub is_tcp: bool,
}

impl Listener {
    /// gunicorn's listener name: `http://HOST:PORT` or `unix:PATH`.
    pub fn url(&self) -> String {
        self.url_for(false)
    }

    /// The listener's name when TLS is on (`tls`) or off: `https://HOST:PORT` for TCP with
    /// TLS (which does not apply to unix sockets), else as [`Listener::url`].
    pub fn url_for(&self, tls: bool) -> String {
        if !self.is_tcp {
            return format!("unix:{}", self.server_name);
        }
        let scheme = if tls { "https" } else { "http" };
        match self.server_name.contains(':') {
            true => format!("{scheme}://[{}]:{}", self.server_name, self.server_port),
            false => format!("{scheme}://{}:{}", self.server_name, self.server_port),
        }
    }

    /// The raw file descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn sys(what: &str, address: &Address, e: nix::Error) -> String {
    format!("cannot {what} {}: {e}", describe(address))
}

/// The address as written in the configuration.
pub fn describe(address: &Address) -> String {
    match address {
        Address::Tcp(addr) => addr.to_string(),
        Address::Unix(path) => format!("unix:{}", path.display()),
        Address::Fd(fd) => format!("fd://{fd}"),
    }
}

/// Binds and listens on `address` with `backlog`. Errors name the address and the cause.
/// Closes the listening sockets `fds` of this process in place: /dev/null is put under each
/// number with dup2(2), which closes the socket and keeps the number valid (nothing else can
/// reuse it while other code still holds it). Once every process has closed its copy, the
/// port is free and new clients are refused instead of queued for nobody.
pub fn close_in_place(fds: impl Iterator<Item = RawFd>) {
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    for raw in fds {
        // SAFETY: dup2 onto a listening descriptor this process owns for its whole life.
        unsafe { libc::dup2(null.as_raw_fd(), raw) };
    }
}

/// How a listening socket that ferricorn binds is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// listen(2)'s backlog (`backlog`).
    pub backlog: i32,
    /// SO_REUSEPORT on a TCP socket (gunicorn's `reuse_port`), so that another master can
    /// bind the same address; the kernel spreads new connections over them.
    pub reuse_port: bool,
    /// TCP_DEFER_ACCEPT in seconds, 0 = off (`defer_accept`, tcp(7); nginx's `deferred`).
    pub defer_accept: u32,
}

impl ListenOptions {
    /// The master's own listeners (control socket, metrics): `backlog`, nothing else.
    pub fn plain(backlog: i32) -> ListenOptions {
        ListenOptions {
            backlog,
            reuse_port: false,
            defer_accept: 0,
        }
    }
}

/// Binds and listens on `address` with `options` (an `fd://N` address adopts the inherited
/// socket instead). Errors: one line naming the address and the call that failed.
pub fn bind_listener(address: &Address, options: ListenOptions) -> Result<Listener, String> {
    let ListenOptions {
        backlog,
        reuse_port,
        defer_accept,
    } = options;
    let backlog = Backlog::new(backlog).map_err(|e| sys("use backlog for", address, e))?;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = match address {
        Address::Tcp(addr) => {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, flags, None)
                .map_err(|e| sys("create a socket for", address, e))?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)
                .map_err(|e| sys("set SO_REUSEADDR on", address, e))?;
            if reuse_port {
                setsockopt(&fd, sockopt::ReusePort, &true)
                    .map_err(|e| sys("set SO_REUSEPORT on", address, e))?;
            }
            let bound = match addr {
                SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(*v4)),
                SocketAddr::V6(v6) => {
                    setsockopt(&fd, sockopt::Ipv6V6Only, &true)
                        .map_err(|e| sys("set IPV6_V6ONLY on", address, e))?;
                    bind(fd.as_raw_fd(), &SockaddrIn6::from(*v6))
                }
            };
            bound.map_err(|e| sys("bind", address, e))?;
            fd
        }
        Address::Unix(path) => {
            remove_stale_socket(path);
            let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None)
                .map_err(|e| sys("create a socket for", address, e))?;
            let addr = UnixAddr::new(path).map_err(|e| sys("use", address, e))?;
            bind(fd.as_raw_fd(), &addr).map_err(|e| sys("bind", address, e))?;
            fd
        }
        Address::Fd(raw) => return inherit(address, *raw),
    };
    listen(&fd, backlog).map_err(|e| sys("listen on", address, e))?;
    let listener = describe_socket(address.clone(), fd)?;
    defer_accept_on(&listener, defer_accept)?;
    Ok(listener)
}

/// Whether TCP_DEFER_ACCEPT is on for `listener` (however it was set: by ferricorn, or by
/// systemd for an activated socket); false for unix sockets or if it cannot be read.
pub fn deferred(listener: &Listener) -> bool {
    if !listener.is_tcp {
        return false;
    }
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a local c_int and updates `len`.
    let done = unsafe {
        libc::getsockopt(
            listener.fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    done == 0 && value > 0
}

/// Sets TCP_DEFER_ACCEPT to `seconds` (0: off) on `listener` if ferricorn bound it (a TCP
/// address of `bind`: at startup, on a reload, after USR2); a socket inherited as `fd://N`
/// or from systemd keeps what its owner set (systemd's `DeferAcceptSec=`). Errors: one line
/// naming the address.
pub fn defer_accept_on(listener: &Listener, seconds: u32) -> Result<(), String> {
    if !matches!(listener.address, Address::Tcp(_)) {
        return Ok(());
    }
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from a local that outlives the call.
    let done = unsafe {
        libc::setsockopt(
            listener.fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        let e = nix::errno::Errno::last();
        return Err(sys("set TCP_DEFER_ACCEPT on", &listener.address, e));
    }
    Ok(())
}

/// Adopts the inherited listening socket `raw` as the listener for `address` (an `fd://N`
/// address, a systemd-activated socket, or a configured address handed over by the previous
/// master on USR2), making it non-blocking and close-on-exec. Errors name the address.
pub fn adopt(address: Address, raw: RawFd) -> Result<Listener, String> {
    inherit(&address, raw)
}

/// Adopts an inherited listening socket (`fd://N`), making it non-blocking and close-on-exec.
fn inherit(address: &Address, raw: RawFd) -> Result<Listener, String> {
    // SAFETY: fcntl(F_GETFD) only queries whether `raw` is open; it does not take ownership.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(format!(
            "cannot use {}: no such open file descriptor",
            describe(address)
        ));
    }
    // SAFETY: the operator handed us this descriptor to own (fd://N); it is open (checked above)
    // and nothing else in this process uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_flag(&fd, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK);
    set_flag(&fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC);
    describe_socket(address.clone(), fd)
}

fn set_flag(fd: &OwnedFd, get: libc::c_int, set: libc::c_int, bit: libc::c_int) {
    // SAFETY: plain fcntl flag updates on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), get);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), set, flags | bit);
        }
    }
}

fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn describe_socket(address: Address, fd: OwnedFd) -> Result<Listener, String> {
    let local: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| sys("inspect", &address, e))?;
    let (server_name, server_port, is_tcp) = if let Some(v4) = local.as_sockaddr_in() {
        (v4.ip().to_string(), v4.port().to_string(), true)
    } else if let Some(v6) = local.as_sockaddr_in6() {
        (v6.ip().to_string(), v6.port().to_string(), true)
    } else if let Some(unix) = local.as_unix_addr() {
        let path = unix
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        (path, String::new(), false)
    } else {
        return Err(format!(
            "cannot use {}: not an IP or unix socket",
            describe(&address)
        ));
    };
    Ok(Listener {
        address,
        fd,
        server_name,
        server_port,
        is_tcp,
    })
}

/// Removes the socket file of a unix listener (at final shutdown).
pub fn unlink(listener: &Listener) {
    if let Address::Unix(path) = &listener.address {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether accept(2) failed for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
/// ENOMEM): the caller stops watching the listener for a while instead of retrying at once.
pub fn out_of_resources(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(
        e,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

/// accept4(2) on `listener` with SOCK_NONBLOCK | SOCK_CLOEXEC, returning the new connection
/// and the peer's IP address and port as accept4 reported it (no getpeername(2) call);
/// `None` for unix sockets.
/// Errors: accept4's errno (EAGAIN when the queue is empty).
pub fn accept_client(listener: RawFd) -> nix::Result<(OwnedFd, Option<std::net::SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = crate::transport::sys::accept4(
        listener,
        &mut storage,
        &mut len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    )?;
    // SAFETY: `storage` holds `len` bytes of a socket address written by accept4.
    let peer = unsafe {
        <SockaddrStorage as nix::sys::socket::SockaddrLike>::from_raw(
            (&storage as *const libc::sockaddr_storage).cast(),
            Some(len),
        )
    };
    Ok((fd, peer.and_then(|p| ip_peer(&p))))
}

fn ip_peer(peer: &SockaddrStorage) -> Option<std::net::SocketAddr> {
    if let Some(v4) = peer.as_sockaddr_in() {
        Some(std::net::SocketAddrV4::from(*v4).into())
    } else {
        peer.as_sockaddr_in6()
            .map(|v6| std::net::SocketAddrV6::from(*v6).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Address::parse("127.0.0.1:0").unwrap(),
            Address::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            Address::parse("[::1]:80").unwrap(),
            Address::Tcp("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            Address::parse("unix:/tmp/x.sock").unwrap(),
            Address::Unix("/tmp/x.sock".into())
        );
        assert_eq!(Address::parse("fd://3").unwrap(), Address::Fd(3));
        assert!(Address::parse("localhost:80").is_ok());
        assert!(Address::parse("nothing").is_err());
        assert!(Address::parse("1.2.3.4:99999").is_err());
        assert!(Address::parse("unix:").is_err());
    }
}
