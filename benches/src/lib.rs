//! Benchmarks of the mesh: criterion benches under `benches/` (run with `cargo bench -p
//! benches`), and later the load harness. This library holds what the benches share.

use std::hint::black_box;
use std::pin::pin;

use http_body::Body;
use http_body_util::BodyExt;

/// Reads a body to its end without allocating, so that body wrappers are paid for in full.
pub async fn drain<B: Body>(body: B) {
    let mut body = pin!(body);
    while let Some(frame) = body.frame().await {
        let _ = black_box(frame.is_ok());
    }
}

/// A current-thread runtime with timers, for async benches.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a benchmark needs a runtime")
}

/// The service under the layers: always ready, answers at once with a small body.
pub fn bare() -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = std::convert::Infallible,
> + Clone {
    tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"hello"),
        )))
    })
}

/// Measures `iters` whole requests through `svc`: ready, call, await the response, read its
/// body to the end (so body wrappers are paid for too), drop everything.
pub async fn requests<S, B>(mut svc: S, iters: u64) -> std::time::Duration
where
    S: tower::Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
{
    use tower::ServiceExt;
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.expect("always ready");
        let rsp = ready
            .call(http::Request::new(()))
            .await
            .expect("never fails");
        drain(rsp.into_body()).await;
    }
    start.elapsed()
}
