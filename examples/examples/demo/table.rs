//! The golden-metrics tables the demo prints, in the manner of `linkerd viz stat`: per
//! deployment (what each pod's inbound proxy saw) and per edge (what each caller's outbound
//! proxy saw, retries included), over the last interval.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use mesh_metrics::{Direction, HttpLabels, HttpSnapshot};

/// Totals of one row at one moment.
#[derive(Clone)]
pub(crate) struct Totals {
    requests: u64,
    successes: u64,
    failures: u64,
    meshed: u64,
    latency: Option<Histogram<u64>>,
}

impl Totals {
    fn empty() -> Self {
        Self {
            requests: 0,
            successes: 0,
            failures: 0,
            meshed: 0,
            latency: None,
        }
    }

    fn add(&mut self, labels: &HttpLabels, s: &HttpSnapshot) {
        self.requests += s.requests;
        self.successes += s.successes;
        self.failures += s.failures;
        if labels.peer.is_some() {
            self.meshed += s.requests;
        }
        let hdr = s.total_latency.hdr();
        match &mut self.latency {
            Some(h) => {
                let _ = h.add(hdr);
            }
            None => self.latency = Some(hdr.clone()),
        }
    }

    /// What happened since `before`.
    fn since(&self, before: Option<&Totals>) -> Totals {
        let Some(before) = before else {
            return self.clone();
        };
        let latency = match (&self.latency, &before.latency) {
            (Some(now), Some(then)) => {
                let mut delta = now.clone();
                delta.subtract(then).ok().map(|_| delta)
            }
            (now, _) => now.clone(),
        };
        Totals {
            requests: self.requests.saturating_sub(before.requests),
            successes: self.successes.saturating_sub(before.successes),
            failures: self.failures.saturating_sub(before.failures),
            meshed: self.meshed.saturating_sub(before.meshed),
            latency,
        }
    }
}

/// A row's name and what it counts.
pub(crate) type Rows = Vec<(String, Totals)>;

/// The rows of one proxy: its inbound side under `pod`, and each outbound authority as an edge
/// from `deployment`.
pub(crate) fn rows_of(
    deployment: &str,
    pod: &str,
    metrics: &mesh_metrics::HttpMetrics<HttpLabels>,
) -> (Rows, Rows) {
    let mut inbound = Totals::empty();
    let mut edges: HashMap<String, Totals> = HashMap::new();
    for (labels, snapshot) in metrics.snapshot().series {
        match labels.direction {
            Direction::Inbound => inbound.add(&labels, &snapshot),
            Direction::Outbound => {
                let to = labels
                    .authority
                    .as_ref()
                    .map_or("?".to_owned(), |a| a.host().to_owned());
                edges
                    .entry(format!("{deployment} -> {to}"))
                    .or_insert_with(Totals::empty)
                    .add(&labels, &snapshot);
            }
        }
    }
    let mut edges: Rows = edges.into_iter().collect();
    edges.sort_by(|a, b| a.0.cmp(&b.0));
    (vec![(format!("{deployment:<5} {pod}"), inbound)], edges)
}

/// Writes one table: a header, then a row per entry with the change since `before`.
pub(crate) fn render(
    out: &mut String,
    title: &str,
    rows: &Rows,
    before: &HashMap<String, Totals>,
    interval: Duration,
) {
    let _ = writeln!(
        out,
        "{title:<16} {:>9} {:>8} {:>9} {:>9} {:>9} {:>6}",
        "SUCCESS", "RPS", "P50", "P95", "P99", "TLS"
    );
    for (name, totals) in rows {
        let delta = totals.since(before.get(name));
        let ended = delta.successes + delta.failures;
        let success = if ended == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}%", 100.0 * delta.successes as f64 / ended as f64)
        };
        let rps = delta.requests as f64 / interval.as_secs_f64().max(0.001);
        let q = |q: f64| match &delta.latency {
            Some(h) if !h.is_empty() => format!("{:.1}ms", h.value_at_quantile(q) as f64 / 1000.0),
            _ => "-".to_owned(),
        };
        let tls = (100 * delta.meshed)
            .checked_div(delta.requests)
            .map_or("-".to_owned(), |share| format!("{share}%"));
        let _ = writeln!(
            out,
            "{name:<16} {success:>9} {rps:>8.1} {:>9} {:>9} {:>9} {tls:>6}",
            q(0.5),
            q(0.95),
            q(0.99)
        );
    }
}
