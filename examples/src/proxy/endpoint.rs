//! What the balancer sends to: one endpoint of a service, over mTLS expecting its identity.
//! [`EndpointClient`] carries HTTP (pooled, HTTP/2 between proxies, generic over the request
//! body); [`TcpEndpoint`] opens one meshed connection for opaque TCP.

use bytes::Bytes;
use http::uri::Authority;
use mesh_core::client::{DualClient, UriAuthority};
use mesh_core::orig_proto::{OrigProtoUpgradeLayer, Upgrade};
use mesh_core::rewrite::Rewrite;
use mesh_core::{BoxError, Endpoint, Identity};
use mesh_tls::{MeshConnector, MeshEndpoint, OPAQUE_ALPN, StaticEndpoints, TlsConnector};
use tokio::net::TcpStream;
use tower::Layer;

/// HTTP to one endpoint, for request bodies `B`. Requests go over HTTP/2 (an HTTP/1 request
/// marked so that the far side speaks HTTP/1 to its app); upgrades go over HTTP/1.
pub(crate) type EndpointClient<B> = Rewrite<DualClient<MeshConnector<StaticEndpoints>, B>, Upgrade>;

/// A client for `endpoint`, expecting its identity or else `identity`.
pub(crate) fn endpoint_client<B>(
    tls: &TlsConnector,
    endpoint: &Endpoint,
    identity: Option<&Identity>,
) -> EndpointClient<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let resolve = || {
        let identity = endpoint.identity.as_ref().or(identity);
        match identity {
            Some(identity) => StaticEndpoints::new().with_fallback(MeshEndpoint {
                addr: endpoint.addr,
                identity: identity.clone(),
            }),
            // Nothing to verify the endpoint by: every connection fails, with an error that
            // says so, rather than going out in plaintext.
            None => StaticEndpoints::new(),
        }
    };
    let connector = |alpn: &[u8]| MeshConnector::new(tls.with_alpn([alpn]), resolve());
    let authority = Authority::try_from(endpoint.addr.to_string())
        .unwrap_or_else(|_| Authority::from_static("endpoint"));
    let client = DualClient::new(
        connector(b"http/1.1"),
        connector(b"h2"),
        UriAuthority::FromRequest(authority),
    );
    OrigProtoUpgradeLayer::default().layer(client)
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
