//! Shared pieces of Caxton's benchmarks: HDR histograms and how to print them.
//!
//! Every benchmark binary in `src/bin/` measures one primitive, records each
//! sample in an HDR histogram, and prints percentiles with the machine it ran
//! on. Timings are never asserted: machines are shared and noisy.

/// A line to stderr (progress, warnings) that a closed stderr cannot turn
/// into a panic, as `eprintln!` would (exit 101 under `2>&1 | head`).
#[macro_export]
macro_rules! stderr_line {
    ($($line:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($line)*);
    }};
}

pub mod agent_to_agent;
pub mod bare_loop;
pub mod baseline;
pub mod cluster;
pub mod core_to_core;
pub mod custom;
pub mod gossip;
pub mod jitter;
pub mod load;
pub mod noisy;
pub mod persistence;
pub mod remote;
pub mod scaling;
pub mod soak;
pub mod standard;
pub mod stress;

use hdrhistogram::Histogram;

pub use caxton_shards::nanosecond_histogram;

/// One line: `name  count  p50  p99  p99.9  max`, durations in microseconds.
pub fn percentile_line(name: &str, histogram: &Histogram<u64>) -> String {
    let micros = |nanos: u64| nanos as f64 / 1000.0;
    format!(
        "{name:<28} n={:<6} p50={:>10.1}µs p99={:>10.1}µs p99.9={:>10.1}µs max={:>10.1}µs",
        histogram.len(),
        micros(histogram.value_at_quantile(0.5)),
        micros(histogram.value_at_quantile(0.99)),
        micros(histogram.value_at_quantile(0.999)),
        micros(histogram.max()),
    )
}

/// The machine, for the header of every report.
pub fn machine_line() -> String {
    match caxton_numa::MachineTopology::discover() {
        Ok(topology) => format!(
            "machine: {} package(s), {} NUMA node(s), {} core(s), {} PU(s)",
            topology.packages,
            topology.numa_nodes.len(),
            topology.cores.len(),
            topology.pu_count()
        ),
        Err(error) => format!("machine: unknown ({error})"),
    }
}
