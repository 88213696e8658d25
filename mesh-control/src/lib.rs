//! mesh-control: the control plane's logic, on Kubernetes.
//!
//! - [`identity`]: certificates for proxies, from a ServiceAccount token (proven by a
//!   TokenReview) and a CSR, signed by the issuer in a Secret.
//! - [`destination`]: endpoint sets for authorities, from Services, EndpointSlices and Pods.
//! - [`policy`]: who may call which pod ports, from `MeshAuthorization` objects.
//! - [`serve`]: the gRPC APIs of [`mesh_api`] over TLS.
#![doc = "\n# Example\n"]
//! ```
//! use mesh_control::naming::service_account_identity;
//!
//! let id = service_account_identity("mesh.local", "default", "web")?;
//! assert_eq!(id.as_str(), "spiffe://mesh.local/ns/default/sa/web");
//! # Ok::<_, mesh_core::IdentityError>(())
//! ```

mod control;
pub mod destination;
pub mod identity;
pub mod naming;
pub mod policy;
pub mod serve;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use self::control::{ControlConfig, RunningControl, StartError, start};
