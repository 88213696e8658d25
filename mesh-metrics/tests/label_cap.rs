//! A flood of unique label sets stops growing memory at the cap.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_metrics::{DEFAULT_LABEL_SET_CAP, Direction, HttpLabels, HttpMetrics, MetricsLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

#[tokio::test]
async fn unique_paths_fold_into_one_overflow_series() {
    let metrics = HttpMetrics::new();
    // The worst labeler there is: the raw path as the route.
    let mut svc = (
        MetricsLayer::new(metrics.clone(), |req: &Request<()>| {
            HttpLabels::new(Direction::Inbound).with_route(req.uri().path())
        }),
        ClassifyLayer::new(AutoClassify::new(), ()),
    )
        .layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }));

    let mut send = async |i: usize| {
        let req = Request::get(format!("/items/{i}")).body(()).expect("valid");
        let rsp = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("response");
        rsp.into_body().collect().await.expect("body");
    };
    for i in 0..20_000 {
        send(i).await;
    }
    let memory_at_20k = metrics.memory_bytes();
    for i in 20_000..100_000 {
        send(i).await;
    }

    assert_eq!(metrics.label_sets(), DEFAULT_LABEL_SET_CAP);
    assert_eq!(metrics.overflowed(), 100_000 - DEFAULT_LABEL_SET_CAP as u64);
    // Memory stopped growing once the cap was reached.
    assert_eq!(metrics.memory_bytes(), memory_at_20k);
    let snap = metrics.snapshot();
    // At most cap + 1 label sets: the kept ones and the overflow series.
    assert_eq!(snap.series.len(), DEFAULT_LABEL_SET_CAP);
    assert_eq!(snap.overflow.requests, 90_000);
    assert_eq!(snap.overflow.successes, 90_000);
    let kept: u64 = snap.series.iter().map(|(_, s)| s.requests).sum();
    assert_eq!(kept, DEFAULT_LABEL_SET_CAP as u64);
}
