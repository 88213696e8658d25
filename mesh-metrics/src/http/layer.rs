//! The layer that records every request of a service.

use std::sync::Arc;

use http::Request;
use mesh_core::classify::{JoinClass, NewOnClass};
use tokio::time::Instant;
use tower::Layer;

use super::recorder::Recorder;
use super::{HttpMetrics, HttpSeries};
use crate::tap::Tap;
use crate::{Direction, Labels};

/// Picks the series a request is recorded in.
pub trait SelectSeries<B> {
    /// The series for `req`.
    fn select(&mut self, req: &Request<B>) -> &Arc<HttpSeries>;
}

/// One series for every request: for a stack built per route or per endpoint, whose labels
/// are known when it is built. Costs no lookup at all.
impl<B> SelectSeries<B> for Arc<HttpSeries> {
    #[inline]
    fn select(&mut self, _: &Request<B>) -> &Arc<HttpSeries> {
        self
    }
}

/// Labels each request with a function and looks its series up in [`HttpMetrics`]. Remembers
/// the last label set and its series, so a connection whose requests share labels skips the
/// lookup (one comparison instead).
pub struct ByLabels<L, F> {
    metrics: HttpMetrics<L>,
    labeler: F,
    /// The previous request's labels, and their series (a placeholder before the first).
    last: Option<L>,
    series: Arc<HttpSeries>,
}

impl<L, F: Clone> Clone for ByLabels<L, F> {
    fn clone(&self) -> Self {
        Self {
            metrics: self.metrics.clone(),
            labeler: self.labeler.clone(),
            // Each clone (a connection, usually) keeps its own memory of the last label set.
            last: None,
            series: Arc::clone(&self.series),
        }
    }
}

impl<L, F> std::fmt::Debug for ByLabels<L, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByLabels").finish_non_exhaustive()
    }
}

impl<B, L, F> SelectSeries<B> for ByLabels<L, F>
where
    L: Labels,
    F: Fn(&Request<B>) -> L,
{
    #[inline]
    fn select(&mut self, req: &Request<B>) -> &Arc<HttpSeries> {
        let labels = (self.labeler)(req);
        if self.last.as_ref() != Some(&labels) {
            self.series = self.metrics.series(&labels);
            self.last = Some(labels);
        }
        &self.series
    }
}

/// Records the golden metrics of every request into a series picked by `P`, and feeds a [`Tap`]
/// if given.
///
/// It does not classify: it joins the one classification the service it wraps made (the
/// balancer's, or a [`ClassifyLayer`](mesh_core::classify::ClassifyLayer)'s under it), so a gRPC
/// failure only the trailers report counts as one, and a caller hanging up counts as cancelled,
/// without a second look at the response.
///
/// Per request: the request is counted when called; the status class and the time to the
/// response headers when they arrive; the outcome and the time to the end of the response body
/// when the class is decided. All into the calling thread's own stripe of the series, without a
/// lock or an allocation (unless a tap listener wants the request).
#[derive(Clone, Debug)]
pub struct MetricsLayer<P> {
    new_recorder: NewRecorder<P>,
}

/// Makes each request's [`Recorder`]: the [`NewOnClass`] behind [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct NewRecorder<P> {
    select: P,
    tap: Option<(Tap, Direction)>,
}

/// The service made by [`MetricsLayer`]: the wrapped service, with each request's outcome
/// joined by a [`Recorder`].
pub type Metrics<S, P> = JoinClass<S, NewRecorder<P>>;

impl<L: Labels, F> MetricsLayer<ByLabels<L, F>> {
    /// Records each request in the series of the labels `labeler` gives it.
    pub fn new(metrics: HttpMetrics<L>, labeler: F) -> Self {
        Self::with_select(ByLabels {
            series: metrics.placeholder(),
            metrics,
            labeler,
            last: None,
        })
    }
}

impl MetricsLayer<Arc<HttpSeries>> {
    /// Records every request in one series (see [`HttpMetrics::series`]).
    pub fn fixed(series: Arc<HttpSeries>) -> Self {
        Self::with_select(series)
    }
}

impl<P> MetricsLayer<P> {
    fn with_select(select: P) -> Self {
        Self {
            new_recorder: NewRecorder { select, tap: None },
        }
    }

    /// Also publishes each request to `tap`, marked with `direction`.
    pub fn with_tap(mut self, tap: Tap, direction: Direction) -> Self {
        self.new_recorder.tap = Some((tap, direction));
        self
    }

    /// For a service with no classification under it: a [`ClassifyLayer`] that classifies with
    /// `classify` and records these metrics as its one listener (one response future, one body
    /// wrapper). Layers further out can still join that classification.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use mesh_core::classify::AutoClassify;
    /// use mesh_metrics::{Direction, HttpLabels, HttpMetrics, MetricsLayer};
    /// use tower::{Layer, ServiceExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let metrics = HttpMetrics::new();
    /// let layer = MetricsLayer::new(metrics.clone(), |_: &http::Request<()>| {
    ///     HttpLabels::new(Direction::Inbound)
    /// })
    /// .classifying(AutoClassify::new());
    /// let svc = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
    ///     let rsp = http::Response::builder().status(503).body(Full::new(bytes::Bytes::new()))?;
    ///     Ok::<_, http::Error>(rsp)
    /// }));
    /// svc.oneshot(http::Request::new(())).await?.into_body().collect().await?;
    /// let snapshot = metrics.snapshot();
    /// let (_, series) = &snapshot.series[0];
    /// assert_eq!((series.requests, series.failures), (1, 1));
    /// # Ok::<(), mesh_core::BoxError>(())
    /// # })?;
    /// # Ok::<(), mesh_core::BoxError>(())
    /// ```
    ///
    /// [`ClassifyLayer`]: mesh_core::classify::ClassifyLayer
    pub fn classifying<C>(
        self,
        classify: C,
    ) -> mesh_core::classify::ClassifyLayer<C, NewRecorder<P>> {
        mesh_core::classify::ClassifyLayer::new(classify, self.new_recorder)
    }
}

impl<S, P: Clone> Layer<S> for MetricsLayer<P> {
    type Service = Metrics<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        mesh_core::classify::JoinClassLayer::new(self.new_recorder.clone()).layer(inner)
    }
}

impl<B, P: SelectSeries<B>> NewOnClass<B> for NewRecorder<P> {
    type OnClass = Recorder;

    #[inline]
    fn new_on_class(&mut self, req: &Request<B>) -> Recorder {
        let stripe = self.select.select(req).start();
        let tap = match &self.tap {
            Some((tap, direction)) => tap.start(*direction, req),
            None => None,
        };
        Recorder::new(stripe, Instant::now(), tap)
    }
}
