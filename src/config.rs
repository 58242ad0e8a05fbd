//! Configuration: one table of settings ([`SETTINGS`]) from which the YAML keys, the
//! command-line flags, `--print-config` and the README table are all derived, the way
//! gunicorn's `config.py` declares each setting once.
//!
//! Precedence: built-in defaults < YAML file (`-c FILE`) < command-line flags.
//! Every error names the file, the line and the key (or the flag) and is returned as one line.

use crate::access_log::AccessFormat;
use crate::forwarded::{Forwarding, IpSet, RealIpHeader};
use crate::listeners::{split_scheme, Address, ListenOptions, Scheme};
use crate::logging::{LogLevel, LogTargets};
use crate::process::SchedPolicy;
use crate::transport::proxy::Mode as ProxyMode;
use crate::transport::tls::{ClientAuth, TlsSettings};
use serde_yaml::{Mapping, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What values a setting accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number in `min..=max`; `unit` is for the docs (e.g. "seconds", "bytes").
    Integer {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
        /// Unit shown in the docs.
        unit: &'static str,
        /// What 0 stands for, when it is not itself the value (gunicorn's "0 means the
        /// maximum"); the docs say it, the reader resolves it.
        zero: Option<u64>,
    },
    /// A string, or null for unset.
    Text,
    /// A list of bind addresses (a single string is a list of one).
    Addresses,
    /// One of the log levels `debug info warning error critical`.
    Level,
    /// A flat map of string keys to scalar values (strings, numbers, booleans). A list of
    /// `KEY=VALUE` strings is accepted too (gunicorn's `raw_env` form).
    Pairs,
    /// gunicorn's `access_log_format` (checked with [`AccessFormat::parse`]).
    AccessFormat,
    /// A user (`group: false`) or group name, or a numeric id; must exist on this machine.
    Account {
        /// Whether this is a group.
        group: bool,
    },
    /// A file mode creation mask in octal digits (`"027"`, `0o027`, or `27` read as octal).
    Umask,
    /// `true` or `false` (YAML booleans, or the strings; a flag without a value is `true`).
    Bool,
    /// Peers: a comma-separated string or a list of addresses, CIDR blocks and `*`
    /// (checked with [`IpSet::parse`]); stored as one comma-separated string.
    IpList,
    /// One of `words`, case-insensitive (stored as written there), or null for unset;
    /// `aliases` map other words (and YAML booleans, as `true`/`false`) to one of them;
    /// `bare` is the value of the flag given without one.
    Choice {
        /// The accepted words.
        words: &'static [&'static str],
        /// (other word, the word it means).
        aliases: &'static [(&'static str, &'static str)],
        /// The flag's value when it is given alone.
        bare: Option<&'static str>,
    },
}

/// One setting: its YAML key, command-line flag, accepted values, default and documentation.
#[derive(Debug)]
pub struct Setting {
    /// YAML key; `app.path` means key `path` inside the `app` mapping.
    pub name: &'static str,
    /// Long command-line flag without `--` (gunicorn's flag where it has one); "" for none.
    pub flag: &'static str,
    /// Short flag, if any.
    pub short: Option<char>,
    /// Accepted values.
    pub kind: Kind,
    /// Default, as YAML text.
    pub default: &'static str,
    /// One-line description for `--help` and the README.
    pub doc: &'static str,
}

/// The most worker processes a master runs: the `workers` setting's bound, which TTIN and the
/// control socket's `worker add` respect too.
pub const MAX_WORKERS: usize = 1024;

const fn int(min: u64, max: u64, unit: &'static str) -> Kind {
    Kind::Integer {
        min,
        max,
        unit,
        zero: None,
    }
}

/// [`int`] where 0 stands for `zero`.
const fn int_zero(min: u64, max: u64, unit: &'static str, zero: u64) -> Kind {
    Kind::Integer {
        min,
        max,
        unit,
        zero: Some(zero),
    }
}

impl Setting {
    /// The one-line description for `--help` and the README: the doc, and what 0 stands
    /// for where it stands for another value.
    pub fn description(&self) -> String {
        match self.kind {
            Kind::Integer {
                max,
                zero: Some(zero),
                ..
            } if zero == max => format!("{} 0 = the maximum, {max}.", self.doc),
            Kind::Integer {
                zero: Some(zero), ..
            } => format!("{} 0 = {zero}.", self.doc),
            _ => self.doc.to_string(),
        }
    }
}

