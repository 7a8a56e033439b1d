//! The percentile distribution in HdrHistogram's own layout (what
//! `outputPercentileDistribution` and `HistogramLogProcessor` print), so a
//! report from the engine and one from HdrHistogram's tools line up.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile rows per halving of the distance to 100% (HdrHistogram's default).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// `histogram` as a percentile table: Value, Percentile, TotalCount and
/// 1/(1-Percentile), then mean, standard deviation, max and total count.
/// Values are divided by `unit_ratio` (1000 turns nanoseconds into microseconds).
pub fn percentile_distribution(histogram: &Histogram<u64>, unit_ratio: f64) -> String {
    let digits = usize::from(histogram.sigfig());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for step in percentile_steps(histogram, TICKS_PER_HALF_DISTANCE) {
        let (value, quantile, total) = (
            step.value as f64 / unit_ratio,
            step.quantile,
            step.total_count,
        );
        {
            let (value, quantile_text) = (fixed(value, digits), fixed(quantile, 12));
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12} {quantile_text:>2} {total:>10} {:>14}",
                    fixed(1.0 / (1.0 - quantile), 2)
                );
            } else {
                let _ = writeln!(out, "{value:>12} {quantile_text:>2} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12}, StdDeviation   = {:>12}]",
        fixed(java_mean(histogram) / unit_ratio, digits),
        fixed(java_stdev(histogram) / unit_ratio, digits)
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12}, Total count    = {:>12}]",
        fixed(histogram.max() as f64 / unit_ratio, digits),
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        sub_bucket_count(histogram)
    );
    out
}

/// The mean as HdrHistogram's Java `getMean` sums it: the total first, one
/// division at the end. (The Rust crate divides each term by the count,
/// which can differ in the last printed digit.)
fn java_mean(histogram: &Histogram<u64>) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    let total = histogram.iter_recorded().fold(0.0_f64, |total, step| {
        total
            + histogram.median_equivalent(step.value_iterated_to()) as f64
                * step.count_at_value() as f64
    });
    total / histogram.len() as f64
}

/// The standard deviation as Java's `getStdDeviation` sums it.
fn java_stdev(histogram: &Histogram<u64>) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    let mean = java_mean(histogram);
    let total = histogram.iter_recorded().fold(0.0_f64, |total, step| {
        let deviation = histogram.median_equivalent(step.value_iterated_to()) as f64 - mean;
        total + deviation * deviation * step.count_since_last_iteration() as f64
    });
    (total / histogram.len() as f64).sqrt()
}

/// `value` with `digits` decimals the way Java's `%.Nf` writes it: the
/// shortest decimal that reads back as `value`, rounded half up. (Rust rounds
/// the exact binary value, so 24.4015 would print as 24.401 where Java, and
/// so HdrHistogram's tools, print 24.402.)
pub fn fixed(value: f64, digits: usize) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let shortest = format!("{}", value.abs());
    let (whole, fraction) = shortest.split_once('.').unwrap_or((&shortest, ""));
    let mut decimal: Vec<u8> = whole
        .bytes()
        .chain(fraction.bytes().chain(std::iter::repeat(b'0')).take(digits))
        .collect();
    if fraction
        .as_bytes()
        .get(digits)
        .is_some_and(|&next| next >= b'5')
    {
        // Round half up, carrying leftwards.
        let mut index = decimal.len();
        loop {
            if index == 0 {
                decimal.insert(0, b'1');
                break;
            }
            index -= 1;
            if decimal[index] == b'9' {
                decimal[index] = b'0';
            } else {
                decimal[index] += 1;
                break;
            }
        }
    }
    let split = decimal.len() - digits;
    let mut text = String::with_capacity(decimal.len() + 2);
    if value.is_sign_negative() && decimal.iter().any(|&digit| digit != b'0') {
        text.push('-');
    }
    text.push_str(std::str::from_utf8(&decimal[..split]).unwrap_or("0"));
    if digits > 0 {
        text.push('.');
        text.push_str(std::str::from_utf8(&decimal[split..]).unwrap_or("0"));
    }
    text
}

/// One row of a percentile distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PercentileStep {
    /// The value reached (the highest value equivalent to its bucket).
    pub value: u64,
    /// The percentile level the row reports, as a quantile (0 to 1).
    pub quantile: f64,
    /// Values recorded up to and including `value`.
    pub total_count: u64,
}

