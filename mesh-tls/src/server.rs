//! The server side: detect TLS, terminate mTLS, and learn the peer's identity.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use mesh_core::PeerIdentity;
use mesh_core::detect::{DetectConfig, DetectError, PrefixedIo, Undecided, sniff};
use mesh_core::handshake::{HandshakeObserver, HandshakeOutcome};
use pin_project::pin_project;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::identity::identity_of;
use crate::settings::{Mode, Negotiated, TlsSettings};
use crate::store::CredentialStore;
use crate::verify::{CurrentCert, CurrentRoots};

/// Why an accepted connection was closed instead of served.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Strict mode, and the first bytes are not a TLS ClientHello (plaintext, garbage).
    #[error("not a TLS ClientHello (strict mode accepts only TLS)")]
    NotTls,
    /// The client sent nothing (or too little) before the detection deadline.
    #[error("no ClientHello before the detection deadline")]
    DetectTimeout,
    /// The handshake did not finish within its deadline.
    #[error("the TLS handshake did not finish in time")]
    HandshakeTimeout,
    /// The client closed the connection before or during the handshake.
    #[error("the client closed the connection before the handshake completed")]
    Closed,
    /// The handshake failed: no client certificate, an unknown CA, an expired certificate, a
    /// protocol version not allowed.
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    /// The verified client certificate names no identity.
    #[error("the client certificate names no identity: {0}")]
    NoIdentity(#[from] crate::identity::CertIdentityError),
    /// This workload has no identity to present: its credentials were withdrawn (see
    /// [`CredentialStore::withdraw`]). Says why.
    #[error("this workload has no identity to present: {0}")]
    Withdrawn(String),
    /// Reading the connection failed.
    #[error("reading the connection failed: {0}")]
    Io(#[source] io::Error),
}

impl AcceptError {
    /// A short fixed name for metrics labels (`handshake_failed{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotTls => "not_tls",
            Self::DetectTimeout => "detect_timeout",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Closed => "closed",
            Self::Handshake(err) => handshake_reason(err),
            Self::NoIdentity(_) => "no_identity",
            Self::Withdrawn(_) => "no_local_identity",
            Self::Io(_) => "io",
        }
    }
}

/// Names the usual handshake failures from rustls' error.
fn handshake_reason(err: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error, PeerIncompatible};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "handshake";
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_cert",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired_cert",
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "not_yet_valid_cert",
        // A certificate from another CA either names an issuer we do not know, or one with
        // the same name whose signature does not verify.
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "unknown_ca",
        Error::InvalidCertificate(_) => "bad_cert",
        Error::PeerIncompatible(
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerDoesNotSupportTls12Or13,
        ) => "protocol_version",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(_) => "alert_received",
        _ => "handshake",
    }
}

/// Counts of what the acceptor saw, for metrics and tests.
#[derive(Debug, Default)]
pub struct AcceptStats {
    tls: AtomicU64,
    plaintext: AtomicU64,
    rejected_not_tls: AtomicU64,
    timeouts: AtomicU64,
    handshake_failures: AtomicU64,
}

/// A snapshot of [`AcceptStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptCounts {
    /// Connections that completed mTLS.
    pub tls: u64,
    /// Plaintext connections let through (permissive mode).
    pub plaintext: u64,
    /// Connections closed because their first bytes were not TLS (strict mode).
    pub rejected_not_tls: u64,
    /// Connections closed at the detection or handshake deadline.
    pub timeouts: u64,
    /// Handshakes that failed (certificates, versions, closed mid-way).
    pub handshake_failures: u64,
}

impl HandshakeObserver for AcceptStats {
    fn observe(&self, outcome: HandshakeOutcome) {
        let counter = match outcome {
            HandshakeOutcome::Tls => &self.tls,
            HandshakeOutcome::Plaintext => &self.plaintext,
            HandshakeOutcome::Failed("not_tls") => &self.rejected_not_tls,
            HandshakeOutcome::Failed("detect_timeout" | "handshake_timeout") => &self.timeouts,
            HandshakeOutcome::Failed(_) => &self.handshake_failures,
        };
        counter.fetch_add(1, Relaxed);
    }
}

