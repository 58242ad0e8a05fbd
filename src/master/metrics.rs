//! Metrics (`metrics_bind`): the Prometheus (OpenMetrics) text exposition of the scoreboard's
//! counters, summed over the live workers and the totals of those that exited (so no count
//! goes backwards), and of the master's own counts (restarts, reloads), encoded with
//! prometheus-client; and the answer to `GET /metrics`, which the master's event loop
//! serves through [`crate::master::control::Server`] (never an app's worker, never blocking).

use crate::scoreboard::{Counters, DURATION_BUCKETS, METHODS, REJECTS, STATUSES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;

/// Why a worker was replaced (`ferricorn_worker_restarts_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// It died without being asked to.
    Crash,
    /// Killed after `timeout` seconds without a heartbeat.
    Timeout,
    /// It asked for a replacement (max_requests, request_timeout).
    MaxRequests,
    /// Its resident memory passed max_worker_rss.
    Rss,
    /// A reload (HUP) replaced its generation.
    Reload,
}

impl Restart {
    /// Every reason, in label order.
    pub const ALL: [Restart; 5] = [
        Restart::Crash,
        Restart::Timeout,
        Restart::MaxRequests,
        Restart::Rss,
        Restart::Reload,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Restart::Crash => "crash",
            Restart::Timeout => "timeout",
            Restart::MaxRequests => "max_requests",
            Restart::Rss => "rss",
            Restart::Reload => "reload",
        }
    }
}

/// What one scrape shows: sums at the moment of the scrape.
#[derive(Debug)]
pub struct Snapshot {
    /// Request counters of all workers, past and present.
    pub counters: Box<Counters>,
    /// Open connections (all workers).
    pub connections: u64,
    /// Threads inside the app (all workers).
    pub threads_busy: u64,
    /// Open WebSocket connections (all workers).
    pub websockets: u64,
    /// Live workers.
    pub workers: u64,
    /// Restarts by [`Restart::ALL`] order.
    pub restarts: [u64; 5],
    /// Reloads that succeeded and that failed.
    pub reloads: (u64, u64),
    /// Accept queue length per TCP listener (its URL).
    pub listen_queue: Vec<(String, u64)>,
    /// Resident memory per worker pid, in bytes.
    pub worker_rss: Vec<(String, u64)>,
}

