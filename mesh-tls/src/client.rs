//! The client side: connect with this workload's certificate and insist on the expected
//! identity of the endpoint.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use mesh_core::error::ConnectError;
use mesh_core::{BoxError, Identity, IdentityKind};
use pin_project::pin_project;
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::settings::{Negotiated, TlsSettings};
use crate::store::CredentialStore;
use crate::verify::{CurrentCert, ExpectedIdentity, IdentityMismatch};

/// Why a client handshake failed. A connection to an address that fails is the mesh's one
/// [`ConnectError`] (the address, with this or the TCP error as its cause), so that every
/// layer reads it as a connect failure (502, retryable).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server's certificate is valid but for another identity. Names both.
    #[error(transparent)]
    IdentityMismatch(#[from] IdentityMismatch),
    /// The handshake failed otherwise (unknown CA, expired certificate, no common version).
    #[error("TLS handshake with the server failed: {0}")]
    Handshake(#[source] io::Error),
    /// The handshake did not finish in time.
    #[error("the TLS handshake did not finish in time")]
    Timeout,
    /// The settings are not usable with the crypto provider.
    #[error("TLS settings rejected: {0}")]
    Config(#[from] rustls::Error),
    /// This workload has no identity to present: its credentials were withdrawn (see
    /// [`CredentialStore::withdraw`]). Says why; nothing was sent.
    #[error("this workload has no identity to present: {0}")]
    Withdrawn(String),
}

/// No meshed endpoint (address and identity) is known for a URI, so nothing is dialled: a
/// connection without an identity to verify would be a plaintext one in disguise.
#[derive(Debug, thiserror::Error)]
#[error("no meshed endpoint for {0}")]
pub struct NoEndpoint(pub Uri);

/// Makes client connections that present this workload's certificate and verify that the
/// server carries the expected identity. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    store: CredentialStore,
    settings: TlsSettings,
}

impl TlsConnector {
    /// A connector using `store`'s current credentials for each new connection.
    pub fn new(store: CredentialStore, settings: TlsSettings) -> Self {
        Self { store, settings }
    }

    /// The same connector offering `protocols` in ALPN instead: a proxy wants `h2` for
    /// multiplexed requests, `http/1.1` for upgrades, and its own name for opaque TCP, all with
    /// the same credentials.
    pub fn with_alpn(&self, protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        Self {
            store: self.store.clone(),
            settings: self.settings.clone().alpn(protocols),
        }
    }

    /// Runs the client handshake over `io`, expecting the server to be `expected`.
    ///
    /// Session resumption is off: a resumed session skips certificate verification, and
    /// sessions are cached by server name, which several identities may share; each
    /// connection's identity is therefore verified in full.
    pub async fn connect<I>(
        &self,
        io: I,
        expected: &Identity,
    ) -> Result<TlsStream<I>, HandshakeError>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(reason) = self.store.withdrawn() {
            return Err(HandshakeError::Withdrawn(reason));
        }
        let provider = Arc::clone(&self.store.current().provider);
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(self.settings.versions())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedIdentity {
                roots: self.store.clone(),
                expected: expected.clone(),
            }))
            .with_client_cert_resolver(Arc::new(CurrentCert(self.store.clone())));
        config.alpn_protocols = self.settings.alpn.clone();
        config.resumption = Resumption::disabled();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let handshake = connector.connect(server_name(expected), io);
        tokio::time::timeout(self.settings.handshake_timeout, handshake)
            .await
            .map_err(|_| HandshakeError::Timeout)?
            .map_err(|err| match mismatch_in(&err) {
                Some(mismatch) => HandshakeError::IdentityMismatch(mismatch),
                None => HandshakeError::Handshake(err),
            })
    }

    /// Dials `endpoint` over TCP (with `TCP_NODELAY`) and runs the handshake expecting its
    /// identity. Fails with the [`ConnectError`] for its address, whose cause is the TCP error
    /// or the [`HandshakeError`].
    pub async fn connect_to(
        &self,
        endpoint: &MeshEndpoint,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let addr = endpoint.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ConnectError::new(addr, e))?;
        let _ = tcp.set_nodelay(true);
        self.connect(tcp, &endpoint.identity)
            .await
            .map_err(|e| ConnectError::new(addr, e))
    }
}

/// The SNI to send: the identity itself when it is a DNS name, the trust domain for a SPIFFE
/// ID (a URI cannot be a server name). The server does not choose its certificate by it.
pub(crate) fn server_name(identity: &Identity) -> ServerName<'static> {
    let name = match identity.kind() {
        IdentityKind::Dns => identity.as_str(),
        IdentityKind::Spiffe => identity.trust_domain().unwrap_or("mesh.invalid"),
    };
    // Validated identities are valid DNS names; should one not be, send no SNI at all (an IP
    // address is never sent as SNI).
    ServerName::try_from(name.to_owned()).unwrap_or(ServerName::IpAddress(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
    ))
}

