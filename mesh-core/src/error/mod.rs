//! The mesh's error vocabulary: the typed errors that layers return, what kind of failure each
//! is, and (in [`error_response`]) the one place that turns them into responses.

mod body;
mod future;
mod layer;
mod response;

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;

pub use self::body::ErrorResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::{ErrorResponse, ErrorResponseLayer};
pub use self::response::{MESH_ERROR, error_response};
use crate::timeout::TimeoutError;

/// A boxed error, the error type at service boundaries.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What kind of failure an error is: the part of an error that decides how the mesh answers
/// and whether a retry may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No connection could be made to the endpoint (HTTP 502, gRPC UNAVAILABLE).
    Connect,
    /// No endpoint could take the request: none ready, or load was shed (HTTP 503, gRPC
    /// UNAVAILABLE).
    Unavailable,
    /// A deadline passed (HTTP 504, gRPC DEADLINE_EXCEEDED).
    Timeout,
    /// No service is configured for the request's authority (HTTP 404, gRPC UNIMPLEMENTED).
    NoRoute,
    /// The server refused the request before processing any of it (an HTTP/2 stream reset
    /// with `REFUSED_STREAM`, or above a `GOAWAY`'s last stream): safe to send again whatever
    /// its method (HTTP 503, gRPC UNAVAILABLE).
    Refused,
    /// Anything else, such as a connection reset mid-request (HTTP 502, gRPC UNAVAILABLE).
    Other,
}

impl ErrorKind {
    /// Classifies an error by walking its chain of sources for a known error type.
    ///
    /// Recognised: this crate's [`ConnectError`], [`UnavailableError`], [`RefusedError`] and
    /// [`TimeoutError`];
    /// tower's `Elapsed` (timeout) and `Overloaded` (load shed); and `std::io::Error`s of kind
    /// `ConnectionRefused` (connect) and `TimedOut` (timeout). The first match from the outside
    /// in wins.
    pub fn of(err: &(dyn Error + 'static)) -> Self {
        let mut next = Some(err);
        while let Some(err) = next {
            if let Some(kind) = Self::of_one(err) {
                return kind;
            }
            next = err.source();
        }
        Self::Other
    }

    fn of_one(err: &(dyn Error + 'static)) -> Option<Self> {
        if err.is::<TimeoutError>() || err.is::<tower::timeout::error::Elapsed>() {
            return Some(Self::Timeout);
        }
        if err.is::<ConnectError>() {
            return Some(Self::Connect);
        }
        if err.is::<crate::route::NoRouteError>() {
            return Some(Self::NoRoute);
        }
        if err.is::<RefusedError>() {
            return Some(Self::Refused);
        }
        if err.is::<UnavailableError>() || err.is::<tower::load_shed::error::Overloaded>() {
            return Some(Self::Unavailable);
        }
        match err.downcast_ref::<io::Error>()?.kind() {
            io::ErrorKind::ConnectionRefused => Some(Self::Connect),
            io::ErrorKind::TimedOut => Some(Self::Timeout),
            _ => None,
        }
    }

    /// A short lower-case name (`connect`, `unavailable`, `timeout`, `no-route`, `refused`,
    /// `other`), e.g. for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::NoRoute => "no-route",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection to an endpoint could not be made.
#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} failed")]
pub struct ConnectError {
    addr: SocketAddr,
    #[source]
    source: BoxError,
}

impl ConnectError {
    /// A failed connection to `addr`, with the underlying cause.
    pub fn new(addr: SocketAddr, source: impl Into<BoxError>) -> Self {
        Self {
            addr,
            source: source.into(),
        }
    }

    /// The address that could not be reached.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The server refused a request before processing any of it, as HTTP/2 lets a server say
/// (RFC 9113 §8.7): it reset the stream with `REFUSED_STREAM`, or sent `GOAWAY` with a last
/// stream below it. Nothing of the request took effect, so it may be sent again, on another
/// connection, whatever its method.
#[derive(Debug, thiserror::Error)]
#[error("the server refused the request unprocessed")]
pub struct RefusedError {
    #[source]
    source: BoxError,
}

impl RefusedError {
    /// A refusal, with the protocol error that said so.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// Why no endpoint could take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unavailable {
    /// No endpoint became ready within the wait bound.
    NoReadyEndpoint,
    /// The request was shed because the service was at capacity.
    LoadShed,
}

/// No endpoint could take the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UnavailableError {
    reason: Unavailable,
    service: Option<String>,
}

impl UnavailableError {
    /// An error for `reason`.
    pub fn new(reason: Unavailable) -> Self {
        Self {
            reason,
            service: None,
        }
    }

    /// Names the service that was unavailable, for the message.
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Why no endpoint could take the request.
    pub fn reason(&self) -> Unavailable {
        self.reason
    }

    fn describe(&self) -> String {
        let what = match self.reason {
            Unavailable::NoReadyEndpoint => "no ready endpoint",
            Unavailable::LoadShed => "load shed",
        };
        match &self.service {
            Some(service) => format!("{what} for {service}"),
            None => what.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, thiserror::Error)]
    #[error("request to upstream failed")]
    struct Wrapper(#[source] BoxError);

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    #[test]
    fn kinds_are_found_through_the_source_chain() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let wrapped = Wrapper(Box::new(ConnectError::new(addr(), refused)));
        assert_eq!(ErrorKind::of(&wrapped), ErrorKind::Connect);

        let timeout = Wrapper(Box::new(TimeoutError::response_headers(
            Duration::from_secs(1),
        )));
        assert_eq!(ErrorKind::of(&timeout), ErrorKind::Timeout);

        let shed = Wrapper(Box::new(UnavailableError::new(Unavailable::LoadShed)));
        assert_eq!(ErrorKind::of(&shed), ErrorKind::Unavailable);
        let overloaded = Wrapper(Box::new(tower::load_shed::error::Overloaded::new()));
        assert_eq!(ErrorKind::of(&overloaded), ErrorKind::Unavailable);

        let refused = Wrapper(Box::new(RefusedError::new("stream refused")));
        assert_eq!(ErrorKind::of(&refused), ErrorKind::Refused);
        assert_eq!(ErrorKind::Refused.as_str(), "refused");

        let io_timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(ErrorKind::of(&io_timeout), ErrorKind::Timeout);
        let reset = Wrapper(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)));
        assert_eq!(ErrorKind::of(&reset), ErrorKind::Other);
    }

    #[test]
    fn messages_name_what_failed() {
        let err = ConnectError::new(addr(), "refused");
        assert_eq!(err.to_string(), "connect to 127.0.0.1:8080 failed");
        assert_eq!(err.addr(), addr());
        let err = UnavailableError::new(Unavailable::NoReadyEndpoint).with_service("web.ns:80");
        assert_eq!(err.to_string(), "no ready endpoint for web.ns:80");
        assert_eq!(err.reason(), Unavailable::NoReadyEndpoint);
    }
}
