//! Handing the connection's peer identity to every request on it.

use std::task::{Context, Poll};

use http::Request;
use mesh_core::PeerIdentity;
use tower::{Layer, Service};

/// Inserts one connection's [`PeerIdentity`] into the extensions of each of its requests,
/// replacing any already there. Build one per accepted connection, from
/// [`Accepted::peer`](crate::Accepted::peer).
#[derive(Clone, Debug)]
pub struct SetPeerIdentityLayer {
    peer: PeerIdentity,
}

impl SetPeerIdentityLayer {
    /// Marks requests with `peer`.
    pub fn new(peer: PeerIdentity) -> Self {
        Self { peer }
    }
}

impl<S> Layer<S> for SetPeerIdentityLayer {
    type Service = SetPeerIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetPeerIdentity {
            inner,
            peer: self.peer.clone(),
        }
    }
}

/// The service made by [`SetPeerIdentityLayer`].
#[derive(Clone, Debug)]
pub struct SetPeerIdentity<S> {
    inner: S,
    peer: PeerIdentity,
}

impl<S, B> Service<Request<B>> for SetPeerIdentity<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}
