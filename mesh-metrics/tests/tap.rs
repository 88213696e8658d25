//! Tap against real hyper servers on 127.0.0.1: filters, sensitive headers, gRPC status from
//! trailers, a listener that never reads, and the NDJSON stream over HTTP.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_core::grpc::GrpcCode;
use mesh_core::test_util::{
    HttpVersion, TestBody, TestClient, TestServer, empty, full, grpc_response, grpc_trailers,
};
use mesh_core::{BoxError, Identity, PeerIdentity};
use mesh_metrics::tap::{TapFilter, serve_tap};
use mesh_metrics::{Direction, HttpMetrics, MetricsLayer, Tap};

const LIMIT: Duration = Duration::from_secs(10);

async fn answer(req: Request<Incoming>) -> Result<Response<TestBody>, BoxError> {
    Ok(match req.uri().path() {
        "/grpc/ok" => grpc_response(b"\0\0\0\0\x00", grpc_trailers("0")),
        "/grpc/down" => grpc_response(b"\0\0\0\0\x00", grpc_trailers("14")),
        "/missing" => Response::builder().status(404).body(empty())?,
        _ => Response::builder()
            .header("set-cookie", "session=secret")
            .header("x-served-by", "app")
            .body(full("ok"))?,
    })
}

/// An application server with the metrics layer feeding `tap`, its peer set as mesh-tls would.
async fn tapped_app(tap: Tap) -> TestServer {
    let peer = Identity::parse("spiffe://mesh.local/ns/test/sa/caller").expect("identity");
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut()
                .insert(PeerIdentity::Authenticated(peer.clone()));
            req
        })
        .layer(
            MetricsLayer::new(HttpMetrics::new(), |_: &Request<Incoming>| ())
                .with_tap(tap, Direction::Inbound),
        )
        .layer(ClassifyLayer::new(AutoClassify::new(), ()))
        .service_fn(answer);
    TestServer::serve(svc).await.expect("server")
}

async fn send(client: &mut TestClient, req: Request<TestBody>) -> StatusCode {
    let rsp = client.send(req).await.expect("response");
    let status = rsp.status();
    rsp.into_body().collect().await.expect("body");
    status
}

