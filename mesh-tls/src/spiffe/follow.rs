//! Following the Workload API's X.509 stream into a [`CredentialStore`].

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use mesh_core::Identity;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::x509_source::{MetricsErrorKind, MetricsRecorder, SvidPicker, X509SourceState};
use spiffe::{X509Source, X509SourceError, X509Svid};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CredentialStore, SpiffeReport};
use crate::credentials::Credentials;
use crate::identity::{not_after_of, serial_of};

/// The variable the SPIFFE specification names for the Workload API's address.
const ENDPOINT_VARIABLE: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Where the Workload API is, what identity to expect from it, and how to retry.
#[derive(Clone, Debug)]
pub struct SpiffeConfig {
    /// The API's address: `unix:///run/spire/agent.sock`, `unix:/path`, `tcp://ip:port`, or an
    /// absolute socket path. `None` reads `SPIFFE_ENDPOINT_SOCKET` (when [`follow`] starts).
    pub endpoint: Option<String>,
    /// The identity the SVID must carry. Among several SVIDs the one with this identity is
    /// used; an agent offering none is refused. `None` takes the agent's default SVID.
    pub expected: Option<Identity>,
    /// The first wait before reconnecting; doubled (with jitter) up to `max_backoff`. 200 ms by
    /// default.
    pub min_backoff: Duration,
    /// The longest wait between attempts. 10 s by default.
    pub max_backoff: Duration,
}

