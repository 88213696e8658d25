//! The injector: adds the proxy to a pod, as a native sidecar (an init container with
//! `restartPolicy: Always`, so it starts before the app and stops after it) where the cluster
//! supports it (Kubernetes 1.29 and later), else as a container; with its configuration, the
//! projected token it proves itself with, and the identity settings.
//!
//! A pod is injected when it is annotated (or labelled) `mesh.dev/inject: enabled`, or its
//! namespace is and the pod does not say `disabled`. The same function serves the webhook
//! ([`crate::webhook`]) and `mesh-control inject` (YAML on stdin, offline).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The annotation (or label) that asks for injection: `enabled` or `disabled`.
pub const INJECT_ANNOTATION: &str = "mesh.dev/inject";
/// Its value that asks for injection.
pub const INJECT_ENABLED: &str = "enabled";
/// The annotation that says which container port is the app's (default: the first declared).
pub const APP_PORT_ANNOTATION: &str = "mesh.dev/app-port";
/// The name of the proxy container.
pub const PROXY_CONTAINER: &str = "mesh-proxy";
/// The proxy's user id (transparent interception exempts it).
pub const PROXY_UID: i64 = 2102;
/// Where the projected token is mounted.
pub const TOKEN_DIR: &str = "/var/run/secrets/mesh.dev/serviceaccount";

/// What the injector puts in pods.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// The proxy's image.
    pub proxy_image: String,
    /// mesh-control's gRPC address as pods reach it (`mesh-control.mesh-system.svc:8086`).
    pub control_addr: String,
    /// The identity mesh-control presents.
    pub control_identity: String,
    /// The trust roots, PEM.
    pub trust_roots_pem: String,
    /// The trust domain.
    pub trust_domain: String,
    /// The audience of the proxy's token.
    pub token_audience: String,
    /// Whether the cluster runs native sidecars.
    pub native_sidecar: bool,
    /// Whether pods get transparent interception: the `mesh-init` init container (from the
    /// proxy's image) installing the iptables rules, and a proxy routing by original
    /// destination. Without it, apps send through the proxy's outbound port themselves.
    pub interception: bool,
}

/// The name of the init container that installs the interception rules.
pub const INIT_CONTAINER: &str = "mesh-init";

/// Why a pod could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The object is not a Pod the injector can read.
    #[error("not a pod: {0}")]
    NotAPod(String),
    /// The YAML could not be read or written.
    #[error("YAML: {0}")]
    Yaml(String),
}

/// Whether to inject a pod with `pod_meta`, in a namespace with `namespace_meta` (labels and
/// annotations merged).
pub fn wanted(
    pod_meta: &BTreeMap<String, String>,
    namespace_meta: &BTreeMap<String, String>,
) -> bool {
    match pod_meta.get(INJECT_ANNOTATION).map(String::as_str) {
        Some(INJECT_ENABLED) => true,
        Some(_) => false,
        None => namespace_meta.get(INJECT_ANNOTATION).map(String::as_str) == Some(INJECT_ENABLED),
    }
}

/// The labels and annotations of an object, merged (annotations win).
pub fn meta_of(meta: &kube::api::ObjectMeta) -> BTreeMap<String, String> {
    let mut merged = meta.labels.clone().unwrap_or_default();
    merged.extend(meta.annotations.clone().unwrap_or_default());
    merged
}

/// Whether the pod already has the proxy.
pub fn injected(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == PROXY_CONTAINER)
}

