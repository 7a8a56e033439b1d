//! What each command does. Running a node: load the profile, read the
//! topology, plan, start the shards, wait for SIGINT or SIGTERM, stop.

use caxton_numa::{MachineTopology, PlacementPlan};
use caxton_profiles::{LoadedProfile, ProfileErrorKind, Violation};
use caxton_shards::Node;
use tracing::{info, warn};

use crate::cli::{
    BenchmarkCommand, Cli, Command, HdrCommand, ProfileSelection, ProfilesCommand, ServerCommand,
};

/// How a command failed, which decides the exit status.
#[derive(Debug)]
pub enum CommandError {
    /// The input was refused; nothing was started.
    BadInput(String),
    /// Something failed while running.
    Failed(String),
}

/// Log to stderr. The filter is `RUST_LOG` when set, else the profile's
/// `observability.log_level` (commands without a profile use `info`).
fn init_logging(profile: Option<&LoadedProfile>) -> Result<(), CommandError> {
    use tracing_subscriber::EnvFilter;
    let filter = match (std::env::var("RUST_LOG"), profile) {
        (Ok(directives), _) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|error| CommandError::BadInput(format!("RUST_LOG `{directives}`: {error}")))?,
        (_, Some(loaded)) => {
            let level = &loaded.profile.observability.log_level;
            EnvFilter::try_new(level).map_err(|error| {
                CommandError::BadInput(
                    loaded
                        .reject(
                            ProfileErrorKind::InvalidValue,
                            Violation {
                                key: "observability.log_level".into(),
                                message: format!("`{level}` is not a log filter: {error}"),
                                hint: Some(
                                    "use `info`, `debug` or `caxton_shards=debug,warn`".into(),
                                ),
                            },
                        )
                        .to_string(),
                )
            })?
        }
        _ => EnvFilter::new("info"),
    };
    use std::io::IsTerminal;
    // A second initialization (tests calling commands in-process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr a pipe whose reader
        // is gone) is dropped. Reporting it would `eprintln!` to the same
        // stderr, which panics: the thread that logged (a shard, the
        // signal watcher) would die, and a node must outlive its log reader.
        .log_internal_errors(false)
        .try_init();
    Ok(())
}

/// Run the command `cli` names.
pub fn dispatch(cli: Cli) -> Result<(), CommandError> {
    // Commands that load a profile log at its level; the rest log at `info`.
    if !matches!(
        cli.command,
        None | Some(Command::Benchmark(_)) | Some(Command::Server(_))
    ) {
        init_logging(None)?;
    }
    match cli.command {
        None => run_node(&cli.selection, &cli.joins),
        Some(Command::Server(ServerCommand::Start { joins })) => {
            let all: Vec<String> = cli.joins.iter().cloned().chain(joins).collect();
            run_node(&cli.selection, &all)
        }
        Some(Command::Cluster(command)) => crate::remote::cluster(&cli.selection, command),
        Some(Command::Profiles(command)) => profiles_command(cli.selection, command),
        Some(Command::Benchmark(command)) => benchmark_command(&cli.selection, command),
        Some(Command::Agents(command)) => crate::remote::agents(&cli.selection, command),
        Some(Command::Send {
            agent,
            content,
            performative,
            timeout,
            persistent,
            no_wait,
            priority,
            endpoint,
        }) => crate::remote::send(
            &cli.selection,
            &endpoint,
            crate::remote::Message {
                agent: &agent,
                content: &content,
                performative: &performative,
                timeout: &timeout,
                persistent,
                wait_for_reply: !no_wait,
                priority: priority.as_deref(),
            },
        ),
        Some(Command::Hdr(HdrCommand::Dump { output, endpoint })) => {
            crate::remote::hdr_dump(&cli.selection, &endpoint, &output)
        }
        Some(Command::Hdr(command)) => crate::hdr::run(command),
        Some(Command::Topology { synthetic }) => topology_command(&cli.selection, synthetic),
        Some(Command::Host(command)) => crate::operations::host(&cli.selection, command),
        Some(Command::Performance(command)) => {
            crate::operations::performance(&cli.selection, command)
        }
        Some(Command::Memory(command)) => crate::operations::memory(&cli.selection, command),
        Some(Command::Profile(command)) => crate::profiling::run(&cli.selection, command),
    }
}

/// `engine profiles ...`: built-in names, a merged profile, who reads each key.
fn profiles_command(
    mut selection: ProfileSelection,
    command: ProfilesCommand,
) -> Result<(), CommandError> {
    match command {
        ProfilesCommand::List => emit(
            &caxton_profiles::BUILTIN_NAMES
                .map(|name| format!("{name}\n"))
                .concat(),
        ),
        ProfilesCommand::Show { profiles } => {
            selection.profiles.extend(profiles);
            emit(&load_profile(&selection)?.to_yaml())
        }
        ProfilesCommand::Keys => emit(&key_listing()),
    }
}

/// One line per key prefix: the part of the engine that reads it.
fn key_listing() -> String {
    caxton_profiles::KEY_TABLE
        .iter()
        .map(|(prefix, reader)| format!("{prefix:<28} in effect: {reader}\n"))
        .collect()
}

