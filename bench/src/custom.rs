//! `engine benchmark custom` and the workloads it runs: `request-reply`,
//! `one-way`, `fan-out` and `pipeline`, offered open-loop at a constant rate
//! (see [`crate::load`]) to a Caxton node or to the baseline design.

use std::str::FromStr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use caxton_messaging::{AgentId, Durability, Envelope, Performative};
use caxton_profiles::Profile;
use caxton_shards::{Client, Node, SendOptions};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{
    self, Completion, GeneratorResult, Outcome, Outgoing, Port, Progress, Refused, RunCounts,
};
use crate::nanosecond_histogram;
use crate::standard::{ECHO_WAT, FORWARDER_WAT};

/// The one-way pattern's receiver, as shipped in `examples/agents/sink.wat`.
pub const SINK_WAT: &str = include_str!("../../examples/agents/sink.wat");
/// The fan-out pattern's gatherer, as shipped in `examples/agents/fanout.wat`.
pub const FANOUT_WAT: &str = include_str!("../../examples/agents/fanout.wat");
/// An echo that spends 200 µs per message, from `examples/agents/slow.wat`.
pub const SLOW_WAT: &str = include_str!("../../examples/agents/slow.wat");

/// Leaves each fan-out request gathers from.
pub const FAN_OUT_DEGREE: usize = 4;
/// Hops of each pipeline message after its entry stage.
pub const PIPELINE_HOPS: usize = 3;
/// Bytes of payload per message.
const PAYLOAD: &[u8] = b"0123456789abcdef";

/// How messages flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Client → echo agent → client.
    RequestReply,
    /// Client → sink agent; nothing comes back. Latency is send (intended) to handler start.
    OneWay,
    /// Client → gatherer, which asks 4 echo leaves and answers once all have.
    FanOut,
    /// Client → stage → stage → stage → stage, the last answering the client.
    Pipeline,
}

impl Pattern {
    /// Every pattern, by name.
    pub const ALL: [(&'static str, Pattern); 4] = [
        ("request-reply", Pattern::RequestReply),
        ("one-way", Pattern::OneWay),
        ("fan-out", Pattern::FanOut),
        ("pipeline", Pattern::Pipeline),
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, pattern)| *pattern == self)
            .map_or("?", |(name, _)| name)
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, pattern)| *pattern)
            .ok_or_else(|| {
                format!(
                    "unknown pattern `{text}`; the patterns are: {}",
                    Self::ALL.map(|(name, _)| name).join(", ")
                )
            })
    }
}

/// The agents of a workload and how each message is addressed.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Its pattern.
    pub pattern: Pattern,
    /// Every agent to deploy (one instance each): name and module text.
    pub agents: Vec<(String, &'static str)>,
    /// The agents messages are sent to, in rotation, each with the content it gets.
    pub entries: Vec<(String, Vec<u8>)>,
}

/// A benchmark's input was refused, or it could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad input: nothing was started.
    #[error("{0}")]
    Input(String),
    /// The node refused an operation.
    #[error(transparent)]
    Node(#[from] caxton_shards::NodeError),
    /// Something failed while running.
    #[error("{0}")]
    Run(String),
}

fn name_route(names: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(64);
    content.push(names.len() as u8);
    for name in names {
        content.push(name.len() as u8);
        content.extend_from_slice(name.as_bytes());
    }
    content.extend_from_slice(payload);
    content
}

impl Workload {
    /// The workload of `pattern` over `agents` agents. `module` replaces the
    /// entry agents' module for request-reply (the stress tests' slow agent).
    pub fn new(
        pattern: Pattern,
        agents: usize,
        module: Option<&'static str>,
    ) -> Result<Self, BenchError> {
        if agents == 0 {
            return Err(BenchError::Input("--agents must be at least 1".into()));
        }
        let numbered = |prefix: &str, count: usize| -> Vec<String> {
            (0..count)
                .map(|index| format!("bench-{prefix}-{index}"))
                .collect()
        };
        let (agents, entries) = match pattern {
            Pattern::RequestReply | Pattern::OneWay => {
                let (prefix, wat) = match pattern {
                    Pattern::OneWay => ("sink", SINK_WAT),
                    _ => ("echo", module.unwrap_or(ECHO_WAT)),
                };
                let names = numbered(prefix, agents);
                let entries = names
                    .iter()
                    .map(|name| (name.clone(), PAYLOAD.to_vec()))
                    .collect();
                (names.into_iter().map(|name| (name, wat)).collect(), entries)
            }
            Pattern::FanOut => {
                if agents < FAN_OUT_DEGREE + 1 {
                    return Err(BenchError::Input(format!(
                        "fan-out needs at least {} agents (one gatherer and {FAN_OUT_DEGREE} leaves)",
                        FAN_OUT_DEGREE + 1
                    )));
                }
                let gatherers = numbered("fanout", (agents / (FAN_OUT_DEGREE + 1)).max(1));
                let leaves = numbered("leaf", agents - gatherers.len());
                let entries = gatherers
                    .iter()
                    .enumerate()
                    .map(|(index, name)| {
                        let chosen: Vec<&str> = (0..FAN_OUT_DEGREE)
                            .map(|k| leaves[(index * FAN_OUT_DEGREE + k) % leaves.len()].as_str())
                            .collect();
                        (name.clone(), name_route(&chosen, &[]))
                    })
                    .collect();
                let mut all: Vec<(String, &'static str)> = gatherers
                    .into_iter()
                    .map(|name| (name, FANOUT_WAT))
                    .collect();
                all.extend(leaves.into_iter().map(|name| (name, ECHO_WAT)));
                (all, entries)
            }
            Pattern::Pipeline => {
                let stages = numbered("stage", agents);
                let entries = (0..agents)
                    .map(|index| {
                        let route: Vec<&str> = (1..=PIPELINE_HOPS)
                            .map(|hop| stages[(index + hop) % agents].as_str())
                            .collect();
                        (stages[index].clone(), name_route(&route, PAYLOAD))
                    })
                    .collect();
                (
                    stages
                        .into_iter()
                        .map(|name| (name, FORWARDER_WAT))
                        .collect(),
                    entries,
                )
            }
        };
        Ok(Self {
            pattern,
            agents,
            entries,
        })
    }

    /// The performative messages are sent with.
    pub fn performative(&self) -> Performative {
        match self.pattern {
            Pattern::OneWay => Performative::Inform,
            _ => Performative::Request,
        }
    }
}

/// How hard and how long.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Messages per second, all generators together.
    pub rate: f64,
    /// How long messages are offered.
    pub duration: Duration,
    /// How long to wait for answers after the last send.
    pub drain: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Load generator threads (`--generators`). `None`: on a node, one for
    /// each CPU no data shard runs on, at most one per data shard and at
    /// least one ([`default_generators`]); on the baseline, one per worker.
    /// A comparison resolves it once and gives both designs the same number.
    pub generators: Option<usize>,
}

