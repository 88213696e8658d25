//! Pooled HTTP clients for a proxy (feature `client`): [`DualClient`], one pool for HTTP/1 and
//! one for HTTP/2 to the same destination, picked by each request's version; its pools
//! [`Http1Pool`] and [`Http2Pool`], which serve each request in the caller's task; and
//! [`FixedConnector`], which always dials one address (a local app).
//!
//! With [`OrigProtoUpgradeLayer`](crate::orig_proto::OrigProtoUpgradeLayer) in front, every
//! request but an upgrade leaves as HTTP/2; with
//! [`OrigProtoDowngradeLayer`](crate::orig_proto::OrigProtoDowngradeLayer), each request
//! reaches the app in the version its client spoke.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::error::{BoxError, ConnectError};

mod body;
mod h1;
mod h2;

pub use self::body::{ClientBody, DualFuture};
pub use self::h1::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_IDLE, Http1Body, Http1Future, Http1Pool};
pub use self::h2::{Http2Body, Http2Future, Http2Pool, Http2Settings};

/// Where a request's absolute URI (by which the pools are keyed) takes its authority from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UriAuthority {
    /// The request's own (its URI's, or its `Host` header's, which then travels on as HTTP/2's
    /// `:authority`); this one if it has none.
    FromRequest(Authority),
    /// This one unless the URI itself names one (one pool; the `Host` header is kept as it is).
    Fixed(Authority),
}

/// Two pools to one destination: HTTP/2 (multiplexed) for requests whose version is HTTP/2,
/// HTTP/1 for the rest (apps that speak only HTTP/1, and upgrades). A tower service, generic
/// over the request body.
///
/// HTTP/2 requests go through an [`Http2Pool`] (one connection that many requests share, each
/// sent from the caller's task; a bodiless request the server refused unprocessed is sent once
/// more), plain HTTP/1 requests through an [`Http1Pool`], in the caller's task. An upgrade
/// (`Upgrade` header or `CONNECT`) goes through hyper-util's pooled client, which keeps the
/// connection for the upgraded bytes: HTTP/1's, or for an HTTP/2 `CONNECT` its HTTP/2 one.
///
/// ```
/// use http::uri::Authority;
/// use mesh_core::client::{DualClient, FixedConnector, UriAuthority};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let app = FixedConnector("127.0.0.1:8080".parse()?);
/// let client: DualClient<_, http_body_util::Empty<bytes::Bytes>> =
///     DualClient::new(app, app, UriAuthority::Fixed(Authority::from_static("app")));
/// # let _ = client;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DualClient<C: tower::Service<Uri>, B> {
    // Shared, not held inline: a service stack holding the client is cloned per connection and
    // per request, and hyper-util's clients carry their whole configuration (about 800 bytes
    // for the three pools); a clone is one reference count.
    pools: Arc<Pools<C, B>>,
}

/// What every clone of a [`DualClient`] shares.
struct Pools<C: tower::Service<Uri>, B> {
    h1: Http1Pool<C, B>,
    upgrades: Client<C, B>,
    h2: Http2Pool,
    tunnels: Client<C, B>,
    authority: UriAuthority,
}

impl<C: tower::Service<Uri>, B> std::fmt::Debug for DualClient<C, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualClient")
            .field("h1", &self.pools.h1)
            .field("authority", &self.pools.authority)
            .finish_non_exhaustive()
    }
}

impl<C: tower::Service<Uri>, B> Clone for DualClient<C, B> {
    fn clone(&self) -> Self {
        Self {
            pools: Arc::clone(&self.pools),
        }
    }
}

impl<C, B> DualClient<C, B>
where
    C: Connect + tower::Service<Uri> + Clone + Send + Sync + 'static,
    <C as tower::Service<Uri>>::Error: Into<BoxError>,
    <C as tower::Service<Uri>>::Future: Send,
    <C as tower::Service<Uri>>::Response:
        hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Pools over `h1` connections and `h2` connections (which may be the same connector, or
    /// differ in what they offer in ALPN); `authority` says where a request's authority comes
    /// from. The upgrade pools are keyed by it; the HTTP/1 and HTTP/2 pools are one
    /// destination each (every connection a connector dials is taken to reach the same
    /// place), as a `DualClient` is.
    pub fn new(h1: C, h2: C, authority: UriAuthority) -> Self {
        Self::with_http2(h1, h2, authority, Http2Settings::default())
    }

    /// Like [`new`](Self::new), with `settings` for the HTTP/2 pool.
    pub fn with_http2(h1: C, h2: C, authority: UriAuthority, settings: Http2Settings) -> Self {
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90));
            b
        };
        let pools = Pools {
            h1: Http1Pool::new(h1.clone(), authority.clone()),
            upgrades: builder().build(h1),
            h2: Http2Pool::new(h2.clone(), settings.clone()),
            tunnels: builder()
                .http2_only(true)
                .http2_keep_alive_interval(settings.keep_alive_interval)
                .http2_keep_alive_timeout(settings.keep_alive_timeout)
                .build(h2),
            authority,
        };
        Self {
            pools: Arc::new(pools),
        }
    }
}

