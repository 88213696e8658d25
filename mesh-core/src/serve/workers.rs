//! Serving on several cores without sharing a scheduler: [`Workers`], one current-thread
//! runtime per thread, each accepting from the same listening socket.
//!
//! tokio's multi-thread runtime balances tasks across its threads by work stealing: a woken
//! task may run on another thread than the one that woke it, and an idle thread looks for work
//! in the others' queues. That keeps every core busy whatever the load's shape, and costs, per
//! request, wake-ups across threads and the atomics of shared queues (measured on a proxy hop:
//! a second worker made each request cost 8-26 % more CPU). A proxy's connections are
//! independent of each other, so it can instead give each thread a runtime of its own and let
//! each accept connections: a connection, and every request on it, then stays on the thread
//! that accepted it, as in nginx and HAProxy.
//!
//! How connections are spread: every worker registers the *same* listening socket (a
//! duplicated descriptor) with its own event loop, and whichever worker is free to call
//! `accept` first takes the connection; [`Workers::spawn`] then gives it to the less loaded of
//! two workers drawn at random (by connections open), as HAProxy's listeners hand connections
//! to threads. Without that hand-off, a burst of connections goes mostly to the worker that
//! happened to be running (measured: splits of 60/40 and worse, and req/s that moved by half
//! between runs). The alternative to the shared socket, one `SO_REUSEPORT` socket per worker,
//! has the kernel hash each connection to a socket whatever that worker is doing, and resets
//! the connections waiting in a socket's queue when it is closed (as each worker's is when the
//! process drains). The price of sharing one socket: a new connection wakes every idle worker,
//! and all but one find nothing to accept; with the hand-off, a connection may also cross to
//! another thread once. Both cost microseconds per connection, not per request.
//!
//! What this gives up: a connection cannot move. One HTTP/2 connection carrying much of the
//! traffic (the pooled connection from another proxy, say) is served by one core, where work
//! stealing would spread its streams; the multi-thread runtime is the better choice there.

use std::future::Future;
use std::io;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::random::{Random, ThreadRandom};

/// Runtimes that serve connections side by side: the caller's, plus threads of their own each
/// running a runtime (normally current-thread) until this is dropped.
///
/// ```
/// use mesh_core::serve::Workers;
///
/// # fn main() -> std::io::Result<()> {
/// let main = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let workers = Workers::start(main.handle().clone(), 1, || {
///     tokio::runtime::Builder::new_current_thread().enable_all().build()
/// })?;
/// main.block_on(async {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     // The same socket, registered with each worker: every worker can accept from it.
///     let shared = workers.share(listener)?;
///     assert_eq!(shared.len(), 2);
///     for (handle, listener) in workers.handles().zip(shared) {
///         handle.spawn(async move {
///             while let Ok((_tcp, _peer)) = listener.accept().await {
///                 // Served on this worker's thread.
///             }
///         });
///     }
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Tasks each worker runs that [`Workers::spawn`] gave it and that have not ended.
    loads: Arc<[AtomicUsize]>,
    /// Dropped with this: each thread's runtime then returns from `block_on` and drops its
    /// tasks.
    _stop: watch::Sender<()>,
}

impl Workers {
    /// Only the runtime of `handle`: [`Workers::share`] registers a listener once.
    pub fn single(handle: Handle) -> Self {
        Self {
            handles: vec![handle],
            loads: Arc::new([AtomicUsize::new(0)]),
            _stop: watch::channel(()).0,
        }
    }