/// What one design did under one load.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    /// `caxton` or `baseline`.
    pub design: String,
    /// The offered rate.
    pub offered_per_second: f64,
    /// Answers (or, one-way, deliveries) per second over the offered duration.
    pub achieved_per_second: f64,
    /// Counts; they add up: scheduled = sent + refused, sent = answered + failed + timed_out.
    pub counts: Counts,
    /// Latency from intended send time: P50, P90, P99, P99.9, max (ns).
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// How late the generators sent: the P99 and the largest lag of a
    /// message's send behind its schedule (ns; `None` where unmeasured).
    /// The latency figures include it: a high one means the generators, not
    /// the system measured, made part of the tail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_late_p99_ns: Option<u64>,
    /// The largest lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_late_max_ns: Option<u64>,
    /// Where the load generators ran, in words (empty for a load through
    /// `--target`, whose generators are this process's concern only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub generators: String,
    /// Why the node answered `failure` during the run, from its shards'
    /// counters (Caxton runs only; empty when nothing failed): (cause, count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_causes: Vec<(String, u64)>,
    /// The latency histogram.
    #[serde(skip)]
    pub latency: Histogram<u64>,
}

/// [`RunCounts`], serializable.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Messages the schedule called for.
    pub scheduled: u64,
    /// Accepted.
    pub sent: u64,
    /// Refused at once.
    pub refused: u64,
    /// Answered (one-way: handled).
    pub answered: u64,
    /// Answered with a failure.
    pub failed: u64,
    /// No answer within the drain.
    pub timed_out: u64,
}

impl From<&RunCounts> for Counts {
    fn from(counts: &RunCounts) -> Self {
        Self {
            scheduled: counts.scheduled,
            sent: counts.sent,
            refused: counts.refused,
            answered: counts.answered,
            failed: counts.failed,
            timed_out: counts.timed_out,
        }
    }
}

impl LoadResult {
    /// A result from its parts.
    pub fn new(
        design: &str,
        options: &LoadOptions,
        counts: &RunCounts,
        latency: Histogram<u64>,
    ) -> Self {
        Self {
            design: design.to_owned(),
            offered_per_second: options.rate,
            achieved_per_second: counts.answered as f64 / options.duration.as_secs_f64(),
            counts: counts.into(),
            p50_ns: latency.value_at_quantile(0.5),
            p90_ns: latency.value_at_quantile(0.9),
            p99_ns: latency.value_at_quantile(0.99),
            p999_ns: latency.value_at_quantile(0.999),
            max_ns: latency.max(),
            sent_late_p99_ns: None,
            sent_late_max_ns: None,
            generators: String::new(),
            failure_causes: Vec::new(),
            latency,
        }
    }

    /// A result from what the generators did.
    pub fn generated(design: &str, options: &LoadOptions, generated: GeneratorResult) -> Self {
        let mut result = Self::new(design, options, &generated.counts, generated.latency);
        if !generated.lateness.is_empty() {
            result.sent_late_p99_ns = Some(generated.lateness.value_at_quantile(0.99));
            result.sent_late_max_ns = Some(generated.lateness.max());
        }
        result
    }

    /// What the shards counted during the run, as causes of failures.
    fn with_failure_causes(mut self, shards: &[caxton_shards::ShardMetrics]) -> Self {
        let sum = |count: fn(&caxton_shards::ShardMetrics) -> u64| -> u64 {
            shards.iter().map(count).sum()
        };
        let causes = [
            (
                "refused: a full mailbox or ring",
                sum(|shard| shard.refused),
            ),
            ("deadline passed", sum(|shard| shard.timeouts)),
            ("handler faults", sum(|shard| shard.faults)),
            ("handler failures", sum(|shard| shard.agent_failures)),
            ("unknown receiver", sum(|shard| shard.unknown_receiver)),
            ("storage", sum(|shard| shard.storage_failures)),
        ];
        if self.counts.failed > 0 {
            self.failure_causes = causes
                .into_iter()
                .filter(|(_, count)| *count > 0)
                .map(|(cause, count)| (cause.to_owned(), count))
                .collect();
        }
        self
    }

    /// Refusals, failures and timeouts as a share of what was scheduled.
    pub fn error_ratio(&self) -> f64 {
        let counts = &self.counts;
        if counts.scheduled == 0 {
            0.0
        } else {
            (counts.refused + counts.failed + counts.timed_out) as f64 / counts.scheduled as f64
        }
    }
}

/// A port into a Caxton node: one client, its share of the entries.
struct NodePort {
    client: Client,
    entries: Arc<Vec<(AgentId, Vec<u8>)>>,
    performative: Performative,
    /// This generator's index and how many there are: sequence `s` goes to
    /// entry `(s * generators + index) % entries`.
    index: u64,
    generators: u64,
    /// The answers of one poll (kept to reuse its allocation).
    answers: Vec<Envelope>,
}

impl Port for NodePort {
    fn now_ns(&self) -> u64 {
        self.client.now_ns()
    }

    fn submit(&mut self, message: Outgoing) -> Result<(), Refused> {
        let slot = (message.sequence * self.generators + self.index) % self.entries.len() as u64;
        let (agent, content) = &self.entries[slot as usize];
        let options = SendOptions {
            conversation_id: message.sequence,
            ..SendOptions::default()
        };
        // Sent at the intended time: shard-side routing latency then counts
        // the generator's own lag and queueing too.
        let (_, envelope) = self.client.request_envelope_at(
            message.intended_ns,
            *agent,
            self.performative,
            content.clone(),
            options,
            Durability::Transient,
        );
        self.client.send_envelope(envelope).map_err(|_| Refused)
    }

    fn poll(&mut self, wait: Duration, sink: &mut dyn FnMut(Completion)) {
        // One pass over the client's rings takes every answer there, and
        // one clock reading after it times them all: each was in by then.
        // A reading per answer would add the time spent recording the
        // answers before it to its latency.
        if self.client.recv_batch(wait, &mut self.answers) == 0 {
            return;
        }
        let at_ns = self.client.now_ns();
        for envelope in self.answers.drain(..) {
            let outcome = if envelope.performative == Performative::Inform {
                Outcome::Answered
            } else {
                Outcome::Failed
            };
            sink(Completion {
                sequence: envelope.conversation_id,
                outcome,
                at_ns,
            });
        }
    }

    fn expects_answers(&self) -> bool {
        self.performative != Performative::Inform
    }
}

/// The flags a load's agents and rate came from, for errors that name them.
#[derive(Clone, Copy, Debug)]
pub struct LoadFlags {
    /// The agents' flag (`--agents`, or `--max-agents` of a ramp).
    pub agents: &'static str,
    /// The rate's flag (`--messages-per-second`, or what sets a ramp's rate).
    pub rate: &'static str,
}

impl LoadFlags {
    /// `benchmark custom`'s flags.
    pub const CUSTOM: Self = Self {
        agents: "--agents",
        rate: "--messages-per-second",
    };
}

