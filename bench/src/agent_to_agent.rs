//! Agent-to-agent request-reply with no client in the loop:
//! `agent_to_agent_local` and `agent_to_agent_cross`.
//!
//! Every data shard hosts a driver agent (`examples/agents/driver.wat`) that
//! keeps a window of requests outstanding to an echo agent, on the same
//! shard (local) or on the next one (cross: shard `i` drives echo on shard
//! `(i + 1) % n`). One client message starts each driver and its answer ends
//! the run (a second one ends it if answers went missing); everything
//! between goes through the node's router, mailboxes, rings and agent host. Throughput is each driver's own count of answered
//! requests over its own run time (node clock); latency is the shards' own
//! histograms: routing (the sender's handler end to the receiver's handler
//! start) and processing (handler run time).
//!
//! The same pairs run on the baseline design ([`crate::baseline::run_seeded`])
//! with as many workers as pairs, each hop timed the same way. The baseline
//! has no shards, so its local and cross runs would be the same: it runs once.

use std::collections::HashMap;
use std::time::Duration;

use caxton_messaging::{Durability, Performative};
use caxton_numa::PlacementPlan;
use caxton_profiles::{AgentLimits, HumanDuration, Profile};
use caxton_shards::{Node, SendOptions, ShardMetrics};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::nanosecond_histogram;
use crate::standard::{ScenarioResult, SuiteError, ECHO_WAT};

/// The driver agent, as shipped in `examples/agents/driver.wat`.
pub const DRIVER_WAT: &str = include_str!("../../examples/agents/driver.wat");

/// The most requests a driver keeps outstanding: the ABI's sends per handler call.
pub const WINDOW_MAX: u32 = 1024;

/// How long a request of a run bounded only by its count may take, at
/// most, before the run is ended: far above a round trip between parked
/// shards on a loaded VM (tens of µs), so only a run that stalls is ended.
const PER_REQUEST_ALLOWANCE: Duration = Duration::from_millis(1);

/// How long to wait for the drivers' reports past their run time (the last
/// window drains, a descheduled shard catches up), and again after asking
/// the drivers still running to stop.
const GRACE: Duration = Duration::from_secs(5);

/// Where each pair's echo runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// On its driver's shard.
    Local,
    /// On the next shard: shard `i` drives echo on shard `(i + 1) % n`.
    Cross,
}

impl Layout {
    /// Both layouts, in run order.
    pub const ALL: [Layout; 2] = [Layout::Local, Layout::Cross];

    /// The scenario's name.
    pub fn scenario(self) -> &'static str {
        match self {
            Self::Local => "agent_to_agent_local",
            Self::Cross => "agent_to_agent_cross",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Cross => "cross",
        }
    }

    /// The shard of the echo driven from `shard`, of `shards`.
    pub fn echo_shard(self, shard: usize, shards: usize) -> usize {
        match self {
            Self::Local => shard,
            Self::Cross => (shard + 1) % shards.max(1),
        }
    }

    /// Why this layout cannot run on `shards` data shards, if it cannot.
    pub fn skip_reason(self, shards: usize) -> Option<String> {
        (self == Self::Cross && shards < 2).then(|| {
            format!(
                "{}: needs at least 2 data shards (set runtime.worker_threads)",
                self.scenario()
            )
        })
    }
}

/// How long and how hard each driver runs.
#[derive(Clone, Debug)]
pub struct PairOptions {
    /// How long each driver keeps sending (zero: no time limit).
    pub duration: Duration,
    /// Requests each driver sends at most (0: no count limit).
    pub requests: u64,
    /// Requests each driver keeps outstanding, 1 to [`WINDOW_MAX`].
    pub window: u32,
}

impl PairOptions {
    /// Requests outstanding per driver unless told otherwise: enough that a
    /// shard always has work queued, well inside every mailbox and ring bound.
    pub const DEFAULT_WINDOW: u32 = 64;

    /// Runs of `duration` with the default window.
    pub fn for_duration(duration: Duration) -> Self {
        Self {
            duration,
            requests: 0,
            window: Self::DEFAULT_WINDOW,
        }
    }

    /// Refuse options a driver would refuse.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=WINDOW_MAX).contains(&self.window) {
            return Err(format!(
                "--window {} is outside 1..={WINDOW_MAX} (the sends one handler call may make)",
                self.window
            ));
        }
        if self.duration.is_zero() && self.requests == 0 {
            return Err("an agent-to-agent run needs a duration or a request count".into());
        }
        Ok(())
    }

    /// The start message for a driver loading agent `echo`.
    pub fn start_content(&self, echo: &str) -> Vec<u8> {
        let mut content = Vec::with_capacity(20 + echo.len());
        let nanos = u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX);
        content.extend_from_slice(&nanos.to_le_bytes());
        content.extend_from_slice(&self.requests.to_le_bytes());
        content.extend_from_slice(&self.window.to_le_bytes());
        content.extend_from_slice(echo.as_bytes());
        content
    }

    /// How long to wait for every driver's report before asking it to stop:
    /// its run time, and for a run bounded by a count (no run time), up to
    /// [`PER_REQUEST_ALLOWANCE`] a request, then [`GRACE`].
    pub(crate) fn wait(&self) -> Duration {
        let counted = if self.duration.is_zero() {
            PER_REQUEST_ALLOWANCE.saturating_mul(u32::try_from(self.requests).unwrap_or(u32::MAX))
        } else {
            Duration::ZERO
        };
        self.duration + counted + GRACE
    }
}

