//! Proving a ServiceAccount token with the API server's TokenReview.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::naming::service_account_of_user;

/// The service account a token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Why a token proves nothing.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    /// The API server did not authenticate it (expired, wrong signature, wrong audience, the
    /// account deleted), with its reason.
    #[error("the API server did not authenticate the token: {0}")]
    NotAuthenticated(String),
    /// Authenticated, but not for our audience.
    #[error("the token is for audiences [{}], not {expected}", got.join(", "))]
    Audience {
        /// The audience mesh-control requires.
        expected: String,
        /// The audiences the API server says the token is for.
        got: Vec<String>,
    },
    /// Authenticated, but not as a service account.
    #[error("the token authenticates {0}, which is not a service account")]
    NotServiceAccount(String),
    /// The TokenReview itself failed (the API server unreachable, mesh-control not allowed to
    /// create TokenReviews).
    #[error("the TokenReview failed: {0}")]
    Review(#[from] kube::Error),
}

impl TokenRefused {
    /// Whether the fault is ours (retrying may help) rather than the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Review(_))
    }
}

/// Reviews tokens for one audience.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews with `client`, requiring tokens for `audience`.
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.into(),
        }
    }

    /// The service account `token` proves, if the API server authenticates it for our
    /// audience.
    pub async fn review(&self, token: &str) -> Result<ServiceAccountRef, TokenRefused> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = self.api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(TokenRefused::NotAuthenticated(
                status.error.unwrap_or_else(|| "no reason given".into()),
            ));
        }
        let got = status.audiences.unwrap_or_default();
        if !got.iter().any(|a| a == &self.audience) {
            return Err(TokenRefused::Audience {
                expected: self.audience.clone(),
                got,
            });
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        match service_account_of_user(&username) {
            Some((namespace, name)) => Ok(ServiceAccountRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            None => Err(TokenRefused::NotServiceAccount(username)),
        }
    }
}
