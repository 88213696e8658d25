//! One proxy's golden metrics as read from its exposition: who it is, and its HTTP series by
//! direction and peer, with the counters a reader aggregates (sums, never averages).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::text::Sample;

/// The workload a proxy runs beside, from the labels it puts on every line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Workload {
    /// The namespace.
    pub namespace: String,
    /// The deployment.
    pub deployment: String,
    /// The pod.
    pub pod: String,
}

/// Which way a series' requests went through its proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the workload: requests it served.
    Inbound,
    /// Out of the workload: requests it made.
    Outbound,
}

/// What tells one HTTP series of a proxy from another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The request authority.
    pub authority: Option<String>,
    /// The authenticated peer (the client inbound, the server outbound); `None` without mTLS.
    pub peer: Option<String>,
    /// The route, where the proxy labels by route.
    pub route: Option<String>,
    /// The endpoint, where the proxy labels by endpoint.
    pub endpoint: Option<String>,
}

/// The counters of one series (or of several, added).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Requests started.
    pub requests: u64,
    /// Requests that succeeded.
    pub successes: u64,
    /// Requests that failed (cancelled ones aside).
    pub failures: u64,
    /// Requests the caller gave up on.
    pub cancelled: u64,
    /// The latency histogram to the end of the response: cumulative counts by upper bound in
    /// seconds, ending with `+Inf`.
    pub latency: Buckets,
    /// Responses by HTTP status code (`"200"`, ..., or `"other"`).
    pub status_codes: BTreeMap<String, u64>,
    /// gRPC responses by status name (`"OK"`, `"NOT_FOUND"`, ...).
    pub grpc_codes: BTreeMap<String, u64>,
}

/// A cumulative histogram: `(upper bound in seconds, requests at or under it)`, by bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Buckets(pub Vec<(f64, u64)>);

impl Buckets {
    fn set(&mut self, le: f64, count: u64) {
        match self.0.binary_search_by(|(b, _)| b.total_cmp(&le)) {
            Ok(i) => self.0[i].1 += count,
            Err(i) => self.0.insert(i, (le, count)),
        }
    }

    /// The cumulative count at `le`: that of the largest bound at or under it.
    fn at(&self, le: f64) -> u64 {
        self.0
            .iter()
            .take_while(|(b, _)| *b <= le)
            .last()
            .map_or(0, |(_, n)| *n)
    }

    /// Both histograms added: at each bound of either, the sum of their cumulative counts
    /// there (exact when the bounds are the same, as they are between our proxies).
    pub fn add(&self, other: &Self) -> Self {
        let mut bounds: Vec<f64> = self.0.iter().chain(&other.0).map(|(b, _)| *b).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Self(
            bounds
                .into_iter()
                .map(|b| (b, self.at(b) + other.at(b)))
                .collect(),
        )
    }

    /// What was added since `before` (a counter that went down restarted: all of it is new).
    pub fn since(&self, before: &Self) -> Self {
        let restarted = self.0.iter().any(|(b, n)| *n < before.at(*b));
        if restarted {
            return self.clone();
        }
        Self(
            self.0
                .iter()
                .map(|(b, n)| (*b, n - before.at(*b)))
                .collect(),
        )
    }

    /// How many requests the histogram holds.
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, n)| *n)
    }

    /// The latency at quantile `q` in seconds, as Prometheus' `histogram_quantile` computes it
    /// (linear within the bucket holding the rank; the highest finite bound when the rank
    /// falls in `+Inf`), so that a figure from two scrapes and one from PromQL agree.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, count) in &self.0 {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = (count - lower.1) as f64;
                if in_bucket == 0.0 {
                    return Some(bound);
                }
                return Some(lower.0 + (bound - lower.0) * (rank - lower.1 as f64) / in_bucket);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }
}

impl Counts {
    /// Both added.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.failures += other.failures;
        self.cancelled += other.cancelled;
        self.latency = self.latency.add(&other.latency);
        for (code, n) in &other.status_codes {
            *self.status_codes.entry(code.clone()).or_default() += n;
        }
        for (code, n) in &other.grpc_codes {
            *self.grpc_codes.entry(code.clone()).or_default() += n;
        }
    }

    /// What was counted since `before`; a counter that went down means the proxy restarted,
    /// and then all of it is new.
    pub fn since(&self, before: &Self) -> Self {
        if self.requests < before.requests {
            return self.clone();
        }
        let sub = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, n)| (k.clone(), n.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Self {
            requests: self.requests - before.requests,
            successes: self.successes.saturating_sub(before.successes),
            failures: self.failures.saturating_sub(before.failures),
            cancelled: self.cancelled.saturating_sub(before.cancelled),
            latency: self.latency.since(&before.latency),
            status_codes: sub(&self.status_codes, &before.status_codes),
            grpc_codes: sub(&self.grpc_codes, &before.grpc_codes),
        }
    }
}

