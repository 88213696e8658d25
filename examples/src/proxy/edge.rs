//! Where a layer stack meets the proxy's server: errors become the mesh's error responses
//! (mesh-core's `ErrorResponseLayer`), and HTTP/1 upgrades are spliced once both sides agreed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use mesh_core::BoxError;
use mesh_core::error::{ErrorResponse, ErrorResponseBody, ErrorResponseLayer};
use pin_project::pin_project;
use tower::{Layer, Service};

use super::upgrade;

/// Adapts a stack to what the proxy's servers call.
#[derive(Clone, Debug)]
pub(crate) struct Edge<S>(ErrorResponse<S>);

/// `stack` behind an [`Edge`].
pub(crate) fn edge<S>(stack: S) -> Edge<S> {
    Edge(ErrorResponseLayer::new().layer(stack))
}

impl<S, B> Service<Request<Incoming>> for Edge<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ErrorResponseBody<B>>;
    type Error = Infallible;
    type Future = EdgeFuture<mesh_core::error::ResponseFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let upgrade = upgrade::take_upgrade(&mut req);
        EdgeFuture {
            inner: self.0.call(req),
            upgrade,
        }
    }
}

/// The response future of [`Edge`]: the response, with an accepted upgrade spliced.
#[pin_project]
pub(crate) struct EdgeFuture<F> {
    #[pin]
    inner: F,
    upgrade: Option<OnUpgrade>,
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut rsp = ready!(this.inner.poll(cx))?;
        upgrade::splice(this.upgrade.take(), &mut rsp);
        Poll::Ready(Ok(rsp))
    }
}
