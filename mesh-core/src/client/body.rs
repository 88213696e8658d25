//! What [`DualClient`](super::DualClient) answers with: a response future and a body that are
//! its [`Http1Pool`](super::Http1Pool)'s, its [`Http2Pool`](super::Http2Pool)'s, or
//! hyper-util's (upgrades).

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
use super::h2::{Http2Body, Http2Future};
use crate::error::BoxError;

/// The response future of [`DualClient`](super::DualClient).
#[pin_project(project = DualFutureProj)]
pub struct DualFuture<B>(#[pin] Inner<B>);

// The HTTP/2 future holds its request until its stream opens (and the HTTP/1 one is boxed):
// boxing it too would add an allocation per request to save bytes that live only as long as
// the request does.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = InnerProj)]
enum Inner<B> {
    Pooled(#[pin] Http1Future<B>),
    H2(#[pin] Http2Future<B>),
    Shared(#[pin] ResponseFuture),
}

impl<B> DualFuture<B> {
    pub(super) fn pooled(future: Http1Future<B>) -> Self {
        Self(Inner::Pooled(future))
    }

    pub(super) fn h2(future: Http2Future<B>) -> Self {
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

impl<B> Future for DualFuture<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ClientBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project().0.project() {
            InnerProj::Pooled(f) => ready!(f.poll(cx)).map(|rsp| rsp.map(ClientBody::Pooled)),
            InnerProj::H2(f) => ready!(f.poll(cx)).map(|rsp| rsp.map(ClientBody::H2)),
            InnerProj::Shared(f) => ready!(f.poll(cx))
                .map(|rsp| rsp.map(ClientBody::Shared))
                .map_err(Into::into),
        })
    }
}

/// The response body of [`DualClient`](super::DualClient): from a pooled HTTP/1 connection
/// (which it drives), an HTTP/2 stream, or hyper's own.
#[derive(Debug)]
pub enum ClientBody<B> {
    /// Over an [`Http1Pool`](super::Http1Pool)'s connection.
    Pooled(Http1Body<B>),
    /// Over an [`Http2Pool`](super::Http2Pool)'s connection.
    H2(Http2Body),
    /// Over an upgrade's connection (hyper-util's).
    Shared(Incoming),
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Pooled(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Shared(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(body) => body.is_end_stream(),
            Self::H2(body) => body.is_end_stream(),
            Self::Shared(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Pooled(body) => body.size_hint(),
            Self::H2(body) => body.size_hint(),
            Self::Shared(body) => body.size_hint(),
        }
    }
}
