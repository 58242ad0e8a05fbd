//! Spreading connections over the workers that share a listener.
//!
//! A listener is in every worker's epoll set with EPOLLEXCLUSIVE: a new connection wakes the
//! first worker in the listener's wait queue that has a thread waiting, so one worker would
//! take nearly every connection (3000 idle connections all in one worker; with a blocking
//! app, one worker's threads all busy while another's idle). And the listener is
//! level-triggered: a worker that was told of a connection sees the listener again after
//! each accept while connections wait, so a burst queued at once (a client opening 64
//! connections) goes mostly to one worker. Two measures, both against the least loaded
//! other worker on the scoreboard ([`crate::scoreboard::Others`]):
//!
//! - **yield** ([`yield_listener`]): a worker that accepted while over its share re-registers
//!   the listener, which puts it at the back of the wait queue: the next connections wake
//!   the other workers first.
//! - **park** ([`park`], [`unpark`]): a worker over its share that is told of a connection
//!   while another worker has a thread to spare accepts none; it takes the shared listeners
//!   out of its epoll set until it is within its share again or [`PARK_MAX`] passed, so the
//!   connections already queued go to the others (they saw them too, or see them at their
//!   next wait).

use super::{accept_paused, listener_event, millis, Shared};
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A worker is over its share when it holds more connections than the least loaded other
/// worker plus this many, or plus an eighth of that worker's, whichever is more.
const BALANCE_SLACK: u32 = 2;
/// Longest a worker leaves its listeners out of its epoll set after parking them (checked by
/// its leading thread before each wait and by its main thread each tick).
const PARK_MAX: Duration = Duration::from_millis(10);

/// This worker holds more connections than the least loaded other worker plus a slack
/// ([`BALANCE_SLACK`], or an eighth of that worker's connections).
pub(super) fn overloaded(shared: &Shared) -> bool {
    over_share(shared).is_some()
}

/// `Some(spare)` when this worker is over its share; `spare`: another worker has a thread
/// outside the app.
fn over_share(shared: &Shared) -> Option<bool> {
    let place = shared.ctx.place.as_ref()?;
    let others = place.others();
    if others.workers == 0 {
        return None;
    }
    let fewest = others.fewest_connections;
    let mine = shared.open.load(Ordering::Acquire) as u32;
    (mine > fewest.saturating_add(BALANCE_SLACK.max(fewest / 8))).then_some(others.spare_thread)
}

fn stopping(shared: &Shared) -> bool {
    shared.ctx.stopping.load(Ordering::Acquire)
}

/// The listeners other workers accept from too (not `reuseport` sockets of this worker's
/// own), with their index.
fn shared_listeners(shared: &Shared) -> impl Iterator<Item = (usize, BorrowedFd<'_>)> {
    shared
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.own)
        // SAFETY: the listener descriptors stay open for the whole life of the worker (a
        // closed one is replaced by /dev/null, see `close_listeners`).
        .map(|(i, l)| (i, unsafe { BorrowedFd::borrow_raw(l.fd) }))
}

/// After an accept on listener number `listener`: a worker over its share re-registers the
/// listener, which puts it at the back of the queue of waiting workers.
pub(super) fn yield_listener(shared: &Shared, listener: usize) {
    if over_share(shared).is_none() || stopping(shared) || accept_paused(shared) {
        return;
    }
    let Some((_, fd)) = shared_listeners(shared).find(|&(i, _)| i == listener) else {
        // Its own socket (`reuseport`): nobody else takes from its queue.
        return;
    };
    if shared.epoll.delete(fd).is_ok() {
        // Re-adding reports connections already queued, so none is left without a wakeup.
        let _ = shared.epoll.add(fd, listener_event(listener));
        if stopping(shared) {
            // stop_accepting ran between the two calls: undo the re-registration.
            let _ = shared.epoll.delete(fd);
        }
    }
}

/// Told of a connection on listener number `listener`: true when this worker leaves it to
/// the others (it is over its share and another worker has a thread to spare), with its
/// shared listeners out of its epoll set until [`unpark`] puts them back.
pub(super) fn park(shared: &Shared, listener: usize) -> bool {
    if stopping(shared) || accept_paused(shared) {
        return false;
    }
    if shared.listeners.get(listener).is_none_or(|l| l.own) || over_share(shared) != Some(true) {
        return false;
    }
    let parked_at = millis(shared) + 1;
    if shared
        .parked_at
        .compare_exchange(0, parked_at, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        for (_, fd) in shared_listeners(shared) {
            let _ = shared.epoll.delete(fd);
        }
    }
    true
}

/// Puts parked listeners back once this worker is within its share or [`PARK_MAX`] passed;
/// re-adding reports connections still queued. A stopping worker keeps them out
/// (`stop_accepting`), a paused one gets them back when the pause ends (`resume_accepting`).
pub(super) fn unpark(shared: &Shared) {
    let parked_at = shared.parked_at.load(Ordering::Acquire);
    if parked_at == 0 {
        return;
    }
    let waited = millis(shared).saturating_sub(parked_at - 1);
    if waited < PARK_MAX.as_millis() as u64 && overloaded(shared) {
        return;
    }
    if shared
        .parked_at
        .compare_exchange(parked_at, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
        || stopping(shared)
        || accept_paused(shared)
    {
        return;
    }
    for (index, fd) in shared_listeners(shared) {
        let _ = shared.epoll.add(fd, listener_event(index));
        if stopping(shared) {
            let _ = shared.epoll.delete(fd);
        }
    }
}
