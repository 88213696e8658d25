//! What the mesh-control tests share: a control plane started against the shared real API
//! server, in a namespace of its own with its issuer Secret.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mesh_control::identity::issuer_secret;
use mesh_control::test_util::KubeFixture;
use mesh_control::{ControlConfig, RunningControl};
use mesh_core::Identity;
use mesh_tls::DevCa;
use mesh_tls::control::ControlPlane;

/// Every wait in these tests is bounded.
pub const LIMIT: Duration = Duration::from_secs(30);

pub const TRUST_DOMAIN: &str = "mesh.local";

pub fn id(s: &str) -> Identity {
    Identity::parse(s).expect("identity")
}

/// A control plane under test.
pub struct Control {
    pub running: RunningControl,
    pub namespace: String,
    pub ca: DevCa,
    pub config: ControlConfig,
}

impl Control {
    /// Starts mesh-control in a new namespace with a fresh issuer; `tune` adjusts the config.
    pub async fn start(fixture: &KubeFixture, tune: impl FnOnce(&mut ControlConfig)) -> Self {
        let namespace = fixture.namespace("mesh-system", &["mesh-control"]).await;
        let client = fixture.client().await.expect("client");
        let ca = DevCa::new(TRUST_DOMAIN).expect("ca");
        let secret = issuer_secret(&ca, &namespace, "mesh-issuer");
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("issuer secret");
        let mut config = ControlConfig::new(TRUST_DOMAIN);
        config.namespace = namespace.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        tune(&mut config);
        let running = mesh_control::start(client, config.clone())
            .await
            .expect("mesh-control starts");
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
        .expect("control plane")
    }
}

/// Writes `token` to a file under the fixture's scratch directory and returns its path.
pub fn token_file(fixture: &KubeFixture, name: &str, token: &str) -> std::path::PathBuf {
    let path = fixture.scratch("tokens").join(name);
    std::fs::write(&path, token).expect("token file");
    path
}
