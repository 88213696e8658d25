//! What the balancer sends to: one endpoint of a service, over mTLS expecting its identity.
//! [`EndpointClient`] carries HTTP (pooled, HTTP/2 between proxies); [`TcpEndpoint`] opens one
//! meshed connection for opaque TCP.

use std::task::{Context, Poll};

use http::uri::Authority;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use mesh_core::retry::ReplayBody;
use mesh_core::{BoxError, Endpoint, Identity};
use mesh_tls::{MeshConnector, MeshEndpoint, OPAQUE_ALPN, StaticEndpoints, TlsConnector};
use tokio::net::TcpStream;

use super::client::DualClient;
use super::headers::{self, HTTP1, ORIG_PROTO};

/// The request body the endpoints get: the app's, replayable for retries.
pub(crate) type OutboundBody = ReplayBody<Incoming>;

/// HTTP to one endpoint. Requests go over HTTP/2 (an HTTP/1 request is marked with
/// [`ORIG_PROTO`] so the far side speaks HTTP/1 to its app); upgrades go over HTTP/1.
#[derive(Clone, Debug)]
pub(crate) struct EndpointClient {
    client: DualClient<MeshConnector<StaticEndpoints>, OutboundBody>,
    authority: Authority,
}

impl EndpointClient {
    /// A client for `endpoint`, expecting its identity or else `identity`.
    pub(crate) fn new(
        tls: &TlsConnector,
        endpoint: &Endpoint,
        identity: Option<&Identity>,
    ) -> Self {
        let resolve = || {
            let identity = endpoint.identity.as_ref().or(identity);
            match identity {
                Some(identity) => StaticEndpoints::new().with_fallback(MeshEndpoint {
                    addr: endpoint.addr,
                    identity: identity.clone(),
                }),
                // Nothing to verify the endpoint by: every connection fails, with an error
                // that says so, rather than going out in plaintext.
                None => StaticEndpoints::new(),
            }
        };
        let connector = |alpn: &[u8]| MeshConnector::new(tls.with_alpn([alpn]), resolve());
        let authority = Authority::try_from(endpoint.addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("endpoint"));
        Self {
            client: DualClient::new(connector(b"http/1.1"), connector(b"h2")),
            authority,
        }
    }
}

impl tower::Service<Request<OutboundBody>> for EndpointClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<OutboundBody>) -> Self::Future {
        let upgrade = headers::is_upgrade(&req);
        let from_http1 = req.version() < Version::HTTP_2;
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        if from_http1 && !upgrade {
            req.headers_mut().insert(ORIG_PROTO, HTTP1);
        } else {
            req.headers_mut().remove(ORIG_PROTO);
        }
        self.client.send(req, !upgrade, true, &self.authority)
    }
}

/// A meshed connection to an endpoint.
pub(crate) type MeshStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Opaque TCP to one endpoint: one mTLS connection per [`TcpEndpoint::connect`], expecting the
/// endpoint's identity. The balancer core picks which endpoint gets each connection.
#[derive(Clone, Debug)]
pub(crate) struct TcpEndpoint {
    tls: TlsConnector,
    target: Option<MeshEndpoint>,
}

impl TcpEndpoint {
    /// Connections to `endpoint`, expecting its identity or else `identity`.
    pub(crate) fn new(
        tls: &TlsConnector,
        endpoint: &Endpoint,
        identity: Option<&Identity>,
    ) -> Self {
        Self {
            tls: tls.with_alpn([OPAQUE_ALPN]),
            target: endpoint
                .identity
                .as_ref()
                .or(identity)
                .map(|identity| MeshEndpoint {
                    addr: endpoint.addr,
                    identity: identity.clone(),
                }),
        }
    }

    /// Opens one meshed connection.
    pub(crate) async fn connect(&self) -> Result<MeshStream, BoxError> {
        let target = self
            .target
            .as_ref()
            .ok_or("the endpoint has no identity to verify it by")?;
        Ok(self.tls.connect_to(target).await?)
    }
}