/// `engine benchmark ...`: a suite, or a custom or stress load.
fn benchmark_command(
    selection: &ProfileSelection,
    command: BenchmarkCommand,
) -> Result<(), CommandError> {
    match command {
        BenchmarkCommand::Run {
            suite,
            quick,
            output,
            compare,
            duration,
            window,
            rust_echo,
        } => run_benchmark(
            selection,
            SuiteArgs {
                suite,
                quick,
                output,
                compare,
                duration,
                window,
                rust_echo,
            },
        ),
        BenchmarkCommand::Custom {
            agents,
            messages_per_second,
            duration,
            pattern,
            compare,
            target,
            token,
            output,
            generators,
        } => crate::loadbench::custom(
            selection,
            crate::loadbench::CustomArgs {
                agents,
                rate: messages_per_second as f64,
                duration,
                load: crate::loadbench::LoadArgs {
                    pattern,
                    compare,
                    target,
                    token,
                    output,
                    generators,
                },
            },
        ),
        BenchmarkCommand::Stress {
            ramp_up_time,
            warm_up,
            latency_run,
            max_agents,
            find_breaking_point,
            pattern,
            start_rate,
            growth,
            steps,
            p99_target,
            rounds,
            compare,
            target,
            token,
            output,
            generators,
        } => crate::loadbench::stress(
            selection,
            crate::loadbench::StressArgs {
                ramp_up_time,
                warm_up,
                latency_run,
                max_agents,
                find_breaking_point,
                start_rate,
                growth,
                steps,
                p99_target,
                rounds,
                load: crate::loadbench::LoadArgs {
                    pattern,
                    compare,
                    target,
                    token,
                    output,
                    generators,
                },
            },
        ),
    }
}

/// `engine topology`: this machine (or a synthetic one) and the placement plan.
fn topology_command(
    selection: &ProfileSelection,
    synthetic: Option<String>,
) -> Result<(), CommandError> {
    let loaded = load_profile(selection)?;
    let topology = match synthetic {
        Some(description) => MachineTopology::synthetic(&description),
        None => MachineTopology::discover(),
    }
    .map_err(|error| CommandError::BadInput(error.to_string()))?;
    let plan = plan_placement(&loaded, &topology)?;
    emit(&format!("{topology}{plan}"))
}

/// Write `text` to stdout. A closed pipe (`engine profiles show | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CommandError> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(CommandError::Failed(
            format!("cannot write to stdout: {error}"),
        )),
        _ => Ok(()),
    }
}

pub fn load_profile(selection: &ProfileSelection) -> Result<LoadedProfile, CommandError> {
    caxton_profiles::load(&selection.profiles, &selection.overrides)
        .map_err(|error| CommandError::BadInput(error.to_string()))
}

/// This machine's topology, or why hwloc could not read it.
fn this_machine() -> Result<MachineTopology, CommandError> {
    MachineTopology::discover().map_err(|error| CommandError::Failed(error.to_string()))
}

/// Plan `loaded` on `topology`, or the located profile error that refuses it.
pub fn plan_placement(
    loaded: &LoadedProfile,
    topology: &MachineTopology,
) -> Result<PlacementPlan, CommandError> {
    caxton_numa::plan(topology, &loaded.profile).map_err(|violation| {
        CommandError::BadInput(
            loaded
                .reject(ProfileErrorKind::Placement, violation)
                .to_string(),
        )
    })
}

/// The modules of `agents.deploy`, read before anything starts so that a
/// missing file is refused like any other bad input.
fn read_boot_agents(loaded: &LoadedProfile) -> Result<Vec<(String, Vec<u8>, u16)>, CommandError> {
    loaded
        .profile
        .agents
        .deploy
        .iter()
        .enumerate()
        .map(|(index, deployment)| {
            let key = format!("agents.deploy[{index}].module");
            let location = loaded.location_of(&key);
            let path = loaded.module_path(index);
            let source = std::fs::read(&path).map_err(|error| {
                let at = location
                    .map(|location| format!("{location}: "))
                    .unwrap_or_default();
                CommandError::BadInput(format!(
                    "profile error: {at}`{key}`: cannot read `{}`: {error}",
                    path.display()
                ))
            })?;
            Ok((deployment.name.clone(), source, deployment.instances))
        })
        .collect()
}

/// The profile of a benchmark (low-latency unless `--profile` says otherwise),
/// with `overrides` applied before the user's; logging starts at its level.
pub fn load_benchmark_profile(
    selection: &ProfileSelection,
    overrides: &[String],
) -> Result<LoadedProfile, CommandError> {
    let mut selection = selection.clone();
    if selection.profiles.is_empty() {
        selection.profiles.push("low-latency".into());
    }
    for (index, override_) in overrides.iter().enumerate() {
        selection.overrides.insert(index, override_.clone());
    }
    let loaded = load_profile(&selection)?;
    init_logging(Some(&loaded))?;
    Ok(loaded)
}

/// The inputs of `engine benchmark run`.
struct SuiteArgs {
    suite: String,
    quick: bool,
    output: Option<std::path::PathBuf>,
    compare: Option<String>,
    duration: Option<String>,
    window: Option<u32>,
    rust_echo: Option<std::path::PathBuf>,
}

/// The suites `engine benchmark run --suite` runs.
const SUITES: [&str; 4] = ["standard", "scaling", "persistence", "cluster"];

