//! The live endpoint set shared by the balancer's clones and its driver, and the pick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use mesh_core::Class;
use mesh_core::retry::TriedEndpoints;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::alias::AliasTable;
use crate::config::BalanceConfig;
use crate::outcome::Outcome;
use crate::snapshot::EndpointSnapshot;
use crate::state::{EndpointStats, EndpointStatus, Transition};
use mesh_core::random::Random;

/// Random draws before falling back to a scan, when few endpoints are ready.
const DRAWS: usize = 16;

/// A pair's winner whose latency estimate is this many times the pool's median is an
/// outlier, and another pair is drawn instead (up to `ROUNDS` pairs).
const OUTLIER_FACTOR: f64 = 5.0;
const ROUNDS: usize = 3;

/// One endpoint in the pool: its live state, and what it is reached by (an HTTP client, a
/// connector), cloned for each pick.
pub(crate) struct Member<T> {
    pub(crate) stats: Arc<EndpointStats>,
    pub(crate) target: T,
}

impl<T: Clone> Clone for Member<T> {
    fn clone(&self) -> Self {
        Self {
            stats: Arc::clone(&self.stats),
            target: self.target.clone(),
        }
    }
}

/// A picked endpoint: what to reach it by, and the handle that records how it went.
#[derive(Debug)]
pub struct Pick<T> {
    /// What the endpoint is reached by (a clone of the pool's).
    pub target: T,
    /// Counts the work outstanding on the endpoint and records its outcome.
    pub outcome: Outcome,
}

/// The endpoints in rotation, with their weighted-sampling table. Replaced whole (copy on
/// write) when discovery changes the set; read on every pick without a lock.
pub(crate) struct Members<T> {
    pub(crate) list: Vec<Member<T>>,
    table: AliasTable,
    by_addr: HashMap<SocketAddr, usize>,
}

impl<T> Members<T> {
    fn new(list: Vec<Member<T>>) -> Self {
        let weights: Vec<u32> = list.iter().map(|e| e.stats.endpoint.weight).collect();
        let by_addr = list
            .iter()
            .enumerate()
            .map(|(i, e)| (e.stats.endpoint.addr, i))
            .collect();
        Self {
            table: AliasTable::new(&weights),
            list,
            by_addr,
        }
    }
}

/// One discovery change, ready to apply.
pub(crate) enum Update<T> {
    Insert(Member<T>),
    Remove(SocketAddr),
}

/// What every endpoint of a pool shares: settings, clock, accrual bookkeeping. Endpoints hold
/// it, so that a response's outcome can be filed without a reference to the whole pool.
pub(crate) struct Core {
    pub(crate) config: BalanceConfig,
    epoch: Instant,
    /// Members ejected or probing, against the cap.
    ejected: AtomicUsize,
    /// How many members there are (for the cap).
    members: AtomicUsize,
    pub(crate) random: Arc<dyn Random>,
    /// Signalled when an endpoint may have become pickable.
    pub(crate) changed: Arc<Notify>,
    /// The median latency estimate of the ready members (ns, f64 bits), refreshed by the
    /// driver a few times a second; 0 until known. Read on each pick, written off the hot path.
    median: AtomicU64,
}

impl Core {
    /// Nanoseconds since the pool was made, from tokio's clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Applies one request's outcome to its endpoint: accrual, ejection under the cap,
    /// readmission. `now` is a recent reading of the clock (accrual windows and backoffs are
    /// coarse; the caller's last reading will do, which saves reading the clock again).
    #[inline]
    pub(crate) fn on_outcome(&self, endpoint: &EndpointStats, class: Class, now: u64) {
        match endpoint.on_outcome(class, now, &self.config, &*self.random) {
            Transition::None | Transition::Reejected => {}
            Transition::Readmitted => {
                self.ejected.fetch_sub(1, Relaxed);
                self.changed.notify_waiters();
            }
            Transition::WantsEjection => {
                let members = self.members.load(Relaxed);
                let cap = (self.config.accrual.max_ejected_share * members as f64).floor() as usize;
                let reserved = self
                    .ejected
                    .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
                    .is_ok();
                if reserved && !endpoint.eject(now, &self.config, &*self.random) {
                    self.ejected.fetch_sub(1, Relaxed);
                }
                if reserved {
                    tracing::info!(endpoint = %endpoint.endpoint, "ejected by failure accrual");
                }
            }
        }
    }
}

pub(crate) struct Pool<T> {
    pub(crate) core: Arc<Core>,
    members: ArcSwap<Members<T>>,
    /// Removed endpoints still finishing requests (for snapshots).
    draining: Mutex<Vec<Arc<EndpointStats>>>,
}

