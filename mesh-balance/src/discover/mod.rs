//! Sources of endpoint sets, as streams of `tower::discover::Change<SocketAddr, Endpoint>`.

mod fixed;

pub use self::fixed::{Fixed, fixed};
