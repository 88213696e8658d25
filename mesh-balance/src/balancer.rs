//! The protocol-agnostic core: a live set of endpoints, each reached by a `T` of the caller's
//! choosing, the pick (power of two choices over peak-EWMA load), and the outcome handle. The
//! HTTP [`Balance`](crate::Balance) is a thin service over it; opaque TCP uses it directly.

use std::fmt::Display;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;
use mesh_core::error::{Unavailable, UnavailableError};
use mesh_core::{BoxError, Endpoint};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tower::discover::Change;

use crate::config::BalanceConfig;
use crate::pool::{Member, Pick, Pool, Update};
use crate::snapshot::EndpointSnapshot;
use crate::state::{EndpointStats, EndpointStatus};
use mesh_core::random::{Random, ThreadRandom};

/// The most discovery changes applied as one batch.
const MAX_BATCH: usize = 4096;

/// How often the driver refreshes the median latency estimate used to spot outliers.
const MEDIAN_REFRESH: Duration = Duration::from_millis(250);

/// Brings a new endpoint's target to readiness (an HTTP client's pool connecting, say).
pub type Readiness<T> =
    Arc<dyn Fn(T) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync>;

/// Stops the driver when the last clone of the balancer goes.
#[derive(Debug)]
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A live set of endpoints and the pick over it, for any protocol: [`Balancer::pick`] chooses
/// an endpoint by power of two choices over peak-EWMA load (with weights, failure accrual and
/// the outlier re-draw) and returns its `T` with an [`Outcome`](crate::Outcome) that records how
/// the work went.
///
/// A background task (spawned by the constructors, stopped with the last clone) applies
/// discovery changes as they come and brings each new endpoint into rotation: at once, or once
/// its [`Readiness`] says so. Picks take no lock. Cheap to clone; clones share the set.
///
/// ```
/// use mesh_balance::discover::fixed;
/// use mesh_balance::{BalanceConfig, Balancer};
/// use mesh_core::{Class, Endpoint};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// // Each endpoint is reached by its address (a TCP connector would do).
/// let endpoints = ["127.0.0.1:8001", "127.0.0.1:8002"].map(|a| Endpoint::new(a.parse().unwrap()));
/// let balancer = Balancer::new(fixed(endpoints), |e: &Endpoint| e.addr, BalanceConfig::default());
/// let pick = balancer.pick_ready().await?;
/// // ... connect to `pick.target`; then say how it went:
/// let mut outcome = pick.outcome;
/// outcome.responded(false);
/// outcome.record(Class::Success);
/// # Ok::<(), mesh_core::BoxError>(())
/// # })?;
/// # Ok::<(), mesh_core::BoxError>(())
/// ```
#[derive(Clone)]
pub struct Balancer<T> {
    pool: Arc<Pool<T>>,
    _driver: Arc<Driver>,
}

impl<T> std::fmt::Debug for Balancer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Balancer<T> {
    /// Balances over the endpoints `discover` reports, reaching each by the `T` that `make`
    /// makes; endpoints take work as soon as they are discovered. Must be called within a
    /// tokio runtime (it spawns the driver).
    pub fn new<D, E, M>(discover: D, make: M, config: BalanceConfig) -> Self
    where
        D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
        E: Display + Send + 'static,
        M: FnMut(&Endpoint) -> T + Send + 'static,
    {
        Self::with_options(discover, make, config, Arc::new(ThreadRandom), None)
    }

    /// Like [`Balancer::new`], drawing from `random` (seeded in tests and simulations), and
    /// taking an endpoint into rotation only once `readiness` (if given) says it is ready,
    /// retried with backoff until it is.
    pub fn with_options<D, E, M>(
        discover: D,
        make: M,
        config: BalanceConfig,
        random: Arc<dyn Random>,
        readiness: Option<Readiness<T>>,
    ) -> Self
    where
        D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
        E: Display + Send + 'static,
        M: FnMut(&Endpoint) -> T + Send + 'static,
    {
        let pool = Arc::new(Pool::new(config, random));
        let driver = tokio::spawn(drive(Arc::clone(&pool), discover, make, readiness));
        Self {
            pool,
            _driver: Arc::new(Driver(driver)),
        }
    }
}

