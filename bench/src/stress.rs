//! `engine benchmark stress`: raise the offered rate (and the agents) step by
//! step until latency or errors pass their limits, and report the breaking
//! point: the highest rate sustained within them, with its percentiles.

use std::time::Duration;

use serde::Serialize;

use crate::custom::{format_ns, BenchError, LoadOptions, LoadResult, Pattern};

/// How to ramp.
#[derive(Clone, Debug)]
pub struct StressOptions {
    /// The workload's pattern.
    pub pattern: Pattern,
    /// Total time of all steps.
    pub ramp_up_time: Duration,
    /// Agents at the last step; earlier steps have proportionally fewer.
    pub max_agents: usize,
    /// Stop at the first step past a limit.
    pub find_breaking_point: bool,
    /// Offered rate of the first step.
    pub start_rate: f64,
    /// Each step offers this many times the rate of the one before.
    pub growth: f64,
    /// Number of steps.
    pub steps: usize,
    /// A step whose P99 passes this is past the breaking point.
    pub p99_target: Duration,
    /// A step whose refusals, failures and timeouts pass this share is past it too.
    pub error_limit: f64,
    /// Show progress bars.
    pub progress: bool,
    /// Load generator threads of every step ([`LoadOptions::generators`]).
    pub generators: Option<usize>,
    /// An untimed run at the first step's load before each ramp, and
    /// before each design's P99 runs, so no step pays for a cold process
    /// (first-touched memory and code, empty pools). Zero: none.
    pub warm_up: Duration,
    /// How long each P99 run at a share of the lower breaking point lasts
    /// (at least a step): on a machine that stalls now and then, a run of
    /// one short step holds a stall or two, which alone can set its P99.
    pub latency_run: Duration,
}

impl StressOptions {
    /// Offered rate of step `step`.
    pub fn rate(&self, step: usize) -> f64 {
        self.start_rate * self.growth.powi(step as i32)
    }

    /// Agents at step `step`.
    pub fn agents(&self, step: usize) -> usize {
        let share = (self.max_agents * (step + 1)).div_ceil(self.steps.max(1));
        let least = if self.pattern == Pattern::FanOut {
            5
        } else {
            1
        };
        share.clamp(least, self.max_agents.max(least))
    }

    /// How long each step offers load.
    pub fn step_duration(&self) -> Duration {
        (self.ramp_up_time / self.steps.max(1) as u32).max(Duration::from_millis(100))
    }

    /// One step's load at `rate`: a step's duration, and a drain long enough
    /// for answers up to several times the P99 target.
    pub fn load_at(&self, rate: f64) -> LoadOptions {
        LoadOptions {
            rate,
            duration: self.step_duration(),
            drain: self.p99_target.max(Duration::from_millis(200)) * 4,
            progress: self.progress,
            generators: self.generators,
        }
    }

    /// One P99 run's load at `rate`: a step's, lasting [`Self::latency_run`]
    /// or a step, whichever is longer.
    pub fn latency_load_at(&self, rate: f64) -> LoadOptions {
        LoadOptions {
            duration: self.latency_run.max(self.step_duration()),
            ..self.load_at(rate)
        }
    }

    /// The warm-up's load: the first step's rate and agents, for
    /// `warm_up`; `None` when there is none.
    pub fn warm_up_load(&self) -> Option<LoadOptions> {
        (!self.warm_up.is_zero()).then(|| LoadOptions {
            duration: self.warm_up,
            ..self.load_at(self.rate(0))
        })
    }

