//! ServiceAccount tokens for tests: real ones from the TokenRequest API, and expired ones
//! signed with the API server's own service-account key (TokenRequest will not issue a token
//! that lives under ten minutes, and a test cannot wait for one to expire).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::{API_AUDIENCE, KubeFixture};

impl KubeFixture {
    /// A token for `namespace/account` from the TokenRequest API, for `audience`, valid for
    /// `seconds` (at least 600, the API server's floor).
    pub async fn token(
        &self,
        namespace: &str,
        account: &str,
        audience: &str,
        seconds: i64,
    ) -> String {
        let client = match self.client().await {
            Ok(client) => client,
            Err(error) => panic!("kube client: {error}"),
        };
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_owned()]),
                expiration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer: Result<TokenRequest, _> = Api::<ServiceAccount>::namespaced(client, namespace)
            .create_subresource("token", account, &PostParams::default(), &request)
            .await;
        match answer {
            Ok(answer) => answer.status.and_then(|s| s.token).unwrap_or_default(),
            Err(error) => panic!("TokenRequest for {namespace}/{account}: {error}"),
        }
    }

    /// A token for `namespace/account` and `audience` that expired an hour ago, signed with
    /// the API server's signing key, with the claims TokenRequest would put in it.
    pub async fn expired_token(&self, namespace: &str, account: &str, audience: &str) -> String {
        let client = match self.client().await {
            Ok(client) => client,
            Err(error) => panic!("kube client: {error}"),
        };
        let uid = match Api::<ServiceAccount>::namespaced(client, namespace)
            .get(account)
            .await
        {
            Ok(sa) => sa.metadata.uid.unwrap_or_default(),
            Err(error) => panic!("reading service account {namespace}/{account}: {error}"),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = serde_json::json!({
            "iss": API_AUDIENCE,
            "aud": [audience],
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "iat": now - 7200,
            "nbf": now - 7200,
            "exp": now - 3600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": { "name": account, "uid": uid },
            },
        });
        self.sign_jwt(&claims)
    }

    /// Signs `claims` as an ES256 JWT with the API server's service-account key.
    fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        let pem = match std::fs::read(self.service_account_key()) {
            Ok(pem) => pem,
            Err(error) => panic!("reading the service-account key: {error}"),
        };
        let Ok(PrivateKeyDer::Pkcs8(pkcs8)) = PrivateKeyDer::from_pem_slice(&pem) else {
            panic!("the service-account key is not PKCS#8");
        };
        let rng = SystemRandom::new();
        let key = match EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        ) {
            Ok(key) => key,
            Err(error) => panic!("the service-account key: {error}"),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{body}");
        let signature = match key.sign(&rng, signing_input.as_bytes()) {
            Ok(signature) => signature,
            Err(error) => panic!("signing: {error}"),
        };
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}