fn run_benchmark(selection: &ProfileSelection, args: SuiteArgs) -> Result<(), CommandError> {
    let compare = crate::loadbench::compare_baseline(args.compare.as_deref())?;
    if !SUITES.contains(&args.suite.as_str()) {
        return Err(CommandError::BadInput(format!(
            "--suite `{}` is not a suite; the suites are: {}",
            args.suite,
            SUITES.join(", ")
        )));
    }
    if args.rust_echo.is_some() && args.suite != "standard" {
        return Err(CommandError::BadInput(
            "--rust-echo runs with the standard suite".into(),
        ));
    }
    if let Some(directory) = &args.output {
        check_output_directory(directory)?;
    }
    if args.suite == "persistence" {
        if compare {
            return Err(CommandError::BadInput(
                "--compare baseline runs with the standard and scaling suites".into(),
            ));
        }
        if args.duration.is_some() || args.window.is_some() {
            return Err(CommandError::BadInput(
                "--duration and --window apply to the standard, scaling and cluster suites; the persistence suite's runs are its own (--quick shortens them)".into(),
            ));
        }
        return run_persistence_benchmark(selection, args.quick, args.output);
    }
    let mut options = if args.quick {
        caxton_bench::standard::SuiteOptions::quick()
    } else {
        caxton_bench::standard::SuiteOptions::full()
    };
    if let Some(text) = &args.duration {
        let duration = crate::loadbench::duration("--duration", text)?;
        if duration < std::time::Duration::from_millis(1)
            || duration > caxton_bench::custom::DURATION_MAX
        {
            return Err(CommandError::BadInput(format!(
                "--duration `{text}` is outside 1ms..={}h",
                caxton_bench::custom::DURATION_MAX.as_secs() / 3600
            )));
        }
        options.throughput_time = duration;
        options.agent_to_agent.duration = duration;
    }
    if let Some(window) = args.window {
        options.agent_to_agent.window = window;
    }
    if let Some(path) = &args.rust_echo {
        let module = std::fs::read(path).map_err(|error| {
            CommandError::BadInput(format!("--rust-echo {}: {error}", path.display()))
        })?;
        options.rust_echo = Some(module);
    }
    options
        .agent_to_agent
        .check()
        .map_err(CommandError::BadInput)?;
    if args.suite == "scaling" {
        return run_scaling_benchmark(selection, &options, compare, args.output);
    }
    if args.suite == "cluster" {
        if compare {
            return Err(CommandError::BadInput(
                "--compare baseline runs with the standard and scaling suites".into(),
            ));
        }
        return run_cluster_benchmark(selection, &options, args.window.is_some(), args.output);
    }
    run_standard_benchmark(selection, &options, compare, args.output)
}

/// The profile layers a benchmark ran, as printed.
fn benchmark_profile_name(selection: &ProfileSelection) -> String {
    if selection.profiles.is_empty() {
        "low-latency".to_owned()
    } else {
        selection.profiles.join("+")
    }
}

fn run_standard_benchmark(
    selection: &ProfileSelection,
    options: &caxton_bench::standard::SuiteOptions,
    compare: bool,
    output: Option<std::path::PathBuf>,
) -> Result<(), CommandError> {
    // Room for the density scenario's idle agents on top of the profile's own.
    let loaded = load_benchmark_profile(
        selection,
        &[format!(
            "runtime.max_agents={}",
            options.density_agents + 16
        )],
    )?;
    let topology = this_machine()?;
    let plan = plan_placement(&loaded, &topology)?;
    let mut node = Node::start(&loaded.profile, &plan)
        .map_err(|error| CommandError::Failed(error.to_string()))?;
    let machine = caxton_bench::machine_line();
    let result = caxton_bench::standard::run_standard_suite(
        &mut node,
        &loaded.profile,
        &benchmark_profile_name(selection),
        topology.cores.len(),
        options,
    );
    let shutdown = node.shutdown();
    let failed = |error: caxton_bench::standard::SuiteError| {
        CommandError::Failed(format!("benchmark failed: {error}"))
    };
    let summary = result.map_err(failed)?;
    shutdown.map_err(|error| CommandError::Failed(error.to_string()))?;
    let report = caxton_bench::standard::with_agent_to_agent(
        summary,
        &loaded.profile,
        &plan,
        options,
        compare,
    )
    .map_err(failed)?;
    if let Some(directory) = &output {
        report
            .write(directory)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    }
    emit(&format!(
        "{machine}\n{}",
        caxton_bench::standard::render_report(&report)
    ))?;
    if !compare {
        return Ok(());
    }
    // The suite's comparable workload on both designs: request-reply, one
    // echo agent per shard, offered open-loop at half of what the closed-loop
    // scenario reached, so both designs see the same load.
    let reached = report
        .summary
        .scenarios
        .iter()
        .find(|scenario| scenario.name == "request_reply_throughput")
        .map_or(10_000.0, |scenario| scenario.per_second);
    let rate = (reached / 2.0).max(1.0);
    let agents = report.summary.shards.max(1);
    emit(&format!(
        "\n--compare baseline: request-reply offered open-loop at {rate:.0}/s (half of the {reached:.0}/s request_reply_throughput reached), {agents} echo agent(s), {} ms on each design\n",
        options.throughput_time.as_millis()
    ))?;
    crate::loadbench::custom(
        selection,
        crate::loadbench::CustomArgs {
            agents,
            rate,
            duration: format!("{}ms", options.throughput_time.as_millis()),
            load: crate::loadbench::LoadArgs {
                pattern: "request-reply".into(),
                compare: Some("baseline".into()),
                target: None,
                token: None,
                output: output.map(|directory| directory.join("compare-baseline")),
                generators: None,
            },
        },
    )
}

