//! WebSocket (RFC 6455): the opening handshake ([`handshake`]) that turns an HTTP/1.1
//! request into a WebSocket session, and the protocol after it, sans I/O ([`proto`]).

pub mod handshake;
pub mod proto;
