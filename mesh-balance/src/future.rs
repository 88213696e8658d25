//! The response future of the balancer: (wait a bounded time for a ready endpoint,) drive the
//! picked endpoint's service to readiness, call it, and measure the answer.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use mesh_core::BoxError;
use mesh_core::classify::{ClassifiedBody, ClassifyEos, ClassifyResponse};
use mesh_core::error::{Unavailable, UnavailableError};
use pin_project::{pin_project, pinned_drop};
use tokio::time::Sleep;
use tower::Service;

use crate::body::{BalancedBody, Outstanding, OutstandingGuard, Recorder};
use crate::pool::Pool;
use crate::state::EndpointState;

/// Waiting for an endpoint to become ready: allocated only on that (rare) path.
struct Wait {
    notified: Pin<Box<dyn Future<Output = ()> + Send>>,
    deadline: Pin<Box<Sleep>>,
}

fn notified(notify: &Arc<tokio::sync::Notify>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let notify = Arc::clone(notify);
    Box::pin(async move { notify.notified().await })
}

#[pin_project(project = StateProj)]
enum State<S, B, F> {
    /// Nothing was ready when the request came: wait for a change, up to the bound.
    Wait {
        pool: Arc<Pool<S>>,
        wait: Option<Wait>,
    },
    /// Picked; the endpoint's service is to be made ready and called.
    Picked {
        endpoint: Option<Arc<EndpointState<S>>>,
        picked_at: u64,
    },
    /// The endpoint's service was not ready at once.
    Ready {
        endpoint: Option<Arc<EndpointState<S>>>,
        service: S,
    },
    Call {
        endpoint: Option<Arc<EndpointState<S>>>,
        guard: Option<OutstandingGuard<S>>,
        start: u64,
        #[pin]
        call: F,
    },
    /// The endpoint's service failed its readiness check in `call`.
    Failed(Option<BoxError>),
    Done(std::marker::PhantomData<fn(B)>),
}

/// The response future of [`Balance`](crate::Balance).
///
/// Dropped while its request is in flight (the caller's deadline passed), it still records the
/// time waited as a latency sample: the true latency is at least that, and an endpoint that
/// stalls must look slow even though it never answered.
#[pin_project(PinnedDrop)]
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
    pub(crate) fn new(pool: &Arc<Pool<S>>, req: Request<B>, classifier: R) -> Self {
        let now = pool.now();
        let Some(endpoint) = pool.pick(now) else {
            return Self {
                classifier: Some(classifier),
                req: Some(Box::new(req)),
                state: State::Wait {
                    pool: Arc::clone(pool),
                    wait: None,
                },
            };
        };
        let mut service = endpoint.service.clone();
        // Readiness is checked without a waker here; if it is not ready, the future polls it
        // again with the caller's, which registers properly.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut classifier = Some(classifier);
        let (state, req) = match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => (call(endpoint, &mut service, req, now), None),
            Poll::Pending => (
                State::Ready {
                    endpoint: Some(endpoint),
                    service,
                },
                Some(Box::new(req)),
            ),
            Poll::Ready(Err(err)) => {
                let err: BoxError = err.into();
                if let Some(classifier) = classifier.take() {
                    let class = classifier.classify_error(&*err);
                    endpoint.core.on_outcome(&endpoint, class, now);
                }
                (State::Failed(Some(err)), None)
            }
        };
        Self {
            classifier,
            req,
            state,
        }
    }
}