/// One proxy's metrics: its workload and identity, and its HTTP series.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyMetrics {
    /// The workload, from the labels on its lines.
    pub workload: Workload,
    /// Its identity (`mesh_proxy_info`), if it says.
    pub identity: Option<String>,
    /// Its HTTP series.
    pub series: BTreeMap<SeriesKey, Counts>,
}

impl ProxyMetrics {
    /// Reads the mesh's families out of one proxy's samples; everything else is ignored.
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut out = Self::default();
        for s in samples {
            if out.workload == Workload::default() && s.labels.contains_key("deployment") {
                out.workload = Workload {
                    namespace: s.label("namespace").unwrap_or_default().to_owned(),
                    deployment: s.label("deployment").unwrap_or_default().to_owned(),
                    pod: s.label("pod").unwrap_or_default().to_owned(),
                };
            }
            if s.name == "mesh_proxy_info" {
                out.identity = s.label("identity").map(str::to_owned);
                continue;
            }
            let Some(part) = s.name.strip_prefix("mesh_http_") else {
                continue;
            };
            let Some(key) = series_key(s) else {
                continue;
            };
            // Counters are whole numbers; a float that is not is garbage, read as its floor.
            let n = if s.value.is_finite() && s.value >= 0.0 {
                s.value as u64
            } else {
                0
            };
            let counts = out.series.entry(key).or_default();
            match part {
                "requests_total" => counts.requests += n,
                "outcomes_total" => match s.label("outcome") {
                    Some("success") => counts.successes += n,
                    Some("failure") => counts.failures += n,
                    Some("cancelled") => counts.cancelled += n,
                    _ => {}
                },
                "request_duration_seconds_bucket" => {
                    let le = match s.label("le") {
                        Some("+Inf") => Some(f64::INFINITY),
                        Some(v) => v.parse().ok(),
                        None => None,
                    };
                    if let Some(le) = le {
                        counts.latency.set(le, n);
                    }
                }
                "responses_total" => {
                    let code = s
                        .label("status_code")
                        .or(s.label("status_class"))
                        .unwrap_or("other");
                    *counts.status_codes.entry(code.to_owned()).or_default() += n;
                }
                "grpc_responses_total" => {
                    let code = s.label("grpc_status").unwrap_or("other");
                    *counts.grpc_codes.entry(code.to_owned()).or_default() += n;
                }
                _ => {}
            }
        }
        out
    }

    /// What each series counted since `before` (the same proxy, earlier).
    pub fn since(&self, before: Option<&Self>) -> Self {
        let Some(before) = before else {
            return self.clone();
        };
        let series = self
            .series
            .iter()
            .map(|(k, c)| {
                let was = before.series.get(k).cloned().unwrap_or_default();
                (k.clone(), c.since(&was))
            })
            .collect();
        Self {
            workload: self.workload.clone(),
            identity: self.identity.clone(),
            series,
        }
    }
}

/// The series a sample belongs to: its direction and peer labels. The labels that tell its part
/// apart (`outcome`, `le`, status codes) and the owner's (workload, Prometheus' `instance` and
/// `job`) are not part of it.
fn series_key(s: &Sample) -> Option<SeriesKey> {
    let direction = match s.label("direction")? {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        _ => return None,
    };
    let get = |name| s.label(name).map(str::to_owned);
    Some(SeriesKey {
        direction,
        authority: get("authority"),
        peer: get("peer_id"),
        route: get("route"),
        endpoint: get("endpoint"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(v: &[(f64, u64)]) -> Buckets {
        Buckets(v.to_vec())
    }

    #[test]
    fn quantiles_are_prometheus_histogram_quantile() {
        let h = buckets(&[(0.001, 0), (0.005, 50), (0.01, 100), (f64::INFINITY, 100)]);
        // Rank 50 is the top of the 1-5 ms bucket; rank 75 halfway through 5-10 ms.
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert!((h.quantile(0.75).expect("q") - 0.0075).abs() < 1e-12);
        let tail = buckets(&[(0.001, 1), (f64::INFINITY, 10)]);
        assert_eq!(tail.quantile(0.99), Some(0.001));
        assert_eq!(Buckets::default().quantile(0.5), None);
    }

    #[test]
    fn histograms_add_and_subtract_by_bound() {
        let a = buckets(&[(0.01, 2), (f64::INFINITY, 3)]);
        let b = buckets(&[(0.01, 1), (f64::INFINITY, 5)]);
        assert_eq!(a.add(&b), buckets(&[(0.01, 3), (f64::INFINITY, 8)]));
        assert_eq!(b.add(&a).since(&a), b);
        // A restarted proxy's counters went down: all of the later one is new.
        assert_eq!(a.since(&b), a);
    }
}
