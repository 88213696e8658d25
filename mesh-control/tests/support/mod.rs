//! What the mesh-control tests share: a control plane started against the shared real API
//! server, in a namespace of its own with its issuer Secret.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

use mesh_control::test_util::KubeFixture;
pub use mesh_control::test_util::{Control, TRUST_DOMAIN, ensure_crd};
use mesh_core::Identity;

/// Every wait in these tests is bounded.
pub const LIMIT: Duration = Duration::from_secs(30);

pub fn id(s: &str) -> Identity {
    Identity::parse(s).expect("identity")
}

/// Writes `token` to a file under the fixture's scratch directory and returns its path.
pub fn token_file(fixture: &KubeFixture, name: &str, token: &str) -> std::path::PathBuf {
    let path = fixture.scratch("tokens").join(name);
    std::fs::write(&path, token).expect("token file");
    path
}

/// A meshed HTTP server on `addr`: mTLS with `store`, the peer's identity on each request,
/// `policy` enforced; the app answers 200 with the caller's identity.
pub async fn meshed_app(
    addr: std::net::SocketAddr,
    store: mesh_tls::CredentialStore,
    policy: mesh_tls::authz::SharedPolicy,
) -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use mesh_tls::authz::AuthorizeLayer;
    use mesh_tls::{TlsAcceptor, TlsSettings};
    use tower::ServiceBuilder;

    let acceptor =
        std::sync::Arc::new(TlsAcceptor::new(store, TlsSettings::default()).expect("acceptor"));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = std::sync::Arc::clone(&acceptor);
            let policy = policy.clone();
            tokio::spawn(async move {
                let Ok(accepted) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = accepted.peer.clone();
                let service = ServiceBuilder::new()
                    .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        req
                    })
                    .layer(AuthorizeLayer::shared(policy))
                    .service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let who = mesh_core::PeerIdentity::of(&req)
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(who)),
                        ))
                    });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(accepted.io), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    addr
}

/// GETs `/` from `addr` over mTLS as `client`, expecting `server`; returns the status.
pub async fn status_as(
    client: &mesh_tls::CredentialStore,
    addr: std::net::SocketAddr,
    server: &Identity,
) -> u16 {
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    let connector = mesh_tls::TlsConnector::new(client.clone(), mesh_tls::TlsSettings::default());
    let tls = connector
        .connect_to(&mesh_tls::MeshEndpoint {
            addr,
            identity: server.clone(),
        })
        .await
        .expect("mTLS");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "web")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let rsp = sender.send_request(req).await.expect("response");
    let status = rsp.status().as_u16();
    let _ = rsp.into_body().collect().await;
    status
}
