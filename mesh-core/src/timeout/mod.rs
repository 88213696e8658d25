//! Deadlines for requests: one for the response headers, one for the whole exchange.
//!
//! [`TimeoutLayer`] fails a request with a typed [`TimeoutError`] when either deadline passes.
//! The response-headers deadline bounds the wait for the response to start; the request
//! deadline bounds everything up to the end of the response body, so a response that stalls
//! midway fails from its body ([`TimeoutBody`]) with the same error. Placed outside a retry
//! layer, the request deadline covers every try.
//!
//! Both deadlines run from the moment the request first has to wait: the first time the
//! response future returns `Pending`, which for any service doing I/O is the first poll right
//! after `call`. Work a service does synchronously before that is not timed (a timer could not
//! interrupt it anyway); tower's `timeout` starts its clock in `call` instead. In exchange, a
//! request answered at once reads no clock and arms no timer. Time is tokio's, so tests can
//! pause and advance it.

mod body;
mod error;
mod future;

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower::{Layer, Service};

pub use self::body::TimeoutBody;
pub use self::error::{TimeoutError, TimeoutKind};
pub use self::future::ResponseFuture;
use crate::error::BoxError;

/// Applies a response-headers deadline and a whole-request deadline; either may be unset.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::timeout::TimeoutLayer;
///
/// let layer = TimeoutLayer::new()
///     .response_headers(Duration::from_secs(1))
///     .request(Duration::from_secs(10));
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeoutLayer {
    response_headers: Option<Duration>,
    request: Option<Duration>,
}

impl TimeoutLayer {
    /// A layer with no deadline set; add them with the setters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the request if the response headers have not arrived within `after`.
    pub fn response_headers(mut self, after: Duration) -> Self {
        self.response_headers = Some(after);
        self
    }

    /// Fails the request if the exchange, response body included, has not finished within
    /// `after`.
    pub fn request(mut self, after: Duration) -> Self {
        self.request = Some(after);
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            config: *self,
        }
    }
}

impl TimeoutLayer {
    /// Whether any deadline is set; without one, the layer never reads the clock.
    fn is_set(&self) -> bool {
        self.response_headers.is_some() || self.request.is_some()
    }

    /// The deadline that applies until the response headers arrive, for a request that started
    /// waiting at `start`: whichever deadline comes first.
    fn before_headers(&self, start: Instant) -> Option<(Instant, TimeoutError)> {
        let headers = self
            .response_headers
            .map(|after| (start + after, TimeoutError::response_headers(after)));
        let request = self
            .request
            .map(|after| (start + after, TimeoutError::request(after)));
        match (headers, request) {
            (Some(h), Some(r)) if r.0 < h.0 => Some(r),
            (Some(h), _) => Some(h),
            (None, r) => r,
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    config: TimeoutLayer,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with the deadlines of `config`.
    pub fn new(inner: S, config: TimeoutLayer) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Timeout<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;
    use std::convert::Infallible;
    use tower::ServiceExt;

    type TestBody = http_body_util::channel::Channel<Bytes, Infallible>;

    fn layer() -> TimeoutLayer {
        TimeoutLayer::new()
            .response_headers(Duration::from_secs(1))
            .request(Duration::from_secs(3))
    }

    /// A service that answers after `headers_after`, then sends one chunk after `chunk_after`
    /// and ends the body after `end_after` (measured from the response).
    fn delayed(
        headers_after: Duration,
        chunk_after: Duration,
        end_after: Duration,
    ) -> impl Service<Request<()>, Response = Response<TestBody>, Error = Infallible> + Clone {
        tower::service_fn(move |_req: Request<()>| async move {
            tokio::time::sleep(headers_after).await;
            let (mut tx, body) = Channel::new(1);
            tokio::spawn(async move {
                tokio::time::sleep(chunk_after).await;
                let _ = tx.send_data(Bytes::from_static(b"chunk")).await;
                tokio::time::sleep(end_after.saturating_sub(chunk_after)).await;
            });
            Ok(Response::new(body))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_headers_deadline_fires_exactly_on_time() {
        let start = Instant::now();
        let svc = layer().layer(delayed(
            Duration::from_secs(5),
            Duration::ZERO,
            Duration::ZERO,
        ));
        let err = svc.oneshot(Request::new(())).await.expect_err("too slow");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let err = err.downcast::<TimeoutError>().expect("typed");
        assert_eq!(*err, TimeoutError::response_headers(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_covers_the_body_from_the_first_wait() {
        let start = Instant::now();
        let svc = layer().layer(delayed(
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(60),
        ));
        let rsp = svc
            .oneshot(Request::new(()))
            .await
            .expect("headers in time");
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        let mut body = rsp.into_body();
        let chunk = body.frame().await.expect("frame").expect("data");
        assert_eq!(chunk.into_data().expect("data"), "chunk");
        let err = body.frame().await.expect("frame").expect_err("stalled");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(
            *err.downcast::<TimeoutError>().expect("typed"),
            TimeoutError::request(Duration::from_secs(3))
        );
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none(), "nothing after the timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_request_deadline_applies_to_the_headers() {
        let layer = TimeoutLayer::new()
            .response_headers(Duration::from_secs(10))
            .request(Duration::from_secs(2));
        let svc = layer.layer(delayed(
            Duration::from_secs(5),
            Duration::ZERO,
            Duration::ZERO,
        ));
        let err = svc.oneshot(Request::new(())).await.expect_err("too slow");
        assert_eq!(
            *err.downcast::<TimeoutError>().expect("typed"),
            TimeoutError::request(Duration::from_secs(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn responses_within_the_deadlines_pass_whole() {
        let svc = layer().layer(delayed(
            Duration::from_millis(900),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ));
        let rsp = svc.oneshot(Request::new(())).await.expect("in time");
        let body = rsp.into_body().collect().await.expect("in time").to_bytes();
        assert_eq!(body, "chunk");
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_means_no_timeout() {
        let svc = TimeoutLayer::new().layer(delayed(
            Duration::from_secs(100),
            Duration::from_secs(100),
            Duration::from_secs(200),
        ));
        let rsp = svc.oneshot(Request::new(())).await.expect("no deadline");
        let body = rsp
            .into_body()
            .collect()
            .await
            .expect("no deadline")
            .to_bytes();
        assert_eq!(body, "chunk");
    }

    #[test]
    fn errors_say_which_deadline_and_how_long() {
        let err = TimeoutError::request(Duration::from_millis(1500));
        assert_eq!(err.kind(), TimeoutKind::Request);
        assert_eq!(err.after(), Duration::from_millis(1500));
        assert_eq!(err.to_string(), "request not completed within 1.5s");
    }
}
