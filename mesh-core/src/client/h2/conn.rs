//! An [`Http2Pool`](super::Http2Pool)'s one connection: who makes it, who waits for it, and
//! the task that drives it (pings, the idle deadline) until it ends.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Waker};

use bytes::Bytes;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, MissedTickBehavior};
use tower::ServiceExt;

use super::Http2Settings;
use crate::error::BoxError;

/// A handle that opens streams on a connection.
pub(super) type Handle = h2::client::SendRequest<Bytes>;

/// Starts the task that makes connection attempt `attempt` for the pool behind the `Weak`, to
/// where the URI says (the connector's key).
type Dial = Box<dyn Fn(Weak<Shared>, u64, Uri) + Send + Sync>;

/// What the clones of a pool, their requests and the connection's task share.
pub(super) struct Shared {
    slot: Mutex<Slot>,
    /// Requests sent, read by the connection's task to tell an idle connection.
    sent: AtomicU64,
    settings: Http2Settings,
    dial: Dial,
}

/// The pool's connection, and the number of the last attempt at one.
struct Slot {
    state: State,
    attempts: u64,
}

enum State {
    /// None, and none being made.
    Empty,
    /// Attempt `attempt` is connecting; these tasks wait for it.
    Connecting { attempt: u64, waiters: Vec<Waker> },
    /// Attempt `attempt`'s connection is up.
    Ready { attempt: u64, handle: Handle },
    /// Attempt `attempt` failed; the requests that waited for it take this error, the next
    /// request tries again.
    Failed { attempt: u64, error: ConnectFailed },
}

/// What a request gets when it asks for the connection.
pub(super) enum Checkout {
    /// The connection, from attempt `.1`.
    Ready(Handle, u64),
    /// Attempt `.0` is connecting; the caller is woken when it is done (its waker is the
    /// attempt's waiter `.1`, which it names when it asks again).
    Waiting(u64, usize),
    /// The attempt the caller waited for failed.
    Failed(ConnectFailed),
}

