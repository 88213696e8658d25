//! `Http2Pool` against real HTTP/2 servers on loopback: a hyper server echoing a streamed body
//! and its trailers, and the raw `RefusingH2Server` for one shared connection, a failed
//! connection, a peer gone silent, and an idle connection.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use mesh_core::ErrorKind;
use mesh_core::client::{FixedConnector, Http2Pool, Http2Settings};
use mesh_core::test_util::{
    H2Act, RefusingH2Server, TestBody, TestServer, closed_port, empty, streaming,
};
use tokio::task::JoinSet;

/// A bound on every wait, far above what each step takes.
const BOUND: Duration = Duration::from_secs(10);

fn pool(to: std::net::SocketAddr, settings: Http2Settings) -> Http2Pool {
    Http2Pool::new(FixedConnector(to), settings)
}

fn get() -> Request<TestBody> {
    Request::get("http://app/").body(empty()).expect("request")
}

/// Sends a bodiless GET; the status or the error's kind.
async fn status(pool: &Http2Pool) -> Result<u16, ErrorKind> {
    let sent = tokio::time::timeout(BOUND, pool.request(get()))
        .await
        .expect("an answer in time");
    sent.map(|rsp| rsp.status().as_u16())
        .map_err(|e| ErrorKind::of(&*e))
}

#[tokio::test]
async fn a_request_body_streams_while_its_response_streams_back() {
    // Echoes the request's body and trailers as they come: the response head leaves before
    // the request body has ended, so the body must keep flowing after it.
    let server = TestServer::start(|req: Request<hyper::body::Incoming>| async move {
        Response::new(req.into_body().map_err(Into::into).boxed())
    })
    .await
    .expect("server");
    let pool = pool(server.addr(), Http2Settings::default());
    let (mut tx, body) = streaming();
    let req = Request::post("http://app/echo")
        .body(body)
        .expect("request");
    let rsp = tokio::time::timeout(BOUND, pool.request(req))
        .await
        .expect("a head in time")
        .expect("a response");
    let mut echoed = rsp.into_body();
    for chunk in [&b"one"[..], b"two", b"three"] {
        tx.send_data(Bytes::from_static(chunk)).await.expect("send");
        let frame = tokio::time::timeout(BOUND, echoed.frame())
            .await
            .expect("the echo in time")
            .expect("a frame")
            .expect("no error");
        assert_eq!(frame.into_data().expect("data"), chunk);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    tx.send_trailers(trailers).await.expect("trailers");
    drop(tx);
    let last = tokio::time::timeout(BOUND, echoed.frame())
        .await
        .expect("the trailers in time")
        .expect("a frame")
        .expect("no error");
    assert_eq!(last.into_trailers().expect("trailers")["grpc-status"], "0");
}

#[tokio::test]
async fn requests_that_come_while_it_connects_share_one_connection() {
    let server = RefusingH2Server::start(vec![H2Act::Answer])
        .await
        .expect("server");
    let pool = pool(server.addr(), Http2Settings::default());
    let mut sent = JoinSet::new();
    for _ in 0..20 {
        let pool = pool.clone();
        sent.spawn(async move { status(&pool).await });
    }
    while let Some(answer) = sent.join_next().await {
        assert_eq!(answer.expect("task"), Ok(200));
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|r| r.conn == 0), "{seen:?}");
}

#[tokio::test]
async fn a_failed_connection_fails_every_request_that_waited_for_it() {
    let pool = pool(closed_port().await.expect("port"), Http2Settings::default());
    let mut sent = JoinSet::new();
    for _ in 0..5 {
        let pool = pool.clone();
        sent.spawn(async move { status(&pool).await });
    }
    while let Some(answer) = sent.join_next().await {
        assert_eq!(answer.expect("task"), Err(ErrorKind::Connect));
    }
    assert!(!pool.is_connected());
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_given_up() {
    let server = RefusingH2Server::start(vec![H2Act::Stall, H2Act::Answer])
        .await
        .expect("server");
    let settings = Http2Settings {
        keep_alive_interval: Duration::from_millis(50),
        keep_alive_timeout: Duration::from_millis(150),
        ..Http2Settings::default()
    };
    let pool = pool(server.addr(), settings);
    // Without pings this would wait for as long as the server stays silent: forever.
    assert!(status(&pool).await.is_err());
    assert!(!pool.is_connected());
    // The next request is not sent into the silent connection.
    assert_eq!(status(&pool).await, Ok(200));
    let seen = server.seen();
    assert_eq!((seen[0].conn, seen[1].conn), (0, 1), "{seen:?}");
}

#[tokio::test]
async fn a_connection_is_kept_while_it_answers_pings_and_let_go_when_idle() {
    let server = RefusingH2Server::start(vec![H2Act::Answer])
        .await
        .expect("server");
    let settings = Http2Settings {
        keep_alive_interval: Duration::from_millis(20),
        keep_alive_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..Http2Settings::default()
    };
    let pool = pool(server.addr(), settings);
    // Requests every 100 ms for half a second: about 25 pings, each answered.
    for _ in 0..5 {
        assert_eq!(status(&pool).await, Ok(200));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.is_connected());
    }
    // Then none: the connection goes within the idle timeout and a tick.
    let gone = tokio::time::timeout(BOUND, async {
        while pool.is_connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    gone.await.expect("the idle connection let go");
    assert_eq!(status(&pool).await, Ok(200));
    let seen = server.seen();
    assert!(seen[..5].iter().all(|r| r.conn == 0), "{seen:?}");
    assert_eq!(seen[5].conn, 1, "{seen:?}");
}
