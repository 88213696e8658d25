//! A response body that classifies its response exactly once, at the end of the stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Extensions;
use http_body::{Body, Frame, SizeHint};
use pin_project::{pin_project, pinned_drop};

use super::{Class, ClassifyEos};
use crate::error::BoxError;

/// Receives the [`Class`] of a request, once.
///
/// Implemented for closures, for `()` (nobody listens), for `Option`, for [`ClassHandle`]
/// (publishes it), and for pairs and triples, which hand the same decision to each member: that
/// is how metrics, failure accrual and retries share one classification without allocating.
///
/// [`ClassHandle`]: super::ClassHandle
pub trait OnClass {
    /// Called once with the outcome.
    fn on_class(self, class: Class);

    /// Called with the response's extensions before the body is wrapped, so that a listener can
    /// leave a way for layers further out to reach the outcome ([`ClassHandle`] inserts a clone
    /// of itself). Does nothing by default.
    ///
    /// [`ClassHandle`]: super::ClassHandle
    fn publish(&self, extensions: &mut Extensions) {
        let _ = extensions;
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

    fn publish(&self, extensions: &mut Extensions) {
        if let Some(a) = self {
            a.publish(extensions);
        }
    }
}

impl<A: OnClass, B: OnClass> OnClass for (A, B) {
    fn on_class(self, class: Class) {
        self.0.on_class(class);
        self.1.on_class(class);
    }

    fn publish(&self, extensions: &mut Extensions) {
        self.0.publish(extensions);
        self.1.publish(extensions);
    }
}

impl<A: OnClass, B: OnClass, C: OnClass> OnClass for (A, B, C) {
    fn on_class(self, class: Class) {
        self.0.on_class(class);
        self.1.on_class(class);
        self.2.on_class(class);
    }

    fn publish(&self, extensions: &mut Extensions) {
        self.0.publish(extensions);
        self.1.publish(extensions);
        self.2.publish(extensions);
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
/// passed on unchanged.
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
#[pin_project(PinnedDrop)]
pub struct ClassifiedBody<B, C, F>
where
    B: Body,
    C: ClassifyEos,
    F: OnClass,
{
    #[pin]
    inner: B,
    pending: Option<(C, F)>,
}

impl<B: Body, C: ClassifyEos, F: OnClass> ClassifiedBody<B, C, F> {
    /// Wraps `inner`; `eos` finishes the classification and `on_class` receives it.
    pub fn new(inner: B, eos: C, on_class: F) -> Self {
        Self {
            inner,
            pending: Some((eos, on_class)),
        }
    }

    /// Whether the class has been decided and handed over.
    pub fn is_classified(&self) -> bool {
        self.pending.is_none()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
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
            .field("classified", &self.pending.is_none())
            .finish()
    }
}

fn decide<C: ClassifyEos, F: OnClass>(pending: &mut Option<(C, F)>, how: impl FnOnce(C) -> Class) {
    if let Some((eos, on_class)) = pending.take() {
        on_class.on_class(how(eos));
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

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                let err: BoxError = err.into();
                decide(this.pending, |eos| eos.classify_error(&*err));
                return Poll::Ready(Some(Err(err)));
            }
            None => {
                decide(this.pending, |eos| eos.classify_eos(None));
                return Poll::Ready(None);
            }
        };
        if this.pending.is_some() {
            if let Some(trailers) = frame.trailers_ref() {
                decide(this.pending, |eos| eos.classify_eos(Some(trailers)));
            } else if this.inner.is_end_stream() {
                decide(this.pending, |eos| eos.classify_eos(None));
            }
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

#[pinned_drop]
impl<B, C, F> PinnedDrop for ClassifiedBody<B, C, F>
where
    B: Body,
    C: ClassifyEos,
    F: OnClass,
{
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if this.pending.is_none() {
            return;
        }
        // A body with nothing left to send (a trailers-only gRPC response, a 204) was not cut
        // short by being dropped unread.
        if this.inner.is_end_stream() {
            decide(this.pending, |eos| eos.classify_eos(None));
        } else {
            decide(this.pending, ClassifyEos::classify_cancelled);
        }
    }
}
