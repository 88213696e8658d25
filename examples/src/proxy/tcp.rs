//! Opaque TCP: bytes copied both ways until either side closes.

use tokio::io::{AsyncRead, AsyncWrite};

use mesh_core::drain::DrainWatch;

/// Copies between `a` and `b` until both directions are done. `_drain` is held so that a
/// draining proxy waits for the connection (up to its deadline).
pub(crate) async fn splice<A, B>(mut a: A, mut b: B, _drain: DrainWatch)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(error = %e, "opaque connection ended with an error");
    }
}