/// `engine benchmark run --suite cluster`: two in-process nodes on loopback QUIC.
fn run_cluster_benchmark(
    selection: &ProfileSelection,
    options: &caxton_bench::standard::SuiteOptions,
    window_given: bool,
    output: Option<std::path::PathBuf>,
) -> Result<(), CommandError> {
    let loaded = load_benchmark_profile(selection, &[])?;
    let machine = this_machine()?;
    // Each node plans on its own half of the machine, as two machines
    // would; a one-core machine has no halves, and both nodes share it.
    let halves = [machine.part(0, 2), machine.part(1, 2)];
    let topologies = match halves {
        [Some(a), Some(b)] => [a, b],
        _ => [machine.clone(), machine.clone()],
    };
    let plans = [
        plan_placement(&loaded, &topologies[0])?,
        plan_placement(&loaded, &topologies[1])?,
    ];
    // One client keeps the window: deeper than the pair runs' default.
    let window = if window_given {
        options.agent_to_agent.window as usize
    } else {
        256
    };
    let report = caxton_bench::cluster::run(
        &loaded.profile,
        [&plans[0], &plans[1]],
        options.agent_to_agent.duration,
        window,
        &|line| caxton_bench::stderr_line!("benchmark: {line}"),
    )
    .map_err(|error| CommandError::Failed(format!("benchmark failed: {error}")))?;
    if let Some(directory) = output {
        caxton_bench::standard::write_histograms(&directory, &report.histograms(), &report)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    }
    emit(&format!(
        "{}
profile {}: 2 nodes on loopback QUIC, {} data shard(s) each on {} of the machine's {} core(s){}
{}",
        caxton_bench::machine_line(),
        benchmark_profile_name(selection),
        plans[0].data_shards.len(),
        topologies[0].cores.len(),
        machine.cores.len(),
        plans[0]
            .notes
            .iter()
            .map(|note| format!("\n  node a: {note}"))
            .collect::<String>(),
        caxton_bench::cluster::render(&report)
    ))
}

fn run_scaling_benchmark(
    selection: &ProfileSelection,
    options: &caxton_bench::standard::SuiteOptions,
    compare: bool,
    output: Option<std::path::PathBuf>,
) -> Result<(), CommandError> {
    use caxton_bench::scaling;
    let loaded = load_benchmark_profile(selection, &[])?;
    let topology = this_machine()?;
    // Every data shard the plan gives this profile is the last step.
    let most = plan_placement(&loaded, &topology)?.data_shards.len();
    let scaling_options = scaling::ScalingOptions {
        pairs: options.agent_to_agent.clone(),
        compare_baseline: compare,
    };
    let setup = |error: CommandError| {
        caxton_bench::standard::SuiteError::Setup(match error {
            CommandError::BadInput(message) | CommandError::Failed(message) => message,
        })
    };
    let steps = scaling::run_scaling(
        &scaling::shard_counts(most),
        |shards| {
            // After the user's own overrides, so the step's count wins.
            let mut step = selection.clone();
            step.overrides
                .push(format!("runtime.worker_threads={shards}"));
            let loaded = load_benchmark_profile(&step, &[]).map_err(setup)?;
            let plan = plan_placement(&loaded, &topology).map_err(setup)?;
            Ok((loaded.profile, plan))
        },
        &scaling_options,
    )
    .map_err(|error| CommandError::Failed(format!("benchmark failed: {error}")))?;
    let summary = scaling::summarize(
        steps,
        caxton_bench::machine_line(),
        benchmark_profile_name(selection),
        topology.cores.len(),
        &scaling_options,
    );
    if let Some(directory) = &output {
        summary
            .write(directory)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    }
    emit(&scaling::render(&summary))
}

fn run_persistence_benchmark(
    selection: &ProfileSelection,
    quick: bool,
    output: Option<std::path::PathBuf>,
) -> Result<(), CommandError> {
    let loaded = load_benchmark_profile(selection, &[])?;
    let topology = this_machine()?;
    let plan = plan_placement(&loaded, &topology)?;
    let options = if quick {
        caxton_bench::persistence::PersistenceOptions::quick()
    } else {
        caxton_bench::persistence::PersistenceOptions::full()
    };
    let summary = caxton_bench::persistence::run_persistence_suite(
        &loaded.profile,
        &plan,
        &benchmark_profile_name(selection),
        topology.cores.len(),
        &options,
    )
    .map_err(|error| CommandError::Failed(format!("benchmark failed: {error}")))?;
    if let Some(directory) = output {
        caxton_bench::standard::write_results(&directory, &summary.scenarios, &summary)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    }
    emit(&format!(
        "{}\n{}",
        caxton_bench::machine_line(),
        caxton_bench::persistence::render(&summary)
    ))
}

