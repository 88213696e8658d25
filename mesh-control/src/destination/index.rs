//! Services, EndpointSlices and Pods, indexed, and the endpoint set of every watched
//! (service, port) kept current.
//!
//! Watchers apply changes here; each change recomputes only the services it touches (a slice
//! its service, a pod the services whose slices name it) and publishes to that (service,
//! port)'s `watch` channel only if the set really changed. Subscribers each hold a receiver:
//! a change costs one recompute per touched service and one wake-up per subscriber of it,
//! whatever the number of other services, endpoints or subscribers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use mesh_api::destination::{Endpoint as ApiEndpoint, EndpointSet, ProtocolHint};
use tokio::sync::watch;

use super::authority::Target;
use crate::naming::service_account_identity;

/// The label on a pod that says it has a mesh proxy (the injector sets it), so endpoints
/// backed by it must prove its service account's identity.
pub const PROXY_LABEL: &str = "mesh.dev/proxy";
/// Ports (comma-separated numbers) whose traffic is not to be detected as HTTP, on a Service
/// (service ports) or a Pod (container ports).
pub const OPAQUE_PORTS_ANNOTATION: &str = "mesh.dev/opaque-ports";
/// The weight of an endpoint, as the proto counts it.
pub const DEFAULT_WEIGHT: u32 = 10_000;
/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespaced name.
pub(crate) type Key = (String, String);

/// The set of one (service, port).
pub type Published = Arc<EndpointSet>;

/// Why an authority has no endpoint set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No such Service (or ClusterIP), or the Service has no such port.
    #[error("no such service: {0}")]
    NoSuchService(String),
}

/// The index; cheap to clone.
#[derive(Clone, Debug)]
pub struct Index {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    trust_domain: String,
    services: HashMap<Key, Service>,
    cluster_ips: HashMap<IpAddr, Key>,
    slices: HashMap<Key, EndpointSlice>,
    slices_of: HashMap<Key, HashSet<String>>,
    pods: HashMap<Key, PodInfo>,
    services_of_pod: HashMap<Key, HashSet<Key>>,
    publishers: HashMap<Key, HashMap<u16, watch::Sender<Published>>>,
}

impl Index {
    /// An empty index for identities in `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                trust_domain: trust_domain.into(),
                services: HashMap::new(),
                cluster_ips: HashMap::new(),
                slices: HashMap::new(),
                slices_of: HashMap::new(),
                pods: HashMap::new(),
                services_of_pod: HashMap::new(),
                publishers: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is rebuilt from the API server on resync; a panic elsewhere while holding
        // the lock leaves nothing half-updated that a later event does not overwrite.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the endpoint set of `target`: the receiver holds the current set and is
    /// notified of every change.
    pub fn subscribe(&self, target: &Target) -> Result<watch::Receiver<Published>, LookupError> {
        let mut state = self.lock();
        let (key, port) = match target {
            Target::Service {
                namespace,
                name,
                port,
            } => ((namespace.clone(), name.clone()), *port),
            Target::ClusterIp { ip, port } => match state.cluster_ips.get(ip) {
                Some(key) => (key.clone(), *port),
                None => return Err(LookupError::NoSuchService(format!("{ip}:{port}"))),
            },
        };
        let Some(service) = state.services.get(&key) else {
            return Err(LookupError::NoSuchService(format!("{}/{}", key.0, key.1)));
        };
        if !service_ports(service).any(|p| p.port == i32::from(port)) {
            return Err(LookupError::NoSuchService(format!(
                "{}/{} has no port {port}",
                key.0, key.1
            )));
        }
        if let Some(sender) = state
            .publishers
            .get(&key)
            .and_then(|ports| ports.get(&port))
        {
            return Ok(sender.subscribe());
        }
        let set = Arc::new(state.compute(&key, port));
        let (sender, receiver) = watch::channel(set);
        state
            .publishers
            .entry(key)
            .or_default()
            .insert(port, sender);
        Ok(receiver)
    }

    /// How many (service, port) sets are followed.
    pub fn published(&self) -> usize {
        self.lock().publishers.values().map(HashMap::len).sum()
    }

