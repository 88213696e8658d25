//! A control plane under test: mesh-control started against the shared API server, in a
//! namespace of its own with a fresh issuer Secret; and the CRD it reads.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mesh_tls::DevCa;
use mesh_tls::control::ControlPlane;

use super::KubeFixture;
use crate::identity::issuer_secret;
use crate::{ControlConfig, RunningControl};

/// The trust domain of the tests' identities.
pub const TRUST_DOMAIN: &str = "mesh.local";

/// How long waits in the fixture may take.
const LIMIT: Duration = Duration::from_secs(30);

/// A control plane under test.
pub struct Control {
    /// The running control plane.
    pub running: RunningControl,
    /// Its namespace.
    pub namespace: String,
    /// Its issuer.
    pub ca: DevCa,
    /// Its configuration.
    pub config: ControlConfig,
}

impl Control {
    /// Starts mesh-control in a new namespace with a fresh issuer; `tune` adjusts the config.
    pub async fn start(fixture: &KubeFixture, tune: impl FnOnce(&mut ControlConfig)) -> Self {
        let namespace = fixture.namespace("mesh-system", &["mesh-control"]).await;
        let client = fixture
            .client()
            .await
            .unwrap_or_else(|e| panic!("client: {e}"));
        let ca = DevCa::new(TRUST_DOMAIN).unwrap_or_else(|e| panic!("ca: {e}"));
        let secret = issuer_secret(&ca, &namespace, "mesh-issuer");
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("issuer secret: {e}"));
        let mut config = ControlConfig::new(TRUST_DOMAIN);
        config.namespace = namespace.clone();
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        tune(&mut config);
        let running = crate::start(client, config.clone())
            .await
            .unwrap_or_else(|e| panic!("mesh-control did not start: {e}"));
        Self {
            running,
            namespace,
            ca,
            config,
        }
    }

    /// How a proxy reaches it.
    pub fn plane(&self) -> ControlPlane {
        ControlPlane::new(
            self.running.addr(),
            self.running.identity().clone(),
            self.running.roots_pem().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("control plane: {e}"))
    }
}

/// Creates the MeshAuthorization CRD if it is not there, and waits until it is served.
pub async fn ensure_crd(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definition = crate::policy::crd::definition();
    match crds.create(&PostParams::default(), &definition).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating the CRD: {error}"),
    }
    let name = definition.metadata.name.clone().unwrap_or_default();
    let started = std::time::Instant::now();
    loop {
        let crd = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("reading the CRD: {e}"));
        if crate::policy::crd::is_established(&crd) {
            return;
        }
        assert!(started.elapsed() < LIMIT, "the CRD was not established");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