/// Check a load against the profile before anything starts; `flags` name
/// where its agents and rate came from.
pub fn check_load(
    profile: &Profile,
    agents: usize,
    options: &LoadOptions,
    flags: LoadFlags,
) -> Result<(), BenchError> {
    let max_agents = profile.runtime.max_agents as usize;
    if agents == 0 || agents > max_agents {
        return Err(BenchError::Input(format!(
            "{} {agents} is outside 1..={max_agents} (runtime.max_agents of the profile)",
            flags.agents
        )));
    }
    if !is_offerable_rate(options.rate) {
        return Err(BenchError::Input(format!(
            "{} {} is outside 1..={RATE_MAX}",
            flags.rate, options.rate
        )));
    }
    if options.duration < Duration::from_millis(100) || options.duration > DURATION_MAX {
        return Err(BenchError::Input(format!(
            "--duration {:?} is outside 100ms..={}h",
            options.duration,
            DURATION_MAX.as_secs() / 3600
        )));
    }
    Ok(())
}

/// Whether a benchmark can offer `rate` messages per second: 1 to [`RATE_MAX`].
pub fn is_offerable_rate(rate: f64) -> bool {
    rate.is_finite() && (1.0..=RATE_MAX).contains(&rate)
}

/// The highest rate a benchmark offers.
pub const RATE_MAX: f64 = 50_000_000.0;
/// The longest a benchmark runs.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// Deploy `workload` on `node`, one instance per agent.
pub fn deploy_workload(
    node: &mut Node,
    profile: &Profile,
    workload: &Workload,
) -> Result<Vec<(AgentId, Vec<u8>)>, BenchError> {
    for (name, wat) in &workload.agents {
        if node.directory().resolve(name).is_none() {
            node.deploy(name, wat.as_bytes(), 1, &profile.agent_limits(name))?;
        }
    }
    let directory = node.directory();
    workload
        .entries
        .iter()
        .map(|(name, content)| {
            directory
                .resolve(name)
                .map(|id| (id, content.clone()))
                .ok_or_else(|| BenchError::Run(format!("agent `{name}` vanished")))
        })
        .collect()
}

/// Run `workload` (already deployed: `entries`) on `node` under `options`.
pub fn run_on_node(
    node: &Node,
    workload: &Workload,
    entries: Vec<(AgentId, Vec<u8>)>,
    options: &LoadOptions,
    label: &str,
) -> Result<LoadResult, BenchError> {
    let generators = generators_for(node, options.generators)?;
    let entries = Arc::new(entries);
    let one_way = workload.pattern == Pattern::OneWay;
    // Start from empty shard metrics: one-way reads the shards' counts and
    // routing histograms afterwards.
    node.metrics(true)?;
    let mut ports = Vec::with_capacity(generators);
    for index in 0..generators {
        ports.push(NodePort {
            client: node.client()?,
            entries: Arc::clone(&entries),
            performative: workload.performative(),
            index: index as u64,
            generators: generators as u64,
            answers: Vec::new(),
        });
    }
    // Pinned off the shards only when every generator (at least one) has a
    // CPU of its own there: crowded onto fewer, they would wait for each
    // other rather than load the node, and the breaking point found would
    // be theirs (15 generators on the one core 15 data shards leave on 16
    // cores sustained under 1M/s, with the node idle).
    let free = cpus_off_the_data_shards(node);
    let cpus = (free.len() >= generators).then_some(free);
    let placement = match &cpus {
        Some(cpus) => format!(
            "{generators} load generator(s) on CPUs {}, off the data shards",
            caxton_numa::format_index_list(cpus)
        ),
        None => format!(
            "{generators} load generator(s) placed by the kernel, on the data shards' CPUs too (fewer CPUs than generators are free of the shards)"
        ),
    };
    let mut generated = run_generators(label, ports, options, cpus)?;
    if one_way {
        // Nothing answers: deliveries are the shards' handled count, latency
        // their routing histogram (stamped with the intended send time).
        let until = Instant::now() + options.drain;
        let mut delivered = nanosecond_histogram();
        let mut handled = 0;
        loop {
            for shard in node.metrics(true)? {
                handled += shard.handled;
                let _ = delivered.add(&shard.routing_local_ns);
                let _ = delivered.add(&shard.routing_cross_ns);
            }
            if handled >= generated.counts.sent || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let counts = &mut generated.counts;
        counts.answered = handled.min(counts.sent);
        counts.timed_out = counts.sent - counts.answered;
        generated.latency = delivered;
    }
    let shards = node.metrics(false)?;
    let mut result =
        LoadResult::generated("caxton", options, generated).with_failure_causes(&shards);
    result.generators = placement;
    Ok(result)
}

/// Run one open-loop generator per port, each on its own thread (on `cpus`
/// when given) with its share of the rate, show their progress as `label`,
/// and add up what they did.
pub fn run_generators<P: Port + Send + 'static>(
    label: &str,
    ports: Vec<P>,
    options: &LoadOptions,
    cpus: Option<Vec<usize>>,
) -> Result<GeneratorResult, BenchError> {
    let generators = ports.len().max(1);
    let (progress_sender, progress) = mpsc::channel();
    let mut threads = Vec::with_capacity(generators);
    for (index, mut port) in ports.into_iter().enumerate() {
        let cpus = cpus.clone();
        let sender = progress_sender.clone();
        let options = options.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("{label}-load-{index}"))
                .spawn(move || {
                    if let Some(cpus) = cpus {
                        // Best effort: an unpinned generator still measures correctly.
                        let _ = caxton_numa::binding::bind_current_thread(
                            &caxton_numa::CpuBinding::Pus(cpus),
                        );
                    }
                    load::run_open_loop(
                        &mut port,
                        options.rate / generators as f64,
                        load::share_of_schedule(options.rate, options.duration, generators, index),
                        options.drain,
                        Some(&sender),
                    )
                })
                .map_err(|error| BenchError::Run(format!("cannot start a generator: {error}")))?,
        );
    }
    drop(progress_sender);
    show_progress(label, options, progress);
    load::join_generators(threads).map_err(BenchError::Run)
}

/// How many load generators a run starts unless told: one for each CPU no
/// data shard runs on (`free_cpus`), at most one per data shard, at least
/// one. One generator drives every shard through its client port, so a
/// generator needs no shard of its own; what it needs is a CPU of its own:
/// generators that outnumber the free CPUs take turns on them, or on the
/// shards' cores, and a run's breaking point is then theirs.
pub fn default_generators(data_shards: usize, free_cpus: usize) -> usize {
    free_cpus.min(data_shards).max(1)
}

/// The number of generators `node` starts for `requested` (`--generators`),
/// what a comparison hands the baseline so both designs get the same; an
/// input error past what the node has client ports for (each generator
/// takes one, and one is kept for the caller).
pub fn generators_for(node: &Node, requested: Option<usize>) -> Result<usize, BenchError> {
    let generators = requested.unwrap_or_else(|| {
        default_generators(node.data_shards(), cpus_off_the_data_shards(node).len())
    });
    let most = node.client_ports().saturating_sub(1).max(1);
    if !(1..=most).contains(&generators) {
        return Err(BenchError::Input(format!(
            "--generators {generators} is outside 1..={most}: each generator takes a client port, and runtime.client_ports less one are free"
        )));
    }
    Ok(generators)
}

