//! Serving one accepted connection as HTTP/1 or HTTP/2 until it closes or the process drains
//! (feature `server`).

use std::convert::Infallible;
use std::future::Future;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain::DrainWatch;
use crate::error::BoxError;

/// The largest request head accepted: HTTP/1's read buffer and HTTP/2's header list. A client
/// that sends more gets 431 and the connection goes on (HTTP/1) or the stream is refused.
pub const MAX_HEADERS: usize = 64 * 1024;

/// Serves `io` with `service` in `version` (HTTP/2 for [`Version::HTTP_2`], else HTTP/1.1 with
/// upgrades). When `drain` is signalled, the connection is told to finish its in-flight
/// requests and close; the watch is held until then, so a drain waits for it. The service is
/// cloned for each request, so a concrete (unboxed) stack is cheapest.
///
/// ```no_run
/// use http_body_util::Full;
/// use mesh_core::drain::Drain;
/// use mesh_core::serve::serve_connection;
///
/// # async fn run() -> std::io::Result<()> {
/// let (_drain, watch) = Drain::new();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (tcp, _) = listener.accept().await?;
/// let hello = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi"))))
/// });
/// serve_connection(tcp, http::Version::HTTP_11, hello, watch).await;
/// # Ok(())
/// # }
/// ```
// Not an `async fn`: the explicit `+ Send` is the point (see the body).
#[allow(clippy::manual_async_fn)]
pub fn serve_connection<I, S, B>(
    io: I,
    version: Version,
    service: S,
    mut drain: DrainWatch,
) -> impl Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // Proven `Send` here, where the bounds are generic: a caller that spawns this future with a
    // body type holding a `dyn Error` would otherwise hit rustc's erased-lifetime limits.
    async move {
        let service = hyper_util::service::TowerToHyperService::new(service);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if version == Version::HTTP_2 {
            builder = builder.http2_only();
        } else {
            builder = builder.http1_only();
        }
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADERS as u32);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            // A client that reset its connection is not the server's failure.
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
