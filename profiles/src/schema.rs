//! The typed schema of a profile: one struct per YAML section.
//!
//! Every field has a default, so a profile file names only what it changes.
//! Unknown keys are refused (`deny_unknown_fields`). Keys the performance tuning guide writes in
//! two places (`transport.max_streams` beside `transport.quic.max_concurrent_streams`,
//! `messaging.worker_threads` beside `runtime.worker_threads`) and the short
//! forms (`cpu_affinity: true`, `priority_routing: true`) are folded into one
//! canonical key when a layer is loaded (see `crate::load`); the fields that
//! accept them here exist so a profile file is checked with the same types,
//! and they are never set on a loaded profile.

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::units::{ByteSize, CpuShares, HumanDuration};

/// A complete, effective engine profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Shards, placement, agent capacity and the WebAssembly runtime.
    pub runtime: RuntimeConfig,
    /// Mailboxes, batching, deadlines and priorities.
    pub messaging: MessagingConfig,
    /// Cluster membership.
    pub coordination: CoordinationConfig,
    /// How nodes talk to each other.
    pub transport: TransportConfig,
    /// Per-shard storage partitions.
    pub storage: StorageConfig,
    /// Limits applied to agents.
    pub agents: AgentsConfig,
    /// The admin endpoint, logs and HDR histogram dumps (not in the performance tuning guide).
    pub observability: ObservabilityConfig,
}

/// `runtime`: shards, placement and agent capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Most agents deployed on the node at once.
    pub max_agents: u32,
    /// Pre-warmed instances kept per shard.
    pub agent_pool_size: u32,
    /// Most messages in flight in the node at once.
    pub max_concurrent_messages: u32,
    /// Number of data shards. Unset: one per core left after the gossip shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<u32>,
    /// How long an idle data shard keeps polling before it parks its thread.
    /// Unset: park at once. Spinning trades a core's idle time for wake-up latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin_before_park: Option<HumanDuration>,
    /// Client ports of the node: callers outside the agents (admin API
    /// sends, load generators, library clients) connected at once. Unset:
    /// one per data shard plus four. Not in the performance tuning guide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ports: Option<u32>,
    /// How long a client waiting for an answer keeps polling its rings
    /// before it parks its thread; the client's twin of `spin_before_park`.
    /// Unset: park at once. Not in the performance tuning guide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_spin_before_park: Option<HumanDuration>,
    /// How long a handler runs before it yields its shard to other agents'
    /// messages (then resumes). Needs `wasm.stack_pooling`: a yielded handler
    /// keeps its own stack. Not in the performance tuning guide.
    pub time_slice: HumanDuration,
    /// Pinning of shards and agents to cores (`true`/`false` or a block).
    pub cpu_affinity: CpuAffinityConfig,
    /// NUMA memory placement.
    pub numa: NumaConfig,
    /// Linear memory an agent instance may grow to.
    pub max_memory_per_agent: ByteSize,
    /// Linear memory an agent instance starts with.
    pub agent_heap_size: ByteSize,
    /// Stack an agent instance may use.
    pub agent_stack_size: ByteSize,
    /// Warm pool behaviour (the performance tuning guide's `AgentPoolConfig`).
    pub agent_pool: AgentPoolConfig,
    /// WebAssembly compilation and memory (the performance tuning guide's `WasmOptimization`).
    pub wasm: WasmConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_agents: 1000,
            agent_pool_size: 50,
            max_concurrent_messages: 10_000,
            worker_threads: None,
            spin_before_park: None,
            client_ports: None,
            client_spin_before_park: None,
            time_slice: HumanDuration::from_millis(2),
            cpu_affinity: CpuAffinityConfig::default(),
            numa: NumaConfig::default(),
            max_memory_per_agent: ByteSize::mib(64),
            agent_heap_size: ByteSize::mib(1),
            agent_stack_size: ByteSize::kib(512),
            agent_pool: AgentPoolConfig::default(),
            wasm: WasmConfig::default(),
        }
    }
}

/// `runtime.cpu_affinity`. In YAML either a bool (shorthand for `enabled`) or a block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuAffinityConfig {
    /// Pin each shard's thread to one core.
    pub enabled: bool,
    /// How shards are spread over cores.
    pub strategy: PlacementStrategy,
    /// Agents whose instances must run on named cores.
    pub pinned_agents: Vec<PinnedAgent>,
}

