//! What may be retried, how often, and how long to wait in between.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::classify::{Class, FailureReason};
use crate::error::ErrorKind;
use crate::grpc::{GrpcCode, GrpcCodeSet};
use crate::random::{Random, ThreadRandom};

/// Which requests and outcomes are retried.
///
/// Defaults: up to 3 tries in all; only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT,
/// DELETE); retry on connect errors, refusals ([`ErrorKind::Refused`], always: the server did
/// nothing with the request), per-try timeouts (not on other transport errors unless
/// [`RetryPolicy::retry_resets`]), HTTP 502/503/504 and gRPC UNAVAILABLE;
/// request bodies replayable up to 64 KiB; backoff from 25 ms up to 1 s with full jitter; no
/// per-try timeout.
#[derive(Clone)]
pub struct RetryPolicy {
    pub(super) max_attempts: u32,
    pub(super) non_idempotent: bool,
    statuses: Vec<StatusCode>,
    grpc_codes: GrpcCodeSet,
    connect_errors: bool,
    timeouts: bool,
    resets: bool,
    pub(super) body_cap: usize,
    pub(super) backoff: Backoff,
    pub(super) per_try_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            non_idempotent: false,
            statuses: vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ],
            grpc_codes: GrpcCodeSet::EMPTY.with(GrpcCode::UNAVAILABLE),
            connect_errors: true,
            timeouts: true,
            resets: false,
            body_cap: 64 * 1024,
            backoff: Backoff::default(),
            per_try_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many tries in all, the first included (at least 1; 1 disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Also retries methods that are not idempotent, such as POST (and so gRPC calls). Only
    /// for services whose requests are safe to repeat.
    pub fn retry_non_idempotent(mut self, allow: bool) -> Self {
        self.non_idempotent = allow;
        self
    }

    /// Retries these HTTP statuses (replacing the default 502, 503, 504).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Retries these gRPC codes (replacing the default UNAVAILABLE).
    pub fn grpc_codes(mut self, codes: GrpcCodeSet) -> Self {
        self.grpc_codes = codes;
        self
    }

    /// Whether connection failures are retried (default yes).
    pub fn retry_connect_errors(mut self, retry: bool) -> Self {
        self.connect_errors = retry;
        self
    }

    /// Whether timeouts from inside the retry layer (the per-try timeout) are retried (default
    /// yes).
    pub fn retry_timeouts(mut self, retry: bool) -> Self {
        self.timeouts = retry;
        self
    }

    /// Whether other transport errors are retried, such as a connection reset after the request
    /// was sent (default no). The request may have reached the server, so turn this on only
    /// where a repeat is harmless: it applies to the methods [`allows_method`] admits (the
    /// idempotent ones unless told otherwise). A proxy in front of replicas that can crash
    /// wants it, so that requests in flight on a dying replica are sent to another.
    ///
    /// [`allows_method`]: Self::allows_method
    pub fn retry_resets(mut self, retry: bool) -> Self {
        self.resets = retry;
        self
    }

    /// Buffers request bodies up to `cap` bytes so they can be sent again; a larger body makes
    /// its request non-retryable (it is still sent in full).
    pub fn body_cap(mut self, cap: usize) -> Self {
        self.body_cap = cap;
        self
    }

    /// How long to wait between tries.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Fails a try whose response headers have not arrived within `timeout`, so that it can be
    /// retried. An outer [`TimeoutLayer`](crate::timeout::TimeoutLayer) still bounds all tries
    /// together.
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.per_try_timeout = Some(timeout);
        self
    }

    /// Whether requests with this method may be retried.
    pub fn allows_method(&self, method: &Method) -> bool {
        self.non_idempotent || method.is_idempotent()
    }

    /// Whether an outcome is worth another try.
    pub fn is_retryable(&self, class: Class) -> bool {
        match class {
            Class::Success => false,
            Class::Failure(FailureReason::Status(status)) => self.statuses.contains(&status),
            Class::Failure(FailureReason::Grpc(code)) => self.grpc_codes.contains(code),
            Class::Failure(FailureReason::Error(ErrorKind::Connect)) => self.connect_errors,
            Class::Failure(FailureReason::Error(ErrorKind::Refused)) => true,
            Class::Failure(FailureReason::Error(ErrorKind::Timeout)) => self.timeouts,
            Class::Failure(FailureReason::Error(ErrorKind::Other)) => self.resets,
            Class::Failure(_) => false,
        }
    }

    /// Whether any gRPC code is retried: if not, a gRPC response is never held back to read
    /// its trailers.
    pub(super) fn retries_grpc(&self) -> bool {
        self.grpc_codes != GrpcCodeSet::EMPTY
    }

    /// Whether transport errors after the request was sent are retried: if so, a small sized
    /// response is held back for its first frame (a server dying between head and body is then
    /// a retry, not a cut response).
    pub(super) fn retries_resets(&self) -> bool {
        self.resets
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("non_idempotent", &self.non_idempotent)
            .field("statuses", &self.statuses)
            .field("grpc_codes", &self.grpc_codes)
            .field("connect_errors", &self.connect_errors)
            .field("timeouts", &self.timeouts)
            .field("resets", &self.resets)
            .field("body_cap", &self.body_cap)
            .field("backoff", &self.backoff)
            .field("per_try_timeout", &self.per_try_timeout)
            .finish()
    }
}

