//! `engine`: the Caxton command line.
//!
//! With no subcommand it runs a node on the given profiles; subcommands inspect
//! profiles and placement without starting anything. Bad input (a profile
//! that does not load, a placement that cannot be laid out) prints one line
//! and exits with status 2 before any thread starts.

mod admin;
mod agent_project;
mod cli;
mod cluster;
mod commands;
mod diagnostics;
mod hdr;
mod heap;
mod loadbench;
mod operations;
mod profiling;
mod remote;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

// jemalloc keeps per-thread arenas, so shards do not contend on one allocator lock.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for input the engine refuses (profile, placement, arguments).
const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for a failure while running.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let (status, message) = match commands::dispatch(cli) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(commands::CommandError::BadInput(message)) => (EXIT_BAD_INPUT, message),
        Err(commands::CommandError::Failed(message)) => (EXIT_FAILURE, message),
    };
    // Not `eprintln!`, which panics (exit 101) when stderr is a closed pipe:
    // the status is the answer then.
    let _ = writeln!(std::io::stderr(), "engine: {message}");
    ExitCode::from(status)
}