impl Default for CpuAffinityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            strategy: PlacementStrategy::NumaAware,
            pinned_agents: Vec::new(),
        }
    }
}

/// The block form of `runtime.cpu_affinity`, used to deserialize it.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CpuAffinityBlock {
    enabled: bool,
    strategy: PlacementStrategy,
    pinned_agents: Vec<PinnedAgent>,
}

impl Default for CpuAffinityBlock {
    fn default() -> Self {
        let CpuAffinityConfig {
            enabled,
            strategy,
            pinned_agents,
        } = CpuAffinityConfig::default();
        Self {
            enabled,
            strategy,
            pinned_agents,
        }
    }
}

impl<'de> Deserialize<'de> for CpuAffinityConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(BoolOrBlock::<CpuAffinityBlock>::new(
                "`true`, `false` or a block with enabled, strategy, pinned_agents",
            ))
            .map(|shape| match shape {
                Shape::Bool(enabled) => Self {
                    enabled,
                    ..Self::default()
                },
                Shape::Block(CpuAffinityBlock {
                    enabled,
                    strategy,
                    pinned_agents,
                }) => Self {
                    enabled,
                    strategy,
                    pinned_agents,
                },
            })
    }
}

/// How shards are laid over the machine's cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStrategy {
    /// Balance shards across NUMA nodes, whole cores before SMT siblings.
    #[default]
    NumaAware,
    /// Fill cores in hardware order: node 0 first, whole cores before SMT siblings.
    Compact,
}

/// One entry of `runtime.cpu_affinity.pinned_agents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedAgent {
    /// The agent's name (the performance tuning guide's key says id; it holds a name).
    #[serde(rename = "agent_id")]
    pub agent_name: String,
    /// Operating-system CPU numbers (PUs, as in `/proc/cpuinfo`) its
    /// instances run on; the performance tuning guide's key says cores.
    #[serde(rename = "cpu_cores")]
    pub pus: Vec<u32>,
}

/// `runtime.numa`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumaConfig {
    /// Plan and bind memory per NUMA node. Off: the operating system's default policy.
    pub enabled: bool,
    /// Memory policy of each data shard's thread.
    pub memory_policy: MemoryPolicy,
    /// When `cpu_affinity` is off, still bind each shard to the cores of its NUMA node.
    pub cpu_bind: bool,
    /// Interleave the memory of the node-wide threads (gossip shard) across all NUMA nodes.
    pub interleave_memory: bool,
}

impl Default for NumaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_policy: MemoryPolicy::LocalAlloc,
            cpu_bind: true,
            interleave_memory: false,
        }
    }
}

/// Where a shard's memory comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryPolicy {
    /// Allocate on the NUMA node of the CPU that touches the page first.
    #[default]
    LocalAlloc,
    /// Bind strictly to the shard's NUMA node.
    Bind,
    /// Spread pages round-robin over every NUMA node.
    Interleave,
}

/// `runtime.agent_pool`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentPoolConfig {
    /// Fill the pool at boot (`eager`) or on first use (`lazy`).
    pub warmup_strategy: WarmupStrategy,
    /// Messages an instance serves before it is replaced by a fresh one.
    pub max_reuse_count: u32,
    /// Age after which an instance is replaced by a fresh one.
    pub recycle_after: HumanDuration,
}

impl Default for AgentPoolConfig {
    fn default() -> Self {
        Self {
            warmup_strategy: WarmupStrategy::Eager,
            max_reuse_count: 1000,
            recycle_after: HumanDuration::from_secs(3600),
        }
    }
}

/// When the warm pool is filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupStrategy {
    /// At boot and at deploy.
    #[default]
    Eager,
    /// On first use.
    Lazy,
}

