//! The HTTP golden metrics of a workload: one [`HttpSeries`] per label set.

use std::fmt::Write;
use std::sync::Arc;

use super::codes::{
    GRPC_SLOTS, HTTP_SLOTS, HttpCode, class_of_slot, grpc_slot_name, http_slot_label,
};
use super::series::{HttpSeries, HttpSnapshot};
use crate::expose::{Collect, Exposition};
use crate::family::{DEFAULT_LABEL_SET_CAP, Family};
use crate::histogram::LEN;
use crate::{Labels, histogram};

/// HTTP golden metrics by label set `L`: requests, responses by status class, outcomes by
/// `mesh_core::Class`, in-flight requests, and latency to the response headers and to the end
/// of the response. Cheap to clone (shared).
pub struct HttpMetrics<L> {
    family: Arc<Family<L, HttpSeries>>,
    prefix: Arc<str>,
}

impl<L> Clone for HttpMetrics<L> {
    fn clone(&self) -> Self {
        Self {
            family: Arc::clone(&self.family),
            prefix: Arc::clone(&self.prefix),
        }
    }
}

impl<L> std::fmt::Debug for HttpMetrics<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<L: Labels> Default for HttpMetrics<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Labels> HttpMetrics<L> {
    /// Metrics named `mesh_http_*`, keeping up to 10,000 label sets.
    pub fn new() -> Self {
        Self::with_options("mesh_http", DEFAULT_LABEL_SET_CAP)
    }

    /// Metrics named `{prefix}_*` (the prefix must be a valid metric name), keeping up to `cap`
    /// label sets; later ones fold into one overflow series.
    pub fn with_options(prefix: &str, cap: usize) -> Self {
        Self {
            family: Arc::new(Family::new(cap)),
            prefix: prefix.into(),
        }
    }

    /// The series for `labels` (or the overflow series past the cap). Hold on to it to record
    /// without a lookup.
    pub fn series(&self, labels: &L) -> Arc<HttpSeries> {
        self.family.get_or_create(labels)
    }

    /// Records a whole request in the series of `labels` (see [`HttpSeries::record`]): one
    /// lookup in the calling thread's replica of the label map, no reference count taken.
    pub fn record(
        &self,
        labels: &L,
        status: Option<http::StatusCode>,
        headers_latency: std::time::Duration,
        class: mesh_core::Class,
        total_latency: std::time::Duration,
    ) {
        self.family.with_series(labels, |s| {
            s.record(status, headers_latency, class, total_latency);
        });
    }

    /// A series to hold before the first lookup: the overflow series, never recorded into
    /// through this handle.
    pub(crate) fn placeholder(&self) -> Arc<HttpSeries> {
        self.family.overflow_arc()
    }

    /// Every label set's values, and the overflow series' if anything was folded into it.
    pub fn snapshot(&self) -> HttpMetricsSnapshot<L> {
        let mut series = Vec::with_capacity(self.family.len());
        self.family
            .for_each(|labels, s| series.push((labels.clone(), s.snapshot())));
        HttpMetricsSnapshot {
            series,
            overflow: self.family.overflow().snapshot(),
            overflowed: self.family.overflowed(),
        }
    }

    /// How many distinct label sets are kept.
    pub fn label_sets(&self) -> usize {
        self.family.len()
    }

    /// How many lookups found no room under the cap and were folded into the overflow series.
    pub fn overflowed(&self) -> u64 {
        self.family.overflowed()
    }

    /// Bytes held by the series' counters (not counting the label sets themselves).
    pub fn memory_bytes(&self) -> usize {
        let mut total = self.family.overflow().memory_bytes();
        self.family.for_each(|_, s| total += s.memory_bytes());
        total
    }
}

/// The values of every label set of an [`HttpMetrics`].
#[derive(Clone, Debug)]
pub struct HttpMetricsSnapshot<L> {
    /// Each label set with its values.
    pub series: Vec<(L, HttpSnapshot)>,
    /// What was recorded for label sets past the cap.
    pub overflow: HttpSnapshot,
    /// How many lookups were folded into `overflow`.
    pub overflowed: u64,
}

impl<L: PartialEq> HttpMetricsSnapshot<L> {
    /// The values of one label set.
    pub fn get(&self, labels: &L) -> Option<&HttpSnapshot> {
        self.series
            .iter()
            .find(|(l, _)| l == labels)
            .map(|(_, s)| s)
    }
}

/// The Prometheus latency buckets, in microseconds: 0.5 ms (a hop on one host) to 60 s.
const BUCKETS_MICROS: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The same bounds as `le` labels, written once.
const LE_LABELS: [&str; 16] = [
    "le=\"0.0005\"",
    "le=\"0.001\"",
    "le=\"0.0025\"",
    "le=\"0.005\"",
    "le=\"0.01\"",
    "le=\"0.025\"",
    "le=\"0.05\"",
    "le=\"0.1\"",
    "le=\"0.25\"",
    "le=\"0.5\"",
    "le=\"1\"",
    "le=\"2.5\"",
    "le=\"5\"",
    "le=\"10\"",
    "le=\"30\"",
    "le=\"60\"",
];

const STATUS_LABELS: [&str; 6] = [
    "status_class=\"1xx\"",
    "status_class=\"2xx\"",
    "status_class=\"3xx\"",
    "status_class=\"4xx\"",
    "status_class=\"5xx\"",
    "status_class=\"other\"",
];
const OUTCOME_LABELS: [&str; 3] = [
    "outcome=\"success\"",
    "outcome=\"failure\"",
    "outcome=\"cancelled\"",
];

