//! The master's control plane: `control_socket` (gunicorn's control socket and its command
//! names, steered with `ferricorn ctl`) and the non-blocking [`Server`] that both it and
//! `metrics_bind` run in the master's event loop: bounded reads, a deadline per connection
//! and a bounded number of connections, so a slow or hostile client never blocks the master.
//!
//! The protocol on the control socket: one command line in, one JSON document out
//! (`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`), then the master
//! closes the connection.

use crate::config::MAX_WORKERS;
use crate::listeners::Listener;
use nix::poll::PollFlags;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Most connections served at once. When a new one arrives past it, the oldest connection
/// that has not sent a complete request yet is closed to make room, so idle or slow clients
/// can never keep a scrape or a command out.
pub const MAX_CONNS: usize = 512;
/// The listen(2) backlog of the master's listeners: room for a crowd of idle clients queued
/// behind [`MAX_CONNS`].
pub const BACKLOG: i32 = 512;
/// Longest a client may take to send its complete request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest a client may take to read its answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Longest an answer the master gives later ([`Answer::Later`]: a reload's, once its trial
/// load is over) may take.
const LATER_DEADLINE: Duration =
    Duration::from_secs(crate::master::probe::PROBE_TIMEOUT.as_secs() + 15);
/// Largest request read.
const MAX_REQUEST: usize = 8192;
/// How long the listener is left alone after accept(2) found no descriptor or memory left
/// (the workers' accept pause): the master's loop must not spin on a listener it cannot
/// accept from.
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// What the master answers to a complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// These bytes, now; the connection closes once they are sent (empty: close at once).
    Now(Vec<u8>),
    /// Later, through [`Server::answer_waiting`] (the request started something that takes
    /// time, like a reload's trial load).
    Later,
}

/// Where one connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading its request.
    Reading,
    /// Its answer comes later.
    Waiting,
    /// Sending its answer.
    Answering,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    input: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    stage: Stage,
    deadline: Instant,
}

impl Conn {
    fn answer(&mut self, bytes: Vec<u8>) {
        self.out = bytes;
        self.stage = Stage::Answering;
        self.deadline = Instant::now() + ANSWER_DEADLINE;
    }
}

/// A listener of the master's and the requests in progress on it.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    conns: Vec<Conn>,
    /// Accepting is paused until then (descriptor or memory exhaustion).
    paused_until: Option<Instant>,
}

impl Server {
    /// A server on `listener`.
    pub fn new(listener: Listener) -> Server {
        Server {
            listener,
            conns: Vec::new(),
            paused_until: None,
        }
    }

    /// The listener's URL, for the log.
    pub fn url(&self) -> String {
        self.listener.url()
    }

