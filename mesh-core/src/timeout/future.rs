//! The response future of [`Timeout`](super::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::{TimeoutBody, TimeoutLayer};
use crate::error::BoxError;

/// Waits for the response headers until the earlier deadline, then hands the request deadline
/// on to the body.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    // Armed on the first `Pending` only: a service that answers at once never touches the
    // clock or the timer.
    #[pin]
    sleep: Option<Sleep>,
    config: TimeoutLayer,
    // When the request first had to wait; the deadlines run from here.
    started: Option<Instant>,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, config: TimeoutLayer) -> Self {
        Self {
            inner,
            sleep: None,
            config,
            started: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let (request, started) = (this.config.request, *this.started);
            return Poll::Ready(match result {
                Ok(rsp) => Ok(rsp.map(|body| TimeoutBody::new(body, request, started))),
                Err(err) => Err(err.into()),
            });
        }
        if this.sleep.is_none() {
            if !this.config.is_set() {
                return Poll::Pending;
            }
            let started = *this.started.get_or_insert_with(Instant::now);
            let Some((at, _)) = this.config.before_headers(started) else {
                return Poll::Pending;
            };
            this.sleep.set(Some(sleep_until(at)));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                let error = this
                    .started
                    .and_then(|started| this.config.before_headers(started))
                    .map(|(_, error)| error);
                Poll::Ready(Err(match error {
                    Some(error) => error.into(),
                    None => "timeout: the deadline fired without being set".into(),
                }))
            }
            _ => Poll::Pending,
        }
    }
}
