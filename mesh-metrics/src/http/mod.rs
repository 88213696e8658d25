//! HTTP golden metrics: the series, their registry by label set, and the layer recording them.

mod codes;
mod layer;
mod metrics;
mod recorder;
mod series;

pub use self::layer::{ByLabels, Metrics, MetricsLayer, NewRecorder, SelectSeries};
pub use self::metrics::{HttpMetrics, HttpMetricsSnapshot};
pub use self::recorder::Recorder;
pub use self::series::{HttpSeries, HttpSnapshot};
