//! The profiling routes behind `engine profile`: message traces, sampled
//! by the data shards themselves (see `caxton_shards::TraceTake`), and CPU
//! profiles, sampled by the engine's profiler thread.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /v1/profile/trace?messages=N` | every shard samples its next N messages; answers the hops recorded before |
//! | `GET /v1/profile/trace` | the hops recorded since the last call |
//! | `DELETE /v1/profile/trace` | stop sampling; answers the last hops |
//! | `POST /v1/profile/cpu?frequency=HZ` | start sampling the engine's CPU ([`crate::cpu_profile`]) |
//! | `DELETE /v1/profile/cpu` | stop; answers `pprof_base64`, `flamegraph_svg`, `samples`, `seconds` |
//! | `POST /v1/profile/memory` | start sampling allocations (jemalloc's heap profiler) |
//! | `GET /v1/profile/memory` | the live heap sampled since the start: `pprof_gzip_base64`, `flamegraph_svg`, and the allocator's statistics |
//! | `DELETE /v1/profile/memory` | stop sampling allocations |

use std::sync::atomic::Ordering;

use caxton_messaging::Address;
use caxton_shards::{HopKind, TraceTake};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::api::{error, json_reply, node_error, shutting_down, Answer};
use crate::server::Context;

/// `POST` (start with `messages`), `GET` (collect) or `DELETE` (stop).
/// A start while a trace runs (started, and neither stopped nor seen to
/// have used its budget) is refused: it would reset the other's budget.
pub(crate) async fn trace(context: &Context, start: Option<u32>) -> Answer {
    let starting = start.is_some_and(|messages| messages > 0);
    if starting && context.trace_running.swap(true, Ordering::AcqRel) {
        return Err(error(
            StatusCode::CONFLICT,
            "profile-running",
            "a trace is already running; collect it (GET /v1/profile/trace) until its budget is spent, or stop it (DELETE /v1/profile/trace)".into(),
        ));
    }
    let answer = context
        .controller
        .call(move |controller| {
            let takes = controller
                .node
                .trace(start)
                .map_err(|failure| node_error(&failure))?;
            let directory = controller.node.directory();
            Ok(takes_to_json(&takes, |agent| {
                directory.name_of(Address::Agent(agent))
            }))
        })
        .await
        .map_err(|_| shutting_down())
        .and_then(|answer| answer);
    match &answer {
        // Stopped, or its budget spent: another may start.
        Ok(body) if !starting && body["budget_left"] == 0 => {
            context.trace_running.store(false, Ordering::Release);
        }
        Err(_) if starting => context.trace_running.store(false, Ordering::Release),
        _ => {}
    }
    // A start answers 202, as the CPU and heap profiles' starts do: the
    // trace runs on until its budget is spent or it is stopped.
    let status = if starting {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    answer.map(|body| json_reply(status, &body))
}

fn takes_to_json(
    takes: &[TraceTake],
    name_of: impl Fn(caxton_messaging::AgentId) -> String,
) -> Value {
    let mut hops = Vec::new();
    let mut dropped = 0;
    let mut budget = 0u64;
    for take in takes {
        dropped += take.dropped;
        budget += u64::from(take.budget);
        for hop in &take.hops {
            let mut entry = json!({
                "trace": hop.trace,
                "kind": hop.kind.label(),
                "at_ns": hop.at_ns,
                "participant": hop.shard,
            });
            if let Some(agent) = hop.agent {
                entry["agent"] = Value::from(name_of(agent));
            }
            if let HopKind::Ring { to } = hop.kind {
                entry["to"] = Value::from(to);
            }
            hops.push(entry);
        }
    }
    json!({
        "data_shards": takes.len(),
        "sampling": budget > 0,
        "budget_left": budget,
        "dropped_hops": dropped,
        "hops": hops,
    })
}

/// `POST /v1/profile/cpu?frequency=HZ`.
pub(crate) async fn start_cpu(context: &Context, frequency: u32) -> Answer {
    context
        .cpu_profiler
        .start(frequency)
        .await
        .map_err(|reason| error(StatusCode::CONFLICT, "profile-running", reason))?;
    Ok(json_reply(
        StatusCode::ACCEPTED,
        &json!({ "started": true, "frequency": frequency, "stops_by_itself_after_seconds": crate::cpu_profile::CPU_PROFILE_SECONDS_MAX }),
    ))
}

/// `DELETE /v1/profile/cpu`.
pub(crate) async fn stop_cpu(context: &Context) -> Answer {
    use base64::Engine as _;
    let profile = context
        .cpu_profiler
        .stop()
        .await
        .map_err(|reason| error(StatusCode::CONFLICT, "no-profile", reason))?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "samples": profile.samples,
            "seconds": profile.seconds,
            "frequency": profile.frequency,
            "pprof_base64": base64::engine::general_purpose::STANDARD.encode(&profile.pprof),
            "flamegraph_svg": String::from_utf8_lossy(&profile.flamegraph),
        }),
    ))
}