/// `runtime.wasm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WasmConfig {
    /// Compile modules to native code (Cranelift). Off: the interpreter.
    pub jit_enabled: bool,
    /// Code generator optimization.
    pub optimization_level: OptimizationLevel,
    /// Keep compiled modules for reuse by later deploys.
    pub cache_compiled_modules: bool,
    /// Compiled modules kept.
    pub module_cache_size: u32,
    /// Reserve instance memories in a pooling allocator at boot.
    pub memory_pooling: bool,
    /// Run handlers on their own stacks, taken from wasmtime's pool, so a
    /// handler can yield at the end of its `runtime.time_slice` and resume
    /// later. Off: handlers run on the shard's stack, to completion.
    pub stack_pooling: bool,
    /// Let an agent whose handlers have all been quick run them directly
    /// on the shard's stack, sparing a fiber switch each: faster, but the
    /// first of its handlers to run long cannot yield and holds the shard
    /// up to its `max_execution_time`. Off: every handler is sliced, so no
    /// agent ever holds its shard past a slice (while stacks last).
    pub direct_quick_handlers: bool,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            jit_enabled: true,
            optimization_level: OptimizationLevel::Speed,
            cache_compiled_modules: true,
            module_cache_size: 100,
            memory_pooling: true,
            stack_pooling: true,
            direct_quick_handlers: true,
        }
    }
}

/// Code generator optimization level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizationLevel {
    /// No optimization: fastest compile.
    None,
    /// Optimize for speed.
    #[default]
    Speed,
    /// Optimize for speed and code size.
    SpeedAndSize,
}

/// `messaging`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// Capacity of each shard's inbound queue.
    pub queue_size: u32,
    /// Content bytes each data shard holds waiting for its agents (its
    /// mailboxes and the messages held for a busy or throttled agent):
    /// `queue_size` counts messages, and a message may carry a megabyte.
    pub queue_bytes: ByteSize,
    /// Messages taken from a ring or mailbox per drain.
    pub batch_size: u32,
    /// A message not handled within this time is answered with `failure`.
    pub delivery_timeout: HumanDuration,
    /// Keep each message durable until it is handled.
    pub enable_persistence: bool,
    /// Mailboxes a shard drains concurrently.
    pub parallel_routes: u32,
    /// Another spelling of `runtime.worker_threads`; folded into it at load.
    #[serde(skip_serializing)]
    pub worker_threads: Option<u32>,
    /// Priority classes (`true`/`false` or a block).
    pub priority_routing: PriorityRoutingConfig,
    /// Compress stored message content.
    pub enable_compression: bool,
    /// Age after which a stored message expires. Unset: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ttl: Option<HumanDuration>,
    /// How often expired messages are removed.
    pub cleanup_interval: HumanDuration,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            queue_size: 10_000,
            queue_bytes: ByteSize::mib(256),
            batch_size: 64,
            delivery_timeout: HumanDuration::from_secs(5),
            enable_persistence: false,
            parallel_routes: 1,
            worker_threads: None,
            priority_routing: PriorityRoutingConfig::default(),
            enable_compression: false,
            message_ttl: None,
            cleanup_interval: HumanDuration::from_secs(60),
        }
    }
}

/// `messaging.priority_routing`. In YAML either a bool or a block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PriorityRoutingConfig {
    /// Serve mailboxes by priority class. Off: one FIFO class.
    pub enabled: bool,
    /// The classes, in any order: `priority` ranks them.
    pub queues: Vec<PriorityQueueConfig>,
}

impl PriorityRoutingConfig {
    /// The classes most urgent (lowest `priority`) first. A message's class
    /// number indexes this list; a number past its end is the last class.
    pub fn by_urgency(&self) -> Vec<&PriorityQueueConfig> {
        let mut classes: Vec<_> = self.queues.iter().collect();
        classes.sort_by_key(|class| class.priority);
        classes
    }
}

