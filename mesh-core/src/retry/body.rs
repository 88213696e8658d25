//! The response body of [`Retry`](super::Retry).

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use crate::error::BoxError;

/// A response body as the inner service produced it, or, when the retry layer had to read the
/// first frame to find a gRPC status (and then kept the response), that frame followed by the
/// rest.
#[pin_project]
pub struct RetryBody<B: Body> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
enum Kind<B: Body> {
    Plain(#[pin] B),
    // Boxed: rare, and large (a frame may hold trailers), so that it does not grow every
    // response.
    Peeked(Box<Peeked<B>>),
}

struct Peeked<B: Body> {
    first: Option<Result<Frame<B::Data>, BoxError>>,
    // `None` once the body has ended.
    rest: Option<Pin<Box<B>>>,
}

impl<B: Body> RetryBody<B> {
    pub(super) fn plain(body: B) -> Self {
        Self {
            kind: Kind::Plain(body),
        }
    }

    /// A body whose first poll already returned `first` (`None`: the body had ended).
    pub(super) fn peeked(
        first: Option<Result<Frame<B::Data>, BoxError>>,
        rest: Pin<Box<B>>,
    ) -> Self {
        let rest = first.is_some().then_some(rest);
        Self {
            kind: Kind::Peeked(Box::new(Peeked { first, rest })),
        }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Plain(body) => body
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(Into::into))),
            KindProj::Peeked(peeked) => {
                if let Some(frame) = peeked.first.take() {
                    return Poll::Ready(Some(frame));
                }
                match &mut peeked.rest {
                    Some(body) => body
                        .as_mut()
                        .poll_frame(cx)
                        .map(|frame| frame.map(|result| result.map_err(Into::into))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain(body) => body.is_end_stream(),
            Kind::Peeked(peeked) => {
                peeked.first.is_none()
                    && peeked.rest.as_ref().is_none_or(|body| body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain(body) => body.size_hint(),
            // The peeked frame's size is not tracked; say nothing rather than something wrong.
            Kind::Peeked(_) => SizeHint::default(),
        }
    }
}

impl<B: Body> std::fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Plain(_) => "plain",
            Kind::Peeked(_) => "peeked",
        };
        f.debug_struct("RetryBody").field("kind", &kind).finish()
    }
}