/// Labelled values of one metric family.
type Samples = [(Vec<(&'static str, String)>, u64)];

/// Encodes one family of `kind` (counter or gauge): a sample per label set, or a single
/// unlabelled sample.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    kind: MetricType,
    name: &str,
    help: &str,
    values: &Samples,
) -> Result<(), std::fmt::Error> {
    let sample = |value: u64, into: prometheus_client::encoding::MetricEncoder<'_>| match kind {
        MetricType::Counter => ConstCounter::new(value).encode(into),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(into),
    };
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        if labels.is_empty() {
            return sample(*value, metric);
        }
        sample(*value, metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Snapshot {
    fn requests(&self) -> Vec<(Vec<(&'static str, String)>, u64)> {
        let per_method = STATUSES.len() + 1;
        let mut out = Vec::new();
        for (i, c) in self.counters.requests.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let status = STATUSES
                .get(i % per_method)
                .map_or("other".to_string(), |s| s.to_string());
            let method = METHODS[i / per_method].to_string();
            out.push((vec![("status", status), ("method", method)], n));
        }
        out
    }

    fn rejected(&self) -> Vec<(Vec<(&'static str, String)>, u64)> {
        self.counters
            .rejected
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let status = REJECTS
                    .get(i)
                    .map_or("other".to_string(), |s| s.to_string());
                (vec![("status", status)], c.load(Ordering::Relaxed))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn histogram(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let mut count = 0;
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
        for (i, c) in self.counters.duration_buckets.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            // prometheus-client writes `+Inf` for f64::MAX only (f64::INFINITY prints as `inf`).
            let bound = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::MAX);
            buckets.push((bound, n));
        }
        let sum = self.counters.duration_us.load(Ordering::Relaxed) as f64 / 1e6;
        let mut metric = encoder.encode_descriptor(
            "ferricorn_request_duration_seconds",
            "Time from a request's head to the end of the app's call, in seconds.",
            None,
            MetricType::Histogram,
        )?;
        metric
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let none = Vec::new;
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_requests",
            "Requests answered, by status and method, over all workers past and present.",
            &self.requests(),
        )?;
        self.histogram(&mut encoder)?;
        let bytes = |c: &std::sync::atomic::AtomicU64| [(Vec::new(), c.load(Ordering::Relaxed))];
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_received_bytes",
            "Bytes received from clients.",
            &bytes(&self.counters.bytes_in),
        )?;
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_sent_bytes",
            "Bytes sent to clients (the server's own error answers aside).",
            &bytes(&self.counters.bytes_out),
        )?;
        family(
            &mut encoder,
            MetricType::Gauge,
            "ferricorn_connections",
            "Open client connections.",
            &[(none(), self.connections)],
        )?;
        family(
            &mut encoder,
            MetricType::Gauge,
            "ferricorn_websockets",
            "Open WebSocket connections (counted in ferricorn_connections too).",
            &[(none(), self.websockets)],
        )?;
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_websocket_messages_received",
            "WebSocket messages received from clients and handed to the app.",
            &bytes(&self.counters.ws_messages_in),
        )?;
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_websocket_messages_sent",
            "WebSocket messages the app queued for clients.",
            &bytes(&self.counters.ws_messages_out),
        )?;
        family(
            &mut encoder,
            MetricType::Gauge,
            "ferricorn_threads_busy",
            "Worker threads inside the app.",
            &[(none(), self.threads_busy)],
        )?;
        family(
            &mut encoder,
            MetricType::Gauge,
            "ferricorn_workers",
            "Live worker processes.",
            &[(none(), self.workers)],
        )?;
        let restarts: Vec<_> = Restart::ALL
            .iter()
            .zip(self.restarts)
            .map(|(r, n)| (vec![("reason", r.label().to_string())], n))
            .collect();
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_worker_restarts",
            "Workers replaced, by reason.",
            &restarts,
        )?;
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_reloads",
            "Reloads (HUP), by result.",
            &[
                (vec![("result", "success".to_string())], self.reloads.0),
                (vec![("result", "failure".to_string())], self.reloads.1),
            ],
        )?;
        family(
            &mut encoder,
            MetricType::Counter,
            "ferricorn_rejected",
            "Requests the server answered itself with an error status.",
            &self.rejected(),
        )?;
        let queues: Vec<_> = self
            .listen_queue
            .iter()
            .map(|(l, n)| (vec![("listener", l.clone())], *n))
            .collect();
        family(
            &mut encoder,
            MetricType::Gauge,
            "ferricorn_listen_queue",
            "Connections waiting in a TCP listener's accept queue (TCP_INFO).",
            &queues,
        )?;
        let rss: Vec<_> = self
            .worker_rss
            .iter()
            .map(|(pid, n)| (vec![("pid", pid.clone())], *n))
            .collect();
        family(
            &mut encoder,
            MetricType::Gauge,
            "ferricorn_worker_rss_bytes",
            "Resident memory of each worker, in bytes.",
            &rss,
        )
    }
}

/// `snapshot` in the Prometheus text exposition format.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// The accept queue length of TCP listener `fd` (TCP_INFO's `tcpi_unacked` on a listening
/// socket, tcp(7)); `None` if the call fails.
pub fn listen_queue(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: tcp_info is plain data, for which zeroes are valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(u64::from(info.tcpi_unacked))
}

/// Whether `input` holds a complete HTTP request head.
pub fn head_complete(input: &[u8]) -> bool {
    input.windows(4).any(|w| w == b"\r\n\r\n") || bare_lf(input)
}

/// Whether `input` has a line feed without its carriage return: not HTTP (RFC 9112 §2.2), so
/// the request is refused at once, as on the main listeners.
fn bare_lf(input: &[u8]) -> bool {
    input
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || input[i - 1] != b'\r'))
}

/// The response to the request head `head`: the metrics for `GET /metrics`, else 404.
pub fn answer(head: &[u8], render: &mut dyn FnMut() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, kind, body) = match (method, path) {
        _ if bare_lf(head) => (
            "400 Bad Request",
            "text/plain",
            "bad request: lines end with CRLF\n".into(),
        ),
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try GET /metrics\n".into(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
