//! HTTP golden metrics: the series, their registry by label set, and the layer recording them.

mod future;
mod layer;
mod metrics;
mod series;

pub use self::future::{Recorder, ResponseFuture};
pub use self::layer::{ByLabels, MetricsLayer, MetricsService, SelectSeries};
pub use self::metrics::{HttpMetrics, HttpMetricsSnapshot};
pub use self::series::{HttpSeries, HttpSnapshot};
