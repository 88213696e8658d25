//! Weighted sampling in O(1): Vose's alias method, rebuilt only when the endpoint set changes.

use mesh_core::random::Random;

/// Draws index `i` with probability `weight[i] / sum(weights)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct AliasTable {
    /// Per slot: the probability (scaled to u64) of keeping the slot's own index.
    keep: Vec<u64>,
    alias: Vec<usize>,
    uniform: bool,
}

impl AliasTable {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if n == 0 || total == 0 {
            return Self::default();
        }
        let uniform = weights.iter().all(|&w| w == weights[0]);
        if uniform {
            return Self {
                keep: vec![u64::MAX; n],
                alias: (0..n).collect(),
                uniform,
            };
        }
        // Scaled so that the average slot holds exactly `n` units... as f64 for simplicity.
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|&w| f64::from(w) * n as f64 / total as f64)
            .collect();
        let mut keep = vec![u64::MAX; n];
        let mut alias: Vec<usize> = (0..n).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * u64::MAX as f64) as u64;
            alias[s] = l;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Self {
            keep,
            alias,
            uniform,
        }
    }

    /// An index, or `None` when there is nothing to draw from.
    #[inline]
    pub(crate) fn draw(&self, random: &dyn Random) -> Option<usize> {
        let n = self.keep.len();
        if n == 0 {
            return None;
        }
        let slot = random.below(n);
        if self.uniform || random.next_u64() <= self.keep[slot] {
            Some(slot)
        } else {
            Some(self.alias[slot])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::random::SplitMix;

    #[test]
    fn draws_follow_the_weights() {
        let table = AliasTable::new(&[1, 3, 0, 6]);
        let random = SplitMix::seeded(7);
        let mut counts = [0u32; 4];
        for _ in 0..100_000 {
            counts[table.draw(&random).expect("non-empty")] += 1;
        }
        assert_eq!(counts[2], 0);
        for (i, expected) in [(0, 0.1), (1, 0.3), (3, 0.6)] {
            let share = f64::from(counts[i]) / 100_000.0;
            assert!((share - expected).abs() < 0.01, "{i}: {share}");
        }
        assert!(AliasTable::new(&[]).draw(&random).is_none());
        assert!(AliasTable::new(&[0, 0]).draw(&random).is_none());
    }
}
