//! The bracket around every call into the app (a request's `handle`, the WebSocket
//! callbacks `ws_message` and `ws_close`): the request count and `max_requests`,
//! the pool's enter/leave (so that an app that blocks gets more threads, see `pool`), the
//! scoreboard's busy count (load-aware accepting, metrics), and the clock around the call.

use super::context::Context;
use crate::logging;
use crate::worker::pool::voluntary_switches;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The `thread` the worker's main thread passes where a serving thread passes its index
/// (its timers close connections): it has no seat in the pool.
pub(crate) const TIMER_THREAD: usize = usize::MAX;

/// When an app call ran.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Just after it returned.
    pub finished: Instant,
    /// How long it took (from the `started` given to [`app_call`]).
    pub took: Duration,
}

/// Counts a request and asks for a replacement once max_requests is reached.
pub(crate) fn count_request(ctx: &Context) {
    let count = ctx.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if ctx.max_requests > 0
        && count >= ctx.max_requests
        && !ctx.retiring.swap(true, Ordering::AcqRel)
    {
        // The master starts a replacement and stops this worker once it is ready; until then
        // this worker keeps serving (gunicorn stops at once and resets connections, #3038).
        logging::info(format_args!(
            "Autorestarting worker after {count} requests (max_requests): asking for a replacement"
        ));
    }
}

/// Runs `call` (into the app) on serving thread `thread`, started at `started`, inside the
/// bracket: the pool counts the thread in the app (and, once the app has slow calls, whether
/// the call blocked), the worker's scoreboard slot counts it busy. Returns what
/// `call` returned and when it ran.
pub(crate) fn app_call<R>(
    ctx: &Context,
    thread: usize,
    started: Instant,
    call: impl FnOnce() -> R,
) -> (R, Timing) {
    let slot = ctx.place.as_ref().map(|p| p.mine());
    let switches = ctx.pool.watches_blocking().then(voluntary_switches);
    ctx.pool.enter_app(thread, started);
    if let Some(slot) = slot {
        slot.busy.fetch_add(1, Ordering::Relaxed);
    }
    let result = call();
    let finished = Instant::now();
    let took = finished.saturating_duration_since(started);
    let slept = switches.map(|before| voluntary_switches() > before);
    ctx.pool.leave_app(thread, took, slept);
    if let Some(slot) = slot {
        slot.busy.fetch_sub(1, Ordering::Relaxed);
    }
    (result, Timing { finished, took })
}