/// What a driver answers at the end of its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DriverReport {
    /// Requests answered with `inform`.
    pub answered: u64,
    /// Requests answered otherwise, or that could not be sent.
    pub failed: u64,
    /// Requests whose answer never came (the run was ended by a second request).
    pub unanswered: u64,
    /// Node-clock nanoseconds from the start message to the last answer.
    pub elapsed_ns: u64,
}

impl DriverReport {
    /// The driver's answer content: four little-endian u64.
    pub fn parse(content: &[u8]) -> Option<Self> {
        let word = |index: usize| -> Option<u64> {
            let bytes = content.get(index * 8..index * 8 + 8)?;
            Some(u64::from_le_bytes(bytes.try_into().ok()?))
        };
        (content.len() == 32).then_some(())?;
        Some(Self {
            answered: word(0)?,
            failed: word(1)?,
            unanswered: word(2)?,
            elapsed_ns: word(3)?,
        })
    }

    /// Answered requests per second of its run.
    pub fn per_second(&self) -> f64 {
        if self.elapsed_ns == 0 {
            0.0
        } else {
            self.answered as f64 * 1e9 / self.elapsed_ns as f64
        }
    }
}

/// Percentiles of a histogram, nanoseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

impl Percentiles {
    /// The percentiles of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            count: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
        }
    }
}

/// One driver's run, and on Caxton the shard it ran on.
#[derive(Clone, Debug, Serialize)]
pub struct PairResult {
    /// The driver's shard (Caxton), or its pair's index (baseline).
    pub pair: usize,
    /// The echo's shard (Caxton only).
    pub echo_shard: Option<usize>,
    /// What the driver reported.
    #[serde(flatten)]
    pub report: DriverReport,
    /// Its answered requests per second.
    pub per_second: f64,
    /// Routing latency of every message that arrived on the driver's shard (Caxton only).
    pub shard_routing: Option<Percentiles>,
    /// Handler run time on the driver's shard (Caxton only).
    pub shard_processing: Option<Percentiles>,
}

impl PairResult {
    /// Pair `pair`'s result on a design with no shards (the baseline, the
    /// bare loop): its driver's report alone.
    pub(crate) fn unsharded(pair: usize, report: DriverReport) -> Self {
        Self {
            pair,
            echo_shard: None,
            report,
            per_second: report.per_second(),
            shard_routing: None,
            shard_processing: None,
        }
    }
}

/// One agent-to-agent run on one design.
#[derive(Clone, Debug, Serialize)]
pub struct AgentToAgentResult {
    /// The scenario (`agent_to_agent_local`, `agent_to_agent_cross`, or on
    /// the baseline `agent_to_agent`).
    pub name: String,
    /// `caxton` or `baseline`.
    pub design: String,
    /// Data shards (Caxton) or worker threads (baseline).
    pub shards: usize,
    /// Requests each driver kept outstanding.
    pub window: u32,
    /// Each driver, by shard (Caxton) or pair (baseline).
    pub pairs: Vec<PairResult>,
    /// Requests answered with `inform`, all drivers.
    pub answered: u64,
    /// Requests answered otherwise or not sent, all drivers.
    pub failed: u64,
    /// Requests whose answer never came, all drivers.
    pub unanswered: u64,
    /// Messages the echo agents handled, from the node's agent counters (Caxton only).
    pub echo_handled: Option<u64>,
    /// Messages the shards answered `failure` because they waited past their
    /// deadline (Caxton only). An answer that times out is lost to its
    /// driver: the engine tells the echo, its sender.
    pub timed_out: Option<u64>,
    /// Sends the shards refused for a full mailbox or ring (Caxton only).
    pub refused: Option<u64>,
    /// Answered requests per second, all drivers (the sum of their rates).
    pub per_second: f64,
    /// `per_second` over the shards (or workers).
    pub per_shard_per_second: f64,
    /// Send to handler start: same-shard arrivals for local, cross-shard
    /// arrivals for cross (including one start message per driver), every
    /// message on the baseline.
    pub routing: Percentiles,
    /// Handler run time, drivers and echoes.
    pub processing: Percentiles,
    /// What the reader needs to know to compare it.
    pub note: Option<String>,
    #[serde(skip)]
    routing_histogram: Histogram<u64>,
}

