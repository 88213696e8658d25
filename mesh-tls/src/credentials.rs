//! A workload's TLS material: its certificate chain and key, and the trust roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_core::Identity;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::{CertIdentityError, identity_of};

/// What went wrong loading credentials; names the file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file (or buffer) holds no PEM block of the kind expected, or a malformed one.
    #[error("{what} in {origin}: {reason}")]
    Pem {
        /// What was expected: "certificate", "private key", "trust root".
        what: &'static str,
        /// The file, or "memory".
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refuses it.
    #[error("the private key in {origin} cannot be used with the certificate: {reason}")]
    Key {
        /// The key file, or "memory".
        origin: String,
        /// What rustls said.
        reason: String,
    },
    /// The certificate names no usable identity.
    #[error("the certificate in {origin}: {source}")]
    Identity {
        /// The certificate file, or "memory".
        origin: String,
        /// Why.
        source: CertIdentityError,
    },
    /// The trust roots cannot verify clients (none usable).
    #[error("the trust roots in {origin} cannot be used: {reason}")]
    Roots {
        /// The roots file, or "memory".
        origin: String,
        /// Why.
        reason: String,
    },
}

/// A workload's certificate chain, signing key and trust roots, parsed and checked, with the
/// pieces rustls needs prepared once. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Credentials {
    pub(crate) identity: Identity,
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// The crypto provider mesh uses: rustls' ring provider, never a process-wide default.
pub fn default_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credentials {
    /// Parses PEM: the workload's chain (leaf first), its private key (PKCS#8, SEC1 or
    /// PKCS#1), and the trust roots.
    pub fn from_pem(chain: &[u8], key: &[u8], roots: &[u8]) -> Result<Self, CredentialsError> {
        let memory = || Origin::Memory;
        Self::build(
            parse_certs(chain, "certificate", memory())?,
            parse_key(key, memory())?,
            parse_certs(roots, "trust root", memory())?,
            [memory(), memory(), memory()],
            default_provider(),
        )
    }

    /// Builds credentials from a chain already in DER (as an issuer answers), the key it
    /// certifies, and PEM trust roots.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: &[u8],
    ) -> Result<Self, CredentialsError> {
        if chain.is_empty() {
            return Err(CredentialsError::Pem {
                what: "certificate",
                origin: Origin::Memory.to_string(),
                reason: "the chain is empty".into(),
            });
        }
        Self::build(
            chain,
            key,
            parse_certs(roots, "trust root", Origin::Memory)?,
            [Origin::Memory, Origin::Memory, Origin::Memory],
            default_provider(),
        )
    }

    /// Builds credentials wholly from DER: a chain (leaf first), its key and the trust roots,
    /// as the SPIFFE Workload API hands them over.
    pub fn from_der_with_roots(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CredentialsError> {
        for (what, empty) in [
            ("certificate", chain.is_empty()),
            ("trust root", roots.is_empty()),
        ] {
            if empty {
                return Err(CredentialsError::Pem {
                    what,
                    origin: Origin::Memory.to_string(),
                    reason: "none given".into(),
                });
            }
        }
        Self::build(
            chain,
            key,
            roots,
            [Origin::Memory, Origin::Memory, Origin::Memory],
            default_provider(),
        )
    }

    /// Reads and parses the three PEM files.
    pub fn from_files(files: &CredentialFiles) -> Result<Self, CredentialsError> {
        let chain = read(&files.chain)?;
        let key = read(&files.key)?;
        let roots = read(&files.roots)?;
        let origins = [
            Origin::File(&files.chain),
            Origin::File(&files.key),
            Origin::File(&files.roots),
        ];
        Self::build(
            parse_certs(&chain, "certificate", origins[0])?,
            parse_key(&key, origins[1])?,
            parse_certs(&roots, "trust root", origins[2])?,
            origins,
            default_provider(),
        )
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
        [chain_origin, key_origin, roots_origin]: [Origin<'_>; 3],
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, CredentialsError> {
        let identity = identity_of(&chain[0]).map_err(|source| CredentialsError::Identity {
            origin: chain_origin.to_string(),
            source,
        })?;
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|e| CredentialsError::Key {
                origin: key_origin.to_string(),
                reason: e.to_string(),
            })?;
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root).map_err(|e| CredentialsError::Roots {
                origin: roots_origin.to_string(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(store);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| CredentialsError::Roots {
                    origin: roots_origin.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(Self {
            identity,
            certified: Arc::new(certified),
            roots,
            client_verifier,
            provider,
        })
    }

    /// The identity this workload's certificate carries.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certified.cert[0]
    }
}

/// Where a workload's PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFiles {
    /// The certificate chain, leaf first.
    pub chain: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// The trust roots.
    pub roots: PathBuf,
}

impl CredentialFiles {
    /// `cert.pem`, `key.pem` and `roots.pem` in `dir` (what [`crate::DevCa`] writes).
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            chain: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            roots: dir.join("roots.pem"),
        }
    }

    /// Reads the three files' bytes, to tell whether they changed.
    pub(crate) fn read_all(&self) -> Result<[Vec<u8>; 3], CredentialsError> {
        Ok([read(&self.chain)?, read(&self.key)?, read(&self.roots)?])
    }
}

#[derive(Clone, Copy)]
enum Origin<'a> {
    Memory,
    File(&'a Path),
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(
    pem: &[u8],
    what: &'static str,
    origin: Origin<'_>,
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let error = |reason: String| CredentialsError::Pem {
        what,
        origin: origin.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], origin: Origin<'_>) -> Result<PrivateKeyDer<'static>, CredentialsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| CredentialsError::Pem {
        what: "private key",
        origin: origin.to_string(),
        reason: e.to_string(),
    })
}
