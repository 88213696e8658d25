//! The balancer service and the task that keeps its endpoint set live.

use std::fmt::Display;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use http::{Request, Response};
use http_body::Body;
use mesh_core::classify::{AutoClassify, Classify, ClassifyResponse};
use mesh_core::{BoxError, Endpoint};
use tokio::task::JoinHandle;
use tower::discover::Change;
use tower::{Service, ServiceExt};

use crate::body::BalancedBody;
use crate::config::BalanceConfig;
use crate::future::ResponseFuture;
use crate::pool::{Pool, Update};
use crate::random::{Random, ThreadRandom};
use crate::snapshot::EndpointSnapshot;
use crate::state::{EndpointState, EndpointStatus};

/// The most discovery changes applied as one batch.
const MAX_BATCH: usize = 4096;

/// How often the driver refreshes the median latency estimate used to spot outliers.
const MEDIAN_REFRESH: Duration = Duration::from_millis(250);

/// Stops the driver when the last clone of the balancer goes.
#[derive(Debug)]
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Balances requests over a live set of endpoints: power of two choices by peak-EWMA load,
/// weights, failure accrual with probing, and a bounded wait when nothing is ready.
///
/// A background task (spawned by [`Balance::new`], stopped with the last clone) applies
/// discovery changes as they come and drives each new endpoint's service to readiness, so
/// neither waits for a request. Each request is picked when called (its future waits only if
/// nothing is ready) and sent to exactly the endpoint picked (the endpoint's service is cloned
/// for the call), so a removal can never redirect it. Cheap to clone; clones share the
/// endpoint set.
pub struct Balance<S, C = AutoClassify> {
    pool: Arc<Pool<S>>,
    classify: C,
    _driver: Arc<Driver>,
}

impl<S, C: Clone> Clone for Balance<S, C> {
    fn clone(&self) -> Self {
        Self {
            pool: Arc::clone(&self.pool),
            classify: self.classify.clone(),
            _driver: Arc::clone(&self._driver),
        }
    }
}

impl<S, C> std::fmt::Debug for Balance<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance").finish_non_exhaustive()
    }
}

impl<S> Balance<S> {
    /// Balances over the endpoints `discover` reports, making each endpoint's service with
    /// `make`. Must be called within a tokio runtime (it spawns the driver).
    pub fn new<D, E, M, B>(discover: D, make: M, config: BalanceConfig) -> Self
    where
        D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
        E: Display + Send + 'static,
        M: FnMut(&Endpoint) -> S + Send + 'static,
        S: Service<Request<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        B: 'static,
    {
        Self::with_random(discover, make, config, Arc::new(ThreadRandom))
    }

    /// Like [`Balance::new`], drawing from `random` (seeded in tests and simulations).
    pub fn with_random<D, E, M, B>(
        discover: D,
        make: M,
        config: BalanceConfig,
        random: Arc<dyn Random>,
    ) -> Self
    where
        D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
        E: Display + Send + 'static,
        M: FnMut(&Endpoint) -> S + Send + 'static,
        S: Service<Request<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        B: 'static,
    {
        let pool = Arc::new(Pool::new(config, random));
        let driver = tokio::spawn(drive::<D, E, M, S, B>(Arc::clone(&pool), discover, make));
        Self {
            pool,
            classify: AutoClassify::new(),
            _driver: Arc::new(Driver(driver)),
        }
    }
}

impl<S, C> Balance<S, C> {
    /// Classifies outcomes (for accrual and the latency penalty) with `classify` instead of
    /// the gRPC-aware default.
    pub fn with_classify<C2>(self, classify: C2) -> Balance<S, C2> {
        Balance {
            pool: self.pool,
            classify,
            _driver: self._driver,
        }
    }

    /// Every endpoint's address, status, latency estimate and outstanding requests, including
    /// removed endpoints still draining.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        self.pool.snapshot()
    }

    /// How many endpoints are ejected (or being probed) now.
    pub fn ejected(&self) -> usize {
        self.pool.ejected()
    }
}

/// Applies discovery changes and readies new endpoints, for as long as the balancer lives.
async fn drive<D, E, M, S, B>(pool: Arc<Pool<S>>, discover: D, mut make: M)
where
    D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
    E: Display + Send + 'static,
    M: FnMut(&Endpoint) -> S + Send + 'static,
    S: Service<Request<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    B: 'static,
{
    let mut discover = pin!(discover);
    let mut discovering = true;
    // The outlier reference is refreshed off the hot path, a few times a second.
    let mut refresh = tokio::time::interval(MEDIAN_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let change = tokio::select! {
            change = poll_fn(|cx| discover.as_mut().poll_next(cx)), if discovering => change,
            _ = refresh.tick() => {
                pool.refresh_median();
                continue;
            }
        };
        // Take every change already waiting, and apply them as one batch.
        let mut batch = Vec::new();
        let mut next = change;
        loop {
            match next {
                Some(Ok(Change::Insert(addr, mut endpoint))) => {
                    endpoint.addr = addr;
                    let service = make(&endpoint);
                    let state = Arc::new(EndpointState::new(
                        endpoint,
                        service,
                        Arc::clone(&pool.core),
                        pool.now(),
                    ));
                    tokio::spawn(make_ready::<S, B>(Arc::clone(&state)));
                    batch.push(Update::Insert(state));
                }
                Some(Ok(Change::Remove(addr))) => batch.push(Update::Remove(addr)),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "discovery error; keeping the current endpoints");
                }
                None => {
                    tracing::debug!("discovery ended; keeping the current endpoints");
                    discovering = false;
                    break;
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            match poll_fn(|cx| Poll::Ready(discover.as_mut().poll_next(cx))).await {
                Poll::Ready(change) => next = change,
                Poll::Pending => break,
            }
        }
        pool.apply(batch);
    }
}

/// Drives a new endpoint's service to readiness, retrying with backoff, then puts it in
/// rotation.
async fn make_ready<S, B>(state: Arc<EndpointState<S>>)
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    let mut service = state.service.clone();
    let mut wait = Duration::from_millis(100);
    loop {
        // Into a `BoxError` before any other await, so the future holds nothing not `Send`.
        let ready: Result<(), BoxError> = ServiceExt::<Request<B>>::ready(&mut service)
            .await
            .map(|_| ())
            .map_err(Into::into);
        match ready {
            Ok(()) => {
                state.mark_ready();
                state.core.changed.notify_waiters();
                return;
            }
            Err(err) => {
                tracing::debug!(endpoint = %state.endpoint, error = %err, "endpoint not ready yet");
                if state.status() == EndpointStatus::Draining {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

type Eos<C> = <<C as Classify>::Response as ClassifyResponse>::Eos;

impl<S, C, B, ResB> Service<Request<B>> for Balance<S, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    ResB: Body,
{
    type Response = Response<BalancedBody<ResB, Eos<C>, S>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C::Response>;

    /// Always ready: each request waits for an endpoint in its own future, up to the
    /// configured bound, so one waiting request never holds up the balancer's other users.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    /// Picks the endpoint right away (no reference to the pool is then kept by the
    /// request); only when none is ready does the future keep one, to wait.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let classifier = self.classify.classify_request(&req);
        ResponseFuture::new(&self.pool, req, classifier)
    }
}