impl SpiffeConfig {
    /// Defaults for the API at `endpoint` (`None`: `SPIFFE_ENDPOINT_SOCKET`), expecting
    /// `expected`.
    pub fn new(endpoint: Option<String>, expected: Option<Identity>) -> Self {
        Self {
            endpoint,
            expected,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why following the Workload API cannot start (a configuration mistake, not an agent that is
/// away: that is waited for).
#[derive(Debug, thiserror::Error)]
pub enum SpiffeError {
    /// No endpoint was given and `SPIFFE_ENDPOINT_SOCKET` is not set.
    #[error("no Workload API endpoint: none configured and {ENDPOINT_VARIABLE} is not set")]
    NoEndpoint,
    /// The endpoint is not a Workload API address.
    #[error("the Workload API endpoint `{endpoint}` cannot be used: {reason}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// The running follower's handle: the store once there is one, and the report. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpiffeIdentity {
    store: watch::Receiver<Option<CredentialStore>>,
    report: SpiffeReport,
}

impl SpiffeIdentity {
    /// The store, once the first usable SVID has arrived: waits as long as that takes. It
    /// follows every later SVID and bundle.
    pub async fn credentials(&self) -> CredentialStore {
        let mut store = self.store.clone();
        loop {
            if let Some(store) = store.borrow_and_update().clone() {
                return store;
            }
            if store.changed().await.is_err() {
                // The follower is gone (its task was aborted): nothing will ever arrive.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The store, if the first SVID has arrived.
    pub fn store(&self) -> Option<CredentialStore> {
        self.store.borrow().clone()
    }

    /// What the follower has done.
    pub fn report(&self) -> SpiffeReport {
        self.report.clone()
    }
}

/// Starts following the Workload API: connects (retrying with backoff for as long as it
/// takes), puts each usable SVID in force, and keeps doing so until the task is aborted.
/// Returns at once; [`SpiffeIdentity::credentials`] waits for the first SVID. Must be called
/// within a Tokio runtime.
pub fn follow(config: SpiffeConfig) -> Result<(JoinHandle<()>, SpiffeIdentity), SpiffeError> {
    let endpoint = endpoint(config.endpoint.as_deref())?;
    let (tx, rx) = watch::channel(None);
    let report = SpiffeReport::default();
    let follower = Follower {
        endpoint,
        config,
        report: report.clone(),
        first: tx,
        store: None,
        installed: None,
    };
    let task = tokio::spawn(follower.run());
    Ok((task, SpiffeIdentity { store: rx, report }))
}

/// The endpoint to use, checked now so that a mistake is an error at start, not a retry loop.
fn endpoint(configured: Option<&str>) -> Result<String, SpiffeError> {
    let raw = match configured {
        Some(endpoint) => endpoint.to_owned(),
        None => std::env::var(ENDPOINT_VARIABLE).map_err(|_| SpiffeError::NoEndpoint)?,
    };
    // A bare path is a Unix socket (what `SPIFFE_ENDPOINT_SOCKET` often holds in practice).
    let endpoint = if raw.starts_with('/') {
        format!("unix://{raw}")
    } else {
        raw.clone()
    };
    spiffe::transport::Endpoint::parse(&endpoint).map_err(|e| SpiffeError::Endpoint {
        endpoint: raw,
        reason: e.to_string(),
    })?;
    Ok(endpoint)
}

/// What is in force, to tell a new answer from the same one seen again.
struct Installed {
    revision: u64,
    identity: Identity,
    valid_until: SystemTime,
}

struct Follower {
    endpoint: String,
    config: SpiffeConfig,
    report: SpiffeReport,
    first: watch::Sender<Option<CredentialStore>>,
    store: Option<CredentialStore>,
    installed: Option<Installed>,
}

impl Follower {
    async fn run(mut self) {
        let recorder = Arc::new(Recorder::new(self.report.clone(), self.config.max_backoff));
        loop {
            let built = X509Source::builder()
                .endpoint(&self.endpoint)
                .picker(Pick(self.config.expected.clone()))
                .reconnect_backoff(self.config.min_backoff, self.config.max_backoff)
                .metrics(Arc::clone(&recorder) as Arc<dyn MetricsRecorder>)
                .build()
                .await;
            // `build` retries whatever may pass (an agent away, no identity issued yet); what
            // comes out is an agent that cannot serve this API. Try again, slowly.
            let source = match built {
                Ok(source) => source,
                Err(error) => {
                    self.report
                        .error(format!("the Workload API at {}: {error}", self.endpoint));
                    tracing::warn!(endpoint = %self.endpoint, %error, "the SPIFFE Workload API cannot be used");
                    tokio::time::sleep(self.config.max_backoff).await;
                    continue;
                }
            };
            recorder.synced();
            tracing::info!(endpoint = %self.endpoint, "connected to the SPIFFE Workload API");
            let mut updates = source.updated();
            loop {
                self.apply(&source.state());
                let expiry = self.installed.as_ref().map(|i| until(i.valid_until));
                tokio::select! {
                    changed = updates.changed() => {
                        if changed.is_err() {
                            // The source ended for good: start a new one.
                            break;
                        }
                    }
                    // The SVID in force expires: look again (nothing newer came).
                    () = sleep_or_forever(expiry) => {}
                }
            }
        }
    }

    /// Puts what the source holds now in force, or withdraws the identity.
    fn apply(&mut self, state: &X509SourceState) {
        if let Some(reason) = state.withdrawal() {
            self.withdraw(format!(
                "the Workload API withdrew this workload's identity: {reason}"
            ));
            return;
        }
        let svid = match state.svid() {
            Ok(svid) => svid,
            Err(X509SourceError::NoSuitableSvid) => {
                if self.installed_expired() {
                    self.withdraw(self.expired_reason());
                } else if self.installed.is_none() {
                    self.report
                        .error("the Workload API offered no usable SVID".into());
                }
                return;
            }
            Err(error) => {
                self.report.error(error.to_string());
                return;
            }
        };
        if let Some(expected) = &self.config.expected
            && svid.spiffe_id().to_string() != expected.as_str()
        {
            let offered = match state.context() {
                Ok(context) => context
                    .svids()
                    .iter()
                    .map(|s| s.spiffe_id().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(_) => svid.spiffe_id().to_string(),
            };
            let error = format!(
                "the Workload API offers {offered}, not {expected}: refused (this workload is configured as {expected})"
            );
            tracing::error!(%error, "SVID refused");
            self.report.refuse(error);
            if self.installed_expired() {
                self.withdraw(self.expired_reason());
            }
            return;
        }
        if self
            .installed
            .as_ref()
            .is_some_and(|i| i.revision == state.revision())
            && !self.installed_expired()
        {
            return;
        }
        let roots = match state.context() {
            Ok(context) => context
                .bundle_set()
                .get(svid.spiffe_id().trust_domain())
                .map(|bundle| {
                    bundle
                        .authorities()
                        .iter()
                        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                        .collect::<Vec<_>>()
                }),
            Err(error) => {
                self.report.error(error.to_string());
                return;
            }
        };
        let Some(roots) = roots else {
            self.report.error(format!(
                "the Workload API sent no bundle for the trust domain {}",
                svid.spiffe_id().trust_domain()
            ));
            return;
        };
        match credentials(&svid, roots) {
            Ok((credentials, valid_until)) => self.install(credentials, valid_until, state),
            Err(error) => {
                tracing::warn!(%error, "the SVID from the Workload API cannot be used");
                self.report.error(error);
            }
        }
    }

    fn install(
        &mut self,
        credentials: Credentials,
        valid_until: SystemTime,
        state: &X509SourceState,
    ) {
        let identity = credentials.identity().clone();
        let serial = serial_of(credentials.leaf()).ok();
        tracing::info!(%identity, serial = serial.as_deref().unwrap_or("?"), "SVID in force");
        // A new SVID is in the store before the report shows it, and the report shows the
        // first one before anyone gets the store: whoever sees one finds the other agree.
        match &self.store {
            Some(store) => {
                store.replace(credentials);
                self.report
                    .applied_svid(identity.clone(), serial, valid_until);
            }
            None => {
                let store = CredentialStore::new(credentials);
                self.store = Some(store.clone());
                self.report
                    .applied_svid(identity.clone(), serial, valid_until);
                self.first.send_replace(Some(store));
            }
        }
        self.installed = Some(Installed {
            revision: state.revision(),
            identity,
            valid_until,
        });
    }

    fn withdraw(&mut self, reason: String) {
        // The report first: whoever sees the store withdrawn finds the report saying why.
        self.report.withdrew(&reason);
        if let Some(store) = &self.store
            && store.withdrawn().as_deref() != Some(reason.as_str())
        {
            tracing::warn!(%reason, "identity withdrawn: handshakes fail until a new SVID arrives");
            store.withdraw(reason.clone());
        }
        // Whatever arrives next is new, even the same SVID again.
        self.installed = None;
    }

    fn installed_expired(&self) -> bool {
        self.installed
            .as_ref()
            .is_some_and(|i| i.valid_until <= SystemTime::now())
    }

    fn expired_reason(&self) -> String {
        let identity = self
            .installed
            .as_ref()
            .map_or_else(|| "this workload".to_owned(), |i| i.identity.to_string());
        let mut reason =
            format!("the SVID of {identity} expired and the Workload API sent no newer one");
        if let Some(error) = self.report.last_error() {
            reason.push_str(&format!(" (last error: {error})"));
        }
        reason
    }
}

/// The SVID's chain and key, and the bundle's roots, as credentials, with the leaf's expiry.
fn credentials(
    svid: &X509Svid,
    roots: Vec<CertificateDer<'static>>,
) -> Result<(Credentials, SystemTime), String> {
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    // The Workload API hands keys over as PKCS#8 DER.
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let credentials =
        Credentials::from_der_with_roots(chain, key, roots).map_err(|e| e.to_string())?;
    let valid_until = not_after_of(credentials.leaf()).map_err(|e| e.to_string())?;
    Ok((credentials, valid_until))
}

/// How long until `deadline`, from now.
fn until(deadline: SystemTime) -> Duration {
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        // A little past the deadline, so that the SVID is expired when looked at.
        Some(wait) => tokio::time::sleep(wait + Duration::from_millis(50)).await,
        None => std::future::pending().await,
    }
}

/// Chooses the SVID carrying the expected identity, else the first (the agent's default) so
/// that a wrong one is seen and refused with a clear error rather than waited for silently.
#[derive(Debug)]
struct Pick(Option<Identity>);

impl SvidPicker for Pick {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        let wanted = self.0.as_ref().and_then(|expected| {
            svids
                .iter()
                .position(|s| s.spiffe_id().to_string() == expected.as_str())
        });
        wanted.or((!svids.is_empty()).then_some(0))
    }
}

/// Counts and logs what the source reports of its connection to the agent.
///
/// The source says when an attempt fails, never when a reconnection succeeds with the same
/// material (it reports changes only), so a loss is an error after a quiet spell: once
/// connected, with no error for longer than the longest backoff between attempts, the next
/// error begins a new loss. Errors before the first SVID are waiting, not losses.
struct Recorder {
    report: SpiffeReport,
    quiet: Duration,
    synced: AtomicBool,
    last_error: Mutex<Option<Instant>>,
}

impl Recorder {
    fn new(report: SpiffeReport, max_backoff: Duration) -> Self {
        Self {
            report,
            quiet: max_backoff * 2 + Duration::from_secs(1),
            synced: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// The source has material from the agent: the next error is a loss.
    fn synced(&self) {
        self.synced.store(true, Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl MetricsRecorder for Recorder {
    fn record_update(&self) {
        self.synced();
    }

    fn record_reconnect(&self) {}

    fn record_error(&self, kind: MetricsErrorKind) {
        // The umbrella count of a failed first attempt; its cause was counted already.
        if kind == MetricsErrorKind::InitialSyncFailed {
            return;
        }
        self.report
            .error(format!("the Workload API: {}", kind.as_str()));
        let now = Instant::now();
        let previous = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(now);
        let lost = self.synced.load(Relaxed)
            && previous.is_none_or(|at| now.duration_since(at) > self.quiet);
        if lost {
            self.report.lost();
            tracing::warn!(
                kind = kind.as_str(),
                "the SPIFFE Workload API stream failed; reconnecting (the SVID in force stays unless the agent withdraws it or it expires)"
            );
        }
    }
}
