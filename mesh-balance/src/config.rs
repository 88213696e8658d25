//! Balancer settings, with the defaults the mesh uses.

use std::time::Duration;

/// How the balancer weighs and protects its endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct BalanceConfig {
    /// The latency a new endpoint is assumed to have until measured (default 30 ms).
    pub default_rtt: Duration,
    /// The time constant with which faster samples pull the estimate down (default 10 s).
    /// Slower samples replace it at once.
    pub decay: Duration,
    /// The latency recorded for a response that failed (5xx, gRPC failure in the head, error),
    /// if the measured one is lower (default 1 s): a failing endpoint that answers in 1 ms must
    /// not look like the cheapest one.
    pub failure_penalty: Duration,
    /// How long a request waits for a ready endpoint before failing with 503 (default 1 s).
    pub ready_timeout: Duration,
    /// Failure accrual.
    pub accrual: AccrualConfig,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(1),
            accrual: AccrualConfig::default(),
        }
    }
}

/// When an endpoint is ejected, and when it is tried again.
#[derive(Clone, Debug, PartialEq)]
pub struct AccrualConfig {
    /// Consecutive failures that eject an endpoint (default 7; 0 disables this policy).
    pub consecutive_failures: u32,
    /// Ejection by success rate (default on: below 50 % over 30 s, with 20 requests at least).
    pub success_rate: Option<SuccessRatePolicy>,
    /// The first wait before an ejected endpoint is probed (default 1 s); doubled on each
    /// failed probe, up to `max_backoff`, with up to 50 % random jitter added.
    pub backoff: Duration,
    /// The longest wait between probes (default 60 s).
    pub max_backoff: Duration,
    /// The largest share of endpoints ejected at once (default 0.5), so that a bad classifier
    /// or a systemic failure cannot empty the pool.
    pub max_ejected_share: f64,
}

impl Default for AccrualConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 7,
            success_rate: Some(SuccessRatePolicy::default()),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_ejected_share: 0.5,
        }
    }
}

/// Ejection when the success rate over a window falls below a threshold (as in Finagle's
/// hybrid accrual and Envoy's outlier detection).
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessRatePolicy {
    /// Eject below this share of successes (default 0.5).
    pub threshold: f64,
    /// Only with at least this many requests in the window (default 20), so that an idle
    /// endpoint is not ejected on two failures.
    pub min_requests: u32,
    /// The window (default 30 s).
    pub window: Duration,
}

impl Default for SuccessRatePolicy {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
        }
    }
}