    /// Refuse options that cannot make a ramp.
    pub fn check(&self) -> Result<(), BenchError> {
        let bad = |message: String| Err(BenchError::Input(message));
        // `--max-agents` and the last step's rate are checked against the
        // profile with the load (`check_load`).
        if !crate::custom::is_offerable_rate(self.start_rate) {
            return bad(format!(
                "--start-rate {} is outside 1..={}",
                self.start_rate,
                crate::custom::RATE_MAX
            ));
        }
        if self.steps == 0 || self.steps > 1000 {
            return bad(format!("--steps {} is outside 1..=1000", self.steps));
        }
        if !(self.growth.is_finite() && self.growth > 1.0 && self.growth <= 100.0) {
            return bad(format!(
                "--growth {} must be above 1 and at most 100",
                self.growth
            ));
        }
        if self.p99_target.is_zero() {
            return bad("--p99-target must be above 0".into());
        }
        if self.ramp_up_time < Duration::from_millis(100) {
            return bad(format!(
                "--ramp-up-time {:?} is under 100ms",
                self.ramp_up_time
            ));
        }
        if self.warm_up > Duration::from_secs(600) {
            return bad(format!("--warm-up {:?} is over 10 minutes", self.warm_up));
        }
        if self.latency_run > Duration::from_secs(600) {
            return bad(format!(
                "--latency-run {:?} is over 10 minutes",
                self.latency_run
            ));
        }
        if self.pattern == Pattern::FanOut && self.max_agents < 5 {
            return bad("fan-out needs --max-agents of at least 5".into());
        }
        Ok(())
    }
}

/// One step of a ramp.
#[derive(Clone, Debug, Serialize)]
pub struct StressStep {
    /// Its number, from 0.
    pub step: usize,
    /// Agents deployed during it.
    pub agents: usize,
    /// Whether P99 and errors stayed within their limits.
    pub within_limits: bool,
    /// What happened.
    pub result: LoadResult,
}

/// Where a design broke.
#[derive(Clone, Debug, Serialize)]
pub struct BreakingPoint {
    /// `caxton` or `baseline`.
    pub design: String,
    /// The highest offered rate sustained within the limits (`None`: not even the first step).
    pub sustained_per_second: Option<f64>,
    /// Agents deployed at that rate.
    pub agents: Option<usize>,
    /// Its latency percentiles (ns).
    pub p50_ns: Option<u64>,
    /// 99th percentile.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile.
    pub p999_ns: Option<u64>,
    /// The first offered rate past a limit, and why (`None`: never broke).
    pub broke_at_per_second: Option<f64>,
    /// Why it broke.
    pub reason: Option<String>,
}

/// Ramp one design. `run_step(agents, load)` runs one step of it; the
/// warm-up, when there is one, runs first and is not a step.
pub fn ramp(
    design: &str,
    options: &StressOptions,
    mut run_step: impl FnMut(usize, &LoadOptions) -> Result<LoadResult, BenchError>,
) -> Result<(Vec<StressStep>, BreakingPoint), BenchError> {
    let mut steps = Vec::new();
    let mut point = BreakingPoint {
        design: design.to_owned(),
        sustained_per_second: None,
        agents: None,
        p50_ns: None,
        p99_ns: None,
        p999_ns: None,
        broke_at_per_second: None,
        reason: None,
    };
    if let Some(load) = options.warm_up_load() {
        run_step(options.agents(0), &load)?;
    }
    for step in 0..options.steps {
        let load = options.load_at(options.rate(step));
        let agents = options.agents(step);
        let result = run_step(agents, &load)?;
        let errors = result.error_ratio();
        let reason = if result.counts.answered == 0 {
            Some("nothing was answered".to_owned())
        } else if result.p99_ns > options.p99_target.as_nanos() as u64 {
            let target = options.p99_target.as_nanos() as u64;
            // Within a rounding of the target, say by how much: `10.0 ms
            // is over 10.0 ms` reads as a contradiction.
            Some(if format_ns(result.p99_ns) == format_ns(target) {
                format!(
                    "P99 {} is over the target by {}",
                    format_ns(result.p99_ns),
                    format_ns(result.p99_ns - target)
                )
            } else {
                format!(
                    "P99 {} is over the target {}",
                    format_ns(result.p99_ns),
                    format_ns(target)
                )
            })
        } else if errors > options.error_limit {
            Some(format!(
                "{:.3}% of messages were refused, failed or timed out (limit {:.3}%)",
                errors * 100.0,
                options.error_limit * 100.0
            ))
        } else {
            None
        };
        let within_limits = reason.is_none();
        if within_limits && point.broke_at_per_second.is_none() {
            point.sustained_per_second = Some(load.rate);
            point.agents = Some(agents);
            point.p50_ns = Some(result.p50_ns);
            point.p99_ns = Some(result.p99_ns);
            point.p999_ns = Some(result.p999_ns);
        } else if point.broke_at_per_second.is_none() {
            point.broke_at_per_second = Some(load.rate);
            point.reason = reason;
        }
        steps.push(StressStep {
            step,
            agents,
            within_limits,
            result,
        });
        if !within_limits && options.find_breaking_point {
            break;
        }
    }
    Ok((steps, point))
}

