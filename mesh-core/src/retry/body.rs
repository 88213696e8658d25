//! The response body of [`Retry`](super::Retry).

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use crate::classify::{Class, Classified, OnClass};
use crate::error::BoxError;

/// A response body as the inner service produced it, or, when the retry layer had to read the
/// first frame to find a gRPC status (and then kept the response), that frame followed by the
/// rest. It carries the inner service's classification on ([`Classified`]).
pub struct RetryBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    Plain(B),
    // Boxed: rare, and large (a frame may hold trailers), so that it does not grow every
    // response.
    Peeked(Box<Peeked<B>>),
}

struct Peeked<B: Body> {
    first: Option<Result<Frame<B::Data>, BoxError>>,
    // Kept after its end too: its classification still reaches listeners joining late.
    rest: B,
    ended: bool,
}

impl<B: Body> RetryBody<B> {
    pub(super) fn plain(body: B) -> Self {
        Self {
            kind: Kind::Plain(body),
        }
    }

    /// A body whose first poll already returned `first` (`None`: the body had ended).
    pub(super) fn peeked(first: Option<Result<Frame<B::Data>, BoxError>>, rest: B) -> Self {
        let ended = first.is_none();
        Self {
            kind: Kind::Peeked(Box::new(Peeked { first, rest, ended })),
        }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Plain(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(Into::into))),
            Kind::Peeked(peeked) => {
                if let Some(frame) = peeked.first.take() {
                    return Poll::Ready(Some(frame));
                }
                if peeked.ended {
                    return Poll::Ready(None);
                }
                Pin::new(&mut peeked.rest)
                    .poll_frame(cx)
                    .map(|frame| frame.map(|result| result.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain(body) => body.is_end_stream(),
            Kind::Peeked(peeked) => {
                peeked.first.is_none() && (peeked.ended || peeked.rest.is_end_stream())
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

impl<B> Classified for RetryBody<B>
where
    B: Classified,
    B::Error: Into<BoxError>,
{
    type Joined<L: OnClass> = RetryBody<B::Joined<L>>;

    fn join<L: OnClass>(self, mut listener: L) -> Self::Joined<L> {
        match self.kind {
            Kind::Plain(body) => RetryBody::plain(body.join(listener)),
            Kind::Peeked(peeked) => {
                let Peeked { first, rest, ended } = *peeked;
                // The peeked trailers passed the classification before this listener came.
                if let Some(trailers) = first
                    .as_ref()
                    .and_then(|f| f.as_ref().ok())
                    .and_then(Frame::trailers_ref)
                {
                    listener.on_trailers(trailers);
                }
                RetryBody {
                    kind: Kind::Peeked(Box::new(Peeked {
                        first,
                        rest: rest.join(listener),
                        ended,
                    })),
                }
            }
        }
    }

    fn head_class(&self) -> Option<Class> {
        match &self.kind {
            Kind::Plain(body) => body.head_class(),
            Kind::Peeked(peeked) => peeked.rest.head_class(),
        }
    }

    fn class(&self) -> Option<Class> {
        match &self.kind {
            Kind::Plain(body) => body.class(),
            Kind::Peeked(peeked) => peeked.rest.class(),
        }
    }

    fn fail(&mut self, err: &(dyn std::error::Error + 'static)) {
        match &mut self.kind {
            Kind::Plain(body) => body.fail(err),
            Kind::Peeked(peeked) => peeked.rest.fail(err),
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
