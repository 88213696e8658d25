//! What following the Workload API has come to, for `/ready`, the admin page and metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use mesh_core::Identity;

/// Whether handshakes have an identity to present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpiffeState {
    /// No usable SVID has arrived yet: nothing is served.
    Waiting,
    /// An SVID is in force.
    Serving,
    /// The identity was withdrawn (by the agent, or by expiry with the agent away): handshakes
    /// fail until a new SVID arrives.
    Withdrawn,
}

/// Counters and the current SVID's facts. Cheap to clone (shared); reading takes a short lock
/// that only the follower and readers (admin pages) contend for, never a request.
#[derive(Clone, Debug, Default)]
pub struct SpiffeReport(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    applied: AtomicU64,
    losses: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    facts: Mutex<Facts>,
}

#[derive(Debug, Default)]
struct Facts {
    state: Option<SpiffeState>,
    identity: Option<Identity>,
    serial: Option<String>,
    valid_until: Option<SystemTime>,
    last_error: Option<String>,
    withdrawn: Option<String>,
}

impl SpiffeReport {
    /// Whether handshakes have an identity, or why not (for `/ready`).
    pub fn ready(&self) -> Result<(), String> {
        let facts = self.facts();
        match facts.state.clone().unwrap_or(SpiffeState::Waiting) {
            SpiffeState::Serving => Ok(()),
            SpiffeState::Withdrawn => Err(facts
                .withdrawn
                .clone()
                .unwrap_or_else(|| "the identity was withdrawn".into())),
            SpiffeState::Waiting => Err(match &facts.last_error {
                Some(error) => format!("waiting for an SVID from the Workload API: {error}"),
                None => "waiting for an SVID from the Workload API".into(),
            }),
        }
    }

    /// The state now.
    pub fn state(&self) -> SpiffeState {
        self.facts().state.clone().unwrap_or(SpiffeState::Waiting)
    }

    /// SVIDs (or bundles) put in force, the first included.
    pub fn applied(&self) -> u64 {
        self.0.applied.load(Relaxed)
    }

    /// Times the stream from the agent failed after it had been answering: the agent went
    /// away or restarted, or withdrew the identity. The retries that follow are not counted
    /// again, nor are failures before the first SVID.
    pub fn losses(&self) -> u64 {
        self.0.losses.load(Relaxed)
    }

    /// Failed attempts of any kind: connecting, reading, answers that could not be used.
    pub fn errors(&self) -> u64 {
        self.0.errors.load(Relaxed)
    }

    /// SVIDs refused because they name another identity than the configured one.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Relaxed)
    }

    /// The identity in force.
    pub fn identity(&self) -> Option<Identity> {
        self.facts().identity.clone()
    }

    /// The serial number of the SVID in force (hex, as `openssl x509 -serial` prints it).
    pub fn serial(&self) -> Option<String> {
        self.facts().serial.clone()
    }

    /// When the SVID in force expires.
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.facts().valid_until
    }

    /// The last failure, cleared when an SVID is put in force.
    pub fn last_error(&self) -> Option<String> {
        self.facts().last_error.clone()
    }

    pub(super) fn applied_svid(
        &self,
        identity: Identity,
        serial: Option<String>,
        valid_until: SystemTime,
    ) {
        self.0.applied.fetch_add(1, Relaxed);
        let mut facts = self.facts();
        facts.state = Some(SpiffeState::Serving);
        facts.identity = Some(identity);
        facts.serial = serial;
        facts.valid_until = Some(valid_until);
        facts.last_error = None;
        facts.withdrawn = None;
    }

    pub(super) fn withdrew(&self, reason: &str) {
        let mut facts = self.facts();
        if facts.state.is_some() {
            facts.state = Some(SpiffeState::Withdrawn);
        }
        facts.withdrawn = Some(reason.to_owned());
        facts.last_error = Some(reason.to_owned());
    }

    pub(super) fn error(&self, error: String) {
        self.0.errors.fetch_add(1, Relaxed);
        self.facts().last_error = Some(error);
    }

    pub(super) fn refuse(&self, error: String) {
        self.0.refused.fetch_add(1, Relaxed);
        self.error(error);
    }

    pub(super) fn lost(&self) {
        self.0.losses.fetch_add(1, Relaxed);
    }

    fn facts(&self) -> MutexGuard<'_, Facts> {
        // A poisoned report is still a report.
        self.0.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
