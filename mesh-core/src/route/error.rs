//! The error of a request for an authority no service has.

use std::sync::Arc;

/// No service is configured (or discovered) for a request's authority.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no service is configured for authority {authority:?} ({detail})")]
pub struct NoRouteError {
    authority: String,
    detail: Arc<str>,
    absolute_form: bool,
}

impl NoRouteError {
    pub(super) fn new(authority: &str, known: &Arc<str>) -> Self {
        Self {
            authority: authority.to_owned(),
            detail: format!("configured: {known}").into(),
            absolute_form: false,
        }
    }

    /// The request named the authority in an HTTP/1 absolute-form target
    /// (`GET http://host/ HTTP/1.1`), the form a client uses with a forward proxy. The mesh is
    /// not an open forward proxy: such a request for an authority it does not know is a bad
    /// request (400), not a missing route.
    pub fn absolute_form(mut self) -> Self {
        self.absolute_form = true;
        self
    }

    /// Whether the request used an HTTP/1 absolute-form target.
    pub fn is_absolute_form(&self) -> bool {
        self.absolute_form
    }

    /// A discovery source (a control plane) knows no service for `authority`, and said
    /// `reason`.
    pub fn unknown(authority: &str, reason: &str) -> Self {
        Self {
            authority: authority.to_owned(),
            detail: reason.into(),
            absolute_form: false,
        }
    }

    /// The authority the request named (empty if it named none).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}