    /// The listener.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// What to poll: the listener (unless accepting is paused) and each connection (input
    /// while its request is incomplete, output while it is answered; nothing while it waits
    /// for a later answer).
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut fds = Vec::new();
        if self.paused_until.is_none_or(|t| Instant::now() >= t) {
            fds.push((self.listener.fd.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.conns {
            match c.stage {
                Stage::Reading => fds.push((c.fd.as_fd(), PollFlags::POLLIN)),
                Stage::Answering => fds.push((c.fd.as_fd(), PollFlags::POLLOUT)),
                Stage::Waiting => {}
            }
        }
        fds
    }

    /// Accepts, reads and answers without waiting: once `complete(input)` says a request is
    /// in, `answer(input)` says what to send; the connection closes once it is sent, or at
    /// its deadline.
    pub fn serve(&mut self, complete: fn(&[u8]) -> bool, answer: &mut dyn FnMut(&[u8]) -> Answer) {
        self.accept();
        let now = Instant::now();
        self.conns
            .retain_mut(|c| now < c.deadline && step(c, complete, answer));
    }

    /// Gives every connection waiting for a later answer ([`Answer::Later`]) `bytes`.
    pub fn answer_waiting(&mut self, bytes: &[u8]) {
        for c in self.conns.iter_mut().filter(|c| c.stage == Stage::Waiting) {
            c.answer(bytes.to_vec());
        }
        self.conns.retain_mut(flush);
    }

    /// Accepts what is queued; past [`MAX_CONNS`] the oldest connection still reading its
    /// request makes room (if none, the new one is closed).
    fn accept(&mut self) {
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        loop {
            match crate::listeners::accept_client(self.listener.raw_fd()) {
                Ok((fd, _)) => {
                    // The end of an exhaustion episode: the next one is logged again.
                    self.paused_until = None;
                    if self.conns.len() >= MAX_CONNS {
                        match self.conns.iter().position(|c| c.stage == Stage::Reading) {
                            Some(oldest) => drop(self.conns.remove(oldest)),
                            None => continue,
                        }
                    }
                    self.conns.push(Conn {
                        fd,
                        input: Vec::new(),
                        out: Vec::new(),
                        sent: 0,
                        stage: Stage::Reading,
                        deadline: Instant::now() + REQUEST_DEADLINE,
                    });
                }
                Err(e) if crate::listeners::out_of_resources(e) => {
                    if self.paused_until.is_none() {
                        crate::logging::error(format_args!(
                            "{}: accept failed: {e}; not accepting for {} ms at a time until it succeeds (logged once)",
                            self.listener.url(),
                            ACCEPT_PAUSE.as_millis()
                        ));
                    }
                    self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Moves one connection on; false once it is done (answered or broken).
fn step(
    c: &mut Conn,
    complete: fn(&[u8]) -> bool,
    answer: &mut dyn FnMut(&[u8]) -> Answer,
) -> bool {
    match c.stage {
        Stage::Waiting => return true,
        Stage::Answering => return flush(c),
        Stage::Reading => {}
    }
    let mut buf = [0u8; 2048];
    let ended = loop {
        match nix::unistd::read(&c.fd, &mut buf) {
            // The client is done sending: answer what came, if complete.
            Ok(0) => break true,
            Ok(n) => c.input.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN) => break false,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
        if c.input.len() > MAX_REQUEST {
            return false;
        }
    };
    if !complete(&c.input) {
        // A request cut short by the client's end is refused at once (closed).
        return !ended;
    }
    match answer(&c.input) {
        Answer::Now(bytes) if bytes.is_empty() => false,
        Answer::Now(bytes) => {
            c.answer(bytes);
            flush(c)
        }
        Answer::Later => {
            c.stage = Stage::Waiting;
            c.deadline = Instant::now() + LATER_DEADLINE;
            true
        }
    }
}

/// Sends what is left of the answer; false once all is sent (or the client is gone). A
/// connection not answering yet is kept.
fn flush(c: &mut Conn) -> bool {
    if c.stage != Stage::Answering {
        return true;
    }
    while c.sent < c.out.len() {
        match nix::unistd::write(&c.fd, &c.out[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Whether `input` holds a complete command line.
pub fn line_complete(input: &[u8]) -> bool {
    input.contains(&b'\n')
}

/// How `shutdown` stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// As TERM: in-flight requests finish within graceful_timeout.
    Graceful,
    /// As INT: at once.
    Quick,
}

/// A control-socket command (gunicorn's `gunicornc` names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `show workers`: each worker's pid, generation, state, age, requests, busy threads,
    /// connections, RSS and last heartbeat.
    ShowWorkers,
    /// `show stats`: totals over the server.
    ShowStats,
    /// `show listeners`: the listening sockets and their accept queues.
    ShowListeners,
    /// `show config`: the effective configuration (YAML).
    ShowConfig,
    /// `worker add [N]`: N more workers (as TTIN N times).
    WorkerAdd(usize),
    /// `worker remove [N]`: N fewer, at least one left (as TTOU).
    WorkerRemove(usize),
    /// `worker kill PID`: stop that worker gracefully (TERM); it is replaced.
    WorkerKill(i32),
    /// `reload`: as HUP.
    Reload,
    /// `reopen`: as USR1 (reopen the log files).
    Reopen,
    /// `shutdown [graceful|quick]`: as TERM or INT.
    Shutdown(Stop),
}

/// Parses what a client sent: exactly one command line (a second line is refused as such,
/// never run). Errors: a one-line message.
pub fn parse_request(input: &[u8]) -> Result<Command, String> {
    let text = String::from_utf8_lossy(input);
    let (line, rest) = text.split_once('\n').unwrap_or((&text, ""));
    if !rest.trim().is_empty() {
        return Err("one command per connection: the input holds more than one line".into());
    }
    parse(line)
}

/// The number of workers wanted after `command`, from `desired` now: `worker add N` up to
/// [`MAX_WORKERS`] (the `workers` setting's bound), `worker remove N` down to one; other
/// commands leave it. Errors: an addition past the bound, naming it.
pub fn workers_after(command: &Command, desired: usize) -> Result<usize, String> {
    match *command {
        Command::WorkerAdd(n) => desired
            .checked_add(n)
            .filter(|&total| total <= MAX_WORKERS)
            .ok_or_else(|| {
                format!("{desired} workers plus {n} would exceed the maximum of {MAX_WORKERS}")
            }),
        Command::WorkerRemove(n) => Ok(desired.saturating_sub(n).max(1)),
        _ => Ok(desired),
    }
}

/// Parses one command line. Errors: a one-line message naming what was not understood.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let count = |w: Option<&&str>| -> Result<usize, String> {
        match w {
            None => Ok(1),
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|&n| (1..=MAX_WORKERS).contains(&n))
                .ok_or_else(|| format!("`{n}` is not a count from 1 to {MAX_WORKERS}")),
        }
    };
    match words.as_slice() {
        ["show", "workers"] => Ok(Command::ShowWorkers),
        ["show", "stats"] => Ok(Command::ShowStats),
        ["show", "listeners"] => Ok(Command::ShowListeners),
        ["show", "config"] => Ok(Command::ShowConfig),
        ["worker", "add", rest @ ..] if rest.len() <= 1 => {
            Ok(Command::WorkerAdd(count(rest.first())?))
        }
        ["worker", "remove", rest @ ..] if rest.len() <= 1 => {
            Ok(Command::WorkerRemove(count(rest.first())?))
        }
        ["worker", "kill", pid] => pid
            .parse()
            .map(Command::WorkerKill)
            .map_err(|_| format!("`{pid}` is not a pid")),
        ["reload"] => Ok(Command::Reload),
        ["reopen"] => Ok(Command::Reopen),
        ["shutdown"] | ["shutdown", "graceful"] => Ok(Command::Shutdown(Stop::Graceful)),
        ["shutdown", "quick"] => Ok(Command::Shutdown(Stop::Quick)),
        _ => Err(format!(
            "unknown command `{}`: try show workers|stats|listeners|config, worker add|remove [N], worker kill PID, reload, reopen, shutdown [graceful|quick]",
            line.trim()
        )),
    }
}

/// The JSON answer for a command's `result`.
pub fn ok(result: serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::json!({ "ok": true, "result": result }).to_string();
    out.push('\n');
    out.into_bytes()
}

/// The JSON answer for a refused command.
pub fn error(message: &str) -> Vec<u8> {
    let mut out = serde_json::json!({ "ok": false, "error": message }).to_string();
    out.push('\n');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorns_command_names_parse() {
        assert_eq!(parse("show workers\n"), Ok(Command::ShowWorkers));
        assert_eq!(parse("worker add"), Ok(Command::WorkerAdd(1)));
        assert_eq!(parse("worker remove 3"), Ok(Command::WorkerRemove(3)));
        assert_eq!(parse("worker kill 42"), Ok(Command::WorkerKill(42)));
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown(Stop::Graceful)));
        assert_eq!(parse("shutdown quick"), Ok(Command::Shutdown(Stop::Quick)));
        assert!(parse("worker add zero").unwrap_err().contains("zero"));
        assert!(parse("worker add 0").is_err());
        assert!(parse("restart")
            .unwrap_err()
            .starts_with("unknown command `restart`"));
    }

    #[test]
    fn counts_are_bounded_and_arithmetic_checked() {
        for huge in [
            "9223372036854775807",
            "18446744073709551614",
            "1025",
            "99999999999999999999",
        ] {
            assert!(parse(&format!("worker add {huge}")).is_err(), "{huge}");
            assert!(parse(&format!("worker remove {huge}")).is_err(), "{huge}");
        }
        let add = |n, desired| workers_after(&Command::WorkerAdd(n), desired);
        assert_eq!(add(1, 2), Ok(3));
        assert_eq!(add(1024, 0), Ok(1024));
        assert!(add(1, 1024).unwrap_err().contains("maximum of 1024"));
        assert!(add(usize::MAX, 3).is_err());
        let remove = |n, desired| workers_after(&Command::WorkerRemove(n), desired);
        assert_eq!(remove(usize::MAX, 3), Ok(1));
        assert_eq!(remove(2, 3), Ok(1));
    }

    #[test]
    fn two_commands_in_one_write_are_refused_as_such() {
        let err = parse_request(b"worker add 1\nshutdown\n").unwrap_err();
        assert!(err.starts_with("one command per connection"), "{err}");
        assert_eq!(parse_request(b"show stats\n"), Ok(Command::ShowStats));
        assert_eq!(parse_request(b"reload\n  \n"), Ok(Command::Reload));
        assert!(parse_request(b"\xff\xfe\n").is_err());
    }

    proptest::proptest! {
        /// No input makes parsing or the worker arithmetic panic, and every accepted count
        /// keeps the workers between 1 and MAX_WORKERS.
        #[test]
        fn no_input_panics_and_counts_stay_in_bounds(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            words in proptest::collection::vec("(show|worker|add|remove|kill|workers|[0-9]{1,22}|-1|\n| )", 0..6),
            desired in 1usize..=MAX_WORKERS,
        ) {
            for bytes in [input, words.concat().into_bytes()] {
                if let Ok(command) = parse_request(&bytes) {
                    if let Ok(after) = workers_after(&command, desired) {
                        proptest::prop_assert!((1..=MAX_WORKERS).contains(&after));
                    }
                }
            }
        }
    }
}

/// `ferricorn ctl`: sends one command to a running master's control socket and prints the
/// answer.
#[derive(clap::Parser, Debug)]
#[command(
    name = "ferricorn ctl",
    bin_name = "ferricorn ctl",
    about = "Steer a running ferricorn through its control_socket"
)]
pub struct Ctl {
    /// The master's `control_socket`.
    #[arg(
        short = 's',
        long = "socket",
        value_name = "PATH",
        default_value = "ferricorn.ctl"
    )]
    pub socket: std::path::PathBuf,
    /// Print the answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The command: show workers|stats|listeners|config, worker add|remove [N], worker kill
    /// PID, reload, reopen, shutdown [graceful|quick].
    #[arg(required = true, num_args = 1.., value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Runs `ferricorn ctl ARGS`; returns the exit status (0 done, 1 refused or unreachable,
/// 2 bad arguments).
pub fn ctl_main(args: Vec<std::ffi::OsString>) -> i32 {
    use clap::Parser;
    let ctl = match Ctl::try_parse_from(args) {
        Ok(ctl) => ctl,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let line = ctl.command.join(" ");
    let answer = match ask(&ctl.socket, &line) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("ferricorn ctl: {}: {e}", ctl.socket.display());
            return 1;
        }
    };
    let ok = answer["ok"].as_bool() == Some(true);
    if ctl.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else if ok {
        print!("{}", render(&line, &answer["result"]));
    } else {
        eprintln!(
            "ferricorn ctl: {}",
            answer["error"].as_str().unwrap_or("refused")
        );
    }
    if ok {
        0
    } else {
        1
    }
}

