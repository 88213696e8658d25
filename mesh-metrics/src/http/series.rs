//! The golden metrics of one HTTP label set.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::StatusCode;
use mesh_core::grpc::GrpcCode;
use mesh_core::{Class, FailureReason};

use super::codes::{
    GRPC_SLOTS, HTTP_SLOTS, class_of_slot, grpc_slot, grpc_slot_code, http_slot, http_slot_label,
};
use crate::histogram::{AtomicHistogram, LEN, LatencySnapshot};
use crate::stripe::Striped;

/// The counters one thread records into; padded so two threads' blocks share no cache line.
#[repr(align(128))]
pub(crate) struct HttpStripe {
    requests: AtomicU64,
    /// Responses by status code (see `codes`: registered codes, then each class's others).
    codes: [AtomicU64; HTTP_SLOTS],
    /// gRPC responses by status code, from the headers (trailers-only) or the trailers.
    grpc: [AtomicU64; GRPC_SLOTS],
    successes: AtomicU64,
    failures: AtomicU64,
    cancelled: AtomicU64,
    headers: AtomicHistogram,
    total: AtomicHistogram,
}

impl HttpStripe {
    fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            codes: [const { AtomicU64::new(0) }; HTTP_SLOTS],
            grpc: [const { AtomicU64::new(0) }; GRPC_SLOTS],
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            headers: AtomicHistogram::new(),
            total: AtomicHistogram::new(),
        }
    }

    /// The response head arrived after `latency`.
    #[inline]
    pub(crate) fn on_response(&self, status: StatusCode, latency: Duration) {
        self.codes[http_slot(status)].fetch_add(1, Relaxed);
        self.headers.record(latency);
    }

    /// The response carried gRPC status `code`.
    #[inline]
    pub(crate) fn on_grpc(&self, code: GrpcCode) {
        self.grpc[grpc_slot(code)].fetch_add(1, Relaxed);
    }

    /// The request ended with `class`, `latency` after it started.
    #[inline]
    pub(crate) fn on_end(&self, class: Class, latency: Duration) {
        let counter = match class {
            Class::Success => &self.successes,
            Class::Failure(FailureReason::Cancelled) => &self.cancelled,
            Class::Failure(_) => &self.failures,
        };
        counter.fetch_add(1, Relaxed);
        self.total.record(latency);
    }
}

/// The golden metrics of one label set: request and response counts, outcomes, and latency
/// histograms, striped per thread (see the crate docs for the cost).
#[derive(Default)]
pub struct HttpSeries {
    stripes: Striped<HttpStripe>,
}

impl std::fmt::Debug for HttpSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSeries")
            .field("stripes", &self.stripes.allocated())
            .finish()
    }
}

impl HttpSeries {
    /// Counts a request starting on this thread and returns the block to record its outcome
    /// into (keeping it is one reference count on this thread's own block, not a shared one).
    #[inline]
    pub(crate) fn start(&self) -> Arc<HttpStripe> {
        let stripe = self.stripes.local(HttpStripe::new);
        stripe.requests.fetch_add(1, Relaxed);
        Arc::clone(stripe)
    }

    /// Records a whole request at once: started, answered with `status` after
    /// `headers_latency`, ended with `class` after `total_latency`. For callers that measure
    /// requests themselves; the layer records the three moments as they happen.
    pub fn record(
        &self,
        status: Option<StatusCode>,
        headers_latency: Duration,
        class: Class,
        total_latency: Duration,
    ) {
        let stripe = self.stripes.local(HttpStripe::new);
        stripe.requests.fetch_add(1, Relaxed);
        if let Some(status) = status {
            stripe.on_response(status, headers_latency);
        }
        if let Class::Failure(FailureReason::Grpc(code)) = class {
            stripe.on_grpc(code);
        }
        stripe.on_end(class, total_latency);
    }

