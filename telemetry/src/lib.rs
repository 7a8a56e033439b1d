//! Caxton's measurements in the forms their readers expect.
//!
//! Shards record HDR histograms and counters on their own cores and never
//! share them; this crate only ever sees copies, merged at read time. It owns
//! the formats: HdrHistogram interval logs (written periodically, on demand,
//! and by benchmarks; read back for reports), the percentile distribution in
//! HdrHistogram's layout, percentile plots (SVG and PNG), and the Prometheus
//! text exposition. Everything here is a pure function of its inputs or a
//! file, so it is tested without a running node. It depends on no other
//! Caxton crate: callers hand it plain histograms and counters.

pub mod hdr_log;
pub mod plot;
pub mod prometheus;
pub mod report;

pub use hdr_log::{read_log, HdrLogWriter, LogReadError, LoggedInterval, TaggedHistogram};
pub use prometheus::{
    render as render_prometheus, render_cluster, Exposition, Family, Latencies, ShardCounters,
    LATENCY_METRICS,
};
pub use report::percentile_distribution;

/// The engine's latency histogram shape (nanoseconds, 1 ns to 100 s, 3
/// significant digits), for tests of formats that must read it.
#[cfg(test)]
fn nanosecond_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}
