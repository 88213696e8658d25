//! Deadlines against real servers on 127.0.0.1 that stall, and the error responses they become.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use mesh_core::classify::{
    AutoClassify, Class, ClassHandle, ClassifyLayer, FailureReason, PublishClass,
};
use mesh_core::test_util::{
    ConnectService, HttpVersion, TestBody, TestClient, TestServer, empty, full, stalled_after,
};
use mesh_core::timeout::{Timeout, TimeoutBody, TimeoutError, TimeoutKind, TimeoutLayer};
use mesh_core::{BoxError, ErrorKind, error_response, grpc};
use tower::{Layer, ServiceBuilder, ServiceExt};

/// Bounds every wait in these tests; far above the deadlines under test.
const LIMIT: Duration = Duration::from_secs(10);
const HEADERS_DEADLINE: Duration = Duration::from_millis(200);
const REQUEST_DEADLINE: Duration = Duration::from_millis(400);

/// `/stall-headers` never answers in time; `/stall-body` sends headers and one chunk, then
/// stalls; `/fast` answers at once.
async fn stalling_server() -> TestServer {
    TestServer::start(|req: Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/stall-headers" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Response::new(empty())
            }
            "/stall-body" => Response::new(stalled_after(b"first", Duration::from_secs(30))),
            _ => Response::new(full("fast")),
        }
    })
    .await
    .expect("server starts")
}

fn request(addr: std::net::SocketAddr, path: &str, version: HttpVersion) -> Request<TestBody> {
    let mut req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(empty())
        .expect("valid");
    if version == HttpVersion::Http2 {
        *req.version_mut() = http::Version::HTTP_2;
    }
    req
}

fn timeout_of(err: &BoxError) -> TimeoutError {
    *err.downcast_ref::<TimeoutError>()
        .unwrap_or_else(|| panic!("expected a TimeoutError, got {err}"))
}

#[tokio::test]
async fn stalled_headers_fail_with_the_headers_deadline() {
    let server = stalling_server().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let svc = TimeoutLayer::new()
            .response_headers(HEADERS_DEADLINE)
            .request(Duration::from_secs(5))
            .layer(ConnectService::new(server.addr(), version));
        let req = request(server.addr(), "/stall-headers", version);
        let err = tokio::time::timeout(LIMIT, svc.oneshot(req))
            .await
            .expect("the deadline fires before the test limit")
            .expect_err("stalled");
        let timeout = timeout_of(&err);
        assert_eq!(timeout.kind(), TimeoutKind::ResponseHeaders);
        assert_eq!(timeout.after(), HEADERS_DEADLINE);
        assert_eq!(
            err.to_string(),
            "response headers not received within 200ms"
        );
        assert_eq!(ErrorKind::of(&*err), ErrorKind::Timeout);
    }
}

#[tokio::test]
async fn the_request_deadline_applies_before_headers_when_it_is_earlier() {
    let server = stalling_server().await;
    let svc = TimeoutLayer::new()
        .response_headers(Duration::from_secs(5))
        .request(REQUEST_DEADLINE)
        .layer(ConnectService::new(server.addr(), HttpVersion::Http1));
    let req = request(server.addr(), "/stall-headers", HttpVersion::Http1);
    let err = tokio::time::timeout(LIMIT, svc.oneshot(req))
        .await
        .expect("in time")
        .expect_err("stalled");
    assert_eq!(timeout_of(&err), TimeoutError::request(REQUEST_DEADLINE));
}

