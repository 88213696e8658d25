//! A tower layer that classifies every response of a service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project::{pin_project, pinned_drop};
use tower::{Layer, Service};

use super::{
    Class, ClassHandle, ClassifiedBody, Classify, ClassifyResponse, FailureReason, OnClass,
};
use crate::error::BoxError;

/// Makes the [`OnClass`] listener for each request: the hook through which metrics, failure
/// accrual or anything else receives the outcome.
pub trait NewOnClass {
    /// The listener for one request.
    type OnClass: OnClass;

    /// The listener for `req`, which may capture what it needs from the request (its route,
    /// its start time).
    fn new_on_class<B>(&self, req: &Request<B>) -> Self::OnClass;
}

/// Publishes each request's outcome as a [`ClassHandle`] in the response's extensions, for
/// layers further out (which see the response after this layer) to read instead of
/// classifying again.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublishClass;

impl NewOnClass for PublishClass {
    type OnClass = ClassHandle;

    fn new_on_class<B>(&self, _: &Request<B>) -> ClassHandle {
        ClassHandle::new()
    }
}

/// Classifies every response of the wrapped service with a [`Classify`] strategy and hands each
/// outcome to a listener made by a [`NewOnClass`].
///
/// An error instead of a response is classified at once; a response is classified when its body
/// ends (see [`ClassifiedBody`]); a request dropped before its response arrived is
/// [`FailureReason::Cancelled`].
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
    type Service = ClassifyService<S, C, N>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassifyService {
            inner,
            classify: self.classify.clone(),
            new_on_class: self.new_on_class.clone(),
        }
    }
}

/// The service made by [`ClassifyLayer`].
#[derive(Clone, Debug)]
pub struct ClassifyService<S, C, N> {
    inner: S,
    classify: C,
    new_on_class: N,
}

impl<S, C, N> ClassifyService<S, C, N> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

type Eos<C> = <<C as Classify>::Response as ClassifyResponse>::Eos;

impl<S, C, N, ReqB, ResB> Service<Request<ReqB>> for ClassifyService<S, C, N>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
    C: Classify,
    N: NewOnClass,
{
    type Response = Response<ClassifiedBody<ResB, Eos<C>, N::OnClass>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C::Response, N::OnClass>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let classifier = self.classify.classify_request(&req);
        let on_class = self.new_on_class.new_on_class(&req);
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some((classifier, on_class)),
        }
    }
}

/// The response future of [`ClassifyService`].
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<F, R, O>
where
    O: OnClass,
{
    #[pin]
    inner: F,
    pending: Option<(R, O)>,
}

impl<F, R, O, ResB, E> Future for ResponseFuture<F, R, O>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    R: ClassifyResponse,
    O: OnClass,
    ResB: Body,
{
    type Output = Result<Response<ClassifiedBody<ResB, R::Eos, O>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some((classifier, on_class)) = this.pending.take() else {
            return Poll::Ready(Err(
                "classify: response future polled after completion".into()
            ));
        };
        match result {
            Ok(mut rsp) => {
                let eos = classifier.classify_response(&rsp);
                on_class.publish(rsp.extensions_mut());
                Poll::Ready(Ok(rsp.map(|body| ClassifiedBody::new(body, eos, on_class))))
            }
            Err(err) => {
                let err: BoxError = err.into();
                on_class.on_class(classifier.classify_error(&*err));
                Poll::Ready(Err(err))
            }
        }
    }
}

impl<F, R, O: OnClass> std::fmt::Debug for ResponseFuture<F, R, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.pending.is_none())
            .finish_non_exhaustive()
    }
}

#[pinned_drop]
impl<F, R, O: OnClass> PinnedDrop for ResponseFuture<F, R, O> {
    fn drop(self: Pin<&mut Self>) {
        if let Some((_, on_class)) = self.project().pending.take() {
            on_class.on_class(Class::Failure(FailureReason::Cancelled));
        }
    }
}
