//! The routes of the admin endpoint. Every answer is JSON except `/metrics`
//! (Prometheus text) and `/v1/hdr` (an HdrHistogram interval log); every
//! error is `{"error": {"code": ..., "message": ...}}` with a 4xx or 5xx
//! status that says whose fault it was.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /v1/node` | node and per-shard stats, latency percentiles |
//! | `GET /v1/agents` | agents with counts and handler latency |
//! | `POST /v1/agents?name=N&instances=K[&memory=..&cpu_shares=..&max_execution_time=..]` | deploy the `.wasm`/`.wat` body |
//! | `GET /v1/agents/{name}` | one agent |
//! | `DELETE /v1/agents/{name}` | undeploy |
//! | `POST /v1/agents/{name}/messages` | send `{"content": ...}` and wait for the reply |
//! | `GET /v1/hdr` | the latency histograms since start, as an interval log |
//! | `POST /v1/hdr/dump` | write that log into `observability.hdr_log.directory` |
//! | `POST`, `GET`, `DELETE /v1/profile/trace` | message traces: [`crate::profiling`] |
//! | `POST`, `DELETE /v1/profile/cpu` | start and collect a CPU profile: [`crate::profiling`] |
//! | `POST`, `GET`, `DELETE /v1/profile/memory` | jemalloc's heap profiler: [`crate::profiling`] |

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use caxton_profiles::AgentLimits;
use caxton_shards::{NodeError, PersistError, SendError, SendOptions, ShardMetrics};
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::collector::{resident_memory_bytes, tagged};
use crate::controller::Controller;
use crate::request::{parse, Deploy, Message, Request};
use crate::sender::{SendFailure, SendJob, Sent, SENDS_IN_FLIGHT_PER_PORT};
use crate::server::{Context, Reply};

/// Longest a send may wait for its reply.
pub const SEND_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// How long a send waits for its reply when the request does not say.
pub const SEND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Most instances one deploy may ask for.
pub const DEPLOY_INSTANCES_MAX: u16 = 4096;

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, code: &str, message: String) -> Reply {
    json_reply(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

pub(crate) fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

pub(crate) fn shutting_down() -> Reply {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
        "the node is shutting down".into(),
    )
}

/// Answer one request.
pub(crate) async fn route(parts: &Parts, body: Bytes, context: &Context) -> Reply {
    let request = match parse(
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        body,
    ) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let result = match request {
        Request::Metrics => metrics(context).await,
        Request::Node => node(context).await,
        Request::Agents(only) => list_agents(context, only).await,
        Request::Deploy(request) => deploy(context, request).await,
        Request::Undeploy(name) => undeploy(context, name).await,
        Request::Scale(name, count) => scale(context, name, count).await,
        Request::Send(message) => send(context, message).await,
        Request::HdrLog => hdr_log(context).await,
        Request::HdrDump => hdr_dump(context).await,
        Request::Cluster => cluster(context).await,
        Request::Trace(start) => crate::profiling::trace(context, start).await,
        Request::CpuStart(frequency) => crate::profiling::start_cpu(context, frequency).await,
        Request::CpuStop => crate::profiling::stop_cpu(context).await,
        Request::Heap(step) => crate::profiling::heap(context, step).await,
    };
    result.unwrap_or_else(|reply| reply)
}

pub(crate) type Answer = Result<Reply, Reply>;

async fn metrics(context: &Context) -> Answer {
    let text = context
        .controller
        .call(|controller| {
            collect(controller)?;
            let collector = &controller.collector;
            Ok::<_, Reply>(caxton_telemetry::render_prometheus(
                &caxton_telemetry::Exposition {
                    latencies: &collector.latencies(),
                    shards: &collector.shard_counters(),
                    messages_per_second: collector.messages_per_second(),
                    memory_used_bytes: resident_memory_bytes(),
                    cpu_usage_percent: collector.cpu_usage_percent(),
                    agents_deployed: controller.node.directory().len(),
                    uptime_seconds: collector.uptime().as_secs_f64(),
                },
            ))
        })
        .await
        .map_err(|_| shutting_down())??;
    let mut text = text;
    let snapshot = match &context.cluster {
        Some(cluster) => cluster.snapshot().await,
        None => None,
    };
    let families = snapshot
        .as_ref()
        .map(|snapshot| snapshot.families())
        .unwrap_or_default();
    let convergence = snapshot
        .and_then(|snapshot| snapshot.convergence_histogram)
        .unwrap_or_else(|| {
            hdrhistogram::Histogram::new(3).expect("3 significant figures are valid")
        });
    text.push_str(&caxton_telemetry::render_cluster(&families, &convergence));
    Ok(reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into_bytes(),
    ))
}

