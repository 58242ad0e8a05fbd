//! HUP and USR2: a reload (the new configuration's trial load in a child, stepped from the
//! event loop; then the new generation of workers, the listeners rebound, the old workers
//! retired as the new ones are ready) and a binary upgrade (a new master from the binary on
//! disk, handed the listening sockets).

use super::*;

impl Master {
    /// HUP (or `ctl reload`): re-reads the configuration and starts its trial load; the
    /// reload goes on in [`Master::step_probe`] once the probe is over, while the event loop
    /// keeps serving. A trial load already under way is ended and replaced (the newest
    /// configuration wins). Errors: the configuration's (the reload failed at once).
    pub(super) fn reload(&mut self) -> Result<(), String> {
        logging::info("Handling signal: hup");
        systemd::reloading();
        self.held = false;
        if let Some(mut old) = self.probe.take() {
            old.abort();
            logging::info("Reload: the trial load under way is replaced by a new one");
        }
        // The configuration's errors on one line, for the log and the ctl answer.
        let started = config::load(self.config.file.as_deref(), &self.overrides)
            .map_err(|errors| errors.replace('\n', "; "))
            .and_then(|config| Probe::start(config, &mut || self.close_in_child()));
        match started {
            Ok(probe) => {
                self.probe = Some(probe);
                Ok(())
            }
            Err(e) => {
                self.reload_failed(&e);
                Err(e)
            }
        }
    }

    /// Moves a reload's trial load on; once it is over, starts the new generation or keeps
    /// the current one, and answers the control clients waiting for it.
    pub(super) fn step_probe(&mut self) {
        let Some(result) = self.probe.as_mut().and_then(Probe::step) else {
            return;
        };
        let Some(probe) = self.probe.take() else {
            return;
        };
        match result.and_then(|_| self.apply_reload(probe.into_config())) {
            Ok(()) => {
                self.reloads.0 += 1;
                let answer = control::ok(serde_json::json!({ "generation": self.generation }));
                self.answer_reload_waiters(answer);
            }
            Err(e) => {
                self.reload_failed(&e);
                self.answer_reload_waiters(control::error(&format!(
                    "reload failed: {e}; the current workers keep serving"
                )));
            }
        }
    }

    /// Answers the control clients waiting for a reload's outcome.
    pub(super) fn answer_reload_waiters(&mut self, answer: Vec<u8>) {
        if let Some(control) = &mut self.control {
            control.answer_waiting(&answer);
        }
    }

    pub(super) fn reload_failed(&mut self, e: &str) {
        self.reloads.1 += 1;
        logging::error(format_args!(
            "Reload failed, keeping the current workers: {e}"
        ));
        systemd::ready(&format!(
            "reload failed; serving generation {}",
            self.generation
        ));
    }

    /// After a successful trial load: takes `config` (its TLS files, listeners and log
    /// files) and starts a new generation. Errors: what could still fail (the files may have
    /// changed since the probe read them; a new address may not bind).
    pub(super) fn apply_reload(&mut self, config: Config) -> Result<(), String> {
        let tls = config.tls().as_ref().map(tls::load).transpose()?;
        let before: Vec<listeners::Address> =
            self.listeners.iter().map(|l| l.address.clone()).collect();
        let listeners = if self.origin == Origin::SocketActivated {
            std::mem::take(&mut self.listeners)
        } else {
            rebind(&mut self.listeners, &config)?
        };
        if let Err(e) = logging::configure(&config.log_targets()) {
            logging::warning(format_args!("Reload: {e}; keeping the previous log files"));
        }
        for listener in listeners.iter().filter(|l| !before.contains(&l.address)) {
            logging::info(format_args!(
                "Listening at: {} ({})",
                listener.url_for(config.tls_for(&listener.address)),
                self.pid
            ));
        }
        self.listeners = listeners;
        self.tls = tls;
        if !self.held {
            self.desired = config.workers;
        }
        self.config = config;
        self.generation += 1;
        self.size_worker_sockets(true);
        logging::info(format_args!(
            "Reloading: starting generation {} with {} workers",
            self.generation, self.desired
        ));
        self.reload_pending = true;
        Ok(())
    }

    /// USR2: start a new master from the binary on disk with our listening sockets; this one
    /// keeps serving. The pidfile becomes `PIDFILE.oldbin` (nginx's convention).
    pub(super) fn upgrade(&mut self) {
        if let Some(pid) = self.upgrade_child {
            logging::warning(format_args!(
                "Handling signal: usr2: an upgrade is already running (new master pid:{pid}); ignored"
            ));
            return;
        }
        let oldbin = self.config.pidfile.as_ref().map(|p| {
            let mut name = p.clone().into_os_string();
            name.push(".oldbin");
            PathBuf::from(name)
        });
        if let (Some(current), Some(oldbin)) = (&self.pidfile, &oldbin) {
            if let Err(e) = std::fs::rename(current, oldbin) {
                logging::warning(format_args!(
                    "usr2: cannot rename {} to {}: {e}",
                    current.display(),
                    oldbin.display()
                ));
            } else {
                self.pidfile = Some(oldbin.clone());
            }
        }
        match upgrade::spawn_new_master(&self.listeners, self.worker_sockets.as_ref()) {
            Ok(pid) => {
                logging::info(format_args!(
                    "Handling signal: usr2: started a new master (pid:{pid}) with the listening sockets; \
                     retire this one with WINCH then TERM, or roll back with HUP here and TERM there"
                ));
                self.upgrade_child = Some(pid);
                self.handed_over = true;
            }
            Err(e) => {
                logging::error(format_args!("usr2: upgrade failed: {e}"));
                self.restore_pidfile();
            }
        }
    }

    /// The new master is gone: this master is the only one again.
    pub(super) fn upgrade_ended(&mut self, pid: Pid, code: Option<i32>, signal: Option<Signal>) {
        logging::error(format_args!(
            "New master (pid:{pid}) exited ({}); this master (pid:{}) stays in charge",
            describe(code, signal),
            self.pid
        ));
        self.upgrade_child = None;
        self.handed_over = false;
        self.restore_pidfile();
    }

    /// Moves `PIDFILE.oldbin` back to `PIDFILE`.
    pub(super) fn restore_pidfile(&mut self) {
        if let (Some(current), Some(path)) = (&self.pidfile, &self.config.pidfile) {
            if current != path {
                let _ = std::fs::rename(current, path);
                self.pidfile = Some(path.clone());
            }
        }
    }
}

/// The listeners for `config`: unchanged addresses keep their open socket (taken out of
/// `current`), new ones are bound. On error nothing is taken.
pub(super) fn rebind(
    current: &mut Vec<Listener>,
    config: &Config,
) -> Result<Vec<Listener>, String> {
    let mut fresh = Vec::new();
    for address in &config.bind {
        if !current.iter().any(|l| &l.address == address) {
            fresh.push(listeners::bind_listener(address, config.listen_options())?);
        }
    }
    for kept in current.iter().filter(|l| config.bind.contains(&l.address)) {
        listeners::defer_accept_on(kept, config.defer_accept)?;
    }
    let mut out = Vec::new();
    for address in &config.bind {
        if let Some(i) = current.iter().position(|l| &l.address == address) {
            out.push(current.remove(i));
        } else if let Some(i) = fresh.iter().position(|l| &l.address == address) {
            out.push(fresh.remove(i));
        }
    }
    Ok(out)
}
