//! The live endpoint set shared by the balancer's clones and its driver, and the pick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use mesh_core::Class;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::alias::AliasTable;
use crate::config::BalanceConfig;
use crate::random::Random;
use crate::snapshot::EndpointSnapshot;
use crate::state::{EndpointState, EndpointStatus, Transition};

/// Random draws before falling back to a scan, when few endpoints are ready.
const DRAWS: usize = 16;

/// The endpoints in rotation, with their weighted-sampling table. Replaced whole (copy on
/// write) when discovery changes the set; read on every pick without a lock.
pub(crate) struct Members<S> {
    pub(crate) list: Vec<Arc<EndpointState<S>>>,
    table: AliasTable,
    by_addr: HashMap<SocketAddr, usize>,
}

impl<S> Members<S> {
    fn new(list: Vec<Arc<EndpointState<S>>>) -> Self {
        let weights: Vec<u32> = list.iter().map(|e| e.endpoint.weight).collect();
        let by_addr = list
            .iter()
            .enumerate()
            .map(|(i, e)| (e.endpoint.addr, i))
            .collect();
        Self {
            table: AliasTable::new(&weights),
            list,
            by_addr,
        }
    }
}

pub(crate) struct Pool<S> {
    pub(crate) config: BalanceConfig,
    epoch: Instant,
    members: ArcSwap<Members<S>>,
    /// Removed endpoints still finishing requests (for snapshots).
    draining: Mutex<Vec<Arc<EndpointState<S>>>>,
    /// Members ejected or probing, against the cap.
    ejected: AtomicUsize,
    pub(crate) random: Arc<dyn Random>,
    /// Signalled when an endpoint may have become pickable.
    pub(crate) changed: Arc<Notify>,
}

impl<S> Pool<S> {
    pub(crate) fn new(config: BalanceConfig, random: Arc<dyn Random>) -> Self {
        Self {
            config,
            epoch: Instant::now(),
            members: ArcSwap::from_pointee(Members::new(Vec::new())),
            draining: Mutex::new(Vec::new()),
            ejected: AtomicUsize::new(0),
            random,
            changed: Arc::new(Notify::new()),
        }
    }

    /// Nanoseconds since the pool was made, from tokio's clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Power of two choices: two distinct ready endpoints drawn by weight, the one with the
    /// lower load wins (ties go to the first drawn, so with equal loads the traffic share is
    /// the weight share). An ejected endpoint due for its probe is claimed when drawn.
    pub(crate) fn pick(&self) -> Option<Arc<EndpointState<S>>> {
        let members = self.members.load();
        let list = &members.list;
        if list.is_empty() {
            return None;
        }
        let now = self.now();
        let tau = self.config.decay;
        let mut first: Option<usize> = None;
        for _ in 0..DRAWS {
            let Some(i) = members.table.draw(&*self.random) else {
                break;
            };
            let candidate = &list[i];
            if !candidate.is_ready() {
                if candidate.try_claim_probe(now) {
                    return Some(Arc::clone(candidate));
                }
                continue;
            }
            match first {
                None => first = Some(i),
                Some(f) if f == i => {}
                Some(f) => {
                    let a = &list[f];
                    let winner = if candidate.load(now, tau) < a.load(now, tau) {
                        candidate
                    } else {
                        a
                    };
                    return Some(Arc::clone(winner));
                }
            }
        }
        if let Some(f) = first {
            return Some(Arc::clone(&list[f]));
        }
        // Few endpoints are ready: look at each once, from a random start.
        let start = self.random.below(list.len());
        (0..list.len())
            .map(|k| &list[(start + k) % list.len()])
            .filter(|e| e.endpoint.weight > 0)
            .find(|e| e.is_ready() || e.try_claim_probe(now))
            .map(Arc::clone)
    }

    /// Applies one request's outcome to its endpoint: accrual, ejection under the cap,
    /// readmission.
    pub(crate) fn on_outcome(&self, endpoint: &EndpointState<S>, class: Class) {
        let now = self.now();
        let jitter = (self.random.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        match endpoint.on_outcome(class, now, &self.config, jitter) {
            Transition::None | Transition::Reejected => {}
            Transition::Readmitted => {
                self.ejected.fetch_sub(1, Relaxed);
                self.changed.notify_waiters();
            }
            Transition::WantsEjection => {
                let members = self.members.load().list.len();
                let cap = (self.config.accrual.max_ejected_share * members as f64).floor() as usize;
                let reserved = self
                    .ejected
                    .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
                    .is_ok();
                if reserved && !endpoint.eject(now, &self.config, jitter) {
                    self.ejected.fetch_sub(1, Relaxed);
                }
                if reserved {
                    tracing::info!(endpoint = %endpoint.endpoint, "ejected by failure accrual");
                }
            }
        }
    }

    /// Adds (or replaces) an endpoint.
    pub(crate) fn insert(&self, state: Arc<EndpointState<S>>) {
        let current = self.members.load();
        let mut list = current.list.clone();
        match current.by_addr.get(&state.endpoint.addr) {
            Some(&i) => {
                let old = std::mem::replace(&mut list[i], state);
                self.retire(old);
            }
            None => list.push(state),
        }
        self.members.store(Arc::new(Members::new(list)));
    }

    /// Removes an endpoint from rotation; its in-flight requests finish.
    pub(crate) fn remove(&self, addr: &SocketAddr) {
        let current = self.members.load();
        let Some(&i) = current.by_addr.get(addr) else {
            return;
        };
        let mut list = current.list.clone();
        let old = list.swap_remove(i);
        self.members.store(Arc::new(Members::new(list)));
        self.retire(old);
    }

    fn retire(&self, old: Arc<EndpointState<S>>) {
        if matches!(
            old.mark_draining(),
            EndpointStatus::Ejected | EndpointStatus::Probing
        ) {
            self.ejected.fetch_sub(1, Relaxed);
        }
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|e| e.outstanding.load(Relaxed) > 0);
        if old.outstanding.load(Relaxed) > 0 {
            draining.push(old);
        }
    }

    /// How many members are ejected or probing now.
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Vec<EndpointSnapshot> {
        let now = self.now();
        let members = self.members.load();
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|e| e.outstanding.load(Relaxed) > 0);
        members
            .list
            .iter()
            .chain(draining.iter())
            .map(|e| EndpointSnapshot::of(e, now, &self.config))
            .collect()
    }
}
