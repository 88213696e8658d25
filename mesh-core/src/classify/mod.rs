//! Response classification: deciding, once per request, whether it succeeded.
//!
//! A strategy ([`Classify`]) looks at the request to pick the rules (HTTP or gRPC), then at the
//! response head, and, because a gRPC status may only arrive in the trailers, finally at the end
//! of the response body. [`ClassifiedBody`] wraps a response body and makes that last decision
//! exactly once: at the end of the stream, on a body error, or when the body is dropped early
//! ([`FailureReason::Cancelled`]). It hands the [`Class`] to an [`OnClass`] callback; a tuple of
//! callbacks shares the one decision between several parties (metrics, failure accrual,
//! retries), and a [`ClassHandle`] publishes it for anyone holding a clone.
//!
//! Strategies provided: [`HttpClassify`] (5xx and errors fail), [`GrpcClassify`] (by
//! `grpc-status`), and [`AutoClassify`], which applies the gRPC rules to gRPC requests and the
//! HTTP rules to the rest; the mesh's default.

mod auto;
mod body;
mod class;
mod grpc;
mod handle;
mod http;
mod layer;

use std::error::Error;

use ::http::{HeaderMap, Request, Response};

pub use self::auto::{AutoClassify, AutoEos, AutoResponse};
pub use self::body::{ClassifiedBody, OnClass};
pub use self::class::{Class, FailureReason};
pub use self::grpc::{GrpcClassify, GrpcEos, GrpcResponse};
pub use self::handle::ClassHandle;
pub use self::http::{HttpClassify, HttpEos, HttpResponse};
pub use self::layer::{ClassifyLayer, ClassifyService, NewOnClass, PublishClass, ResponseFuture};

/// A classification strategy: given a request, picks the rules for its response.
pub trait Classify {
    /// The per-request classifier.
    type Response: ClassifyResponse;

    /// Starts classifying the response to `req`.
    fn classify_request<B>(&self, req: &Request<B>) -> Self::Response;
}

/// Classifies the response to one request, or the error returned instead of one.
pub trait ClassifyResponse {
    /// Finishes the classification at the end of the response body.
    type Eos: ClassifyEos;

    /// Looks at the response head; the decision is completed by the returned [`ClassifyEos`].
    fn classify_response<B>(self, rsp: &Response<B>) -> Self::Eos;

    /// Classifies an error returned instead of a response.
    fn classify_error(self, err: &(dyn Error + 'static)) -> Class;
}

/// Completes a classification when the response body ends.
pub trait ClassifyEos {
    /// The body ended, with these trailers if it had any.
    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Class;

    /// The body failed with `err`.
    fn classify_error(self, err: &(dyn Error + 'static)) -> Class;

    /// The body was dropped before its end.
    fn classify_cancelled(self) -> Class;

    /// The class as far as the response head decides it, or `None` when only the end of the
    /// stream can tell (a gRPC status that will come in the trailers). Retries decide from this,
    /// since they cannot wait for a body that is already streaming to the caller. By default,
    /// `None`.
    fn classify_head(&self) -> Option<Class> {
        None
    }
}

impl<C: Classify> Classify for &C {
    type Response = C::Response;

    fn classify_request<B>(&self, req: &Request<B>) -> Self::Response {
        (**self).classify_request(req)
    }
}
