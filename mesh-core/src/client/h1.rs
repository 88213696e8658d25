//! HTTP/1.1 to one destination, in the caller's task: [`Http1Pool`].
//!
//! hyper-util's pooled client runs every connection in a task of its own, so each request
//! crosses tasks twice (the request handed to the connection's task, the response handed back)
//! and wakes two tasks per response. A proxy does not need that for HTTP/1: a connection
//! carries one request at a time, so whoever waits for the response can drive the connection
//! itself. Here the response future polls hyper's `client::conn::http1` connection along with
//! the response, and the response body ([`Http1Body`]) keeps polling it until the body ends;
//! then the connection goes back to the pool, unpolled, until the next request takes it.
//!
//! What that changes:
//! - A request and its response cost one task's polls; no channel between tasks, no pool
//!   task, no timer task.
//! - A connection whose body is dropped before its end is closed (HTTP/1 cannot skip the rest
//!   of a body); an idle connection is checked when it is taken: one the server closed is
//!   dropped and the next one is tried, and a request that a reused connection refused before
//!   writing it is sent again on another.
//! - Idle connections are kept newest-first (the warmest is reused), at most `max_idle` of
//!   them, each for at most `idle_timeout`. Expired ones are dropped as the pool is used, and
//!   by one task per pool (started by its first request, ended with the pool) that wakes when
//!   the oldest expires: a proxy gone quiet after a burst closes the burst's connections
//!   instead of keeping their sockets and buffers until traffic comes back. That task needs
//!   tokio's time driver.
//! - A response comes without the headers about its connection (`Connection`, `Keep-Alive`,
//!   `Transfer-Encoding` and what `Connection` names): whether the connection is reused is the
//!   pool's business, and a proxy must not pass them on (RFC 9110, section 7.6.1).
//! - A connection made on a current-thread runtime is reused only on that runtime's thread
//!   (with `serve::Workers`, one runtime per thread, a socket polled from another thread would
//!   have every read and write wake two threads); one made on a multi-thread runtime by any.
//! - Upgrades (`Upgrade`, `CONNECT`) are not for this pool: they need the connection after
//!   the response, which hyper-util's client gives (see [`DualClient`](super::DualClient)).

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper::rt::{Read, Write};
use tokio::time::Instant;
use tower::ServiceExt;

use super::{UriAuthority, request_authority};
use crate::error::BoxError;
use crate::headers::strip_hop_by_hop;

/// How long an idle connection is kept by default. Shorter than hyper-util's 90 s: an idle
/// HTTP/1 connection holds a socket and about 20 KB of buffers, and a new one to a local app or
/// over a mesh link costs one connect (and handshake) when traffic comes back; 10 s spans the
/// gaps in steady traffic, and a quiet proxy gives a burst's connections back within it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many idle connections are kept by default.
pub const DEFAULT_MAX_IDLE: usize = 256;

/// A pool of HTTP/1.1 connections to one destination, each request served in the caller's
/// task. A tower service over the connector `C` (a `Service<Uri>` that dials the destination);
/// clones share the pool.
pub struct Http1Pool<C, B> {
    connector: C,
    authority: UriAuthority,
    idle: Arc<Idle<B>>,
}

impl<C: Clone, B> Clone for Http1Pool<C, B> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            authority: self.authority.clone(),
            idle: Arc::clone(&self.idle),
        }
    }
}

impl<C, B> std::fmt::Debug for Http1Pool<C, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool")
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

impl<C, B> Http1Pool<C, B> {
    /// A pool dialing through `connector`, with the default bounds; `authority` says where a
    /// request's `Host` comes from when it has none.
    pub fn new(connector: C, authority: UriAuthority) -> Self {
        Self::with_bounds(connector, authority, DEFAULT_MAX_IDLE, DEFAULT_IDLE_TIMEOUT)
    }

    /// A pool keeping at most `max_idle` idle connections, each for at most `idle_timeout`.
    pub fn with_bounds(
        connector: C,
        authority: UriAuthority,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            authority,
            idle: Arc::new(Idle {
                conns: Mutex::new(VecDeque::new()),
                max_idle,
                idle_timeout,
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Idle connections kept now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }
}

impl<C, T, B> tower::Service<Request<B>> for Http1Pool<C, B>
where
    C: tower::Service<Uri, Response = T> + Clone + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    T: Read + Write + Unpin + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Http1Body<B>>;
    type Error = BoxError;
    type Future = Http1Future<B>;

    /// Always ready: connections are made per request when none is idle.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    /// Sends `req` as HTTP/1.1 in origin form, with a `Host` header when it has none (see
    /// [`UriAuthority`]).
    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.request(req)
    }
}

