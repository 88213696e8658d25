//! A response body that classifies its response exactly once, at the end of the stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::{Class, Classified, ClassifyEos, FailureReason};
use crate::error::BoxError;

/// Receives the [`Class`] of a request, once.
///
/// Implemented for closures, for `()` (nobody listens), for `Option`, for [`ClassHandle`]
/// (publishes it), and for pairs and triples, which hand the same decision to each member: that
/// is how metrics, failure accrual and retries share one classification without allocating
/// (see [`Classified::join`]).
///
/// [`ClassHandle`]: super::ClassHandle
pub trait OnClass {
    /// Called once with the outcome.
    fn on_class(self, class: Class);

    /// Called with the response head when it arrives, before its body is wrapped or joined:
    /// a listener may record the status (metrics), or leave a way for layers further out to
    /// reach the outcome ([`ClassHandle`] inserts a clone of itself in the extensions). Does
    /// nothing by default.
    ///
    /// [`ClassHandle`]: super::ClassHandle
    fn on_response<T>(&mut self, rsp: &mut Response<T>) {
        let _ = rsp;
    }

    /// Called with the response's trailers when they pass, just before the class is decided
    /// from them, so that a listener can keep what the class does not carry (the exact
    /// `grpc-status` of a successful gRPC call, for tap). Does nothing by default.
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        let _ = trailers;
    }
}

impl<F: FnOnce(Class)> OnClass for F {
    fn on_class(self, class: Class) {
        self(class)
    }
}

impl OnClass for () {
    fn on_class(self, _: Class) {}
}

impl<A: OnClass> OnClass for Option<A> {
    fn on_class(self, class: Class) {
        if let Some(a) = self {
            a.on_class(class);
        }
    }

    fn on_response<T>(&mut self, rsp: &mut Response<T>) {
        if let Some(a) = self {
            a.on_response(rsp);
        }
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(a) = self {
            a.on_trailers(trailers);
        }
    }
}

impl<A: OnClass, B: OnClass> OnClass for (A, B) {
    fn on_class(self, class: Class) {
        self.0.on_class(class);
        self.1.on_class(class);
    }

    fn on_response<T>(&mut self, rsp: &mut Response<T>) {
        self.0.on_response(rsp);
        self.1.on_response(rsp);
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        self.0.on_trailers(trailers);
        self.1.on_trailers(trailers);
    }
}

impl<A: OnClass, B: OnClass, C: OnClass> OnClass for (A, B, C) {
    fn on_class(self, class: Class) {
        self.0.on_class(class);
        self.1.on_class(class);
        self.2.on_class(class);
    }

    fn on_response<T>(&mut self, rsp: &mut Response<T>) {
        self.0.on_response(rsp);
        self.1.on_response(rsp);
        self.2.on_response(rsp);
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        self.0.on_trailers(trailers);
        self.1.on_trailers(trailers);
        self.2.on_trailers(trailers);
    }
}

/// Wraps a response body and classifies the response exactly once:
///
/// - at the end of the stream, with the trailers if there are any (the moment the trailers
///   frame or the last data frame passes, not later);
/// - on a body error, from the error;
/// - when dropped before the end, as cancelled (unless the body had nothing left to send, as
///   for a trailers-only gRPC response, which is then classified as ended).
///
/// The body's error type becomes [`BoxError`] so that the error can be classified and still
/// passed on unchanged. Layers further out add their listeners with [`Classified::join`].
///
/// ```
/// use http_body_util::{BodyExt, Full};
/// use mesh_core::classify::{Class, ClassHandle, ClassifiedBody, ClassifyResponse, HttpResponse};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let rsp = http::Response::new(Full::new(bytes::Bytes::from_static(b"hi")));
/// let eos = HttpResponse.classify_response(&rsp);
/// let handle = ClassHandle::new();
/// let body = ClassifiedBody::new(rsp.into_body(), eos, handle.clone());
/// assert_eq!(handle.get(), None);
/// body.collect().await?;
/// assert_eq!(handle.get(), Some(Class::Success));
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[pin_project]
pub struct ClassifiedBody<B, C, F>
where
    C: ClassifyEos,
    F: OnClass,
{
    #[pin]
    inner: B,
    decision: Decision<C, F>,
}

/// The classification in progress: decided at most once, and on drop if not before. Kept apart
/// from the body so that [`Classified::join`] can move the body's fields.
struct Decision<C: ClassifyEos, F: OnClass> {
    pending: Option<(C, F)>,
    /// While pending, what the head decided (asked once: every reader gets it without the
    /// classifier); once decided, the class. One slot: a body travels inside every response.
    class: Option<Class>,
    /// Whether the body had nothing left to send when last looked at (it changes only when
    /// polled): a body dropped then was not cut short.
    end_stream: bool,
}

impl<C: ClassifyEos, F: OnClass> Decision<C, F> {
    #[inline]
    fn decide(&mut self, how: impl FnOnce(C) -> Class) {
        if let Some((eos, on_class)) = self.pending.take() {
            let class = how(eos);
            self.class = Some(class);
            on_class.on_class(class);
        }
    }

    /// The class, once decided.
    #[inline]
    fn decided(&self) -> Option<Class> {
        if self.pending.is_none() {
            self.class
        } else {
            None
        }
    }
}

