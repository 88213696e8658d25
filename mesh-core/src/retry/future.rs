//! The response future of [`Retry`](super::Retry): one try after another until an outcome is
//! final, the policy says stop, or the budget runs out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project::pin_project;
use tokio::time::{Sleep, sleep};
use tower::Service;

use super::replay::{ReplayBody, ReplaySource};
use super::{RetryBody, Shared};
use crate::classify::{Class, Classified};
use crate::error::BoxError;
use crate::timeout::TimeoutError;

/// What a retry needs of the original request: its head, and its recorded body.
pub(super) struct Retrying<B> {
    pub(super) parts: http::request::Parts,
    pub(super) source: ReplaySource<B>,
}

/// A response held back until its first frame is read.
struct Peek<B> {
    head: Option<http::response::Parts>,
    body: Option<B>,
}

/// The response future of [`Retry`](super::Retry). It judges each try by the classification
/// the service it wraps made (the response head's class, or for a gRPC status still to come
/// the class its first frame decided), never by classifying again.
#[pin_project]
pub struct ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
    ResB: Body,
{
    service: S,
    retry: Option<Retrying<ReqB>>,
    shared: Arc<Shared>,
    /// Tries made so far, the one in flight included.
    attempt: u32,
    /// The per-try deadline, armed when a try first has to wait.
    per_try: Option<Pin<Box<Sleep>>>,
    #[pin]
    state: State<S::Future, ResB>,
}

#[pin_project(project = StateProj)]
enum State<F, B> {
    /// A try is in flight.
    Called {
        #[pin]
        future: F,
    },
    /// A response held back for its first frame: a gRPC response whose status will come in the
    /// trailers (trailers with a retryable status are retried), or a small sized one that a
    /// lost connection could still cut (an error before the first byte is retried). Anything
    /// else hands it on. Not boxed: with resets retried, most small responses pass here.
    Peeking(Peek<B>),
    /// Backing off before the next try.
    BackingOff { sleep: Pin<Box<Sleep>> },
    /// Waiting for the service to be ready for the next try.
    Readying,
    /// Finished.
    Done,
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
    ResB: Body,
{
    pub(super) fn new(
        service: S,
        first: S::Future,
        retry: Option<Retrying<ReqB>>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            service,
            retry,
            shared,
            attempt: 1,
            per_try: None,
            state: State::Called { future: first },
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: Body + Unpin,
    ResB: Classified,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<RetryBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let outcome = match future.poll(cx) {
                        Poll::Ready(outcome) => outcome.map_err(Into::into),
                        Poll::Pending => {
                            let Some(limit) = this.shared.policy.per_try_timeout else {
                                return Poll::Pending;
                            };
                            let deadline =
                                this.per_try.get_or_insert_with(|| Box::pin(sleep(limit)));
                            ready!(deadline.as_mut().poll(cx));
                            Err(TimeoutError::response_headers(limit).into())
                        }
                    };
                    *this.per_try = None;
                    let rsp = match outcome {
                        Ok(rsp) => rsp,
                        Err(err) => {
                            let class = Class::of_error(&*err);
                            if should_retry(class, this.shared, this.retry, *this.attempt) {
                                this.state.set(back_off(this.shared, *this.attempt));
                                continue;
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(err));
                        }
                    };
                    match rsp.body().head_class() {
                        Some(class)
                            if should_retry(class, this.shared, this.retry, *this.attempt) =>
                        {
                            this.state.set(back_off(this.shared, *this.attempt));
                        }
                        class
                            if (class.is_none()
                                && could_retry_grpc(this.shared, this.retry, *this.attempt))
                                || could_retry_cut(
                                    rsp.body(),
                                    this.shared,
                                    this.retry,
                                    *this.attempt,
                                ) =>
                        {
                            let (head, body) = rsp.into_parts();
                            this.state.set(State::Peeking(Peek {
                                head: Some(head),
                                body: Some(body),
                            }));
                        }
                        _ => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(rsp.map(RetryBody::plain)));
                        }
                    }
                }
                StateProj::Peeking(peek) => {
                    let Peek { head, body } = peek;
                    let Some(stream) = body.as_mut() else {
                        return Poll::Ready(Err("retry: response polled after completion".into()));
                    };
                    let first = ready!(Pin::new(&mut *stream).poll_frame(cx))
                        .map(|frame| frame.map_err(Into::into));
                    let class = match &first {
                        // Trailers first (no message): the classification has just decided.
                        Some(Ok(frame)) if frame.is_trailers() => stream.class(),
                        // Cut before its first byte (the server died after the head): nothing
                        // has reached the caller yet, so it is as good as a reset.
                        Some(Err(err)) => {
                            Some(stream.class().unwrap_or_else(|| Class::of_error(&**err)))
                        }
                        _ => None,
                    };
                    if class.is_some_and(|class| {
                        should_retry(class, this.shared, this.retry, *this.attempt)
                    }) {
                        this.state.set(back_off(this.shared, *this.attempt));
                        continue;
                    }
                    let (Some(head), Some(stream)) = (head.take(), body.take()) else {
                        return Poll::Ready(Err("retry: response polled after completion".into()));
                    };
                    this.state.set(State::Done);
                    let body = RetryBody::peeked(first, stream);
                    return Poll::Ready(Ok(Response::from_parts(head, body)));
                }
                StateProj::BackingOff { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    if let Err(err) = ready!(this.service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(err.into()));
                    }
                    let Some(retry) = this.retry.as_ref() else {
                        return Poll::Ready(Err("retry: no request to retry".into()));
                    };
                    let req = Request::from_parts(retry.parts.clone(), retry.source.next_try());
                    *this.attempt += 1;
                    let future = this.service.call(req);
                    this.state.set(State::Called { future });
                }
                StateProj::Done => {
                    return Poll::Ready(Err(
                        "retry: response future polled after completion".into()
                    ));
                }
            }
        }
    }
}

