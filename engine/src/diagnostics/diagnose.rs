//! `engine performance diagnose`: two readings of a running engine's
//! `/v1/node` and `/v1/agents` (and `/v1/cluster` when it has one), a window
//! apart, turned into ranked findings for one symptom. Counters are judged by
//! what changed in the window; when nothing was handled in it, by the totals
//! since the engine started.

use serde_json::Value;

use super::{Finding, Verdict};
use crate::cli::Symptom;

/// A handler P99 above this is named as slow (µs): the engine's own routing
/// costs microseconds, so a handler this slow dominates its messages' latency.
const SLOW_HANDLER_P99_US: f64 = 100.0;
/// The performance tuning guide's high-latency symptom: P99 above 10 ms.
const GUIDE_LATENCY_SYMPTOM_US: f64 = 10_000.0;
/// A shard whose handlers ran this share of the window is saturated.
const SATURATED_BUSY_FRACTION: f64 = 0.8;
/// Cross-shard share above which placing talkers together pays.
const CROSS_SHARE_NOTED: f64 = 0.5;
/// Messages waiting in the shards below which a queue is not named: a
/// node under any load has a few in flight in its rings at a reading, and
/// two readings of a handful differ by chance.
const QUEUE_DEPTH_NOTED: f64 = 100.0;

/// One reading of a running engine.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// `/v1/node`.
    pub node: Value,
    /// `/v1/agents`.
    pub agents: Value,
    /// `/v1/cluster`, when the node is in a cluster.
    pub cluster: Option<Value>,
}

/// What the findings were judged on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Basis {
    /// The changes over a window of this many seconds.
    Window(f64),
    /// The totals since the engine started, this many seconds ago.
    SinceStart(f64),
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

/// `after - before` of a counter, never negative (a restart resets counters).
fn delta(after: &Value, before: &Value) -> f64 {
    (number(after) - number(before)).max(0.0)
}

/// One agent's activity over the basis.
struct AgentActivity {
    name: String,
    runs: f64,
    busy_ns: f64,
    p99_us: Option<f64>,
    p50_us: Option<f64>,
    faults: f64,
    memory_bytes: f64,
}