/// `GET /v1/cluster`: this node's view of the cluster (members, counts,
/// traffic); 404 when the node runs alone.
async fn cluster(context: &Context) -> Answer {
    let Some(cluster) = &context.cluster else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no-cluster",
            "this node runs alone: set coordination.cluster.listen_address to join a cluster"
                .into(),
        ));
    };
    let snapshot = cluster.snapshot().await.ok_or_else(shutting_down)?;
    let body = serde_json::to_vec_pretty(&snapshot).map_err(|failure| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            failure.to_string(),
        )
    })?;
    Ok(reply(StatusCode::OK, "application/json", body))
}

fn collect(controller: &mut Controller) -> Result<(), Reply> {
    controller
        .collector
        .collect(&controller.node)
        .map_err(|failure| node_error(&failure))
}

pub(crate) fn node_error(failure: &NodeError) -> Reply {
    let (status, code) = match failure {
        NodeError::UnknownAgent(_) => (StatusCode::NOT_FOUND, "unknown-agent"),
        // The node is full (its instance pool), not the module at fault.
        NodeError::Deploy {
            error: caxton_shards::DeployError::Capacity(_),
            ..
        } => (StatusCode::CONFLICT, "refused"),
        // The limits asked for do not fit the module.
        NodeError::Deploy {
            error: caxton_shards::DeployError::MemoryBelowInitial { .. },
            ..
        } => (StatusCode::BAD_REQUEST, "bad-parameter"),
        NodeError::Deploy { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-module"),
        NodeError::Refused(_) => (StatusCode::CONFLICT, "refused"),
        NodeError::NoClientPort => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        NodeError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
        NodeError::ShardStart { .. } | NodeError::ShardUnresponsive(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "shard-unavailable")
        }
    };
    error(status, code, failure.to_string())
}

/// The sum of every value `histogram` recorded, each at its bucket's
/// middle: within the histogram's precision (0.1%) of the exact sum.
fn recorded_sum(histogram: &hdrhistogram::Histogram<u64>) -> u64 {
    histogram
        .iter_recorded()
        .map(|bucket| {
            histogram
                .median_equivalent(bucket.value_iterated_to())
                .saturating_mul(bucket.count_at_value())
        })
        .fold(0u64, u64::saturating_add)
}

/// Percentiles of `histogram` in microseconds.
fn percentiles(histogram: &Histogram<u64>) -> Value {
    let micros = |nanos: u64| nanos as f64 / 1e3;
    if histogram.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": histogram.len(),
        "p50_us": micros(histogram.value_at_quantile(0.5)),
        "p90_us": micros(histogram.value_at_quantile(0.9)),
        "p99_us": micros(histogram.value_at_quantile(0.99)),
        "p999_us": micros(histogram.value_at_quantile(0.999)),
        "max_us": micros(histogram.max()),
        "mean_us": histogram.mean() / 1e3,
    })
}

fn counters(metrics: &ShardMetrics) -> Value {
    json!({
        "handled": metrics.handled,
        "refused": metrics.refused,
        "pushed_out": metrics.pushed_out,
        "timeouts": metrics.timeouts,
        "agent_traps": metrics.faults,
        "agent_failures": metrics.agent_failures,
        "undeliverable": metrics.undeliverable,
        "unknown_receiver": metrics.unknown_receiver,
        "queue_depth": metrics.queue_depth,
        "throttled": metrics.throttled,
        "waited_for_clients": metrics.waited_for_clients,
        "answers_waited": metrics.answers_waited,
        "idle_polls_contended": metrics.idle_polls_contended,
        "handlers_suspended": metrics.suspended,
        "persisted": metrics.persisted,
        "redelivered": metrics.redelivered,
        "storage_failures": metrics.storage_failures,
        "expired": metrics.expired,
        "handling_turns": metrics.handling_turns,
        "largest_batch": metrics.largest_batch,
    })
}

