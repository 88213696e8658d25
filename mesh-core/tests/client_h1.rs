//! `Http1Pool` (HTTP/1 in the caller's task) against real servers on loopback: connections
//! are reused, a connection the server closed while idle is not a failure, a body dropped
//! before its end takes its connection with it, an empty body never polled frees its
//! connection, requests leave in origin form with a `Host`, responses lose the headers about
//! their connection, concurrent callers get
//! connections of their own, and idle connections are closed when they expire even if no
//! request comes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Body;
use hyper::body::Incoming;
use mesh_core::client::{FixedConnector, Http1Pool, UriAuthority};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A body type without a `dyn Error` in it, so that futures holding it can be spawned.
type Pool = Http1Pool<FixedConnector, Empty<Bytes>>;

/// A hyper HTTP/1 server counting the connections it accepts; `/big` answers 1 MiB, `/empty`
/// nothing, anything else the request line and `Host` it saw (`/hop` with hop-by-hop headers).
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let body = match req.uri().path() {
                    "/big" => Bytes::from(vec![b'x'; 1 << 20]),
                    "/empty" => Bytes::new(),
                    _ => {
                        let host = req.headers().get("host").map(|h| h.as_bytes().to_vec());
                        let host = String::from_utf8_lossy(&host.unwrap_or_default()).into_owned();
                        Bytes::from(format!("{} {} host={host}", req.method(), req.uri()))
                    }
                };
                let mut rsp = Response::new(Full::new(body));
                if req.uri().path() == "/hop" {
                    // Headers about this connection, which a proxy must not pass on.
                    let headers = rsp.headers_mut();
                    headers.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
                    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
                    headers.insert("x-hop", HeaderValue::from_static("1"));
                    headers.insert("x-app", HeaderValue::from_static("kept"));
                }
                Ok::<_, std::convert::Infallible>(rsp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (addr, accepted)
}

fn pool(addr: SocketAddr) -> Pool {
    Http1Pool::new(
        FixedConnector(addr),
        UriAuthority::Fixed(Authority::from_static("app")),
    )
}

fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(uri)
        .body(Empty::new())
        .expect("request")
}

