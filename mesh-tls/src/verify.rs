//! Certificate verification and selection that follow the credential store, so that a
//! rotation takes effect at the next handshake.

use std::sync::Arc;

use mesh_core::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::identity_of;
use crate::store::CredentialStore;

/// Handshake signatures, checked with the current provider's algorithms (both sides).
fn tls12_signature(
    store: &CredentialStore,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let algs = store.current().provider.signature_verification_algorithms;
    verify_tls12_signature(message, cert, dss, &algs)
}

fn tls13_signature(
    store: &CredentialStore,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let algs = store.current().provider.signature_verification_algorithms;
    verify_tls13_signature(message, cert, dss, &algs)
}

fn verify_schemes(store: &CredentialStore) -> Vec<SignatureScheme> {
    store
        .current()
        .provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// Presents the store's current certificate (both sides).
#[derive(Debug)]
pub(crate) struct CurrentCert(pub(crate) CredentialStore);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().certified))
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().certified))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Requires a client certificate chaining to the store's current trust roots.
#[derive(Debug)]
pub(crate) struct CurrentRoots(pub(crate) CredentialStore);

impl ClientCertVerifier for CurrentRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
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
        self.0
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
        tls12_signature(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes(&self.0)
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
pub(crate) struct ExpectedIdentity {
    pub(crate) store: CredentialStore,
    pub(crate) expected: Identity,
}

impl ServerCertVerifier for ExpectedIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let credentials = self.store.current();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &credentials.roots,
            intermediates,
            now,
            credentials.provider.signature_verification_algorithms.all,
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
        tls12_signature(&self.store, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.store, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes(&self.store)
    }
}
