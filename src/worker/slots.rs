//! A worker's connection slots: one cell per open connection, in chunks allocated the first
//! time a connection needs one, so that a worker configured for 100,000 connections that
//! holds 10 costs what it costs with 10 (issue #27). A slot's index never moves: it is the
//! connection's epoll token, with the slot's generation.

use super::session::Session;
use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Cells per chunk (8 KiB of cells).
const CHUNK: usize = 256;

/// A connection's slot: the connection's session (boxed: an empty slot is a few words) and
/// its registration.
#[derive(Default)]
pub(super) struct Slot {
    /// Bumped each time the slot takes a connection: an event for an earlier one is stale.
    pub generation: u32,
    pub session: Option<Box<Session>>,
    /// The registration includes EPOLLOUT (added once a response first waited for room).
    pub watch_output: bool,
}

/// A connection's place: the connection behind its lock (held by the thread serving it, the
/// owner), the events that arrived for it, which the owner serves before it lets go, and its
/// deadline, which the timer reads without taking the lock.
pub(super) struct Cell {
    pub slot: Mutex<Slot>,
    /// PENDING_* bits of events not served yet.
    pub pending: AtomicU8,
    /// The connection's deadline in milliseconds since the worker's epoch, rounded down
    /// (`u64::MAX`: no connection), as its owner last left it.
    pub deadline: AtomicU64,
}

impl Default for Cell {
    fn default() -> Cell {
        Cell {
            slot: Mutex::default(),
            pending: AtomicU8::new(0),
            deadline: AtomicU64::new(u64::MAX),
        }
    }
}

/// Slot indexes handed out below `worker_connections`: those given back, then the never
/// used ones from `next` on.
struct Free {
    released: Vec<usize>,
    next: usize,
}

/// `worker_connections` slots, then `refusal` slots for connections past the limit.
pub(super) struct Slots {
    chunks: Box<[OnceLock<Box<[Cell; CHUNK]>>]>,
    free: Mutex<Free>,
    /// Free refusal slots (at `capacity` and above).
    refusals: Mutex<Vec<usize>>,
    capacity: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slots {
    /// Room for `capacity` connections (`worker_connections`) and `refusal` more; nothing
    /// allocated but the chunk directory (16 bytes per 256 slots).
    pub fn new(capacity: usize, refusal: usize) -> Slots {
        let total = capacity + refusal;
        Slots {
            chunks: (0..total.div_ceil(CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
            free: Mutex::new(Free {
                released: Vec::new(),
                next: 0,
            }),
            refusals: Mutex::new((capacity..total).rev().collect()),
            capacity,
        }
    }

    /// The cell at `index`, if its chunk was ever allocated.
    pub fn get(&self, index: usize) -> Option<&Cell> {
        let chunk = self.chunks.get(index / CHUNK)?.get()?;
        Some(&chunk[index % CHUNK])
    }

    /// The cell at `index`, allocating its chunk if needed. Panics if `index` is out of
    /// range (only indexes from [`Slots::take`] and [`Slots::take_refusal`] are used).
    pub fn cell(&self, index: usize) -> &Cell {
        let chunk = self.chunks[index / CHUNK]
            .get_or_init(|| Box::new(std::array::from_fn(|_| Cell::default())));
        &chunk[index % CHUNK]
    }

    /// A free slot below `worker_connections` (the most recently freed first), or `None`
    /// when as many connections are open.
    pub fn take(&self) -> Option<usize> {
        let mut free = lock(&self.free);
        if let Some(index) = free.released.pop() {
            return Some(index);
        }
        if free.next == self.capacity {
            return None;
        }
        free.next += 1;
        Some(free.next - 1)
    }

    /// A free refusal slot, if any.
    pub fn take_refusal(&self) -> Option<usize> {
        lock(&self.refusals).pop()
    }

    /// Whether `index` is a refusal slot (its connection is not counted as open).
    pub fn is_refusal(&self, index: usize) -> bool {
        index >= self.capacity
    }

    /// Gives slot `index` back to its free list.
    pub fn release(&self, index: usize) {
        match self.is_refusal(index) {
            true => lock(&self.refusals).push(index),
            false => lock(&self.free).released.push(index),
        }
    }

    /// Every allocated cell with its index.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Cell)> {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, chunk)| chunk.get().map(|cells| (c, cells)))
            .flat_map(|(c, cells)| {
                cells
                    .iter()
                    .enumerate()
                    .map(move |(i, cell)| (c * CHUNK + i, cell))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_allocated_as_connections_need_them() {
        let slots = Slots::new(100_000, 32);
        assert_eq!(slots.iter().count(), 0);
        let taken: Vec<usize> = (0..10).map(|_| slots.take().unwrap()).collect();
        for &index in &taken {
            slots.cell(index);
        }
        // One chunk for ten connections, whatever the capacity.
        assert_eq!(slots.iter().count(), CHUNK);
        assert!(slots.get(CHUNK).is_none());
        slots.release(taken[3]);
        assert_eq!(slots.take(), Some(taken[3]));
        assert_eq!(slots.take(), Some(10));
    }

    #[test]
    fn capacity_and_refusal_slots_are_bounded() {
        let slots = Slots::new(3, 2);
        let taken: Vec<_> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(taken, [0, 1, 2]);
        let refusals: Vec<_> = std::iter::from_fn(|| slots.take_refusal()).collect();
        assert_eq!(refusals, [3, 4]);
        assert!(slots.is_refusal(3) && !slots.is_refusal(2));
        slots.release(4);
        slots.release(1);
        assert_eq!((slots.take(), slots.take_refusal()), (Some(1), Some(4)));
        slots.cell(4);
        assert!(slots.get(4).is_some());
    }
}
