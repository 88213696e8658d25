//! Retries that cannot become a retry storm.
//!
//! [`RetryLayer`] sends a failed request again when its outcome (a [`Class`]) is retryable under
//! the [`RetryPolicy`], tries are left, the request body can be replayed, and the shared
//! [`RetryBudget`] grants it. It does not classify: it reads the class from the classification
//! the service it wraps made for each try ([`Classified`]), the balancer's or a
//! [`ClassifyLayer`]'s, the same one metrics and failure accrual use. The budget caps retries at a share of recent original traffic
//! (plus a small floor), so a failing service sees at most that much extra load.
//!
//! - Only idempotent methods are retried unless the policy allows others.
//! - Request bodies are recorded up to a cap while the first try sends them ([`ReplayBody`]);
//!   a larger body is sent once, in full, and not retried.
//! - A response is never retried once it streams to the caller: the decision is made on the
//!   response head, or, for a gRPC status that comes in the trailers, on the first body frame
//!   (trailers with a retryable status are retried; a data frame hands the response on). When
//!   resets are retried, a small response with a `Content-Length` is held back for its first
//!   frame too: a server that dies between head and body costs a retry, not a cut response.
//! - Between tries, exponential backoff with full jitter.
//! - Each try of a retryable request carries [`TriedEndpoints`]: a balancer sends a retry to an
//!   endpoint the request has not failed on yet, when one is ready.
//! - A per-try timeout bounds each try's wait for response headers; a
//!   [`TimeoutLayer`](crate::timeout::TimeoutLayer) outside the retry layer bounds all tries
//!   together.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mesh_core::classify::{AutoClassify, ClassifyLayer};
//! use mesh_core::retry::{RetryBudget, RetryLayer, RetryPolicy};
//! use mesh_core::timeout::TimeoutLayer;
//!
//! let budget = Arc::new(RetryBudget::builder().build()?);
//! let stack = tower::ServiceBuilder::new()
//!     .layer(TimeoutLayer::new().request(Duration::from_secs(10)))
//!     .layer(RetryLayer::new(
//!         RetryPolicy::new().max_attempts(3).per_try_timeout(Duration::from_secs(2)),
//!         budget.clone(),
//!     ))
//!     // Each try's one classification, which the retry layer reads.
//!     .layer(ClassifyLayer::new(AutoClassify::new(), ()));
//! # let _ = stack;
//! # Ok::<(), mesh_core::retry::BudgetError>(())
//! ```
//!
//! [`Class`]: crate::Class
//! [`Classified`]: crate::classify::Classified
//! [`ClassifyLayer`]: crate::classify::ClassifyLayer

mod body;
mod budget;
mod future;
mod policy;
mod replay;
mod tried;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

pub use self::body::RetryBody;
pub use self::budget::{BudgetBuilder, BudgetError, RetryBudget};
pub use self::future::ResponseFuture;
use self::future::Retrying;
pub use self::policy::{Backoff, RetryPolicy};
pub use self::replay::ReplayBody;
pub use self::tried::TriedEndpoints;
use crate::classify::Classified;
use crate::error::BoxError;

/// What every request of a retry layer shares: one reference count per request, not two.
#[derive(Debug)]
struct Shared {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
}

/// Retries failed requests within a budget; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// Retries by `policy`, within `budget` (which may be shared with other layers).
    pub fn new(policy: RetryPolicy, budget: Arc<RetryBudget>) -> Self {
        Self {
            shared: Arc::new(Shared { policy, budget }),
        }
    }

    /// The budget, for observing its balance and counters.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.shared.budget
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`RetryLayer`]. The inner service is cloned for each request, as with
/// tower's retry, so that a retry can wait for it to be ready again.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    /// The budget, for observing its balance and counters.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.shared.budget
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Retry<S>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: Body + Unpin,
    ReqB::Error: Into<BoxError>,
    ResB: Classified,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<RetryBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let policy = &self.shared.policy;
        self.shared.budget.deposit();
        let (mut parts, body) = req.into_parts();
        let (first_body, retry) = if policy.max_attempts > 1 && policy.allows_method(&parts.method)
        {
            let (first, source) = ReplayBody::record(body, policy.body_cap);
            let retry = source.map(|source| {
                // Every try carries the same record of where the earlier ones went.
                parts.extensions.insert(TriedEndpoints::default());
                Retrying {
                    parts: parts.clone(),
                    source,
                }
            });
            (first, retry)
        } else {
            (ReplayBody::passthrough(body), None)
        };
        // The ready service takes this try; a clone stays for the next tries.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let first = service.call(Request::from_parts(parts, first_body));
        ResponseFuture::new(service, first, retry, self.shared.clone())
    }
}