impl Default for PriorityRoutingConfig {
    fn default() -> Self {
        let class = |name: &str, priority, max_latency| PriorityQueueConfig {
            name: name.to_owned(),
            priority,
            max_latency,
        };
        Self {
            enabled: false,
            queues: vec![
                class("critical", 0, HumanDuration::from_millis(10)),
                class("high", 1, HumanDuration::from_millis(100)),
                class("normal", 2, HumanDuration::from_secs(1)),
                class("low", 3, HumanDuration::from_secs(10)),
            ],
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PriorityRoutingBlock {
    enabled: bool,
    queues: Vec<PriorityQueueConfig>,
}

impl Default for PriorityRoutingBlock {
    fn default() -> Self {
        let PriorityRoutingConfig { queues, .. } = PriorityRoutingConfig::default();
        // A block that names the section means it is wanted unless it says otherwise.
        Self {
            enabled: true,
            queues,
        }
    }
}

impl<'de> Deserialize<'de> for PriorityRoutingConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(BoolOrBlock::<PriorityRoutingBlock>::new(
                "`true`, `false` or a block with enabled, queues",
            ))
            .map(|shape| match shape {
                Shape::Bool(enabled) => Self {
                    enabled,
                    ..Self::default()
                },
                Shape::Block(PriorityRoutingBlock { enabled, queues }) => Self { enabled, queues },
            })
    }
}

/// One priority class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityQueueConfig {
    /// Class name senders may give instead of its number (`"priority":
    /// "critical"` in the admin API, `engine send --priority critical`).
    pub name: String,
    /// Lower is more urgent.
    pub priority: u8,
    /// A message waiting longer than this is answered with `failure` (timeout).
    pub max_latency: HumanDuration,
}

/// `coordination`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinationConfig {
    /// SWIM membership.
    pub cluster: ClusterConfig,
}

/// `coordination.cluster`: SWIM membership timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Period between gossip rounds.
    pub gossip_interval: HumanDuration,
    /// Members each gossip round is sent to.
    pub gossip_fanout: u32,
    /// Period between direct probes; must exceed `probe_timeout`.
    pub probe_interval: HumanDuration,
    /// Wait for a direct probe's ack before asking others to probe.
    pub probe_timeout: HumanDuration,
    /// Suspicion lasts this many probe intervals before a member is declared down.
    pub suspicion_multiplier: u32,
    /// Members asked to probe a member that missed its direct probe.
    pub indirect_probes: u32,
    /// Gossip rounds this node keeps gossiping to a member after declaring it
    /// down, so a member wrongly declared down learns it and rejoins
    /// (memberlist's `GossipToTheDeadTime` = this × `gossip_interval`).
    pub gossip_to_dead: u32,
    /// Where this node listens for other nodes, `IP:PORT` (not in the performance tuning guide).
    /// Unset: the node runs alone and starts no cluster transport.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<String>,
    /// The address other nodes reach this one at, `IP:PORT` (not in the performance tuning guide).
    /// Defaults to `listen_address`; required when that is unspecified (`0.0.0.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<String>,
    /// This node's name in the cluster, unique among its members (not in the
    /// performance tuning guide). Defaults to the host name and the cluster port, `host-7946`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Nodes to join at start, `HOST:PORT` each (not in the performance tuning guide); `--join` adds to them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<String>,
    /// Certificates for mutual TLS between nodes (not in the performance tuning guide).
    pub tls: ClusterTlsConfig,
}

/// `coordination.cluster.tls`: PEM files for mutual TLS between nodes. All
/// three or none; without them a node may only listen on loopback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// The cluster's CA certificate: a peer must present a certificate it signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// This node's certificate (signed by the CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// This node's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            gossip_interval: HumanDuration::from_millis(200),
            gossip_fanout: 3,
            probe_interval: HumanDuration::from_secs(1),
            probe_timeout: HumanDuration::from_millis(200),
            suspicion_multiplier: 4,
            indirect_probes: 3,
            gossip_to_dead: 3,
            listen_address: None,
            advertise_address: None,
            node_name: None,
            seeds: Vec::new(),
            tls: ClusterTlsConfig::default(),
        }
    }
}

/// `transport`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// `quic` or `tcp`.
    #[serde(rename = "type")]
    pub kind: TransportKind,
    /// Another spelling of `transport.quic.max_concurrent_streams`; folded into it at load.
    #[serde(skip_serializing)]
    pub max_streams: Option<u32>,
    /// Another spelling of `transport.quic.max_concurrent_streams`; folded into it at load.
    #[serde(skip_serializing)]
    pub max_concurrent_streams: Option<u32>,
    /// Another spelling of `transport.quic.congestion_control`; folded into it at load.
    #[serde(skip_serializing)]
    pub congestion_control: Option<CongestionControl>,
    /// Another spelling of `transport.quic.idle_timeout`; folded into it at load.
    #[serde(skip_serializing)]
    pub idle_timeout: Option<HumanDuration>,
    /// QUIC settings.
    pub quic: QuicConfig,
    /// TCP settings.
    pub tcp: TcpConfig,
    /// Connections kept to other nodes.
    pub connection_pool: ConnectionPoolConfig,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            kind: TransportKind::Quic,
            max_streams: None,
            max_concurrent_streams: None,
            congestion_control: None,
            idle_timeout: None,
            quic: QuicConfig::default(),
            tcp: TcpConfig::default(),
            connection_pool: ConnectionPoolConfig::default(),
        }
    }
}