async fn node(context: &Context) -> Answer {
    let allocator_stats = context.settings.allocator_stats;
    let admin_sends = json!({
        "senders": context.senders.threads(),
        "in_flight": context.senders.in_flight(),
        "in_flight_max": sends_waiting_max(context),
    });
    context
        .controller
        .call(move |controller| {
            collect(controller)?;
            // Per shard, summed over its agents: handler time and linear memory.
            let per_shard = controller
                .node
                .all_agent_stats()
                .map_err(|failure| node_error(&failure))?;
            // Handlers suspended between slices, so far: not yet recorded.
            let running_ns: Vec<u64> = per_shard
                .iter()
                .map(|agents| agents.iter().map(|counts| counts.running_ns).sum())
                .collect();
            let agent_memory_bytes: Vec<usize> = per_shard
                .iter()
                .map(|agents| {
                    agents
                        .iter()
                        .map(|counts| counts.memory_bytes + counts.spare_memory_bytes)
                        .sum()
                })
                .collect();
            let collector = &controller.collector;
            let merged = collector.merged();
            let latency: BTreeMap<&str, Value> = tagged(&merged)
                .iter()
                .map(|(tag, histogram)| (*tag, percentiles(histogram)))
                .collect();
            let shards: Vec<Value> = collector
                .totals()
                .iter()
                .enumerate()
                .map(|(index, shard)| {
                    let mut routing = shard.routing_local_ns.clone();
                    let _ = routing.add(&shard.routing_cross_ns);
                    json!({
                        "shard": index,
                        "counters": counters(shard),
                        // Every ended handler since start, of agents since
                        // undeployed too (an agent's own counters leave with
                        // it), and those suspended so far.
                        "handler_busy_ns": recorded_sum(&shard.processing_ns)
                            + running_ns.get(index).copied().unwrap_or(0),
                        "agent_memory_bytes": agent_memory_bytes.get(index).copied().unwrap_or(0),
                        "routed_local": shard.routing_local_ns.len(),
                        "routed_cross": shard.routing_cross_ns.len(),
                        "routed_from_clients": shard.arrived_from_clients,
                        "routed_remote": shard.routing_remote_ns.len(),
                        "routing_latency": percentiles(&routing),
                        "message_processing_time": percentiles(&shard.processing_ns),
                    })
                })
                .collect();
            let allocator: Value = match allocator_stats {
                Some(read) => read()
                    .into_iter()
                    .map(|(name, bytes)| (name.to_owned(), Value::from(bytes)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                None => Value::Null,
            };
            let (compilations, cache_hits, cached, cached_bytes) = controller.node.module_cache();
            let module_cache = json!({
                "compilations": compilations,
                "hits": cache_hits,
                "modules": cached,
                "bytes": cached_bytes,
            });
            let started = collector
                .started_wall()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            Ok(json_reply(
                StatusCode::OK,
                &json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "started_unix_seconds": started.as_secs_f64(),
                    "uptime_seconds": collector.uptime().as_secs_f64(),
                    "data_shards": controller.node.data_shards(),
                    "agents": controller.node.directory().len(),
                    "messages_per_second": collector.messages_per_second(),
                    "cpu_usage_percent": collector.cpu_usage_percent(),
                    "memory_used_bytes": resident_memory_bytes(),
                    "allocator": allocator,
                    "module_cache": module_cache,
                    "admin_sends": admin_sends,
                    "counters": counters(&merged),
                    "latency": latency,
                    "shards": shards,
                    "hdr_log": collector.log_path().map(|path| path.display().to_string()),
                }),
            ))
        })
        .await
        .map_err(|_| shutting_down())?
}