fn run_node(selection: &ProfileSelection, joins: &[String]) -> Result<(), CommandError> {
    let loaded = load_profile(selection)?;
    init_logging(Some(&loaded))?;
    let topology = this_machine()?;
    let plan = plan_placement(&loaded, &topology)?;
    check_pool_reservation(&loaded, plan.data_shards.len())?;
    info!(layers = %loaded.layers.join(" + "), "profile loaded");
    for name in &selection.profiles {
        // A built-in name always means the built-in: a file of that name
        // here was likely meant, and is not what runs.
        if caxton_profiles::BUILTIN_NAMES.contains(&name.as_str())
            && std::path::Path::new(name).is_file()
        {
            warn!("--profile {name}: the built-in profile `{name}` is used, not the file `{name}` in this directory; write `./{name}` for the file");
        }
    }
    warn_about_idle_keys(&loaded, joins);
    info!("{}", topology.to_string().trim_end());
    info!("{}", plan.to_string().trim_end());
    for note in &plan.notes {
        warn!("{note}");
    }
    for note in caxton_profiles::messaging_notes(&loaded.profile, plan.data_shards.len()) {
        info!("{note}");
    }

    // Signals are blocked from reaching shard threads by routing them to one
    // watcher thread; it only flips the node's stop signal.
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|error| CommandError::Failed(format!("cannot install signal handlers: {error}")))?;
    let boot_agents = read_boot_agents(&loaded)?;
    // Everything that can be refused is checked before a shard starts, and
    // the data directory before the admin endpoint binds its port.
    if loaded.profile.messaging.enable_persistence {
        let directory = std::path::Path::new(&loaded.profile.storage.data_directory);
        caxton_storage::check_data_directory(directory, plan.data_shards.len()).map_err(
            |error| {
                // A partition that will not open is the node's own data:
                // nothing is changed, and the way on is the operator's.
                let hint = match &error {
                    caxton_storage::StorageError::Sqlite { .. } => {
                        "move that file away to start its shard empty, or restore it from a backup"
                    }
                    _ => "",
                };
                crate::admin::refuse(&loaded, "storage.data_directory", error.to_string(), hint)
            },
        )?;
    }
    let admin = crate::admin::prepare(&loaded)?;
    let hdr_log = crate::admin::open_hdr_log(&loaded)?;
    let (controller_handle, jobs) = caxton_admin::ControllerHandle::channel();
    let senders = caxton_admin::SendPool::default();
    let gossip_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            CommandError::Failed(format!("cannot build the gossip shard's runtime: {error}"))
        })?;
    let cluster = crate::cluster::prepare(&loaded, joins, &gossip_runtime)?;
    if let Some((listener, settings)) = &admin {
        crate::admin::announce(listener, settings);
    }
    let (remote_port, remote_port_wanted) = tokio::sync::oneshot::channel();
    let redeliver = loaded.profile.messaging.enable_persistence;
    let cluster = cluster.map(|node| {
        (
            node,
            remote_port_wanted,
            controller_handle.clone(),
            redeliver,
        )
    });
    let remote_port = cluster.is_some().then_some(remote_port);
    let gossip_work = gossip_work(
        gossip_runtime,
        admin.map(|(listener, settings)| {
            (
                listener,
                settings,
                controller_handle.clone(),
                senders.clone(),
            )
        }),
        cluster,
    );
    drop(controller_handle);
    // In a cluster, stored messages run once the directory has settled.
    let in_cluster = remote_port.is_some();
    let options = caxton_shards::NodeOptions {
        gossip_work,
        remote_port: in_cluster,
        await_directory: in_cluster,
    };
    let mut node = Node::start_with(&loaded.profile, &plan, options)
        .map_err(|error| CommandError::Failed(error.to_string()))?;
    // In a cluster, messages for agents other nodes host leave through the
    // remote port, which the gossip shard drives; it also redelivers the
    // stored messages once it knows those agents (`cluster::shard_side`).
    let remote_port = remote_port.and_then(|wanted| match node.take_remote_port() {
        Some(port) => Some((wanted, port)),
        None => {
            warn!("no client port left for remote routing: raise runtime.client_ports");
            None
        }
    });
    let redeliver_now = remote_port.is_none();
    if in_cluster && redeliver_now {
        // No cluster loop will say the directory settled: nothing waits.
        let _ = node.directory_settled();
    }
    if let Err(error) = bring_back_agents(&mut node, &loaded, boot_agents, redeliver_now) {
        let _ = node.shutdown();
        return Err(error);
    }
    if let Some((wanted, port)) = remote_port {
        let _ = wanted.send(port);
    }
    // Every client port the remote port did not take serves the endpoint's
    // sends, each driven by a sender thread with many sends in flight (no
    // other client runs in a node).
    let mut clients = Vec::new();
    while clients.len() < node.client_ports() {
        match node.client() {
            Ok(client) => clients.push(client),
            Err(_) => break,
        }
    }
    senders.start(clients);
    log_placements(&node);
    let stop = node.stop_signal();
    let watcher = signals.handle();
    watch_signals(signals, std::sync::Arc::clone(&stop))?;
    let max_map_count = caxton_agents::kernel_max_map_count();
    let pools =
        caxton_agents::PoolSizes::for_shard(&loaded.profile, plan.data_shards.len(), max_map_count);
    info!(
        data_shards = plan.data_shards.len(),
        instances_per_shard = pools.instances,
        handler_stacks_per_shard = pools.handler_stacks,
        max_map_count,
        "engine running; send SIGINT or SIGTERM to stop"
    );
    let collector = caxton_admin::Collector::new(node.data_shards(), hdr_log);
    let controller = caxton_admin::Controller {
        node,
        collector,
        profile: loaded.profile.clone(),
    };
    let result = controller.run(jobs, stop);
    watcher.close();
    result.map_err(|error| CommandError::Failed(error.to_string()))?;
    info!("engine stopped cleanly");
    Ok(())
}

/// Refuse a profile whose agent pools would reserve more address space
/// than a process has to give: every shard's pool reserves each pooled
/// instance's whole memory ceiling, and past the machine's address space
/// the first shard to start would fail with the allocator's bare error.
fn check_pool_reservation(loaded: &LoadedProfile, data_shards: usize) -> Result<(), CommandError> {
    let pools = caxton_agents::PoolSizes::for_shard(
        &loaded.profile,
        data_shards,
        caxton_agents::kernel_max_map_count(),
    );
    let per_shard = caxton_agents::pool_reservation_bytes(&loaded.profile, pools);
    let total = per_shard.saturating_mul(data_shards as u64);
    if total <= caxton_agents::POOL_ADDRESS_SPACE_MAX {
        return Ok(());
    }
    let runtime = &loaded.profile.runtime;
    Err(crate::admin::refuse(
        loaded,
        "runtime.max_memory_per_agent",
        format!(
            "{} per agent × {} pooled instances per shard (max_agents {} + agent_pool_size {}) × {data_shards} data shards reserves {} TiB of address space, above the {} TiB a node's pools may take",
            runtime.max_memory_per_agent,
            pools.instances,
            runtime.max_agents,
            runtime.agent_pool_size,
            total >> 40,
            caxton_agents::POOL_ADDRESS_SPACE_MAX >> 40,
        ),
        "lower runtime.max_memory_per_agent (an agent's own `memory` limit may still ask for less), runtime.max_agents or runtime.agent_pool_size, or set runtime.wasm.memory_pooling: false",
    ))
}