/// What a `/v1/profile/memory` request asks of the heap profiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapStep {
    /// `POST`: start sampling.
    Start,
    /// `GET`: the heap now.
    Dump,
    /// `DELETE`: stop sampling.
    Stop,
}

/// `/v1/profile/memory`: the allocator's hooks run on a blocking thread.
pub(crate) async fn heap(context: &Context, step: HeapStep) -> Answer {
    use base64::Engine as _;
    let Some(profiler) = context.settings.heap_profiler else {
        return Err(error(
            StatusCode::NOT_IMPLEMENTED,
            "no-heap-profiler",
            "this process's allocator has no heap profiler".into(),
        ));
    };
    match step {
        HeapStep::Start if context.heap_running.swap(true, Ordering::AcqRel) => {
            return Err(error(
                StatusCode::CONFLICT,
                "profile-running",
                "a heap profile is already running; stop it first (DELETE /v1/profile/memory)"
                    .into(),
            ));
        }
        // As for the CPU profile: stopping or reading what never started is
        // the caller's slip, said as one.
        // Cleared once the allocator has stopped (below): a stop that
        // fails leaves the profile running, and stoppable.
        HeapStep::Stop if !context.heap_running.load(Ordering::Acquire) => {
            return Err(no_heap_profile());
        }
        HeapStep::Dump if !context.heap_running.load(Ordering::Acquire) => {
            return Err(no_heap_profile());
        }
        _ => {}
    }
    let allocator_stats = context.settings.allocator_stats;
    let work = move || -> Result<Value, String> {
        match step {
            HeapStep::Start => (profiler.set_active)(true).map(|()| json!({ "started": true })),
            HeapStep::Stop => (profiler.set_active)(false).map(|()| json!({ "stopped": true })),
            HeapStep::Dump => {
                let (pprof, flamegraph) = (profiler.dump)()?;
                let allocator: serde_json::Map<String, Value> = allocator_stats
                    .map(|read| read())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, bytes)| (name.to_owned(), Value::from(bytes)))
                    .collect();
                Ok(json!({
                    "pprof_gzip_base64": base64::engine::general_purpose::STANDARD.encode(pprof),
                    "flamegraph_svg": String::from_utf8_lossy(&flamegraph),
                    "allocator": allocator,
                    "resident_bytes": crate::collector::resident_memory_bytes(),
                }))
            }
        }
    };
    let answer = tokio::task::spawn_blocking(work).await.map_err(|failure| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            failure.to_string(),
        )
    });
    if step == HeapStep::Start && !matches!(answer, Ok(Ok(_))) {
        context.heap_running.store(false, Ordering::Release);
    }
    if step == HeapStep::Stop && matches!(answer, Ok(Ok(_))) {
        context.heap_running.store(false, Ordering::Release);
    }
    let answer = answer?;
    match answer {
        Ok(body) => Ok(json_reply(
            if step == HeapStep::Start {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            },
            &body,
        )),
        // The allocator refused: nothing the caller can change.
        Err(reason) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "heap-profiler-failed",
            reason,
        )),
    }
}

fn no_heap_profile() -> crate::server::Reply {
    error(
        StatusCode::CONFLICT,
        "no-profile",
        "no heap profile is running; start one (POST /v1/profile/memory)".into(),
    )
}
