//! The pods that run a mesh proxy and where each one's admin listener is: what a reader of many
//! proxies (mesh-viz in Kubernetes mode) scrapes. A pod is meshed when the injector labelled it
//! (`mesh.dev/proxy: enabled`); its admin port is the container port named
//! [`ADMIN_PORT_NAME`] (4191 as injected).

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::destination::PROXY_LABEL;

/// The name of the proxy container's admin port.
pub const ADMIN_PORT_NAME: &str = "mesh-admin";

/// The admin port when no container names one.
pub const DEFAULT_ADMIN_PORT: u16 = 4191;

/// One meshed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshedPod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its proxy's admin listener, once the pod has an IP.
    pub admin: Option<SocketAddr>,
    /// Its phase (`Pending`, `Running`, ...), as the API server has it.
    pub phase: String,
}

/// The meshed pods in `namespace` (all namespaces when `None`), sorted by namespace and name.
pub async fn meshed_pods(
    client: kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<MeshedPod>, kube::Error> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let selector = format!("{PROXY_LABEL}=enabled");
    let pods = api.list(&ListParams::default().labels(&selector)).await?;
    let mut out: Vec<MeshedPod> = pods.items.iter().map(meshed_pod).collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

fn meshed_pod(pod: &Pod) -> MeshedPod {
    let spec = pod.spec.as_ref();
    let port = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_ADMIN_PORT);
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    MeshedPod {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        admin: ip.map(|ip| SocketAddr::new(ip, port)),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_port_is_the_named_one_or_the_injected_default() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-0", "namespace": "shop" },
            "spec": { "containers": [
                { "name": "app", "ports": [{ "containerPort": 8080 }] },
                { "name": "mesh-proxy", "ports": [{ "name": "mesh-admin", "containerPort": 9990 }] }
            ]},
            "status": { "podIP": "10.0.0.7", "phase": "Running" }
        }))
        .expect("pod");
        let meshed = meshed_pod(&pod);
        assert_eq!(meshed.admin, Some("10.0.0.7:9990".parse().expect("addr")));
        assert_eq!(
            (meshed.name.as_str(), meshed.phase.as_str()),
            ("web-0", "Running")
        );
        let pending: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1" }, "spec": { "containers": [{ "name": "app" }] }
        }))
        .expect("pod");
        assert_eq!(meshed_pod(&pending).admin, None);
    }
}
