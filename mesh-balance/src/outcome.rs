//! What a pick hands back: the handle that counts the work outstanding on the endpoint and
//! records its outcome (latency, success or failure) into the endpoint's load estimate and
//! failure accrual. It names no protocol: an HTTP request, an opaque TCP connection or anything
//! else records through it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use mesh_core::classify::OnClass;
use mesh_core::{Class, Endpoint, FailureReason};

use crate::state::EndpointStats;

/// Counts one piece of work as outstanding on its endpoint while alive.
pub(crate) struct OutstandingGuard(Arc<EndpointStats>);

impl OutstandingGuard {
    #[inline]
    fn new(endpoint: Arc<EndpointStats>) -> Self {
        endpoint.outstanding.fetch_add(1, Relaxed);
        Self(endpoint)
    }
}

impl Drop for OutstandingGuard {
    #[inline]
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// The outcome of one pick, to be recorded: the endpoint counts it as outstanding from the
/// pick until [`Outcome::responded`] (or the end), and [`Outcome::record`] files its class.
///
/// - Latency is measured from the pick to [`Outcome::responded`] (the response headers, a
///   connection established), and is at least the failure penalty when it failed, so that an
///   endpoint that fails fast never looks cheap.
/// - Dropped without a record, it counts as cancelled (it says nothing about the endpoint, and
///   an ejected endpoint's probe may be made again), and the time waited is a lower bound on
///   the latency: it may raise the estimate, never lower it, so an endpoint that stalls looks
///   slow even though it never answered.
///
/// As an [`OnClass`] listener it records the class the response's one classification decides.
pub struct Outcome {
    stats: Arc<EndpointStats>,
    /// When the work started (the pool's clock, ns); once it responded, when it did. Kept
    /// small: an outcome travels inside every response body.
    at: u64,
    /// While the work weighs on the endpoint's load.
    outstanding: Option<OutstandingGuard>,
    flags: u8,
}

/// It responded; `at` is when.
const RESPONDED: u8 = 1;
/// Its latency sample was already a failure penalty.
const PENALIZED: u8 = 2;
/// Its class was filed.
const RECORDED: u8 = 4;

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("endpoint", &self.stats.endpoint.addr)
            .field("responded", &(self.flags & RESPONDED != 0))
            .finish_non_exhaustive()
    }
}

impl Outcome {
    #[inline]
    pub(crate) fn new(stats: Arc<EndpointStats>, now: u64) -> Self {
        let guard = OutstandingGuard::new(Arc::clone(&stats));
        Self {
            stats,
            at: now,
            outstanding: Some(guard),
            flags: 0,
        }
    }

    /// The endpoint picked.
    pub fn endpoint(&self) -> &Endpoint {
        &self.stats.endpoint
    }

    /// Starts the latency clock again now (the work waited for the endpoint to be ready).
    pub(crate) fn restart(&mut self) {
        self.at = self.stats.core.now();
    }

    /// The endpoint answered (response headers, a connection established), `failed` or not:
    /// samples the latency since the pick, at least the failure penalty if it failed. The work
    /// stays outstanding until [`Outcome::release`] or the end.
    #[inline]
    pub fn responded(&mut self, failed: bool) {
        if self.flags & RESPONDED != 0 {
            return;
        }
        let core = &self.stats.core;
        let now = core.now();
        let latency = Duration::from_nanos(now.saturating_sub(self.at));
        let config = &core.config;
        let sample = if failed {
            latency.max(config.failure_penalty)
        } else {
            latency
        };
        self.stats.ewma.sample(sample, now, config.decay);
        self.at = now;
        self.flags |= RESPONDED | if failed { PENALIZED } else { 0 };
    }

    /// Hands over the outstanding count, to end when the returned guard drops (at the first
    /// response frame, say), rather than with this handle.
    #[inline]
    pub(crate) fn take_outstanding(&mut self) -> Option<OutstandingGuard> {
        self.outstanding.take()
    }

    /// Ends the outstanding count now: a long-lived stream or connection weighs on its
    /// endpoint's load only until it starts answering; the time to that is in the estimate.
    pub fn release(&mut self) {
        self.outstanding = None;
    }

    /// Files the outcome: responded now if not yet (with `class`'s failure), then failure
    /// accrual. A failure only the end revealed (a gRPC status in the trailers) weighs on the
    /// latency estimate too.
    #[inline]
    pub fn record(mut self, class: Class) {
        let cancelled = class == Class::Failure(FailureReason::Cancelled);
        let failed = class.is_failure() && !cancelled;
        if self.flags & RESPONDED == 0 {
            if cancelled {
                self.at = self.stats.core.now();
            } else {
                self.responded(failed);
            }
        }
        let core = &self.stats.core;
        if failed && self.flags & PENALIZED == 0 {
            let config = &core.config;
            self.stats
                .ewma
                .sample(config.failure_penalty, self.at, config.decay);
        }
        core.on_outcome(&self.stats, class, self.at);
        self.flags |= RECORDED;
    }
}

impl OnClass for Outcome {
    #[inline]
    fn on_class(self, class: Class) {
        self.record(class);
    }
}

impl Drop for Outcome {
    #[inline]
    fn drop(&mut self) {
        if self.flags & RECORDED != 0 {
            return;
        }
        let core = &self.stats.core;
        let now = core.now();
        if self.flags & RESPONDED == 0 {
            let waited = now.saturating_sub(self.at) as f64;
            let decay = core.config.decay;
            // A lower bound on the latency: it may only raise the estimate, never lower it (a
            // caller that gives up after 1 ms says nothing about a 5 ms endpoint).
            if waited > self.stats.ewma.get(now, decay) {
                self.stats
                    .ewma
                    .sample(Duration::from_nanos(waited as u64), now, decay);
            }
        }
        core.on_outcome(&self.stats, Class::Failure(FailureReason::Cancelled), now);
    }
}
