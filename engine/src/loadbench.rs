//! `engine benchmark custom` and `engine benchmark stress`: open-loop loads on
//! an in-process node (or a running engine with `--target`), optionally
//! beside the conventional baseline design (`--compare baseline`).

use std::path::PathBuf;
use std::time::Duration;

use caxton_bench::custom::{
    self, check_load, BenchError, Comparison, LoadFlags, LoadOptions, LoadResult, LoadSummary,
    Pattern, RoundSummary, Workload,
};
use caxton_bench::remote::{self, Target};
use caxton_bench::standard::ScenarioResult;
use caxton_bench::stress::{self, StressOptions};
use caxton_numa::MachineTopology;
use caxton_profiles::{HumanDuration, LoadedProfile, Profile};
use caxton_shards::Node;

use crate::cli::ProfileSelection;
use crate::commands::{emit, CommandError};

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::BadInput(message.into())
}

fn bench_error(error: BenchError) -> CommandError {
    match error {
        BenchError::Input(message) => CommandError::BadInput(message),
        other => CommandError::Failed(format!("benchmark failed: {other}")),
    }
}

pub fn duration(flag: &str, text: &str) -> Result<Duration, CommandError> {
    text.parse::<HumanDuration>()
        .map(HumanDuration::get)
        .map_err(|error| bad(format!("{flag} `{text}`: {error}")))
}

fn pattern(text: &str) -> Result<Pattern, CommandError> {
    text.parse().map_err(bad)
}

pub fn compare_baseline(compare: Option<&str>) -> Result<bool, CommandError> {
    match compare {
        None => Ok(false),
        Some("baseline") => Ok(true),
        Some(other) => Err(bad(format!(
            "--compare `{other}`: the only design to compare with is `baseline`"
        ))),
    }
}

/// Where the load goes: an in-process node, or a running engine.
enum Destination {
    Node {
        node: Box<Node>,
        profile: Box<Profile>,
    },
    Remote {
        runtime: tokio::runtime::Runtime,
        target: Target,
        shards: usize,
        /// The workload agents the runs deployed on the target, removed at
        /// [`Destination::close`]: a benchmark leaves the node as it found it.
        deployed: Vec<String>,
    },
}

impl Destination {
    fn open(
        loaded: &LoadedProfile,
        target: Option<&str>,
        token: Option<String>,
    ) -> Result<Self, CommandError> {
        match target {
            Some(text) => {
                let address = crate::remote::host_port("--target", text)?;
                let token = match token {
                    Some(token) => Some(token),
                    None => crate::admin::token(loaded)?,
                };
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|error| {
                        CommandError::Failed(format!("cannot start a runtime: {error}"))
                    })?;
                let target = Target { address, token };
                let shards = remote::data_shards(&runtime, &target).map_err(bench_error)?;
                Ok(Self::Remote {
                    runtime,
                    target,
                    shards,
                    deployed: Vec::new(),
                })
            }
            None => {
                let topology = MachineTopology::discover()
                    .map_err(|error| CommandError::Failed(error.to_string()))?;
                let plan = crate::commands::plan_placement(loaded, &topology)?;
                let node = Node::start(&loaded.profile, &plan)
                    .map_err(|error| CommandError::Failed(error.to_string()))?;
                Ok(Self::Node {
                    node: Box::new(node),
                    profile: Box::new(loaded.profile.clone()),
                })
            }
        }
    }

    fn shards(&self) -> usize {
        match self {
            Self::Node { node, .. } => node.data_shards(),
            Self::Remote { shards, .. } => *shards,
        }
    }

    /// The load generators a run here starts for `requested`
    /// (`--generators`), checked against the node's client ports; a
    /// comparison gives the baseline the same number. `None` for a target,
    /// whose load this process sends through its admin API.
    fn generators(&self, requested: Option<usize>) -> Result<Option<usize>, CommandError> {
        match self {
            Self::Node { node, .. } => custom::generators_for(node, requested)
                .map(Some)
                .map_err(bench_error),
            Self::Remote { .. } => Ok(None),
        }
    }

    fn run(
        &mut self,
        workload: &Workload,
        options: &LoadOptions,
    ) -> Result<LoadResult, BenchError> {
        match self {
            Self::Node { node, profile } => {
                let entries = custom::deploy_workload(node, profile, workload)?;
                custom::run_on_node(node, workload, entries, options, "caxton")
            }
            Self::Remote {
                runtime,
                target,
                deployed,
                ..
            } => {
                for name in remote::prepare(runtime, target, workload)? {
                    if !deployed.contains(&name) {
                        deployed.push(name);
                    }
                }
                remote::run_on_target(runtime, target, workload, options)
            }
        }
    }

    fn close(self) -> Result<(), CommandError> {
        match self {
            Self::Node { node, .. } => node
                .shutdown()
                .map_err(|error| CommandError::Failed(error.to_string())),
            Self::Remote {
                runtime,
                target,
                deployed,
                ..
            } => remote::undeploy(&runtime, &target, &deployed).map_err(bench_error),
        }
    }
}

