//! The scoreboard: shared memory the master maps before it forks (Apache httpd's scoreboard),
//! one slot per worker, written by that worker with relaxed atomics and read by the master
//! and the other workers. Nothing per request beyond a few atomic adds in the worker's own
//! slot: no system call, no lock.
//!
//! Workers read each other's slots to spread connections by load (see `worker`): a worker
//! with more open connections than another moves itself to the back of the listeners' queue
//! of waiting workers, and a worker whose threads are all in the app closes a kept-alive
//! connection after its response when another worker has threads to spare.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Slots mapped by [`Scoreboard::new`] when fewer are asked for: room for TTIN to add
/// workers without a new mapping (a worker beyond the last slot runs without one).
pub const MIN_SLOTS: usize = 256;

/// Request methods counted apart; any other is counted as `OTHER`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
/// Status codes counted apart; any other is counted as `other`.
pub const STATUSES: [u16; 33] = [
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408,
    409, 410, 413, 414, 415, 422, 429, 431, 500, 501, 502, 503, 504, 505,
];
/// Statuses the server answers itself (refused requests) counted apart; others as `other`.
pub const REJECTS: [u16; 9] = [400, 408, 413, 414, 431, 501, 503, 505, 500];
/// Upper bounds (seconds) of the request-duration histogram's buckets, +Inf after them
/// (Prometheus's default buckets).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Counters in [`WorkerSlot::requests`]: one per method and status (and `other`).
pub const REQUEST_COUNTERS: usize = METHODS.len() * (STATUSES.len() + 1);

/// The index of `method` in [`METHODS`] (`OTHER` for the rest).
pub fn method_index(method: &[u8]) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| m.as_bytes() == method)
        .unwrap_or(METHODS.len() - 1)
}

/// The index of `status` in [`STATUSES`] ([`STATUSES`]`.len()` for the rest).
pub fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len())
}

/// The index of `status` in [`REJECTS`] (its length for the rest).
pub fn reject_index(status: u16) -> usize {
    REJECTS
        .iter()
        .position(|&s| s == status)
        .unwrap_or(REJECTS.len())
}

/// The request counters, duration histogram and refusals of one worker (or, in the master,
/// of the workers that exited).
#[derive(Debug)]
#[repr(C)]
pub struct Counters {
    /// Requests answered, by `method_index * (STATUSES.len() + 1) + status_index`.
    pub requests: [AtomicU64; REQUEST_COUNTERS],
    /// Requests by duration: bucket i counts those within DURATION_BUCKETS[i] (not
    /// cumulative); the last one those above them all.
    pub duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of request durations, in microseconds.
    pub duration_us: AtomicU64,
    /// Requests the server refused itself, by [`reject_index`].
    pub rejected: [AtomicU64; REJECTS.len() + 1],
    /// Bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// WebSocket messages received from clients (whole messages, handed to the app).
    pub ws_messages_in: AtomicU64,
    /// WebSocket messages the app queued for clients.
    pub ws_messages_out: AtomicU64,
}

