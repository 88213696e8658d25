//! mesh-balance: request-level load balancing for the mesh.
//!
//! [`Balance`] sends each request to one endpoint of a live set, by power of two choices over
//! peak-EWMA load (latency estimate x (outstanding + 1)), honouring weights, and keeps failing
//! endpoints out with failure accrual (consecutive failures, or a success rate below a
//! threshold), probing them again after an exponential backoff. [`discover`] has the sources
//! of endpoint sets: a static list, a watched file, and DNS (A/AAAA and SRV, re-resolved on
//! their TTL). They live here rather than in mesh-core to keep mesh-core free of the DNS
//! resolver; the `Endpoint` type they report is mesh-core's.
pub mod discover;

mod alias;
mod balance;
mod body;
mod config;
mod ewma;
mod future;
mod pool;
mod random;
mod snapshot;
mod state;

pub use self::balance::Balance;
pub use self::body::{BalancedBody, Outstanding, Recorder};
pub use self::config::{AccrualConfig, BalanceConfig, SuccessRatePolicy};
pub use self::future::ResponseFuture;
pub use self::random::{Random, SplitMix};
pub use self::snapshot::EndpointSnapshot;
pub use self::state::EndpointStatus;
