//! HTTP/2 to one destination, each request sent and awaited in the caller's task:
//! [`Http2Pool`].
//!
//! hyper's HTTP/2 client hands every request to the connection's task over a channel, spawns a
//! task of its own for each response future, and sends the response back over a second
//! channel; hyper-util's pool adds a checkout per request. Three tasks and two channels for
//! one request. The `h2` crate underneath needs none of that: a request is opened on a cloned
//! handle, and its response future and body are polled by whoever waits for them. Here:
//! - One connection at a time, made on first use by a task of its own (which then drives it);
//!   requests that come while it connects wait for it, and all of them get its error if it
//!   fails. A connection the server closes or turns away (`GOAWAY`) is replaced by the next
//!   request.
//! - A request without a body is sent from the caller's task with nothing spawned; a body is
//!   streamed by a spawned task, as it may outlive the response head (gRPC streams).
//! - A request the server refused unprocessed (`REFUSED_STREAM`, or above a `GOAWAY`'s last
//!   stream; RFC 9113 §8.7) is sent again once if it has no body; with a body it fails with a
//!   [`RefusedError`](crate::error::RefusedError), which a
//!   [`RetryLayer`](crate::retry::RetryLayer) that recorded the body retries (for the methods
//!   its policy allows). The price: a bodiless request keeps a copy of its head until its
//!   response head arrives.
//! - While streams are open the connection is pinged every
//!   [`keep_alive_interval`](Http2Settings::keep_alive_interval); a peer that does not answer
//!   within [`keep_alive_timeout`](Http2Settings::keep_alive_timeout) is taken for gone (a
//!   silent network partition sends no reset) and the connection closed, so its requests fail
//!   over instead of hanging. A connection without requests for
//!   [`idle_timeout`](Http2Settings::idle_timeout) is closed.
//! - Connection-specific headers (`Connection` and what it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` other than `trailers`) are
//!   removed, as HTTP/2 forbids them (RFC 9113 §8.2.2).
//!
//! It needs a tokio runtime (it spawns the connection's task).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;

use crate::error::BoxError;
use crate::headers::strip_hop_by_hop;

mod body;
mod conn;
mod future;

pub use self::body::Http2Body;
pub use self::future::Http2Future;

/// How an [`Http2Pool`]'s connections are made and kept.
#[derive(Clone, Debug)]
pub struct Http2Settings {
    /// How often a connection with open streams is pinged (default 10 s).
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (default 20 s).
    pub keep_alive_timeout: Duration,
    /// How long a connection without requests is kept (default 90 s).
    pub idle_timeout: Duration,
    /// The window of each stream this client receives on (default 2 MiB): room for a response
    /// body to arrive without waiting for the reader.
    pub stream_window: u32,
    /// The window of the whole connection (default 5 MiB).
    pub connection_window: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            stream_window: 2 * 1024 * 1024,
            connection_window: 5 * 1024 * 1024,
        }
    }
}

/// HTTP/2 (prior knowledge) to one destination over one connection at a time, each request
/// served in the caller's task. A tower service over any request body; clones share the
/// connection. Requests need an absolute URI (scheme and authority, which become `:scheme`
/// and `:authority`).
///
/// ```
/// use mesh_core::client::{FixedConnector, Http2Pool, Http2Settings};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let app = FixedConnector("127.0.0.1:8080".parse()?);
/// let pool = Http2Pool::new(app, Http2Settings::default());
/// # let _ = pool;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Http2Pool {
    shared: Arc<conn::Shared>,
}

impl std::fmt::Debug for Http2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Pool")
            .field("connected", &self.shared.is_connected())
            .finish_non_exhaustive()
    }
}

impl Http2Pool {
    /// A pool dialing through `connector` (a `Service<Uri>` whose connections speak HTTP/2).
    pub fn new<C, T>(connector: C, settings: Http2Settings) -> Self
    where
        C: tower::Service<Uri, Response = T> + Clone + Send + Sync + 'static,
        C::Error: Into<BoxError>,
        C::Future: Send,
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        Self {
            shared: conn::Shared::new(connector, settings),
        }
    }

    /// Whether a connection is up (made and not closed).
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// Sends `req`; see [`Http2Pool`].
    pub fn request<B>(&self, req: Request<B>) -> Http2Future<B>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        Http2Future::new(Arc::clone(&self.shared), prepare(req))
    }
}

impl<B> tower::Service<Request<B>> for Http2Pool
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Http2Body>;
    type Error = BoxError;
    type Future = Http2Future<B>;

    /// Always ready: a request waits for the connection (and its stream limit) itself.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.request(req)
    }
}

/// `req` as HTTP/2 sends it: without connection-specific headers, and with a
/// `Content-Length` when its body's size is known and it has none.
fn prepare<B: Body>(mut req: Request<B>) -> Request<B> {
    // What HTTP/2 forbids (RFC 9113 §8.2.2) is what a proxy drops anyway; `TE: trailers` stays.
    strip_hop_by_hop(req.headers_mut(), false);
    let body = req.body();
    if !body.is_end_stream() && !req.headers().contains_key(CONTENT_LENGTH) {
        if let Some(len) = body.size_hint().exact() {
            req.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    #[test]
    fn connection_specific_headers_are_removed() {
        let req = Request::builder()
            .uri("http://app/")
            .header("connection", "keep-alive, x-hop")
            .header("keep-alive", "timeout=5")
            .header("x-hop", "1")
            .header("proxy-connection", "keep-alive")
            .header("transfer-encoding", "chunked")
            .header("upgrade", "websocket")
            .header("te", "gzip")
            .header("x-kept", "2")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let req = prepare(req);
        let names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        assert_eq!(req.version(), http::Version::HTTP_2);

        let grpc = Request::builder()
            .uri("http://app/")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"abc")))
            .expect("request");
        let grpc = prepare(grpc);
        assert_eq!(grpc.headers()["te"], "trailers");
        assert_eq!(grpc.headers()["content-length"], "3");
    }
}
