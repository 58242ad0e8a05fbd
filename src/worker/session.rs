//! What a connection slot holds: a session of one protocol over the connection's
//! [`Transport`]. The worker drives, times and stops sessions through this one interface,
//! whatever protocol they speak.

use super::context::Context;
use crate::http::h1::{self, Scratch};
use crate::http::ws;
use crate::transport::{Next, Readiness, Transport};
use std::time::Instant;

/// One connection's session.
pub enum Session {
    /// HTTP/1.1 (RFC 9112): requests and responses.
    Http1(h1::Conn),
    /// WebSocket (RFC 6455): messages both ways, after an HTTP/1.1 upgrade.
    WebSocket(ws::Conn),
}

impl Session {
    /// The connection's transport (its socket, for epoll).
    pub fn transport(&self) -> &Transport {
        match self {
            Session::Http1(conn) => &conn.transport,
            Session::WebSocket(conn) => &conn.transport,
        }
    }

    /// When the session's current phase times out (the timer looks at it then, see
    /// [`Session::expired`]).
    pub fn deadline(&self) -> Instant {
        match self {
            Session::Http1(conn) => conn.deadline,
            Session::WebSocket(conn) => conn.deadline,
        }
    }

    /// Output waits for the client to make room (the connection should be watched for it).
    pub fn sending(&self) -> bool {
        match self {
            Session::Http1(conn) => conn.sending(),
            Session::WebSocket(conn) => conn.sending(),
        }
    }

    /// Serves what `ready` reports, on the calling thread (the connection's owner), until the
    /// session would block ([`Next::Wait`]), must close ([`Next::Close`]) or switched
    /// protocols ([`Next::Upgrade`]: replace it with [`Session::upgraded`]).
    pub fn drive(&mut self, ctx: &Context, scratch: &mut Scratch, ready: Readiness) -> Next {
        match self {
            Session::Http1(conn) => h1::drive(ctx, conn, scratch, ready),
            Session::WebSocket(conn) => ws::conn::drive(ctx, conn, scratch, ready),
        }
    }

    /// The session that follows this one after [`Next::Upgrade`], served under epoll
    /// `token` (a session that did not switch is returned as it is).
    pub fn upgraded(self, ctx: &Context, token: u64) -> Session {
        match self {
            Session::Http1(conn) => {
                Session::WebSocket(ws::Conn::new(ctx, conn.into_websocket(), token))
            }
            other => other,
        }
    }

    /// The session is now served under epoll `token` (its slot and generation).
    pub fn attach(&self, token: u64) {
        if let Session::WebSocket(conn) = self {
            conn.attach(token);
        }
    }

    /// Whether the session's deadline has passed at `now` (what it owed the client, if
    /// anything, has been sent or given up): the timer closes it.
    pub fn expired(&mut self, ctx: &Context, now: Instant) -> bool {
        match self {
            Session::Http1(conn) => h1::expired(ctx, conn, now),
            Session::WebSocket(conn) => ws::conn::expired(ctx, conn, now),
        }
    }

    /// In a stopping worker: whether the session may be closed now (nothing in progress).
    pub fn idle_at_stop(&mut self, ctx: &Context, now: Instant) -> bool {
        match self {
            Session::Http1(conn) => h1::idle_at_stop(ctx, conn, now),
            Session::WebSocket(conn) => ws::conn::idle_at_stop(ctx, conn, now),
        }
    }

    /// The stopping worker's `graceful_timeout` is about to run out: a WebSocket starts its
    /// closing handshake with 1001 (Going Away) so its client reconnects to a new worker.
    /// True when the connection can close at once.
    pub fn going_away(&mut self, ctx: &Context, now: Instant) -> bool {
        match self {
            Session::Http1(_) => false,
            Session::WebSocket(conn) => ws::conn::going_away(ctx, conn, now),
        }
    }

    /// The session is about to be closed: a WebSocket tells the app (`ws_close`); `thread`
    /// is the calling serving thread's index (any other value for another thread).
    pub fn end(&mut self, ctx: &Context, thread: usize) {
        if let Session::WebSocket(conn) = self {
            ws::conn::end(ctx, conn, thread);
        }
    }
}
