//! The mesh's default strategy: gRPC rules for gRPC requests, HTTP rules for the rest.

use http::{HeaderMap, Request, Response};

use super::{
    Class, Classify, ClassifyEos, ClassifyResponse, GrpcClassify, GrpcEos, GrpcResponse,
    HttpClassify, HttpEos, HttpResponse,
};
use crate::grpc::is_grpc;

/// Picks the rules per request: a request whose `content-type` is `application/grpc*` is
/// classified by [`GrpcClassify`] (so a 503 from a proxy in between still reads as gRPC
/// `UNAVAILABLE`), anything else by [`HttpClassify`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoClassify {
    grpc: GrpcClassify,
}

impl AutoClassify {
    /// The default strategy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses these rules for gRPC requests.
    pub fn with_grpc(mut self, grpc: GrpcClassify) -> Self {
        self.grpc = grpc;
        self
    }
}

/// [`AutoClassify`]'s per-request classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoResponse {
    /// The request was plain HTTP.
    Http(HttpResponse),
    /// The request was gRPC.
    Grpc(GrpcResponse),
}

/// [`AutoClassify`]'s end-of-stream classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoEos {
    /// The request was plain HTTP.
    Http(HttpEos),
    /// The request was gRPC.
    Grpc(GrpcEos),
}

impl Classify for AutoClassify {
    type Response = AutoResponse;

    fn classify_request<B>(&self, req: &Request<B>) -> AutoResponse {
        if is_grpc(req.headers()) {
            AutoResponse::Grpc(self.grpc.classify_request(req))
        } else {
            AutoResponse::Http(HttpClassify.classify_request(req))
        }
    }
}

impl ClassifyResponse for AutoResponse {
    type Eos = AutoEos;

    fn classify_response<B>(self, rsp: &Response<B>) -> AutoEos {
        match self {
            Self::Http(c) => AutoEos::Http(c.classify_response(rsp)),
            Self::Grpc(c) => AutoEos::Grpc(c.classify_response(rsp)),
        }
    }
}

impl ClassifyEos for AutoEos {
    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Class {
        match self {
            Self::Http(c) => c.classify_eos(trailers),
            Self::Grpc(c) => c.classify_eos(trailers),
        }
    }

    fn classify_cancelled(self) -> Class {
        match self {
            Self::Http(c) => c.classify_cancelled(),
            Self::Grpc(c) => c.classify_cancelled(),
        }
    }

    fn classify_head(&self) -> Option<Class> {
        match self {
            Self::Http(c) => c.classify_head(),
            Self::Grpc(c) => c.classify_head(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::FailureReason;
    use crate::grpc::GrpcCode;

    #[test]
    fn grpc_requests_get_grpc_rules() {
        let grpc_req = Request::builder()
            .header("content-type", "application/grpc+proto")
            .body(())
            .expect("valid");
        let plain_req = Request::new(());
        let rsp_503 = Response::builder().status(503).body(()).expect("valid");

        let c = AutoClassify::new();
        let grpc = c.classify_request(&grpc_req).classify_response(&rsp_503);
        assert_eq!(
            grpc.classify_eos(None),
            Class::Failure(FailureReason::Grpc(GrpcCode::UNAVAILABLE))
        );
        let http = c.classify_request(&plain_req).classify_response(&rsp_503);
        assert_eq!(
            http.classify_eos(None),
            Class::Failure(FailureReason::Status(http::StatusCode::SERVICE_UNAVAILABLE))
        );
    }
}
