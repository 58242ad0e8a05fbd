//! gunicorn 27's settings (its `config.py` has 120) and what ferricorn does with each, for a
//! gunicorn user's configuration: a gunicorn name that ferricorn does not have is refused
//! with what to do instead, and the README's "Coming from gunicorn" table is generated from
//! this list plus the settings table (`tests/config.rs` keeps the two in sync). This module
//! depends on no other of the crate.

use std::fmt::Write;

/// What ferricorn has for a gunicorn setting it does not have under the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instead {
    /// Another name (a setting, a flag or a command).
    Renamed(&'static str),
    /// Not needed here, and why.
    NotNeeded(&'static str),
    /// Not yet: planned, with where it stands.
    NotYet(&'static str),
}

use Instead::{NotNeeded, NotYet, Renamed};

const HOOKS: Instead = NotNeeded(
    "server hooks are Python callables; a plugin's `init` and `shutdown` run in each worker, and the master's events are in the error log",
);
const PYTHON: Instead =
    NotNeeded("Python-specific: a plugin is a shared object, loaded by `app.path`");
const STRICT: Instead = NotNeeded(
    "a leniency for malformed requests: ferricorn refuses them (400), see \"HTTP behaviour\" in src/README.md",
);
const HTTP2: Instead = NotNeeded("ferricorn speaks HTTP/1.1 only; terminate HTTP/2 in a proxy");
const DIRTY: Instead = NotNeeded(
    "gunicorn's dirty arbiters run Python workers beside the app; a plugin starts its own threads or processes",
);
const SYSLOG: Instead = NotNeeded(
    "log to stderr under systemd (the journal takes it) or to a file; journald forwards to syslog",
);
const TLS_DEFAULTS: Instead = NotNeeded(
    "rustls picks safe defaults: TLS 1.2 and 1.3 with its own cipher suites (no legacy protocol or cipher to enable); remove the key",
);

/// Every gunicorn 27 setting, in the order of gunicorn's `config.py`. `None`: ferricorn has
/// the setting under the same name (checked against the settings table by a test).
pub const GUNICORN_SETTINGS: &[(&str, Option<Instead>)] = &[
    ("config", Some(Renamed("`-c/--config FILE`, a YAML file instead of Python"))),
    ("wsgi_app", None),
    ("bind", None),
    ("backlog", None),
    ("workers", None),
    ("worker_class", Some(NotNeeded("the thread pool is the only worker type; set `threads`"))),
    ("threads", None),
    ("worker_connections", None),
    ("max_requests", None),
    ("max_requests_jitter", None),
    ("timeout", None),
    ("graceful_timeout", None),
    ("keepalive", None),
    ("limit_request_line", None),
    ("limit_request_fields", None),
    ("limit_request_field_size", None),
    ("reload", Some(NotNeeded("send HUP after rebuilding the plugin: a new generation loads it from disk, with no dropped request"))),
    ("reload_engine", Some(NotNeeded("see `reload`: HUP reloads"))),
    ("reload_extra_files", Some(NotNeeded("see `reload`: HUP reloads"))),
    ("spew", Some(NotNeeded("Python tracing; use `loglevel: debug`, or gdb/perf on a worker"))),
    ("check_config", Some(Renamed("the `--check-config` flag"))),
    ("print_config", Some(Renamed("the `--print-config` flag"))),
    ("preload_app", Some(NotNeeded("plugins, and Python apps, are loaded after fork in each worker (the master never loads app code, so it stays small and HUP reloads the code); there is no copy-on-write sharing of a preloaded app"))),
    ("sendfile", Some(NotNeeded("responses come from the app's writes, not from files"))),
    ("reuse_port", None),
    ("chdir", None),
    ("daemon", Some(NotNeeded("run under systemd (`systemd/ferricorn.service`) or another supervisor"))),
    ("raw_env", None),
    ("pidfile", None),
    ("worker_tmp_dir", Some(NotNeeded("workers prove they are alive through a pipe, not a temporary file"))),
    ("user", None),
    ("group", None),
    ("umask", None),
    ("initgroups", Some(NotNeeded("always done: workers that switch `user` as root get that user's groups"))),
    ("tmp_upload_dir", Some(NotNeeded("bodies are streamed to the app, never spooled to disk"))),
    ("secure_scheme_headers", None),
    ("forwarded_allow_ips", None),
    ("accesslog", None),
    ("disable_redirect_access_to_syslog", Some(SYSLOG)),
    ("access_log_format", None),
    ("errorlog", None),
    ("loglevel", None),
    ("capture_output", None),
    ("logger_class", Some(PYTHON)),
    ("logconfig", Some(PYTHON)),
    ("logconfig_dict", Some(PYTHON)),
    ("logconfig_json", Some(PYTHON)),
    ("syslog_addr", Some(SYSLOG)),
    ("syslog", Some(SYSLOG)),
    ("syslog_prefix", Some(SYSLOG)),
    ("syslog_facility", Some(SYSLOG)),
    ("enable_stdio_inheritance", Some(NotNeeded("workers always inherit the master's stdio"))),
    ("statsd_host", Some(NotNeeded("ferricorn serves Prometheus metrics instead of pushing statsd: set `metrics_bind` (see \"Monitoring\" in systemd/README.md)"))),
    ("dogstatsd_tags", Some(NotNeeded("see `statsd_host`"))),
    ("statsd_prefix", Some(NotNeeded("see `statsd_host`"))),
    ("enable_backlog_metric", Some(NotNeeded("the listen queue is always a metric of `metrics_bind` (`ferricorn_listen_queue`)"))),
    ("proc_name", None),
    ("default_proc_name", Some(NotNeeded("the default `proc_name` is the plugin's file name"))),
    ("pythonpath", None),
    ("paste", Some(PYTHON)),
    ("on_starting", Some(HOOKS)),
    ("on_reload", Some(HOOKS)),
    ("when_ready", Some(HOOKS)),
    ("pre_fork", Some(HOOKS)),
    ("post_fork", Some(HOOKS)),
    ("post_worker_init", Some(HOOKS)),
    ("worker_int", Some(HOOKS)),
    ("worker_abort", Some(HOOKS)),
    ("pre_exec", Some(HOOKS)),
    ("pre_request", Some(HOOKS)),
    ("post_request", Some(HOOKS)),
    ("child_exit", Some(HOOKS)),
    ("worker_exit", Some(HOOKS)),
    ("nworkers_changed", Some(HOOKS)),
    ("on_exit", Some(HOOKS)),
    ("ssl_context", Some(NotNeeded("a Python hook; set certfile, keyfile, ca_certs and cert_reqs"))),
    ("proxy_protocol", None),
    ("proxy_allow_ips", None),
    ("protocol", Some(NotNeeded("ferricorn speaks HTTP/1.1 only (no uwsgi protocol)"))),
    ("uwsgi_allow_ips", Some(NotNeeded("see `protocol`"))),
    ("keyfile", None),
    ("certfile", None),
    ("ssl_version", Some(TLS_DEFAULTS)),
    ("cert_reqs", None),
    ("ca_certs", None),
    ("suppress_ragged_eofs", Some(NotNeeded("a client closing TCP without close_notify ends its connection quietly, as gunicorn's default does"))),
    ("do_handshake_on_connect", Some(NotNeeded("the handshake always runs in the event loop at connect, bounded by header_timeout"))),
    ("ciphers", Some(TLS_DEFAULTS)),
    ("http_protocols", Some(HTTP2)),
    ("http2_cleartext", Some(HTTP2)),
    ("http2_max_concurrent_streams", Some(HTTP2)),
    ("http2_initial_window_size", Some(HTTP2)),
    ("http2_max_frame_size", Some(HTTP2)),
    ("http2_max_header_list_size", Some(HTTP2)),
    ("raw_paste_global_conf", Some(PYTHON)),
    ("permit_obsolete_folding", Some(STRICT)),
    ("strip_header_spaces", Some(STRICT)),
    ("permit_unconventional_http_method", Some(STRICT)),
    ("permit_unconventional_http_version", Some(STRICT)),
    ("casefold_http_method", Some(STRICT)),
    ("forwarder_headers", Some(NotNeeded("from a trusted peer only the scheme (`secure_scheme_headers`) and the client's address (`real_ip_header`) come from forwarding headers; SCRIPT_NAME and PATH_INFO never do"))),
    ("header_map", Some(NotNeeded("field names with `_` are always dropped (gunicorn's default `drop`)"))),
    ("asgi_loop", Some(PYTHON)),
    ("asgi_lifespan", Some(PYTHON)),
    ("asgi_disconnect_grace_period", Some(PYTHON)),
    ("websocket_max_message_size", Some(NotNeeded("no WebSocket support: HTTP/1.1 requests and responses only"))),
    ("http_parser", Some(NotNeeded("one parser: ferricorn's own state machine with httparse"))),
    ("root_path", Some(NotNeeded("SCRIPT_NAME is empty; a proxy that mounts the app under a prefix passes the full path"))),
    ("dirty_apps", Some(DIRTY)),
    ("dirty_workers", Some(DIRTY)),
    ("dirty_timeout", Some(DIRTY)),
    ("dirty_threads", Some(DIRTY)),
    ("dirty_graceful_timeout", Some(DIRTY)),
    ("on_dirty_starting", Some(DIRTY)),
    ("dirty_post_fork", Some(DIRTY)),
    ("dirty_worker_init", Some(DIRTY)),
    ("dirty_worker_exit", Some(DIRTY)),
    ("control_socket", None),
    ("control_socket_mode", None),
    ("control_socket_disable", Some(NotNeeded("the control socket is off unless `control_socket` is set"))),
];

/// gunicorn's command-line flags that are not `--` and its setting's name with `-` for `_`
/// (`gunicorn --help`), with the setting each sets.
const IRREGULAR_FLAGS: &[(&str, &str)] = &[
    ("-c", "config"),
    ("-b", "bind"),
    ("-w", "workers"),
    ("-k", "worker_class"),
    ("-t", "timeout"),
    ("-D", "daemon"),
    ("-R", "enable_stdio_inheritance"),
    ("-e", "raw_env"),
    ("--env", "raw_env"),
    ("-p", "pidfile"),
    ("--pid", "pidfile"),
    ("-u", "user"),
    ("-g", "group"),
    ("-m", "umask"),
    ("-n", "proc_name"),
    ("--name", "proc_name"),
    ("--preload", "preload_app"),
    ("--no-sendfile", "sendfile"),
    ("--keep-alive", "keepalive"),
    ("--limit-request-field_size", "limit_request_field_size"),
    ("--reload-extra-file", "reload_extra_files"),
    ("--access-logfile", "accesslog"),
    ("--access-logformat", "access_log_format"),
    ("--error-logfile", "errorlog"),
    ("--log-file", "errorlog"),
    ("--log-level", "loglevel"),
    ("--log-config", "logconfig"),
    ("--log-config-dict", "logconfig_dict"),
    ("--log-config-json", "logconfig_json"),
    ("--log-syslog-to", "syslog_addr"),
    ("--log-syslog", "syslog"),
    ("--log-syslog-prefix", "syslog_prefix"),
    ("--log-syslog-facility", "syslog_facility"),
    ("--paster", "paste"),
    ("--paste-global", "raw_paste_global_conf"),
    ("--proxy-allow-from", "proxy_allow_ips"),
];

/// The gunicorn setting that gunicorn's command-line flag `flag` (`--name` or `-x`, without
/// its value) sets; `None` if gunicorn has no such flag.
pub fn setting_of_flag(flag: &str) -> Option<&'static str> {
    if let Some((_, setting)) = IRREGULAR_FLAGS.iter().find(|(f, _)| *f == flag) {
        return Some(setting);
    }
    let name = flag.strip_prefix("--")?.replace('-', "_");
    GUNICORN_SETTINGS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n == name)
}

