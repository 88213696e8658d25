//! Classification of real responses from hyper servers on 127.0.0.1, over HTTP/1.1 and HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use mesh_core::classify::{
    AutoClassify, Class, ClassHandle, ClassifyLayer, FailureReason, PublishClass,
};
use mesh_core::grpc::GrpcCode;
use mesh_core::test_util::{
    ConnectService, HttpVersion, TestBody, TestServer, closed_port, empty, failing_after, full,
    grpc_response, grpc_trailers, stalled_after,
};
use mesh_core::{BoxError, ErrorKind};
use tower::{Layer, ServiceExt};

/// Every test is bounded: a hang fails instead of stalling the suite.
const LIMIT: Duration = Duration::from_secs(10);

/// A server whose answer is chosen by the request path.
async fn server() -> TestServer {
    TestServer::start(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/ok" => Response::new(full("fine")),
            "/503" => status(503, full("down")),
            "/404" => status(404, full("missing")),
            "/grpc/ok" => grpc_response(b"\0\0\0\0\x02hi", grpc_trailers("0")),
            "/grpc/unavailable" => grpc_response(b"\0\0\0\0\x00", grpc_trailers("14")),
            "/grpc/garbage" => grpc_response(b"\0\0\0\0\x00", grpc_trailers("fourteen")),
            "/grpc/no-trailers" => Response::builder()
                .header("content-type", "application/grpc")
                .body(full(&b"\0\0\0\0\x00"[..]))
                .expect("valid"),
            "/grpc/trailers-only" => Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "7")
                .header("grpc-message", "denied")
                .body(empty())
                .expect("valid"),
            "/grpc/503" => status(503, full("<html>no upstream</html>")),
            // One chunk, then nothing for longer than any test waits.
            "/stream" => Response::new(stalled_after(b"first", Duration::from_secs(30))),
            "/broken" => Response::new(failing_after(b"first", Duration::from_millis(50))),
            _ => status(400, empty()),
        }
    })
    .await
    .expect("server starts")
}

fn grpc_failure(code: GrpcCode) -> Class {
    Class::Failure(FailureReason::Grpc(code))
}

fn status(code: u16, body: TestBody) -> Response<TestBody> {
    Response::builder().status(code).body(body).expect("valid")
}

fn grpc_request(path: &str) -> Request<TestBody> {
    Request::builder()
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .expect("valid")
}

/// Sends `req` through the classify layer to `addr`; returns the response and the handle the
/// layer published for its class.
async fn send_classified(
    addr: std::net::SocketAddr,
    version: HttpVersion,
    req: Request<TestBody>,
) -> (
    Response<impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin>,
    ClassHandle,
) {
    let svc = ClassifyLayer::new(AutoClassify::new(), PublishClass)
        .layer(ConnectService::new(addr, version));
    let rsp = tokio::time::timeout(LIMIT, svc.oneshot(req))
        .await
        .expect("response in time")
        .expect("response");
    let handle = rsp
        .extensions()
        .get::<ClassHandle>()
        .cloned()
        .expect("published");
    (rsp, handle)
}

/// Sends `req` through the classify layer to `addr`, reads the whole body, and returns the
/// class together with the body's outcome.
async fn classify(
    addr: std::net::SocketAddr,
    version: HttpVersion,
    mut req: Request<TestBody>,
) -> (Class, Result<Bytes, BoxError>) {
    let uri = format!("http://{addr}{}", req.uri());
    *req.uri_mut() = uri.parse().expect("valid uri");
    if version == HttpVersion::Http2 {
        *req.version_mut() = http::Version::HTTP_2;
    }
    let (rsp, handle) = send_classified(addr, version, req).await;
    assert_eq!(handle.get(), None, "classified before the body ended");
    let body = tokio::time::timeout(LIMIT, rsp.into_body().collect())
        .await
        .expect("body in time")
        .map(|c| c.to_bytes());
    (handle.get().expect("classified at end of stream"), body)
}

fn plain(path: &str) -> Request<TestBody> {
    Request::builder().uri(path).body(empty()).expect("valid")
}

