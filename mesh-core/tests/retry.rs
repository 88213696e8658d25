//! Retries against real hyper servers on 127.0.0.1, counted at the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mesh_core::BoxError;
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_core::grpc::GrpcCodeSet;
use mesh_core::retry::{Backoff, RetryBudget, RetryLayer, RetryPolicy};
use mesh_core::test_util::{
    ConnectService, HttpVersion, TestBody, TestServer, empty, full, grpc_response, grpc_trailers,
    streaming,
};
use mesh_core::timeout::{TimeoutError, TimeoutLayer};
use tower::{Layer, ServiceBuilder, ServiceExt};

const LIMIT: Duration = Duration::from_secs(20);

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// A server that records every request and answers with `script(path, n)`, where `n` counts
/// earlier requests to the same path.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<HashMap<String, Vec<Seen>>>>,
    total: Arc<AtomicUsize>,
}

impl Recorder {
    async fn serve(
        &self,
        script: impl Fn(&str, usize) -> Response<TestBody> + Clone + Send + Sync + 'static,
    ) -> TestServer {
        let recorder = self.clone();
        TestServer::start(move |req: Request<hyper::body::Incoming>| {
            let recorder = recorder.clone();
            let script = script.clone();
            async move {
                let path = req.uri().path().to_owned();
                let method = req.method().clone();
                let collected = req.into_body().collect().await;
                let (body, trailers) = match collected {
                    Ok(c) => {
                        let trailers = c.trailers().cloned();
                        (c.to_bytes(), trailers)
                    }
                    Err(_) => (Bytes::new(), None),
                };
                recorder.total.fetch_add(1, Ordering::SeqCst);
                let n = {
                    let mut seen = recorder.seen.lock().expect("lock");
                    let list = seen.entry(path.clone()).or_default();
                    list.push(Seen {
                        method,
                        body,
                        trailers,
                    });
                    list.len() - 1
                };
                script(&path, n)
            }
        })
        .await
        .expect("server starts")
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

fn status(code: u16) -> Response<TestBody> {
    Response::builder()
        .status(code)
        .body(full(format!("status {code}")))
        .expect("valid")
}

fn budget(ratio: f64, min_per_second: u32) -> Arc<RetryBudget> {
    Arc::new(
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_second(min_per_second)
            .build()
            .expect("valid budget"),
    )
}

fn no_backoff() -> RetryPolicy {
    RetryPolicy::new().backoff(Backoff::none())
}

fn request(server: &TestServer, method: Method, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.addr()))
        .body(body)
        .expect("valid")
}

/// `svc` with each try's one classification, which the retry layer reads.
fn classified<S>(svc: S) -> mesh_core::classify::Classifier<S, AutoClassify, ()> {
    ClassifyLayer::new(AutoClassify::new(), ()).layer(svc)
}

