//! Keeps the indexes current from the API server: one watcher per kind, restarting with
//! backoff after errors, and each (re)list replacing what the indexes hold of that kind, so a
//! watch that broke (or a mesh-control that restarted) misses nothing. Pods are watched once
//! for both destination and policy.

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::index::{Index, slim_pod, slim_service, slim_slice};
use crate::policy::PolicyIndex;
use crate::policy::crd::api_resource;

const SERVICES: usize = 0;
const SLICES: usize = 1;
const PODS: usize = 2;
const AUTHORIZATIONS: usize = 3;

/// Whether each kind has been listed in full at least once.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<[bool; 4]>);

impl Synced {
    async fn wait_for(&mut self, kinds: &[usize]) {
        let _ = self
            .0
            .wait_for(|listed| kinds.iter().all(|k| listed[*k]))
            .await;
    }

    /// Waits until Services, EndpointSlices and Pods have been listed.
    pub async fn wait(&mut self) {
        self.wait_for(&[SERVICES, SLICES, PODS]).await;
    }

    /// Waits until Pods and MeshAuthorizations have been listed (the CRD must exist).
    pub async fn wait_policy(&mut self) {
        self.wait_for(&[PODS, AUTHORIZATIONS]).await;
    }

    /// Whether everything has been listed.
    pub fn is_synced(&self) -> bool {
        self.0.borrow().iter().all(|k| *k)
    }
}

/// The watcher tasks; dropping them stops watching.
#[derive(Debug)]
pub struct Watchers {
    tasks: Vec<JoinHandle<()>>,
    synced: Synced,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a watcher does with each kind of event.
struct Ops<K> {
    /// What of an object is kept, applied as it arrives: a first list of a large cluster is
    /// buffered whole until it is complete, so it must be buffered slim.
    slim: fn(K) -> K,
    apply: Box<dyn Fn(K) + Send>,
    delete: Box<dyn Fn(&K) + Send>,
    replace: Box<dyn Fn(Vec<K>) + Send>,
}

impl Watchers {
    /// Starts watching every namespace with `client` into `index` and `policy`.
    pub fn start(client: kube::Client, index: Index, policy: PolicyIndex) -> Self {
        let (tx, rx) = watch::channel([false; 4]);
        let (i1, i2, i3) = (index.clone(), index.clone(), index.clone());
        let services = Ops {
            slim: slim_service,
            apply: Box::new(move |s| i1.apply_service(s)),
            delete: Box::new(move |s| i2.delete_service(s)),
            replace: Box::new(move |s| i3.replace_services(s)),
        };
        let (i1, i2, i3) = (index.clone(), index.clone(), index.clone());
        let slices = Ops {
            slim: slim_slice,
            apply: Box::new(move |s| i1.apply_slice(s)),
            delete: Box::new(move |s| i2.delete_slice(s)),
            replace: Box::new(move |s| i3.replace_slices(s)),
        };
        let (i1, i2, i3) = (index.clone(), index.clone(), index);
        let (p1, p2, p3) = (policy.clone(), policy.clone(), policy.clone());
        let pods = Ops {
            slim: slim_pod,
            apply: Box::new(move |p: Pod| {
                p1.apply_pod(&p);
                i1.apply_pod(p);
            }),
            delete: Box::new(move |p| {
                p2.delete_pod(p);
                i2.delete_pod(p);
            }),
            replace: Box::new(move |p: Vec<Pod>| {
                p3.replace_pods(&p);
                i3.replace_pods(p);
            }),
        };
        let (p1, p2, p3) = (policy.clone(), policy.clone(), policy);
        let authorizations = Ops {
            slim: |object| object,
            apply: Box::new(move |a| p1.apply_authorization(a)),
            delete: Box::new(move |a| p2.delete_authorization(a)),
            replace: Box::new(move |a| p3.replace_authorizations(a)),
        };
        let tasks = vec![
            spawn(
                Api::<Service>::all(client.clone()),
                tx.clone(),
                SERVICES,
                services,
            ),
            spawn(
                Api::<EndpointSlice>::all(client.clone()),
                tx.clone(),
                SLICES,
                slices,
            ),
            spawn(Api::<Pod>::all(client.clone()), tx.clone(), PODS, pods),
            spawn(
                Api::<DynamicObject>::all_with(client, &api_resource()),
                tx,
                AUTHORIZATIONS,
                authorizations,
            ),
        ];
        Self {
            tasks,
            synced: Synced(rx),
        }
    }

    /// Whether everything has been listed once.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }
}

fn spawn<K>(
    api: Api<K>,
    synced: watch::Sender<[bool; 4]>,
    slot: usize,
    ops: Ops<K>,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::spawn(async move {
        // Small pages: each page of full objects is parsed whole before it is slimmed.
        let config = watcher::Config::default().page_size(100);
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut listing: Vec<K> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(object)) => (ops.apply)((ops.slim)(object)),
                Ok(Event::Delete(object)) => (ops.delete)(&object),
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(object)) => listing.push((ops.slim)(object)),
                Ok(Event::InitDone) => {
                    (ops.replace)(std::mem::take(&mut listing));
                    synced.send_modify(|kinds| kinds[slot] = true);
                }
                // The stream retries with backoff; the indexes keep what they had meanwhile.
                Err(error) => tracing::warn!(slot, %error, "watch failed; retrying"),
            }
        }
    })
}
