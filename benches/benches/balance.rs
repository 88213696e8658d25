//! The cost of balancing one request over 10 to 10,000 ready endpoints: ours against
//! `tower::balance::p2c::Balance` over `tower::load::PeakEwma`, on the same in-memory endpoint
//! services (answering at once). Each iteration is a whole request: ready, pick, call, the
//! response, its body read to the end.
//!
//! Run: `cargo bench -p benches --bench balance`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{drain, runtime};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig};
use mesh_core::Endpoint;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::{Service, ServiceExt};

type Rsp = Response<Full<Bytes>>;

fn endpoint_service()
-> impl Service<Request<()>, Response = Rsp, Error = Infallible> + Clone + Send + Sync + 'static {
    tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    })
}

async fn requests<S, B>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.expect("ready");
        let rsp = ready.call(Request::new(())).await.expect("response");
        drain(rsp.into_body()).await;
    }
    start.elapsed()
}

fn pick(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("balance_request");
    // The endpoint service called directly: what every balancer below adds to.
    group.bench_function("direct_no_balancer", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = endpoint_service();
            async move { requests(&mut svc, iters).await }
        })
    });
    for n in [10usize, 100, 1_000, 10_000] {
        let endpoints: Vec<Endpoint> = (0..n)
            .map(|i| {
                Endpoint::new(std::net::SocketAddr::from((
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    80,
                )))
            })
            .collect();
        let ours = rt.block_on(async {
            let b = Balance::<_, ()>::new(
                fixed(endpoints),
                |_: &Endpoint| endpoint_service(),
                BalanceConfig::default(),
            );
            // Discovery and readiness happen in the background; let them finish.
            while b
                .snapshot()
                .iter()
                .filter(|e| e.status == mesh_balance::EndpointStatus::Ready)
                .count()
                < n
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            b
        });
        group.bench_with_input(BenchmarkId::new("mesh", n), &n, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let mut svc = ours.clone();
                async move { requests(&mut svc, iters).await }
            })
        });
        let services: Vec<_> = (0..n).map(|_| endpoint_service()).collect();
        let tower_balance = rt.block_on(async {
            let discover = PeakEwmaDiscover::new(
                ServiceList::new::<Request<()>>(services),
                Duration::from_millis(30),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            );
            let mut b = tower::balance::p2c::Balance::new(discover);
            // The first poll readies every endpoint.
            b.ready().await.expect("ready");
            // Not `Clone`: shared between criterion's batches behind a lock taken once a batch.
            Arc::new(tokio::sync::Mutex::new(b))
        });
        group.bench_with_input(BenchmarkId::new("tower_p2c_peak_ewma", n), &n, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let shared = Arc::clone(&tower_balance);
                async move { requests(&mut *shared.lock().await, iters).await }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
