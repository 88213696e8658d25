//! Joining the classification a layer further in made, instead of classifying again.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::future::{Joins, ResponseFuture};
use super::{Classified, NewOnClass, OnClass};
use crate::error::BoxError;

/// Adds `listener` to the classification `rsp`'s body carries, after showing it the head
/// ([`OnClass::on_response`]).
pub fn join<B: Classified, L: OnClass>(
    mut rsp: Response<B>,
    mut listener: L,
) -> Response<B::Joined<L>> {
    listener.on_response(&mut rsp);
    rsp.map(|body| body.join(listener))
}

/// Hands each request's outcome to a listener made by a [`NewOnClass`], from the classification
/// that the service it wraps made (its responses' bodies are [`Classified`]): the way a layer
/// learns outcomes without classifying again. Metrics are built on it.
///
/// An error instead of a response reaches the listener as [`Class::of_error`]; a request
/// dropped before its response arrived as cancelled.
///
/// [`Class::of_error`]: super::Class::of_error
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use http_body_util::{BodyExt, Full};
/// use mesh_core::classify::{AutoClassify, Class, ClassifyLayer, JoinClassLayer, NewOnClass};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// /// Keeps every outcome.
/// #[derive(Clone, Default)]
/// struct Outcomes(Arc<Mutex<Vec<Class>>>);
///
/// impl<B> NewOnClass<B> for Outcomes {
///     type OnClass = Box<dyn FnOnce(Class) + Send>;
///     fn new_on_class(&mut self, _: &http::Request<B>) -> Self::OnClass {
///         let all = self.0.clone();
///         Box::new(move |class| all.lock().expect("lock").push(class))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let outcomes = Outcomes::default();
/// let svc = ServiceBuilder::new()
///     .layer(JoinClassLayer::new(outcomes.clone()))
///     .layer(ClassifyLayer::new(AutoClassify::new(), ()))
///     .service_fn(|_req: http::Request<()>| async {
///         let rsp = http::Response::builder().status(503).body(Full::new(bytes::Bytes::new()))?;
///         Ok::<_, http::Error>(rsp)
///     });
/// let rsp = svc.oneshot(http::Request::new(())).await?;
/// rsp.into_body().collect().await?;
/// assert!(outcomes.0.lock().expect("lock")[0].is_failure());
/// # Ok::<(), mesh_core::BoxError>(())
/// # })?;
/// # Ok::<(), mesh_core::BoxError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JoinClassLayer<N> {
    new_on_class: N,
}

impl<N> JoinClassLayer<N> {
    /// Joins listeners made by `new_on_class`.
    pub fn new(new_on_class: N) -> Self {
        Self { new_on_class }
    }
}

impl<S, N: Clone> Layer<S> for JoinClassLayer<N> {
    type Service = JoinClass<S, N>;

    fn layer(&self, inner: S) -> Self::Service {
        JoinClass {
            inner,
            new_on_class: self.new_on_class.clone(),
        }
    }
}

/// The service made by [`JoinClassLayer`].
#[derive(Clone, Debug)]
pub struct JoinClass<S, N> {
    inner: S,
    new_on_class: N,
}

impl<S, N> JoinClass<S, N> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// What makes the listeners.
    pub fn new_on_class(&self) -> &N {
        &self.new_on_class
    }
}

impl<S, N, ReqB, ResB> Service<Request<ReqB>> for JoinClass<S, N>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Classified,
    N: NewOnClass<ReqB>,
{
    type Response = Response<ResB::Joined<N::OnClass>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Joins, N::OnClass>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let on_class = self.new_on_class.new_on_class(&req);
        ResponseFuture::new(self.inner.call(req), Joins, on_class)
    }
}