impl AgentToAgentResult {
    pub(crate) fn new(
        name: &str,
        design: &str,
        shards: usize,
        window: u32,
        pairs: Vec<PairResult>,
        routing: Histogram<u64>,
        processing: &Histogram<u64>,
    ) -> Self {
        let per_second: f64 = pairs.iter().map(|pair| pair.per_second).sum();
        Self {
            name: name.to_owned(),
            design: design.to_owned(),
            shards,
            window,
            answered: pairs.iter().map(|pair| pair.report.answered).sum(),
            failed: pairs.iter().map(|pair| pair.report.failed).sum(),
            unanswered: pairs.iter().map(|pair| pair.report.unanswered).sum(),
            pairs,
            echo_handled: None,
            timed_out: None,
            refused: None,
            per_second,
            per_shard_per_second: per_second / shards.max(1) as f64,
            routing: Percentiles::of(&routing),
            processing: Percentiles::of(processing),
            note: None,
            routing_histogram: routing,
        }
    }

    /// As a row of a suite's scenarios, named `label`: its routing
    /// histogram (written as the scenario's HDR log) and its request rate.
    pub fn scenario(&self, label: &str) -> ScenarioResult {
        let longest_ns = self
            .pairs
            .iter()
            .map(|pair| pair.report.elapsed_ns)
            .max()
            .unwrap_or(0);
        ScenarioResult::with_rate(
            label,
            self.routing_histogram.clone(),
            self.per_second,
            Duration::from_nanos(longest_ns),
        )
    }
}

/// The node profile for agent-to-agent runs: `profile` with instances kept
/// for the whole run. A driver holds its run (window, counts, the start
/// request's ticket) in its instance's memory, and recycling an instance
/// drops them; the baseline never recycles its instances either.
pub fn pair_profile(profile: &Profile) -> Profile {
    let mut profile = profile.clone();
    profile.runtime.agent_pool.max_reuse_count = u32::MAX;
    profile.runtime.agent_pool.recycle_after = HumanDuration::from_secs(365 * 24 * 3600);
    profile
}

pub(crate) fn traffic(message: impl Into<String>) -> SuiteError {
    SuiteError::Traffic(message.into())
}

pub(crate) fn pair_names(layout: Layout, pair: usize) -> (String, String) {
    (
        format!("a2a-{}-driver-{pair}", layout.tag()),
        format!("a2a-{}-echo-{pair}", layout.tag()),
    )
}

fn on_shard(shard: usize, shards: usize) -> Vec<u16> {
    let mut placement = vec![0u16; shards];
    placement[shard] = 1;
    placement
}

/// Run `layout` on `node` (booted with [`pair_profile`]): deploy one driver
/// and one echo per data shard, start the drivers, wait for their reports,
/// read the shards' histograms, and undeploy the pairs.
pub fn run_on_node(
    node: &mut Node,
    limits: &AgentLimits,
    layout: Layout,
    options: &PairOptions,
) -> Result<AgentToAgentResult, SuiteError> {
    options.check().map_err(traffic)?;
    let shards = node.data_shards();
    if let Some(reason) = layout.skip_reason(shards) {
        return Err(traffic(reason));
    }
    let mut drivers = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (driver, echo) = pair_names(layout, shard);
        node.deploy_placed(
            &echo,
            ECHO_WAT.as_bytes(),
            &on_shard(layout.echo_shard(shard, shards), shards),
            limits,
        )?;
        drivers.push(node.deploy_placed(
            &driver,
            DRIVER_WAT.as_bytes(),
            &on_shard(shard, shards),
            limits,
        )?);
    }
    let metrics_now = |node: &Node| node.metrics(false);
    let starts: Vec<_> = drivers
        .iter()
        .enumerate()
        .map(|(pair, &driver)| (driver, pair_names(layout, pair).1))
        .collect();
    let reports = drive(node, &starts, options).map_err(|error| match metrics_now(node) {
        // What the shards counted says where the missing answers went.
        Ok(metrics) => {
            let mut merged = ShardMetrics::default();
            for shard in &metrics {
                merged.merge(shard);
            }
            traffic(format!(
                "{error}; the shards counted {} refused, {} timed out, {} undeliverable, {} faults, {} unknown receiver",
                merged.refused, merged.timeouts, merged.undeliverable, merged.faults, merged.unknown_receiver
            ))
        }
        Err(_) => error,
    });
    let metrics = node.metrics(false);
    let mut echo_handled = 0;
    for shard in 0..shards {
        let (_, echo) = pair_names(layout, shard);
        echo_handled += node.agent_stats(&echo)?.handled;
    }
    for shard in 0..shards {
        let (driver, echo) = pair_names(layout, shard);
        node.undeploy(&driver)?;
        node.undeploy(&echo)?;
    }
    let (reports, metrics) = (reports?, metrics?);
    let mut routing = nanosecond_histogram();
    let mut processing = nanosecond_histogram();
    let (mut timed_out, mut refused) = (0, 0);
    for shard in &metrics {
        let _ = routing.add(shard_routing(layout, shard));
        let _ = processing.add(&shard.processing_ns);
        timed_out += shard.timeouts;
        refused += shard.refused;
    }
    let pairs = reports
        .into_iter()
        .enumerate()
        .map(|(shard, report)| PairResult {
            pair: shard,
            echo_shard: Some(layout.echo_shard(shard, shards)),
            report,
            per_second: report.per_second(),
            shard_routing: metrics
                .get(shard)
                .map(|metrics| Percentiles::of(shard_routing(layout, metrics))),
            shard_processing: metrics
                .get(shard)
                .map(|metrics| Percentiles::of(&metrics.processing_ns)),
        })
        .collect();
    let mut result = AgentToAgentResult::new(
        layout.scenario(),
        "caxton",
        shards,
        options.window,
        pairs,
        routing,
        &processing,
    );
    result.echo_handled = Some(echo_handled);
    result.timed_out = Some(timed_out);
    result.refused = Some(refused);
    Ok(result)
}

