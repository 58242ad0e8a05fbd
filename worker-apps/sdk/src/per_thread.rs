//! [`PerThread`]: one value per serving thread, made on first use, for resources that must
//! not be shared between threads or are cheaper unshared (a database connection, a parser, a
//! scratch buffer). The recommended way to hold them in an [`App`](crate::App): the app is
//! shared by all of a worker's threads (`App: Sync`), and a `Mutex` around one connection
//! would make the threads take turns.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// This thread's values, by the id of the [`PerThread`] that made them.
    static VALUES: RefCell<HashMap<usize, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// A value of type `T` per thread, made by `make` the first time a thread asks for it and
/// kept until the thread ends.
///
/// ```
/// use ferricorn_sdk::PerThread;
/// let buffers = PerThread::new(|| Ok::<_, String>(Vec::<u8>::with_capacity(4096)));
/// let len = buffers.with(|buf| { buf.clear(); buf.extend_from_slice(b"hi"); buf.len() });
/// assert_eq!(len.unwrap(), 2);
/// ```
pub struct PerThread<T> {
    id: usize,
    make: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
}

impl<T: 'static> PerThread<T> {
    /// A per-thread value made by `make` (called once per thread, on first use; an error is
    /// returned by that [`with`](Self::with) call, and `make` is tried again on the next).
    pub fn new(make: impl Fn() -> Result<T, String> + Send + Sync + 'static) -> PerThread<T> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        PerThread {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            make: Box::new(make),
        }
    }

    /// Calls `f` with this thread's value, making it first if needed. Errors: `make`'s.
    /// `f` must not call `with` on the same `PerThread` (the value is borrowed).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, String> {
        VALUES.with(|values| {
            let mut values = values.borrow_mut();
            let slot = match values.entry(self.id) {
                std::collections::hash_map::Entry::Occupied(slot) => slot.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Box::new((self.make)()?))
                }
            };
            let value = slot
                .downcast_mut::<T>()
                .ok_or("per-thread value of another type")?;
            Ok(f(value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn one_value_per_thread_made_once() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let per = Arc::new(PerThread::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(0u32)
        }));
        for _ in 0..3 {
            per.with(|n| *n += 1).unwrap();
        }
        assert_eq!(per.with(|n| *n).unwrap(), 3);
        let other = per.clone();
        std::thread::spawn(move || assert_eq!(other.with(|n| *n).unwrap(), 0))
            .join()
            .unwrap();
        assert_eq!(made.load(Ordering::Relaxed), 2, "once per thread");
        let failing: PerThread<u8> = PerThread::new(|| Err("no database".into()));
        assert_eq!(failing.with(|_| ()), Err("no database".to_string()));
    }
}
