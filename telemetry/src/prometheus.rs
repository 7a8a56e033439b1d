//! The Prometheus text exposition (format 0.0.4) of a node's metrics.
//!
//! Each latency appears twice. Under the performance tuning guide's name (for example
//! `caxton_routing_latency_seconds`) it is a summary with `quantile` labels
//! 0.5, 0.9, 0.99 and 0.999, computed exactly from the merged HDR histogram
//! over everything recorded since the node started. Under
//! `<name>_distribution_seconds` it is a histogram with fixed buckets, which
//! Prometheus can rate and aggregate across nodes
//! (`histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m])))`); a summary
//! cannot be aggregated, a histogram can.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The quantiles every latency summary shows.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Upper bounds (seconds) of the histogram form's buckets: 1-2.5-5 steps from
/// 100 ns to 10 s, wide enough for a busy-polled ring and a stalled agent alike.
pub const BUCKET_BOUNDS_SECONDS: [f64; 25] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The latency metrics, by name, with their help text.
pub const LATENCY_METRICS: [(&str, &str); 5] = [
    (
        "caxton_routing_latency_seconds",
        "Routing latency inside the node: send to handler start, every route (same shard or across shards)",
    ),
    (
        "caxton_cross_shard_routing_latency_seconds",
        "Routing latency of messages that crossed from another shard or a client port to the handling shard",
    ),
    (
        "caxton_remote_routing_latency_seconds",
        "Routing latency of messages from other nodes: send on the sending node to handler start here (two clocks: their skew is in it)",
    ),
    (
        "caxton_agent_startup_time_seconds",
        "Time to make an agent instance ready to serve: a warm spare taken or a cold instantiation",
    ),
    (
        "caxton_message_processing_time_seconds",
        "Handler run time per message",
    ),
];

/// One data shard's counters since the node started (levels such as
/// `queue_depth` as last read), as the per-shard series show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Messages waiting for the shard: in the rings to it, its mailboxes, held.
    pub queue_depth: u64,
    /// Messages the shard's agents handled (every outcome).
    pub handled: u64,
    /// Sends refused because a mailbox or ring of the shard was full.
    pub refused: u64,
    /// Of those, admitted messages pushed out of a full mailbox for a less busy agent's.
    pub pushed_out: u64,
    /// Messages answered with failure because their deadline passed.
    pub timeouts: u64,
    /// Handlers that trapped, ran too long or grew past their memory.
    pub faults: u64,
    /// Handlers that returned a failure code.
    pub agent_failures: u64,
    /// Messages held because their agent had used its `cpu_shares` for the window.
    pub throttled: u64,
    /// Messages for a client that waited in the shard for room in its ring.
    pub waited_for_clients: u64,
    /// Answers for another shard that waited in the shard for room in its ring.
    pub answers_waited: u64,
    /// Times the shard found its CPU taken by another thread after an idle poll and stopped polling for a while.
    pub idle_polls_contended: u64,
    /// Handlers that used their time slice and yielded the shard.
    pub suspended: u64,
    /// Messages made durable in the shard's storage partition.
    pub persisted: u64,
    /// Stored messages delivered again after a restart.
    pub redelivered: u64,
    /// Durable sends refused because the partition could not keep them.
    pub storage_failures: u64,
    /// Unfinished stored messages removed by `messaging.message_ttl`.
    pub expired: u64,
    /// Turns that handled at least one message.
    pub handling_turns: u64,
    /// The most messages handled in one turn (at most `messaging.batch_size`).
    pub largest_batch: u64,
}

/// The latencies of every data shard merged, since the node started, as
/// HDR histograms of nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Send to handler start, every route (same shard or across shards).
    pub routing: Histogram<u64>,
    /// Send to handler start, for messages that crossed from another shard or a client port.
    pub cross_shard_routing: Histogram<u64>,
    /// Send on another node to handler start here.
    pub remote_routing: Histogram<u64>,
    /// Time to make an agent instance ready to serve.
    pub agent_startup: Histogram<u64>,
    /// Handler run time per message.
    pub message_processing: Histogram<u64>,
}