/// The routing histogram of `layout`'s hops on `shard`: same-shard
/// arrivals for local pairs, cross-shard ones for cross pairs.
fn shard_routing(layout: Layout, shard: &ShardMetrics) -> &Histogram<u64> {
    match layout {
        Layout::Local => &shard.routing_local_ns,
        Layout::Cross => &shard.routing_cross_ns,
    }
}

/// One driver on data shard `from` loading an echo on shard `to`, alone on
/// `node`: the standard suite's cross-shard routing, where no client thread
/// competes with the two shards for a core. Returns the driver's report and
/// the shards' metrics over its run.
pub fn run_one_pair(
    node: &mut Node,
    limits: &AgentLimits,
    (from, to): (usize, usize),
    names: (&str, &str),
    options: &PairOptions,
) -> Result<(DriverReport, Vec<ShardMetrics>), SuiteError> {
    options.check().map_err(traffic)?;
    let shards = node.data_shards();
    let (driver_name, echo_name) = names;
    node.deploy_placed(
        echo_name,
        ECHO_WAT.as_bytes(),
        &on_shard(to, shards),
        limits,
    )?;
    let driver = node.deploy_placed(
        driver_name,
        DRIVER_WAT.as_bytes(),
        &on_shard(from, shards),
        limits,
    )?;
    let reports = drive(node, &[(driver, echo_name.to_owned())], options);
    let metrics = node.metrics(false);
    node.undeploy(driver_name)?;
    node.undeploy(echo_name)?;
    let report = reports?
        .pop()
        .ok_or_else(|| traffic("the driver did not report".to_owned()))?;
    Ok((report, metrics?))
}

/// Start every driver (with the name of the echo it loads) from one
/// client, after clearing the shards' histograms, and collect their
/// reports in driver order. Drivers still running [`GRACE`] past their run
/// time are asked to stop.
fn drive(
    node: &Node,
    starts: &[(caxton_messaging::AgentId, String)],
    options: &PairOptions,
) -> Result<Vec<DriverReport>, SuiteError> {
    let mut client = node.client()?;
    node.metrics(true)?;
    let mut waiting: HashMap<u64, usize> = HashMap::with_capacity(starts.len());
    for (pair, (driver, echo)) in starts.iter().enumerate() {
        let token = request(&mut client, *driver, options.start_content(echo))
            .map_err(|error| traffic(format!("starting driver {pair}: {error}")))?;
        waiting.insert(token, pair);
    }
    let mut reports = vec![None; starts.len()];
    collect(&mut client, &mut waiting, &mut reports, options.wait())?;
    if !waiting.is_empty() {
        // Some answer went missing; any request ends a driver's run.
        for &pair in waiting.values() {
            request(&mut client, starts[pair].0, Vec::new())
                .map_err(|error| traffic(format!("stopping driver {pair}: {error}")))?;
        }
        collect(&mut client, &mut waiting, &mut reports, GRACE)?;
    }
    if !waiting.is_empty() {
        return Err(traffic(format!(
            "{} driver(s) did not report within {:?} of their run, nor {GRACE:?} after being asked to stop",
            waiting.len(),
            options.wait()
        )));
    }
    Ok(reports.into_iter().flatten().collect())
}

/// Send `content` to `driver` as a `request`; the token its answer quotes.
fn request(
    client: &mut caxton_shards::Client,
    driver: caxton_messaging::AgentId,
    content: Vec<u8>,
) -> Result<u64, caxton_shards::SendError> {
    let (token, envelope) = client.request_envelope(
        driver,
        Performative::Request,
        content,
        SendOptions::default(),
        Durability::Transient,
    );
    client.send_envelope(envelope)?;
    Ok(token)
}