/// Whether to try again after `class`: the outcome is retryable, tries are left, the body can
/// be replayed, and the budget grants it (asked last, so that only real retries withdraw).
fn should_retry<B: Body + Unpin>(
    class: Class,
    shared: &Shared,
    retry: &Option<Retrying<B>>,
    attempt: u32,
) -> bool {
    let Some(retry) = retry else {
        return false;
    };
    attempt < shared.policy.max_attempts
        && shared.policy.is_retryable(class)
        && retry.source.is_replayable()
        && shared.budget.try_withdraw()
}

/// A response body at most this long (by its `Content-Length`) is held back for its first frame
/// when a reset could be retried: waiting for a body the server has already sized costs no
/// latency, and a server that dies between head and body then costs a retry, not a cut response.
const CUT_PEEK_MAX: u64 = 64 * 1024;

/// Whether a small, sized response that has not ended with its head is worth holding back for
/// its first frame, so that a connection lost before it is retried ([`RetryPolicy::retry_resets`]
/// (super::RetryPolicy::retry_resets)). Streams of unknown length (server-sent events, gRPC
/// streams) are never held back this way: their first frame may be a long time coming.
fn could_retry_cut<B: Body, R: Body>(
    body: &R,
    shared: &Shared,
    retry: &Option<Retrying<B>>,
    attempt: u32,
) -> bool {
    retry.is_some()
        && attempt < shared.policy.max_attempts
        && shared.policy.retries_resets()
        && !body.is_end_stream()
        && body
            .size_hint()
            .exact()
            .is_some_and(|len| len > 0 && len <= CUT_PEEK_MAX)
}

/// Whether a gRPC response with its status still to come is worth holding back for its first
/// frame.
fn could_retry_grpc<B: Body>(shared: &Shared, retry: &Option<Retrying<B>>, attempt: u32) -> bool {
    retry.is_some() && attempt < shared.policy.max_attempts && shared.policy.retries_grpc()
}

fn back_off<F, B>(shared: &Shared, attempt: u32) -> State<F, B> {
    let delay = shared.policy.backoff.delay(attempt);
    if delay.is_zero() {
        State::Readying
    } else {
        State::BackingOff {
            sleep: Box::pin(sleep(delay)),
        }
    }
}

impl<S, ReqB, ResB> std::fmt::Debug for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
    ResB: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .field("retryable", &self.retry.is_some())
            .finish_non_exhaustive()
    }
}
