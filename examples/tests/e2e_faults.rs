//! Faults behind real `mesh-proxy` processes (outbound -> mTLS -> inbound -> app): an app that
//! resets mid-response, closes after the headers, answers garbage, never answers (HTTP/1, and a
//! gRPC call over HTTP/2), or stops reading a large request body. The client gets a clear
//! 502/504 (gRPC DEADLINE_EXCEEDED) or a broken body (never a short body passed off as whole), the proxies go on serving, failure accrual sees the
//! failures, and afterwards the proxies' open connections, tasks and file descriptors are back
//! where they were. And an HTTP/2 app that turns requests away unprocessed (`REFUSED_STREAM`,
//! `GOAWAY`) is asked again rather than its refusal passed on as a failure.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use mesh_core::test_util::{H2Act, HttpVersion, REFUSED_STREAM, RefusingH2Server, TestClient};
use support::{Mesh, ProxyProcess, admin_get, sample, spawn_pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1 app that misbehaves by path; it counts the connections it accepted.
async fn faulty_app() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Relaxed);
            tokio::spawn(misbehave(tcp));
        }
    });
    (addr, accepted)
}

async fn misbehave(mut tcp: TcpStream) {
    loop {
        // The head only; bodies are not read (which is the point of `/no-read`).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("PRI * HTTP/2.0") {
            // An HTTP/2 client (a gRPC call comes to the app as HTTP/2): accepted, and never
            // answered, not even with SETTINGS.
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        match path.as_str() {
            "/reset-mid-body" => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b")
                    .await;
                let _ = tcp.set_zero_linger();
                return;
            }
            "/close-after-headers" => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                    .await;
                return;
            }
            "/malformed" => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 two hundred\r\n\x01\x02\r\n\r\n")
                    .await;
                return;
            }
            "/never" | "/no-read" => {
                // Holds the connection, answers nothing, reads nothing more.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            _ => {
                if tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn pair(mesh: &Mesh, app: SocketAddr) -> (ProxyProcess, ProxyProcess) {
    spawn_pair(mesh, app, "idle_timeout = \"2s\"\n", "timeout = \"1s\"").await
}

/// What one request got: its status (0 for none), and whether its body arrived whole.
async fn send(outbound: SocketAddr, method: &str, path: &str, body: Bytes) -> (u16, bool) {
    let mut client = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "web")
        .body(mesh_core::test_util::full(body))
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.send(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 10 s"));
    // A body that breaks before its first byte can take the head with it: hyper writes the
    // two together. The connection then closes with no head at all.
    let Ok(rsp) = rsp else { return (0, false) };
    let status = rsp.status().as_u16();
    let whole = tokio::time::timeout(Duration::from_secs(10), rsp.into_body().collect())
        .await
        .expect("the body ends in time")
        .is_ok();
    (status, whole)
}

/// The `grpc-status` a gRPC call (HTTP/2, `application/grpc`) got, from its head or trailers.
async fn grpc_status(outbound: SocketAddr) -> Option<String> {
    let mut client = TestClient::connect(outbound, HttpVersion::Http2)
        .await
        .expect("connect");
    let req = http::Request::builder()
        .method("POST")
        .uri("http://web/faults.Never/Call")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(mesh_core::test_util::full(Bytes::from_static(
            b"\0\0\0\0\0",
        )))
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.send(req))
        .await
        .expect("an answer in time")
        .expect("a response head");
    let head = rsp.headers().get("grpc-status").cloned();
    let body = rsp.into_body().collect().await.ok();
    let trailer = body.and_then(|b| b.trailers()?.get("grpc-status").cloned());
    head.or(trailer)
        .and_then(|v| v.to_str().ok().map(str::to_owned))
}

