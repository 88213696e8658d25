//! mesh-control: the control plane's logic, on Kubernetes.
//!
//! - [`identity`]: certificates for proxies, from a ServiceAccount token (proven by a
//!   TokenReview) and a CSR, signed by the issuer in a Secret.
//! - [`destination`]: endpoint sets for authorities, from Services, EndpointSlices and Pods.
//! - [`policy`]: who may call which pod ports, from `MeshAuthorization` objects.
//! - [`install`], [`inject`] and [`webhook`], [`check`]: the manifests, the injector (offline
//!   and as a mutating webhook), and what is missing or broken in a cluster.
//! - [`serve`]: the gRPC APIs of [`mesh_api`] over TLS.
//! - [`proxies`]: the meshed pods and their proxies' admin addresses (for mesh-viz).
#![doc = "\n# Example\n"]
//! ```
//! use mesh_control::naming::service_account_identity;
//!
//! let id = service_account_identity("mesh.local", "default", "web")?;
//! assert_eq!(id.as_str(), "spiffe://mesh.local/ns/default/sa/web");
//! # Ok::<_, mesh_core::IdentityError>(())
//! ```

pub mod check;
mod control;
pub mod destination;
pub mod identity;
pub mod inject;
pub mod install;
pub mod naming;
pub mod policy;
pub mod proxies;
pub mod serve;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod webhook;

pub use self::control::{ControlConfig, RunningControl, StartError, WebhookSettings, start};
