//! A development certificate authority: a trust root and short-lived workload certificates,
//! for tests, the demo, and anyone trying the mesh. Not for production PKI.

use std::path::Path;
use std::time::{Duration, SystemTime};

use mesh_core::{Identity, IdentityKind};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::credentials::{Credentials, CredentialsError};

/// How long a CA made by [`DevCa::new`] is valid.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back a certificate's validity starts, to tolerate clock skew between workloads.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Key algorithms for issued certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA with P-256 and SHA-256: the default, fast and universally supported.
    #[default]
    EcdsaP256,
    /// ECDSA with P-384 and SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// What can go wrong minting certificates.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused (key generation, an identity it cannot encode, a malformed CA PEM).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing PEM files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The validity window is empty.
    #[error("the validity window ends before it starts")]
    Validity,
    /// A server certificate needs at least one name.
    #[error("a server certificate needs at least one DNS name")]
    NoNames,
}

/// A development CA: a self-signed trust root and its key, issuing workload certificates.
pub struct DevCa {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    key_pem: String,
    pub(crate) algorithm: KeyAlgorithm,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A workload certificate and its key, as PEM, with the root that verifies it.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The identity in the certificate.
    pub identity: Identity,
    /// The certificate (leaf only; the CA signs leaves directly).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The CA's certificate, to use as the trust root.
    pub roots_pem: String,
}

impl Issued {
    /// Parses these into [`Credentials`].
    pub fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Credentials::from_pem(
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
            self.roots_pem.as_bytes(),
        )
    }

    /// Writes `cert.pem`, `key.pem` and `roots.pem` into `dir` (created if missing), each file
    /// replaced whole (written aside, then renamed), so a watcher never reads half a file.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), CaError> {
        let dir = ensure_dir(dir.as_ref())?;
        write_atomically(&dir.join("cert.pem"), &self.cert_pem)?;
        write_atomically(&dir.join("key.pem"), &self.key_pem)?;
        write_atomically(&dir.join("roots.pem"), &self.roots_pem)
    }
}

/// Creates `dir` if missing.
fn ensure_dir(dir: &Path) -> Result<&Path, CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::Write {
        path: dir.to_owned(),
        source,
    })?;
    Ok(dir)
}

fn write_atomically(path: &Path, contents: &str) -> Result<(), CaError> {
    let error = |source| CaError::Write {
        path: path.to_owned(),
        source,
    };
    let aside = path.with_extension("pem.tmp");
    std::fs::write(&aside, contents).map_err(error)?;
    std::fs::rename(&aside, path).map_err(error)
}

impl DevCa {
    /// A new CA named for `trust_domain`, valid for a year, with an ECDSA P-256 key.
    pub fn new(trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(KeyAlgorithm::EcdsaP256.rcgen())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("mesh development CA ({trust_domain})"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(random_serial());
        let root = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            root_pem: root.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            algorithm: KeyAlgorithm::default(),
        })
    }

    /// A CA from its certificate and key, as written by [`DevCa::write`].
    pub fn from_pem(root_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(root_pem, key)?,
            root_pem: root_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            algorithm: KeyAlgorithm::default(),
        })
    }

    /// Issues with `algorithm` keys from now on.
    pub fn with_algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The CA certificate, PEM: the trust root workloads verify each other with.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The CA's private key, PEM (PKCS#8): for storing the CA where an issuer will load it
    /// (a Kubernetes Secret, say). Handle as a secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes the CA's `ca.pem` and `ca-key.pem` into `dir`.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), CaError> {
        let dir = ensure_dir(dir.as_ref())?;
        write_atomically(&dir.join("ca.pem"), &self.root_pem)?;
        write_atomically(&dir.join("ca-key.pem"), &self.key_pem)
    }

    /// Issues a certificate for `identity`, valid from now (less five minutes for clock skew)
    /// for `validity`.
    pub fn issue(&self, identity: &Identity, validity: Duration) -> Result<Issued, CaError> {
        let now = SystemTime::now();
        self.issue_between(identity, now - BACKDATE, now + validity)
    }

    /// Issues a certificate for `identity` valid between two instants (an expired one, for
    /// tests, or one not yet valid).
    pub fn issue_between(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, CaError> {
        if not_after <= not_before {
            return Err(CaError::Validity);
        }
        let key = KeyPair::generate_for(self.algorithm.rcgen())?;
        let params = leaf_params(identity, not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            identity: identity.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            roots_pem: self.root_pem.clone(),
        })
    }
}

impl DevCa {
    /// Issues a plain TLS server certificate for DNS `names` (a webhook's, say, which the
    /// Kubernetes API server verifies by host name), valid from now for `validity`.
    pub fn issue_server(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<ServerCert, CaError> {
        let first = names.first().ok_or(CaError::NoNames)?;
        let key = KeyPair::generate_for(self.algorithm.rcgen())?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, first.clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + validity).into();
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            roots_pem: self.root_pem.clone(),
        })
    }
}

/// A TLS server certificate by host name (not a workload identity), its key, and the root.
#[derive(Clone, Debug)]
pub struct ServerCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The CA's certificate: what a client (the API server's `caBundle`) trusts.
    pub roots_pem: String,
}

/// What every workload certificate says: the identity as its one SAN (URI for SPIFFE, DNS
/// otherwise), for servers and clients both, with a fresh serial. A CSR's own wishes are not
/// copied: an issuer signs these and nothing else.
pub(crate) fn leaf_params(
    identity: &Identity,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![san_of(identity)?];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Mesh workloads are servers and clients both.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// The subject alternative name that carries `identity`.
pub(crate) fn san_of(identity: &Identity) -> Result<SanType, rcgen::Error> {
    let name = rcgen::string::Ia5String::try_from(identity.as_str())?;
    Ok(match identity.kind() {
        IdentityKind::Spiffe => SanType::URI(name),
        IdentityKind::Dns => SanType::DnsName(name),
    })
}

/// 16 random bytes, positive: serials must be unique per CA, and random ones are.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // ring's system random only fails if the OS has no entropy source; then fall back to a
    // time-derived serial rather than fail to mint (this is a development CA).
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_written_and_read_back_keeps_issuing_for_the_same_root() {
        let ca = DevCa::new("mesh.local").expect("ca");
        let again = DevCa::from_pem(ca.root_pem(), &ca.key_pem).expect("read back");
        let id = Identity::parse("web.mesh.local").expect("identity");
        let issued = again.issue(&id, Duration::from_secs(60)).expect("issue");
        assert_eq!(issued.roots_pem, ca.root_pem());
        // Verifies against the original root, and carries the DNS identity.
        let credentials = issued.credentials().expect("credentials");
        assert_eq!(credentials.identity(), &id);
    }

    #[test]
    fn every_algorithm_issues_usable_credentials() {
        let id = Identity::parse("spiffe://mesh.local/ns/a/sa/b").expect("identity");
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
        ] {
            let ca = DevCa::new("mesh.local")
                .expect("ca")
                .with_algorithm(algorithm);
            let issued = ca.issue(&id, Duration::from_secs(60)).expect("issue");
            assert_eq!(issued.credentials().expect("credentials").identity(), &id);
        }
    }

    #[test]
    fn an_empty_validity_window_is_refused() {
        let ca = DevCa::new("mesh.local").expect("ca");
        let id = Identity::parse("a.b").expect("identity");
        let now = SystemTime::now();
        assert!(matches!(
            ca.issue_between(&id, now, now),
            Err(CaError::Validity)
        ));
    }
}
