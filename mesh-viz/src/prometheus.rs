//! Readings from a Prometheus server that scrapes the proxies: the same raw counters, read at
//! two instants through its HTTP API, so that `stat --prometheus` and `stat` on two scrapes
//! compute the same numbers with the same code.

use std::time::Duration;

use crate::fetch::{self, FetchError};
use crate::model::ProxyMetrics;
use crate::scrape::Target;
use crate::text::Sample;

/// The families a reading needs, as one selector.
const SELECTOR: &str = "{__name__=~\"mesh_proxy_info|mesh_http_(requests_total|outcomes_total|request_duration_seconds_bucket|responses_total|grpc_responses_total)\"}";

/// The largest API answer read.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why Prometheus could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The fetch failed.
    #[error("Prometheus: {0}")]
    Fetch(#[from] FetchError),
    /// The answer is not what the query API returns.
    #[error("Prometheus answered something that is not a query result: {0}")]
    Answer(String),
}

/// A Prometheus server's query API.
#[derive(Clone, Debug)]
pub struct Prometheus {
    authority: String,
    deadline: Duration,
}

impl Prometheus {
    /// The server at `url` (`http://host:port`), each query answered within `deadline`.
    pub fn new(url: &str, deadline: Duration) -> Result<Self, PrometheusError> {
        Ok(Self {
            authority: fetch::authority_of(url)?,
            deadline,
        })
    }

    /// Each scraped proxy's metrics as Prometheus had them at `time` (Unix seconds): its latest
    /// samples at or before then. A target whose last scrape failed (`up` is 0) is reported as
    /// not answering; one never scraped by then is absent.
    pub async fn metrics_at(
        &self,
        time: f64,
    ) -> Result<Vec<(Target, Result<ProxyMetrics, String>)>, PrometheusError> {
        let up = self.query("up", time).await?;
        let samples = self.query(SELECTOR, time).await?;
        let mut out = Vec::new();
        for u in &up {
            let Some(instance) = u.label("instance") else {
                continue;
            };
            let target = Target(instance.to_owned());
            if u.value != 1.0 {
                out.push((
                    target,
                    Err("unreachable: Prometheus' last scrape of it failed".to_owned()),
                ));
                continue;
            }
            let mine: Vec<Sample> = samples
                .iter()
                .filter(|s| s.label("instance") == Some(instance))
                .cloned()
                .collect();
            out.push((target, Ok(ProxyMetrics::from_samples(&mine))));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// An instant query's vector as samples (name from `__name__`).
    pub async fn query(&self, promql: &str, time: f64) -> Result<Vec<Sample>, PrometheusError> {
        let path = format!(
            "/api/v1/query?query={}&time={time:.3}",
            fetch::percent_encode(promql)
        );
        let body = fetch::get(&self.authority, &path, self.deadline, MAX_ANSWER).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| PrometheusError::Answer(e.to_string()))?;
        if answer["status"] != "success" {
            return Err(PrometheusError::Answer(
                answer["error"].as_str().unwrap_or("no status").to_owned(),
            ));
        }
        let result = answer["data"]["result"]
            .as_array()
            .ok_or_else(|| PrometheusError::Answer("no data.result".into()))?;
        let mut samples = Vec::with_capacity(result.len());
        for r in result {
            let mut labels = std::collections::BTreeMap::new();
            if let Some(metric) = r["metric"].as_object() {
                for (k, v) in metric {
                    labels.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                }
            }
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| PrometheusError::Answer("a sample without a value".into()))?;
            samples.push(Sample {
                name: labels.remove("__name__").unwrap_or_default(),
                labels,
                value,
            });
        }
        Ok(samples)
    }
}