impl<C, T, B> Http1Pool<C, B>
where
    C: tower::Service<Uri, Response = T> + Clone + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    T: Read + Write + Unpin + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// [`call`](tower::Service::call) through a shared reference (nothing in the pool needs
    /// `&mut`), for a client that shares its pool instead of cloning it.
    pub(super) fn request(&self, mut req: Request<B>) -> Http1Future<B> {
        let authority = origin_form(&mut req, &self.authority);
        *req.version_mut() = http::Version::HTTP_11;
        Http1Future(Box::pin(send(
            self.connector.clone(),
            authority,
            Arc::clone(&self.idle),
            req,
        )))
    }
}

/// The response future of [`Http1Pool`]. Polling it drives the connection.
pub struct Http1Future<B>(Pin<Box<dyn Future<Output = Answer<B>> + Send>>);

/// What a request through the pool comes to.
type Answer<B> = Result<Response<Http1Body<B>>, BoxError>;

impl<B> Future for Http1Future<B> {
    type Output = Answer<B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<B> std::fmt::Debug for Http1Future<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Future").finish_non_exhaustive()
    }
}

/// Puts `req` in the form HTTP/1 sends: an origin-form URI, and a `Host` header when it has
/// none. Returns the authority to dial (see [`request_authority`]), which is also the `Host`
/// given to a request without one.
fn origin_form<B>(req: &mut Request<B>, from: &UriAuthority) -> Authority {
    let dial = request_authority(req, from);
    if !req.headers().contains_key(HOST) {
        if let Ok(value) = HeaderValue::from_str(dial.as_str()) {
            req.headers_mut().insert(HOST, value);
        }
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
    }
    dial
}

async fn send<C, T, B>(
    connector: C,
    authority: Authority,
    idle: Arc<Idle<B>>,
    mut req: Request<B>,
) -> Answer<B>
where
    C: tower::Service<Uri, Response = T> + Send,
    C::Error: Into<BoxError>,
    C::Future: Send,
    T: Read + Write + Unpin + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Idle::start_reaping(&idle);
    let mut connector = Some(connector);
    loop {
        let (mut conn, reused) = match idle.checkout() {
            Some(conn) => (conn, true),
            None => {
                let connector = connector.take().ok_or("no connector left")?;
                (Conn::connect(connector, &authority).await?, false)
            }
        };
        if reused && !conn.ready().await {
            // The server closed it while it was idle: the next one, or a new one.
            continue;
        }
        let sent = conn.sender.try_send_request(req);
        match conn.drive(sent).await {
            Ok(mut rsp) => {
                // What describes this connection (`Connection`, `Keep-Alive`, what `Connection`
                // names) stays with it: the pool, not the caller, decides whether it is reused.
                strip_hop_by_hop(rsp.headers_mut(), false);
                return Ok(rsp.map(|body| Http1Body {
                    inner: body,
                    conn: Some(conn),
                    idle,
                }));
            }
            Err(mut e) => match e.take_message() {
                // Refused before a byte was written (closed meanwhile): safe to send again.
                Some(back) if reused => req = back,
                _ => return Err(e.into_error().into()),
            },
        }
    }
}

/// One connection: the sending half and the connection hyper drives.
struct Conn<B> {
    sender: SendRequest<B>,
    // Boxed once per connection (it moves between futures, bodies and the pool), and erased:
    // what is read is only whether it has ended.
    conn: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>,
    ended: bool,
    /// The thread whose current-thread runtime registered the socket, or `None` if a
    /// multi-thread runtime did (see [`Home`]).
    home: Option<Home>,
}

/// Which thread a connection belongs to. A socket is registered with one runtime's event
/// loop, which is woken for its readiness and wakes whoever polls it; with a current-thread
/// runtime per thread (`serve::Workers`), a connection polled from another thread would have
/// every read and write cross threads. So a connection made on a current-thread runtime is
/// only reused on that runtime's thread (another thread makes its own); one made on a
/// multi-thread runtime, whose tasks move between threads anyway, by anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Home(u64);