/// The pod with the proxy added, in namespace `namespace`. Pods already injected come back
/// unchanged.
pub fn inject(pod: &Pod, namespace: &str, config: &InjectConfig) -> Result<Pod, InjectError> {
    if injected(pod) {
        return Ok(pod.clone());
    }
    let mut value = serde_json::to_value(pod).map_err(|e| InjectError::NotAPod(e.to_string()))?;
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let app_port = app_port(pod);
    let identity = format!(
        "spiffe://{}/ns/{namespace}/sa/{account}",
        config.trust_domain
    );
    let proxy_config = proxy_config(config, &identity, app_port);
    let init = json!({
        "name": INIT_CONTAINER,
        "image": config.proxy_image,
        "command": ["mesh-init"],
        "args": [
            "--proxy-uid", PROXY_UID.to_string(), "--inbound-port", "4143",
            "--outbound-port", "4140", "--admin-port", "4191"
        ],
        // iptables needs NET_ADMIN (and NET_RAW for some backends), as root, once.
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] }
        }
    });
    let container = json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "args": ["--config-env", "MESH_PROXY_CONFIG"],
        "env": [
            { "name": "MESH_PROXY_CONFIG", "value": proxy_config },
            { "name": "MESH_POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "MESH_POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }
        ],
        "ports": [
            { "name": "mesh-inbound", "containerPort": 4143 },
            { "name": crate::proxies::ADMIN_PORT_NAME, "containerPort": crate::proxies::DEFAULT_ADMIN_PORT }
        ],
        "readinessProbe": { "httpGet": { "path": "/ready", "port": 4191 }, "periodSeconds": 2 },
        "livenessProbe": { "httpGet": { "path": "/live", "port": 4191 }, "periodSeconds": 10 },
        "securityContext": {
            "runAsUser": PROXY_UID, "runAsNonRoot": true, "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] }
        },
        "volumeMounts": [{ "name": "mesh-token", "mountPath": TOKEN_DIR, "readOnly": true }]
    });
    let spec = value
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| InjectError::NotAPod("no spec".into()))?;
    let inits = spec.entry("initContainers").or_insert_with(|| json!([]));
    if config.native_sidecar {
        let mut sidecar = container;
        sidecar["restartPolicy"] = json!("Always");
        // First, so that it is up before any other init container or the app.
        if let Some(list) = inits.as_array_mut() {
            list.insert(0, sidecar);
        }
    } else if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        list.insert(0, container);
    }
    if config.interception {
        // Before everything, the proxy included: no connection escapes the rules.
        let inits = spec.entry("initContainers").or_insert_with(|| json!([]));
        if let Some(list) = inits.as_array_mut() {
            list.insert(0, init);
        }
    }
    if spec
        .get("initContainers")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        spec.remove("initContainers");
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(list) = volumes.as_array_mut() {
        list.push(json!({
            "name": "mesh-token",
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": config.token_audience, "expirationSeconds": 86400, "path": "token"
            }}]}
        }));
    }
    let metadata = value
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| InjectError::NotAPod("no metadata".into()))?;
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    labels[crate::destination::PROXY_LABEL] = json!("enabled");
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    annotations["mesh.dev/identity"] = json!(identity);
    serde_json::from_value(value).map_err(|e| InjectError::NotAPod(e.to_string()))
}

/// The app's port: the annotation, else the first declared container port, else 80.
fn app_port(pod: &Pod) -> u16 {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APP_PORT_ANNOTATION))
        .and_then(|p| p.parse().ok());
    let declared = pod
        .spec
        .as_ref()
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find_map(|p| u16::try_from(p.container_port).ok());
    annotated.or(declared).unwrap_or(80)
}

/// The proxy's TOML; the pod's name and namespace come from the environment
/// (`MESH_POD_NAME`, `MESH_POD_NAMESPACE`), which the proxy reads over `[workload]`.
fn proxy_config(config: &InjectConfig, identity: &str, app_port: u16) -> String {
    let transparent = if config.interception {
        "transparent = true\n"
    } else {
        ""
    };
    format!(
        "[identity]\nname = {identity:?}\n\n\
         [control]\naddr = {addr:?}\nidentity = {control:?}\nroots_pem = {roots:?}\ntoken = \"{TOKEN_DIR}/token\"\n\n\
         [admin]\nlisten = \"0.0.0.0:4191\"\n\n\
         [inbound]\nlisten = \"0.0.0.0:4143\"\napp = \"127.0.0.1:{app_port}\"\n{transparent}\n\
         [outbound]\nlisten = \"127.0.0.1:4140\"\n{transparent}",
        addr = config.control_addr,
        control = config.control_identity,
        roots = config.trust_roots_pem,
    )
}

