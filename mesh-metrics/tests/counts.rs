//! Exact counts after a known mix of traffic through real hyper servers on 127.0.0.1, over
//! HTTP/1.1 and HTTP/2: statuses, gRPC failures reported only in trailers, errors without a
//! response, and cancelled requests, on the client side and on the server side.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_core::test_util::{
    ConnectService, HttpVersion, TestBody, TestClient, TestServer, closed_port, empty, full,
    grpc_response, grpc_trailers, stalled_after,
};
use mesh_core::{BoxError, Identity, PeerIdentity};
use mesh_metrics::{Direction, HttpLabels, HttpMetrics, MetricsLayer, Registry};
use tower::{Layer, ServiceExt};

const LIMIT: Duration = Duration::from_secs(10);

/// Answers by path.
async fn answer(req: Request<Incoming>) -> Response<TestBody> {
    let status = |code: u16| {
        Response::builder()
            .status(code)
            .body(full("x"))
            .expect("valid")
    };
    match req.uri().path() {
        "/ok" => Response::new(full("fine")),
        "/503" => status(503),
        "/404" => status(404),
        "/grpc/ok" => grpc_response(b"\0\0\0\0\x02hi", grpc_trailers("0")),
        "/grpc/unavailable" => grpc_response(b"\0\0\0\0\x00", grpc_trailers("14")),
        "/stream" => Response::new(stalled_after(b"first", Duration::from_secs(30))),
        _ => status(400),
    }
}

fn grpc(path: &str, authority: &str) -> Request<TestBody> {
    Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(&b"\0\0\0\0\x00"[..]))
        .expect("valid")
}

/// The route label is the path, which is bounded in this test.
fn by_path(req: &Request<TestBody>) -> HttpLabels {
    HttpLabels::new(Direction::Outbound).with_route(req.uri().path())
}

fn labels(route: &str) -> HttpLabels {
    HttpLabels::new(Direction::Outbound).with_route(route)
}

/// Sends the mix through a metrics layer on the client side and checks each route's counts.
async fn client_side(version: HttpVersion) {
    let server = TestServer::start(answer).await.expect("server");
    let authority = server.addr().to_string();
    let metrics = HttpMetrics::new();
    let layer = (
        MetricsLayer::new(metrics.clone(), by_path),
        ClassifyLayer::new(AutoClassify::new(), ()),
    );
    let svc = layer.layer(ConnectService::new(server.addr(), version));

    let get = |path: &str| {
        Request::get(format!("http://{authority}{path}"))
            .body(empty())
            .expect("valid")
    };
    for (path, times) in [("/ok", 3), ("/503", 2), ("/404", 1)] {
        for _ in 0..times {
            let rsp = svc.clone().oneshot(get(path)).await.expect("response");
            rsp.into_body().collect().await.expect("body");
        }
    }
    // gRPC over HTTP/2 only: both answer HTTP 200, and only the trailers tell them apart.
    if version == HttpVersion::Http2 {
        for (path, times) in [("/grpc/ok", 2), ("/grpc/unavailable", 3)] {
            for _ in 0..times {
                let rsp = svc
                    .clone()
                    .oneshot(grpc(path, &authority))
                    .await
                    .expect("response");
                assert_eq!(rsp.status(), 200);
                rsp.into_body().collect().await.expect("body");
            }
        }
    }
    // The caller reads one frame of a stream, then gives up.
    let rsp = svc.clone().oneshot(get("/stream")).await.expect("response");
    let mut body = rsp.into_body();
    body.frame().await.expect("a frame").expect("data");
    drop(body);
    // No response at all: nothing listens there.
    let refused = layer.layer(ConnectService::new(
        closed_port().await.expect("port"),
        version,
    ));
    assert!(refused.oneshot(get("/refused")).await.is_err());

    let snap = metrics.snapshot();
    let at = |route: &str| snap.get(&labels(route)).cloned().expect(route);
    let ok = at("/ok");
    assert_eq!(
        (ok.requests, ok.status_class(2), ok.successes, ok.failures),
        (3, 3, 3, 0)
    );
    let down = at("/503");
    assert_eq!(
        (
            down.requests,
            down.status_class(5),
            down.successes,
            down.failures
        ),
        (2, 2, 0, 2)
    );
    let missing = at("/404");
    assert_eq!(
        (missing.status_class(4), missing.successes, missing.failures),
        (1, 1, 0)
    );
    assert_eq!(
        (
            missing.status_code(http::StatusCode::NOT_FOUND),
            down.status_code(http::StatusCode::SERVICE_UNAVAILABLE),
            ok.status_code(http::StatusCode::OK),
            ok.status_code(http::StatusCode::NOT_FOUND),
        ),
        (1, 2, 3, 0)
    );
    let stream = at("/stream");
    assert_eq!(
        (stream.requests, stream.cancelled, stream.failures),
        (1, 1, 0)
    );
    let refused = at("/refused");
    assert_eq!(
        (
            refused.requests,
            refused.statuses.iter().sum::<u64>(),
            refused.failures
        ),
        (1, 0, 1)
    );
    if version == HttpVersion::Http2 {
        let grpc_ok = at("/grpc/ok");
        assert_eq!(
            (grpc_ok.status_class(2), grpc_ok.successes, grpc_ok.failures),
            (2, 2, 0)
        );
        let grpc_down = at("/grpc/unavailable");
        assert_eq!(
            (
                grpc_down.status_class(2),
                grpc_down.successes,
                grpc_down.failures
            ),
            (3, 0, 3)
        );
        use mesh_core::grpc::GrpcCode;
        assert_eq!(
            (
                grpc_down.grpc_code(GrpcCode::UNAVAILABLE),
                grpc_ok.grpc_code(GrpcCode::OK),
                grpc_ok.grpc_code(GrpcCode::UNAVAILABLE),
            ),
            (3, 2, 0)
        );
    }
    for (labels, s) in &snap.series {
        assert_eq!(s.in_flight(), 0, "{labels:?}");
        assert_eq!(s.total_latency.count(), s.requests, "{labels:?}");
        assert_eq!(
            s.headers_latency.count(),
            s.statuses.iter().sum::<u64>(),
            "{labels:?}"
        );
    }

    let text = Registry::default().with(metrics).encode();
    assert!(text.contains(
        r#"mesh_http_outcomes_total{direction="outbound",route="/503",outcome="failure"} 2"#
    ));
    assert!(text.contains(
        r#"mesh_http_responses_total{direction="outbound",route="/ok",status_class="2xx",status_code="200"} 3"#
    ));
    assert!(text.contains(
        r#"mesh_http_responses_total{direction="outbound",route="/404",status_class="4xx",status_code="404"} 1"#
    ));
    if version == HttpVersion::Http2 {
        assert!(text.contains(
            r#"mesh_http_grpc_responses_total{direction="outbound",route="/grpc/unavailable",grpc_status="UNAVAILABLE"} 3"#
        ), "{text}");
        assert!(text.contains(
            r#"mesh_http_grpc_responses_total{direction="outbound",route="/grpc/ok",grpc_status="OK"} 2"#
        ));
    }
}

