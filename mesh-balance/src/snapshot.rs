//! What the balancer can tell about its endpoints, for metrics and admin pages.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::config::BalanceConfig;
use crate::state::{EndpointStats, EndpointStatus};

/// One endpoint as the balancer sees it at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSnapshot {
    /// Its address.
    pub addr: SocketAddr,
    /// Ready, pending, ejected, probing or draining.
    pub status: EndpointStatus,
    /// The peak-EWMA latency estimate now.
    pub ewma: Duration,
    /// Requests sent and not yet answered (until their first response data).
    pub outstanding: u64,
    /// Its weight.
    pub weight: u32,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// For an ejected endpoint, how long until it may be probed.
    pub probe_in: Option<Duration>,
}

impl EndpointSnapshot {
    pub(crate) fn of(e: &EndpointStats, now: u64, config: &BalanceConfig) -> Self {
        let status = e.status();
        Self {
            addr: e.endpoint.addr,
            status,
            ewma: Duration::from_nanos(e.ewma.get(now, config.decay) as u64),
            outstanding: e.outstanding.load(Relaxed),
            weight: e.endpoint.weight,
            consecutive_failures: e.consecutive_failures(),
            probe_in: (status == EndpointStatus::Ejected)
                .then(|| Duration::from_nanos(e.probe_at().saturating_sub(now))),
        }
    }
}