/// Everything one scrape shows.
pub struct Exposition<'a> {
    /// The latency histograms, all shards merged.
    pub latencies: &'a Latencies,
    /// Each data shard's counters, in shard order.
    pub shards: &'a [ShardCounters],
    /// Messages handled per second between the last two collections.
    pub messages_per_second: f64,
    /// Resident memory of the process.
    pub memory_used_bytes: u64,
    /// CPU time of the process over the last collection interval, as a percentage
    /// of the CPUs of the machine (0 to 100).
    pub cpu_usage_percent: f64,
    /// Agents deployed.
    pub agents_deployed: usize,
    /// Seconds since the node started.
    pub uptime_seconds: f64,
}

/// The text of `exposition`.
pub fn render(exposition: &Exposition<'_>) -> String {
    let latencies = exposition.latencies;
    // Gossip convergence is the cluster's (see `render_cluster`).
    let histograms: [&Histogram<u64>; 5] = [
        &latencies.routing,
        &latencies.cross_shard_routing,
        &latencies.remote_routing,
        &latencies.agent_startup,
        &latencies.message_processing,
    ];
    let mut out = String::with_capacity(16 * 1024);
    for ((name, help), histogram) in LATENCY_METRICS.iter().zip(histograms) {
        summary(&mut out, name, help, histogram);
        let distribution = format!("{}_distribution_seconds", name.trim_end_matches("_seconds"));
        bucketed(&mut out, &distribution, help, histogram);
    }
    node_gauges(&mut out, exposition);
    per_shard_series(&mut out, exposition.shards);
    out
}

/// The node-wide throughput, resource and deployment series.
fn node_gauges(out: &mut String, exposition: &Exposition<'_>) {
    gauge(
        out,
        "caxton_messages_per_second",
        "Message throughput: messages handled per second between the last two collections",
        exposition.messages_per_second,
    );
    counter(
        out,
        "caxton_agents_messages_processed_total",
        "Message throughput: messages handled by agents since the node started (every outcome: answered, failed, trapped or timed out)",
        exposition.shards.iter().map(|shard| shard.handled).sum(),
    );
    gauge(
        out,
        "caxton_memory_used_bytes",
        "resource use: resident memory of the engine process",
        exposition.memory_used_bytes as f64,
    );
    gauge(
        out,
        "caxton_cpu_usage_percent",
        "resource use: CPU time of the engine process over the last collection interval, percent of the machine's CPUs",
        exposition.cpu_usage_percent,
    );
    gauge(
        out,
        "caxton_agents_deployed",
        "Agents deployed on the node",
        exposition.agents_deployed as f64,
    );
    gauge(
        out,
        "caxton_uptime_seconds",
        "Seconds since the node started",
        exposition.uptime_seconds,
    );
}

