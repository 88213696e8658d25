//! The destination API: an authority in, its endpoint sets streamed out.

use std::pin::Pin;

use futures_util::Stream;
use mesh_api::destination::destination_server::{Destination, DestinationServer};
use mesh_api::destination::{EndpointSet, GetDestination};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::authority;
use super::index::{Index, LookupError};
use super::watch::Synced;

/// The destination service.
#[derive(Clone, Debug)]
pub struct DestinationService {
    index: Index,
    synced: Synced,
    cluster_domain: String,
}

impl DestinationService {
    /// Answers from `index` once `synced` says it is complete.
    pub fn new(index: Index, synced: Synced, cluster_domain: impl Into<String>) -> Self {
        Self {
            index,
            synced,
            cluster_domain: cluster_domain.into(),
        }
    }

    /// As a tonic service.
    pub fn into_server(self) -> DestinationServer<Self> {
        DestinationServer::new(self)
    }
}

/// Snapshots not yet taken by a slow proxy; the stream only ever needs the newest.
const STREAM_BUFFER: usize = 1;

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = Pin<Box<dyn Stream<Item = Result<EndpointSet, Status>> + Send>>;

    async fn get(
        &self,
        request: Request<GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let asked = request.into_inner().authority;
        let target = authority::parse(&asked, &self.cluster_domain)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Before the first full list "unknown" would be a guess; wait for the truth.
        let mut synced = self.synced.clone();
        synced.wait().await;
        let mut sets =
            self.index
                .subscribe(&target)
                .map_err(|LookupError::NoSuchService(what)| {
                    Status::not_found(format!("no such service: {asked} ({what})"))
                })?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let set = EndpointSet::clone(&sets.borrow_and_update());
                if tx.send(Ok(set)).await.is_err() {
                    return;
                }
                // Several changes while the proxy was busy arrive as one: the newest.
                if sets.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
