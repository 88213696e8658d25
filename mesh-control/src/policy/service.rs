//! The policy API: a pod in, its inbound policy streamed out.

use std::pin::Pin;

use futures_util::Stream;
use mesh_api::policy::policy_server::{Policy, PolicyServer};
use mesh_api::policy::{InboundPolicy, WatchInbound};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::index::PolicyIndex;
use crate::destination::Synced;

/// The policy service.
#[derive(Clone, Debug)]
pub struct PolicyService {
    index: PolicyIndex,
    synced: Synced,
}

impl PolicyService {
    /// Answers from `index` once `synced` says pods and MeshAuthorizations are listed.
    pub fn new(index: PolicyIndex, synced: Synced) -> Self {
        Self { index, synced }
    }

    /// As a tonic service.
    pub fn into_server(self) -> PolicyServer<Self> {
        PolicyServer::new(self)
    }
}

#[tonic::async_trait]
impl Policy for PolicyService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<InboundPolicy, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<WatchInbound>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let WatchInbound { namespace, pod } = request.into_inner();
        self.synced.clone().wait_policy().await;
        let mut policies = self
            .index
            .subscribe(&namespace, &pod)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let policy = InboundPolicy::clone(&policies.borrow_and_update());
                if tx.send(Ok(policy)).await.is_err() || policies.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
