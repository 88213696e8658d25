//! The retry layer's cost when no retry happens, side by side with the bare service and with
//! `tower::retry` under a comparable policy (retry 5xx of idempotent requests within a
//! `TpsBudget`, cloning the request up front as tower requires); and the budgets' cost with two
//! threads contending.
//!
//! Run: `cargo bench -p benches --bench retry`.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{drain, runtime};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_core::retry::{ReplayBody, RetryBudget, RetryLayer, RetryPolicy};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

type Rsp = Response<Full<Bytes>>;

fn ok<B>(_req: Request<B>) -> Ready<Result<Rsp, std::convert::Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(b"hello")))))
}

/// A request as a client sends it: a few headers (or none), and an empty body or a 1 KiB one.
fn request(method: http::Method, headers: bool, body: Bytes) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri("http://web.ns.svc:8080/api/items?page=2");
    if headers {
        builder = builder
            .header("user-agent", "bench/1.0")
            .header("accept", "application/json")
            .header("x-request-id", "5f1c0b7a-6a4e-4a39-9d3e-2f6c1a8e7b10");
    }
    builder.body(Full::new(body)).expect("valid request")
}

/// Measures `iters` whole requests (ready, call, response, body drained) through `svc`.
async fn requests<S, B>(mut svc: S, make: impl Fn() -> Request<Full<Bytes>>, iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
{
    let start = Instant::now();
    for _ in 0..iters {
        let req = make();
        let ready = svc.ready().await.expect("always ready");
        let rsp = ready.call(req).await.expect("never fails");
        drain(rsp.into_body()).await;
    }
    start.elapsed()
}

/// tower's retry with a policy comparable to ours: retry 5xx of idempotent requests within a
/// budget, with the request cloned up front.
#[derive(Clone)]
struct TowerPolicy(Arc<TpsBudget>);

impl<E> tower::retry::Policy<Request<Full<Bytes>>, Rsp, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Rsp, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(rsp) if !rsp.status().is_server_error() => {
                self.0.deposit();
                None
            }
            Ok(_) | Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        req.method().is_idempotent().then(|| req.clone())
    }
}

fn success_path(c: &mut Criterion) {
    let rt = runtime();
    let small = Bytes::from(vec![b'x'; 1024]);
    for (name, method, headers, body) in [
        ("get_no_headers", http::Method::GET, false, Bytes::new()),
        ("get_3_headers", http::Method::GET, true, Bytes::new()),
        ("put_1k_3_headers", http::Method::PUT, true, small),
    ] {
        let mut group = c.benchmark_group(format!("retry_success/{name}"));
        let make = || request(method.clone(), headers, body.clone());
        group.bench_function("bare", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| requests(tower::service_fn(ok), make, iters))
        });
        group.bench_function("mesh_retry", |b| {
            let budget = Arc::new(RetryBudget::builder().build().expect("budget"));
            let layer = RetryLayer::new(RetryPolicy::new(), budget);
            // Each try's one classification, which the retry layer reads (it classified by
            // itself before).
            let inner = ClassifyLayer::new(AutoClassify::new(), ())
                .layer(tower::service_fn(ok::<ReplayBody<Full<Bytes>>>));
            b.to_async(&rt)
                .iter_custom(|iters| requests(layer.layer(inner.clone()), make, iters))
        });
        group.bench_function("tower_retry", |b| {
            let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
            let layer = tower::retry::RetryLayer::new(TowerPolicy(budget));
            b.to_async(&rt)
                .iter_custom(|iters| requests(layer.layer(tower::service_fn(ok)), make, iters))
        });
        group.finish();
    }
}

/// `pairs` deposit-and-withdraw pairs on each of `threads` threads at once; the time per pair
/// on one thread.
fn contend(threads: usize, pairs: u64, op: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..pairs {
                    op();
                }
            });
        }
    });
    start.elapsed()
}

fn budgets(c: &mut Criterion) {
    // Budgets read tokio's clock, which works outside a runtime too.
    let mut group = c.benchmark_group("retry_budget");
    for threads in [1, 2] {
        group.bench_function(format!("mesh_deposit_withdraw_{threads}_threads"), |b| {
            let budget = RetryBudget::builder().build().expect("budget");
            b.iter_custom(|iters| {
                contend(threads, iters, || {
                    budget.deposit();
                    black_box(budget.try_withdraw());
                })
            })
        });
        group.bench_function(format!("tower_deposit_withdraw_{threads}_threads"), |b| {
            let budget = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
            b.iter_custom(|iters| {
                contend(threads, iters, || {
                    budget.deposit();
                    black_box(budget.withdraw());
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, success_path, budgets);
criterion_main!(benches);
