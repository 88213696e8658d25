//! A tower layer that classifies every response of a service.

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use super::future::{Classifies, ResponseFuture};
use super::{ClassHandle, ClassifiedBody, Classify, ClassifyResponse, OnClass};
use crate::error::BoxError;

/// Makes the [`OnClass`] listener for each request: the hook through which metrics, failure
/// accrual or anything else receives the outcome.
pub trait NewOnClass<B> {
    /// The listener for one request.
    type OnClass: OnClass;

    /// The listener for `req`, which may capture what it needs from the request (its route,
    /// its start time).
    fn new_on_class(&mut self, req: &Request<B>) -> Self::OnClass;
}

/// Nobody listens: the classification is made for layers further out to join.
impl<B> NewOnClass<B> for () {
    type OnClass = ();

    fn new_on_class(&mut self, _: &Request<B>) {}
}

/// Publishes each request's outcome as a [`ClassHandle`] in the response's extensions, for
/// layers further out (which see the response after this layer) to read instead of
/// classifying again.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublishClass;

impl<B> NewOnClass<B> for PublishClass {
    type OnClass = ClassHandle;

    fn new_on_class(&mut self, _: &Request<B>) -> ClassHandle {
        ClassHandle::new()
    }
}

/// Classifies every response of the wrapped service with a [`Classify`] strategy and hands each
/// outcome to a listener made by a [`NewOnClass`]: the one classification of a stack that has no
/// balancer (which classifies by itself). Layers further out join it
/// ([`JoinClassLayer`](super::JoinClassLayer)); with `()` as the listener, only they listen.
///
/// An error instead of a response is classified at once; a response is classified when its body
/// ends (see [`ClassifiedBody`]); a request dropped before its response arrived is
/// [`FailureReason::Cancelled`](super::FailureReason::Cancelled).
///
/// ```
/// use http_body_util::{BodyExt, Full};
/// use mesh_core::classify::{AutoClassify, Class, ClassHandle, ClassifyLayer, PublishClass};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let svc = ServiceBuilder::new()
///     .layer(ClassifyLayer::new(AutoClassify::new(), PublishClass))
///     .service_fn(|_req: http::Request<()>| async {
///         let rsp = http::Response::builder().status(503).body(Full::new(bytes::Bytes::new()))?;
///         Ok::<_, http::Error>(rsp)
///     });
/// let rsp = svc.oneshot(http::Request::new(())).await?;
/// let handle = rsp.extensions().get::<ClassHandle>().cloned().expect("published");
/// rsp.into_body().collect().await?;
/// assert!(handle.get().is_some_and(Class::is_failure));
/// # Ok::<(), mesh_core::BoxError>(())
/// # })?;
/// # Ok::<(), mesh_core::BoxError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassifyLayer<C, N> {
    classify: C,
    new_on_class: N,
}

impl<C, N> ClassifyLayer<C, N> {
    /// Classifies with `classify` and reports to listeners made by `new_on_class`.
    pub fn new(classify: C, new_on_class: N) -> Self {
        Self {
            classify,
            new_on_class,
        }
    }
}

impl<S, C: Clone, N: Clone> Layer<S> for ClassifyLayer<C, N> {
    type Service = Classifier<S, C, N>;

    fn layer(&self, inner: S) -> Self::Service {
        Classifier {
            inner,
            classify: self.classify.clone(),
            new_on_class: self.new_on_class.clone(),
        }
    }
}

/// The service made by [`ClassifyLayer`].
#[derive(Clone, Debug)]
pub struct Classifier<S, C, N> {
    inner: S,
    classify: C,
    new_on_class: N,
}

impl<S, C, N> Classifier<S, C, N> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, N, ReqB, ResB> Service<Request<ReqB>> for Classifier<S, C, N>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
    C: Classify,
    N: NewOnClass<ReqB>,
{
    type Response = Response<ClassifiedBody<ResB, Eos<C>, N::OnClass>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Classifies<C::Response>, N::OnClass>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let classifier = self.classify.classify_request(&req);
        let on_class = self.new_on_class.new_on_class(&req);
        ResponseFuture::new(self.inner.call(req), Classifies(classifier), on_class)
    }
}

type Eos<C> = <<C as Classify>::Response as ClassifyResponse>::Eos;
