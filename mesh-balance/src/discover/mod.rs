//! Sources of endpoint sets, as streams of `tower::discover::Change<SocketAddr, Endpoint>`:
//! [`fixed`] (a static list), [`file::watch`] (a file re-read when it changes), [`dns`]
//! (A/AAAA or SRV names re-resolved on their TTL), [`channel`] (changes pushed by hand), and,
//! with feature `destination`, `destination::watch` (the control plane's destination API).

#[cfg(feature = "destination")]
pub mod destination;
pub mod dns;
pub mod file;
mod fixed;
mod updates;

pub use self::fixed::{Fixed, fixed};
pub use self::updates::{EndpointChange, UpdateSender, Updates, channel};
