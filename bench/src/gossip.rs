//! Gossip figures from the cluster simulator (`engine cluster simulate`,
//! and the standard suite's `gossip_convergence`): the real membership core
//! for many nodes on a virtual clock, summarized beside the goals.

use std::path::Path;
use std::time::{Duration, Instant};

use caxton_cluster::simulation::{
    simulate, Formation, Network, Report, Scenario, SimulationConfig,
};
use caxton_cluster::SwimSettings;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::standard::{write_results, ScenarioResult, SuiteError};

/// One distribution, in seconds.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GossipSummary {
    /// The profile(s) the SWIM settings came from.
    pub profile: String,
    /// Nodes.
    pub nodes: usize,
    /// The scenario.
    pub scenario: Scenario,
    /// How the cluster formed before measuring.
    #[serde(default)]
    pub formation: Formation,
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
    /// Crashes whose node restarted before every node declared it down.
    #[serde(default)]
    pub crashes_superseded: u64,
    /// Suspicions of running, reachable nodes.
    pub false_suspicions: u64,
    /// Down declarations of running, reachable nodes.
    pub false_downs: u64,
    /// Nodes one observer declared down twice or more while they ran.
    #[serde(default)]
    pub flapping: Vec<String>,
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
    /// The SWIM settings simulated.
    pub swim: caxton_cluster::transport::SwimSummary,
    /// Equal for equal runs.
    pub trace_digest: String,
}

/// Our dissemination P99 goal for a cluster of `nodes` (1% loss): 0.5 s
/// up to 16 nodes, 1.2 s up to 50, 3.0 s beyond; the performance tuning guide's is 5 s.
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
        formation: config.formation,
        network: config.network,
        seed: config.seed,
        simulated_seconds: config.duration.as_secs_f64(),
        wall_seconds: started.elapsed().as_secs_f64(),
        dissemination: Seconds::of(&report.dissemination),
        observations: Seconds::of(&report.observations),
        detection: Seconds::of(&report.detection),
        arrivals_unfinished: report.arrivals_unfinished,
        crashes_undetected: report.crashes_undetected,
        crashes_superseded: report.crashes_superseded,
        false_suspicions: report.false_suspicions,
        false_downs: report.false_downs,
        flapping: report
            .flapping
            .iter()
            .map(|index| format!("node-{index}"))
            .collect(),
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
        swim: caxton_cluster::transport::SwimSummary::from(swim),
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
        "cluster simulation: {} nodes, profile {}, scenario {:?}, formation {}, loss {:.1}%, latency {:?} (log-normal σ {}), duplicates {:.1}%, seed {}\n",
        s.nodes,
        s.profile,
        s.scenario,
        formation_name(s.formation),
        s.network.loss * 100.0,
        s.network.latency,
        s.network.jitter_sigma,
        s.network.duplicate * 100.0,
        s.seed
    );
    let goal = s.dissemination_goal_seconds;
    out.push_str(&format!(
        "dissemination (arrival → every live node): {} arrivals, P50 {:.3}s, P99 {:.3}s, max {:.3}s; goal P99 ≤ {goal:.1}s at this size {}, guide 5s {}{}\n",
        s.dissemination.count,
        s.dissemination.p50,
        s.dissemination.p99,
        s.dissemination.max,
        judged(s.dissemination.count, s.dissemination.p99 <= goal),
        judged(s.dissemination.count, s.dissemination.p99 <= 5.0),
        if s.arrivals_unfinished > 0 { format!(" ({} still spreading at the end)", s.arrivals_unfinished) } else { String::new() }
    ));
    out.push_str(&format!(
        "convergence per node (caxton_gossip_convergence_time): {} observations, P50 {:.3}s, P99 {:.3}s\n",
        s.observations.count, s.observations.p50, s.observations.p99
    ));
    if s.detection.count == 0 && s.crashes_undetected > 0 {
        out.push_str(&format!(
            "crash → declared down everywhere: none finished ({} not yet everywhere at the end)\n",
            s.crashes_undetected
        ));
    } else if s.detection.count > 0 {
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
    if s.crashes_superseded > 0 {
        out.push_str(&format!(
            "crashes restarted before every node declared them down (the newer generation replaced them; not timed): {}\n",
            s.crashes_superseded
        ));
    }
    let hours = (s.simulated_seconds / 3600.0).max(1e-9);
    out.push_str(&format!(
        "false suspicions (a live node suspected, and the suspicion refuted): {} ({:.1} per node-hour); false down declarations (a live node declared down): {} (goal 0) {}\n",
        s.false_suspicions,
        s.false_suspicions as f64 / s.nodes.max(1) as f64 / hours,
        s.false_downs,
        verdict(s.false_downs == 0)
    ));
    if !s.flapping.is_empty() {
        out.push_str(&format!(
            "flapping (declared down twice or more by one node while running): {}\n",
            s.flapping.join(", ")
        ));
    }
    out.push_str(&format!(
        "traffic per node: {:.1} packets/s, {:.0} B/s\n",
        s.packets_per_node_second, s.bytes_per_node_second
    ));
    if let Some(heal) = s.heal_seconds {
        out.push_str(&format!(
            "partition healed: every node saw every other alive {heal:.2}s after the heal\n"
        ));
    } else if s.scenario == Scenario::Partition {
        out.push_str("partition healed: NOT within the run\n");
    }
    out.push_str(&format!(
        "simulated {:.0}s (after warm-up) in {} of wall time ({:.0}× real time); trace digest {}\nreplay: engine {} cluster simulate --nodes {} --scenario {} --formation {} --loss {} --latency {:?} --jitter {} --duration {}s --seed {}",
        s.simulated_seconds,
        short_seconds(s.wall_seconds),
        s.simulated_seconds / s.wall_seconds.max(1e-9),
        s.trace_digest,
        s.profile
            .split(" + ")
            .map(|layer| format!("--profile {}", layer.trim_start_matches("built-in profile ")))
            .collect::<Vec<_>>()
            .join(" "),
        s.nodes,
        format!("{:?}", s.scenario).to_lowercase(),
        formation_name(s.formation),
        s.network.loss,
        s.network.latency,
        s.network.jitter_sigma,
        s.simulated_seconds,
        s.seed
    ));
    out
}

