//! Gossip figures from the cluster simulator (`engine cluster simulate`,
//! and the standard suite's `gossip_convergence`): the real membership core
//! for many nodes on a virtual clock, summarized beside the goals.

use std::path::Path;
use std::time::{Duration, Instant};

use caxton_cluster::simulation::{simulate, Network, Report, Scenario, SimulationConfig};
use caxton_cluster::SwimSettings;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::standard::{write_results, ScenarioResult, SuiteError};

/// One distribution, in seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Seconds {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Seconds {
    fn of(histogram: &Histogram<u64>) -> Self {
        let seconds = |nanos: u64| nanos as f64 / 1e9;
        Self {
            count: histogram.len(),
            p50: seconds(histogram.value_at_quantile(0.5)),
            p99: seconds(histogram.value_at_quantile(0.99)),
            max: seconds(histogram.max()),
        }
    }
}

/// A simulation run, as printed and as `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct GossipSummary {
    /// The profile(s) the SWIM settings came from.
    pub profile: String,
    /// Nodes.
    pub nodes: usize,
    /// The scenario.
    pub scenario: Scenario,
    /// The network.
    pub network: Network,
    /// The seed.
    pub seed: u64,
    /// Simulated seconds measured (after warm-up).
    pub simulated_seconds: f64,
    /// Wall-clock seconds the run took.
    pub wall_seconds: f64,
    /// Arrival to the last live node learning of it.
    pub dissemination: Seconds,
    /// Arrival to each live node learning of it (the convergence metric).
    pub observations: Seconds,
    /// Crash to the last live node declaring it down.
    pub detection: Seconds,
    /// Arrivals still spreading at the end.
    pub arrivals_unfinished: u64,
    /// Crashes not yet declared down everywhere at the end.
    pub crashes_undetected: u64,
    /// Suspicions of running, reachable nodes.
    pub false_suspicions: u64,
    /// Down declarations of running, reachable nodes.
    pub false_downs: u64,
    /// Frames per node per second.
    pub packets_per_node_second: f64,
    /// Bytes per node per second.
    pub bytes_per_node_second: f64,
    /// A healed partition: until every node saw every other alive.
    pub heal_seconds: Option<f64>,
    /// The suspicion timeout at this size, seconds.
    pub suspicion_timeout_seconds: f64,
    /// The probe interval, seconds.
    pub probe_interval_seconds: f64,
    /// Our dissemination P99 goal at this size, seconds.
    pub dissemination_goal_seconds: f64,
    /// Equal for equal runs.
    pub trace_digest: String,
}

/// Our dissemination P99 goal for a cluster of `nodes` (1% loss): 0.5 s
/// up to 16 nodes, 1.2 s up to 50, 3.0 s beyond; the seed's is 5 s.
pub fn dissemination_goal(nodes: usize) -> Duration {
    match nodes {
        0..=16 => Duration::from_millis(500),
        17..=50 => Duration::from_millis(1200),
        _ => Duration::from_secs(3),
    }
}

