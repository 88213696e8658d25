//! mesh-balance: load balancing for the mesh, for any protocol.
//!
//! [`Balancer`] is the core: a live set of endpoints, each reached by a `T` of the caller's
//! choosing (an HTTP client, a TCP address), and the pick: power of two choices over peak-EWMA
//! load (latency estimate x (outstanding + 1)), honouring weights, keeping failing endpoints out
//! with failure accrual (consecutive failures, or a success rate below a threshold) and probing
//! them again after an exponential backoff. A pick returns the endpoint's `T` with an
//! [`Outcome`], the handle that counts the work outstanding and records its latency and class;
//! opaque TCP records a connection attempt through it. [`Balance`] is the HTTP service over the
//! core: it classifies each response once (its body carries that classification for the layers
//! further out to join) and files it through the pick's outcome. [`discover`] has the sources
//! of endpoint sets: a static list, a watched file, and DNS (A/AAAA and SRV, re-resolved on
//! their TTL). They live here rather than in mesh-core to keep mesh-core free of the DNS
//! resolver; the `Endpoint` type they report is mesh-core's.
//!
//! - Load: the estimate jumps to a slower sample at once and follows faster ones with a time
//!   constant (10 s); a new endpoint starts at 30 ms. Latency is sampled at the response
//!   headers; a request counts as outstanding until its first response frame, the end of its
//!   body, or its drop, so a long gRPC stream weighs on its endpoint only until it starts
//!   answering. A failure is sampled as at least the failure penalty (1 s), so an endpoint
//!   that fails fast never looks cheap.
//! - Readiness: a background task applies discovery changes and drives new endpoints to
//!   readiness by itself; no request has to come along for either.
//! - Each request is picked when it is called and goes to exactly that endpoint (called at
//!   once when its service is ready): a removal never redirects it. With nothing ready, a
//!   request waits up to 1 s ([`Balancer::pick_ready`]), then fails with `UnavailableError`,
//!   which `mesh_core::error_response` answers with 503.
//! - Weights: candidates are drawn in proportion to weight (alias table, O(1)), so with equal
//!   loads the traffic share is the weight share.
//! - [`Balance::snapshot`] tells each endpoint's status, latency estimate and outstanding
//!   requests.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mesh_balance::discover::fixed;
//! use mesh_balance::{Balance, BalanceConfig};
//! use mesh_core::Endpoint;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
//! // Two endpoints; each one's service here just answers with its port.
//! let endpoints = ["127.0.0.1:8001", "127.0.0.1:8002"].map(|a| Endpoint::new(a.parse().unwrap()));
//! let balance = Balance::new(
//!     fixed(endpoints),
//!     |e: &Endpoint| {
//!         let port = e.addr.port();
//!         tower::service_fn(move |_req: http::Request<()>| async move {
//!             Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
//!                 bytes::Bytes::from(port.to_string()),
//!             )))
//!         })
//!     },
//!     BalanceConfig::default(),
//! );
//! tokio::time::sleep(Duration::from_millis(10)).await; // discovery and readiness, in the background
//! let rsp = balance.clone().oneshot(http::Request::new(())).await?;
//! assert_eq!(rsp.status(), 200);
//! assert_eq!(balance.snapshot().len(), 2);
//! # Ok::<(), mesh_core::BoxError>(())
//! # })?;
//! # Ok::<(), mesh_core::BoxError>(())
//! ```
pub mod discover;

#[cfg(feature = "test-util")]
pub mod test_util;

mod alias;
mod balance;
mod balancer;
mod body;
mod config;
mod ewma;
mod future;
mod outcome;
mod pool;
mod snapshot;
mod state;

pub use self::balance::Balance;
pub use self::balancer::{Balancer, PickFuture, Readiness};
pub use self::body::{BalancedBody, Outstanding};
pub use self::config::{AccrualConfig, BalanceConfig, SuccessRatePolicy};
pub use self::future::ResponseFuture;
pub use self::outcome::Outcome;
pub use self::pool::Pick;
pub use self::snapshot::EndpointSnapshot;
pub use self::state::EndpointStatus;