/// The CPUs this process may use that no data shard runs on: where load
/// generators go, so they never take a shard's core from it (empty when
/// there are none, or the process's CPUs cannot be read).
fn cpus_off_the_data_shards(node: &Node) -> Vec<usize> {
    let shard_cpus: Vec<usize> = node
        .reports()
        .iter()
        .filter(|report| matches!(report.role, caxton_shards::ShardRole::Data(_)))
        .flat_map(|report| report.allowed_pus.iter().copied())
        .collect();
    caxton_numa::binding::current_thread_pus()
        .unwrap_or_default()
        .into_iter()
        .filter(|pu| !shard_cpus.contains(pu))
        .collect()
}

/// Draw a progress bar from the generators' reports until they all finish.
pub fn show_progress(label: &str, options: &LoadOptions, reports: mpsc::Receiver<Progress>) {
    let bar = if options.progress {
        indicatif::ProgressBar::new(options.duration.as_millis() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_owned());
    let started = Instant::now();
    let mut running = nanosecond_histogram();
    let mut window_started = Instant::now();
    let mut window_completed = 0u64;
    let mut rate = 0.0;
    while let Ok(report) = reports.recv() {
        let _ = running.add(&report.latency);
        window_completed += report.completed;
        let window = window_started.elapsed();
        if window >= Duration::from_millis(500) {
            rate = window_completed as f64 / window.as_secs_f64();
            window_started = Instant::now();
            window_completed = 0;
        }
        bar.set_position(
            started
                .elapsed()
                .as_millis()
                .min(options.duration.as_millis()) as u64,
        );
        bar.set_message(format!(
            "{:.0}/s of {:.0}/s, running P99 {}",
            rate,
            options.rate,
            format_ns(running.value_at_quantile(0.99))
        ));
    }
    bar.finish_and_clear();
}

/// `ns` as a short human figure.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_unknown_ones_are_listed() {
        assert_eq!("fan-out".parse::<Pattern>(), Ok(Pattern::FanOut));
        let error = "scatter".parse::<Pattern>().expect_err("unknown");
        assert!(
            error.contains("request-reply, one-way, fan-out, pipeline"),
            "{error}"
        );
    }

    #[test]
    fn a_generator_for_each_free_cpu_at_most_one_per_shard() {
        // 1 shard on 2 cores: the other core's generator.
        assert_eq!(default_generators(1, 1), 1);
        // 8 shards on 16 cores: one generator per shard, each with a CPU.
        assert_eq!(default_generators(8, 8), 8);
        // 15 shards on 16 cores: one generator, on the core they leave,
        // instead of 15 taking turns there.
        assert_eq!(default_generators(15, 1), 1);
        // 4 shards with 12 CPUs free: no more generators than shards.
        assert_eq!(default_generators(4, 12), 4);
        // Every CPU runs a shard: still one generator.
        assert_eq!(default_generators(2, 0), 1);
    }

    #[test]
    fn the_throughput_goal_against_the_baseline_follows_the_machine() {
        let two_cores = Comparison::new(Some((1.2e6, 1.0e6)), (100, 600), 8e5, 2);
        assert_eq!(two_cores.throughput_goal, 1.15);
        assert!(two_cores.goals_met);
        let sixteen_cores = Comparison::new(Some((1.2e6, 1.0e6)), (100, 600), 8e5, 16);
        assert_eq!(sixteen_cores.throughput_goal, 2.0);
        assert!(!sixteen_cores.goals_met);
        assert!(
            !Comparison::new(Some((3e6, 1e6)), (100, 400), 8e5, 16).goals_met,
            "a P99 only 4× lower misses"
        );
        // Below saturation (custom) only the P99 is compared, and the line
        // says at which load.
        let at_load = Comparison::new(None, (100, 600), 50_000.0, 2);
        assert!(at_load.goals_met);
        let line = at_load.render();
        assert!(line.contains("6.00× lower at 50000 msg/s"), "{line}");
        assert!(!line.contains("throughput"), "{line}");
        assert!(two_cores
            .render()
            .contains("throughput at the breaking points 1.20×"));
    }

    /// A throughput ratio is a ratio of breaking points: a design that
    /// never broke only bounds it, and neither breaking leaves it unjudged.
    #[test]
    fn a_ramp_that_never_broke_bounds_the_throughput_ratio_or_leaves_it_unjudged() {
        let ramps = |caxton: (f64, bool), baseline: (f64, bool)| {
            Comparison::new(Saturation::Ramps { caxton, baseline }, (100, 600), 8e5, 2)
        };
        let neither = ramps((8e5, false), (8e5, false));
        assert_eq!(neither.throughput_ratio, None);
        assert!(!neither.goals_met, "nothing reached saturation");
        let line = neither.render();
        assert!(
            line.contains("throughput not judged (neither design broke"),
            "{line}"
        );
        assert!(
            line.contains("P99 goal met, throughput not judged"),
            "{line}"
        );

        // Caxton carried the ramp's top, the baseline broke below it.
        let at_least = ramps((8e5, false), (4e5, true));
        assert_eq!(at_least.throughput_ratio_kind, Some(RatioKind::AtLeast));
        assert!(at_least.goals_met, "at least 2× is past 1.15×");
        assert!(at_least.render().contains("throughput at least 2.00×"));
        // A lower bound under the goal says nothing of the goal.
        let low_bound = ramps((4.2e5, false), (4e5, true));
        assert!(!low_bound.goals_met);
        assert!(low_bound.throughput_not_judged.is_some());

        // Caxton broke below the baseline's top: at most 0.5×, so missed.
        let at_most = ramps((4e5, true), (8e5, false));
        assert_eq!(at_most.throughput_ratio_kind, Some(RatioKind::AtMost));
        assert!(!at_most.goals_met);
        assert_eq!(at_most.throughput_not_judged, None, "judged: missed");
        assert!(at_most.render().contains("goals not met"));

        // Rounds: measured ratios win; bounds from mixed sides judge nothing.
        let median = Comparison::median_of(&[at_most.clone(), ramps((1.5e6, true), (1e6, true))])
            .expect("two rounds");
        assert_eq!(median.throughput_ratio, Some(1.5));
        assert_eq!(median.throughput_ratio_kind, Some(RatioKind::Measured));
        let mixed = Comparison::median_of(&[at_most, at_least]).expect("two rounds");
        assert_eq!(mixed.throughput_ratio, None);
        assert!(!mixed.goals_met && mixed.throughput_not_judged.is_some());

        // A P99 higher than the baseline's is said so, not as `0.25× lower`.
        assert_eq!(times_lower(0.25), "4.00× higher");
        assert!(times_lower(0.0).starts_with("not comparable"));
        assert_eq!(times_lower(5.5), "5.50× lower");
    }

    #[test]
    fn rounds_are_judged_on_their_median_ratios() {
        // Throughput ratios 0.8, 1.25, 3.0 and P99 ratios 1.2, 5.5, 30:
        // one lucky round meets both goals, the median misses neither by luck.
        let rounds = [
            Comparison::new(Some((0.8e6, 1.0e6)), (500, 600), 6e5, 2),
            Comparison::new(Some((1.25e6, 1.0e6)), (100, 550), 8e5, 2),
            Comparison::new(Some((3.0e6, 1.0e6)), (100, 3000), 9e5, 2),
        ];
        assert!(rounds[2].goals_met && !rounds[0].goals_met);
        let median = Comparison::median_of(&rounds).expect("three rounds");
        assert_eq!(median.rounds, 3);
        assert_eq!(median.throughput_ratio, Some(1.25));
        assert_eq!(median.p99_ratio, 5.5);
        assert_eq!(median.p99_offered_per_second, 8e5);
        assert!(median.goals_met, "1.25× ≥ 1.15× and 5.5× ≥ 5×");
        let line = median.render();
        assert!(
            line.starts_with("caxton/baseline, median of 3 rounds: "),
            "{line}"
        );
        // An even count takes the mean of the middle two.
        let two = Comparison::median_of(&rounds[..2]).expect("two rounds");
        assert_eq!(two.throughput_ratio, Some((0.8 + 1.25) / 2.0));
        assert!(!two.goals_met);
        assert!(Comparison::median_of(&[]).is_none());
    }

    #[test]
    fn every_round_is_listed_with_its_breaking_points_one_without_a_comparison_too() {
        let point = |design: &str, sustained: Option<f64>| crate::stress::BreakingPoint {
            design: design.into(),
            sustained_per_second: sustained,
            agents: sustained.map(|_| 10),
            p50_ns: sustained.map(|_| 1_000),
            p99_ns: sustained.map(|_| 20_000),
            p999_ns: sustained.map(|_| 900_000),
            broke_at_per_second: Some(sustained.unwrap_or(300_000.0) * 1.25),
            reason: Some("0.2% of messages were refused".into()),
        };
        let compared = Comparison::new(Some((2.0e6, 1.0e6)), (100, 600), 8e5, 2);
        let summary = LoadSummary {
            benchmark: "stress".into(),
            machine: "machine: test".into(),
            profile: "default".into(),
            shards: 1,
            cores: 2,
            pattern: Pattern::RequestReply,
            agents: 10,
            scenarios: Vec::new(),
            designs: Vec::new(),
            ramps: Vec::new(),
            breaking_points: Vec::new(),
            latency_at_loads: Vec::new(),
            comparison: Comparison::median_of(std::slice::from_ref(&compared)),
            rounds: vec![
                RoundSummary {
                    comparison: Some(compared.clone()),
                    breaking_points: vec![
                        point("caxton", Some(2.0e6)),
                        point("baseline", Some(1.0e6)),
                    ],
                },
                RoundSummary {
                    comparison: None,
                    breaking_points: vec![point("caxton", None), point("baseline", Some(1.0e6))],
                },
            ],
            machine_jitter: None,
        };
        let text = render_load_summary(&summary);
        let round_two = text.split("round 2: ").nth(1).expect("round 2 is listed");
        assert!(
            round_two.starts_with("no comparison (a design sustained no step of the ramp)\n"),
            "{text}"
        );
        assert!(
            round_two
                .contains("\n  caxton: no step stayed within the limits; broke at 375000 msg/s"),
            "{text}"
        );
        assert!(
            text.contains("\n  caxton: breaking point 2000000 msg/s sustained"),
            "{text}"
        );
        assert!(
            text.contains("the medians below are of the 1 of 2 rounds that compared"),
            "{text}"
        );
        // A design that never broke is given no breaking point.
        let never = crate::stress::BreakingPoint {
            broke_at_per_second: None,
            reason: None,
            ..point("caxton", Some(3375.0))
        };
        assert_eq!(
            breaking_point_line(&never),
            "caxton: every step, up to 3375 msg/s sustained (P50 1000 ns, P99 20.0 µs, P99.9 900.0 µs); never broke within the ramp (no breaking point: raise --start-rate, --growth or --steps)\n"
        );
    }

    #[test]
    fn failures_are_explained_by_what_the_shards_counted() {
        let options = LoadOptions {
            rate: 1000.0,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            progress: false,
            generators: None,
        };
        let counts = RunCounts {
            scheduled: 100,
            sent: 100,
            answered: 93,
            failed: 7,
            ..RunCounts::default()
        };
        let shards = [
            caxton_shards::ShardMetrics {
                refused: 5,
                ..Default::default()
            },
            caxton_shards::ShardMetrics {
                refused: 1,
                timeouts: 1,
                ..Default::default()
            },
        ];
        let result = LoadResult::new("caxton", &options, &counts, nanosecond_histogram())
            .with_failure_causes(&shards);
        assert_eq!(
            result.failure_causes,
            [
                ("refused: a full mailbox or ring".to_owned(), 6),
                ("deadline passed".to_owned(), 1)
            ]
        );
        assert_eq!(
            failure_causes_line("caxton #3", &result),
            "caxton #3: 7 failed; the shards counted refused: a full mailbox or ring 6, deadline passed 1\n"
        );
        // Nothing failed: no causes, whatever the counters say.
        let clean = RunCounts {
            failed: 0,
            answered: 100,
            ..counts
        };
        let result = LoadResult::new("caxton", &options, &clean, nanosecond_histogram())
            .with_failure_causes(&shards);
        assert!(result.failure_causes.is_empty());
        // Failures the shards did not count were the agents' own answers.
        let by_agents = RunCounts {
            failed: 9,
            ..counts
        };
        let result = LoadResult::new("caxton", &options, &by_agents, nanosecond_histogram())
            .with_failure_causes(&shards);
        let line = failure_causes_line("caxton", &result);
        assert!(
            line.starts_with("caxton: 9 failed; the shards counted")
                && line.contains("; 2 answered `failure` by the agents themselves"),
            "{line}"
        );
    }

    #[test]
    fn workloads_address_what_they_deploy() {
        let fan_out = Workload::new(Pattern::FanOut, 10, None).expect("fan-out");
        assert_eq!(fan_out.agents.len(), 10);
        assert_eq!(fan_out.entries.len(), 2);
        assert_eq!(fan_out.entries[0].1[0] as usize, FAN_OUT_DEGREE);
        assert!(Workload::new(Pattern::FanOut, 4, None).is_err());
        let pipeline = Workload::new(Pattern::Pipeline, 2, None).expect("pipeline");
        assert_eq!(pipeline.entries[0].1[0] as usize, PIPELINE_HOPS);
        assert!(Workload::new(Pattern::OneWay, 0, None).is_err());
    }
}