/// A verdict on `met`, or `n/a` when nothing was measured.
fn judged(count: u64, met: bool) -> &'static str {
    if count == 0 {
        "n/a (nothing measured)"
    } else {
        verdict(met)
    }
}

/// A formation as `--formation` spells it.
fn formation_name(formation: Formation) -> &'static str {
    match formation {
        Formation::Formed => "formed",
        Formation::Joins => "joins",
    }
}

/// The header of [`markdown_row`]'s table.
pub const MARKDOWN_HEADER: &str = "| profile | nodes | loss | latency | dissemination P99 | crash → down P99 | suspicion + 2 probes | false suspicions /node-h | false downs | packets/s/node | B/s/node |\n|---|---|---|---|---|---|---|---|---|---|---|";

/// One row of the preset table in `docs/cluster.md`.
pub fn markdown_row(s: &GossipSummary) -> String {
    let hours = (s.simulated_seconds / 3600.0).max(1e-9);
    format!(
        "| {} | {} | {:.0}% | {:?} | {:.2}s | {} | {:.2}s | {:.2} | {} | {:.1} | {:.0} |",
        s.profile.replace("built-in profile ", ""),
        s.nodes,
        s.network.loss * 100.0,
        s.network.latency,
        s.dissemination.p99,
        if s.detection.count == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}s", s.detection.p99)
        },
        s.suspicion_timeout_seconds + 2.0 * s.probe_interval_seconds,
        s.false_suspicions as f64 / s.nodes.max(1) as f64 / hours,
        s.false_downs,
        s.packets_per_node_second,
        s.bytes_per_node_second
    )
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
        formation: Formation::Formed,
    };
    let report = simulate(&config, |_, _| {});
    ScenarioResult::from_histogram("gossip_convergence", report.dissemination, duration)
}