#[tokio::test]
async fn client_side_counts_over_http1() {
    tokio::time::timeout(LIMIT, client_side(HttpVersion::Http1))
        .await
        .expect("in time");
}

#[tokio::test]
async fn client_side_counts_over_http2() {
    tokio::time::timeout(LIMIT, client_side(HttpVersion::Http2))
        .await
        .expect("in time");
}

async fn handle(req: Request<Incoming>) -> Result<Response<TestBody>, BoxError> {
    Ok(answer(req).await)
}

/// A hyper server whose service is wrapped in the metrics layer, labelled by the request's
/// authority and its peer identity (set here as mesh-tls would).
async fn metered_server(metrics: HttpMetrics<HttpLabels>) -> TestServer {
    let peer = Identity::parse("spiffe://mesh.local/ns/test/sa/client").expect("identity");
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut()
                .insert(PeerIdentity::Authenticated(peer.clone()));
            req
        })
        .layer(MetricsLayer::new(metrics, |req: &Request<Incoming>| {
            HttpLabels::from_request(Direction::Inbound, req)
        }))
        .layer(ClassifyLayer::new(AutoClassify::new(), ()))
        .service_fn(handle);
    TestServer::serve(svc).await.expect("server")
}

async fn server_side(version: HttpVersion) {
    let metrics = HttpMetrics::new();
    let server = metered_server(metrics.clone()).await;
    let addr = server.addr();
    let mut client = TestClient::connect(addr, version).await.expect("connect");
    for path in ["/ok", "/ok", "/503"] {
        let rsp = client.get(path).await.expect("response");
        rsp.into_body().collect().await.expect("body");
    }
    // The client leaves in the middle of a streaming response: the server's response body is
    // dropped unfinished.
    let rsp = client.get("/stream").await.expect("response");
    let mut body = rsp.into_body();
    body.frame().await.expect("a frame").expect("data");
    drop(body);
    drop(client);

    let expected = HttpLabels {
        authority: addr.to_string().parse().ok(),
        peer: Identity::parse("spiffe://mesh.local/ns/test/sa/client").ok(),
        ..HttpLabels::new(Direction::Inbound)
    };
    // The server notices the reset asynchronously.
    let snap = loop {
        let snap = metrics.snapshot();
        if snap.get(&expected).is_some_and(|s| s.in_flight() == 0) {
            break snap;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(snap.series.len(), 1, "{:?}", snap.series);
    let s = snap.get(&expected).expect("series");
    assert_eq!(
        (s.requests, s.status_class(2), s.status_class(5)),
        (4, 3, 1)
    );
    assert_eq!((s.successes, s.failures, s.cancelled), (2, 1, 1));
}

#[tokio::test]
async fn server_side_counts_over_http1() {
    tokio::time::timeout(LIMIT, server_side(HttpVersion::Http1))
        .await
        .expect("in time");
}

#[tokio::test]
async fn server_side_counts_over_http2() {
    tokio::time::timeout(LIMIT, server_side(HttpVersion::Http2))
        .await
        .expect("in time");
}
