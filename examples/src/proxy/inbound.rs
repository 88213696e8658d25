//! The inbound side: mTLS termination (strict by default), authorization by the peer's
//! identity, metrics and tap, and the request forwarded to the local app with the peer's
//! identity in a header the client cannot forge. In transparent mode (connections redirected by
//! `mesh-init`) the app port is each connection's original destination port.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::header::HeaderName;
use http::uri::Authority;
use http::{Request, Version};
use hyper::body::Incoming;
use mesh_core::PeerIdentity;
use mesh_core::classify::ClassifyLayer;
use mesh_core::client::{DualClient, FixedConnector, UriAuthority};
use mesh_core::detect::{DetectConfig, Protocol, detect_protocol};
use mesh_core::drain::DrainWatch;
use mesh_core::orig_proto::OrigProtoDowngradeLayer;
use mesh_core::route::RouteTable;
use mesh_core::serve::{ServeConfig, serve_connection_with};
use mesh_metrics::{CountingIo, Direction, HttpLabels, MetricsLayer};
use mesh_tls::authz::{AuthorizeLayer, AuthzPolicy, SharedPolicy};
use mesh_tls::{
    Accepted, ForwardIdentity, ForwardIdentityLayer, Negotiated, SetPeerIdentityLayer, TlsAcceptor,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

use super::config;
use super::edge::edge;
use super::serve::{Listener, accept};
use super::{ProxyClassify, Shared, tcp};

/// The local app, over HTTP/1 or HTTP/2 as the request first came.
type AppClient = DualClient<FixedConnector, Incoming>;

/// Everything a connection on the inbound side needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Inbound<C> {
    acceptor: TlsAcceptor,
    policy: SharedPolicy,
    app: AppClient,
    /// Where the app learns who called.
    identity_header: HeaderName,
    opaque_app: std::net::SocketAddr,
    routes: RouteTable,
    detect: DetectConfig,
    shared: Shared,
    /// Decides each request's outcome, once.
    classify: C,
    /// Transparent mode: the app's client for each original port.
    ports: Option<Arc<AppPorts>>,
    /// How HTTP connections are served (the listener's limits).
    serve: ServeConfig,
}

/// Transparent mode: one pooled client per app port, made on first use. Looked up once per
/// connection (a read lock), never per request.
struct AppPorts {
    host: std::net::IpAddr,
    clients: RwLock<HashMap<u16, AppClient>>,
}

impl AppPorts {
    fn client(&self, port: u16) -> AppClient {
        let found = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&port)
            .cloned();
        found.unwrap_or_else(|| {
            self.clients
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(port)
                .or_insert_with(|| app_client(std::net::SocketAddr::new(self.host, port)))
                .clone()
        })
    }
}

/// A pooled HTTP/1 + HTTP/2 client of the app at `addr`.
fn app_client(addr: std::net::SocketAddr) -> AppClient {
    DualClient::new(
        FixedConnector(addr),
        FixedConnector(addr),
        UriAuthority::Fixed(
            Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("app")),
        ),
    )
}

impl<C: ProxyClassify> Inbound<C> {
    /// The inbound side as configured; `policy`, when given (from the control plane), replaces
    /// the configured authorization.
    pub(crate) fn new(
        config: &config::Inbound,
        acceptor: TlsAcceptor,
        shared: Shared,
        classify: C,
        policy: Option<SharedPolicy>,
    ) -> Result<Self, super::StartError> {
        let policy = policy.unwrap_or_else(|| {
            let patterns = config.authorize.iter().map(|p| p.get_ref().0.clone());
            SharedPolicy::new(
                AuthzPolicy::from_patterns(patterns)
                    .allow_unauthenticated(config.allow_unauthenticated),
            )
        });
        let header = config.identity_header.0.clone();
        Ok(Self {
            acceptor,
            policy,
            app: app_client(config.app.0),
            identity_header: header,
            opaque_app: config.opaque_app.unwrap_or(config.app).0,
            routes: RouteTable::new(
                config
                    .routes
                    .iter()
                    .map(|r| (r.path_prefix.as_str(), &r.name)),
            ),
            detect: DetectConfig::default().timeout(config.detect_timeout.0),
            shared,
            classify,
            // The listener's own, with its counts, is set by `serve`.
            serve: ServeConfig::default(),
            ports: config.transparent.then(|| {
                Arc::new(AppPorts {
                    host: config.app.0.ip(),
                    clients: RwLock::default(),
                })
            }),
        })
    }

