//! A future polled only when its own waker fired: for the branches of a connection's `select!`
//! that rarely resolve (the drain signal, the head and idle deadlines).
//!
//! `tokio::select!` polls every branch each time the task wakes, and a busy connection's task
//! wakes a few times per request, so the drain watch and the deadline timer were polled each
//! time for nothing: about 4 % of an HTTP/1 request's instructions (callgrind). Wrapped here,
//! such a future is polled once at first, then only after it asked to be woken and was.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use pin_project::pin_project;

/// `future`, polled only after its own waker was woken (and on the first poll, or when the
/// task polling it changes).
#[pin_project]
pub(crate) struct WokenOnly<F> {
    #[pin]
    future: F,
    flag: Arc<Flag>,
    /// The waker `future` is polled with: it sets the flag, then wakes the task.
    waker: Waker,
    /// The task's waker as last handed to `flag` (compared without taking its lock).
    task: Option<Waker>,
}

/// Whether the wrapped future was woken since it was last polled, and whom to wake then.
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F> WokenOnly<F> {
    pub(crate) fn new(future: F) -> Self {
        let flag = Arc::new(Flag::default());
        Self {
            future,
            waker: Waker::from(Arc::clone(&flag)),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            // First poll, or another task: it is the one to wake from now on, and the future is
            // polled now in case it was woken before (into the old task).
            let task = cx.waker().clone();
            *this
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            *this.task = Some(task);
            this.flag.woken.store(true, Ordering::Release);
        }
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A future counting its polls, ready once `ready` is set, woken through the waker it
    /// was last polled with when `wake` is called.
    #[derive(Clone, Default)]
    struct Probe(Arc<ProbeState>);

    #[derive(Default)]
    struct ProbeState {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Probe {
        fn polls(&self) -> usize {
            self.0.polls.load(Ordering::SeqCst)
        }

        fn finish(&self) {
            self.0.ready.store(true, Ordering::SeqCst);
            if let Some(w) = self.0.waker.lock().expect("lock").take() {
                w.wake();
            }
        }
    }

    impl Future for Probe {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().expect("lock") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Counts how often the task was woken.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polled_at_first_then_only_once_woken_and_the_task_is_woken_for_it() {
        let probe = Probe::default();
        let mut fut = Box::pin(WokenOnly::new(probe.clone()));
        let task = Arc::new(Task::default());
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);

        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls(), 1);
        // The task wakes for other reasons: the future is not polled again.
        for _ in 0..5 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls(), 1);

        probe.finish();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(probe.polls(), 2);
    }

    #[test]
    fn another_task_polls_it_at_once() {
        let probe = Probe::default();
        let mut fut = Box::pin(WokenOnly::new(probe.clone()));
        let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let first_waker = Waker::from(Arc::clone(&first));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(&first_waker))
                .is_pending()
        );

        let second_waker = Waker::from(Arc::clone(&second));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(&second_waker))
                .is_pending()
        );
        assert_eq!(probe.polls(), 2);
        probe.finish();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the latest task is woken"
        );
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
    }
}