/// Take the reports of the drivers in `waiting` (by start token) that come
/// within `patience`; other answers (to stop requests) are dropped.
fn collect(
    client: &mut caxton_shards::Client,
    waiting: &mut HashMap<u64, usize>,
    reports: &mut [Option<DriverReport>],
    patience: Duration,
) -> Result<(), SuiteError> {
    let until = std::time::Instant::now() + patience;
    while !waiting.is_empty() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let Some(answer) = client.recv(left) else {
            return Ok(());
        };
        if let Some(pair) = waiting.remove(&answer.in_reply_to) {
            reports[pair] = Some(answer_report(pair, answer.performative, &answer.content)?);
        }
    }
    Ok(())
}

/// Driver `pair`'s report from its answer.
pub(crate) fn answer_report(
    pair: usize,
    performative: Performative,
    content: &[u8],
) -> Result<DriverReport, SuiteError> {
    match (performative, DriverReport::parse(content)) {
        (Performative::Inform, Some(report)) => Ok(report),
        _ => Err(traffic(format!(
            "driver {pair} answered {performative:?}: {}",
            String::from_utf8_lossy(content)
        ))),
    }
}

/// Boot a node for `plan` with [`pair_profile`], run every layout its
/// shards allow, and stop it. Returns the results and the layouts skipped, with why.
pub fn run_layouts(
    profile: &Profile,
    plan: &PlacementPlan,
    options: &PairOptions,
    progress: &dyn Fn(&str),
) -> Result<(Vec<AgentToAgentResult>, Vec<String>), SuiteError> {
    let profile = pair_profile(profile);
    let mut node = Node::start(&profile, plan)?;
    let outcome = run_layouts_on(&mut node, &profile.agents.default_limits, options, progress);
    let shutdown = node.shutdown();
    let outcome = outcome?;
    shutdown?;
    Ok(outcome)
}

/// Run every layout the shards of `node` (booted with [`pair_profile`])
/// allow. Returns the results and the layouts skipped, with why.
pub fn run_layouts_on(
    node: &mut Node,
    limits: &AgentLimits,
    options: &PairOptions,
    progress: &dyn Fn(&str),
) -> Result<(Vec<AgentToAgentResult>, Vec<String>), SuiteError> {
    let shards = node.data_shards();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for layout in Layout::ALL {
        if let Some(reason) = layout.skip_reason(shards) {
            skipped.push(reason);
            continue;
        }
        progress(&format!(
            "{}: {shards} driver(s), {} outstanding each, {:?}",
            layout.scenario(),
            options.window,
            options.duration
        ));
        results.push(run_on_node(node, limits, layout, options)?);
    }
    Ok((results, skipped))
}

/// The baseline's scenario name: it has no shards, so no layouts.
pub const BASELINE_SCENARIO: &str = "agent_to_agent";

/// `pairs` driver and echo pairs on a fresh baseline with `workers` workers.
pub fn run_on_baseline(
    profile: &Profile,
    pairs: usize,
    workers: usize,
    options: &PairOptions,
) -> Result<AgentToAgentResult, SuiteError> {
    options.check().map_err(traffic)?;
    let mut agents: Vec<(String, &'static str)> = Vec::with_capacity(pairs * 2);
    let mut seeds = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let (driver, echo) = pair_names(Layout::Local, pair);
        seeds.push((agents.len(), options.start_content(&echo)));
        agents.push((driver, DRIVER_WAT));
        agents.push((echo, ECHO_WAT));
    }
    let run = crate::baseline::run_seeded(profile, &agents, workers, &seeds, options.wait())
        .map_err(|error| traffic(format!("baseline: {error}")))?;
    let mut results = Vec::with_capacity(pairs);
    for (pair, answer) in run.answers.iter().enumerate() {
        let (performative, content) = answer.as_ref().ok_or_else(|| {
            traffic(format!(
                "baseline: driver {pair} did not finish within {:?} ({} message(s) lost on full mailboxes)",
                options.wait(),
                run.lost
            ))
        })?;
        let report = answer_report(pair, *performative, content)?;
        results.push(PairResult::unsharded(pair, report));
    }
    let mut result = AgentToAgentResult::new(
        BASELINE_SCENARIO,
        "baseline",
        workers,
        options.window,
        results,
        run.routing,
        &run.processing,
    );
    result.note = Some(baseline_note(pairs, workers));
    Ok(result)
}

/// What the baseline's figures are, beside Caxton's local and cross ones.
pub fn baseline_note(pairs: usize, workers: usize) -> String {
    format!(
        "the baseline has no shards: local and cross are the same {pairs} pair(s) on a {workers}-worker tokio runtime, run once"
    )
}

/// The per-shard goal for agent-to-agent request-reply on a machine of
/// `cores` cores: (answered requests per second per shard, where it applies).
pub fn per_shard_goal(cores: usize) -> (f64, &'static str) {
    if cores <= 2 {
        (3_000_000.0, "one shard, 2-core machine")
    } else {
        (1_500_000.0, "per shard, 16 cores")
    }
}

