//! Layers that only change each request in place before passing it on (the orig-proto pair,
//! the forwarded identity header): one service for all of them, each a [`RewriteRequest`].

use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

/// Changes a request in place; it is then passed on unchanged otherwise, and the response
/// comes back as it is.
pub trait RewriteRequest {
    /// Changes `req`.
    fn rewrite<B>(&self, req: &mut Request<B>);
}

/// Applies a [`RewriteRequest`] to every request of the service it wraps.
#[derive(Clone, Copy, Debug, Default)]
pub struct RewriteLayer<R> {
    rewrite: R,
}

impl<R> RewriteLayer<R> {
    /// Rewrites requests with `rewrite`.
    pub const fn new(rewrite: R) -> Self {
        Self { rewrite }
    }
}

impl<S, R: Clone> Layer<S> for RewriteLayer<R> {
    type Service = Rewrite<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite {
            inner,
            rewrite: self.rewrite.clone(),
        }
    }
}

/// The service made by [`RewriteLayer`]; its future is the wrapped service's.
#[derive(Clone, Debug)]
pub struct Rewrite<S, R> {
    inner: S,
    rewrite: R,
}

impl<S, R, B> Service<Request<B>> for Rewrite<S, R>
where
    S: Service<Request<B>>,
    R: RewriteRequest,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        self.rewrite.rewrite(&mut req);
        self.inner.call(req)
    }
}