/// Declares the settings once. Each entry gives the [`Key`] variant, the [`Config`] field
/// (named as the setting; `app.*` settings name themselves), its type and the reader that
/// makes it from the validated value ([`Reader`]), then the [`Setting`]: flag, accepted values,
/// default and doc. From the entries come [`Key`], [`SETTINGS`] (which every flag, default,
/// validation and document is derived from), the [`Config`] struct with the setting's doc on
/// each field, and [`Config::from_values`], so that a setting cannot be added to one and
/// forgotten in another, nor misspelt (gunicorn's `config.py` declares each setting once).
macro_rules! settings {
    ($(
        $key:ident => $field:ident $(($name:literal))? : $ty:ty = $read:expr,
        Setting { flag: $flag:expr, short: $short:expr, kind: $kind:expr, default: $default:expr,
            doc: $doc:literal },
    )*) => {
        /// A setting, by name: its index in [`SETTINGS`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Key {
            $($key,)*
        }

        /// Every setting ferricorn has, in documentation order.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            name: settings!(@name $field $($name)?),
            flag: $flag,
            short: $short,
            kind: $kind,
            default: $default,
            doc: $doc,
        },)*];

        /// The effective configuration: one typed field per setting (its doc is the
        /// setting's: see [`SETTINGS`] for units and defaults), plus the merged raw values
        /// for `--print-config`.
        #[derive(Clone, Debug)]
        pub struct Config {
            /// The YAML file the configuration came from, if any (re-read on HUP).
            pub file: Option<PathBuf>,
            $(#[doc = $doc] pub $field: $ty,)*
            /// Merged values, one per entry of [`SETTINGS`] in order.
            values: Vec<Value>,
        }

        impl Config {
            /// The typed configuration from merged, validated `values` (one per setting, in
            /// [`SETTINGS`] order): each field by its reader, then, if all were read, the
            /// combinations checked ([`Config::check_combinations`]). Errors: every setting
            /// that could not be read (a line each, naming the key), or the combination.
            fn from_values(file: Option<PathBuf>, mut values: Vec<Value>) -> Result<Config, Refused> {
                resolve_workers(&mut values);
                let r = Reader(&values);
                let mut errors = Vec::new();
                $(let $field: Option<$ty> = ($read)(&r, Key::$key).map_err(|e| errors.push(e)).ok();)*
                let ($(Some($field),)*) = ($($field,)*) else {
                    return Err(Refused::Settings(errors));
                };
                let mut config = Config { file, $($field,)* values };
                config.check_combinations().map_err(Refused::Combination)?;
                config.resolve_wsgi_app().map_err(Refused::Combination)?;
                Ok(config)
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $name:literal) => { $name };
}

settings! {
    Bind => bind: Vec<Address> = addresses,
        Setting { flag: "bind", short: Some('b'), kind: Kind::Addresses, default: "[\"127.0.0.1:8000\"]",
        doc: "Addresses to listen on: `HOST:PORT`, `[V6]:PORT`, `unix:PATH` or `fd://N`; port 0 picks a free port; `https://HOST:PORT` is a TLS listener beside plain ones (with `certfile`). The flag may be repeated." },
    Workers => workers: usize = whole,
        Setting { flag: "workers", short: Some('w'), kind: int(0, MAX_WORKERS as u64, "processes"), default: "0",
        doc: "Worker processes; 0 means one per CPU." },
    Threads => threads: usize = whole,
        Setting { flag: "threads", short: None, kind: int(1, 1024, "threads"), default: "4",
        doc: "Threads per worker serving requests." },
    Backlog => backlog: i32 = whole,
        Setting { flag: "backlog", short: None, kind: int(1, 65535, "connections"), default: "2048",
        doc: "listen(2) backlog: connections the kernel queues before they are accepted." },
    DeferAccept => defer_accept: u32 = whole,
        Setting { flag: "defer-accept", short: None, kind: int(0, 3600, "seconds"), default: "1",
        doc: "TCP_DEFER_ACCEPT on the TCP listeners ferricorn binds (nginx's `listen ... deferred`, systemd's `DeferAcceptSec=`): the kernel hands a connection over only once its first bytes have arrived, so the worker reads the request right after accepting it; a connection that stays silent is handed over after about this long, and `header_timeout` runs from then. 0 = off. Listeners from systemd keep what their unit says." },
    CpuSchedulingPolicy => cpu_scheduling_policy: SchedPolicy = sched_policy,
        Setting { flag: "cpu-scheduling-policy", short: None, kind: Kind::Choice { words: &["batch", "other"], aliases: &[("normal", "other")], bare: None }, default: "batch",
        doc: "Linux scheduling policy of the workers' threads (sched(7); systemd's `CPUSchedulingPolicy=`, for the workers only). `batch` (SCHED_BATCH): a worker woken by new input does not preempt the task running on that CPU but runs when that task's time slice ends or it sleeps, so when the CPUs are all busy (a proxy, a load generator or other services on the same host) work arrives in batches with fewer context switches; an idle CPU still takes it at once. `other` (SCHED_OTHER, `normal`): the kernel's default, where a wakeup may preempt. Same nice value either way." },
    WorkerConnections => worker_connections: usize = whole,
        Setting { flag: "worker-connections", short: None, kind: int(1, 1_000_000, "connections"), default: "1000",
        doc: "Open connections per worker; beyond it new connections get 503 and are closed." },
    BodyBuffer => body_buffer: usize = whole,
        Setting { flag: "body-buffer", short: None, kind: int(0, 64 << 20, "bytes"), default: "65536",
        doc: "A request body up to this size (as sent, chunk framing included) is read by the event loop before the app is called, so a slow uploader holds no thread; a larger body (or one behind `Expect: 100-continue`) is streamed to the app as it arrives. 0 = always streamed." },
    ResponseBuffer => response_buffer: usize = whole,
        Setting { flag: "response-buffer", short: None, kind: int(0, 1 << 30, "bytes"), default: "1048576",
        doc: "Response bytes a connection may hold unsent: the app's thread is free once its response fits, and the event loop sends the rest as the client reads it. Past it the app's write waits for the client (at most `timeout`)." },
    WebsocketMaxMessage => websocket_max_message: usize = whole,
        Setting { flag: "websocket-max-message", short: None, kind: int(125, 1 << 30, "bytes"), default: "1048576",
        doc: "Longest WebSocket message (all its fragments) taken from a client; a longer one closes the connection with 1009 (Message Too Big)." },
    WebsocketPingInterval => websocket_ping_interval: Duration = seconds,
        Setting { flag: "websocket-ping-interval", short: None, kind: int(1, 86_400, "seconds"), default: "30",
        doc: "A WebSocket client silent this long gets a ping; without its pong within `timeout` the connection is closed (dead peers behind NAT or a load balancer do not linger)." },
    WebsocketSendBuffer => websocket_send_buffer: usize = whole,
        Setting { flag: "websocket-send-buffer", short: None, kind: int(1024, 1 << 30, "bytes"), default: "1048576",
        doc: "Bytes of messages the app may queue on one WebSocket connection before its sends return \"would block\" (a client that reads slowly holds at most this); a client that reads nothing for `timeout` is closed." },
    Timeout => timeout: Option<Duration> = optional_seconds,
        Setting { flag: "timeout", short: Some('t'), kind: int(0, 86_400, "seconds"), default: "30",
        doc: "A worker silent this long is killed and replaced; also the longest a client may stall a request's body or response. 0 = off." },
    RequestTimeout => request_timeout: Option<Duration> = optional_seconds,
        Setting { flag: "request-timeout", short: None, kind: int(0, 86_400, "seconds"), default: "0",
        doc: "A request running in the app longer than this makes its worker stop accepting; a replacement starts and the worker is killed once its other requests finish (or graceful_timeout passes). 0 = off." },
    GracefulTimeout => graceful_timeout: Duration = seconds,
        Setting { flag: "graceful-timeout", short: None, kind: int(0, 86_400, "seconds"), default: "30",
        doc: "Time workers get to finish in-flight requests after TERM or a reload, before SIGKILL." },
    Keepalive => keepalive: Option<Duration> = optional_seconds,
        Setting { flag: "keep-alive", short: None, kind: int(0, 3600, "seconds"), default: "5",
        doc: "How long an idle keep-alive connection is kept open; 0 disables keep-alive." },
    HeaderTimeout => header_timeout: Duration = seconds,
        Setting { flag: "header-timeout", short: None, kind: int(1, 3600, "seconds"), default: "10",
        doc: "Time a client has to send a complete request head; then 408." },
    MaxRequests => max_requests: u64 = whole,
        Setting { flag: "max-requests", short: None, kind: int(0, u32::MAX as u64, "requests"), default: "0",
        doc: "Recycle a worker gracefully after this many requests; 0 = never." },
    MaxRequestsJitter => max_requests_jitter: u64 = whole,
        Setting { flag: "max-requests-jitter", short: None, kind: int(0, u32::MAX as u64, "requests"), default: "0",
        doc: "Adds rand(0..=jitter) to max_requests per worker, so workers do not recycle together." },
    MaxWorkerRss => max_worker_rss: Option<u64> = mebibytes,
        Setting { flag: "max-worker-rss", short: None, kind: int(0, 1 << 20, "MiB"), default: "0",
        doc: "Recycle a worker whose resident memory stays above this (two readings a second apart), the way max_requests does: a replacement first, then a graceful stop (granian's --workers-max-rss, uWSGI's reload-on-rss). 0 = off." },
    LimitRequestLine => limit_request_line: usize = whole,
        Setting { flag: "limit-request-line", short: None, kind: int_zero(0, 8190, "bytes", 8190), default: "4094",
        doc: "Longest request-line (without CRLF); longer gets 414." },
    LimitRequestFields => limit_request_fields: usize = whole,
        Setting { flag: "limit-request-fields", short: None, kind: int_zero(0, 32768, "fields", 32768), default: "100",
        doc: "Most header fields in a request; more gets 431." },
    LimitRequestFieldSize => limit_request_field_size: usize = whole,
        Setting { flag: "limit-request-field-size", short: None, kind: int_zero(0, 65536, "bytes", 8190), default: "8190",
        doc: "Longest header field line (with CRLF); longer gets 431." },
    LimitRequestBody => limit_request_body: Option<u64> = nonzero,
        Setting { flag: "limit-request-body", short: None, kind: int(0, u64::MAX, "bytes"), default: "0",
        doc: "Largest request body; larger gets 413. 0 = unlimited." },
    LimitRequestHead => limit_request_head: usize = whole,
        Setting { flag: "limit-request-head", short: None, kind: int(256, 16 << 20, "bytes"), default: "65536",
        doc: "Most bytes of a request head (request-line and field lines with their CRLFs) and of a trailer section; more gets 431." },
    MetricsBind => metrics_bind: Option<Address> = address,
        Setting { flag: "metrics-bind", short: None, kind: Kind::Text, default: "null",
        doc: "Serve Prometheus metrics at `GET /metrics` on this address (`HOST:PORT` or `unix:PATH`), from the master process, never from a worker; unset = off. Bound at startup (a reload does not move it)." },
    ControlSocket => control_socket: Option<PathBuf> = path,
        Setting { flag: "control-socket", short: None, kind: Kind::Text, default: "null",
        doc: "Unix socket path where the master takes `ferricorn ctl` commands (gunicorn's control socket and command names); unset = off. Bound at startup." },
    ControlSocketMode => control_socket_mode: u32 = mode,
        Setting { flag: "control-socket-mode", short: None, kind: Kind::Umask, default: "\"600\"",
        doc: "File mode of `control_socket`, in octal (gunicorn's `control_socket_mode`): who may steer the server." },
    Pidfile => pidfile: Option<PathBuf> = path,
        Setting { flag: "pid", short: Some('p'), kind: Kind::Text, default: "null",
        doc: "File the master writes its PID to (removed at exit)." },
    User => user: Option<u32> = account,
        Setting { flag: "user", short: Some('u'), kind: Kind::Account { group: false }, default: "null",
        doc: "Workers switch to this user (name or id) after fork; the master keeps its user to bind and to reload." },
    Group => group: Option<u32> = account,
        Setting { flag: "group", short: Some('g'), kind: Kind::Account { group: true }, default: "null",
        doc: "Workers switch to this group (name or id) after fork." },
    Umask => umask: Option<u32> = octal,
        Setting { flag: "umask", short: Some('m'), kind: Kind::Umask, default: "null",
        doc: "File mode creation mask (octal, e.g. `\"027\"`) set at startup: applies to unix sockets, log and pid files." },
    Chdir => chdir: Option<PathBuf> = path,
        Setting { flag: "chdir", short: None, kind: Kind::Text, default: "null",
        doc: "Directory to change to at startup, before anything else is opened; relative paths in the configuration are resolved from there." },
    RawEnv => raw_env: Vec<(String, String)> = pairs,
        Setting { flag: "env", short: Some('e'), kind: Kind::Pairs, default: "{}",
        doc: "Environment variables set for the workers (and the app): a map, or a list of `KEY=VALUE`; the flag takes KEY=VALUE and may be repeated." },
    ProcName => proc_name: Option<String> = text,
        Setting { flag: "name", short: Some('n'), kind: Kind::Text, default: "null",
        doc: "Name in process titles (`ferricorn: master [NAME]`, `ferricorn: worker [NAME]`); default: the app's file name." },
    Accesslog => accesslog: Option<String> = text,
        Setting { flag: "access-logfile", short: None, kind: Kind::Text, default: "null",
        doc: "Access log file, or `-` for stdout; unset = no access log." },
    AccessLogFormat => access_log_format: AccessFormat = access_format,
        Setting { flag: "access-logformat", short: None, kind: Kind::AccessFormat, default: concat!("'", crate::default_access_format!(), "'"),
        doc: "Access log line, with gunicorn's atoms: h l u t r m U q H s B b f a T M D L p, `{header}i`, `{header}o`." },
    Errorlog => errorlog: String = required_text,
        Setting { flag: "error-logfile", short: None, kind: Kind::Text, default: "\"-\"",
        doc: "Error log file, or `-` for stderr." },
    CaptureOutput => capture_output: bool = flag,
        Setting { flag: "capture-output", short: None, kind: Kind::Bool, default: "false",
        doc: "Redirect the workers' stdout and stderr to `errorlog` when it is a file (gunicorn's `--capture-output`): an app's `print()`, Python's default `logging` handler and the WSGI plugin's startup line land in the error log; USR1 reopens them with it." },
    Loglevel => loglevel: LogLevel = level,
        Setting { flag: "log-level", short: None, kind: Kind::Level, default: "info",
        doc: "Error log level: debug, info, warning, error or critical." },
    ForwardedAllowIps => forwarded_allow_ips: IpSet = ip_set,
        Setting { flag: "forwarded-allow-ips", short: None, kind: Kind::IpList, default: "\"127.0.0.1,::1\"",
        doc: "Peers whose forwarding headers are believed (secure_scheme_headers, real_ip_header): addresses, CIDR blocks, `*` for any; a comma-separated string or a list." },
    SecureSchemeHeaders => secure_scheme_headers: Vec<(String, String)> = pairs,
        Setting { flag: "secure-scheme-header", short: None, kind: Kind::Pairs, default: "{X-FORWARDED-PROTOCOL: ssl, X-FORWARDED-PROTO: https, X-FORWARDED-SSL: \"on\"}",
        doc: "From a trusted peer, a field with one of these values (case-insensitive) makes url_scheme `https`; `Forwarded: proto=https` too. The flag takes NAME=VALUE and may be repeated." },
    RealIpHeader => real_ip_header: Option<RealIpHeader> = real_ip,
        Setting { flag: "real-ip-header", short: None, kind: Kind::Choice { words: &["X-Forwarded-For", "X-Real-IP", "Forwarded"], aliases: &[], bare: None }, default: "null",
        doc: "From a trusted peer, REMOTE_ADDR becomes the rightmost address in this field that is not in forwarded_allow_ips (nginx realip, recursive); the TCP peer stays in peer_addr. Unset: REMOTE_ADDR is the TCP peer." },
    ProxyProtocol => proxy_protocol: ProxyMode = proxy_mode,
        Setting { flag: "proxy-protocol", short: None, kind: Kind::Choice { words: &["off", "v1", "v2", "auto"], aliases: &[("true", "auto"), ("false", "off")], bare: Some("auto") }, default: "off",
        doc: "HAProxy's PROXY header before the first request, from proxy_allow_ips: `v1` or `v2` required, `auto` either or none, `off`; `true`/`false` mean `auto`/`off` (gunicorn). It sets REMOTE_ADDR/REMOTE_PORT and SERVER_NAME/SERVER_PORT." },
    ProxyAllowIps => proxy_allow_ips: IpSet = ip_set,
        Setting { flag: "proxy-allow-from", short: None, kind: Kind::IpList, default: "\"127.0.0.1,::1\"",
        doc: "Peers whose PROXY header is read (addresses, CIDR blocks, `*`); from any other peer the bytes are the request." },
    ReusePort => reuse_port: bool = flag,
        Setting { flag: "reuse-port", short: None, kind: Kind::Bool, default: "false",
        doc: "SO_REUSEPORT on TCP listeners, so that several masters can bind the same port (blue/green on one host)." },
    Certificates => certificates: Vec<(String, String)> = pairs,
        Setting { flag: "certificate", short: None, kind: Kind::Pairs, default: "{}",
        doc: "More TLS certificates, chosen by the name the client asks for (SNI): a map of certificate file to key file (the flag takes CERTFILE=KEYFILE and may be repeated). Each serves the DNS names of its certificate (subjectAltName, `*.` wildcards too); `certfile` serves a client asking for no name or another one." },
    ListenerCertificates => listener_certificates: Vec<(String, String)> = pairs,
        Setting { flag: "listener-certificate", short: None, kind: Kind::Pairs, default: "{}",
        doc: "A certificate of its own for a TLS listener: a map of `bind` entry (as written there, `https://ADDR`) to a PEM file holding the certificate chain and its key (the flag takes ADDR=FILE and may be repeated). Listeners not named serve `certfile` (and `certificates`)." },
    Reuseport => reuseport: bool = flag,
        Setting { flag: "reuseport", short: None, kind: Kind::Bool, default: "false",
        doc: "One SO_REUSEPORT listening socket per worker on each TCP `bind` address (nginx's `listen ... reuseport`): each worker accepts from its own queue and the kernel spreads new connections over the workers by a hash of their addresses, not by load. Read at startup; sockets from systemd stay shared." },
    Certfile => certfile: Option<PathBuf> = path,
        Setting { flag: "certfile", short: None, kind: Kind::Text, default: "null",
        doc: "TLS certificate file (PEM; the server's certificate first, then its chain). With `keyfile`, every TCP listener speaks HTTPS (rustls: TLS 1.2 and 1.3, ALPN `http/1.1`); HUP re-reads both files." },
    Keyfile => keyfile: Option<PathBuf> = path,
        Setting { flag: "keyfile", short: None, kind: Kind::Text, default: "null",
        doc: "TLS private key file (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC) matching `certfile`; read by the master, so it may be readable by root only." },
    CaCerts => ca_certs: Option<PathBuf> = path,
        Setting { flag: "ca-certs", short: None, kind: Kind::Text, default: "null",
        doc: "CA certificates (PEM) that client certificates must chain to; needed when `cert_reqs` is not `none`." },
    CertReqs => cert_reqs: ClientAuth = client_auth,
        Setting { flag: "cert-reqs", short: None, kind: Kind::Choice { words: &["none", "optional", "required"], aliases: &[("0", "none"), ("1", "optional"), ("2", "required")], bare: None }, default: "none",
        doc: "Client certificates: `none` (not asked for), `optional` (asked for; one given must chain to `ca_certs`), `required` (a handshake without one fails); gunicorn's 0, 1, 2 mean the same." },
    WsgiApp => wsgi_app: Option<String> = text,
        Setting { flag: "", short: None, kind: Kind::Text, default: "null",
        doc: "A Python WSGI application to serve, gunicorn's syntax: `package.module:callable` or `package.module:factory(args)` (the callable defaults to `application`); also the positional argument when it is not a file. Serves it with the bundled WSGI plugin (`libferricorn_wsgi.so`, beside the `ferricorn` binary or in `../lib/ferricorn/`) unless `app.path` names another. Its `app.config` keys: `virtualenv` (default: the active `VIRTUAL_ENV`)." },
    Pythonpath => pythonpath: Option<String> = text,
        Setting { flag: "pythonpath", short: None, kind: Kind::Text, default: "null",
        doc: "Directories put first on Python's `sys.path` for `wsgi_app`, comma separated (after them comes the working directory, `chdir`)." },
    AppPath => app_path("app.path"): Option<PathBuf> = path,
        Setting { flag: "", short: None, kind: Kind::Text, default: "null",
        doc: "The plugin shared object (`.so`) to serve; also the positional APP argument. Required to serve." },
    AppConfig => app_config("app.config"): Vec<(String, String)> = pairs,
        Setting { flag: "app-config", short: None, kind: Kind::Pairs, default: "{}",
        doc: "Flat map of settings handed to the app's init; the flag takes KEY=VALUE and may be repeated." },
}

/// Settings given on the command line, kept so a reload (HUP) applies them over the new file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// (setting index, value) pairs, already validated.
    values: Vec<(usize, Value)>,
}

