//! The client side of the control plane's TLS and identity API (feature `control`).
//!
//! - [`ControlPlane`]: where the control plane is and who it must prove to be. Its
//!   [`channel`](ControlPlane::channel) is a gRPC channel over TLS that accepts the server only
//!   if it presents exactly that identity, chaining to the configured roots; it presents this
//!   workload's certificate when there is one.
//! - [`Certifier`]: makes a key (it never leaves the process), sends a CSR with the projected
//!   ServiceAccount token, and keeps the [`CredentialStore`] current, renewing at 70% of each
//!   certificate's lifetime with backoff on failure. Open connections keep their session.
//!
//! [`CredentialStore`]: crate::CredentialStore

mod certify;
mod channel;

pub use self::certify::{Certifier, CertifierReport, CertifyConfig, CertifyError};
pub use self::channel::{ControlPlane, ControlPlaneError};
