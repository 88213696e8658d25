//! The error of a request for an authority no service has.

use std::sync::Arc;

/// No service is configured for a request's authority.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no service is configured for authority {authority:?} (configured: {known})")]
pub struct NoRouteError {
    authority: String,
    known: Arc<str>,
}

impl NoRouteError {
    pub(super) fn new(authority: &str, known: &Arc<str>) -> Self {
        Self {
            authority: authority.to_owned(),
            known: Arc::clone(known),
        }
    }

    /// The authority the request named (empty if it named none).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}