fn h2(mut req: Request<TestBody>) -> Request<TestBody> {
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// Sends `req` through `layer` to the server and returns the status and the whole body.
async fn send(
    layer: &RetryLayer,
    server: &TestServer,
    version: HttpVersion,
    req: Request<TestBody>,
) -> Result<(StatusCode, Bytes, Option<HeaderMap>), BoxError> {
    let svc = layer.layer(classified(ConnectService::new(server.addr(), version)));
    let rsp = tokio::time::timeout(LIMIT, svc.oneshot(req)).await??;
    let status = rsp.status();
    let collected = rsp.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((status, collected.to_bytes(), trailers))
}

/// A deterministic 30% failure pattern: a multiplicative hash of the request number.
fn fails(n: usize) -> bool {
    (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54 < 307
}

#[tokio::test]
async fn thirty_percent_failures_become_at_least_99_percent_success() {
    let recorder = Recorder::default();
    let server = recorder
        .serve(|_, n| if fails(n) { status(503) } else { status(200) })
        .await;
    let layer = RetryLayer::new(no_backoff().max_attempts(5), budget(0.6, 10));
    let originals = 600;
    let mut ok = 0;
    for _ in 0..originals {
        let req = request(&server, Method::GET, "/flaky", empty());
        if let Ok((StatusCode::OK, _, _)) = send(&layer, &server, HttpVersion::Http1, req).await {
            ok += 1;
        }
    }
    let first_try_failures = (0..originals).filter(|n| fails(*n)).count();
    assert!(
        first_try_failures > originals / 4,
        "the server fails about 30%"
    );
    assert!(
        ok * 100 >= originals * 99,
        "{ok} of {originals} succeeded; {} retries granted",
        layer.budget().retries_allowed()
    );
}

#[tokio::test]
async fn retries_against_a_dead_service_stay_within_the_budget() {
    let recorder = Recorder::default();
    let server = recorder.serve(|_, _| status(503)).await;
    let (ratio, floor, ttl_secs) = (0.2, 10, 10);
    let layer = RetryLayer::new(no_backoff().max_attempts(3), budget(ratio, floor));
    let originals = 400;
    let start = Instant::now();
    for _ in 0..originals {
        let req = request(&server, Method::GET, "/dead", empty());
        let (status, _, _) = send(&layer, &server, HttpVersion::Http1, req)
            .await
            .expect("answer");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let extra = recorder.total() - originals;
    // The floor is `floor` per second over the window (a run shorter than the window still
    // gets the whole window's reserve).
    let allowed =
        ratio * originals as f64 + f64::from(floor) * elapsed_secs.max(f64::from(ttl_secs));
    assert!(extra as f64 <= allowed, "{extra} retries, budget {allowed}");
    assert!(
        extra as f64 >= allowed - 2.0,
        "the budget was used: {extra} of {allowed}"
    );
    assert_eq!(extra as u64, layer.budget().retries_allowed());
    assert!(layer.budget().retries_refused() > 0);
}

#[tokio::test]
async fn the_retry_share_matches_any_ratio() {
    for ratio in [0.1, 0.2, 0.6] {
        let recorder = Recorder::default();
        let server = recorder.serve(|_, _| status(502)).await;
        let layer = RetryLayer::new(no_backoff().max_attempts(3), budget(ratio, 0));
        let originals = 300;
        for _ in 0..originals {
            let req = request(&server, Method::GET, "/down", empty());
            send(&layer, &server, HttpVersion::Http1, req)
                .await
                .expect("answer");
        }
        let share = (recorder.total() - originals) as f64 / originals as f64;
        assert!(
            (share - ratio).abs() <= 0.02,
            "ratio {ratio}: retries were {share:.3} of originals"
        );
    }
}

#[tokio::test]
async fn post_is_not_retried_without_opt_in() {
    let recorder = Recorder::default();
    let server = recorder.serve(|_, _| status(503)).await;
    let layer = RetryLayer::new(no_backoff(), budget(1.0, 10));
    let req = request(&server, Method::POST, "/create", full("order"));
    let (status, _, _) = send(&layer, &server, HttpVersion::Http1, req)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(recorder.seen("/create").len(), 1);

    let opted_in = RetryLayer::new(no_backoff().retry_non_idempotent(true), budget(1.0, 10));
    let req = request(&server, Method::POST, "/create-again", full("order"));
    send(&opted_in, &server, HttpVersion::Http1, req)
        .await
        .expect("answer");
    assert_eq!(
        recorder.seen("/create-again").len(),
        3,
        "opted in: all three tries"
    );
}

#[tokio::test]
async fn a_put_body_is_replayed_byte_for_byte() {
    let recorder = Recorder::default();
    let server = recorder
        .serve(|_, n| if n == 0 { status(503) } else { status(200) })
        .await;
    let layer = RetryLayer::new(no_backoff(), budget(0.2, 10));
    let payload: Bytes = (0..10 * 1024)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    for (version, path) in [(HttpVersion::Http1, "/h1"), (HttpVersion::Http2, "/h2")] {
        let mut req = request(&server, Method::PUT, path, full(payload.clone()));
        if version == HttpVersion::Http2 {
            req = h2(req);
        }
        let (status, _, _) = send(&layer, &server, version, req).await.expect("answer");
        assert_eq!(status, StatusCode::OK, "{version:?}");
        let seen = recorder.seen(path);
        assert_eq!(seen.len(), 2, "{version:?}");
        for try_seen in &seen {
            assert_eq!(try_seen.method, Method::PUT);
            assert_eq!(try_seen.body, payload, "{version:?}: the replay differs");
        }
    }
}

#[tokio::test]
async fn a_one_mib_body_is_sent_once_and_not_retried() {
    let recorder = Recorder::default();
    let server = recorder.serve(|_, _| status(503)).await;
    let layer = RetryLayer::new(no_backoff(), budget(1.0, 10));
    let payload = Bytes::from(vec![42u8; 1024 * 1024]);

    // Length known up front: not even recorded.
    let req = request(&server, Method::PUT, "/known", full(payload.clone()));
    let (status, _, _) = send(&layer, &server, HttpVersion::Http1, req)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = recorder.seen("/known");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), payload.len());

    // Length unknown (streamed): recorded until it outgrows the cap, then sent on unrecorded.
    let (mut tx, body) = streaming();
    let feeder = tokio::spawn(async move {
        for _ in 0..16 {
            tx.send_data(Bytes::from(vec![42u8; 64 * 1024])).await?;
        }
        Ok::<_, http_body_util::channel::SendError>(())
    });
    let req = request(&server, Method::PUT, "/streamed", body);
    let (status, _, _) = send(&layer, &server, HttpVersion::Http1, req)
        .await
        .expect("answer");
    feeder.await.expect("feeder ran").expect("all sent");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = recorder.seen("/streamed");
    assert_eq!(seen.len(), 1, "not retried");
    assert_eq!(seen[0].body, payload, "sent in full");
}

#[tokio::test]
async fn trailers_survive_a_replay() {
    let recorder = Recorder::default();
    let server = recorder
        .serve(|_, n| if n == 0 { status(502) } else { status(200) })
        .await;
    let layer = RetryLayer::new(no_backoff(), budget(0.2, 10));
    let mut trailers = HeaderMap::new();
    trailers.insert("checksum", "sha256:abc".parse().expect("valid"));
    let sent = trailers.clone();
    let body = Full::new(Bytes::from_static(b"data with trailers"))
        .with_trailers(async move { Some(Ok(sent)) })
        .map_err(|never| match never {})
        .boxed();
    let req = h2(request(&server, Method::PUT, "/trailers", body));
    let (status, _, _) = send(&layer, &server, HttpVersion::Http2, req)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK);
    let seen = recorder.seen("/trailers");
    assert_eq!(seen.len(), 2);
    for try_seen in seen {
        assert_eq!(try_seen.body, "data with trailers");
        assert_eq!(try_seen.trailers.as_ref(), Some(&trailers));
    }
}