impl<T: Clone> Pool<T> {
    pub(crate) fn new(config: BalanceConfig, random: Arc<dyn Random>) -> Self {
        Self {
            core: Arc::new(Core {
                config,
                epoch: Instant::now(),
                ejected: AtomicUsize::new(0),
                members: AtomicUsize::new(0),
                random,
                changed: Arc::new(Notify::new()),
                median: AtomicU64::new(0),
            }),
            members: ArcSwap::from_pointee(Members::new(Vec::new())),
            draining: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the pool was made, from tokio's clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.core.now()
    }

    /// Power of two choices: two distinct ready endpoints drawn by weight, the one with the
    /// lower load wins (ties go to the first drawn, so with equal loads the traffic share is
    /// the weight share). An ejected endpoint due for its probe is claimed when drawn.
    ///
    /// Outliers: when both of a pair are bad (a stalling endpoint drawn with a slow one), plain
    /// P2C must send to one of them, about 2/n of the traffic for two bad endpoints in n. So a
    /// winner whose latency estimate is over five times the pool's median is set aside and
    /// another pair drawn, up to three pairs; the best winner seen is used if all are outliers.
    #[inline]
    pub(crate) fn pick(&self, now: u64) -> Option<Pick<T>> {
        let members = self.members.load();
        let i = self.pick_index(&members, now)?;
        let member = &members.list[i];
        Some(Pick {
            target: member.target.clone(),
            outcome: Outcome::new(Arc::clone(&member.stats), now),
        })
    }

    /// Like [`Pool::pick`], for a try of a request that went to the endpoints in `tried`
    /// before: if the pick is one of them and another ready endpoint is not, that one (any of
    /// them: retries are rare, and the scan is O(n) only then). Records the endpoint picked.
    pub(crate) fn pick_untried(&self, now: u64, tried: &TriedEndpoints) -> Option<Pick<T>> {
        let members = self.members.load();
        let mut i = self.pick_index(&members, now)?;
        let list = &members.list;
        if !tried.is_empty() && tried.contains(list[i].stats.endpoint.addr) {
            let start = self.core.random.below(list.len());
            let untried = (0..list.len())
                .map(|k| (start + k) % list.len())
                .find(|&j| {
                    let stats = &list[j].stats;
                    stats.endpoint.weight > 0
                        && stats.is_ready()
                        && !tried.contains(stats.endpoint.addr)
                });
            i = untried.unwrap_or(i);
        }
        let member = &list[i];
        tried.record(member.stats.endpoint.addr);
        Some(Pick {
            target: member.target.clone(),
            outcome: Outcome::new(Arc::clone(&member.stats), now),
        })
    }

    /// [`Pool::pick`]'s choice, as an index into `members`.
    fn pick_index(&self, members: &Members<T>, now: u64) -> Option<usize> {
        let list = &members.list;
        if list.is_empty() {
            return None;
        }
        let core = &*self.core;
        let tau = core.config.decay;
        let median = f64::from_bits(core.median.load(Relaxed));
        let mut best: Option<(f64, usize)> = None;
        let mut draws = 0;
        for _ in 0..ROUNDS {
            let mut first: Option<usize> = None;
            let mut winner = None;
            let mut winner_cost = None;
            while draws < DRAWS {
                draws += 1;
                let Some(i) = members.table.draw(&*core.random) else {
                    break;
                };
                let candidate = &list[i].stats;
                if !candidate.is_ready() {
                    if candidate.try_claim_probe(now) {
                        return Some(i);
                    }
                    continue;
                }
                match first {
                    None => first = Some(i),
                    Some(f) if f == i => {}
                    Some(f) => {
                        // An endpoint not measured yet is assumed to cost what its rival does,
                        // so it takes its share at once (by outstanding requests) instead of
                        // starving behind a default that measured endpoints beat. Against a
                        // rival that is failing, though, the newcomer wins outright: a tie
                        // there would send half such pairs to an endpoint that just failed.
                        let a = &list[f].stats;
                        let (ea, eb) =
                            (a.ewma.measured(now, tau), candidate.ewma.measured(now, tau));
                        let default = core.config.default_rtt.as_secs_f64() * 1e9;
                        let ca = ea.or(eb).unwrap_or(default);
                        let cb = eb.or(ea).unwrap_or(default);
                        let b_wins = match (ea, eb) {
                            (Some(_), None) if a.consecutive_failures() > 0 => true,
                            (None, Some(_)) if candidate.consecutive_failures() > 0 => false,
                            _ => candidate.load_at(cb) < a.load_at(ca),
                        };
                        winner = Some(if b_wins { i } else { f });
                        winner_cost = if b_wins { eb } else { ea };
                        break;
                    }
                }
            }
            let Some(w) = winner.or(first) else { break };
            let Some(estimate) = winner_cost.or_else(|| list[w].stats.ewma.measured(now, tau))
            else {
                return Some(w);
            };
            if median <= 0.0 || estimate <= OUTLIER_FACTOR * median || winner.is_none() {
                return Some(w);
            }
            if best.is_none_or(|(e, _)| estimate < e) {
                best = Some((estimate, w));
            }
        }
        if let Some((_, w)) = best {
            return Some(w);
        }
        // Few endpoints are ready: look at each once, from a random start.
        let start = core.random.below(list.len());
        (0..list.len())
            .map(|k| (start + k) % list.len())
            .filter(|&i| list[i].stats.endpoint.weight > 0)
            .find(|&i| list[i].stats.is_ready() || list[i].stats.try_claim_probe(now))
    }

    /// Recomputes the median latency estimate of the ready members (the driver calls this a
    /// few times a second; O(n)).
    pub(crate) fn refresh_median(&self) {
        let now = self.now();
        let members = self.members.load();
        let mut estimates: Vec<f64> = members
            .list
            .iter()
            .map(|e| &e.stats)
            .filter(|e| e.is_ready())
            .filter_map(|e| e.ewma.measured(now, self.core.config.decay))
            .collect();
        let median = if estimates.len() < 3 {
            // Too few to call anything an outlier.
            0.0
        } else {
            let mid = estimates.len() / 2;
            *estimates
                .select_nth_unstable_by(mid, |a, b| a.total_cmp(b))
                .1
        };
        self.core.median.store(median.to_bits(), Relaxed);
    }

    /// Applies a batch of discovery changes with one copy of the member list, so that a
    /// source reporting thousands of endpoints at once costs O(n), not O(n²).
    pub(crate) fn apply(&self, changes: Vec<Update<T>>) {
        if changes.is_empty() {
            return;
        }
        let current = self.members.load();
        let mut list = current.list.clone();
        let mut index = current.by_addr.clone();
        let mut retired = Vec::new();
        for change in changes {
            match change {
                Update::Insert(member) => match index.get(&member.stats.endpoint.addr) {
                    Some(&i) => retired.push(std::mem::replace(&mut list[i], member).stats),
                    None => {
                        index.insert(member.stats.endpoint.addr, list.len());
                        list.push(member);
                    }
                },
                Update::Remove(addr) => {
                    if let Some(i) = index.remove(&addr) {
                        let old = list.swap_remove(i);
                        if let Some(moved) = list.get(i) {
                            index.insert(moved.stats.endpoint.addr, i);
                        }
                        retired.push(old.stats);
                    }
                }
            }
        }
        self.core.members.store(list.len(), Relaxed);
        self.members.store(Arc::new(Members::new(list)));
        for old in retired {
            self.retire(old);
        }
        // An endpoint may have become ready before it was published here.
        self.core.changed.notify_waiters();
    }

    fn retire(&self, old: Arc<EndpointStats>) {
        if matches!(
            old.mark_draining(),
            EndpointStatus::Ejected | EndpointStatus::Probing
        ) {
            self.core.ejected.fetch_sub(1, Relaxed);
        }
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|e| e.outstanding.load(Relaxed) > 0);
        if old.outstanding.load(Relaxed) > 0 {
            draining.push(old);
        }
    }

