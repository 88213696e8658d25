//! Certificate signing requests, both ends: a workload makes its own key and asks for exactly
//! its identity ([`CertificateRequest`]); an issuer checks that the request asks for nothing
//! else and signs it ([`DevCa::certify`]). The private key never leaves the workload.

use std::time::{Duration, SystemTime};

use mesh_core::Identity;
use rcgen::{CertificateParams, CertificateSigningRequestParams, KeyPair};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

use crate::ca::{BACKDATE, CaError, DevCa, KeyAlgorithm, leaf_params, san_of};
use crate::credentials::{Credentials, CredentialsError};

/// A fresh key and a CSR for one identity.
pub struct CertificateRequest {
    identity: Identity,
    key: PrivateKeyDer<'static>,
    der: Vec<u8>,
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is not printed.
        f.debug_struct("CertificateRequest")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl CertificateRequest {
    /// Generates a key with `algorithm` and a CSR whose only subject alternative name is
    /// `identity`.
    pub fn generate(identity: &Identity, algorithm: KeyAlgorithm) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(algorithm.rcgen())?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san_of(identity)?];
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            identity: identity.clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            der: csr.der().to_vec(),
        })
    }

    /// The identity asked for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The CSR, DER (PKCS#10).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Credentials from the chain an issuer signed for this request (leaf first), this
    /// request's key, and the trust roots (PEM). Fails if the chain is not for this key, or
    /// names another identity.
    pub fn credentials(
        &self,
        chain: Vec<CertificateDer<'static>>,
        roots_pem: &[u8],
    ) -> Result<Credentials, CredentialsError> {
        let credentials = Credentials::from_der(chain, self.key.clone_key(), roots_pem)?;
        if credentials.identity() != &self.identity {
            return Err(CredentialsError::Pem {
                what: "certificate",
                origin: "the issuer's answer".into(),
                reason: format!(
                    "it names {}, not the {} asked for",
                    credentials.identity(),
                    self.identity
                ),
            });
        }
        Ok(credentials)
    }
}

/// Why an issuer refused a CSR.
#[derive(Debug, thiserror::Error)]
pub enum CsrRefused {
    /// Not a PKCS#10 request, its signature does not verify, or it asks for an extension an
    /// issuer does not sign.
    #[error("the certificate signing request is malformed: {0}")]
    Malformed(rcgen::Error),
    /// It asks for other names than exactly the one identity.
    #[error("the certificate signing request must name exactly {expected}, and names [{}]", asked.join(", "))]
    Names {
        /// The identity the caller proved.
        expected: Identity,
        /// What the request named.
        asked: Vec<String>,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
}

/// A certificate signed for a request.
#[derive(Clone, Debug)]
pub struct Certified {
    /// The leaf, DER.
    pub leaf: CertificateDer<'static>,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

impl DevCa {
    /// Signs `csr` for `identity`, valid for `validity` from now (less five minutes of clock
    /// skew), if its only subject alternative name is `identity`. What is signed is the
    /// identity, the request's public key and this CA's usual leaf profile; the request's
    /// subject and any key usages it asks for are not copied.
    pub fn certify(
        &self,
        csr: &[u8],
        identity: &Identity,
        validity: Duration,
    ) -> Result<Certified, CsrRefused> {
        let der = CertificateSigningRequestDer::from(csr);
        let request =
            CertificateSigningRequestParams::from_der(&der).map_err(CsrRefused::Malformed)?;
        let wanted = san_of(identity).map_err(CsrRefused::Sign)?;
        let names = &request.params.subject_alt_names;
        if names.len() != 1 || names[0] != wanted {
            return Err(CsrRefused::Names {
                expected: identity.clone(),
                asked: names.iter().map(describe).collect(),
            });
        }
        let now = SystemTime::now();
        let not_after = now + validity;
        let params = leaf_params(identity, now - BACKDATE, not_after).map_err(CsrRefused::Sign)?;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(CsrRefused::Sign)?;
        Ok(Certified {
            leaf: signed.der().clone(),
            not_after,
        })
    }
}

/// A SAN as a person would write it.
fn describe(name: &rcgen::SanType) -> String {
    match name {
        rcgen::SanType::URI(uri) => format!("URI:{}", uri.as_str()),
        rcgen::SanType::DnsName(dns) => format!("DNS:{}", dns.as_str()),
        rcgen::SanType::IpAddress(ip) => format!("IP:{ip}"),
        rcgen::SanType::Rfc822Name(mail) => format!("email:{}", mail.as_str()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::SanType;

    fn web() -> Identity {
        Identity::parse("spiffe://mesh.local/ns/default/sa/web").expect("identity")
    }

    #[test]
    fn a_request_for_its_identity_is_signed_and_makes_credentials() {
        let ca = DevCa::new("mesh.local").expect("ca");
        let request = CertificateRequest::generate(&web(), KeyAlgorithm::EcdsaP256).expect("csr");
        let certified = ca
            .certify(request.der(), &web(), Duration::from_secs(60))
            .expect("signed");
        let credentials = request
            .credentials(vec![certified.leaf], ca.root_pem().as_bytes())
            .expect("credentials");
        assert_eq!(credentials.identity(), &web());
    }

    #[test]
    fn a_request_for_another_identity_is_refused_naming_both() {
        let ca = DevCa::new("mesh.local").expect("ca");
        let other = Identity::parse("spiffe://mesh.local/ns/default/sa/db").expect("identity");
        let request = CertificateRequest::generate(&other, KeyAlgorithm::EcdsaP256).expect("csr");
        let refused = ca
            .certify(request.der(), &web(), Duration::from_secs(60))
            .expect_err("refused");
        let text = refused.to_string();
        assert!(text.contains("sa/web") && text.contains("sa/db"), "{text}");
    }

    #[test]
    fn a_request_with_extra_names_is_refused() {
        let ca = DevCa::new("mesh.local").expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            san_of(&web()).expect("san"),
            SanType::DnsName("evil.example".try_into().expect("dns")),
        ];
        let csr = params.serialize_request(&key).expect("csr");
        match ca.certify(csr.der(), &web(), Duration::from_secs(60)) {
            Err(CsrRefused::Names { asked, .. }) => {
                assert_eq!(asked.len(), 2);
                assert!(asked[1].contains("evil.example"));
            }
            other => panic!("expected a refusal for names, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let ca = DevCa::new("mesh.local").expect("ca");
        assert!(matches!(
            ca.certify(b"not a csr", &web(), Duration::from_secs(60)),
            Err(CsrRefused::Malformed(_))
        ));
    }

    #[test]
    fn an_answer_for_another_key_does_not_make_credentials() {
        let ca = DevCa::new("mesh.local").expect("ca");
        let mine = CertificateRequest::generate(&web(), KeyAlgorithm::EcdsaP256).expect("csr");
        let theirs = CertificateRequest::generate(&web(), KeyAlgorithm::EcdsaP256).expect("csr");
        let certified = ca
            .certify(theirs.der(), &web(), Duration::from_secs(60))
            .expect("signed");
        assert!(
            mine.credentials(vec![certified.leaf], ca.root_pem().as_bytes())
                .is_err()
        );
    }
}
