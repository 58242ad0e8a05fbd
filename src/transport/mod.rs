//! The protocol-neutral side of a client connection ([`Transport`]): the socket and the
//! system calls that move its bytes ([`sys`]), TLS ([`tls`]), the byte stream over either
//! ([`Io`]) and the bytes waiting to be sent ([`Backlog`]), the PROXY protocol header
//! ([`proxy`]) and the names of the connection's two ends ([`AddrText`]). A session of one
//! protocol (HTTP/1.1, WebSocket) sits on top of it.

mod address;
pub mod proxy;
mod stream;
pub mod sys;
pub mod tls;

pub use address::AddrText;
pub use stream::{wait_ready, Backlog, Io, Readiness, FIRST_BUFFER, READ_CHUNK};
pub use sys::Socket;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use tls::Session;

/// What the worker does with a connection after driving its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Leave it registered in epoll and wait for more input (or room for output).
    Wait,
    /// Close it.
    Close,
    /// Its session switched protocols (an HTTP/1.1 request upgraded to a WebSocket): the
    /// worker replaces the session and drives the new one.
    Upgrade,
}

/// A client connection's transport, whatever protocol it speaks: the socket, its TLS
/// session, and the names of its two ends.
pub struct Transport {
    /// The socket (non-blocking).
    pub socket: Socket,
    /// Index of the listener it was accepted on.
    pub listener: usize,
    /// The TLS session, on a TLS listener.
    pub tls: Option<Box<Session>>,
    /// REMOTE_ADDR and REMOTE_PORT: the TCP peer's, or the client's once a PROXY header gave
    /// them.
    pub remote: AddrText,
    /// The TCP peer, once a PROXY header replaced REMOTE_ADDR/REMOTE_PORT.
    pub peer: Option<Box<AddrText>>,
    /// SERVER_NAME and SERVER_PORT from a PROXY header (the address the client connected to).
    pub local: Option<Box<AddrText>>,
    /// A TCP connection whose TCP_NODELAY is not set yet (set once it is kept alive).
    pub nodelay_pending: bool,
}

impl Transport {
    /// The transport of socket `fd`, accepted on listener `listener` from `remote`; `is_tcp`
    /// for TCP (TCP_NODELAY pending); `tls`: its TLS session on a TLS listener.
    pub fn new(
        fd: OwnedFd,
        listener: usize,
        remote: Option<SocketAddr>,
        is_tcp: bool,
        tls: Option<Box<Session>>,
    ) -> Transport {
        Transport {
            socket: Socket::new(fd),
            listener,
            tls,
            remote: AddrText::new(remote),
            peer: None,
            local: None,
            nodelay_pending: is_tcp,
        }
    }

    /// Sets TCP_NODELAY once, if it is pending (a TCP connection that goes on after its
    /// first response: writes must not wait for the peer's ACK of the previous one).
    pub fn no_delay(&mut self) {
        if self.nodelay_pending {
            self.nodelay_pending = false;
            let _ = nix::sys::socket::setsockopt(
                &self.socket,
                nix::sys::socket::sockopt::TcpNoDelay,
                &true,
            );
        }
    }

    /// The byte stream: the socket, or the TLS session over it.
    pub fn io(&mut self) -> Io<'_> {
        Io::new(&self.socket, &mut self.tls)
    }
}