/// Sends `req` to the ready `service` of `endpoint`, counting it outstanding from `start`.
fn call<S, B>(
    endpoint: Arc<EndpointState<S>>,
    service: &mut S,
    req: Request<B>,
    start: u64,
) -> State<S, B, S::Future>
where
    S: Service<Request<B>>,
{
    let guard = OutstandingGuard::new(Arc::clone(&endpoint));
    State::Call {
        call: service.call(req),
        endpoint: Some(endpoint),
        guard: Some(guard),
        start,
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
    type Output = Result<Response<BalancedBody<ResB, R::Eos, S>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Wait { pool, wait } => {
                    let now = pool.now();
                    if let Some(endpoint) = pool.pick(now) {
                        this.state.set(State::Picked {
                            endpoint: Some(endpoint),
                            picked_at: now,
                        });
                        continue;
                    }
                    let core = &pool.core;
                    let wait = wait.get_or_insert_with(|| Wait {
                        notified: notified(&core.changed),
                        deadline: Box::pin(tokio::time::sleep(core.config.ready_timeout)),
                    });
                    // Registered for a change first, then one more look: no change is missed.
                    if wait.notified.as_mut().poll(cx).is_ready() {
                        wait.notified = notified(&core.changed);
                        continue;
                    }
                    if pool.pick(pool.now()).is_some() {
                        continue;
                    }
                    ready!(wait.deadline.as_mut().poll(cx));
                    this.state.set(State::Done(PhantomData));
                    let err = UnavailableError::new(Unavailable::NoReadyEndpoint);
                    return Poll::Ready(Err(err.into()));
                }
                StateProj::Picked {
                    endpoint,
                    picked_at,
                } => {
                    let Some(endpoint) = endpoint.take() else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    let mut service = endpoint.service.clone();
                    // Usually ready at once: then the call starts at the pick.
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let Some(request) = this.req.take().map(|r| *r) else {
                                this.state.set(State::Done(PhantomData));
                                return already_done();
                            };
                            let next = call(endpoint, &mut service, request, *picked_at);
                            this.state.set(next);
                        }
                        Poll::Pending => {
                            this.state.set(State::Ready {
                                endpoint: Some(endpoint),
                                service,
                            });
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(err)) => {
                            let err: BoxError = err.into();
                            if let Some(classifier) = this.classifier.take() {
                                let class = classifier.classify_error(&*err);
                                endpoint.core.on_outcome(&endpoint, class, *picked_at);
                            }
                            this.state.set(State::Done(PhantomData));
                            return Poll::Ready(Err(err));
                        }
                    }
                }
                StateProj::Ready { endpoint, service } => {
                    let readiness = ready!(service.poll_ready(cx));
                    let (Some(endpoint), Some(request)) =
                        (endpoint.take(), this.req.take().map(|r| *r))
                    else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    let start = endpoint.core.now();
                    if let Err(err) = readiness {
                        let err: BoxError = err.into();
                        if let Some(classifier) = this.classifier.take() {
                            let class = classifier.classify_error(&*err);
                            endpoint.core.on_outcome(&endpoint, class, start);
                        }
                        this.state.set(State::Done(PhantomData));
                        return Poll::Ready(Err(err));
                    }
                    let next = call(endpoint, service, request, start);
                    this.state.set(next);
                }
                StateProj::Call {
                    endpoint,
                    guard,
                    start,
                    call,
                } => {
                    let result = ready!(call.poll(cx));
                    let (Some(endpoint), Some(classifier)) =
                        (endpoint.take(), this.classifier.take())
                    else {
                        this.state.set(State::Done(PhantomData));
                        return already_done();
                    };
                    let core = &endpoint.core;
                    let now = core.now();
                    let latency = Duration::from_nanos(now.saturating_sub(*start));
                    let config = &core.config;
                    let outcome = match result {
                        Ok(rsp) => {
                            let eos = classifier.classify_response(&rsp);
                            let failed_head = eos.classify_head().is_some_and(|c| c.is_failure());
                            let sample = if failed_head {
                                latency.max(config.failure_penalty)
                            } else {
                                latency
                            };
                            endpoint.ewma.sample(sample, now, config.decay);
                            let guard = guard.take();
                            let recorder = Recorder::new(endpoint, failed_head, now);
                            Ok(rsp.map(|body| {
                                ClassifiedBody::new(Outstanding::new(body, guard), eos, recorder)
                            }))
                        }
                        Err(err) => {
                            let err: BoxError = err.into();
                            endpoint.ewma.sample(
                                latency.max(config.failure_penalty),
                                now,
                                config.decay,
                            );
                            core.on_outcome(&endpoint, classifier.classify_error(&*err), now);
                            Err(err)
                        }
                    };
                    this.state.set(State::Done(PhantomData));
                    return Poll::Ready(outcome);
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

#[pinned_drop]
impl<S, B, R> PinnedDrop for ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    fn drop(self: Pin<&mut Self>) {
        if let StateProj::Call {
            endpoint: Some(endpoint),
            start,
            ..
        } = self.project().state.project()
        {
            let now = endpoint.core.now();
            let waited = Duration::from_nanos(now.saturating_sub(*start));
            let decay = endpoint.core.config.decay;
            // A lower bound on the latency: it may only raise the estimate, never lower it
            // (a caller that gives up after 1 ms says nothing about a 5 ms endpoint).
            if waited.as_secs_f64() * 1e9 > endpoint.ewma.get(now, decay) {
                endpoint.ewma.sample(waited, now, decay);
            }
        }
    }
}
