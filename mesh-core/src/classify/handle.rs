//! A shared, one-shot slot for a request's [`Class`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use super::{Class, OnClass};

/// A cloneable handle to a request's [`Class`], set once by a [`ClassifiedBody`] and readable by
/// every holder of a clone; [`ClassifyLayer`] with [`PublishClass`] puts one in the response's
/// extensions so that layers further out reuse the decision instead of classifying again.
///
/// Costs one allocation per request; where the listeners are known statically, a tuple of
/// [`OnClass`] callbacks costs none.
///
/// [`ClassifiedBody`]: super::ClassifiedBody
/// [`ClassifyLayer`]: super::ClassifyLayer
/// [`PublishClass`]: super::PublishClass
#[derive(Clone, Default)]
pub struct ClassHandle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    class: OnceLock<Class>,
    // Set once anyone waits, so that publishing skips `Notify` (which takes a lock) in the
    // usual case where the class is only read after the fact.
    waiting: AtomicBool,
    decided: Notify,
}

impl ClassHandle {
    /// An empty handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// The class, once decided.
    pub fn get(&self) -> Option<Class> {
        self.shared.class.get().copied()
    }

    /// Waits until the class is decided. Never completes if the body is leaked unclassified.
    pub async fn wait(&self) -> Class {
        loop {
            let decided = self.shared.decided.notified();
            let mut decided = std::pin::pin!(decided);
            // Register before checking, so that a decision in between is not missed.
            decided.as_mut().enable();
            self.shared.waiting.store(true, Ordering::Relaxed);
            // Pairs with the fence in `on_class`: either the publisher sees `waiting`, or this
            // waiter sees the class.
            fence(Ordering::SeqCst);
            if let Some(class) = self.get() {
                return class;
            }
            decided.await;
        }
    }
}

impl OnClass for ClassHandle {
    fn on_class(self, class: Class) {
        // Only the first decision counts; a handle is only ever given to one body.
        let _ = self.shared.class.set(class);
        fence(Ordering::SeqCst);
        if self.shared.waiting.load(Ordering::Relaxed) {
            self.shared.decided.notify_waiters();
        }
    }

    fn on_response<T>(&mut self, rsp: &mut http::Response<T>) {
        rsp.extensions_mut().insert(self.clone());
    }
}

impl fmt::Debug for ClassHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClassHandle").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::FailureReason;

    #[tokio::test]
    async fn waiters_see_the_decision() {
        let handle = ClassHandle::new();
        let waiter = tokio::spawn({
            let handle = handle.clone();
            async move { handle.wait().await }
        });
        tokio::task::yield_now().await;
        handle
            .clone()
            .on_class(Class::Failure(FailureReason::Cancelled));
        let seen = waiter.await.expect("waiter ran");
        assert_eq!(seen, Class::Failure(FailureReason::Cancelled));
        // Later decisions do not overwrite the first.
        handle.clone().on_class(Class::Success);
        assert_eq!(handle.get(), Some(Class::Failure(FailureReason::Cancelled)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_waiter_misses_a_racing_decision() {
        for _ in 0..500 {
            let handle = ClassHandle::new();
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let handle = handle.clone();
                    tokio::spawn(async move { handle.wait().await })
                })
                .collect();
            let publisher = handle.clone();
            tokio::spawn(async move { publisher.on_class(Class::Success) });
            for waiter in waiters {
                let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                    .await
                    .expect("no waiter hangs")
                    .expect("waiter ran");
                assert_eq!(seen, Class::Success);
            }
        }
    }
}