    /// This side for a redirected connection: the app on the port the client asked for.
    fn for_original(self, io: &CountingIo<TcpStream>) -> Option<Self> {
        let ports = self.ports.as_ref()?;
        match mesh_core::orig_dst::original_dst(io.get_ref()) {
            Ok(original) => {
                let port = original.port();
                let (app, opaque_app) = (
                    ports.client(port),
                    std::net::SocketAddr::new(ports.host, port),
                );
                Some(Self {
                    app,
                    opaque_app,
                    ..self
                })
            }
            Err(error) => {
                // Never a guess: an unknown destination gets nothing forwarded.
                tracing::warn!(%error, "closing a redirected inbound connection");
                None
            }
        }
    }

    /// Accepts connections until the proxy drains.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        bounds: Listener,
        mut drain: DrainWatch,
    ) {
        let series = self
            .shared
            .tcp_metrics
            .series(&HttpLabels::new(Direction::Inbound));
        // The acceptor reports each handshake to the inbound's connection metrics.
        let this = Self {
            acceptor: self.acceptor.clone().observed_by(series.clone()),
            serve: bounds.serve.clone(),
            ..self
        };
        while let Some((tcp, admission)) = accept(&listener, &mut drain, &bounds).await {
            let (this, drain) = (this.clone(), drain.clone());
            bounds.spawn(tcp, &series, move |io| async move {
                let _admission = admission;
                let this = if this.ports.is_some() {
                    match this.for_original(&io) {
                        Some(this) => this,
                        None => return,
                    }
                } else {
                    this
                };
                match this.acceptor.accept(io).await {
                    Ok(accepted) => this.connection(accepted, drain).await,
                    Err(e) => tracing::debug!(error = %e, "inbound connection refused"),
                }
            });
        }
    }

    async fn connection<I>(self, accepted: Accepted<I>, drain: DrainWatch)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Accepted {
            io,
            peer,
            negotiated,
        } = accepted;
        // The layers this connection's requests go through, for the peer the handshake proved.
        // The stack stays unboxed: it is cloned per request.
        let routes = self.routes.clone();
        let labeler = move |req: &Request<Incoming>| {
            let mut labels = HttpLabels::from_request(Direction::Inbound, req);
            labels.route = routes.name(req.uri().path());
            labels
        };
        let metrics = MetricsLayer::new(self.shared.metrics.clone(), labeler)
            .with_tap(self.shared.tap.clone(), Direction::Inbound);
        let service = edge(
            ServiceBuilder::new()
                .layer(SetPeerIdentityLayer::new(peer.clone()))
                .layer(metrics)
                // The one classification, above authorization so that refusals count too.
                .layer(ClassifyLayer::new(self.classify.clone(), ()))
                .layer(AuthorizeLayer::shared(self.policy.clone()))
                .layer(OrigProtoDowngradeLayer::default())
                .layer(ForwardIdentityLayer::new(ForwardIdentity::new(
                    self.identity_header.clone(),
                    &peer,
                )))
                .service(self.app.clone()),
        );
        // Opaque bytes have no requests to refuse one by one: the peer is authorized once, for
        // the whole connection, before anything reaches the app.
        let app = self.opaque_app;
        let permitted = self.policy.current().permits(Some(&peer));
        match negotiated {
            Negotiated::Http2 => {
                return serve_connection_with(io, Version::HTTP_2, service, drain, self.serve)
                    .await;
            }
            Negotiated::Http1 => {
                return serve_connection_with(io, Version::HTTP_11, service, drain, self.serve)
                    .await;
            }
            Negotiated::Opaque if !permitted => return refuse_opaque(&peer),
            Negotiated::Opaque => return opaque_to_app(io, app, drain).await,
            Negotiated::None => {}
        }
        // No ALPN (plaintext in permissive mode, or a client that offered none): detect.
        match detect_protocol(io, self.detect).await {
            Ok(d) if d.protocol == Protocol::Http1 => {
                serve_connection_with(d.io, Version::HTTP_11, service, drain, self.serve).await
            }
            Ok(d) if d.protocol == Protocol::Http2 => {
                serve_connection_with(d.io, Version::HTTP_2, service, drain, self.serve).await
            }
            Ok(_) if !permitted => refuse_opaque(&peer),
            Ok(d) => opaque_to_app(d.io, app, drain).await,
            Err(e) => tracing::debug!(error = %e, "inbound detection failed"),
        }
    }
}

/// Closes an opaque connection from a peer the policy does not admit.
fn refuse_opaque(peer: &PeerIdentity) {
    tracing::info!(%peer, "opaque connection refused: the peer is not authorized");
}

async fn opaque_to_app<I>(io: I, app: std::net::SocketAddr, drain: DrainWatch)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    match TcpStream::connect(app).await {
        Ok(upstream) => tcp::splice(io, upstream, drain).await,
        Err(e) => tracing::warn!(error = %e, %app, "opaque connection: the app is not reachable"),
    }
}
