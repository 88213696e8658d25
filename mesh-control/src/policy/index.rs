//! MeshAuthorizations and pod labels, and the inbound policy of every watched pod.
//!
//! The rule, for a pod and a port: the MeshAuthorizations of the pod's namespace that select
//! the pod and list the port (or list no ports) together allow the union of what they allow.
//! A port no MeshAuthorization covers allows only identities of the pod's own namespace
//! (`spiffe://<trust domain>/ns/<namespace>/sa/*`) and no unauthenticated callers: secure by
//! default. A pattern that does not parse allows nobody (it is logged), never everybody.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use mesh_api::policy::{Authorization, InboundPolicy, PortPolicy};
use mesh_tls::authz::IdentityPattern;
use tokio::sync::watch;

use super::crd::MeshAuthorizationSpec;
use crate::destination::{Key, key_of};

/// The inbound policy of one pod, as streamed.
pub type Published = Arc<InboundPolicy>;

/// Why a pod has no policy to follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no such pod: {namespace}/{name}")]
pub struct NoSuchPod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The index; cheap to clone.
#[derive(Clone, Debug)]
pub struct PolicyIndex {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    trust_domain: String,
    authorizations: HashMap<Key, MeshAuthorizationSpec>,
    pods: HashMap<Key, BTreeMap<String, String>>,
    publishers: HashMap<Key, watch::Sender<Published>>,
}

impl PolicyIndex {
    /// An empty index for `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                trust_domain: trust_domain.into(),
                authorizations: HashMap::new(),
                pods: HashMap::new(),
                publishers: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the policy of pod `namespace/name`.
    pub fn subscribe(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<watch::Receiver<Published>, NoSuchPod> {
        let mut state = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if !state.pods.contains_key(&key) {
            return Err(NoSuchPod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        if let Some(sender) = state.publishers.get(&key) {
            return Ok(sender.subscribe());
        }
        let (sender, receiver) = watch::channel(Arc::new(state.compute(&key)));
        state.publishers.insert(key, sender);
        Ok(receiver)
    }

    /// A MeshAuthorization was added or changed.
    pub fn apply_authorization(&self, object: DynamicObject) {
        let Some(key) = key_of(&object.metadata) else {
            return;
        };
        let spec = match object
            .data
            .get("spec")
            .cloned()
            .map(serde_json::from_value::<MeshAuthorizationSpec>)
        {
            Some(Ok(spec)) => spec,
            Some(Err(error)) => {
                // Admitting nothing is the safe reading of a policy we cannot read.
                tracing::warn!(namespace = %key.0, name = %key.1, %error, "MeshAuthorization unreadable; it allows nobody");
                MeshAuthorizationSpec::default()
            }
            None => MeshAuthorizationSpec::default(),
        };
        let mut state = self.lock();
        state.authorizations.insert(key.clone(), spec);
        state.publish_namespace(&key.0);
    }

    /// A MeshAuthorization was deleted.
    pub fn delete_authorization(&self, object: &DynamicObject) {
        let Some(key) = key_of(&object.metadata) else {
            return;
        };
        let mut state = self.lock();
        state.authorizations.remove(&key);
        state.publish_namespace(&key.0);
    }

    /// The complete list of MeshAuthorizations.
    pub fn replace_authorizations(&self, objects: Vec<DynamicObject>) {
        {
            let mut state = self.lock();
            let namespaces: BTreeSet<String> = state
                .authorizations
                .keys()
                .map(|k| k.0.clone())
                .collect::<BTreeSet<String>>();
            state.authorizations.clear();
            for namespace in &namespaces {
                state.publish_namespace(namespace);
            }
        }
        for object in objects {
            self.apply_authorization(object);
        }
    }

    /// A Pod was added or changed.
    pub fn apply_pod(&self, pod: &Pod) {
        let Some(key) = key_of(&pod.metadata) else {
            return;
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut state = self.lock();
        if state.pods.get(&key) == Some(&labels) {
            return;
        }
        state.pods.insert(key.clone(), labels);
        state.publish(&key);
    }

    /// A Pod was deleted.
    pub fn delete_pod(&self, pod: &Pod) {
        let Some(key) = key_of(&pod.metadata) else {
            return;
        };
        let mut state = self.lock();
        state.pods.remove(&key);
        state.publishers.remove(&key);
    }

    /// The complete list of Pods.
    pub fn replace_pods(&self, pods: &[Pod]) {
        let keep: BTreeSet<Key> = pods.iter().filter_map(|p| key_of(&p.metadata)).collect();
        {
            let mut state = self.lock();
            state.pods.retain(|k, _| keep.contains(k));
            state.publishers.retain(|k, _| keep.contains(k));
        }
        for pod in pods {
            self.apply_pod(pod);
        }
    }
}

impl State {
    fn publish_namespace(&mut self, namespace: &str) {
        let keys: Vec<Key> = self
            .publishers
            .keys()
            .filter(|k| k.0 == namespace)
            .cloned()
            .collect();
        for key in keys {
            self.publish(&key);
        }
    }

    fn publish(&mut self, pod: &Key) {
        let Some(sender) = self.publishers.get(pod) else {
            return;
        };
        if sender.receiver_count() == 0 {
            self.publishers.remove(pod);
            return;
        }
        let policy = self.compute(pod);
        sender.send_if_modified(|current| {
            if **current == policy {
                return false;
            }
            *current = Arc::new(policy);
            true
        });
    }

    fn compute(&self, pod: &Key) -> InboundPolicy {
        let empty = BTreeMap::new();
        let labels = self.pods.get(pod).unwrap_or(&empty);
        let mut matching: Vec<(&String, &MeshAuthorizationSpec)> = self
            .authorizations
            .iter()
            .filter(|(k, spec)| k.0 == pod.0 && spec.selects(labels))
            .map(|(k, spec)| (&k.1, spec))
            .collect();
        matching.sort_by(|a, b| a.0.cmp(b.0));
        let every_port: Vec<_> = matching
            .iter()
            .filter(|(_, s)| s.ports.is_empty())
            .copied()
            .collect();
        let default = if every_port.is_empty() {
            Authorization {
                allowed_identities: vec![format!(
                    "spiffe://{}/ns/{}/sa/*",
                    self.trust_domain, pod.0
                )],
                allow_unauthenticated: false,
                source: "default: same namespace".into(),
            }
        } else {
            union(&every_port)
        };
        let ports: BTreeSet<u16> = matching
            .iter()
            .flat_map(|(_, s)| s.ports.iter().copied())
            .collect();
        let ports = ports
            .into_iter()
            .map(|port| {
                let covering: Vec<_> = matching
                    .iter()
                    .filter(|(_, s)| s.ports.is_empty() || s.ports.contains(&port))
                    .copied()
                    .collect();
                PortPolicy {
                    port: u32::from(port),
                    authorization: Some(union(&covering)),
                }
            })
            .collect();
        InboundPolicy {
            ports,
            default: Some(default),
        }
    }
}

fn union(policies: &[(&String, &MeshAuthorizationSpec)]) -> Authorization {
    let mut identities = BTreeSet::new();
    let mut unauthenticated = false;
    for (name, spec) in policies {
        for pattern in &spec.allow.identities {
            if pattern.parse::<IdentityPattern>().is_ok() {
                identities.insert(pattern.clone());
            } else {
                tracing::warn!(authorization = %name, %pattern, "invalid identity pattern; it allows nobody");
            }
        }
        unauthenticated |= spec.allow.unauthenticated;
    }
    Authorization {
        allowed_identities: identities.into_iter().collect(),
        allow_unauthenticated: unauthenticated,
        source: policies
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}
