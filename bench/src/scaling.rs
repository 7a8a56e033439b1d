//! `engine benchmark run --suite scaling`: the agent-to-agent scenarios
//! ([`crate::agent_to_agent`]) at 1, 2, 4, … data shards up to every data
//! shard the placement plan gives, each step on a fresh node planned for
//! that many shards; per-shard throughput at each step and its efficiency
//! against one shard, with the baseline on as many workers beside it.
//!
//! Efficiency is a step's per-shard throughput over one shard's
//! `agent_to_agent_local` per-shard throughput (for the baseline: over its
//! own one-worker figure). A design that scales linearly keeps it at 100%;
//! what it loses is what the shards cost each other (cross-shard rings,
//! shared caches and memory bandwidth, a core shared with another shard).

use std::path::Path;

use caxton_numa::PlacementPlan;
use caxton_profiles::Profile;
use serde::Serialize;

use crate::agent_to_agent::{self, rate, verdict, AgentToAgentResult, PairOptions};
use crate::bare_loop;
use crate::core_to_core::{self, PairRoundTrip};
use crate::standard::{write_results, ScenarioResult, SuiteError};

/// The goal: per-shard throughput at this many shards…
pub const GOAL_SHARDS: usize = 15;
/// …at least this share of one shard's.
pub const GOAL_EFFICIENCY: f64 = 0.85;

/// The shard counts of a scaling run up to `max`: 1, 2, 4, … and `max` itself.
pub fn shard_counts(max: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |count| count.checked_mul(2))
        .take_while(|&count| count < max)
        .collect();
    counts.push(max.max(1));
    counts
}

/// How each step runs.
#[derive(Clone, Debug)]
pub struct ScalingOptions {
    /// Each agent-to-agent run.
    pub pairs: PairOptions,
    /// Also run the pairs on the baseline with as many workers.
    pub compare_baseline: bool,
}

/// One run of a step, with its efficiency.
#[derive(Clone, Debug, Serialize)]
pub struct StepRun {
    /// The run.
    #[serde(flatten)]
    pub result: AgentToAgentResult,
    /// Per-shard (per-worker) throughput over one shard's (one worker's).
    pub efficiency: f64,
}

/// One step: every run at one shard count.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingStep {
    /// Data shards (and baseline workers).
    pub shards: usize,
    /// Caxton's layouts, then the baseline's run.
    pub runs: Vec<StepRun>,
    /// Layouts this step could not run, and why.
    pub skipped: Vec<String>,
    /// What the placement plan said about this many shards (shared PUs, …).
    pub plan_notes: Vec<String>,
    /// The cache-line round trip between neighbouring shards' CPUs before
    /// the step's runs ([`crate::core_to_core`]): what each cross-shard
    /// message pays the machine. Empty with fewer than two CPUs.
    pub cross_core_before: Vec<PairRoundTrip>,
    /// The same, after the step's runs (a host may move a VM's vCPUs meanwhile).
    pub cross_core_after: Vec<PairRoundTrip>,
}

/// The scaling report, as written to `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingSummary {
    /// The machine, in words.
    pub machine: String,
    /// Profile layers.
    pub profile: String,
    /// Cores of the machine.
    pub cores: usize,
    /// The most data shards the plan gives: the last step.
    pub max_shards: usize,
    /// Requests each driver kept outstanding.
    pub window: u32,
    /// How long each run lasted, milliseconds.
    pub duration_ms: u64,
    /// One entry per step, in order.
    pub steps: Vec<ScalingStep>,
    /// One shard's `agent_to_agent_local` throughput over the bare loop's
    /// ([`crate::bare_loop`]), when both ran.
    pub share_of_bare_loop: Option<f64>,
    /// One row per run (`shards-N/DESIGN/SCENARIO`), each written as an HDR log.
    pub scenarios: Vec<ScenarioResult>,
}

impl ScalingSummary {
    /// Write one HDR log per run and `summary.json` into `directory`.
    pub fn write(&self, directory: &Path) -> Result<(), SuiteError> {
        write_results(directory, &self.scenarios, self)
    }
}

fn progress(message: &str) {
    crate::stderr_line!("benchmark: {message}");
}