async fn list_agents(context: &Context, only: Option<String>) -> Answer {
    let elsewhere = elsewhere(context, only.as_deref()).await;
    context
        .controller
        .call(move |controller| {
            let directory = controller.node.directory();
            if let Some(name) = &only {
                if directory.resolve(name).is_none() {
                    return Err(unknown_agent_in(&directory, name));
                }
            }
            // The membership layer learns of an agent on another node a
            // moment before the shards route to it (the names reach them
            // through this controller): list only what a send made after
            // this answer reaches, so a listing never promises a route
            // that a send would then refuse as `unknown-agent`.
            let elsewhere: Vec<Value> = elsewhere
                .into_iter()
                .filter(|entry| {
                    entry["name"]
                        .as_str()
                        .is_some_and(|name| directory.resolve_anywhere(name).is_some())
                })
                .collect();
            let per_shard = controller
                .node
                .all_agent_stats()
                .map_err(|failure| node_error(&failure))?;
            let mut agents = Vec::new();
            for (id, record) in directory.iter() {
                if only.as_ref().is_some_and(|name| *name != record.name) {
                    continue;
                }
                let mut stats = caxton_shards::AgentStats::default();
                let (mut memory_bytes, mut spare_memory_bytes) = (0, 0);
                let (mut state_bytes, mut running_ns) = (0, 0);
                let mut running = Vec::with_capacity(per_shard.len());
                for shard in &per_shard {
                    let found = shard.iter().find(|counts| counts.id == id);
                    running.push(found.map_or(0, |counts| counts.instances));
                    if let Some(counts) = found {
                        stats.add(&counts.stats);
                        memory_bytes += counts.memory_bytes;
                        spare_memory_bytes += counts.spare_memory_bytes;
                        state_bytes += counts.state_bytes;
                        running_ns += counts.running_ns;
                    }
                }
                let ran = stats.handled + stats.agent_failures + stats.traps
                    + stats.timeouts + stats.memory_faults;
                agents.push(json!({
                    "name": record.name,
                    "instances": running.iter().sum::<usize>(),
                    "instances_per_shard": running,
                    "handled": stats.handled,
                    "agent_failures": stats.agent_failures,
                    "traps": stats.traps,
                    "execution_timeouts": stats.timeouts,
                    "memory_faults": stats.memory_faults,
                    "recycled": stats.recycled,
                    "warm_starts": stats.warm_starts,
                    "cold_starts": stats.cold_starts,
                    // Handlers that found no pooled stack: they could not
                    // yield at a slice's end (see `runtime.time_slice`).
                    "stackless_runs": stats.stackless_runs,
                    "mean_processing_us": if ran == 0 { 0.0 } else { stats.busy_ns as f64 / ran as f64 / 1e3 },
                    "max_processing_us": stats.max_handler_ns as f64 / 1e3,
                    // Ended handlers' time and, so a long handler shows
                    // while it runs, the time so far of those suspended.
                    "busy_ns": stats.busy_ns + running_ns,
                    "running_ns": running_ns,
                    // A bucket's upper bound can lie above every run in it:
                    // no percentile above the longest run.
                    "p50_processing_us": stats.run_times.value_at_quantile(0.5).map(|nanos| nanos.min(stats.max_handler_ns) as f64 / 1e3),
                    "p99_processing_us": stats.run_times.value_at_quantile(0.99).map(|nanos| nanos.min(stats.max_handler_ns) as f64 / 1e3),
                    "processing_buckets_ns": stats.run_times.buckets(),
                    // Its instances' memory; its warm spares' apart (their
                    // number follows what the other agents leave of the pool).
                    "memory_bytes": memory_bytes,
                    "spare_memory_bytes": spare_memory_bytes,
                    "state_bytes": state_bytes,
                }));
            }
            let body = match only {
                Some(_) => agents.pop().unwrap_or(Value::Null),
                None => json!({ "agents": agents, "elsewhere": elsewhere }),
            };
            Ok(json_reply(StatusCode::OK, &body))
        })
        .await
        .map_err(|_| shutting_down())?
}

/// The agents other nodes of the cluster host, as this node's directory
/// holds them: one entry per agent and node.
async fn elsewhere(context: &Context, only: Option<&str>) -> Vec<Value> {
    let Some(cluster) = &context.cluster else {
        return Vec::new();
    };
    let Some(snapshot) = cluster.snapshot().await else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for node in &snapshot.directory.nodes {
        for (name, instances) in &node.agents {
            if only.is_some_and(|only| only != name) {
                continue;
            }
            entries.push(json!({
                "name": name,
                "node": node.node.name,
                "addr": node.node.addr.to_string(),
                "instances": instances,
            }));
        }
    }
    // Named still, though no live node hosts them: sends to them are
    // answered `caxton:node-down`, and the listing says why.
    for (name, node) in &snapshot.directory.departed {
        if only.is_some_and(|only| only != name) {
            continue;
        }
        entries.push(json!({
            "name": name,
            "node": node.name,
            "addr": node.addr.to_string(),
            "instances": 0,
            "node_down": true,
        }));
    }
    entries
}

/// Tell the cluster (if any) which agents this node hosts: at start and
/// after every deploy or undeploy.
pub(crate) async fn publish_agents(context: &Context) {
    let Some(cluster) = &context.cluster else {
        return;
    };
    if let Ok(agents) = context
        .controller
        .call(|controller| controller.node.directory().hosted_agents())
        .await
    {
        cluster.publish_agents(agents).await;
    }
}

