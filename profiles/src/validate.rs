//! Rules that span keys: ranges, and pairs of keys that cannot hold together.
//!
//! A pure function of the profile; the loader attaches the location of the
//! key each violation names.

use std::collections::BTreeSet;

use crate::schema::{MemoryPolicy, Profile};

/// One broken rule: the key at fault, why, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key path to point the user at.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// The most data shards a node runs; a bound on boot-time allocations
/// (one ring per ordered pair of shards grows with the square of this).
pub const WORKER_THREADS_MAX: u32 = 1024;

/// The largest `runtime.agent_stack_size`: half the 2 MiB stack a shard's
/// thread has, leaving the rest to the host.
pub const AGENT_STACK_BYTES_MAX: u64 = 1 << 20;

/// The most client ports: each has a ring to and from every data shard.
pub const CLIENT_PORTS_MAX: u32 = 4096;

/// The shortest `runtime.time_slice`: the epoch ticker that ends slices
/// ticks at most every `TIME_SLICE_MIN / 2`, and waking it more often costs
/// the gossip core more than it buys.
pub const TIME_SLICE_MIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The most mailbox lanes per shard (`messaging.parallel_routes`).
pub const PARALLEL_ROUTES_MAX: u32 = 4096;

/// A WebAssembly page: the least memory a module with a memory starts with.
const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// The most a 32-bit WebAssembly memory holds: 65536 pages.
pub const WASM32_MEMORY_BYTES_MAX: u64 = 4 << 30;

/// The first CPU number a list names twice.
fn named_twice(cpus: &[u32]) -> Option<u32> {
    let mut seen = BTreeSet::new();
    cpus.iter().copied().find(|cpu| !seen.insert(*cpu))
}