    /// A Service was added or changed (the watchers pass it slimmed: see `slim_service`).
    pub fn apply_service(&self, service: Service) {
        let mut state = self.lock();
        let Some(key) = key_of(&service.metadata) else {
            return;
        };
        state.forget_cluster_ips(&key);
        for ip in cluster_ips(&service) {
            state.cluster_ips.insert(ip, key.clone());
        }
        state.services.insert(key.clone(), service);
        state.publish(&key);
    }

    /// A Service was deleted.
    pub fn delete_service(&self, service: &Service) {
        let mut state = self.lock();
        let Some(key) = key_of(&service.metadata) else {
            return;
        };
        state.forget_cluster_ips(&key);
        state.services.remove(&key);
        state.publish(&key);
    }

    /// The complete list of Services (after a (re)list): anything not in it is gone.
    pub fn replace_services(&self, services: Vec<Service>) {
        let gone = missing_from(&self.lock().services, &services, |s| key_of(&s.metadata));
        for service in &gone {
            self.delete_service(service);
        }
        for service in services {
            self.apply_service(service);
        }
    }

    /// An EndpointSlice was added or changed.
    pub fn apply_slice(&self, slice: EndpointSlice) {
        let mut state = self.lock();
        let Some(key) = key_of(&slice.metadata) else {
            return;
        };
        let old_service = state.slices.get(&key).and_then(service_of_slice);
        let new_service = service_of_slice(&slice);
        if let Some(old) = &old_service {
            if let Some(names) = state.slices_of.get_mut(old) {
                names.remove(&key.1);
            }
        }
        state.unlink_pods(&key);
        if let Some(service) = &new_service {
            state
                .slices_of
                .entry(service.clone())
                .or_default()
                .insert(key.1.clone());
            for pod in pods_of_slice(&slice) {
                state
                    .services_of_pod
                    .entry(pod)
                    .or_default()
                    .insert(service.clone());
            }
        }
        state.slices.insert(key, slice);
        for service in old_service.into_iter().chain(new_service) {
            state.publish(&service);
        }
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&self, slice: &EndpointSlice) {
        let mut state = self.lock();
        let Some(key) = key_of(&slice.metadata) else {
            return;
        };
        state.unlink_pods(&key);
        if let Some(old) = state.slices.remove(&key) {
            if let Some(service) = service_of_slice(&old) {
                if let Some(names) = state.slices_of.get_mut(&service) {
                    names.remove(&key.1);
                }
                state.publish(&service);
            }
        }
    }

    /// The complete list of EndpointSlices.
    pub fn replace_slices(&self, slices: Vec<EndpointSlice>) {
        let gone = missing_from(&self.lock().slices, &slices, |s| key_of(&s.metadata));
        for slice in &gone {
            self.delete_slice(slice);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }

    /// A Pod was added or changed.
    pub fn apply_pod(&self, pod: Pod) {
        let mut state = self.lock();
        let Some(key) = key_of(&pod.metadata) else {
            return;
        };
        let info = PodInfo::of(&pod, &key, &state.trust_domain);
        if state.pods.get(&key) == Some(&info) {
            return;
        }
        state.pods.insert(key.clone(), info);
        state.publish_for_pod(&key);
    }

    /// A Pod was deleted.
    pub fn delete_pod(&self, pod: &Pod) {
        if let Some(key) = key_of(&pod.metadata) {
            self.forget_pod(&key);
        }
    }

    fn forget_pod(&self, key: &Key) {
        let mut state = self.lock();
        state.pods.remove(key);
        state.publish_for_pod(key);
    }

    /// The complete list of Pods.
    pub fn replace_pods(&self, pods: Vec<Pod>) {
        let keep: HashSet<Key> = pods.iter().filter_map(|p| key_of(&p.metadata)).collect();
        let gone: Vec<Key> = {
            let state = self.lock();
            state
                .pods
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect()
        };
        for key in &gone {
            self.forget_pod(key);
        }
        for pod in pods {
            self.apply_pod(pod);
        }
    }
}

impl State {
    fn forget_cluster_ips(&mut self, key: &Key) {
        self.cluster_ips.retain(|_, k| k != key);
    }

    fn unlink_pods(&mut self, slice: &Key) {
        let Some(old) = self.slices.get(slice) else {
            return;
        };
        let Some(service) = service_of_slice(old) else {
            return;
        };
        for pod in pods_of_slice(old) {
            if let Some(services) = self.services_of_pod.get_mut(&pod) {
                services.remove(&service);
                if services.is_empty() {
                    self.services_of_pod.remove(&pod);
                }
            }
        }
    }

