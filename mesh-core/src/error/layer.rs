//! A layer that answers a failed request with the mesh's error response instead of an error.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use tower::{Layer, Service};

use super::BoxError;
use super::body::ErrorResponseBody;
use super::future::{ResponseFuture, State};
use crate::grpc::is_grpc;

/// Turns every error of the wrapped service into the response [`error_response`](super::error_response) gives it (502,
/// 503, 504, 404 for no route; trailers-only gRPC for gRPC requests), so that the service fits a
/// server, which wants responses, not errors. Where a stack meets its listener.
///
/// ```
/// use mesh_core::error::{ErrorResponseLayer, Unavailable, UnavailableError};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let svc = ServiceBuilder::new()
///     .layer(ErrorResponseLayer::new())
///     .service_fn(|_req: http::Request<()>| async {
///         Err::<http::Response<http_body_util::Empty<bytes::Bytes>>, _>(UnavailableError::new(
///             Unavailable::NoReadyEndpoint,
///         ))
///     });
/// let rsp = svc.oneshot(http::Request::new(())).await?;
/// assert_eq!(rsp.status(), 503);
/// # Ok::<(), std::convert::Infallible>(())
/// # }).unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponseLayer(());

impl ErrorResponseLayer {
    /// The layer.
    pub fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse {
            inner,
            not_ready: None,
        }
    }
}

/// The service made by [`ErrorResponseLayer`].
#[derive(Clone, Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    /// A readiness failure, answered to the next request (a server cannot take an error).
    not_ready: Option<Arc<BoxError>>,
}

impl<S, B, ResB> Service<Request<B>> for ErrorResponse<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ErrorResponseBody<ResB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if let Err(err) = ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(Arc::new(err.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        match self.not_ready.take() {
            Some(err) => ResponseFuture::new(State::NotReady(Some(err)), grpc),
            None => ResponseFuture::new(State::Called(self.inner.call(req)), grpc),
        }
    }
}
