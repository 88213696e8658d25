//! One endpoint's live state: readiness, load, and failure accrual. Everything here is atomic,
//! so picks and outcomes on many threads never take a lock; and nothing here depends on what
//! the endpoint is reached by (an HTTP client, a TCP connector), so outcome handles and response
//! bodies hold it without naming the endpoint's type.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use mesh_core::{Class, Endpoint, FailureReason};

use crate::config::BalanceConfig;
use crate::ewma::PeakEwma;
use crate::pool::Core;
use mesh_core::random::Random;
use std::sync::Arc;

/// Where an endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointStatus {
    /// Discovered, being made ready (connecting); takes no traffic yet.
    Pending,
    /// Takes traffic.
    Ready,
    /// Ejected by failure accrual; takes no traffic until its next probe.
    Ejected,
    /// One probe request is on its way; its outcome readmits or ejects again.
    Probing,
    /// Removed by discovery; finishing its in-flight requests.
    Draining,
}

const PENDING: u8 = 0;
const READY: u8 = 1;
const EJECTED: u8 = 2;
const PROBING: u8 = 3;
const DRAINING: u8 = 4;

fn status(code: u8) -> EndpointStatus {
    match code {
        READY => EndpointStatus::Ready,
        EJECTED => EndpointStatus::Ejected,
        PROBING => EndpointStatus::Probing,
        DRAINING => EndpointStatus::Draining,
        _ => EndpointStatus::Pending,
    }
}

/// What an outcome did to an endpoint, for the pool's ejection count.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// Wants to be ejected; the pool decides against its cap.
    WantsEjection,
    /// A probe succeeded: readmitted.
    Readmitted,
    /// A probe failed: ejected again (still counted as ejected).
    Reejected,
}

/// An endpoint's live state.
pub(crate) struct EndpointStats {
    pub(crate) endpoint: Endpoint,
    /// The pool's shared part: settings, clock, accrual bookkeeping.
    pub(crate) core: Arc<Core>,
    status: AtomicU8,
    pub(crate) ewma: PeakEwma,
    pub(crate) outstanding: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections in a row (resets on readmission): the backoff exponent.
    ejections: AtomicU32,
    /// When an ejected endpoint may be probed, ns since the epoch.
    probe_at: AtomicU64,
    window_start: AtomicU64,
    window_successes: AtomicU32,
    window_failures: AtomicU32,
}

impl EndpointStats {
    pub(crate) fn new(endpoint: Endpoint, core: Arc<Core>, now: u64) -> Self {
        let config = &core.config;
        Self {
            endpoint,
            status: AtomicU8::new(PENDING),
            ewma: PeakEwma::new(config.default_rtt, now),
            outstanding: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            probe_at: AtomicU64::new(0),
            window_start: AtomicU64::new(now),
            window_successes: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            core,
        }
    }

    #[inline]
    pub(crate) fn status(&self) -> EndpointStatus {
        status(self.status.load(Relaxed))
    }

    #[inline]
    pub(crate) fn is_ready(&self) -> bool {
        self.status.load(Relaxed) == READY
    }

    pub(crate) fn mark_ready(&self) {
        let _ = self
            .status
            .compare_exchange(PENDING, READY, Relaxed, Relaxed);
    }

    pub(crate) fn mark_draining(&self) -> EndpointStatus {
        status(self.status.swap(DRAINING, Relaxed))
    }

    /// Load for power of two choices: latency estimate times (outstanding + 1), with `cost`
    /// standing in for the estimate.
    #[inline]
    pub(crate) fn load_at(&self, cost: f64) -> f64 {
        cost * (self.outstanding.load(Relaxed) + 1) as f64
    }

    /// If ejected and due for a probe, claims the single probe.
    #[inline]
    pub(crate) fn try_claim_probe(&self, now: u64) -> bool {
        self.status.load(Relaxed) == EJECTED
            && now >= self.probe_at.load(Relaxed)
            && self
                .status
                .compare_exchange(EJECTED, PROBING, Relaxed, Relaxed)
                .is_ok()
    }

