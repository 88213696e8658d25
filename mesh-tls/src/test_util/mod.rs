//! Test fixtures of mesh-tls (feature `test-util`): a real SPIRE server and agent.
//!
//! Not for production use: errors are reported, but the helpers favour brevity.

mod spire;

pub use self::spire::{SPIRE_VERSION, Spire, SpireError, SpireOptions};