/// One series per shard for each counter, labelled with the shard's index.
fn per_shard_series(out: &mut String, shards: &[ShardCounters]) {
    type ShardField = fn(&ShardCounters) -> u64;
    let per_shard: [(&str, &str, &str, ShardField); 18] = [
        (
            "caxton_shard_queue_depth",
            "gauge",
            "Messages waiting for the shard: in the rings to it, its mailboxes, and held for busy or throttled agents",
            |m| m.queue_depth,
        ),
        (
            "caxton_shard_messages_handled_total",
            "counter",
            "Messages the shard's agents handled",
            |m| m.handled,
        ),
        (
            "caxton_shard_refused_total",
            "counter",
            "Sends refused because a mailbox or ring of the shard was full",
            |m| m.refused,
        ),
        (
            "caxton_shard_pushed_out_total",
            "counter",
            "Of the refused sends, messages pushed out of a full mailbox to make room for a less busy agent's",
            |m| m.pushed_out,
        ),
        (
            "caxton_shard_timeouts_total",
            "counter",
            "Messages answered with failure because their deadline passed",
            |m| m.timeouts,
        ),
        (
            "caxton_shard_agent_traps_total",
            "counter",
            "Handlers that trapped, ran past max_execution_time or grew past their memory",
            |m| m.faults,
        ),
        (
            "caxton_shard_agent_failures_total",
            "counter",
            "Handlers that returned a failure code",
            |m| m.agent_failures,
        ),
        (
            "caxton_shard_throttled_total",
            "counter",
            "Messages held because their agent had used its cpu_shares for the window",
            |m| m.throttled,
        ),
        (
            "caxton_shard_waited_for_clients_total",
            "counter",
            "Messages for a client that found its ring full and waited in the shard until it read",
            |m| m.waited_for_clients,
        ),
        (
            "caxton_shard_answers_waited_total",
            "counter",
            "Answers for another shard (or the remote port) that found its ring full and waited in the shard until it had room",
            |m| m.answers_waited,
        ),
        (
            "caxton_shard_idle_polls_contended_total",
            "counter",
            "Times the shard found its CPU taken by another thread for about a scheduler slice after an idle poll, and parked instead of polling on for 50 ms (runtime.spin_before_park: isolate the shard CPUs, or set it to 0 where other busy processes share them)",
            |m| m.idle_polls_contended,
        ),
        (
            "caxton_shard_handlers_suspended_total",
            "counter",
            "Handlers that used their runtime.time_slice and yielded the shard to other agents (once per handler)",
            |m| m.suspended,
        ),
        (
            "caxton_shard_persisted_total",
            "counter",
            "Messages made durable in the shard's storage partition before acceptance",
            |m| m.persisted,
        ),
        (
            "caxton_shard_redelivered_total",
            "counter",
            "Stored messages delivered again after a restart",
            |m| m.redelivered,
        ),
        (
            "caxton_shard_storage_failures_total",
            "counter",
            "Durable sends refused because the partition could not keep them",
            |m| m.storage_failures,
        ),
        (
            "caxton_shard_expired_total",
            "counter",
            "Unfinished stored messages removed by messaging.message_ttl",
            |m| m.expired,
        ),
        (
            "caxton_shard_handling_turns_total",
            "counter",
            "Turns in which the shard started at least one handler; messages handled over this is about the mean batch",
            |m| m.handling_turns,
        ),
        (
            "caxton_shard_largest_batch",
            "gauge",
            "The most messages the shard handled in one turn since the node started (at most messaging.batch_size)",
            |m| m.largest_batch,
        ),
    ];
    for (name, kind, help, field) in per_shard {
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (index, shard) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{index}\"}} {}", field(shard));
        }
    }
}

/// A metric family outside the shards: its samples and their labels.
pub struct Family<'a> {
    /// The metric's name.
    pub name: &'a str,
    /// Its help text (without the final period).
    pub help: &'a str,
    /// `counter` or `gauge`.
    pub kind: &'a str,
    /// (labels as `key="value",...` or empty, value).
    pub samples: Vec<(String, f64)>,
}

/// The cluster's series: families of counters and gauges, and the gossip
/// convergence time (nanoseconds) as a summary and a histogram. A node that
/// runs alone shows the convergence series empty and no families.
pub fn render_cluster(families: &[Family<'_>], convergence: &Histogram<u64>) -> String {
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}.", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, value) in &family.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {}", family.name, number(*value));
            } else {
                let _ = writeln!(out, "{}{{{labels}}} {}", family.name, number(*value));
            }
        }
    }
    let help = "Gossip convergence: from the moment a member joins (its identity carries that time) to the moment this node learns of it";
    summary(
        &mut out,
        "caxton_gossip_convergence_time_seconds",
        help,
        convergence,
    );
    bucketed(
        &mut out,
        "caxton_gossip_convergence_time_distribution_seconds",
        help,
        convergence,
    );
    out
}

fn summary(out: &mut String, name: &str, help: &str, histogram: &Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}.");
    let _ = writeln!(out, "# TYPE {name} summary");
    for quantile in QUANTILES {
        let value = if histogram.is_empty() {
            f64::NAN
        } else {
            seconds(histogram.value_at_quantile(quantile))
        };
        let _ = writeln!(out, "{name}{{quantile=\"{quantile}\"}} {}", number(value));
    }
    let _ = writeln!(out, "{name}_sum {}", number(sum_seconds(histogram)));
    let _ = writeln!(out, "{name}_count {}", histogram.len());
}

