//! The workspace's one source of randomness (the balancer's picks and probe jitter, retry
//! backoff), injectable so that tests and simulations are deterministic.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A source of random numbers, shared (behind an `Arc`) by whatever draws from it.
pub trait Random: Send + Sync + 'static {
    /// A uniformly random 64-bit number.
    fn next_u64(&self) -> u64;

    /// A uniformly random number in `[0, 1)`.
    fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniformly random number below `n` (`n` > 0).
    fn below(&self, n: usize) -> usize {
        // Multiply-shift: unbiased enough for load balancing, and no division.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// SplitMix64 over an atomic counter: fast, lock-free, and reproducible from a seed.
#[derive(Debug)]
pub struct SplitMix(AtomicU64);

impl SplitMix {
    /// A sequence starting from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// A sequence seeded from the process's hash randomness.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self::seeded(RandomState::new().hash_one(std::time::SystemTime::now()))
    }
}

impl Random for SplitMix {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// xorshift64* in a thread-local: no shared state at all, so picks on many threads do not
/// contend. The default source; seeded per thread from the process's hash randomness.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRandom;

thread_local! {
    static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::thread::current().id()) | 1
    });
}

impl Random for ThreadRandom {
    #[inline]
    fn next_u64(&self) -> u64 {
        STATE.with(|state| {
            let mut x = state.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            state.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_random_is_uniform_enough() {
        let n = 10_000;
        let samples: Vec<f64> = (0..n).map(|_| ThreadRandom.unit()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = samples.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn seeded_sequences_repeat() {
        let (a, b) = (SplitMix::seeded(9), SplitMix::seeded(9));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(a.below(10) < 10);
    }
}
