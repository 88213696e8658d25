//! The response future of the balancer: pick (waiting a bounded time for a ready endpoint),
//! drive the endpoint's service to readiness, call it, and measure the answer.

use std::future::Future;
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
    Pick {
        req: Option<Request<B>>,
        wait: Option<Wait>,
    },
    Ready {
        endpoint: Arc<EndpointState<S>>,
        service: S,
        req: Option<Request<B>>,
    },
    Call {
        endpoint: Arc<EndpointState<S>>,
        guard: Option<OutstandingGuard<S>>,
        start: u64,
        #[pin]
        call: F,
    },
    Done,
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
    pool: Arc<Pool<S>>,
    classifier: Option<R>,
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
    S: Service<Request<B>>,
{
    pub(crate) fn new(pool: Arc<Pool<S>>, req: Request<B>, classifier: R) -> Self {
        Self {
            pool,
            classifier: Some(classifier),
            state: State::Pick {
                req: Some(req),
                wait: None,
            },
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
        endpoint,
        guard: Some(guard),
        start,
    }
}

fn penalized(latency: Duration, penalty: Duration) -> Duration {
    latency.max(penalty)
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
                StateProj::Pick { req, wait } => {
                    let now = this.pool.now();
                    if let Some(endpoint) = this.pool.pick(now) {
                        let mut service = endpoint.service.clone();
                        // Usually ready at once: call straight away, without moving the
                        // request through the `Ready` state.
                        let readiness = service.poll_ready(cx);
                        let Some(request) = req.take() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err("balance: request already sent".into()));
                        };
                        match readiness {
                            Poll::Ready(Ok(())) => {
                                this.state.set(call(endpoint, &mut service, request, now));
                                continue;
                            }
                            Poll::Pending => {
                                this.state.set(State::Ready {
                                    endpoint,
                                    service,
                                    req: Some(request),
                                });
                                return Poll::Pending;
                            }
                            Poll::Ready(Err(err)) => {
                                let err: BoxError = err.into();
                                if let Some(classifier) = this.classifier.take() {
                                    let class = classifier.classify_error(&*err);
                                    this.pool.on_outcome(&endpoint, class, now);
                                }
                                this.state.set(State::Done);
                                return Poll::Ready(Err(err));
                            }
                        }
                    }
                    let wait = wait.get_or_insert_with(|| Wait {
                        notified: notified(&this.pool.changed),
                        deadline: Box::pin(tokio::time::sleep(this.pool.config.ready_timeout)),
                    });
                    // Registered for a change first, then one more look: no change is missed.
                    if wait.notified.as_mut().poll(cx).is_ready() {
                        wait.notified = notified(&this.pool.changed);
                        continue;
                    }
                    if this.pool.pick(this.pool.now()).is_some() {
                        continue;
                    }
                    ready!(wait.deadline.as_mut().poll(cx));
                    this.state.set(State::Done);
                    let err = UnavailableError::new(Unavailable::NoReadyEndpoint);
                    return Poll::Ready(Err(err.into()));
                }
                StateProj::Ready {
                    endpoint,
                    service,
                    req,
                } => {
                    let readiness = service.poll_ready(cx);
                    if readiness.is_pending() {
                        return Poll::Pending;
                    }
                    let start = this.pool.now();
                    if let Poll::Ready(Err(err)) = readiness {
                        let err: BoxError = err.into();
                        if let Some(classifier) = this.classifier.take() {
                            let class = classifier.classify_error(&*err);
                            this.pool.on_outcome(endpoint, class, start);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(err));
                    }
                    let Some(req) = req.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("balance: request already sent".into()));
                    };
                    let endpoint = Arc::clone(endpoint);
                    let next = call(endpoint, service, req, start);
                    this.state.set(next);
                }
                StateProj::Call {
                    endpoint,
                    guard,
                    start,
                    call,
                } => {
                    let result = ready!(call.poll(cx));
                    let now = this.pool.now();
                    let latency = Duration::from_nanos(now.saturating_sub(*start));
                    let config = &this.pool.config;
                    let Some(classifier) = this.classifier.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("balance: polled after completion".into()));
                    };
                    let outcome = match result {
                        Ok(rsp) => {
                            let eos = classifier.classify_response(&rsp);
                            let failed_head = eos.classify_head().is_some_and(|c| c.is_failure());
                            let sample = if failed_head {
                                penalized(latency, config.failure_penalty)
                            } else {
                                latency
                            };
                            endpoint.ewma.sample(sample, now, config.decay);
                            let recorder = Recorder::new(
                                Arc::clone(this.pool),
                                Arc::clone(endpoint),
                                failed_head,
                                now,
                            );
                            let guard = guard.take();
                            Ok(rsp.map(|body| {
                                ClassifiedBody::new(Outstanding::new(body, guard), eos, recorder)
                            }))
                        }
                        Err(err) => {
                            let err: BoxError = err.into();
                            let sample = penalized(latency, config.failure_penalty);
                            endpoint.ewma.sample(sample, now, config.decay);
                            this.pool
                                .on_outcome(endpoint, classifier.classify_error(&*err), now);
                            Err(err)
                        }
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(outcome);
                }
                StateProj::Done => {
                    return Poll::Ready(Err("balance: polled after completion".into()));
                }
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
        let this = self.project();
        if let StateProj::Call {
            endpoint, start, ..
        } = this.state.project()
        {
            let now = this.pool.now();
            let waited = Duration::from_nanos(now.saturating_sub(*start));
            endpoint.ewma.sample(waited, now, this.pool.config.decay);
        }
    }
}
