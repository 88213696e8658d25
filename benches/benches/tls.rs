//! mTLS over loopback: full handshakes (ECDSA P-256, TLS 1.3, client certificate verified,
//! identity extracted) and bulk throughput through an established session against plaintext.
//!
//! The handshake is measured through mesh-tls (detection, rotating credentials, expected-identity
//! check) and through a stock tokio-rustls pair configured the same way, side by side.
//!
//! The handshake is also measured with the credentials from each source, same stack: files
//! written by the development CA, and SVIDs from a real SPIRE agent (the bench binary registered
//! as a workload; skipped, with a note, when `tests/spire/build.sh` has not built SPIRE).
//!
//! Run: `cargo bench -p benches --bench tls`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_core::Identity;
use mesh_tls::{CredentialStore, DevCa, Issued, TlsAcceptor, TlsConnector, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct Pki {
    server: Issued,
    client: Issued,
    server_id: Identity,
}

fn pki() -> Pki {
    let ca = DevCa::new("mesh.local").expect("ca");
    let server_id = Identity::parse("api.mesh.local").expect("identity");
    let client_id = Identity::parse("spiffe://mesh.local/ns/default/sa/web").expect("identity");
    let day = Duration::from_secs(86_400);
    Pki {
        server: ca.issue(&server_id, day).expect("issue"),
        client: ca.issue(&client_id, day).expect("issue"),
        server_id,
    }
}

fn store(issued: &Issued) -> CredentialStore {
    CredentialStore::new(issued.credentials().expect("credentials"))
}

/// Accepts connections on loopback, each handled by `handle` in its own task.
async fn listen<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(handle(tcp));
        }
    });
    addr
}

/// Our acceptor: handshakes, writes one byte, closes.
async fn mesh_server(acceptor: TlsAcceptor) -> SocketAddr {
    listen(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut accepted) = acceptor.accept(tcp).await {
                let _ = accepted.io.write_all(b"!").await;
                let _ = accepted.io.shutdown().await;
            }
        }
    })
    .await
}

/// The same with a stock tokio-rustls acceptor (webpki client verifier, fixed certificate).
async fn stock_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    listen(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"!").await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certs")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key")
}

fn roots(pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(pem) {
        roots.add(cert).expect("root");
    }
    Arc::new(roots)
}

fn stock_configs(pki: &Pki) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = mesh_tls::default_provider();
    let roots = roots(&pki.server.roots_pem);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&pki.server.cert_pem), key(&pki.server.key_pem))
        .expect("server config");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(&pki.client.cert_pem), key(&pki.client.key_pem))
        .expect("client config");
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn handshakes(c: &mut Criterion) {
    let rt = runtime();
    let pki = pki();
    let mut group = c.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));

    let acceptor = TlsAcceptor::new(store(&pki.server), TlsSettings::default()).expect("acceptor");
    let addr = rt.block_on(mesh_server(acceptor));
    let connector = TlsConnector::new(store(&pki.client), TlsSettings::default());
    let expected = pki.server_id.clone();
    group.bench_function("mesh_tls", |b| {
        b.to_async(&rt).iter(|| async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = connector.connect(tcp, &expected).await.expect("handshake");
            let mut one = [0u8; 1];
            tls.read_exact(&mut one).await.expect("byte");
        })
    });

    let (server, client) = stock_configs(&pki);
    let addr = rt.block_on(stock_server(server));
    let stock = tokio_rustls::TlsConnector::from(client);
    group.bench_function("stock_tokio_rustls", |b| {
        b.to_async(&rt).iter(|| async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("api.mesh.local").expect("name");
            let mut tls = stock.connect(name, tcp).await.expect("handshake");
            let mut one = [0u8; 1];
            tls.read_exact(&mut one).await.expect("byte");
        })
    });
    group.finish();
}

/// A handshake through mesh-tls between two stores, measured in `group` as `name`.
fn bench_store_pair(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    (server, client): (CredentialStore, CredentialStore),
) {
    let expected = server.current().identity().clone();
    let acceptor = TlsAcceptor::new(server, TlsSettings::default()).expect("acceptor");
    let addr = rt.block_on(mesh_server(acceptor));
    let connector = TlsConnector::new(client, TlsSettings::default());
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = connector.connect(tcp, &expected).await.expect("handshake");
            let mut one = [0u8; 1];
            tls.read_exact(&mut one).await.expect("byte");
        })
    });
}