    /// The runtime of `first` and `extra` more threads (`mesh-worker-1`, ...), each running
    /// the runtime `build` makes, there, until this is dropped. `build` runs on each new thread
    /// (a current-thread runtime belongs to the thread that drives it); the first error it
    /// returns, or a thread that cannot be started, is this call's error, and the threads
    /// started before it end.
    pub fn start<F>(first: Handle, extra: usize, build: F) -> io::Result<Self>
    where
        F: Fn() -> io::Result<Runtime> + Send + Sync + 'static,
    {
        let build = Arc::new(build);
        let (stop, stopped) = watch::channel(());
        let mut handles = Vec::with_capacity(extra + 1);
        handles.push(first);
        for n in 1..=extra {
            let (started, handle) = std::sync::mpsc::sync_channel(1);
            let build = Arc::clone(&build);
            let mut stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("mesh-worker-{n}"))
                .spawn(move || {
                    let runtime = match build() {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    if started.send(Ok(runtime.handle().clone())).is_err() {
                        return;
                    }
                    // Ends when the sender is dropped (no value is ever sent).
                    runtime.block_on(async move {
                        let _ = stopped.changed().await;
                    });
                })?;
            // The thread answers as soon as its runtime is built (or failed to be).
            let handle = handle.recv().map_err(|_| {
                io::Error::other(format!("mesh-worker-{n} ended before its runtime started"))
            })??;
            handles.push(handle);
        }
        Ok(Self {
            loads: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
            handles,
            _stop: stop,
        })
    }

    /// How many runtimes serve (the first one's included).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none; never true: there is always the first.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Each runtime's handle, the first one's first: where to spawn each worker's accept loop.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.handles.iter()
    }

    /// Tasks alive in all the runtimes together.
    pub fn alive_tasks(&self) -> usize {
        self.handles
            .iter()
            .map(|handle| handle.metrics().num_alive_tasks())
            .sum()
    }

    /// Runs `task` (a connection, say) on the worker with fewer of the tasks given this way
    /// still running, of two drawn at random (with two workers: the less loaded; with one:
    /// that one). Two random choices keep the pick O(1) however many workers there are, and
    /// avoid sending a burst to the one worker that looked least loaded when it began.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let n = self.handles.len();
        let pick = if n <= 1 {
            0
        } else {
            let a = ThreadRandom.below(n);
            // A second worker, never the first again.
            let b = (a + 1 + ThreadRandom.below(n - 1)) % n;
            if self.loads[b].load(Relaxed) < self.loads[a].load(Relaxed) {
                b
            } else {
                a
            }
        };
        let load = Load::count(Arc::clone(&self.loads), pick);
        self.handles[pick].spawn(async move {
            let _load = load;
            task.await
        })
    }

    /// Serves the accepted connection `tcp` on the worker [`Workers::spawn`] picks, registered
    /// with that worker's event loop (a socket stays with the runtime that registered it: one
    /// served elsewhere would have each of its readiness events cross threads). Fails, with the
    /// connection closed, if it cannot be taken from the accepting worker's event loop; one
    /// that the picked worker cannot register is logged and closed.
    pub fn spawn_connection<S, F>(&self, tcp: TcpStream, serve: S) -> io::Result<()>
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        if self.handles.len() == 1 {
            self.spawn(serve(tcp));
            return Ok(());
        }
        let socket = tcp.into_std()?;
        self.spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(tcp) => serve(tcp).await,
                Err(error) => tracing::warn!(
                    %error,
                    "closing a connection its worker could not register"
                ),
            }
        });
        Ok(())
    }

    /// How many tasks given by [`Workers::spawn`] each worker runs now, in the order of
    /// [`handles`](Self::handles).
    pub fn loads(&self) -> Vec<usize> {
        self.loads.iter().map(|load| load.load(Relaxed)).collect()
    }

    /// `listener`'s socket registered with each runtime, in the order of
    /// [`handles`](Self::handles): an accept loop on each takes connections from the one
    /// socket. Fails if the socket cannot be duplicated (out of descriptors) or registered.
    pub fn share(&self, listener: TcpListener) -> io::Result<Vec<TcpListener>> {
        // Leaves the socket in non-blocking mode; the duplicates share that flag.
        let socket: StdListener = listener.into_std()?;
        self.handles
            .iter()
            .map(|handle| {
                let duplicate = socket.try_clone()?;
                let _entered = handle.enter();
                TcpListener::from_std(duplicate)
            })
            .collect()
    }
}

/// One task counted in its worker's load until it ends or is dropped unfinished.
struct Load {
    loads: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Load {
    fn count(loads: Arc<[AtomicUsize]>, worker: usize) -> Self {
        loads[worker].fetch_add(1, Relaxed);
        Self { loads, worker }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.loads[self.worker].fetch_sub(1, Relaxed);
    }
}
