//! gRPC classification: by `grpc-status`, wherever it arrives.

use http::{HeaderMap, Request, Response, StatusCode};

use super::{Class, Classify, ClassifyEos, ClassifyResponse, FailureReason};
use crate::grpc::{GrpcCode, GrpcCodeSet};

/// Classifies gRPC by its status.
///
/// - `grpc-status` in the response headers (a trailers-only response) decides at once.
/// - A response whose HTTP status is not 200 and carries no `grpc-status` gets the code the
///   gRPC specification maps it to: a 503 is `UNAVAILABLE`, a failure (tower-http counts it as a
///   success; we do not).
/// - Otherwise the status comes from the trailers at the end of the body. A stream that ends
///   without a `grpc-status`, or with one that is not a number, is an `INTERNAL` failure.
///
/// Codes in the success set (by default only `OK`) are successes; every other code fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcClassify {
    success: GrpcCodeSet,
}

impl GrpcClassify {
    /// A classifier that counts only `OK` as success.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts these codes as success, e.g. `OK` and `NOT_FOUND` for a lookup service.
    pub fn with_success_codes(mut self, codes: GrpcCodeSet) -> Self {
        self.success = codes;
        self
    }

    fn class_of(self, code: GrpcCode) -> Class {
        if self.success.contains(code) {
            Class::Success
        } else {
            Class::Failure(FailureReason::Grpc(code))
        }
    }

    /// The class for a status header that may be missing or malformed.
    fn class_of_header(self, headers: Option<&HeaderMap>) -> Option<Class> {
        match GrpcCode::from_headers(headers?)? {
            Ok(code) => Some(self.class_of(code)),
            Err(_) => Some(Class::Failure(FailureReason::Grpc(GrpcCode::INTERNAL))),
        }
    }
}

/// [`GrpcClassify`]'s per-request classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcResponse {
    rules: GrpcClassify,
}

/// [`GrpcClassify`]'s end-of-stream classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcEos {
    /// The response head already decided (trailers-only, or a non-200 status).
    Decided(Class),
    /// The status will come in the trailers.
    AwaitingTrailers(GrpcClassify),
}

impl Classify for GrpcClassify {
    type Response = GrpcResponse;

    fn classify_request<B>(&self, _: &Request<B>) -> GrpcResponse {
        GrpcResponse { rules: *self }
    }
}

impl ClassifyResponse for GrpcResponse {
    type Eos = GrpcEos;

    fn classify_response<B>(self, rsp: &Response<B>) -> GrpcEos {
        if let Some(class) = self.rules.class_of_header(Some(rsp.headers())) {
            return GrpcEos::Decided(class);
        }
        if rsp.status() != StatusCode::OK {
            let code = GrpcCode::from_http_status(rsp.status());
            return GrpcEos::Decided(self.rules.class_of(code));
        }
        GrpcEos::AwaitingTrailers(self.rules)
    }
}

impl ClassifyEos for GrpcEos {
    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Class {
        match self {
            Self::Decided(class) => class,
            Self::AwaitingTrailers(rules) => rules
                .class_of_header(trailers)
                .unwrap_or(Class::Failure(FailureReason::Grpc(GrpcCode::INTERNAL))),
        }
    }

    fn classify_cancelled(self) -> Class {
        match self {
            Self::Decided(class) => class,
            Self::AwaitingTrailers(_) => Class::Failure(FailureReason::Cancelled),
        }
    }

    fn classify_head(&self) -> Option<Class> {
        match self {
            Self::Decided(class) => Some(*class),
            Self::AwaitingTrailers(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn response(status: u16, grpc_status: Option<&'static str>) -> Response<()> {
        let mut rsp = Response::builder().status(status).body(()).expect("valid");
        if let Some(s) = grpc_status {
            rsp.headers_mut()
                .insert("grpc-status", HeaderValue::from_static(s));
        }
        rsp
    }

    fn trailers(grpc_status: &'static str) -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static(grpc_status));
        t
    }

    fn start(rsp: &Response<()>) -> GrpcEos {
        GrpcClassify::new()
            .classify_request(&Request::new(()))
            .classify_response(rsp)
    }

    const fn grpc_failure(code: GrpcCode) -> Class {
        Class::Failure(FailureReason::Grpc(code))
    }

    #[test]
    fn status_in_trailers_decides() {
        let eos = start(&response(200, None));
        assert_eq!(eos.classify_eos(Some(&trailers("0"))), Class::Success);
        assert_eq!(
            eos.classify_eos(Some(&trailers("14"))),
            grpc_failure(GrpcCode::UNAVAILABLE)
        );
        assert_eq!(
            eos.classify_cancelled(),
            Class::Failure(FailureReason::Cancelled)
        );
    }

    #[test]
    fn trailers_only_responses_decide_from_headers() {
        let eos = start(&response(200, Some("7")));
        assert_eq!(
            eos,
            GrpcEos::Decided(grpc_failure(GrpcCode::PERMISSION_DENIED))
        );
        assert_eq!(
            eos.classify_eos(None),
            grpc_failure(GrpcCode::PERMISSION_DENIED)
        );
        assert_eq!(
            start(&response(200, Some("0"))).classify_eos(None),
            Class::Success
        );
    }

    #[test]
    fn non_200_without_status_maps_per_spec() {
        let eos = start(&response(503, None));
        assert_eq!(eos.classify_eos(None), grpc_failure(GrpcCode::UNAVAILABLE));
        assert_eq!(
            eos.classify_cancelled(),
            grpc_failure(GrpcCode::UNAVAILABLE)
        );
        assert_eq!(
            start(&response(404, None)).classify_eos(None),
            grpc_failure(GrpcCode::UNIMPLEMENTED)
        );
    }

    #[test]
    fn missing_or_garbage_status_is_internal() {
        let eos = start(&response(200, None));
        assert_eq!(eos.classify_eos(None), grpc_failure(GrpcCode::INTERNAL));
        assert_eq!(
            eos.classify_eos(Some(&HeaderMap::new())),
            grpc_failure(GrpcCode::INTERNAL)
        );
        assert_eq!(
            eos.classify_eos(Some(&trailers("ok"))),
            grpc_failure(GrpcCode::INTERNAL)
        );
        assert_eq!(
            start(&response(200, Some("x1"))).classify_eos(None),
            grpc_failure(GrpcCode::INTERNAL)
        );
    }

    #[test]
    fn success_codes_are_configurable() {
        let rules =
            GrpcClassify::new().with_success_codes(GrpcCodeSet::OK.with(GrpcCode::NOT_FOUND));
        let eos = rules
            .classify_request(&Request::new(()))
            .classify_response(&response(200, None));
        assert_eq!(eos.classify_eos(Some(&trailers("5"))), Class::Success);
    }
}