fn setting_index(name: &str) -> Option<usize> {
    SETTINGS.iter().position(|s| s.name == name)
}

/// The 1-based line of the first line in `text` that starts (after indentation) with `key:`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                // `key:` in YAML, `key =` in a gunicorn.conf.py.
                .is_some_and(|rest| rest.trim_start().starts_with([':', '=']))
        })
        .map(|i| i + 1)
}

/// Checks `value` against `setting` and returns it in canonical form, or why not.
fn validate(setting: &Setting, value: Value) -> Result<Value, String> {
    match setting.kind {
        Kind::Integer { min, max, .. } => {
            let n = match &value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
                _ => Err(format!(
                    "must be a whole number from {min} to {max}, got {}",
                    show(&value)
                )),
            }
        }
        Kind::Text => match value {
            Value::Null => Ok(Value::Null),
            Value::String(s) if !s.is_empty() => Ok(Value::String(s)),
            other => Err(format!("must be a non-empty string, got {}", show(&other))),
        },
        Kind::Level => match &value {
            Value::String(s) if LogLevel::parse(s).is_some() => {
                Ok(Value::String(s.to_ascii_lowercase()))
            }
            other => Err(format!(
                "must be one of debug, info, warning, error, critical, got {}",
                show(other)
            )),
        },
        Kind::Addresses => {
            let items = match value {
                Value::String(s) => vec![Value::String(s)],
                Value::Sequence(items) if !items.is_empty() => items,
                other => {
                    return Err(format!(
                        "must be an address or a list of addresses, got {}",
                        show(&other)
                    ))
                }
            };
            for item in &items {
                let Value::String(text) = item else {
                    return Err(format!("must be an address string, got {}", show(item)));
                };
                Address::parse(text)?;
            }
            Ok(Value::Sequence(items))
        }
        Kind::Pairs => {
            let map = match value {
                Value::Null => Mapping::new(),
                Value::Mapping(map) => map,
                Value::Sequence(items) => pairs_from_list(&items)?,
                other => {
                    return Err(format!(
                        "must be a mapping of keys to values, got {}",
                        show(&other)
                    ))
                }
            };
            let mut out = Mapping::new();
            for (k, v) in map {
                let (Some(k), Some(v)) = (scalar(&k), scalar(&v)) else {
                    return Err(format!(
                        "must map strings to scalar values, got {}: {}",
                        show(&k),
                        show(&v)
                    ));
                };
                out.insert(Value::String(k), Value::String(v));
            }
            Ok(Value::Mapping(out))
        }
        Kind::AccessFormat => match value {
            Value::String(s) => {
                AccessFormat::parse(&s)?;
                Ok(Value::String(s))
            }
            other => Err(format!("must be a format string, got {}", show(&other))),
        },
        Kind::Account { group } => match value {
            Value::Null => Ok(Value::Null),
            Value::Number(_) | Value::String(_) => {
                let text = scalar(&value).unwrap_or_default();
                account_id(&text, group)?;
                Ok(Value::String(text))
            }
            other => Err(format!(
                "must be a name or a numeric id, got {}",
                show(&other)
            )),
        },
        Kind::Bool => match &value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            other => Err(format!("must be true or false, got {}", show(other))),
        },
        Kind::IpList => {
            let items: Vec<String> = match &value {
                Value::String(s) => s.split(',').map(str::to_string).collect(),
                Value::Sequence(items) => items.iter().filter_map(scalar).collect(),
                other => {
                    return Err(format!(
                        "must be a comma-separated string or a list of addresses, got {}",
                        show(other)
                    ))
                }
            };
            IpSet::parse(items.iter().map(String::as_str))?;
            let items: Vec<&str> = items
                .iter()
                .map(|i| i.trim())
                .filter(|i| !i.is_empty())
                .collect();
            Ok(Value::String(items.join(",")))
        }
        Kind::Choice { words, aliases, .. } => {
            // A YAML boolean is looked up as its word (gunicorn's `proxy_protocol: true`).
            let text = match &value {
                Value::Null => return Ok(Value::Null),
                Value::Bool(b) => b.to_string(),
                // gunicorn's `cert_reqs: 2` (ssl.CERT_REQUIRED) is looked up as "2".
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    return Err(format!(
                        "must be one of {}, got {}",
                        words.join(", "),
                        show(other)
                    ))
                }
            };
            let alias = aliases
                .iter()
                .find(|(from, _)| from.eq_ignore_ascii_case(&text))
                .map(|(_, to)| *to);
            words
                .iter()
                .find(|w| w.eq_ignore_ascii_case(alias.unwrap_or(&text)))
                .map(|w| Value::String(w.to_string()))
                .ok_or_else(|| format!("must be one of {}, got {}", words.join(", "), show(&value)))
        }
        Kind::Umask => match &value {
            Value::Null => Ok(Value::Null),
            Value::Number(_) | Value::String(_) => {
                let text = scalar(&value).unwrap_or_default();
                let mask = parse_umask(&text).ok_or_else(|| {
                    format!("must be octal digits from 0 to 777, got {}", show(&value))
                })?;
                Ok(Value::String(format!("{mask:04o}")))
            }
            other => Err(format!("must be octal digits, got {}", show(other))),
        },
    }
}

