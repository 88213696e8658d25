//! The response future of [`ErrorResponse`](super::ErrorResponse): the response, or the error
//! response in its place.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project::pin_project;

use super::body::ErrorResponseBody;
use super::{BoxError, error_response};

#[pin_project(project = StateProj)]
#[derive(Debug)]
pub(super) enum State<F> {
    Called(#[pin] F),
    NotReady(Option<Arc<BoxError>>),
}

/// The response future of [`ErrorResponse`](super::ErrorResponse).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
    grpc: bool,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(state: State<F>, grpc: bool) -> Self {
        Self { state, grpc }
    }
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
