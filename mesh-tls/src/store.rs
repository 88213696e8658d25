//! The current credentials behind an atomic swap, and reloading them when their files change.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::credentials::{CredentialFiles, Credentials, CredentialsError};

/// The credentials every new handshake uses, replaceable at any time without a restart.
///
/// Handshakes load the current credentials once (an atomic load, no lock); a connection keeps
/// what it was established with, so in-flight connections are not disturbed by a rotation.
/// Cheap to clone (shared).
///
/// A source that learns the workload has no identity any more (a SPIFFE Workload API that
/// withdrew it, a certificate that expired with nothing to replace it) [withdraws] the
/// credentials: new handshakes on either side then fail at once with a typed error naming the
/// reason, until the next [`CredentialStore::replace`].
///
/// [withdraws]: CredentialStore::withdraw
#[derive(Clone)]
pub struct CredentialStore {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Credentials>,
    rotations: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Set by `withdraw`, cleared by `replace`; read (one atomic load) by every handshake.
    withdrawn: AtomicBool,
    withdrawn_because: Mutex<Option<String>>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore")
            .field("identity", self.current().identity())
            .field("rotations", &self.rotations())
            .finish()
    }
}

impl CredentialStore {
    /// A store holding `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(credentials),
                rotations: AtomicU64::new(0),
                last_error: Mutex::new(None),
                withdrawn: AtomicBool::new(false),
                withdrawn_because: Mutex::new(None),
            }),
        }
    }

    /// Loads the credentials from `files`.
    pub fn from_files(files: &CredentialFiles) -> Result<Self, CredentialsError> {
        Ok(Self::new(Credentials::from_files(files)?))
    }

    /// The credentials new handshakes use.
    pub fn current(&self) -> Arc<Credentials> {
        self.shared.current.load_full()
    }

    /// Replaces the credentials for every later handshake (and ends a withdrawal).
    pub fn replace(&self, credentials: Credentials) {
        self.shared.current.store(Arc::new(credentials));
        self.shared.rotations.fetch_add(1, Relaxed);
        if self.shared.withdrawn.swap(false, Relaxed) {
            *lock(&self.shared.withdrawn_because) = None;
        }
    }

    /// Stops every later handshake from using the credentials, for `reason` (kept for
    /// [`CredentialStore::withdrawn`] and the handshakes' errors). Connections already open
    /// keep their session. A later [`CredentialStore::replace`] ends the withdrawal.
    pub fn withdraw(&self, reason: impl Into<String>) {
        *lock(&self.shared.withdrawn_because) = Some(reason.into());
        self.shared.withdrawn.store(true, Relaxed);
    }

    /// Why the credentials are withdrawn, if they are.
    pub fn withdrawn(&self) -> Option<String> {
        if !self.is_withdrawn() {
            return None;
        }
        Some(
            lock(&self.shared.withdrawn_because)
                .clone()
                .unwrap_or_else(|| "the credentials were withdrawn".into()),
        )
    }

    /// Whether the credentials are withdrawn: one atomic load, for the handshake path.
    pub(crate) fn is_withdrawn(&self) -> bool {
        self.shared.withdrawn.load(Relaxed)
    }

    /// Reloads from `files` on demand. On error the current credentials stay in force, and the
    /// error is both returned and kept for [`CredentialStore::last_error`].
    pub fn reload(&self, files: &CredentialFiles) -> Result<(), CredentialsError> {
        match Credentials::from_files(files) {
            Ok(credentials) => {
                self.replace(credentials);
                self.set_last_error(None);
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "new credentials rejected; keeping the current ones");
                self.set_last_error(Some(err.to_string()));
                Err(err)
            }
        }
    }

    /// How many times the credentials were replaced.
    pub fn rotations(&self) -> u64 {
        self.shared.rotations.load(Relaxed)
    }

    /// The last reload error, cleared by a successful reload.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *lock(&self.shared.last_error) = error;
    }

    /// Watches `files`, checking every `interval` whether their contents changed, and reloads
    /// when they did. A change that does not load (a half-written file, a key that does not
    /// match) is reported and retried at the next change; the old credentials stay in force.
    ///
    /// Polling rather than file-system events: it works the same on every platform and with
    /// Kubernetes' symlink-swapped secret volumes. The files are read on the blocking pool.
    pub fn watch(&self, files: CredentialFiles, interval: Duration) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut seen = read_blocking(files.clone()).await.ok();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Ok(now) = read_blocking(files.clone()).await else {
                    // A file missing mid-swap; look again at the next tick.
                    continue;
                };
                if seen.as_ref() == Some(&now) {
                    continue;
                }
                seen = Some(now);
                let (store, files) = (store.clone(), files.clone());
                // Parsing (and checking the key) is CPU work: keep it off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || store.reload(&files)).await;
            }
        })
    }
}

/// A poisoned reason is still a reason: the data is a string.
fn lock(reason: &Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    reason.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn read_blocking(files: CredentialFiles) -> Result<[Vec<u8>; 3], CredentialsError> {
    match tokio::task::spawn_blocking(move || files.read_all()).await {
        Ok(read) => read,
        Err(join) => Err(CredentialsError::Read {
            path: "(watcher)".into(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}
