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
}

fn decay(elapsed_ns: u64, tau: Duration) -> f64 {
    let tau = tau.as_nanos().max(1) as f64;
    (-(elapsed_ns as f64) / tau).exp()
}

impl PeakEwma {
    pub(crate) fn new(initial: Duration, now_ns: u64) -> Self {
        Self {
            estimate: AtomicU64::new((initial.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(now_ns),
        }
    }

    /// The estimate now, in nanoseconds.
    #[inline]
    pub(crate) fn get(&self, now_ns: u64, tau: Duration) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Relaxed));
        let elapsed = now_ns.saturating_sub(self.stamp.load(Relaxed));
        estimate * decay(elapsed, tau)
    }

    /// Folds in a sample.
    pub(crate) fn sample(&self, rtt: Duration, now_ns: u64, tau: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let mut current = self.estimate.load(Relaxed);
        loop {
            let elapsed = now_ns.saturating_sub(self.stamp.load(Relaxed));
            let estimate = f64::from_bits(current);
            let next = if rtt > estimate {
                rtt
            } else {
                let w = decay(elapsed, tau);
                estimate * w + rtt * (1.0 - w)
            };
            match self
                .estimate
                .compare_exchange_weak(current, next.to_bits(), Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.stamp.fetch_max(now_ns, Relaxed);
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
