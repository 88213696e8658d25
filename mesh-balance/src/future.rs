//! The response future of the HTTP balancer: (wait a bounded time for a ready endpoint,) drive
//! the picked endpoint's service to readiness, call it, and classify the answer once.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use mesh_core::classify::{ClassifiedBody, ClassifyEos, ClassifyResponse};
use mesh_core::retry::TriedEndpoints;
use mesh_core::{BoxError, Class};
use pin_project::pin_project;
use tower::Service;

use crate::balancer::PickFuture;
use crate::body::{BalancedBody, Outstanding};
use crate::outcome::Outcome;
use crate::pool::{Pick, Pool};

#[pin_project(project = StateProj)]
enum State<S, B, F> {
    /// Nothing was ready when the request came: wait for a change, up to the bound.
    Wait {
        pick: PickFuture<S>,
    },
    /// Picked; the endpoint's service was not ready at once.
    Ready {
        pick: Option<Pick<S>>,
    },
    Call {
        #[pin]
        call: F,
        outcome: Option<Outcome>,
    },
    /// The endpoint's service failed its readiness check in `call`.
    Failed(Option<BoxError>),
    Done(PhantomData<fn(B)>),
}

/// The response future of [`Balance`](crate::Balance).
///
/// Dropped while its request is in flight (the caller's deadline passed), its [`Outcome`]
/// still records the time waited as a latency sample: the true latency is at least that, and an
/// endpoint that stalls must look slow even though it never answered.
#[pin_project]
pub struct ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    classifier: Option<R>,
    /// The request, only while it waits for an endpoint or for its readiness (rare): boxed,
    /// so that the future stays small on the common path, where the request goes straight
    /// into the endpoint's call.
    req: Option<Box<Request<B>>>,
    #[pin]
    state: State<S, B, S::Future>,
}

impl<S, B, R> std::fmt::Debug for ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, R> ResponseFuture<S, B, R>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    R: ClassifyResponse,
{
    /// Picks at once and, when the endpoint's service is ready right away (the usual case),
    /// calls it at once; keeps the request (and the pool) only if it has to wait.
    #[inline]
    pub(crate) fn new(pool: &Arc<Pool<S>>, req: Request<B>, classifier: R) -> Self {
        let picked = match req.extensions().get::<TriedEndpoints>() {
            Some(tried) => pool.pick_untried(pool.now(), tried),
            None => pool.pick(pool.now()),
        };
        let Some(pick) = picked else {
            return Self {
                classifier: Some(classifier),
                req: Some(Box::new(req)),
                state: State::Wait {
                    pick: PickFuture::new(Arc::clone(pool)),
                },
            };
        };
        // Readiness is checked without a waker here; if it is not ready, the future polls it
        // again with the caller's, which registers properly.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (state, req) = start(pick, req, &mut cx);
        Self {
            classifier: Some(classifier),
            req,
            state,
        }
    }
}

/// The state after [`start`], and the request if it was kept to send later.
type Started<S, B> = (
    State<S, B, <S as Service<Request<B>>>::Future>,
    Option<Box<Request<B>>>,
);

/// Calls the picked endpoint's service if it is ready; otherwise keeps the pick (and the
/// request) to try again.
#[inline]
fn start<S, B>(pick: Pick<S>, req: Request<B>, cx: &mut Context<'_>) -> Started<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    let Pick {
        mut target,
        outcome,
    } = pick;
    match target.poll_ready(cx) {
        Poll::Ready(Ok(())) => (
            State::Call {
                call: target.call(req),
                outcome: Some(outcome),
            },
            None,
        ),
        Poll::Pending => (
            State::Ready {
                pick: Some(Pick { target, outcome }),
            },
            Some(Box::new(req)),
        ),
        Poll::Ready(Err(err)) => {
            let err: BoxError = err.into();
            outcome.record(Class::of_error(&*err));
            (State::Failed(Some(err)), None)
        }
    }
}

fn already_done<T>() -> Poll<Result<T, BoxError>> {
    Poll::Ready(Err(
        "balance: response future polled after completion".into()
    ))
}

impl<S, B, R, ResB> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    R: ClassifyResponse,
    ResB: Body,
{
    type Output = Result<Response<BalancedBody<ResB, R::Eos>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Wait { pick } => {
                    let pick = match ready!(Pin::new(pick).poll(cx)) {
                        Ok(pick) => pick,
                        Err(err) => {
                            this.state.set(State::Done(PhantomData));
                            return Poll::Ready(Err(err.into()));
                        }
                    };
                    let Some(req) = this.req.take() else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    if let Some(tried) = req.extensions().get::<TriedEndpoints>() {
                        tried.record(pick.outcome.endpoint().addr);
                    }
                    let (next, req) = start(pick, *req, cx);
                    *this.req = req;
                    this.state.set(next);
                }
                StateProj::Ready { pick } => {
                    let Some(Pick { target, .. }) = pick.as_mut() else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    let readiness = ready!(target.poll_ready(cx));
                    let (
                        Some(Pick {
                            mut target,
                            mut outcome,
                        }),
                        Some(req),
                    ) = (pick.take(), this.req.take())
                    else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    if let Err(err) = readiness {
                        let err: BoxError = err.into();
                        outcome.record(Class::of_error(&*err));
                        this.state.set(State::Done(PhantomData));
                        return Poll::Ready(Err(err));
                    }
                    // The latency runs from the call, not from the wait for readiness.
                    outcome.restart();
                    let call = target.call(*req);
                    this.state.set(State::Call {
                        call,
                        outcome: Some(outcome),
                    });
                }
                StateProj::Call { call, outcome } => {
                    let result = ready!(call.poll(cx));
                    let (Some(mut outcome), Some(classifier)) =
                        (outcome.take(), this.classifier.take())
                    else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    let result = match result {
                        Ok(rsp) => {
                            let eos = classifier.classify_response(&rsp);
                            // The head's class, asked once: it decides the latency sample here
                            // and rides in the body for the layers further out.
                            let head = eos.classify_head();
                            outcome.responded(head.is_some_and(Class::is_failure));
                            let guard = outcome.take_outstanding();
                            Ok(rsp.map(|body| {
                                let body = Outstanding::new(body, guard);
                                ClassifiedBody::with_head(body, eos, head, outcome)
                            }))
                        }
                        Err(err) => {
                            let err: BoxError = err.into();
                            outcome.record(Class::of_error(&*err));
                            Err(err)
                        }
                    };
                    this.state.set(State::Done(PhantomData));
                    return Poll::Ready(result);
                }
                StateProj::Failed(err) => {
                    let err = err.take();
                    this.state.set(State::Done(PhantomData));
                    return match err {
                        Some(err) => Poll::Ready(Err(err)),
                        None => already_done(),
                    };
                }
                StateProj::Done(_) => return already_done(),
            }
        }
    }
}
