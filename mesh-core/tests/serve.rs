//! The proxy pieces of mesh-core over real sockets: `serve_connection` serving HTTP/1.1 and
//! HTTP/2, `DualClient` picking its pool by the request's version, and `Drain` letting an
//! in-flight request finish before it reports done.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mesh_core::client::{DualClient, FixedConnector, UriAuthority};
use mesh_core::drain::{Drain, DrainWatch};
use mesh_core::serve::serve_connection;
use mesh_core::test_util::{TestBody, empty};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Set when the `/slow-flagged` handler is done.
static FLAGGED_DONE: AtomicBool = AtomicBool::new(false);

/// Answers with the version the request arrived in; `/slow…` after 300 ms.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
    if req.uri().path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if req.uri().path() == "/slow-flagged" {
        FLAGGED_DONE.store(true, Ordering::SeqCst);
    }
    Ok(Response::new(Full::new(
        format!("{:?}", req.version()).into(),
    )))
}

/// A server on loopback that serves each connection as `version`; it stops accepting when
/// `watch` is signalled, and lets go of its own watch then.
async fn server(version: Version, mut watch: DrainWatch) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { return };
                    let service = tower::service_fn(answer);
                    tokio::spawn(serve_connection(tcp, version, service, watch.clone()));
                }
                () = watch.signaled() => return,
            }
        }
    });
    addr
}

fn client(addr: SocketAddr) -> DualClient<FixedConnector, TestBody> {
    let to = FixedConnector(addr);
    DualClient::new(to, to, UriAuthority::Fixed(Authority::from_static("app")))
}

async fn send(
    client: &DualClient<FixedConnector, TestBody>,
    version: Version,
    path: &str,
) -> String {
    let req = Request::builder()
        .uri(path)
        .version(version)
        .body(empty())
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.clone().oneshot(req))
        .await
        .expect("in time")
        .expect("response");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn each_request_travels_in_its_version() {
    let (_drain, watch) = Drain::new();
    let h1 = client(server(Version::HTTP_11, watch.clone()).await);
    let h2 = client(server(Version::HTTP_2, watch).await);
    assert_eq!(send(&h1, Version::HTTP_11, "/").await, "HTTP/1.1");
    assert_eq!(send(&h2, Version::HTTP_2, "/").await, "HTTP/2.0");
    // An HTTP/1.0 request goes over the HTTP/1.1 pool.
    assert_eq!(send(&h1, Version::HTTP_10, "/").await, "HTTP/1.1");
}

#[tokio::test]
async fn a_drain_waits_for_the_request_in_flight() {
    let (drain, watch) = Drain::new();
    let client = client(server(Version::HTTP_2, watch).await);
    let (answer, (finished, handler_done)) =
        tokio::join!(send(&client, Version::HTTP_2, "/slow-flagged"), async {
            // Once the request has reached the server.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let finished = drain.drain(Duration::from_secs(5)).await;
            (finished, FLAGGED_DONE.load(Ordering::SeqCst))
        },);
    assert_eq!(
        answer, "HTTP/2.0",
        "the request in flight was served in full"
    );
    assert!(finished, "the drain did not finish in time");
    assert!(
        handler_done,
        "the drain ended before the request in flight was answered"
    );
}

#[tokio::test]
async fn a_drain_gives_up_at_its_deadline() {
    let (drain, watch) = Drain::new();
    let client = client(server(Version::HTTP_11, watch).await);
    let (answer, finished) = tokio::join!(send(&client, Version::HTTP_11, "/slow"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain.drain(Duration::from_millis(50)).await
    });
    assert!(
        !finished,
        "a connection still serving a request was reported drained"
    );
    assert_eq!(answer, "HTTP/1.1");
}

/// Found by the `request_path` fuzz target: hyper-util's `auto` server took an HTTP/2 preface
/// on a connection meant for HTTP/1 (its `http1_only` does nothing with upgrades), serving
/// HTTP/2 without the flood guard. An HTTP/1 connection now answers a preface as HTTP/1 does:
/// not with HTTP/2 frames.
#[tokio::test]
async fn an_http2_preface_on_an_http1_connection_is_not_served_as_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_drain, watch) = Drain::new();
    let addr = server(Version::HTTP_11, watch).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The preface and an empty SETTINGS frame, as an HTTP/2 client opens.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tcp.write_all(&hello).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .ok();
    // An HTTP/2 server's first frame would be its SETTINGS: type 4 at byte 3.
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "{answer:?}"
    );
}