impl Home {
    /// The calling thread: a number drawn once per thread from a process-wide counter (not
    /// `thread::current()`, which counts a reference each time; not a thread-local's address,
    /// which a later thread may get again).
    fn here() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            static ID: Cell<u64> = const { Cell::new(0) };
        }
        ID.with(|id| {
            if id.get() == 0 {
                id.set(NEXT.fetch_add(1, Relaxed));
            }
            Self(id.get())
        })
    }

    /// Where a connection made now belongs.
    fn for_new() -> Option<Self> {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::CurrentThread)).then(Self::here)
    }
}

impl<B> Conn<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn connect<C, T>(mut connector: C, authority: &Authority) -> Result<Self, BoxError>
    where
        T: Read + Write + Unpin + Send + 'static,
        C: tower::Service<Uri, Response = T>,
        C::Error: Into<BoxError>,
    {
        let uri = Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let io = connector
            .ready()
            .await
            .map_err(Into::into)?
            .call(uri)
            .await
            .map_err(Into::into)?;
        let (sender, conn): (_, Connection<T, B>) = Builder::new().handshake(io).await?;
        Ok(Self {
            sender,
            conn: Box::pin(conn),
            ended: false,
            home: Home::for_new(),
        })
    }

    /// Drives the connection's IO; notes when it has ended (closed by either side, or broken).
    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if !self.ended && self.conn.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
    }

    /// Whether a reused connection takes a request now. An idle one does after one poll of
    /// its connection; one that does not (still writing a request body the server answered
    /// early, say) is not waited for: it may never be ready.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            self.poll_conn(cx);
            if self.ended {
                return Poll::Ready(false);
            }
            Poll::Ready(matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(()))))
        })
        .await
    }

    /// Polls `fut` (the response) while driving the connection.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            self.poll_conn(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// A response body from [`Http1Pool`]: hyper's, with the connection it arrives on, which it
/// drives while it is read and gives back to the pool at its end.
pub struct Http1Body<B> {
    inner: Incoming,
    conn: Option<Conn<B>>,
    idle: Arc<Idle<B>>,
}

impl<B> std::fmt::Debug for Http1Body<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Body")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B> Body for Http1Body<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = this.conn.as_mut() {
            conn.poll_conn(cx);
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) | None => this.release(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Http1Body<B> {
    /// The body has ended: its connection can carry the next request.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.idle.checkin(conn);
        }
    }
}

impl<B> Drop for Http1Body<B> {
    /// A body dropped at its end (an empty one is often never polled) frees its connection;
    /// one dropped before its end takes the connection with it.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

/// The idle connections, newest last.
struct Idle<B> {
    conns: Mutex<VecDeque<(Conn<B>, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the task closing expired connections has been started.
    reaping: AtomicBool,
}

impl<B> Idle<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Conn<B>, Instant)>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest idle connection this thread may use (see [`Home`]), dropping any that
    /// expired.
    fn checkout(&self) -> Option<Conn<B>> {
        let now = Instant::now();
        let here = Home::here();
        let mut conns = self.lock();
        self.expire(&mut conns, now);
        let at = conns
            .iter()
            .rposition(|(conn, _)| conn.home.is_none_or(|home| home == here))?;
        conns.remove(at).map(|(conn, _)| conn)
    }

    fn checkin(&self, conn: Conn<B>) {
        if conn.ended || conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut conns = self.lock();
        self.expire(&mut conns, now);
        if conns.len() < self.max_idle {
            conns.push_back((conn, now));
        }
    }

    /// Starts the pool's task that closes expired idle connections, once (a relaxed load per
    /// request after that). It holds the pool weakly: it ends at its first wake-up after the
    /// pool is dropped. Outside a runtime there is none; connections then expire as the pool
    /// is used.
    fn start_reaping(idle: &Arc<Self>)
    where
        B: Send + 'static,
    {
        if idle.reaping.load(Relaxed) || idle.reaping.swap(true, Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(idle);
        let mut next = Instant::now() + idle.idle_timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep_until(next).await;
                let Some(idle) = pool.upgrade() else { return };
                next = idle.reap(Instant::now());
            }
        });
    }

    /// Closes the expired idle connections; says when the next one expires, or, with none
    /// idle, one timeout from now.
    fn reap(&self, now: Instant) -> Instant {
        let mut conns = self.lock();
        self.expire(&mut conns, now);
        conns.front().map_or(now, |(_, since)| *since) + self.idle_timeout
    }

    fn expire(&self, conns: &mut VecDeque<(Conn<B>, Instant)>, now: Instant) {
        while conns
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
        {
            conns.pop_front();
        }
    }
}
