//! mesh-tls: mutual TLS for the mesh, secure by default.
//!
//! - [`TlsAcceptor`]: the server side. Strict mode (the default) requires TLS and a client
//!   certificate chaining to the trust roots; permissive mode detects a ClientHello by peeking
//!   and lets plaintext through marked [`PeerIdentity::Unauthenticated`]. TLS 1.3 only unless
//!   TLS 1.2 is allowed; ALPN `h2` and `http/1.1`, with the choice reported
//!   ([`Negotiated`]). Detection and handshake have deadlines; garbage and silence close the
//!   connection with a typed, counted [`AcceptError`].
//! - The peer's identity, from its certificate's URI SAN (SPIFFE) or DNS SAN, comes back as a
//!   [`PeerIdentity`]; [`SetPeerIdentityLayer`] puts it on every request of the connection.
//! - [`TlsConnector`] and [`MeshConnector`] (for hyper-util's client): the client side, which
//!   presents this workload's certificate and accepts the server only if its certificate
//!   carries the *expected* identity; a mismatch is a typed error naming both.
//! - [`CredentialStore`]: certificate, key and roots behind an atomic swap, reloaded when their
//!   files change ([`CredentialStore::watch`]) or on demand. Connections keep their session;
//!   new handshakes use the new material; a broken file is reported and the old material stays.
//! - [`authz`]: admit requests by peer identity (exact names, `*` per segment); others get 403
//!   or gRPC `PERMISSION_DENIED`, and nothing reaches the application.
//! - [`CertificateRequest`] and [`DevCa::certify`]: a workload's own key and CSR for exactly
//!   its identity, and the issuer's check and signature.
//! - `control` (feature `control`): a TLS channel to the control plane that verifies its
//!   identity, and a `control::Certifier` that gets and renews certificates from its
//!   identity API into a [`CredentialStore`].
//! - `spiffe` (feature `spiffe`): credentials from the SPIFFE Workload API (a SPIRE agent),
//!   following its stream of SVIDs and bundles into a [`CredentialStore`].
//! - [`DevCa`]: a development CA minting a trust root and short-lived workload certificates
//!   (ECDSA P-256 by default), also as `cargo run -p examples --example mesh-ca`.
//!
//! rustls 0.23 with its ring provider, passed explicitly (no process-wide default is
//! installed).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mesh_core::{Identity, PeerIdentity};
//! use mesh_tls::{CredentialStore, DevCa, TlsAcceptor, TlsConnector, TlsSettings};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let ca = DevCa::new("mesh.local")?;
//! let web = Identity::parse("spiffe://mesh.local/ns/default/sa/web")?;
//! let api = Identity::parse("spiffe://mesh.local/ns/default/sa/api")?;
//! let hour = Duration::from_secs(3600);
//! let server = CredentialStore::new(ca.issue(&api, hour)?.credentials()?);
//! let client = CredentialStore::new(ca.issue(&web, hour)?.credentials()?);
//!
//! let acceptor = TlsAcceptor::new(server, TlsSettings::default())?;
//! let connector = TlsConnector::new(client, TlsSettings::default());
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let (accepted, connected) = tokio::join!(acceptor.accept(a), connector.connect(b, &api));
//! connected?;
//! assert_eq!(accepted?.peer, PeerIdentity::Authenticated(web));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`PeerIdentity`]: mesh_core::PeerIdentity
//! [`PeerIdentity::Unauthenticated`]: mesh_core::PeerIdentity::Unauthenticated

pub mod authz;
mod ca;
mod client;
#[cfg(feature = "control")]
pub mod control;
mod credentials;
mod csr;
mod forward;
mod identity;
mod peer;
mod server;
mod settings;
#[cfg(feature = "spiffe")]
pub mod spiffe;
mod store;
#[cfg(feature = "test-util")]
pub mod test_util;
mod verify;

pub use self::ca::{CaError, DevCa, Issued, KeyAlgorithm, ServerCert};
pub use self::client::{
    HandshakeError, MeshConnection, MeshConnector, MeshEndpoint, NoEndpoint, ResolveEndpoint,
    StaticEndpoints, TlsConnector,
};
pub use self::credentials::{CredentialFiles, Credentials, CredentialsError, default_provider};
pub use self::csr::{CertificateRequest, Certified, CsrRefused};
pub use self::forward::{ForwardIdentity, ForwardIdentityLayer};
pub use self::identity::{CertIdentityError, identity_of, not_after_of, serial_of};
pub use self::peer::{SetPeerIdentity, SetPeerIdentityLayer};
pub use self::server::{AcceptCounts, AcceptError, AcceptStats, Accepted, ServerIo, TlsAcceptor};
pub use self::settings::{Mode, Negotiated, OPAQUE_ALPN, TlsSettings};
pub use self::store::CredentialStore;
pub use self::verify::IdentityMismatch;
