//! The HTTP balancer: a tower service over the protocol-agnostic [`Balancer`] core.

use std::fmt::Display;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use http::{Request, Response};
use http_body::Body;
use mesh_core::classify::{AutoClassify, Classify, ClassifyResponse};
use mesh_core::{BoxError, Endpoint};
use tower::discover::Change;
use tower::{Service, ServiceExt};

use crate::balancer::{Balancer, Readiness};
use crate::body::BalancedBody;
use crate::config::BalanceConfig;
use crate::future::ResponseFuture;
use crate::snapshot::EndpointSnapshot;
use mesh_core::random::{Random, ThreadRandom};

/// Balances HTTP requests over a live set of endpoints, each an HTTP service `S` taking
/// `Request<B>`: power of two choices by peak-EWMA load, weights, failure accrual with probing,
/// and a bounded wait when nothing is ready. A thin service over [`Balancer`].
///
/// Each endpoint's service is driven to readiness in the background before it takes requests.
/// Each request is picked when called (its future waits only if nothing is ready) and sent to
/// exactly the endpoint picked (the endpoint's service is cloned for the call), so a removal can
/// never redirect it. Each response is classified once, with `C` (gRPC-aware [`AutoClassify`]
/// by default): its body ([`BalancedBody`]) carries that classification for failure accrual
/// and for the layers further out to join. Cheap to clone; clones share the endpoint set.
pub struct Balance<S, B, C = AutoClassify> {
    core: Balancer<S>,
    classify: C,
    _request: PhantomData<fn(B)>,
}

impl<S: Clone, B, C: Clone> Clone for Balance<S, B, C> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            classify: self.classify.clone(),
            _request: PhantomData,
        }
    }
}

impl<S, B, C> std::fmt::Debug for Balance<S, B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance").finish_non_exhaustive()
    }
}

impl<S, B> Balance<S, B>
where
    S: Service<Request<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    B: 'static,
{
    /// Balances over the endpoints `discover` reports, making each endpoint's service with
    /// `make`. Must be called within a tokio runtime (it spawns the driver).
    pub fn new<D, E, M>(discover: D, make: M, config: BalanceConfig) -> Self
    where
        D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
        E: Display + Send + 'static,
        M: FnMut(&Endpoint) -> S + Send + 'static,
    {
        Self::with_random(discover, make, config, Arc::new(ThreadRandom))
    }

    /// Like [`Balance::new`], drawing from `random` (seeded in tests and simulations).
    pub fn with_random<D, E, M>(
        discover: D,
        make: M,
        config: BalanceConfig,
        random: Arc<dyn Random>,
    ) -> Self
    where
        D: Stream<Item = Result<Change<SocketAddr, Endpoint>, E>> + Send + 'static,
        E: Display + Send + 'static,
        M: FnMut(&Endpoint) -> S + Send + 'static,
    {
        let readiness: Readiness<S> = Arc::new(|mut service: S| {
            Box::pin(async move {
                ServiceExt::<Request<B>>::ready(&mut service)
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            })
        });
        let core = Balancer::with_options(discover, make, config, random, Some(readiness));
        Self {
            core,
            classify: AutoClassify::new(),
            _request: PhantomData,
        }
    }
}

impl<S, B, C> Balance<S, B, C> {
    /// Classifies outcomes (for accrual, the latency penalty and the layers further out) with
    /// `classify` instead of the gRPC-aware default.
    pub fn with_classify<C2>(self, classify: C2) -> Balance<S, B, C2> {
        Balance {
            core: self.core,
            classify,
            _request: PhantomData,
        }
    }

    /// The core it balances with.
    pub fn balancer(&self) -> &Balancer<S> {
        &self.core
    }
}

impl<S: Clone, B, C> Balance<S, B, C> {
    /// Every endpoint's address, status, latency estimate and outstanding requests, including
    /// removed endpoints still draining.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        self.core.snapshot()
    }

    /// How many endpoints are ejected (or being probed) now.
    pub fn ejected(&self) -> usize {
        self.core.ejected()
    }
}

type Eos<C> = <<C as Classify>::Response as ClassifyResponse>::Eos;

impl<S, B, C, ResB> Service<Request<B>> for Balance<S, B, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    ResB: Body,
{
    type Response = Response<BalancedBody<ResB, Eos<C>>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C::Response>;

    /// Always ready: each request waits for an endpoint in its own future, up to the
    /// configured bound, so one waiting request never holds up the balancer's other users.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    /// Picks the endpoint right away (no reference to the pool is then kept by the
    /// request); only when none is ready does the future keep one, to wait.
    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let classifier = self.classify.classify_request(&req);
        ResponseFuture::new(self.core.pool(), req, classifier)
    }
}
