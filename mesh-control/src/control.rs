//! The control plane assembled: the issuer loaded, mesh-control's own certificate issued, the
//! Kubernetes watchers started, and the gRPC APIs served over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::Identity;
use mesh_tls::{CredentialStore, Mode, TlsAcceptor, TlsSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::destination::{DestinationService, Index, Synced, Watchers};
use crate::identity::{IdentityConfig, IdentityService, Issuer, IssuerError, TokenReviewer};
use crate::naming::service_account_identity;
use crate::policy::{PolicyIndex, PolicyService};

/// Where mesh-control runs and what it serves.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// The namespace mesh-control runs in (its issuer Secret is there). `mesh-system` by
    /// default.
    pub namespace: String,
    /// mesh-control's own service account, whose identity it presents. `mesh-control` by
    /// default.
    pub service_account: String,
    /// The issuer Secret's name. `mesh-issuer` by default.
    pub issuer_secret: String,
    /// Identity settings (trust domain, token audience, certificate lifetime).
    pub identity: IdentityConfig,
    /// Where the gRPC APIs listen. `0.0.0.0:8086` by default.
    pub listen: SocketAddr,
    /// The cluster's DNS domain, for authorities like `web.default.svc.cluster.local`.
    /// `cluster.local` by default.
    pub cluster_domain: String,
    /// Renew the heartbeat Lease every 10 s (what `check` reads). On by default.
    pub heartbeat: bool,
    /// Serve the injector webhook.
    pub webhook: Option<WebhookSettings>,
}

/// The injector webhook's settings.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Where it listens. `0.0.0.0:8443` in a cluster.
    pub listen: SocketAddr,
    /// The DNS names of its serving certificate (the API server checks the one it calls):
    /// `mesh-control.<namespace>.svc` in a cluster.
    pub names: Vec<String>,
    /// The proxy image it injects.
    pub proxy_image: String,
    /// mesh-control's address as injected proxies reach it.
    pub control_addr: String,
    /// Native sidecars or not; `None` asks the API server's version (1.29 and later).
    pub native_sidecar: Option<bool>,
}

impl ControlConfig {
    /// Defaults for `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            namespace: "mesh-system".into(),
            service_account: "mesh-control".into(),
            issuer_secret: "mesh-issuer".into(),
            identity: IdentityConfig::new(trust_domain),
            listen: SocketAddr::from(([0, 0, 0, 0], 8086)),
            cluster_domain: "cluster.local".into(),
            heartbeat: true,
            webhook: None,
        }
    }

    /// The identity mesh-control presents.
    pub fn control_identity(&self) -> Result<Identity, mesh_core::IdentityError> {
        service_account_identity(
            &self.identity.trust_domain,
            &self.namespace,
            &self.service_account,
        )
    }
}

