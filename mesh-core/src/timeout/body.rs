//! The response body of [`Timeout`](super::Timeout): enforces the request deadline while the
//! body streams.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::TimeoutError;
use crate::error::BoxError;

/// A response body that fails with [`TimeoutError`] of kind
/// [`Request`](super::TimeoutKind::Request) if it has not ended by the request deadline.
#[pin_project]
#[derive(Debug)]
pub struct TimeoutBody<B> {
    #[pin]
    inner: B,
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
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
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
                Poll::Ready(Some(Err(TimeoutError::request(after).into())))
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
