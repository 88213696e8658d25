//! The response body of a balanced request: it keeps the request outstanding on its endpoint
//! until the first response frame, and carries the request's one classification, whose outcome
//! the endpoint's [`Outcome`] records when it is decided.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use mesh_core::classify::ClassifiedBody;
use pin_project::pin_project;

use crate::outcome::{Outcome, OutstandingGuard};

/// The body of a response from the balancer: layers further out join its classification
/// ([`mesh_core::classify::Classified`]) rather than classifying again.
pub type BalancedBody<B, E> = ClassifiedBody<Outstanding<B>, E, Outcome>;

/// Ends the request's outstanding count at the first response frame, the end of the body, or
/// the body's drop, whichever comes first. A long-lived stream (gRPC server streaming, a
/// download) therefore weighs on its endpoint's load only until it starts answering; the time
/// to its headers is already in the latency estimate.
#[pin_project]
pub struct Outstanding<B> {
    #[pin]
    inner: B,
    guard: Option<OutstandingGuard>,
}

impl<B> Outstanding<B> {
    pub(crate) fn new(inner: B, guard: Option<OutstandingGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for Outstanding<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outstanding")
            .field("inner", &self.inner)
            .field("outstanding", &self.guard.is_some())
            .finish()
    }
}

impl<B: Body> Body for Outstanding<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
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
