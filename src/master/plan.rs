//! The master's pure decisions: where a worker is in its life ([`WorkerState`]), and what
//! to do about the workers ([`plan`]): which to spawn, retire or kill so that the wanted
//! workers of the current generation serve. No system call in here: the master's event loop
//! builds the views, calls [`plan`] and carries out its [`Action`]s.

use nix::unistd::Pid;
use std::time::Instant;

/// Where a worker is in its life, as the master sees it. Every transition is one of the
/// methods below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WorkerState {
    /// Forked; not ready yet.
    Booting,
    /// Serving.
    Ready,
    /// Serving, and asked to be replaced (max_requests, request_timeout): a new one is
    /// started and this one retired once the new one is ready, like a worker of an old
    /// generation.
    Leaving,
    /// Told to stop (TERM) or killed: SIGKILL once `deadline` passes. `booted`: it had
    /// reported ready.
    Stopping {
        /// When it is killed if still alive.
        deadline: Instant,
        /// It reported ready before.
        booted: bool,
    },
}

impl WorkerState {
    /// It reported ready (now or before it was told to stop).
    pub(super) fn booted(self) -> bool {
        matches!(
            self,
            WorkerState::Ready | WorkerState::Leaving | WorkerState::Stopping { booted: true, .. }
        )
    }

    /// The kill deadline of a stopping worker.
    pub(super) fn deadline(self) -> Option<Instant> {
        match self {
            WorkerState::Stopping { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// After a `Ready` report.
    pub(super) fn reported_ready(self) -> WorkerState {
        match self {
            WorkerState::Booting => WorkerState::Ready,
            WorkerState::Stopping { deadline, .. } => WorkerState::Stopping {
                deadline,
                booted: true,
            },
            other => other,
        }
    }

    /// After a `ReplaceMe` report (only a serving worker can ask).
    pub(super) fn asked_replacement(self) -> WorkerState {
        match self {
            WorkerState::Ready => WorkerState::Leaving,
            other => other,
        }
    }

    /// Told to stop, or killed, with SIGKILL due at `deadline`.
    pub(super) fn stopping(self, deadline: Instant) -> WorkerState {
        WorkerState::Stopping {
            deadline,
            booted: self.booted(),
        }
    }
}

/// `show workers`' name for a state.
pub(super) fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Booting => "booting",
        WorkerState::Ready => "ready",
        WorkerState::Leaving => "leaving",
        WorkerState::Stopping { .. } => "stopping",
    }
}

/// A worker as [`plan`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WorkerView {
    pub(super) pid: Pid,
    pub(super) generation: u64,
    /// Its number in its generation ([`Worker::number`]).
    pub(super) number: usize,
    /// It reported ready.
    pub(super) ready: bool,
    /// It was told to stop (or killed); it no longer counts.
    pub(super) retiring: bool,
    /// It asked to be replaced (max_requests, request_timeout).
    pub(super) leaving: bool,
    /// Its graceful stop (or the master's) is past its deadline.
    pub(super) overdue: bool,
    /// It has not reported for `timeout` (and is not stopping).
    pub(super) silent: bool,
}

/// What the master wants: `workers` workers of `generation`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wanted {
    pub(super) generation: u64,
    pub(super) workers: usize,
    /// The crash-loop backoff allows a spawn now.
    pub(super) may_spawn: bool,
    /// A reload waits to be announced complete.
    pub(super) reload_pending: bool,
    /// The master is stopping: no spawn, no retirement, only kills.
    pub(super) stopping: bool,
}

/// Why [`plan`] kills a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kill {
    /// Still running past its graceful stop's deadline (graceful_timeout).
    Overdue,
    /// No heartbeat for `timeout` seconds (gunicorn's WORKER TIMEOUT).
    Silent,
}

/// One step the master takes to match [`Wanted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Fork a worker of the current generation.
    Spawn,
    /// Stop this worker gracefully (TERM, SIGKILL after graceful_timeout).
    Retire(Pid),
    /// SIGKILL this worker now.
    Kill(Pid, Kill),
    /// The new generation serves with this many ready workers, and no old worker is left
    /// beyond those still needed: tell systemd and the log.
    ReloadComplete {
        /// Ready workers of the new generation.
        ready: usize,
    },
}