/// `["KEY=VALUE", ...]` (gunicorn's `raw_env` form) as a mapping.
fn pairs_from_list(items: &[Value]) -> Result<Mapping, String> {
    let mut map = Mapping::new();
    for item in items {
        let pair = item.as_str().and_then(|s| s.split_once('='));
        let Some((k, v)) = pair.filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("list items must be KEY=VALUE, got {}", show(item)));
        };
        map.insert(Value::String(k.into()), Value::String(v.into()));
    }
    Ok(map)
}

/// A umask written in octal digits: `027`, `0o027` or `0027`.
pub fn parse_umask(text: &str) -> Option<u32> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// Resolves a user or group name (or numeric id) to its id (getpwnam(3) / getgrnam(3)).
/// Errors: `no such user "x"`.
pub fn account_id(text: &str, group: bool) -> Result<u32, String> {
    if let Ok(id) = text.parse::<u32>() {
        return Ok(id);
    }
    let found = if group {
        nix::unistd::Group::from_name(text).map(|g| g.map(|g| g.gid.as_raw()))
    } else {
        nix::unistd::User::from_name(text).map(|u| u.map(|u| u.uid.as_raw()))
    };
    let what = if group { "group" } else { "user" };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!("no such {what} {text:?}")),
        Err(e) => Err(format!("cannot look up {what} {text:?}: {e}")),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_else(|_| "?".into()),
    }
}