impl AcceptStats {
    /// The counts so far.
    pub fn counts(&self) -> AcceptCounts {
        AcceptCounts {
            tls: self.tls.load(Relaxed),
            plaintext: self.plaintext.load(Relaxed),
            rejected_not_tls: self.rejected_not_tls.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
        }
    }
}

/// What one accept came to, as observers see it.
fn outcome_of<I>(result: &Result<Accepted<I>, AcceptError>) -> HandshakeOutcome {
    match result {
        Ok(Accepted {
            io: ServerIo::Tls(_),
            ..
        }) => HandshakeOutcome::Tls,
        Ok(_) => HandshakeOutcome::Plaintext,
        Err(err) => HandshakeOutcome::Failed(err.reason()),
    }
}

/// Accepts meshed connections: requires (strict) or detects (permissive) TLS, verifies the
/// client's certificate against the store's current roots, and reports the peer's identity and
/// the negotiated protocol. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    settings: TlsSettings,
    /// Asked before each handshake whether there is an identity to present.
    store: CredentialStore,
    /// Its own counters, while they are what it reports to.
    stats: Option<Arc<AcceptStats>>,
    observer: Arc<dyn HandshakeObserver>,
}

/// A connection accepted by [`TlsAcceptor`].
#[derive(Debug)]
pub struct Accepted<I> {
    /// The connection: decrypted TLS, or plaintext replaying the bytes detection read.
    pub io: ServerIo<I>,
    /// Who the client is: its certificate's identity, or unauthenticated for plaintext. Insert
    /// it into every request of the connection (see [`crate::SetPeerIdentityLayer`]).
    pub peer: PeerIdentity,
    /// The protocol ALPN chose, to pick HTTP/1 or HTTP/2.
    pub negotiated: Negotiated,
}

/// The stream of an accepted connection.
#[pin_project(project = ServerIoProj)]
#[derive(Debug)]
pub enum ServerIo<I> {
    /// mTLS.
    Tls(#[pin] Box<TlsStream<PrefixedIo<I>>>),
    /// Plaintext (permissive mode).
    Plain(#[pin] PrefixedIo<I>),
}

impl<I> ServerIo<I> {
    /// The client's certificate chain, for TLS connections.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Self::Tls(tls) => tls.get_ref().1.peer_certificates(),
            Self::Plain(_) => None,
        }
    }
}

impl TlsAcceptor {
    /// An acceptor presenting and verifying with `store`'s credentials, as `settings` say.
    pub fn new(store: CredentialStore, settings: TlsSettings) -> Result<Self, rustls::Error> {
        let provider = Arc::clone(&store.current().provider);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(settings.versions())?
            .with_client_cert_verifier(Arc::new(CurrentRoots {
                store: store.clone(),
                mandatory: settings.mode != Mode::ClientCertOptional,
            }))
            .with_cert_resolver(Arc::new(CurrentCert(store.clone())));
        config.alpn_protocols = settings.alpn.clone();
        let stats = Arc::new(AcceptStats::default());
        Ok(Self {
            config: Arc::new(config),
            settings,
            store,
            observer: Arc::clone(&stats) as Arc<dyn HandshakeObserver>,
            stats: Some(stats),
        })
    }

    /// Reports each handshake to `observer` (golden metrics, say) instead of the acceptor's own
    /// [`AcceptStats`]: every outcome is counted once, in one place.
    pub fn observed_by(mut self, observer: Arc<dyn HandshakeObserver>) -> Self {
        self.observer = observer;
        self.stats = None;
        self
    }

    /// What this acceptor has seen, unless it reports to another observer.
    pub fn stats(&self) -> Option<&AcceptStats> {
        self.stats.as_deref()
    }