/// Finds our verifier's mismatch error inside the handshake's io error.
fn mismatch_in(err: &io::Error) -> Option<IdentityMismatch> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = tls else {
        return None;
    };
    other.0.downcast_ref::<IdentityMismatch>().cloned()
}

/// Where a URI's requests go and who must be there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshEndpoint {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The identity the server must present.
    pub identity: Identity,
}

/// Finds the endpoint (address and expected identity) for a URI.
pub trait ResolveEndpoint {
    /// The endpoint for `uri`, or `None` if none is known.
    fn resolve(&self, uri: &Uri) -> Option<MeshEndpoint>;
}

impl<F: Fn(&Uri) -> Option<MeshEndpoint>> ResolveEndpoint for F {
    fn resolve(&self, uri: &Uri) -> Option<MeshEndpoint> {
        self(uri)
    }
}

/// A fixed table from authority (`host` or `host:port`, as in the URI) to endpoint, with an
/// optional fallback for any other authority.
#[derive(Clone, Debug, Default)]
pub struct StaticEndpoints {
    by_authority: std::collections::HashMap<String, MeshEndpoint>,
    fallback: Option<MeshEndpoint>,
}

impl StaticEndpoints {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends requests for `authority` to `endpoint`.
    pub fn with(mut self, authority: impl Into<String>, endpoint: MeshEndpoint) -> Self {
        self.by_authority
            .insert(authority.into().to_ascii_lowercase(), endpoint);
        self
    }

    /// Sends requests for any other authority to `endpoint`.
    pub fn with_fallback(mut self, endpoint: MeshEndpoint) -> Self {
        self.fallback = Some(endpoint);
        self
    }
}

impl ResolveEndpoint for StaticEndpoints {
    fn resolve(&self, uri: &Uri) -> Option<MeshEndpoint> {
        uri.authority()
            .and_then(|a| self.by_authority.get(&a.as_str().to_ascii_lowercase()))
            .or(self.fallback.as_ref())
            .cloned()
    }
}

/// A connector for hyper-util's `Client`: resolves each URI to a [`MeshEndpoint`], connects
/// over TCP, and runs the mTLS handshake expecting that endpoint's identity. Advertises
/// HTTP/2 to the client when ALPN chose it.
///
/// A clone is one reference count: hyper-util's client clones its connector for every
/// request, even one a pooled connection serves, and the settings (ALPN lists) and the
/// endpoint table would otherwise be copied each time.
#[derive(Debug)]
pub struct MeshConnector<R> {
    shared: Arc<ConnectorParts<R>>,
}

/// What the clones of a [`MeshConnector`] share.
#[derive(Debug)]
struct ConnectorParts<R> {
    tls: TlsConnector,
    resolve: R,
}

impl<R> Clone for MeshConnector<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R: ResolveEndpoint> MeshConnector<R> {
    /// A connector resolving URIs with `resolve`.
    pub fn new(tls: TlsConnector, resolve: R) -> Self {
        Self {
            shared: Arc::new(ConnectorParts { tls, resolve }),
        }
    }
}

impl<R: ResolveEndpoint> tower::Service<Uri> for MeshConnector<R> {
    type Response = MeshConnection;
    /// A [`ConnectError`], or [`NoEndpoint`] when the URI resolves to nothing.
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshConnection, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let endpoint = self.shared.resolve.resolve(&uri);
        let tls = self.shared.tls.clone();
        Box::pin(async move {
            let endpoint = endpoint.ok_or(NoEndpoint(uri))?;
            let stream = tls.connect_to(&endpoint).await?;
            let negotiated = Negotiated::from_alpn(stream.get_ref().1.alpn_protocol());
            Ok(MeshConnection {
                io: TokioIo::new(stream),
                negotiated,
            })
        })
    }
}

/// A meshed client connection, as hyper-util's client wants it.
#[pin_project]
#[derive(Debug)]
pub struct MeshConnection {
    #[pin]
    io: TokioIo<TlsStream<TcpStream>>,
    negotiated: Negotiated,
}

impl MeshConnection {
    /// The protocol ALPN chose.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// The server's certificate chain.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        self.io.inner().get_ref().1.peer_certificates()
    }
}

impl Connection for MeshConnection {
    fn connected(&self) -> Connected {
        match self.negotiated {
            Negotiated::Http2 => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}

impl hyper::rt::Read for MeshConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
