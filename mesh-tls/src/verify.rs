//! Certificate verification and selection that follow the credential store, so that a
//! rotation takes effect at the next handshake.

use std::sync::Arc;

use mesh_core::Identity;
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::identity_of;
use crate::store::CredentialStore;

/// Handshake signatures, checked with the provider's algorithms (both sides).
fn tls12_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn verify_schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// Where a verifier takes its trust roots from at each handshake.
pub(crate) trait TrustRoots: std::fmt::Debug + Send + Sync {
    /// The roots and the provider to check with, now.
    fn roots(&self) -> (Arc<RootCertStore>, Arc<CryptoProvider>);
}

/// The store's current roots: a rotation of the roots applies at the next handshake.
impl TrustRoots for CredentialStore {
    fn roots(&self) -> (Arc<RootCertStore>, Arc<CryptoProvider>) {
        let current = self.current();
        (Arc::clone(&current.roots), Arc::clone(&current.provider))
    }
}

/// Roots fixed at construction, for a client that has no credentials of its own yet (a proxy
/// asking the control plane for its first certificate).
#[cfg(feature = "control")]
#[derive(Debug, Clone)]
pub(crate) struct FixedRoots {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) provider: Arc<CryptoProvider>,
}

#[cfg(feature = "control")]
impl TrustRoots for FixedRoots {
    fn roots(&self) -> (Arc<RootCertStore>, Arc<CryptoProvider>) {
        (Arc::clone(&self.roots), Arc::clone(&self.provider))
    }
}

/// Presents the store's current certificate (both sides).
#[derive(Debug)]
pub(crate) struct CurrentCert(pub(crate) CredentialStore);

impl CurrentCert {
    /// The certificate to present, unless the store's credentials were withdrawn.
    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        (!self.0.is_withdrawn()).then(|| Arc::clone(&self.0.current().certified))
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a client certificate against the store's current trust roots; requires one
/// unless `mandatory` is false.
#[derive(Debug)]
pub(crate) struct CurrentRoots {
    pub(crate) store: CredentialStore,
    pub(crate) mandatory: bool,
}

impl ClientCertVerifier for CurrentRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional, and borrowing them from credentials that may be swapped at any
        // moment is not possible; clients present their one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.store
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(&self.store.current().provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.store.current().provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes(&self.store.current().provider)
    }
}

/// The server presented a valid certificate for another identity than the one expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server presented identity {presented}, expected {expected}")]
pub struct IdentityMismatch {
    /// The identity the endpoint should have.
    pub expected: Identity,
    /// The identity its certificate carries (or a description when it carries none).
    pub presented: String,
}

/// Verifies that the server's certificate chains to the store's current roots *and* carries
/// exactly the expected identity; any certificate of the trust domain is not enough.
#[derive(Debug)]
pub(crate) struct ExpectedIdentity<R = CredentialStore> {
    pub(crate) roots: R,
    pub(crate) expected: Identity,
}

impl<R: TrustRoots> ServerCertVerifier for ExpectedIdentity<R> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (roots, provider) = self.roots.roots();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )?;
        // The name check is ours, not webpki's: SPIFFE IDs are URI SANs, which a ServerName
        // cannot express.
        let presented = identity_of(end_entity);
        if presented.as_ref() == Ok(&self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = IdentityMismatch {
            expected: self.expected.clone(),
            presented: match presented {
                Ok(identity) => identity.to_string(),
                Err(err) => format!("none ({err})"),
            },
        };
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(&self.roots.roots().1, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.roots.roots().1, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes(&self.roots.roots().1)
    }
}
