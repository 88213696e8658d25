//! A bound on the connections a listener serves at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// How many connections one listener may hold open, and how many it refused for that. Cheap
/// to clone (one `Arc`); one shared atomic per accepted connection, nothing per request.
///
/// ```
/// use mesh_core::serve::ConnectionLimit;
///
/// let limit = ConnectionLimit::new(1);
/// let first = limit.try_admit().expect("room for one");
/// assert!(limit.try_admit().is_none());
/// assert_eq!(limit.refused(), 1);
/// drop(first);
/// assert!(limit.try_admit().is_some());
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    inner: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

/// One admitted connection's place under its [`ConnectionLimit`]; given back on drop. Keep it
/// for as long as the connection is served.
#[derive(Debug)]
#[must_use = "the place is given back when this is dropped"]
pub struct Admission(Arc<Counts>);

impl ConnectionLimit {
    /// At most `max` connections at once (0 refuses every connection).
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Counts {
                max,
                open: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// A place for one more connection, or `None` (counted as refused) when all are taken.
    pub fn try_admit(&self) -> Option<Admission> {
        let counts = &self.inner;
        let admitted = counts
            .open
            .fetch_update(Relaxed, Relaxed, |open| {
                (open < counts.max).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            Some(Admission(Arc::clone(&self.inner)))
        } else {
            counts.refused.fetch_add(1, Relaxed);
            None
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Connections admitted and not yet closed.
    pub fn open(&self) -> usize {
        self.inner.open.load(Relaxed)
    }

    /// Connections refused because the bound was reached.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}
