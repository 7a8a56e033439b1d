//! How long a node takes to start (every shard placed and reporting) and to
//! stop (every shard joined), per profile.
//!
//! `cargo run --release -p caxton-bench --bin shard-boot -- [ITERATIONS] [PROFILE...]`

use std::time::Instant;

use caxton_bench::{machine_line, nanosecond_histogram, percentile_line};
use caxton_numa::MachineTopology;
use caxton_shards::Node;

fn main() {
    let mut arguments = std::env::args().skip(1);
    let iterations: usize = arguments
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or(50);
    let mut profiles: Vec<String> = arguments.collect();
    if profiles.is_empty() {
        profiles = vec!["low-latency".into(), "high-throughput".into()];
    }
    println!("{}", machine_line());
    let topology = match MachineTopology::discover() {
        Ok(topology) => topology,
        Err(error) => {
            caxton_bench::stderr_line!("shard-boot: {error}");
            std::process::exit(1);
        }
    };
    for profile_name in profiles {
        let loaded = match caxton_profiles::load(std::slice::from_ref(&profile_name), &[]) {
            Ok(loaded) => loaded,
            Err(error) => {
                caxton_bench::stderr_line!("shard-boot: {error}");
                std::process::exit(2);
            }
        };
        let plan = match caxton_numa::plan(&topology, &loaded.profile) {
            Ok(plan) => plan,
            Err(violation) => {
                caxton_bench::stderr_line!("shard-boot: {profile_name}: {}", violation.message);
                std::process::exit(2);
            }
        };
        let mut start = nanosecond_histogram();
        let mut stop = nanosecond_histogram();
        for _ in 0..iterations {
            let begun = Instant::now();
            let node = match Node::start(&loaded.profile, &plan) {
                Ok(node) => node,
                Err(error) => {
                    caxton_bench::stderr_line!("shard-boot: {error}");
                    std::process::exit(1);
                }
            };
            let started = begun.elapsed();
            let stopping = Instant::now();
            if let Err(error) = node.shutdown() {
                caxton_bench::stderr_line!("shard-boot: {error}");
                std::process::exit(1);
            }
            let stopped = stopping.elapsed();
            // Saturate rather than fail on absurd values; the histogram's range is 100 s.
            start.saturating_record(started.as_nanos() as u64);
            stop.saturating_record(stopped.as_nanos() as u64);
        }
        println!(
            "profile {profile_name}: {} data shard(s) + gossip",
            plan.data_shards.len()
        );
        println!("{}", percentile_line("  node start", &start));
        println!("{}", percentile_line("  node stop", &stop));
    }
}