fn unknown_agent(name: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "unknown-agent",
        format!("no agent named `{name}`"),
    )
}

/// [`unknown_agent`], with the nearest name the node can reach when one is
/// a slip away (`ehco`: did you mean `echo`?).
fn unknown_agent_in(directory: &caxton_shards::Directory, name: &str) -> Reply {
    match caxton_profiles::nearest_name(name, directory.names()) {
        Some(nearest) => error(
            StatusCode::NOT_FOUND,
            "unknown-agent",
            format!("no agent named `{name}`; did you mean `{nearest}`?"),
        ),
        None => unknown_agent(name),
    }
}

/// [`unknown_agent_in`] the node's current directory, for a send that found none.
async fn unknown_agent_near(context: &Context, name: &str) -> Reply {
    let owned = name.to_owned();
    context
        .controller
        .call(move |controller| unknown_agent_in(&controller.node.directory(), &owned))
        .await
        .unwrap_or_else(|_| unknown_agent(name))
}

pub(crate) fn bad_request(code: &str, message: String) -> Reply {
    error(StatusCode::BAD_REQUEST, code, message)
}

async fn deploy(context: &Context, request: Deploy) -> Answer {
    let Deploy {
        name,
        instances,
        memory,
        cpu_shares,
        max_execution_time,
        module: body,
    } = request;
    // First, on the controller: the limits, the name's fate, and the module
    // if the cache holds it. A module to compile is compiled on a blocking
    // thread instead: a large one takes seconds, and every other call of
    // the endpoint (health checks, scrapes, sends' set-up) waits for the
    // controller meanwhile.
    let body = std::sync::Arc::new(body);
    let source = std::sync::Arc::clone(&body);
    let prepared = context
        .controller
        .call(move |controller| {
            let mut limits: AgentLimits = controller.profile.agent_limits(&name);
            let ceiling = controller.profile.runtime.max_memory_per_agent;
            if let Some(memory) = memory {
                if memory > ceiling {
                    return Err(bad_request(
                        "bad-parameter",
                        format!(
                            "`memory={memory}` is over runtime.max_memory_per_agent ({ceiling})"
                        ),
                    ));
                }
                limits.memory = memory;
            }
            if let Some(cpu_shares) = cpu_shares {
                limits.cpu_shares = cpu_shares;
            }
            if let Some(execution) = max_execution_time {
                limits.max_execution_time = execution;
            }
            controller
                .node
                .check_deploy(&name, instances)
                .map_err(|failure| node_error(&failure))?;
            let module = match controller.node.cached_module(&source) {
                Some(module) => Ok(module),
                None => Err(controller.node.module_check()),
            };
            Ok((name, limits, module))
        })
        .await
        .map_err(|_| shutting_down())??;
    let (name, limits, module) = prepared;
    let started = Instant::now();
    let fresh = module.is_err();
    let module = match module {
        Ok(module) => module,
        Err(check) => {
            let compiled = tokio::task::spawn_blocking(move || check.compile(&body))
                .await
                .map_err(|failure| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        failure.to_string(),
                    )
                })?;
            compiled.map_err(|error| {
                node_error(&NodeError::Deploy {
                    agent: name.clone(),
                    error,
                })
            })?
        }
    };
    let deployed = context
        .controller
        .call(move |controller| {
            controller
                .node
                .deploy_module(&name, module, fresh, instances, &limits)
                .map_err(|failure| node_error(&failure))?;
            tracing::info!(agent = %name, instances, "agent deployed through the admin API");
            Ok(json_reply(
                StatusCode::CREATED,
                &json!({
                    "name": name,
                    "instances": instances,
                    "limits": {
                        "memory": limits.memory.to_string(),
                        "cpu_shares": limits.cpu_shares.to_string(),
                        "max_execution_time": limits.max_execution_time.to_string(),
                    },
                    "deploy_ms": started.elapsed().as_secs_f64() * 1e3,
                }),
            ))
        })
        .await
        .map_err(|_| shutting_down())?;
    if deployed.is_ok() {
        publish_agents(context).await;
    }
    deployed
}

