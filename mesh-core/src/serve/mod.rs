//! Serving one accepted connection as HTTP/1 or HTTP/2 until it closes or the process drains
//! (feature `server`), with the defences a server facing hostile clients needs: a deadline for
//! each request head, an idle deadline, bounds on HTTP/2 streams and headers, a guard against
//! HTTP/2 frame floods ([`FloodLimits`]), and a bound on connections per listener
//! ([`ConnectionLimit`]); and [`Workers`], a current-thread runtime per thread, each accepting
//! from the same listener, for serving on several cores without work stealing.

mod activity;
mod flood;
mod limit;
mod watch;
mod woken;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain::DrainWatch;
use crate::error::BoxError;

use self::activity::{Activity, HeadStart, Track, Wait};
use self::flood::FloodGuard;
pub use self::flood::{Flood, FloodLimits};
pub use self::limit::{Admission, ConnectionLimit};
use self::watch::ReadWatch;
use self::woken::WokenOnly;
pub use self::workers::Workers;

/// The largest request head accepted: HTTP/1's read buffer and HTTP/2's header list. A client
/// that sends more gets 431 and the connection goes on (HTTP/1) or the stream is refused.
pub const MAX_HEADERS: usize = 64 * 1024;

/// How connections are served: deadlines and bounds. Cheap to clone; clones share one
/// [`ServeStats`], so one config per listener counts that listener's closes.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// A request head must be read whole within this of its first byte, and a new connection's
    /// first request within this of the connection's start (10 s by default). A client that
    /// trickles a head (slowloris) or says nothing is closed then.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed: HTTP/1 at once, HTTP/2
    /// with a GOAWAY (60 s by default).
    pub idle_timeout: Duration,
    /// HTTP/2 streams a client may have open at once; more are refused (100 by default).
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the server has even accepted them (20).
    pub max_pending_accept_reset_streams: usize,
    /// The HTTP/2 frame floods a connection may not send.
    pub flood: FloodLimits,
    stats: Arc<ServeStats>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            max_pending_accept_reset_streams: 20,
            flood: FloodLimits::default(),
            stats: Arc::default(),
        }
    }
}

impl ServeConfig {
    /// Sets the request head deadline.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets the idle deadline.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the bound on concurrent HTTP/2 streams.
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// Sets the HTTP/2 flood limits.
    pub fn flood(mut self, limits: FloodLimits) -> Self {
        self.flood = limits;
        self
    }

    /// The counts of connections this config's servers closed, by reason.
    pub fn stats(&self) -> &Arc<ServeStats> {
        &self.stats
    }
}

/// Connections closed by the server's own deadlines and guards.
#[derive(Debug, Default)]
pub struct ServeStats {
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    floods: [AtomicU64; 3],
}

impl ServeStats {
    /// Connections closed because a request head did not arrive in time.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Relaxed)
    }

    /// Connections closed because they were idle.
    pub fn idle_timeouts(&self) -> u64 {
        self.idle_timeouts.load(Relaxed)
    }

    /// HTTP/2 connections closed for a flood of `kind`.
    pub fn floods(&self, kind: Flood) -> u64 {
        self.floods[kind as usize].load(Relaxed)
    }

    /// Every count with its stable reason name (for metrics).
    pub fn by_reason(&self) -> [(&'static str, u64); 5] {
        [
            ("header_timeout", self.header_timeouts()),
            ("idle_timeout", self.idle_timeouts()),
            (Flood::Control.reason(), self.floods(Flood::Control)),
            (Flood::Resets.reason(), self.floods(Flood::Resets)),
            (
                Flood::Continuations.reason(),
                self.floods(Flood::Continuations),
            ),
        ]
    }

    fn flood(&self, kind: Flood) {
        self.floods[kind as usize].fetch_add(1, Relaxed);
    }
}