    /// How many members are ejected or probing now.
    pub(crate) fn ejected(&self) -> usize {
        self.core.ejected.load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Vec<EndpointSnapshot> {
        let now = self.now();
        let members = self.members.load();
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|e| e.outstanding.load(Relaxed) > 0);
        members
            .list
            .iter()
            .map(|m| &m.stats)
            .chain(draining.iter())
            .map(|e| EndpointSnapshot::of(e, now, &self.core.config))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use mesh_core::Endpoint;
    use mesh_core::random::SplitMix;

    #[tokio::test(start_paused = true)]
    async fn the_lower_load_wins() {
        let pool = Pool::<()>::new(BalanceConfig::default(), Arc::new(SplitMix::seeded(3)));
        for i in 0..10u16 {
            let e = Endpoint::new(SocketAddr::from(([127, 0, 0, 1], i)));
            let state = Arc::new(EndpointStats::new(e, Arc::clone(&pool.core), pool.now()));
            state.mark_ready();
            let rtt = if i == 9 { 20 } else { 1 };
            state.ewma.sample(
                Duration::from_millis(rtt),
                pool.now(),
                pool.core.config.decay,
            );
            pool.apply(vec![Update::Insert(Member {
                stats: state,
                target: (),
            })]);
        }
        let mut slow = 0;
        for _ in 0..10_000 {
            if pool
                .pick(pool.now())
                .is_some_and(|p| p.outcome.endpoint().addr.port() == 9)
            {
                slow += 1;
            }
        }
        assert_eq!(slow, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_beats_an_endpoint_that_is_failing() {
        let pool = Pool::<()>::new(BalanceConfig::default(), Arc::new(SplitMix::seeded(5)));
        let config = pool.core.config.clone();
        for port in [1, 2] {
            let e = Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)));
            let state = Arc::new(EndpointStats::new(e, Arc::clone(&pool.core), pool.now()));
            state.mark_ready();
            if port == 1 {
                // It failed once: sampled at the failure penalty, one failure in a row.
                state
                    .ewma
                    .sample(config.failure_penalty, pool.now(), config.decay);
                let failure = Class::Failure(mesh_core::FailureReason::Error(
                    mesh_core::ErrorKind::Connect,
                ));
                let _ = state.on_outcome(failure, pool.now(), &config, &*pool.core.random);
            }
            pool.apply(vec![Update::Insert(Member {
                stats: state,
                target: (),
            })]);
        }
        // The other one has not answered anything yet: it must not tie with the failing one.
        let failing = (0..1_000)
            .filter(|_| {
                pool.pick(pool.now())
                    .is_some_and(|p| p.outcome.endpoint().addr.port() == 1)
            })
            .count();
        assert_eq!(failing, 0);
    }
}