async fn scale(context: &Context, name: String, count: u16) -> Answer {
    let scaled: Answer = context
        .controller
        .call(move |controller| {
            let (before, after) = controller
                .node
                .scale(&name, count)
                .map_err(|failure| node_error(&failure))?;
            tracing::info!(agent = %name, before, after, "agent scaled through the admin API");
            Ok(json_reply(
                StatusCode::OK,
                &json!({ "agent": name, "instances_before": before, "instances": after }),
            ))
        })
        .await
        .map_err(|_| shutting_down())?;
    // A scale that stopped part way changed the count too.
    publish_agents(context).await;
    scaled
}

async fn undeploy(context: &Context, name: String) -> Answer {
    let asked = name.clone();
    let undeployed: Answer = context
        .controller
        .call(move |controller| {
            controller
                .node
                .undeploy(&name)
                .map_err(|failure| node_error(&failure))?;
            tracing::info!(agent = %name, "agent undeployed through the admin API");
            Ok(json_reply(StatusCode::OK, &json!({ "undeployed": name })))
        })
        .await
        .map_err(|_| shutting_down())?;
    match &undeployed {
        Ok(_) => publish_agents(context).await,
        // Not here, but other nodes run it: say where to undeploy it.
        Err(refused) if refused.status() == StatusCode::NOT_FOUND => {
            // Live hosts only: an agent stranded on a node declared down
            // is undeployed there when it comes back, not through here.
            let hosts: Vec<String> = elsewhere(context, Some(&asked))
                .await
                .iter()
                .filter(|entry| entry["node_down"].as_bool() != Some(true))
                .map(|entry| {
                    format!(
                        "{} ({})",
                        entry["node"].as_str().unwrap_or("?"),
                        entry["addr"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            if !hosts.is_empty() {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "unknown-agent",
                    format!(
                        "`{asked}` does not run on this node; it runs on {}: undeploy it through that node's admin endpoint",
                        hosts.join(", ")
                    ),
                ));
            }
        }
        Err(_) => {}
    }
    undeployed
}

async fn send(context: &Context, message: Message) -> Answer {
    let priority = message
        .priority
        .resolve(&context.settings.priority_classes)?;
    let Message {
        agent: name,
        content,
        performative,
        timeout,
        priority: _,
        conversation_id,
        persistent,
        wait_for_reply,
    } = message;
    // Each waiting send holds its connection: past this many, the reads an
    // operator needs under load (a scrape, `/v1/node`) would wait in the
    // kernel's backlog behind them, so the last connections stay theirs.
    // (The senders' own bound is theirs to tell: `SendFailure::Busy`.)
    let (sends_max, kept) = sends_on_connections_max(context);
    if context.senders.in_flight() >= sends_max {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "{sends_max} sends already wait for their replies, the most observability.admin.max_connections ({}) allows while keeping {kept} connections for reads (metrics, /v1/node); raise it, or retry",
                context.settings.max_connections,
            ),
        ));
    }
    let job = SendJob {
        agent: name.clone(),
        performative,
        content,
        options: SendOptions {
            priority,
            deadline: Some(timeout),
            conversation_id,
        },
        timeout,
        persistent,
        wait_for_reply,
    };
    // Dropped with this request when its caller hangs up: the sender then
    // forgets the send at its next sweep.
    let sent = match context.senders.send(job).await {
        Err(
            SendFailure::Send(SendError::UnknownAgent(_))
            | SendFailure::Persist(PersistError::Send(SendError::UnknownAgent(_))),
        ) => return Err(unknown_agent_near(context, &name).await),
        sent => sent,
    };
    let sent = sent.map_err(|failure| match failure {
        SendFailure::Send(failure) => send_error(&name, failure),
        SendFailure::Persist(PersistError::Send(failure)) => send_error(&name, failure),
        // No persistence is how the node is configured, not a passing
        // state: retrying cannot help, so it is no 503.
        SendFailure::Persist(PersistError::Refused(reason))
            if reason.starts_with(caxton_shards::PERSISTENCE_OFF) =>
        {
            error(
                StatusCode::CONFLICT,
                "persistence-off",
                format!("the node cannot store the message: {reason}"),
            )
        }
        SendFailure::Persist(PersistError::Refused(reason)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-stored",
            format!("the node did not accept the message: {reason}"),
        ),
        SendFailure::Persist(PersistError::InDoubt(reason)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "in-doubt",
            format!(
                "the node that was to store the message was lost ({reason}) before it said whether it had: it may or may not be stored"
            ),
        ),
        SendFailure::Persist(PersistError::Timeout(_)) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no acceptance within {timeout:?}; it may or may not be stored"),
        ),
        SendFailure::NoReply { message_id, .. } => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no reply from `{name}` within {timeout:?}{}",
                message_id.map_or(String::new(), |id| format!(
                    " (message {id} is stored and will be handled)"
                ))
            ),
        ),
        SendFailure::Busy if context.senders.threads() == 0 => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the endpoint has no client port to send through yet (the node is starting, or the remote port took the last: raise runtime.client_ports); retry".into(),
        ),
        SendFailure::Busy => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "the endpoint has {} sends waiting for answers on each of its {} client ports, its most; retry",
                SENDS_IN_FLIGHT_PER_PORT,
                context.senders.threads()
            ),
        ),
        SendFailure::Stopping => shutting_down(),
    })?;
    let (reply, message_id, round_trip) = match sent {
        Sent::Accepted { message_id } => {
            return Ok(json_reply(
                StatusCode::ACCEPTED,
                &json!({ "accepted": true, "message_id": message_id }),
            ));
        }
        Sent::Replied {
            reply,
            message_id,
            round_trip,
        } => (reply, message_id, round_trip),
    };
    let text = String::from_utf8(reply.content.clone()).ok();
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "performative": reply.performative,
            "content": text,
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&reply.content),
            "conversation_id": reply.conversation_id,
            "message_id": message_id,
            // To 0.1 µs, not the float noise of a division.
            "round_trip_us": (round_trip.as_secs_f64() * 1e7).round() / 10.0,
        }),
    ))
}