/// Refuse, before a benchmark runs, an `--output` directory its results
/// could not be written to (a file there, no permission), rather than
/// throw away a finished run. The directory is made if missing.
pub(crate) fn check_output_directory(directory: &std::path::Path) -> Result<(), CommandError> {
    let refuse = |why: String| {
        CommandError::BadInput(format!(
            "--output {}: {why}; nothing was run",
            directory.display()
        ))
    };
    if directory.exists() && !directory.is_dir() {
        return Err(refuse("exists and is not a directory".into()));
    }
    std::fs::create_dir_all(directory).map_err(|error| refuse(error.to_string()))?;
    let probe = directory.join(format!(".caxton-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|error| refuse(format!("cannot write there: {error}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `engine cluster simulate`: a seeded cluster simulation with a progress bar.
pub fn simulate_cluster(
    selection: &ProfileSelection,
    args: crate::cli::SimulateArgs,
) -> Result<(), CommandError> {
    let loaded = load_profile(selection)?;
    if !(2..=10_000).contains(&args.nodes) {
        return Err(CommandError::BadInput(format!(
            "--nodes {} is out of range: use 2 to 10000",
            args.nodes
        )));
    }
    if !(0.0..=0.5).contains(&args.loss) {
        return Err(CommandError::BadInput(format!(
            "--loss {} is out of range: use 0 to 0.5",
            args.loss
        )));
    }
    if !(0.0..=3.0).contains(&args.jitter) {
        return Err(CommandError::BadInput(format!(
            "--jitter {} is out of range: use 0 to 3",
            args.jitter
        )));
    }
    let parse = |flag: &str, text: &str| {
        humantime::parse_duration(text)
            .map_err(|error| CommandError::BadInput(format!("{flag} `{text}`: {error}")))
    };
    let latency = parse("--latency", &args.latency)?;
    let duration = parse("--duration", &args.duration)?;
    if duration.is_zero() || duration > std::time::Duration::from_secs(7 * 24 * 3600) {
        return Err(CommandError::BadInput(
            "--duration must be above 0 and at most a week".into(),
        ));
    }
    let scenario: caxton_cluster::simulation::Scenario =
        args.scenario.parse().map_err(CommandError::BadInput)?;
    let formation: caxton_cluster::simulation::Formation =
        args.formation.parse().map_err(CommandError::BadInput)?;
    if !matches!(args.format.as_str(), "text" | "json" | "row") {
        return Err(CommandError::BadInput(format!(
            "--format `{}`: use text, json or row",
            args.format
        )));
    }
    if let Some(directory) = &args.output {
        check_output_directory(directory)?;
    }
    let swim = caxton_cluster::SwimSettings::from_profile(&loaded.profile);
    let config = caxton_cluster::simulation::SimulationConfig {
        nodes: args.nodes,
        swim: None,
        network: caxton_cluster::simulation::Network {
            loss: args.loss,
            latency,
            jitter_sigma: args.jitter,
            ..caxton_cluster::simulation::Network::default()
        },
        duration,
        seed: args.seed,
        scenario,
        formation,
    };
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} simulated {msg} [{bar:40}] {percent}% (wall {elapsed_precise})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (summary, report) =
        caxton_bench::gossip::run(&loaded.layers.join(" + "), &swim, config, |done, total| {
            bar.set_length(total.as_millis().max(1) as u64);
            bar.set_position(done.as_millis() as u64);
            bar.set_message(format!(
                "{:.0}s of {:.0}s",
                done.as_secs_f64(),
                total.as_secs_f64()
            ));
        });
    bar.finish_and_clear();
    if let Some(directory) = &args.output {
        caxton_bench::gossip::write(directory, &summary, &report)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
    }
    match args.format.as_str() {
        "json" => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&summary)
                .map_err(|error| CommandError::Failed(error.to_string()))?
        )),
        "row" => emit(&format!(
            "{}\n",
            caxton_bench::gossip::markdown_row(&summary)
        )),
        _ => emit(&format!(
            "{}\n{}\n",
            caxton_bench::machine_line(),
            caxton_bench::gossip::render(&summary)
        )),
    }
}

