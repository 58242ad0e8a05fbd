//! A worker's thread pool, leader/followers style (Schmidt et al., "Leader/Followers"), with
//! Go's hand-off of a processor from a thread blocked in a system call:
//!
//! - one thread at a time (the leader) waits in epoll_wait; it takes a batch of events,
//!   queues all but the first, gives up the lead and serves the first, then the queued ones,
//!   then leads again. With an app that never blocks, one thread does all the work and no
//!   request wakes a sleeping thread (the cost that made `threads: 4` slower than
//!   `threads: 1`);
//! - at most one thread runs outside the app: the others (followers) sleep on a condition
//!   variable, and one that finds another thread running goes back to sleep;
//! - a thread about to call an app whose calls take [`SLOW_CALL`] or more on average (a
//!   blocking app: a database, a remote call) counts itself as blocked and wakes a follower
//!   to take the next event or the lead, so the app gets as many threads as it has requests;
//! - a monitor thread looks every [`TICK`] to [`MAX_TICK`] at the threads inside the app: one
//!   in the same call for [`BLOCKED_AFTER`] ms or more, and asleep in the kernel, counts as
//!   blocked, and when every awake thread is blocked while events wait or nobody leads, a
//!   follower is woken. This catches an app that blocks now and then.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the monitor looks at the threads right after it found one blocked; the interval
/// doubles after each look that finds none, up to [`MAX_TICK`] (Go's sysmon backs off the
/// same way), so a busy worker whose app does not block pays about 125 wakeups a second.
pub const TICK: Duration = Duration::from_millis(1);
/// The longest interval between the monitor's looks while app calls are made.
pub const MAX_TICK: Duration = Duration::from_millis(8);
/// A thread in one app call for this long (milliseconds, as `busy` counts them) is blocked.
pub const BLOCKED_AFTER: u64 = 2;
/// Longest a follower sleeps before it looks for work on its own.
const FOLLOWER_NAP: Duration = Duration::from_millis(500);
/// Longest the monitor sleeps while no thread is in the app.
const MONITOR_NAP: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The epoll data word of an event waiting to be served.
pub type Token = u64;

/// One waiting event: its data word and its readiness bits (`EPOLLIN`…, as epoll gave them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The epoll data word.
    pub token: Token,
    /// The epoll event bits.
    pub events: i32,
}

/// What a thread should do next (see [`Pool::next`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// Serve this queued event.
    Serve(Ready),
    /// Lead: wait in epoll, then [`Pool::led`].
    Lead,
    /// Nothing to do now (a follower's nap ended): ask again.
    Nothing,
}

/// One serving thread's app-call state.
#[derive(Debug, Default)]
struct Seat {
    /// When its current app call started, in milliseconds since the pool's epoch plus one;
    /// 0 while the thread is not in the app.
    busy: AtomicU64,
    /// The thread counts as blocked (it is in the app and not among the running threads).
    blocked: AtomicBool,
    /// The thread's kernel id (gettid(2)), once it started; 0 before.
    tid: AtomicU32,
}

/// The shared state of a worker's serving threads.
pub struct Pool {
    queue: Mutex<VecDeque<Ready>>,
    followers: Condvar,
    /// Threads asleep on `followers`.
    asleep: AtomicUsize,
    /// Threads awake and not blocked in the app (the leader among them).
    running: AtomicUsize,
    /// A thread leads (is in, or about to enter, epoll_wait).
    leading: AtomicBool,
    seats: Box<[Seat]>,
    /// Threads inside the app now.
    in_app: AtomicUsize,
    /// App calls made (the monitor sleeps when it stops moving).
    calls: AtomicU64,
    /// The share of recent app calls that took [`SLOW_CALL`] or more, in 1/1024ths (a
    /// moving average of weight 1/16: one call slowed by preemption does not make the app
    /// slow, most calls being slow does).
    slow_share: AtomicU64,
    monitor_asleep: AtomicBool,
    monitor_lock: Mutex<()>,
    monitor_wake: Condvar,
    epoch: Instant,
}

/// An app call this long is slow; an app with a quarter of its calls slow
/// ([`SLOW_SHARE`]) blocks: a thread calling it hands the event loop to a follower first.
pub const SLOW_CALL: Duration = Duration::from_micros(200);
/// See [`SLOW_CALL`] (in 1/1024ths).
const SLOW_SHARE: u64 = 256;
/// Looks without an app call after which the monitor sleeps until the next call.
const MONITOR_IDLE_TICKS: u32 = 25;