/// Connections of the endpoint kept for requests other than sends.
const READ_CONNECTIONS: usize = 8;

/// Most sends the endpoint's connections may hold waiting for replies, and
/// the connections kept for reads: [`READ_CONNECTIONS`], or a quarter where
/// there are few.
fn sends_on_connections_max(context: &Context) -> (usize, usize) {
    let connections = context.settings.max_connections.max(1);
    let kept = READ_CONNECTIONS.min(connections / 4);
    (connections - kept, kept)
}

/// Most sends that may wait for replies at once: the connections' bound
/// and the senders' ([`SENDS_IN_FLIGHT_PER_PORT`] each), the lower.
fn sends_waiting_max(context: &Context) -> usize {
    let (on_connections, _) = sends_on_connections_max(context);
    on_connections.min(context.senders.threads() * SENDS_IN_FLIGHT_PER_PORT)
}

fn send_error(name: &str, failure: SendError) -> Reply {
    match failure {
        SendError::UnknownAgent(_) => unknown_agent(name),
        SendError::NoInstance => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-instance",
            format!("agent `{name}` has no running instance"),
        ),
        SendError::Refused(shard) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "refused",
            format!("refused: the ring to shard {shard} is full; retry later"),
        ),
    }
}

/// The latency histograms since the node started, as one interval.
fn hdr_since_start(controller: &mut Controller) -> Result<Vec<u8>, Reply> {
    collect(controller)?;
    let merged = controller.collector.merged();
    let histograms = tagged(&merged);
    let refs: Vec<(&str, &Histogram<u64>)> = histograms
        .iter()
        .map(|(tag, histogram)| (*tag, histogram))
        .collect();
    caxton_telemetry::hdr_log::single_interval_text(
        "Caxton node latency since start",
        controller.collector.uptime(),
        &refs,
    )
    .map_err(|failure| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encode",
            format!("cannot encode the histograms: {failure}"),
        )
    })
}

async fn hdr_log(context: &Context) -> Answer {
    let text = context
        .controller
        .call(hdr_since_start)
        .await
        .map_err(|_| shutting_down())??;
    Ok(reply(StatusCode::OK, "text/plain; charset=utf-8", text))
}

async fn hdr_dump(context: &Context) -> Answer {
    let Some(directory) = context.settings.hdr_directory.clone() else {
        return Err(error(
            StatusCode::CONFLICT,
            "no-directory",
            "observability.hdr_log.directory is not set; GET /v1/hdr returns the log instead"
                .into(),
        ));
    };
    let text = context
        .controller
        .call(hdr_since_start)
        .await
        .map_err(|_| shutting_down())??;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let path = directory.join(format!("dump-{stamp}.hlog"));
    std::fs::write(&path, &text).map_err(|failure| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "write",
            format!("cannot write {}: {failure}", path.display()),
        )
    })?;
    Ok(json_reply(
        StatusCode::CREATED,
        &json!({ "path": path.display().to_string(), "bytes": text.len() }),
    ))
}