/// Run every step of `counts`: `prepare(n)` gives the profile and plan for
/// `n` data shards; each step boots its own node and stops it before the
/// next (and before the baseline runs).
pub fn run_scaling(
    counts: &[usize],
    mut prepare: impl FnMut(usize) -> Result<(Profile, PlacementPlan), SuiteError>,
    options: &ScalingOptions,
) -> Result<Vec<ScalingStep>, SuiteError> {
    options.pairs.check().map_err(SuiteError::Setup)?;
    let mut steps: Vec<ScalingStep> = Vec::with_capacity(counts.len());
    // One shard's per-shard throughput: caxton local, and the baseline's.
    let mut base_caxton = None;
    let mut base_baseline = None;
    for (index, &shards) in counts.iter().enumerate() {
        progress(&format!(
            "scaling: step {} of {}: {shards} data shard(s)",
            index + 1,
            counts.len()
        ));
        let (profile, plan) = prepare(shards)?;
        if plan.data_shards.len() != shards {
            return Err(SuiteError::Setup(format!(
                "the plan for {shards} data shard(s) gives {}",
                plan.data_shards.len()
            )));
        }
        let shard_pus: Vec<usize> = plan.data_shards.iter().map(|shard| shard.home_pu).collect();
        let pairs = core_to_core::neighbour_pairs(&shard_pus);
        let cross_core_before = probe_cross_core(shards, &pairs, "before");
        let (mut results, skipped) =
            agent_to_agent::run_layouts(&profile, &plan, &options.pairs, &|line: &str| {
                progress(&format!("scaling: {shards} shard(s): {line}"))
            })?;
        if base_caxton.is_none() {
            base_caxton = results
                .iter()
                .find(|result| result.name == agent_to_agent::Layout::Local.scenario())
                .map(|result| result.per_shard_per_second);
        }
        let mut base_bare = None;
        if shards == 1 {
            // One shard's ceiling on this machine, its node stopped, so
            // the two do not share a core.
            progress("scaling: 1 shard(s): the same pair in the bare loop (the reference)");
            let bare = bare_loop::run_pair(&profile, &options.pairs)?;
            base_bare = Some(bare.per_shard_per_second);
            results.push(bare);
        }
        if options.compare_baseline {
            progress(&format!(
                "scaling: {shards} shard(s): the same pairs on the baseline, {shards} worker(s)"
            ));
            let baseline =
                agent_to_agent::run_on_baseline(&profile, shards, shards, &options.pairs)?;
            base_baseline.get_or_insert(baseline.per_shard_per_second);
            results.push(baseline);
        }
        let cross_core_after = probe_cross_core(shards, &pairs, "after");
        let runs: Vec<StepRun> = results
            .into_iter()
            .map(|result| {
                let base = match result.design.as_str() {
                    "baseline" => base_baseline,
                    bare_loop::DESIGN => base_bare,
                    _ => base_caxton,
                };
                StepRun {
                    efficiency: result.per_shard_per_second
                        / base.unwrap_or(0.0).max(f64::MIN_POSITIVE),
                    result,
                }
            })
            .collect();
        for run in &runs {
            progress(&format!(
                "scaling: {shards} shard(s): {} {}: {}/s per shard, {:.0}% of one shard's",
                run.result.design,
                run.result.name,
                rate(run.result.per_shard_per_second),
                run.efficiency * 100.0
            ));
        }
        steps.push(ScalingStep {
            shards,
            runs,
            skipped,
            plan_notes: plan.notes.clone(),
            cross_core_before,
            cross_core_after,
        });
    }
    Ok(steps)
}

/// Measure `pairs` (no node running) and say what was found.
fn probe_cross_core(shards: usize, pairs: &[(usize, usize)], when: &str) -> Vec<PairRoundTrip> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let measured = core_to_core::measure_pairs(pairs);
    progress(&format!(
        "scaling: {shards} shard(s): cross-core round trip {when} the runs: {}",
        core_to_core::describe(&measured)
    ));
    measured
}

/// The report of `steps`, with one scenario row per run for the HDR logs.
pub fn summarize(
    steps: Vec<ScalingStep>,
    machine: String,
    profile: String,
    cores: usize,
    options: &ScalingOptions,
) -> ScalingSummary {
    let scenarios = steps
        .iter()
        .flat_map(|step| {
            step.runs.iter().map(move |run| {
                run.result.scenario(&format!(
                    "shards-{}/{}/{}",
                    step.shards, run.result.design, run.result.name
                ))
            })
        })
        .collect();
    let one_shard = |design: &str, name: &str| {
        steps
            .first()
            .filter(|step| step.shards == 1)
            .and_then(|step| {
                step.runs
                    .iter()
                    .find(|run| run.result.design == design && run.result.name == name)
            })
            .map(|run| run.result.per_shard_per_second)
    };
    let share_of_bare_loop = one_shard("caxton", agent_to_agent::Layout::Local.scenario())
        .zip(one_shard(bare_loop::DESIGN, bare_loop::SCENARIO))
        .map(|(caxton, bare)| caxton / bare.max(f64::MIN_POSITIVE));
    ScalingSummary {
        share_of_bare_loop,
        machine,
        profile,
        cores,
        max_shards: steps.last().map_or(0, |step| step.shards),
        window: options.pairs.window,
        duration_ms: u64::try_from(options.pairs.duration.as_millis()).unwrap_or(u64::MAX),
        steps,
        scenarios,
    }
}

fn micros(nanos: u64) -> String {
    format!("{:.2}µs", nanos as f64 / 1000.0)
}

