//! What a worker's serving threads share to serve connections, whatever their protocol:
//! the app, the settings that shape a session, the pool, the scoreboard slot and counters.

use crate::access_log::AccessFormat;
use crate::forwarded::{Forwarding, IpSet};
use crate::gateway::App;
use crate::http::Limits;
use crate::scoreboard::Place;
use crate::transport::proxy::Mode as ProxyMode;
use crate::worker::pool::Pool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An app call at least this long marks a blocking app, whose worker may shed a kept-alive
/// connection when it is overloaded (see [`Context::shed_load`]).
pub const SHED_AFTER: Duration = Duration::from_millis(1);

/// The listener a connection arrived on, as the request's SERVER_NAME and SERVER_PORT.
#[derive(Clone, Debug)]
pub struct LocalName {
    /// SERVER_NAME.
    pub name: String,
    /// SERVER_PORT.
    pub port: String,
}

/// Everything a worker's threads share to serve connections.
pub struct Context {
    /// The initialised app.
    pub app: App,
    /// Request limits.
    pub limits: Limits,
    /// Which peers' forwarding headers are believed, and what they may set.
    pub forwarding: Forwarding,
    /// `proxy_protocol`.
    pub proxy_mode: ProxyMode,
    /// `proxy_allow_ips`.
    pub proxy_allow: IpSet,
    /// Idle time allowed between requests; `None` = no keep-alive.
    pub keepalive: Option<Duration>,
    /// Time allowed to receive a complete head.
    pub header_timeout: Duration,
    /// Longest a client may stall while its request is being served (reading the body,
    /// accepting the response).
    pub stall_timeout: Duration,
    /// One entry per listener, in listener order.
    pub listeners: Vec<LocalName>,
    /// Set when the worker is stopping: responses say `Connection: close`.
    pub stopping: AtomicBool,
    /// Requests served by this worker.
    pub requests: AtomicU64,
    /// Stop after this many requests (0 = never).
    pub max_requests: u64,
    /// FC_REQ_* flags for every request.
    pub request_flags: u32,
    /// `access_log_format`, parsed.
    pub access_format: AccessFormat,
    /// Set when this worker asked the master for a replacement (max_requests reached).
    pub retiring: AtomicBool,
    /// The worker's serving threads: which are in the app, since when.
    pub pool: Pool,
    /// `body_buffer` in bytes: a body up to it is read before the app runs.
    pub body_buffer: usize,
    /// `response_buffer` in bytes: unsent response bytes a connection may hold.
    pub response_buffer: usize,
    /// This worker's slot on the scoreboard (`None`: no scoreboard, no balancing).
    pub place: Option<Place>,
    /// The origin of the worker's millisecond clocks.
    pub epoch: Instant,
    /// The WebSocket settings.
    pub websocket: WebSocketSettings,
}

/// The settings of WebSocket sessions.
#[derive(Clone, Copy, Debug)]
pub struct WebSocketSettings {
    /// `websocket_max_message`: the longest message taken from a client, in bytes (longer:
    /// closed with 1009).
    pub max_message: usize,
    /// `websocket_ping_interval`: a client quiet this long is pinged (and closed when its
    /// pong does not come within `timeout`).
    pub ping_interval: Duration,
    /// `websocket_send_buffer`: bytes queued per connection before sends would block.
    pub send_buffer: usize,
}

impl Context {
    /// Counts bytes received (`read`) and sent (`written`), on the scoreboard.
    pub fn count_bytes(&self, read: usize, written: usize) {
        if let Some(place) = &self.place {
            let counters = &place.mine().counters;
            if read > 0 {
                counters.bytes_in.fetch_add(read as u64, Ordering::Relaxed);
            }
            if written > 0 {
                counters
                    .bytes_out
                    .fetch_add(written as u64, Ordering::Relaxed);
            }
        }
    }

    /// Counts a WebSocket connection opened (`1`) or closed (`-1`), on the scoreboard.
    pub fn count_websocket(&self, delta: i32) {
        if let Some(place) = &self.place {
            let gauge = &place.mine().websockets;
            match delta {
                1 => gauge.fetch_add(1, Ordering::Relaxed),
                _ => gauge.fetch_sub(1, Ordering::Relaxed),
            };
        }
    }

    /// Counts a WebSocket message received and handed to the app, on the scoreboard.
    pub fn count_ws_message_in(&self) {
        if let Some(place) = &self.place {
            let counters = &place.mine().counters;
            counters.ws_messages_in.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request the server refused itself with `status`, on the scoreboard.
    pub fn count_rejected(&self, status: u16) {
        if let Some(place) = &self.place {
            place.mine().counters.reject(status);
        }
    }

    /// Whether to close a kept-alive connection after the response being finished, so that
    /// its client reconnects to a less loaded worker: the app call just made took `call`
    /// (at least [`SHED_AFTER`]: a blocking app), every other thread of this worker is in
    /// the app, this worker holds more connections than threads, and another worker has a
    /// thread outside the app and at least two connections fewer.
    pub fn shed_load(&self, call: Duration) -> bool {
        if call < SHED_AFTER {
            return false;
        }
        let Some(place) = &self.place else {
            return false;
        };
        let threads = self.pool.threads();
        if self.pool.in_app() + 1 < threads {
            return false;
        }
        let mine = place.mine().connections.load(Ordering::Relaxed);
        if mine as usize <= threads {
            return false;
        }
        let others = place.others();
        others.spare_thread && others.fewest_connections.saturating_add(2) <= mine
    }
}