impl Counters {
    /// Requests answered (the sum over methods and statuses).
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts one request answered with `status` after `elapsed`.
    pub fn request(&self, method: &[u8], status: u16, elapsed: std::time::Duration) {
        let index = method_index(method) * (STATUSES.len() + 1) + status_index(status);
        self.requests[index].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts one request refused by the server with `status`.
    pub fn reject(&self, status: u16) {
        self.rejected[reject_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    fn all(&self) -> impl Iterator<Item = &AtomicU64> {
        self.requests
            .iter()
            .chain(self.duration_buckets.iter())
            .chain(std::iter::once(&self.duration_us))
            .chain(self.rejected.iter())
            .chain([
                &self.bytes_in,
                &self.bytes_out,
                &self.ws_messages_in,
                &self.ws_messages_out,
            ])
    }

    /// Zeroes every counter.
    fn clear(&self) {
        self.all().for_each(|c| c.store(0, Ordering::Relaxed));
    }

    /// Adds `other`'s counts to these.
    pub fn add(&self, other: &Counters) {
        for (mine, theirs) in self.all().zip(other.all()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Zeroed counters, in ordinary memory (the master's totals, a scrape's sums).
    pub fn zeroed() -> Box<Counters> {
        // SAFETY: Counters is atomics only, for which all-zero bytes are valid values.
        unsafe { Box::new(std::mem::zeroed()) }
    }
}

/// One worker's slot. All fields are counters or gauges; 0 everywhere means a free slot.
#[derive(Debug)]
#[repr(C, align(128))]
pub struct WorkerSlot {
    /// The worker's pid; 0 when the slot is free.
    pub pid: AtomicU32,
    /// Serving threads the worker runs (`threads`).
    pub threads: AtomicU32,
    /// Connections open now (gauge).
    pub connections: AtomicU32,
    /// Threads inside the app's `handle` now (gauge).
    pub busy: AtomicU32,
    /// WebSocket connections open now (gauge; counted in `connections` too).
    pub websockets: AtomicU32,
    /// Requests by method, status and duration, and refusals.
    pub counters: Counters,
}

impl WorkerSlot {
    /// Marks the slot as worker `pid`'s with `threads` threads and zeroed counters.
    pub fn claim(&self, pid: u32, threads: u32) {
        self.threads.store(threads, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
        self.websockets.store(0, Ordering::Relaxed);
        self.counters.clear();
        self.pid.store(pid, Ordering::Release);
    }

    /// Frees the slot (the master, once the worker was reaped).
    pub fn release(&self) {
        self.pid.store(0, Ordering::Release);
        self.connections.store(0, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
        self.websockets.store(0, Ordering::Relaxed);
    }

    /// The slot is a live worker's.
    pub fn in_use(&self) -> bool {
        self.pid.load(Ordering::Acquire) != 0
    }
}

/// The board's first 128 bytes, before the slots.
#[derive(Debug, Default)]
#[repr(C, align(128))]
struct Header {
    /// One past the highest slot index ever handed out (readers look no further).
    high_water: AtomicU32,
}

/// A shared anonymous mapping of a header and [`WorkerSlot`]s, inherited by every worker forked after it
/// was made. Cloning copies the handle, not the memory; the mapping lives as long as the
/// process (it is never unmapped: workers and the master use it until they exit).
#[derive(Clone, Copy, Debug)]
pub struct Scoreboard {
    header: NonNull<Header>,
    base: NonNull<WorkerSlot>,
    len: usize,
}

// SAFETY: the slots are atomics only, shared on purpose across threads and processes.
unsafe impl Send for Scoreboard {}
// SAFETY: as above: every access goes through atomic operations.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Maps a scoreboard of at least `slots` slots ([`MIN_SLOTS`] at the least), zeroed.
    /// Errors: mmap(2)'s (ENOMEM).
    pub fn new(slots: usize) -> std::io::Result<Scoreboard> {
        let len = slots.max(MIN_SLOTS);
        let bytes = std::mem::size_of::<Header>() + len * std::mem::size_of::<WorkerSlot>();
        // SAFETY: a fresh anonymous shared mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let header = NonNull::new(ptr.cast::<Header>()).ok_or(std::io::ErrorKind::OutOfMemory)?;
        // SAFETY: the slots start right after the header, inside the mapping (its size is
        // a multiple of the slots' alignment, both 128).
        let base = unsafe { header.add(1).cast::<WorkerSlot>() };
        Ok(Scoreboard { header, base, len })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a zero-initialised header (all-zero is a valid
        // Header) and is never unmapped.
        unsafe { self.header.as_ref() }
    }

    /// The slots that have ever been handed out ([`free_slot`](Self::free_slot)).
    pub fn used(&self) -> &[WorkerSlot] {
        let high = (self.header().high_water.load(Ordering::Acquire) as usize).min(self.len);
        &self.slots()[..high]
    }

    /// All slots.
    pub fn slots(&self) -> &[WorkerSlot] {
        // SAFETY: the mapping holds `len` zero-initialised slots (all-zero is a valid
        // WorkerSlot: atomics of 0), page-aligned, and is never unmapped.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }

    /// Slot number `index`, if there is one.
    pub fn slot(&self, index: usize) -> Option<&WorkerSlot> {
        self.slots().get(index)
    }

    /// Slot number `index` as a worker's [`Place`], if there is one.
    pub fn place(&self, index: usize) -> Option<Place> {
        (index < self.len).then_some(Place {
            board: *self,
            index,
        })
    }

    /// The first slot not in `taken` and not in use, for a worker about to be forked.
    pub fn free_slot(&self, taken: impl Fn(usize) -> bool) -> Option<usize> {
        let index = (0..self.len).find(|&i| !taken(i) && !self.slots()[i].in_use())?;
        self.header()
            .high_water
            .fetch_max(index as u32 + 1, Ordering::AcqRel);
        Some(index)
    }
}

/// A worker's own place on the scoreboard: the board and its slot's index.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    /// The whole board.
    pub board: Scoreboard,
    /// This worker's slot.
    pub index: usize,
}

impl Place {
    /// This worker's slot.
    pub fn mine(&self) -> &WorkerSlot {
        &self.board.slots()[self.index]
    }

    /// The other live workers' load.
    pub fn others(&self) -> Others {
        others(&self.board, self.index)
    }
}

/// The load of the other workers, as one worker sees it on the scoreboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Others {
    /// Live workers besides this one.
    pub workers: usize,
    /// The fewest connections any of them has open.
    pub fewest_connections: u32,
    /// One of them has a thread outside the app.
    pub spare_thread: bool,
}

/// What the other live workers on `board` look like to the worker in slot `mine`.
pub fn others(board: &Scoreboard, mine: usize) -> Others {
    let mut seen = Others {
        fewest_connections: u32::MAX,
        ..Others::default()
    };
    for (i, slot) in board.used().iter().enumerate() {
        if i == mine || !slot.in_use() {
            continue;
        }
        seen.workers += 1;
        let connections = slot.connections.load(Ordering::Relaxed);
        seen.fewest_connections = seen.fewest_connections.min(connections);
        if slot.busy.load(Ordering::Relaxed) < slot.threads.load(Ordering::Relaxed) {
            seen.spare_thread = true;
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_with_a_forked_child() {
        let board = Scoreboard::new(4).unwrap();
        assert_eq!(board.slots().len(), MIN_SLOTS);
        assert!(board.slots().iter().all(|s| !s.in_use()));
        // SAFETY: the child only touches the atomics and exits at once.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                board.slot(3).unwrap().claim(4242, 16);
                board
                    .slot(3)
                    .unwrap()
                    .connections
                    .store(7, Ordering::Relaxed);
                // SAFETY: _exit is async-signal-safe and skips the test harness's atexit.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        let slot = board.slot(3).unwrap();
        assert_eq!(slot.pid.load(Ordering::Relaxed), 4242);
        assert_eq!(slot.connections.load(Ordering::Relaxed), 7);
        // The child's slot was never handed out: readers do not look that far yet.
        assert_eq!(others(&board, 0).workers, 0);
        assert_eq!(board.free_slot(|i| i < 3), Some(4));
        assert_eq!(board.used().len(), 5);
        let seen = others(&board, 0);
        assert_eq!(
            seen,
            Others {
                workers: 1,
                fewest_connections: 7,
                spare_thread: true
            }
        );
        slot.release();
        assert!(!slot.in_use());
        assert_eq!(others(&board, 0).workers, 0);
    }
}
