//! The response future shared by [`ClassifyLayer`](super::ClassifyLayer) and
//! [`JoinClassLayer`](super::JoinClassLayer): they differ only in what they do with the response
//! head ([`Attach`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project::{pin_project, pinned_drop};

use super::{Class, Classified, ClassifiedBody, ClassifyResponse, FailureReason, OnClass};
use crate::error::BoxError;

/// How a response future ties a listener to the response it receives.
pub trait Attach<B, O> {
    /// The response body it returns.
    type Body;

    /// Ties `on_class` (which has seen the head) to `rsp`.
    fn attach(self, rsp: Response<B>, on_class: O) -> Response<Self::Body>;
}

/// Classifies the response by a strategy's per-request classifier: the one classification.
#[derive(Clone, Copy, Debug)]
pub struct Classifies<R>(pub(super) R);

impl<R, B, O> Attach<B, O> for Classifies<R>
where
    R: ClassifyResponse,
    B: Body,
    O: OnClass,
{
    type Body = ClassifiedBody<B, R::Eos, O>;

    #[inline]
    fn attach(self, rsp: Response<B>, on_class: O) -> Response<Self::Body> {
        let eos = self.0.classify_response(&rsp);
        rsp.map(|body| ClassifiedBody::new(body, eos, on_class))
    }
}

/// Joins the classification a layer further in made.
#[derive(Clone, Copy, Debug, Default)]
pub struct Joins;

impl<B: Classified, O: OnClass> Attach<B, O> for Joins {
    type Body = B::Joined<O>;

    #[inline]
    fn attach(self, rsp: Response<B>, on_class: O) -> Response<Self::Body> {
        rsp.map(|body| body.join(on_class))
    }
}

/// The response future of [`Classifier`](super::Classifier) and
/// [`JoinClass`](super::JoinClass): an error is classified at once ([`Class::of_error`]), a
/// response gets its listener attached, and a request dropped before its response arrived is
/// [`FailureReason::Cancelled`].
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<F, A, O>
where
    O: OnClass,
{
    #[pin]
    inner: F,
    pending: Option<(A, O)>,
}

impl<F, A, O: OnClass> ResponseFuture<F, A, O> {
    pub(super) fn new(inner: F, attach: A, on_class: O) -> Self {
        Self {
            inner,
            pending: Some((attach, on_class)),
        }
    }
}

impl<F, A, O, ResB, E> Future for ResponseFuture<F, A, O>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    A: Attach<ResB, O>,
    O: OnClass,
{
    type Output = Result<Response<A::Body>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some((attach, mut on_class)) = this.pending.take() else {
            return Poll::Ready(Err(
                "classify: response future polled after completion".into()
            ));
        };
        match result {
            Ok(mut rsp) => {
                on_class.on_response(&mut rsp);
                Poll::Ready(Ok(attach.attach(rsp, on_class)))
            }
            Err(err) => {
                let err: BoxError = err.into();
                on_class.on_class(Class::of_error(&*err));
                Poll::Ready(Err(err))
            }
        }
    }
}

impl<F, A, O: OnClass> std::fmt::Debug for ResponseFuture<F, A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.pending.is_none())
            .finish_non_exhaustive()
    }
}

#[pinned_drop]
impl<F, A, O: OnClass> PinnedDrop for ResponseFuture<F, A, O> {
    fn drop(self: Pin<&mut Self>) {
        if let Some((_, on_class)) = self.project().pending.take() {
            on_class.on_class(Class::Failure(FailureReason::Cancelled));
        }
    }
}