/// Transport between nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// QUIC (quinn).
    #[default]
    Quic,
    /// TCP.
    Tcp,
}

impl TransportKind {
    /// Its value in a profile (`transport.type`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

/// QUIC congestion controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CongestionControl {
    /// CUBIC.
    #[default]
    Cubic,
    /// BBR.
    Bbr,
    /// NewReno.
    NewReno,
}

/// `transport.quic`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Congestion controller.
    pub congestion_control: CongestionControl,
    /// Streams a peer may open at once.
    pub max_concurrent_streams: u32,
    /// Flow-control window per stream.
    pub stream_receive_window: ByteSize,
    /// Flow-control window per connection.
    pub connection_receive_window: ByteSize,
    /// Keep-alive period.
    pub keep_alive_interval: HumanDuration,
    /// An idle connection is closed after this.
    pub idle_timeout: HumanDuration,
    /// Allow 0-RTT resumption.
    pub enable_0rtt: bool,
    /// Allow unreliable datagrams (used by SWIM).
    pub enable_datagram: bool,
    /// Largest datagram sent.
    pub max_datagram_size: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            congestion_control: CongestionControl::Cubic,
            max_concurrent_streams: 100,
            stream_receive_window: ByteSize::mib(1),
            connection_receive_window: ByteSize::mib(10),
            keep_alive_interval: HumanDuration::from_secs(30),
            idle_timeout: HumanDuration::from_secs(120),
            enable_0rtt: false,
            enable_datagram: true,
            max_datagram_size: 1200,
        }
    }
}

/// `transport.tcp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// Disable Nagle's algorithm.
    pub nodelay: bool,
    /// Enable TCP keep-alive.
    pub keepalive: bool,
    /// Idle time before the first keep-alive probe.
    pub keepalive_time: HumanDuration,
    /// Time between keep-alive probes.
    pub keepalive_interval: HumanDuration,
    /// Unanswered probes before the connection is dropped.
    pub keepalive_probes: u32,
    /// Socket send buffer.
    pub send_buffer_size: ByteSize,
    /// Socket receive buffer.
    pub recv_buffer_size: ByteSize,
    /// Give up connecting after this.
    pub connect_timeout: HumanDuration,
    /// SO_LINGER seconds; 0 resets the connection on close.
    pub linger: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            keepalive: true,
            keepalive_time: HumanDuration::from_secs(30),
            keepalive_interval: HumanDuration::from_secs(10),
            keepalive_probes: 3,
            send_buffer_size: ByteSize::kib(256),
            recv_buffer_size: ByteSize::kib(256),
            connect_timeout: HumanDuration::from_secs(5),
            linger: 0,
        }
    }
}

/// `transport.connection_pool`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionPoolConfig {
    /// Idle connections kept at least.
    pub min_idle: u32,
    /// Idle connections kept at most.
    pub max_idle: u32,
    /// A connection is replaced after this age.
    pub max_lifetime: HumanDuration,
    /// An idle connection is closed after this.
    pub idle_timeout: HumanDuration,
    /// Connections to one node at most.
    pub max_connections_per_node: u32,
    /// Open `warm_connections` to each node when it joins.
    pub pre_warm: bool,
    /// Connections opened per node when warming.
    pub warm_connections: u32,
}

impl Default for ConnectionPoolConfig {
    fn default() -> Self {
        Self {
            min_idle: 10,
            max_idle: 100,
            max_lifetime: HumanDuration::from_secs(300),
            idle_timeout: HumanDuration::from_secs(60),
            max_connections_per_node: 50,
            pre_warm: true,
            warm_connections: 5,
        }
    }
}

