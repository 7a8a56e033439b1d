//! Handler run times per agent: a small log-linear histogram (four buckets
//! per power of two, so a bucket spans at most a quarter of its value) that
//! an agent's stats carry on every shard it runs on. HDR histograms at three
//! digits are kilobytes each; this is 640 bytes, allocated on the agent's
//! first handler run on the shard, and enough to rank agents by P99.

/// Buckets: values 0–3 exactly, then four per power of two up to 2^40 ns
/// (18 minutes); longer runs land in the last bucket.
pub const RUN_TIME_BUCKETS: usize = 160;

/// A histogram of handler run times in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunTimes {
    buckets: Option<Box<[u32; RUN_TIME_BUCKETS]>>,
}

/// The bucket `nanos` falls in.
fn bucket_of(nanos: u64) -> usize {
    if nanos < 4 {
        return nanos as usize;
    }
    let log = 63 - nanos.leading_zeros() as usize;
    let sub = ((nanos >> (log - 2)) & 3) as usize;
    (4 * log + sub - 4).min(RUN_TIME_BUCKETS - 1)
}

/// The largest value bucket `index` holds.
pub fn bucket_upper_ns(index: usize) -> u64 {
    if index < 4 {
        return index as u64;
    }
    let log = (index + 4) / 4;
    let sub = ((index + 4) % 4) as u64;
    ((4 + sub + 1) << (log - 2)) - 1
}

impl RunTimes {
    /// Count one run of `nanos`.
    pub fn record(&mut self, nanos: u64) {
        let buckets = self
            .buckets
            .get_or_insert_with(|| Box::new([0; RUN_TIME_BUCKETS]));
        let bucket = &mut buckets[bucket_of(nanos)];
        *bucket = bucket.saturating_add(1);
    }

    /// Add `other`'s counts (an agent summed over shards).
    pub fn add(&mut self, other: &Self) {
        let Some(theirs) = &other.buckets else { return };
        let ours = self
            .buckets
            .get_or_insert_with(|| Box::new([0; RUN_TIME_BUCKETS]));
        for (ours, theirs) in ours.iter_mut().zip(theirs.iter()) {
            *ours = ours.saturating_add(*theirs);
        }
    }

    /// Runs counted.
    pub fn count(&self) -> u64 {
        self.buckets.as_ref().map_or(0, |buckets| {
            buckets.iter().map(|&count| u64::from(count)).sum()
        })
    }

    /// The non-empty buckets as (largest value in ns, count), ascending.
    pub fn buckets(&self) -> Vec<(u64, u32)> {
        self.buckets.as_ref().map_or_else(Vec::new, |buckets| {
            buckets
                .iter()
                .enumerate()
                .filter(|(_, &count)| count > 0)
                .map(|(index, &count)| (bucket_upper_ns(index), count))
                .collect()
        })
    }

    /// The value at `quantile` (0–1), as its bucket's upper bound: within a
    /// quarter above the true value. `None` when empty.
    pub fn value_at_quantile(&self, quantile: f64) -> Option<u64> {
        quantile_of(&self.buckets(), quantile)
    }
}

/// The value at `quantile` of sparse (upper bound, count) buckets.
pub fn quantile_of(buckets: &[(u64, u32)], quantile: f64) -> Option<u64> {
    let total: u64 = buckets.iter().map(|&(_, count)| u64::from(count)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for &(upper, count) in buckets {
        seen += u64::from(count);
        if seen >= rank {
            return Some(upper);
        }
    }
    buckets.last().map(|&(upper, _)| upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_within_a_quarter() {
        let mut previous_upper = None;
        for index in 0..RUN_TIME_BUCKETS {
            let upper = bucket_upper_ns(index);
            if let Some(previous) = previous_upper {
                assert_eq!(bucket_of(previous + 1), index, "contiguous at {index}");
                assert!((upper - previous) as f64 <= 0.25 * (previous + 1) as f64 + 1.0);
            }
            assert_eq!(bucket_of(upper), index);
            previous_upper = Some(upper);
        }
        assert_eq!(bucket_of(u64::MAX), RUN_TIME_BUCKETS - 1);
    }

    #[test]
    fn quantiles_bound_the_true_value_from_above() {
        let mut times = RunTimes::default();
        assert_eq!(times.value_at_quantile(0.99), None);
        for nanos in 1..=1000u64 {
            times.record(nanos * 1000);
        }
        let p50 = times.value_at_quantile(0.5).expect("p50");
        let p99 = times.value_at_quantile(0.99).expect("p99");
        assert!((500_000..=625_000).contains(&p50), "{p50}");
        assert!((990_000..=1_237_500).contains(&p99), "{p99}");
        let mut sum = RunTimes::default();
        sum.add(&times);
        sum.add(&times);
        assert_eq!(sum.count(), 2000);
        assert_eq!(sum.value_at_quantile(0.5), Some(p50));
    }
}