/// What two ramps say of the designs' throughput at saturation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Saturation {
    /// No throughput compared: one run at one load (`custom`).
    NotMeasured,
    /// Each design's highest sustained rate, and whether it then broke
    /// within its ramp (one that did not was never saturated: its rate is
    /// the ramp's top, not its limit).
    Ramps {
        /// Caxton's (sustained msg/s, broke).
        caxton: (f64, bool),
        /// The baseline's.
        baseline: (f64, bool),
    },
}

/// Rates at two breaking points: both designs broke.
impl From<Option<(f64, f64)>> for Saturation {
    fn from(rates: Option<(f64, f64)>) -> Self {
        match rates {
            Some((caxton, baseline)) => Saturation::Ramps {
                caxton: (caxton, true),
                baseline: (baseline, true),
            },
            None => Saturation::NotMeasured,
        }
    }
}

/// How far a throughput ratio is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioKind {
    /// Both designs broke: the ratio of their breaking points.
    Measured,
    /// The baseline broke and Caxton did not: Caxton carries at least this.
    AtLeast,
    /// Caxton broke and the baseline did not: at most this.
    AtMost,
}

/// Caxton against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Caxton's sustained rate at its breaking point over the baseline's
    /// (stress only: below saturation both designs carry what is offered, so
    /// a throughput ratio means something only at the breaking points).
    /// Where only one design broke, a bound ([`Self::throughput_ratio_kind`]).
    pub throughput_ratio: Option<f64>,
    /// Whether [`Self::throughput_ratio`] is measured or a bound.
    pub throughput_ratio_kind: Option<RatioKind>,
    /// Why a stress comparison gives no throughput verdict (neither design
    /// broke within its ramp, or a bound on the wrong side of the goal).
    pub throughput_not_judged: Option<String>,
    /// The baseline's P99 over Caxton's at the same offered load (higher is
    /// better for Caxton).
    pub p99_ratio: f64,
    /// That load, messages per second offered to each design.
    pub p99_offered_per_second: f64,
    /// The throughput goal on this machine ([`throughput_goal`]).
    pub throughput_goal: f64,
    /// Where that goal applies, in words.
    pub throughput_goal_applies: &'static str,
    /// The goals measured: throughput ≥ [`Self::throughput_goal`] (when
    /// measured) and P99 ≥ [`P99_GOAL`]× lower. False while the throughput
    /// is not judged ([`Self::throughput_not_judged`]).
    pub goals_met: bool,
    /// The rounds these ratios are the medians of (1: a single comparison).
    pub rounds: usize,
}

