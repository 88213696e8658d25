//! What a connection is doing, for the deadlines hyper does not keep: a request head must
//! arrive within `header_timeout` of its first byte (or of the connection's start), and a
//! connection with nothing in flight is closed after `idle_timeout`.
//!
//! hyper's own HTTP/1 `header_read_timeout` starts when hyper begins waiting for the next
//! request, so it would also close every keep-alive connection idle for that long; hyper has no
//! idle deadline for HTTP/2 at all. Here the two are apart: the service wrapper counts the
//! requests in flight (until their response body ends or is dropped), the IO wrapper notes the
//! first byte read while nothing is in flight (HTTP/1 only: HTTP/2 reads PINGs and SETTINGS
//! while idle), and a watcher next to the connection sleeps until the nearer deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project::pin_project;
use tokio::time::Instant;

use super::watch::OnRead;

/// One connection's activity. Times are milliseconds since `start`, plus one (0 = unset).
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    head_since: AtomicU64,
}

/// Which deadline the watcher is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Requests are in flight: look again later.
    Busy,
    /// A request head has begun (or the connection is new) and has not been read whole.
    Head,
    /// Nothing is in flight and nothing arrives.
    Idle,
}

impl Activity {
    /// A new connection: its first request head is due within the header deadline.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            head_since: AtomicU64::new(1),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn at(&self, stamp: u64, after: Duration) -> Instant {
        self.start + Duration::from_millis(stamp.saturating_sub(1)) + after
    }

    /// Bytes arrived (HTTP/1): if nothing is in flight, a request head has begun.
    fn read_some(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now(), Relaxed);
        }
    }

    fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
    }

    fn finished(&self) {
        self.idle_since.store(self.now(), Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// When the watcher should look again, and what for.
    pub(crate) fn next(&self, header: Duration, idle: Duration) -> (Instant, Wait) {
        if self.in_flight.load(Relaxed) > 0 {
            return (Instant::now() + idle, Wait::Busy);
        }
        let head = self.head_since.load(Relaxed);
        if head != 0 {
            return (self.at(head, header), Wait::Head);
        }
        (self.at(self.idle_since.load(Relaxed), idle), Wait::Idle)
    }

    /// Sleeps until a deadline has passed with nothing changing, and says which.
    pub(crate) async fn expired(&self, header: Duration, idle: Duration) -> Wait {
        loop {
            let (at, _) = self.next(header, idle);
            tokio::time::sleep_until(at).await;
            let (again, wait) = self.next(header, idle);
            if wait != Wait::Busy && again <= Instant::now() {
                return wait;
            }
        }
    }
}

/// A request in flight on a connection; the count goes down when this is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// Counts a connection's requests in flight: from `call` until the response body ends or is
/// dropped.
#[derive(Clone, Debug)]
pub(crate) struct Track<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Track<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, R, B> tower::Service<R> for Track<S>
where
    S: tower::Service<R, Response = Response<B>>,
{
    type Response = Response<TrackBody<B>>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.activity.started();
        TrackFuture {
            inner: self.inner.call(req),
            in_flight: Some(InFlight(Arc::clone(&self.activity))),
        }
    }
}

/// The response future of [`Track`]: hands the request's place to the response body.
#[pin_project]
#[derive(Debug)]
pub(crate) struct TrackFuture<F> {
    #[pin]
    inner: F,
    in_flight: Option<InFlight>,
}

impl<F, B, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let rsp = std::task::ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(rsp.map(|inner| TrackBody { inner, in_flight })))
    }
}

/// A response body that holds its request's place until it ends or is dropped.
#[pin_project]
#[derive(Debug)]
pub(crate) struct TrackBody<B> {
    #[pin]
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B: http_body::Body> http_body::Body for TrackBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Marks the start of a request head when bytes arrive with nothing in flight (HTTP/1).
#[derive(Debug)]
pub(crate) struct HeadStart(pub(crate) Arc<Activity>);

impl OnRead for HeadStart {
    fn on_read(&mut self, _: &[u8]) -> io::Result<()> {
        self.0.read_some();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_first_head_then_idles_between_requests() {
        let activity = Activity::new();
        assert_eq!(activity.expired(HEAD, IDLE).await, Wait::Head);
        activity.started();
        let (_, wait) = activity.next(HEAD, IDLE);
        assert_eq!(wait, Wait::Busy);
        let start = Instant::now();
        drop(InFlight(Arc::clone(&activity)));
        assert_eq!(activity.expired(HEAD, IDLE).await, Wait::Idle);
        assert_eq!(Instant::now() - start, IDLE);
        // A byte of the next head: the header deadline runs from it.
        activity.read_some();
        let start = Instant::now();
        assert_eq!(activity.expired(HEAD, IDLE).await, Wait::Head);
        assert_eq!(Instant::now() - start, HEAD);
    }
}
