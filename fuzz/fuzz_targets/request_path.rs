//! Arbitrary bytes from a client, as HTTP/1 or (after the preface) HTTP/2, into the outbound
//! side's service stack over in-memory IO: the server of `mesh_core::serve` with its deadlines
//! and flood guard, the error responses, the authority router, metrics and tap, the timeout,
//! retries and the balancer, down to an in-memory app. Nothing panics, every connection ends
//! (the deadlines pass in paused time), and whatever an HTTP/1 client gets back is HTTP.

#![no_main]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use libfuzzer_sys::fuzz_target;
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig};
use mesh_core::drain::Drain;
use mesh_core::error::ErrorResponseLayer;
use mesh_core::retry::{ReplayBody, RetryBudget, RetryLayer, RetryPolicy};
use mesh_core::route::Router;
use mesh_core::serve::{ServeConfig, serve_connection_with};
use mesh_core::{Endpoint, TimeoutLayer};
use mesh_metrics::{Direction, HttpLabels, HttpMetrics, MetricsLayer, Tap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceBuilder};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The app at the end: reads the body (the retry layer records it), answers 200 or, for
/// paths under `/fail`, 503 (so that retries happen).
async fn app(req: Request<ReplayBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let fail = req.uri().path().starts_with("/fail");
    let _ = req.into_body().collect().await;
    let mut rsp = Response::new(Full::new(Bytes::from_static(b"ok")));
    if fail {
        *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(rsp)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let version = if mode & 1 == 1 { Version::HTTP_2 } else { Version::HTTP_11 };
    let mut input = Vec::new();
    if version == Version::HTTP_2 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(rest);
    mesh_fuzz::runtime().block_on(async move {
        let endpoint = Endpoint::new(([127, 0, 0, 1], 1).into());
        let balance = Balance::new(
            fixed([endpoint]),
            |_: &Endpoint| tower::service_fn(app),
            BalanceConfig::default(),
        );
        let budget = RetryBudget::builder().build().expect("budget");
        let stack = ServiceBuilder::new()
            .layer(
                MetricsLayer::new(HttpMetrics::new(), |req: &Request<Incoming>| {
                    HttpLabels::from_request(Direction::Outbound, req)
                })
                .with_tap(Tap::default(), Direction::Outbound),
            )
            .layer(TimeoutLayer::new().response_headers(Duration::from_secs(5)))
            .layer(RetryLayer::new(RetryPolicy::new(), Arc::new(budget)))
            .service(balance);
        let service = ErrorResponseLayer::new().layer(Router::new([("web", stack)]));
        let (_drain, watch) = Drain::new();
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let serving = tokio::spawn(serve_connection_with(
            server,
            version,
            service,
            watch,
            ServeConfig::default(),
        ));
        let (mut read, mut write) = tokio::io::split(&mut client);
        let writing = async {
            let _ = write.write_all(&input).await;
            let _ = write.shutdown().await;
        };
        let mut output = Vec::new();
        let reading = read.read_to_end(&mut output);
        let (_, _) = tokio::join!(writing, reading);
        // Every connection ends: at its end of input, or at a deadline (paused time).
        tokio::time::timeout(Duration::from_secs(600), serving)
            .await
            .expect("the connection ended")
            .expect("the connection's task did not panic");
        if version == Version::HTTP_11 && !output.is_empty() {
            assert!(output.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&output));
        }
    });
});
