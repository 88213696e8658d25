//! The gRPC APIs between mesh proxies and the mesh control plane, with the client and the
//! server code tonic generates for them, so that a proxy, the control plane, or another mesh
//! project can talk to either side (as linkerd2-proxy-api serves Linkerd).
//!
//! - [`destination`]: an authority in, a stream of endpoint sets out (addresses, weights, the
//!   identity each endpoint must prove, labels, protocol hints).
//! - [`identity`]: a ServiceAccount token and a CSR in, a short-lived certificate out.
//! - [`policy`]: a pod in, a stream of its inbound authorization out.
//!
//! Every stream sends whole snapshots: the first message is the current state and each later
//! one replaces it, so a client that reconnects needs no memory of what it had.
//!
//! ```
//! use mesh_api::destination::{GetDestination, destination_client::DestinationClient};
//!
//! # async fn resolve() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = DestinationClient::connect("http://127.0.0.1:8086").await?;
//! let mut sets = client
//!     .get(GetDestination { authority: "web.default.svc.cluster.local:80".into(), ..Default::default() })
//!     .await?
//!     .into_inner();
//! while let Some(set) = sets.message().await? {
//!     println!("{} endpoints", set.endpoints.len());
//! }
//! # Ok(())
//! # }
//! ```

/// Destination: endpoint sets for authorities (`mesh.destination.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod destination {
    tonic::include_proto!("mesh.destination.v1");
}

/// Identity: certificates for proxies (`mesh.identity.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod identity {
    tonic::include_proto!("mesh.identity.v1");
}

/// Policy: inbound authorization for pods (`mesh.policy.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod policy {
    tonic::include_proto!("mesh.policy.v1");
}
