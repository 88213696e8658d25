//! What the proxy's listeners share: the boxed body type, and accepting connections until the
//! proxy drains.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use mesh_core::BoxError;
use mesh_core::drain::DrainWatch;
use mesh_metrics::{CountingIo, TcpSeries};
use tokio::net::{TcpListener, TcpStream};

/// Response bodies as the proxy's servers send them: whatever the layers made, boxed.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose errors convert to [`BoxError`].
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed_unsync()
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
