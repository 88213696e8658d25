//! `mesh-control install`: the manifests of a mesh, as `linkerd install` prints them, to pipe
//! into `kubectl apply -f -` (or to apply server-side, as the tests do).
//!
//! In order: the namespace, the `MeshAuthorization` CRD, mesh-control's ServiceAccount and its
//! RBAC (exactly the verbs it uses), the issuer Secret (minted by the development CA unless
//! the user gives one), the mesh-control Deployment and Service, and the
//! MutatingWebhookConfiguration of the injector, trusting the issuer's root (mesh-control
//! serves the webhook with a certificate from that issuer).

use mesh_tls::DevCa;
use serde_json::{Value, json};

use crate::identity::issuer_secret;
use crate::inject::{INJECT_ANNOTATION, INJECT_ENABLED};
use crate::policy::crd;

/// The name of mesh-control's objects.
pub const NAME: &str = "mesh-control";
/// The issuer Secret's name.
pub const ISSUER_SECRET: &str = "mesh-issuer";
/// The webhook's name.
pub const WEBHOOK: &str = "mesh-injector";
/// The gRPC port (destination, identity, policy).
pub const GRPC_PORT: u16 = 8086;
/// The webhook's HTTPS port.
pub const WEBHOOK_PORT: u16 = 8443;
/// The Lease mesh-control renews while it runs, for `check`.
pub const HEARTBEAT_LEASE: &str = "mesh-control-heartbeat";

/// What to install.
#[derive(Debug)]
pub struct InstallConfig {
    /// The control plane's namespace. `mesh-system` by default.
    pub namespace: String,
    /// The trust domain. `mesh.local` by default.
    pub trust_domain: String,
    /// mesh-control's image.
    pub control_image: String,
    /// The proxy's image, which the injector adds to pods.
    pub proxy_image: String,
    /// The issuer; `None` mints one with the development CA.
    pub issuer: Option<DevCa>,
}

impl Default for InstallConfig {
    fn default() -> Self {
        Self {
            namespace: "mesh-system".into(),
            trust_domain: "mesh.local".into(),
            control_image: "ghcr.io/mesh/control:0.1.0".into(),
            proxy_image: "ghcr.io/mesh/proxy:0.1.0".into(),
            issuer: None,
        }
    }
}

/// Why there is nothing to print.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The development CA could not mint an issuer.
    #[error("minting the issuer: {0}")]
    Issuer(#[from] mesh_tls::CaError),
    /// An object could not be written as YAML.
    #[error("writing YAML: {0}")]
    Yaml(String),
}

/// The manifests, in apply order.
pub fn manifests(config: InstallConfig) -> Result<Vec<Value>, InstallError> {
    let ns = config.namespace.as_str();
    let issuer = match config.issuer {
        Some(issuer) => issuer,
        None => DevCa::new(&config.trust_domain)?,
    };
    let labels = json!({ "app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "mesh" });
    let to_value = |v: &dyn erased::Serializable| v.value();
    Ok(vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } }),
        to_value(&crd::definition()),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": NAME, "namespace": ns, "labels": labels } }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": NAME, "labels": labels },
            "rules": [
                { "apiGroups": [""], "resources": ["services", "pods"], "verbs": ["list", "watch"] },
                { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"] },
                { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] },
                { "apiGroups": [crd::GROUP], "resources": [crd::PLURAL], "verbs": ["list", "watch"] },
                { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] }
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": NAME, "labels": labels },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": NAME, "namespace": ns }]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels },
            "rules": [
                { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [ISSUER_SECRET], "verbs": ["get", "list", "watch"] },
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] },
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [HEARTBEAT_LEASE], "verbs": ["get", "patch"] }
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": NAME, "namespace": ns }]
        }),
        to_value(&issuer_secret(&issuer, ns, ISSUER_SECRET)),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app.kubernetes.io/name": NAME } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": NAME,
                        "containers": [{
                            "name": NAME,
                            "image": config.control_image,
                            "args": ["serve", "--namespace", ns, "--trust-domain", config.trust_domain,
                                     "--proxy-image", config.proxy_image],
                            "ports": [
                                { "name": "grpc", "containerPort": GRPC_PORT },
                                { "name": "webhook", "containerPort": WEBHOOK_PORT }
                            ],
                            "securityContext": {
                                "runAsNonRoot": true, "runAsUser": 2103, "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] }
                            }
                        }]
                    }
                }
            }
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": NAME, "namespace": ns, "labels": labels },
            "spec": {
                "selector": { "app.kubernetes.io/name": NAME },
                "ports": [
                    { "name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT },
                    { "name": "webhook", "port": 443, "targetPort": WEBHOOK_PORT }
                ]
            }
        }),
        webhook_configuration(
            ns,
            json!({ "service": { "name": NAME, "namespace": ns, "path": "/inject", "port": 443 } }),
            issuer.root_pem(),
        ),
    ])
}

/// The injector's MutatingWebhookConfiguration: every pod created outside the control
/// plane's and the system's namespaces is sent to it (annotations cannot be selected, and a
/// pod may ask for injection in an unannotated namespace); it decides. `failurePolicy:
/// Ignore`: with the injector down, pods are created uninjected rather than not at all.
pub fn webhook_configuration(namespace: &str, client_config: Value, ca_pem: &str) -> Value {
    let mut client_config = client_config;
    client_config["caBundle"] = Value::String(base64_standard(ca_pem.as_bytes()));
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": WEBHOOK, "labels": { "app.kubernetes.io/part-of": "mesh" } },
        "webhooks": [{
            "name": "inject.mesh.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "Never",
            "clientConfig": client_config,
            "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced" }],
            "namespaceSelector": { "matchExpressions": [
                { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [namespace, "kube-system", "kube-public"] }
            ]},
            "objectSelector": { "matchExpressions": [
                { "key": INJECT_ANNOTATION, "operator": "NotIn", "values": ["disabled"] }
            ]}
        }]
    })
}

/// The manifests as one YAML stream.
pub fn to_yaml(manifests: &[Value]) -> Result<String, InstallError> {
    let mut out = String::new();
    for manifest in manifests {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(manifest).map_err(|e| InstallError::Yaml(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Base64 (standard, padded), as `caBundle` wants.
fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The label a namespace gets to have its pods injected; `kubectl label ns NAME
/// mesh.dev/inject=enabled`.
pub fn namespace_label() -> (&'static str, &'static str) {
    (INJECT_ANNOTATION, INJECT_ENABLED)
}

mod erased {
    //! Any Kubernetes object as a JSON value.
    pub(super) trait Serializable {
        fn value(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Serializable for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}
