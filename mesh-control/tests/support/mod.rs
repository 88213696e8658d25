//! What the mesh-control tests share: a control plane started against the shared real API
//! server, in a namespace of its own with its issuer Secret.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mesh_control::identity::issuer_secret;
use mesh_control::test_util::KubeFixture;
use mesh_control::{ControlConfig, RunningControl};
use mesh_core::Identity;
use mesh_tls::DevCa;
use mesh_tls::control::ControlPlane;

/// Every wait in these tests is bounded.
pub const LIMIT: Duration = Duration::from_secs(30);

pub const TRUST_DOMAIN: &str = "mesh.local";

pub fn id(s: &str) -> Identity {
    Identity::parse(s).expect("identity")
}

/// A control plane under test.
pub struct Control {
    pub running: RunningControl,
    pub namespace: String,
    pub ca: DevCa,
    pub config: ControlConfig,
}

impl Control {
    /// Starts mesh-control in a new namespace with a fresh issuer; `tune` adjusts the config.
    pub async fn start(fixture: &KubeFixture, tune: impl FnOnce(&mut ControlConfig)) -> Self {
        let namespace = fixture.namespace("mesh-system", &["mesh-control"]).await;
        let client = fixture.client().await.expect("client");
        let ca = DevCa::new(TRUST_DOMAIN).expect("ca");
        let secret = issuer_secret(&ca, &namespace, "mesh-issuer");
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("issuer secret");
        let mut config = ControlConfig::new(TRUST_DOMAIN);
        config.namespace = namespace.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        tune(&mut config);
        let running = mesh_control::start(client, config.clone())
            .await
            .expect("mesh-control starts");
        Self {
            running,
            namespace,
            ca,
            config,
        }
    }

    /// How a proxy reaches it.
    pub fn plane(&self) -> ControlPlane {
        ControlPlane::new(
            self.running.addr(),
            self.running.identity().clone(),
            self.running.roots_pem().as_bytes(),
        )
        .expect("control plane")
    }
}

/// Writes `token` to a file under the fixture's scratch directory and returns its path.
pub fn token_file(fixture: &KubeFixture, name: &str, token: &str) -> std::path::PathBuf {
    let path = fixture.scratch("tokens").join(name);
    std::fs::write(&path, token).expect("token file");
    path
}

/// Creates the MeshAuthorization CRD if it is not there, and waits until it is served.
pub async fn ensure_crd(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definition = mesh_control::policy::crd::definition();
    match crds.create(&PostParams::default(), &definition).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating the CRD: {error}"),
    }
    let name = definition.metadata.name.clone().expect("name");
    let started = std::time::Instant::now();
    loop {
        let crd = crds.get(&name).await.expect("crd");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(started.elapsed() < LIMIT, "the CRD was not established");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