#[tokio::test]
async fn a_body_stalled_midway_fails_with_the_request_deadline() {
    let server = stalling_server().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let svc = ServiceBuilder::new()
            .layer(ClassifyLayer::new(AutoClassify::new(), PublishClass))
            .layer(
                TimeoutLayer::new()
                    .response_headers(HEADERS_DEADLINE)
                    .request(REQUEST_DEADLINE),
            )
            .service(ConnectService::new(server.addr(), version));
        let req = request(server.addr(), "/stall-body", version);
        let rsp = tokio::time::timeout(LIMIT, svc.oneshot(req))
            .await
            .expect("in time")
            .expect("headers arrive");
        assert_eq!(rsp.status(), StatusCode::OK);
        let class = rsp
            .extensions()
            .get::<ClassHandle>()
            .cloned()
            .expect("published");
        let mut body = rsp.into_body();
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "first");
        let err = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("in time")
            .expect("a frame")
            .expect_err("the body times out");
        assert_eq!(timeout_of(&err), TimeoutError::request(REQUEST_DEADLINE));
        assert_eq!(
            class.get(),
            Some(Class::Failure(FailureReason::Error(ErrorKind::Timeout))),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn fast_responses_pass_untouched() {
    let server = stalling_server().await;
    let svc = TimeoutLayer::new()
        .response_headers(HEADERS_DEADLINE)
        .request(REQUEST_DEADLINE)
        .layer(ConnectService::new(server.addr(), HttpVersion::Http2));
    let rsp = svc
        .oneshot(request(server.addr(), "/fast", HttpVersion::Http2))
        .await
        .expect("response");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, "fast");
}

type UpstreamFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Response<TimeoutBody<hyper::body::Incoming>>, BoxError>,
            > + Send,
    >,
>;

/// Boxes the call in a plain function: proving `Send` for it inside an async block trips a
/// known compiler limitation with higher-ranked lifetimes.
fn call_boxed(svc: Timeout<ConnectService>, req: Request<TestBody>) -> UpstreamFuture {
    Box::pin(svc.oneshot(req))
}

/// Forwards to the backend's stalling path with a response-headers deadline, answering
/// errors with `error_response`.
async fn forward_with_deadline(
    req: Request<hyper::body::Incoming>,
    backend: std::net::SocketAddr,
) -> Response<TestBody> {
    let grpc = grpc::is_grpc(req.headers());
    let upstream = request(backend, "/stall-headers", HttpVersion::Http1);
    let svc = TimeoutLayer::new()
        .response_headers(HEADERS_DEADLINE)
        .layer(ConnectService::new(backend, HttpVersion::Http1));
    match call_boxed(svc, upstream).await {
        Ok(rsp) => {
            let (parts, body) = rsp.into_parts();
            let body: TestBody = full(
                body.collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default(),
            );
            Response::from_parts(parts, body)
        }
        Err(err) => {
            let rsp: Response<http_body_util::Full<Bytes>> = error_response(&*err, grpc);
            rsp.map(|b| b.map_err(|never| match never {}).boxed())
        }
    }
}

/// A front server that calls the stalling backend through the timeout layer and answers errors
/// with `error_response`, as the proxy does: clients see 504 or DEADLINE_EXCEEDED.
#[tokio::test]
async fn timeouts_become_504_or_deadline_exceeded_for_clients() {
    let backend = stalling_server().await;
    let backend_addr = backend.addr();
    let front = TestServer::start(move |req| forward_with_deadline(req, backend_addr))
        .await
        .expect("front starts");

    let mut client = TestClient::connect(front.addr(), HttpVersion::Http1)
        .await
        .expect("connect");
    let rsp = tokio::time::timeout(LIMIT, client.get("/"))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(rsp.headers()["mesh-error"], "timeout");
    let text = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(text, "response headers not received within 200ms\n");

    let mut client = TestClient::connect(front.addr(), HttpVersion::Http2)
        .await
        .expect("connect");
    let req = client
        .request("/greeter.Greeter/Hello")
        .method("POST")
        .header("content-type", "application/grpc")
        .body(empty())
        .expect("valid");
    let rsp = tokio::time::timeout(LIMIT, client.send(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["grpc-status"], "4");
    assert_eq!(
        rsp.headers()["grpc-message"],
        "response headers not received within 200ms"
    );
}
