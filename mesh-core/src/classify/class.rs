//! The outcome of one request.

use std::fmt;

use http::StatusCode;

use crate::error::ErrorKind;
use crate::grpc::GrpcCode;

/// The outcome of one request, decided once and shared by metrics, failure accrual and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The request succeeded.
    Success,
    /// The request failed, for this reason.
    Failure(FailureReason),
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// An HTTP status that counts as failure (5xx by default).
    Status(StatusCode),
    /// A gRPC status that counts as failure: from `grpc-status` in the headers of a
    /// trailers-only response or in the trailers, from a non-200 HTTP status (by the gRPC
    /// specification's mapping), or `INTERNAL` when the stream ended without a readable status.
    Grpc(GrpcCode),
    /// No response, or the response body failed: a connect error, a timeout, a reset.
    Error(ErrorKind),
    /// The response body was dropped before its end. This usually reflects the caller giving
    /// up rather than the endpoint failing; failure accrual may choose to ignore it.
    Cancelled,
}

impl Class {
    /// The class of an error returned instead of a response, or by a response body: a failure
    /// of the error's [`ErrorKind`]. Errors have no rules to apply (HTTP and gRPC alike), so
    /// every layer that sees one reaches the same class without a classifier.
    pub fn of_error(err: &(dyn std::error::Error + 'static)) -> Self {
        Self::Failure(FailureReason::Error(ErrorKind::of(err)))
    }

    /// Whether the request succeeded.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Success)
    }

    /// Whether the request failed.
    pub fn is_failure(self) -> bool {
        !self.is_success()
    }

    /// The failure reason, or `None` on success.
    pub fn failure(self) -> Option<FailureReason> {
        match self {
            Self::Success => None,
            Self::Failure(reason) => Some(reason),
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("success"),
            Self::Failure(reason) => write!(f, "failure ({reason})"),
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "HTTP {}", status.as_u16()),
            Self::Grpc(code) => write!(f, "gRPC {code}"),
            Self::Error(kind) => write!(f, "{kind} error"),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}