/// Every rule `profile` breaks, in schema order.
pub fn validate(profile: &Profile) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut fail = |key: &str, message: String, hint: &str| {
        violations.push(Violation {
            key: key.to_owned(),
            message,
            hint: (!hint.is_empty()).then(|| hint.to_owned()),
        });
    };

    let runtime = &profile.runtime;
    if let Some(workers) = runtime.worker_threads {
        if workers == 0 || workers > WORKER_THREADS_MAX {
            fail(
                "runtime.worker_threads",
                format!("{workers} data shards is out of range"),
                "use 1 to 1024, or leave it unset for one per core",
            );
        }
    }
    if runtime.max_agents == 0 {
        fail("runtime.max_agents", "must be at least 1".into(), "");
    }
    let storage = &profile.storage;
    if storage.batch_size == 0 || storage.batch_size > 100_000 {
        fail(
            "storage.batch_size",
            format!(
                "{} writes per transaction is out of range",
                storage.batch_size
            ),
            "use 1 to 100000",
        );
    }
    if storage.flush_interval.get() > std::time::Duration::from_secs(1) {
        fail(
            "storage.flush_interval",
            format!("{} holds durable sends too long", storage.flush_interval),
            "use at most 1s; 0 commits as soon as nothing more is queued",
        );
    }
    if storage.data_directory.trim().is_empty() {
        fail(
            "storage.data_directory",
            "is empty".into(),
            "name a directory",
        );
    }
    let observability = &profile.observability;
    if observability.log_level.trim().is_empty() {
        fail(
            "observability.log_level",
            "is empty".into(),
            "use a RUST_LOG filter such as `info` or `caxton_shards=debug,warn`",
        );
    } else if let Some(word) = bare_log_target(&observability.log_level) {
        let nearest = LOG_LEVELS
            .iter()
            .min_by_key(|level| crate::names::slips_between(&word.to_ascii_lowercase(), level))
            .copied()
            .unwrap_or("info");
        fail(
            "observability.log_level",
            format!(
                "`{word}` is neither a level ({}) nor `target=level`; as a bare target it would log that target alone and hide every other line",
                LOG_LEVELS.join(", ")
            ),
            &format!("did you mean `{nearest}`? A target takes its level: `{word}=debug`"),
        );
    }
    let admin = &observability.admin;
    if admin.max_upload_size.bytes() < 1024 {
        fail(
            "observability.admin.max_upload_size",
            format!("{} cannot hold a module", admin.max_upload_size),
            "use at least 1KB",
        );
    }
    if admin.max_connections == 0 {
        fail(
            "observability.admin.max_connections",
            "must be at least 1".into(),
            "",
        );
    }
    if admin
        .access_token
        .as_deref()
        .is_some_and(|token| token.len() < 16 || token.chars().any(|c| c.is_whitespace()))
    {
        fail(
            "observability.admin.access_token",
            "is too short or contains whitespace".into(),
            "use at least 16 characters without spaces, e.g. `openssl rand -hex 16`",
        );
    }
    if observability.hdr_log.interval.get() < std::time::Duration::from_millis(100) {
        fail(
            "observability.hdr_log.interval",
            format!("{} is shorter than 100ms", observability.hdr_log.interval),
            "HDR interval logs are meant for intervals of a second or more",
        );
    }
    if runtime.agent_pool_size > runtime.max_agents {
        fail(
            "runtime.agent_pool_size",
            format!(
                "{} pre-warmed instances is above runtime.max_agents ({})",
                runtime.agent_pool_size, runtime.max_agents
            ),
            "lower runtime.agent_pool_size or raise runtime.max_agents",
        );
    }
    if runtime.max_concurrent_messages == 0 {
        fail(
            "runtime.max_concurrent_messages",
            "must be at least 1".into(),
            "",
        );
    }
    for (key, size) in [
        ("runtime.max_memory_per_agent", runtime.max_memory_per_agent),
        ("runtime.agent_heap_size", runtime.agent_heap_size),
    ] {
        if size.bytes() < WASM_PAGE_BYTES {
            fail(
                key,
                format!("{size} is below one 64KB WebAssembly page"),
                "no module with a memory could start",
            );
        }
    }
    if runtime.max_memory_per_agent.bytes() > WASM32_MEMORY_BYTES_MAX {
        fail(
            "runtime.max_memory_per_agent",
            format!(
                "{} is above the 4GiB a 32-bit WebAssembly memory can address",
                runtime.max_memory_per_agent
            ),
            "use 4GiB or less: no agent could use more, and each pooled instance reserves address space for the whole limit",
        );
    }
    if runtime.agent_heap_size > runtime.max_memory_per_agent {
        fail(
            "runtime.agent_heap_size",
            format!(
                "{} is above runtime.max_memory_per_agent ({})",
                runtime.agent_heap_size, runtime.max_memory_per_agent
            ),
            "an agent's initial heap must fit within its memory ceiling",
        );
    }
    if runtime.agent_stack_size.bytes() < 4096 {
        fail(
            "runtime.agent_stack_size",
            format!("{} is below one 4KB page", runtime.agent_stack_size),
            "",
        );
    }
    let affinity = &runtime.cpu_affinity;
    if !affinity.enabled && !affinity.pinned_agents.is_empty() {
        fail(
            "runtime.cpu_affinity.pinned_agents",
            "pinned agents need runtime.cpu_affinity.enabled: true".into(),
            "enable cpu_affinity or remove pinned_agents",
        );
    }
    let mut pinned_names = BTreeSet::new();
    for (index, pinned) in affinity.pinned_agents.iter().enumerate() {
        let key = format!("runtime.cpu_affinity.pinned_agents[{index}]");
        if let Err(error) = crate::check_agent_name(&pinned.agent_name) {
            fail(&format!("{key}.agent_id"), error, "");
        } else if !pinned_names.insert(pinned.agent_name.as_str()) {
            fail(
                &format!("{key}.agent_id"),
                format!("agent `{}` is pinned twice", pinned.agent_name),
                "merge its cpu_cores into one entry",
            );
        }
        if pinned.pus.is_empty() {
            fail(
                &format!("{key}.cpu_cores"),
                "names no core".into(),
                "list at least one CPU number",
            );
        }
        if let Some(twice) = named_twice(&pinned.pus) {
            fail(
                &format!("{key}.cpu_cores"),
                format!("names CPU {twice} twice"),
                "list each CPU once",
            );
        }
    }
    let numa = &runtime.numa;
    if !numa.enabled && (numa.memory_policy != MemoryPolicy::LocalAlloc || numa.interleave_memory) {
        fail(
            "runtime.numa.enabled",
            "is false, yet numa.memory_policy or numa.interleave_memory asks for a NUMA memory policy".into(),
            "set runtime.numa.enabled: true, or drop the memory policy keys",
        );
    }
    if runtime.agent_stack_size.bytes() > AGENT_STACK_BYTES_MAX {
        fail(
            "runtime.agent_stack_size",
            format!(
                "{} is above {} (half of a shard thread's stack)",
                runtime.agent_stack_size,
                crate::ByteSize(AGENT_STACK_BYTES_MAX)
            ),
            "without runtime.wasm.stack_pooling agents run on their shard's own 2MB thread stack, and one bound serves both ways of running: use 1MB or less",
        );
    }
    if runtime.wasm.stack_pooling && !runtime.wasm.memory_pooling {
        fail(
            "runtime.wasm.stack_pooling",
            "is true, but runtime.wasm.memory_pooling is false: wasmtime pools handler stacks in its pooling allocator".into(),
            "set memory_pooling: true, or stack_pooling: false to run handlers to completion on the shard's stack",
        );
    }
    if !runtime.wasm.direct_quick_handlers && !runtime.wasm.stack_pooling {
        fail(
            "runtime.wasm.direct_quick_handlers",
            "is false (every handler sliced), but runtime.wasm.stack_pooling is false: without pooled stacks every handler runs directly on the shard's stack".into(),
            "set stack_pooling: true to slice every handler, or leave direct_quick_handlers at true",
        );
    }
    if let Some(ports) = runtime.client_ports {
        if ports == 0 || ports > CLIENT_PORTS_MAX {
            fail(
                "runtime.client_ports",
                format!("{ports} client ports is out of range"),
                &format!("use 1 to {CLIENT_PORTS_MAX}; unset gives one per data shard plus four"),
            );
        }
    }
    let time_slice = runtime.time_slice.get();
    if time_slice.is_zero() {
        fail(
            "runtime.time_slice",
            "is 0: a handler could never run".into(),
            "use at least 50us; 500us to 10ms is typical",
        );
    } else if time_slice < TIME_SLICE_MIN {
        fail(
            "runtime.time_slice",
            format!(
                "is {}, below the engine's {}: handlers would yield before doing any work",
                crate::HumanDuration(time_slice),
                crate::HumanDuration(TIME_SLICE_MIN)
            ),
            "use at least 50us",
        );
    }
    if runtime.agent_pool.recycle_after.get().is_zero() {
        fail(
            "runtime.agent_pool.recycle_after",
            "must be above zero".into(),
            "0 would start a fresh instance for every message; use a long duration to recycle by max_reuse_count alone",
        );
    }
    if runtime.agent_pool.max_reuse_count == 0 {
        fail(
            "runtime.agent_pool.max_reuse_count",
            "must be at least 1".into(),
            "",
        );
    }
    if runtime.wasm.cache_compiled_modules && runtime.wasm.module_cache_size == 0 {
        fail(
            "runtime.wasm.module_cache_size",
            "is 0 while cache_compiled_modules is true".into(),
            "set cache_compiled_modules: false to disable the cache",
        );
    }

    let messaging = &profile.messaging;
    // The largest message a shard is handed: an upload through the admin
    // endpoint, or an agent's (1 MiB). An empty shard must take it.
    let largest = profile
        .observability
        .admin
        .max_upload_size
        .bytes()
        .max(1 << 20);
    if messaging.queue_bytes.bytes() < largest {
        fail(
            "messaging.queue_bytes",
            format!(
                "{} is below the largest message a shard may be handed ({})",
                messaging.queue_bytes,
                crate::ByteSize(largest)
            ),
            "raise it to at least observability.admin.max_upload_size and 1MB",
        );
    }
    if messaging.queue_size == 0 {
        fail("messaging.queue_size", "must be at least 1".into(), "");
    }
    if messaging.batch_size == 0 {
        fail(
            "messaging.batch_size",
            "must be at least 1".into(),
            "use 1 for no batching",
        );
    } else if messaging.batch_size > messaging.queue_size {
        fail(
            "messaging.batch_size",
            format!(
                "{} is above messaging.queue_size ({}): a batch could never fill",
                messaging.batch_size, messaging.queue_size
            ),
            "lower messaging.batch_size or raise messaging.queue_size",
        );
    }
    if messaging.parallel_routes == 0 {
        fail("messaging.parallel_routes", "must be at least 1".into(), "");
    } else if messaging.parallel_routes > PARALLEL_ROUTES_MAX {
        // Every shard builds its lanes at boot: an absurd count is memory.
        fail(
            "messaging.parallel_routes",
            format!(
                "{} is above {PARALLEL_ROUTES_MAX}",
                messaging.parallel_routes
            ),
            "a lane serves many agents: a few lanes separate a busy agent from the rest",
        );
    }
    if messaging.delivery_timeout.get().is_zero() {
        fail(
            "messaging.delivery_timeout",
            "must be above zero".into(),
            "",
        );
    }
    if messaging.cleanup_interval.get().is_zero() {
        fail(
            "messaging.cleanup_interval",
            "must be above zero".into(),
            "",
        );
    }
    if messaging.message_ttl.is_some_and(|ttl| ttl.get().is_zero()) {
        fail(
            "messaging.message_ttl",
            "must be above zero".into(),
            "leave it unset to keep messages until handled",
        );
    }
    let routing = &messaging.priority_routing;
    if routing.enabled && routing.queues.is_empty() {
        fail(
            "messaging.priority_routing.queues",
            "is empty while priority routing is enabled".into(),
            "",
        );
    }
    let mut class_names = BTreeSet::new();
    let mut class_priorities = BTreeSet::new();
    for (index, class) in routing.queues.iter().enumerate() {
        let key = format!("messaging.priority_routing.queues[{index}]");
        if !class_names.insert(class.name.as_str()) {
            fail(
                &format!("{key}.name"),
                format!("class `{}` is defined twice", class.name),
                "",
            );
        }
        if !class_priorities.insert(class.priority) {
            fail(
                &format!("{key}.priority"),
                format!("priority {} is used by two classes", class.priority),
                "give each class its own priority",
            );
        }
        if class.max_latency.get().is_zero() {
            fail(
                &format!("{key}.max_latency"),
                "must be above zero".into(),
                "",
            );
        }
    }

    let cluster = &profile.coordination.cluster;
    if cluster.probe_timeout.get().is_zero() {
        fail(
            "coordination.cluster.probe_timeout",
            "must be above zero".into(),
            "a probe needs time for its answer: use at least a network round trip",
        );
    }
    if cluster.probe_timeout >= cluster.probe_interval {
        fail(
            "coordination.cluster.probe_timeout",
            format!(
                "{} is not below coordination.cluster.probe_interval ({})",
                cluster.probe_timeout, cluster.probe_interval
            ),
            "a probe must time out before the next one starts: raise probe_interval or lower probe_timeout",
        );
    }
    for (key, value) in [
        ("coordination.cluster.gossip_fanout", cluster.gossip_fanout),
        (
            "coordination.cluster.suspicion_multiplier",
            cluster.suspicion_multiplier,
        ),
        (
            "coordination.cluster.indirect_probes",
            cluster.indirect_probes,
        ),
    ] {
        if value == 0 {
            fail(key, "must be at least 1".into(), "");
        }
    }
    if cluster.gossip_interval.get().is_zero() {
        fail(
            "coordination.cluster.gossip_interval",
            "must be above zero".into(),
            "",
        );
    }

    check_cluster_addresses(profile, &mut fail);

    let transport = &profile.transport;
    // Each transport's own rules only: the other's keys change nothing (the
    // loader refuses them when a user wrote them).
    if transport.kind == crate::schema::TransportKind::Quic {
        let quic = &transport.quic;
        // Zero first: a keep-alive can fit under no idle timeout of zero,
        // and the key to change is the timeout.
        if quic.idle_timeout.get().is_zero() {
            fail(
                "transport.quic.idle_timeout",
                "must be above zero".into(),
                "a connection quiet this long is closed: use at least a few round trips",
            );
        } else if !quic.keep_alive_interval.get().is_zero()
            && quic.keep_alive_interval >= quic.idle_timeout
        {
            fail(
                "transport.quic.keep_alive_interval",
                format!(
                    "{} is not below transport.quic.idle_timeout ({}): connections would close before a keep-alive is sent",
                    quic.keep_alive_interval, quic.idle_timeout
                ),
                "lower keep_alive_interval below idle_timeout, or set it to 0 to let idle connections close",
            );
        }
        if quic.stream_receive_window.bytes() < 1024
            || quic.stream_receive_window > quic.connection_receive_window
        {
            fail(
                "transport.quic.stream_receive_window",
                format!(
                    "{} must be at least 1KB and not above transport.quic.connection_receive_window ({})",
                    quic.stream_receive_window, quic.connection_receive_window
                ),
                "",
            );
        }
        if quic.connection_receive_window.bytes() > (1 << 32) {
            fail(
                "transport.quic.connection_receive_window",
                format!("{} is above 4GiB", quic.connection_receive_window),
                "",
            );
        }
    }
    if transport.kind == crate::schema::TransportKind::Tcp {
        let tcp = &transport.tcp;
        for (key, size) in [
            ("transport.tcp.send_buffer_size", tcp.send_buffer_size),
            ("transport.tcp.recv_buffer_size", tcp.recv_buffer_size),
        ] {
            if size.bytes() < 4096 || size.bytes() > (1 << 30) {
                fail(key, format!("{size} is outside 4KB..=1GiB"), "");
            }
        }
        if tcp.connect_timeout.get().is_zero() {
            fail(
                "transport.tcp.connect_timeout",
                "must be above zero".into(),
                "",
            );
        }
        if tcp.keepalive {
            if tcp.keepalive_time.get() < std::time::Duration::from_secs(1)
                || tcp.keepalive_interval.get() < std::time::Duration::from_secs(1)
            {
                fail(
                    "transport.tcp.keepalive_time",
                    format!(
                        "keep-alive time {} and interval {} must each be at least 1s (the kernel counts whole seconds)",
                        tcp.keepalive_time, tcp.keepalive_interval
                    ),
                    "",
                );
            }
            if tcp.keepalive_probes == 0 || tcp.keepalive_probes > 127 {
                fail(
                    "transport.tcp.keepalive_probes",
                    format!("{} is outside 1..=127", tcp.keepalive_probes),
                    "",
                );
            }
        }
        if tcp.linger > 3600 {
            fail(
                "transport.tcp.linger",
                format!("{}s is above an hour", tcp.linger),
                "",
            );
        }
    }
    if !(1200..=65_527).contains(&transport.quic.max_datagram_size) {
        fail(
            "transport.quic.max_datagram_size",
            format!(
                "{} is outside 1200..=65527",
                transport.quic.max_datagram_size
            ),
            "QUIC needs at least 1200 bytes",
        );
    }
    if transport.quic.max_concurrent_streams == 0 {
        fail(
            "transport.quic.max_concurrent_streams",
            "must be at least 1".into(),
            "",
        );
    }
    let pool = &transport.connection_pool;
    if pool.min_idle > pool.max_idle {
        fail(
            "transport.connection_pool.min_idle",
            format!(
                "{} is above transport.connection_pool.max_idle ({})",
                pool.min_idle, pool.max_idle
            ),
            "",
        );
    }
    if pool.max_connections_per_node == 0 {
        fail(
            "transport.connection_pool.max_connections_per_node",
            "must be at least 1".into(),
            "each peer needs a lane for remote messages",
        );
    } else if pool.max_connections_per_node > transport.quic.max_concurrent_streams {
        fail(
            "transport.connection_pool.max_connections_per_node",
            format!(
                "{} is above transport.quic.max_concurrent_streams ({})",
                pool.max_connections_per_node, transport.quic.max_concurrent_streams
            ),
            "each lane is a QUIC stream, and a peer lets no more open; lower max_connections_per_node with max_concurrent_streams",
        );
    }
    for (key, duration) in [
        ("transport.connection_pool.idle_timeout", pool.idle_timeout),
        ("transport.connection_pool.max_lifetime", pool.max_lifetime),
    ] {
        if duration.get().is_zero() {
            fail(key, "must be above zero".into(), "");
        }
    }
    if transport.kind == crate::schema::TransportKind::Tcp
        && *pool != crate::schema::ConnectionPoolConfig::default()
    {
        fail(
            "transport.connection_pool",
            "applies to the QUIC transport only".into(),
            "TCP carries remote messages on one connection per peer; remove the pool's keys or use `transport.type: quic`",
        );
    }
    if pool.pre_warm && pool.warm_connections > pool.max_connections_per_node {
        fail(
            "transport.connection_pool.warm_connections",
            format!(
                "{} is above transport.connection_pool.max_connections_per_node ({})",
                pool.warm_connections, pool.max_connections_per_node
            ),
            "",
        );
    }

    if profile.storage.page_cache_size.bytes() < 64 * 1024 {
        fail(
            "storage.page_cache_size",
            format!(
                "{} is below SQLite's useful minimum of 64KB",
                profile.storage.page_cache_size
            ),
            "",
        );
    }

    let agents = &profile.agents;
    let mut override_names = BTreeSet::new();
    for (index, entry) in agents.overrides.iter().enumerate() {
        let key = format!("agents.overrides[{index}]");
        if let Err(error) = crate::check_agent_name(&entry.agent_name) {
            fail(&format!("{key}.agent_id"), error, "");
        } else if !override_names.insert(entry.agent_name.as_str()) {
            fail(
                &format!("{key}.agent_id"),
                format!("agent `{}` has two overrides", entry.agent_name),
                "merge them into one entry",
            );
        }
        if entry
            .memory
            .is_some_and(|memory| memory.bytes() < WASM_PAGE_BYTES)
        {
            fail(
                &format!("{key}.memory"),
                "is below one 64KB WebAssembly page".into(),
                "",
            );
        }
        if entry
            .max_execution_time
            .is_some_and(|time| time.get().is_zero())
        {
            fail(
                &format!("{key}.max_execution_time"),
                "must be above zero".into(),
                "",
            );
        }
    }
    if agents.default_limits.cpu_shares.millicores() == 0 {
        fail(
            "agents.default_limits.cpu_shares",
            "is 0: the agent could never run".into(),
            "use at least 1m; 1000m is a whole core",
        );
    }
    for (index, entry) in agents.overrides.iter().enumerate() {
        if entry
            .cpu_shares
            .is_some_and(|shares| shares.millicores() == 0)
        {
            fail(
                &format!("agents.overrides[{index}].cpu_shares"),
                "is 0: the agent could never run".into(),
                "use at least 1m",
            );
        }
    }
    let mut deployed = BTreeSet::new();
    for (index, deployment) in agents.deploy.iter().enumerate() {
        let key = format!("agents.deploy[{index}]");
        if let Err(error) = crate::check_agent_name(&deployment.name) {
            fail(&format!("{key}.name"), error, "");
        } else if !deployed.insert(deployment.name.as_str()) {
            fail(
                &format!("{key}.name"),
                format!("agent `{}` is deployed twice", deployment.name),
                "give each agent one entry; use instances for more",
            );
        }
        if deployment.module.is_empty() {
            fail(
                &format!("{key}.module"),
                "must name a .wasm or .wat file".into(),
                "",
            );
        }
        if deployment.instances == 0 {
            fail(&format!("{key}.instances"), "must be at least 1".into(), "");
        }
        if deployment.pus.as_ref().is_some_and(Vec::is_empty) {
            fail(
                &format!("{key}.cpu_cores"),
                "names no core".into(),
                "list at least one CPU number, or drop the key",
            );
        }
        if let Some(twice) = deployment.pus.as_deref().and_then(named_twice) {
            fail(
                &format!("{key}.cpu_cores"),
                format!("names CPU {twice} twice"),
                "list each CPU once",
            );
        }
        if deployment.pus.is_some() && pinned_names.contains(deployment.name.as_str()) {
            fail(
                &format!("{key}.cpu_cores"),
                format!(
                    "agent `{}` is also pinned in runtime.cpu_affinity.pinned_agents",
                    deployment.name
                ),
                "pin it in one place",
            );
        }
        if deployment
            .pus
            .as_ref()
            .is_some_and(|cores| !affinity.enabled && !cores.is_empty())
        {
            fail(
                &format!("{key}.cpu_cores"),
                "pinned cores need runtime.cpu_affinity.enabled: true".into(),
                "",
            );
        }
    }
    if deployed.len() > runtime.max_agents as usize {
        fail(
            "agents.deploy",
            format!(
                "{} agents is above runtime.max_agents ({})",
                deployed.len(),
                runtime.max_agents
            ),
            "",
        );
    }
    if agents.default_limits.memory.bytes() < WASM_PAGE_BYTES {
        fail(
            "agents.default_limits.memory",
            "is below one 64KB WebAssembly page".into(),
            "",
        );
    }
    if agents.default_limits.max_execution_time.get().is_zero() {
        fail(
            "agents.default_limits.max_execution_time",
            "must be above zero".into(),
            "",
        );
    }
    // A slice is a part of a handler's run: one longer than the whole run
    // it may have says the profile is confused about which is which.
    let time_slice = profile.runtime.time_slice;
    let longest_runs = std::iter::once((
        "agents.default_limits.max_execution_time".to_owned(),
        agents.default_limits.max_execution_time,
    ))
    .chain(
        agents
            .overrides
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                entry.max_execution_time.map(|limit| {
                    (
                        format!("agents.overrides[{index}].max_execution_time"),
                        limit,
                    )
                })
            }),
    );
    for (key, limit) in longest_runs {
        if !limit.get().is_zero() && time_slice.get() > limit.get() {
            fail(
                "runtime.time_slice",
                format!("is {time_slice}, longer than {key} ({limit})"),
                "a time slice is a part of one handler's run; make it shorter than the run",
            );
        }
    }
    violations
}

