//! The issuer certificate and key, from a Kubernetes Secret.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use mesh_tls::DevCa;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The Secret keys: the issuer's certificate and key, and the trust root(s) workloads use.
pub const ISSUER_CERT_KEY: &str = "tls.crt";
/// The issuer's private key in the Secret.
pub const ISSUER_KEY_KEY: &str = "tls.key";
/// The trust roots in the Secret (the issuer itself when it is the root).
pub const TRUST_ROOTS_KEY: &str = "ca.crt";

/// The issuer: signs workload certificates.
pub struct Issuer {
    /// Signs.
    pub ca: DevCa,
    /// The issuer's certificate, sent as an intermediate when it is not itself a root.
    pub intermediates: Vec<CertificateDer<'static>>,
    /// The trust roots, PEM.
    pub roots_pem: String,
    /// When the issuer's certificate expires.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why the issuer Secret cannot be used; names the Secret and the key.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Reading the Secret failed (absent, or not allowed).
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// A key is missing or not PEM of the right kind.
    #[error("Secret {secret}, key {key}: {reason}")]
    Invalid {
        /// `namespace/name`.
        secret: String,
        /// The data key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Issuer {
    /// Reads and checks the Secret `namespace/name`.
    pub async fn load(
        client: kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Self, IssuerError> {
        let secret = Api::<Secret>::namespaced(client, namespace)
            .get(name)
            .await
            .map_err(|source| IssuerError::Read {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })?;
        Self::from_secret(&secret, &format!("{namespace}/{name}"))
    }

    /// Checks an already read Secret (`secret_name` is for messages).
    pub fn from_secret(secret: &Secret, secret_name: &str) -> Result<Self, IssuerError> {
        let invalid = |key: &'static str, reason: String| IssuerError::Invalid {
            secret: secret_name.to_owned(),
            key,
            reason,
        };
        let text = |key: &'static str| -> Result<String, IssuerError> {
            let data = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .ok_or_else(|| invalid(key, "missing".into()))?;
            String::from_utf8(data.0.clone()).map_err(|_| invalid(key, "not text (PEM)".into()))
        };
        let cert_pem = text(ISSUER_CERT_KEY)?;
        let key_pem = text(ISSUER_KEY_KEY)?;
        let roots_pem = match text(TRUST_ROOTS_KEY) {
            Ok(roots) => roots,
            // A self-signed issuer is its own root.
            Err(IssuerError::Invalid { reason, .. }) if reason == "missing" => cert_pem.clone(),
            Err(error) => return Err(error),
        };
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(ISSUER_CERT_KEY, format!("not a PEM certificate: {e}")))?;
        let not_after = not_after(&cert).map_err(|e| invalid(ISSUER_CERT_KEY, e))?;
        let ca = DevCa::from_pem(&cert_pem, &key_pem).map_err(|e| {
            invalid(
                ISSUER_KEY_KEY,
                format!("does not make an issuer with the certificate: {e}"),
            )
        })?;
        let roots: Vec<_> = CertificateDer::pem_slice_iter(roots_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(TRUST_ROOTS_KEY, format!("not PEM certificates: {e}")))?;
        if roots.is_empty() {
            return Err(invalid(TRUST_ROOTS_KEY, "no certificate".into()));
        }
        // The issuer is sent along with leaves unless it is one of the roots.
        let intermediates = if roots.iter().any(|root| root == &cert) {
            Vec::new()
        } else {
            vec![cert]
        };
        Ok(Self {
            ca,
            intermediates,
            roots_pem,
            not_after,
        })
    }
}

/// A certificate's notAfter.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let seconds = parsed.validity().not_after.timestamp();
    let seconds = u64::try_from(seconds).map_err(|_| "expires before 1970".to_owned())?;
    Ok(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// The issuer Secret for `ca` (a `kubernetes.io/tls` Secret, with the CA as its own root), as
/// `install` prints it and as tests create it.
pub fn issuer_secret(ca: &DevCa, namespace: &str, name: &str) -> Secret {
    use k8s_openapi::ByteString;
    let data = [
        (ISSUER_CERT_KEY, ca.root_pem()),
        (ISSUER_KEY_KEY, ca.key_pem()),
        (TRUST_ROOTS_KEY, ca.root_pem()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Replaces `issuer` whenever the Secret `namespace/name` changes, for as long as the task
/// runs: a new issuer signs the next certificate, with no restart. A Secret that does not make
/// an issuer is logged and the one in force stays (`check` reports the broken Secret).
pub fn watch_issuer(
    client: kube::Client,
    namespace: &str,
    name: &str,
    issuer: std::sync::Arc<arc_swap::ArcSwap<Issuer>>,
) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};
    let api = Api::<Secret>::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let secret_name = format!("{namespace}/{name}");
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let secret = match event {
                Ok(Event::Apply(secret) | Event::InitApply(secret)) => secret,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(secret = %secret_name, %error, "issuer watch failed; retrying");
                    continue;
                }
            };
            match Issuer::from_secret(&secret, &secret_name) {
                Ok(next) => {
                    let changed = issuer.load().roots_pem != next.roots_pem
                        || issuer.load().intermediates != next.intermediates
                        || issuer.load().not_after != next.not_after;
                    issuer.store(std::sync::Arc::new(next));
                    if changed {
                        tracing::info!(secret = %secret_name, "issuer replaced");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "the issuer Secret changed and cannot be used; the issuer in force stays")
                }
            }
        }
    })
}
