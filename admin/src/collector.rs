//! The reader's side of the shards' metrics.
//!
//! Shards keep histograms and counters for what happened since they were last
//! read; the collector reads them all (with reset), folds each shard's copy
//! into a running total since the node started and into the open HDR log
//! interval, and derives rates (messages per second, CPU use) from the time
//! between reads. It runs on the controller thread and is the only reader of
//! a running node's metrics, so nothing is counted twice or lost.

use std::time::{Duration, Instant, SystemTime};

use caxton_shards::{Node, NodeError, ShardMetrics};
use caxton_telemetry::{HdrLogWriter, Latencies, ShardCounters};
use hdrhistogram::Histogram;
use tracing::warn;

/// Tags of the HDR logs, each with the latency it carries.
pub const HDR_TAGS: [&str; 4] = [
    "routing_latency",
    "cross_shard_routing_latency",
    "message_processing_time",
    "agent_startup_time",
];

/// See the module docs.
pub struct Collector {
    started: Instant,
    started_wall: SystemTime,
    /// Per shard, everything since the node started.
    totals: Vec<ShardMetrics>,
    /// All shards merged, since the HDR log's current interval opened.
    interval: ShardMetrics,
    interval_opened: SystemTime,
    last_read: Instant,
    last_handled: u64,
    last_cpu: Duration,
    messages_per_second: f64,
    cpu_usage_percent: f64,
    log: Option<(HdrLogWriter, Duration)>,
}

impl Collector {
    /// A collector for a node of `shards` data shards. With `log`, closed
    /// intervals of length `interval` are appended to that HDR log.
    pub fn new(shards: usize, log: Option<(HdrLogWriter, Duration)>) -> Self {
        let now = Instant::now();
        let wall = SystemTime::now();
        Self {
            started: now,
            started_wall: wall,
            totals: vec![ShardMetrics::default(); shards],
            interval: ShardMetrics::default(),
            interval_opened: wall,
            last_read: now,
            last_handled: 0,
            last_cpu: process_cpu_time(),
            messages_per_second: 0.0,
            cpu_usage_percent: 0.0,
            log,
        }
    }

    /// Read every shard now and fold the readings in.
    pub fn collect(&mut self, node: &Node) -> Result<(), NodeError> {
        let readings = node.metrics(true)?;
        for (total, reading) in self.totals.iter_mut().zip(&readings) {
            total.merge(reading);
            // Levels, not counts: the latest reading is the truth.
            total.queue_depth = reading.queue_depth;
            total.storage_transactions = reading.storage_transactions;
            total.storage_writes = reading.storage_writes;
            self.interval.merge(reading);
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_read).as_secs_f64();
        // Rates over very short gaps (two scrapes in a row) say nothing; keep the last.
        if elapsed >= 0.2 {
            let handled = self.handled();
            self.messages_per_second = (handled - self.last_handled) as f64 / elapsed;
            let cpu = process_cpu_time();
            let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
            self.cpu_usage_percent =
                100.0 * (cpu.saturating_sub(self.last_cpu)).as_secs_f64() / (elapsed * cpus);
            self.last_handled = handled;
            self.last_cpu = cpu;
            self.last_read = now;
        }
        Ok(())
    }

    /// When the open HDR log interval is due to close (`None`: no log).
    pub fn next_log_due(&self) -> Option<SystemTime> {
        self.log
            .as_ref()
            .map(|(_, interval)| self.interval_opened + *interval)
    }

    /// Collect, then close the open interval and append it to the HDR log.
    pub fn close_interval(&mut self, node: &Node) -> Result<(), NodeError> {
        self.collect(node)?;
        let now = SystemTime::now();
        let length = now.duration_since(self.interval_opened).unwrap_or_default();
        let interval = std::mem::take(&mut self.interval);
        if let Some((log, _)) = self.log.as_mut() {
            let histograms = tagged(&interval);
            let refs: Vec<(&str, &Histogram<u64>)> = histograms
                .iter()
                .map(|(tag, histogram)| (*tag, histogram))
                .collect();
            if let Err(error) = log.append(self.interval_opened, length, &refs) {
                warn!(path = %log.path().display(), "cannot append to the HDR log: {error}");
            }
        }
        self.interval_opened = now;
        Ok(())
    }

    /// Per-shard totals since the node started.
    pub fn totals(&self) -> &[ShardMetrics] {
        &self.totals
    }

