//! The noisy-neighbour scenario of the standard suite: echo request-reply
//! latency on a shard while a looping agent on the same shard is busy,
//! beside the same load with the loop idle. With time slices
//! (`runtime.wasm.stack_pooling`), the loop yields every `runtime.time_slice`
//! and the echo waits at most about one slice; without, it waits for the
//! loop's `max_execution_time`. Latency is the client's, from each request's
//! send to its answer (closed loop, one outstanding).

use std::time::{Duration, Instant};

use caxton_messaging::{AgentId, Performative};
use caxton_numa::{binding, CpuBinding};
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
    /// The PU of shard 0 the measuring client was kept off, when it was
    /// pinned to one and the client could run elsewhere.
    pub client_kept_off: Option<usize>,
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
            if self.sliced { "" } else { " (stack_pooling off: handlers are not sliced)" },
        ) + &match self.client_kept_off {
            Some(pu) => format!("noisy_neighbour: the measuring client ran off shard 0's CPU {pu}\n"),
            None => "noisy_neighbour: the measuring client shared the CPUs with shard 0\n".to_owned(),
        }
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
    // The client measures from its own thread: sharing shard 0's CPU, it
    // would wait for the kernel to switch between the two at every request
    // (on the 2-core development VM, about 417 µs each, quiet or not).
    let kept_off = KeptOff::shard(node, 0);
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
    let client_kept_off = kept_off.pu;
    drop(kept_off);
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
        client_kept_off,
    })
}

/// Keeps the calling thread off a shard's PU while it lives, when the
/// shard is pinned to one and the thread may run elsewhere, and gives the
/// thread its CPU mask back after.
struct KeptOff {
    /// The PU kept off, if any.
    pu: Option<usize>,
    restore: Option<Vec<usize>>,
}

impl KeptOff {
    /// Off data shard `shard`'s PU.
    fn shard(node: &Node, shard: usize) -> Self {
        let none = Self {
            pu: None,
            restore: None,
        };
        let Some(CpuBinding::Pu(pu)) = node
            .plan()
            .data_shards
            .get(shard)
            .map(|placement| placement.cpu_binding.clone())
        else {
            return none;
        };
        let Ok(allowed) = binding::current_thread_pus() else {
            return none;
        };
        let elsewhere: Vec<usize> = allowed.iter().copied().filter(|&at| at != pu).collect();
        if elsewhere.is_empty()
            || binding::bind_current_thread(&CpuBinding::Pus(elsewhere)).is_err()
        {
            return none;
        }
        Self {
            pu: Some(pu),
            restore: Some(allowed),
        }
    }
}

impl Drop for KeptOff {
    fn drop(&mut self) {
        if let Some(allowed) = self.restore.take() {
            let _ = binding::bind_current_thread(&CpuBinding::Pus(allowed));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measuring_client_is_kept_off_shard_zeros_cpu_and_given_its_mask_back() {
        let loaded = caxton_profiles::load(
            &["low-latency".to_owned()],
            &["runtime.worker_threads=2".to_owned()],
        )
        .expect("profile");
        let topology = caxton_numa::MachineTopology::discover().expect("topology");
        let plan = caxton_numa::plan(&topology, &loaded.profile).expect("plan");
        let node = Node::start(&loaded.profile, &plan).expect("node boots");
        // On a thread of its own: the harness's thread keeps its mask whatever happens.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let before = binding::current_thread_pus().expect("this thread's CPUs");
                let kept = KeptOff::shard(&node, 0);
                match (&plan.data_shards[0].cpu_binding, kept.pu) {
                    (CpuBinding::Pu(pu), Some(off)) => {
                        assert_eq!(off, *pu);
                        let during = binding::current_thread_pus().expect("CPUs");
                        assert!(!during.contains(pu) && !during.is_empty(), "{during:?}");
                    }
                    // Nowhere else to go (one CPU), or shard 0 not pinned to one.
                    (binding, None) => assert!(
                        before.len() < 2 || !matches!(binding, CpuBinding::Pu(_)),
                        "{binding:?} {before:?}"
                    ),
                    (binding, Some(off)) => panic!("kept off {off} for {binding:?}"),
                }
                drop(kept);
                assert_eq!(binding::current_thread_pus().expect("CPUs"), before);
            });
        });
        node.shutdown().expect("clean stop");
    }
}
