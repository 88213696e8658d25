//! The endpoints one request has been sent to, so that a retry can go elsewhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// A request extension the [`Retry`](super::Retry) layer puts on every try of a request it may
/// retry; the tries share it. A balancer records the endpoint it sends each try to, and prefers
/// an endpoint not yet tried for the next, when another is ready: a retry only happens because
/// a try failed, and a second draw with no memory may well land on the same failing replica.
///
/// One small allocation per retryable request; its lock is the request's own (never
/// contended: the tries of one request run one after another).
///
/// ```
/// use mesh_core::retry::TriedEndpoints;
///
/// let tried = TriedEndpoints::default();
/// let addr = "10.0.0.1:80".parse().unwrap();
/// assert!(!tried.contains(addr));
/// tried.clone().record(addr);
/// assert!(tried.contains(addr));
/// ```
#[derive(Clone, Debug, Default)]
pub struct TriedEndpoints(Arc<Mutex<Vec<SocketAddr>>>);

impl TriedEndpoints {
    /// A try of the request went to `addr`.
    pub fn record(&self, addr: SocketAddr) {
        let mut tried = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !tried.contains(&addr) {
            tried.push(addr);
        }
    }

    /// Whether a try of the request went to `addr`.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&addr)
    }

    /// Whether no try has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}