/// gunicorn's irregular flags for `setting` (`--log-file` for `errorlog`, `-p` for
/// `pidfile`...), which ferricorn accepts as aliases where it has the setting.
pub fn irregular_flags_of(setting: &str) -> impl Iterator<Item = &'static str> + '_ {
    IRREGULAR_FLAGS
        .iter()
        .filter(move |(_, s)| *s == setting)
        .map(|(flag, _)| *flag)
}

/// For a key ferricorn does not have: if it is a gunicorn setting, why it is not here and
/// what to use instead (one line).
pub fn explain(key: &str) -> Option<String> {
    let (_, instead) = GUNICORN_SETTINGS.iter().find(|(name, _)| *name == key)?;
    Some(match instead.as_ref()? {
        Renamed(what) => format!("`{key}` is gunicorn's; here it is {what}"),
        NotNeeded(why) => format!("`{key}` is a gunicorn setting ferricorn does not need: {why}"),
        NotYet(what) => {
            format!("`{key}` is a gunicorn setting ferricorn does not have yet: {what}")
        }
    })
}

/// The README's "Coming from gunicorn" table (Markdown), one row per gunicorn setting;
/// `has(name)`: ferricorn has a setting of that name.
pub fn markdown_table(has: impl Fn(&str) -> bool) -> String {
    let mut out = String::from("| gunicorn setting | in ferricorn |\n|---|---|\n");
    for (name, instead) in GUNICORN_SETTINGS {
        let here = match instead {
            None if has(name) => "same name".to_string(),
            None => "(missing from the settings table)".to_string(),
            Some(Renamed(what)) => format!("different name: {what}"),
            Some(NotNeeded(why)) => format!("not needed: {why}"),
            Some(NotYet(what)) => format!("not yet: {what}"),
        };
        let _ = writeln!(out, "| `{name}` | {here} |");
    }
    out
}