impl<C, T, B> tower::Service<Request<B>> for DualClient<C, B>
where
    C: Connect + tower::Service<Uri, Response = T> + Clone + Send + Sync + 'static,
    <C as tower::Service<Uri>>::Error: Into<BoxError>,
    <C as tower::Service<Uri>>::Future: Send,
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ClientBody<B>>;
    type Error = BoxError;
    type Future = DualFuture<B>;

    /// Always ready: the pools connect per request.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Sends `req` over HTTP/2 if that is its version, else over HTTP/1.1.
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let pools = &*self.pools;
        if req.version() == Version::HTTP_2 {
            absolute_uri(&mut req, &pools.authority);
            if req.method() == http::Method::CONNECT {
                return DualFuture::shared(pools.tunnels.request(req));
            }
            return DualFuture::h2(pools.h2.request(req));
        }
        if is_upgrade(&req) {
            absolute_uri(&mut req, &pools.authority);
            *req.version_mut() = Version::HTTP_11;
            return DualFuture::shared(pools.upgrades.request(req));
        }
        DualFuture::pooled(pools.h1.request(req))
    }
}

/// Whether `req` asks for the connection after its response (a protocol upgrade or a tunnel).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE)
}

/// Gives `req` an absolute URI (`http://authority/path`), as hyper-util's client wants.
fn absolute_uri<B>(req: &mut Request<B>, from: &UriAuthority) {
    if req.uri().authority().is_some() && req.uri().scheme().is_some() {
        return;
    }
    let authority = request_authority(req, from);
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// The authority `req` is for: its URI's, else (with [`UriAuthority::FromRequest`]) its `Host`
/// header's, else `from`'s own.
fn request_authority<B>(req: &Request<B>, from: &UriAuthority) -> Authority {
    let (from_host, fallback) = match from {
        UriAuthority::FromRequest(fallback) => (true, fallback),
        UriAuthority::Fixed(authority) => (false, authority),
    };
    req.uri()
        .authority()
        .cloned()
        .or_else(|| {
            let host = req
                .headers()
                .get(http::header::HOST)
                .filter(|_| from_host)?;
            Authority::try_from(host.as_bytes()).ok()
        })
        .unwrap_or_else(|| fallback.clone())
}

/// Dials one address whatever the URI says (the local app, from the inbound side), with
/// `TCP_NODELAY`; a failure is a [`ConnectError`] for that address.
#[derive(Clone, Copy, Debug)]
pub struct FixedConnector(pub SocketAddr);

impl tower::Service<Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| ConnectError::new(addr, e))?;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(tcp))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_become_absolute_from_host_or_fallback() {
        let fallback = Authority::from_static("app");
        let from_request = UriAuthority::FromRequest(fallback.clone());
        let fixed = UriAuthority::Fixed(fallback);
        // (URI, Host header, where the authority comes from, the URI it becomes)
        let cases = [
            (
                "/a?b=1",
                Some("web:8080"),
                &from_request,
                "http://web:8080/a?b=1",
            ),
            // Not from the Host header: one pool for the app, the header itself untouched.
            ("/a", Some("web:8080"), &fixed, "http://app/a"),
            ("/x", None, &from_request, "http://app/x"),
            ("http://b/y", None, &from_request, "http://b/y"),
        ];
        for (uri, host, from, expected) in cases {
            let mut req = Request::builder().uri(uri);
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let mut req = req.body(()).expect("request");
            absolute_uri(&mut req, from);
            assert_eq!(req.uri(), expected, "{uri} with host {host:?}");
            if let Some(host) = host {
                assert_eq!(req.headers()["host"], host);
            }
        }
    }
}