    fn publish_for_pod(&mut self, pod: &Key) {
        let services: Vec<Key> = self
            .services_of_pod
            .get(pod)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for service in services {
            self.publish(&service);
        }
    }

    /// Recomputes the followed ports of `service` and sends the sets that changed; forgets
    /// ports nobody follows any more.
    fn publish(&mut self, service: &Key) {
        let Some(ports) = self.publishers.get(service) else {
            return;
        };
        let ports: Vec<u16> = ports.keys().copied().collect();
        let mut unwatched = Vec::new();
        for port in ports {
            let set = self.compute(service, port);
            let Some(sender) = self.publishers.get(service).and_then(|p| p.get(&port)) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                unwatched.push(port);
                continue;
            }
            sender.send_if_modified(|current| {
                if **current == set {
                    return false;
                }
                *current = Arc::new(set);
                true
            });
        }
        if let Some(ports) = self.publishers.get_mut(service) {
            for port in unwatched {
                ports.remove(&port);
            }
            if ports.is_empty() {
                self.publishers.remove(service);
            }
        }
    }

    /// The endpoint set of `service`'s `port` from what is indexed now.
    fn compute(&self, key: &Key, port: u16) -> EndpointSet {
        let Some(service) = self.services.get(key) else {
            return EndpointSet::default();
        };
        let Some(service_port) = service_ports(service).find(|p| p.port == i32::from(port)) else {
            return EndpointSet::default();
        };
        let port_name = service_port.name.clone().unwrap_or_default();
        let opaque_service = opaque_ports(service.metadata.annotations.as_ref()).contains(&port);
        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for slice_name in self.slices_of.get(key).into_iter().flatten() {
            let Some(slice) = self.slices.get(&(key.0.clone(), slice_name.clone())) else {
                continue;
            };
            let Some(target_port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                // Absent conditions mean ready and serving (the API's own default).
                let is_ready = conditions.ready.unwrap_or(true);
                let is_serving = conditions.serving.unwrap_or(is_ready);
                let is_terminating = conditions.terminating.unwrap_or(false);
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        Some((
                            r.namespace.clone().unwrap_or_else(|| key.0.clone()),
                            r.name.clone()?,
                        ))
                    })
                    .and_then(|k| self.pods.get(&k));
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let made =
                        self.endpoint(key, SocketAddr::new(ip, target_port), pod, opaque_service);
                    if is_ready && !is_terminating {
                        ready.push(made);
                    } else if is_serving && is_terminating {
                        terminating.push(made);
                    }
                }
            }
        }
        // As kube-proxy does: terminating endpoints that still serve get traffic only when
        // nothing else is ready; otherwise they drain (they get no new requests, and the
        // proxies' in-flight requests to them finish).
        let mut endpoints = if ready.is_empty() { terminating } else { ready };
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));
        endpoints.dedup_by(|a, b| a.address == b.address);
        EndpointSet {
            endpoints,
            service_labels: [
                ("namespace".to_owned(), key.0.clone()),
                ("service".to_owned(), key.1.clone()),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn endpoint(
        &self,
        service: &Key,
        addr: SocketAddr,
        pod: Option<&PodInfo>,
        opaque_service: bool,
    ) -> ApiEndpoint {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        labels.insert("namespace".into(), service.0.clone());
        let mut identity = String::new();
        let mut opaque = opaque_service;
        if let Some(pod) = pod {
            labels.insert("pod".into(), pod.name.clone());
            if let Some((kind, name)) = &pod.owner {
                labels.insert(kind.clone(), name.clone());
            }
            if let Some(id) = &pod.identity {
                identity = id.clone();
            }
            opaque |= pod.opaque_ports.contains(&addr.port());
        }
        ApiEndpoint {
            address: addr.to_string(),
            weight: DEFAULT_WEIGHT,
            identity,
            labels: labels.into_iter().collect(),
            protocol: if opaque {
                ProtocolHint::Opaque
            } else {
                ProtocolHint::Detect
            } as i32,
        }
    }
}

/// What an endpoint needs of its pod, worked out once when the pod changes (a whole Pod
/// object is kilobytes; this is what a cluster's worth of them costs).
#[derive(Debug, PartialEq, Eq)]
struct PodInfo {
    name: String,
    /// Its service account's identity, when it has the proxy.
    identity: Option<String>,
    /// Its owner for metrics (`deployment`, or the owner's kind).
    owner: Option<(String, String)>,
    opaque_ports: Vec<u16>,
}

impl PodInfo {
    fn of(pod: &Pod, key: &Key, trust_domain: &str) -> Self {
        let meta = &pod.metadata;
        let meshed = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(PROXY_LABEL))
            .is_some_and(|v| v == "enabled");
        let identity = meshed
            .then(|| {
                let account = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.as_deref())
                    .unwrap_or("default");
                service_account_identity(trust_domain, &key.0, account).ok()
            })
            .flatten()
            .map(|id| id.to_string());
        let mut opaque_ports: Vec<u16> = opaque_ports(meta.annotations.as_ref())
            .into_iter()
            .collect();
        opaque_ports.sort_unstable();
        Self {
            name: key.1.clone(),
            identity,
            owner: owner_of(pod),
            opaque_ports,
        }
    }
}

