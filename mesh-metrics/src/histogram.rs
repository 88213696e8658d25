//! Latency histograms recorded with one atomic add, read out as HDR histograms.
//!
//! The buckets are laid out exactly as an `hdrhistogram::Histogram` with a lowest discernible
//! value of 1 µs, a highest trackable value of [`MAX_MICROS`] and one significant digit: 32
//! sub-buckets, so a recorded value lands in a bucket at most 1/16 (6.25 %) of its value wide.
//! Recording is a relaxed `fetch_add` on the value's bucket (no lock, no allocation); a snapshot
//! copies the counts into a real `Histogram` for quantiles, and the Prometheus buckets are
//! summed from the same counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Sub-buckets in the lower half of each bucket (`sub_bucket_half_count` in HDR's terms).
const HALF: u64 = 16;
/// Buckets needed to cover [`MAX_MICROS`] with 32 sub-buckets each.
const BUCKETS: u32 = 22;
/// The number of counters: HDR's `counts_len` for these parameters.
pub(crate) const LEN: usize = (BUCKETS as usize + 1) * HALF as usize;

/// The largest latency kept apart, in microseconds (about 67 s); longer ones count here.
pub const MAX_MICROS: u64 = ((2 * HALF) << (BUCKETS - 1)) - 1;

/// The counter index of a value in microseconds, as hdrhistogram computes it.
pub(crate) fn index_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    // The bucket is the power of two above the first 32 values; the sub-bucket the value's top
    // five bits.
    let bucket = 59 - (v | (2 * HALF - 1)).leading_zeros();
    let sub = v >> bucket;
    ((u64::from(bucket + 1) * HALF) + sub - HALF) as usize
}

/// The lowest value that lands at `index`.
pub(crate) fn lowest_value_at(index: usize) -> u64 {
    let index = index as u64;
    if index < HALF {
        return index;
    }
    let bucket = index / HALF - 1;
    let sub = index % HALF + HALF;
    sub << bucket
}

/// Whole microseconds in `d`, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An HDR-layout histogram of atomic counters plus the exact sum of what was recorded.
pub(crate) struct AtomicHistogram {
    counts: [AtomicU64; LEN],
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; LEN],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one latency.
    #[inline]
    pub(crate) fn record(&self, latency: Duration) {
        let us = micros(latency);
        self.counts[index_of(us)].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(us, Relaxed);
    }

    /// Adds these counts into `into` (an array of counters by index) and returns the sum.
    pub(crate) fn add_to(&self, into: &mut [u64; LEN]) -> u64 {
        for (total, count) in into.iter_mut().zip(&self.counts) {
            *total += count.load(Relaxed);
        }
        self.sum_micros.load(Relaxed)
    }
}

/// A histogram with the same layout as [`AtomicHistogram`], for quantiles.
pub(crate) fn new_hdr() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5), so
    // this cannot fail at run time; `the_layout_is_hdrhistograms` builds it.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_MICROS, 1).expect("constant histogram bounds are valid")
}

/// A point-in-time latency distribution: an HDR histogram (microseconds) and the exact sum.
#[derive(Clone, Debug)]
pub struct LatencySnapshot {
    hdr: Histogram<u64>,
    sum: Duration,
}

impl LatencySnapshot {
    /// Builds the snapshot from counts by index and the summed microseconds.
    pub(crate) fn from_counts(counts: &[u64; LEN], sum_micros: u64) -> Self {
        let mut hdr = new_hdr();
        fill_hdr(&mut hdr, counts);
        Self {
            hdr,
            sum: Duration::from_micros(sum_micros),
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.hdr.len()
    }

    /// The sum of all recorded latencies.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// The latency at quantile `q` (0.0 to 1.0): the highest value of the HDR bucket holding
    /// it, so at most 6.25 % above the true value. Zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.hdr.value_at_quantile(q))
    }

    /// The underlying HDR histogram, in microseconds.
    pub fn hdr(&self) -> &Histogram<u64> {
        &self.hdr
    }
}

/// Records `counts` (by index) into `hdr`, which must have been made by [`new_hdr`].
pub(crate) fn fill_hdr(hdr: &mut Histogram<u64>, counts: &[u64; LEN]) {
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 {
            // Same layout, so the value lands in the same counter; saturation cannot happen
            // below u64::MAX recorded values.
            hdr.saturating_record_n(lowest_value_at(index), count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_hdrhistograms() {
        let hdr = new_hdr();
        assert_eq!(hdr.distinct_values(), LEN);
        for v in (0..5_000).chain([65_535, 1_000_000, 59_999_999, MAX_MICROS]) {
            let index = index_of(v);
            assert!(index < LEN, "{v}");
            assert_eq!(
                lowest_value_at(index),
                hdr.lowest_equivalent(v),
                "value {v}"
            );
        }
        assert_eq!(index_of(u64::MAX), index_of(MAX_MICROS));
    }

    #[test]
    fn quantiles_come_back_within_the_bucket_width() {
        let h = AtomicHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let mut counts = [0; LEN];
        let sum = h.add_to(&mut counts);
        let snap = LatencySnapshot::from_counts(&counts, sum);
        assert_eq!(snap.count(), 100);
        assert_eq!(snap.sum(), Duration::from_millis(5050));
        let p50 = snap.quantile(0.5).as_secs_f64();
        assert!((0.050..=0.050 * 1.0625).contains(&p50), "{p50}");
        let p99 = snap.quantile(0.99).as_secs_f64();
        assert!((0.099..=0.099 * 1.0625).contains(&p99), "{p99}");
    }
}