fn grpc_call(server: &TestServer, path: &str) -> Request<TestBody> {
    let mut req = h2(request(
        server,
        Method::POST,
        path,
        full(&b"\0\0\0\0\x02hi"[..]),
    ));
    let headers = req.headers_mut();
    headers.insert("content-type", "application/grpc".parse().expect("valid"));
    headers.insert("te", "trailers".parse().expect("valid"));
    req
}

#[tokio::test]
async fn grpc_unavailable_in_trailers_is_retried_and_ok_is_not() {
    let recorder = Recorder::default();
    let server = recorder
        .serve(|path, n| match (path, n) {
            ("/svc/Unavailable", 0) => grpc_response(b"", grpc_trailers("14")),
            ("/svc/TrailersOnly", 0) => Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .body(empty())
                .expect("valid"),
            ("/svc/Internal", _) => grpc_response(b"", grpc_trailers("13")),
            _ => grpc_response(b"\0\0\0\0\x02ok", grpc_trailers("0")),
        })
        .await;
    let policy = no_backoff()
        .retry_non_idempotent(true)
        .grpc_codes(GrpcCodeSet::EMPTY.with(mesh_core::grpc::GrpcCode::UNAVAILABLE));
    let layer = RetryLayer::new(policy, budget(0.2, 10));

    for path in ["/svc/Unavailable", "/svc/TrailersOnly"] {
        let (status, body, trailers) = send(
            &layer,
            &server,
            HttpVersion::Http2,
            grpc_call(&server, path),
        )
        .await
        .expect("answer");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, &b"\0\0\0\0\x02ok"[..], "{path}");
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0", "{path}");
        assert_eq!(recorder.seen(path).len(), 2, "{path}: retried once");
        assert_eq!(
            recorder.seen(path)[1].body,
            &b"\0\0\0\0\x02hi"[..],
            "replayed message"
        );
    }

    let (_, _, trailers) = send(
        &layer,
        &server,
        HttpVersion::Http2,
        grpc_call(&server, "/svc/Ok"),
    )
    .await
    .expect("answer");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    assert_eq!(recorder.seen("/svc/Ok").len(), 1, "OK is not retried");

    let (_, _, trailers) = send(
        &layer,
        &server,
        HttpVersion::Http2,
        grpc_call(&server, "/svc/Internal"),
    )
    .await
    .expect("answer");
    assert_eq!(
        trailers.expect("trailers")["grpc-status"],
        "13",
        "the caller sees the real status"
    );
    assert_eq!(
        recorder.seen("/svc/Internal").len(),
        1,
        "INTERNAL is not retryable"
    );
}

