//! The protocol-neutral side of a client connection: the socket and the system calls that
//! move its bytes ([`sys`]). HTTP/1.1 (and any other protocol a connection speaks) sits on
//! top of it.

pub mod sys;

pub use sys::Socket;