/// The P99 goal against the baseline: at least this many times lower.
pub const P99_GOAL: f64 = 5.0;

/// The throughput goal against the baseline at saturation on a machine of
/// `cores` cores: (ratio, where it applies). One shard on the 2-core
/// machine, where the bare thread-per-core and tokio loops differ by 1.15×;
/// 15 shards on the 16-core machine, where they differ by 2.14×.
pub fn throughput_goal(cores: usize) -> (f64, &'static str) {
    if cores <= 2 {
        (1.15, "machines of 2 cores or fewer, set for 1 shard on 2")
    } else {
        (
            2.0,
            "machines of more than 2 cores, set for 15 shards on 16",
        )
    }
}

impl Comparison {
    /// From the two designs' P99s at one offered load and, where measured
    /// (stress), their sustained rates at saturation; on a machine of
    /// `cores` cores.
    pub fn new(
        saturation: impl Into<Saturation>,
        p99s_ns: (u64, u64),
        p99_offered_per_second: f64,
        cores: usize,
    ) -> Self {
        let (throughput_ratio, throughput_ratio_kind, unjudged) = match saturation.into() {
            Saturation::NotMeasured => (None, None, None),
            Saturation::Ramps {
                caxton: (caxton, caxton_broke),
                baseline: (baseline, baseline_broke),
            } => {
                let ratio = caxton / baseline.max(f64::MIN_POSITIVE);
                match (caxton_broke, baseline_broke) {
                    (true, true) => (Some(ratio), Some(RatioKind::Measured), None),
                    (false, true) => (Some(ratio), Some(RatioKind::AtLeast), None),
                    (true, false) => (Some(ratio), Some(RatioKind::AtMost), None),
                    (false, false) => (None, None, Some(NEITHER_BROKE.to_owned())),
                }
            }
        };
        let (caxton_p99, baseline_p99) = p99s_ns;
        let p99_ratio = baseline_p99 as f64 / caxton_p99.max(1) as f64;
        let (throughput_goal, throughput_goal_applies) = throughput_goal(cores);
        Self::judged(Self {
            throughput_ratio,
            throughput_ratio_kind,
            throughput_not_judged: unjudged,
            p99_ratio,
            p99_offered_per_second,
            throughput_goal,
            throughput_goal_applies,
            goals_met: false,
            rounds: 1,
        })
    }

    /// `self` with its verdicts: a bound judges the throughput goal only
    /// from the side it bounds.
    fn judged(mut self) -> Self {
        let goal = self.throughput_goal;
        let throughput_met = match (self.throughput_ratio, self.throughput_ratio_kind) {
            (Some(ratio), Some(RatioKind::Measured)) => Some(ratio >= goal),
            (Some(ratio), Some(RatioKind::AtLeast)) if ratio >= goal => Some(true),
            (Some(ratio), Some(RatioKind::AtMost)) if ratio < goal => Some(false),
            (Some(ratio), Some(RatioKind::AtLeast)) => {
                self.throughput_not_judged = Some(format!("Caxton never broke within its ramp, so {ratio:.2}× is only a lower bound, below the goal: raise the ramp (--steps, --growth) until Caxton breaks too"));
                None
            }
            (Some(ratio), Some(RatioKind::AtMost)) => {
                self.throughput_not_judged = Some(format!("the baseline never broke within its ramp, so {ratio:.2}× is only an upper bound: raise the ramp (--steps, --growth) until the baseline breaks too"));
                None
            }
            // Not measured (custom): only the P99 goal applies.
            _ if self.throughput_not_judged.is_none() => Some(true),
            _ => None,
        };
        self.goals_met = throughput_met == Some(true) && self.p99_ratio >= P99_GOAL;
        self
    }

    /// The median of `rounds` (each its own comparison, at its own loads):
    /// each ratio's median, the goals judged on those. Measured throughput
    /// ratios where any round measured one; otherwise bounds, where every
    /// round bounded it from one side. `None` for no rounds.
    pub fn median_of(rounds: &[Comparison]) -> Option<Self> {
        let first = rounds.first()?;
        let of_kind = |kind: RatioKind| {
            rounds
                .iter()
                .filter(move |round| round.throughput_ratio_kind == Some(kind))
                .filter_map(|round| round.throughput_ratio)
        };
        let bounded: Vec<Option<RatioKind>> = rounds
            .iter()
            .map(|round| round.throughput_ratio_kind)
            .collect();
        let measured_any = bounded.contains(&Some(RatioKind::Measured));
        let all = |kind| bounded.iter().all(|each| *each == Some(kind));
        let (throughput_ratio, throughput_ratio_kind) = if measured_any {
            (
                median(of_kind(RatioKind::Measured)),
                Some(RatioKind::Measured),
            )
        } else if all(RatioKind::AtLeast) {
            (
                median(of_kind(RatioKind::AtLeast)),
                Some(RatioKind::AtLeast),
            )
        } else if all(RatioKind::AtMost) {
            (median(of_kind(RatioKind::AtMost)), Some(RatioKind::AtMost))
        } else {
            (None, None)
        };
        // Stress rounds that measured nothing leave the verdict open.
        let stress = rounds.iter().any(|round| {
            round.throughput_ratio_kind.is_some() || round.throughput_not_judged.is_some()
        });
        let throughput_not_judged = (stress && throughput_ratio.is_none())
            .then(|| "no round measured the throughput at both breaking points, and the rounds' ramps bound it from different sides (or not at all)".to_owned());
        let p99_ratio = median(rounds.iter().map(|round| round.p99_ratio))?;
        let p99_offered_per_second =
            median(rounds.iter().map(|round| round.p99_offered_per_second))?;
        Some(Self::judged(Self {
            throughput_ratio,
            throughput_ratio_kind,
            throughput_not_judged,
            p99_ratio,
            p99_offered_per_second,
            throughput_goal: first.throughput_goal,
            throughput_goal_applies: first.throughput_goal_applies,
            goals_met: false,
            rounds: rounds.len(),
        }))
    }