fn scenario(name: &str, result: &LoadResult, elapsed: Duration) -> ScenarioResult {
    ScenarioResult::from_histogram(name, result.latency.clone(), elapsed)
}

fn finish(summary: &LoadSummary, output: Option<PathBuf>) -> Result<(), CommandError> {
    if let Some(directory) = output {
        caxton_bench::standard::write_results(&directory, &summary.scenarios, summary)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    }
    emit(&custom::render_load_summary(summary))
}

/// The inputs `custom` and `stress` share.
pub struct LoadArgs {
    /// `--pattern`.
    pub pattern: String,
    /// `--compare`.
    pub compare: Option<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--output`.
    pub output: Option<PathBuf>,
    /// `--generators`.
    pub generators: Option<usize>,
}

/// The profile, the pattern and whether to compare, checked before anything starts.
fn prepare(
    selection: &ProfileSelection,
    args: &LoadArgs,
) -> Result<(LoadedProfile, Pattern, bool), CommandError> {
    let loaded = crate::commands::load_benchmark_profile(selection, &[])?;
    let pattern = pattern(&args.pattern)?;
    let compare = compare_baseline(args.compare.as_deref())?;
    if compare && args.target.is_some() {
        return Err(bad(
            "--compare baseline runs both designs here; it cannot be used with --target",
        ));
    }
    if args.generators == Some(0) {
        return Err(bad("--generators 0: a load needs at least one generator"));
    }
    if let Some(directory) = &args.output {
        crate::commands::check_output_directory(directory)?;
    }
    if args.generators.is_some() && args.target.is_some() {
        return Err(bad(
            "--generators sets the generator threads that load an in-process node; a --target engine is loaded through its admin API",
        ));
    }
    if args.token.is_some() && args.target.is_none() {
        return Err(bad(
            "--token is the access token of a running engine's admin endpoint: add --target HOST:PORT, or drop it to load an in-process node",
        ));
    }
    Ok((loaded, pattern, compare))
}

/// The inputs of `engine benchmark custom`.
pub struct CustomArgs {
    /// `--agents`.
    pub agents: usize,
    /// `--messages-per-second`.
    pub rate: f64,
    /// `--duration`.
    pub duration: String,
    /// What every load benchmark takes.
    pub load: LoadArgs,
}

/// `engine benchmark custom`.
pub fn custom(selection: &ProfileSelection, args: CustomArgs) -> Result<(), CommandError> {
    let (loaded, pattern, compare) = prepare(selection, &args.load)?;
    let LoadArgs {
        target,
        token,
        output,
        generators,
        ..
    } = args.load;
    let mut options = LoadOptions {
        rate: args.rate,
        duration: duration("--duration", &args.duration)?,
        drain: Duration::from_secs(5),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        generators,
    };
    check_load(&loaded.profile, args.agents, &options, LoadFlags::CUSTOM).map_err(bench_error)?;
    let workload = Workload::new(pattern, args.agents, None).map_err(bench_error)?;
    let machine_jitter = compare.then(|| caxton_bench::jitter::measure(JITTER_PROBE));
    let mut destination = Destination::open(&loaded, target.as_deref(), token)?;
    let shards = destination.shards();
    options.generators = destination.generators(options.generators)?;
    let ours = destination.run(&workload, &options);
    destination.close()?;
    let ours = ours.map_err(bench_error)?;
    let mut designs = vec![ours];
    if compare {
        designs
            .push(on_baseline(&loaded.profile, &workload, shards, &options).map_err(bench_error)?);
    }
    let comparison = (designs.len() == 2).then(|| {
        Comparison::new(
            None,
            (designs[0].p99_ns, designs[1].p99_ns),
            options.rate,
            cores(),
        )
    });
    let summary = LoadSummary {
        benchmark: "custom".into(),
        machine: machine(target.as_deref()),
        profile: profile_name(selection, target.as_deref()),
        shards,
        cores: cores(),
        pattern,
        agents: args.agents,
        scenarios: designs
            .iter()
            .map(|result| {
                scenario(
                    &format!("{}/{}", result.design, pattern.name()),
                    result,
                    options.duration,
                )
            })
            .collect(),
        designs,
        ramps: Vec::new(),
        breaking_points: Vec::new(),
        latency_at_loads: Vec::new(),
        comparison,
        rounds: Vec::new(),
        machine_jitter,
    };
    finish(&summary, output)
}

/// How long each P99 run of a stress comparison lasts unless `--latency-run` says.
const LATENCY_RUN_DEFAULT: &str = "5s";

/// The inputs of `engine benchmark stress`.
pub struct StressArgs {
    /// `--ramp-up-time`.
    pub ramp_up_time: String,
    /// `--warm-up`.
    pub warm_up: String,
    /// `--latency-run` (`None`: the default).
    pub latency_run: Option<String>,
    /// `--max-agents`.
    pub max_agents: usize,
    /// `--find-breaking-point`.
    pub find_breaking_point: bool,
    /// `--start-rate`.
    pub start_rate: f64,
    /// `--growth`.
    pub growth: f64,
    /// `--steps`.
    pub steps: usize,
    /// `--p99-target`.
    pub p99_target: Option<String>,
    /// `--rounds`.
    pub rounds: usize,
    /// What every load benchmark takes.
    pub load: LoadArgs,
}

/// `engine benchmark stress`.
pub fn stress(selection: &ProfileSelection, args: StressArgs) -> Result<(), CommandError> {
    let (mut loaded, pattern, compare) = prepare(selection, &args.load)?;
    // The benchmark's own node takes the agents the ramp asks for (the
    // guide's `--max-agents 10000` over a profile's 1000), unless the
    // operator set the limit: then it is theirs, and checked below.
    let profile_max = loaded.profile.runtime.max_agents;
    if args.load.target.is_none()
        && !loaded.written_by_user("runtime.max_agents")
        && u32::try_from(args.max_agents)
            .is_ok_and(|wanted| wanted > profile_max && wanted <= STRESS_AGENTS_RAISED_MAX)
    {
        loaded.profile.runtime.max_agents = args.max_agents as u32;
        caxton_bench::stderr_line!(
            "stress: runtime.max_agents raised from {profile_max} to {} for this benchmark's node (--max-agents)",
            args.max_agents
        );
    }
    if args.rounds == 0 {
        return Err(bad("--rounds 0: a stress run needs at least one round"));
    }
    if args.latency_run.is_some() && !compare {
        return Err(bad(
            "--latency-run times the P99 runs of --compare baseline: add --compare baseline, or drop it",
        ));
    }
    if args.rounds > 1 && !compare {
        return Err(bad(format!(
            "--rounds {}: rounds repeat the comparison with the baseline; add --compare baseline",
            args.rounds
        )));
    }
    let LoadArgs {
        target,
        token,
        output,
        generators,
        ..
    } = args.load;
    // The profile's target: the most urgent priority class's latency bound.
    let p99_target = match &args.p99_target {
        Some(text) => duration("--p99-target", text)?,
        None => loaded
            .profile
            .messaging
            .priority_routing
            .by_urgency()
            .first()
            .map_or(Duration::from_millis(10), |class| class.max_latency.get()),
    };
    let options = StressOptions {
        pattern,
        ramp_up_time: duration("--ramp-up-time", &args.ramp_up_time)?,
        max_agents: args.max_agents,
        find_breaking_point: args.find_breaking_point,
        start_rate: args.start_rate,
        growth: args.growth,
        steps: args.steps,
        p99_target,
        error_limit: 0.001,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        generators,
        warm_up: duration("--warm-up", &args.warm_up)?,
        latency_run: duration(
            "--latency-run",
            args.latency_run.as_deref().unwrap_or(LATENCY_RUN_DEFAULT),
        )?,
    };
    options.check().map_err(bench_error)?;
    let stretched = options.step_duration() * options.steps.max(1) as u32;
    if stretched > options.ramp_up_time {
        caxton_bench::stderr_line!(
            "stress: each of the {} steps runs at least {:?}, so the ramp takes {stretched:?}, not --ramp-up-time {:?}",
            options.steps,
            options.step_duration(),
            options.ramp_up_time
        );
    }
    let last = LoadOptions {
        rate: options.rate(options.steps - 1),
        duration: options.step_duration(),
        drain: Duration::ZERO,
        progress: false,
        generators: None,
    };
    // The last step has the most agents and the highest rate.
    let flags = LoadFlags {
        agents: "--max-agents",
        rate: "the last step's rate (--start-rate × --growth^(--steps − 1))",
    };
    check_load(&loaded.profile, args.max_agents, &last, flags).map_err(bench_error)?;
    let machine_jitter = compare.then(|| caxton_bench::jitter::measure(JITTER_PROBE));
    if let Some(warm_up) = options.warm_up_load() {
        caxton_bench::stderr_line!(
            "stress: an untimed warm-up of {:?} at {}/s with {} agent(s) comes before each ramp, and before each design's P99 runs when comparing (--warm-up 0s: none)",
            warm_up.duration,
            warm_up.rate,
            options.agents(0)
        );
    }
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            caxton_bench::stderr_line!("stress: round {round} of {}", args.rounds);
        }
        rounds.push(stress_round(
            &loaded,
            pattern,
            compare,
            &options,
            target.as_deref(),
            token.clone(),
        )?);
    }
    // Every round is reported, one without a comparison too (a design that
    // sustained no step): dropping it would renumber the rounds and hide it.
    let round_summaries: Vec<RoundSummary> = if rounds.len() > 1 {
        rounds
            .iter()
            .map(|round| RoundSummary {
                comparison: round.comparison.clone(),
                breaking_points: round.points.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let StressRound {
        shards,
        ramps,
        points,
        latency_at_loads,
        comparison,
    } = rounds.pop().expect("at least one round ran");
    let comparison = if round_summaries.is_empty() {
        comparison
    } else {
        let compared: Vec<Comparison> = round_summaries
            .iter()
            .filter_map(|round| round.comparison.clone())
            .collect();
        Comparison::median_of(&compared)
    };
    let step_duration = options.step_duration();
    let scenarios = ramps
        .iter()
        .flat_map(|(design, steps)| {
            steps.iter().map(move |step| {
                scenario(
                    &format!("{design}/step-{}", step.step),
                    &step.result,
                    step_duration,
                )
            })
        })
        .chain(latency_at_loads.iter().flat_map(|at| {
            [&at.caxton, &at.baseline].map(|result| {
                scenario(
                    &format!("{}/p99-at-{:.0}pct", result.design, at.share * 100.0),
                    result,
                    step_duration,
                )
            })
        }))
        .collect();
    let summary = LoadSummary {
        benchmark: "stress".into(),
        machine: machine(target.as_deref()),
        profile: profile_name(selection, target.as_deref()),
        shards,
        cores: cores(),
        pattern,
        agents: args.max_agents,
        scenarios,
        designs: Vec::new(),
        ramps,
        breaking_points: points,
        latency_at_loads,
        comparison,
        rounds: round_summaries,
        machine_jitter,
    };
    finish(&summary, output)
}

/// One stress round: Caxton's ramp and, when comparing, the baseline's,
/// then both at shares of the lower breaking point.
struct StressRound {
    shards: usize,
    ramps: Vec<(String, Vec<stress::StressStep>)>,
    points: Vec<stress::BreakingPoint>,
    latency_at_loads: Vec<stress::LatencyAtLoad>,
    comparison: Option<Comparison>,
}

/// Run one [`StressRound`].
fn stress_round(
    loaded: &LoadedProfile,
    pattern: Pattern,
    compare: bool,
    options: &StressOptions,
    target: Option<&str>,
    token: Option<String>,
) -> Result<StressRound, CommandError> {
    let mut destination = Destination::open(loaded, target, token.clone())?;
    let shards = destination.shards();
    // Both designs' generators: the number the node resolves.
    let options = &StressOptions {
        generators: destination.generators(options.generators)?,
        ..options.clone()
    };
    let ours = stress::ramp("caxton", options, |agents, load| {
        let workload = Workload::new(pattern, agents, None)?;
        destination.run(&workload, load)
    });
    destination.close()?;
    let (our_steps, our_point) = ours.map_err(bench_error)?;
    let mut ramps = vec![("caxton".to_owned(), our_steps)];
    let mut points = vec![our_point];
    if compare {
        let (steps, point) = stress::ramp("baseline", options, |agents, load| {
            let workload = Workload::new(pattern, agents, None)?;
            on_baseline(&loaded.profile, &workload, shards, load)
        })
        .map_err(bench_error)?;
        ramps.push(("baseline".to_owned(), steps));
        points.push(point);
    }
    // Throughput is compared at saturation (the breaking points), P99s at
    // shares of the lower breaking point, where both designs carry the load.
    let mut latency_at_loads = Vec::new();
    if let [ours, theirs] = points.as_slice() {
        if let Some(loads) = stress::latency_loads(ours, theirs) {
            // Caxton's runs on one node, then the baseline's; each design
            // warms up first at the lowest of the loads, as its ramp did.
            let warm_up = match (loads.first(), options.warm_up_load()) {
                (Some((_, rate, agents)), Some(load)) => Some((
                    Workload::new(pattern, *agents, None).map_err(bench_error)?,
                    LoadOptions {
                        rate: *rate,
                        ..load
                    },
                )),
                _ => None,
            };
            let mut destination = Destination::open(loaded, target, token)?;
            if let Some((workload, load)) = &warm_up {
                destination.run(workload, load).map_err(bench_error)?;
            }
            let mut caxton = Vec::new();
            for (_, rate, agents) in &loads {
                let workload = Workload::new(pattern, *agents, None).map_err(bench_error)?;
                let load = options.latency_load_at(*rate);
                caxton.push(destination.run(&workload, &load).map_err(bench_error)?);
            }
            destination.close()?;
            if let Some((workload, load)) = &warm_up {
                on_baseline(&loaded.profile, workload, shards, load).map_err(bench_error)?;
            }
            for ((share, rate, agents), caxton) in loads.into_iter().zip(caxton) {
                let workload = Workload::new(pattern, agents, None).map_err(bench_error)?;
                let baseline = on_baseline(
                    &loaded.profile,
                    &workload,
                    shards,
                    &options.latency_load_at(rate),
                )
                .map_err(bench_error)?;
                latency_at_loads.push(stress::LatencyAtLoad::new(share, agents, caxton, baseline));
            }
        }
    }
    // Throughput is judged from the breaking points; a design that never
    // broke bounds the ratio from one side, and neither breaking bounds it
    // not at all (both rates are the ramp's top).
    let comparison = match (points.as_slice(), headline(&latency_at_loads)) {
        ([ours, theirs], Some(at)) => ours
            .sustained_per_second
            .zip(theirs.sustained_per_second)
            .map(|(caxton, baseline)| {
                Comparison::new(
                    caxton_bench::custom::Saturation::Ramps {
                        caxton: (caxton, ours.broke_at_per_second.is_some()),
                        baseline: (baseline, theirs.broke_at_per_second.is_some()),
                    },
                    (at.caxton.p99_ns, at.baseline.p99_ns),
                    at.offered_per_second,
                    cores(),
                )
            }),
        _ => None,
    };
    Ok(StressRound {
        shards,
        ramps,
        points,
        latency_at_loads,
        comparison,
    })
}

/// `workload` under `load` on the baseline, with as many workers as the
/// node has data shards, and the load's generators (as many as Caxton's),
/// or one per worker.
fn on_baseline(
    profile: &Profile,
    workload: &Workload,
    shards: usize,
    load: &LoadOptions,
) -> Result<LoadResult, BenchError> {
    let workers = shards.max(1);
    let generators = load.generators.unwrap_or(workers);
    caxton_bench::baseline::run_on_baseline(profile, workload, workers, generators, load)
}

/// The most agents a stress run raises its own node's `runtime.max_agents`
/// to; past it the operator sets the key (and sizes the pools) knowingly.
const STRESS_AGENTS_RAISED_MAX: u32 = 100_000;

/// How long `--compare baseline` probes the machine's own stalls first.
const JITTER_PROBE: Duration = Duration::from_secs(1);

/// The run the headline P99 ratio is taken from: at
/// [`stress::P99_HEADLINE_SHARE`] of the lower breaking point.
fn headline(runs: &[stress::LatencyAtLoad]) -> Option<&stress::LatencyAtLoad> {
    runs.iter()
        .find(|run| (run.share - stress::P99_HEADLINE_SHARE).abs() < 1e-9)
}

fn machine(target: Option<&str>) -> String {
    match target {
        Some(target) => format!(
            "{} (load generator); engine at {target}",
            caxton_bench::machine_line()
        ),
        None => caxton_bench::machine_line(),
    }
}

fn cores() -> usize {
    MachineTopology::discover().map_or(0, |topology| topology.cores.len())
}

fn profile_name(selection: &ProfileSelection, target: Option<&str>) -> String {
    if target.is_some() {
        "the target engine's own".into()
    } else if selection.profiles.is_empty() {
        "low-latency".into()
    } else {
        selection.profiles.join("+")
    }
}