/// The report as text: a row per step and run, then the goals.
pub fn render(summary: &ScalingSummary) -> String {
    let mut out = format!(
        "{}\nprofile {}: scaling agent-to-agent request-reply over 1 to {} data shard(s) on {} core(s); {} requests outstanding per driver, {} ms per run\n",
        summary.machine,
        summary.profile,
        summary.max_shards,
        summary.cores,
        summary.window,
        summary.duration_ms
    );
    out.push_str(&format!(
        "efficiency: per-shard throughput over one shard's agent_to_agent_local (baseline: over its own one worker); goal ≥ {:.0}% at {GOAL_SHARDS} shards, judged at every step past one shard (one shard is the 100% the others are measured against)\n",
        GOAL_EFFICIENCY * 100.0
    ));
    out.push_str(&format!(
        "{:>6}  {:<32} {:>10} {:>10} {:>10} {:>8} {:>21} {:>11} {:>7}\n",
        "shards",
        "run",
        "total/s",
        "per shard",
        "efficiency",
        "goal",
        "routing p50/p99",
        "answered",
        "failed"
    ));
    for step in &summary.steps {
        for run in &step.runs {
            let result = &run.result;
            let label = match result.design.as_str() {
                "baseline" => format!("baseline ({} worker(s))", step.shards),
                bare_loop::DESIGN => "bare loop (reference, no engine)".to_owned(),
                _ => format!("caxton {}", result.name),
            };
            let goal = if result.design != "caxton" || step.shards == 1 {
                "-"
            } else {
                verdict(run.efficiency, GOAL_EFFICIENCY)
            };
            // The bare loop times nothing: no routing figures to print.
            let routing = if result.routing.count == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{}/{}",
                    micros(result.routing.p50_ns),
                    micros(result.routing.p99_ns)
                )
            };
            out.push_str(&format!(
                "{:>6}  {:<32} {:>10} {:>10} {:>9.1}% {:>8} {:>21} {:>11} {:>7}\n",
                step.shards,
                label,
                rate(result.per_second),
                rate(result.per_shard_per_second),
                run.efficiency * 100.0,
                goal,
                routing,
                result.answered,
                result.failed
            ));
        }
        for reason in &step.skipped {
            out.push_str(&format!("{:>6}  skipped {reason}\n", step.shards));
        }
        for note in &step.plan_notes {
            out.push_str(&format!("{:>6}  plan: {note}\n", step.shards));
        }
        if !step.cross_core_before.is_empty() {
            out.push_str(&format!(
                "{:>6}  cross-core round trip between neighbouring shards' CPUs: before the runs {}; after {}\n",
                step.shards,
                core_to_core::describe(&step.cross_core_before),
                core_to_core::describe(&step.cross_core_after)
            ));
        }
    }
    let first_local = summary.steps.first().and_then(|step| {
        step.runs
            .iter()
            .find(|run| run.result.name == agent_to_agent::Layout::Local.scenario())
    });
    if let Some(run) = first_local {
        let (goal, applies) = agent_to_agent::per_shard_goal(summary.cores);
        out.push_str(&format!(
            "\none shard: {}/s agent-to-agent request-reply (goal ≥ {}/s, {applies}): {}\n",
            rate(run.result.per_shard_per_second),
            rate(goal),
            verdict(run.result.per_shard_per_second, goal)
        ));
    }
    if let Some(share) = summary.share_of_bare_loop {
        out.push_str(&format!(
            "one shard keeps {:.1}% of the bare loop's throughput on this machine (goal ≥ {:.0}%): {}\n",
            share * 100.0,
            bare_loop::SHARE_GOAL * 100.0,
            verdict(share, bare_loop::SHARE_GOAL)
        ));
    }
    if let Some(last) = summary.steps.last().filter(|step| step.shards > 1) {
        for run in last.runs.iter().filter(|run| run.result.design == "caxton") {
            out.push_str(&format!(
                "at {} shards: {} keeps {:.1}% of one shard's per-shard throughput (goal ≥ {:.0}% at {GOAL_SHARDS} shards): {}\n",
                last.shards,
                run.result.name,
                run.efficiency * 100.0,
                GOAL_EFFICIENCY * 100.0,
                verdict(run.efficiency, GOAL_EFFICIENCY)
            ));
        }
    }
    if summary
        .steps
        .iter()
        .any(|step| !step.cross_core_before.is_empty())
    {
        out.push_str(
            "cross-core round trip: one cache line from a shard's CPU to its neighbour's and back, timed with no node running; every cross-shard message pays it in lines moved, so agent_to_agent_cross follows it (tens of ns: the CPUs share a cache; hundreds: different dies, or a VM's vCPUs placed apart by its host)\n",
        );
    }
    if summary
        .steps
        .iter()
        .any(|step| step.runs.iter().any(|run| run.result.design == "baseline"))
    {
        out.push_str(
            "baseline: it has no shards, so at each step local and cross are the same N pairs on an N-worker tokio runtime, run once\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_every_shard() {
        assert_eq!(shard_counts(1), [1]);
        assert_eq!(shard_counts(2), [1, 2]);
        assert_eq!(shard_counts(15), [1, 2, 4, 8, 15]);
        assert_eq!(shard_counts(16), [1, 2, 4, 8, 16]);
    }
}
