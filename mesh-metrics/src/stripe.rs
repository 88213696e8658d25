//! Per-thread stripes, so that threads recording into the same series touch different cache
//! lines.
//!
//! Each thread is given a stripe number once, round-robin; a series keeps one lazily allocated
//! block of counters per stripe. Two threads recording the same label set then share no
//! counter (with up to [`STRIPES`] threads), and a series that only one thread ever touches
//! allocates one block.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// The number of stripes per series.
pub(crate) const STRIPES: usize = 4;

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe number.
#[inline]
pub(crate) fn stripe_index() -> usize {
    MINE.with(|mine| {
        let i = mine.get();
        if i != usize::MAX {
            return i;
        }
        let i = NEXT.fetch_add(1, Relaxed) % STRIPES;
        mine.set(i);
        i
    })
}

/// Aligns `T` to its own cache lines (128 bytes covers adjacent-line prefetching), so that
/// values written by different threads do not share one.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

/// One block of `T` per stripe, allocated on first use.
pub(crate) struct Striped<T> {
    stripes: [OnceLock<Arc<T>>; STRIPES],
}

impl<T> Default for Striped<T> {
    fn default() -> Self {
        Self {
            stripes: [const { OnceLock::new() }; STRIPES],
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's block, made with `init` the first time.
    #[inline]
    pub(crate) fn local(&self, init: impl FnOnce() -> T) -> &Arc<T> {
        self.stripes[stripe_index()].get_or_init(|| Arc::new(init()))
    }

    /// The blocks allocated so far.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().filter_map(|s| s.get().map(|a| &**a))
    }

    /// How many blocks are allocated.
    pub(crate) fn allocated(&self) -> usize {
        self.stripes.iter().filter(|s| s.get().is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_their_own_block() {
        let striped = Arc::new(Striped::<AtomicUsize>::default());
        striped.local(AtomicUsize::default).fetch_add(1, Relaxed);
        let here = stripe_index();
        let other = striped.clone();
        let there = std::thread::spawn(move || {
            other.local(AtomicUsize::default).fetch_add(1, Relaxed);
            stripe_index()
        })
        .join()
        .expect("thread");
        // Other test threads take numbers too, so the two may wrap onto one stripe.
        assert_eq!(striped.allocated(), if here == there { 1 } else { 2 });
        let total: usize = striped.iter().map(|a| a.load(Relaxed)).sum();
        assert_eq!(total, 2);
    }
}