/// The rows of HdrHistogram's percentile iteration, step for step as its
/// Java `PercentileIterator` takes them: levels close in on 100% by
/// `ticks_per_half_distance` steps per halving of the distance, a level is
/// reached by the first value whose cumulative share is at or above it, one
/// value may report several levels, and a last row reports 100%.
///
/// (The Rust crate's `iter_quantiles` rounds differently at some levels, so
/// its tables would not line up with HdrHistogram's own tools.)
pub fn percentile_steps(
    histogram: &Histogram<u64>,
    ticks_per_half_distance: u32,
) -> Vec<PercentileStep> {
    let total = histogram.len();
    let mut steps = Vec::new();
    if total == 0 {
        return steps;
    }
    let mut level = 0.0f64; // percent
    let mut cumulative = 0u64;
    let mut last_value = 0;
    'values: for recorded in histogram.iter_recorded() {
        cumulative = cumulative.saturating_add(recorded.count_at_value());
        let value = histogram.highest_equivalent(recorded.value_iterated_to());
        last_value = value;
        while 100.0 * cumulative as f64 / total as f64 >= level {
            steps.push(PercentileStep {
                value,
                quantile: level / 100.0,
                total_count: cumulative,
            });
            // Java: ticks * 2^(trunc(log2(100 / (100 - level))) + 1).
            let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as i64;
            let reporting_ticks =
                i64::from(ticks_per_half_distance) * 2f64.powi(halvings as i32 + 1) as i64;
            let next = level + 100.0 / reporting_ticks as f64;
            // `>=`, not `==`: a histogram read from a damaged log can count
            // more in its buckets than its total says.
            if cumulative >= total {
                break 'values;
            }
            // With counts near 2^53 and more, `cumulative / total` can round
            // to exactly 100% short of the last value, and the level's steps
            // toward 100% become smaller than an f64 can add: the level
            // stops moving and rows would be added for ever. Go on to the
            // next value instead.
            if next <= level {
                break;
            }
            level = next;
        }
    }
    steps.push(PercentileStep {
        value: last_value,
        quantile: 1.0,
        total_count: total,
    });
    steps
}

/// HdrHistogram's sub-bucket count: the smallest power of two covering
/// 2 × 10^significant-digits.
fn sub_bucket_count(histogram: &Histogram<u64>) -> u64 {
    let largest_single_unit = 2 * 10u64.pow(u32::from(histogram.sigfig()));
    largest_single_unit.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_ends_when_the_ratio_rounds_to_one_before_the_last_value() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).expect("bounds");
        histogram.record_n(10, 1 << 60).expect("recorded");
        histogram.record_n(1_000, 1).expect("recorded");
        // 2^60 / (2^60 + 1) is 1.0 as an f64: every level below 100% is
        // reached at the first value, and the level's steps shrink below
        // what an f64 can add. The table must still end, at the total.
        let steps = percentile_steps(&histogram, TICKS_PER_HALF_DISTANCE);
        assert!(steps.len() < 2_000, "{} rows", steps.len());
        let last = steps.last().expect("rows");
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total_count, (1 << 60) + 1);
        assert_eq!(last.value, histogram.highest_equivalent(1_000));
    }

    #[test]
    fn decimals_round_like_java() {
        assert_eq!(fixed(24.4015, 3), "24.402");
        assert_eq!(fixed(0.0005, 3), "0.001");
        assert_eq!(fixed(9.9996, 3), "10.000");
        assert_eq!(fixed(1.0, 12), "1.000000000000");
        assert_eq!(fixed(0.1, 12), "0.100000000000");
        assert_eq!(fixed(1.1111111111111112, 2), "1.11");
        assert_eq!(fixed(213.33333333333334, 2), "213.33");
        assert_eq!(fixed(-0.0004, 3), "0.000");
        assert_eq!(fixed(-2.5, 0), "-3");
    }

    #[test]
    fn layout_matches_hdrhistogram() {
        let mut histogram = crate::nanosecond_histogram();
        for value in 1..=1000u64 {
            histogram.record(value * 1000).expect("in range");
        }
        let text = percentile_distribution(&histogram, 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       1.000 0.000000000000          1           1.00"
        );
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with("     500.223 0.500000000000")
                    || line.starts_with("     500.000 0.500000000000")),
            "{text}"
        );
        let last_row = lines[lines.len() - 4];
        assert!(
            last_row.ends_with("1.000000000000       1000"),
            "{last_row}"
        );
        assert!(
            text.contains("#[Max     =     1000.447, Total count    =         1000]")
                || text.contains("#[Max     =     1000.000, Total count    =         1000]"),
            "{text}"
        );
        assert!(
            text.ends_with("#[Buckets =           27, SubBuckets     =         2048]\n"),
            "{text}"
        );
    }
}
