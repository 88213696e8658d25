//! The layer that records every request of a service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use mesh_core::BoxError;
use mesh_core::classify::{AutoClassify, ClassifiedBody, Classify, ClassifyResponse};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::future::{Pending, Recorder, ResponseFuture};
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

/// Records the golden metrics of every request into a series picked by `P`, classifying
/// outcomes with `C` (gRPC-aware [`AutoClassify`] by default), and feeds a [`Tap`] if given.
///
/// Per request: the request is counted when called; the status class and the time to the
/// response headers when they arrive; the outcome and the time to the end of the response body
/// when it ends, fails, or is dropped (cancelled). All into the calling thread's own stripe of
/// the series, without a lock or an allocation (unless a tap listener wants the request).
#[derive(Clone, Debug)]
pub struct MetricsLayer<P, C = AutoClassify> {
    select: P,
    classify: C,
    tap: Option<(Tap, Direction)>,
}

impl<L: Labels, F> MetricsLayer<ByLabels<L, F>> {
    /// Records each request in the series of the labels `labeler` gives it.
    pub fn new(metrics: HttpMetrics<L>, labeler: F) -> Self {
        Self {
            select: ByLabels {
                series: metrics.placeholder(),
                metrics,
                labeler,
                last: None,
            },
            classify: AutoClassify::new(),
            tap: None,
        }
    }
}

impl MetricsLayer<Arc<HttpSeries>> {
    /// Records every request in one series (see [`HttpMetrics::series`]).
    pub fn fixed(series: Arc<HttpSeries>) -> Self {
        Self {
            select: series,
            classify: AutoClassify::new(),
            tap: None,
        }
    }
}

impl<P, C> MetricsLayer<P, C> {
    /// Classifies outcomes with `classify` instead.
    pub fn with_classify<C2>(self, classify: C2) -> MetricsLayer<P, C2> {
        MetricsLayer {
            select: self.select,
            classify,
            tap: self.tap,
        }
    }

    /// Also publishes each request to `tap`, marked with `direction`.
    pub fn with_tap(mut self, tap: Tap, direction: Direction) -> Self {
        self.tap = Some((tap, direction));
        self
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for MetricsLayer<P, C> {
    type Service = MetricsService<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            select: self.select.clone(),
            classify: self.classify.clone(),
            tap: self.tap.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S, P, C> {
    inner: S,
    select: P,
    classify: C,
    tap: Option<(Tap, Direction)>,
}

type Eos<C> = <<C as Classify>::Response as ClassifyResponse>::Eos;

impl<S, P, C, ReqB, ResB> Service<Request<ReqB>> for MetricsService<S, P, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    P: SelectSeries<ReqB>,
    C: Classify,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ClassifiedBody<ResB, Eos<C>, Recorder>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let stripe = self.select.select(&req).start();
        let classifier = self.classify.classify_request(&req);
        let tap = match &self.tap {
            Some((tap, direction)) => tap.start(*direction, &req),
            None => None,
        };
        let pending = Pending {
            classifier,
            recorder: Recorder::new(stripe, Instant::now(), tap),
        };
        ResponseFuture::new(self.inner.call(req), pending)
    }
}
