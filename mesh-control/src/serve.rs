//! Serving the control plane's gRPC APIs over TLS.
//!
//! The server presents mesh-control's certificate; a client certificate is verified when
//! presented and optional otherwise ([`mesh_tls::Mode::ClientCertOptional`]): a proxy asks for
//! its first certificate with nothing but a token. Each request carries the caller's
//! [`PeerIdentity`] as an extension. Each handshake runs in its own task under the acceptor's
//! deadlines, so a slow or silent client delays no one; every connection belongs to the
//! serving task, so stopping it closes them all (a stopped control plane is gone, not half
//! there).

use std::convert::Infallible;
use std::sync::Arc;

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::PeerIdentity;
use mesh_tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::service::Routes;
use tower::ServiceExt;

/// The streams one connection may hold open: a proxy's destination and policy streams.
const MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// Serves `routes` on `listener` over TLS, until the returned future is dropped (with every
/// connection).
pub async fn serve_tls(routes: Routes, listener: TcpListener, acceptor: TlsAcceptor) {
    let acceptor = Arc::new(acceptor);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow with history.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, from) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = Arc::clone(&acceptor);
        let routes = routes.clone();
        connections.spawn(async move {
            let accepted = match acceptor.accept(tcp).await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%from, %error, "control plane handshake failed");
                    return;
                }
            };
            let peer = accepted.peer;
            let service = routes.map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer.clone());
                request
            });
            let service = service.map_err(|never: Infallible| match never {});
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // One proxy follows every authority its app calls, each a stream on this one
            // connection: hyper's default of 200 concurrent streams would leave the 201st
            // authority waiting forever. A stream costs a task and a watch receiver.
            builder
                .http2()
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
            let served = builder
                .http2_only()
                .serve_connection(TokioIo::new(accepted.io), TowerToHyperService::new(service))
                .await;
            if let Err(error) = served {
                tracing::debug!(%from, %error, "control plane connection ended");
            }
        });
    }
}

/// The caller's identity, as the TLS handshake proved it.
pub fn peer_of<T>(request: &tonic::Request<T>) -> PeerIdentity {
    request
        .extensions()
        .get::<PeerIdentity>()
        .cloned()
        .unwrap_or(PeerIdentity::Unauthenticated)
}
