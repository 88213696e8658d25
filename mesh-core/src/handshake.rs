//! How a TLS acceptor reports each connection's handshake, to whoever counts it: the acceptor's
//! own counters, or golden metrics. The acceptor is the one place that decides an outcome; the
//! observers only record it.

/// The outcome of accepting one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeOutcome {
    /// Mutual TLS completed.
    Tls,
    /// Plaintext let through (a permissive acceptor).
    Plaintext,
    /// Refused, for this reason: a short fixed name such as `"unknown_ca"` or `"not_tls"`,
    /// fit for a metric label.
    Failed(&'static str),
}

/// Records handshake outcomes. Called once per accepted connection, on the accepting task.
pub trait HandshakeObserver: std::fmt::Debug + Send + Sync + 'static {
    /// One connection's outcome.
    fn observe(&self, outcome: HandshakeOutcome);
}