/// Files from the development CA against SVIDs from SPIRE, through the same acceptor and
/// connector.
fn handshakes_by_source(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("mtls_handshake_by_source");
    group.throughput(Throughput::Elements(1));

    let pki = pki();
    let dir = std::env::temp_dir().join(format!("mesh-bench-files-{}", std::process::id()));
    pki.server.write(dir.join("server")).expect("write");
    pki.client.write(dir.join("client")).expect("write");
    let from_files = |side: &str| {
        CredentialStore::from_files(&mesh_tls::CredentialFiles::in_dir(dir.join(side)))
            .expect("credentials from files")
    };
    bench_store_pair(
        &mut group,
        &rt,
        "files",
        (from_files("server"), from_files("client")),
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Held until the group ends: the agent keeps serving the SVIDs.
    let spire = rt.block_on(spire_stores());
    match &spire {
        Ok((_spire, server, client)) => {
            bench_store_pair(&mut group, &rt, "spire", (server.clone(), client.clone()))
        }
        Err(e) => eprintln!("mtls_handshake_by_source/spire skipped: {e}"),
    }
    group.finish();
}

/// A SPIRE server and agent with this binary registered, and two stores following its
/// Workload API (the server side and the client side of the bench).
async fn spire_stores()
-> Result<(mesh_tls::test_util::Spire, CredentialStore, CredentialStore), String> {
    use mesh_tls::spiffe::{SpiffeConfig, follow};
    use mesh_tls::test_util::{Spire, SpireOptions};
    let spire = Spire::start(SpireOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let id = spire.id("ns/bench/sa/tls");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    spire
        .register(&id, &exe, Duration::from_secs(3600))
        .await
        .map_err(|e| e.to_string())?;
    let mut stores = Vec::new();
    for _ in 0..2 {
        let (_task, identity) = follow(SpiffeConfig::new(Some(spire.socket()), Some(id.clone())))
            .map_err(|e| e.to_string())?;
        let store = tokio::time::timeout(Duration::from_secs(60), identity.credentials())
            .await
            .map_err(|_| "no SVID from the agent in 60 s".to_owned())?;
        stores.push(store);
    }
    let client = stores.pop().ok_or("no store")?;
    let server = stores.pop().ok_or("no store")?;
    Ok((spire, server, client))
}

const CHUNK: usize = 64 * 1024;
const TRANSFER: u64 = 16 * 1024 * 1024;

/// A sink on loopback: reads `TRANSFER` bytes, answers one byte, repeatedly, on each
/// connection (TLS through our acceptor when `acceptor` is given, else plaintext).
async fn sink(acceptor: Option<TlsAcceptor>) -> SocketAddr {
    listen(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            match acceptor {
                Some(acceptor) => {
                    if let Ok(accepted) = acceptor.accept(tcp).await {
                        drain_loop(accepted.io).await;
                    }
                }
                None => drain_loop(tcp).await,
            }
        }
    })
    .await
}

async fn drain_loop<I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: I) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut left = TRANSFER;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
        if io.write_all(b"!").await.is_err() || io.flush().await.is_err() {
            return;
        }
    }
}

/// Sends `TRANSFER` bytes `iters` times over `io`, waiting for the sink's byte each time.
async fn push<I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut I,
    iters: u64,
) -> Duration {
    let chunk = vec![7u8; CHUNK];
    let mut one = [0u8; 1];
    let start = Instant::now();
    for _ in 0..iters {
        for _ in 0..TRANSFER / CHUNK as u64 {
            io.write_all(&chunk).await.expect("write");
        }
        io.flush().await.expect("flush");
        io.read_exact(&mut one).await.expect("ack");
    }
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let pki = pki();
    let mut group = c.benchmark_group("bulk_16MiB");
    group.throughput(Throughput::Bytes(TRANSFER));
    group.sample_size(20);

    let plain_addr = rt.block_on(sink(None));
    group.bench_function("plaintext", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut tcp = TcpStream::connect(plain_addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            push(&mut tcp, iters).await
        })
    });

    let acceptor = TlsAcceptor::new(store(&pki.server), TlsSettings::default()).expect("acceptor");
    let tls_addr = rt.block_on(sink(Some(acceptor)));
    let connector = TlsConnector::new(store(&pki.client), TlsSettings::default());
    let expected = pki.server_id.clone();
    group.bench_function("mesh_tls", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (connector, expected) = (connector.clone(), expected.clone());
            async move {
                let tcp = TcpStream::connect(tls_addr).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let mut tls = connector.connect(tcp, &expected).await.expect("handshake");
                push(&mut tls, iters).await
            }
        })
    });
    group.finish();
}

criterion_group!(benches, handshakes, handshakes_by_source, throughput);
criterion_main!(benches);