/// Why mesh-control could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The issuer Secret is missing or broken.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// The trust domain, namespace or account make no valid identity.
    #[error("mesh-control's identity: {0}")]
    Identity(#[from] mesh_core::IdentityError),
    /// Its own certificate could not be issued or used.
    #[error("mesh-control's own certificate: {0}")]
    Certificate(String),
    /// The listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running control plane.
#[derive(Debug)]
pub struct RunningControl {
    addr: SocketAddr,
    identity: Identity,
    roots_pem: String,
    serve: JoinHandle<()>,
    side_tasks: Vec<JoinHandle<()>>,
    webhook: Option<SocketAddr>,
    index: Index,
    synced: Synced,
    _watchers: Watchers,
}

impl RunningControl {
    /// Where the gRPC APIs listen.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The identity mesh-control presents.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The trust roots proxies need to verify mesh-control and each other, PEM.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// Where the injector webhook listens, if it is served.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook
    }

    /// The destination index (for the admin page and tests).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Waits until the watchers have listed everything once.
    pub async fn synced(&self) {
        self.synced.clone().wait().await;
    }

    /// Stops serving and returns once the listener and every connection are closed (proxies
    /// keep what they have).
    pub async fn stop(mut self) {
        self.serve.abort();
        let _ = (&mut self.serve).await;
        for task in std::mem::take(&mut self.side_tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for RunningControl {
    fn drop(&mut self) {
        self.serve.abort();
        for task in &self.side_tasks {
            task.abort();
        }
    }
}

/// How long mesh-control's own serving certificate is valid; it is reissued at every start.
const OWN_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Starts mesh-control with `client`: loads the issuer, issues its own certificate, and
/// serves the identity API.
pub async fn start(
    client: kube::Client,
    config: ControlConfig,
) -> Result<RunningControl, StartError> {
    let issuer =
        Arc::new(Issuer::load(client.clone(), &config.namespace, &config.issuer_secret).await?);
    let identity = config.control_identity()?;
    let own = issuer
        .ca
        .issue(&identity, OWN_CERT_LIFETIME)
        .map_err(|e| StartError::Certificate(e.to_string()))?;
    let certificate = |e: &dyn std::fmt::Display| StartError::Certificate(e.to_string());
    let leaf =
        CertificateDer::from_pem_slice(own.cert_pem.as_bytes()).map_err(|e| certificate(&e))?;
    let key = PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).map_err(|e| certificate(&e))?;
    let chain = std::iter::once(leaf)
        .chain(issuer.intermediates.iter().cloned())
        .collect();
    let credentials = mesh_tls::Credentials::from_der(chain, key, issuer.roots_pem.as_bytes())
        .map_err(|e| certificate(&e))?;
    let store = CredentialStore::new(credentials);
    let acceptor = TlsAcceptor::new(
        store,
        TlsSettings::default()
            .mode(Mode::ClientCertOptional)
            .alpn(["h2"]),
    )
    .map_err(|e| certificate(&e))?;

    let reviewer = TokenReviewer::new(client.clone(), config.identity.audience.clone());
    let signing = Arc::new(arc_swap::ArcSwap::new(Arc::clone(&issuer)));
    let issuer_watch = crate::identity::watch_issuer(
        client.clone(),
        &config.namespace,
        &config.issuer_secret,
        Arc::clone(&signing),
    );
    let identity_service = IdentityService::new(signing, reviewer, config.identity.clone());
    let index = Index::new(config.identity.trust_domain.clone());
    let policy = PolicyIndex::new(config.identity.trust_domain.clone());
    let watchers = Watchers::start(client.clone(), index.clone(), policy.clone());
    let synced = watchers.synced();
    let destination =
        DestinationService::new(index.clone(), synced.clone(), config.cluster_domain.clone());
    let routes = tonic::service::Routes::new(identity_service.into_server())
        .add_service(destination.into_server())
        .add_service(PolicyService::new(policy, synced.clone()).into_server());

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let serve = tokio::spawn(crate::serve::serve_tls(routes, listener, acceptor));
    let mut side_tasks = vec![issuer_watch];
    if config.heartbeat {
        side_tasks.push(tokio::spawn(heartbeat(
            client.clone(),
            config.namespace.clone(),
            identity.to_string(),
        )));
    }
    let mut webhook_addr = None;
    if let Some(settings) = &config.webhook {
        let native_sidecar = match settings.native_sidecar {
            Some(native) => native,
            None => supports_native_sidecars(&client).await,
        };
        let inject = crate::inject::InjectConfig {
            proxy_image: settings.proxy_image.clone(),
            control_addr: settings.control_addr.clone(),
            control_identity: identity.to_string(),
            trust_roots_pem: issuer.roots_pem.clone(),
            trust_domain: config.identity.trust_domain.clone(),
            token_audience: config.identity.audience.clone(),
            native_sidecar,
            interception: true,
        };
        let cert = issuer
            .ca
            .issue_server(&settings.names, OWN_CERT_LIFETIME)
            .map_err(|e| certificate(&e))?;
        let tls = crate::webhook::tls_config(&cert).map_err(StartError::Certificate)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: settings.listen,
                    source,
                })?;
        webhook_addr = listener.local_addr().ok();
        let injector = crate::webhook::Injector::new(client.clone(), inject);
        side_tasks.push(tokio::spawn(crate::webhook::serve(
            listener,
            Arc::new(tls),
            injector,
        )));
    }
    tracing::info!(%addr, %identity, "mesh-control serving");
    Ok(RunningControl {
        addr,
        identity,
        roots_pem: issuer.roots_pem.clone(),
        serve,
        side_tasks,
        webhook: webhook_addr,
        index,
        synced,
        _watchers: watchers,
    })
}

/// How often the heartbeat Lease is renewed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Renews the heartbeat Lease `check` reads, every 10 s, for as long as it runs.
async fn heartbeat(client: kube::Client, namespace: String, holder: String) {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, Patch, PatchParams};
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply("mesh-control").force();
    loop {
        let now = k8s_openapi::jiff::Timestamp::now();
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": crate::install::HEARTBEAT_LEASE, "namespace": namespace },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 30,
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
            }
        });
        if let Err(error) = leases
            .patch(
                crate::install::HEARTBEAT_LEASE,
                &params,
                &Patch::Apply(&lease),
            )
            .await
        {
            tracing::warn!(%error, "heartbeat not renewed");
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

/// Whether the API server is 1.29 or later (native sidecars: init containers with
/// `restartPolicy: Always`).
async fn supports_native_sidecars(client: &kube::Client) -> bool {
    match client.apiserver_version().await {
        Ok(version) => {
            let major: u32 = version.major.trim_end_matches('+').parse().unwrap_or(0);
            let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
            (major, minor) >= (1, 29)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the API server version; injecting plain containers");
            false
        }
    }
}
