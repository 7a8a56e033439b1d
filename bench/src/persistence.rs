//! `engine benchmark run --suite persistence`: what durability costs.
//!
//! The same node twice, with `messaging.enable_persistence` off and on:
//! routing latency (send to handler start, as the shards record it) and
//! round trips of one request at a time, each way; then persisted messages
//! per second per shard: durable sends to a sink agent, with a window
//! outstanding per client so the writer threads can batch. The partitions go to a temporary
//! directory unless the profile names one.

use std::time::{Duration, Instant};

use caxton_messaging::{Durability, Performative};
use caxton_numa::PlacementPlan;
use caxton_profiles::Profile;
use caxton_shards::{Client, Node, SendOptions};
use hdrhistogram::Histogram;

use crate::nanosecond_histogram;
use crate::standard::{ScenarioResult, SuiteError, Summary, ECHO_WAT};

/// How much to run.
#[derive(Clone, Debug)]
pub struct PersistenceOptions {
    /// Requests, one at a time, for each latency scenario.
    pub requests: usize,
    /// How long the throughput scenario offers durable sends.
    pub throughput_time: Duration,
    /// Durable sends outstanding per client in the throughput scenario.
    pub window: usize,
}

impl PersistenceOptions {
    /// The full run.
    pub fn full() -> Self {
        Self {
            requests: 20_000,
            throughput_time: Duration::from_secs(10),
            window: 2048,
        }
    }

    /// A short run.
    pub fn quick() -> Self {
        Self {
            requests: 2_000,
            throughput_time: Duration::from_secs(2),
            window: 2048,
        }
    }
}

fn traffic(message: impl Into<String>) -> SuiteError {
    SuiteError::Traffic(message.into())
}

/// One request at a time: (round trips, shard-side routing latency).
fn one_at_a_time(
    node: &Node,
    client: &mut Client,
    echo: caxton_messaging::AgentId,
    requests: usize,
    durable: bool,
) -> Result<(Histogram<u64>, Histogram<u64>), SuiteError> {
    node.metrics(true)?;
    let mut round_trips = nanosecond_histogram();
    let timeout = Duration::from_secs(10);
    for _ in 0..requests {
        let started = Instant::now();
        let token = if durable {
            client
                .send_persistent(
                    echo,
                    Performative::Request,
                    b"0123456789abcdef".to_vec(),
                    Default::default(),
                    timeout,
                )
                .map_err(|error| traffic(error.to_string()))?
                .0
        } else {
            client
                .send(
                    echo,
                    Performative::Request,
                    b"0123456789abcdef".to_vec(),
                    Default::default(),
                )
                .map_err(|error| traffic(error.to_string()))?
        };
        client
            .await_reply(token, timeout)
            .map_err(|error| traffic(error.to_string()))?;
        round_trips.saturating_record(started.elapsed().as_nanos() as u64);
    }
    let mut routing = nanosecond_histogram();
    for shard in node.metrics(false)? {
        let _ = routing.add(&shard.routing_local_ns);
        let _ = routing.add(&shard.routing_cross_ns);
    }
    Ok((round_trips, routing))
}

/// Durable sends to `sink` with `window` outstanding per client, from one
/// client per shard, for `duration`: (messages persisted, elapsed,
/// acceptance latency).
fn persisted_throughput(
    node: &Node,
    sink: caxton_messaging::AgentId,
    window: usize,
    duration: Duration,
) -> Result<(u64, Duration, Histogram<u64>), SuiteError> {
    let clients = node.data_shards().clamp(1, node.client_ports() - 1);
    let mut threads = Vec::new();
    for _ in 0..clients {
        let mut client = node.client()?;
        threads.push(std::thread::spawn(
            move || -> Result<(u64, Histogram<u64>), String> {
                let mut accepted = 0u64;
                let mut latency = nanosecond_histogram();
                let mut outstanding = std::collections::HashMap::with_capacity(window);
                let deadline = Instant::now() + duration;
                loop {
                    let sending = Instant::now() < deadline;
                    while sending && outstanding.len() < window {
                        let (token, envelope) = client.request_envelope(
                            sink,
                            Performative::Request,
                            b"0123456789abcdef".to_vec(),
                            SendOptions::default(),
                            Durability::Requested,
                        );
                        let now = envelope.sent_at_ns;
                        if client.send_envelope(envelope).is_err() {
                            break;
                        }
                        outstanding.insert(token, now);
                    }
                    if outstanding.is_empty() {
                        return Ok((accepted, latency));
                    }
                    let Some(envelope) = client.recv(Duration::from_secs(10)) else {
                        return Err("no acceptance within 10 s".into());
                    };
                    // Replies from echo are not what is measured here.
                    if let Durability::Notice(_) = envelope.durability {
                        let sent = outstanding
                            .remove(&envelope.in_reply_to)
                            .ok_or("a notice for no outstanding send")?;
                        if envelope.performative != Performative::Agree {
                            return Err(format!(
                                "a durable send was refused: {}",
                                String::from_utf8_lossy(&envelope.content)
                            ));
                        }
                        accepted += 1;
                        latency.saturating_record(client.now_ns().saturating_sub(sent));
                    }
                }
            },
        ));
    }
    let started = Instant::now();
    let mut accepted = 0;
    let mut latency = nanosecond_histogram();
    for thread in threads {
        let (count, histogram) = thread
            .join()
            .map_err(|_| traffic("a client thread panicked"))?
            .map_err(traffic)?;
        accepted += count;
        let _ = latency.add(&histogram);
    }
    Ok((accepted, started.elapsed(), latency))
}

