//! Seeing the mesh: the golden metrics and live requests of every proxy, put together.
//!
//! Each proxy serves its own `/metrics` and `/tap`; this crate reads many at once and answers
//! the questions a person debugging asks, the way `linkerd viz` does:
//!
//! - [`scrape_all`] reads every proxy's `/metrics` in parallel, each within a deadline; one that
//!   does not answer, answers garbage or answers late is reported, never left out.
//! - A [`Reading`] is what each proxy counted over an interval: from two scrapes
//!   ([`Reading::between`]), or from a Prometheus server scraping the same proxies
//!   ([`Prometheus::metrics_at`] at two instants), with the same numbers.
//! - [`stat`]: success rate, RPS, p50/p95/p99 and meshed share per namespace, deployment or
//!   pod, `--to` or `--from` another; counters summed and histograms merged across replicas
//!   (percentiles are never averaged), quantiles computed as PromQL's `histogram_quantile`.
//! - [`edges`]: who calls whom, with both identities and whether the calls were mTLS.
//! - [`tap`](mod@tap): the live request streams of chosen proxies, merged and filtered;
//!   [`Top`] tallies them into the busiest paths.
//! - [`dashboard`]: a web page served locally (no build step, no external assets) with the
//!   topology, the stat table with sparklines and a live tap view.
//!
//! ```
//! use std::time::Duration;
//! use mesh_viz::{ProxyMetrics, Reading, Resource, StatQuery, Target, parse, stat};
//!
//! let before = "mesh_http_requests_total{direction=\"inbound\",namespace=\"shop\",deployment=\"api\",pod=\"api-0\"} 10\n";
//! let after = "mesh_http_requests_total{direction=\"inbound\",namespace=\"shop\",deployment=\"api\",pod=\"api-0\"} 30\n\
//!              mesh_http_outcomes_total{direction=\"inbound\",outcome=\"success\",namespace=\"shop\",deployment=\"api\",pod=\"api-0\"} 20\n";
//! // What a scrape gives: each proxy's metrics, or why it said nothing.
//! let read = |text: &str| parse(text).map(|s| ProxyMetrics::from_samples(&s)).map_err(|e| e.to_string());
//! let target = Target("127.0.0.1:9990".into());
//! let reading = Reading::between(
//!     &[(target.clone(), read(before))],
//!     &[(target, read(after))],
//!     Duration::from_secs(10),
//! );
//! let rows = stat(&reading, &StatQuery { by: Resource::Deployment, ..StatQuery::default() });
//! assert_eq!((rows[0].name.as_str(), rows[0].requests, rows[0].rps), ("shop/api", 20, 2.0));
//! ```

pub mod dashboard;
mod edges;
mod fetch;
mod model;
mod prometheus;
mod scrape;
mod stat;
mod table;
pub mod tap;
mod text;
mod top;
pub mod view;

pub use edges::{Edge, edges};
pub use fetch::FetchError;
pub use model::{Buckets, Counts, Direction, ProxyMetrics, SeriesKey, Workload};
pub use prometheus::{Prometheus, PrometheusError};
pub use scrape::{Scrape, ScrapeError, Target, outcomes, scrape, scrape_all};
pub use stat::{ProxyReading, Reading, Resource, ResourceRef, StatQuery, StatRow, stat};
pub use table::Table;
pub use tap::{TapEvent, TapFilter, TapItem};
pub use text::{Sample, TextError, parse};
pub use top::{Top, TopRow};
