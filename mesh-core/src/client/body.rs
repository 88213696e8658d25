//! What [`DualClient`](super::DualClient) answers with: a response future and a body that are
//! either its [`Http1Pool`](super::Http1Pool)'s or hyper-util's (HTTP/2, sent again when
//! refused, and upgrades).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use pin_project::pin_project;

use super::h1::{Http1Body, Http1Future};
use super::h2::H2Future;
use crate::error::BoxError;

/// The response future of [`DualClient`](super::DualClient).
#[pin_project(project = DualFutureProj)]
pub struct DualFuture<B>(#[pin] Inner<B>);

#[pin_project(project = InnerProj)]
enum Inner<B> {
    Pooled(#[pin] Http1Future<B>),
    H2(#[pin] H2Future<B>),
    Shared(#[pin] ResponseFuture),
}

impl<B> DualFuture<B> {
    pub(super) fn pooled(future: Http1Future<B>) -> Self {
        Self(Inner::Pooled(future))
    }

    pub(super) fn h2(future: H2Future<B>) -> Self {
        Self(Inner::H2(future))
    }

    pub(super) fn shared(future: ResponseFuture) -> Self {
        Self(Inner::Shared(future))
    }
}

impl<B> std::fmt::Debug for DualFuture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Pooled(_) => "DualFuture::Pooled",
            Inner::H2(_) => "DualFuture::H2",
            Inner::Shared(_) => "DualFuture::Shared",
        })
    }
}

impl<B> Future for DualFuture<B> {
    type Output = Result<Response<ClientBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project().0.project() {
            InnerProj::Pooled(f) => ready!(f.poll(cx)).map(|rsp| rsp.map(ClientBody::Pooled)),
            InnerProj::H2(f) => ready!(f.poll(cx)).map(|rsp| rsp.map(ClientBody::Shared)),
            InnerProj::Shared(f) => ready!(f.poll(cx))
                .map(|rsp| rsp.map(ClientBody::Shared))
                .map_err(Into::into),
        })
    }
}

/// The response body of [`DualClient`](super::DualClient): from a pooled HTTP/1 connection
/// (which it drives), or hyper's own.
#[derive(Debug)]
pub enum ClientBody<B> {
    /// Over an [`Http1Pool`](super::Http1Pool)'s connection.
    Pooled(Http1Body<B>),
    /// Over HTTP/2, or an upgrade's HTTP/1 connection.
    Shared(Incoming),
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Pooled(body) => Pin::new(body).poll_frame(cx),
            Self::Shared(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(body) => body.is_end_stream(),
            Self::Shared(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Pooled(body) => body.size_hint(),
            Self::Shared(body) => body.size_hint(),
        }
    }
}
