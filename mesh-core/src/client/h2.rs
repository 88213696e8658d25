//! HTTP/2 requests through hyper-util's pool, sent once more when the server refused them
//! unprocessed.
//!
//! An HTTP/2 server may turn a request away before doing anything with it (RFC 9113 §8.7): it
//! resets the stream with `REFUSED_STREAM` (over its stream limit), or it sends `GOAWAY` with a
//! last stream below the request's (it is closing: an idle timeout, a restart, an app's
//! maximum connection age). That race is routine between long-lived connections, and hyper
//! hands the error to the caller. Here a request without a body is sent again, once, on the
//! pool's next connection; one with a body (hyper has taken it) fails with a
//! [`RefusedError`] ([`ErrorKind::Refused`](crate::ErrorKind::Refused)), which a
//! [`RetryLayer`](crate::retry::RetryLayer) that recorded the body retries (for the methods its
//! policy allows).
//!
//! The price: a request without a body keeps a copy of its head (URI, headers), boxed, until
//! its response head arrives, as hyper takes the request whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use pin_project::pin_project;

use crate::error::{BoxError, RefusedError};

/// The request body the HTTP/2 pool sends: the caller's, or none for a request sent again.
#[derive(Debug)]
pub(super) enum H2Body<B> {
    /// The caller's body.
    Given(B),
    /// No body: a request without one, sent again.
    Empty,
}

impl<B> Body for H2Body<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Given(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Given(body) => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Given(body) => body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Sends a request on the HTTP/2 pool: what a response future needs to send its request again
/// without naming the pool's connector type.
pub(super) trait SendH2<B>: Send + Sync {
    /// Sends `req` on a pooled (or new) connection.
    fn send(&self, req: Request<H2Body<B>>) -> ResponseFuture;
}

/// The response future of an HTTP/2 request.
#[pin_project]
pub(super) struct H2Future<B> {
    #[pin]
    sent: ResponseFuture,
    /// The request's head and the pool, while the request may be sent again; boxed, as a head
    /// is 200-odd bytes that every response future (HTTP/1's too) would otherwise carry.
    again: Option<Box<Again<B>>>,
}

/// What sending a request again takes.
struct Again<B> {
    head: Request<()>,
    pool: Arc<dyn SendH2<B>>,
}

impl<B> H2Future<B> {
    /// Sends `req` on `pool`, keeping what it takes to send it again if it has no body (the
    /// pool's reference count is taken only then).
    pub(super) fn send<P>(pool: &Arc<P>, req: Request<B>) -> Self
    where
        P: SendH2<B> + 'static,
        B: Body,
    {
        let again = head_if_resendable(&req).map(|head| {
            let pool: Arc<dyn SendH2<B>> = Arc::clone(pool) as Arc<dyn SendH2<B>>;
            Box::new(Again { head, pool })
        });
        Self {
            sent: pool.send(req.map(H2Body::Given)),
            again,
        }
    }
}

impl<B> Future for H2Future<B> {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let err = match ready!(this.sent.as_mut().poll(cx)) {
                Ok(rsp) => return Poll::Ready(Ok(rsp)),
                Err(err) => err,
            };
            if !is_refused(&err) {
                return Poll::Ready(Err(err.into()));
            }
            match this.again.take() {
                Some(again) => {
                    tracing::debug!("HTTP/2 request refused unprocessed; sending it again");
                    let Again { head, pool } = *again;
                    this.sent.set(pool.send(head.map(|()| H2Body::Empty)));
                }
                None => return Poll::Ready(Err(RefusedError::new(err).into())),
            }
        }
    }
}

/// A copy of `req`'s head if it can be sent again as it is: it has no body (hyper takes a
/// body as it sends it) and is not a tunnel. Extensions stay behind: they are the caller's,
/// and the pool reads none.
fn head_if_resendable<B: Body>(req: &Request<B>) -> Option<Request<()>> {
    if !req.body().is_end_stream() || req.method() == Method::CONNECT {
        return None;
    }
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    Some(head)
}

/// Whether `err` says the server refused the request before processing it: an HTTP/2 error
/// (hyper keeps h2's as a source) that is a `REFUSED_STREAM` reset from the peer, or the
/// peer's `GOAWAY` (h2 gives a stream that error only when it is above the `GOAWAY`'s last
/// stream, i.e. never processed).
pub(super) fn is_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    #[test]
    fn only_bodiless_requests_that_are_not_tunnels_keep_a_head() {
        let get = Request::builder()
            .uri("http://app/a")
            .header("x-a", "1")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let head = head_if_resendable(&get).expect("a GET without a body is resent");
        assert_eq!(head.uri(), "http://app/a");
        assert_eq!(head.headers()["x-a"], "1");

        let post = Request::post("http://app/a")
            .body(Full::new(Bytes::from_static(b"body")))
            .expect("request");
        assert!(head_if_resendable(&post).is_none());

        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("app:443")
            .body(Empty::<Bytes>::new())
            .expect("request");
        assert!(head_if_resendable(&connect).is_none());
    }

    #[test]
    fn other_errors_are_not_refusals() {
        let io = std::io::Error::other("reset");
        assert!(!is_refused(&io));
    }
}
