//! The protocol-neutral side of a client connection: the socket and the system calls that
//! move its bytes ([`sys`]). HTTP/1.1 (and any other protocol a connection speaks) sits on
//! top of it.

mod address;
pub mod proxy;
pub mod sys;
pub mod tls;

pub use address::AddrText;
pub use sys::Socket;
