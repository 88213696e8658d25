//! Latency histograms against known delays, with tokio's clock paused so that the delays are
//! exact and the test takes no real time.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_metrics::{HttpMetrics, LatencySnapshot, MetricsLayer};
use tokio::time::Sleep;
use tower::{Layer, ServiceExt, service_fn};

/// One data frame once `delay` has passed after the headers, then the end.
struct Delayed {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for Delayed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.sleep.as_mut() {
            None => Poll::Ready(None),
            Some(sleep) => {
                std::task::ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"done")))))
            }
        }
    }
}

/// Within the HDR bucket of `expected`: at least it, at most 1/16 above.
fn assert_near(snap: &LatencySnapshot, q: f64, expected: Duration) {
    let got = snap.quantile(q);
    let most = expected + expected / 16;
    assert!(
        got >= expected && got <= most,
        "q{q}: {got:?} is not within HDR precision of {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn quantiles_match_injected_delays() {
    let metrics = HttpMetrics::new();
    // Request `i` waits i ms for its headers, then 2*i ms more for its body.
    let classified = ClassifyLayer::new(AutoClassify::new(), ());
    let metrics_layer = MetricsLayer::new(metrics.clone(), |_: &Request<u64>| ());
    let svc = (metrics_layer, classified).layer(service_fn(|req: Request<u64>| async move {
        let ms = *req.body();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let body = Delayed {
            sleep: Some(Box::pin(tokio::time::sleep(Duration::from_millis(2 * ms)))),
        };
        Ok::<_, Infallible>(Response::new(body))
    }));
    for ms in 1..=200u64 {
        let rsp = svc
            .clone()
            .oneshot(Request::new(ms))
            .await
            .expect("response");
        rsp.into_body().collect().await.expect("body");
    }

    let snap = metrics.snapshot();
    let (_, s) = &snap.series[0];
    assert_eq!(s.headers_latency.count(), 200);
    assert_eq!(s.total_latency.count(), 200);
    let ms = Duration::from_millis;
    assert_near(&s.headers_latency, 0.5, ms(100));
    assert_near(&s.headers_latency, 0.99, ms(198));
    assert_near(&s.headers_latency, 1.0, ms(200));
    assert_near(&s.total_latency, 0.5, ms(300));
    assert_near(&s.total_latency, 0.95, ms(570));
    assert_near(&s.total_latency, 0.99, ms(594));
    // The sums are exact: sum(1..=200) ms, and three times that.
    assert_eq!(s.headers_latency.sum(), ms(20_100));
    assert_eq!(s.total_latency.sum(), ms(60_300));
}

#[tokio::test(start_paused = true)]
async fn latencies_beyond_the_range_are_kept_at_its_top() {
    let metrics = HttpMetrics::new();
    let classified = ClassifyLayer::new(AutoClassify::new(), ());
    let metrics_layer = MetricsLayer::new(metrics.clone(), |_: &Request<()>| ());
    let svc = (metrics_layer, classified).layer(service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
    }));
    let rsp = svc.oneshot(Request::new(())).await.expect("response");
    rsp.into_body().collect().await.expect("body");
    let snap = metrics.snapshot();
    let (_, s) = &snap.series[0];
    assert_eq!(s.total_latency.count(), 1);
    assert!(s.total_latency.quantile(1.0) >= Duration::from_secs(60));
    assert_eq!(s.total_latency.sum(), Duration::from_secs(120));
}