impl<T: Clone> Balancer<T> {
    /// Picks an endpoint now, or `None` if none is ready.
    pub fn pick(&self) -> Option<Pick<T>> {
        self.pool.pick(self.pool.now())
    }

    /// Picks an endpoint, waiting for one to be ready up to the configured bound
    /// ([`BalanceConfig::ready_timeout`]), then failing with [`UnavailableError`].
    pub fn pick_ready(&self) -> PickFuture<T> {
        PickFuture::new(Arc::clone(&self.pool))
    }

    pub(crate) fn pool(&self) -> &Arc<Pool<T>> {
        &self.pool
    }

    /// Every endpoint's address, status, latency estimate and outstanding work, including
    /// removed endpoints still draining.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        self.pool.snapshot()
    }

    /// How many endpoints are ejected (or being probed) now.
    pub fn ejected(&self) -> usize {
        self.pool.ejected()
    }
}

/// Waiting for an endpoint to become ready: allocated only on that (rare) path.
struct Wait {
    notified: Pin<Box<dyn Future<Output = ()> + Send>>,
    deadline: Pin<Box<Sleep>>,
}

fn notified(notify: &Arc<tokio::sync::Notify>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let notify = Arc::clone(notify);
    Box::pin(async move { notify.notified().await })
}

/// The future of [`Balancer::pick_ready`]: a pick, once an endpoint is ready.
pub struct PickFuture<T> {
    pool: Arc<Pool<T>>,
    wait: Option<Wait>,
}

impl<T> PickFuture<T> {
    pub(crate) fn new(pool: Arc<Pool<T>>) -> Self {
        Self { pool, wait: None }
    }
}

impl<T> std::fmt::Debug for PickFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickFuture")
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl<T: Clone> Future for PickFuture<T> {
    type Output = Result<Pick<T>, UnavailableError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(pick) = this.pool.pick(this.pool.now()) {
                return Poll::Ready(Ok(pick));
            }
            let core = &this.pool.core;
            let wait = this.wait.get_or_insert_with(|| Wait {
                notified: notified(&core.changed),
                deadline: Box::pin(tokio::time::sleep(core.config.ready_timeout)),
            });
            // Registered for a change first, then one more look: no change is missed.
            if wait.notified.as_mut().poll(cx).is_ready() {
                wait.notified = notified(&core.changed);
                continue;
            }
            if let Some(pick) = this.pool.pick(this.pool.now()) {
                return Poll::Ready(Ok(pick));
            }
            ready!(wait.deadline.as_mut().poll(cx));
            return Poll::Ready(Err(UnavailableError::new(Unavailable::NoReadyEndpoint)));
        }
    }
}

/// Applies discovery changes and readies new endpoints, for as long as the balancer lives.
async fn drive<D, E, M, T>(
    pool: Arc<Pool<T>>,
    discover: D,
    mut make: M,
    readiness: Option<Readiness<T>>,
) where
    D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
    E: Display + Send + 'static,
    M: FnMut(&Endpoint) -> T + Send + 'static,
    T: Clone + Send + Sync + 'static,
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
                    let target = make(&endpoint);
                    let stats = Arc::new(EndpointStats::new(
                        endpoint,
                        Arc::clone(&pool.core),
                        pool.now(),
                    ));
                    match &readiness {
                        Some(ready) => {
                            tokio::spawn(make_ready(
                                Arc::clone(&stats),
                                target.clone(),
                                Arc::clone(ready),
                            ));
                        }
                        None => stats.mark_ready(),
                    }
                    batch.push(Update::Insert(Member { stats, target }));
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

/// Drives a new endpoint's target to readiness, retrying with backoff, then puts it in
/// rotation.
async fn make_ready<T>(stats: Arc<EndpointStats>, target: T, readiness: Readiness<T>)
where
    T: Clone,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match readiness(target.clone()).await {
            Ok(()) => {
                stats.mark_ready();
                stats.core.changed.notify_waiters();
                return;
            }
            Err(err) => {
                tracing::debug!(endpoint = %stats.endpoint, error = %err, "endpoint not ready yet");
                if stats.status() == EndpointStatus::Draining {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
