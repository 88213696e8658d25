//! A self-stopping soak through real `mesh-proxy` processes: one outbound proxy in front of
//! three inbound proxies (`web-0..2`, each before its own app), with HTTP/1, HTTP/2, gRPC
//! server streams and opaque TCP all the time, while `web-2` leaves and rejoins the endpoints
//! file, `web-1`'s app fails every request now and then, and every certificate is replaced
//! every few seconds.
//!
//! `MESH_SOAK_SECS` sets the length (60 s by default, as in CI; 600 for the 10-minute run).
//! Asserts no failed request or connection (each injected fault is retried elsewhere within the
//! budget; the service allows retrying POSTs, since its gRPC method is a read), open file descriptors and tasks back to their baseline at the end, and RSS flat
//! after the warm-up; prints the RSS curve.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::test_util::{
    HttpVersion, TestBody, TestClient, TestServer, free_port, full, grpc_trailers, streaming,
};
use support::{Mesh, ProxyProcess, admin_get, rss, sample, spawn_proxy, tls_client_args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One gRPC message frame: uncompressed, `message` after its 4-byte length.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend(u32::try_from(message.len()).expect("small").to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// The app of one workload: `ok` over HTTP, a three-message gRPC server stream for `/grpc/…`;
/// while `failing`, 503 and gRPC UNAVAILABLE (in the head, so that it is retried).
async fn app(failing: Arc<AtomicBool>) -> TestServer {
    TestServer::start(move |req: Request<Incoming>| {
        let failing = failing.load(Relaxed);
        async move {
            let grpc = req.uri().path().starts_with("/grpc/");
            if failing && grpc {
                let mut rsp = Response::new(mesh_core::test_util::empty());
                rsp.headers_mut()
                    .insert("content-type", "application/grpc".parse().expect("value"));
                rsp.headers_mut()
                    .insert("grpc-status", "14".parse().expect("value"));
                return rsp;
            }
            if failing {
                let mut rsp = Response::new(full("injected fault"));
                *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                return rsp;
            }
            if !grpc {
                let _ = req.into_body().collect().await;
                return Response::<TestBody>::new(full("ok"));
            }
            let (mut tx, body) = streaming();
            tokio::spawn(async move {
                for n in 0..3u8 {
                    if tx.send_data(grpc_frame(&[n; 16])).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = tx.send_trailers(grpc_trailers("0")).await;
            });
            let mut rsp = Response::new(body);
            rsp.headers_mut()
                .insert("content-type", "application/grpc".parse().expect("value"));
            rsp
        }
    })
    .await
    .expect("app")
}

/// A TCP echo server (the opaque port of every workload).
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

const LIMITS: &str = "header_timeout = \"2s\"\nidle_timeout = \"2s\"\n";

fn endpoints_text(servers: &[(String, SocketAddr)], with_last: bool) -> String {
    let count = if with_last {
        servers.len()
    } else {
        servers.len() - 1
    };
    servers[..count]
        .iter()
        .map(|(name, addr)| format!("{addr} identity={}\n", support::id(name).as_str()))
        .collect()
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// The certificate an inbound proxy presents to a new mTLS connection, as PEM.
async fn served_certificate(mesh: &Mesh, inbound: SocketAddr) -> String {
    let mut args = tls_client_args(mesh, "client");
    args.extend(["-showcerts", "-alpn", "h2"].map(String::from));
    let (stdout, stderr) = support::s_client(inbound.port(), &args, "").await;
    let start = stdout.find("-----BEGIN CERTIFICATE-----");
    let end = stdout.find("-----END CERTIFICATE-----");
    match (start, end) {
        (Some(start), Some(end)) => stdout[start..end].to_owned(),
        _ => panic!("no certificate from {inbound}: {stderr}"),
    }
}

/// Open file descriptors and tasks of a proxy.
async fn footprint(proxy: &ProxyProcess) -> (u64, u64) {
    let text = admin_get(proxy.admin, "/metrics").await;
    (
        sample(&text, "mesh_process_open_fds", &[]),
        sample(&text, "mesh_process_tasks", &[]),
    )
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn record(&self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.ok.fetch_add(1, Relaxed);
        } else if self.failed.fetch_add(1, Relaxed) < 10 {
            eprintln!("soak: {what} failed: {}", detail());
        }
    }
}

async fn http_once(outbound: SocketAddr, version: HttpVersion) -> Result<(), String> {
    let mut client = TestClient::connect(outbound, version)
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..5 {
        let req = match version {
            HttpVersion::Http1 => Request::builder()
                .uri("/")
                .header(http::header::HOST, "web"),
            HttpVersion::Http2 => Request::builder()
                .uri("http://web/")
                .version(http::Version::HTTP_2),
        }
        .body(full("ping"))
        .map_err(|e| e.to_string())?;
        let rsp = client.send(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?;
        if status != 200 || body.to_bytes() != "ok" {
            return Err(format!("status {status}"));
        }
    }
    Ok(())
}

async fn grpc_once(outbound: SocketAddr) -> Result<(), String> {
    let mut client = TestClient::connect(outbound, HttpVersion::Http2)
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::builder()
        .uri("http://web/grpc/soak.Letters/Stream")
        .version(http::Version::HTTP_2)
        .method("POST")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(grpc_frame(b"go")))
        .map_err(|e| e.to_string())?;
    let rsp = client.send(req).await.map_err(|e| e.to_string())?;
    let head_status = rsp.headers().get("grpc-status").cloned();
    let collected = rsp.into_body().collect().await.map_err(|e| e.to_string())?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .cloned()
        .or(head_status);
    let data = collected.to_bytes();
    if status.as_ref().map(|s| s.as_bytes()) != Some(b"0") || data.len() != 3 * 21 {
        return Err(format!("grpc-status {status:?}, {} bytes", data.len()));
    }
    Ok(())
}

async fn tcp_once(port: u16) -> Result<(), String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let message = [0x5au8; 4096];
    tcp.write_all(&message).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; message.len()];
    tcp.read_exact(&mut back).await.map_err(|e| e.to_string())?;
    if back != message {
        return Err("echo differs".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_traffic_with_churn_faults_and_rotation() {
    let secs: u64 = std::env::var("MESH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let length = Duration::from_secs(secs);
    let mesh = Mesh::new("soak");
    let echo = echo().await;

    let mut apps = Vec::new();
    let mut inbounds = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        let failing = Arc::new(AtomicBool::new(false));
        let app = app(Arc::clone(&failing)).await;
        let sections = format!(
            "{}opaque_app = \"{echo}\"\n\n[inbound.limits]\n{LIMITS}",
            Mesh::server_sections(app.addr(), &["client"])
        );
        let file = mesh.dir.join(format!("{name}.toml"));
        std::fs::write(&file, mesh.config_text(&name, &sections)).expect("write");
        let proxy = spawn_proxy(&file).await;
        servers.push((name, proxy.inbound.expect("inbound")));
        inbounds.push(proxy);
        apps.push((app, failing));
    }
    let endpoints = mesh.dir.join("web.endpoints");
    write_atomically(&endpoints, &endpoints_text(&servers, true));
    let tcp_port = free_port().expect("port");
    let sections = format!(
        "[outbound]\nlisten = \"127.0.0.1:0\"\n\n[[outbound.tcp]]\nlisten = \"127.0.0.1:{tcp_port}\"\n\
         service = \"web\"\n\n[outbound.limits]\n{LIMITS}\n\
         [[service]]\nname = \"web\"\nauthorities = [\"web\"]\nendpoints_file = {endpoints:?}\n\
         timeout = \"5s\"\n\n[service.retry]\nattempts = 3\nbudget_ratio = 0.5\nnon_idempotent = true\n",
    );
    let file = mesh.dir.join("client.toml");
    std::fs::write(&file, mesh.config_text("client", &sections)).expect("write");
    let client = spawn_proxy(&file).await;
    let outbound = client.outbound.expect("outbound");
    let pid = client.child.id().expect("pid");

    let first_certificate = served_certificate(&mesh, servers[0].1).await;
    // Warm up every path, then let the warm-up's connections go idle and close.
    for _ in 0..10 {
        http_once(outbound, HttpVersion::Http1)
            .await
            .expect("warm-up");
        http_once(outbound, HttpVersion::Http2)
            .await
            .expect("warm-up");
        grpc_once(outbound).await.expect("warm-up");
        tcp_once(tcp_port).await.expect("warm-up");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before_client = footprint(&client).await;
    let before_servers = [
        footprint(&inbounds[0]).await,
        footprint(&inbounds[1]).await,
        footprint(&inbounds[2]).await,
    ];

    let counts = Arc::new([
        Counts::default(),
        Counts::default(),
        Counts::default(),
        Counts::default(),
    ]);
    let end = Instant::now() + length;
    let mut load = Vec::new();
    for worker in 0..6 {
        let counts = Arc::clone(&counts);
        load.push(tokio::spawn(async move {
            while Instant::now() < end {
                let (kind, result) = match worker % 4 {
                    0 => ("HTTP/1", http_once(outbound, HttpVersion::Http1).await),
                    1 => ("HTTP/2", http_once(outbound, HttpVersion::Http2).await),
                    2 => ("gRPC stream", grpc_once(outbound).await),
                    _ => ("opaque TCP", tcp_once(tcp_port).await),
                };
                let ok = result.is_ok();
                counts[worker % 4].record(kind, ok, || result.err().unwrap_or_default());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // The weather: churn, faults, rotation; and the RSS curve, every 5 s.
    let started = Instant::now();
    let mut curve = Vec::new();
    let mut tick = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if tick % 4 == 0 {
            // web-2 leaves, and comes back four seconds later.
            write_atomically(&endpoints, &endpoints_text(&servers, tick % 8 == 0));
        }
        // web-1's app fails every request for 1.5 s of every 5.
        if tick % 5 == 0 {
            let failing = Arc::clone(&apps[1].1);
            failing.store(true, Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                failing.store(false, Relaxed);
            });
        }
        if tick % 3 == 0 {
            // Every workload gets a new certificate (the proxies reload each second).
            for name in ["client", "web-0", "web-1", "web-2"] {
                mesh.ca
                    .issue(&support::id(name), Duration::from_secs(3600))
                    .expect("issue")
                    .write(mesh.dir.join(name))
                    .expect("rotate");
            }
        }
        if tick % 5 == 0 {
            curve.push((started.elapsed().as_secs(), rss(pid)));
        }
    }
    for worker in load {
        worker.await.expect("load worker");
    }
    write_atomically(&endpoints, &endpoints_text(&servers, true));

    let names = ["HTTP/1", "HTTP/2", "gRPC stream", "opaque TCP"];
    for (name, c) in names.iter().zip(counts.iter()) {
        eprintln!(
            "soak: {name}: {} ok, {} failed",
            c.ok.load(Relaxed),
            c.failed.load(Relaxed)
        );
        assert!(c.ok.load(Relaxed) > 0, "no {name} traffic");
    }
    let failed: u64 = counts.iter().map(|c| c.failed.load(Relaxed)).sum();
    assert_eq!(failed, 0, "unexpected failures");
    // The rotations took: web-0 presents another certificate than at the start.
    assert_ne!(
        served_certificate(&mesh, servers[0].1).await,
        first_certificate
    );

    eprintln!(
        "soak: outbound proxy RSS (s, MB): {:?}",
        curve
            .iter()
            .map(|(s, b)| (*s, *b as f64 / 1e6))
            .collect::<Vec<_>>()
    );
    // Flat after warm-up: from the first fifth on, within 8 MB of where it was.
    let warm = curve.len() / 5;
    if let Some(&(_, base)) = curve.get(warm) {
        let top = curve[warm..].iter().map(|(_, b)| *b).max().unwrap_or(base);
        assert!(
            top <= base + (8 << 20),
            "RSS grew after the warm-up: {curve:?}"
        );
    }

    // Back to the baseline once the load's connections have gone idle and closed.
    let mut settled = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let client_now = footprint(&client).await;
        let mut all = client_now.0 <= before_client.0 + 2 && client_now.1 <= before_client.1 + 2;
        for (server, before) in inbounds.iter().zip(before_servers) {
            let now = footprint(server).await;
            all &= now.0 <= before.0 + 2 && now.1 <= before.1 + 2;
        }
        if all {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "file descriptors or tasks not back to the baseline: client {before_client:?} -> {:?}",
        footprint(&client).await
    );
}