/// The cluster's addresses, name and certificates: each parses, they agree
/// with each other, and a node reachable beyond loopback has certificates.
fn check_cluster_addresses(profile: &Profile, fail: &mut impl FnMut(&str, String, &str)) {
    use std::net::SocketAddr;
    let cluster = &profile.coordination.cluster;
    let parse = |key: &str, text: &str, fail: &mut dyn FnMut(&str, String, &str)| {
        let parsed = text.parse::<SocketAddr>();
        if parsed.is_err() {
            fail(
                key,
                format!("{text:?} is not an IP:PORT address"),
                "write an IP address and a port, e.g. 127.0.0.1:7946 or [::1]:7946",
            );
        }
        parsed.ok()
    };
    let listen = cluster
        .listen_address
        .as_deref()
        .and_then(|text| parse("coordination.cluster.listen_address", text, fail));
    let advertise = cluster
        .advertise_address
        .as_deref()
        .and_then(|text| parse("coordination.cluster.advertise_address", text, fail));
    if let Some(advertise) = advertise {
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            fail(
                "coordination.cluster.advertise_address",
                format!("{advertise} cannot be reached by other nodes"),
                "give the address and port other nodes connect to",
            );
        }
    }
    if let Some(listen) = listen {
        if listen.ip().is_unspecified() && advertise.is_none() {
            fail(
                "coordination.cluster.listen_address",
                format!("{listen} listens everywhere, so other nodes need to be told where to reach this one"),
                "set coordination.cluster.advertise_address",
            );
        }
    }
    for (index, seed) in cluster.seeds.iter().enumerate() {
        if !is_seed_address(seed) {
            fail(
                &format!("coordination.cluster.seeds[{index}]"),
                format!("{seed:?} is not a HOST:PORT address"),
                "e.g. 10.0.0.5:7946 or node-a.example:7946",
            );
        }
    }
    if !cluster.seeds.is_empty() && cluster.listen_address.is_none() {
        fail(
            "coordination.cluster.seeds",
            "joining a cluster needs an address to listen on".into(),
            "set coordination.cluster.listen_address",
        );
    }
    if let Some(name) = &cluster.node_name {
        if let Err(error) = crate::check_node_name(name) {
            fail(
                "coordination.cluster.node_name",
                error.replace("an agent name", "a node name"),
                "",
            );
        }
    }
    let tls = &cluster.tls;
    let given = [&tls.ca_file, &tls.cert_file, &tls.key_file]
        .iter()
        .filter(|file| file.is_some())
        .count();
    // Each refusal names a key the user wrote (a file that is set, the
    // address that is public), so it points at that `--set` or line rather
    // than at the section a built-in profile opened.
    if given != 0 && given != 3 {
        let set = [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ]
        .into_iter()
        .find(|(_, file)| file.is_some())
        .map_or("ca_file", |(name, _)| name);
        fail(
            &format!("coordination.cluster.tls.{set}"),
            format!("{given} of ca_file, cert_file and key_file are set"),
            "set all three, or none to run a loopback-only cluster",
        );
    }
    if given == 0 {
        // Where others reach this node first: the advertised address when set.
        let public = [
            ("coordination.cluster.advertise_address", advertise),
            ("coordination.cluster.listen_address", listen),
        ]
        .into_iter()
        .find(|(_, address)| address.is_some_and(|address| !address.ip().is_loopback()));
        if let Some((key, Some(public))) = public {
            fail(
                key,
                format!("{public} is reachable beyond this machine, and the cluster has no certificates (coordination.cluster.tls)"),
                "set ca_file, cert_file and key_file (`engine cluster init-certs` makes a test set), or listen on loopback",
            );
        }
    }
}

