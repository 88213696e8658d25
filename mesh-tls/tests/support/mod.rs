//! What the mesh-tls tests share: a CA minted per test, meshed hyper servers on 127.0.0.1
//! behind the acceptor, and clients through the connector.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::{BoxError, Identity, PeerIdentity};
use mesh_tls::authz::{AuthorizeLayer, AuthzBody, AuthzPolicy};
use mesh_tls::{
    CredentialStore, DevCa, MeshConnector, MeshEndpoint, Negotiated, SetPeerIdentityLayer,
    StaticEndpoints, TlsAcceptor, TlsConnector, TlsSettings,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::util::Either;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// Every test is bounded in time.
pub const LIMIT: Duration = Duration::from_secs(20);

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn id(s: &str) -> Identity {
    Identity::parse(s).expect("identity")
}

pub fn web() -> Identity {
    id("spiffe://mesh.local/ns/default/sa/web")
}

pub fn api() -> Identity {
    id("spiffe://mesh.local/ns/default/sa/api")
}

/// A store with a fresh certificate for `identity` from `ca`.
pub fn store(ca: &DevCa, identity: &Identity) -> CredentialStore {
    let issued = ca.issue(identity, HOUR).expect("issue");
    CredentialStore::new(issued.credentials().expect("credentials"))
}

/// The application: answers with the peer identity it was handed and the HTTP version.
async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, BoxError> {
    let peer = PeerIdentity::of(&req).map_or_else(|| "none".to_owned(), ToString::to_string);
    let version = format!("{:?}", req.version());
    let mut rsp = Response::new(Full::new(Bytes::from(version)));
    rsp.headers_mut().insert("x-peer", peer.parse()?);
    Ok(rsp)
}

/// A meshed server: every accepted connection goes through `acceptor`; its peer identity is
/// set on each request; `policy`, if any, authorizes. Accept errors' reasons come out of the
/// returned channel.
pub struct MeshedServer {
    pub addr: SocketAddr,
    pub errors: mpsc::UnboundedReceiver<&'static str>,
    pub acceptor: TlsAcceptor,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MeshedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MeshedServer {
    pub async fn start(acceptor: TlsAcceptor, policy: Option<AuthzPolicy>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, errors) = mpsc::unbounded_channel();
        let accepting = acceptor.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx, policy) = (accepting.clone(), tx.clone(), policy.clone());
                tokio::spawn(async move {
                    let accepted = match acceptor.accept(tcp).await {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            let _ = tx.send(err.reason());
                            return;
                        }
                    };
                    let app = tower::service_fn(app);
                    let app = match policy {
                        Some(policy) => Either::Left(AuthorizeLayer::new(policy).layer(app)),
                        // Same body type either way.
                        None => Either::Right(app.map_response(|r| r.map(AuthzBody::Inner))),
                    };
                    let svc = ServiceBuilder::new()
                        .layer(SetPeerIdentityLayer::new(accepted.peer))
                        .service(app);
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // The protocol ALPN chose decides; plaintext is detected.
                    let builder = match accepted.negotiated {
                        Negotiated::Http2 => builder.http2_only(),
                        Negotiated::Http1 => builder.http1_only(),
                        Negotiated::None | Negotiated::Opaque => builder,
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(accepted.io), TowerToHyperService::new(svc))
                        .await;
                });
            }
        });
        Self {
            addr,
            errors,
            acceptor,
            task,
        }
    }

    /// The next accept error's reason.
    pub async fn next_error(&mut self) -> &'static str {
        tokio::time::timeout(LIMIT, self.errors.recv())
            .await
            .expect("an accept error in time")
            .expect("server running")
    }
}

pub type MeshClient = Client<MeshConnector<StaticEndpoints>, Empty<Bytes>>;

/// A hyper-util client whose every request goes to `addr` over mTLS, expecting `expected`.
pub fn client(
    store: CredentialStore,
    settings: TlsSettings,
    addr: SocketAddr,
    expected: Identity,
) -> MeshClient {
    let endpoints = StaticEndpoints::new().with(
        "api.mesh.test",
        MeshEndpoint {
            addr,
            identity: expected,
        },
    );
    let connector = MeshConnector::new(TlsConnector::new(store, settings), endpoints);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// GET through `client`; the status, `x-peer`, and the body (the HTTP version seen).
pub async fn get(client: &MeshClient) -> Result<(u16, String, String), BoxError> {
    let rsp = client
        .request(Request::get("http://api.mesh.test/").body(Empty::new())?)
        .await?;
    let status = rsp.status().as_u16();
    let peer = rsp
        .headers()
        .get("x-peer")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_default();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, peer, String::from_utf8_lossy(&body).into_owned()))
}

/// An acceptor presenting a fresh certificate for `identity` from `ca`.
pub fn acceptor(ca: &DevCa, identity: &Identity, settings: TlsSettings) -> TlsAcceptor {
    TlsAcceptor::new(store(ca, identity), settings).expect("acceptor")
}

/// A certificate for `identity` that expired yesterday.
pub fn expired(ca: &DevCa, identity: &Identity) -> mesh_tls::Issued {
    let day = Duration::from_secs(24 * 3600);
    let now = std::time::SystemTime::now();
    ca.issue_between(identity, now - 2 * day, now - day)
        .expect("issue")
}

/// A default-settings client presenting `credentials`, expecting `expected` at `addr`.
pub fn client_with(
    credentials: mesh_tls::Credentials,
    addr: SocketAddr,
    expected: Identity,
) -> MeshClient {
    client(
        CredentialStore::new(credentials),
        TlsSettings::default(),
        addr,
        expected,
    )
}
