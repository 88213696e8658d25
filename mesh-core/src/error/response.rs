//! The one place that turns a mesh error into a response for the caller.

use std::error::Error;
use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::ErrorKind;
use crate::grpc::{self, GrpcCode};

/// The header that marks a response as produced by the mesh rather than by the application,
/// holding the [`ErrorKind`] (`connect`, `unavailable`, `timeout`, `no-route`, `refused` or `other`).
pub const MESH_ERROR: HeaderName = HeaderName::from_static("mesh-error");

/// How much of an error's message goes into a response.
const MAX_MESSAGE: usize = 1024;

/// Turns an error into the response the caller sees.
///
/// | kind | HTTP | gRPC (`grpc` is true) |
/// |---|---|---|
/// | [`ErrorKind::Connect`] | 502 | UNAVAILABLE |
/// | [`ErrorKind::Unavailable`] | 503 | UNAVAILABLE |
/// | [`ErrorKind::Refused`] | 503 | UNAVAILABLE |
/// | [`ErrorKind::Timeout`] | 504 | DEADLINE_EXCEEDED |
/// | [`ErrorKind::NoRoute`] | 404 (400 for an absolute-form HTTP/1 target) | UNIMPLEMENTED |
/// | [`ErrorKind::Other`] | 502 | UNAVAILABLE |
///
/// An HTTP answer carries the error's message (with its sources) as a plain-text body and the
/// kind in the [`MESH_ERROR`] header. A gRPC answer is a trailers-only response: HTTP 200 with
/// `grpc-status` and `grpc-message` in the headers and an empty body, as gRPC clients expect.
/// Pass `grpc = `[`grpc::is_grpc`]`(request.headers())`.
///
/// ```
/// use http_body_util::Full;
/// use mesh_core::error::{UnavailableError, Unavailable, error_response};
///
/// let err = UnavailableError::new(Unavailable::NoReadyEndpoint);
/// let rsp = error_response::<Full<bytes::Bytes>>(&err, false);
/// assert_eq!(rsp.status(), 503);
/// let rsp = error_response::<Full<bytes::Bytes>>(&err, true);
/// assert_eq!(rsp.status(), 200);
/// assert_eq!(rsp.headers()["grpc-status"], "14");
/// ```
pub fn error_response<B: From<Bytes>>(err: &(dyn Error + 'static), grpc: bool) -> Response<B> {
    let kind = ErrorKind::of(err);
    let message = message_with_sources(err);
    if grpc {
        let code = match kind {
            ErrorKind::Timeout => GrpcCode::DEADLINE_EXCEEDED,
            // What gRPC makes of a 404.
            ErrorKind::NoRoute => GrpcCode::UNIMPLEMENTED,
            _ => GrpcCode::UNAVAILABLE,
        };
        return grpc::trailers_only(code, &message);
    }
    let mut rsp = Response::new(B::from(Bytes::new()));
    *rsp.status_mut() = match kind {
        // Refused: the server asked for the request to come again, not that it failed.
        ErrorKind::Unavailable | ErrorKind::Refused => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NoRoute if forward_proxy_request(err) => StatusCode::BAD_REQUEST,
        ErrorKind::NoRoute => StatusCode::NOT_FOUND,
        ErrorKind::Connect | ErrorKind::Other => StatusCode::BAD_GATEWAY,
    };
    let mut body = message;
    body.push('\n');
    let headers = rsp.headers_mut();
    headers.insert(MESH_ERROR, HeaderValue::from_static(kind.as_str()));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *rsp.body_mut() = B::from(Bytes::from(body));
    rsp
}

/// `error: source: source …`, bounded in length.
fn message_with_sources(err: &(dyn Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        if message.len() >= MAX_MESSAGE {
            break;
        }
        let _ = write!(message, ": {source}");
        next = source.source();
    }
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// Whether `err` (or a source) is a missing route for an absolute-form HTTP/1 target.
fn forward_proxy_request(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(no_route) = e.downcast_ref::<crate::route::NoRouteError>() {
            return no_route.is_absolute_form();
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ConnectError, Unavailable, UnavailableError};
    use crate::grpc::{GRPC_MESSAGE, GRPC_STATUS};
    use crate::timeout::TimeoutError;
    use std::net::SocketAddr;
    use std::time::Duration;

    type Body = http_body_util::Full<Bytes>;

    async fn text(rsp: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let bytes = rsp
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn http_errors_map_to_gateway_statuses() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let connect = ConnectError::new(
            addr,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        let rsp = error_response::<Body>(&connect, false);
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()[MESH_ERROR], "connect");
        let body = text(rsp).await;
        assert!(
            body.starts_with("connect to 127.0.0.1:9 failed: "),
            "{body}"
        );

        let none = UnavailableError::new(Unavailable::NoReadyEndpoint);
        assert_eq!(error_response::<Body>(&none, false).status(), 503);
        let shed = UnavailableError::new(Unavailable::LoadShed);
        assert_eq!(error_response::<Body>(&shed, false).status(), 503);
        let timeout = TimeoutError::request(Duration::from_millis(250));
        assert_eq!(error_response::<Body>(&timeout, false).status(), 504);
        let other = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(error_response::<Body>(&other, false).status(), 502);
    }

    #[tokio::test]
    async fn grpc_errors_are_trailers_only_responses() {
        let none = UnavailableError::new(Unavailable::NoReadyEndpoint).with_service("greeter 100%");
        let rsp = error_response::<Body>(&none, true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(rsp.headers()[GRPC_STATUS], "14");
        assert_eq!(
            rsp.headers()[GRPC_MESSAGE],
            "no ready endpoint for greeter 100%25"
        );
        assert_eq!(text(rsp).await, "");

        let timeout = TimeoutError::response_headers(Duration::from_secs(1));
        let rsp = error_response::<Body>(&timeout, true);
        assert_eq!(rsp.headers()[GRPC_STATUS], "4");
    }

    #[test]
    fn long_messages_are_cut() {
        let long = UnavailableError::new(Unavailable::LoadShed).with_service("x".repeat(5000));
        assert_eq!(message_with_sources(&long).len(), MAX_MESSAGE);
    }
}
