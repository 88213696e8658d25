//! Policy: which identities may call a pod's ports, from `MeshAuthorization` objects
//! ([`crd`]), streamed to inbound proxies and applied without a restart. See [`index`] for the
//! rule and the secure default.

pub mod crd;
pub mod index;
mod service;

pub use self::index::{NoSuchPod, PolicyIndex};
pub use self::service::PolicyService;