/// `mesh-control inject`: every Pod in the YAML stream `input` (and the pod template of every
/// Deployment, StatefulSet, DaemonSet, ReplicaSet, Job) gets the proxy, whether or not it is
/// annotated; other objects pass through unchanged.
pub fn inject_yaml(input: &str, config: &InjectConfig) -> Result<String, InjectError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(input).map_err(|e| InjectError::Yaml(e.to_string()))?;
    let mut out = String::new();
    for mut doc in docs {
        if doc.is_null() {
            continue;
        }
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        match doc["kind"].as_str() {
            Some("Pod") => {
                let pod: Pod = serde_json::from_value(doc.clone())
                    .map_err(|e| InjectError::NotAPod(e.to_string()))?;
                doc = serde_json::to_value(inject(&pod, &namespace, config)?)
                    .map_err(|e| InjectError::Yaml(e.to_string()))?;
            }
            Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => {
                let template = doc["spec"]["template"].clone();
                let pod: Pod = serde_json::from_value(template)
                    .map_err(|e| InjectError::NotAPod(e.to_string()))?;
                let injected = inject(&pod, &namespace, config)?;
                doc["spec"]["template"] =
                    serde_json::to_value(injected).map_err(|e| InjectError::Yaml(e.to_string()))?;
            }
            _ => {}
        }
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc).map_err(|e| InjectError::Yaml(e.to_string()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(native: bool) -> InjectConfig {
        InjectConfig {
            proxy_image: "proxy:test".into(),
            control_addr: "mesh-control.mesh-system.svc:8086".into(),
            control_identity: "spiffe://mesh.local/ns/mesh-system/sa/mesh-control".into(),
            trust_roots_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
            trust_domain: "mesh.local".into(),
            token_audience: "identity.mesh.local".into(),
            native_sidecar: native,
            interception: true,
        }
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      serviceAccountName: web\n      containers:\n      - name: app\n        image: web:1\n        ports:\n        - containerPort: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";

    #[test]
    fn offline_injection_adds_a_native_sidecar_to_templates_and_leaves_other_objects() {
        let out = inject_yaml(DEPLOYMENT, &config(true)).expect("injected");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("yaml out");
        assert_eq!(docs.len(), 2);
        let spec = &docs[0]["spec"]["template"]["spec"];
        // The interception rules first, then the proxy, before the app.
        let init = &spec["initContainers"][0];
        assert_eq!(init["name"], INIT_CONTAINER);
        assert_eq!(init["command"][0], "mesh-init");
        assert_eq!(init["args"][1], PROXY_UID.to_string());
        assert_eq!(
            init["securityContext"]["capabilities"]["add"][0],
            "NET_ADMIN"
        );
        let sidecar = &spec["initContainers"][1];
        assert_eq!(sidecar["name"], PROXY_CONTAINER);
        assert_eq!(sidecar["securityContext"]["runAsUser"], PROXY_UID);
        assert_eq!(sidecar["restartPolicy"], "Always");
        let config_text = sidecar["env"][0]["value"].as_str().expect("config");
        assert!(config_text.contains("spiffe://mesh.local/ns/shop/sa/web"));
        assert!(config_text.contains("app = \"127.0.0.1:8080\""));
        assert_eq!(
            config_text.matches("transparent = true").count(),
            2,
            "{config_text}"
        );
        assert_eq!(
            spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "identity.mesh.local"
        );
        assert_eq!(
            docs[0]["spec"]["template"]["metadata"]["labels"]["mesh.dev/proxy"],
            "enabled"
        );
        assert_eq!(docs[1]["kind"], "Service");
        assert!(
            docs[1]
                .get("spec")
                .and_then(|s| s.get("template"))
                .is_none()
        );
    }

    #[test]
    fn injecting_twice_changes_nothing_and_old_clusters_get_a_container() {
        let once = inject_yaml(DEPLOYMENT, &config(false)).expect("once");
        let twice = inject_yaml(&once, &config(false)).expect("twice");
        assert_eq!(once, twice);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&once).expect("yaml");
        assert_eq!(
            docs[0]["spec"]["template"]["spec"]["containers"][0]["name"],
            PROXY_CONTAINER
        );
    }

    #[test]
    fn pods_and_namespaces_opt_in_and_pods_opt_out() {
        let on = BTreeMap::from([(INJECT_ANNOTATION.to_owned(), "enabled".to_owned())]);
        let off = BTreeMap::from([(INJECT_ANNOTATION.to_owned(), "disabled".to_owned())]);
        let none = BTreeMap::new();
        assert!(wanted(&on, &none));
        assert!(wanted(&none, &on));
        assert!(!wanted(&off, &on));
        assert!(!wanted(&none, &none));
    }

    #[test]
    fn garbage_yaml_is_an_error_not_a_panic() {
        assert!(inject_yaml("kind: [unclosed", &config(true)).is_err());
    }
}
