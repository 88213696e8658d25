//! A gRPC channel to the control plane over TLS, verifying its identity.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use mesh_core::Identity;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::client::Resumption;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::credentials::default_provider;
use crate::store::CredentialStore;
use crate::verify::{CurrentCert, ExpectedIdentity, FixedRoots};

/// The control plane's address, identity and the roots its certificate chains to.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    addr: SocketAddr,
    identity: Identity,
    roots: FixedRoots,
}

/// The control plane's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The roots are not PEM certificates, or none is usable.
    #[error("the control plane's trust roots: {0}")]
    Roots(String),
    /// rustls refused the client configuration.
    #[error("the control plane's TLS configuration: {0}")]
    Tls(String),
}

impl ControlPlane {
    /// The control plane at `addr`, which must present `identity` in a certificate chaining
    /// to `roots_pem`.
    pub fn new(
        addr: SocketAddr,
        identity: Identity,
        roots_pem: &[u8],
    ) -> Result<Self, ControlPlaneError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(roots_pem) {
            let cert = cert.map_err(|e| ControlPlaneError::Roots(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ControlPlaneError::Roots(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ControlPlaneError::Roots("no certificate in them".into()));
        }
        Ok(Self {
            addr,
            identity,
            roots: FixedRoots {
                roots: Arc::new(roots),
                provider: default_provider(),
            },
        })
    }

    /// The control plane's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The identity the control plane must present.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A channel that connects when first used and reconnects when the connection breaks.
    /// With `store`, this workload's current certificate is presented (for the destination and
    /// policy APIs); without, none (to ask for the first one).
    pub fn channel(&self, store: Option<CredentialStore>) -> Result<Channel, ControlPlaneError> {
        let config = Arc::new(
            self.client_config(store)
                .map_err(|e| ControlPlaneError::Tls(e.to_string()))?,
        );
        let addr = self.addr;
        let name = crate::client::server_name(&self.identity);
        let connector = tower::service_fn(move |_: http::Uri| {
            let config = Arc::clone(&config);
            let name = name.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // The URI only names the scheme and authority tonic puts in requests; the connector
        // decides where the bytes go.
        Ok(Endpoint::from_static("http://mesh-control.invalid")
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector_lazy(connector))
    }

    fn client_config(&self, store: Option<CredentialStore>) -> Result<ClientConfig, rustls::Error> {
        let verifier = Arc::new(ExpectedIdentity {
            roots: self.roots.clone(),
            expected: self.identity.clone(),
        });
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.roots.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match store {
            Some(store) => builder.with_client_cert_resolver(Arc::new(CurrentCert(store))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        // As for the data plane: a resumed session would skip verifying the identity.
        config.resumption = Resumption::disabled();
        Ok(config)
    }
}
