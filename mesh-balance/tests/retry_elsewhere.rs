//! A retry goes to an endpoint the request has not tried: two real servers, one failing every
//! request at once and one answering in 25 ms; a fresh balancer under a retry layer with two
//! attempts; 1,000 requests, 64 at a time; none fails. Failure accrual (both kinds) and the
//! failure latency penalty are off, so that only the retry's choice can save a request: without
//! the memory of earlier tries, P2C sends the retry to the endpoint that answers fastest, the
//! failing one (measured here: 686 of the 1,000 requests failed both tries).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig};
use mesh_core::Endpoint;
use mesh_core::retry::{Backoff, RetryBudget, RetryLayer, RetryPolicy};
use mesh_core::test_util::{ConnectService, HttpVersion, TestServer, full};
use tower::{ServiceBuilder, ServiceExt};

async fn server(status: StatusCode, delay: Duration, served: Arc<AtomicU64>) -> TestServer {
    TestServer::start(move |_req| {
        served.fetch_add(1, Relaxed);
        async move {
            tokio::time::sleep(delay).await;
            let mut rsp = Response::new(full("answer"));
            *rsp.status_mut() = status;
            rsp
        }
    })
    .await
    .expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_avoids_the_endpoint_the_request_failed_on() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (bad_served, good_served) = (Arc::default(), Arc::default());
        let bad = server(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::ZERO,
            Arc::clone(&bad_served),
        )
        .await;
        let good = server(
            StatusCode::OK,
            Duration::from_millis(25),
            Arc::clone(&good_served),
        )
        .await;
        let mut config = BalanceConfig::default();
        config.accrual.consecutive_failures = u32::MAX;
        config.accrual.success_rate = None;
        config.failure_penalty = Duration::ZERO;
        let balance = Balance::new(
            fixed([Endpoint::new(bad.addr()), Endpoint::new(good.addr())]),
            |e: &Endpoint| ConnectService::new(e.addr, HttpVersion::Http1),
            config,
        );
        let budget = RetryBudget::builder()
            .ratio(1.0)
            .min_per_second(10_000)
            .build()
            .expect("budget");
        let policy = RetryPolicy::new().max_attempts(2).backoff(Backoff::new(
            Duration::from_micros(100),
            Duration::from_millis(1),
        ));
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(policy, Arc::new(budget)))
            .service(balance);
        let failed = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..64)
            .map(|w| {
                let (svc, failed) = (svc.clone(), Arc::clone(&failed));
                tokio::spawn(async move {
                    // 1,000 requests in all: 40 workers send 16, 24 send 15.
                    for _ in 0..(if w < 40 { 16 } else { 15 }) {
                        let req = Request::get("/")
                            .body(Empty::<Bytes>::new())
                            .expect("request");
                        let rsp = svc.clone().oneshot(req).await.expect("a response");
                        if rsp.status() != StatusCode::OK {
                            failed.fetch_add(1, Relaxed);
                        }
                        rsp.into_body().collect().await.expect("body");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
        let failed = failed.load(Relaxed);
        assert_eq!(failed, 0, "requests that failed both tries");
        // The failing endpoint was tried (P2C sends it its share), each time only once.
        let (bad, good) = (bad_served.load(Relaxed), good_served.load(Relaxed));
        assert!(bad > 0, "the failing endpoint took no traffic");
        assert_eq!(good, 1000, "every request ended on the good endpoint");
    })
    .await
    .expect("in time");
}
