//! An endpoint: one instance of a service that requests can be sent to.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::Identity;

/// One instance of a service, as discovery reports it: where it is, who it must prove to be
/// (for mTLS), how much traffic it should take relative to the others, and free-form labels.
/// Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The identity its certificate must carry, when meshed.
    pub identity: Option<Identity>,
    /// Its share of traffic relative to the others when their loads are equal (default 1;
    /// 0 keeps it out of rotation, as for a canary not yet enabled).
    pub weight: u32,
    /// Labels (zone, version, canary...), as `key=value` pairs.
    pub labels: Arc<[(String, String)]>,
}

impl Endpoint {
    /// An endpoint at `addr` with weight 1, no identity and no labels.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
            weight: 1,
            labels: Arc::new([]),
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the expected identity.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Sets the labels.
    pub fn with_labels(mut self, labels: impl IntoIterator<Item = (String, String)>) -> Self {
        self.labels = labels.into_iter().collect();
        self
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}