    /// Bytes of memory this series holds (its allocated stripes).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.stripes.allocated() * std::mem::size_of::<HttpStripe>()
    }

    /// The totals so far.
    pub fn snapshot(&self) -> HttpSnapshot {
        let totals = self.totals();
        let mut statuses = [0; 6];
        let mut status_codes = Vec::new();
        for (slot, &n) in totals.codes.iter().enumerate() {
            statuses[class_of_slot(slot)] += n;
            if let (super::codes::HttpCode::Code(code), true) = (http_slot_label(slot), n > 0) {
                if let Ok(status) = StatusCode::from_u16(code) {
                    status_codes.push((status, n));
                }
            }
        }
        let grpc_codes = totals
            .grpc
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(slot, &n)| (grpc_slot_code(slot), n))
            .collect();
        HttpSnapshot {
            requests: totals.requests,
            statuses,
            status_codes,
            grpc_codes,
            successes: totals.successes,
            failures: totals.failures,
            cancelled: totals.cancelled,
            headers_latency: LatencySnapshot::from_counts(&totals.headers, totals.headers_sum),
            total_latency: LatencySnapshot::from_counts(&totals.total, totals.total_sum),
        }
    }

    /// Sums the stripes.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.stripes.iter() {
            t.requests += s.requests.load(Relaxed);
            for (total, count) in t.codes.iter_mut().zip(&s.codes) {
                *total += count.load(Relaxed);
            }
            for (total, count) in t.grpc.iter_mut().zip(&s.grpc) {
                *total += count.load(Relaxed);
            }
            t.successes += s.successes.load(Relaxed);
            t.failures += s.failures.load(Relaxed);
            t.cancelled += s.cancelled.load(Relaxed);
            t.headers_sum += s.headers.add_to(&mut t.headers);
            t.total_sum += s.total.add_to(&mut t.total);
        }
        t
    }
}

/// Summed counters of a series, for snapshots and exposition.
pub(crate) struct Totals {
    pub(crate) requests: u64,
    pub(crate) codes: [u64; HTTP_SLOTS],
    pub(crate) grpc: [u64; GRPC_SLOTS],
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) cancelled: u64,
    pub(crate) headers: [u64; LEN],
    pub(crate) headers_sum: u64,
    pub(crate) total: [u64; LEN],
    pub(crate) total_sum: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            requests: 0,
            codes: [0; HTTP_SLOTS],
            grpc: [0; GRPC_SLOTS],
            successes: 0,
            failures: 0,
            cancelled: 0,
            headers: [0; LEN],
            headers_sum: 0,
            total: [0; LEN],
            total_sum: 0,
        }
    }
}

impl Totals {
    /// Requests started and not yet ended. Counted from the two totals rather than kept as a
    /// gauge, so that recording stays one add per event.
    pub(crate) fn in_flight(&self) -> u64 {
        self.requests
            .saturating_sub(self.successes + self.failures + self.cancelled)
    }
}

/// The typed values of one HTTP label set at one moment.
#[derive(Clone, Debug)]
pub struct HttpSnapshot {
    /// Requests started.
    pub requests: u64,
    /// Responses received, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx, other]`.
    pub statuses: [u64; 6],
    /// Responses by registered status code (IANA's registry), those seen, in code order; a
    /// code outside the registry is only in `statuses`.
    pub status_codes: Vec<(StatusCode, u64)>,
    /// gRPC responses by `grpc-status`, those seen, in code order; `None` counts codes past 16.
    pub grpc_codes: Vec<(Option<GrpcCode>, u64)>,
    /// Requests classified as successes (see `mesh_core::Class`).
    pub successes: u64,
    /// Requests classified as failures, except those cancelled.
    pub failures: u64,
    /// Requests whose caller gave up before the end (`FailureReason::Cancelled`). Kept apart
    /// from `failures` so that a caller hanging up does not count against the endpoint.
    pub cancelled: u64,
    /// Time from the request to its response headers.
    pub headers_latency: LatencySnapshot,
    /// Time from the request to the end of its response body (or its error or cancellation).
    pub total_latency: LatencySnapshot,
}

impl HttpSnapshot {
    /// Requests started and not yet ended.
    pub fn in_flight(&self) -> u64 {
        self.requests
            .saturating_sub(self.successes + self.failures + self.cancelled)
    }

    /// Responses with this status class (1 to 5).
    pub fn status_class(&self, hundreds: u8) -> u64 {
        match hundreds {
            1..=5 => self.statuses[usize::from(hundreds) - 1],
            _ => self.statuses[5],
        }
    }

    /// Responses with exactly this status code (registered codes only; see `status_codes`).
    pub fn status_code(&self, status: StatusCode) -> u64 {
        self.status_codes
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// gRPC responses with this `grpc-status`.
    pub fn grpc_code(&self, code: GrpcCode) -> u64 {
        self.grpc_codes
            .iter()
            .find(|(c, _)| *c == Some(code))
            .map_or(0, |(_, n)| *n)
    }

    /// Successes over all decided requests, cancelled ones aside; `None` before any.
    pub fn success_rate(&self) -> Option<f64> {
        let decided = self.successes + self.failures;
        (decided > 0).then(|| self.successes as f64 / decided as f64)
    }
}
