//! `ferricorn ctl` commands as the master runs them: each command's effect and its JSON
//! answer (`show workers`, `show stats`, `show listeners`, `show config`, worker counts,
//! `reload`, `stop`), beside the control server that reads them ([`crate::master::control`]).

use super::*;

impl Master {
    /// Runs one control-socket command line; the JSON answer (a reload's comes once its
    /// trial load is over).
    pub(super) fn command(&mut self, input: &[u8]) -> Answer {
        let command = match control::parse_request(input) {
            Ok(c) => c,
            Err(e) => return Answer::Now(control::error(&e)),
        };
        if command == Command::Reload && self.stop_deadline.is_none() {
            logging::info("Control socket: reload");
            return match self.reload() {
                Ok(()) => Answer::Later,
                Err(e) => Answer::Now(control::error(&format!(
                    "reload failed: {e}; the current workers keep serving"
                ))),
            };
        }
        Answer::Now(self.run_command(command))
    }

    /// Runs a command that answers at once; the JSON answer.
    pub(super) fn run_command(&mut self, command: Command) -> Vec<u8> {
        let shows = matches!(
            command,
            Command::ShowWorkers
                | Command::ShowStats
                | Command::ShowListeners
                | Command::ShowConfig
        );
        if self.stop_deadline.is_some() && !shows {
            return control::error("the server is stopping");
        }
        if !shows {
            logging::info(format_args!("Control socket: {command:?}"));
        }
        match command {
            Command::ShowWorkers => control::ok(self.workers_json()),
            Command::ShowStats => control::ok(self.stats_json()),
            Command::ShowListeners => control::ok(self.listeners_json()),
            Command::ShowConfig => control::ok(serde_json::Value::String(self.config.to_yaml())),
            Command::WorkerAdd(_) | Command::WorkerRemove(_) => {
                match control::workers_after(&command, self.desired) {
                    Ok(desired) => {
                        self.desired = desired;
                        control::ok(serde_json::json!({ "workers": desired }))
                    }
                    Err(e) => control::error(&e),
                }
            }
            Command::WorkerKill(pid) => {
                let pid = Pid::from_raw(pid);
                if !self.workers.contains_key(&pid) {
                    return control::error(&format!("no worker with pid {pid}"));
                }
                self.retire(pid);
                control::ok(serde_json::json!({ "stopping": pid.as_raw() }))
            }
            // `command` starts a reload itself unless the server is stopping, which is
            // answered above: this arm is never reached.
            Command::Reload => control::error("the server is stopping"),
            Command::Reopen => {
                logging::reopen(&self.config.log_targets());
                self.signal_all(Signal::SIGUSR1);
                control::ok(serde_json::json!("reopened"))
            }
            Command::Shutdown(how) => {
                match how {
                    Stop::Graceful => self.stop(Signal::SIGTERM, self.config.graceful_timeout),
                    Stop::Quick => self.stop(Signal::SIGQUIT, QUICK_STOP),
                }
                control::ok(serde_json::json!("stopping"))
            }
        }
    }

    pub(super) fn workers_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let board = self.scoreboard.as_ref();
        let rows: Vec<serde_json::Value> = self
            .workers
            .iter()
            .map(|(pid, w)| {
                let slot = board.and_then(|b| b.slot(w.slot?)).filter(|s| s.in_use());
                let load = |f: fn(&crate::scoreboard::WorkerSlot) -> u64| slot.map_or(0, f);
                serde_json::json!({
                    "pid": pid.as_raw(),
                    "generation": w.generation,
                    "state": state_name(w.state),
                    "age_seconds": now.duration_since(w.started).as_secs(),
                    "requests": load(|s| s.counters.requests_total()),
                    "threads_busy": load(|s| u64::from(s.busy.load(Ordering::Relaxed))),
                    "threads": load(|s| u64::from(s.threads.load(Ordering::Relaxed))),
                    "connections": load(|s| u64::from(s.connections.load(Ordering::Relaxed))),
                    "websockets": load(|s| u64::from(s.websockets.load(Ordering::Relaxed))),
                    "bytes_in": load(|s| s.counters.bytes_in.load(Ordering::Relaxed)),
                    "bytes_out": load(|s| s.counters.bytes_out.load(Ordering::Relaxed)),
                    "rss_bytes": process::resident_bytes(*pid).unwrap_or(0),
                    "heartbeat_seconds_ago": now.duration_since(w.last_seen).as_secs_f64(),
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    pub(super) fn stats_json(&self) -> serde_json::Value {
        let snapshot = self.snapshot();
        let requests = snapshot.counters.requests_total();
        let restarts: serde_json::Map<String, serde_json::Value> = Restart::ALL
            .iter()
            .zip(snapshot.restarts)
            .map(|(r, n)| (r.label().to_string(), n.into()))
            .collect();
        serde_json::json!({
            "pid": self.pid.as_raw(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "generation": self.generation,
            "workers": snapshot.workers,
            "workers_wanted": self.desired,
            "requests": requests,
            "connections": snapshot.connections,
            "websockets": snapshot.websockets,
            "threads_busy": snapshot.threads_busy,
            "bytes_in": snapshot.counters.bytes_in.load(Ordering::Relaxed),
            "bytes_out": snapshot.counters.bytes_out.load(Ordering::Relaxed),
            "restarts": restarts,
            "reloads": { "success": snapshot.reloads.0, "failure": snapshot.reloads.1 },
        })
    }

    pub(super) fn listeners_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .listeners
            .iter()
            .map(|l| {
                let queue = l
                    .is_tcp
                    .then(|| metrics::listen_queue(l.fd.as_fd()))
                    .flatten();
                serde_json::json!({ "url": l.url_for(self.config.tls_for(&l.address)), "fd": l.raw_fd(), "listen_queue": queue })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}
