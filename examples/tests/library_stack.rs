//! A service assembled from the crates' public layers the way an embedding program would, with
//! no retry layer: metrics -> deadline -> balancer -> pooled clients, over real hyper servers on
//! loopback. The endpoint client takes the caller's request body as it is (no `ReplayBody`), so
//! the retry layer is optional; with one, it may sit anywhere above the balancer.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Version};
use http_body_util::BodyExt;
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig};
use mesh_core::client::{DualClient, FixedConnector, UriAuthority};
use mesh_core::retry::{RetryBudget, RetryLayer, RetryPolicy};
use mesh_core::test_util::{TestBody, TestServer, empty, full};
use mesh_core::{Endpoint, TimeoutLayer};
use mesh_metrics::{Direction, HttpLabels, HttpMetrics, MetricsLayer};
use tower::{ServiceBuilder, ServiceExt};

/// An endpoint's client, for request bodies `B`.
fn client<B>(e: &Endpoint) -> DualClient<FixedConnector, B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<mesh_core::BoxError>,
{
    let authority = Authority::try_from(e.addr.to_string()).expect("authority");
    let to = FixedConnector(e.addr);
    DualClient::new(to, to, UriAuthority::FromRequest(authority))
}

async fn servers() -> Vec<TestServer> {
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let server = TestServer::start(move |_req| async move { http::Response::new(full(name)) })
            .await
            .expect("server");
        servers.push(server);
    }
    servers
}

fn request(version: Version) -> Request<TestBody> {
    Request::builder()
        .uri("http://web/")
        .version(version)
        .body(empty())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_without_retries_balances_and_records() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let servers = servers().await;
        let endpoints: Vec<Endpoint> = servers.iter().map(|s| Endpoint::new(s.addr())).collect();
        let metrics = HttpMetrics::new();
        let balance = Balance::new(fixed(endpoints), client, BalanceConfig::default());
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new(
                metrics.clone(),
                |_: &Request<TestBody>| HttpLabels::new(Direction::Outbound),
            ))
            .layer(TimeoutLayer::new().response_headers(Duration::from_secs(5)))
            .service(balance);
        let mut seen = std::collections::HashSet::new();
        for i in 0..40 {
            let version = if i % 2 == 0 {
                Version::HTTP_11
            } else {
                Version::HTTP_2
            };
            let rsp = svc
                .clone()
                .oneshot(request(version))
                .await
                .expect("response");
            assert_eq!(rsp.status(), 200);
            let body = rsp.into_body().collect().await.expect("body").to_bytes();
            seen.insert(body);
        }
        assert_eq!(seen.len(), 2, "both endpoints got traffic: {seen:?}");
        let snapshot = metrics.snapshot();
        let outbound = snapshot
            .get(&HttpLabels::new(Direction::Outbound))
            .expect("series");
        assert_eq!((outbound.requests, outbound.successes), (40, 40));
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_serves_a_stack_with_retries() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let servers = servers().await;
        let endpoints: Vec<Endpoint> = servers.iter().map(|s| Endpoint::new(s.addr())).collect();
        // The same client function: here its body type is the retry layer's replayable one.
        let balance = Balance::new(fixed(endpoints), client, BalanceConfig::default());
        let budget = Arc::new(RetryBudget::builder().build().expect("budget"));
        let svc = ServiceBuilder::new()
            .layer(TimeoutLayer::new().response_headers(Duration::from_secs(5)))
            .layer(RetryLayer::new(RetryPolicy::new(), budget))
            .service(balance);
        let rsp = svc
            .oneshot(request(Version::HTTP_2))
            .await
            .expect("response");
        assert_eq!(rsp.status(), 200);
    })
    .await
    .expect("in time");
}