fn bucketed(out: &mut String, name: &str, help: &str, histogram: &Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help} (histogram form).");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = [0u64; BUCKET_BOUNDS_SECONDS.len()];
    for step in histogram.iter_recorded() {
        // A recorded value counts in every bucket whose bound reaches the
        // lowest value it may stand for (HDR keeps 3 significant digits).
        let low = seconds(histogram.lowest_equivalent(step.value_iterated_to()));
        for (bound, count) in BUCKET_BOUNDS_SECONDS.iter().zip(cumulative.iter_mut()) {
            if low <= *bound {
                *count += step.count_at_value();
            }
        }
    }
    for (bound, count) in BUCKET_BOUNDS_SECONDS.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.len());
    let _ = writeln!(out, "{name}_sum {}", number(sum_seconds(histogram)));
    let _ = writeln!(out, "{name}_count {}", histogram.len());
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}.");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {}", number(value));
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}.");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// The sum of observations: HDR histograms keep counts per value range, not a
/// running sum, so this is mean × count, within the histogram's 0.1% precision.
fn sum_seconds(histogram: &Histogram<u64>) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.mean() * histogram.len() as f64 / 1e9
    }
}

/// A sample value as Prometheus writes it (`NaN`, `+Inf`, or a plain number).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_ns: &[u64]) -> Histogram<u64> {
        let mut histogram = crate::nanosecond_histogram();
        for &value in values_ns {
            histogram.record(value).expect("in range");
        }
        histogram
    }

    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .expect("a number")
    }

    #[test]
    fn quantiles_buckets_and_counters_come_from_their_inputs() {
        // 100 routes of 1 µs and 100 of 1 ms, handled by two shards.
        let mut routes = vec![1_000; 100];
        routes.extend([1_000_000; 100]);
        let latencies = Latencies {
            routing: histogram(&routes),
            cross_shard_routing: histogram(&[]),
            remote_routing: histogram(&[]),
            agent_startup: histogram(&[]),
            message_processing: histogram(&[]),
        };
        let shards = [
            ShardCounters {
                handled: 100,
                ..ShardCounters::default()
            },
            ShardCounters {
                handled: 100,
                ..ShardCounters::default()
            },
        ];
        let text = render(&Exposition {
            latencies: &latencies,
            shards: &shards,
            messages_per_second: 12.5,
            memory_used_bytes: 4096,
            cpu_usage_percent: 3.0,
            agents_deployed: 2,
            uptime_seconds: 1.0,
        });
        let p50 = sample(&text, "caxton_routing_latency_seconds{quantile=\"0.5\"}");
        let p99 = sample(&text, "caxton_routing_latency_seconds{quantile=\"0.99\"}");
        assert!((p50 - 1e-6).abs() < 1e-8, "p50 {p50}");
        assert!((p99 - 1e-3).abs() < 1e-5, "p99 {p99}");
        assert_eq!(sample(&text, "caxton_routing_latency_seconds_count"), 200.0);
        let name = "caxton_routing_latency_distribution_seconds_bucket";
        assert_eq!(sample(&text, &format!("{name}{{le=\"0.0000005\"}}")), 0.0);
        assert_eq!(sample(&text, &format!("{name}{{le=\"0.000001\"}}")), 100.0);
        assert_eq!(sample(&text, &format!("{name}{{le=\"0.0005\"}}")), 100.0);
        assert_eq!(sample(&text, &format!("{name}{{le=\"0.001\"}}")), 200.0);
        assert_eq!(sample(&text, &format!("{name}{{le=\"+Inf\"}}")), 200.0);
        assert_eq!(
            sample(&text, "caxton_agents_messages_processed_total"),
            200.0
        );
        assert_eq!(
            sample(&text, "caxton_shard_messages_handled_total{shard=\"1\"}"),
            100.0
        );
        assert_eq!(sample(&text, "caxton_messages_per_second"), 12.5);
        // No remote routes in a single node: an empty summary, NaN quantiles.
        assert!(text.contains("caxton_remote_routing_latency_seconds{quantile=\"0.5\"} NaN"));
        assert_eq!(
            sample(&text, "caxton_remote_routing_latency_seconds_count"),
            0.0
        );
    }
}
