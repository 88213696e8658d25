//! The response future of an [`Http2Pool`](super::Http2Pool) request: wait for the
//! connection, open the stream, wait for the response head; send a refused request again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use pin_project::pin_project;

use super::body::{Http2Body, pipe};
use super::conn::{Checkout, Handle, Shared};
use crate::error::{BoxError, RefusedError};

/// How many times a request that was not sent yet moves to a new connection because the one it
/// had stopped taking requests (a `GOAWAY` came first): a server restarting sends one per
/// connection, and two in a row are not a race.
const MOVES: u8 = 2;

/// The response future of an [`Http2Pool`](super::Http2Pool) request.
#[pin_project]
pub struct Http2Future<B> {
    shared: Arc<Shared>,
    #[pin]
    state: State,
    /// The request, until its stream is opened.
    request: Option<Request<B>>,
    /// A copy of its head while it may be sent again (a bodiless request not yet answered),
    /// boxed: most requests are answered and never need it.
    again: Option<Box<Request<()>>>,
    moves: u8,
}

#[pin_project(project = StateProj)]
enum State {
    /// Waiting for a connection (from this attempt, as this waiter, once it waits).
    Checkout(Option<(u64, usize)>),
    /// Waiting for room for a stream on attempt `.1`'s connection.
    Open(Handle, u64),
    /// Waiting for the response head.
    Sent(#[pin] h2::client::ResponseFuture),
    Done,
}

impl<B> std::fmt::Debug for Http2Future<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            State::Checkout(_) => "Http2Future::Checkout",
            State::Open(..) => "Http2Future::Open",
            State::Sent(_) => "Http2Future::Sent",
            State::Done => "Http2Future::Done",
        })
    }
}

impl<B: Body> Http2Future<B> {
    pub(super) fn new(shared: Arc<Shared>, request: Request<B>) -> Self {
        Self {
            shared,
            state: State::Checkout(None),
            again: head_if_resendable(&request).map(Box::new),
            request: Some(request),
            moves: 0,
        }
    }
}

impl<B> Future for Http2Future<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Http2Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checkout(waited) => {
                    let uri = match (this.request.as_ref(), this.again.as_ref()) {
                        (Some(req), _) => req.uri(),
                        (None, Some(head)) => head.uri(),
                        (None, None) => return Poll::Ready(Err(Gone.into())),
                    };
                    match this.shared.checkout(uri, *waited, cx) {
                        Checkout::Ready(handle, attempt) => {
                            this.state.set(State::Open(handle, attempt));
                        }
                        Checkout::Waiting(attempt, place) => {
                            *waited = Some((attempt, place));
                            return Poll::Pending;
                        }
                        Checkout::Failed(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                    }
                }
                StateProj::Open(handle, attempt) => {
                    let opened = match ready!(handle.poll_ready(cx)) {
                        Ok(()) => open(handle, this.request, this.again),
                        Err(error) => Err(error),
                    };
                    match opened {
                        Ok(response) => {
                            this.shared.sent();
                            this.state.set(State::Sent(response));
                        }
                        Err(error) => {
                            if !moves_on(&error) {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(error.into()));
                            }
                            // The connection takes no more streams (a GOAWAY, or it closed):
                            // nothing was sent, so the request moves to a new one, if it (or
                            // the copy of its head) is still here.
                            this.shared.forget(*attempt);
                            let here = this.request.is_some() || this.again.is_some();
                            if !here || *this.moves >= MOVES {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(RefusedError::new(error).into()));
                            }
                            *this.moves += 1;
                            this.state.set(State::Checkout(None));
                        }
                    }
                }
                StateProj::Sent(response) => {
                    let error = match ready!(response.poll(cx)) {
                        Ok(response) => {
                            this.state.set(State::Done);
                            this.again.take();
                            let (head, recv) = response.into_parts();
                            let body = Http2Body::new(recv, &head.headers);
                            return Poll::Ready(Ok(Response::from_parts(head, body)));
                        }
                        Err(error) => error,
                    };
                    if !is_refused(&error) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    if this.again.is_none() {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(RefusedError::new(error).into()));
                    }
                    tracing::debug!("HTTP/2 request refused unprocessed; sending it again");
                    // Its copy goes out next (`open` takes it); a second refusal is final.
                    this.state.set(State::Checkout(None));
                }
                StateProj::Done => return Poll::Ready(Err(Gone.into())),
            }
        }
    }
}

/// Opens the stream: the request if it is still here, else the copy of its head (sent again,
/// without a body, and not kept for another time). A body is streamed by a task of its own.
fn open<B>(
    handle: &mut Handle,
    request: &mut Option<Request<B>>,
    again: &mut Option<Box<Request<()>>>,
) -> Result<h2::client::ResponseFuture, h2::Error>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let Some(req) = request.take() else {
        let head = again.take().map_or_else(|| Request::new(()), |head| *head);
        return handle
            .send_request(head, true)
            .map(|(response, _)| response);
    };
    let (head, body) = req.into_parts();
    let end = body.is_end_stream();
    // On an error the head is gone with it: a bodiless request still has its copy.
    let (response, send) = handle.send_request(Request::from_parts(head, ()), end)?;
    if !end {
        tokio::spawn(pipe(body, send));
    }
    Ok(response)
}

/// Whether `error` from opening a stream means this connection takes no more: it went away
/// or broke, not that the request was malformed.
fn moves_on(error: &h2::Error) -> bool {
    error.is_go_away() || error.is_io() || error.is_remote()
}

/// A copy of `req`'s head if it can be sent again as it is: it has no body (its body would be
/// gone by then) and is not a tunnel. Extensions stay behind: they are the caller's, and the
/// connection reads none.
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
/// that is a `REFUSED_STREAM` reset from the peer, or the peer's `GOAWAY` (h2 gives a stream
/// that error only when it is above the `GOAWAY`'s last stream, i.e. never processed).
fn is_refused(err: &h2::Error) -> bool {
    err.is_remote() && (err.is_go_away() || err.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// A response future polled after it finished.
#[derive(Debug, thiserror::Error)]
#[error("an HTTP/2 response future was polled after it finished")]
struct Gone;

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
    fn local_errors_are_not_refusals() {
        assert!(!is_refused(&h2::Error::from(h2::Reason::REFUSED_STREAM)));
    }
}