/// `--compare baseline` compares P99s at these shares of the lower of the
/// two breaking points: below both, so neither design's figure is queueing
/// past its own saturation, and a ratio taken at a breaking point (where
/// latency is at its limit by definition) says nothing.
pub const P99_COMPARISON_SHARES: [f64; 2] = [0.5, 0.8];

/// The share of the lower breaking point the headline P99 ratio is taken at.
pub const P99_HEADLINE_SHARE: f64 = 0.8;

/// One offered load at which both designs ran for their P99s.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyAtLoad {
    /// The share of the lower breaking point (0.5, 0.8).
    pub share: f64,
    /// The offered rate, messages per second.
    pub offered_per_second: f64,
    /// Agents deployed (those of the lower breaking point's step).
    pub agents: usize,
    /// Caxton's run.
    pub caxton: LoadResult,
    /// The baseline's run.
    pub baseline: LoadResult,
    /// The baseline's P99 over Caxton's (higher is better for Caxton).
    pub p99_ratio: f64,
}

/// Where to compare P99s: for each of [`P99_COMPARISON_SHARES`], the
/// offered rate and the agents, taken from the lower of the two breaking
/// points. `None` when either design sustained no step.
pub fn latency_loads(
    ours: &BreakingPoint,
    theirs: &BreakingPoint,
) -> Option<Vec<(f64, f64, usize)>> {
    let ours = ours.sustained_per_second.zip(ours.agents)?;
    let theirs = theirs.sustained_per_second.zip(theirs.agents)?;
    let (rate, agents) = if ours.0 <= theirs.0 { ours } else { theirs };
    Some(
        P99_COMPARISON_SHARES
            .iter()
            .map(|share| (*share, rate * share, agents))
            .collect(),
    )
}