/// `storage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Storage engine; only `sqlite`.
    #[serde(rename = "type")]
    pub kind: StorageKind,
    /// SQLite page cache per shard.
    pub page_cache_size: ByteSize,
    /// Size the WAL is truncated to after a checkpoint.
    pub wal_size_limit: ByteSize,
    /// SQLite `auto_vacuum` mode.
    pub auto_vacuum: AutoVacuum,
    /// Where the partitions (`shard-N.sqlite`) live (not in the performance tuning guide).
    pub data_directory: String,
    /// Most writes in one transaction (not in the performance tuning guide; the performance tuning guide's `BatchWriter`).
    pub batch_size: u32,
    /// The longest a write waits for others to share its transaction (not in
    /// the performance tuning guide). 0: commit as soon as nothing more is queued; writes that
    /// arrive during a commit share the next one.
    pub flush_interval: HumanDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::Sqlite,
            page_cache_size: ByteSize::mib(64),
            wal_size_limit: ByteSize::mib(256),
            auto_vacuum: AutoVacuum::None,
            data_directory: "caxton-data".into(),
            batch_size: 1000,
            flush_interval: HumanDuration::from_millis(0),
        }
    }
}

/// Storage engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// One SQLite database per shard.
    #[default]
    Sqlite,
}

/// SQLite `auto_vacuum` mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoVacuum {
    /// Never shrink the file.
    #[default]
    None,
    /// Shrink at every commit.
    Full,
    /// Shrink on `PRAGMA incremental_vacuum`.
    Incremental,
}

/// `agents`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Limits of every agent without an override.
    pub default_limits: AgentLimits,
    /// Per-agent limits; unset fields fall back to `default_limits`.
    pub overrides: Vec<AgentOverride>,
    /// Agents deployed when the node boots.
    pub deploy: Vec<AgentDeployment>,
}

/// One entry of `agents.deploy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDeployment {
    /// The agent's name (what senders address).
    pub name: String,
    /// Path of its `.wasm` or `.wat` module; relative paths are relative to
    /// the profile file that names it (the working directory for built-ins and `--set`).
    pub module: String,
    /// Instances across the node.
    #[serde(default = "one_instance")]
    pub instances: u16,
    /// CPUs its instances run on (the same as a `runtime.cpu_affinity.pinned_agents` entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cpu_cores")]
    pub pus: Option<Vec<u32>>,
}

fn one_instance() -> u16 {
    1
}

impl Profile {
    /// Every pinned agent: `runtime.cpu_affinity.pinned_agents` and the
    /// `agents.deploy` entries that name `cpu_cores`.
    pub fn pinned_agents(&self) -> Vec<PinnedAgent> {
        let mut pinned = self.runtime.cpu_affinity.pinned_agents.clone();
        for deployment in &self.agents.deploy {
            if let Some(pus) = &deployment.pus {
                pinned.push(PinnedAgent {
                    agent_name: deployment.name.clone(),
                    pus: pus.clone(),
                });
            }
        }
        pinned
    }

    /// The limits of agent `agent_id`: its override over `agents.default_limits`,
    /// with memory capped at `runtime.max_memory_per_agent`.
    pub fn agent_limits(&self, agent_id: &str) -> AgentLimits {
        let mut limits = self.agents.limits_for(agent_id);
        limits.memory = limits.memory.min(self.runtime.max_memory_per_agent);
        limits
    }
}

/// Resource limits of one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLimits {
    /// Linear memory an instance may grow to.
    pub memory: ByteSize,
    /// Share of a core (`1000m` is one core).
    pub cpu_shares: CpuShares,
    /// One message handler runs at most this long.
    pub max_execution_time: HumanDuration,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            memory: ByteSize::mib(50),
            cpu_shares: CpuShares::ONE_CORE,
            max_execution_time: HumanDuration::from_secs(10),
        }
    }
}

/// One entry of `agents.overrides`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOverride {
    /// The agent's name (the performance tuning guide's key says id; it holds a name).
    #[serde(rename = "agent_id")]
    pub agent_name: String,
    /// Overrides `default_limits.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Overrides `default_limits.cpu_shares`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<CpuShares>,
    /// Overrides `default_limits.max_execution_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time: Option<HumanDuration>,
}

