//! Which part of the engine reads each profile key (`engine profiles keys`).
//!
//! Every key of the schema has a reader; a test walks the schema to keep it
//! so. Keys that act only with others (a cluster, persistence, the chosen
//! transport) are named at boot when they wait, or refused by the loader
//! (the other transport's keys, written by the user).

/// Key-path prefixes and the part of the engine that reads them; the first
/// matching prefix wins.
pub const KEY_TABLE: &[(&str, &str)] = &[
    (
        "runtime.worker_threads",
        "placement: number of data shards",
    ),
    (
        "runtime.client_ports",
        "shards: client ports in the mesh (admin sends, load generators)",
    ),
    (
        "runtime.client_spin_before_park",
        "shards: a waiting client polls its rings this long before parking",
    ),
    (
        "runtime.time_slice",
        "agents: a handler yields its shard after this long, then resumes",
    ),
    (
        "runtime.spin_before_park",
        "shards: idle ring polling and executor spin before parking",
    ),
    (
        "runtime.cpu_affinity",
        "placement: shard and agent cores",
    ),
    (
        "runtime.numa",
        "placement: memory policy and node binding",
    ),
    (
        "runtime.max_agents",
        "node: agents deployed at once; instance pool size",
    ),
    (
        "runtime.agent_pool_size",
        "agents: warm spares per shard",
    ),
    (
        "runtime.max_concurrent_messages",
        "shards: messages held, split evenly over shards",
    ),
    (
        "runtime.max_memory_per_agent",
        "agents: memory ceiling and pooled reservation",
    ),
    (
        "runtime.agent_heap_size",
        "agents: largest initial memory a module may declare",
    ),
    (
        "runtime.agent_stack_size",
        "agents: WebAssembly stack limit",
    ),
    (
        "runtime.agent_pool",
        "agents: warm-up and recycling",
    ),
    (
        "runtime.wasm.direct_quick_handlers",
        "agents: an agent whose handlers are all quick runs them on the shard's stack; off: every handler is sliced",
    ),
    (
        "runtime.wasm.stack_pooling",
        "agents: handlers run on pooled stacks and yield at time_slice; off: to completion on the shard's stack",
    ),
    (
        "runtime.wasm",
        "agents: compiler, module cache and pooling allocator",
    ),
    (
        "messaging.worker_threads",
        "placement: another spelling of runtime.worker_threads",
    ),
    (
        "messaging.queue_size",
        "shards: mailbox capacity and ring size",
    ),
    (
        "messaging.queue_bytes",
        "shards: content bytes a data shard holds waiting for its agents; past it sends are refused",
    ),
    (
        "messaging.batch_size",
        "shards: messages per ring drain and per handling turn",
    ),
    (
        "messaging.delivery_timeout",
        "shards: longest a message waits in a mailbox",
    ),
    (
        "messaging.parallel_routes",
        "shards: mailbox lanes served in turn",
    ),
    (
        "messaging.priority_routing",
        "shards: priority classes and their max_latency",
    ),
    (
        "messaging.enable_persistence",
        "storage: accepted messages durable before their sender is told, delivered again after a crash",
    ),
    (
        "messaging.enable_compression",
        "storage: LZ4 compression of stored messages",
    ),
    (
        "messaging.message_ttl",
        "storage: expiry of stored messages and conversations",
    ),
    (
        "messaging.cleanup_interval",
        "storage: how often expired and finished rows are removed",
    ),
    (
        "agents.default_limits.cpu_shares",
        "agents: handler time per 100 ms window; past it, messages wait",
    ),
    (
        "agents.overrides",
        "agents: per-agent memory, CPU shares and execution time",
    ),
    (
        "agents.deploy",
        "engine: agents deployed at boot; placement: their cores",
    ),
    (
        "agents",
        "agents: memory and execution-time limits",
    ),
    (
        "coordination.cluster",
        "cluster: SWIM membership (foca) timing, addresses, name, seeds, certificates",
    ),
    (
        "transport.connection_pool",
        "cluster: the message lanes, pooled QUIC streams that carry remote messages to each peer",
    ),
    (
        "transport",
        "cluster: the QUIC (quinn) or TLS-over-TCP transport between nodes",
    ),
    (
        "storage",
        "storage: where the per-shard SQLite partitions live, their pragmas and write batching",
    ),
    (
        "observability.log_level",
        "engine: log filter (RUST_LOG wins)",
    ),
    (
        "observability.admin",
        "admin: HTTP endpoint, token, upload and connection limits",
    ),
    (
        "observability.hdr_log",
        "admin: periodic HDR interval logs",
    ),
];

/// The part of the engine that reads `key` (a dotted path such as
/// `messaging.queue_size`); `None` for a key the schema does not have.
pub fn key_reader(key: &str) -> Option<&'static str> {
    KEY_TABLE
        .iter()
        .find(|(prefix, _)| {
            key == *prefix
                || key.starts_with(&format!("{prefix}."))
                || key.starts_with(&format!("{prefix}["))
        })
        .map(|&(_, reader)| reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn every_key_of_the_schema_has_a_reader() {
        let mut profile = crate::Profile::default();
        profile.runtime.worker_threads = Some(2);
        profile.runtime.spin_before_park = Some(crate::HumanDuration::from_micros(5));
        profile.messaging.message_ttl = Some(crate::HumanDuration::from_secs(5));
        let tree = serde_json::to_value(&profile).expect("serializes");
        let mut paths = Vec::new();
        leaves("", &tree, &mut paths);
        assert!(paths.len() > 60, "walked the whole schema: {paths:?}");
        for path in paths {
            assert!(key_reader(&path).is_some(), "{path} has no reader");
        }
        assert_eq!(
            key_reader("runtime.numa.memory_policy"),
            key_reader("runtime.numa")
        );
        assert_eq!(key_reader("runtimes"), None);
    }
}