/// Serves `io` with `service` in `version` (HTTP/2 for [`Version::HTTP_2`], else HTTP/1.1 with
/// upgrades). When `drain` is signalled, the connection is told to finish its in-flight
/// requests and close; the watch is held until then, so a drain waits for it. The service is
/// cloned for each request, so a concrete (unboxed) stack is cheapest.
///
/// ```no_run
/// use http_body_util::Full;
/// use mesh_core::drain::Drain;
/// use mesh_core::serve::serve_connection;
///
/// # async fn run() -> std::io::Result<()> {
/// let (_drain, watch) = Drain::new();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (tcp, _) = listener.accept().await?;
/// let hello = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi"))))
/// });
/// serve_connection(tcp, http::Version::HTTP_11, hello, watch).await;
/// # Ok(())
/// # }
/// ```
pub fn serve_connection<I, S, B>(
    io: I,
    version: Version,
    service: S,
    drain: DrainWatch,
) -> impl Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_connection_with(io, version, service, drain, ServeConfig::default())
}

/// Like [`serve_connection`], with `config`'s deadlines and bounds (and its stats counting
/// what this connection's server closed).
// Not an `async fn`: the connection is built here, before the future that serves it, so that
// the future holds it once (see `Served`).
pub fn serve_connection_with<I, S, B>(
    io: I,
    version: Version,
    service: S,
    drain: DrainWatch,
    config: ServeConfig,
) -> impl Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Activity::new();
    let service = Track::new(service, Arc::clone(&activity));
    let http2 = version == Version::HTTP_2;
    let conn: Served = if http2 {
        let guard = FloodGuard::new(&config.flood, Arc::clone(&config.stats));
        Box::pin(http2_connection(
            ReadWatch::new(io, guard),
            service,
            &config,
        ))
    } else {
        let io = ReadWatch::new(io, HeadStart(Arc::clone(&activity)));
        Box::pin(http1_connection(io, service))
    };
    run(conn, http2, drain, config, activity)
}

/// A connection being served, boxed: one allocation sized to what it is (hyper's HTTP/2
/// server is kilobytes an HTTP/1 connection need not carry), held once. A future keeps room
/// for everything it holds across an await, and a connection handed from an `async` caller
/// to an `async` callee was kept once in each: an HTTP/1 connection's future was 2.7 KB
/// around its 650-byte connection.
type Served = std::pin::Pin<Box<dyn Graceful + Send>>;

/// A served connection hyper can be asked to finish gracefully.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn finish(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn finish(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn finish(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// An HTTP/2 connection, with `config`'s stream limits. Each version has its own hyper server:
/// hyper-util's `auto` server would take an HTTP/2 preface on an HTTP/1 connection
/// (`http1_only` does nothing with upgrades), which would let a client reach HTTP/2 past the
/// flood guard (found by the `request_path` fuzz target).
fn http2_connection<I, S, B>(
    io: I,
    service: S,
    config: &ServeConfig,
) -> impl Graceful + Send + use<I, S, B>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADERS as u32)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_pending_accept_reset_streams(config.max_pending_accept_reset_streams)
        .serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        )
}

/// An HTTP/1.1 connection, with upgrades.
fn http1_connection<I, S, B>(io: I, service: S) -> impl Graceful + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The head deadline is kept here (see `activity`): hyper's would close idle
        // keep-alive connections too.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADERS)
        .serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .with_upgrades()
}

/// Serves `conn` until it ends, drains, or breaks a deadline.
async fn run(
    mut conn: Served,
    http2: bool,
    mut drain: DrainWatch,
    config: ServeConfig,
    activity: Arc<Activity>,
) {
    let (header, idle) = (config.header_timeout, config.idle_timeout);
    // The connection first; the drain and the deadlines only when they woke the task.
    let drained = WokenOnly::new(drain.signaled());
    let expired = WokenOnly::new(activity.expired(header, idle));
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        () = drained => {
            conn.as_mut().finish();
            conn.await
        }
        wait = expired => {
            if wait == Wait::Head {
                config.stats.header_timeouts.fetch_add(1, Relaxed);
                tracing::debug!(?header, "closing a connection: no request head in time");
                if !http2 {
                    // A head that does not arrive is not waited for politely: the connection
                    // is dropped, and with it whatever half-request was read.
                    return;
                }
                // HTTP/2's head deadline is its first request's; the client gets a GOAWAY.
            } else {
                config.stats.idle_timeouts.fetch_add(1, Relaxed);
                tracing::debug!(?idle, "closing an idle connection");
            }
            conn.as_mut().finish();
            // A GOAWAY'd client gets a head deadline's worth of time to go.
            match tokio::time::timeout(header, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        // A client that reset its connection is not the server's failure.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
