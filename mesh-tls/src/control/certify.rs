//! Certificates from the control plane's identity API, renewed before they expire.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_api::identity::CertifyRequest;
use mesh_api::identity::identity_client::IdentityClient;
use mesh_core::Identity;
use rustls_pki_types::CertificateDer;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::ca::{CaError, KeyAlgorithm};
use crate::credentials::{Credentials, CredentialsError};
use crate::csr::CertificateRequest;
use crate::store::CredentialStore;

/// What a workload asks for and how it renews.
#[derive(Clone, Debug)]
pub struct CertifyConfig {
    /// The identity to ask for (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`).
    pub identity: Identity,
    /// The projected ServiceAccount token, re-read for every request (the kubelet rotates it).
    pub token_file: PathBuf,
    /// The trust roots the workload verifies peers with, PEM.
    pub roots_pem: Vec<u8>,
    /// The key algorithm. ECDSA P-256 by default.
    pub algorithm: KeyAlgorithm,
    /// The share of a certificate's lifetime after which it is renewed. 0.7 by default.
    pub renew_at: f64,
    /// The first wait after a failure; doubled up to `max_backoff`. 1 s by default.
    pub min_backoff: Duration,
    /// The longest wait between attempts. 30 s by default.
    pub max_backoff: Duration,
}