/// Run the suite with `profile` (persistence is switched off, then on).
pub fn run_persistence_suite(
    profile: &Profile,
    plan: &PlacementPlan,
    profile_name: &str,
    cores: usize,
    options: &PersistenceOptions,
) -> Result<Summary, SuiteError> {
    let shards = plan.data_shards.len();
    let everywhere = vec![1u16; shards];
    let limits = profile.agents.default_limits.clone();
    let scratch = std::env::temp_dir().join(format!("caxton-bench-{}", std::process::id()));
    let mut scenarios = Vec::new();
    for durable in [false, true] {
        let mut profile = profile.clone();
        profile.messaging.enable_persistence = durable;
        if durable && profile.storage.data_directory == Profile::default().storage.data_directory {
            profile.storage.data_directory = scratch.display().to_string();
        }
        let label = if durable { "persistent" } else { "transient" };
        crate::stderr_line!(
            "benchmark: {label}: {} requests one at a time",
            options.requests
        );
        let mut node = Node::start(&profile, plan)?;
        let result = (|| {
            let echo =
                node.deploy_placed("bench-echo", ECHO_WAT.as_bytes(), &everywhere, &limits)?;
            let mut client = node.client()?;
            let started = Instant::now();
            let (round_trips, routing) =
                one_at_a_time(&node, &mut client, echo, options.requests, durable)?;
            let elapsed = started.elapsed();
            drop(client);
            let mut found = vec![
                ScenarioResult::from_histogram(&format!("routing_{label}"), routing, elapsed),
                ScenarioResult::from_histogram(
                    &format!("round_trip_{label}"),
                    round_trips,
                    elapsed,
                ),
            ];
            if durable {
                crate::stderr_line!(
                    "benchmark: persisted_throughput: {:?} of durable sends, {} outstanding per client",
                    options.throughput_time, options.window
                );
                // A sink answers nothing: only acceptances come back, so the
                // return rings carry one message per send.
                let sink = node.deploy_placed(
                    "bench-sink",
                    crate::custom::SINK_WAT.as_bytes(),
                    &everywhere,
                    &limits,
                )?;
                let (accepted, elapsed, latency) =
                    persisted_throughput(&node, sink, options.window, options.throughput_time)?;
                let mut scenario =
                    ScenarioResult::from_histogram("persisted_throughput", latency, elapsed);
                scenario.per_second = accepted as f64 / elapsed.as_secs_f64() / shards as f64;
                found.push(scenario);
            }
            Ok::<_, SuiteError>(found)
        })();
        let stopped = node.shutdown();
        scenarios.extend(result?);
        stopped?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Summary {
        machine: crate::machine_line(),
        profile: profile_name.to_owned(),
        shards,
        cores,
        scenarios,
        agent_density: None,
        skipped: Vec::new(),
        failures: Vec::new(),
        noisy_neighbour: None,
    })
}

/// Durable sends accepted per second per shard, the performance tuning
/// guide's persistence goal.
pub const PERSISTED_PER_SHARD_GOAL: f64 = 200_000.0;

/// The suite's figures as a table.
pub fn render(summary: &Summary) -> String {
    let mut out = format!(
        "profile {}: {} data shard(s) on {} core(s)\n{:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>14}\n",
        summary.profile, summary.shards, summary.cores, "scenario", "count", "P50", "P99", "P99.9", "max", "per second"
    );
    for scenario in &summary.scenarios {
        out.push_str(&format!(
            "{:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>14.0}{}\n",
            scenario.name,
            scenario.count,
            crate::custom::format_ns(scenario.p50_ns),
            crate::custom::format_ns(scenario.p99_ns),
            crate::custom::format_ns(scenario.p999_ns),
            crate::custom::format_ns(scenario.max_ns),
            scenario.per_second,
            if scenario.name == "persisted_throughput" {
                format!(
                    " per shard (goal ≥ {PERSISTED_PER_SHARD_GOAL:.0}: {})",
                    crate::agent_to_agent::verdict(scenario.per_second, PERSISTED_PER_SHARD_GOAL)
                )
            } else {
                String::new()
            }
        ));
    }
    out
}
