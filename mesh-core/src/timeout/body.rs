//! The response body of [`Timeout`](super::Timeout): enforces the request deadline while the
//! body streams.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::TimeoutError;
use crate::classify::{Class, Classified, OnClass};
use crate::error::BoxError;

/// A response body that fails with [`TimeoutError`] of kind
/// [`Request`](super::TimeoutKind::Request) if it has not ended by the request deadline.
///
/// It passes the classification of the body it wraps through ([`Classified`]); a layer that
/// joins it through this body also has the request deadline reported to the classification as a
/// failure of the body, not as a caller gone.
#[pin_project]
pub struct TimeoutBody<B> {
    #[pin]
    inner: B,
    /// Set when a listener joined through this body: tells the classification inside about a
    /// deadline that passed.
    on_timeout: Option<fn(Pin<&mut B>, &(dyn Error + 'static))>,
    // Boxed and armed only once the body has to wait: a body that is ready at once stays
    // small (it travels inside every response) and never touches the timer, and a body that
    // waits is waiting on I/O, next to which one allocation is noise.
    sleep: Option<Pin<Box<Sleep>>>,
    request: Option<Duration>,
    // When the request first had to wait, if it did before the headers arrived.
    started: Option<Instant>,
    timed_out: bool,
}

impl<B> TimeoutBody<B> {
    pub(super) fn new(inner: B, request: Option<Duration>, started: Option<Instant>) -> Self {
        Self {
            inner,
            on_timeout: None,
            sleep: None,
            request,
            started,
            timed_out: false,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(after) = *this.request else {
            return Poll::Pending;
        };
        let sleep = this.sleep.get_or_insert_with(|| {
            let started = *this.started.get_or_insert_with(Instant::now);
            Box::pin(sleep_until(started + after))
        });
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *this.timed_out = true;
                let err = TimeoutError::request(after);
                if let Some(fail) = this.on_timeout {
                    fail(this.inner, &err);
                }
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for TimeoutBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("inner", &self.inner)
            .field("request", &self.request)
            .field("timed_out", &self.timed_out)
            .finish_non_exhaustive()
    }
}

fn fail_inner<B: Classified>(body: Pin<&mut B>, err: &(dyn Error + 'static)) {
    body.get_mut().fail(err);
}

impl<B> Classified for TimeoutBody<B>
where
    B: Classified,
    B::Error: Into<BoxError>,
{
    type Joined<L: OnClass> = TimeoutBody<B::Joined<L>>;

    fn join<L: OnClass>(self, listener: L) -> Self::Joined<L> {
        TimeoutBody {
            inner: self.inner.join(listener),
            on_timeout: Some(fail_inner::<B::Joined<L>>),
            sleep: self.sleep,
            request: self.request,
            started: self.started,
            timed_out: self.timed_out,
        }
    }

    fn head_class(&self) -> Option<Class> {
        self.inner.head_class()
    }

    fn class(&self) -> Option<Class> {
        self.inner.class()
    }

    fn fail(&mut self, err: &(dyn Error + 'static)) {
        self.inner.fail(err);
    }
}
