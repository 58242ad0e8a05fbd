//! What a connection slot holds: a session of one protocol over the connection's
//! [`Transport`]. The worker drives, times and stops sessions through this one interface,
//! whatever protocol they speak.

use super::context::Context;
use crate::http::h1::{self, Next, Scratch};
use crate::transport::{Readiness, Transport};
use std::time::Instant;

/// One connection's session.
pub enum Session {
    /// HTTP/1.1 (RFC 9112): requests and responses.
    Http1(h1::Conn),
}

impl Session {
    /// The connection's transport (its socket, for epoll).
    pub fn transport(&self) -> &Transport {
        match self {
            Session::Http1(conn) => &conn.transport,
        }
    }

    /// When the session's current phase times out (the timer closes it then, see
    /// [`Session::expired`]).
    pub fn deadline(&self) -> Instant {
        match self {
            Session::Http1(conn) => conn.deadline,
        }
    }

    /// Output waits for the client to make room (the connection should be watched for it).
    pub fn sending(&self) -> bool {
        match self {
            Session::Http1(conn) => conn.sending(),
        }
    }

    /// Serves what `ready` reports, on the calling thread (the connection's owner), until the
    /// session would block ([`Next::Wait`]) or must close ([`Next::Close`]).
    pub fn drive(&mut self, ctx: &Context, scratch: &mut Scratch, ready: Readiness) -> Next {
        match self {
            Session::Http1(conn) => h1::drive(ctx, conn, scratch, ready),
        }
    }

    /// Whether the session's deadline has passed at `now` (what it owed the client, if
    /// anything, has been sent or given up): the timer closes it.
    pub fn expired(&mut self, ctx: &Context, now: Instant) -> bool {
        match self {
            Session::Http1(conn) => h1::expired(ctx, conn, now),
        }
    }

    /// In a stopping worker: whether the session may be closed now (nothing in progress).
    pub fn idle_at_stop(&mut self, ctx: &Context, now: Instant) -> bool {
        match self {
            Session::Http1(conn) => h1::idle_at_stop(ctx, conn, now),
        }
    }
}