    /// All shards merged, since the node started.
    pub fn merged(&self) -> ShardMetrics {
        let mut merged = ShardMetrics::default();
        for shard in &self.totals {
            merged.merge(shard);
        }
        merged
    }

    /// All shards' latencies merged, since the node started, for the Prometheus exposition.
    pub fn latencies(&self) -> Latencies {
        let merged = self.merged();
        Latencies {
            routing: all_routes(&merged),
            cross_shard_routing: merged.routing_cross_ns,
            remote_routing: merged.routing_remote_ns,
            agent_startup: merged.startup_ns,
            message_processing: merged.processing_ns,
        }
    }

    /// Each shard's counters since the node started, for the Prometheus exposition.
    pub fn shard_counters(&self) -> Vec<ShardCounters> {
        self.totals.iter().map(shard_counters).collect()
    }

    /// Messages handled since the node started.
    pub fn handled(&self) -> u64 {
        self.totals.iter().map(|shard| shard.handled).sum()
    }

    /// Messages handled per second between the last two reads that were far enough apart.
    pub fn messages_per_second(&self) -> f64 {
        self.messages_per_second
    }

    /// CPU use of the process over the same span, in percent of the machine.
    pub fn cpu_usage_percent(&self) -> f64 {
        self.cpu_usage_percent
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wall-clock time the node started.
    pub fn started_wall(&self) -> SystemTime {
        self.started_wall
    }

    /// Where the periodic HDR log is written, if anywhere.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.log.as_ref().map(|(log, _)| log.path())
    }
}

/// The tagged latency histograms of `metrics` (routing merges both paths).
pub fn tagged(metrics: &ShardMetrics) -> [(&'static str, Histogram<u64>); 4] {
    [
        (HDR_TAGS[0], all_routes(metrics)),
        (HDR_TAGS[1], metrics.routing_cross_ns.clone()),
        (HDR_TAGS[2], metrics.processing_ns.clone()),
        (HDR_TAGS[3], metrics.startup_ns.clone()),
    ]
}

/// Routing latency over every route: messages sent on their own shard and
/// those that crossed from another shard or a client.
fn all_routes(metrics: &ShardMetrics) -> Histogram<u64> {
    let mut routing = metrics.routing_local_ns.clone();
    // Identical bounds: the merge cannot fail.
    let _ = routing.add(&metrics.routing_cross_ns);
    routing
}

/// The counters of `metrics` that the exposition shows per shard.
fn shard_counters(metrics: &ShardMetrics) -> ShardCounters {
    ShardCounters {
        queue_depth: metrics.queue_depth,
        handled: metrics.handled,
        refused: metrics.refused,
        pushed_out: metrics.pushed_out,
        timeouts: metrics.timeouts,
        faults: metrics.faults,
        agent_failures: metrics.agent_failures,
        throttled: metrics.throttled,
        waited_for_clients: metrics.waited_for_clients,
        answers_waited: metrics.answers_waited,
        idle_polls_contended: metrics.idle_polls_contended,
        suspended: metrics.suspended,
        persisted: metrics.persisted,
        redelivered: metrics.redelivered,
        storage_failures: metrics.storage_failures,
        expired: metrics.expired,
        handling_turns: metrics.handling_turns,
        largest_batch: metrics.largest_batch,
    }
}

/// User plus system CPU time of this process.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_memory_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_merges_latencies_and_keeps_each_shards_counters() {
        let mut collector = Collector::new(2, None);
        let [first, second] = &mut collector.totals[..] else {
            panic!("two shards");
        };
        first.routing_local_ns.record(1_000).expect("in range");
        first.handled = 3;
        second.routing_cross_ns.record(1_000_000).expect("in range");
        second.processing_ns.record(500).expect("in range");
        second.queue_depth = 7;
        let latencies = collector.latencies();
        assert_eq!(latencies.routing.len(), 2, "both routes of both shards");
        assert_eq!(latencies.cross_shard_routing.len(), 1);
        assert_eq!(latencies.message_processing.len(), 1);
        assert!(latencies.agent_startup.is_empty());
        let counters = collector.shard_counters();
        assert_eq!(
            (counters[0].handled, counters[0].queue_depth),
            (3, 0),
            "shard 0"
        );
        assert_eq!(
            (counters[1].handled, counters[1].queue_depth),
            (0, 7),
            "shard 1"
        );
    }
}
