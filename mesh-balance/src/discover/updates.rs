//! A discovery stream fed from a channel: for sources that run as tasks (file, DNS), and for
//! anyone pushing changes by hand (a control plane, a test).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use mesh_core::Endpoint;
use tokio::sync::mpsc;
use tower::discover::Change;

/// A change to an endpoint set.
pub type EndpointChange = Change<SocketAddr, Endpoint>;

/// Endpoint changes as a `Stream`, in the order they were sent. Ends when every sender is
/// gone (the balancer then keeps the set it has).
#[derive(Debug)]
pub struct Updates {
    rx: mpsc::UnboundedReceiver<EndpointChange>,
    /// Keeps a source's task alive exactly as long as the stream.
    _task: Option<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends changes into an [`Updates`] stream.
#[derive(Clone, Debug)]
pub struct UpdateSender {
    tx: mpsc::UnboundedSender<EndpointChange>,
}

impl UpdateSender {
    /// Adds or replaces `endpoint`. Returns `false` once the stream is gone.
    pub fn insert(&self, endpoint: Endpoint) -> bool {
        self.tx
            .send(Change::Insert(endpoint.addr, endpoint))
            .is_ok()
    }

    /// Removes the endpoint at `addr`. Returns `false` once the stream is gone.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        self.tx.send(Change::Remove(addr)).is_ok()
    }

    /// Whether the stream is gone.
    #[cfg(feature = "destination")]
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub(crate) fn send(&self, change: EndpointChange) -> bool {
        self.tx.send(change).is_ok()
    }
}

/// A stream of changes and the handle that feeds it.
pub fn channel() -> (UpdateSender, Updates) {
    let (tx, rx) = mpsc::unbounded_channel();
    (UpdateSender { tx }, Updates { rx, _task: None })
}

impl Updates {
    /// Ties `task` (the source feeding this stream) to the stream's life.
    pub(crate) fn with_task(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self._task = Some(AbortOnDrop(task));
        self
    }
}

impl Stream for Updates {
    type Item = Result<EndpointChange, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// The changes that turn `current` into `next`: removals for what is gone (unless
/// `keep_missing`), inserts for what is new or different. Updates `current`.
pub(crate) fn apply(
    current: &mut HashMap<SocketAddr, Endpoint>,
    next: Vec<Endpoint>,
    keep_missing: bool,
    sender: &UpdateSender,
) -> bool {
    let next: HashMap<SocketAddr, Endpoint> = next.into_iter().map(|e| (e.addr, e)).collect();
    if !keep_missing {
        let gone: Vec<SocketAddr> = current
            .keys()
            .filter(|addr| !next.contains_key(addr))
            .copied()
            .collect();
        for addr in gone {
            current.remove(&addr);
            if !sender.send(Change::Remove(addr)) {
                return false;
            }
        }
    }
    for (addr, endpoint) in next {
        if current.get(&addr) != Some(&endpoint) {
            current.insert(addr, endpoint.clone());
            if !sender.send(Change::Insert(addr, endpoint)) {
                return false;
            }
        }
    }
    true
}