/// Sends `line` to the socket at `path` and reads the JSON answer (a reload's answer comes
/// once its trial load is done: 75 s at most).
fn ask(path: &std::path::Path, line: &str) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(LATER_DEADLINE))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("unreadable answer ({e}): {text}"))
}

/// The human-readable form of a command's result.
fn render(line: &str, result: &serde_json::Value) -> String {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    };
    match (line.trim(), result) {
        ("show config", serde_json::Value::String(yaml)) => yaml.clone(),
        (_, serde_json::Value::Array(rows)) => table(rows, &cell),
        (_, serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Object(inner) => {
                    let parts: Vec<String> = inner
                        .iter()
                        .map(|(ik, iv)| format!("{ik}={}", cell(iv)))
                        .collect();
                    format!("{k}: {}\n", parts.join(" "))
                }
                _ => format!("{k}: {}\n", cell(v)),
            })
            .collect(),
        (_, other) => format!("{}\n", cell(other)),
    }
}

/// `rows` (objects with the same keys) as an aligned table with a header.
fn table(rows: &[serde_json::Value], cell: &dyn Fn(&serde_json::Value) -> String) -> String {
    let Some(serde_json::Value::Object(first)) = rows.first() else {
        return String::new();
    };
    let keys: Vec<&String> = first.keys().collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| keys.iter().map(|k| cell(&r[k.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([k.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| -> String {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(
        keys.iter()
            .map(|k| k.to_uppercase())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
