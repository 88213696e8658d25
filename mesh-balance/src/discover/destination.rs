//! Endpoints from the control plane's destination API (feature `destination`): follows the
//! stream of endpoint sets for one authority and turns each new set into the inserts and
//! removals that make the balancer's set equal to it.
//!
//! When the stream breaks or the control plane is away, the last set stays (the balancer keeps
//! sending to it) and the source reconnects with backoff; the first set after reconnecting is
//! complete, so whatever changed meanwhile is applied then. An authority the control plane
//! does not know is reported ([`DestinationReport::no_such_service`]) and asked about again,
//! more slowly, since it may yet be created.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mesh_api::destination::destination_client::DestinationClient;
use mesh_api::destination::{EndpointSet, GetDestination, ProtocolHint};
use mesh_core::{Endpoint, Identity};
use tonic::transport::Channel;

use super::updates::{UpdateSender, Updates, channel};

/// The label an endpoint gets when the control plane marks its port opaque (no HTTP
/// detection).
pub const OPAQUE_LABEL: (&str, &str) = ("protocol", "opaque");

/// How the source reconnects.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// The first wait after a broken stream; doubled up to `max_backoff`. 250 ms by default.
    pub min_backoff: Duration,
    /// The longest wait. 10 s by default.
    pub max_backoff: Duration,
    /// The proxy's namespace, sent along for the control plane's logs.
    pub context_namespace: String,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            context_namespace: String::new(),
        }
    }
}

/// What the source has seen; cheap to clone.
#[derive(Clone, Debug)]
pub struct DestinationReport {
    state: Arc<Mutex<ReportState>>,
    answered: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct ReportState {
    sets: u64,
    endpoints: usize,
    reconnects: u64,
    no_such_service: Option<String>,
    last_error: Option<String>,
    received: bool,
}

impl DestinationReport {
    fn lock(&self) -> MutexGuard<'_, ReportState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the control plane has answered once: a set, or "no such service".
    pub async fn answered(&self) {
        let _ = self.answered.clone().wait_for(|a| *a).await;
    }

    /// Sets received.
    pub fn sets(&self) -> u64 {
        self.lock().sets
    }

    /// Endpoints in the current set.
    pub fn endpoints(&self) -> usize {
        self.lock().endpoints
    }

    /// Times the stream was opened again after breaking.
    pub fn reconnects(&self) -> u64 {
        self.lock().reconnects
    }

    /// The control plane's answer if it knows no such service (cleared by a set).
    pub fn no_such_service(&self) -> Option<String> {
        self.lock().no_such_service.clone()
    }

    /// The last stream error.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Whether a set has been received at all (the balancer has something to use).
    pub fn has_received(&self) -> bool {
        self.lock().received
    }
}

/// Follows `authority` over `client`.
pub fn watch(
    client: DestinationClient<Channel>,
    authority: impl Into<String>,
    config: DestinationConfig,
) -> (Updates, DestinationReport) {
    let (tx, updates) = channel();
    let (answered_tx, answered) = tokio::sync::watch::channel(false);
    let report = DestinationReport {
        state: Arc::default(),
        answered,
    };
    let task = tokio::spawn(follow(
        client,
        authority.into(),
        config,
        tx,
        report.clone(),
        answered_tx,
    ));
    (updates.with_task(task), report)
}

async fn follow(
    mut client: DestinationClient<Channel>,
    authority: String,
    config: DestinationConfig,
    tx: UpdateSender,
    report: DestinationReport,
    answered: tokio::sync::watch::Sender<bool>,
) {
    let mut current: HashMap<SocketAddr, Endpoint> = HashMap::new();
    let mut backoff = config.min_backoff;
    let mut opened = 0u64;
    loop {
        let request = GetDestination {
            authority: authority.clone(),
            context_namespace: config.context_namespace.clone(),
        };
        match client.get(request).await {
            Ok(response) => {
                opened += 1;
                if opened > 1 {
                    report.lock().reconnects += 1;
                }
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(set)) => {
                            backoff = config.min_backoff;
                            if !apply(&set, &mut current, &tx, &authority) {
                                return;
                            }
                            let mut state = report.lock();
                            state.sets += 1;
                            state.endpoints = current.len();
                            state.no_such_service = None;
                            state.received = true;
                            drop(state);
                            answered.send_replace(true);
                        }
                        Ok(None) => {
                            report.lock().last_error =
                                Some("the control plane ended the stream".into());
                            break;
                        }
                        Err(status) => {
                            report.lock().last_error = Some(status.to_string());
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                tracing::debug!(%authority, message = status.message(), "no such service");
                let mut state = report.lock();
                state.no_such_service = Some(status.message().to_owned());
                state.last_error = Some(status.to_string());
                drop(state);
                answered.send_replace(true);
                // It may be created later; ask again, but not often.
                backoff = config.max_backoff;
            }
            Err(status) => {
                tracing::debug!(%authority, %status, "destination unavailable; keeping the last set");
                report.lock().last_error = Some(status.to_string());
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Makes the balancer's set equal to `set`. Returns `false` once nobody listens.
fn apply(
    set: &EndpointSet,
    current: &mut HashMap<SocketAddr, Endpoint>,
    tx: &UpdateSender,
    authority: &str,
) -> bool {
    let mut next = HashMap::with_capacity(set.endpoints.len());
    for endpoint in &set.endpoints {
        match endpoint_of(endpoint) {
            Ok(endpoint) => {
                next.insert(endpoint.addr, endpoint);
            }
            Err(reason) => {
                tracing::warn!(%authority, address = %endpoint.address, %reason, "endpoint skipped")
            }
        }
    }
    for addr in current.keys() {
        if !next.contains_key(addr) && !tx.remove(*addr) {
            return false;
        }
    }
    for (addr, endpoint) in &next {
        if current.get(addr) != Some(endpoint) && !tx.insert(endpoint.clone()) {
            return false;
        }
    }
    *current = next;
    true
}

fn endpoint_of(endpoint: &mesh_api::destination::Endpoint) -> Result<Endpoint, String> {
    let addr: SocketAddr = endpoint
        .address
        .parse()
        .map_err(|e| format!("not an address: {e}"))?;
    let mut made = Endpoint::new(addr).with_weight(endpoint.weight);
    if !endpoint.identity.is_empty() {
        let identity = Identity::parse(&endpoint.identity).map_err(|e| e.to_string())?;
        made = made.with_identity(identity);
    }
    let mut labels: Vec<(String, String)> = endpoint
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if endpoint.protocol == ProtocolHint::Opaque as i32 {
        labels.push((OPAQUE_LABEL.0.into(), OPAQUE_LABEL.1.into()));
    }
    labels.sort();
    Ok(made.with_labels(labels))
}
