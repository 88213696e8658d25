//! The body of [`ErrorResponse`](super::ErrorResponse)'s responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::BoxError;

/// The body of [`ErrorResponse`](super::ErrorResponse)'s responses: the service's own, or the error response's.
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