impl Shared {
    pub(super) fn new<C, T>(connector: C, settings: Http2Settings) -> Arc<Self>
    where
        C: tower::Service<Uri, Response = T> + Clone + Send + Sync + 'static,
        C::Error: Into<BoxError>,
        C::Future: Send,
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let dial: Dial = Box::new(move |pool, attempt, uri| {
            tokio::spawn(connect(connector.clone(), pool, attempt, uri));
        });
        Arc::new(Self {
            slot: Mutex::new(Slot {
                state: State::Empty,
                attempts: 0,
            }),
            sent: AtomicU64::new(0),
            settings,
            dial,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_connected(&self) -> bool {
        matches!(self.lock().state, State::Ready { .. })
    }

    /// The connection for a request to `uri` that waits as `waited` (an attempt, and its
    /// place among that attempt's waiters) if it waited before, starting an attempt when there
    /// is none. Constant time however many wait: a request names its place.
    pub(super) fn checkout(
        self: &Arc<Self>,
        uri: &Uri,
        waited: Option<(u64, usize)>,
        cx: &mut Context<'_>,
    ) -> Checkout {
        let mut slot = self.lock();
        match &mut slot.state {
            State::Ready { attempt, handle } => return Checkout::Ready(handle.clone(), *attempt),
            State::Connecting { attempt, waiters } => {
                let place = match waited {
                    Some((a, place)) if a == *attempt && place < waiters.len() => {
                        if !waiters[place].will_wake(cx.waker()) {
                            waiters[place] = cx.waker().clone();
                        }
                        place
                    }
                    _ => {
                        waiters.push(cx.waker().clone());
                        waiters.len() - 1
                    }
                };
                return Checkout::Waiting(*attempt, place);
            }
            State::Failed { attempt, error } if waited.map(|(a, _)| a) == Some(*attempt) => {
                return Checkout::Failed(error.clone());
            }
            // None, or a failure this request did not wait for: try (again).
            State::Empty | State::Failed { .. } => {}
        }
        slot.attempts += 1;
        let attempt = slot.attempts;
        slot.state = State::Connecting {
            attempt,
            waiters: vec![cx.waker().clone()],
        };
        drop(slot);
        (self.dial)(Arc::downgrade(self), attempt, uri.clone());
        Checkout::Waiting(attempt, 0)
    }

    /// Counts a request sent (the idle check reads it).
    pub(super) fn sent(&self) {
        self.sent.fetch_add(1, Relaxed);
    }

    /// Attempt `attempt` is done: its connection, or its error.
    fn connected(&self, attempt: u64, result: Result<Handle, ConnectFailed>) {
        let mut slot = self.lock();
        let waiters = match &mut slot.state {
            State::Connecting {
                attempt: a,
                waiters,
            } if *a == attempt => std::mem::take(waiters),
            _ => return,
        };
        slot.state = match result {
            Ok(handle) => State::Ready { attempt, handle },
            Err(error) => State::Failed { attempt, error },
        };
        drop(slot);
        for waker in waiters {
            waker.wake();
        }
    }

    /// Attempt `attempt`'s connection takes no more requests (it closed, or it refused one
    /// before it was sent): the next request makes another.
    pub(super) fn forget(&self, attempt: u64) {
        let mut slot = self.lock();
        if matches!(slot.state, State::Ready { attempt: a, .. } if a == attempt) {
            slot.state = State::Empty;
        }
    }
}

/// A connection attempt's error, shared by every request that waited for it. Its source is
/// the error itself, so [`ErrorKind::of`](crate::ErrorKind::of) finds what it was.
#[derive(Clone, Debug)]
pub(super) struct ConnectFailed(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP/2 connection failed: {}", self.0)
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Attempt `attempt`: connect, hand the connection to the pool, then drive it until it ends.
/// Holds the pool weakly: a pool that is dropped takes its connection with it.
async fn connect<C, T>(connector: C, pool: Weak<Shared>, attempt: u64, uri: Uri)
where
    C: tower::Service<Uri, Response = T> + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Some(settings) = pool.upgrade().map(|p| p.settings.clone()) else {
        return;
    };
    let dialed = async {
        let io = connector.oneshot(uri).await.map_err(Into::into)?;
        h2::client::Builder::new()
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_send_buffer_size(1024 * 1024)
            .enable_push(false)
            .handshake::<_, Bytes>(TokioIo::new(io))
            .await
            .map_err(BoxError::from)
    };
    let (handle, connection) = match dialed.await {
        Ok(made) => made,
        Err(error) => {
            if let Some(pool) = pool.upgrade() {
                pool.connected(attempt, Err(ConnectFailed(Arc::from(error))));
            }
            return;
        }
    };
    match pool.upgrade() {
        Some(shared) => shared.connected(attempt, Ok(handle.clone())),
        None => return,
    }
    drive(connection, handle, &pool, attempt, &settings).await;
    if let Some(pool) = pool.upgrade() {
        pool.forget(attempt);
    }
}

/// Drives `connection` until it ends: pings it every interval (closing it when a ping goes
/// unanswered), and lets it go when no request was sent on it for the idle timeout or the pool
/// is gone: it then takes no new streams, finishes the open ones and closes.
async fn drive<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    handle: Handle,
    pool: &Weak<Shared>,
    attempt: u64,
    settings: &Http2Settings,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pings = connection.ping_pong();
    let mut handle = Some(handle);
    let interval = settings.keep_alive_interval;
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pong_due: Option<Instant> = None;
    let (mut sent_before, mut idle_since) = (0, Instant::now());
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "HTTP/2 connection ended");
                }
                return;
            }
            pong = poll_fn(|cx| match pings.as_mut() {
                Some(pings) => pings.poll_pong(cx),
                None => std::task::Poll::Pending,
            }), if pong_due.is_some() => {
                if pong.is_ok() {
                    pong_due = None;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if pong_due.is_some_and(|due| now >= due) {
                    tracing::info!(timeout = ?settings.keep_alive_timeout, "closing an HTTP/2 connection whose peer does not answer pings");
                    return;
                }
                if pong_due.is_none() {
                    if let Some(pings) = pings.as_mut() {
                        if pings.send_ping(h2::Ping::opaque()).is_ok() {
                            pong_due = Some(now + settings.keep_alive_timeout);
                        }
                    }
                }
                if handle.is_none() {
                    continue;
                }
                let Some(shared) = pool.upgrade() else {
                    // The pool is gone: no new streams; the open ones finish.
                    handle = None;
                    continue;
                };
                let sent = shared.sent.load(Relaxed);
                if sent != sent_before {
                    (sent_before, idle_since) = (sent, now);
                } else if now.duration_since(idle_since) >= settings.idle_timeout {
                    tracing::debug!("letting an idle HTTP/2 connection go");
                    shared.forget(attempt);
                    handle = None;
                }
            }
        }
    }
}