/// The objects `held` whose keys are not in `listed`: what a complete (re)list says is gone.
fn missing_from<T: Clone, L>(
    held: &HashMap<Key, T>,
    listed: &[L],
    key: impl Fn(&L) -> Option<Key>,
) -> Vec<T> {
    let keep: HashSet<Key> = listed.iter().filter_map(key).collect();
    held.iter()
        .filter(|(k, _)| !keep.contains(*k))
        .map(|(_, v)| v.clone())
        .collect()
}

/// An object's namespace and name.
pub(crate) fn key_of(meta: &kube::api::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn service_ports(
    service: &Service,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ServicePort> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
}

fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    spec.cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

fn service_of_slice(slice: &EndpointSlice) -> Option<Key> {
    let namespace = slice.metadata.namespace.clone()?;
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((namespace, name))
}

fn pods_of_slice(slice: &EndpointSlice) -> Vec<Key> {
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    slice
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .filter_map(|r| {
            Some((
                r.namespace.clone().unwrap_or_else(|| namespace.clone()),
                r.name.clone()?,
            ))
        })
        .collect()
}

fn opaque_ports(annotations: Option<&BTreeMap<String, String>>) -> HashSet<u16> {
    annotations
        .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION))
        .map(|ports| {
            ports
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pod's owner for metrics: `deployment` for a ReplicaSet made by a Deployment (its name
/// less the pod-template hash), otherwise the owner's kind in lower case.
fn owner_of(pod: &Pod) -> Option<(String, String)> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    if owner.kind == "ReplicaSet" {
        let hash = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        if let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
            return Some(("deployment".into(), deployment.to_owned()));
        }
    }
    Some((owner.kind.to_lowercase(), owner.name.clone()))
}

/// What the index needs of an object's metadata: what endpoint sets are made of. The managed
/// fields alone are often most of an object; a cluster's worth of them is most of the memory.
fn slim_meta(meta: kube::api::ObjectMeta) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        annotations: meta.annotations.map(|a| {
            a.into_iter()
                .filter(|(k, _)| k.starts_with("mesh.dev/"))
                .collect()
        }),
        owner_references: meta.owner_references,
        ..Default::default()
    }
}

/// What the index needs of a Service.
pub(crate) fn slim_service(service: Service) -> Service {
    let spec = service
        .spec
        .map(|spec| k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips,
            ports: spec.ports,
            ..Default::default()
        });
    Service {
        metadata: slim_meta(service.metadata),
        spec,
        status: None,
    }
}

/// What the index (and policy: labels) needs of a Pod.
pub(crate) fn slim_pod(pod: Pod) -> Pod {
    let spec = pod.spec.map(|spec| k8s_openapi::api::core::v1::PodSpec {
        service_account_name: spec.service_account_name,
        ..Default::default()
    });
    Pod {
        metadata: slim_meta(pod.metadata),
        spec,
        status: None,
    }
}

/// What the index needs of an EndpointSlice: its endpoints and ports, and slim metadata.
pub(crate) fn slim_slice(mut slice: EndpointSlice) -> EndpointSlice {
    slice.metadata = slim_meta(slice.metadata);
    slice
}