/// The settings of a gunicorn configuration file (`gunicorn.conf.py`) that are plain
/// `name = value` lines, the value a Python literal (a string, number, `True`/`False`/
/// `None`, or a list, tuple or dict of them), as a YAML mapping; and every other line that
/// is not blank, a comment or an `import`, as (1-based line, why): ferricorn runs no Python.
pub fn read_conf_py(text: &str) -> (serde_yaml::Mapping, Vec<(usize, String)>) {
    let mut settings = serde_yaml::Mapping::new();
    let mut refused = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("import ") {
            continue;
        }
        let parsed = line.split_once('=').and_then(|(name, value)| {
            let name = name.trim();
            let plain =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let value = strip_comment(value.trim());
            Some((name.to_string(), literal(value).filter(|_| plain)?))
        });
        match parsed {
            Some((name, value)) => {
                settings.insert(serde_yaml::Value::String(name), value);
            }
            None => refused.push((
                number + 1,
                format!("`{line}` is Python, not a plain `name = value` setting: ferricorn reads no Python; write the value itself (or move the settings to YAML, `name: value`)"),
            )),
        }
    }
    (settings, refused)
}

/// `value` without a trailing `# comment` outside quotes.
fn strip_comment(value: &str) -> &str {
    let mut quote = None;
    for (i, c) in value.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') => return value[..i].trim_end(),
            _ => {}
        }
    }
    value
}