impl CertifyConfig {
    /// Defaults for `identity`, proven by the token in `token_file`, trusting `roots_pem`.
    pub fn new(identity: Identity, token_file: impl Into<PathBuf>, roots_pem: Vec<u8>) -> Self {
        Self {
            identity,
            token_file: token_file.into(),
            roots_pem,
            algorithm: KeyAlgorithm::default(),
            renew_at: 0.7,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Why one certification failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The token file cannot be read.
    #[error("cannot read the token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key or CSR could not be made.
    #[error("making the key and CSR: {0}")]
    Key(#[from] CaError),
    /// The control plane refused, and said why.
    #[error("the control plane refused ({code:?}): {reason}")]
    Refused {
        /// The gRPC code: `Unauthenticated`, `PermissionDenied`, `InvalidArgument`.
        code: tonic::Code,
        /// Its message.
        reason: String,
    },
    /// The control plane could not be reached or failed.
    #[error("the control plane is unavailable ({code:?}): {reason}")]
    Unavailable {
        /// The gRPC code.
        code: tonic::Code,
        /// Its message.
        reason: String,
    },
    /// The answer is not a certificate for this key and identity.
    #[error("the control plane's answer cannot be used: {0}")]
    Answer(#[from] CredentialsError),
}

impl From<tonic::Status> for CertifyError {
    fn from(status: tonic::Status) -> Self {
        let code = status.code();
        let reason = status.message().to_owned();
        match code {
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument => Self::Refused { code, reason },
            _ => Self::Unavailable { code, reason },
        }
    }
}

/// What the renewal loop has done, for the admin page and metrics.
#[derive(Clone, Debug, Default)]
pub struct CertifierReport(Arc<Mutex<ReportState>>);

#[derive(Debug, Default)]
struct ReportState {
    certified: u64,
    failures: u64,
    last_error: Option<String>,
    valid_until: Option<SystemTime>,
}

impl CertifierReport {
    /// Certificates received.
    pub fn certified(&self) -> u64 {
        self.lock().certified
    }

    /// Failed attempts.
    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    /// The last failure, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// When the current certificate expires.
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.lock().valid_until
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportState> {
        // A poisoned report is still a report: the data is counters.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Asks the identity API for certificates.
#[derive(Debug, Clone)]
pub struct Certifier {
    client: IdentityClient<Channel>,
    config: CertifyConfig,
    report: CertifierReport,
}

impl Certifier {
    /// A certifier asking over `channel` (see [`ControlPlane::channel`]).
    ///
    /// [`ControlPlane::channel`]: super::ControlPlane::channel
    pub fn new(channel: Channel, config: CertifyConfig) -> Self {
        Self {
            client: IdentityClient::new(channel),
            config,
            report: CertifierReport::default(),
        }
    }

    /// What it has done.
    pub fn report(&self) -> CertifierReport {
        self.report.clone()
    }

    /// One attempt: a new key, a CSR, the token; credentials and their expiry back.
    pub async fn certify(&mut self) -> Result<(Credentials, SystemTime), CertifyError> {
        let result = self.certify_once().await;
        let mut report = self.report.lock();
        match &result {
            Ok((_, valid_until)) => {
                report.certified += 1;
                report.last_error = None;
                report.valid_until = Some(*valid_until);
            }
            Err(error) => {
                report.failures += 1;
                report.last_error = Some(error.to_string());
            }
        }
        result
    }

    async fn certify_once(&mut self) -> Result<(Credentials, SystemTime), CertifyError> {
        let token = tokio::fs::read(&self.config.token_file)
            .await
            .map_err(|source| CertifyError::Token {
                path: self.config.token_file.clone(),
                source,
            })?;
        let request = CertificateRequest::generate(&self.config.identity, self.config.algorithm)?;
        let answer = self
            .client
            .certify(CertifyRequest {
                identity: self.config.identity.to_string(),
                token: trim_token(token),
                certificate_signing_request: request.der().to_vec(),
            })
            .await?
            .into_inner();
        let mut chain = vec![CertificateDer::from(answer.leaf_certificate)];
        chain.extend(
            answer
                .intermediate_certificates
                .into_iter()
                .map(CertificateDer::from),
        );
        let credentials = request.credentials(chain, &self.config.roots_pem)?;
        let valid_until = UNIX_EPOCH
            + Duration::from_secs(u64::try_from(answer.valid_until_unix_seconds).unwrap_or(0));
        Ok((credentials, valid_until))
    }

    /// Tries until it succeeds, waiting with backoff between failures (each logged).
    pub async fn certify_with_backoff(&mut self) -> (Credentials, SystemTime) {
        let mut backoff = self.config.min_backoff;
        loop {
            match self.certify().await {
                Ok(done) => return done,
                Err(error) => {
                    tracing::warn!(identity = %self.config.identity, %error, retry_in = ?backoff, "certification failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Renews into `store` for as long as the task runs: at `renew_at` of each certificate's
    /// lifetime, then with backoff until an attempt succeeds. Until then the store keeps the
    /// certificate it has, so a control plane that is away costs nothing before expiry; should
    /// the certificate expire first, the store is withdrawn (handshakes fail saying why, rather
    /// than present a certificate every peer refuses) until the next one arrives.
    pub fn spawn_renewal(
        mut self,
        store: CredentialStore,
        valid_until: SystemTime,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut valid_until = valid_until;
            loop {
                tokio::time::sleep(self.renew_in(valid_until)).await;
                let (credentials, next) = self
                    .renew_before(valid_until, |reason| {
                        tracing::warn!(%reason, "identity withdrawn until a certificate arrives");
                        store.withdraw(reason);
                    })
                    .await;
                store.replace(credentials);
                tracing::info!(identity = %self.config.identity, "certificate renewed");
                valid_until = next;
            }
        })
    }

    /// Tries until an attempt succeeds; should `valid_until` pass first, `expired` is told why
    /// (once) and the attempts go on.
    async fn renew_before(
        &mut self,
        valid_until: SystemTime,
        expired: impl FnOnce(String),
    ) -> (Credentials, SystemTime) {
        let report = self.report.clone();
        let identity = self.config.identity.clone();
        let expiry = tokio::time::sleep(
            valid_until
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        );
        let attempt = self.certify_with_backoff();
        tokio::pin!(attempt);
        tokio::select! {
            renewed = &mut attempt => renewed,
            () = expiry => {
                let mut reason = format!(
                    "the certificate of {identity} from the control plane expired and no new one came"
                );
                if let Some(error) = report.last_error() {
                    reason.push_str(&format!(" (last error: {error})"));
                }
                expired(reason);
                attempt.await
            }
        }
    }

    /// How long until `renew_at` of the lifetime that remains now, measured from now: the
    /// certificate was just received when this is first called.
    fn renew_in(&self, valid_until: SystemTime) -> Duration {
        let left = valid_until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        left.mul_f64(self.config.renew_at.clamp(0.05, 1.0))
    }
}

/// Token files often end with a newline; JWTs never contain whitespace.
fn trim_token(mut token: Vec<u8>) -> Vec<u8> {
    while token.last().is_some_and(|b| b.is_ascii_whitespace()) {
        token.pop();
    }
    token
}
