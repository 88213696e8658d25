//! The reference proxy's outbound stack, per request: golden metrics -> response deadline ->
//! retries -> the balancer over 100 ready in-memory endpoints, each answering at once. The
//! balancer classifies each response once; the retry and metrics layers join that
//! classification (before, each of the three classified every response by itself).
//!
//! Run: `cargo bench -p benches --bench stack`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{drain, runtime};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig};
use mesh_core::retry::{ReplayBody, RetryBudget, RetryLayer, RetryPolicy};
use mesh_core::{Endpoint, TimeoutLayer};
use mesh_metrics::{Direction, HttpLabels, HttpMetrics, MetricsLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

type Body = ReplayBody<Empty<Bytes>>;

/// An endpoint answering at once.
type EndpointService = tower::util::ServiceFn<
    fn(Request<Body>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn answer(_req: Request<Body>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"hello")))))
}

fn endpoint() -> EndpointService {
    tower::service_fn(answer as fn(_) -> _)
}

async fn requests<S, B>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.expect("ready");
        let req = Request::get("http://web/")
            .body(Empty::new())
            .expect("request");
        let rsp = ready.call(req).await.expect("response");
        drain(rsp.into_body()).await;
    }
    start.elapsed()
}

fn stack(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("outbound_stack");
    let balance = rt.block_on(async {
        let endpoints: Vec<Endpoint> = (0..100u16)
            .map(|i| Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], 1000 + i))))
            .collect();
        let b = Balance::new(
            fixed(endpoints),
            |_: &Endpoint| endpoint(),
            BalanceConfig::default(),
        );
        while b
            .snapshot()
            .iter()
            .filter(|e| e.status == mesh_balance::EndpointStatus::Ready)
            .count()
            < 100
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        b
    });
    let metrics = HttpMetrics::new();
    let budget = Arc::new(RetryBudget::builder().build().expect("budget"));
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics, |_: &Request<Empty<Bytes>>| {
            HttpLabels::new(Direction::Outbound)
        }))
        .layer(TimeoutLayer::new().response_headers(Duration::from_secs(10)))
        .layer(RetryLayer::new(RetryPolicy::new(), budget))
        .service(balance);
    group.bench_function("metrics_timeout_retry_balance_100", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move { requests(&mut svc, iters).await }
        })
    });
    // The same stack boxed as the proxy's router holds each service's: the future and the
    // response body behind one box each.
    let boxed = tower::util::BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(|rsp: Response<_>| rsp.map(http_body_util::BodyExt::boxed_unsync))
            .service(svc),
    );
    group.bench_function("metrics_timeout_retry_balance_100_boxed", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = boxed.clone();
            async move { requests(&mut svc, iters).await }
        })
    });
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