/// A Python literal as a YAML value; `None` if `text` is anything else.
fn literal(text: &str) -> Option<serde_yaml::Value> {
    let mut chars = text.trim().chars().peekable();
    let value = parse_literal(&mut chars)?;
    chars.all(char::is_whitespace).then_some(value)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_spaces(chars: &mut Chars<'_>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

fn parse_literal(chars: &mut Chars<'_>) -> Option<serde_yaml::Value> {
    use serde_yaml::Value;
    skip_spaces(chars);
    match *chars.peek()? {
        q @ ('\'' | '"') => {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next()? {
                    '\\' => text.push(match chars.next()? {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    }),
                    c if c == q => return Some(Value::String(text)),
                    c => text.push(c),
                }
            }
        }
        open @ ('[' | '(' | '{') => {
            chars.next();
            let close = match open {
                '[' => ']',
                '(' => ')',
                _ => '}',
            };
            let mut items = Vec::new();
            let mut map = serde_yaml::Mapping::new();
            loop {
                skip_spaces(chars);
                if chars.next_if_eq(&close).is_some() {
                    break;
                }
                let item = parse_literal(chars)?;
                skip_spaces(chars);
                if close == '}' {
                    chars.next_if_eq(&':')?;
                    map.insert(item, parse_literal(chars)?);
                } else {
                    items.push(item);
                }
                skip_spaces(chars);
                if chars.next_if_eq(&',').is_none() {
                    chars.next_if_eq(&close)?;
                    break;
                }
            }
            Some(match close {
                '}' => Value::Mapping(map),
                _ => Value::Sequence(items),
            })
        }
        _ => {
            let mut word = String::new();
            while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || "_.+-".contains(*c))
            {
                word.push(c);
            }
            match word.as_str() {
                "True" => Some(Value::Bool(true)),
                "False" => Some(Value::Bool(false)),
                "None" => Some(Value::Null),
                _ => word
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| word.parse::<f64>().map(Value::from))
                    .ok(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_conf_py;

    #[test]
    fn plain_python_settings_are_read_and_the_rest_refused() {
        let text = "import multiprocessing\n# a comment\nbind = ['127.0.0.1:8000', \"[::1]:8000\"]  # both\nworkers = 4\nkeepalive = 2.5\nreuse_port = True\nraw_env = ('A=1',)\nsecure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}\nworkers = multiprocessing.cpu_count() * 2 + 1\ndef on_starting(server):\n";
        let (settings, refused) = read_conf_py(text);
        let yaml = serde_yaml::to_string(&settings).unwrap();
        assert_eq!(
            yaml,
            "bind:\n- 127.0.0.1:8000\n- '[::1]:8000'\nworkers: 4\nkeepalive: 2.5\nreuse_port: true\nraw_env:\n- A=1\nsecure_scheme_headers:\n  X-FORWARDED-PROTO: https\n"
        );
        let lines: Vec<usize> = refused.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [9, 10]);
    }
}
