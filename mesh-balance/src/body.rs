//! The response body of a balanced request: it keeps the request outstanding on its endpoint
//! until the first response frame, and reports the outcome when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use mesh_core::classify::{ClassifiedBody, OnClass};
use mesh_core::{Class, FailureReason};
use pin_project::pin_project;

use crate::state::EndpointState;

/// The body of a response from the balancer.
pub type BalancedBody<B, E, S> = ClassifiedBody<Outstanding<B, S>, E, Recorder<S>>;

/// Counts one request as outstanding on its endpoint while alive.
pub(crate) struct OutstandingGuard<S>(Arc<EndpointState<S>>);

impl<S> OutstandingGuard<S> {
    pub(crate) fn new(endpoint: Arc<EndpointState<S>>) -> Self {
        endpoint.outstanding.fetch_add(1, Relaxed);
        Self(endpoint)
    }
}

impl<S> Drop for OutstandingGuard<S> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// Ends the request's outstanding count at the first response frame, the end of the body, or
/// the body's drop, whichever comes first. A long-lived stream (gRPC server streaming, a
/// download) therefore weighs on its endpoint's load only until it starts answering; the time
/// to its headers is already in the latency estimate.
#[pin_project]
pub struct Outstanding<B, S> {
    #[pin]
    inner: B,
    guard: Option<OutstandingGuard<S>>,
}

impl<B, S> Outstanding<B, S> {
    pub(crate) fn new(inner: B, guard: Option<OutstandingGuard<S>>) -> Self {
        Self { inner, guard }
    }
}

impl<B: std::fmt::Debug, S> std::fmt::Debug for Outstanding<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outstanding")
            .field("inner", &self.inner)
            .field("outstanding", &self.guard.is_some())
            .finish()
    }
}

impl<B: Body, S> Body for Outstanding<B, S> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if polled.is_ready() {
            *this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Hands a request's outcome to its endpoint's failure accrual and latency estimate.
pub struct Recorder<S> {
    endpoint: Arc<EndpointState<S>>,
    /// The latency sample was already a failure penalty (decided from the head).
    penalized: bool,
    /// When the response head arrived (pool clock): the time the outcome is filed under, so
    /// that the end of the body costs no clock read.
    at: u64,
}

impl<S> std::fmt::Debug for Recorder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("endpoint", &self.endpoint.endpoint.addr)
            .finish_non_exhaustive()
    }
}

impl<S> Recorder<S> {
    pub(crate) fn new(endpoint: Arc<EndpointState<S>>, penalized: bool, at: u64) -> Self {
        Self {
            endpoint,
            penalized,
            at,
        }
    }
}

impl<S> OnClass for Recorder<S> {
    fn on_class(self, class: Class) {
        let failed = class.is_failure() && class != Class::Failure(FailureReason::Cancelled);
        if failed && !self.penalized {
            // A failure only the trailers revealed (gRPC): now it weighs on the estimate too.
            let config = &self.endpoint.core.config;
            self.endpoint
                .ewma
                .sample(config.failure_penalty, self.at, config.decay);
        }
        self.endpoint
            .core
            .on_outcome(&self.endpoint, class, self.at);
    }
}