    /// Ejects (the pool has checked its cap): no traffic until `now + backoff`.
    pub(crate) fn eject(&self, now: u64, config: &BalanceConfig, random: &dyn Random) -> bool {
        let ejected = self
            .status
            .compare_exchange(READY, EJECTED, Relaxed, Relaxed)
            .is_ok();
        if ejected {
            self.schedule_probe(now, config, random);
        }
        ejected
    }

    fn schedule_probe(&self, now: u64, config: &BalanceConfig, random: &dyn Random) {
        let jitter = random.unit();
        let n = self.ejections.fetch_add(1, Relaxed).min(20);
        let base = config.accrual.backoff.as_nanos() as f64 * f64::from(1u32 << n.min(16));
        let wait = base.min(config.accrual.max_backoff.as_nanos() as f64) * (1.0 + 0.5 * jitter);
        self.probe_at
            .store(now.saturating_add(wait as u64), Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.reset_window(now);
    }

    fn reset_window(&self, now: u64) {
        self.window_start.store(now, Relaxed);
        self.window_successes.store(0, Relaxed);
        self.window_failures.store(0, Relaxed);
    }

    /// Records a request's outcome; says whether the endpoint should change state.
    #[inline]
    pub(crate) fn on_outcome(
        &self,
        class: Class,
        now: u64,
        config: &BalanceConfig,
        random: &dyn Random,
    ) -> Transition {
        // A caller hanging up says nothing about the endpoint.
        if class == Class::Failure(FailureReason::Cancelled) {
            if self.status.load(Relaxed) == PROBING {
                // The probe told nothing: let the next request probe.
                let _ = self
                    .status
                    .compare_exchange(PROBING, EJECTED, Relaxed, Relaxed);
            }
            return Transition::None;
        }
        let failed = class.is_failure();
        if self.status.load(Relaxed) == PROBING {
            if failed {
                if self
                    .status
                    .compare_exchange(PROBING, EJECTED, Relaxed, Relaxed)
                    .is_ok()
                {
                    self.schedule_probe(now, config, random);
                }
                return Transition::Reejected;
            }
            if self
                .status
                .compare_exchange(PROBING, READY, Relaxed, Relaxed)
                .is_ok()
            {
                self.ejections.store(0, Relaxed);
                self.consecutive_failures.store(0, Relaxed);
                self.reset_window(now);
                return Transition::Readmitted;
            }
            return Transition::None;
        }
        let accrual = &config.accrual;
        if let Some(policy) = &accrual.success_rate
            && now.saturating_sub(self.window_start.load(Relaxed)) > policy.window.as_nanos() as u64
        {
            self.reset_window(now);
        }
        if !failed {
            // Written only when it changes: the common success path leaves the line shared.
            if self.consecutive_failures.load(Relaxed) != 0 {
                self.consecutive_failures.store(0, Relaxed);
            }
            if accrual.success_rate.is_some() {
                self.window_successes.fetch_add(1, Relaxed);
            }
            return Transition::None;
        }
        let consecutive = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        let window_failures = self.window_failures.fetch_add(1, Relaxed) + 1;
        if self.status.load(Relaxed) != READY {
            return Transition::None;
        }
        if accrual.consecutive_failures > 0 && consecutive >= accrual.consecutive_failures {
            return Transition::WantsEjection;
        }
        if let Some(policy) = &accrual.success_rate {
            let successes = self.window_successes.load(Relaxed);
            let total = successes + window_failures;
            if total >= policy.min_requests
                && f64::from(successes) < policy.threshold * f64::from(total)
            {
                return Transition::WantsEjection;
            }
        }
        Transition::None
    }

    #[inline]
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// When a probe is next allowed, ns since the epoch.
    pub(crate) fn probe_at(&self) -> u64 {
        self.probe_at.load(Relaxed)
    }
}
