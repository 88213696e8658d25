//! Peak-sensitive EWMA of latency, updated and read without a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A latency estimate that jumps up at once on a slower sample, moves toward faster samples
/// with time constant `tau`, and decays toward zero while no samples arrive (so that an
/// endpoint that was slow long ago is tried again). Times are nanoseconds since the pool's
/// epoch, from tokio's clock.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// The estimate in nanoseconds, as f64 bits.
    estimate: AtomicU64,
    /// When the estimate was last updated.
    stamp: AtomicU64,
    /// Whether a real sample arrived yet: the first one replaces the default outright, which
    /// is a guess, not a measurement to average with.
    measured: std::sync::atomic::AtomicBool,
}

fn decay(elapsed_ns: u64, tau: Duration) -> f64 {
    // Seconds as f64 rather than `as_nanos() as f64`: converting a u128 is a slow library call.
    let x = elapsed_ns as f64 / (tau.as_secs_f64() * 1e9).max(1.0);
    // Between requests x is tiny; 1 - x + x²/2 is then exact to 1e-12 and much cheaper than
    // `exp`, which is paid on every load read.
    if x < 1e-4 {
        1.0 - x + 0.5 * x * x
    } else {
        (-x).exp()
    }
}

impl PeakEwma {
    pub(crate) fn new(initial: Duration, now_ns: u64) -> Self {
        Self {
            estimate: AtomicU64::new((initial.as_secs_f64() * 1e9).to_bits()),
            stamp: AtomicU64::new(now_ns),
            measured: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The estimate now, in nanoseconds, or `None` before the first sample.
    #[inline]
    pub(crate) fn measured(&self, now_ns: u64, tau: Duration) -> Option<f64> {
        self.measured.load(Relaxed).then(|| self.get(now_ns, tau))
    }

    /// The estimate now, in nanoseconds (the default until measured).
    #[inline]
    pub(crate) fn get(&self, now_ns: u64, tau: Duration) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Relaxed));
        let elapsed = now_ns.saturating_sub(self.stamp.load(Relaxed));
        estimate * decay(elapsed, tau)
    }

    /// Folds in a sample.
    #[inline]
    pub(crate) fn sample(&self, rtt: Duration, now_ns: u64, tau: Duration) {
        let rtt = rtt.as_secs_f64() * 1e9;
        // Plain loads and stores, no read-modify-write: two samples racing on one endpoint may
        // lose one of them, which an average over many does not notice, and the hot path
        // takes no exclusive cache-line ownership beyond the store.
        let next = if !self.measured.load(Relaxed) {
            self.measured.store(true, Relaxed);
            rtt
        } else {
            let estimate = f64::from_bits(self.estimate.load(Relaxed));
            if rtt > estimate {
                rtt
            } else {
                let elapsed = now_ns.saturating_sub(self.stamp.load(Relaxed));
                let w = decay(elapsed, tau);
                estimate * w + rtt * (1.0 - w)
            }
        };
        self.estimate.store(next.to_bits(), Relaxed);
        self.stamp.store(now_ns, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);
    const MS: u64 = 1_000_000;

    #[test]
    fn slower_samples_win_at_once_and_faster_ones_slowly() {
        let e = PeakEwma::new(Duration::from_millis(30), 0);
        // The first measurement replaces the default, even a faster one.
        e.sample(Duration::from_millis(2), 0, TAU);
        assert_eq!(e.get(0, TAU), 2.0 * MS as f64);
        e.sample(Duration::from_millis(100), 0, TAU);
        assert_eq!(e.get(0, TAU), 100.0 * MS as f64);
        // One second later, a 10 ms sample pulls it down by about 1 - e^(-0.1) of the gap.
        e.sample(Duration::from_millis(10), 1_000 * MS, TAU);
        let now = e.get(1_000 * MS, TAU) / MS as f64;
        assert!(
            (now - (10.0 + 90.0 * (-0.1f64).exp())).abs() < 0.01,
            "{now}"
        );
        // Idle for a long time, the estimate fades, so the endpoint gets tried again.
        assert!(e.get(60_000 * MS, TAU) < 1.0 * MS as f64);
    }
}

#[cfg(test)]
mod decay_tests {
    use super::*;

    #[test]
    fn the_polynomial_matches_exp_where_it_is_used() {
        let tau = Duration::from_secs(10);
        for ns in [
            0u64,
            1,
            1_000,
            1_000_000,
            50_000_000,
            99_999_999,
            100_000_000,
            5_000_000_000,
        ] {
            let exact = (-(ns as f64) / 1e10).exp();
            assert!((decay(ns, tau) - exact).abs() < 1e-9, "{ns}");
        }
    }
}
