//! Identity from the SPIFFE Workload API (feature `spiffe`): a SPIRE agent, or anything else
//! that serves the API, as the source of this workload's credentials.
//!
//! [`follow`] connects to the agent's socket (`unix:///run/spire/agent.sock`, or the
//! `SPIFFE_ENDPOINT_SOCKET` variable) through the `spiffe` crate's `X509Source`, and keeps a
//! [`CredentialStore`] equal to what the agent streams: the X.509-SVID (chain and key) and the
//! trust bundle of its trust domain. A rotated SVID or a changed bundle applies to the next
//! handshake; open connections keep their session. What it does when things go wrong:
//!
//! - **The agent is not there yet**: it retries with backoff; [`SpiffeIdentity::credentials`]
//!   waits, so a proxy serves nothing without an identity, and [`SpiffeReport::ready`] says
//!   why it is not ready.
//! - **The agent goes away**: the last SVID stays in force until it expires; each loss is
//!   logged and counted ([`SpiffeReport::losses`]) and the source reconnects. Should the SVID
//!   expire first, the store is [withdrawn](CredentialStore::withdraw): handshakes fail with
//!   an error saying so, rather than present a certificate every peer would refuse.
//! - **The agent offers an SVID for another identity** than the one configured: it is not
//!   used; the error names both ([`SpiffeReport::last_error`]), counted in
//!   [`SpiffeReport::refused`].
//! - **The agent withdraws the identity** (its registration entry was deleted, so it answers
//!   `PermissionDenied`): the store is withdrawn at once, without waiting for the SVID to
//!   expire. SPIRE's registration is the authority on who the workload is; this is how an
//!   operator revokes one.
//!
//! The peer side needs nothing new: an SVID's SPIFFE ID is an [`Identity`], so the expected
//! identities of endpoints and the authorization policy work unchanged.
//!
//! ```no_run
//! use mesh_tls::spiffe::{SpiffeConfig, follow};
//! use mesh_tls::{TlsAcceptor, TlsSettings};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint = Some("unix:///run/spire/agent.sock".to_owned());
//! let expected = Some(mesh_core::Identity::parse("spiffe://example.org/ns/default/sa/web")?);
//! let (_task, spiffe) = follow(SpiffeConfig::new(endpoint, expected))?;
//! // Waits for the first SVID; the store then follows every rotation.
//! let store = spiffe.credentials().await;
//! let acceptor = TlsAcceptor::new(store, TlsSettings::default())?;
//! # let _ = acceptor;
//! # Ok(())
//! # }
//! ```
//!
//! Only the bundle of the SVID's own trust domain is trusted; federated bundles are not used
//! (verifying a peer against its own trust domain's bundle needs a verifier per domain).
//!
//! [`Identity`]: mesh_core::Identity

mod follow;
mod report;

pub use self::follow::{SpiffeConfig, SpiffeError, SpiffeIdentity, follow};
pub use self::report::{SpiffeReport, SpiffeState};

use crate::store::CredentialStore;