/// What the gossip shard's thread runs: the admin endpoint and cluster
/// membership side by side on one current-thread runtime, until the node's
/// stop signal; the cluster then leaves gracefully before the thread ends.
fn gossip_work(
    runtime: tokio::runtime::Runtime,
    admin: Option<(
        std::net::TcpListener,
        caxton_admin::AdminSettings,
        caxton_admin::ControllerHandle,
        caxton_admin::SendPool,
    )>,
    cluster: Option<(
        caxton_cluster::transport::ClusterNode,
        tokio::sync::oneshot::Receiver<caxton_shards::RemotePort>,
        caxton_admin::ControllerHandle,
        bool,
    )>,
) -> Option<caxton_shards::GossipWork> {
    if admin.is_none() && cluster.is_none() {
        return None;
    }
    Some(Box::new(
        move |stop: std::sync::Arc<caxton_shards::StopSignal>| {
            runtime.block_on(async move {
                let (stopped, watch) = tokio::sync::watch::channel(false);
                tokio::task::spawn_blocking(move || {
                    stop.wait_blocking();
                    let _ = stopped.send(true);
                });
                let until_stop = |mut watch: tokio::sync::watch::Receiver<bool>| async move {
                    let _ = watch.wait_for(|stopped| *stopped).await;
                };
                let (cluster_handle, cluster_run) = match cluster {
                    Some((node, remote_port, controller, redeliver)) => {
                        let (handle, queries) = caxton_cluster::transport::ClusterHandle::channel();
                        let stop = until_stop(watch.clone());
                        let run = async move {
                            // The remote port arrives once the node has
                            // started; without it, membership runs alone.
                            let local = remote_port.await.ok().map(|port| {
                                crate::cluster::shard_side(port, controller, redeliver)
                            });
                            node.run_with(queries, local, stop).await;
                        };
                        (Some(handle), Some(run))
                    }
                    None => (None, None),
                };
                let admin_run = admin.map(|(listener, settings, handle, senders)| {
                    caxton_admin::serve(
                        listener,
                        settings,
                        handle,
                        senders,
                        cluster_handle,
                        until_stop(watch.clone()),
                    )
                });
                tokio::join!(
                    async {
                        if let Some(run) = admin_run {
                            run.await;
                        }
                    },
                    async {
                        if let Some(run) = cluster_run {
                            run.await;
                        }
                    },
                );
            });
        },
    ))
}

/// Say which keys the profile sets away from their defaults wait for
/// something this run lacks: the cluster's without a cluster, the
/// storage's without persistence; and the other transport's (from a
/// built-in profile; the loader refuses them written anywhere else). A key
/// written at its default (saved `profiles show` output writes them all)
/// changes nothing and is not named.
fn warn_about_idle_keys(loaded: &LoadedProfile, joins: &[String]) {
    let other_transport = loaded.idle_transport_keys();
    if !other_transport.is_empty() {
        info!(
            "transport.type is {}: these keys belong to the other transport and change nothing: {}",
            loaded.profile.transport.kind.name(),
            other_transport.join(", ")
        );
    }
    // Alone exactly when the cluster settings find no cluster: `--join`
    // without a listen address joins from a free port.
    if loaded.profile.coordination.cluster.listen_address.is_none() && joins.is_empty() {
        let idle: Vec<&str> = loaded
            .changed_keys()
            .filter(|key| key.starts_with("coordination.") || key.starts_with("transport."))
            .filter(|key| {
                !caxton_profiles::is_idle_transport_key(loaded.profile.transport.kind, key)
            })
            .collect();
        if !idle.is_empty() {
            info!(
                "this node runs alone (no coordination.cluster.listen_address, no --join); these keys wait for a cluster: {}",
                idle.join(", ")
            );
        }
    }
    if !loaded.profile.messaging.enable_persistence {
        // Storage keys shape the partitions, and there are none without persistence.
        let idle: Vec<&str> = loaded
            .changed_keys()
            .filter(|key| {
                key.starts_with("storage.")
                    || matches!(
                        *key,
                        "messaging.enable_compression"
                            | "messaging.message_ttl"
                            | "messaging.cleanup_interval"
                    )
            })
            .collect();
        if !idle.is_empty() {
            warn!(
                "no storage partitions without messaging.enable_persistence; these keys wait for it: {}",
                idle.join(", ")
            );
        }
    }
    // Keys that act only beside another that is off (or that a finer one
    // outweighs), named when the profile sets them.
    let profile = &loaded.profile;
    let runtime = &profile.runtime;
    let in_cluster = profile.coordination.cluster.listen_address.is_some();
    for (idle, key, why) in [
        (
            !runtime.wasm.stack_pooling,
            "runtime.time_slice",
            "without runtime.wasm.stack_pooling a handler cannot yield at a slice's end and runs to its end; the slice still sets how often max_execution_time is checked",
        ),
        (
            runtime.cpu_affinity.enabled || !runtime.numa.enabled,
            "runtime.numa.cpu_bind",
            "acts only with runtime.numa.enabled and runtime.cpu_affinity off (cpu_affinity pins each shard to one core, finer than its NUMA node's)",
        ),
        (
            !runtime.wasm.cache_compiled_modules,
            "runtime.wasm.module_cache_size",
            "sizes a cache that runtime.wasm.cache_compiled_modules: false turns off",
        ),
        (
            in_cluster && !profile.transport.connection_pool.pre_warm,
            "transport.connection_pool.warm_connections",
            "counts the connections opened ahead of need, which transport.connection_pool.pre_warm: false turns off",
        ),
        (
            profile.observability.hdr_log.directory.is_none(),
            "observability.hdr_log.interval",
            "paces the HDR log, written only with observability.hdr_log.directory",
        ),
    ] {
        if idle && loaded.changed_keys().any(|written| written == key) {
            warn!("{key}: {why}");
        }
    }
    if !profile.messaging.priority_routing.enabled
        && loaded
            .changed_keys()
            .any(|key| key.starts_with("messaging.priority_routing.queues"))
    {
        warn!("messaging.priority_routing.queues wait for messaging.priority_routing.enabled: every message shares one first-in, first-out class");
    }
    let over = caxton_profiles::memory_limits_over_the_ceiling(profile);
    if !over.is_empty() {
        let listed: Vec<String> = over
            .iter()
            .map(|(key, value)| format!("{key} ({value})"))
            .collect();
        warn!(
            "{} over runtime.max_memory_per_agent ({}): those agents get {} (raise runtime.max_memory_per_agent to give them more)",
            listed.join(", "),
            profile.runtime.max_memory_per_agent,
            profile.runtime.max_memory_per_agent
        );
    }
}

