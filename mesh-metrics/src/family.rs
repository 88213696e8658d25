//! Series by label set, with a cap on how many distinct sets are kept.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use crate::Labels;
use crate::stripe::{CachePadded, STRIPES, stripe_index};

/// How many distinct label sets a family keeps by default.
pub const DEFAULT_LABEL_SET_CAP: usize = 10_000;

type Map<L, S> = HashMap<L, Arc<S>>;

/// The series of one kind (`S`) for each label set (`L`).
///
/// The map is replicated once per thread stripe: a lookup hashes the labels once and takes a
/// read lock on the calling thread's own replica, so threads looking up the same label set
/// share no lock word and no reference count. Only a new label set takes the write locks of
/// all replicas (in order) to insert it everywhere; that is rare, and bounded by the cap.
///
/// Past the cap, new label sets share one overflow series (exposed with the single label
/// `overflow="true"`), and [`Family::overflowed`] counts the lookups folded there. Memory is
/// thus bounded by the cap, however many distinct label sets arrive.
pub(crate) struct Family<L, S> {
    replicas: [CachePadded<RwLock<Map<L, S>>>; STRIPES],
    len: AtomicUsize,
    cap: usize,
    overflow: Arc<S>,
    overflowed: AtomicU64,
}

impl<L: Labels, S: Default> Family<L, S> {
    pub(crate) fn new(cap: usize) -> Self {
        let hasher = RandomState::new();
        Self {
            replicas: std::array::from_fn(|_| {
                CachePadded(RwLock::new(HashMap::with_hasher(hasher.clone())))
            }),
            len: AtomicUsize::new(0),
            cap,
            overflow: Arc::new(S::default()),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Calls `f` with the series for `labels` (created if there is room, else the overflow
    /// series), without cloning its `Arc` when the label set is known.
    #[inline]
    pub(crate) fn with_series<R>(&self, labels: &L, f: impl FnOnce(&Arc<S>) -> R) -> R {
        {
            let replica = self.replicas[stripe_index()]
                .0
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = replica.get(labels) {
                return f(series);
            }
        }
        f(&self.insert(labels))
    }

    /// The series for `labels`, created if there is room, else the overflow series.
    pub(crate) fn get_or_create(&self, labels: &L) -> Arc<S> {
        self.with_series(labels, Arc::clone)
    }

    #[cold]
    fn insert(&self, labels: &L) -> Arc<S> {
        // Every replica, always in the same order, so that two inserts cannot deadlock.
        let mut replicas: Vec<_> = self
            .replicas
            .iter()
            .map(|r| r.0.write().unwrap_or_else(PoisonError::into_inner))
            .collect();
        if let Some(series) = replicas.first().and_then(|r| r.get(labels)) {
            return Arc::clone(series);
        }
        let reserved = self
            .len
            .fetch_update(Relaxed, Relaxed, |n| (n < self.cap).then_some(n + 1))
            .is_ok();
        if !reserved {
            self.overflowed.fetch_add(1, Relaxed);
            return Arc::clone(&self.overflow);
        }
        let series = Arc::new(S::default());
        for replica in &mut replicas {
            replica.insert(labels.clone(), Arc::clone(&series));
        }
        series
    }

    /// Calls `f` with each label set and its series (the overflow series is not included).
    ///
    /// The entries are copied out first (a label clone and a reference count each), so that
    /// the read lock is held only for that copy: a slow reader (an exposition of thousands of
    /// series) must not keep a new label set waiting for the write locks, nor the requests
    /// queued behind that writer.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&L, &S)) {
        // Every replica holds every label set; copy from the first.
        let entries: Vec<(L, Arc<S>)> = self.replicas[0]
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(labels, series)| (labels.clone(), Arc::clone(series)))
            .collect();
        for (labels, series) in &entries {
            f(labels, series);
        }
    }

    /// The series shared by label sets that arrived past the cap.
    pub(crate) fn overflow(&self) -> &S {
        &self.overflow
    }

    /// A shared handle on the overflow series.
    pub(crate) fn overflow_arc(&self) -> Arc<S> {
        Arc::clone(&self.overflow)
    }

    /// How many distinct label sets are kept (the overflow series aside).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// How many lookups found no room and were folded into the overflow series.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_overflow_is_counted() {
        let family = Family::<Number, AtomicU64>::new(3);
        for i in 0..10 {
            family.get_or_create(&Number(i)).fetch_add(1, Relaxed);
        }
        // Known sets still find their own series once the cap is reached.
        family.with_series(&Number(0), |s| s.fetch_add(1, Relaxed));
        assert_eq!(family.len(), 3);
        assert_eq!(family.overflowed(), 7);
        assert_eq!(family.overflow().load(Relaxed), 7);
        let mut kept = 0;
        family.for_each(|_, s| kept += s.load(Relaxed));
        assert_eq!(kept, 4);
    }

    #[test]
    fn threads_find_the_same_series() {
        let family = Arc::new(Family::<Number, AtomicU64>::new(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let family = family.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        family.with_series(&Number(i), |s| s.fetch_add(1, Relaxed));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(family.len(), 50);
        let mut each = Vec::new();
        family.for_each(|_, s| each.push(s.load(Relaxed)));
        assert_eq!(each, vec![4; 50]);
    }

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct Number(u32);

    impl Labels for Number {
        fn encode(&self, enc: &mut crate::LabelEncoder<'_>) {
            enc.label("n", self.0);
        }
    }
}
