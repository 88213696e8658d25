//! Destination: which endpoints an authority resolves to, from Services, EndpointSlices and
//! Pods, streamed to proxies as whole sets.
//!
//! Each endpoint carries its address, weight, the identity it must prove (its pod's service
//! account, when the pod is meshed: label `mesh.dev/proxy=enabled`), labels for metrics
//! (namespace, owner, pod), and a protocol hint (ports listed in `mesh.dev/opaque-ports` on the
//! Service or Pod are not detected). EndpointSlice conditions decide who gets new requests:
//! ready endpoints; terminating ones that still serve only when none is ready, as kube-proxy
//! does; not-ready ones never. An authority that names no Service answers NOT_FOUND at once.

mod authority;
mod index;
mod service;
mod watch;

pub use self::authority::{BadAuthority, Target, parse as parse_authority};
pub use self::index::{
    DEFAULT_WEIGHT, Index, LookupError, OPAQUE_PORTS_ANNOTATION, PROXY_LABEL, Published,
};
pub(crate) use self::index::{Key, key_of};
pub use self::service::DestinationService;
pub use self::watch::{Synced, Watchers};
