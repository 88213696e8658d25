//! Where a layer stack meets the proxy's server: errors become responses (502/503/504, or
//! trailers-only gRPC), bodies are boxed, and HTTP/1 upgrades are spliced once accepted.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_core::grpc::{self, GrpcCode};
use mesh_core::{BoxError, error_response};
use tower::Service;

use super::serve::{HttpService, ProxyBody, boxed};
use super::upgrade;

/// Adapts a stack to what the proxy's servers call.
#[derive(Clone, Debug)]
pub(crate) struct Edge<S>(pub(crate) S);

/// Boxes `stack` behind an [`Edge`], for tables of services of different types.
pub(crate) fn edge<S, B>(stack: S) -> HttpService
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    HttpService::new(Edge(stack))
}

impl<S, B> Service<Request<Incoming>> for Edge<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The stacks behind an edge are always ready (the balancer waits per request); an
        // error here would be a bug, answered per request below.
        match self.0.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let grpc = grpc::is_grpc(req.headers());
        let upgrade = upgrade::take_upgrade(&mut req);
        let call = self.0.call(req);
        Box::pin(async move {
            Ok(match call.await {
                Ok(rsp) => {
                    let mut rsp = rsp.map(boxed);
                    upgrade::splice(upgrade, &mut rsp);
                    rsp
                }
                Err(err) => {
                    let err: BoxError = err.into();
                    error_response::<Full<Bytes>>(&*err, grpc).map(boxed)
                }
            })
        })
    }
}

/// The answer for a request whose authority names no configured service: 404, or for gRPC
/// UNIMPLEMENTED (what gRPC makes of a 404), saying which authority and what is known.
pub(crate) fn unknown_authority(authority: &str, grpc: bool, known: &str) -> Response<ProxyBody> {
    let message =
        format!("no service is configured for authority {authority:?} (configured: {known})");
    if grpc {
        return grpc::trailers_only::<Full<Bytes>>(GrpcCode::UNIMPLEMENTED, &message).map(boxed);
    }
    let mut rsp = Response::new(boxed(Full::new(Bytes::from(message + "\n"))));
    *rsp.status_mut() = StatusCode::NOT_FOUND;
    rsp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp.headers_mut().insert(
        mesh_core::error::MESH_ERROR,
        HeaderValue::from_static("unknown-authority"),
    );
    rsp
}
