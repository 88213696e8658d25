//! `MeshAuthorization`: who may call which ports of which pods.
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: MeshAuthorization
//! metadata: { name: web-from-shop, namespace: default }
//! spec:
//!   podSelector: { matchLabels: { app: web } }   # absent or empty: every pod in the namespace
//!   ports: [8080]                                # absent or empty: every port
//!   allow:
//!     identities: ["spiffe://mesh.local/ns/shop/sa/*"]   # mesh-tls patterns: * is one segment
//!     unauthenticated: false
//! ```

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;

/// The API group.
pub const GROUP: &str = "policy.mesh.dev";
/// The version.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "MeshAuthorization";
/// The plural, as in the URL.
pub const PLURAL: &str = "meshauthorizations";

/// What the API calls the resource.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The spec of a MeshAuthorization.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshAuthorizationSpec {
    /// The pods it applies to, in its namespace; absent or empty selects all.
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// The ports (container ports the inbound proxy forwards to); absent or empty means all.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Who is allowed.
    #[serde(default)]
    pub allow: Allow,
}

/// The allowed callers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Allow {
    /// Identity patterns.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Whether callers without a proven identity are allowed.
    #[serde(default)]
    pub unauthenticated: bool,
}

impl MeshAuthorizationSpec {
    /// Whether it selects a pod with `labels`.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(selector) = &self.pod_selector else {
            return true;
        };
        let labels_match = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // An operator we do not know selects nothing rather than everything.
                _ => false,
            }
        });
        labels_match && expressions_match
    }
}

/// Whether the API server serves `crd` (its `Established` condition is true).
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True")
}

/// The CustomResourceDefinition `install` applies.
pub fn definition() -> CustomResourceDefinition {
    let crd = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{PLURAL}.{GROUP}") },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": { "kind": KIND, "plural": PLURAL, "singular": "meshauthorization", "shortNames": ["mauthz"] },
            "versions": [{
                "name": VERSION, "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": {
                            "podSelector": {
                                "type": "object",
                                "properties": {
                                    "matchLabels": { "type": "object", "additionalProperties": { "type": "string" } },
                                    "matchExpressions": { "type": "array", "items": {
                                        "type": "object",
                                        "required": ["key", "operator"],
                                        "properties": {
                                            "key": { "type": "string" },
                                            "operator": { "type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"] },
                                            "values": { "type": "array", "items": { "type": "string" } }
                                        }
                                    }}
                                }
                            },
                            "ports": { "type": "array", "items": { "type": "integer", "minimum": 1, "maximum": 65535 } },
                            "allow": {
                                "type": "object",
                                "properties": {
                                    "identities": { "type": "array", "items": { "type": "string", "minLength": 1 } },
                                    "unauthenticated": { "type": "boolean" }
                                }
                            }
                        }
                    }}
                }}
            }]
        }
    });
    // The literal above is a valid CRD; should serde ever disagree, an empty one fails loudly
    // at apply time rather than here.
    serde_json::from_value(crd).unwrap_or_default()
}