/// What `engine cluster analyze-gossip` judges, from a running node or a
/// simulation's `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GossipFacts {
    /// Cluster size, this node included.
    pub nodes: usize,
    /// SWIM bytes sent per node per second.
    pub bytes_per_node_second: f64,
    /// SWIM frames sent per node per second.
    pub packets_per_node_second: f64,
    /// Convergence P99, seconds, when anything was timed.
    pub convergence_p99: Option<f64>,
    /// Suspicions that ended refuted (false alarms), per node-hour.
    pub false_suspicions_per_node_hour: f64,
    /// Members declared down more than once (names).
    pub flapping: Vec<String>,
    /// Frames dropped as corrupt, truncated, replayed or undecodable.
    pub frames_rejected: u64,
    /// Handshakes refused, by either side.
    pub handshakes_refused: u64,
    /// Of those, the ones the peer refused (it did not trust this node's
    /// certificate).
    pub handshakes_refused_by_peer: u64,
    /// The settings in force.
    pub swim: caxton_cluster::transport::SwimSummary,
    /// Members declared down now (names): their agents' messages fail.
    pub down: Vec<String>,
    /// Alone with seeds no member has answered: the seeds, and the rounds
    /// of joins unanswered.
    pub unanswered_seeds: Option<(Vec<String>, u32)>,
}

/// The SWIM traffic a node of a cluster of `nodes` should stay under, bytes
/// per second: our goal (2 KB/s at 100 nodes with cluster-medium;
/// piggybacked updates grow with the log of the cluster), or, when higher,
/// the most the cluster-size preset for `nodes` sends
/// ([`preset_traffic_bound`]). A cluster that follows the advice to use its
/// preset is never told it storms.
pub fn traffic_budget(nodes: usize) -> f64 {
    let goal = 2048.0 * (nodes.max(10) as f64).log10() / 2.0;
    goal.max(preset_traffic_bound(nodes))
}

/// Bytes a SWIM frame takes on the wire, about: the simulated presets
/// averaged 90 (cluster-small at 8 nodes: 1603 B/s over 17.7 frames/s).
const SWIM_FRAME_BYTES: f64 = 90.0;

/// The most the cluster-size preset for `nodes` sends per node, bytes per
/// second: a gossip round with news to every one of `fanout` members each
/// gossip interval, and a probe and its answer each probe interval.
pub fn preset_traffic_bound(nodes: usize) -> f64 {
    let (_, (gossip_ms, fanout, probe_ms, _)) = preset_for(nodes);
    let frames = 1000.0 / gossip_ms as f64 * fanout as f64 + 2.0 * 1000.0 / probe_ms as f64;
    frames * SWIM_FRAME_BYTES
}

/// The cluster-size preset for `nodes`, and its (gossip interval ms,
/// fanout, probe interval ms, suspicion multiplier).
pub fn preset_for(nodes: usize) -> (&'static str, (u64, u64, u64, u32)) {
    match nodes {
        0..=9 => ("cluster-small", (100, 3, 500, 3)),
        10..=50 => ("cluster-medium", (200, 4, 1000, 4)),
        _ => ("cluster-large", (500, 5, 2000, 5)),
    }
}