/// The reconcile rules, without system calls: kill workers past their graceful stop or
/// silent past `timeout` (gunicorn's murder_workers); unless the master is stopping, spawn
/// current-generation workers up to the count (when the backoff allows); retire the surplus
/// current workers with the highest numbers (TTOU: the numbers left are 0..workers, so with
/// `reuseport` every socket kept has a worker); retire old-generation and leaving workers
/// only as current ones are ready to take their place (reload, recycling: no connection is
/// refused meanwhile).
pub(super) fn plan(workers: &[WorkerView], wanted: &Wanted) -> Vec<Action> {
    let mut actions: Vec<Action> = workers
        .iter()
        .filter_map(|w| match (w.overdue, w.silent) {
            (true, _) => Some(Action::Kill(w.pid, Kill::Overdue)),
            (false, true) => Some(Action::Kill(w.pid, Kill::Silent)),
            _ => None,
        })
        .collect();
    if wanted.stopping {
        return actions;
    }
    let killed = |w: &&WorkerView| w.overdue || w.silent;
    let active = workers.iter().filter(|w| !w.retiring && !killed(w));
    let (current, old): (Vec<&WorkerView>, Vec<&WorkerView>) =
        active.partition(|w| w.generation == wanted.generation && !w.leaving);
    let ready = current.iter().filter(|w| w.ready).count();
    if current.len() < wanted.workers && wanted.may_spawn {
        actions.extend((current.len()..wanted.workers).map(|_| Action::Spawn));
    }
    let surplus = current.len().saturating_sub(wanted.workers);
    let mut by_number = current.clone();
    by_number.sort_by_key(|w| std::cmp::Reverse((w.number, w.pid)));
    actions.extend(
        by_number
            .iter()
            .take(surplus)
            .map(|w| Action::Retire(w.pid)),
    );
    let keep_old = wanted.workers.saturating_sub(ready);
    let retire_old = old.len().saturating_sub(keep_old);
    actions.extend(old.iter().take(retire_old).map(|w| Action::Retire(w.pid)));
    if wanted.reload_pending && ready >= wanted.workers && old.len() <= keep_old {
        actions.push(Action::ReloadComplete { ready });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(pid: i32, generation: u64, ready: bool) -> WorkerView {
        WorkerView {
            pid: Pid::from_raw(pid),
            generation,
            number: pid as usize,
            ready,
            retiring: false,
            leaving: false,
            overdue: false,
            silent: false,
        }
    }

    fn wanted(generation: u64, workers: usize) -> Wanted {
        Wanted {
            generation,
            workers,
            may_spawn: true,
            reload_pending: false,
            stopping: false,
        }
    }

    #[test]
    fn silent_and_overdue_workers_are_killed_and_replaced() {
        let silent = WorkerView {
            silent: true,
            ..worker(10, 1, true)
        };
        let overdue = WorkerView {
            retiring: true,
            overdue: true,
            ..worker(11, 1, true)
        };
        let actions = plan(&[silent, overdue, worker(12, 1, true)], &wanted(1, 2));
        assert_eq!(
            actions[..2],
            [
                Action::Kill(Pid::from_raw(10), Kill::Silent),
                Action::Kill(Pid::from_raw(11), Kill::Overdue)
            ]
        );
        // The silent one no longer counts: a replacement starts at once.
        assert_eq!(spawns(&actions), 1);
        // While the master stops, only the kills.
        let stopping = Wanted {
            stopping: true,
            ..wanted(1, 3)
        };
        assert_eq!(
            plan(&[silent, worker(12, 1, true)], &stopping),
            vec![Action::Kill(Pid::from_raw(10), Kill::Silent)]
        );
        assert!(plan(&[worker(12, 1, true)], &stopping).is_empty());
    }

    fn retired(actions: &[Action]) -> Vec<i32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Retire(pid) => Some(pid.as_raw()),
                _ => None,
            })
            .collect()
    }

    fn spawns(actions: &[Action]) -> usize {
        actions.iter().filter(|a| **a == Action::Spawn).count()
    }

    #[test]
    fn start_and_backoff() {
        assert_eq!(spawns(&plan(&[], &wanted(1, 3))), 3);
        let backing_off = Wanted {
            may_spawn: false,
            ..wanted(1, 3)
        };
        assert!(
            plan(&[worker(10, 1, true)], &backing_off).is_empty(),
            "no spawn while backing off"
        );
        assert!(plan(&[worker(10, 1, true), worker(11, 1, false)], &wanted(1, 2)).is_empty());
    }

    #[test]
    fn ttin_and_ttou() {
        let two = [worker(10, 1, true), worker(11, 1, true)];
        assert_eq!(spawns(&plan(&two, &wanted(1, 3))), 1);
        assert_eq!(
            retired(&plan(&two, &wanted(1, 1))),
            vec![11],
            "the newest goes"
        );
    }

    #[test]
    fn reload_retires_old_workers_only_as_new_ones_are_ready() {
        let reload = Wanted {
            reload_pending: true,
            ..wanted(2, 2)
        };
        let old = [worker(10, 1, true), worker(11, 1, true)];
        let actions = plan(&old, &reload);
        assert_eq!(spawns(&actions), 2);
        assert!(
            retired(&actions).is_empty(),
            "nothing retired before a new worker is ready"
        );
        let one_ready = [old[0], old[1], worker(20, 2, true), worker(21, 2, false)];
        let actions = plan(&one_ready, &reload);
        assert_eq!(
            retired(&actions),
            vec![10],
            "one old worker per ready new one"
        );
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::ReloadComplete { .. })));
        let all_ready = [
            worker(20, 2, true),
            worker(21, 2, true),
            WorkerView {
                retiring: true,
                ..old[0]
            },
            old[1],
        ];
        let actions = plan(&all_ready, &reload);
        assert_eq!(retired(&actions), vec![11]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::ReloadComplete { .. })),
            "complete once no old worker is still serving"
        );
        let done = [
            all_ready[0],
            all_ready[1],
            all_ready[2],
            WorkerView {
                retiring: true,
                ..old[1]
            },
        ];
        assert_eq!(
            plan(&done, &reload),
            vec![Action::ReloadComplete { ready: 2 }]
        );
    }

    #[test]
    fn a_leaving_worker_is_replaced_before_it_is_retired() {
        let leaving = WorkerView {
            leaving: true,
            ..worker(10, 1, true)
        };
        let actions = plan(&[leaving, worker(11, 1, true)], &wanted(1, 2));
        assert_eq!(spawns(&actions), 1);
        assert!(
            retired(&actions).is_empty(),
            "kept until its replacement is ready"
        );
        let actions = plan(
            &[leaving, worker(11, 1, true), worker(12, 1, true)],
            &wanted(1, 2),
        );
        assert_eq!(retired(&actions), vec![10]);
        assert_eq!(spawns(&actions), 0);
    }

    #[test]
    fn worker_state_transitions() {
        let now = Instant::now();
        let booting = WorkerState::Booting;
        assert!(!booting.booted());
        assert_eq!(
            booting.asked_replacement(),
            booting,
            "only a serving worker can ask"
        );
        let ready = booting.reported_ready();
        assert_eq!(ready, WorkerState::Ready);
        assert_eq!(ready.asked_replacement(), WorkerState::Leaving);
        let stopping = WorkerState::Leaving.stopping(now);
        assert_eq!(
            stopping,
            WorkerState::Stopping {
                deadline: now,
                booted: true
            }
        );
        assert_eq!(stopping.deadline(), Some(now));
        // Told to stop while booting, then ready: it has booted (no boot failure when it exits).
        let late = booting.stopping(now).reported_ready();
        assert!(late.booted() && late.deadline() == Some(now));
    }
}