#[tokio::test]
async fn a_per_try_timeout_retries_and_the_outer_deadline_covers_all_tries() {
    let recorder = Recorder::default();
    let server = TestServer::start({
        let recorder = recorder.clone();
        move |req: Request<hyper::body::Incoming>| {
            let recorder = recorder.clone();
            async move {
                let path = req.uri().path().to_owned();
                let n = recorder.total.fetch_add(1, Ordering::SeqCst);
                recorder
                    .seen
                    .lock()
                    .expect("lock")
                    .entry(path.clone())
                    .or_default()
                    .push(Seen {
                        method: req.method().clone(),
                        body: Bytes::new(),
                        trailers: None,
                    });
                let stalls = path == "/always-slow" || (path == "/slow-once" && n == 0);
                if stalls {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                status(200)
            }
        }
    })
    .await
    .expect("server starts");

    // The first try stalls; the per-try timeout cuts it and the retry succeeds.
    let policy = no_backoff().per_try_timeout(Duration::from_millis(200));
    let layer = RetryLayer::new(policy.clone(), budget(0.2, 10));
    let req = request(&server, Method::GET, "/slow-once", empty());
    let (status, _, _) = send(&layer, &server, HttpVersion::Http1, req)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(recorder.seen("/slow-once").len(), 2);

    // Every try stalls: the outer deadline ends the whole exchange, not the tries' sum.
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new().request(Duration::from_secs(1)))
        .layer(RetryLayer::new(
            policy
                .max_attempts(10)
                .per_try_timeout(Duration::from_millis(300)),
            budget(0.2, 10),
        ))
        .layer(ClassifyLayer::new(AutoClassify::new(), ()))
        .service(ConnectService::new(server.addr(), HttpVersion::Http1));
    let start = Instant::now();
    let req = request(&server, Method::GET, "/always-slow", empty());
    let err = tokio::time::timeout(LIMIT, svc.oneshot(req))
        .await
        .expect("in time")
        .expect_err("every try stalls");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        *err.downcast_ref::<TimeoutError>()
            .expect("the outer timeout"),
        TimeoutError::request(Duration::from_secs(1))
    );
    let tries = recorder.seen("/always-slow").len();
    // About 1 s / 300 ms, far from the 10 tries the policy would allow: the outer deadline
    // ended the exchange.
    assert!(
        (2..=4).contains(&tries),
        "{tries} tries in one second of 300 ms tries"
    );
}

