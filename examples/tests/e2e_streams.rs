//! What flows through the mesh besides plain requests: HTTP/1 upgrades (a WebSocket-style
//! echo), large bodies streamed both ways without being buffered, and opaque TCP, both on a
//! dedicated port and detected (a server-speaks-first protocol whose client is silent).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_core::test_util::{HttpVersion, TestClient, TestServer, streaming};
use support::{Mesh, id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// An HTTP/1 app that accepts `Upgrade: echo` and then echoes bytes.
async fn upgrade_app() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(upgraded) = on_upgrade.await {
                        let mut io = TokioIo::new(upgraded);
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                let mut rsp = Response::new(http_body_util::Empty::<Bytes>::new());
                *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                rsp.headers_mut()
                    .insert("upgrade", "echo".parse().expect("value"));
                rsp.headers_mut()
                    .insert("connection", "upgrade".parse().expect("value"));
                Ok::<_, std::convert::Infallible>(rsp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_upgrade_passes_through_both_proxies() {
    tokio::time::timeout(LIMIT, async {
        let mesh = Mesh::new("upgrade");
        let server = mesh.server("ws", upgrade_app().await, &["client"]).await;
        let client = mesh.client_of("client", "ws", &server, "").await;
        let mut tcp = TcpStream::connect(client.outbound.expect("outbound"))
            .await
            .expect("connect");
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.expect("response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        for message in [&b"hello"[..], b"through the mesh"] {
            tcp.write_all(message).await.expect("write");
            let mut echoed = vec![0u8; message.len()];
            tcp.read_exact(&mut echoed).await.expect("echo");
            assert_eq!(echoed, message);
        }
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_without_being_buffered() {
    tokio::time::timeout(LIMIT, async {
        let mesh = Mesh::new("bodies");
        let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(1);
        // The app tells the test when the first chunk has reached it, then answers with
        // everything it received, streamed back.
        let app = TestServer::start(move |req: Request<Incoming>| {
            let first_tx = first_tx.clone();
            async move {
                let (mut tx, body) = streaming();
                tokio::spawn(async move {
                    let mut incoming = req.into_body();
                    let mut first = true;
                    while let Some(Ok(frame)) = incoming.frame().await {
                        if let Ok(data) = frame.into_data() {
                            if first {
                                let _ = first_tx.send(()).await;
                                first = false;
                            }
                            if tx.send_data(data).await.is_err() {
                                return;
                            }
                        }
                    }
                });
                Response::new(body)
            }
        })
        .await
        .expect("app");
        let server = mesh.server("files", app.addr(), &["client"]).await;
        let client = mesh.client_of("client", "files", &server, "").await;

        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let mut conn = TestClient::connect(client.outbound.expect("outbound"), version)
                .await
                .expect("connect");
            let (mut tx, body) = streaming();
            let mut req = Request::builder().method("POST").uri("http://files/upload");
            if version == HttpVersion::Http1 {
                req = req.uri("/upload").header("host", "files");
            } else {
                req = req.version(http::Version::HTTP_2);
            }
            let send =
                tokio::spawn(async move { conn.send(req.body(body).expect("request")).await });
            let chunk = Bytes::from(vec![7u8; 256 * 1024]);
            tx.send_data(chunk.clone()).await.expect("first chunk");
            // The first chunk reaches the app while the client is still sending: nothing
            // waits for the whole body (8 MiB, far over the 64 KiB retry buffer).
            first_rx.recv().await.expect("the app saw the first chunk");
            let rsp = send.await.expect("send task").expect("response head");
            assert_eq!(rsp.status(), 200);
            let reader = tokio::spawn(async move {
                let mut body = rsp.into_body();
                let mut total = 0usize;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("frame").into_data() {
                        assert!(data.iter().all(|b| *b == 7));
                        total += data.len();
                    }
                }
                total
            });
            for _ in 1..32 {
                tx.send_data(chunk.clone()).await.expect("chunk");
            }
            drop(tx);
            assert_eq!(
                reader.await.expect("reader"),
                32 * chunk.len(),
                "{version:?}"
            );
        }
    })
    .await
    .expect("in time");
}

/// A server that speaks first: a banner, then it echoes lines.
async fn banner_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if tcp.write_all(b"220 db ready\r\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 256];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn banner_then_echo(addr: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut banner = [0u8; 14];
    tcp.read_exact(&mut banner).await.expect("banner");
    let waited = started.elapsed();
    assert_eq!(&banner, b"220 db ready\r\n");
    tcp.write_all(b"SELECT 1;\n").await.expect("write");
    let mut echoed = [0u8; 10];
    tcp.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"SELECT 1;\n");
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_meshed_on_a_dedicated_port_and_when_detected() {
    tokio::time::timeout(LIMIT, async {
        let mesh = Mesh::new("opaque");
        let db = banner_server().await;
        let sections = format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"127.0.0.1:9\"\nopaque_app = \"{db}\"\nauthorize = [{:?}]\n",
            id("client").as_str()
        );
        let server = mesh.proxy("db", &sections).await;
        let sections = format!(
            "[outbound]\nlisten = \"127.0.0.1:0\"\ndetect_timeout = \"200ms\"\nopaque_service = \"db\"\n\n\
             [[outbound.tcp]]\nlisten = \"127.0.0.1:0\"\nservice = \"db\"\n\n\
             [[service]]\nname = \"db\"\nidentity = {:?}\nendpoints = [\"{}\"]\n",
            id("db").as_str(),
            server.inbound.expect("inbound"),
        );
        let client = mesh.proxy("client", &sections).await;

        // A dedicated opaque port: no detection, the banner comes at once.
        banner_then_echo(client.tcp[0]).await;
        // The detecting port: the silent client is opaque after the detection timeout.
        let waited = banner_then_echo(client.outbound.expect("outbound")).await;
        assert!(waited >= Duration::from_millis(200), "detection waited {waited:?}");

        // A meshed peer the policy does not name gets nothing: its connection is closed before
        // the server speaks.
        let intruder = mesh.proxy("intruder", &sections).await;
        let mut tcp = TcpStream::connect(intruder.tcp[0]).await.expect("connect");
        let mut banner = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut banner)).await;
        assert!(closed.is_ok(), "the connection stays open");
        assert!(banner.is_empty(), "{:?}", String::from_utf8_lossy(&banner));

        // Both went over mTLS: the server proxy counted two more handshakes.
        let metrics = support::admin_get(server.admin, "/metrics").await;
        assert!(support::sample(&metrics, "mesh_tcp_tls_handshakes_total", &[("direction", "inbound")]) >= 2, "{metrics}");
    })
    .await
    .expect("in time");
}
