//! Telling the app behind a proxy who called: the peer's proven identity in a request header.

use http::Request;
use http::header::{HeaderName, HeaderValue};
use mesh_core::PeerIdentity;
use mesh_core::rewrite::{RewriteLayer, RewriteRequest};

/// Sets a header (such as `mesh-client-id`) on each request to the identity the connection's
/// handshake proved, after removing whatever the client sent under that name: only the proxy
/// says who called. An unauthenticated peer's requests carry no such header. Build one per
/// accepted connection, from [`Accepted::peer`](crate::Accepted::peer): the header value is
/// made once, not per request.
///
/// ```
/// use http::header::HeaderName;
/// use mesh_core::{Identity, PeerIdentity};
/// use mesh_tls::{ForwardIdentity, ForwardIdentityLayer};
/// use tower::{Layer, Service, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let peer = PeerIdentity::Authenticated(Identity::parse("spiffe://mesh.local/ns/a/sa/web")?);
/// let header = HeaderName::from_static("mesh-client-id");
/// let app = tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers()["mesh-client-id"].clone())
/// });
/// let svc = ForwardIdentityLayer::new(ForwardIdentity::new(header, &peer)).layer(app);
/// let forged = http::Request::builder().header("mesh-client-id", "spiffe://evil").body(())?;
/// assert_eq!(svc.oneshot(forged).await?, "spiffe://mesh.local/ns/a/sa/web");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type ForwardIdentityLayer = RewriteLayer<ForwardIdentity>;

/// The rewrite of [`ForwardIdentityLayer`]: the header's name, and its value for this peer.
#[derive(Clone, Debug)]
pub struct ForwardIdentity {
    header: HeaderName,
    value: Option<HeaderValue>,
}

impl ForwardIdentity {
    /// Sets `header` to `peer`'s identity.
    pub fn new(header: HeaderName, peer: &PeerIdentity) -> Self {
        let value = peer.identity().and_then(|id| {
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(id.as_str().as_bytes()))
                .ok()
        });
        Self { header, value }
    }
}

impl RewriteRequest for ForwardIdentity {
    fn rewrite<B>(&self, req: &mut Request<B>) {
        let headers = req.headers_mut();
        headers.remove(&self.header);
        if let Some(value) = &self.value {
            headers.insert(self.header.clone(), value.clone());
        }
    }
}
