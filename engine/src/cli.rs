//! The command-line grammar (clap derive).

use clap::{Args, Parser, Subcommand};

/// Caxton: a thread-per-core, shared-nothing engine for WebAssembly agents.
///
/// With no subcommand, runs a node: `engine --profile low-latency`.
#[derive(Debug, Parser)]
#[command(name = "engine", version, about, long_about)]
pub struct Cli {
    /// What to do; with none, run a node.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The profile selection (usable with every subcommand).
    #[command(flatten)]
    pub selection: ProfileSelection,
    /// Join the cluster a node at HOST:PORT belongs to (repeatable; adds to
    /// `coordination.cluster.seeds`). Beyond loopback it needs
    /// `coordination.cluster.listen_address`; on loopback a free port is taken.
    #[arg(long = "join", value_name = "HOST:PORT")]
    pub joins: Vec<String>,
}

/// `engine server ...`.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run a node on the profile selection, as `engine` alone does.
    Start {
        /// Join the cluster a node at HOST:PORT belongs to, as `engine --join`.
        // Its own id: sharing the top-level `--join`'s would make clap
        // replace one list with the other.
        #[arg(long = "join", id = "start_joins", value_name = "HOST:PORT")]
        joins: Vec<String>,
    },
}

/// Which profile to run or inspect.
#[derive(Debug, Args, Clone, Default)]
pub struct ProfileSelection {
    /// A built-in profile name or a YAML file; repeat to overlay (later wins).
    /// Built-ins: default, low-latency, high-throughput, memory-optimized,
    /// cluster-small, cluster-medium, cluster-large, network-lan, network-wan,
    /// network-unreliable.
    #[arg(long = "profile", value_name = "NAME|FILE", global = true)]
    pub profiles: Vec<String>,
    /// Override one key after every profile, e.g. `--set runtime.worker_threads=4`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE", global = true)]
    pub overrides: Vec<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show and explain profiles.
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// Measure the engine (on the low-latency profile unless --profile says otherwise).
    #[command(subcommand)]
    Benchmark(BenchmarkCommand),
    /// Deploy, list and undeploy agents on a running engine (through its admin endpoint).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Send a message to an agent of a running engine and print its reply.
    Send {
        /// The agent's name.
        agent: String,
        /// The content (UTF-8); `-` reads it from stdin, as text or as bytes (sent base64).
        content: String,
        /// The FIPA performative (request, inform, query-if, ...).
        #[arg(long, default_value = "request")]
        performative: String,
        /// How long to wait for the reply, e.g. `500ms`, `5s`; 1ms to 60s.
        #[arg(long, default_value = "5s", allow_hyphen_values = true)]
        timeout: String,
        /// Have the node store it before accepting it (needs `messaging.enable_persistence`).
        #[arg(long)]
        persistent: bool,
        /// Do not wait for the agent's reply: done once the node has taken
        /// the message (stored it, with `--persistent`). For one-way
        /// messages (`--performative inform`), which get no reply.
        #[arg(long)]
        no_wait: bool,
        /// Its priority class: a number (0: the most urgent) or a class's
        /// name from the node's `messaging.priority_routing.queues`
        /// (default: the class named `normal`, else the least urgent).
        #[arg(long)]
        priority: Option<String>,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Read, compare and fetch HDR histogram logs.
    #[command(subcommand)]
    Hdr(HdrCommand),
    /// Cluster membership: members and status of a running engine, test certificates.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Check whether this host is set up for a pinned engine: frequency
    /// governor, turbo, C-states, SMT siblings, isolcpus/nohz_full, IRQ
    /// affinity, transparent huge pages, kernel memory housekeeping
    /// (compaction, DAMON), NUMA balancing, swap, map and locked-memory
    /// limits, judged against the profile's shards.
    #[command(subcommand)]
    Host(HostCommand),
    /// Diagnose a running engine's performance from its live counters.
    #[command(subcommand)]
    Performance(PerformanceCommand),
    /// Watch a running engine's memory and name what grows.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Profile a running engine: CPU samples, heap samples, message traces.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Run a node: `engine server start` is `engine` with no subcommand
    /// (the performance tuning guide's spelling).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Print the machine's topology and the placement plan for a profile.
    Topology {
        /// Plan for an hwloc synthetic topology instead of this machine,
        /// e.g. "package:2 numa:2 core:8 pu:2".
        #[arg(long, value_name = "DESCRIPTION")]
        synthetic: Option<String>,
    },
}

/// `engine host ...`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Read /sys and /proc and report each setting that costs latency, with
    /// the command or file that fixes it. Nothing is changed.
    Check {
        /// The shard CPUs to judge (e.g. `2-7`); default: the CPUs the
        /// profile's placement plan gives its data shards on this machine.
        #[arg(long, value_name = "LIST")]
        cpus: Option<String>,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
        /// Read the files under this directory instead of `/` (a copy of
        /// another host's /sys and /proc).
        #[arg(long, value_name = "DIR", hide = true)]
        root: Option<std::path::PathBuf>,
    },
}

