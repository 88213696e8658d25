//! A retry budget: retries may add at most a share of recent original traffic, plus a floor.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Budget amounts are integers in thousandths of a retry, so that any ratio is kept exactly to
/// 0.1% (tower's budget truncates `1 / ratio` and turns 0.6 into 1.0).
const SCALE: i64 = 1000;
/// The window is split into this many slots; a deposit expires between `ttl * (SLOTS - 1) /
/// SLOTS` and `ttl` after it was made.
const SLOTS: u64 = 10;
/// Each slot packs its epoch (which slot-width interval it belongs to) in the high bits and its
/// signed amount in the low bits, so that one compare-and-swap updates both.
const AMOUNT_BITS: u32 = 40;
const AMOUNT_MASK: u64 = (1 << AMOUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - AMOUNT_BITS)) - 1;
/// Deposits go to one of several copies of the window, chosen per thread, so that threads
/// depositing at once do not fight over one cache line; reading the balance sums them all.
const SHARDS: usize = 8;

/// One thread group's copy of the window, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    slots: [AtomicU64; SLOTS as usize],
}

/// The shard this thread deposits into: threads are dealt shards in turn as they first
/// deposit.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// A budget for retries with Finagle's semantics, shared by every clone of a retry layer.
///
/// Every original request deposits `ratio`; every retry withdraws one. A retry is allowed while
/// the balance over the last `ttl` (plus a reserve of `min_per_second × ttl`, so that quiet
/// clients can still retry) covers it. Deposits and withdrawals expire after `ttl`.
///
/// Lock-free: a deposit is a clock read and one compare-and-swap on a per-thread shard (so
/// threads do not contend); deciding a retry sums the shards' slots. Two retries racing for the last unit may both win, so the budget can be overdrawn
/// by at most the number of retries decided at the same instant.
///
/// ```
/// use std::time::Duration;
/// use mesh_core::retry::RetryBudget;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let budget = RetryBudget::builder().ratio(0.5).min_per_second(0).build()?;
/// budget.deposit();
/// assert!(!budget.try_withdraw(), "half a retry is not a retry");
/// budget.deposit();
/// assert!(budget.try_withdraw());
/// assert_eq!(budget.retries_allowed(), 1);
/// assert_eq!(budget.retries_refused(), 1);
/// # Ok::<(), mesh_core::retry::BudgetError>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RetryBudget {
    shards: Box<[Shard; SHARDS]>,
    /// Which shards have ever been deposited into: only those are summed.
    active: AtomicUsize,
    slot_nanos: u64,
    start: Instant,
    deposit: i64,
    reserve: i64,
    settings: BudgetBuilder,
    allowed: AtomicU64,
    refused: AtomicU64,
}

/// The settings of a [`RetryBudget`], with Finagle's and Linkerd's defaults: `ratio` 0.2,
/// `min_per_second` 10, `ttl` 10 s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetBuilder {
    ratio: f64,
    min_per_second: u32,
    ttl: Duration,
}

impl Default for BudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// A budget setting out of range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// `ratio` must be a finite number from 0 to 1000.
    #[error("retry budget ratio {0} is out of range: expected a number from 0 to 1000")]
    Ratio(f64),
    /// `ttl` must be from 1 s to 60 s.
    #[error("retry budget ttl {0:?} is out of range: expected 1s to 60s")]
    Ttl(Duration),
}

impl BudgetBuilder {
    /// The share of original traffic that retries may add (0.2 = 20%).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic, so that quiet clients can retry.
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.min_per_second = min_per_second;
        self
    }

    /// How long deposits and withdrawals count.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Checks the settings and makes the budget; its window starts now.
    pub fn build(self) -> Result<RetryBudget, BudgetError> {
        if !(0.0..=1000.0).contains(&self.ratio) {
            return Err(BudgetError::Ratio(self.ratio));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.ttl) {
            return Err(BudgetError::Ttl(self.ttl));
        }
        let ttl_nanos = u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX);
        // In range by the checks above: at most 1000 * 1000 and 2^32 * 60 * 1000.
        let deposit = (self.ratio * SCALE as f64).round() as i64;
        let reserve = i64::from(self.min_per_second) * self.ttl.as_secs() as i64 * SCALE;
        Ok(RetryBudget {
            shards: Box::default(),
            active: AtomicUsize::new(0),
            slot_nanos: (ttl_nanos / SLOTS).max(1),
            start: Instant::now(),
            deposit,
            reserve,
            settings: self,
            allowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }
}

impl RetryBudget {
    /// The settings, to adjust and [`build`](BudgetBuilder::build).
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    /// The settings this budget was built with.
    pub fn settings(&self) -> BudgetBuilder {
        self.settings
    }

    /// Records an original request.
    pub fn deposit(&self) {
        self.add(self.epoch(), self.deposit);
    }