impl Pool {
    /// A pool of `threads` threads, timing app calls from `epoch`.
    pub fn new(threads: usize, epoch: Instant) -> Pool {
        Pool {
            queue: Mutex::new(VecDeque::with_capacity(64)),
            followers: Condvar::new(),
            asleep: AtomicUsize::new(0),
            running: AtomicUsize::new(threads),
            leading: AtomicBool::new(false),
            seats: (0..threads).map(|_| Seat::default()).collect(),
            in_app: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            slow_share: AtomicU64::new(0),
            monitor_asleep: AtomicBool::new(false),
            monitor_lock: Mutex::new(()),
            monitor_wake: Condvar::new(),
            epoch,
        }
    }

    /// Called by serving thread `thread` when it starts: records its kernel id, so that the
    /// monitor can tell a thread blocked in the app from one that was preempted there.
    pub fn started(&self, thread: usize) {
        if let Some(seat) = self.seats.get(thread) {
            // SAFETY: gettid(2) has no preconditions.
            let tid = unsafe { libc::gettid() };
            seat.tid.store(tid as u32, Ordering::Relaxed);
        }
    }

    /// Serving threads in the pool.
    pub fn threads(&self) -> usize {
        self.seats.len()
    }

    /// What the calling thread does next: when no other thread is running, a queued event,
    /// else the lead if nobody has it; otherwise it sleeps as a follower (at most
    /// [`FOLLOWER_NAP`]) and returns [`Work::Nothing`].
    pub fn next(&self) -> Work {
        let mut queue = lock(&self.queue);
        if self.running.load(Ordering::SeqCst) <= 1 || self.slow() {
            if let Some(ready) = queue.pop_front() {
                return Work::Serve(ready);
            }
            if !self.leading.swap(true, Ordering::AcqRel) {
                return Work::Lead;
            }
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.asleep.fetch_add(1, Ordering::SeqCst);
        let (guard, _) = self
            .followers
            .wait_timeout(queue, FOLLOWER_NAP)
            .unwrap_or_else(|e| e.into_inner());
        self.asleep.fetch_sub(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        drop(guard);
        Work::Nothing
    }

    /// The leader's epoll_wait returned `events`: all but the first are queued, the lead is
    /// given up (after queueing, so that the next leader sees them first), and the first is
    /// returned for the leader to serve.
    pub fn led(&self, events: impl Iterator<Item = Ready>) -> Option<Ready> {
        let mut events = events;
        let first = events.next();
        let queued = {
            let mut queue = lock(&self.queue);
            queue.extend(events);
            queue.len()
        };
        self.leading.store(false, Ordering::Release);
        if queued > 0 && self.slow() {
            // Each queued event will run in a blocking app: wake a follower for each now,
            // rather than one after the other as each thread enters the app.
            for _ in 0..queued.min(self.asleep.load(Ordering::SeqCst)) {
                self.followers.notify_one();
            }
        }
        first
    }

    /// The app blocks: most recent calls took [`SLOW_CALL`] or more.
    pub fn slow(&self) -> bool {
        self.threads() > 1 && self.slow_share.load(Ordering::Relaxed) >= SLOW_SHARE
    }

    /// Queues one event (a connection whose event arrived while the timer thread held it).
    pub fn push(&self, ready: Ready) {
        lock(&self.queue).push_back(ready);
        if self.running.load(Ordering::SeqCst) == 0 {
            self.followers.notify_one();
        }
    }

    /// Counts thread `thread` as blocked; true if it was running.
    fn block(&self, thread: usize) -> bool {
        let Some(seat) = self.seats.get(thread) else {
            return false;
        };
        let was = !seat.blocked.swap(true, Ordering::SeqCst);
        if was {
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
        was
    }

    /// A follower takes the next event or the lead if no thread runs and there is one to
    /// take.
    fn hand_off(&self) {
        if self.asleep.load(Ordering::SeqCst) == 0
            || (self.running.load(Ordering::SeqCst) > 0 && !self.slow())
        {
            return;
        }
        let work = !lock(&self.queue).is_empty() || !self.leading.load(Ordering::Acquire);
        if work {
            self.followers.notify_one();
        }
    }

    /// Thread `thread` enters the app (`now` its reading of the clock). When the app's
    /// calls are slow ([`SLOW_CALL`]) the thread counts itself blocked and hands off.
    pub fn enter_app(&self, thread: usize, now: Instant) {
        if let Some(seat) = self.seats.get(thread) {
            seat.busy.store(
                now.saturating_duration_since(self.epoch).as_millis() as u64 + 1,
                Ordering::Release,
            );
        }
        self.in_app.fetch_add(1, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.monitor_asleep.load(Ordering::SeqCst) {
            let _guard = lock(&self.monitor_lock);
            self.monitor_wake.notify_one();
        }
        if self.slow() {
            self.block(thread);
            self.hand_off();
        }
    }

    /// Whether app calls should also be watched for blocking ([`voluntary_switches`] before
    /// and after): while any recent call was slow (the share decays to zero about a hundred
    /// fast calls after the last slow one). A fast app pays nothing for it.
    pub fn watches_blocking(&self) -> bool {
        self.slow_share.load(Ordering::Relaxed) > 0
    }

    /// Thread `thread` left the app after a call of `took`; `slept`: whether the thread
    /// blocked during it, when watched ([`Pool::watches_blocking`]). A call counts as slow
    /// (blocking) when it took [`SLOW_CALL`] or more and, if watched, the thread blocked: a
    /// call that only computed (or was preempted) is not one that waits, and more threads
    /// would only wait beside it (a CPU-bound Python app: for the GIL).
    pub fn leave_app(&self, thread: usize, took: Duration, slept: Option<bool>) {
        if let Some(seat) = self.seats.get(thread) {
            seat.busy.store(0, Ordering::Release);
            if seat.blocked.swap(false, Ordering::SeqCst) {
                self.running.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.in_app.fetch_sub(1, Ordering::SeqCst);
        let slow = if took >= SLOW_CALL && slept.unwrap_or(true) {
            1024
        } else {
            0
        };
        let share = self.slow_share.load(Ordering::Relaxed);
        self.slow_share
            .store(share - share.div_ceil(16) + slow / 16, Ordering::Relaxed);
    }

    /// Threads inside the app now.
    pub fn in_app(&self) -> usize {
        self.in_app.load(Ordering::Relaxed)
    }

    /// How long thread `i` has been in the app, if it is.
    pub fn busy_for(&self, i: usize, now: Instant) -> Option<Duration> {
        let started = self.seats.get(i)?.busy.load(Ordering::Acquire);
        (started > 0)
            .then(|| now.saturating_duration_since(self.epoch + Duration::from_millis(started - 1)))
    }

    /// One look of the monitor at `now`: threads in one app call for [`BLOCKED_AFTER`] ms
    /// or more count as blocked, unless the kernel says they are runnable (preempted, not
    /// blocked: another thread would only compete with them for the CPU); then, if none
    /// runs, a follower is handed the work.
    /// Returns whether it found a thread newly blocked (a thread computing, or preempted, in
    /// a long call does not make the monitor look more often).
    fn check(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let mut blocked = false;
        for (i, seat) in self.seats.iter().enumerate() {
            let started = seat.busy.load(Ordering::Acquire);
            if started == 0 || now_ms.saturating_sub(started) < BLOCKED_AFTER {
                continue;
            }
            if !seat.blocked.load(Ordering::Relaxed) && !runnable(seat.tid.load(Ordering::Relaxed))
            {
                self.block(i);
                blocked = true;
            }
        }
        self.hand_off();
        blocked
    }

    /// The monitor thread's loop (never returns): see the module's description.
    pub fn monitor(&self) {
        let mut idle_ticks = 0;
        let mut last_calls = 0;
        let mut interval = TICK;
        loop {
            if idle_ticks >= MONITOR_IDLE_TICKS {
                let guard = lock(&self.monitor_lock);
                self.monitor_asleep.store(true, Ordering::SeqCst);
                if self.in_app.load(Ordering::SeqCst) == 0 {
                    let _ = self.monitor_wake.wait_timeout(guard, MONITOR_NAP);
                }
                self.monitor_asleep.store(false, Ordering::SeqCst);
                let calls = self.calls.load(Ordering::Relaxed);
                if calls == last_calls && self.in_app.load(Ordering::SeqCst) == 0 {
                    // The nap ran out with no app call since: nap again, without ticking.
                    continue;
                }
                idle_ticks = 0;
                interval = TICK;
            }
            std::thread::sleep(interval);
            let calls = self.calls.load(Ordering::Relaxed);
            if calls == last_calls && self.in_app.load(Ordering::SeqCst) == 0 {
                idle_ticks += 1;
            } else {
                idle_ticks = 0;
            }
            last_calls = calls;
            interval = match self.check(Instant::now()) {
                true => TICK,
                false => (interval * 2).min(MAX_TICK),
            };
        }
    }
}

/// How many times the calling thread has given up the CPU voluntarily (blocked: I/O, a
/// sleep, a lock; not preempted): `ru_nvcsw` of getrusage(2) RUSAGE_THREAD; 0 if unknown.
pub fn voluntary_switches() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct; getrusage writes
    // into it.
    let (done, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_THREAD, &mut usage), usage)
    };
    if done != 0 {
        return 0;
    }
    u64::try_from(usage.ru_nvcsw).unwrap_or(0)
}

/// Whether thread `tid` of this process is running or runnable (state `R` in
/// `/proc/self/task/TID/stat`, proc(5)); false if unknown.
fn runnable(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold any byte.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    stat.get(close + 2) == Some(&b'R')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(token: u64) -> Ready {
        Ready { token, events: 1 }
    }

    #[test]
    fn one_leader_then_the_queue() {
        let pool = Pool::new(4, Instant::now());
        // The other three threads asleep: this one runs alone.
        pool.running.store(1, Ordering::SeqCst);
        assert_eq!(pool.next(), Work::Lead);
        let first = pool.led([1, 2, 3].into_iter().map(ready));
        assert_eq!(first, Some(ready(1)));
        assert_eq!(pool.next(), Work::Serve(ready(2)));
        assert_eq!(pool.next(), Work::Serve(ready(3)));
        assert_eq!(pool.next(), Work::Lead);
    }

    #[test]
    fn a_thread_blocked_in_the_app_is_handed_off() {
        let epoch = Instant::now();
        let pool = Pool::new(2, epoch);
        // Thread 0 leads, queues one event and serves the other in the app; thread 1 sleeps.
        pool.running.store(1, Ordering::SeqCst);
        pool.asleep.store(1, Ordering::SeqCst);
        assert_eq!(pool.next(), Work::Lead);
        pool.led([1, 2].into_iter().map(ready));
        pool.enter_app(0, epoch);
        // In the app for a moment: still running.
        pool.check(epoch + Duration::from_micros(500));
        assert_eq!(pool.running.load(Ordering::SeqCst), 1);
        // In the same call 3 ms later: blocked.
        pool.check(epoch + Duration::from_millis(3));
        assert_eq!(pool.running.load(Ordering::SeqCst), 0);
        pool.leave_app(0, Duration::from_millis(3), None);
        assert_eq!(pool.running.load(Ordering::SeqCst), 1);
        // One slow call does not make the app slow; a run of them does: then each call
        // hands off at once.
        assert!(pool.slow_share.load(Ordering::Relaxed) < SLOW_SHARE);
        for _ in 0..5 {
            pool.enter_app(0, epoch);
            pool.leave_app(0, Duration::from_millis(3), None);
        }
        assert!(pool.slow_share.load(Ordering::Relaxed) >= SLOW_SHARE);
        pool.enter_app(0, epoch);
        assert_eq!(pool.running.load(Ordering::SeqCst), 0);
        pool.leave_app(0, Duration::from_millis(3), None);
    }

    #[test]
    fn calls_that_never_block_do_not_make_the_app_blocking() {
        let epoch = Instant::now();
        let pool = Pool::new(4, epoch);
        let call = Duration::from_millis(3);
        // Slow calls that never blocked (a CPU-bound app, preempted or not): never slow,
        // whatever their length.
        for _ in 0..20 {
            pool.enter_app(0, epoch);
            pool.leave_app(0, call, Some(false));
        }
        assert!(!pool.slow());
        // Slow calls that blocked (a database, a sleep): the app blocks.
        for _ in 0..20 {
            pool.enter_app(0, epoch);
            pool.leave_app(0, call, Some(true));
        }
        assert!(pool.slow());
        assert!(pool.watches_blocking());
        // A fast app never has its calls timed on the CPU clock, nor does one whose slow calls
        // are over.
        assert!(!Pool::new(4, epoch).watches_blocking());
        for _ in 0..200 {
            pool.enter_app(0, epoch);
            pool.leave_app(0, Duration::from_micros(5), Some(false));
        }
        assert!(!pool.watches_blocking());
        let before = voluntary_switches();
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            voluntary_switches() > before,
            "a sleep is a voluntary switch"
        );
    }

    #[test]
    fn a_running_thread_is_runnable_and_a_sleeping_one_is_not() {
        // SAFETY: gettid(2) has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        assert!(runnable(me));
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!runnable(tid));
        sleeper.join().unwrap();
    }

    #[test]
    fn a_second_running_thread_sleeps() {
        let pool = Pool::new(2, Instant::now());
        // Both threads start awake: the first to ask sleeps (the other is running), then
        // the second finds itself alone and leads.
        let started = Instant::now();
        assert_eq!(pool.next(), Work::Nothing);
        assert!(started.elapsed() >= FOLLOWER_NAP);
        pool.running.store(1, Ordering::SeqCst);
        assert_eq!(pool.next(), Work::Lead);
    }
}
