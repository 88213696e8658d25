//! The parts of the gRPC wire protocol the mesh needs: status codes, their header, how a
//! non-gRPC HTTP status maps to a gRPC code, and how a request is recognised as gRPC.

use std::fmt;

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

/// The `grpc-status` header or trailer.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header or trailer.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A gRPC status code, as carried in `grpc-status`.
///
/// Codes the gRPC specification does not define are kept as they were received (their name
/// prints as `CODE_<n>`), so that nothing is lost between the peer and the metrics.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrpcCode(u16);

macro_rules! grpc_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl GrpcCode {
            $($(#[$doc])* pub const $name: GrpcCode = GrpcCode($value);)*

            /// The code's name as the gRPC specification writes it, e.g. `UNAVAILABLE`.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

grpc_codes! {
    /// Not an error.
    OK = 0,
    /// The operation was cancelled, typically by the caller.
    CANCELLED = 1,
    /// Unknown error.
    UNKNOWN = 2,
    /// The client specified an invalid argument.
    INVALID_ARGUMENT = 3,
    /// The deadline expired before the operation could complete.
    DEADLINE_EXCEEDED = 4,
    /// Some requested entity was not found.
    NOT_FOUND = 5,
    /// The entity a client attempted to create already exists.
    ALREADY_EXISTS = 6,
    /// The caller does not have permission to execute the operation.
    PERMISSION_DENIED = 7,
    /// Some resource has been exhausted.
    RESOURCE_EXHAUSTED = 8,
    /// The system is not in a state required for the operation.
    FAILED_PRECONDITION = 9,
    /// The operation was aborted.
    ABORTED = 10,
    /// The operation was attempted past the valid range.
    OUT_OF_RANGE = 11,
    /// The operation is not implemented or supported.
    UNIMPLEMENTED = 12,
    /// An internal invariant was broken.
    INTERNAL = 13,
    /// The service is currently unavailable; a retry may succeed.
    UNAVAILABLE = 14,
    /// Unrecoverable data loss or corruption.
    DATA_LOSS = 15,
    /// The request lacks valid authentication credentials.
    UNAUTHENTICATED = 16,
}

impl GrpcCode {
    /// A code from its number.
    pub const fn from_u16(code: u16) -> Self {
        Self(code)
    }

    /// The code's number.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Parses the value of a `grpc-status` header or trailer: one or more ASCII digits.
    pub fn from_header(value: &HeaderValue) -> Result<Self, InvalidGrpcStatus> {
        let bytes = value.as_bytes();
        let invalid = || InvalidGrpcStatus::new(bytes);
        if bytes.is_empty() || bytes.len() > 5 {
            return Err(invalid());
        }
        let mut code: u32 = 0;
        for &b in bytes {
            if !b.is_ascii_digit() {
                return Err(invalid());
            }
            code = code * 10 + u32::from(b - b'0');
        }
        u16::try_from(code).map(Self).map_err(|_| invalid())
    }

    /// Reads `grpc-status` from headers or trailers: `None` when absent, an error when present
    /// but not a number.
    pub fn from_headers(headers: &HeaderMap) -> Option<Result<Self, InvalidGrpcStatus>> {
        headers.get(GRPC_STATUS).map(Self::from_header)
    }

    /// The code a gRPC client derives from an HTTP response that carries no `grpc-status`, per
    /// the gRPC specification's "HTTP to gRPC status code mapping".
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::INTERNAL,
            401 => Self::UNAUTHENTICATED,
            403 => Self::PERMISSION_DENIED,
            404 => Self::UNIMPLEMENTED,
            429 | 502 | 503 | 504 => Self::UNAVAILABLE,
            _ => Self::UNKNOWN,
        }
    }

    /// The header value for this code.
    pub fn to_header_value(self) -> HeaderValue {
        HeaderValue::from(self.0)
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "CODE_{}", self.0),
        }
    }
}

impl fmt::Debug for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrpcCode({}={})", self.0, self)
    }
}

/// A `grpc-status` value that is not a number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid grpc-status {value:?}: expected a decimal number from 0 to 65535")]
pub struct InvalidGrpcStatus {
    value: String,
}

impl InvalidGrpcStatus {
    fn new(raw: &[u8]) -> Self {
        // Keep the message bounded whatever the peer sent.
        let shown = &raw[..raw.len().min(64)];
        Self {
            value: String::from_utf8_lossy(shown).into_owned(),
        }
    }

    /// The offending value (lossily decoded, truncated to 64 bytes).
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A set of gRPC codes, e.g. the codes a classifier counts as success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcCodeSet {
    // Bit n stands for code n; the specification defines codes 0 to 16.
    bits: u32,
}

impl GrpcCodeSet {
    /// The empty set.
    pub const EMPTY: Self = Self { bits: 0 };

