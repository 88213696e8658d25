//! The client side of the control plane's TLS and identity API (feature `control`).
//!
//! - [`ControlPlane`]: where the control plane is and who it must prove to be. Its
//!   [`channel`](ControlPlane::channel) is a gRPC channel over TLS that accepts the server only
//!   if it presents exactly that identity, chaining to the configured roots; it presents this
//!   workload's certificate when there is one.
//! - [`Certifier`]: makes a key (it never leaves the process), sends a CSR with the projected
//!   ServiceAccount token, and keeps the [`CredentialStore`] current, renewing at 70% of each
//!   certificate's lifetime with backoff on failure. Open connections keep their session.
//! - [`follow_policy`]: the inbound authorization of a pod's port, from the policy API, into
//!   a [`SharedPolicy`](crate::authz::SharedPolicy) that [`AuthorizeLayer::shared`] enforces.
//!
//! [`AuthorizeLayer::shared`]: crate::authz::AuthorizeLayer::shared
//!
//! [`CredentialStore`]: crate::CredentialStore

mod certify;
mod channel;
mod policy;

pub use self::certify::{Certifier, CertifierReport, CertifyConfig, CertifyError};
pub use self::channel::{ControlPlane, ControlPlaneError};
pub use self::policy::{PolicyConfig, PolicyReport, follow_policy};