#[tokio::test]
async fn connect_errors_are_retried_until_attempts_run_out() {
    let addr = mesh_core::test_util::closed_port().await.expect("port");
    let layer = RetryLayer::new(no_backoff().max_attempts(4), budget(0.2, 10));
    let svc = layer.layer(classified(ConnectService::new(addr, HttpVersion::Http1)));
    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .body(empty())
        .expect("valid");
    let err = svc.oneshot(req).await.expect_err("nothing listens");
    assert_eq!(
        mesh_core::ErrorKind::of(&*err),
        mesh_core::ErrorKind::Connect
    );
    assert_eq!(
        layer.budget().retries_allowed(),
        3,
        "three retries after the first try"
    );
}

/// A `200` whose `Content-Length` promises five bytes and whose body fails before the first:
/// a server (or a proxy in front of one) that died between the head and the body.
fn cut_before_body() -> Response<TestBody> {
    let (tx, body) = streaming();
    tokio::spawn(async move {
        // Give the head time to be written on its own, as a crashing replica's would be.
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.abort("the replica died before its body".into());
    });
    Response::builder()
        .header(http::header::CONTENT_LENGTH, "5")
        .body(body)
        .expect("valid")
}

#[tokio::test]
async fn a_response_cut_between_head_and_body_is_retried_when_resets_are() {
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let recorder = Recorder::default();
        let server = recorder
            .serve(|_, n| match n {
                0 => cut_before_body(),
                _ => Response::new(full("hello")),
            })
            .await;
        let req = |server: &TestServer| {
            let req = request(server, Method::GET, "/cut", empty());
            if version == HttpVersion::Http2 {
                h2(req)
            } else {
                req
            }
        };

        let resets = RetryLayer::new(no_backoff().retry_resets(true), budget(0.2, 10));
        let (status, body, _) = send(&resets, &server, version, req(&server))
            .await
            .expect("the retry answers");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
        assert_eq!(recorder.seen("/cut").len(), 2, "{version:?}: retried once");

        // Without resets retried the cut response is handed on as it is: the caller sees it fail.
        let recorder = Recorder::default();
        let server = recorder.serve(|_, _| cut_before_body()).await;
        let plain = RetryLayer::new(no_backoff(), budget(0.2, 10));
        send(&plain, &server, version, req(&server))
            .await
            .expect_err("the body was cut");
        assert_eq!(recorder.seen("/cut").len(), 1, "{version:?}: not retried");
    }
}

#[tokio::test]
async fn a_stream_of_unknown_length_is_not_held_back_for_its_first_frame() {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let server = TestServer::start(move |_req: Request<hyper::body::Incoming>| {
        let release = release.lock().expect("lock").take();
        async move {
            let (mut tx, body) = streaming();
            tokio::spawn(async move {
                // The first byte comes only once the caller has the head.
                if let Some(release) = release {
                    let _ = release.await;
                }
                let _ = tx.send_data(Bytes::from_static(b"event")).await;
            });
            Response::new(body)
        }
    })
    .await
    .expect("server starts");
    let layer = RetryLayer::new(no_backoff().retry_resets(true), budget(0.2, 10));
    let svc = layer.layer(classified(ConnectService::new(
        server.addr(),
        HttpVersion::Http2,
    )));
    let req = h2(request(&server, Method::GET, "/events", empty()));
    let rsp = tokio::time::timeout(LIMIT, svc.oneshot(req))
        .await
        .expect("the head is not held back")
        .expect("response");
    release_tx.send(()).expect("server waits");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"event");
}
