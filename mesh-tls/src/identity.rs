//! Reading a workload identity out of a certificate.

use mesh_core::Identity;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertIdentityError {
    /// The certificate is not valid DER X.509.
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    /// No URI SAN with a SPIFFE ID and no DNS SAN.
    #[error("the certificate has no SPIFFE URI or DNS name among its subject alternative names")]
    NoIdentity,
    /// The SAN is there but is not a valid identity.
    #[error("the certificate's subject alternative name is not a valid identity: {0}")]
    Invalid(#[from] mesh_core::IdentityError),
}

/// The identity a certificate carries: its SPIFFE ID (a `spiffe://` URI SAN) if it has one,
/// else its first DNS SAN. The subject's common name is never used (deprecated for names).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, CertIdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?
        .ok_or(CertIdentityError::NoIdentity)?;
    let names = &san.value.general_names;
    let spiffe = names.iter().find_map(|n| match n {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    let dns = || {
        names.iter().find_map(|n| match n {
            GeneralName::DNSName(name) => Some(*name),
            _ => None,
        })
    };
    let name = spiffe.or_else(dns).ok_or(CertIdentityError::NoIdentity)?;
    Ok(Identity::parse(name)?)
}

/// A certificate's serial number in hex (`0a:1b:...`), to tell two certificates apart (which
/// one a peer presented, after a rotation).
pub fn serial_of(cert: &CertificateDer<'_>) -> Result<String, CertIdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    Ok(cert.raw_serial_as_string())
}

/// When a certificate stops being valid (its `notAfter`).
pub fn not_after_of(cert: &CertificateDer<'_>) -> Result<std::time::SystemTime, CertIdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    let seconds = cert.validity().not_after.timestamp();
    // Before 1970 is long expired: the epoch will do.
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}