/// Exponential backoff with full jitter: before retry `n` (1 for the first retry), wait a
/// random time from zero to `min(max, base × 2^(n-1))`.
#[derive(Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// The jitter's source: the workspace's one ([`ThreadRandom`] unless injected).
    random: Arc<dyn Random>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(25), Duration::from_secs(1))
    }
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`, with a thread-local random source.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            random: Arc::new(ThreadRandom),
        }
    }

    /// No waiting between tries.
    pub fn none() -> Self {
        Self::new(Duration::ZERO, Duration::ZERO)
    }

    /// Draws the jitter from `random` instead, e.g. a seeded [`SplitMix`] in tests.
    ///
    /// [`SplitMix`]: crate::random::SplitMix
    pub fn with_random(mut self, random: Arc<dyn Random>) -> Self {
        self.random = random;
        self
    }

    /// The wait before retry `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1 << doublings).min(self.max);
        ceiling.mul_f64(self.random.unit().clamp(0.0, 1.0))
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("base", &self.base)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the same fraction.
    struct Fixed(f64);

    impl Random for Fixed {
        fn next_u64(&self) -> u64 {
            (self.0 * u64::MAX as f64) as u64
        }

        fn unit(&self) -> f64 {
            self.0
        }
    }

    fn fixed(x: f64) -> Arc<dyn Random> {
        Arc::new(Fixed(x))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let top = Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
            .with_random(fixed(1.0));
        let delays: Vec<_> = (1..=6).map(|n| top.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 100, 100]);
        let half = Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
            .with_random(fixed(0.5));
        assert_eq!(half.delay(3), Duration::from_millis(20));
        let zero = Backoff::default().with_random(fixed(0.0));
        assert_eq!(zero.delay(5), Duration::ZERO);
        assert!(Backoff::default().delay(u32::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn default_policy_retries_gateway_failures_of_idempotent_requests() {
        let p = RetryPolicy::default();
        assert!(p.allows_method(&Method::GET));
        assert!(p.allows_method(&Method::PUT));
        assert!(!p.allows_method(&Method::POST));
        assert!(
            p.clone()
                .retry_non_idempotent(true)
                .allows_method(&Method::POST)
        );
        let fail = |r| Class::Failure(r);
        assert!(p.is_retryable(fail(FailureReason::Status(StatusCode::SERVICE_UNAVAILABLE))));
        assert!(!p.is_retryable(fail(FailureReason::Status(
            StatusCode::INTERNAL_SERVER_ERROR
        ))));
        assert!(p.is_retryable(fail(FailureReason::Grpc(GrpcCode::UNAVAILABLE))));
        assert!(!p.is_retryable(fail(FailureReason::Grpc(GrpcCode::INTERNAL))));
        assert!(p.is_retryable(fail(FailureReason::Error(ErrorKind::Connect))));
        let strict = p.clone().retry_connect_errors(false).retry_timeouts(false);
        assert!(strict.is_retryable(fail(FailureReason::Error(ErrorKind::Refused))));
        assert!(!strict.is_retryable(fail(FailureReason::Error(ErrorKind::Connect))));
        assert!(p.is_retryable(fail(FailureReason::Error(ErrorKind::Timeout))));
        assert!(!p.is_retryable(fail(FailureReason::Error(ErrorKind::Other))));
        let resets = p.clone().retry_resets(true);
        assert!(resets.is_retryable(fail(FailureReason::Error(ErrorKind::Other))));
        assert!(!resets.is_retryable(fail(FailureReason::Cancelled)));
        assert!(!p.is_retryable(fail(FailureReason::Cancelled)));
        assert!(!p.is_retryable(Class::Success));
    }
}