    /// The set holding only `OK`.
    pub const OK: Self = Self { bits: 1 };

    /// The set with `code` added. Codes above 31 cannot be members.
    pub const fn with(self, code: GrpcCode) -> Self {
        if code.0 < 32 {
            Self {
                bits: self.bits | (1 << code.0),
            }
        } else {
            self
        }
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: GrpcCode) -> bool {
        code.0 < 32 && self.bits & (1 << code.0) != 0
    }
}

impl Default for GrpcCodeSet {
    fn default() -> Self {
        Self::OK
    }
}

impl FromIterator<GrpcCode> for GrpcCodeSet {
    fn from_iter<I: IntoIterator<Item = GrpcCode>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

/// Whether headers announce gRPC: a `content-type` of `application/grpc`, optionally followed by
/// `+format` or `;parameters`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let bytes = value.as_bytes();
    const GRPC: &[u8] = b"application/grpc";
    bytes.len() >= GRPC.len()
        && bytes[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(bytes.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// A trailers-only gRPC response: HTTP 200, `content-type: application/grpc`, `grpc-status`
/// and `grpc-message` (encoded, at most 1 KiB of `message`) in the headers, and an empty body.
/// The way a gRPC server reports an error before sending any message.
pub fn trailers_only<B: From<bytes::Bytes>>(code: GrpcCode, message: &str) -> http::Response<B> {
    let mut rsp = http::Response::new(B::from(bytes::Bytes::new()));
    let headers = rsp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, code.to_header_value());
    headers.insert(GRPC_MESSAGE, encode_message(message, 1024));
    rsp
}

/// Encodes a text for `grpc-message`: the gRPC specification percent-encodes every byte outside
/// printable ASCII, and `%` itself. The result is cut at `max_len` bytes of input.
pub fn encode_message(message: &str, max_len: usize) -> HeaderValue {
    let mut end = message.len().min(max_len);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end);
    for &b in &message.as_bytes()[..end] {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    // Only printable ASCII is left, which is always a valid header value.
    HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numeric_status_and_rejects_garbage() {
        let ok = |s: &'static str| GrpcCode::from_header(&HeaderValue::from_static(s));
        assert_eq!(ok("0"), Ok(GrpcCode::OK));
        assert_eq!(ok("14"), Ok(GrpcCode::UNAVAILABLE));
        assert_eq!(ok("65535"), Ok(GrpcCode::from_u16(65535)));
        for bad in ["", "abc", "-1", " 1", "1 ", "65536", "999999", "0x1", "1.0"] {
            let err = ok(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid grpc-status"), "{err}");
        }
    }

    #[test]
    fn http_statuses_map_per_the_grpc_spec() {
        let map = |s: u16| GrpcCode::from_http_status(StatusCode::from_u16(s).expect("valid"));
        assert_eq!(map(400), GrpcCode::INTERNAL);
        assert_eq!(map(401), GrpcCode::UNAUTHENTICATED);
        assert_eq!(map(403), GrpcCode::PERMISSION_DENIED);
        assert_eq!(map(404), GrpcCode::UNIMPLEMENTED);
        for s in [429, 502, 503, 504] {
            assert_eq!(map(s), GrpcCode::UNAVAILABLE);
        }
        assert_eq!(map(500), GrpcCode::UNKNOWN);
        assert_eq!(map(302), GrpcCode::UNKNOWN);
    }

    #[test]
    fn names_and_unknown_codes_display() {
        assert_eq!(GrpcCode::DEADLINE_EXCEEDED.to_string(), "DEADLINE_EXCEEDED");
        assert_eq!(GrpcCode::from_u16(99).to_string(), "CODE_99");
    }

    #[test]
    fn recognises_grpc_content_types() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("application/grpc;charset=utf-8"));
        assert!(with("Application/GRPC"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn messages_are_percent_encoded_and_bounded() {
        assert_eq!(encode_message("no 100% ok\n", 100), "no 100%25 ok%0A");
        assert_eq!(encode_message("é", 100), "%C3%A9");
        assert_eq!(encode_message("ééé", 3), "%C3%A9");
    }

    #[test]
    fn code_sets_hold_what_was_added() {
        let set: GrpcCodeSet = [GrpcCode::OK, GrpcCode::NOT_FOUND].into_iter().collect();
        assert!(set.contains(GrpcCode::NOT_FOUND));
        assert!(!set.contains(GrpcCode::UNAVAILABLE));
        assert!(
            !set.with(GrpcCode::from_u16(40))
                .contains(GrpcCode::from_u16(40))
        );
    }
}
