//! Serving one accepted connection as HTTP/1 or HTTP/2, until it closes or the proxy drains.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_core::BoxError;
use std::sync::Arc;
use std::time::Duration;

use mesh_metrics::{CountingIo, TcpSeries};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::util::BoxCloneSyncService;

use super::drain::DrainWatch;

/// Response bodies as the proxy's servers send them: whatever the layers made, boxed.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What serves requests on a connection.
pub(crate) type HttpService =
    BoxCloneSyncService<Request<Incoming>, Response<ProxyBody>, Infallible>;

/// Boxes any body whose errors convert to [`BoxError`].
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed_unsync()
}

/// Serves `io` with `service`: HTTP/2 if `http2`, else HTTP/1 (with upgrades). When the
/// proxy drains, the connection is told to finish its in-flight requests and close. The
/// service is cloned for each request, so a concrete (unboxed) stack is cheapest.
pub(crate) async fn serve_http<I, S>(io: I, http2: bool, service: S, mut drain: DrainWatch)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http2 {
        builder = builder.http2_only();
    } else {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
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
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The next connection on `listener`, counted in `series`, or `None` once the proxy drains.
pub(crate) async fn accept(
    listener: &TcpListener,
    series: &Arc<TcpSeries>,
    drain: &mut DrainWatch,
    what: &'static str,
) -> Option<CountingIo<TcpStream>> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some(CountingIo::new(tcp, Arc::clone(series)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    // Out of file descriptors, say: pause rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = drain.signaled() => return None,
        }
    }
}
