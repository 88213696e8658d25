//! A layer that answers a failed request with the mesh's error response instead of an error.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tower::{Layer, Service};

use super::{BoxError, error_response};
use crate::grpc::is_grpc;

/// Turns every error of the wrapped service into the response [`error_response`] gives it (502,
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
    not_ready: Option<std::sync::Arc<BoxError>>,
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
            self.not_ready = Some(std::sync::Arc::new(err.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        match self.not_ready.take() {
            Some(err) => ResponseFuture {
                state: State::NotReady(Some(err)),
                grpc,
            },
            None => ResponseFuture {
                state: State::Called(self.inner.call(req)),
                grpc,
            },
        }
    }
}

#[pin_project(project = StateProj)]
#[derive(Debug)]
enum State<F> {
    Called(#[pin] F),
    NotReady(Option<std::sync::Arc<BoxError>>),
}

/// The response future of [`ErrorResponse`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
    grpc: bool,
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ErrorResponseBody<ResB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err: BoxError = match this.state.project() {
            StateProj::Called(call) => match ready!(call.poll(cx)) {
                Ok(rsp) => return Poll::Ready(Ok(rsp.map(ErrorResponseBody::Inner))),
                Err(err) => err.into(),
            },
            StateProj::NotReady(err) => match err.take() {
                Some(err) => err.to_string().into(),
                None => "error response: polled after completion".into(),
            },
        };
        Poll::Ready(Ok(error_response(&*err, *this.grpc)))
    }
}

/// The body of [`ErrorResponse`]'s responses: the service's own, or the error response's.
#[pin_project(project = ErrorResponseBodyProj)]
#[derive(Debug)]
pub enum ErrorResponseBody<B> {
    /// The wrapped service's body.
    Inner(#[pin] B),
    /// The error response's text, until sent.
    Error(Option<Bytes>),
}

impl<B> From<Bytes> for ErrorResponseBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::Error((!bytes.is_empty()).then_some(bytes))
    }
}

impl<B> Body for ErrorResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ErrorResponseBodyProj::Inner(body) => body
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(Into::into))),
            ErrorResponseBodyProj::Error(text) => Poll::Ready(text.take().map(Frame::data).map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner(body) => body.is_end_stream(),
            Self::Error(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner(body) => body.size_hint(),
            Self::Error(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}
