//! Series by label set, with a cap on how many distinct sets are kept.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use crate::Labels;

/// How many distinct label sets a family keeps by default.
pub const DEFAULT_LABEL_SET_CAP: usize = 10_000;

/// Shards of the map, so that looking up different label sets rarely meets on one lock.
const SHARDS: usize = 16;

/// The series of one kind (`S`) for each label set (`L`).
///
/// A lookup takes a read lock on one of 16 shards and clones an `Arc`; it allocates only when
/// the label set is new. Past the cap, new label sets share one overflow series (exposed with
/// the single label `overflow="true"`), and [`Family::overflowed`] counts the lookups that were
/// folded there. Memory is thus bounded by the cap, however many distinct label sets arrive.
pub(crate) struct Family<L, S> {
    shards: [RwLock<HashMap<L, Arc<S>>>; SHARDS],
    hasher: RandomState,
    len: AtomicUsize,
    cap: usize,
    overflow: Arc<S>,
    overflowed: AtomicU64,
}

impl<L: Labels, S: Default> Family<L, S> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            cap,
            overflow: Arc::new(S::default()),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The series for `labels`, created if there is room, else the overflow series.
    pub(crate) fn get_or_create(&self, labels: &L) -> Arc<S> {
        let shard = &self.shards[self.hasher.hash_one(labels) as usize % SHARDS];
        if let Some(series) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            return Arc::clone(series);
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = map.get(labels) {
            return Arc::clone(series);
        }
        // Reserve a place under the cap; the shard's write lock is held, so a racing insert of
        // the same labels cannot take a second place.
        let reserved = self
            .len
            .fetch_update(Relaxed, Relaxed, |n| (n < self.cap).then_some(n + 1))
            .is_ok();
        if !reserved {
            self.overflowed.fetch_add(1, Relaxed);
            return Arc::clone(&self.overflow);
        }
        let series = Arc::new(S::default());
        map.insert(labels.clone(), Arc::clone(&series));
        series
    }

    /// Calls `f` with each label set and its series (the overflow series is not included).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&L, &S)) {
        for shard in &self.shards {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (labels, series) in map.iter() {
                f(labels, series);
            }
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
        let family = Family::<u32Labels, AtomicU64>::new(3);
        for i in 0..10 {
            family.get_or_create(&u32Labels(i)).fetch_add(1, Relaxed);
        }
        // Known sets still find their own series once the cap is reached.
        family.get_or_create(&u32Labels(0)).fetch_add(1, Relaxed);
        assert_eq!(family.len(), 3);
        assert_eq!(family.overflowed(), 7);
        assert_eq!(family.overflow().load(Relaxed), 7);
        let mut kept = 0;
        family.for_each(|_, s| kept += s.load(Relaxed));
        assert_eq!(kept, 4);
    }

    #[allow(non_camel_case_types)]
    #[derive(Clone, PartialEq, Eq, Hash)]
    struct u32Labels(u32);

    impl Labels for u32Labels {
        fn encode(&self, enc: &mut crate::LabelEncoder<'_>) {
            enc.label("n", self.0);
        }
    }
}
