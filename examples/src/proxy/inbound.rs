//! The inbound side: mTLS termination (strict by default), authorization by the peer's
//! identity, metrics and tap, and the request forwarded to the local app with the peer's
//! identity in a header the client cannot forge.

use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use mesh_core::PeerIdentity;
use mesh_core::classify::{AutoClassify, ClassifyLayer};
use mesh_core::detect::{DetectConfig, Protocol, detect_protocol};
use mesh_metrics::{Direction, HttpLabels, MetricsLayer};
use mesh_tls::authz::{AuthorizeLayer, AuthzPolicy};
use mesh_tls::{Accepted, Negotiated, ServerIo, SetPeerIdentityLayer, TlsAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

use super::client::{DualClient, FixedConnector};
use super::config;
use super::drain::DrainWatch;
use super::edge::Edge;
use super::headers::{self, ORIG_PROTO};
use super::routes::RouteTable;
use super::serve::{accept, serve_http};
use super::{Shared, tcp};

/// Everything a connection on the inbound side needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Inbound {
    acceptor: TlsAcceptor,
    policy: AuthzPolicy,
    app: AppClient,
    opaque_app: std::net::SocketAddr,
    routes: RouteTable,
    detect: DetectConfig,
    shared: Shared,
}

impl Inbound {
    /// The inbound side as configured.
    pub(crate) fn new(
        config: &config::Inbound,
        acceptor: TlsAcceptor,
        shared: Shared,
    ) -> Result<Self, super::StartError> {
        let patterns = config.authorize.iter().map(|p| p.get_ref().0.clone());
        let policy = AuthzPolicy::from_patterns(patterns)
            .allow_unauthenticated(config.allow_unauthenticated);
        let header = config.identity_header.0.clone();
        Ok(Self {
            acceptor,
            policy,
            app: AppClient {
                client: DualClient::new(FixedConnector(config.app.0), FixedConnector(config.app.0)),
                authority: Authority::try_from(config.app.0.to_string())
                    .unwrap_or_else(|_| Authority::from_static("app")),
                header,
                peer: None,
            },
            opaque_app: config.opaque_app.unwrap_or(config.app).0,
            routes: RouteTable::new(&config.routes),
            detect: DetectConfig::default().timeout(config.detect_timeout.0),
            shared,
        })
    }

    /// Accepts connections until the proxy drains.
    pub(crate) async fn serve(self, listener: TcpListener, mut drain: DrainWatch) {
        let series = self
            .shared
            .tcp_metrics
            .series(&HttpLabels::new(Direction::Inbound));
        while let Some(io) = accept(&listener, &series, &mut drain, "inbound").await {
            let (this, series, drain) = (self.clone(), series.clone(), drain.clone());
            tokio::spawn(async move {
                match this.acceptor.accept(io).await {
                    Ok(accepted) => {
                        if matches!(accepted.io, ServerIo::Tls(_)) {
                            series.handshake_succeeded();
                        }
                        this.connection(accepted, drain).await;
                    }
                    Err(e) => {
                        series.handshake_failed(e.reason());
                        tracing::debug!(error = %e, "inbound connection refused");
                    }
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
        let app = self.app.for_peer(&peer);
        let service = Edge(
            ServiceBuilder::new()
                .layer(SetPeerIdentityLayer::new(peer.clone()))
                .layer(metrics)
                // The one classification, above authorization so that refusals count too.
                .layer(ClassifyLayer::new(AutoClassify::new(), ()))
                .layer(AuthorizeLayer::new(self.policy.clone()))
                .service(app),
        );
        // Opaque bytes have no requests to refuse one by one: the peer is authorized once, for
        // the whole connection, before anything reaches the app.
        let app = self.opaque_app;
        let permitted = self.policy.permits(Some(&peer));
        match negotiated {
            Negotiated::Http2 => return serve_http(io, true, service, drain).await,
            Negotiated::Http1 => return serve_http(io, false, service, drain).await,
            Negotiated::Opaque if !permitted => return refuse_opaque(&peer),
            Negotiated::Opaque => return opaque_to_app(io, app, drain).await,
            Negotiated::None => {}
        }
        // No ALPN (plaintext in permissive mode, or a client that offered none): detect.
        match detect_protocol(io, self.detect).await {
            Ok(d) if d.protocol == Protocol::Http1 => serve_http(d.io, false, service, drain).await,
            Ok(d) if d.protocol == Protocol::Http2 => serve_http(d.io, true, service, drain).await,
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

/// The local app, over HTTP/1 or HTTP/2 as the request first came.
#[derive(Clone, Debug)]
struct AppClient {
    client: DualClient<FixedConnector, Incoming>,
    authority: Authority,
    header: HeaderName,
    /// The proven identity of this connection's peer, ready to insert (made once per
    /// connection, not per request).
    peer: Option<HeaderValue>,
}

impl AppClient {
    /// The client for one connection's requests, from `peer`.
    fn for_peer(&self, peer: &PeerIdentity) -> Self {
        let value = peer.identity().and_then(|id| {
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(id.as_str().as_bytes()))
                .ok()
        });
        Self {
            peer: value,
            ..self.clone()
        }
    }
}

impl tower::Service<Request<Incoming>> for AppClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let upgrade = headers::is_upgrade(&req);
        let http1 =
            req.headers_mut().remove(ORIG_PROTO).is_some() || req.version() < Version::HTTP_2;
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers, upgrade);
        // Whatever the client sent under this name is removed: only the proxy says who called.
        headers.remove(&self.header);
        if let Some(value) = &self.peer {
            headers.insert(self.header.clone(), value.clone());
        }
        self.client.send(req, !http1, false, &self.authority)
    }
}
