//! What the proxy's listeners share: the boxed body type, accepting connections (within each
//! listener's bound) until the proxy drains, and each listener's counts in `/metrics`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use mesh_core::BoxError;
use mesh_core::drain::DrainWatch;
use mesh_core::serve::{Admission, ConnectionLimit, ServeConfig, Workers};
use mesh_metrics::{Collect, CountingIo, Exposition, TcpSeries};
use tokio::net::{TcpListener, TcpStream};

use super::config::Limits;

/// Response bodies as the proxy's servers send them: whatever the layers made, boxed.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose errors convert to [`BoxError`].
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed_unsync()
}

/// One listener (or a pair, IPv4 and IPv6, with one role): its bound, the deadlines its
/// connections are served with, what they count, and the workers that serve them.
#[derive(Clone, Debug)]
pub(crate) struct Listener {
    name: Arc<str>,
    limit: ConnectionLimit,
    /// How its HTTP connections are served (clones share the close counts).
    pub(crate) serve: ServeConfig,
    workers: Arc<Workers>,
}

impl Listener {
    /// Serves a connection [`accept`] returned with `serve`, counted in `series`, on the
    /// worker with fewer connections of two (the only one unless `scheduler = "per-core"`).
    pub(crate) fn spawn<S, F>(&self, tcp: TcpStream, series: &Arc<TcpSeries>, serve: S)
    where
        S: FnOnce(CountingIo<TcpStream>) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let series = Arc::clone(series);
        let handed = self
            .workers
            .spawn_connection(tcp, move |tcp| serve(CountingIo::new(tcp, series)));
        if let Err(error) = handed {
            tracing::warn!(%error, listener = self.name(), "closing a connection no worker could take");
        }
    }

    /// The name it has in logs and in the `listener` label.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A place for the connection `tcp` just accepted, or `None`: then it is reset at once (so
    /// that its client fails fast and can go elsewhere) and counted; the first refusal and every
    /// 1,024th are logged, so that a flood of them does not become a flood of logs.
    pub(crate) fn admit(&self, tcp: &TcpStream, peer: std::net::SocketAddr) -> Option<Admission> {
        let admission = self.limit.try_admit();
        if admission.is_none() {
            let _ = tcp.set_zero_linger();
            let refused = self.limit.refused();
            if refused == 1 || refused % 1024 == 0 {
                tracing::warn!(
                    listener = self.name(),
                    %peer,
                    max = self.limit.max(),
                    refused,
                    "refusing a connection: the listener is at its bound (max_connections)"
                );
            }
        }
        admission
    }
}

/// Every listener of a proxy, for `/metrics`, and the runtimes serving them (whose tasks it
/// counts). Written while the proxy starts, read per scrape.
#[derive(Clone, Debug)]
pub(crate) struct Listeners {
    listeners: Arc<Mutex<Vec<Listener>>>,
    workers: Arc<Workers>,
}

impl Listeners {
    /// No listeners yet, served by `workers`.
    pub(crate) fn new(workers: Arc<Workers>) -> Self {
        Self {
            listeners: Arc::default(),
            workers,
        }
    }

    /// A listener called `name`, with `limits`.
    pub(crate) fn add(&self, name: &str, limits: &Limits) -> Listener {
        let listener = Listener {
            name: name.into(),
            limit: ConnectionLimit::new(limits.max_connections),
            serve: limits.serve_config(),
            workers: Arc::clone(&self.workers),
        };
        self.lock().push(listener.clone());
        listener
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collect for Listeners {
    fn collect(&self, out: &mut Exposition<'_>) {
        let listeners = self.lock().clone();
        let labels: Vec<String> = listeners
            .iter()
            .map(|l| format!("listener=\"{}\"", l.name.replace('"', "'")))
            .collect();
        let mut per_listener = |name, kind, help, extra: &str, value: fn(&Listener) -> u64| {
            out.family(name, kind, help);
            for (l, labels) in listeners.iter().zip(&labels) {
                out.sample("", labels, extra, value(l));
            }
        };
        per_listener(
            "mesh_listener_connections_open",
            "gauge",
            "Connections a listener holds open now.",
            "",
            |l| l.limit.open() as u64,
        );
        per_listener(
            "mesh_listener_connections_max",
            "gauge",
            "The most connections a listener holds open at once (`max_connections`).",
            "",
            |l| l.limit.max() as u64,
        );
        per_listener(
            "mesh_listener_refused_total",
            "counter",
            "Connections closed as soon as accepted, because the listener was at its bound.",
            "reason=\"connection_limit\"",
            |l| l.limit.refused(),
        );
        out.family(
            "mesh_listener_closed_total",
            "counter",
            "Connections the proxy closed on a client's account: no request head in time, idle, or an HTTP/2 flood.",
        );
        for (l, labels) in listeners.iter().zip(&labels) {
            for (reason, n) in l.serve.stats().by_reason() {
                out.sample("", labels, &format!("reason=\"{reason}\""), n);
            }
        }
        out.family(
            "mesh_process_tasks",
            "gauge",
            "Tasks alive in the proxy's runtimes (connections, streams, watchers).",
        );
        out.sample("", "", "", self.workers.alive_tasks() as u64);
        out.family(
            "mesh_process_open_fds",
            "gauge",
            "File descriptors the proxy process holds open (sockets, files).",
        );
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            out.sample("", "", "", fds.count() as u64);
        }
    }
}

/// The next connection on `listener` that `bounds` admits, or `None` once the proxy drains;
/// [`Listener::spawn`] serves it.
pub(crate) async fn accept(
    listener: &TcpListener,
    drain: &mut DrainWatch,
    bounds: &Listener,
) -> Option<(TcpStream, Admission)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Some(admission) = bounds.admit(&tcp, peer) else {
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, admission));
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = bounds.name(), "accept failed");
                    // Out of file descriptors, say: pause rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = drain.signaled() => return None,
        }
    }
}

/// `mesh_proxy_info`: who this proxy is (its identity, with the workload's labels on every line),
/// so that a reader of many proxies' metrics (mesh-viz) can tell which workload a peer identity
/// in another proxy's series belongs to.
pub(crate) struct ProxyInfo(pub(crate) mesh_tls::CredentialStore);

impl Collect for ProxyInfo {
    fn collect(&self, out: &mut Exposition<'_>) {
        let credentials = self.0.current();
        out.family(
            "mesh_proxy_info",
            "gauge",
            "This proxy: its current identity and version (always 1).",
        );
        let labels = format!(
            "identity=\"{}\",version=\"{}\"",
            credentials
                .identity()
                .as_str()
                .replace(['"', '\\', '\n'], "_"),
            env!("CARGO_PKG_VERSION"),
        );
        out.sample("", &labels, "", 1);
    }
}