/// Run one simulation with a progress callback (simulated so far, total).
pub fn run(
    profile: &str,
    swim: &SwimSettings,
    config: SimulationConfig,
    progress: impl FnMut(Duration, Duration),
) -> (GossipSummary, Report) {
    let started = Instant::now();
    let config = SimulationConfig {
        swim: Some(swim.clone()),
        ..config
    };
    let report = simulate(&config, progress);
    let nodes = config.nodes;
    let summary = GossipSummary {
        profile: profile.to_owned(),
        nodes,
        scenario: config.scenario,
        network: config.network,
        seed: config.seed,
        simulated_seconds: config.duration.as_secs_f64(),
        wall_seconds: started.elapsed().as_secs_f64(),
        dissemination: Seconds::of(&report.dissemination),
        observations: Seconds::of(&report.observations),
        detection: Seconds::of(&report.detection),
        arrivals_unfinished: report.arrivals_unfinished,
        crashes_undetected: report.crashes_undetected,
        false_suspicions: report.false_suspicions,
        false_downs: report.false_downs,
        packets_per_node_second: report.packets_per_node_second,
        bytes_per_node_second: report.bytes_per_node_second,
        heal_seconds: report.heal.map(|heal| heal.as_secs_f64()),
        suspicion_timeout_seconds: caxton_cluster::settings::suspicion_timeout(
            swim.suspicion_multiplier,
            swim.probe_interval,
            nodes,
        )
        .as_secs_f64(),
        probe_interval_seconds: swim.probe_interval.as_secs_f64(),
        dissemination_goal_seconds: dissemination_goal(nodes).as_secs_f64(),
        trace_digest: format!("{:016x}", report.trace_digest),
    };
    (summary, report)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The summary as text, each figure beside its goal.
pub fn render(summary: &GossipSummary) -> String {
    let s = summary;
    let mut out = format!(
        "cluster simulation: {} nodes, profile {}, scenario {:?}, loss {:.1}%, latency {:?} (log-normal σ {}), duplicates {:.1}%, seed {}\n",
        s.nodes,
        s.profile,
        s.scenario,
        s.network.loss * 100.0,
        s.network.latency,
        s.network.jitter_sigma,
        s.network.duplicate * 100.0,
        s.seed
    );
    let goal = s.dissemination_goal_seconds;
    out.push_str(&format!(
        "dissemination (arrival → every live node): {} arrivals, P50 {:.3}s, P99 {:.3}s, max {:.3}s; goal P99 ≤ {goal:.1}s at this size {}, seed 5s {}{}\n",
        s.dissemination.count,
        s.dissemination.p50,
        s.dissemination.p99,
        s.dissemination.max,
        verdict(s.dissemination.p99 <= goal),
        verdict(s.dissemination.p99 <= 5.0),
        if s.arrivals_unfinished > 0 { format!(" ({} still spreading at the end)", s.arrivals_unfinished) } else { String::new() }
    ));
    out.push_str(&format!(
        "convergence per node (caxton_gossip_convergence_time): {} observations, P50 {:.3}s, P99 {:.3}s\n",
        s.observations.count, s.observations.p50, s.observations.p99
    ));
    if s.detection.count > 0 || s.crashes_undetected > 0 {
        let bound = s.suspicion_timeout_seconds + 2.0 * s.probe_interval_seconds;
        out.push_str(&format!(
            "crash → declared down everywhere: {} crashes, P50 {:.3}s, P99 {:.3}s, max {:.3}s; goal P99 ≤ suspicion timeout + 2 probe intervals = {bound:.2}s {}{}\n",
            s.detection.count,
            s.detection.p50,
            s.detection.p99,
            s.detection.max,
            verdict(s.detection.p99 <= bound),
            if s.crashes_undetected > 0 { format!(" ({} not yet everywhere at the end)", s.crashes_undetected) } else { String::new() }
        ));
    }
    let hours = (s.simulated_seconds / 3600.0).max(1e-9);
    out.push_str(&format!(
        "false suspicions: {} ({:.1} per node-hour); false down declarations: {} (goal 0) {}\n",
        s.false_suspicions,
        s.false_suspicions as f64 / s.nodes.max(1) as f64 / hours,
        s.false_downs,
        verdict(s.false_downs == 0)
    ));
    out.push_str(&format!(
        "traffic per node: {:.1} packets/s, {:.0} B/s\n",
        s.packets_per_node_second, s.bytes_per_node_second
    ));
    if let Some(heal) = s.heal_seconds {
        out.push_str(&format!("partition healed: every node saw every other alive {heal:.2}s after the heal\n"));
    } else if s.scenario == Scenario::Partition {
        out.push_str("partition healed: NOT within the run\n");
    }
    out.push_str(&format!(
        "simulated {:.0}s (after warm-up) in {:.1}s of wall time ({:.0}× real time); trace digest {}\nreplay: engine cluster simulate --nodes {} --scenario {} --loss {} --seed {}",
        s.simulated_seconds,
        s.wall_seconds,
        s.simulated_seconds / s.wall_seconds.max(1e-9),
        s.trace_digest,
        s.nodes,
        format!("{:?}", s.scenario).to_lowercase(),
        s.network.loss,
        s.seed
    ));
    out
}

/// Write the histograms (`dissemination.hlog`, `observations.hlog`,
/// `detection.hlog`) and `summary.json` to `directory`.
pub fn write(directory: &Path, summary: &GossipSummary, report: &Report) -> Result<(), SuiteError> {
    let span = Duration::from_secs_f64(summary.simulated_seconds.max(1e-3));
    let scenarios = [
        ScenarioResult::from_histogram("dissemination", report.dissemination.clone(), span),
        ScenarioResult::from_histogram("observations", report.observations.clone(), span),
        ScenarioResult::from_histogram("detection", report.detection.clone(), span),
    ];
    write_results(directory, &scenarios, summary)
}

/// The standard suite's `gossip_convergence`: 16 simulated nodes with the
/// run's profile, 1% loss, seeded, for `duration` of simulated time.
pub fn standard_scenario(swim: &SwimSettings, duration: Duration) -> ScenarioResult {
    let config = SimulationConfig {
        nodes: 16,
        swim: Some(swim.clone()),
        network: Network::default(),
        duration,
        seed: 1,
        scenario: Scenario::Steady,
    };
    let report = simulate(&config, |_, _| {});
    ScenarioResult::from_histogram("gossip_convergence", report.dissemination, duration)
}