/// One series, reduced to what the text format shows.
struct Row {
    labels: String,
    requests: u64,
    codes: [u64; HTTP_SLOTS],
    grpc: [u64; GRPC_SLOTS],
    outcomes: [u64; 3],
    in_flight: u64,
    headers: Reduced,
    total: Reduced,
}

/// A histogram reduced to cumulative bucket counts, count and sum.
struct Reduced {
    cumulative: [u64; BUCKETS_MICROS.len()],
    count: u64,
    sum_micros: u64,
}

impl Reduced {
    /// Each fixed bound counts the HDR buckets whose lowest value is at or below it (as
    /// `Histogram::count_between` does), so a bound is exact to the HDR bucket width.
    fn new(counts: &[u64; LEN], sum_micros: u64) -> Self {
        let mut cumulative = [0; BUCKETS_MICROS.len()];
        let mut running = 0;
        let mut from = 0;
        for (slot, &bound) in cumulative.iter_mut().zip(&BUCKETS_MICROS) {
            // The HDR bucket holding the bound is the last one counted under it.
            let to = histogram::index_of(bound) + 1;
            running += counts[from..to].iter().sum::<u64>();
            *slot = running;
            from = to;
        }
        running += counts[from..].iter().sum::<u64>();
        Self {
            cumulative,
            count: running,
            sum_micros,
        }
    }
}

impl<L: Labels> Collect for HttpMetrics<L> {
    fn collect(&self, out: &mut Exposition<'_>) {
        let mut rows = Vec::with_capacity(self.family.len() + 1);
        let mut row = |labels: String, s: &HttpSeries| {
            let t = s.totals();
            rows.push(Row {
                labels,
                requests: t.requests,
                codes: t.codes,
                grpc: t.grpc,
                outcomes: [t.successes, t.failures, t.cancelled],
                in_flight: t.in_flight(),
                headers: Reduced::new(&t.headers, t.headers_sum),
                total: Reduced::new(&t.total, t.total_sum),
            });
        };
        self.family.for_each(|labels, s| row(out.labels(labels), s));
        if self.family.overflowed() > 0 {
            row("overflow=\"true\"".to_owned(), self.family.overflow());
        }

        let p = &*self.prefix;
        out.family(
            &format!("{p}_requests_total"),
            "counter",
            "Requests started.",
        );
        for r in &rows {
            out.sample("", &r.labels, "", r.requests);
        }
        out.family(
            &format!("{p}_responses_total"),
            "counter",
            "Responses received, by status class and code (a code outside IANA's registry is `other` of its class).",
        );
        let mut code_labels = String::new();
        for r in &rows {
            for (slot, &n) in r.codes.iter().enumerate() {
                if n > 0 {
                    code_labels.clear();
                    code_labels.push_str(STATUS_LABELS[class_of_slot(slot)]);
                    match http_slot_label(slot) {
                        HttpCode::Code(code) => {
                            let _ = write!(code_labels, ",status_code=\"{code}\"");
                        }
                        HttpCode::Other => code_labels.push_str(",status_code=\"other\""),
                    }
                    out.sample("", &r.labels, &code_labels, n);
                }
            }
        }
        out.family(
            &format!("{p}_grpc_responses_total"),
            "counter",
            "gRPC responses by grpc-status (from a trailers-only head or the trailers; codes past 16 are `other`).",
        );
        for r in &rows {
            for (slot, &n) in r.grpc.iter().enumerate() {
                if n > 0 {
                    code_labels.clear();
                    let _ = write!(code_labels, "grpc_status=\"{}\"", grpc_slot_name(slot));
                    out.sample("", &r.labels, &code_labels, n);
                }
            }
        }
        out.family(
            &format!("{p}_outcomes_total"),
            "counter",
            "Requests by outcome: success, failure (by HTTP or gRPC status, or an error), or cancelled by the caller.",
        );
        for r in &rows {
            for (outcome, &n) in OUTCOME_LABELS.iter().zip(&r.outcomes) {
                out.sample("", &r.labels, outcome, n);
            }
        }
        out.family(
            &format!("{p}_in_flight"),
            "gauge",
            "Requests started and not yet ended.",
        );
        for r in &rows {
            out.sample("", &r.labels, "", r.in_flight);
        }
        for (name, help, pick) in [
            (
                "response_headers_seconds",
                "Time from the request to its response headers.",
                (|r: &Row| &r.headers) as fn(&Row) -> &Reduced,
            ),
            (
                "request_duration_seconds",
                "Time from the request to the end of its response.",
                |r: &Row| &r.total,
            ),
        ] {
            out.family(&format!("{p}_{name}"), "histogram", help);
            for r in &rows {
                let h = pick(r);
                for (le, &n) in LE_LABELS.iter().zip(&h.cumulative) {
                    out.sample("_bucket", &r.labels, le, n);
                }
                out.sample("_bucket", &r.labels, "le=\"+Inf\"", h.count);
                out.sample_f64("_sum", &r.labels, "", seconds(h.sum_micros));
                out.sample("_count", &r.labels, "", h.count);
            }
        }
        out.family(
            &format!("{p}_label_sets_overflowed_total"),
            "counter",
            "Lookups of a new label set past the cap, folded into the overflow series.",
        );
        out.sample("", "", "", self.family.overflowed());
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_bounds_are_the_bounds() {
        for (le, micros) in LE_LABELS.iter().zip(BUCKETS_MICROS) {
            assert_eq!(*le, format!("le=\"{}\"", seconds(micros)));
        }
    }
}
