//! The response future of the metrics layer and the listener that records each outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Response};
use http_body::Body;
use mesh_core::classify::{ClassifiedBody, ClassifyResponse, OnClass};
use mesh_core::{BoxError, Class, FailureReason};
use pin_project::{pin_project, pinned_drop};
use tokio::time::Instant;

use super::series::HttpStripe;
use crate::tap::TapRequest;

/// Records the end of one request: its outcome, its latency, and its tap event if tapped.
pub struct Recorder {
    stripe: Arc<HttpStripe>,
    start: Instant,
    tap: Option<TapRequest>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("start", &self.start)
            .field("tap", &self.tap)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    pub(crate) fn new(stripe: Arc<HttpStripe>, start: Instant, tap: Option<TapRequest>) -> Self {
        Self { stripe, start, tap }
    }

    fn on_response<B>(&mut self, rsp: &Response<B>) {
        let latency = self.start.elapsed();
        self.stripe.on_response(rsp.status(), latency);
        if let Some(tap) = self.tap.as_mut() {
            tap.on_response(rsp, latency);
        }
    }
}

impl OnClass for Recorder {
    fn on_class(self, class: Class) {
        let latency = self.start.elapsed();
        self.stripe.on_end(class, latency);
        if let Some(tap) = self.tap {
            tap.finish(class, latency);
        }
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(tap) = self.tap.as_mut() {
            tap.on_trailers(trailers);
        }
    }
}

/// What a response future holds until the response arrives.
pub(crate) struct Pending<R> {
    pub(crate) classifier: R,
    pub(crate) recorder: Recorder,
}

/// The response future of [`MetricsService`](super::MetricsService).
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<F, R> {
    #[pin]
    inner: F,
    pending: Option<Pending<R>>,
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn new(inner: F, pending: Pending<R>) -> Self {
        Self {
            inner,
            pending: Some(pending),
        }
    }
}

impl<F, R> std::fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.pending.is_none())
            .finish_non_exhaustive()
    }
}

impl<F, R, E, ResB> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    R: ClassifyResponse,
    ResB: Body,
{
    type Output = Result<Response<ClassifiedBody<ResB, R::Eos, Recorder>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(Pending {
            classifier,
            mut recorder,
        }) = this.pending.take()
        else {
            return Poll::Ready(Err(
                "metrics: response future polled after completion".into()
            ));
        };
        match result {
            Ok(rsp) => {
                recorder.on_response(&rsp);
                let eos = classifier.classify_response(&rsp);
                Poll::Ready(Ok(rsp.map(|body| ClassifiedBody::new(body, eos, recorder))))
            }
            Err(err) => {
                let err: BoxError = err.into();
                recorder.on_class(classifier.classify_error(&*err));
                Poll::Ready(Err(err))
            }
        }
    }
}

#[pinned_drop]
impl<F, R> PinnedDrop for ResponseFuture<F, R> {
    fn drop(self: Pin<&mut Self>) {
        if let Some(pending) = self.project().pending.take() {
            pending
                .recorder
                .on_class(Class::Failure(FailureReason::Cancelled));
        }
    }
}