    /// Takes one retry from the budget if the balance covers it.
    pub fn try_withdraw(&self) -> bool {
        let epoch = self.epoch();
        if self.balance_at(epoch) >= SCALE {
            self.add(epoch, -SCALE);
            self.allowed.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// How many retries the budget would allow now (fractional).
    pub fn balance(&self) -> f64 {
        self.balance_at(self.epoch()) as f64 / SCALE as f64
    }

    /// Retries granted since the budget was made.
    pub fn retries_allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }

    /// Retries refused for lack of budget since the budget was made.
    pub fn retries_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn epoch(&self) -> u64 {
        let elapsed = self.start.elapsed();
        // u64 nanoseconds last 584 years; this avoids `as_nanos`' u128 arithmetic per request.
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        (nanos / self.slot_nanos) & EPOCH_MASK
    }

    fn add(&self, epoch: u64, amount: i64) {
        let shard = shard_index();
        let bit = 1 << shard;
        // Read first: after a thread's first deposit this is a shared, unwritten cache line.
        if self.active.load(Ordering::Relaxed) & bit == 0 {
            self.active.fetch_or(bit, Ordering::Relaxed);
        }
        let slot = &self.shards[shard].slots[(epoch % SLOTS) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_epoch, slot_amount) = unpack(current);
            // A slot last written in an older interval starts over.
            let base = if slot_epoch == epoch { slot_amount } else { 0 };
            let next = pack(epoch, base.saturating_add(amount));
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn balance_at(&self, epoch: u64) -> i64 {
        let active = self.active.load(Ordering::Acquire);
        let in_window: i64 = self
            .shards
            .iter()
            .enumerate()
            .filter(|(index, _)| active & (1 << index) != 0)
            .flat_map(|(_, shard)| shard.slots.iter())
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(slot_epoch, _)| epoch.wrapping_sub(*slot_epoch) & EPOCH_MASK < SLOTS)
            .map(|(_, amount)| amount)
            .sum();
        self.reserve + in_window
    }
}

fn pack(epoch: u64, amount: i64) -> u64 {
    // Amounts stay far inside 40 bits: a slot would need 500 million requests to overflow.
    let max = (1i64 << (AMOUNT_BITS - 1)) - 1;
    let amount = amount.clamp(-max, max);
    (epoch << AMOUNT_BITS) | (amount as u64 & AMOUNT_MASK)
}

fn unpack(packed: u64) -> (u64, i64) {
    let epoch = packed >> AMOUNT_BITS;
    // Sign-extend the low 40 bits.
    let amount = ((packed << (64 - AMOUNT_BITS)) as i64) >> (64 - AMOUNT_BITS);
    (epoch, amount)
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("settings", &self.settings)
            .field("balance", &self.balance())
            .field("allowed", &self.retries_allowed())
            .field("refused", &self.retries_refused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_second(min_per_second)
            .build()
            .expect("valid")
    }

    #[test]
    fn packing_round_trips_signed_amounts() {
        for (epoch, amount) in [
            (0, 0),
            (5, -1000),
            (EPOCH_MASK, 123_456_789),
            (7, -(1 << 38)),
        ] {
            assert_eq!(unpack(pack(epoch, amount)), (epoch, amount));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn any_ratio_is_exact() {
        for ratio in [0.1, 0.2, 0.6, 1.5] {
            let budget = budget(ratio, 0);
            let originals = 1000;
            let mut retries = 0;
            for _ in 0..originals {
                budget.deposit();
                while budget.try_withdraw() {
                    retries += 1;
                }
            }
            let expected = (ratio * originals as f64).floor() as u64;
            assert_eq!(retries, expected, "ratio {ratio}");
            assert_eq!(budget.retries_allowed(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_allows_min_per_second_over_the_ttl() {
        let budget = budget(0.2, 10);
        let mut granted = 0;
        while budget.try_withdraw() {
            granted += 1;
        }
        assert_eq!(granted, 100, "10 per second over a 10 s window");
        assert_eq!(budget.retries_refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_the_ttl() {
        let budget = budget(1.0, 0);
        for _ in 0..5 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 5.0);
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert_eq!(budget.balance(), 5.0, "still within the ttl");
        assert!(budget.try_withdraw());
        assert_eq!(budget.balance(), 4.0);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            budget.balance(),
            -1.0,
            "the deposits expired; the withdrawal has not"
        );
        assert!(!budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(budget.balance(), 0.0, "everything expired");
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_reused_after_a_full_window() {
        let budget = budget(1.0, 0);
        budget.deposit();
        // Exactly one window later the same slot is written again and must start over.
        tokio::time::advance(Duration::from_secs(10)).await;
        budget.deposit();
        assert_eq!(budget.balance(), 1.0);
    }

    #[test]
    fn settings_out_of_range_are_typed_errors() {
        let err = RetryBudget::builder()
            .ratio(f64::NAN)
            .build()
            .expect_err("nan");
        assert!(matches!(err, BudgetError::Ratio(_)));
        let err = RetryBudget::builder()
            .ratio(-0.1)
            .build()
            .expect_err("negative");
        assert!(err.to_string().contains("-0.1"), "{err}");
        let err = RetryBudget::builder()
            .ttl(Duration::from_millis(10))
            .build()
            .expect_err("short");
        assert_eq!(err, BudgetError::Ttl(Duration::from_millis(10)));
    }

    #[test]
    fn two_threads_keep_every_deposit() {
        let budget = std::sync::Arc::new(budget(1.0, 0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        budget.deposit();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(budget.balance(), 20_000.0);
    }
}