    /// Accepts `io`: detection, then the handshake, each within its deadline. Errors are typed
    /// (see [`AcceptError::reason`]) and counted; the caller just drops the connection.
    pub async fn accept<I>(&self, io: I) -> Result<Accepted<I>, AcceptError>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.accept_inner(io).await;
        self.observer.observe(outcome_of(&result));
        result
    }

    async fn accept_inner<I>(&self, io: I) -> Result<Accepted<I>, AcceptError>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let detect = DetectConfig::default()
            .capacity(3)
            .timeout(self.settings.detect_timeout);
        let sniffed = sniff(io, detect, client_hello).await.map_err(|e| match e {
            DetectError::Closed => AcceptError::Closed,
            DetectError::Io(e) => AcceptError::Io(e),
        })?;
        let permissive = self.settings.mode == Mode::Permissive;
        match sniffed.verdict {
            Ok(true) => {}
            Ok(false) | Err(Undecided::Eof | Undecided::BufferFull) if permissive => {
                return Ok(self.plaintext(sniffed.io));
            }
            Err(Undecided::Deadline) if permissive => return Ok(self.plaintext(sniffed.io)),
            Ok(false) | Err(Undecided::BufferFull) => return Err(AcceptError::NotTls),
            Err(Undecided::Eof) => return Err(AcceptError::Closed),
            Err(Undecided::Deadline) => return Err(AcceptError::DetectTimeout),
        }
        if let Some(reason) = self.store.withdrawn() {
            return Err(AcceptError::Withdrawn(reason));
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config));
        let handshake = acceptor.accept(sniffed.io);
        let tls = tokio::time::timeout(self.settings.handshake_timeout, handshake)
            .await
            .map_err(|_| AcceptError::HandshakeTimeout)?
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => AcceptError::Closed,
                _ => AcceptError::Handshake(e),
            })?;
        let conn = tls.get_ref().1;
        let negotiated = Negotiated::from_alpn(conn.alpn_protocol());
        let leaf = conn.peer_certificates().and_then(<[_]>::first);
        let peer = match leaf {
            Some(leaf) => PeerIdentity::Authenticated(identity_of(leaf)?),
            None if self.settings.mode == Mode::ClientCertOptional => PeerIdentity::Unauthenticated,
            None => {
                return Err(AcceptError::NoIdentity(
                    crate::identity::CertIdentityError::NoIdentity,
                ));
            }
        };
        Ok(Accepted {
            io: ServerIo::Tls(Box::new(tls)),
            peer,
            negotiated,
        })
    }

    fn plaintext<I>(&self, io: PrefixedIo<I>) -> Accepted<I> {
        Accepted {
            io: ServerIo::Plain(io),
            peer: PeerIdentity::Unauthenticated,
            negotiated: Negotiated::None,
        }
    }
}

/// Whether the first bytes are a TLS handshake record (a ClientHello): content type 22, then
/// protocol version major 3. Decides on the first byte when it cannot be TLS.
fn client_hello(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [] => None,
        [0x16] | [0x16, 0x03] => None,
        [0x16, 0x03, minor, ..] => Some(*minor <= 0x04),
        _ => Some(false),
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.project() {
            ServerIoProj::Tls(io) => io.poll_read(cx, buf),
            ServerIoProj::Plain(io) => io.poll_read(cx, buf),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.project() {
            ServerIoProj::Tls(io) => io.poll_write(cx, buf),
            ServerIoProj::Plain(io) => io.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project() {
            ServerIoProj::Tls(io) => io.poll_flush(cx),
            ServerIoProj::Plain(io) => io.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project() {
            ServerIoProj::Tls(io) => io.poll_shutdown(cx),
            ServerIoProj::Plain(io) => io.poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.project() {
            ServerIoProj::Tls(io) => io.poll_write_vectored(cx, bufs),
            ServerIoProj::Plain(io) => io.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tls(io) => io.is_write_vectored(),
            Self::Plain(io) => io.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client_hello;

    #[test]
    fn client_hellos_are_told_from_other_bytes() {
        assert_eq!(client_hello(b""), None);
        assert_eq!(client_hello(&[0x16]), None);
        assert_eq!(client_hello(&[0x16, 0x03, 0x01]), Some(true));
        assert_eq!(client_hello(&[0x16, 0x03, 0x09]), Some(false));
        assert_eq!(client_hello(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(client_hello(b"PRI * HTTP/2.0"), Some(false));
        assert_eq!(client_hello(&[0x00, 0xff]), Some(false));
    }
}