fn defaults() -> Vec<Value> {
    SETTINGS
        .iter()
        .map(|s| {
            let value = serde_yaml::from_str(s.default).expect("built-in default is valid YAML");
            validate(s, value).expect("built-in default is valid")
        })
        .collect()
}

/// Flattens the top-level mapping: `app: {path, config}` becomes `app.path`, `app.config`.
fn flatten(doc: Mapping) -> Result<Vec<(String, Value)>, (String, String)> {
    let mut out = Vec::new();
    for (key, value) in doc {
        let Value::String(key) = key else {
            return Err((show(&key), "keys must be strings".into()));
        };
        if key != "app" {
            out.push((key, value));
            continue;
        }
        match value {
            Value::Mapping(app) => {
                for (sub, v) in app {
                    out.push((
                        format!("app.{}", scalar(&sub).unwrap_or_else(|| show(&sub))),
                        v,
                    ));
                }
            }
            Value::Null => {}
            other => {
                return Err((
                    "app".into(),
                    format!(
                        "must be a mapping with path and config, got {}",
                        show(&other)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// Reads and validates a YAML file into (setting index, value) pairs.
/// A configuration file's valid settings (setting index, value) and its errors (a line each).
type FileSettings = (Vec<(usize, Value)>, Vec<String>);

/// The settings of the YAML file at `path`, validated, by setting index; and the errors
/// found, one line each (`FILE:LINE: ...`), all of them: a key that is unknown (with the
/// setting it most likely meant), gunicorn's (with what to use instead), or invalid. Errors
/// (stopping at once): the file cannot be read, is not YAML, or is not a mapping. A file
/// named `*.py` is a gunicorn configuration: its plain `name = value` lines are read as
/// settings, and every other Python line is an error.
fn read_file(path: &Path) -> Result<FileSettings, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read: {e}"))?;
    let mut errors = Vec::new();
    let doc: Value = if path.extension().is_some_and(|e| e == "py") {
        let (settings, python) = crate::gunicorn::read_conf_py(&text);
        errors.extend(
            python
                .into_iter()
                .map(|(line, why)| format!("{file}:{line}: {why}")),
        );
        Value::Mapping(settings)
    } else {
        serde_yaml::from_str(&text).map_err(|e| match e.location() {
            Some(at) => format!("{file}:{}: invalid YAML: {e}", at.line()),
            None => format!("{file}: invalid YAML: {e}"),
        })?
    };
    let doc = match doc {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        other => {
            return Err(format!(
                "{file}:1: the file must be a mapping of settings, got {}",
                show(&other)
            ))
        }
    };
    let at = |key: &str| {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        line_of(&text, leaf)
            .map(|l| format!("{file}:{l}"))
            .unwrap_or_else(|| file.to_string())
    };
    let pairs = flatten(doc).map_err(|(key, why)| format!("{}: key `{key}`: {why}", at(&key)))?;
    let mut out = Vec::new();
    for (key, value) in pairs {
        let Some(index) = setting_index(&key) else {
            let why = crate::gunicorn::explain(&key).unwrap_or_else(|| unknown_key(&key));
            errors.push(format!("{}: {why}", at(&key)));
            continue;
        };
        match validate(&SETTINGS[index], value) {
            Ok(value) => out.push((index, value)),
            Err(why) => errors.push(format!("{}: key `{key}`: {why}", at(&key))),
        }
    }
    Ok((out, errors))
}

/// Why `key` is refused: unknown, and which setting it most likely meant (the closest name
/// by edit distance, if it is close: at most 3 edits and fewer than half the name's
/// letters).
fn unknown_key(key: &str) -> String {
    let closest = SETTINGS
        .iter()
        .map(|s| (strsim::damerau_levenshtein(key, s.name), s.name))
        .min();
    match closest {
        Some((distance, name)) if distance <= 3 && distance * 2 < name.len() => {
            format!("unknown key `{key}`: did you mean `{name}`?")
        }
        _ => format!("unknown key `{key}` (see `ferricorn --help` for the settings)"),
    }
}

impl Overrides {
    /// Records `--flag VALUE` texts for setting `index` (several for list settings).
    /// Errors name the flag.
    pub fn set(&mut self, index: usize, texts: &[String]) -> Result<(), String> {
        let setting = &SETTINGS[index];
        let raw = match setting.kind {
            Kind::Addresses => Value::Sequence(texts.iter().cloned().map(Value::String).collect()),
            Kind::Pairs => {
                let mut map = Mapping::new();
                for text in texts {
                    let (k, v) = text.split_once('=').ok_or_else(|| {
                        format!("--{}: expected KEY=VALUE, got {text:?}", setting.flag)
                    })?;
                    map.insert(Value::String(k.into()), Value::String(v.into()));
                }
                Value::Mapping(map)
            }
            _ => Value::String(texts.last().cloned().unwrap_or_default()),
        };
        let value = validate(setting, raw).map_err(|why| format!("--{}: {why}", setting.flag))?;
        self.values.push((index, value));
        Ok(())
    }

    /// Sets `wsgi_app` (the positional argument, when it names a Python application).
    pub fn set_wsgi_app(&mut self, spec: &str) {
        let index = Key::WsgiApp as usize;
        self.values.push((index, Value::String(spec.to_string())));
    }

    /// Sets `app.path` (the positional APP argument).
    pub fn set_app_path(&mut self, path: &Path) {
        let index = Key::AppPath as usize;
        self.values
            .push((index, Value::String(path.display().to_string())));
    }
}

/// The file name of the bundled WSGI plugin (the `ferricorn-wsgi` crate).
pub const WSGI_PLUGIN: &str = "libferricorn_wsgi.so";

/// The bundled WSGI plugin: beside this executable (a cargo build), else in
/// `../lib/ferricorn/` from it (an install under a prefix).
pub fn bundled_wsgi_plugin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join(WSGI_PLUGIN),
        dir.join("../lib/ferricorn").join(WSGI_PLUGIN),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Whether `text`, the positional argument, names a Python application (`module:expr` or a
/// dotted module name) rather than a plugin file: it is not an existing file, does not end
/// in `.so`, and starts with a dotted Python name.
pub fn is_python_app(text: &str) -> bool {
    if Path::new(text).exists() || text.ends_with(".so") || text.contains('/') {
        return false;
    }
    let module = text.split_once(':').map_or(text, |(m, _)| m);
    !module.is_empty()
        && module.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// Why [`Config::from_values`] refused merged values.
enum Refused {
    /// Settings that could not be read, a line each.
    Settings(Vec<String>),
    /// Settings that are valid alone but not together.
    Combination(String),
}

/// Loads the configuration: defaults, then `file` (if any), then `overrides`.
/// Errors: every error found, one line each, naming the file, line and key (with the
/// setting a misspelt key most likely meant), or the flag; a combination of settings that
/// does not go together is reported once every setting is valid.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, String> {
    let mut values = defaults();
    let mut errors = Vec::new();
    if let Some(path) = file {
        let (settings, invalid) = read_file(path)?;
        for (index, value) in settings {
            values[index] = value;
        }
        errors = invalid;
    }
    for (index, value) in &overrides.values {
        values[*index] = value.clone();
    }
    // The settings that were valid are still read, so that their errors come too.
    match Config::from_values(file.map(Path::to_path_buf), values) {
        Ok(config) if errors.is_empty() => Ok(config),
        Err(Refused::Combination(e)) if errors.is_empty() => Err(e),
        Err(Refused::Settings(more)) => {
            errors.extend(more);
            Err(errors.join("\n"))
        }
        Ok(_) | Err(Refused::Combination(_)) => Err(errors.join("\n")),
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `workers: 0` becomes the CPU count in the merged values, so `--print-config` shows it.
fn resolve_workers(values: &mut [Value]) {
    let workers = &mut values[Key::Workers as usize];
    if workers.as_u64() == Some(0) {
        *workers = Value::from(cpus() as u64);
    }
}

/// The merged, validated values, read by key: the readers below turn one into its field.
struct Reader<'a>(&'a [Value]);

impl Reader<'_> {
    fn value(&self, key: Key) -> &Value {
        &self.0[key as usize]
    }
    fn int(&self, key: Key) -> u64 {
        self.value(key).as_u64().unwrap_or(0)
    }
    fn text(&self, key: Key) -> Option<String> {
        self.value(key).as_str().map(str::to_string)
    }
}

// The readers, one per field type (`Config::from_values` calls each with its key). The value
// was validated against the setting's kind already; the errors are for what only the typed
// value can say.

/// A whole number; 0 resolved to what it stands for ([`Kind::Integer`]'s `zero`).
fn whole<T: TryFrom<u64>>(r: &Reader<'_>, key: Key) -> Result<T, String> {
    let n = match (r.int(key), SETTINGS[key as usize].kind) {
        (0, Kind::Integer { zero: Some(z), .. }) => z,
        (n, _) => n,
    };
    T::try_from(n).map_err(|_| format!("{}: {n} is too large here", SETTINGS[key as usize].name))
}

/// A whole number where 0 means none (unlimited, off).
fn nonzero(r: &Reader<'_>, key: Key) -> Result<Option<u64>, String> {
    Ok(Some(r.int(key)).filter(|&n| n > 0))
}

/// MiB as bytes; 0 = none.
fn mebibytes(r: &Reader<'_>, key: Key) -> Result<Option<u64>, String> {
    Ok(Some(r.int(key) << 20).filter(|&n| n > 0))
}

fn seconds(r: &Reader<'_>, key: Key) -> Result<Duration, String> {
    Ok(Duration::from_secs(r.int(key)))
}

/// Seconds where 0 means off.
fn optional_seconds(r: &Reader<'_>, key: Key) -> Result<Option<Duration>, String> {
    Ok(Some(Duration::from_secs(r.int(key))).filter(|d| !d.is_zero()))
}

fn text(r: &Reader<'_>, key: Key) -> Result<Option<String>, String> {
    Ok(r.text(key))
}

/// A text setting that is never unset (its default is not null).
fn required_text(r: &Reader<'_>, key: Key) -> Result<String, String> {
    r.text(key)
        .ok_or_else(|| format!("{} must be set", SETTINGS[key as usize].name))
}

fn path(r: &Reader<'_>, key: Key) -> Result<Option<PathBuf>, String> {
    Ok(r.text(key).map(PathBuf::from))
}

fn flag(r: &Reader<'_>, key: Key) -> Result<bool, String> {
    Ok(r.value(key).as_bool().unwrap_or(false))
}

fn pairs(r: &Reader<'_>, key: Key) -> Result<Vec<(String, String)>, String> {
    Ok(match r.value(key) {
        Value::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
            .collect(),
        _ => Vec::new(),
    })
}

fn addresses(r: &Reader<'_>, key: Key) -> Result<Vec<Address>, String> {
    match r.value(key) {
        Value::Sequence(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(Address::parse)
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn address(r: &Reader<'_>, key: Key) -> Result<Option<Address>, String> {
    r.text(key).map(|t| Address::parse(&t)).transpose()
}

/// Octal mode bits; unset = none.
fn octal(r: &Reader<'_>, key: Key) -> Result<Option<u32>, String> {
    Ok(r.text(key).and_then(|t| parse_umask(&t)))
}

/// Octal mode bits; unset = the setting's default.
fn mode(r: &Reader<'_>, key: Key) -> Result<u32, String> {
    let default = SETTINGS[key as usize].default.trim_matches('"');
    Ok(octal(r, key)?.or_else(|| parse_umask(default)).unwrap_or(0))
}

/// A user or group id ([`Kind::Account`] says which).
fn account(r: &Reader<'_>, key: Key) -> Result<Option<u32>, String> {
    let group = matches!(SETTINGS[key as usize].kind, Kind::Account { group: true });
    r.text(key).map(|t| account_id(&t, group)).transpose()
}

fn access_format(r: &Reader<'_>, key: Key) -> Result<AccessFormat, String> {
    AccessFormat::parse(&r.text(key).unwrap_or_default())
}

fn level(r: &Reader<'_>, key: Key) -> Result<LogLevel, String> {
    let text = required_text(r, key)?;
    LogLevel::parse(&text).ok_or_else(|| format!("loglevel: unknown level {text:?}"))
}

fn ip_set(r: &Reader<'_>, key: Key) -> Result<IpSet, String> {
    IpSet::parse_list(&r.text(key).unwrap_or_default())
}

fn real_ip(r: &Reader<'_>, key: Key) -> Result<Option<RealIpHeader>, String> {
    r.text(key).map(|t| RealIpHeader::parse(&t)).transpose()
}

/// `proxy_protocol`; unset = off.
fn proxy_mode(r: &Reader<'_>, key: Key) -> Result<ProxyMode, String> {
    Ok(r.text(key)
        .and_then(|t| ProxyMode::parse(&t))
        .unwrap_or(ProxyMode::Off))
}

/// `cpu_scheduling_policy`; unset = batch.
fn sched_policy(r: &Reader<'_>, key: Key) -> Result<SchedPolicy, String> {
    Ok(match r.text(key).as_deref() {
        Some("other") => SchedPolicy::Other,
        _ => SchedPolicy::Batch,
    })
}

/// `cert_reqs`; unset = none.
fn client_auth(r: &Reader<'_>, key: Key) -> Result<ClientAuth, String> {
    Ok(match r.text(key).as_deref() {
        Some("optional") => ClientAuth::Optional,
        Some("required") => ClientAuth::Required,
        _ => ClientAuth::None,
    })
}

impl Config {
    /// Where and at what level to log (`errorlog`, `accesslog`, `loglevel`).
    pub fn log_targets(&self) -> LogTargets<'_> {
        LogTargets {
            errorlog: &self.errorlog,
            accesslog: self.accesslog.as_deref(),
            level: self.loglevel,
        }
    }

    /// Which peers' forwarding headers are believed and what they may set
    /// (`forwarded_allow_ips`, `secure_scheme_headers`, `real_ip_header`).
    pub fn forwarding(&self) -> Forwarding {
        Forwarding {
            allow: self.forwarded_allow_ips.clone(),
            secure_headers: self.secure_scheme_headers.clone(),
            real_ip: self.real_ip_header,
        }
    }

    /// Whether the listener at `address` speaks TLS: with `certfile` set, a `bind` entry
    /// written `https://ADDR` is TLS and one written `http://ADDR` plain; an entry without a
    /// scheme (and a socket from systemd) is TLS unless some entry says `https://` (then only
    /// those are). Without `certfile`, none is.
    pub fn tls_for(&self, address: &Address) -> bool {
        if self.certfile.is_none() {
            return false;
        }
        let any_https = self.bind_schemes().any(|(s, _)| s == Some(Scheme::Https));
        match self.bind_schemes().find(|(_, a)| *a == address) {
            Some((Some(scheme), _)) => scheme == Scheme::Https,
            _ => !any_https,
        }
    }

    /// Each `bind` entry's scheme (if it has one) and address: the texts `bind` was read
    /// from, in the same order, so no address is parsed (or resolved) again.
    fn bind_schemes(&self) -> impl Iterator<Item = (Option<Scheme>, &Address)> {
        let texts = self.values[Key::Bind as usize].as_sequence();
        let texts = texts.into_iter().flatten().filter_map(Value::as_str);
        texts.map(|t| split_scheme(t).0).zip(&self.bind)
    }

    /// How the listeners ferricorn binds are set up (`backlog`, `reuse_port`, `defer_accept`).
    pub fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            backlog: self.backlog,
            // Per-worker sockets join the listener's SO_REUSEPORT group.
            reuse_port: self.reuse_port || self.reuseport,
            defer_accept: self.defer_accept,
        }
    }

    /// TLS for every TCP listener (`certfile`, `keyfile`, `ca_certs`, `cert_reqs`); `None` =
    /// plain HTTP. [`Config::check_combinations`] made sure both files are set or neither.
    pub fn tls(&self) -> Option<TlsSettings> {
        Some(TlsSettings {
            certfile: self.certfile.clone()?,
            keyfile: self.keyfile.clone()?,
            ca_certs: self.ca_certs.clone(),
            client_auth: self.cert_reqs,
            sni: self
                .certificates
                .iter()
                .map(|(cert, key)| (PathBuf::from(cert), PathBuf::from(key)))
                .collect(),
            listeners: self
                .listener_certificates
                .iter()
                .filter_map(|(address, pem)| {
                    Some((Address::parse(address).ok()?, PathBuf::from(pem)))
                })
                .collect(),
        })
    }

    /// The rules between settings, in one place. Errors: a key without the one it needs
    /// (`keyfile` without `certfile`, `cert_reqs` other than `none` without `ca_certs`…).
    /// With `wsgi_app`: serves it with the bundled WSGI plugin unless `app.path` names a
    /// plugin, and hands it the app (`module`) and `pythonpath` in `app.config` (where the
    /// file did not set them). Errors: the bundled plugin is not installed.
    fn resolve_wsgi_app(&mut self) -> Result<(), String> {
        let Some(spec) = self.wsgi_app.clone() else {
            return Ok(());
        };
        if self.app_path.is_none() {
            self.app_path = Some(bundled_wsgi_plugin().ok_or_else(|| {
                format!(
                    "wsgi_app: the WSGI plugin ({WSGI_PLUGIN}) is neither beside the ferricorn binary nor in ../lib/ferricorn/ (build it with `cargo build --release --workspace`, or set app.path)"
                )
            })?);
        }
        let mut add = |key: &str, value: Option<String>| {
            if let Some(value) = value.filter(|_| !self.app_config.iter().any(|(k, _)| k == key)) {
                self.app_config.push((key.to_string(), value));
            }
        };
        add("module", Some(spec));
        add("pythonpath", self.pythonpath.clone());
        Ok(())
    }

    fn check_combinations(&self) -> Result<(), String> {
        let https = self.bind_schemes().any(|(s, _)| s == Some(Scheme::Https));
        if https && self.certfile.is_none() {
            return Err("bind: an https:// address needs certfile and keyfile".into());
        }
        if !self.certificates.is_empty() && self.certfile.is_none() {
            return Err("certificates need certfile and keyfile (the default certificate)".into());
        }
        for (address, _) in &self.listener_certificates {
            let parsed = Address::parse(address).ok();
            if !parsed
                .as_ref()
                .is_some_and(|a| self.tls_for(a) && self.bind.contains(a))
            {
                return Err(format!(
                    "listener_certificates: `{address}` is not a TLS address of bind (write it as in bind, https://ADDR)"
                ));
            }
        }
        let needs_ca = self.cert_reqs != ClientAuth::None;
        match (&self.certfile, &self.keyfile) {
            (None, None) if self.ca_certs.is_some() || needs_ca => {
                Err("ca_certs and cert_reqs need certfile and keyfile (TLS is off)".into())
            }
            (Some(_), None) => Err("certfile is set but keyfile is not".into()),
            (None, Some(_)) => Err("keyfile is set but certfile is not".into()),
            (Some(_), Some(_)) if needs_ca && self.ca_certs.is_none() => Err(format!(
                "cert_reqs: {} needs ca_certs (the CAs client certificates must chain to)",
                self.values[Key::CertReqs as usize]
                    .as_str()
                    .unwrap_or_default()
            )),
            _ => Ok(()),
        }
    }
    /// The effective configuration as YAML (`--print-config`), `app.*` nested under `app:`.
    pub fn to_yaml(&self) -> String {
        let mut top = Mapping::new();
        let mut app = Mapping::new();
        for (setting, value) in SETTINGS.iter().zip(&self.values) {
            match setting.name.strip_prefix("app.") {
                Some(sub) => app.insert(Value::String(sub.into()), value.clone()),
                None => top.insert(Value::String(setting.name.into()), value.clone()),
            };
        }
        top.insert(Value::String("app".into()), Value::Mapping(app));
        serde_yaml::to_string(&top).unwrap_or_default()
    }
}

/// The Markdown table of all settings for the settings reference, `systemd/settings.md`
/// (`ferricorn --settings-markdown`), with an anchor per setting.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| key | flag | default | unit | meaning |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let flag = match (s.flag, s.short) {
            ("", _) => "APP (positional)".to_string(),
            (long, Some(short)) => format!("`-{short}`, `--{long}`"),
            (long, None) => format!("`--{long}`"),
        };
        let unit = match s.kind {
            Kind::Integer { unit, .. } => unit,
            _ => "",
        };
        // An anchor per setting: `settings.md#workers` links to its row.
        let _ = writeln!(
            out,
            "| <a id=\"{}\"></a>`{}` | {flag} | `{}` | {unit} | {} |",
            s.name.replace('.', "-"),
            s.name,
            s.default,
            s.description()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_validates_and_names_are_unique() {
        assert_eq!(defaults().len(), SETTINGS.len());
        for (i, s) in SETTINGS.iter().enumerate() {
            assert_eq!(setting_index(s.name), Some(i), "duplicate {}", s.name);
        }
        let config = load(None, &Overrides::default()).unwrap();
        assert_eq!(config.threads, 4);
        assert_eq!(config.limit_request_line, 4094);
        assert!(config.workers >= 1);
    }

    #[test]
    fn integer_range_is_enforced() {
        assert_eq!(SETTINGS[Key::Threads as usize].name, "threads");
        assert_eq!(SETTINGS[Key::AppConfig as usize].name, "app.config");
        assert_eq!(SETTINGS[Key::ReusePort as usize].name, "reuse_port");
        let threads = &SETTINGS[setting_index("threads").unwrap()];
        assert!(validate(threads, Value::from(0)).is_err());
        assert!(validate(threads, Value::String("8".into())).is_ok());
        assert!(validate(threads, Value::String("x".into())).is_err());
    }

    #[test]
    fn zero_stands_for_the_value_the_table_gives_and_the_docs_say_so() {
        let mut o = Overrides::default();
        for key in [
            Key::LimitRequestLine,
            Key::LimitRequestFields,
            Key::LimitRequestFieldSize,
        ] {
            o.set(key as usize, &["0".into()]).unwrap();
        }
        let config = load(None, &o).unwrap();
        assert_eq!(config.limit_request_line, 8190);
        assert_eq!(config.limit_request_fields, 32768);
        assert_eq!(config.limit_request_field_size, 8190);
        let describe = |key: Key| SETTINGS[key as usize].description();
        assert!(describe(Key::LimitRequestLine).ends_with(" 0 = the maximum, 8190."));
        assert!(describe(Key::LimitRequestFieldSize).ends_with(" 0 = 8190."));
        assert_eq!(describe(Key::Threads), SETTINGS[Key::Threads as usize].doc);
    }

    #[test]
    fn combinations_are_checked_in_one_place() {
        let with = |pairs: &[(Key, &str)]| {
            let mut o = Overrides::default();
            for (key, value) in pairs {
                o.set(*key as usize, &[value.to_string()]).unwrap();
            }
            load(None, &o).map(|c| c.tls())
        };
        assert_eq!(with(&[]), Ok(None));
        let err = with(&[(Key::Keyfile, "k.pem")]).unwrap_err();
        assert_eq!(err, "keyfile is set but certfile is not");
        let err = with(&[
            (Key::Certfile, "c.pem"),
            (Key::Keyfile, "k.pem"),
            (Key::CertReqs, "2"),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("cert_reqs: required needs ca_certs"),
            "{err}"
        );
        let tls = with(&[(Key::Certfile, "c.pem"), (Key::Keyfile, "k.pem")])
            .unwrap()
            .unwrap();
        assert_eq!(tls.client_auth, ClientAuth::None);
        // The PROXY protocol in front of TLS is read in clear before the handshake.
        assert!(with(&[
            (Key::Certfile, "c.pem"),
            (Key::Keyfile, "k.pem"),
            (Key::ProxyProtocol, "v1"),
        ])
        .is_ok());
        assert_eq!(SETTINGS[Key::AppPath as usize].name, "app.path");
    }

    #[test]
    fn line_of_finds_nested_keys() {
        let text = "workers: 2\napp:\n  path: x.so\n  config:\n    a: 1\n";
        assert_eq!(line_of(text, "workers"), Some(1));
        assert_eq!(line_of(text, "path"), Some(3));
        assert_eq!(line_of(text, "nope"), None);
    }

    #[test]
    fn overrides_win_and_validate() {
        let mut o = Overrides::default();
        o.set(setting_index("workers").unwrap(), &["3".into()])
            .unwrap();
        assert_eq!(load(None, &o).unwrap().workers, 3);
        let err = o
            .set(setting_index("workers").unwrap(), &["-1".into()])
            .unwrap_err();
        assert!(err.starts_with("--workers:"), "{err}");
    }
}
