//! Pooled HTTP clients: one for HTTP/1 and one for HTTP/2, over the same kind of connection,
//! and the connector that always dials one fixed address (the local app).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Uri, Version};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::error::ConnectError;
use tokio::net::TcpStream;

/// Two pools to one destination: HTTP/2 (multiplexed) for most requests, HTTP/1 for the
/// requests that need it (upgrades, and apps that speak only HTTP/1).
#[derive(Debug)]
pub(crate) struct DualClient<C, B> {
    h1: Client<C, B>,
    h2: Client<C, B>,
}

impl<C: Clone, B> Clone for DualClient<C, B> {
    fn clone(&self) -> Self {
        Self {
            h1: self.h1.clone(),
            h2: self.h2.clone(),
        }
    }
}

impl<C, B> DualClient<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<mesh_core::BoxError>,
{
    /// Pools over `h1` connections and `h2` connections (which may be the same connector, or
    /// differ in what they offer in ALPN).
    pub(crate) fn new(h1: C, h2: C) -> Self {
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90));
            b
        };
        Self {
            h1: builder().build(h1),
            // Pings find a dead peer on an idle or stuck connection (a silent network
            // partition sends no reset), so its requests fail over instead of hanging.
            h2: builder()
                .http2_only(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .http2_keep_alive_timeout(Duration::from_secs(20))
                .build(h2),
        }
    }

    /// Sends `req` over HTTP/2 or HTTP/1. The URI is made absolute first (the pools are keyed
    /// by authority): from the `Host` header if `from_host` (where the authority travels on,
    /// as HTTP/2's `:authority`), else `fallback` (one pool, and the `Host` header is kept).
    pub(crate) fn send(
        &self,
        mut req: Request<B>,
        http2: bool,
        from_host: bool,
        fallback: &Authority,
    ) -> ResponseFuture {
        absolute_uri(&mut req, from_host, fallback);
        if http2 {
            *req.version_mut() = Version::HTTP_2;
            self.h2.request(req)
        } else {
            *req.version_mut() = Version::HTTP_11;
            self.h1.request(req)
        }
    }
}

/// Gives `req` an absolute URI (`http://authority/path`), as hyper-util's client wants.
fn absolute_uri<B>(req: &mut Request<B>, from_host: bool, fallback: &Authority) {
    if req.uri().authority().is_some() && req.uri().scheme().is_some() {
        return;
    }
    let authority = req
        .uri()
        .authority()
        .cloned()
        .or_else(|| {
            let host = req
                .headers()
                .get(http::header::HOST)
                .filter(|_| from_host)?;
            Authority::try_from(host.as_bytes()).ok()
        })
        .unwrap_or_else(|| fallback.clone());
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

/// Dials one address whatever the URI says: the local app, from the inbound side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FixedConnector(pub(crate) SocketAddr);

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
        let mut req = Request::builder()
            .uri("/a?b=1")
            .header("host", "web:8080")
            .body(())
            .expect("request");
        absolute_uri(&mut req, true, &fallback);
        assert_eq!(req.uri(), "http://web:8080/a?b=1");
        // Not from the Host header: one pool for the app, the header itself untouched.
        let mut req = Request::builder()
            .uri("/a")
            .header("host", "web:8080")
            .body(())
            .expect("request");
        absolute_uri(&mut req, false, &fallback);
        assert_eq!(req.uri(), "http://app/a");
        assert_eq!(req.headers()["host"], "web:8080");
        let mut req = Request::builder().uri("/x").body(()).expect("request");
        absolute_uri(&mut req, true, &fallback);
        assert_eq!(req.uri(), "http://app/x");
        let mut req = Request::builder()
            .uri("http://b/y")
            .body(())
            .expect("request");
        absolute_uri(&mut req, true, &fallback);
        assert_eq!(req.uri(), "http://b/y");
    }
}