fn agent_entries(reading: &Reading) -> Vec<Value> {
    reading.agents["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sparse buckets of an agent entry: (upper bound ns, count).
fn buckets(agent: &Value) -> Vec<(u64, u32)> {
    agent["processing_buckets_ns"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| {
                    Some((pair[0].as_u64()?, u32::try_from(pair[1].as_u64()?).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn activities(before: &Reading, after: &Reading) -> Vec<AgentActivity> {
    let earlier = agent_entries(before);
    agent_entries(after)
        .iter()
        .map(|agent| {
            let name = agent["name"].as_str().unwrap_or("?").to_owned();
            let old = earlier
                .iter()
                .find(|entry| entry["name"] == agent["name"])
                .cloned()
                .unwrap_or(Value::Null);
            // The window's histogram: the later counts less the earlier ones.
            let old_buckets = buckets(&old);
            let window: Vec<(u64, u32)> = buckets(agent)
                .into_iter()
                .map(|(upper, count)| {
                    let was = old_buckets
                        .iter()
                        .find(|(bound, _)| *bound == upper)
                        .map_or(0, |(_, count)| *count);
                    (upper, count.saturating_sub(was))
                })
                .filter(|(_, count)| *count > 0)
                .collect();
            // A bucket's upper bound can lie above every run in it; no
            // figure is shown above the longest run the agent has had.
            let longest_us = number(&agent["max_processing_us"]);
            let micros = |nanos: u64| {
                let us = nanos as f64 / 1e3;
                if longest_us > 0.0 {
                    us.min(longest_us)
                } else {
                    us
                }
            };
            let faults = ["traps", "execution_timeouts", "memory_faults"]
                .iter()
                .map(|key| delta(&agent[*key], &old[*key]))
                .sum();
            AgentActivity {
                name,
                runs: window.iter().map(|(_, count)| f64::from(*count)).sum(),
                busy_ns: delta(&agent["busy_ns"], &old["busy_ns"]),
                p99_us: caxton_agents::quantile_of(&window, 0.99).map(micros),
                p50_us: caxton_agents::quantile_of(&window, 0.5).map(micros),
                faults,
                memory_bytes: number(&agent["memory_bytes"]),
            }
        })
        .collect()
}

fn shards(reading: &Reading) -> Vec<Value> {
    reading.node["shards"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Rank what explains `symptom` between two readings. With nothing handled
/// between them, `before` is ignored and the totals since start are judged.
pub fn diagnose(
    symptom: Symptom,
    before: &Reading,
    after: &Reading,
    window_seconds: f64,
) -> (Vec<Finding>, Basis) {
    let handled = delta(
        &after.node["counters"]["handled"],
        &before.node["counters"]["handled"],
    );
    let empty = Reading::default();
    let (before, basis) = if handled > 0.0 {
        (before, Basis::Window(window_seconds))
    } else {
        (
            &empty,
            Basis::SinceStart(number(&after.node["uptime_seconds"]).max(1e-3)),
        )
    };
    let seconds = match basis {
        Basis::Window(seconds) | Basis::SinceStart(seconds) => seconds.max(1e-3),
    };
    let agents = activities(before, after);
    // The node's handler time, from the shards: the agents listed now miss
    // those undeployed within the window (their counters leave with them),
    // and an agent's share must be of all of it.
    let earlier = shards(before);
    let shards_busy: f64 = shards(after)
        .iter()
        .enumerate()
        .map(|(index, shard)| {
            let old = earlier.get(index).cloned().unwrap_or(Value::Null);
            delta(&shard["handler_busy_ns"], &old["handler_busy_ns"])
        })
        .sum();
    let agents_busy: f64 = agents.iter().map(|agent| agent.busy_ns).sum();
    let total_busy = shards_busy.max(agents_busy);
    let mut findings = Vec::new();
    slow_agents(symptom, &agents, total_busy, &mut findings);
    saturated_shards(
        symptom,
        before,
        after,
        seconds,
        &agents,
        total_busy,
        &mut findings,
    );
    counters(symptom, before, after, &basis, &mut findings);
    cross_shard(symptom, before, after, &mut findings);
    faulting_agents(&agents, &mut findings);
    if symptom == Symptom::Memory {
        agent_memory(&agents, &mut findings);
    }
    gossip(after, &mut findings);
    super::rank(&mut findings);
    (findings, basis)
}

fn slow_agents(
    symptom: Symptom,
    agents: &[AgentActivity],
    total_busy: f64,
    out: &mut Vec<Finding>,
) {
    if symptom == Symptom::Memory {
        return;
    }
    for agent in agents {
        let Some(p99) = agent.p99_us.filter(|p99| *p99 >= SLOW_HANDLER_P99_US) else {
            continue;
        };
        let share = if total_busy > 0.0 {
            agent.busy_ns / total_busy
        } else {
            0.0
        };
        let verdict = if p99 >= GUIDE_LATENCY_SYMPTOM_US || share >= 0.5 {
            Verdict::Problem
        } else {
            Verdict::Warn
        };
        // For latency the slowest handler matters most; for throughput, the
        // one that takes the most handler time.
        let weight = match symptom {
            Symptom::HighLatency => p99 * (1.0 + share),
            _ => share * 1e6 + p99,
        };
        out.push(
            Finding::new(
                "slow-agent",
                verdict,
                format!(
                    "agent `{}` runs its handler for {p99:.0} µs at P99; every message it handles, and each one queued behind it on its shard, waits that long",
                    agent.name
                ),
            )
            .subject(agent.name.clone())
            .evidence(format!(
                "{}, handler P50 {:.1} µs, P99 {p99:.1} µs",
                crate::remote::counted(agent.runs as u64, "run"),
                agent.p50_us.unwrap_or(0.0)
            ))
            .evidence(format!("{:.0}% of the node's handler time", share * 100.0))
            .remedy("check for slow agents (performance tuning guide): shorten the handler, give it more instances so its messages spread over shards, or bound it with a smaller max_execution_time; runtime.time_slice keeps it from holding its shard")
            .key("agents.default_limits.max_execution_time")
            .weight(weight),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn saturated_shards(
    symptom: Symptom,
    before: &Reading,
    after: &Reading,
    seconds: f64,
    agents: &[AgentActivity],
    total_busy: f64,
    out: &mut Vec<Finding>,
) {
    if symptom == Symptom::Memory {
        return;
    }
    let earlier = shards(before);
    for shard in shards(after) {
        let index = shard["shard"].as_u64().unwrap_or(0);
        let old = earlier.get(index as usize).cloned().unwrap_or(Value::Null);
        let busy = delta(&shard["handler_busy_ns"], &old["handler_busy_ns"]) / (seconds * 1e9);
        if busy < SATURATED_BUSY_FRACTION {
            continue;
        }
        let mut finding = Finding::new(
            "saturated-shard",
            if busy >= 0.95 { Verdict::Problem } else { Verdict::Warn },
            format!("shard {index} spent {:.0}% of the time in handlers: new messages wait for it", busy * 100.0),
        )
        .subject(format!("shard {index}"))
        .remedy("increase worker threads (performance tuning guide), or spread the busiest agents' instances over more shards")
        .key("runtime.worker_threads")
        .weight(busy * 100.0);
        // Full batches say the rings held more than a turn takes: the shard
        // is behind, not just busy.
        let turns = delta(
            &shard["counters"]["handling_turns"],
            &old["counters"]["handling_turns"],
        );
        if turns > 0.0 {
            let handled = delta(&shard["counters"]["handled"], &old["counters"]["handled"]);
            finding = finding.evidence(format!(
                "{handled:.0} messages in {turns:.0} turns: {:.1} a turn, at most {} since start (messaging.batch_size bounds a turn)",
                handled / turns,
                shard["counters"]["largest_batch"].as_u64().unwrap_or(0)
            ));
        }
        if let Some(top) = agents.iter().max_by(|a, b| a.busy_ns.total_cmp(&b.busy_ns)) {
            if total_busy > 0.0 {
                finding = finding.evidence(format!(
                    "busiest agent on the node: `{}` ({:.0}% of handler time)",
                    top.name,
                    100.0 * top.busy_ns / total_busy
                ));
            }
        }
        out.push(finding);
    }
}

/// The node-wide counters: refusals, timeouts, throttling, slicing, queues,
/// storage.
fn counters(
    symptom: Symptom,
    before: &Reading,
    after: &Reading,
    basis: &Basis,
    out: &mut Vec<Finding>,
) {
    let now = &after.node["counters"];
    let was = &before.node["counters"];
    let handled = delta(&now["handled"], &was["handled"]).max(1.0);
    let changed = |key: &str| delta(&now[key], &was[key]);
    let over = match basis {
        Basis::Window(seconds) => format!("in the last {seconds:.0} s"),
        Basis::SinceStart(_) => "since start".to_owned(),
    };
    let refused = changed("refused");
    if refused > 0.0 {
        out.push(
            Finding::new(
                "refusals",
                if symptom == Symptom::Throughput { Verdict::Problem } else { Verdict::Warn },
                format!("{refused} sends were refused {over} because a mailbox or ring was full ({:.2}% of handled)", 100.0 * refused / handled),
            )
            .remedy("senders back off on refusal; raise messaging.queue_size for bursts, add worker threads for sustained load")
            .key("messaging.queue_size")
            .weight(100.0 * refused / handled),
        );
    }
    let timeouts = changed("timeouts");
    if timeouts > 0.0 {
        out.push(
            Finding::new(
                "delivery-timeouts",
                Verdict::Problem,
                format!("{timeouts} messages were answered `failure` {over} because their delivery deadline passed in a queue"),
            )
            .remedy("the queue ahead of them is too slow: see the slow agents and saturated shards; raise messaging.delivery_timeout only if the wait is acceptable")
            .key("messaging.delivery_timeout")
            .weight(100.0 * timeouts / handled),
        );
    }
    let throttled = changed("throttled");
    if throttled > 0.0 && symptom != Symptom::Memory {
        out.push(
            Finding::new(
                "throttled-agents",
                Verdict::Warn,
                format!("{throttled} messages waited {over} because their agent had used its cpu_shares for the window"),
            )
            .remedy("raise the agent's cpu_shares if it should have more of its core")
            .key("agents.default_limits.cpu_shares")
            .weight(100.0 * throttled / handled),
        );
    }
    let suspended = changed("handlers_suspended");
    if suspended > 0.0 && symptom == Symptom::HighLatency {
        out.push(
            Finding::new(
                "long-handlers-sliced",
                Verdict::Info,
                format!("{suspended} handlers used a whole time slice {over} and yielded their shard"),
            )
            .evidence("slicing keeps neighbours moving; each slice still delays the messages behind it by up to runtime.time_slice")
            .remedy("shorten those handlers, or a shorter runtime.time_slice for fairer sharing")
            .key("runtime.time_slice")
            .weight(100.0 * suspended / handled),
        );
    }
    // Queue depth is a level: growth over the window, or what is there now.
    let depth = number(&now["queue_depth"]);
    let growth = number(&now["queue_depth"]) - number(&was["queue_depth"]);
    if depth >= QUEUE_DEPTH_NOTED && (growth > 0.0 || matches!(basis, Basis::SinceStart(_))) {
        out.push(
            Finding::new(
                "queue-growing",
                if growth >= QUEUE_DEPTH_NOTED && matches!(basis, Basis::Window(_)) { Verdict::Warn } else { Verdict::Info },
                format!(
                    "{} wait in the shards: mailboxes, rings and messages held for busy agents ({growth:+} {over})",
                    crate::remote::counted(depth as u64, "message")
                ),
            )
            .remedy(match symptom {
                Symptom::Memory => "enable message TTL (performance tuning guide) so stored messages expire; see the slow agents that let queues grow",
                _ => "reduce batch size and increase worker threads (performance tuning guide); see the slow agents",
            })
            .key(match symptom {
                Symptom::Memory => "messaging.message_ttl",
                _ => "messaging.batch_size",
            })
            .weight(depth),
        );
    }
    let storage_failures = changed("storage_failures");
    if storage_failures > 0.0 {
        out.push(
            Finding::new(
                "persistence-stalls",
                Verdict::Problem,
                format!("{storage_failures} durable sends were refused {over}: the partition could not keep them"),
            )
            .remedy("check the storage directory's disk (space, latency); storage.* sets where partitions live")
            .key("storage.data_directory")
            .weight(1000.0),
        );
    }
}

fn cross_shard(symptom: Symptom, before: &Reading, after: &Reading, out: &mut Vec<Finding>) {
    if symptom == Symptom::Memory {
        return;
    }
    let earlier = shards(before);
    let (mut local, mut cross, mut from_clients) = (0.0, 0.0, 0.0);
    for shard in shards(after) {
        let index = shard["shard"].as_u64().unwrap_or(0) as usize;
        let old = earlier.get(index).cloned().unwrap_or(Value::Null);
        local += delta(&shard["routed_local"], &old["routed_local"]);
        cross += delta(&shard["routed_cross"], &old["routed_cross"]);
        from_clients += delta(&shard["routed_from_clients"], &old["routed_from_clients"]);
    }
    // What clients sent (the admin endpoint, load generators) reaches a
    // shard through a ring whoever the receiver is: pinning agents does
    // not shorten it, so only agents' crossings count here.
    let between_shards = (cross - from_clients).max(0.0);
    let share = between_shards / (local + between_shards).max(1.0);
    if share >= CROSS_SHARE_NOTED && shards(after).len() > 1 {
        out.push(
            Finding::new(
                "cross-shard-traffic",
                Verdict::Info,
                format!("{:.0}% of the messages agents sent each other crossed shards; each crossing adds a ring hop and a wake-up", share * 100.0),
            )
            .evidence(format!("{local} routed on their own shard, {between_shards} across ({from_clients} more came from clients)"))
            .remedy("pin agents that talk to each other to the same cores")
            .key("runtime.cpu_affinity.pinned_agents")
            .weight(share * 10.0),
        );
    }
}

fn faulting_agents(agents: &[AgentActivity], out: &mut Vec<Finding>) {
    for agent in agents.iter().filter(|agent| agent.faults > 0.0) {
        out.push(
            Finding::new(
                "faulting-agent",
                Verdict::Warn,
                format!(
                    "agent `{}` trapped, ran out of time or memory {}; each fault replaces an instance",
                    agent.name,
                    if agent.faults == 1.0 { "once".to_owned() } else { format!("{} times", agent.faults) }
                ),
            )
            .subject(agent.name.clone())
            .remedy("`engine agents list` shows which fault; fix the agent or raise its limits")
            .key("agents.default_limits")
            .weight(agent.faults),
        );
    }
}

fn agent_memory(agents: &[AgentActivity], out: &mut Vec<Finding>) {
    let mut by_memory: Vec<&AgentActivity> = agents
        .iter()
        .filter(|agent| agent.memory_bytes > 0.0)
        .collect();
    by_memory.sort_by(|a, b| b.memory_bytes.total_cmp(&a.memory_bytes));
    for agent in by_memory.into_iter().take(3) {
        out.push(
            Finding::new(
                "agent-memory",
                Verdict::Info,
                format!(
                    "agent `{}` holds {:.1} MiB of linear memory",
                    agent.name,
                    agent.memory_bytes / (1 << 20) as f64
                ),
            )
            .subject(agent.name.clone())
            .remedy(
                "reduce agent pool size (performance tuning guide); `engine memory analyze` tells whether it grows",
            )
            .key("runtime.agent_pool_size")
            .weight(agent.memory_bytes / (1 << 20) as f64),
        );
    }
}

fn gossip(after: &Reading, out: &mut Vec<Finding>) {
    let Some(cluster) = &after.cluster else {
        return;
    };
    let suspect = number(&cluster["counts"]["suspect"]);
    let down = number(&cluster["counts"]["down"]);
    if suspect + down == 0.0 {
        return;
    }
    out.push(
        Finding::new(
            "cluster-members",
            Verdict::Warn,
            format!("{suspect} members are suspect and {down} down: messages to their agents fail or wait for a route"),
        )
        .remedy("`engine cluster analyze-gossip` watches the SWIM traffic; tune the suspicion multiplier for lossy networks")
        .key("coordination.cluster.suspicion_multiplier")
        .weight(suspect + down),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(name: &str, p99_bucket_ns: u64, runs: u32, busy_ns: u64) -> Value {
        json!({ "name": name, "busy_ns": busy_ns, "processing_buckets_ns": [[p99_bucket_ns, runs]],
                "traps": 0, "execution_timeouts": 0, "memory_faults": 0, "memory_bytes": 65536 })
    }

    fn reading(handled: u64, agents: Vec<Value>, busy: &[u64], counters: Value) -> Reading {
        let mut all = json!({ "handled": handled });
        if let (Some(all), Value::Object(more)) = (all.as_object_mut(), counters) {
            all.extend(more);
        }
        Reading {
            node: json!({
                "uptime_seconds": 60.0,
                "counters": all,
                "shards": busy.iter().enumerate().map(|(index, busy)| json!({
                    "shard": index, "handler_busy_ns": busy, "routed_local": 0, "routed_cross": 10,
                    "counters": { "handled": handled, "handling_turns": handled / 8, "largest_batch": 8 }
                })).collect::<Vec<_>>(),
            }),
            agents: json!({ "agents": agents }),
            cluster: None,
        }
    }

    /// Messages clients sent cross a ring whatever the placement: only
    /// agents' crossings between shards are advised on.
    #[test]
    fn crossings_from_clients_are_not_taken_for_agents_crossing_shards() {
        let at = |cross: u64, from_clients: u64| Reading {
            node: json!({
                "uptime_seconds": 60.0,
                "counters": {},
                "shards": (0..2).map(|index| json!({
                    "shard": index, "routed_local": 0, "routed_cross": cross,
                    "routed_from_clients": from_clients,
                })).collect::<Vec<_>>(),
            }),
            agents: json!({ "agents": [] }),
            cluster: None,
        };
        let advised = |after: &Reading| {
            let mut out = Vec::new();
            cross_shard(Symptom::Throughput, &at(0, 0), after, &mut out);
            out.iter()
                .any(|finding| finding.check == "cross-shard-traffic")
        };
        assert!(!advised(&at(500, 500)), "all from clients");
        assert!(advised(&at(500, 0)), "all between agents");
    }

    #[test]
    fn the_slow_agent_is_named_first_for_high_latency() {
        let before = reading(
            0,
            vec![agent("echo", 255, 10, 0), agent("slow", 229_375, 10, 0)],
            &[0, 0],
            json!({}),
        );
        let after = reading(
            2000,
            vec![
                agent("echo", 255, 1010, 250_000),
                agent("slow", 229_375, 1010, 200_000_000),
            ],
            &[100_000_000, 150_000],
            json!({ "refused": 3 }),
        );
        let (findings, basis) = diagnose(Symptom::HighLatency, &before, &after, 1.0);
        assert_eq!(basis, Basis::Window(1.0));
        assert_eq!(findings[0].check, "slow-agent");
        assert_eq!(findings[0].subject.as_deref(), Some("slow"));
        assert!(findings
            .iter()
            .all(|finding| finding.subject.as_deref() != Some("echo")));
        assert!(findings.iter().any(|finding| finding.check == "refusals"));
        // Throughput puts refusals first.
        let (throughput, _) = diagnose(Symptom::Throughput, &before, &after, 1.0);
        assert_eq!(throughput[0].verdict, Verdict::Problem);
        // Every remedy names a key this build reads.
        for finding in findings.iter().chain(&throughput) {
            if let Some(key) = finding.key {
                assert!(caxton_profiles::key_reader(key).is_some(), "{key}");
            }
        }
    }

    /// An agent's share is of the node's handler time, which the shards
    /// count: one undeployed since keeps its part, so a lone survivor is
    /// not taken for the node's whole load.
    #[test]
    fn an_agents_share_counts_the_handler_time_of_agents_since_undeployed() {
        let before = reading(0, vec![agent("slow", 229_375, 0, 0)], &[0], json!({}));
        // `slow` ran 60 µs of the window's 6 ms of handler time: the rest
        // was an agent undeployed before the second reading.
        let after = reading(
            1000,
            vec![agent("slow", 229_375, 10, 60_000)],
            &[6_000_000],
            json!({}),
        );
        let (findings, _) = diagnose(Symptom::Throughput, &before, &after, 1.0);
        let slow = findings
            .iter()
            .find(|finding| finding.check == "slow-agent")
            .expect("slow is still slow");
        assert_eq!(slow.verdict, Verdict::Warn, "1% of the time is no problem");
        assert!(
            slow.evidence
                .iter()
                .any(|line| line == "1% of the node's handler time"),
            "{:?}",
            slow.evidence
        );
    }

    /// A handful of messages in the rings at a reading is load, not a queue.
    #[test]
    fn a_few_messages_in_flight_are_not_a_growing_queue() {
        let checks = |was: u64, now: u64| {
            let before = reading(0, vec![], &[0], json!({ "queue_depth": was }));
            let after = reading(100, vec![], &[1_000], json!({ "queue_depth": now }));
            let (findings, _) = diagnose(Symptom::HighLatency, &before, &after, 1.0);
            findings
                .iter()
                .filter(|finding| finding.check == "queue-growing")
                .map(|finding| finding.verdict)
                .collect::<Vec<_>>()
        };
        assert!(checks(1, 2).is_empty(), "two readings of a handful");
        assert_eq!(
            checks(100, 500),
            vec![Verdict::Warn],
            "a real queue, growing"
        );
        assert_eq!(
            checks(500, 550),
            vec![Verdict::Info],
            "a queue, barely growing"
        );
    }

    #[test]
    fn a_quiet_window_falls_back_to_the_totals_and_finds_saturation() {
        let after = reading(
            100,
            vec![agent("slow", 229_375, 100, 58_000_000_000)],
            &[59_000_000_000],
            json!({ "queue_depth": 400 }),
        );
        let (findings, basis) = diagnose(Symptom::Throughput, &after, &after, 5.0);
        assert_eq!(basis, Basis::SinceStart(60.0));
        let checks: Vec<_> = findings.iter().map(|finding| finding.check).collect();
        assert!(checks.contains(&"saturated-shard"), "{checks:?}");
        // With how full its turns were.
        let saturated = findings
            .iter()
            .find(|finding| finding.check == "saturated-shard")
            .expect("found");
        assert!(
            saturated
                .evidence
                .iter()
                .any(|line| line.starts_with("100 messages in 12 turns: 8.3 a turn, at most 8")),
            "{:?}",
            saturated.evidence
        );
        assert!(checks.contains(&"queue-growing"), "{checks:?}");
        let (memory, _) = diagnose(Symptom::Memory, &after, &after, 5.0);
        assert!(memory.iter().any(|finding| finding.check == "agent-memory"));
        assert!(memory.iter().all(|finding| finding.check != "slow-agent"));
    }
}
