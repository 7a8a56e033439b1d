//! The noisy-neighbour scenario of the standard suite: echo request-reply
//! latency on a shard while a looping agent on the same shard is busy,
//! beside the same load with the loop idle. With time slices
//! (`runtime.wasm.stack_pooling`), the loop yields every `runtime.time_slice`
//! and the echo waits at most about one slice; without, it waits for the
//! loop's `max_execution_time`. Latency is the client's, from each request's
//! send to its answer (closed loop, one outstanding).

use std::time::{Duration, Instant};

use caxton_messaging::{AgentId, Performative};
use caxton_profiles::{AgentLimits, HumanDuration, Profile};
use caxton_shards::{Client, Node, SendOptions};
use serde::Serialize;

use crate::nanosecond_histogram;
use crate::standard::{ScenarioResult, SuiteError, ECHO_WAT};

/// The looping agent, as shipped in `examples/agents/loop.wat`.
const LOOP_WAT: &str = include_str!("../../examples/agents/loop.wat");

/// How long each of the loop's messages keeps it busy: its `max_execution_time`.
const LOOP_RUN: Duration = Duration::from_secs(2);

/// Messages queued for the loop: it stays busy for this many runs.
const LOOP_MESSAGES: usize = 4;

/// The scenario's two measurements and the slice they are held against.
#[derive(Clone, Debug, Serialize)]
pub struct NoisyNeighbour {
    /// Echo alone on its shard.
    pub quiet: ScenarioResult,
    /// Echo beside a busy loop.
    pub busy: ScenarioResult,
    /// `runtime.time_slice`, nanoseconds.
    pub time_slice_ns: u64,
    /// Whether handlers are sliced (`runtime.wasm.stack_pooling`).
    pub sliced: bool,
}

impl NoisyNeighbour {
    /// The goal line: busy P99 within two time slices.
    pub fn verdict(&self) -> String {
        let goal = self.time_slice_ns.saturating_mul(2);
        format!(
            "noisy_neighbour: echo P99 {:.2}µs beside a busy loop ({:.2}µs alone); goal <= 2 x time_slice = {:.2}µs: {}{}\n",
            self.busy.p99_ns as f64 / 1000.0,
            self.quiet.p99_ns as f64 / 1000.0,
            goal as f64 / 1000.0,
            if self.busy.p99_ns <= goal { "met" } else { "MISSED" },
            if self.sliced { "" } else { " (stack_pooling off: handlers are not sliced)" }
        )
    }
}

/// Run both measurements on data shard 0 with `requests` echo requests each.
pub fn noisy_neighbour(
    node: &mut Node,
    client: &mut Client,
    profile: &Profile,
    requests: usize,
) -> Result<NoisyNeighbour, SuiteError> {
    let mut first_only = vec![0u16; node.data_shards()];
    first_only[0] = 1;
    let limits = profile.agents.default_limits.clone();
    let echo = node.deploy_placed(
        "bench-noisy-echo",
        ECHO_WAT.as_bytes(),
        &first_only,
        &limits,
    )?;
    let looping = node.deploy_placed(
        "bench-noisy-loop",
        LOOP_WAT.as_bytes(),
        &first_only,
        &AgentLimits {
            max_execution_time: HumanDuration(LOOP_RUN),
            ..limits
        },
    )?;
    let quiet = timed_requests(client, echo, requests, "noisy_neighbour_quiet")?;
    let mut loop_tokens = Vec::new();
    for _ in 0..LOOP_MESSAGES {
        loop_tokens.push(
            client
                .send(
                    looping,
                    Performative::Request,
                    Vec::new(),
                    SendOptions::default(),
                )
                .map_err(|error| SuiteError::Traffic(error.to_string()))?,
        );
    }
    let busy = timed_requests(client, echo, requests, "noisy_neighbour_busy")?;
    node.undeploy("bench-noisy-loop")?;
    node.undeploy("bench-noisy-echo")?;
    // The loop's answers (execution-time, or undeployed): taken, not kept.
    for token in loop_tokens {
        let _ = client.await_reply(token, LOOP_RUN * (LOOP_MESSAGES as u32 + 1));
    }
    Ok(NoisyNeighbour {
        quiet,
        busy,
        time_slice_ns: u64::try_from(profile.runtime.time_slice.get().as_nanos())
            .unwrap_or(u64::MAX),
        sliced: profile.runtime.wasm.stack_pooling,
    })
}

/// `count` echo requests one after another, or as many as fit in the loop's
/// busy time; the client's latency of each.
fn timed_requests(
    client: &mut Client,
    echo: AgentId,
    count: usize,
    name: &str,
) -> Result<ScenarioResult, SuiteError> {
    let mut latency = nanosecond_histogram();
    let started = Instant::now();
    let budget = LOOP_RUN * LOOP_MESSAGES as u32 / 2;
    for _ in 0..count {
        let sent = Instant::now();
        let answer = client
            .request(echo, b"0123456789abcdef".to_vec(), Duration::from_secs(30))
            .map_err(|error| SuiteError::Traffic(error.to_string()))?;
        if answer.performative != Performative::Inform {
            return Err(SuiteError::Traffic(format!(
                "{name}: expected inform, got {:?}: {}",
                answer.performative,
                String::from_utf8_lossy(&answer.content)
            )));
        }
        latency.saturating_record(
            u64::try_from(sent.elapsed().as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        // Stay within the loop's busy time, so every sample is beside it.
        if started.elapsed() >= budget {
            break;
        }
    }
    Ok(ScenarioResult::from_histogram(
        name,
        latency,
        started.elapsed(),
    ))
}
