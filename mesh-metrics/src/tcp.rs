//! Connection-level metrics: connections opened and closed, bytes each way, TLS handshakes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Labels;
use crate::expose::{Collect, Exposition};
use crate::family::{DEFAULT_LABEL_SET_CAP, Family};

/// The connection counters of one label set.
#[derive(Debug, Default)]
pub struct TcpSeries {
    opened: AtomicU64,
    closed: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    handshakes: AtomicU64,
    /// Handshake failures by reason; failures are rare, so a short list under a lock will do.
    handshake_failures: Mutex<Vec<(&'static str, u64)>>,
}

impl TcpSeries {
    /// A connection was opened.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Relaxed);
    }

    /// A connection was closed.
    pub fn closed(&self) {
        self.closed.fetch_add(1, Relaxed);
    }

    /// `n` bytes were read from the peer.
    pub fn bytes_read(&self, n: u64) {
        self.read.fetch_add(n, Relaxed);
    }

    /// `n` bytes were written to the peer.
    pub fn bytes_written(&self, n: u64) {
        self.written.fetch_add(n, Relaxed);
    }

    /// A TLS handshake succeeded.
    pub fn handshake_succeeded(&self) {
        self.handshakes.fetch_add(1, Relaxed);
    }

    /// A TLS handshake failed for `reason`, a short fixed name such as `"unknown_ca"`,
    /// `"no_client_cert"` or `"timeout"` (it becomes a label value, so it must come from a
    /// small set).
    pub fn handshake_failed(&self, reason: &'static str) {
        let mut failures = self
            .handshake_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match failures.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => failures.push((reason, 1)),
        }
    }

    /// The values so far.
    pub fn snapshot(&self) -> TcpSnapshot {
        TcpSnapshot {
            opened: self.opened.load(Relaxed),
            closed: self.closed.load(Relaxed),
            bytes_read: self.read.load(Relaxed),
            bytes_written: self.written.load(Relaxed),
            handshakes: self.handshakes.load(Relaxed),
            handshake_failures: self
                .handshake_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The typed values of one connection label set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpSnapshot {
    /// Connections opened.
    pub opened: u64,
    /// Connections closed.
    pub closed: u64,
    /// Bytes read from peers.
    pub bytes_read: u64,
    /// Bytes written to peers.
    pub bytes_written: u64,
    /// TLS handshakes that succeeded.
    pub handshakes: u64,
    /// TLS handshakes that failed, by reason.
    pub handshake_failures: Vec<(&'static str, u64)>,
}

impl TcpSnapshot {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.opened.saturating_sub(self.closed)
    }

    /// Handshake failures for `reason`.
    pub fn handshake_failures(&self, reason: &str) -> u64 {
        self.handshake_failures
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// Connection metrics by label set `L` (for example direction and peer). Cheap to clone.
pub struct TcpMetrics<L> {
    family: Arc<Family<L, TcpSeries>>,
    prefix: Arc<str>,
}

impl<L> Clone for TcpMetrics<L> {
    fn clone(&self) -> Self {
        Self {
            family: Arc::clone(&self.family),
            prefix: Arc::clone(&self.prefix),
        }
    }
}

impl<L> std::fmt::Debug for TcpMetrics<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpMetrics")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<L: Labels> Default for TcpMetrics<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Labels> TcpMetrics<L> {
    /// Metrics named `mesh_tcp_*`, keeping up to 10,000 label sets.
    pub fn new() -> Self {
        Self::with_options("mesh_tcp", DEFAULT_LABEL_SET_CAP)
    }

    /// Metrics named `{prefix}_*`, keeping up to `cap` label sets.
    pub fn with_options(prefix: &str, cap: usize) -> Self {
        Self {
            family: Arc::new(Family::new(cap)),
            prefix: prefix.into(),
        }
    }

    /// The series for `labels`.
    pub fn series(&self, labels: &L) -> Arc<TcpSeries> {
        self.family.get_or_create(labels)
    }

    /// Every label set's values.
    pub fn snapshot(&self) -> Vec<(L, TcpSnapshot)> {
        let mut out = Vec::new();
        self.family
            .for_each(|labels, s| out.push((labels.clone(), s.snapshot())));
        out
    }
}

/// Reads one counter of a snapshot.
type Field = fn(&TcpSnapshot) -> u64;

impl<L: Labels> Collect for TcpMetrics<L> {
    fn collect(&self, out: &mut Exposition<'_>) {
        let mut rows = Vec::new();
        self.family
            .for_each(|labels, s| rows.push((out.labels(labels), s.snapshot())));
        if self.family.overflowed() > 0 {
            rows.push((
                "overflow=\"true\"".to_owned(),
                self.family.overflow().snapshot(),
            ));
        }
        let p = &*self.prefix;
        let counters: [(&str, &str, Field); 5] = [
            ("connections_opened_total", "Connections opened.", |s| {
                s.opened
            }),
            ("connections_closed_total", "Connections closed.", |s| {
                s.closed
            }),
            ("read_bytes_total", "Bytes read from peers.", |s| {
                s.bytes_read
            }),
            ("written_bytes_total", "Bytes written to peers.", |s| {
                s.bytes_written
            }),
            (
                "tls_handshakes_total",
                "TLS handshakes that succeeded.",
                |s| s.handshakes,
            ),
        ];
        for (name, help, value) in counters {
            out.family(&format!("{p}_{name}"), "counter", help);
            for (labels, s) in &rows {
                out.sample("", labels, "", value(s));
            }
        }
        out.family(
            &format!("{p}_connections_open"),
            "gauge",
            "Connections open now.",
        );
        for (labels, s) in &rows {
            out.sample("", labels, "", s.open());
        }
        out.family(
            &format!("{p}_tls_handshake_failures_total"),
            "counter",
            "TLS handshakes that failed, by reason.",
        );
        for (labels, s) in &rows {
            for (reason, n) in &s.handshake_failures {
                out.sample("", labels, &format!("reason=\"{reason}\""), *n);
            }
        }
    }
}

/// Wraps a connection and counts it in a [`TcpSeries`]: opened now, closed on drop, and
/// every byte read and written.
#[pin_project(PinnedDrop)]
#[derive(Debug)]
pub struct CountingIo<T> {
    #[pin]
    io: T,
    series: Arc<TcpSeries>,
}

impl<T> CountingIo<T> {
    /// Counts `io` as opened in `series`.
    pub fn new(io: T, series: Arc<TcpSeries>) -> Self {
        series.opened();
        Self { io, series }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

#[pinned_drop]
impl<T> PinnedDrop for CountingIo<T> {
    fn drop(self: Pin<&mut Self>) {
        self.series.closed();
    }
}

impl<T: AsyncRead> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.series.bytes_read(n as u64);
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.series.bytes_written(n as u64);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.series.bytes_written(n as u64);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// A TLS acceptor reports its handshakes here: successes and failures by reason (plaintext
/// connections of a permissive acceptor are not handshakes).
impl mesh_core::handshake::HandshakeObserver for TcpSeries {
    fn observe(&self, outcome: mesh_core::handshake::HandshakeOutcome) {
        use mesh_core::handshake::HandshakeOutcome;
        match outcome {
            HandshakeOutcome::Tls => self.handshake_succeeded(),
            HandshakeOutcome::Plaintext => {}
            HandshakeOutcome::Failed(reason) => self.handshake_failed(reason),
        }
    }
}