/// Advice, each line naming the key to change (the performance tuning guide's gossip-storm
/// remedies, and the others' symptoms).
pub fn advise(facts: &GossipFacts) -> Vec<String> {
    let mut advice = Vec::new();
    let swim = &facts.swim;
    let budget = traffic_budget(facts.nodes);
    let storm = facts.bytes_per_node_second > budget;
    let slow = facts
        .convergence_p99
        .is_some_and(|p99| p99 > dissemination_goal(facts.nodes).as_secs_f64());
    let (preset, (interval, fanout, probe, multiplier)) = preset_for(facts.nodes);
    let current = (
        swim.gossip_interval_ms,
        swim.gossip_fanout,
        swim.probe_interval_ms,
        swim.suspicion_multiplier,
    );
    let follows_preset = current == (interval, fanout, probe, multiplier);
    if storm {
        // Never toward a fanout below the preset's while the advice below
        // is to use that preset: the two would contradict each other.
        let lower_fanout =
            swim.gossip_fanout > 2 && (follows_preset || swim.gossip_fanout > fanout);
        advice.push(format!(
            "gossip storm: {:.0} B/s of SWIM traffic per node, over {:.0} B/s for {} nodes. Raise coordination.cluster.gossip_interval (now {} ms, e.g. to {} ms){}",
            facts.bytes_per_node_second,
            budget,
            facts.nodes,
            swim.gossip_interval_ms,
            (swim.gossip_interval_ms * 2).max(if follows_preset { 0 } else { interval }),
            if lower_fanout {
                format!(
                    " or lower coordination.cluster.gossip_fanout (now {}, e.g. to {})",
                    swim.gossip_fanout,
                    swim.gossip_fanout - 1
                )
            } else {
                String::new()
            }
        ));
    }
    if slow {
        let p99 = facts.convergence_p99.unwrap_or_default();
        if storm {
            advice.push(format!(
                "slow convergence despite heavy traffic (P99 {p99:.2}s): check for network issues (loss, a congested link) before tuning; lowering coordination.cluster.gossip_interval would add to the storm"
            ));
        } else {
            advice.push(format!(
                "slow convergence: P99 {p99:.2}s, over the {:.1}s goal for {} nodes. Lower coordination.cluster.gossip_interval (now {} ms) or raise coordination.cluster.gossip_fanout (now {})",
                dissemination_goal(facts.nodes).as_secs_f64(),
                facts.nodes,
                swim.gossip_interval_ms,
                swim.gossip_fanout
            ));
        }
    }
    if facts.false_suspicions_per_node_hour > 1.0 {
        advice.push(format!(
            "false suspicions: {:.1} per node-hour ended refuted. Raise coordination.cluster.probe_timeout (now {} ms) above the network's P99 round trip, or coordination.cluster.suspicion_multiplier (now {}); on a lossy network, the network-unreliable preset if it is not in use already",
            facts.false_suspicions_per_node_hour, swim.probe_timeout_ms, swim.suspicion_multiplier
        ));
    }
    if !facts.flapping.is_empty() {
        advice.push(format!(
            "flapping members (declared down more than once in the window): {}. Unless they were restarted on purpose, raise coordination.cluster.suspicion_multiplier (now {}) and check those nodes' network and load",
            facts.flapping.join(", "),
            swim.suspicion_multiplier
        ));
    }
    if facts.frames_rejected > 0 {
        advice.push(format!(
            "{} frames were rejected (corrupt, truncated, replayed or undecodable): check for network issues, or a node running another version",
            facts.frames_rejected
        ));
    }
    let refused_here = facts
        .handshakes_refused
        .saturating_sub(facts.handshakes_refused_by_peer);
    if refused_here > 0 {
        advice.push(format!(
            "{refused_here} handshakes were refused by this node: a node without a certificate from the cluster's CA (coordination.cluster.tls.ca_file) is trying to join"
        ));
    }
    if facts.handshakes_refused_by_peer > 0 {
        advice.push(format!(
            "{} handshakes were refused by peers: they do not trust this node's certificate; check that this node's coordination.cluster.tls.cert_file and ca_file come from the cluster's CA",
            facts.handshakes_refused_by_peer
        ));
    }
    if let Some((seeds, rounds)) = &facts.unanswered_seeds {
        advice.push(format!(
            "alone: no member has answered {rounds} rounds of joins through {}. Check that the seeds run and that each address is a node's cluster port (coordination.cluster.listen_address), not its admin port",
            seeds.join(", ")
        ));
    }
    if !facts.down.is_empty() {
        advice.push(format!(
            "members down: {}. Messages to agents only they host are answered caxton:node-down until they are back; nothing to tune unless they were not stopped on purpose",
            facts.down.join(", ")
        ));
    }
    if (storm || slow) && !follows_preset {
        advice.push(format!(
            "for {} nodes the {preset} preset sets gossip_interval {interval} ms, gossip_fanout {fanout}, probe_interval {probe} ms, suspicion_multiplier {multiplier}: try --profile {preset}, listed before any network-* profile (later layers win, and a network preset's probe timeout is set for its own probe interval)",
            facts.nodes
        ));
    }
    if advice.is_empty() {
        advice.push(format!(
            "no gossip storm: {:.0} B/s per node is within {:.0} B/s for {} nodes{}; nothing to change",
            facts.bytes_per_node_second,
            budget,
            facts.nodes,
            facts
                .convergence_p99
                .map(|p99| format!(", convergence P99 {}", short_seconds(p99)))
                .unwrap_or_default()
        ));
    }
    advice
}