/// Which problem `engine performance diagnose` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Symptom {
    /// Messages take too long: slow agents, saturated shards, growing queues.
    HighLatency,
    /// The node handles fewer messages than offered: refusals, saturation.
    Throughput,
    /// Memory grows: queues, stored messages, agents (see `engine memory analyze`).
    Memory,
}

/// `engine performance ...`.
#[derive(Debug, Subcommand)]
pub enum PerformanceCommand {
    /// Read a running engine's counters and histograms twice, a window
    /// apart, and rank what explains the symptom, each finding with the
    /// performance tuning guide's remedy and the profile key to change.
    Diagnose {
        /// The symptom.
        #[arg(long, value_enum)]
        issue: Symptom,
        /// How long to watch between the two readings, e.g. `5s`. With no
        /// traffic in the window the totals since start are judged instead.
        #[arg(long, default_value = "5s", allow_hyphen_values = true)]
        window: String,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// `engine profile ...`.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Sample a running engine's heap with jemalloc's own profiler: every
    /// interval, the live heap as a gzipped pprof protobuf (`NAME-N.prof`
    /// beside the output; the last one also at the output, with a flame
    /// graph `.svg`), and jemalloc's statistics (allocated, active,
    /// resident, retained) per sample in `NAME.stats.json`.
    Memory {
        /// Time between samples, e.g. `1s`.
        #[arg(long, default_value = "1s", allow_hyphen_values = true)]
        interval: String,
        /// How long to sample, e.g. `30s`.
        #[arg(long, default_value = "30s", allow_hyphen_values = true)]
        duration: String,
        /// Where to write the last heap profile.
        #[arg(long, short)]
        output: std::path::PathBuf,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Sample a running engine's CPU for a while (the profiler runs inside
    /// the engine) and write a pprof protobuf that `go tool pprof` reads,
    /// with a flame graph SVG beside it. Samples keep their thread's name
    /// (shards, gossip, writers) as the label `thread`.
    Cpu {
        /// How long to sample, e.g. `30s`.
        #[arg(long, default_value = "30s", allow_hyphen_values = true)]
        duration: String,
        /// Where to write the profile; the flame graph goes beside it with
        /// the extension `.svg`.
        #[arg(long, short)]
        output: std::path::PathBuf,
        /// Samples per second of CPU time.
        #[arg(long, default_value_t = caxton_admin::CPU_PROFILE_FREQUENCY)]
        frequency: u32,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Sample N messages as they pass through a running engine and write
    /// each hop (send, ring, mailbox, handler start and end, the answer's
    /// way out, the hop to another node) with its shard and agent, as Chrome
    /// trace-event JSON that Perfetto (ui.perfetto.dev) and chrome://tracing open.
    Trace {
        /// How many messages to sample.
        #[arg(long, default_value_t = 1000)]
        messages: u32,
        /// Where to write the JSON.
        #[arg(long, short)]
        output: std::path::PathBuf,
        /// Stop waiting for traffic after this long, e.g. `60s`.
        #[arg(long, default_value = "60s", allow_hyphen_values = true)]
        timeout: String,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// `engine memory ...`.
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Sample resident memory, the allocator's statistics, each agent's
    /// linear memory and the queues over a window, fit a trend to each, and
    /// name what grows.
    Analyze {
        /// How long to watch, e.g. `1h`, `10m`, `30s`.
        #[arg(long, allow_hyphen_values = true)]
        duration: String,
        /// Time between samples; default: a sixtieth of the duration,
        /// between 100 ms and 1 minute.
        #[arg(long, allow_hyphen_values = true)]
        interval: Option<String>,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// `engine cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the members a running engine knows: name, address, state,
    /// incarnation, last heard.
    Members {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// A running engine's view: itself, members by state, suspicions, traffic.
    Status {
        /// Print the admin API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Simulate a cluster of many nodes on a virtual clock (the real
    /// membership code, a seeded lossy network) and print dissemination,
    /// failure detection, false verdicts and traffic beside the goals. The
    /// SWIM timing comes from `--profile` (cluster-size and network presets apply).
    Simulate(SimulateArgs),
    /// Watch a running node's SWIM traffic for a window (or read a
    /// simulation's output) and advise: traffic per peer, suspicions and
    /// refutations, convergence, flapping members, and what to change when it
    /// looks like a gossip storm.
    AnalyzeGossip {
        /// How long to watch, e.g. `10s`.
        #[arg(long, default_value = "10s", allow_hyphen_values = true)]
        window: String,
        /// Judge a simulation instead: the directory `engine cluster simulate --output` wrote.
        #[arg(long, value_name = "DIR")]
        from: Option<std::path::PathBuf>,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Make a test CA and a certificate and key per node, for trying a
    /// cluster out (not for production: the CA key sits beside them). Run
    /// again on the same directory, it certifies more nodes with its CA.
    InitCerts {
        /// Where to write `ca.pem`, `ca-key.pem`, `NODE.pem` and `NODE-key.pem`.
        directory: std::path::PathBuf,
        /// Node names, comma-separated, e.g. `a,b,c`.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Replace a CA already in the directory (nodes holding the old one
        /// will refuse every certificate made now).
        #[arg(long)]
        replace_ca: bool,
    },
}

/// `engine cluster simulate`'s arguments.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Nodes.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// Share of packets lost, 0 to 0.5 (`0.01` is 1%).
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    pub loss: f64,
    /// Median one-way latency, e.g. `250us`, `20ms`.
    #[arg(long, default_value = "250us")]
    pub latency: String,
    /// Latency spread: σ of the log-normal distribution (0: constant).
    #[arg(long, default_value_t = 0.5)]
    pub jitter: f64,
    /// Simulated time to measure, after the cluster forms, e.g. `60s`, `1h`.
    #[arg(long, default_value = "60s", allow_hyphen_values = true)]
    pub duration: String,
    /// Decides every random choice; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `steady` (nodes leave and rejoin), `crash`, `partition` or `churn`.
    #[arg(long, default_value = "steady")]
    pub scenario: String,
    /// How the cluster comes together before measuring: `formed` (every
    /// node starts knowing every other) or `joins` (each node joins through
    /// three earlier ones, and measuring waits until the news has spread).
    #[arg(long, default_value = "formed")]
    pub formation: String,
    /// Write HDR histograms and `summary.json` here.
    #[arg(long, value_name = "DIR")]
    pub output: Option<std::path::PathBuf>,
    /// `text` (the report), `json` (the summary) or `row` (one Markdown
    /// table row, as `scripts/gossip-presets.sh` collects them).
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// `engine benchmark ...`.
#[derive(Debug, Subcommand)]
#[command(
    after_help = "Every benchmark runs on the low-latency profile unless --profile says otherwise."
)]
pub enum BenchmarkCommand {
    /// Run a benchmark suite against an in-process node.
    Run {
        /// The suite: `standard`, `scaling` (agent-to-agent at 1, 2, 4, …
        /// data shards), `persistence` (what durable messages cost), or
        /// `cluster` (two in-process nodes on loopback QUIC: remote routing
        /// and request-reply against the local path).
        #[arg(long, default_value = "standard")]
        suite: String,
        /// A shorter run (within two minutes on a 2-core machine).
        #[arg(long)]
        quick: bool,
        /// Write HDR histograms (`SCENARIO.hlog`) and `summary.json` here.
        #[arg(long, value_name = "DIR")]
        output: Option<std::path::PathBuf>,
        /// Also run the comparable loads on the conventional design and print both: `baseline`.
        #[arg(long, value_name = "DESIGN")]
        compare: Option<String>,
        /// How long each timed run lasts (request_reply_throughput and every
        /// agent-to-agent run), e.g. `500ms`; default 2s with --quick, else 10s.
        #[arg(long, allow_hyphen_values = true)]
        duration: Option<String>,
        /// Requests each agent-to-agent driver keeps outstanding, 1 to 1024 (default 64).
        #[arg(long, allow_hyphen_values = true)]
        window: Option<u32>,
        /// Also run the standard suite's echo scenarios with this module (the
        /// Rust SDK's `echo.wasm`), as `*_rust` rows beside the WAT echo's.
        #[arg(long, value_name = "FILE")]
        rust_echo: Option<std::path::PathBuf>,
    },
    /// Offer a constant open-loop load and measure latency from each message's intended send time.
    Custom {
        /// Agents of the workload.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Offered rate, whole messages per second (all generators together).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
        messages_per_second: u64,
        /// How long the load is offered, e.g. `60s`.
        #[arg(long, default_value = "10s", allow_hyphen_values = true)]
        duration: String,
        /// `request-reply`, `one-way`, `fan-out` or `pipeline`.
        #[arg(long, default_value = "request-reply")]
        pattern: String,
        /// Also run the same load on the conventional design: `baseline`.
        #[arg(long, value_name = "DESIGN")]
        compare: Option<String>,
        /// Load a running engine through its admin API instead of an in-process node.
        #[arg(long, value_name = "HOST:PORT")]
        target: Option<String>,
        /// The access token for `--target` (default: `CAXTON_ADMIN_TOKEN`, then the profile's).
        #[arg(long)]
        token: Option<String>,
        /// Write HDR histograms and `summary.json` here.
        #[arg(long, value_name = "DIR")]
        output: Option<std::path::PathBuf>,
        /// Load generator threads (default: one for each CPU no data shard
        /// runs on, at most one per data shard, at least one); with
        /// `--compare baseline` the baseline gets as many.
        #[arg(long, value_name = "N")]
        generators: Option<usize>,
    },
    /// Raise the offered rate and agents step by step and find where latency or errors break.
    Stress {
        /// Total time of the ramp, e.g. `60s`.
        #[arg(long, default_value = "60s", allow_hyphen_values = true)]
        ramp_up_time: String,
        /// An untimed run at the first step's load before each ramp and
        /// before each design's P99 runs, so the first step does not pay
        /// for a cold process; `0s`: none.
        #[arg(long, default_value = "1s", allow_hyphen_values = true)]
        warm_up: String,
        /// How long each P99 run at a share of the lower breaking point
        /// lasts, with `--compare baseline` (at least one step): a longer run
        /// dilutes the machine's own stalls in both designs' P99s. Default 5s.
        #[arg(long, allow_hyphen_values = true)]
        latency_run: Option<String>,
        /// Agents at the last step.
        #[arg(long, default_value_t = 1000)]
        max_agents: usize,
        /// Stop at the first step past the limits and report the breaking point.
        #[arg(long)]
        find_breaking_point: bool,
        /// `request-reply`, `one-way`, `fan-out` or `pipeline`.
        #[arg(long, default_value = "request-reply")]
        pattern: String,
        /// Offered rate of the first step, messages per second.
        #[arg(long, default_value_t = 1_000.0)]
        start_rate: f64,
        /// Each step offers this many times the rate of the one before.
        #[arg(long, default_value_t = 1.5, allow_hyphen_values = true)]
        growth: f64,
        /// Number of steps.
        #[arg(long, default_value_t = 16)]
        steps: usize,
        /// P99 limit (default: the most urgent priority class's max_latency).
        #[arg(long)]
        p99_target: Option<String>,
        /// With `--compare baseline`: run the whole comparison this many
        /// times, the designs taking turns, and judge the goals on the
        /// median ratios (one round on a noisy machine can say anything).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Also ramp the conventional design: `baseline`.
        #[arg(long, value_name = "DESIGN")]
        compare: Option<String>,
        /// Load a running engine through its admin API instead of an in-process node.
        #[arg(long, value_name = "HOST:PORT")]
        target: Option<String>,
        /// The access token for `--target`.
        #[arg(long)]
        token: Option<String>,
        /// Write HDR histograms and `summary.json` here.
        #[arg(long, value_name = "DIR")]
        output: Option<std::path::PathBuf>,
        /// Load generator threads (default: one for each CPU no data shard
        /// runs on, at most one per data shard, at least one); with
        /// `--compare baseline` the baseline gets as many.
        #[arg(long, value_name = "N")]
        generators: Option<usize>,
    },
}

/// Where a running engine's admin endpoint is.
#[derive(Debug, Args, Clone)]
pub struct Endpoint {
    /// The admin endpoint's address; default: the profile's
    /// `observability.admin.listen` (127.0.0.1:1476).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// The access token; default: `CAXTON_ADMIN_TOKEN`, then the profile's
    /// `observability.admin.access_token`.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// `engine agents ...`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Upload a `.wasm` or `.wat` module and start its instances.
    Deploy {
        /// The module file.
        module: std::path::PathBuf,
        /// The agent's name (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Instances across the node, 1 to 4096.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(caxton_admin::DEPLOY_INSTANCES_MAX)))]
        instances: u16,
        /// Memory limit, e.g. `16MB` (default: the profile's limits).
        #[arg(long, value_parser = checked::<caxton_profiles::ByteSize>)]
        memory: Option<String>,
        /// CPU shares, e.g. `250m` (default: the profile's limits).
        #[arg(long, value_parser = checked::<caxton_profiles::CpuShares>)]
        cpu_shares: Option<String>,
        /// Longest handler run, e.g. `100ms` (default: the profile's limits).
        #[arg(long, value_parser = checked::<caxton_profiles::HumanDuration>)]
        max_execution_time: Option<String>,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List the deployed agents with their counts and handler latency.
    List {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Run more or fewer instances of a deployed agent: added first on
    /// shards that do not run it yet, removed from the shard with the most
    /// first; a handler on a removed instance finishes first. Kept across
    /// restarts with persistence.
    Scale {
        /// The agent's name.
        name: String,
        /// How many instances in all, 1 to 4096 (each shard that runs it keeps one).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(caxton_admin::DEPLOY_INSTANCES_MAX)))]
        instances: u16,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Stop every instance of an agent and remove it.
    Undeploy {
        /// The agent's name.
        name: String,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Write a ready-to-build Rust agent project (Cargo.toml, src/lib.rs,
    /// README) on the agent SDK, in a new directory NAME.
    New {
        /// The agent's name: the crate, the `.wasm` and the deployed agent.
        name: String,
        /// Where the project directory goes.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// The agent SDK (`sdk/rust` of a Caxton checkout); default: the
        /// source tree this engine was built from.
        #[arg(long, value_name = "PATH")]
        sdk: Option<std::path::PathBuf>,
    },
    /// Build a Rust agent project for wasm32-unknown-unknown and print the
    /// module's path and size.
    Build {
        /// The project's directory (the one with Cargo.toml).
        dir: std::path::PathBuf,
        /// A debug build instead of the size-optimized release build.
        #[arg(long)]
        debug: bool,
    },
}

/// `engine hdr ...`.
#[derive(Debug, Subcommand)]
pub enum HdrCommand {
    /// Print a log's percentile distribution in HdrHistogram's layout.
    Report {
        /// An HdrHistogram interval log (`.hlog`).
        file: std::path::PathBuf,
        /// Only intervals with this tag (default: every tag, one report each).
        #[arg(long)]
        tag: Option<String>,
        /// Divide values by this (the logs hold nanoseconds; 1000 prints microseconds).
        #[arg(long, default_value_t = 1000.0)]
        unit_ratio: f64,
    },
    /// Plot the percentile curves of one or more logs side by side.
    Plot {
        /// Interval logs (`.hlog`), or `FILE:TAG` for one tag of a log.
        #[arg(required = true)]
        files: Vec<String>,
        /// The image to write: `.svg` or `.png`.
        #[arg(long, short)]
        output: std::path::PathBuf,
        /// Only this tag of each log (default: every tag).
        #[arg(long)]
        tag: Option<String>,
        /// The plot's title.
        #[arg(long, default_value = "Latency by percentile")]
        title: String,
    },
    /// Fetch a running engine's latency histograms since it started, as a log.
    Dump {
        /// Where to write the log.
        #[arg(long, short)]
        output: std::path::PathBuf,
        /// How to reach the engine.
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// `engine profiles ...`.
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Print the built-in profile names, one a line.
    List,
    /// Print the effective merged profile as YAML that loads back to the same profile.
    Show {
        /// Built-in names or files, overlaid in order after any `--profile`.
        // Its own id: sharing the global `--profile`'s would make clap
        // replace one list with the other.
        #[arg(id = "show_profiles", value_name = "NAME|FILE")]
        profiles: Vec<String>,
    },
    /// Print every key prefix and the part of the engine that reads it.
    Keys,
}

/// A flag's text, as written, once it reads as a `T` (a size, a share, a
/// duration): refused here, the error names the flag, not the admin API's
/// query parameter the text travels in.
fn checked<T: std::str::FromStr<Err = String>>(text: &str) -> Result<String, String> {
    T::from_str(text).map(|_| text.to_owned())
}