    /// The comparison line under a results table.
    pub fn render(&self) -> String {
        let goal = format!(
            "goal ≥ {}×, {}",
            self.throughput_goal, self.throughput_goal_applies
        );
        let throughput = match (self.throughput_ratio, self.throughput_ratio_kind) {
            (Some(ratio), Some(RatioKind::AtLeast)) => format!(
                "throughput at least {ratio:.2}× (the baseline broke; Caxton did not within its ramp, so its rate is the ramp's top) ({goal}), "
            ),
            (Some(ratio), Some(RatioKind::AtMost)) => format!(
                "throughput at most {ratio:.2}× (Caxton broke; the baseline did not within its ramp, so its rate is the ramp's top) ({goal}), "
            ),
            (Some(ratio), _) => format!("throughput at the breaking points {ratio:.2}× ({goal}), "),
            (None, _) => match &self.throughput_not_judged {
                Some(why) => format!("throughput not judged ({why}), "),
                None => String::new(),
            },
        };
        let (who, load) = if self.rounds > 1 {
            (
                format!("caxton/baseline, median of {} rounds: ", self.rounds),
                "(median) offered to both in each round's own runs",
            )
        } else {
            ("caxton/baseline: ".to_owned(), "offered to both")
        };
        let p99_met = if self.p99_ratio >= P99_GOAL {
            "met"
        } else {
            "not met"
        };
        let verdict = match (&self.throughput_not_judged, self.throughput_ratio) {
            _ if self.goals_met => "goals met".to_owned(),
            // A bound on the wrong side of the goal: said here, since the
            // bound itself was printed above.
            (Some(why), Some(_)) => format!("P99 goal {p99_met}, throughput not judged: {why}"),
            (Some(_), None) => format!("P99 goal {p99_met}, throughput not judged"),
            (None, _) => "goals not met".to_owned(),
        };
        format!(
            "{who}{throughput}P99 {} at {:.0} msg/s {load} (goal ≥ {P99_GOAL}× lower): {verdict}\n",
            times_lower(self.p99_ratio),
            self.p99_offered_per_second,
        )
    }
}

/// Why a stress comparison has no throughput verdict when neither design
/// broke.
const NEITHER_BROKE: &str = "neither design broke within its ramp, so both rates are the ramp's top, not their limits: raise the ramp (--steps, --growth)";

/// A P99 ratio (baseline over Caxton) as words: `5.20× lower`, or, where
/// Caxton's is the higher, `3.10× higher` rather than `0.32× lower`.
pub fn times_lower(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{ratio:.2}× lower")
    } else if ratio > 0.0 {
        format!("{:.2}× higher", 1.0 / ratio)
    } else {
        // The baseline recorded no P99 at all: nothing to compare.
        "not comparable (the baseline recorded no P99)".to_owned()
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for none.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        count if count % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// One round of `stress --rounds`.
#[derive(Clone, Debug, Serialize)]
pub struct RoundSummary {
    /// Its comparison (its fields sit at the round's top level); `None`
    /// when a design sustained no step of it, and the median leaves it out.
    #[serde(flatten)]
    pub comparison: Option<Comparison>,
    /// Both designs' breaking points: a ratio alone does not say which
    /// design moved, or why it broke.
    pub breaking_points: Vec<crate::stress::BreakingPoint>,
}

/// What `engine benchmark custom|stress` writes to `summary.json`: the
/// standard suite's fields (`profile`, `shards`, `cores`, `scenarios`) and
/// the load's own.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSummary {
    /// `custom` or `stress`.
    pub benchmark: String,
    /// The machine, in words.
    pub machine: String,
    /// Profile layers.
    pub profile: String,
    /// Data shards (and baseline workers).
    pub shards: usize,
    /// Cores of the machine.
    pub cores: usize,
    /// The pattern.
    pub pattern: Pattern,
    /// Agents (stress: at the last step).
    pub agents: usize,
    /// One per design (custom) or per design and step (stress), named `design/...`.
    pub scenarios: Vec<crate::standard::ScenarioResult>,
    /// Each design's load result (custom).
    pub designs: Vec<LoadResult>,
    /// Each design's steps (stress).
    pub ramps: Vec<(String, Vec<crate::stress::StressStep>)>,
    /// Each design's breaking point (stress).
    pub breaking_points: Vec<crate::stress::BreakingPoint>,
    /// Both designs at shares of the lower breaking point, for their P99s
    /// (stress with `--compare baseline`).
    pub latency_at_loads: Vec<crate::stress::LatencyAtLoad>,
    /// Caxton against the baseline, with `--compare baseline`: with more
    /// than one round (`stress --rounds`), the median of [`Self::rounds`].
    pub comparison: Option<Comparison>,
    /// Each round, in order, when there were several (the tables show the
    /// last round's runs).
    pub rounds: Vec<RoundSummary>,
    /// The machine's own stalls, probed before the runs with `--compare
    /// baseline` (what no P99 compared here can go below).
    pub machine_jitter: Option<crate::jitter::MachineJitter>,
}

/// One row of a results table.
pub fn result_row(label: &str, result: &LoadResult) -> String {
    let counts = &result.counts;
    format!(
        "{label:<22} {:>11.0} {:>11.0} {:>9} {:>9} {:>7} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        result.offered_per_second,
        result.achieved_per_second,
        counts.sent,
        counts.answered,
        counts.failed,
        counts.refused,
        counts.timed_out,
        format_ns(result.p50_ns),
        format_ns(result.p90_ns),
        format_ns(result.p99_ns),
        format_ns(result.p999_ns),
        format_ns(result.max_ns),
    )
}

/// `label: N failed: cause count, ...` for a result whose node counted why.
pub fn failure_causes_line(label: &str, result: &LoadResult) -> String {
    let counted: u64 = result.failure_causes.iter().map(|(_, count)| count).sum();
    let causes: Vec<String> = result
        .failure_causes
        .iter()
        .map(|(cause, count)| format!("{cause} {count}"))
        .collect();
    let by_agents = result.counts.failed.saturating_sub(counted);
    let agents = if by_agents == 0 {
        String::new()
    } else {
        format!(
            "{}{by_agents} answered `failure` by the agents themselves (in fan-out, a gatherer still gathering refuses the next request)",
            if causes.is_empty() { "" } else { "; " }
        )
    };
    let shards = if causes.is_empty() {
        String::new()
    } else {
        format!("the shards counted {}", causes.join(", "))
    };
    format!(
        "{label}: {} failed; {shards}{agents}\n",
        result.counts.failed
    )
}

