//! Inbound authorization from the control plane's policy API, applied to a [`SharedPolicy`]
//! as it changes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mesh_api::policy::policy_client::PolicyClient;
use mesh_api::policy::{Authorization, InboundPolicy, WatchInbound};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::authz::{AuthzPolicy, IdentityPattern, SharedPolicy};

/// Which pod and port to follow, and how to reconnect.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The port the inbound proxy forwards to.
    pub port: u16,
    /// The first wait after a broken stream; doubled up to `max_backoff`. 250 ms by default.
    pub min_backoff: Duration,
    /// The longest wait. 10 s by default.
    pub max_backoff: Duration,
}

impl PolicyConfig {
    /// Follows `namespace/pod`'s policy for `port`.
    pub fn new(namespace: impl Into<String>, pod: impl Into<String>, port: u16) -> Self {
        Self {
            namespace: namespace.into(),
            pod: pod.into(),
            port,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the follower has seen; cheap to clone.
#[derive(Clone, Debug)]
pub struct PolicyReport {
    state: Arc<Mutex<ReportState>>,
    received: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct ReportState {
    updates: u64,
    last_error: Option<String>,
    source: String,
}

impl PolicyReport {
    fn lock(&self) -> MutexGuard<'_, ReportState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Policies applied.
    pub fn updates(&self) -> u64 {
        self.lock().updates
    }

    /// The last stream error.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Where the policy in force came from (`default: same namespace`, or object names).
    pub fn source(&self) -> String {
        self.lock().source.clone()
    }

    /// Whether a policy has been received (until then the shared policy is what the caller
    /// put there: for a proxy, nobody is admitted).
    pub fn has_received(&self) -> bool {
        *self.received.borrow()
    }

    /// Waits for the first policy.
    pub async fn received(&self) {
        let _ = self.received.clone().wait_for(|r| *r).await;
    }
}

/// Follows the policy over `channel` into `policy` until the task is dropped. Until the first
/// answer, and while the control plane is away, `policy` keeps what it has.
pub fn follow_policy(
    channel: Channel,
    config: PolicyConfig,
    policy: SharedPolicy,
) -> (JoinHandle<()>, PolicyReport) {
    let (tx, received) = watch::channel(false);
    let report = PolicyReport {
        state: Arc::default(),
        received,
    };
    let task_report = report.clone();
    let task = tokio::spawn(async move {
        let mut client = PolicyClient::new(channel);
        let mut backoff = config.min_backoff;
        loop {
            let request = WatchInbound {
                namespace: config.namespace.clone(),
                pod: config.pod.clone(),
            };
            match client.watch(request).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(inbound)) => {
                                backoff = config.min_backoff;
                                let (made, source) = for_port(&inbound, config.port);
                                policy.replace(made);
                                let mut state = task_report.lock();
                                state.updates += 1;
                                state.source = source;
                                drop(state);
                                tx.send_replace(true);
                            }
                            Ok(None) => break,
                            Err(status) => {
                                task_report.lock().last_error = Some(status.to_string());
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(%status, "policy unavailable; keeping the one in force");
                    task_report.lock().last_error = Some(status.to_string());
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    });
    (task, report)
}

/// The policy for `port`: its own rule, or the default.
fn for_port(inbound: &InboundPolicy, port: u16) -> (AuthzPolicy, String) {
    let rule = inbound
        .ports
        .iter()
        .find(|p| p.port == u32::from(port))
        .and_then(|p| p.authorization.as_ref())
        .or(inbound.default.as_ref());
    match rule {
        Some(rule) => (authz_of(rule), rule.source.clone()),
        // A policy with no rule at all admits nobody.
        None => (AuthzPolicy::default(), "none".into()),
    }
}

fn authz_of(rule: &Authorization) -> AuthzPolicy {
    let patterns =
        rule.allowed_identities
            .iter()
            .filter_map(|p| match p.parse::<IdentityPattern>() {
                Ok(pattern) => Some(pattern),
                Err(error) => {
                    tracing::warn!(%error, "pattern from the control plane skipped");
                    None
                }
            });
    AuthzPolicy::from_patterns(patterns).allow_unauthenticated(rule.allow_unauthenticated)
}