/// The keys of the transport this profile does not use that differ from
/// their defaults: each transport reads its own block only, so these change
/// nothing. They are what [`without_idle_transport_keys`] resets.
pub fn idle_transport_keys(profile: &Profile) -> Vec<String> {
    let reset = without_idle_transport_keys(profile);
    let (ours, theirs) = (&profile.transport, &reset.transport);
    match ours.kind {
        crate::schema::TransportKind::Quic => changed_keys("transport.tcp", &ours.tcp, &theirs.tcp),
        crate::schema::TransportKind::Tcp => {
            changed_keys("transport.quic", &ours.quic, &theirs.quic)
        }
    }
}

/// Whether `key` belongs to the transport `kind` does not use, and so is
/// read by nothing. The QUIC datagram size does not: it bounds SWIM's
/// packets on either transport (as [`without_idle_transport_keys`] keeps it).
pub fn is_idle_transport_key(kind: crate::schema::TransportKind, key: &str) -> bool {
    let block = match kind {
        crate::schema::TransportKind::Quic => "transport.tcp.",
        crate::schema::TransportKind::Tcp => "transport.quic.",
    };
    key.starts_with(block) && key != "transport.quic.max_datagram_size"
}

/// Memory limits the profile sets above `runtime.max_memory_per_agent`, as
/// `(key, what it says)`: the agents they name get the ceiling instead.
/// Left to load (the performance tuning guide's own example gives an
/// override of 500MB beside the 64MB default ceiling), and named at boot.
pub fn memory_limits_over_the_ceiling(profile: &Profile) -> Vec<(String, String)> {
    let ceiling = profile.runtime.max_memory_per_agent;
    let agents = &profile.agents;
    let mut over = Vec::new();
    if agents.default_limits.memory > ceiling {
        over.push((
            "agents.default_limits.memory".to_owned(),
            agents.default_limits.memory.to_string(),
        ));
    }
    for (index, entry) in agents.overrides.iter().enumerate() {
        if let Some(memory) = entry.memory.filter(|memory| *memory > ceiling) {
            over.push((
                format!("agents.overrides[{index}].memory"),
                format!("{memory} for `{}`", entry.agent_name),
            ));
        }
    }
    over
}