/// How far behind its schedule `result`'s generators sent, when measured:
/// that much of its latency is the generators' own.
pub fn sent_late_line(label: &str, result: &LoadResult) -> Option<String> {
    let (p99, max) = result.sent_late_p99_ns.zip(result.sent_late_max_ns)?;
    Some(format!(
        "{label}: its generators sent P99 {} behind their schedule (max {}), inside the latency above\n",
        format_ns(p99),
        format_ns(max),
    ))
}

/// Where `point`'s design broke, and why, as one line. A design that
/// never broke has no breaking point: its line says how far the ramp went.
pub fn breaking_point_line(point: &crate::stress::BreakingPoint) -> String {
    let broke = point.broke_at_per_second.zip(point.reason.as_ref());
    let mut line = match (point.sustained_per_second, point.p99_ns) {
        (Some(rate), Some(p99)) => format!(
            "{}: {} {rate:.0} msg/s sustained (P50 {}, P99 {}, P99.9 {})",
            point.design,
            if broke.is_some() {
                "breaking point"
            } else {
                "every step, up to"
            },
            format_ns(point.p50_ns.unwrap_or(0)),
            format_ns(p99),
            format_ns(point.p999_ns.unwrap_or(0)),
        ),
        _ => format!("{}: no step stayed within the limits", point.design),
    };
    match broke {
        Some((rate, reason)) => line.push_str(&format!("; broke at {rate:.0} msg/s: {reason}\n")),
        None => line.push_str(
            "; never broke within the ramp (no breaking point: raise --start-rate, --growth or --steps)\n",
        ),
    }
    line
}

/// The header of [`result_row`]'s table.
pub fn result_header() -> String {
    format!(
        "{:<22} {:>11} {:>11} {:>9} {:>9} {:>7} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "design",
        "offered/s",
        "achieved/s",
        "sent",
        "answered",
        "failed",
        "refused",
        "timed-out",
        "P50",
        "P90",
        "P99",
        "P99.9",
        "max"
    )
}

/// `summary` as text: the machine, a table, breaking points and ratios.
pub fn render_load_summary(summary: &LoadSummary) -> String {
    let mut out = format!(
        "{}\nprofile {}: {} data shard{}{}\n{} {}: {} agents\n\n",
        summary.machine,
        summary.profile,
        summary.shards,
        if summary.shards == 1 { "" } else { "s" },
        if summary.designs.len() > 1 || summary.breaking_points.len() > 1 {
            format!(
                " (baseline: tokio work-stealing runtime, {} workers)",
                summary.shards
            )
        } else {
            String::new()
        },
        summary.benchmark,
        summary.pattern.name(),
        summary.agents,
    );
    if let Some(jitter) = &summary.machine_jitter {
        out.push_str(&jitter.render());
        out.push('\n');
    }
    let first_of_each = summary.designs.iter().chain(
        summary
            .ramps
            .iter()
            .filter_map(|(_, steps)| steps.first().map(|step| &step.result)),
    );
    for result in first_of_each.filter(|result| !result.generators.is_empty()) {
        out.push_str(&format!("{}: {}\n", result.design, result.generators));
    }
    out.push_str(&result_header());
    for result in &summary.designs {
        out.push_str(&result_row(&result.design, result));
    }
    if !summary.ramps.is_empty() {
        out.push_str("(a ramp's rows: design #step agents; ✗ past the breaking point)\n");
    }
    for (design, steps) in &summary.ramps {
        for step in steps {
            let label = format!(
                "{design} #{} {}{}",
                step.step,
                step.agents,
                if step.within_limits { "" } else { " ✗" }
            );
            out.push_str(&result_row(&label, &step.result));
        }
    }
    if summary.pattern == Pattern::OneWay {
        out.push_str("one-way: informs get no answer; `answered` counts those their agents handled, `timed-out` those not handled by the end of the drain\n");
    }
    let failing = summary
        .designs
        .iter()
        .map(|result| (result.design.clone(), result))
        .chain(summary.ramps.iter().flat_map(|(design, steps)| {
            steps
                .iter()
                .map(move |step| (format!("{design} #{}", step.step), &step.result))
        }));
    // Caxton's failures the shards did not count were answered by the
    // agents themselves: said so, rather than left without a cause.
    for (label, result) in failing.filter(|(label, result)| {
        !result.failure_causes.is_empty()
            || (result.counts.failed > 0 && label.starts_with("caxton"))
    }) {
        out.push_str(&failure_causes_line(&label, result));
    }
    for result in &summary.designs {
        out.extend(sent_late_line(&result.design, result));
    }
    for point in &summary.breaking_points {
        out.push('\n');
        out.push_str(&breaking_point_line(point));
    }
    if !summary.latency_at_loads.is_empty() {
        out.push_str("\nP99 below both breaking points (same load, same agents):\n");
        out.push_str(&result_header());
        // The rows, then (under the table) how late each run's generators sent.
        let mut late_lines = String::new();
        for at in &summary.latency_at_loads {
            for result in [&at.caxton, &at.baseline] {
                let label = format!("{} @{:.0}%", result.design, at.share * 100.0);
                out.push_str(&result_row(&label, result));
                late_lines.extend(sent_late_line(&label, result));
            }
        }
        out.push_str(&late_lines);
        // The loads are shares of the lower sustained rate: a breaking
        // point only where that design broke.
        let lower = summary
            .breaking_points
            .iter()
            .filter(|point| point.sustained_per_second.is_some())
            .min_by(|a, b| {
                a.sustained_per_second
                    .unwrap_or(0.0)
                    .total_cmp(&b.sustained_per_second.unwrap_or(0.0))
            });
        let lower_point = if lower.is_some_and(|point| point.broke_at_per_second.is_none()) {
            "sustained rate (the ramp's top: that design never broke)"
        } else {
            "breaking point"
        };
        for at in &summary.latency_at_loads {
            out.push_str(&format!(
                "at {:.0}% of the lower {} ({:.0} msg/s, {} agents): P99 {} against the baseline's {}, {}\n",
                at.share * 100.0,
                lower_point,
                at.offered_per_second,
                at.agents,
                format_ns(at.caxton.p99_ns),
                format_ns(at.baseline.p99_ns),
                times_lower(at.p99_ratio),
            ));
        }
    }
    if summary.rounds.len() > 1 {
        out.push_str(&format!(
            "\n{} rounds, the designs taking turns (the tables above are the last round's):\n",
            summary.rounds.len()
        ));
        for (index, round) in summary.rounds.iter().enumerate() {
            match &round.comparison {
                Some(comparison) => {
                    out.push_str(&format!("round {}: {}", index + 1, comparison.render()))
                }
                None => out.push_str(&format!(
                    "round {}: no comparison (a design sustained no step of the ramp)\n",
                    index + 1
                )),
            }
            for point in &round.breaking_points {
                out.push_str(&format!("  {}", breaking_point_line(point)));
            }
        }
        let compared = summary
            .rounds
            .iter()
            .filter(|round| round.comparison.is_some())
            .count();
        if compared < summary.rounds.len() {
            out.push_str(&format!(
                "the medians below are of the {compared} of {} rounds that compared\n",
                summary.rounds.len()
            ));
        }
    }
    if let Some(comparison) = &summary.comparison {
        out.push('\n');
        out.push_str(&comparison.render());
    }
    out
}
