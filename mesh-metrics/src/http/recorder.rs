//! The listener that records one request's golden metrics, from the request's one
//! classification.

use std::sync::Arc;

use http::{HeaderMap, Response};
use mesh_core::Class;
use mesh_core::classify::OnClass;
use mesh_core::grpc::GrpcCode;
use tokio::time::Instant;

use super::series::HttpStripe;
use crate::tap::TapRequest;

/// Records one request: its status and time to the response headers when they arrive, its
/// outcome and time to the end when the class is decided, and its tap event if tapped.
pub struct Recorder {
    stripe: Arc<HttpStripe>,
    start: Instant,
    tap: Option<TapRequest>,
    /// Whether a `grpc-status` was counted (from a trailers-only head): trailers after one are
    /// not counted again.
    grpc_counted: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("start", &self.start)
            .field("tap", &self.tap)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    pub(crate) fn new(stripe: Arc<HttpStripe>, start: Instant, tap: Option<TapRequest>) -> Self {
        Self {
            stripe,
            start,
            tap,
            grpc_counted: false,
        }
    }
}

impl OnClass for Recorder {
    fn on_class(self, class: Class) {
        let latency = self.start.elapsed();
        self.stripe.on_end(class, latency);
        if let Some(tap) = self.tap {
            tap.finish(class, latency);
        }
    }

    fn on_response<T>(&mut self, rsp: &mut Response<T>) {
        let latency = self.start.elapsed();
        self.stripe.on_response(rsp.status(), latency);
        if let Some(Ok(code)) = GrpcCode::from_headers(rsp.headers()) {
            self.stripe.on_grpc(code);
            self.grpc_counted = true;
        }
        if let Some(tap) = self.tap.as_mut() {
            tap.on_response(rsp, latency);
        }
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if !self.grpc_counted {
            if let Some(Ok(code)) = GrpcCode::from_headers(trailers) {
                self.stripe.on_grpc(code);
                self.grpc_counted = true;
            }
        }
        if let Some(tap) = self.tap.as_mut() {
            tap.on_trailers(trailers);
        }
    }
}
