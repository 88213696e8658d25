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
use pin_project::pin_project;
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
#[pin_project]
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
                    if let Some(endpoint) = this.pool.pick() {
                        let service = endpoint.service.clone();
                        let req = req.take();
                        this.state.set(State::Ready {
                            endpoint,
                            service,
                            req,
                        });
                        continue;
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
                    if this.pool.pick().is_some() {
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
                    if let Err(err) = ready!(service.poll_ready(cx)) {
                        let err: BoxError = err.into();
                        if let Some(classifier) = this.classifier.take() {
                            this.pool
                                .on_outcome(endpoint, classifier.classify_error(&*err));
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(err));
                    }
                    let Some(req) = req.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("balance: request already sent".into()));
                    };
                    let guard = OutstandingGuard::new(Arc::clone(endpoint));
                    let call = service.call(req);
                    let endpoint = Arc::clone(endpoint);
                    let start = this.pool.now();
                    this.state.set(State::Call {
                        endpoint,
                        guard: Some(guard),
                        start,
                        call,
                    });
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
                                .on_outcome(endpoint, classifier.classify_error(&*err));
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
