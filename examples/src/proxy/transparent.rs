//! The transparent outbound side: connections `mesh-init` redirected to the outbound listener,
//! routed by their original destination. A meshed endpoint's address gets its service (HTTP
//! detected and served by the service's stack, so per-request balancing, retries and golden
//! metrics still apply; anything else over mTLS to the service's endpoints); any other address
//! is egress, passed through as plain TCP or refused, as the egress policy says, and counted
//! per destination either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::Version;
use mesh_core::detect::{DetectConfig, Protocol, detect_protocol};
use mesh_core::drain::DrainWatch;
use mesh_core::orig_dst::{OrigDstError, original_dst};
use mesh_core::serve::{ServeConfig, serve_connection_with};
use mesh_metrics::{Collect, CountingIo, Direction, Exposition, HttpLabels};
use tokio::net::TcpStream;

use super::config::Egress;
use super::edge::edge;
use super::outbound::{Meshed, forward};
use super::resolve::OutboundRoutes;
use super::{Shared, tcp};

/// What a redirected connection needs.
pub(crate) struct Redirected {
    pub(crate) meshed: Arc<HashMap<SocketAddr, Meshed>>,
    /// The authority routes: a connection made to the listener itself is served by them (the
    /// app addressed the proxy), and the control plane resolves ClusterIPs through them.
    pub(crate) routes: OutboundRoutes,
    pub(crate) egress: Egress,
    pub(crate) detect: DetectConfig,
    pub(crate) shared: Shared,
    /// How its HTTP connections are served (the outbound listener's limits).
    pub(crate) serve: ServeConfig,
}

impl Redirected {
    /// Serves one redirected connection.
    pub(crate) async fn serve(self, io: CountingIo<TcpStream>, drain: DrainWatch) {
        let original = match original_dst(io.get_ref()) {
            Ok(original) => original,
            // The app addressed the proxy itself, as without interception: route by authority.
            Err(OrigDstError::NotRedirected(_)) => {
                return self.http(io, edge(self.routes.clone()), drain).await;
            }
            // Never a guess: a connection whose destination is unknown gets nothing forwarded.
            Err(error) => return tracing::warn!(%error, "closing a redirected outbound connection"),
        };
        if let Some(meshed) = self.meshed.get(&original).cloned() {
            return self.meshed(io, meshed, drain).await;
        }
        if let Some(stack) = self.routes.by_address(original).await {
            return self.http(io, edge(stack), drain).await;
        }
        if self.egress == Egress::Deny {
            self.shared.egress_refused.0.fetch_add(1, Relaxed);
            return tracing::info!(destination = %original, "egress refused: the destination is outside the mesh");
        }
        // One series per destination (the family's label-set cap bounds how many).
        let mut labels = HttpLabels::new(Direction::Outbound);
        labels.endpoint = Some(original);
        let series = self.shared.tcp_metrics.series(&labels);
        match TcpStream::connect(original).await {
            Ok(upstream) => {
                let _ = upstream.set_nodelay(true);
                tcp::splice(io, CountingIo::new(upstream, series), drain).await;
            }
            Err(error) => {
                tracing::info!(destination = %original, %error, "egress connection failed");
            }
        }
    }

    /// Serves HTTP with `service`; anything else is closed (a service the control plane
    /// resolved has no opaque TCP balancer here yet).
    async fn http<S>(&self, io: CountingIo<TcpStream>, service: S, drain: DrainWatch)
    where
        S: tower::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<
                    mesh_core::error::ErrorResponseBody<super::serve::ProxyBody>,
                >,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let detected = match detect_protocol(io, self.detect).await {
            Ok(detected) => detected,
            Err(e) => return tracing::debug!(error = %e, "outbound detection failed"),
        };
        match detected.protocol {
            Protocol::Http1 => {
                serve_connection_with(
                    detected.io,
                    Version::HTTP_11,
                    service,
                    drain,
                    self.serve.clone(),
                )
                .await
            }
            Protocol::Http2 => {
                serve_connection_with(
                    detected.io,
                    Version::HTTP_2,
                    service,
                    drain,
                    self.serve.clone(),
                )
                .await
            }
            Protocol::Opaque => {
                tracing::info!("closing an opaque connection: no TCP route for its destination")
            }
        }
    }

    async fn meshed(&self, io: CountingIo<TcpStream>, meshed: Meshed, drain: DrainWatch) {
        let detected = match detect_protocol(io, self.detect).await {
            Ok(detected) => detected,
            Err(e) => return tracing::debug!(error = %e, "outbound detection failed"),
        };
        match detected.protocol {
            Protocol::Http1 => {
                serve_connection_with(
                    detected.io,
                    Version::HTTP_11,
                    edge(meshed.http),
                    drain,
                    self.serve.clone(),
                )
                .await
            }
            Protocol::Http2 => {
                serve_connection_with(
                    detected.io,
                    Version::HTTP_2,
                    edge(meshed.http),
                    drain,
                    self.serve.clone(),
                )
                .await
            }
            Protocol::Opaque => Box::pin(forward(detected.io, meshed.tcp, drain)).await,
        }
    }
}

/// Connections refused by `egress = "deny"`, in `/metrics`. Passed-through ones are counted
/// by the TCP metrics, per destination (`endpoint` label).
#[derive(Clone, Debug, Default)]
pub(crate) struct EgressRefused(Arc<AtomicU64>);

impl Collect for EgressRefused {
    fn collect(&self, out: &mut Exposition<'_>) {
        out.family(
            "mesh_egress_refused_total",
            "counter",
            "Redirected connections for destinations outside the mesh, refused by the egress policy.",
        );
        out.sample("", "", "", self.0.load(Relaxed));
    }
}