/// Whether [`per_shard_goal`] judges a run on `shards` data shards of a
/// machine of `cores` cores: the 2-core machine's goal is for one shard
/// (where only the local layout runs), the 16-core machine's for every shard.
pub fn per_shard_goal_applies(cores: usize, shards: usize) -> bool {
    cores > 2 || shards == 1
}

/// `figure` against `goal`: "met" or "MISSED".
pub fn verdict(figure: f64, goal: f64) -> &'static str {
    if figure >= goal {
        "met"
    } else {
        "MISSED"
    }
}

/// `per_second` in a short form: `3.12M`, `850.4k`, `950`.
pub fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

fn micros(nanos: u64) -> String {
    format!("{:.2}µs", nanos as f64 / 1000.0)
}

/// The runs as a table: per design and scenario, then each shard's driver;
/// the per-shard goal of a machine of `cores` cores beside each.
pub fn render(results: &[AgentToAgentResult], cores: usize) -> String {
    let (goal, applies) = per_shard_goal(cores);
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    out.push_str(&format!(
        "agent-to-agent request-reply: a driver agent per shard keeps {} requests outstanding to an echo agent; no client in the loop\n",
        first.window
    ));
    out.push_str(&format!(
        "{:<22} {:<9} {:>6} {:>11} {:>7} {:>5} {:>10} {:>10} {:>21} {:>21}  goal per shard ({applies})\n",
        "scenario",
        "design",
        "shards",
        "answered",
        "failed",
        "lost",
        "req/s",
        "per shard",
        "routing p50/p99",
        "processing p50/p99",
    ));
    for result in results {
        out.push_str(&format!(
            "{:<22} {:<9} {:>6} {:>11} {:>7} {:>5} {:>10} {:>10} {:>21} {:>21}  {}\n",
            result.name,
            result.design,
            result.shards,
            result.answered,
            result.failed,
            result.unanswered,
            rate(result.per_second),
            rate(result.per_shard_per_second),
            format!(
                "{}/{}",
                micros(result.routing.p50_ns),
                micros(result.routing.p99_ns)
            ),
            format!(
                "{}/{}",
                micros(result.processing.p50_ns),
                micros(result.processing.p99_ns)
            ),
            // The goals are Caxton's; the baseline is the yardstick.
            if result.design == "caxton" && !per_shard_goal_applies(cores, result.shards) {
                "not judged".to_owned()
            } else if result.design == "caxton" {
                format!(
                    "≥ {}/s: {}",
                    rate(goal),
                    verdict(result.per_shard_per_second, goal)
                )
            } else {
                "-".to_owned()
            }
        ));
        for pair in &result.pairs {
            let label = match pair.echo_shard {
                Some(echo) => format!("  shard {} -> {echo}", pair.pair),
                None => format!("  pair {}", pair.pair),
            };
            let latency = |percentiles: &Option<Percentiles>| {
                percentiles.as_ref().map_or(String::new(), |percentiles| {
                    format!(
                        "{}/{}",
                        micros(percentiles.p50_ns),
                        micros(percentiles.p99_ns)
                    )
                })
            };
            out.push_str(&format!(
                "{:<22} {:<9} {:>6} {:>11} {:>7} {:>5} {:>10} {:>10} {:>21} {:>21}\n",
                label,
                "",
                "",
                pair.report.answered,
                pair.report.failed,
                pair.report.unanswered,
                rate(pair.per_second),
                "",
                latency(&pair.shard_routing),
                latency(&pair.shard_processing),
            ));
        }
        let (timed_out, refused) = (result.timed_out.unwrap_or(0), result.refused.unwrap_or(0));
        if timed_out + refused > 0 {
            out.push_str(&format!(
                "  note: the shards timed out {timed_out} message(s) (waited past their deadline) and refused {refused}\n"
            ));
        }
        if let Some(note) = &result.note {
            out.push_str(&format!("  note: {note}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use caxton_numa::MachineTopology;

    use super::*;

    /// The low-latency profile with two data shards, and its plan on this machine.
    fn two_shards() -> (Profile, PlacementPlan) {
        let loaded = caxton_profiles::load(
            &["low-latency".to_owned()],
            &["runtime.worker_threads=2".to_owned()],
        )
        .expect("profile");
        let topology = MachineTopology::discover().expect("topology");
        let plan = caxton_numa::plan(&topology, &loaded.profile).expect("plan");
        (loaded.profile, plan)
    }

    /// A result for a failure message, without its histogram.
    fn shown(result: &AgentToAgentResult) -> String {
        serde_json::to_string(result).unwrap_or_default()
    }

    /// The echoes handled every request answered `inform`; past that, only
    /// requests whose answer timed out (lost to the driver) and the engine's
    /// failure notices about those answers (the echo was their sender).
    /// Without timeouts or refusals, exactly the answered requests.
    fn assert_echoes_add_up(result: &AgentToAgentResult) {
        let echoed = result.echo_handled.expect("echo counts");
        let timed_out = result.timed_out.expect("shard counts");
        assert!(echoed >= result.answered, "{}", shown(result));
        assert!(
            echoed <= result.answered + result.unanswered + result.failed + timed_out,
            "{}",
            shown(result)
        );
        if timed_out == 0 && result.refused == Some(0) {
            assert_eq!(result.failed + result.unanswered, 0, "{}", shown(result));
            assert_eq!(echoed, result.answered, "{}", shown(result));
        }
    }

    #[test]
    fn a_start_message_and_a_report_read_back() {
        let options = PairOptions {
            duration: Duration::from_millis(5),
            requests: 7,
            window: 3,
        };
        let content = options.start_content("echo-1");
        assert_eq!(&content[..8], &5_000_000u64.to_le_bytes());
        assert_eq!(&content[8..16], &7u64.to_le_bytes());
        assert_eq!(&content[16..20], &3u32.to_le_bytes());
        assert_eq!(&content[20..], b"echo-1");
        let mut answer = Vec::new();
        for word in [10u64, 2, 1, 2_000_000_000] {
            answer.extend_from_slice(&word.to_le_bytes());
        }
        let report = DriverReport::parse(&answer).expect("a report");
        assert_eq!(report.answered, 10);
        assert_eq!(report.failed, 2);
        assert_eq!(report.unanswered, 1);
        assert_eq!(report.per_second(), 5.0);
        assert_eq!(DriverReport::parse(&answer[..24]), None);
        assert!(PairOptions {
            window: 0,
            ..options.clone()
        }
        .check()
        .is_err());
        assert!(PairOptions {
            window: WINDOW_MAX + 1,
            ..options.clone()
        }
        .check()
        .is_err());
        assert!(PairOptions {
            duration: Duration::ZERO,
            requests: 0,
            window: 1
        }
        .check()
        .is_err());
        // A run bounded by its count is waited for in proportion to it; a
        // timed run, for its time.
        let counted = PairOptions {
            duration: Duration::ZERO,
            requests: 200_000,
            window: 1,
        };
        assert_eq!(counted.wait(), Duration::from_secs(200) + GRACE);
        assert_eq!(options.wait(), Duration::from_millis(5) + GRACE);
    }

    #[test]
    fn both_layouts_run_on_a_real_node_and_their_counts_add_up() {
        let (profile, plan) = two_shards();
        // A count, so every driver's figures are known; a window larger than
        // the count, so the drivers also stop sending mid-window.
        let counted = PairOptions {
            duration: Duration::ZERO,
            requests: 500,
            window: 64,
        };
        let (results, skipped) = run_layouts(&profile, &plan, &counted, &|_| {}).expect("runs");
        assert!(skipped.is_empty(), "{skipped:?}");
        let names: Vec<&str> = results.iter().map(|result| result.name.as_str()).collect();
        assert_eq!(names, ["agent_to_agent_local", "agent_to_agent_cross"]);
        for result in &results {
            assert_eq!(result.design, "caxton");
            assert_eq!(result.shards, 2);
            assert!(result.answered > 0, "{}", shown(result));
            assert!(result.per_second > 0.0);
            assert_eq!(result.pairs.len(), 2);
            for (shard, pair) in result.pairs.iter().enumerate() {
                assert_eq!(pair.pair, shard);
                // Every request sent is answered, answered otherwise, or lost.
                let report = &pair.report;
                assert_eq!(report.answered + report.failed + report.unanswered, 500);
                assert!(pair.per_second > 0.0);
                let routing = pair.shard_routing.as_ref().expect("per-shard routing");
                assert!(routing.count >= report.answered, "{routing:?}");
                let processing = pair
                    .shard_processing
                    .as_ref()
                    .expect("per-shard processing");
                assert!(processing.count >= report.answered, "{processing:?}");
            }
            assert_echoes_add_up(result);
            // Requests and answers both cross (or both stay): two hops a request.
            assert!(
                result.routing.count >= 2 * result.answered,
                "{}",
                shown(result)
            );
        }
        assert_eq!(results[0].pairs[1].echo_shard, Some(1));
        assert_eq!(results[1].pairs[1].echo_shard, Some(0));

        // A time limit instead: the drivers stop on their own.
        let timed = PairOptions::for_duration(Duration::from_millis(200));
        let (results, _) = run_layouts(&profile, &plan, &timed, &|_| {}).expect("runs");
        for result in &results {
            assert!(result.answered > 0, "{}", shown(result));
            assert_echoes_add_up(result);
            // A run that ended on its own ended at its deadline.
            assert!(result
                .pairs
                .iter()
                .filter(|pair| pair.report.unanswered == 0)
                .all(|pair| pair.report.elapsed_ns >= 200_000_000));
        }
    }

    #[test]
    fn a_request_during_a_run_ends_it_with_the_report() {
        let (profile, plan) = two_shards();
        let mut node = Node::start(&pair_profile(&profile), &plan).expect("node boots");
        let limits = &profile.agents.default_limits;
        node.deploy_placed("echo", ECHO_WAT.as_bytes(), &[1, 0], limits)
            .expect("echo");
        let driver = node
            .deploy_placed("driver", DRIVER_WAT.as_bytes(), &[0, 1], limits)
            .expect("driver");
        let mut client = node.client().expect("client");
        let hour = PairOptions::for_duration(Duration::from_secs(3600));
        let start = request(&mut client, driver, hour.start_content("echo")).expect("sent");
        // Any request during the run ends it, and is answered `agree`.
        let malformed = client
            .request(driver, b"short".to_vec(), GRACE)
            .expect("answered");
        assert_eq!(malformed.performative, Performative::Agree);
        let report = client.await_reply(start, GRACE).expect("the report");
        assert_eq!(report.performative, Performative::Inform);
        let report = DriverReport::parse(&report.content).expect("a report");
        assert!(
            report.answered + report.failed + report.unanswered > 0,
            "{report:?}"
        );
        // Idle again: a malformed start fails.
        let failed = client
            .request(driver, b"short".to_vec(), GRACE)
            .expect("answered");
        assert_eq!(failed.performative, Performative::Failure);
        drop(client);
        node.shutdown().expect("clean stop");
    }

    #[test]
    fn one_pair_runs_alone_and_its_requests_are_the_echo_shards_cross_arrivals() {
        let (profile, plan) = two_shards();
        let mut node = Node::start(&pair_profile(&profile), &plan).expect("node boots");
        let one_at_a_time = PairOptions {
            duration: Duration::ZERO,
            requests: 200,
            window: 1,
        };
        let (report, metrics) = run_one_pair(
            &mut node,
            &profile.agents.default_limits,
            (0, 1),
            ("one-driver", "one-echo"),
            &one_at_a_time,
        )
        .expect("runs");
        assert_eq!(
            (report.answered, report.failed, report.unanswered),
            (200, 0, 0)
        );
        assert!(report.elapsed_ns > 0);
        // Shard 1 took only the driver's requests; shard 0, their answers
        // and the client's start message.
        assert_eq!(metrics[1].routing_cross_ns.len(), 200);
        assert_eq!(metrics[0].routing_cross_ns.len(), 201);
        assert_eq!(metrics[1].routing_local_ns.len(), 0);
        // The pair is gone afterwards.
        assert!(node.directory().resolve("one-driver").is_none());
        assert!(node.directory().resolve("one-echo").is_none());
        node.shutdown().expect("clean stop");
    }

    #[test]
    fn the_two_core_goal_judges_one_shard_only() {
        let result = |shards: usize, per_shard: f64| {
            let mut result = AgentToAgentResult::new(
                Layout::Local.scenario(),
                "caxton",
                shards,
                64,
                Vec::new(),
                nanosecond_histogram(),
                &nanosecond_histogram(),
            );
            result.per_shard_per_second = per_shard;
            result
        };
        let two_cores = render(&[result(1, 2.0e6), result(2, 2.0e6)], 2);
        let rows: Vec<&str> = two_cores
            .lines()
            .filter(|line| line.starts_with("agent_to_agent_local"))
            .collect();
        assert_eq!(rows.len(), 2, "{two_cores}");
        assert!(rows[0].ends_with("≥ 3.00M/s: MISSED"), "{two_cores}");
        assert!(rows[1].ends_with("not judged"), "{two_cores}");
        // More cores: every shard count is judged, against that machine's goal.
        let sixteen = render(&[result(15, 2.0e6)], 16);
        assert!(sixteen.contains("≥ 1.50M/s: met"), "{sixteen}");
    }

    #[test]
    fn the_baseline_runs_the_same_pairs() {
        let (profile, _) = two_shards();
        let counted = PairOptions {
            duration: Duration::ZERO,
            requests: 300,
            window: 16,
        };
        let result = run_on_baseline(&profile, 2, 2, &counted).expect("runs");
        assert_eq!(result.design, "baseline");
        assert_eq!(result.name, BASELINE_SCENARIO);
        assert_eq!(result.answered, 600, "{}", shown(&result));
        assert_eq!(result.failed, 0);
        assert!(result.per_second > 0.0);
        assert_eq!(result.pairs.len(), 2);
        // Every request and answer is a hop; the start messages are too.
        assert!(result.routing.count >= 2 * 600, "{}", shown(&result));
        assert!(result.processing.count >= 2 * 600, "{}", shown(&result));
        assert!(result
            .note
            .as_deref()
            .is_some_and(|note| note.contains("no shards")));
    }
}
