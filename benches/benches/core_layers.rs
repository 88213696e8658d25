//! The per-request cost of mesh-core's layers on a ready in-memory service, side by side with
//! the bare service and with tower's own timeout.
//!
//! Each iteration is one whole request: `ready`, `call`, await the response, then read the
//! response body to its end (so body wrappers are paid for too), and drop everything. Also
//! (`resend_head`) what `DualClient` pays per bodiless HTTP/2 request to be able to send it
//! again when refused: a boxed copy of a typical head, made and dropped.
//!
//! Run: `cargo bench -p benches --bench core_layers`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::{bare, drain, requests, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use mesh_core::Class;
use mesh_core::classify::{
    AutoClassify, ClassifiedBody, Classify, ClassifyLayer, ClassifyResponse, HttpClassify,
    NewOnClass, PublishClass,
};
use mesh_core::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt};

fn timeout(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("timeout");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| requests(bare(), iters))
    });
    group.bench_function("mesh_timeout_both_deadlines", |b| {
        let layer = TimeoutLayer::new()
            .response_headers(Duration::from_secs(1))
            .request(Duration::from_secs(10));
        b.to_async(&rt)
            .iter_custom(|iters| requests(layer.layer(bare()), iters))
    });
    group.bench_function("mesh_timeout_headers_only", |b| {
        let layer = TimeoutLayer::new().response_headers(Duration::from_secs(1));
        b.to_async(&rt)
            .iter_custom(|iters| requests(layer.layer(bare()), iters))
    });
    group.bench_function("tower_timeout", |b| {
        let layer = tower::timeout::TimeoutLayer::new(Duration::from_secs(1));
        b.to_async(&rt)
            .iter_custom(|iters| requests(layer.layer(bare()), iters))
    });
    group.finish();
}

/// Failures seen by the counting listener. A static, so that the listener itself costs only
/// what a real one must (an atomic add), not a reference-count bump per request.
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Counts outcomes, as a metrics or failure-accrual listener would, without allocating.
#[derive(Clone, Copy, Default)]
struct CountFailures;

impl<B> NewOnClass<B> for CountFailures {
    type OnClass = CountOne;

    fn new_on_class(&mut self, _: &Request<B>) -> CountOne {
        CountOne
    }
}

struct CountOne;

impl mesh_core::classify::OnClass for CountOne {
    fn on_class(self, class: Class) {
        if class.is_failure() {
            FAILURES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn classify(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("classify");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| requests(bare(), iters))
    });
    // The body wrapper alone, as a layer author would use it, with a counting listener.
    group.bench_function("body_wrapper_http", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut svc = bare();
            let start = Instant::now();
            for _ in 0..iters {
                let req = Request::new(());
                let classifier = HttpClassify.classify_request(&req);
                let svc = svc.ready().await.expect("ready");
                let rsp = svc.call(req).await.expect("ok");
                let eos = classifier.classify_response(&rsp);
                let body = ClassifiedBody::new(rsp.into_body(), eos, CountOne);
                drain(body).await;
            }
            start.elapsed()
        })
    });
    group.bench_function("layer_auto_counting", |b| {
        let layer = ClassifyLayer::new(AutoClassify::new(), CountFailures);
        b.to_async(&rt)
            .iter_custom(|iters| requests(layer.layer(bare()), iters))
    });
    group.bench_function("layer_auto_publish_handle", |b| {
        let layer = ClassifyLayer::new(AutoClassify::new(), PublishClass);
        b.to_async(&rt)
            .iter_custom(|iters| requests(layer.layer(bare()), iters))
    });
    group.finish();
}

/// The copy `DualClient` keeps of a bodiless HTTP/2 request's head (method, URI, version,
/// headers; boxed), for a head as a browser or gRPC client sends it through the mesh.
fn resend_head(c: &mut Criterion) {
    let req = Request::get("http://web.test.svc.cluster.local:8080/api/v1/items?page=2")
        .version(http::Version::HTTP_2)
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("l5d-dst-canonical", "web.test.svc.cluster.local:8080")
        .body(())
        .expect("request");
    let mut group = c.benchmark_group("resend_head");
    group.bench_function("clone_boxed", |b| {
        b.iter(|| {
            let mut head = Request::new(());
            *head.method_mut() = req.method().clone();
            *head.uri_mut() = req.uri().clone();
            *head.version_mut() = req.version();
            *head.headers_mut() = req.headers().clone();
            std::hint::black_box(Box::new(head))
        })
    });
    group.finish();
}

criterion_group!(benches, timeout, classify, resend_head);
criterion_main!(benches);
