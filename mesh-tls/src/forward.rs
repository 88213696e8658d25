//! Telling the app behind a proxy who called: the peer's proven identity in a request header.

use std::task::{Context, Poll};

use http::Request;
use http::header::{HeaderName, HeaderValue};
use mesh_core::PeerIdentity;
use tower::{Layer, Service};

/// Sets a header (such as `mesh-client-id`) on each request to the identity the connection's
/// handshake proved, after removing whatever the client sent under that name: only the proxy
/// says who called. An unauthenticated peer's requests carry no such header. Build one per
/// accepted connection, from [`Accepted::peer`](crate::Accepted::peer): the header value is
/// made once, not per request.
///
/// ```
/// use http::header::HeaderName;
/// use mesh_core::{Identity, PeerIdentity};
/// use mesh_tls::ForwardIdentityLayer;
/// use tower::{Layer, Service, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let peer = PeerIdentity::Authenticated(Identity::parse("spiffe://mesh.local/ns/a/sa/web")?);
/// let header = HeaderName::from_static("mesh-client-id");
/// let app = tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers()["mesh-client-id"].clone())
/// });
/// let svc = ForwardIdentityLayer::new(header, &peer).layer(app);
/// let forged = http::Request::builder().header("mesh-client-id", "spiffe://evil").body(())?;
/// assert_eq!(svc.oneshot(forged).await?, "spiffe://mesh.local/ns/a/sa/web");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ForwardIdentityLayer {
    header: HeaderName,
    value: Option<HeaderValue>,
}

impl ForwardIdentityLayer {
    /// Sets `header` to `peer`'s identity.
    pub fn new(header: HeaderName, peer: &PeerIdentity) -> Self {
        let value = peer.identity().and_then(|id| {
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(id.as_str().as_bytes()))
                .ok()
        });
        Self { header, value }
    }
}

impl<S> Layer<S> for ForwardIdentityLayer {
    type Service = ForwardIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardIdentity {
            inner,
            header: self.header.clone(),
            value: self.value.clone(),
        }
    }
}

/// The service made by [`ForwardIdentityLayer`].
#[derive(Clone, Debug)]
pub struct ForwardIdentity<S> {
    inner: S,
    header: HeaderName,
    value: Option<HeaderValue>,
}

impl<S, B> Service<Request<B>> for ForwardIdentity<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let headers = req.headers_mut();
        headers.remove(&self.header);
        if let Some(value) = &self.value {
            headers.insert(self.header.clone(), value.clone());
        }
        self.inner.call(req)
    }
}