impl AgentsConfig {
    /// The limits that apply to `agent_id`: its override over the defaults.
    pub fn limits_for(&self, agent_id: &str) -> AgentLimits {
        let mut limits = self.default_limits.clone();
        if let Some(entry) = self
            .overrides
            .iter()
            .find(|entry| entry.agent_name == agent_id)
        {
            limits.memory = entry.memory.unwrap_or(limits.memory);
            limits.cpu_shares = entry.cpu_shares.unwrap_or(limits.cpu_shares);
            limits.max_execution_time = entry
                .max_execution_time
                .unwrap_or(limits.max_execution_time);
        }
        limits
    }
}

/// What a bool-or-block key held.
enum Shape<B> {
    Bool(bool),
    Block(B),
}

/// Visitor for keys written either as a bool or as a block.
struct BoolOrBlock<B> {
    expecting: &'static str,
    block: std::marker::PhantomData<B>,
}

impl<B> BoolOrBlock<B> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            block: std::marker::PhantomData,
        }
    }
}

impl<'de, B: Deserialize<'de>> Visitor<'de> for BoolOrBlock<B> {
    type Value = Shape<B>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Shape::Bool(value))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        B::deserialize(de::value::MapAccessDeserializer::new(map)).map(Shape::Block)
    }
}

/// `observability`: how a running node is watched and driven. Not part of
/// the performance tuning guide's configuration; every key here has an engine default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// Log filter in `RUST_LOG` syntax (`info`, `caxton_shards=debug,warn`).
    /// `RUST_LOG`, when set, takes precedence.
    pub log_level: String,
    /// The admin HTTP endpoint: `/metrics` and the JSON API.
    pub admin: AdminConfig,
    /// Periodic HDR histogram interval logs.
    pub hdr_log: HdrLogConfig,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            admin: AdminConfig::default(),
            hdr_log: HdrLogConfig::default(),
        }
    }
}

/// `observability.admin`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Address to bind (`127.0.0.1:1476`; port 0 picks a free port, which is logged).
    /// The default port is outside the ranges common tools take (Prometheus
    /// 9090, exporters 9100–9999, web 8000–8999) and outside Linux's
    /// ephemeral range; 1476 is the year Caxton's press opened. A host
    /// name (`localhost:1476`) is resolved when the profile loads.
    #[serde(deserialize_with = "socket_address")]
    pub listen: std::net::SocketAddr,
    /// Bearer token every request must carry. Required when `listen` is not a
    /// loopback address; `CAXTON_ADMIN_TOKEN` in the environment overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Largest request body (module uploads, messages).
    pub max_upload_size: ByteSize,
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: u32,
}

/// The admin endpoint's default port (see [`AdminConfig::listen`]).
pub const DEFAULT_ADMIN_PORT: u16 = 1476;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)),
            access_token: None,
            max_upload_size: ByteSize::mib(16),
            max_connections: 64,
        }
    }
}

/// `observability.hdr_log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HdrLogConfig {
    /// Directory the interval logs go to; unset: no periodic logs (on-demand
    /// dumps through the admin API still work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Length of one logged interval.
    pub interval: HumanDuration,
}

impl Default for HdrLogConfig {
    fn default() -> Self {
        Self {
            directory: None,
            interval: HumanDuration::from_secs(10),
        }
    }
}

/// A `HOST:PORT` socket address: an IP address as written, or a host name
/// resolved now (its first IPv4 address, else its first). The errors name
/// what is wrong: no port, a port out of range, a name that resolves to nothing.
fn socket_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::net::SocketAddr, D::Error> {
    use serde::de::Error;
    let text = String::deserialize(deserializer)?;
    parse_socket_address(&text).map_err(D::Error::custom)
}

/// See [`socket_address`].
pub(crate) fn parse_socket_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not HOST:PORT (no port)"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{text}`: the port `{port}` is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{text}` names no host"));
    }
    let resolved: Vec<std::net::SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("`{text}`: cannot resolve `{host}`: {error}"))?
        .collect();
    resolved
        .iter()
        .find(|address| address.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("`{text}`: `{host}` resolves to no address"))
}
