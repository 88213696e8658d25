//! TLS settings: secure by default.

use std::time::Duration;

/// Whether plaintext is accepted on a meshed port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// TLS with a verified client certificate, or nothing. The default.
    #[default]
    Strict,
    /// TLS when the client sends a ClientHello (verified as strictly as in `Strict`);
    /// plaintext otherwise, let through marked [`PeerIdentity::Unauthenticated`] so that
    /// metrics and authorization can see it. For migrating workloads into the mesh.
    ///
    /// [`PeerIdentity::Unauthenticated`]: mesh_core::PeerIdentity::Unauthenticated
    Permissive,
    /// TLS always; a client certificate is verified when one is presented, and a client
    /// without one is let through marked [`PeerIdentity::Unauthenticated`]. For servers whose
    /// callers may prove themselves another way: the control plane, which a proxy asks for its
    /// first certificate with a ServiceAccount token.
    ///
    /// [`PeerIdentity::Unauthenticated`]: mesh_core::PeerIdentity::Unauthenticated
    ClientCertOptional,
}

/// How a mesh endpoint speaks TLS. `Default` is the secure configuration: strict mTLS, TLS 1.3
/// only, ALPN `h2` and `http/1.1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Strict or permissive (servers only).
    pub mode: Mode,
    /// Also allow TLS 1.2. Off by default.
    pub allow_tls12: bool,
    /// ALPN protocols, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// How long a client may take to send the first bytes of its ClientHello before the
    /// connection is closed (strict) or treated as plaintext (permissive). Default 1 s.
    pub detect_timeout: Duration,
    /// How long a whole handshake may take. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Strict,
            allow_tls12: false,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            detect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsSettings {
    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Allows TLS 1.2 as well as 1.3.
    pub fn allow_tls12(mut self, allow: bool) -> Self {
        self.allow_tls12 = allow;
        self
    }

    /// Sets the ALPN protocols.
    pub fn alpn(mut self, protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the detection deadline.
    pub fn detect_timeout(mut self, timeout: Duration) -> Self {
        self.detect_timeout = timeout;
        self
    }

    /// Sets the handshake deadline.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    pub(crate) fn versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        if self.allow_tls12 {
            rustls::ALL_VERSIONS
        } else {
            &TLS13_ONLY
        }
    }
}

/// The ALPN protocol that marks a meshed connection as opaque TCP, so that the receiving proxy
/// forwards its bytes without waiting to detect a protocol.
pub const OPAQUE_ALPN: &[u8] = b"mesh.opaque";

/// The application protocol a TLS connection negotiated, for picking HTTP/1, HTTP/2 or opaque
/// forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// ALPN `h2`.
    Http2,
    /// ALPN `http/1.1`.
    Http1,
    /// ALPN [`OPAQUE_ALPN`]: opaque TCP between proxies.
    Opaque,
    /// No ALPN, or another protocol.
    None,
}

impl Negotiated {
    pub(crate) fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            Some(b"http/1.1") => Self::Http1,
            Some(OPAQUE_ALPN) => Self::Opaque,
            _ => Self::None,
        }
    }
}
