//! Response classification: deciding, once per request, whether it succeeded.
//!
//! A strategy ([`Classify`]) looks at the request to pick the rules (HTTP or gRPC), then at the
//! response head, and, because a gRPC status may only arrive in the trailers, finally at the end
//! of the response body. [`ClassifiedBody`] wraps a response body and makes that last decision
//! exactly once: at the end of the stream, on a body error, or when the body is dropped early
//! ([`FailureReason::Cancelled`]). It hands the [`Class`] to an [`OnClass`] listener.
//!
//! # One classification, many listeners
//!
//! The layer closest to the endpoint that needs an outcome classifies: the balancer (for each
//! try it sends), or a [`ClassifyLayer`] where there is none. Every layer further out *joins*
//! that classification instead of making its own: the response body it receives is
//! [`Classified`], and it adds its listener to the body ([`Classified::join`], a move into a
//! tuple of listeners: no allocation), or reads the class the head decided
//! ([`Classified::head_class`], which is what retries decide by). [`JoinClassLayer`] does this
//! for any [`NewOnClass`]; metrics are built on it. So the strategy runs once per response
//! however many layers learn the outcome.
//!
//! An error returned instead of a response has no rules to apply: its class is
//! [`Class::of_error`], which every layer that sees the error computes alike.
//!
//! Strategies provided: [`HttpClassify`] (5xx and errors fail), [`GrpcClassify`] (by
//! `grpc-status`), and [`AutoClassify`], which applies the gRPC rules to gRPC requests and the
//! HTTP rules to the rest; the mesh's default. A [`ClassHandle`] publishes a class to anyone
//! holding a clone, at the cost of one allocation.

mod auto;
mod body;
mod class;
mod future;
mod grpc;
mod handle;
mod http;
mod join;
mod layer;

use std::error::Error;

use ::http::{HeaderMap, Request, Response};

pub use self::auto::{AutoClassify, AutoEos, AutoResponse};
pub use self::body::{ClassifiedBody, OnClass};
pub use self::class::{Class, FailureReason};
pub use self::future::{Attach, Classifies, Joins, ResponseFuture};
pub use self::grpc::{GrpcClassify, GrpcEos, GrpcResponse};
pub use self::handle::ClassHandle;
pub use self::http::{HttpClassify, HttpEos, HttpResponse};
pub use self::join::{JoinClass, JoinClassLayer, join};
pub use self::layer::{Classifier, ClassifyLayer, NewOnClass, PublishClass};

/// A classification strategy: given a request, picks the rules for its response.
pub trait Classify {
    /// The per-request classifier.
    type Response: ClassifyResponse;

    /// Starts classifying the response to `req`.
    fn classify_request<B>(&self, req: &Request<B>) -> Self::Response;
}

/// Classifies the response to one request.
pub trait ClassifyResponse {
    /// Finishes the classification at the end of the response body.
    type Eos: ClassifyEos;

    /// Looks at the response head; the decision is completed by the returned [`ClassifyEos`].
    fn classify_response<B>(self, rsp: &Response<B>) -> Self::Eos;
}

/// Completes a classification when the response body ends.
pub trait ClassifyEos {
    /// The body ended, with these trailers if it had any.
    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Class;

    /// The body failed with `err`. By default [`Class::of_error`].
    fn classify_error(self, err: &(dyn Error + 'static)) -> Class
    where
        Self: Sized,
    {
        Class::of_error(err)
    }

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

/// A response body that carries its request's one classification: a [`ClassifiedBody`], or a
/// body of a mesh layer that wraps one and passes the classification through (the timeout and
/// retry layers' bodies). A layer further out joins it rather than classifying again.
///
/// Joining needs the body to be moved, so these bodies are `Unpin` (hyper's bodies and the
/// common body types are).
pub trait Classified: http_body::Body + Unpin + Sized {
    /// This body with `L` listening too.
    type Joined<L: OnClass>: Classified<Data = Self::Data, Error = Self::Error>;

    /// Adds `listener`: it receives the class when it is decided (at once, if it already is),
    /// and the trailers as they pass.
    fn join<L: OnClass>(self, listener: L) -> Self::Joined<L>;

    /// The class as far as the response head decided it; `None` when only the end of the
    /// stream can tell. Once the class is decided, that class.
    fn head_class(&self) -> Option<Class>;

    /// The class, once decided.
    fn class(&self) -> Option<Class>;

    /// Decides the class from `err`, raised by a layer outside the classifier (a request
    /// deadline that passed while the body streamed), unless it is decided already.
    fn fail(&mut self, err: &(dyn Error + 'static));
}
