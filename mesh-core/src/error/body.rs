//! The body of [`ErrorResponse`](super::ErrorResponse)'s responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

/// A response body that is either the service's own or a short text the mesh answers with
/// itself: the error response of [`ErrorResponse`](super::ErrorResponse), the refusal of
/// mesh-tls's authorization. Its errors are the inner body's (the text cannot fail).
#[pin_project(project = ErrorResponseBodyProj)]
#[derive(Debug)]
pub enum ErrorResponseBody<B> {
    /// The wrapped service's body.
    Inner(#[pin] B),
    /// The mesh's own answer's text, until sent.
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
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            ErrorResponseBodyProj::Inner(body) => body.poll_frame(cx),
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