impl<C: ClassifyEos, F: OnClass> Drop for Decision<C, F> {
    #[inline]
    fn drop(&mut self) {
        if self.end_stream {
            self.decide(|eos| eos.classify_eos(None));
        } else {
            self.decide(ClassifyEos::classify_cancelled);
        }
    }
}

impl<B: Body, C: ClassifyEos, F: OnClass> ClassifiedBody<B, C, F> {
    /// Wraps `inner`; `eos` finishes the classification and `on_class` receives it.
    #[inline]
    pub fn new(inner: B, eos: C, on_class: F) -> Self {
        let head = eos.classify_head();
        Self::with_head(inner, eos, head, on_class)
    }

    /// Like [`ClassifiedBody::new`], for a layer that has asked `eos` for its head class
    /// already (to act on it before handing `on_class` over): the classifier is not asked twice.
    #[inline]
    pub fn with_head(inner: B, eos: C, head: Option<Class>, on_class: F) -> Self {
        let end_stream = inner.is_end_stream();
        Self {
            inner,
            decision: Decision {
                class: head,
                pending: Some((eos, on_class)),
                end_stream,
            },
        }
    }

    /// Whether the class has been decided and handed over.
    pub fn is_classified(&self) -> bool {
        self.decision.pending.is_none()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The class as far as the head decided it (see [`Classified::head_class`]; this one needs
    /// no `Unpin` body).
    #[inline]
    pub fn head_class(&self) -> Option<Class> {
        // Once decided, the final class stands in for the head's.
        self.decision.class
    }
}

impl<B, C, F> std::fmt::Debug for ClassifiedBody<B, C, F>
where
    B: Body + std::fmt::Debug,
    C: ClassifyEos,
    F: OnClass,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifiedBody")
            .field("inner", &self.inner)
            .field("class", &self.decision.decided())
            .finish()
    }
}

impl<B, C, F> Body for ClassifiedBody<B, C, F>
where
    B: Body,
    B::Error: Into<BoxError>,
    C: ClassifyEos,
    F: OnClass,
{
    type Data = B::Data;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let decision = this.decision;
        let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                let err: BoxError = err.into();
                decision.decide(|eos| eos.classify_error(&*err));
                return Poll::Ready(Some(Err(err)));
            }
            None => {
                decision.decide(|eos| eos.classify_eos(None));
                return Poll::Ready(None);
            }
        };
        if decision.pending.is_some() {
            if let Some(trailers) = frame.trailers_ref() {
                if let Some((_, on_class)) = decision.pending.as_mut() {
                    on_class.on_trailers(trailers);
                }
                decision.decide(|eos| eos.classify_eos(Some(trailers)));
            } else if this.inner.is_end_stream() {
                decision.decide(|eos| eos.classify_eos(None));
            }
            decision.end_stream = this.inner.is_end_stream();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, C, F> Classified for ClassifiedBody<B, C, F>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    C: ClassifyEos,
    F: OnClass,
{
    type Joined<L: OnClass> = ClassifiedBody<B, C, (F, L)>;

    #[inline]
    fn join<L: OnClass>(mut self, listener: L) -> Self::Joined<L> {
        let decision = &mut self.decision;
        let decided = decision.decided();
        let pending = match (decision.pending.take(), decided) {
            (Some((eos, on_class)), _) => Some((eos, (on_class, listener))),
            (None, decided) => {
                // Decided before this listener came (a retry read the trailers first).
                listener.on_class(decided.unwrap_or(Class::Failure(FailureReason::Cancelled)));
                None
            }
        };
        let joined = Decision {
            pending,
            class: decision.class,
            end_stream: decision.end_stream,
        };
        ClassifiedBody {
            inner: self.inner,
            decision: joined,
        }
    }

    fn head_class(&self) -> Option<Class> {
        ClassifiedBody::head_class(self)
    }

    fn class(&self) -> Option<Class> {
        self.decision.decided()
    }

    fn fail(&mut self, err: &(dyn std::error::Error + 'static)) {
        self.decision.decide(|eos| eos.classify_error(err));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::HeaderMap;
    use http_body::{Body, Frame};

    use super::{ClassifiedBody, OnClass};
    use crate::classify::{Class, Classify, ClassifyResponse, GrpcClassify};

    /// Keeps the `grpc-status` seen in the trailers next to the class.
    struct Seen(Arc<Mutex<Option<(String, Class)>>>, Option<String>);

    impl OnClass for Seen {
        fn on_class(self, class: Class) {
            let status = self.1.unwrap_or_default();
            if let Ok(mut slot) = self.0.lock() {
                *slot = Some((status, class));
            }
        }

        fn on_trailers(&mut self, trailers: &HeaderMap) {
            self.1 = trailers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
    }

    /// A body of one trailers frame.
    struct Trailers(Option<HeaderMap>);

    impl Body for Trailers {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|t| Ok(Frame::trailers(t))))
        }
    }

    #[test]
    fn trailers_reach_the_listener_before_the_class() {
        let req = http::Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("request");
        let rsp = http::Response::new(());
        let eos = GrpcClassify::new()
            .classify_request(&req)
            .classify_response(&rsp);
        let seen = Arc::new(Mutex::new(None));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body = std::pin::pin!(ClassifiedBody::new(
            Trailers(Some(trailers)),
            eos,
            Seen(seen.clone(), None)
        ));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(body.as_mut().poll_frame(&mut cx).is_ready());
        let got = seen.lock().expect("lock").clone();
        assert_eq!(got, Some(("0".to_owned(), Class::Success)));
    }
}