/// With persistence, redeploy the stored agents and (with `redeliver_now`;
/// in a cluster the gossip shard does it once it knows the agents other
/// nodes host) redeliver their unfinished messages; then deploy the
/// profile's boot agents that storage did not bring back.
fn bring_back_agents(
    node: &mut Node,
    loaded: &LoadedProfile,
    boot_agents: Vec<(String, Vec<u8>, u16)>,
    redeliver_now: bool,
) -> Result<(), CommandError> {
    let mut recovered = Vec::new();
    if loaded.profile.messaging.enable_persistence {
        let failed = |error: caxton_shards::NodeError| {
            CommandError::Failed(format!("recovery failed: {error}"))
        };
        recovered = node.recover_agents().map_err(failed)?;
        let agents = recovered.len();
        let directory = std::path::absolute(&loaded.profile.storage.data_directory)
            .unwrap_or_else(|_| loaded.profile.storage.data_directory.clone().into());
        // Which agents came back, and with how many instances: the operator
        // checks a restart against what ran before it.
        let listed: Vec<String> = recovered
            .iter()
            .map(|agent| format!("{} ({})", agent.name, agent.instances))
            .collect();
        if !listed.is_empty() {
            info!(
                agents,
                "agents recovered from storage (instances): {}",
                listed.join(", ")
            );
        }
        if redeliver_now {
            let messages = node.redeliver_unfinished().map_err(failed)?;
            info!(
                agents,
                redelivered = messages,
                directory = %directory.display(),
                "storage partitions opened; unfinished messages redelivered"
            );
        } else {
            info!(
                agents,
                directory = %directory.display(),
                "storage partitions opened; unfinished messages wait for the cluster directory"
            );
        }
    }
    for (name, source, instances) in boot_agents {
        let limits = loaded.profile.agent_limits(&name);
        if node.directory().resolve(&name).is_some() {
            match recovered.iter().find(|agent| agent.name == name) {
                Some(stored) => {
                    if let Some(differences) =
                        recovered_differs(stored, &source, instances, &limits)
                    {
                        warn!(
                            agent = %name,
                            "agent came back from storage as it was deployed ({differences}); the profile's agents.deploy entry and agents.overrides for it are not applied to a recovered agent. To apply them, undeploy it (engine agents undeploy {name}) and restart, or deploy it again"
                        );
                    } else {
                        info!(agent = %name, "agent already recovered from storage; not deployed again");
                    }
                }
                None => info!(agent = %name, "agent already running; not deployed again"),
            }
            continue;
        }
        node.deploy(&name, &source, instances, &limits)
            .map_err(|error| {
                // Name the profile entry, as a profile's other errors do.
                let entry = loaded
                    .profile
                    .agents
                    .deploy
                    .iter()
                    .position(|entry| entry.name == name)
                    .map(|index| {
                        format!(
                            "agents.deploy[{index}] (module {}): ",
                            loaded.profile.agents.deploy[index].module
                        )
                    })
                    .unwrap_or_default();
                CommandError::BadInput(format!("{entry}{error}"))
            })?;
        info!(
            agent = %name,
            instances,
            memory = %limits.memory,
            cpu_shares = %limits.cpu_shares,
            max_execution_time = %limits.max_execution_time,
            "agent deployed"
        );
    }
    Ok(())
}

/// Where an agent recovered from storage differs from what the profile
/// asks for it now, as `stored X, the profile asks Y` phrases; `None` when
/// it does not.
fn recovered_differs(
    stored: &caxton_shards::RecoveredAgent,
    source: &[u8],
    instances: u16,
    limits: &caxton_profiles::AgentLimits,
) -> Option<String> {
    let mut differences = Vec::new();
    if stored.module != source {
        differences.push("a module other than its agents.deploy file holds now".to_owned());
    }
    if stored.instances != u32::from(instances) {
        differences.push(format!(
            "{} instance(s) where the profile asks {instances}",
            stored.instances
        ));
    }
    let mut limit = |key: &str, was: String, asked: String| {
        if was != asked {
            differences.push(format!("{key} {was} where the profile asks {asked}"));
        }
    };
    limit(
        "memory",
        stored.limits.memory.to_string(),
        limits.memory.to_string(),
    );
    limit(
        "cpu_shares",
        stored.limits.cpu_shares.to_string(),
        limits.cpu_shares.to_string(),
    );
    limit(
        "max_execution_time",
        stored.limits.max_execution_time.to_string(),
        limits.max_execution_time.to_string(),
    );
    (!differences.is_empty()).then(|| differences.join(", "))
}

/// Log where each shard runs, as read back from its thread.
fn log_placements(node: &Node) {
    for report in node.reports() {
        let memory = match &report.memory_policy {
            Ok((nodes, policy)) => format!(
                "{policy} on nodes {}",
                caxton_numa::format_index_list(nodes)
            ),
            Err(error) => format!("unreadable ({error})"),
        };
        info!(
            shard = %report.role,
            tid = report.tid,
            cpus = %caxton_numa::format_index_list(&report.allowed_pus),
            memory = %memory,
            spin_before_park = ?report.spin_before_park,
            "shard placed"
        );
        if let Some(warning) = &report.memory_warning {
            warn!(shard = %report.role, "{warning}; running with the kernel's default policy");
        }
    }
}

/// Start the thread that turns the first SIGINT or SIGTERM into a stop request.
fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    stop: std::sync::Arc<caxton_shards::StopSignal>,
) -> Result<(), CommandError> {
    std::thread::Builder::new()
        .name("caxton-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // The stop first: nothing the log does may keep it from the node.
                stop.request();
                info!(signal, "stopping on signal");
            }
        })
        .map(drop)
        .map_err(|error| CommandError::Failed(format!("cannot start the signal thread: {error}")))
}
