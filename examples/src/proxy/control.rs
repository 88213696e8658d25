//! Kubernetes mode: the certificate from the control plane's identity API (renewed before it
//! expires), and the channel the destination and policy clients share.

use mesh_core::Identity;
use mesh_tls::CredentialStore;
use mesh_tls::control::{Certifier, CertifierReport, CertifyConfig, ControlPlane};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::StartError;
use super::config;

/// What the rest of the proxy uses of the control plane (how certification is going is in
/// the identity's status).
#[derive(Clone, Debug)]
pub(crate) struct ControlLink {
    /// A channel presenting this proxy's certificate.
    pub(crate) channel: Channel,
}

/// The certifier, set up but not yet asked.
pub(crate) struct Pending {
    plane: ControlPlane,
    certifier: Certifier,
    name: Identity,
}

impl Pending {
    /// Reads the trust roots and sets up the channel and the certifier.
    pub(crate) fn new(control: &config::Control, name: &Identity) -> Result<Self, StartError> {
        let roots = match (&control.roots, &control.roots_pem) {
            (_, Some(pem)) => pem.as_bytes().to_vec(),
            (Some(file), None) => std::fs::read(file).map_err(|e| {
                StartError::Control(format!(
                    "cannot read the trust roots {}: {e}",
                    file.display()
                ))
            })?,
            (None, None) => return Err(StartError::Control("no trust roots".into())),
        };
        let plane = ControlPlane::new(control.addr.0, control.identity.0.clone(), &roots)
            .map_err(|e| StartError::Control(e.to_string()))?;
        let bootstrap = plane
            .channel(None)
            .map_err(|e| StartError::Control(e.to_string()))?;
        let certifier = Certifier::new(
            bootstrap,
            CertifyConfig::new(name.clone(), control.token.clone(), roots),
        );
        Ok(Self {
            plane,
            certifier,
            name: name.clone(),
        })
    }

    /// How certification is going (before the first certificate too).
    pub(crate) fn report(&self) -> CertifierReport {
        self.certifier.report()
    }

    /// Gets the first certificate (waiting, with backoff, for as long as it takes: nothing is
    /// served without an identity) and starts renewing it.
    pub(crate) async fn connect(
        mut self,
    ) -> Result<(CredentialStore, JoinHandle<()>, ControlLink), StartError> {
        tracing::info!(identity = %self.name, "asking the control plane for a certificate");
        let (credentials, valid_until) = self.certifier.certify_with_backoff().await;
        let store = CredentialStore::new(credentials);
        let renewal = self.certifier.spawn_renewal(store.clone(), valid_until);
        let channel = self
            .plane
            .channel(Some(store.clone()))
            .map_err(|e| StartError::Control(e.to_string()))?;
        Ok((store, renewal, ControlLink { channel }))
    }
}