#[tokio::test]
async fn a_filtered_listener_sees_exactly_the_matching_requests() {
    tokio::time::timeout(LIMIT, async {
        let tap = Tap::default();
        let mut api_gets = tap.subscribe(
            TapFilter::all()
                .path_prefix("/api/")
                .method(http::Method::GET),
            64,
        );
        let mut elsewhere = tap.subscribe(TapFilter::all().authority("db.default:5432"), 64);
        let mut grpc = tap.subscribe(TapFilter::all().path_prefix("/grpc/"), 64);
        let app = tapped_app(tap.clone()).await;
        let addr = app.addr();
        let mut client = TestClient::connect(addr, HttpVersion::Http2)
            .await
            .expect("connect");

        let get = |client: &TestClient, path: &str| {
            client
                .request(path)
                .header("authorization", "Bearer secret")
                .header("cookie", "a=b")
                .header("x-request-id", "r-1")
                .body(empty())
                .expect("valid")
        };
        for path in ["/api/a", "/other", "/api/b", "/missing"] {
            let req = get(&client, path);
            send(&mut client, req).await;
        }
        let post = client
            .request("/api/c")
            .method("POST")
            .body(full("x"))
            .expect("valid");
        send(&mut client, post).await;
        for path in ["/grpc/ok", "/grpc/down"] {
            let req = client
                .request(path)
                .method("POST")
                .header("content-type", "application/grpc")
                .body(full(&b"\0\0\0\0\x00"[..]))
                .expect("valid");
            send(&mut client, req).await;
        }

        let mut seen = Vec::new();
        while let Some(event) = api_gets.try_recv() {
            seen.push(event);
        }
        let paths: Vec<&str> = seen.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/api/a", "/api/b"]);
        let first = &seen[0];
        assert_eq!(first.direction, Direction::Inbound);
        assert_eq!(first.status, Some(StatusCode::OK));
        assert_eq!(first.authority.as_deref(), Some(addr.to_string().as_str()));
        assert_eq!(
            first.peer.as_ref().map(Identity::as_str),
            Some("spiffe://mesh.local/ns/test/sa/caller")
        );
        assert!(first.outcome.is_success());
        assert!(
            first
                .headers_latency
                .is_some_and(|h| h <= first.total_latency)
        );
        let names = |h: &[(http::HeaderName, http::HeaderValue)]| -> Vec<String> {
            h.iter().map(|(n, _)| n.to_string()).collect()
        };
        assert_eq!(names(&first.request_headers), ["x-request-id"]);
        assert!(names(&first.response_headers).contains(&"x-served-by".to_owned()));
        assert!(!names(&first.response_headers).contains(&"set-cookie".to_owned()));
        assert!(seen[1].id > first.id);
        assert!(elsewhere.try_recv().is_none());

        let ok = grpc.try_recv().expect("grpc ok");
        assert_eq!(
            (ok.status, ok.grpc_status),
            (Some(StatusCode::OK), Some(GrpcCode::OK))
        );
        let down = grpc.try_recv().expect("grpc down");
        assert_eq!(down.grpc_status, Some(GrpcCode::UNAVAILABLE));
        assert!(down.outcome.is_failure());
        assert!(grpc.try_recv().is_none());
        assert_eq!(api_gets.dropped() + grpc.dropped(), 0);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_listener_that_never_reads_loses_events_not_requests() {
    tokio::time::timeout(LIMIT, async {
        let tap = Tap::default();
        let stuck = tap.subscribe(TapFilter::all(), 4);
        let mut reader = tap.subscribe(TapFilter::all(), 1024);
        let app = tapped_app(tap.clone()).await;
        let mut client = TestClient::connect(app.addr(), HttpVersion::Http1)
            .await
            .expect("connect");
        for i in 0..200 {
            let req = client
                .request(&format!("/n/{i}"))
                .body(empty())
                .expect("valid");
            assert_eq!(send(&mut client, req).await, StatusCode::OK);
        }
        // Every request was answered; the stuck listener kept its first four events and lost
        // the rest, while the other listener got all of them.
        assert_eq!(stuck.dropped(), 196);
        let mut got = 0;
        while reader.try_recv().is_some() {
            got += 1;
        }
        assert_eq!((got, reader.dropped()), (200, 0));
    })
    .await
    .expect("in time");
}

/// Reads an NDJSON body line by line.
async fn lines(rsp: Response<Incoming>) -> Vec<String> {
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(body.to_vec())
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn tap_streams_as_ndjson_over_http() {
    tokio::time::timeout(LIMIT, async {
        let tap = Tap::default();
        let app = tapped_app(tap.clone()).await;
        let admin_tap = tap.clone();
        let admin = TestServer::serve(tower::service_fn(move |req: Request<Incoming>| {
            let rsp = serve_tap(&admin_tap, &req);
            async move { Ok::<_, Infallible>(rsp) }
        }))
        .await
        .expect("admin server");

        let mut watcher = TestClient::connect(admin.addr(), HttpVersion::Http1)
            .await
            .expect("admin");
        let rsp = watcher
            .get("/tap?path_prefix=%2Fapi%2F&limit=2")
            .await
            .expect("tap response");
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["content-type"], "application/x-ndjson");
        // The subscription exists once the response head is back; now make traffic.
        let mut client = TestClient::connect(app.addr(), HttpVersion::Http1)
            .await
            .expect("app");
        for path in ["/skip", "/api/one", "/skip", "/api/two", "/api/three"] {
            let req = client
                .request(path)
                .header("authorization", "x")
                .body(empty())
                .expect("valid");
            send(&mut client, req).await;
        }
        let got = lines(rsp).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains(r#""path":"/api/one""#), "{}", got[0]);
        assert!(got[1].contains(r#""path":"/api/two""#), "{}", got[1]);
        for line in &got {
            assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
            assert!(line.contains(r#""status":200"#), "{line}");
            assert!(
                line.contains(r#""peer":"spiffe://mesh.local/ns/test/sa/caller""#),
                "{line}"
            );
            assert!(!line.contains("authorization"), "{line}");
        }

        let bad = watcher.get("/tap?pod=web").await.expect("response");
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let text = lines(bad).await.join("\n");
        assert!(text.contains("unknown tap filter \"pod\""), "{text}");
    })
    .await
    .expect("in time");
}
