//! The response future of [`Router`](super::Router).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::Service;
use tower::util::Oneshot;

use super::NoRouteError;
use crate::error::BoxError;

/// The response future of [`Router`](super::Router).
#[pin_project(project = RouteFutureProj)]
#[derive(Debug)]
pub enum RouteFuture<S: Service<R>, R> {
    /// On its way to the route's service.
    Routed(#[pin] Oneshot<S, R>),
    /// No route: fails at once.
    NoRoute(Option<NoRouteError>),
}

impl<S, R> Future for RouteFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteFutureProj::Routed(call) => call.poll(cx).map_err(Into::into),
            RouteFutureProj::NoRoute(err) => Poll::Ready(Err(match err.take() {
                Some(err) => err.into(),
                None => "route: response future polled after completion".into(),
            })),
        }
    }
}
