//! The identity service: a ServiceAccount token and a CSR in, a short-lived certificate out.
//!
//! A proxy generates its key (it never leaves the proxy) and sends a CSR with its projected
//! token. The token is proven by a TokenReview for our audience; the CSR must ask for exactly
//! the identity of the token's service account; the certificate is signed by the issuer from
//! the issuer Secret, valid for [`IdentityConfig::lifetime`] (24 h by default). Every refusal
//! is typed ([`Refusal`]) and its reason goes back to the proxy.

mod issuer;
mod review;

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, UNIX_EPOCH};

use mesh_api::identity::identity_server::{Identity as IdentityApi, IdentityServer};
use mesh_api::identity::{CertifyRequest, CertifyResponse};
use mesh_core::Identity;
use mesh_tls::CsrRefused;
use tonic::{Request, Response, Status};

pub use self::issuer::{
    ISSUER_CERT_KEY, ISSUER_KEY_KEY, Issuer, IssuerError, TRUST_ROOTS_KEY, issuer_secret,
    not_after, watch_issuer,
};
pub use self::review::{ServiceAccountRef, TokenRefused, TokenReviewer};
use crate::naming::service_account_identity;

/// The audience proxies' tokens must be for, by default.
pub const DEFAULT_AUDIENCE: &str = "identity.mesh.local";

/// How the identity service certifies.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The trust domain of the identities it signs.
    pub trust_domain: String,
    /// The audience tokens must be for. `identity.mesh.local` by default.
    pub audience: String,
    /// How long certificates are valid. 24 h by default.
    pub lifetime: Duration,
}

impl IdentityConfig {
    /// Defaults for `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token proves nothing (or could not be reviewed).
    #[error(transparent)]
    Token(#[from] TokenRefused),
    /// The token is not text.
    #[error("the token is not UTF-8 text")]
    TokenEncoding,
    /// The identity asked for is not a valid identity.
    #[error("the identity asked for, {asked:?}, is invalid: {reason}")]
    InvalidIdentity {
        /// What was asked.
        asked: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The identity asked for is not the token's service account's.
    #[error("the token proves {proven}, not the {asked} asked for")]
    WrongIdentity {
        /// What was asked.
        asked: String,
        /// What the token proves.
        proven: Identity,
    },
    /// The CSR is malformed or asks for more.
    #[error(transparent)]
    Csr(#[from] CsrRefused),
}

impl Refusal {
    /// The gRPC status a proxy gets.
    pub fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Self::Token(token) if token.is_unavailable() => Status::unavailable(message),
            Self::Token(_) | Self::TokenEncoding => Status::unauthenticated(message),
            Self::WrongIdentity { .. } => Status::permission_denied(message),
            Self::InvalidIdentity { .. }
            | Self::Csr(CsrRefused::Malformed(_) | CsrRefused::Names { .. }) => {
                Status::invalid_argument(message)
            }
            Self::Csr(CsrRefused::Sign(_)) => Status::internal(message),
        }
    }
}

/// The identity service.
#[derive(Clone, Debug)]
pub struct IdentityService {
    issuer: Arc<ArcSwap<Issuer>>,
    reviewer: TokenReviewer,
    config: IdentityConfig,
}

impl IdentityService {
    /// Certifies with whatever `issuer` holds (replaced when the issuer Secret changes; see
    /// [`watch_issuer`]), proving tokens with `reviewer`.
    pub fn new(
        issuer: Arc<ArcSwap<Issuer>>,
        reviewer: TokenReviewer,
        config: IdentityConfig,
    ) -> Self {
        Self {
            issuer,
            reviewer,
            config,
        }
    }

    /// As a tonic service.
    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }

    /// Decides one request.
    pub async fn certify(&self, request: CertifyRequest) -> Result<CertifyResponse, Refusal> {
        let token = std::str::from_utf8(&request.token).map_err(|_| Refusal::TokenEncoding)?;
        let account = self.reviewer.review(token).await?;
        let proven =
            service_account_identity(&self.config.trust_domain, &account.namespace, &account.name)
                .map_err(|e| Refusal::InvalidIdentity {
                    asked: request.identity.clone(),
                    reason: e.to_string(),
                })?;
        let asked = Identity::parse(&request.identity).map_err(|e| Refusal::InvalidIdentity {
            asked: request.identity.clone(),
            reason: e.to_string(),
        })?;
        if asked != proven {
            return Err(Refusal::WrongIdentity {
                asked: request.identity,
                proven,
            });
        }
        // One issuer for the whole answer, even if it is replaced meanwhile.
        let issuer = self.issuer.load_full();
        let certified = issuer.ca.certify(
            &request.certificate_signing_request,
            &proven,
            self.config.lifetime,
        )?;
        let valid_until = certified
            .not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        tracing::info!(identity = %proven, "certified");
        Ok(CertifyResponse {
            leaf_certificate: certified.leaf.to_vec(),
            intermediate_certificates: issuer.intermediates.iter().map(|c| c.to_vec()).collect(),
            valid_until_unix_seconds: valid_until,
        })
    }
}

#[tonic::async_trait]
impl IdentityApi for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        match IdentityService::certify(self, request.into_inner()).await {
            Ok(answer) => Ok(Response::new(answer)),
            Err(refusal) => {
                tracing::warn!(%refusal, "certificate refused");
                Err(refusal.status())
            }
        }
    }
}