#[tokio::test]
async fn http_status_decides_over_both_versions() {
    let server = server().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let (class, body) = classify(server.addr(), version, plain("/ok")).await;
        assert_eq!(class, Class::Success, "{version:?}");
        assert_eq!(body.expect("body"), "fine");

        let (class, _) = classify(server.addr(), version, plain("/503")).await;
        assert_eq!(
            class,
            Class::Failure(FailureReason::Status(StatusCode::SERVICE_UNAVAILABLE)),
            "{version:?}"
        );

        let (class, _) = classify(server.addr(), version, plain("/404")).await;
        assert_eq!(
            class,
            Class::Success,
            "a 404 is the app's answer, not a failure"
        );
    }
}

#[tokio::test]
async fn grpc_status_in_trailers_decides() {
    let server = server().await;
    let addr = server.addr();
    let (class, body) = classify(addr, HttpVersion::Http2, grpc_request("/grpc/ok")).await;
    assert_eq!(class, Class::Success);
    assert_eq!(body.expect("body").len(), 7);

    let (class, _) = classify(addr, HttpVersion::Http2, grpc_request("/grpc/unavailable")).await;
    assert_eq!(class, grpc_failure(GrpcCode::UNAVAILABLE));
}

#[tokio::test]
async fn grpc_trailers_only_and_http_mapping() {
    let server = server().await;
    let addr = server.addr();
    let (class, body) = classify(
        addr,
        HttpVersion::Http2,
        grpc_request("/grpc/trailers-only"),
    )
    .await;
    assert_eq!(class, grpc_failure(GrpcCode::PERMISSION_DENIED));
    assert!(body.expect("body").is_empty());

    // A 503 with no grpc-status is UNAVAILABLE, a failure.
    let (class, _) = classify(addr, HttpVersion::Http2, grpc_request("/grpc/503")).await;
    assert_eq!(class, grpc_failure(GrpcCode::UNAVAILABLE));
}

#[tokio::test]
async fn grpc_without_a_readable_status_is_internal() {
    let server = server().await;
    let addr = server.addr();
    let (class, _) = classify(addr, HttpVersion::Http2, grpc_request("/grpc/garbage")).await;
    assert_eq!(class, grpc_failure(GrpcCode::INTERNAL));

    let (class, _) = classify(addr, HttpVersion::Http2, grpc_request("/grpc/no-trailers")).await;
    assert_eq!(class, grpc_failure(GrpcCode::INTERNAL));
}

#[tokio::test]
async fn a_body_dropped_mid_stream_is_cancelled() {
    let server = server().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let uri = format!("http://{}/stream", server.addr());
        let mut req = Request::builder().uri(uri).body(empty()).expect("valid");
        if version == HttpVersion::Http2 {
            *req.version_mut() = http::Version::HTTP_2;
        }
        let (rsp, handle) = send_classified(server.addr(), version, req).await;
        let mut body = rsp.into_body();
        let first = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("in time")
            .expect("a frame")
            .expect("data");
        assert_eq!(first.into_data().expect("data"), "first");
        assert_eq!(handle.get(), None);
        drop(body);
        assert_eq!(
            handle.get(),
            Some(Class::Failure(FailureReason::Cancelled)),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_breaks_is_an_error() {
    let server = server().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let (class, body) = classify(server.addr(), version, plain("/broken")).await;
        assert!(body.is_err(), "{version:?}: the body should fail");
        assert_eq!(
            class,
            Class::Failure(FailureReason::Error(ErrorKind::Other)),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let addr = closed_port().await.expect("port");
    let classes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = {
        let classes = classes.clone();
        RecordClass(classes)
    };
    let svc = ClassifyLayer::new(AutoClassify::new(), record)
        .layer(ConnectService::new(addr, HttpVersion::Http1));
    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .body(empty())
        .expect("valid");
    let err = tokio::time::timeout(LIMIT, svc.oneshot(req))
        .await
        .expect("in time")
        .expect_err("nothing listens");
    assert_eq!(ErrorKind::of(&*err), ErrorKind::Connect);
    assert_eq!(
        *classes.lock().expect("lock"),
        vec![Class::Failure(FailureReason::Error(ErrorKind::Connect))]
    );
}

/// Records every class it is handed, through a closure made per request.
#[derive(Clone)]
struct RecordClass(std::sync::Arc<std::sync::Mutex<Vec<Class>>>);

impl<B> mesh_core::classify::NewOnClass<B> for RecordClass {
    type OnClass = Box<dyn FnOnce(Class) + Send>;

    fn new_on_class(&mut self, _: &Request<B>) -> Self::OnClass {
        let classes = self.0.clone();
        Box::new(move |class| classes.lock().expect("lock").push(class))
    }
}