impl LatencyAtLoad {
    /// Pair the two designs' runs at one load.
    pub fn new(share: f64, agents: usize, caxton: LoadResult, baseline: LoadResult) -> Self {
        Self {
            share,
            offered_per_second: caxton.offered_per_second,
            agents,
            p99_ratio: baseline.p99_ns as f64 / caxton.p99_ns.max(1) as f64,
            caxton,
            baseline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::RunCounts;

    fn options() -> StressOptions {
        StressOptions {
            pattern: Pattern::RequestReply,
            ramp_up_time: Duration::from_secs(8),
            max_agents: 100,
            find_breaking_point: true,
            start_rate: 1000.0,
            growth: 2.0,
            steps: 8,
            p99_target: Duration::from_millis(10),
            error_limit: 0.001,
            progress: false,
            generators: None,
            warm_up: Duration::ZERO,
            latency_run: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_p99_run_lasts_its_own_time_or_a_step() {
        let options = options();
        // Steps of 1 s (8 s over 8 steps); P99 runs of 5 s at the step's rate.
        let run = options.latency_load_at(4_000.0);
        assert_eq!(run.duration, Duration::from_secs(5));
        assert_eq!(run.rate, 4_000.0);
        assert_eq!(run.drain, options.load_at(4_000.0).drain);
        // Shorter than a step: a step.
        let short = StressOptions {
            latency_run: Duration::from_millis(10),
            ..options.clone()
        };
        assert_eq!(short.latency_load_at(1.0).duration, Duration::from_secs(1));
        assert!(StressOptions {
            latency_run: Duration::from_secs(601),
            ..options
        }
        .check()
        .is_err());
    }

    /// A design whose P99 is 1 ms up to 10,000 messages/s and 50 ms beyond.
    fn planted(_agents: usize, load: &LoadOptions) -> Result<LoadResult, BenchError> {
        let mut latency = crate::nanosecond_histogram();
        let p99 = if load.rate <= 10_000.0 {
            1_000_000
        } else {
            50_000_000
        };
        latency.record_n(p99, 100).expect("in range");
        let counts = RunCounts {
            scheduled: 100,
            sent: 100,
            answered: 100,
            ..RunCounts::default()
        };
        Ok(LoadResult::new("planted", load, &counts, latency))
    }

    #[test]
    fn the_ramp_stops_at_the_planted_breaking_point() {
        let (steps, point) = ramp("planted", &options(), planted).expect("ramp");
        // 1k, 2k, 4k, 8k within; 16k breaks and the ramp stops there.
        assert_eq!(steps.len(), 5);
        assert_eq!(point.sustained_per_second, Some(8_000.0));
        assert_eq!(point.broke_at_per_second, Some(16_000.0));
        assert!(point.reason.as_deref().unwrap_or("").contains("P99"));
        assert_eq!(steps[0].agents, 13);
        assert_eq!(options().agents(7), 100);
        assert_eq!(point.agents, Some(50), "8k is step 3: 100 × 4 / 8 agents");
    }

    #[test]
    fn a_warm_up_at_the_first_steps_load_runs_first_and_is_not_a_step() {
        let mut options = options();
        options.warm_up = Duration::from_millis(1500);
        let mut calls = Vec::new();
        let (steps, point) = ramp("planted", &options, |agents, load| {
            calls.push((agents, load.rate, load.duration));
            planted(agents, load)
        })
        .expect("ramp");
        assert_eq!(calls[0], (13, 1000.0, Duration::from_millis(1500)));
        assert_eq!(calls[1], (13, 1000.0, options.step_duration()));
        assert_eq!(calls.len(), steps.len() + 1);
        assert_eq!(steps[0].step, 0);
        assert_eq!(point.sustained_per_second, Some(8_000.0));
        // None without one.
        options.warm_up = Duration::ZERO;
        let mut runs = 0;
        let (steps, _) = ramp("planted", &options, |agents, load| {
            runs += 1;
            planted(agents, load)
        })
        .expect("ramp");
        assert_eq!(runs, steps.len());
    }

    #[test]
    fn latencies_are_compared_below_the_lower_breaking_point() {
        let (_, ours) = ramp("planted", &options(), planted).expect("ramp");
        // A design that sustains only 4k/s, with 38 agents.
        let mut slower = ours.clone();
        slower.sustained_per_second = Some(4_000.0);
        slower.agents = Some(38);
        let loads = latency_loads(&ours, &slower).expect("both sustained a step");
        assert_eq!(loads, vec![(0.5, 2_000.0, 38), (0.8, 3_200.0, 38)]);
        assert_eq!(latency_loads(&slower, &ours), Some(loads), "either order");
        let mut broken = ours.clone();
        broken.sustained_per_second = None;
        broken.agents = None;
        assert_eq!(latency_loads(&ours, &broken), None);
    }

    #[test]
    fn errors_past_the_limit_break_too() {
        let erring = |_agents: usize, load: &LoadOptions| {
            let mut latency = crate::nanosecond_histogram();
            latency.record(1_000).expect("in range");
            let refused = if load.rate > 3_000.0 { 2 } else { 0 };
            let counts = RunCounts {
                scheduled: 1000,
                sent: 1000 - refused,
                refused,
                answered: 1000 - refused,
                ..RunCounts::default()
            };
            Ok(LoadResult::new("erring", load, &counts, latency))
        };
        let (_, point) = ramp("erring", &options(), erring).expect("ramp");
        assert_eq!(point.sustained_per_second, Some(2_000.0));
        assert!(point.reason.as_deref().unwrap_or("").contains("refused"));
    }
}
