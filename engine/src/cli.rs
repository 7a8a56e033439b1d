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
    /// Measure the engine.
    #[command(subcommand)]
    Benchmark(BenchmarkCommand),
    /// Print the machine's topology and the placement plan for a profile.
    Topology {
        /// Plan for an hwloc synthetic topology instead of this machine,
        /// e.g. "package:2 numa:2 core:8 pu:2".
        #[arg(long, value_name = "DESCRIPTION")]
        synthetic: Option<String>,
    },
}

/// `engine benchmark ...`.
#[derive(Debug, Subcommand)]
pub enum BenchmarkCommand {
    /// Run a benchmark suite against an in-process node.
    Run {
        /// The suite: `standard`.
        #[arg(long, default_value = "standard")]
        suite: String,
        /// A shorter run (within two minutes on a 2-core machine).
        #[arg(long)]
        quick: bool,
        /// Write HDR histograms (`SCENARIO.hlog`) and `summary.json` here.
        #[arg(long, value_name = "DIR")]
        output: Option<std::path::PathBuf>,
    },
}

/// `engine profiles ...`.
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Print the built-in profile names, one a line.
    List,
    /// Print the effective merged profile as YAML that loads back to the same profile.
    Show {
        /// Built-in names or files, overlaid in order (also accepted as --profile).
        #[arg(value_name = "NAME|FILE")]
        profiles: Vec<String>,
    },
    /// Print every key prefix and the part of the engine that reads it.
    Keys,
}