async fn text(pool: &Pool, req: Request<Empty<Bytes>>) -> String {
    let rsp = tokio::time::timeout(Duration::from_secs(10), pool.clone().oneshot(req))
        .await
        .expect("in time")
        .expect("response");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn sequential_requests_share_one_connection_in_origin_form_with_a_host() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    for i in 0..100 {
        let said = text(&pool, get(&format!("/n/{i}?q=1"))).await;
        assert_eq!(said, format!("GET /n/{i}?q=1 host=app"));
    }
    // An absolute URI is sent in origin form, its authority as the Host; a Host is kept.
    assert_eq!(
        text(&pool, get("http://web:8080/abs")).await,
        "GET /abs host=web:8080"
    );
    let mut with_host = get("/h");
    with_host
        .headers_mut()
        .insert("host", http::HeaderValue::from_static("api.shop"));
    assert_eq!(text(&pool, with_host).await, "GET /h host=api.shop");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn responses_come_without_the_headers_about_their_connection() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    for _ in 0..2 {
        let rsp = tokio::time::timeout(Duration::from_secs(10), pool.clone().oneshot(get("/hop")))
            .await
            .expect("in time")
            .expect("response");
        let headers = rsp.headers();
        for name in ["connection", "keep-alive", "x-hop"] {
            assert!(headers.get(name).is_none(), "{name} was passed on");
        }
        assert_eq!(headers["x-app"], "kept");
        rsp.into_body().collect().await.expect("body");
    }
    // The connection itself stays in use.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_empty_body_never_polled_frees_its_connection() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    for _ in 0..10 {
        let rsp = pool.clone().oneshot(get("/empty")).await.expect("response");
        assert!(rsp.body().is_end_stream());
        drop(rsp);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_takes_its_connection_along() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    let rsp = pool.clone().oneshot(get("/big")).await.expect("response");
    let mut body = rsp.into_body();
    // Read a little of the megabyte, then give up on it.
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    assert_eq!(pool.idle_count(), 0, "a half-read connection is not reused");
    assert_eq!(text(&pool, get("/after")).await, "GET /after host=app");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A body read to its end gives its connection back.
    let rsp = pool.clone().oneshot(get("/big")).await.expect("response");
    let all = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(all.len(), 1 << 20);
    assert_eq!(text(&pool, get("/again")).await, "GET /again host=app");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A server that answers each connection's first request with a keep-alive response and then
/// closes the connection (as an app with a short keep-alive does): the pool holds a
/// connection the server has already closed when the next request comes.
async fn one_request_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closed once the answer is out: the client's next request finds it gone.
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_a_failure() {
    let (addr, accepted) = one_request_per_connection().await;
    let pool = pool(addr);
    for _ in 0..20 {
        assert_eq!(text(&pool, get("/")).await, "ok");
        // Let the server's close arrive, so the next request meets a closed idle connection.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn idle_connections_are_closed_when_they_expire_without_another_request() {
    // A server counting the connections that ended (closed by the client: it never closes
    // one itself).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&closed);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let pool: Pool = Http1Pool::with_bounds(
        FixedConnector(addr),
        UriAuthority::Fixed(Authority::from_static("app")),
        8,
        Duration::from_millis(300),
    );
    // Three at once: three connections, all idle afterwards.
    let (a, b, c) = tokio::join!(
        text(&pool, get("/")),
        text(&pool, get("/")),
        text(&pool, get("/"))
    );
    assert_eq!([a, b, c], ["ok", "ok", "ok"]);
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(closed.load(Ordering::SeqCst), 0);
    // No request touches the pool from here on: only its own task can close them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.idle_count(), 0);
    assert_eq!(closed.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn concurrent_callers_get_connections_of_their_own_and_keep_them() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let said = text(&pool, get(&format!("/{task}/{i}"))).await;
                assert_eq!(said, format!("GET /{task}/{i} host=app"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=16).contains(&connections),
        "{connections} connections for 16 callers"
    );
    assert_eq!(pool.idle_count(), connections);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let addr = mesh_core::test_util::closed_port()
        .await
        .expect("a closed port");
    let err = pool(addr).oneshot(get("/")).await.expect_err("refused");
    assert_eq!(
        mesh_core::error::ErrorKind::of(err.as_ref()),
        mesh_core::error::ErrorKind::Connect
    );
}

#[tokio::test]
async fn a_connection_still_sending_a_body_the_server_answered_early_is_not_waited_for() {
    use http_body_util::channel::Channel;
    let (addr, accepted) = server().await;
    let pool: Http1Pool<FixedConnector, Channel<Bytes, std::convert::Infallible>> = Http1Pool::new(
        FixedConnector(addr),
        UriAuthority::Fixed(Authority::from_static("app")),
    );
    // The server answers without reading the body, and the body never ends: the connection
    // cannot carry another request until it does.
    let (mut tx, body) = Channel::new(1);
    tx.send_data(Bytes::from_static(b"part of a body"))
        .await
        .expect("first chunk");
    let req = Request::builder()
        .method("POST")
        .uri("/early")
        .body(body)
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), pool.clone().oneshot(req))
        .await
        .expect("in time")
        .expect("response");
    let said = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&said[..], b"POST /early host=app");
    // The next request gets a connection that can take it, at once.
    let (_tx, empty_body) = Channel::new(1);
    drop(_tx);
    let next = Request::builder()
        .uri("/next")
        .body(empty_body)
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(5), pool.clone().oneshot(next))
        .await
        .expect("not stuck behind the unfinished body")
        .expect("response");
    let said = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&said[..], b"GET /next host=app");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    drop(tx);
}

/// Current-thread runtimes on two threads share a pool: a connection made on one is reused
/// only there (its socket belongs to that runtime's event loop), so the other makes its own;
/// on a multi-thread runtime, where tasks move between threads anyway, any thread reuses it.
#[test]
fn a_connection_made_on_a_current_thread_runtime_is_reused_only_on_its_thread() {
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, accepted) = server_runtime.block_on(server());
    let pool = pool(addr);
    let on_a_thread = |pool: Pool, rounds: usize| {
        std::thread::spawn(move || {
            let runtime = current_thread();
            for _ in 0..rounds {
                runtime.block_on(async {
                    assert_eq!(text(&pool, get("/x")).await, "GET /x host=app");
                });
            }
            // The runtime stays alive (its connections with it) until the test is done.
            runtime
        })
    };
    let first = on_a_thread(pool.clone(), 3).join().expect("thread");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection on the first thread"
    );
    let second = on_a_thread(pool.clone(), 3).join().expect("thread");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the second thread's own connection, reused for its three requests"
    );
    assert_eq!(pool.idle_count(), 2);
    drop((first, second));

    // Made on a multi-thread runtime: reused by a request from another thread of it.
    let (addr, accepted) = server_runtime.block_on(server());
    let pool = self::pool(addr);
    let shared = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for _ in 0..5 {
        let pool = pool.clone();
        shared
            .block_on(shared.spawn(async move { text(&pool, get("/y")).await }))
            .expect("task");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
