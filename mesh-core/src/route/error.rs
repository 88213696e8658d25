//! The error of a request for an authority no service has.

use std::sync::Arc;

/// No service is configured (or discovered) for a request's authority.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no service is configured for authority {authority:?} ({detail})")]
pub struct NoRouteError {
    authority: String,
    detail: Arc<str>,
}

impl NoRouteError {
    pub(super) fn new(authority: &str, known: &Arc<str>) -> Self {
        Self {
            authority: authority.to_owned(),
            detail: format!("configured: {known}").into(),
        }
    }

    /// A discovery source (a control plane) knows no service for `authority`, and said
    /// `reason`.
    pub fn unknown(authority: &str, reason: &str) -> Self {
        Self {
            authority: authority.to_owned(),
            detail: reason.into(),
        }
    }

    /// The authority the request named (empty if it named none).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}
