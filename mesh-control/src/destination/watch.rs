//! Keeps the index current from the API server: one watcher per kind, restarting with
//! backoff after errors, and each (re)list replacing what the index holds of that kind, so a
//! watch that broke (or a mesh-control that restarted) misses nothing.

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::index::Index;

/// Whether each kind has been listed in full at least once.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<[bool; 3]>);

impl Synced {
    /// Waits until Services, EndpointSlices and Pods have all been listed.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|kinds| kinds.iter().all(|k| *k)).await;
    }

    /// Whether they have.
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

impl Watchers {
    /// Starts watching every namespace with `client` into `index`.
    pub fn start(client: kube::Client, index: Index) -> Self {
        let (tx, rx) = watch::channel([false; 3]);
        let tasks = vec![
            spawn(
                Api::<Service>::all(client.clone()),
                index.clone(),
                tx.clone(),
                0,
                Ops {
                    apply: Index::apply_service,
                    delete: Index::delete_service,
                    replace: Index::replace_services,
                },
            ),
            spawn(
                Api::<EndpointSlice>::all(client.clone()),
                index.clone(),
                tx.clone(),
                1,
                Ops {
                    apply: Index::apply_slice,
                    delete: Index::delete_slice,
                    replace: Index::replace_slices,
                },
            ),
            spawn(
                Api::<Pod>::all(client),
                index,
                tx,
                2,
                Ops {
                    apply: Index::apply_pod,
                    delete: Index::delete_pod,
                    replace: Index::replace_pods,
                },
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

struct Ops<K> {
    apply: fn(&Index, K),
    delete: fn(&Index, &K),
    replace: fn(&Index, Vec<K>),
}

fn spawn<K>(
    api: Api<K>,
    index: Index,
    synced: watch::Sender<[bool; 3]>,
    slot: usize,
    ops: Ops<K>,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let kind = K::kind(&K::DynamicType::default()).into_owned();
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: Vec<K> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(object)) => (ops.apply)(&index, object),
                Ok(Event::Delete(object)) => (ops.delete)(&index, &object),
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(object)) => listing.push(object),
                Ok(Event::InitDone) => {
                    (ops.replace)(&index, std::mem::take(&mut listing));
                    synced.send_modify(|kinds| kinds[slot] = true);
                    tracing::debug!(%kind, "listed");
                }
                // The stream retries with backoff; the index keeps what it had meanwhile.
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying"),
            }
        }
    })
}
