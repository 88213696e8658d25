//! The typed error of [`TimeoutLayer`](super::TimeoutLayer).

use std::fmt;
use std::time::Duration;

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// The response headers did not arrive in time.
    ResponseHeaders,
    /// The whole exchange, response body included, did not finish in time.
    Request,
}

/// A deadline passed: which one, and how long it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TimeoutError {
    kind: TimeoutKind,
    after: Duration,
}

impl TimeoutError {
    /// The response headers did not arrive within `after`.
    pub fn response_headers(after: Duration) -> Self {
        Self {
            kind: TimeoutKind::ResponseHeaders,
            after,
        }
    }

    /// The request did not complete within `after`.
    pub fn request(after: Duration) -> Self {
        Self {
            kind: TimeoutKind::Request,
            after,
        }
    }

    /// Which deadline passed.
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }

    /// The length of the deadline that passed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TimeoutKind::ResponseHeaders => {
                write!(f, "response headers not received within {:?}", self.after)
            }
            TimeoutKind::Request => write!(f, "request not completed within {:?}", self.after),
        }
    }
}