/// Open connections, tasks and file descriptors of a proxy, from its `/metrics`.
async fn footprint(proxy: &ProxyProcess) -> (u64, u64, u64) {
    let text = admin_get(proxy.admin, "/metrics").await;
    (
        sample(&text, "mesh_listener_connections_open", &[]),
        sample(&text, "mesh_process_tasks", &[]),
        sample(&text, "mesh_process_open_fds", &[]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_get_clear_answers_nothing_leaks_and_others_are_served() {
    let mesh = Mesh::new("faults");
    let (app, accepted) = faulty_app().await;
    let (server, client) = pair(&mesh, app).await;
    let outbound = client.outbound.expect("outbound");

    assert_eq!(send(outbound, "GET", "/", Bytes::new()).await, (200, true));
    // Let the warm-up's connections go idle and close, then take the baseline.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (client_before, server_before) = (footprint(&client).await, footprint(&server).await);

    let large = Bytes::from(vec![b'x'; 8 << 20]);
    for _ in 0..5 {
        // Reset or closed mid-body: the head was already on its way; the body is broken, never
        // a short one passed off as whole.
        for path in ["/reset-mid-body", "/close-after-headers"] {
            let (status, whole) = send(outbound, "GET", path, Bytes::new()).await;
            assert!(
                !(status == 200 && whole),
                "{path}: a truncated body looked whole"
            );
        }
        assert_eq!(
            send(outbound, "GET", "/malformed", Bytes::new()).await,
            (502, true)
        );
        assert_eq!(
            send(outbound, "GET", "/never", Bytes::new()).await,
            (504, true)
        );
        // Failure accrual sees them (the one endpoint is never ejected: the share cap keeps
        // it).
        let endpoints = admin_get(client.admin, "/endpoints").await;
        let json: serde_json::Value = serde_json::from_str(&endpoints).expect("json");
        let failures = json["services"][0]["endpoints"][0]["consecutive_failures"].as_u64();
        assert!(failures.is_some_and(|n| n >= 2), "{endpoints}");
        // A large body the app never reads: the response deadline ends it.
        assert_eq!(
            send(outbound, "POST", "/no-read", large.clone()).await.0,
            504
        );
        // A gRPC call to an app that never answers: the gRPC equivalent of the 504, a
        // trailers-only DEADLINE_EXCEEDED.
        assert_eq!(grpc_status(outbound).await.as_deref(), Some("4"));
        // And in between, a good request is served.
        assert_eq!(send(outbound, "GET", "/", Bytes::new()).await, (200, true));
    }
    assert!(accepted.load(Relaxed) >= 20, "the faults reached the app");

    let text = admin_get(client.admin, "/metrics").await;
    assert!(
        sample(&text, "mesh_http_outcomes_total", &[("outcome", "failure")]) >= 15,
        "{text}"
    );

    // Nothing leaks: once the faulty connections are gone (the app's held ones end within
    // 60 s; the proxies' idle deadline is 2 s), both proxies are back to their baseline.
    let mut settled = None;
    for _ in 0..90 {
        let now = (footprint(&client).await, footprint(&server).await);
        let back = |(c, t, f): (u64, u64, u64), (c0, t0, f0): (u64, u64, u64)| {
            c <= c0 && t <= t0 + 2 && f <= f0 + 2
        };
        if back(now.0, client_before) && back(now.1, server_before) {
            settled = Some(now);
            break;
        }
        settled = None;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        settled.is_some(),
        "not back to the baseline: client {:?} -> {:?}, server {:?} -> {:?}",
        client_before,
        footprint(&client).await,
        server_before,
        footprint(&server).await
    );
}

/// What an HTTP/2 request through `outbound` got: its status and `mesh-error` header.
async fn send_h2(outbound: SocketAddr, method: &str, body: Bytes) -> (u16, Option<String>) {
    let mut client = TestClient::connect(outbound, HttpVersion::Http2)
        .await
        .expect("connect");
    let req = http::Request::builder()
        .method(method)
        .uri("http://web/")
        .version(http::Version::HTTP_2)
        .body(mesh_core::test_util::full(body))
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.send(req))
        .await
        .expect("an answer in time")
        .expect("a response head");
    let error = rsp
        .headers()
        .get("mesh-error")
        .and_then(|v| v.to_str().ok());
    (rsp.status().as_u16(), error.map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_app_refusing_requests_unprocessed_is_asked_again() {
    let mesh = Mesh::new("refused");
    // Each request is refused once (a reset, a GOAWAY that closes, a GOAWAY that keeps the
    // connection for older streams), then answered; then a request with a body is refused.
    let plan = vec![
        H2Act::Reset(REFUSED_STREAM),
        H2Act::Answer,
        H2Act::GoAway,
        H2Act::Answer,
        H2Act::GoAwayOpen,
        H2Act::Answer,
        H2Act::Reset(REFUSED_STREAM),
        H2Act::Answer,
    ];
    let app = RefusingH2Server::start(plan).await.expect("app");
    let (_server, client) = pair(&mesh, app.addr()).await;
    let outbound = client.outbound.expect("outbound");

    for round in 0..3 {
        assert_eq!(
            send_h2(outbound, "GET", Bytes::new()).await,
            (200, None),
            "round {round}"
        );
    }
    let seen = app.seen();
    assert_eq!(seen.len(), 6, "each refused once, then answered: {seen:?}");
    // After a GOAWAY, the request came again on a new connection.
    assert_ne!(seen[2].conn, seen[3].conn);
    assert_ne!(seen[4].conn, seen[5].conn);

    // The app took nothing of it, but hyper took the body: the client is told so (503,
    // `refused`), and the request is not sent twice behind its back.
    let body = Bytes::from_static(b"an order");
    assert_eq!(
        send_h2(outbound, "POST", body).await,
        (503, Some("refused".to_owned()))
    );
    assert_eq!(app.seen().len(), 7);
}
