//! WebSocket (RFC 6455): the opening handshake ([`handshake`]) that turns an HTTP/1.1
//! request into a WebSocket session, the protocol after it, sans I/O ([`proto`]), the
//! session's driver ([`conn`]) and the worker's registry of connections the app sends to
//! from any thread ([`hub`]).

pub mod conn;
pub mod deflate;
pub mod handshake;
pub mod hub;
pub mod proto;

pub use conn::Conn;