impl GossipSummary {
    /// What `analyze-gossip` judges in this run.
    pub fn facts(&self) -> GossipFacts {
        let hours = (self.simulated_seconds / 3600.0).max(1e-9);
        GossipFacts {
            nodes: self.nodes,
            bytes_per_node_second: self.bytes_per_node_second,
            packets_per_node_second: self.packets_per_node_second,
            convergence_p99: (self.dissemination.count > 0).then_some(self.dissemination.p99),
            false_suspicions_per_node_hour: self.false_suspicions as f64
                / self.nodes.max(1) as f64
                / hours,
            flapping: self.flapping.clone(),
            // The simulated network has no TLS and no corrupt frames.
            frames_rejected: 0,
            handshakes_refused: 0,
            handshakes_refused_by_peer: 0,
            swim: self.swim,
            down: Vec::new(),
            unanswered_seeds: None,
        }
    }
}

/// `seconds` in the unit that shows it: `1.25s`, `5.0ms`, `80µs`, so a
/// short span never prints as `0.00s`.
fn short_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2}s")
    } else if seconds >= 1e-3 {
        format!("{:.1}ms", seconds * 1e3)
    } else {
        format!("{:.0}µs", seconds * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm(nodes: usize) -> GossipFacts {
        let (_, (interval, fanout, probe, multiplier)) = preset_for(nodes);
        GossipFacts {
            nodes,
            bytes_per_node_second: 500.0,
            packets_per_node_second: 5.0,
            convergence_p99: Some(0.2),
            swim: caxton_cluster::transport::SwimSummary {
                gossip_interval_ms: interval,
                gossip_fanout: fanout,
                probe_interval_ms: probe,
                probe_timeout_ms: 200,
                suspicion_multiplier: multiplier,
            },
            ..GossipFacts::default()
        }
    }

    /// A lone node with silent seeds, or a member down, is named: "no
    /// storm, nothing to change" would hide either.
    #[test]
    fn a_lone_node_and_a_member_down_are_named() {
        let alone = GossipFacts {
            unanswered_seeds: Some((vec!["127.0.0.1:18481".into()], 3)),
            ..calm(1)
        };
        let advice = advise(&alone);
        assert!(
            advice[0].starts_with(
                "alone: no member has answered 3 rounds of joins through 127.0.0.1:18481"
            ),
            "{advice:?}"
        );
        let down = GossipFacts {
            down: vec!["c".into()],
            ..calm(3)
        };
        let advice = advise(&down);
        assert!(advice[0].starts_with("members down: c."), "{advice:?}");
        assert!(advice
            .iter()
            .all(|line| !line.contains("nothing to change;")));
    }

    #[test]
    fn a_calm_cluster_gets_no_advice_to_change() {
        let advice = advise(&calm(16));
        assert_eq!(advice.len(), 1);
        assert!(advice[0].starts_with("no gossip storm"), "{advice:?}");
    }

    #[test]
    fn a_cluster_on_its_size_preset_is_no_storm() {
        // The presets' own traffic at their sizes: cluster-small simulated
        // at 8 nodes by `engine cluster simulate` (1761 B/s a node),
        // cluster-medium at 50 and cluster-large at 1000 (docs/cluster.md).
        for (nodes, sent) in [(8, 1761.0), (50, 1440.0), (1000, 911.0)] {
            let mut facts = calm(nodes);
            facts.bytes_per_node_second = sent;
            let advice = advise(&facts);
            assert!(
                advice[0].starts_with("no gossip storm"),
                "{nodes}: {advice:?}"
            );
        }
        // Ten times the small preset's most is a storm at its size.
        let mut facts = calm(8);
        facts.bytes_per_node_second = 10.0 * preset_traffic_bound(8);
        assert!(advise(&facts)[0].starts_with("gossip storm"));
    }

    #[test]
    fn a_storm_names_the_interval_and_fanout_and_the_preset() {
        let mut facts = calm(100);
        facts.bytes_per_node_second = 50_000.0;
        facts.swim.gossip_interval_ms = 50;
        facts.swim.gossip_fanout = 8;
        let advice = advise(&facts).join("\n");
        assert!(advice.contains("gossip storm"), "{advice}");
        // Toward the preset's interval (500 ms) and fanout (5), both named.
        assert!(
            advice.contains("coordination.cluster.gossip_interval (now 50 ms, e.g. to 500 ms)"),
            "{advice}"
        );
        assert!(
            advice.contains("coordination.cluster.gossip_fanout (now 8, e.g. to 7)"),
            "{advice}"
        );
        assert!(advice.contains("--profile cluster-large"), "{advice}");
        // On its own size's preset, the knobs go on from there.
        let mut facts = calm(100);
        facts.bytes_per_node_second = 50_000.0;
        let advice = advise(&facts).join("\n");
        assert!(
            advice.contains("(now 500 ms, e.g. to 1000 ms) or lower coordination.cluster.gossip_fanout (now 5, e.g. to 4)"),
            "{advice}"
        );
    }

    #[test]
    fn a_storm_never_advises_a_fanout_below_the_preset_it_recommends() {
        // cluster-small's settings at 16 nodes, whose preset is cluster-medium
        // (200 ms, fanout 4): lowering the fanout to 2 would go away from it.
        let mut facts = calm(16);
        facts.swim.gossip_interval_ms = 100;
        facts.swim.gossip_fanout = 3;
        facts.swim.probe_interval_ms = 500;
        facts.swim.suspicion_multiplier = 3;
        facts.bytes_per_node_second = 2219.0;
        let advice = advise(&facts).join("\n");
        assert!(advice.contains("gossip storm"), "{advice}");
        assert!(advice.contains("(now 100 ms, e.g. to 200 ms)"), "{advice}");
        assert!(
            !advice.contains("lower coordination.cluster.gossip_fanout"),
            "{advice}"
        );
        assert!(advice.contains("--profile cluster-medium"), "{advice}");
    }

    #[test]
    fn slow_convergence_false_suspicions_flaps_and_refusals_each_name_their_key() {
        let mut facts = calm(16);
        facts.convergence_p99 = Some(2.0);
        facts.false_suspicions_per_node_hour = 5.0;
        facts.flapping = vec!["node-7".into()];
        facts.handshakes_refused = 3;
        let advice = advise(&facts).join("\n");
        assert!(
            advice.contains("slow convergence") && advice.contains("gossip_fanout"),
            "{advice}"
        );
        assert!(
            advice.contains("coordination.cluster.probe_timeout"),
            "{advice}"
        );
        assert!(
            advice.contains("node-7") && advice.contains("suspicion_multiplier"),
            "{advice}"
        );
        assert!(
            advice.contains("3 handshakes were refused by this node")
                && advice.contains("tls.ca_file")
                && !advice.contains("refused by peers"),
            "{advice}"
        );
        // Refused by the peers: this node's own certificate is the one to check.
        facts.handshakes_refused_by_peer = 2;
        let advice = advise(&facts).join("\n");
        assert!(
            advice.contains("1 handshakes were refused by this node")
                && advice.contains("2 handshakes were refused by peers")
                && advice.contains("this node's coordination.cluster.tls.cert_file"),
            "{advice}"
        );
        facts.bytes_per_node_second = 1e6;
        let advice = advise(&facts).join("\n");
        assert!(advice.contains("check for network issues"), "{advice}");
    }

    #[test]
    fn a_simulated_run_that_flaps_says_so_and_is_advised() {
        // Nodes declared down again and again: 30% loss, suspicion over
        // after one probe interval.
        let mut profile = caxton_profiles::Profile::default();
        profile.coordination.cluster.suspicion_multiplier = 1;
        let swim = SwimSettings::from_profile(&profile);
        let config = SimulationConfig {
            nodes: 8,
            swim: None,
            network: Network {
                loss: 0.3,
                ..Network::default()
            },
            duration: Duration::from_secs(300),
            seed: 1,
            scenario: Scenario::Steady,
            formation: Formation::Formed,
        };
        let (summary, _) = run("default", &swim, config, |_, _| {});
        assert!(!summary.flapping.is_empty(), "{summary:?}");
        assert_eq!(summary.facts().flapping, summary.flapping);
        let advice = advise(&summary.facts()).join("\n");
        assert!(advice.contains(&summary.flapping[0]), "{advice}");
        assert!(advice.contains("suspicion_multiplier"), "{advice}");
    }

    #[test]
    fn short_spans_print_in_their_own_unit() {
        assert_eq!(short_seconds(1.25), "1.25s");
        assert_eq!(short_seconds(0.005), "5.0ms");
        assert_eq!(short_seconds(0.00008), "80µs");
    }
}
