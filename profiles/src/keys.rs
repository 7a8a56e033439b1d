//! Which part of the engine consumes each profile key.
//!
//! Keys of subsystems this build does not contain yet are accepted (so the
//! seed's profiles load) but reported: the engine warns at boot about each
//! such key a profile writes, and `engine profiles keys` lists them all. A key
//! is never silently ignored.

/// Who reads a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// Read by the named part of this build.
    InEffect(&'static str),
    /// Accepted and validated, but the subsystem that reads it is not in this build.
    NotYetEnforced(&'static str),
}

/// Key-path prefixes and their status; the first matching prefix wins.
pub const KEY_TABLE: &[(&str, KeyStatus)] = &[
    (
        "runtime.worker_threads",
        KeyStatus::InEffect("placement: number of data shards"),
    ),
    (
        "runtime.client_ports",
        KeyStatus::InEffect("shards: client ports in the mesh (admin sends, load generators)"),
    ),
    (
        "runtime.client_spin_before_park",
        KeyStatus::InEffect("shards: a waiting client polls its rings this long before parking"),
    ),
    (
        "runtime.time_slice",
        KeyStatus::InEffect("agents: a handler yields its shard after this long, then resumes"),
    ),
    (
        "runtime.spin_before_park",
        KeyStatus::InEffect("shards: idle ring polling and executor spin before parking"),
    ),
    (
        "runtime.cpu_affinity",
        KeyStatus::InEffect("placement: shard and agent cores"),
    ),
    (
        "runtime.numa",
        KeyStatus::InEffect("placement: memory policy and node binding"),
    ),
    (
        "runtime.max_agents",
        KeyStatus::InEffect("node: agents deployed at once; instance pool size"),
    ),
    (
        "runtime.agent_pool_size",
        KeyStatus::InEffect("agents: warm spares per shard"),
    ),
    (
        "runtime.max_concurrent_messages",
        KeyStatus::InEffect("shards: messages held, split evenly over shards"),
    ),
    (
        "runtime.max_memory_per_agent",
        KeyStatus::InEffect("agents: memory ceiling and pooled reservation"),
    ),
    (
        "runtime.agent_heap_size",
        KeyStatus::InEffect("agents: largest initial memory a module may declare"),
    ),
    (
        "runtime.agent_stack_size",
        KeyStatus::InEffect("agents: WebAssembly stack limit"),
    ),
    (
        "runtime.agent_pool",
        KeyStatus::InEffect("agents: warm-up and recycling"),
    ),
    (
        "runtime.wasm.stack_pooling",
        KeyStatus::InEffect(
            "agents: handlers run on pooled stacks and yield at time_slice; off: to completion on the shard's stack",
        ),
    ),
    (
        "runtime.wasm",
        KeyStatus::InEffect("agents: compiler, module cache and pooling allocator"),
    ),
    (
        "messaging.worker_threads",
        KeyStatus::InEffect("placement: another spelling of runtime.worker_threads"),
    ),
    (
        "messaging.queue_size",
        KeyStatus::InEffect("shards: mailbox capacity and ring size"),
    ),
    (
        "messaging.batch_size",
        KeyStatus::InEffect("shards: messages per ring drain and per handling turn"),
    ),
    (
        "messaging.delivery_timeout",
        KeyStatus::InEffect("shards: longest a message waits in a mailbox"),
    ),
    (
        "messaging.parallel_routes",
        KeyStatus::InEffect("shards: mailbox lanes served in turn"),
    ),
    (
        "messaging.priority_routing",
        KeyStatus::InEffect("shards: priority classes and their max_latency"),
    ),
    (
        "messaging.enable_persistence",
        KeyStatus::InEffect(
            "storage: accepted messages durable before their sender is told, delivered again after a crash",
        ),
    ),
    (
        "messaging.enable_compression",
        KeyStatus::InEffect("storage: LZ4 compression of stored messages"),
    ),
    (
        "messaging.message_ttl",
        KeyStatus::InEffect("storage: expiry of stored messages and conversations"),
    ),
    (
        "messaging.cleanup_interval",
        KeyStatus::InEffect("storage: how often expired and finished rows are removed"),
    ),
    (
        "agents.default_limits.cpu_shares",
        KeyStatus::InEffect("agents: handler time per 100 ms window; past it, messages wait"),
    ),
    (
        "agents.overrides",
        KeyStatus::InEffect("agents: per-agent memory, CPU shares and execution time"),
    ),
    (
        "agents.deploy",
        KeyStatus::InEffect("engine: agents deployed at boot; placement: their cores"),
    ),
    (
        "agents",
        KeyStatus::InEffect("agents: memory and execution-time limits"),
    ),
    (
        "coordination.cluster",
        KeyStatus::InEffect("cluster: SWIM membership (foca) timing, addresses, name, seeds, certificates"),
    ),
    (
        "transport.connection_pool",
        KeyStatus::InEffect(
            "cluster: the message lanes, pooled QUIC streams that carry remote messages to each peer",
        ),
    ),
    (
        "transport",
        KeyStatus::InEffect("cluster: the QUIC (quinn) or TLS-over-TCP transport between nodes"),
    ),
    (
        "storage",
        KeyStatus::InEffect(
            "storage: where the per-shard SQLite partitions live, their pragmas and write batching",
        ),
    ),
    (
        "observability.log_level",
        KeyStatus::InEffect("engine: log filter (RUST_LOG wins)"),
    ),
    (
        "observability.admin",
        KeyStatus::InEffect("admin: HTTP endpoint, token, upload and connection limits"),
    ),
    (
        "observability.hdr_log",
        KeyStatus::InEffect("admin: periodic HDR interval logs"),
    ),
];

/// The status of `key` (a dotted path such as `messaging.queue_size`).
pub fn key_status(key: &str) -> Option<KeyStatus> {
    KEY_TABLE
        .iter()
        .find(|(prefix, _)| {
            key == *prefix
                || key.starts_with(&format!("{prefix}."))
                || key.starts_with(&format!("{prefix}["))
        })
        .map(|&(_, status)| status)
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
    fn every_key_of_the_schema_has_a_status() {
        let mut profile = crate::Profile::default();
        profile.runtime.worker_threads = Some(2);
        profile.runtime.spin_before_park = Some(crate::HumanDuration::from_micros(5));
        profile.messaging.message_ttl = Some(crate::HumanDuration::from_secs(5));
        let tree = serde_json::to_value(&profile).expect("serializes");
        let mut paths = Vec::new();
        leaves("", &tree, &mut paths);
        assert!(paths.len() > 60, "walked the whole schema: {paths:?}");
        for path in paths {
            assert!(key_status(&path).is_some(), "{path} has no status");
        }
        assert_eq!(
            key_status("runtime.numa.memory_policy"),
            key_status("runtime.numa")
        );
        assert!(matches!(
            key_status("runtime.max_agents"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("storage.page_cache_size"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("runtime.wasm.stack_pooling"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("agents.default_limits.cpu_shares"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("coordination.cluster.gossip_interval"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("transport.quic.max_datagram_size"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("transport.connection_pool.min_idle"),
            Some(KeyStatus::InEffect(_))
        ));
        assert!(matches!(
            key_status("runtime.wasm.memory_pooling"),
            Some(KeyStatus::InEffect(_))
        ));
        assert_eq!(key_status("runtimes"), None);
    }
}
