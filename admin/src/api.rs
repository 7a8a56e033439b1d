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
use caxton_messaging::Performative;
use caxton_profiles::{AgentLimits, ByteSize, CpuShares, HumanDuration};
use caxton_shards::{NodeError, PersistError, SendError, SendOptions, ShardMetrics};
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::collector::{resident_memory_bytes, tagged};
use crate::controller::Controller;
use crate::profiling::HeapStep;
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
    let path = parts.uri.path();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => metrics(context).await,
        (&Method::GET, ["v1", "node"]) => node(context).await,
        (&Method::GET, ["v1", "agents"]) => list_agents(context, None).await,
        (&Method::POST, ["v1", "agents"]) => deploy(context, &query, body).await,
        (&Method::GET, ["v1", "agents", name]) => list_agents(context, Some(decode(name))).await,
        (&Method::DELETE, ["v1", "agents", name]) => undeploy(context, decode(name)).await,
        (&Method::POST, ["v1", "agents", name, "messages"]) => {
            send(context, decode(name), &body).await
        }
        (&Method::GET, ["v1", "hdr"]) => hdr_log(context).await,
        (&Method::POST, ["v1", "hdr", "dump"]) => hdr_dump(context).await,
        (&Method::GET, ["v1", "cluster"]) => cluster(context).await,
        (&Method::POST, ["v1", "profile", "trace"]) => {
            match crate::profiling::messages_param(&query) {
                Ok(messages) => crate::profiling::trace(context, Some(messages)).await,
                Err(reply) => Err(reply),
            }
        }
        (&Method::GET, ["v1", "profile", "trace"]) => crate::profiling::trace(context, None).await,
        (&Method::DELETE, ["v1", "profile", "trace"]) => {
            crate::profiling::trace(context, Some(0)).await
        }
        (&Method::POST, ["v1", "profile", "cpu"]) => {
            crate::profiling::start_cpu(context, &query).await
        }
        (&Method::DELETE, ["v1", "profile", "cpu"]) => crate::profiling::stop_cpu(context).await,
        (&Method::POST, ["v1", "profile", "memory"]) => {
            crate::profiling::heap(context, HeapStep::Start).await
        }
        (&Method::GET, ["v1", "profile", "memory"]) => {
            crate::profiling::heap(context, HeapStep::Dump).await
        }
        (&Method::DELETE, ["v1", "profile", "memory"]) => {
            crate::profiling::heap(context, HeapStep::Stop).await
        }
        (_, ["v1", "cluster"] | ["v1", "profile", "trace" | "cpu" | "memory"])
        | (_, ["metrics"] | ["v1", "node" | "agents" | "hdr"] | ["v1", "agents", _])
        | (_, ["v1", "agents", _, "messages"] | ["v1", "hdr", "dump"]) => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} is not allowed on {path}", parts.method),
        )),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no route {path}; see GET /v1/node, /v1/agents, /v1/cluster, /metrics"),
        )),
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
        "timeouts": metrics.timeouts,
        "agent_traps": metrics.faults,
        "agent_failures": metrics.agent_failures,
        "undeliverable": metrics.undeliverable,
        "unknown_receiver": metrics.unknown_receiver,
        "queue_depth": metrics.queue_depth,
        "throttled": metrics.throttled,
        "handlers_suspended": metrics.suspended,
        "persisted": metrics.persisted,
        "redelivered": metrics.redelivered,
        "storage_failures": metrics.storage_failures,
        "expired": metrics.expired,
    })
}

