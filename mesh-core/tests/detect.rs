//! Protocol detection on real accepted connections on 127.0.0.1: the verdict, and the bytes read
//! for it reaching whoever serves the connection intact.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use mesh_core::detect::{
    DetectConfig, DetectError, Detected, Protocol, Undecided, detect_protocol,
};
use mesh_core::test_util::{HttpVersion, TestClient, full, serve_connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_millis(300);

/// What the listener saw on one connection.
#[derive(Debug)]
struct Seen {
    protocol: Result<Protocol, String>,
    undecided: Option<Undecided>,
    prefix: Vec<u8>,
}

/// Accepts connections, detects each one's protocol, reports it, and then serves it: HTTP with
/// a hyper server that echoes the request (method, path, version, body), opaque bytes with an
/// echo.
async fn detecting_listener() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let config = DetectConfig::default().timeout(DEADLINE);
                match detect_protocol(stream, config).await {
                    Ok(Detected {
                        protocol,
                        undecided,
                        io,
                    }) => {
                        let _ = tx.send(Seen {
                            protocol: Ok(protocol),
                            undecided,
                            prefix: io.prefix().to_vec(),
                        });
                        match protocol {
                            Protocol::Http1 | Protocol::Http2 => {
                                let _ = serve_connection(io, echo_request).await;
                            }
                            Protocol::Opaque => {
                                let (mut read, mut write) = tokio::io::split(io);
                                let _ = tokio::io::copy(&mut read, &mut write).await;
                            }
                        }
                    }
                    Err(err) => {
                        let _ = tx.send(Seen {
                            protocol: Err(err.to_string()),
                            undecided: None,
                            prefix: Vec::new(),
                        });
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn echo_request(
    req: Request<hyper::body::Incoming>,
) -> Response<mesh_core::test_util::TestBody> {
    let head = format!(
        "{} {} {:?}\n",
        req.method(),
        req.uri().path(),
        req.version()
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut echoed = head.into_bytes();
    echoed.extend_from_slice(&body);
    Response::new(full(echoed))
}

/// Reads `n` bytes echoed back, within the test limit.
async fn read_back(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut back = vec![0u8; n];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .expect("echo");
    back
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("the listener reports in time")
        .expect("the listener runs")
}

#[tokio::test]
async fn http1_clients_are_detected_and_served_from_the_first_byte() {
    let (addr, mut seen) = detecting_listener().await;
    let mut client = TestClient::connect(addr, HttpVersion::Http1)
        .await
        .expect("connect");
    let req = client
        .request("/upload")
        .method("POST")
        .body(full("payload bytes"))
        .expect("valid");
    let rsp = tokio::time::timeout(LIMIT, client.send(req))
        .await
        .expect("in time")
        .expect("response");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, "POST /upload HTTP/1.1\npayload bytes");

    let report = next(&mut seen).await;
    assert_eq!(report.protocol, Ok(Protocol::Http1));
    assert!(
        report.prefix.starts_with(b"POST http://"),
        "{:?}",
        report.prefix
    );
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_detected() {
    let (addr, mut seen) = detecting_listener().await;
    let mut client = TestClient::connect(addr, HttpVersion::Http2)
        .await
        .expect("connect");
    for i in 0..3 {
        let req = client
            .request(&format!("/stream/{i}"))
            .method("PUT")
            .body(full(format!("body {i}")))
            .expect("valid");
        let rsp = tokio::time::timeout(LIMIT, client.send(req))
            .await
            .expect("in time")
            .expect("response");
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, format!("PUT /stream/{i} HTTP/2.0\nbody {i}"));
    }
    let report = next(&mut seen).await;
    assert_eq!(report.protocol, Ok(Protocol::Http2));
    assert!(
        report
            .prefix
            .starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    );
}

#[tokio::test]
async fn raw_bytes_are_opaque_and_replayed_intact() {
    let (addr, mut seen) = detecting_listener().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A TLS ClientHello's first bytes, then arbitrary binary.
    let mut sent = vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00];
    sent.extend((0..=255u8).cycle().take(5000));
    stream.write_all(&sent).await.expect("write");
    assert_eq!(read_back(&mut stream, sent.len()).await, sent);

    let report = next(&mut seen).await;
    assert_eq!(report.protocol, Ok(Protocol::Opaque));
    assert_eq!(
        report.undecided, None,
        "the bytes themselves ruled HTTP out"
    );
}

#[tokio::test]
async fn a_silent_client_gets_the_opaque_verdict_at_the_deadline() {
    let (addr, mut seen) = detecting_listener().await;
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let report = next(&mut seen).await;
    assert!(start.elapsed() >= DEADLINE, "decided before the deadline");
    assert_eq!(report.protocol, Ok(Protocol::Opaque));
    assert_eq!(report.undecided, Some(Undecided::Deadline));
    assert!(report.prefix.is_empty());

    // The connection is still served (as opaque) once the client speaks.
    stream.write_all(b"late hello").await.expect("write");
    assert_eq!(
        read_back(&mut stream, b"late hello".len()).await,
        b"late hello"
    );
}

#[tokio::test]
async fn a_request_line_cut_short_is_opaque_with_its_bytes_kept() {
    let (addr, mut seen) = detecting_listener().await;

    // Cut short and then silent: undecided at the deadline.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /index.ht").await.expect("write");
    let report = next(&mut seen).await;
    assert_eq!(report.protocol, Ok(Protocol::Opaque));
    assert_eq!(report.undecided, Some(Undecided::Deadline));
    assert_eq!(report.prefix, b"GET /index.ht");
    assert_eq!(
        read_back(&mut stream, b"GET /index.ht".len()).await,
        b"GET /index.ht"
    );

    // Cut short and closed: undecided at end of stream, bytes kept.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"POST /a HTTP/1").await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let report = next(&mut seen).await;
    assert_eq!(report.protocol, Ok(Protocol::Opaque));
    assert_eq!(report.undecided, Some(Undecided::Eof));
    assert_eq!(report.prefix, b"POST /a HTTP/1");
}

#[tokio::test]
async fn a_connection_closed_without_data_is_a_typed_error() {
    let (addr, mut seen) = detecting_listener().await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    drop(stream);
    let report = next(&mut seen).await;
    let expected = DetectError::Closed.to_string();
    assert_eq!(report.protocol, Err(expected));
}