/// How many messages each of `data_shards` shards' mailboxes holds:
/// `messaging.queue_size`, within the shard's even share of
/// `runtime.max_concurrent_messages` (split so that no shard consults
/// another to enforce it).
pub fn mailbox_capacity(profile: &Profile, data_shards: usize) -> usize {
    let share = (profile.runtime.max_concurrent_messages as usize).div_ceil(data_shards.max(1));
    (profile.messaging.queue_size as usize).min(share).max(1)
}

/// Where the messaging keys outweigh one another on `data_shards` shards,
/// in words to log at boot: each key still acts, but not as its value
/// alone would suggest.
pub fn messaging_notes(profile: &Profile, data_shards: usize) -> Vec<String> {
    let messaging = &profile.messaging;
    let capacity = mailbox_capacity(profile, data_shards);
    let mut notes = Vec::new();
    // At their defaults the split is the documented one, and a note on
    // every multi-shard start would say nothing the operator chose.
    let defaults = Profile::default();
    let sizes_chosen = messaging.queue_size != defaults.messaging.queue_size
        || profile.runtime.max_concurrent_messages != defaults.runtime.max_concurrent_messages;
    if sizes_chosen && capacity < messaging.queue_size as usize {
        notes.push(format!(
            "each of the {data_shards} data shards' mailboxes holds {capacity} messages, below messaging.queue_size ({}): runtime.max_concurrent_messages ({}) is shared among the shards",
            messaging.queue_size, profile.runtime.max_concurrent_messages
        ));
    }
    if messaging.batch_size as usize > capacity {
        notes.push(format!(
            "messaging.batch_size ({}) is above what a shard's mailbox holds ({capacity}): a drain of a full ring may take more than fits, and the rest are refused (queue-full)",
            messaging.batch_size
        ));
    }
    let routing = &messaging.priority_routing;
    if routing.enabled {
        let timeout = messaging.delivery_timeout;
        let outlasted: Vec<String> = routing
            .by_urgency()
            .into_iter()
            .filter(|class| class.max_latency >= timeout)
            .map(|class| format!("{} ({})", class.name, class.max_latency))
            .collect();
        if !outlasted.is_empty() {
            notes.push(format!(
                "messaging.priority_routing.queues: {} wait no longer than messaging.delivery_timeout ({timeout}), which comes first: their max_latency changes nothing",
                outlasted.join(", ")
            ));
        }
    }
    notes
}

