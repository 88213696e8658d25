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
    fn new(endpoint: Arc<EndpointStats>) -> Self {
        endpoint.outstanding.fetch_add(1, Relaxed);
        Self(endpoint)
    }
}

impl Drop for OutstandingGuard {
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
    /// When the work started (the pool's clock, ns).
    start: u64,
    /// While the work weighs on the endpoint's load.
    outstanding: Option<OutstandingGuard>,
    /// Once responded: when, and whether the latency sample was already a failure penalty.
    responded: Option<(u64, bool)>,
    recorded: bool,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("endpoint", &self.stats.endpoint.addr)
            .field("responded", &self.responded.is_some())
            .finish_non_exhaustive()
    }
}

impl Outcome {
    pub(crate) fn new(stats: Arc<EndpointStats>, now: u64) -> Self {
        let guard = OutstandingGuard::new(Arc::clone(&stats));
        Self {
            stats,
            start: now,
            outstanding: Some(guard),
            responded: None,
            recorded: false,
        }
    }

    /// The endpoint picked.
    pub fn endpoint(&self) -> &Endpoint {
        &self.stats.endpoint
    }

    /// Starts the latency clock again now (the work waited for the endpoint to be ready).
    pub(crate) fn restart(&mut self) {
        self.start = self.stats.core.now();
    }

    /// The endpoint answered (response headers, a connection established), `failed` or not:
    /// samples the latency since the pick, at least the failure penalty if it failed. The work
    /// stays outstanding until [`Outcome::release`] or the end.
    pub fn responded(&mut self, failed: bool) {
        if self.responded.is_some() {
            return;
        }
        let core = &self.stats.core;
        let now = core.now();
        let latency = Duration::from_nanos(now.saturating_sub(self.start));
        let config = &core.config;
        let sample = if failed {
            latency.max(config.failure_penalty)
        } else {
            latency
        };
        self.stats.ewma.sample(sample, now, config.decay);
        self.responded = Some((now, failed));
    }

    /// Hands over the outstanding count, to end when the returned guard drops (at the first
    /// response frame, say), rather than with this handle.
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
    pub fn record(mut self, class: Class) {
        let failed = class.is_failure() && class != Class::Failure(FailureReason::Cancelled);
        let (at, penalized) = match self.responded {
            Some(responded) => responded,
            None if class == Class::Failure(FailureReason::Cancelled) => {
                (self.stats.core.now(), false)
            }
            None => {
                self.responded(failed);
                self.responded.unwrap_or((self.start, failed))
            }
        };
        let core = &self.stats.core;
        if failed && !penalized {
            let config = &core.config;
            self.stats
                .ewma
                .sample(config.failure_penalty, at, config.decay);
        }
        core.on_outcome(&self.stats, class, at);
        self.recorded = true;
    }
}

impl OnClass for Outcome {
    fn on_class(self, class: Class) {
        self.record(class);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        let core = &self.stats.core;
        let now = core.now();
        if self.responded.is_none() {
            let waited = now.saturating_sub(self.start) as f64;
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