async fn node(context: &Context) -> Answer {
    let allocator_stats = context.settings.allocator_stats;
    context
        .controller
        .call(move |controller| {
            collect(controller)?;
            // Handler time per shard: the sum of its agents' busy time.
            let busy_ns: Vec<u64> = controller
                .node
                .all_agent_stats()
                .map_err(|failure| node_error(&failure))?
                .iter()
                .map(|agents| agents.iter().map(|counts| counts.stats.busy_ns).sum())
                .collect();
            let agent_memory_bytes: Vec<usize> = controller
                .node
                .all_agent_stats()
                .map_err(|failure| node_error(&failure))?
                .iter()
                .map(|agents| agents.iter().map(|counts| counts.memory_bytes).sum())
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
                        "handler_busy_ns": busy_ns.get(index).copied().unwrap_or(0),
                        "agent_memory_bytes": agent_memory_bytes.get(index).copied().unwrap_or(0),
                        "routed_local": shard.routing_local_ns.len(),
                        "routed_cross": shard.routing_cross_ns.len(),
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
                    return Err(unknown_agent(name));
                }
            }
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
                let mut memory_bytes = 0;
                let mut running = Vec::with_capacity(per_shard.len());
                for shard in &per_shard {
                    let found = shard.iter().find(|counts| counts.id == id);
                    running.push(found.map_or(0, |counts| counts.instances));
                    if let Some(counts) = found {
                        stats.add(&counts.stats);
                        memory_bytes += counts.memory_bytes;
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
                    "mean_processing_us": if ran == 0 { 0.0 } else { stats.busy_ns as f64 / ran as f64 / 1e3 },
                    "max_processing_us": stats.max_handler_ns as f64 / 1e3,
                    "busy_ns": stats.busy_ns,
                    "p50_processing_us": stats.run_times.value_at_quantile(0.5).map(|nanos| nanos as f64 / 1e3),
                    "p99_processing_us": stats.run_times.value_at_quantile(0.99).map(|nanos| nanos as f64 / 1e3),
                    "processing_buckets_ns": stats.run_times.buckets(),
                    "memory_bytes": memory_bytes,
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

pub(crate) fn bad_request(code: &str, message: String) -> Reply {
    error(StatusCode::BAD_REQUEST, code, message)
}

/// Agent names follow the engine's one rule (`caxton_profiles::check_agent_name`).
fn check_name(name: &str) -> Result<(), Reply> {
    caxton_profiles::check_agent_name(name).map_err(|error| bad_request("bad-name", error))
}

fn parse_param<T: std::str::FromStr>(
    query: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, Reply>
where
    T::Err: std::fmt::Display,
{
    query
        .get(key)
        .map(|text| {
            text.parse::<T>().map_err(|failure| {
                bad_request("bad-parameter", format!("`{key}={text}`: {failure}"))
            })
        })
        .transpose()
}

async fn deploy(context: &Context, query: &BTreeMap<String, String>, body: Bytes) -> Answer {
    const KNOWN: [&str; 5] = [
        "name",
        "instances",
        "memory",
        "cpu_shares",
        "max_execution_time",
    ];
    if let Some(unknown) = query.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(bad_request(
            "bad-parameter",
            format!("unknown parameter `{unknown}`; known: {}", KNOWN.join(", ")),
        ));
    }
    let name = query
        .get("name")
        .cloned()
        .ok_or_else(|| bad_request("bad-parameter", "`name` is required".into()))?;
    check_name(&name)?;
    let instances = parse_param::<u16>(query, "instances")?.unwrap_or(1);
    if instances == 0 || instances > DEPLOY_INSTANCES_MAX {
        return Err(bad_request(
            "bad-parameter",
            format!("`instances={instances}`: use 1 to {DEPLOY_INSTANCES_MAX}"),
        ));
    }
    let memory = parse_param::<ByteSize>(query, "memory")?;
    let cpu_shares = parse_param::<CpuShares>(query, "cpu_shares")?;
    let execution = parse_param::<HumanDuration>(query, "max_execution_time")?;
    if body.is_empty() {
        return Err(bad_request(
            "empty-module",
            "the request body must be the agent's .wasm or .wat module".into(),
        ));
    }
    let deployed = context
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
                if cpu_shares.millicores() == 0 {
                    return Err(bad_request(
                        "bad-parameter",
                        "`cpu_shares` must be above 0".into(),
                    ));
                }
                limits.cpu_shares = cpu_shares;
            }
            if let Some(execution) = execution {
                if execution.get().is_zero() {
                    return Err(bad_request(
                        "bad-parameter",
                        "`max_execution_time` must be above 0".into(),
                    ));
                }
                limits.max_execution_time = execution;
            }
            let started = Instant::now();
            controller
                .node
                .deploy(&name, &body, instances, &limits)
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

async fn undeploy(context: &Context, name: String) -> Answer {
    let undeployed = context
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
    if undeployed.is_ok() {
        publish_agents(context).await;
    }
    undeployed
}

/// The body of `POST /v1/agents/{name}/messages`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    /// UTF-8 content.
    content: Option<String>,
    /// Binary content, base64.
    content_base64: Option<String>,
    /// FIPA performative, kebab-case; `request` by default.
    #[serde(default = "request_performative")]
    performative: Performative,
    /// How long to wait for the reply.
    timeout_ms: Option<u64>,
    /// Priority class.
    #[serde(default)]
    priority: u8,
    /// Conversation id.
    #[serde(default)]
    conversation_id: u64,
    /// Store it before it is accepted, so it is handled even if the node
    /// crashes first (needs `messaging.enable_persistence`).
    #[serde(default)]
    persistent: bool,
    /// Wait for the agent's reply (default); with `false` the answer is
    /// `202 Accepted` once the node has accepted the message (stored, for a
    /// persistent one), and the reply is not awaited.
    #[serde(default = "yes")]
    wait_for_reply: bool,
}

fn yes() -> bool {
    true
}

fn request_performative() -> Performative {
    Performative::Request
}

async fn send(context: &Context, name: String, body: &[u8]) -> Answer {
    let request: SendRequest = serde_json::from_slice(body).map_err(|failure| {
        bad_request("bad-json", format!("the message is not valid: {failure}"))
    })?;
    let content = match (request.content, request.content_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|failure| bad_request("bad-json", format!("`content_base64`: {failure}")))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            return Err(bad_request(
                "bad-json",
                "give `content` or `content_base64`, not both".into(),
            ))
        }
    };
    let timeout = request
        .timeout_ms
        .map_or(SEND_TIMEOUT_DEFAULT, Duration::from_millis);
    if timeout.is_zero() || timeout > SEND_TIMEOUT_MAX {
        return Err(bad_request(
            "bad-json",
            format!("`timeout_ms` must be 1 to {}", SEND_TIMEOUT_MAX.as_millis()),
        ));
    }
    let Some(mut client) = context.clients.take() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "every admin client is waiting for a reply; retry".into(),
        ));
    };
    let clients = context.clients.clone();
    let performative = request.performative;
    let persistent = request.persistent;
    let wait_for_reply = request.wait_for_reply;
    let options = SendOptions {
        priority: caxton_messaging::PriorityClass(request.priority),
        deadline: Some(timeout),
        conversation_id: request.conversation_id,
    };
    // The wait parks a thread, so it runs on the blocking pool, not the reactor.
    let outcome = tokio::task::spawn_blocking(move || {
        // Whatever this client still holds answers earlier calls that stopped waiting.
        client.discard_unclaimed();
        let started = Instant::now();
        let sent = match client.resolve(&name) {
            Err(failure) => Err(send_error(&name, failure)),
            Ok(agent) if persistent => client
                .send_persistent(agent, performative, content, options, timeout)
                .map(|(token, id)| (token, Some(id)))
                .map_err(|failure| match failure {
                    PersistError::Send(failure) => send_error(&name, failure),
                    PersistError::Refused(reason) => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not-stored",
                        format!("the node did not accept the message: {reason}"),
                    ),
                    PersistError::Timeout(_) => error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        format!("no acceptance within {timeout:?}; it may or may not be stored"),
                    ),
                }),
            Ok(agent) => client
                .send(agent, performative, content, options)
                .map(|token| (token, None))
                .map_err(|failure| send_error(&name, failure)),
        };
        let result = sent.and_then(|(token, message_id)| {
            if !wait_for_reply {
                return Ok((None, message_id));
            }
            client
                .await_reply(token, timeout)
                .map(|reply| (Some(reply), message_id))
                .map_err(|_| {
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        format!(
                            "no reply from `{name}` within {timeout:?}{}",
                            message_id.map_or(String::new(), |id| format!(
                                " (message {id} is stored and will be handled)"
                            ))
                        ),
                    )
                })
        });
        clients.put(client);
        result.map(|(reply, message_id)| (reply, message_id, started.elapsed()))
    })
    .await
    .map_err(|_| shutting_down())?;
    let (reply, message_id, round_trip) = outcome?;
    let Some(reply) = reply else {
        return Ok(json_reply(
            StatusCode::ACCEPTED,
            &json!({ "accepted": true, "message_id": message_id }),
        ));
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
            "round_trip_us": round_trip.as_secs_f64() * 1e6,
        }),
    ))
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

/// `a=1&b=two` into a map, percent-decoded.
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decoding (`%20`, and `+` as a space in queries).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let query = parse_query("name=my%2Dagent&instances=4&memory=16MB&x=a+b&bad=%zz&end=%4");
        assert_eq!(query["name"], "my-agent");
        assert_eq!(query["instances"], "4");
        assert_eq!(query["x"], "a b");
        assert_eq!(query["bad"], "%zz");
        assert_eq!(query["end"], "%4");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("echo-1.v2_x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