/// `profile` with the other transport's block at its defaults: the same
/// engine behaviour, written without it. The QUIC datagram size is kept on
/// TCP: it bounds SWIM's packets on either transport.
pub fn without_idle_transport_keys(profile: &Profile) -> Profile {
    let mut profile = profile.clone();
    let transport = &mut profile.transport;
    match transport.kind {
        crate::schema::TransportKind::Quic => transport.tcp = crate::schema::TcpConfig::default(),
        crate::schema::TransportKind::Tcp => {
            transport.quic = crate::schema::QuicConfig {
                max_datagram_size: transport.quic.max_datagram_size,
                ..crate::schema::QuicConfig::default()
            }
        }
    }
    profile
}

/// The keys under `prefix` whose values in `value` and `reference` differ,
/// in alphabetical order.
fn changed_keys<T: serde::Serialize>(prefix: &str, value: &T, reference: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(value)), Ok(serde_json::Value::Object(reference))) =
        (serde_json::to_value(value), serde_json::to_value(reference))
    else {
        return Vec::new();
    };
    value
        .iter()
        .filter(|(field, setting)| reference.get(field.as_str()) != Some(setting))
        .map(|(field, _)| format!("{prefix}.{field}"))
        .collect()
}

/// The levels a log filter names.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The first directive of log filter `filter` that is a bare word and no
/// level. `tracing`'s filter reads such a word as a target to log at every
/// level, with nothing else logged: a misspelt level (`inof`) would
/// silence the node's log, warnings included. A target that is meant
/// takes its level (`caxton_shards=trace`).
fn bare_log_target(filter: &str) -> Option<&str> {
    filter
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .find(|directive| {
            !directive.contains(['=', '[', '{'])
                && !LOG_LEVELS
                    .iter()
                    .any(|level| directive.eq_ignore_ascii_case(level))
        })
}

/// Whether `text` can name a seed to join: `HOST:PORT` with a host and a
/// port to reach (1 to 65535). The one rule for `coordination.cluster.seeds`
/// and `--join`.
pub fn is_seed_address(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
    })
}
