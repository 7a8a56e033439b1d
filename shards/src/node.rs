//! A node: its threads, its mesh, its agents, and the control plane that
//! deploys them.
//!
//! Boot order: the mesh (one SPSC ring per ordered pair of participants:
//! data shards and client ports) is allocated first. Then every data shard
//! thread starts a glommio executor where the plan says, applies its memory
//! policy, reads its placement back, builds its agent host, and reports; the
//! gossip shard's thread does the same on its core. Only when every shard has
//! reported does [`Node::start`] return; if any fails, the ones already
//! running are stopped and joined, and the error names the shard and cause.
//!
//! The [`Node`] value is the control plane. It is used from one thread (it
//! takes `&mut self`); it talks to shards through per-shard command channels
//! followed by a doorbell ring, never through the data path.

use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use caxton_agents::{
    AgentCounts, AgentStats, DeployError, EpochTicker, ModuleCompiler, StartKind, TickDemand,
};
use caxton_messaging::{build_mesh_with, AgentId, Doorbell, MeshPort};

use crate::remote_port::RemotePort;
use caxton_numa::binding::{self, BindError};
use caxton_numa::{CpuBinding, MemoryPlacement, PlacementPlan, ShardPlacement};
use caxton_profiles::Profile;
use glommio::{CpuSet, ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::client::{Client, PortPool};
use crate::clock::NodeClock;
use crate::control::{Control, CONTROL_QUEUE};
use crate::core::trace::TraceTake;
use crate::directory::{AgentRecord, Directory, PublishedDirectory};
use crate::driver::{ShardDriver, ShardDriverBoot, ShardStorage};
use crate::metrics::ShardMetrics;
use crate::stop::StopSignal;

/// io_uring buffer memory per data shard. glommio's default is 10 MiB per
/// executor; shards do no bulk file I/O through these buffers yet, so a node
/// with many shards should not pay 10 MiB for each.
pub const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;

/// How long a shard may take to come up, or to answer a control command.
const SHARD_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Client ports a node has beyond one per data shard, when
/// `runtime.client_ports` is unset.
pub const CLIENT_PORTS_SPARE: usize = 4;

/// The client ports of a node running `profile` with `data_shards` data
/// shards. Unset: one per data shard (the admin endpoint's sends, or an
/// in-process load generator, for each shard) and [`CLIENT_PORTS_SPARE`]
/// more. Each port has a ring to and from every data shard, which becomes
/// resident as it is used, so ports are not free on a node with many shards.
pub fn client_ports(profile: &Profile, data_shards: usize) -> usize {
    profile
        .runtime
        .client_ports
        .map_or(data_shards + CLIENT_PORTS_SPARE, |ports| ports as usize)
        .max(1)
}

/// Smallest and largest ring between two participants, in messages.
const RING_CAPACITY_MIN: usize = 64;
const RING_CAPACITY_MAX: usize = 4096;

/// Largest ring between a client port and a shard. A load generator's
/// ring is the only buffer between it and a shard that stalls (the VM
/// deschedules it, a page fault): at 732k requests/s, 4,096 messages cover
/// 5.6 ms of stall before sends are refused, 16,384 cover 22 ms. Rings
/// between shards stay at [`RING_CAPACITY_MAX`]: a shard pair has many.
const CLIENT_RING_CAPACITY_MAX: usize = 16_384;

/// An agent redeployed from storage after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredAgent {
    /// Its name.
    pub name: String,
    /// Instances over every data shard.
    pub instances: u32,
    /// The limits it was deployed with.
    pub limits: caxton_profiles::AgentLimits,
    /// The module source it was deployed from.
    pub module: Vec<u8>,
}

/// Which kind of shard a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRole {
    /// A data shard, with its index.
    Data(usize),
    /// The gossip shard.
    Gossip,
}

impl std::fmt::Display for ShardRole {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(index) => write!(formatter, "data-{index}"),
            Self::Gossip => formatter.write_str("gossip"),
        }
    }
}

/// What a shard found once it was placed: read back from the kernel, not
/// copied from the plan, so a caller can compare the two.
#[derive(Clone, Debug)]
pub struct ShardReport {
    /// Which shard.
    pub role: ShardRole,
    /// Its OS thread id.
    pub tid: i32,
    /// The PUs its thread may run on, per `sched_getaffinity`.
    pub allowed_pus: Vec<usize>,
    /// Its memory policy per hwloc (nodes, policy name), or why it could not be read.
    pub memory_policy: Result<(Vec<usize>, String), String>,
    /// A memory policy the kernel refused that the shard could run without.
    pub memory_warning: Option<String>,
    /// What it does when idle before it parks (`None`: parks at once):
    /// `runtime.spin_before_park`, holding its PU when alone on it, else
    /// yielding it at every poll ([`IdleSpin`]). The gossip shard polls
    /// only the remote port's rings, so its report says so once the remote
    /// port is taken ([`Node::take_remote_port`]), and `None` before.
    pub spin_before_park: Option<IdleSpin>,
}

/// How an idle data shard polls its rings before it parks, for
/// `runtime.spin_before_park`. Polling picks up a message that arrives
/// within the window without a wake-up, which costs the sender a system
/// call and the shard a trip through the scheduler (about 14 µs per sleep
/// and wake on the 2-core development VM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleSpin {
    /// Alone on its PU: it polls for this long and keeps the PU.
    Hold(Duration),
    /// It shares its PU (more shards than cores, or the gossip shard on a
    /// small machine): it polls for this long but yields the PU to the
    /// threads it shares it with at every poll, so the one that must answer
    /// it runs at once instead of waiting for the scheduler to preempt a
    /// spinning shard.
    Yield(Duration),
}

impl IdleSpin {
    /// How long it polls.
    pub fn window(self) -> Duration {
        match self {
            Self::Hold(window) | Self::Yield(window) => window,
        }
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// One shard failed to come up.
    #[error("shard {role} failed to start: {reason}")]
    ShardStart {
        /// Which shard.
        role: ShardRole,
        /// The cause.
        reason: String,
    },
    /// A module was refused.
    #[error("cannot deploy `{agent}`: {error}")]
    Deploy {
        /// The agent's name.
        agent: String,
        /// Why.
        error: DeployError,
    },
    /// No agent by that name.
    #[error("no agent named `{0}`")]
    UnknownAgent(String),
    /// `max_agents` reached, or a name already taken.
    #[error("{0}")]
    Refused(String),
    /// A shard did not answer a control command.
    #[error("shard data-{0} did not answer")]
    ShardUnresponsive(usize),
    /// Every client port is in use.
    #[error("all client ports are in use (runtime.client_ports)")]
    NoClientPort,
    /// The storage partitions cannot be used.
    #[error("storage: {0}")]
    Storage(String),
}

enum ShardThread {
    Data(ExecutorJoinHandle<()>),
    Gossip(JoinHandle<()>),
}

/// A running node. Stop it with [`Node::shutdown`] or [`Node::run_until_stopped`].
pub struct Node {
    threads: Vec<(ShardRole, ShardThread)>,
    reports: Vec<ShardReport>,
    stop: Arc<StopSignal>,
    controls: Vec<mpsc::SyncSender<Control>>,
    doorbells: Arc<[Doorbell]>,
    directory: Arc<PublishedDirectory>,
    client_ports: PortPool,
    compiler: ModuleCompiler,
    clock: NodeClock,
    plan: PlacementPlan,
    max_agents: usize,
    /// Each deployed agent's module and limits, so scaling can start it on
    /// a shard that does not run it yet.
    deployed: std::collections::HashMap<AgentId, DeployedAgent>,
    /// `runtime.client_spin_before_park`, for each client.
    client_spin: Option<Duration>,
    /// How the gossip shard polls the remote port before it parks.
    gossip_spin: Option<IdleSpin>,
    /// Client ports the node was built with.
    client_port_count: usize,
    _ticker: Option<EpochTicker>,
    /// What the data shards tell the ticker: it parks while they all sleep.
    tick_demand: Arc<TickDemand>,
    /// Held while the node runs with persistence: no second node on its data directory.
    _storage_lock: Option<caxton_storage::DirectoryLock>,
}

/// What a node keeps of a deployed agent to start it on another shard.
struct DeployedAgent {
    module: caxton_agents::CompiledModule,
    source: Arc<[u8]>,
    limits: caxton_profiles::AgentLimits,
}

/// Work for the gossip shard's thread: runs until the stop signal it is given is requested.
pub type GossipWork = Box<dyn FnOnce(Arc<StopSignal>) + Send>;

/// What a node starts with beyond its profile and plan.
#[derive(Default)]
pub struct NodeOptions {
    /// Run on the gossip shard's thread (on its core, with its memory
    /// policy) once the shard is placed; it gets the node's stop signal and
    /// must return once a stop is requested. The admin endpoint and the
    /// cluster loop run this way.
    pub gossip_work: Option<GossipWork>,
    /// The node will route to other nodes ([`Node::take_remote_port`]):
    /// build the remote port's rings to and from every client port, so a
    /// client's remote round trip passes no data shard. A node outside a
    /// cluster does not allocate them; a remote port taken there anyway
    /// relays its clients' traffic through a data shard.
    pub remote_port: bool,
    /// Stored messages wait for [`Node::directory_settled`] before their
    /// handlers run (they are stored and acknowledged at once). A node
    /// joining a cluster sets it: until its directory holds every member's
    /// agents, a handler that forwards to an agent on another node would
    /// fail, and a stored message whose handler ran is finished. A no-op
    /// without persistence.
    pub await_directory: bool,
}

/// A shard's boot report: where it was placed, and its engine for the ticker.
type BootReport = Result<(ShardReport, Option<wasmtime::Engine>), String>;
/// Where a shard's boot report goes.
type BootSender = mpsc::Sender<BootReport>;
/// Where the node waits for it.
type BootReceiver = mpsc::Receiver<BootReport>;

impl Node {
    /// Start every shard of `plan` with `profile`'s wake policy, limits and agents runtime.
    pub fn start(profile: &Profile, plan: &PlacementPlan) -> Result<Self, NodeError> {
        Self::start_with(profile, plan, NodeOptions::default())
    }

    /// [`Node::start`], with `options`.
    pub fn start_with(
        profile: &Profile,
        plan: &PlacementPlan,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        let NodeOptions {
            gossip_work,
            remote_port,
            await_directory,
        } = options;
        let shards = plan.data_shards.len();
        let client_port_count = client_ports(profile, shards);
        let participants = shards + client_port_count;
        // One node per data directory, checked before anything starts.
        let storage_lock = if profile.messaging.enable_persistence {
            let directory = std::path::Path::new(&profile.storage.data_directory);
            let lock = caxton_storage::DirectoryLock::acquire(directory)
                .map_err(|error| NodeError::Storage(error.to_string()))?;
            caxton_storage::check_partitions_fit(directory, shards)
                .map_err(|error| NodeError::Storage(error.to_string()))?;
            Some(lock)
        } else {
            None
        };
        let rings = RingSizes::from_queue_size(
            profile.messaging.queue_size as usize,
            shards,
            client_port_count,
        )
        .with_remote_port(remote_port);
        let mut ports = build_mesh_with(participants, |from, to| rings.capacity(from, to));
        let client_ports: Vec<MeshPort> = ports.split_off(shards);
        let doorbells = client_ports
            .first()
            .or(ports.first())
            .map(MeshPort::doorbells)
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let compiler = ModuleCompiler::new(profile).map_err(|error| NodeError::ShardStart {
            role: ShardRole::Gossip,
            reason: error.to_string(),
        })?;
        let clock = NodeClock::start();
        let mut node = Self {
            threads: Vec::new(),
            reports: Vec::new(),
            stop: Arc::new(StopSignal::default()),
            controls: Vec::new(),
            doorbells,
            directory: Arc::default(),
            client_ports: Arc::new(Mutex::new(
                client_ports.into_iter().map(|port| (port, 0)).collect(),
            )),
            compiler,
            clock,
            plan: plan.clone(),
            max_agents: profile.runtime.max_agents as usize,
            deployed: std::collections::HashMap::new(),
            client_spin: profile
                .runtime
                .client_spin_before_park
                .map(|spin| spin.get()),
            gossip_spin: spin_before_park(profile, plan, ShardRole::Gossip),
            client_port_count,
            _ticker: None,
            tick_demand: TickDemand::new(shards),
            _storage_lock: storage_lock,
        };
        let pending = match node.spawn_shards(profile, plan, ports, gossip_work, await_directory) {
            Ok(pending) => pending,
            Err(error) => return Err(node.abort(error)),
        };
        let engines = match node.await_reports(pending) {
            Ok(engines) => engines,
            Err(error) => return Err(node.abort(error)),
        };
        // The ticker wakes every tick: it runs on the gossip shard's core,
        // never on a data shard's, and wakes on time, or slices run long.
        let ticker_cpus = plan.gossip_shard.cpu_binding.clone();
        let place = Box::new(move || {
            let _ = binding::bind_current_thread(&ticker_cpus);
            binding::tighten_timer_slack();
        });
        match EpochTicker::start_placed(
            engines,
            caxton_agents::epoch_tick(profile),
            Some(Arc::clone(&node.tick_demand)),
            place,
        ) {
            Ok(ticker) => node._ticker = Some(ticker),
            Err(error) => {
                let reason = format!("cannot start the epoch ticker: {error}");
                return Err(node.abort(NodeError::ShardStart {
                    role: ShardRole::Gossip,
                    reason,
                }));
            }
        }
        Ok(node)
    }

    /// Spawn every data shard and the gossip shard; each will report on the
    /// receiver paired with its role.
    fn spawn_shards(
        &mut self,
        profile: &Profile,
        plan: &PlacementPlan,
        ports: Vec<MeshPort>,
        gossip_work: Option<GossipWork>,
        await_directory: bool,
    ) -> Result<Vec<(ShardRole, BootReceiver)>, NodeError> {
        let shards = plan.data_shards.len();
        let mut pending = Vec::new();
        for ((index, placement), port) in plan.data_shards.iter().enumerate().zip(ports) {
            let role = ShardRole::Data(index);
            let (control, commands) = mpsc::sync_channel(CONTROL_QUEUE);
            self.controls.push(control);
            let (report_sender, report) = mpsc::channel();
            let thread = spawn_data_shard(DataShardBoot {
                index,
                shards,
                placement,
                profile,
                port,
                commands,
                clock: self.clock,
                spin: spin_before_park(profile, plan, ShardRole::Data(index)),
                ticks: Arc::clone(&self.tick_demand),
                report: report_sender,
                storage: profile.messaging.enable_persistence.then(|| StorageBoot {
                    directory: std::path::PathBuf::from(&profile.storage.data_directory),
                    settings: caxton_storage::StorageSettings::from_profile(profile),
                    writer_cpus: plan.gossip_shard.cpu_binding.clone(),
                }),
                await_directory,
            })
            .map_err(|reason| NodeError::ShardStart { role, reason })?;
            self.threads.push((role, ShardThread::Data(thread)));
            pending.push((role, report));
        }
        let (report_sender, report) = mpsc::channel();
        let thread = spawn_gossip_shard(
            &plan.gossip_shard,
            Arc::clone(&self.stop),
            report_sender,
            gossip_work,
        )
        .map_err(|reason| NodeError::ShardStart {
            role: ShardRole::Gossip,
            reason,
        })?;
        self.threads
            .push((ShardRole::Gossip, ShardThread::Gossip(thread)));
        pending.push((ShardRole::Gossip, report));
        Ok(pending)
    }

    /// Wait for every shard's boot report; the data shards' wasmtime engines,
    /// for the epoch ticker.
    fn await_reports(
        &mut self,
        pending: Vec<(ShardRole, BootReceiver)>,
    ) -> Result<Vec<wasmtime::Engine>, NodeError> {
        let mut engines = Vec::new();
        for (role, report) in pending {
            let reason = match report.recv_timeout(SHARD_REPLY_TIMEOUT) {
                Ok(Ok((report, engine))) => {
                    self.reports.push(report);
                    engines.extend(engine);
                    continue;
                }
                Ok(Err(reason)) => reason,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    format!("no report within {SHARD_REPLY_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => self
                    .take_failure(role)
                    .unwrap_or_else(|| "the thread exited before reporting".into()),
            };
            return Err(NodeError::ShardStart { role, reason });
        }
        Ok(engines)
    }

    /// What each shard read back at boot: data shards in order, then the gossip shard.
    pub fn reports(&self) -> &[ShardReport] {
        &self.reports
    }

    /// The placement the node was started on.
    pub fn plan(&self) -> &PlacementPlan {
        &self.plan
    }

    /// Number of data shards.
    pub fn data_shards(&self) -> usize {
        self.controls.len()
    }

    /// The signal that stops this node; request it from any thread (a signal handler).
    pub fn stop_signal(&self) -> Arc<StopSignal> {
        Arc::clone(&self.stop)
    }

    /// The current directory.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.load()
    }

    /// The module cache: modules compiled, cache hits, modules held, bytes held.
    pub fn module_cache(&self) -> (u64, u64, usize, usize) {
        let (entries, bytes) = self.compiler.cache_footprint();
        (
            self.compiler.compilations,
            self.compiler.cache_hits,
            entries,
            bytes,
        )
    }

    /// A client for sending into the node from this thread.
    pub fn client(&self) -> Result<Client, NodeError> {
        let (port, generation) = self
            .client_ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or(NodeError::NoClientPort)?;
        Ok(Client::new(
            port,
            generation,
            Arc::clone(&self.directory),
            Arc::clone(&self.client_ports),
            self.clock,
            self.client_spin,
            self.data_shards(),
        ))
    }

    /// Take the remote port: the mesh participant through which messages
    /// for agents only other nodes host leave, and messages from other nodes
    /// enter (the gossip shard's, in a cluster). It is one of the client
    /// ports, taken for good; `None` when none is free or it was taken.
    pub fn take_remote_port(&mut self) -> Option<RemotePort> {
        if self.directory().remote_port().is_some() {
            return None;
        }
        let (port, _) = {
            let mut ports = self
                .client_ports
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // The participant with rings to the other clients. Clients take
            // ports from the other end of the pool, so it is free until every
            // other port is in use; else any, whose clients then relay
            // through a data shard (`client::relay_shard`).
            let designated = remote_port_participant(self.data_shards());
            match ports
                .iter()
                .position(|(port, _)| port.participant() == designated)
            {
                Some(position) => ports.remove(position),
                None => ports.pop()?,
            }
        };
        let next = self.directory().with_remote_port(port.participant());
        self.publish(next);
        // The gossip shard drives the port from now on, polling its rings
        // when idle as the report now says.
        if let Some(gossip) = self
            .reports
            .iter_mut()
            .find(|report| report.role == ShardRole::Gossip)
        {
            gossip.spin_before_park = self.gossip_spin;
        }
        Some(RemotePort::new(
            port,
            Arc::clone(&self.directory),
            self.clock,
            self.data_shards(),
            self.gossip_spin,
        ))
    }

    /// Name the agents other nodes of the cluster host (from the cluster
    /// directory): messages to those of them with no local instance go to
    /// the remote port.
    pub fn set_remote_agents(&mut self, names: impl IntoIterator<Item = String>) {
        let next = self.directory().with_remote_agents(names);
        self.publish(next);
    }

    /// Whether the epoch ticker is parked: every data shard has slept for a
    /// while, so nothing needs timing until one wakes.
    pub fn epoch_ticker_parked(&self) -> bool {
        self.tick_demand.ticker_parked()
    }

    /// Client ports the node has (`runtime.client_ports`): clients that may
    /// be connected at once.
    pub fn client_ports(&self) -> usize {
        self.client_port_count
    }

    /// Deploy `source` (`.wasm` bytes or `.wat` text) as agent `name` with
    /// `instances` instances. Pinned agents (`runtime.cpu_affinity.pinned_agents`)
    /// run on the shards of their cores; others are spread over all shards.
    pub fn deploy(
        &mut self,
        name: &str,
        source: &[u8],
        instances: u16,
        limits: &caxton_profiles::AgentLimits,
    ) -> Result<AgentId, NodeError> {
        let instances_per_shard = self.placement(name, instances)?;
        self.deploy_placed(name, source, &instances_per_shard, limits)
    }

    /// Where `instances` of agent `name` go: spread over the shards it may
    /// run on, one count per data shard.
    fn placement(&self, name: &str, instances: u16) -> Result<Vec<u16>, NodeError> {
        if instances == 0 {
            return Err(NodeError::Refused(
                "an agent needs at least one instance".into(),
            ));
        }
        let candidates = self.shards_for(name);
        if candidates.is_empty() {
            return Err(NodeError::Refused(format!(
                "agent `{name}` is pinned to no data shard"
            )));
        }
        // Start where the last agent's spread ended, so single-instance
        // agents do not all land on the first candidate.
        let first = self.directory().len() % candidates.len();
        Ok(spread_instances(
            instances,
            &candidates,
            first,
            self.data_shards(),
        ))
    }

    /// The compiled module of `source` if the node's module cache holds it.
    pub fn cached_module(&mut self, source: &[u8]) -> Option<caxton_agents::CompiledModule> {
        self.compiler.cached(source)
    }

    /// What compiles modules for this node, on any thread: a caller with
    /// other work on its thread compiles there, then deploys with
    /// [`Node::deploy_module`].
    pub fn module_check(&self) -> caxton_agents::ModuleCheck {
        self.compiler.check()
    }

    /// [`Node::deploy`] with a module compiled by [`Node::module_check`]
    /// (`fresh`: counted a compilation) or taken from
    /// [`Node::cached_module`].
    pub fn deploy_module(
        &mut self,
        name: &str,
        module: caxton_agents::CompiledModule,
        fresh: bool,
        instances: u16,
        limits: &caxton_profiles::AgentLimits,
    ) -> Result<AgentId, NodeError> {
        let instances_per_shard = self.placement(name, instances)?;
        self.check_deployable(
            name,
            &instances_per_shard,
            caxton_profiles::check_agent_name,
        )?;
        self.compiler.remember(&module, fresh);
        self.install(name, module, &instances_per_shard, limits)
    }

    /// Whether [`Node::deploy`] of `instances` of `name` would be refused
    /// before its module is looked at (a bad name or placement, the name
    /// taken, the node full): for a caller that compiles elsewhere first.
    pub fn check_deploy(&self, name: &str, instances: u16) -> Result<(), NodeError> {
        let instances_per_shard = self.placement(name, instances)?;
        self.check_deployable(
            name,
            &instances_per_shard,
            caxton_profiles::check_agent_name,
        )
    }

    /// The data shards agent `name` may run on: those of its cores when it
    /// is pinned (`runtime.cpu_affinity.pinned_agents`), else all.
    fn shards_for(&self, name: &str) -> Vec<usize> {
        match self
            .plan
            .pinned_agents
            .iter()
            .find(|pinning| pinning.agent_name == name)
        {
            Some(pinning) => pinning.data_shards.clone(),
            None => (0..self.data_shards()).collect(),
        }
    }

    /// Deploy `source` as agent `name` with exactly `instances_per_shard[i]`
    /// instances on data shard `i` (benchmarks and tests that need a layout).
    pub fn deploy_placed(
        &mut self,
        name: &str,
        source: &[u8],
        instances_per_shard: &[u16],
        limits: &caxton_profiles::AgentLimits,
    ) -> Result<AgentId, NodeError> {
        self.deploy_placed_as(
            name,
            source,
            instances_per_shard,
            limits,
            caxton_profiles::check_agent_name,
        )
    }

    /// [`Node::deploy_placed`] with the name judged by `name_rule`.
    fn deploy_placed_as(
        &mut self,
        name: &str,
        source: &[u8],
        instances_per_shard: &[u16],
        limits: &caxton_profiles::AgentLimits,
        name_rule: fn(&str) -> Result<(), String>,
    ) -> Result<AgentId, NodeError> {
        self.check_deployable(name, instances_per_shard, name_rule)?;
        let module = self
            .compiler
            .compile(source)
            .map_err(|error| NodeError::Deploy {
                agent: name.to_owned(),
                error,
            })?;
        self.install(name, module, instances_per_shard, limits)
    }

    /// Refuse a deploy of `name` at `instances_per_shard` that could not
    /// take: a bad name or placement, the name taken, the node full.
    /// `name_rule` judges the name: the agent rule for a new deploy, the
    /// plain naming rule for an agent recovered from storage (deployed
    /// under an earlier rule, it stays).
    fn check_deployable(
        &self,
        name: &str,
        instances_per_shard: &[u16],
        name_rule: fn(&str) -> Result<(), String>,
    ) -> Result<(), NodeError> {
        name_rule(name).map_err(NodeError::Refused)?;
        let directory = self.directory();
        if instances_per_shard.len() != self.data_shards()
            || instances_per_shard.iter().all(|&count| count == 0)
        {
            return Err(NodeError::Refused(format!(
                "a placement needs one count per data shard ({}) and at least one instance",
                self.data_shards()
            )));
        }
        if directory.resolve(name).is_some() {
            return Err(NodeError::Refused(format!(
                "an agent named `{name}` is already deployed"
            )));
        }
        if directory.len() >= self.max_agents {
            return Err(NodeError::Refused(format!(
                "runtime.max_agents ({}) agents are already deployed",
                self.max_agents
            )));
        }
        Ok(())
    }

    /// Start `module` as agent `name` on every shard `instances_per_shard`
    /// names, and publish it; on any shard's refusal, undo the others.
    fn install(
        &mut self,
        name: &str,
        module: caxton_agents::CompiledModule,
        instances_per_shard: &[u16],
        limits: &caxton_profiles::AgentLimits,
    ) -> Result<AgentId, NodeError> {
        let refuse = |error: DeployError| NodeError::Deploy {
            agent: name.to_owned(),
            error,
        };
        let directory = self.directory();
        if limits.memory.0 < module.initial_memory_bytes {
            return Err(refuse(DeployError::MemoryBelowInitial {
                limit: limits.memory.0,
                initial_bytes: module.initial_memory_bytes,
            }));
        }
        let source: Arc<[u8]> = Arc::clone(module.source());
        let (next, id) = directory.with_agent(AgentRecord {
            name: name.to_owned(),
            instances_per_shard: instances_per_shard.to_vec(),
        });
        let mut deployed = Vec::new();
        for (shard, &count) in instances_per_shard
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
        {
            let (ack, answer) = mpsc::channel();
            let command = Control::Deploy {
                id,
                name: name.to_owned(),
                module: module.clone(),
                source: Arc::clone(&source),
                instances: count,
                limits: limits.clone(),
                ack,
            };
            let result = self
                .command(shard, command, &answer)
                .and_then(|result| result.map_err(refuse));
            if let Err(error) = result {
                for shard in deployed {
                    let (ack, answer) = mpsc::channel();
                    let name = name.to_owned();
                    let _ = self.command(shard, Control::Undeploy { id, name, ack }, &answer);
                }
                return Err(error);
            }
            deployed.push(shard);
        }
        self.publish(next);
        self.deployed.insert(
            id,
            DeployedAgent {
                module,
                source,
                limits: limits.clone(),
            },
        );
        Ok(id)
    }

    /// Remove agent `name` from every shard.
    pub fn undeploy(&mut self, name: &str) -> Result<(), NodeError> {
        let directory = self.directory();
        let id = directory
            .resolve(name)
            .ok_or_else(|| NodeError::UnknownAgent(name.to_owned()))?;
        // Unpublish first, so nothing new is routed to it while it goes.
        self.publish(directory.without_agent(id));
        self.deployed.remove(&id);
        for shard in 0..self.data_shards() {
            let (ack, answer) = mpsc::channel();
            let name = name.to_owned();
            self.command(shard, Control::Undeploy { id, name, ack }, &answer)?;
        }
        Ok(())
    }

    /// Scale agent `name` to `instances` instances in all. Added first on
    /// the shards it may run on (its pinned ones, or all) that do not run
    /// it yet, since an agent's instances on one shard take turns (they
    /// share its state there); then on those with the fewest. Removed from
    /// the one with the most first (a handler running on a removed
    /// instance finishes first, and its sender is answered as ever). Every
    /// shard that runs it keeps one at least: the messages queued there
    /// (stored ones in that shard's partition) are that shard's to handle.
    /// Returns the count before and after; a start that fails (the
    /// instance pool full, say) stops there, with what was reached in the
    /// error.
    pub fn scale(&mut self, name: &str, instances: u16) -> Result<(u16, u16), NodeError> {
        if instances == 0 {
            return Err(NodeError::Refused(
                "an agent needs at least one instance (undeploy it to remove it)".into(),
            ));
        }
        let directory = self.directory();
        let id = directory
            .resolve(name)
            .ok_or_else(|| NodeError::UnknownAgent(name.to_owned()))?;
        let mut counts = directory
            .get(id)
            .map(|record| record.instances_per_shard.clone())
            .unwrap_or_default();
        let before: u16 = counts.iter().sum();
        let hosting = counts.iter().filter(|&&count| count > 0).count();
        if usize::from(instances) < hosting {
            return Err(NodeError::Refused(format!(
                "`{name}` runs on {hosting} shards, each keeping an instance at least: it scales down to {hosting} (undeploy it and deploy it with fewer instances to go lower)"
            )));
        }
        let candidates = self.shards_for(name);
        let mut now = before;
        while now < instances {
            // A shard without it first (started there as at a deploy), else
            // the one with the fewest.
            let Some(&shard) = candidates
                .iter()
                .filter(|&&shard| shard < counts.len())
                .min_by_key(|&&shard| (counts[shard], shard))
            else {
                break;
            };
            let started = if counts[shard] == 0 {
                self.start_on_new_shard(id, name, shard)
            } else {
                self.start_instance(name, shard, false).map(|_| ())
            };
            if let Err(error) = started {
                return Err(NodeError::Refused(format!(
                    "`{name}` reached {now} of {instances} instances: {error}"
                )));
            }
            counts[shard] += 1;
            now += 1;
        }
        while now > instances {
            let Some(shard) = (0..counts.len())
                .filter(|&shard| counts[shard] > 1)
                .max_by_key(|&shard| (counts[shard], std::cmp::Reverse(shard)))
            else {
                break;
            };
            if !self.stop_instance(name, shard)? {
                break;
            }
            counts[shard] -= 1;
            now -= 1;
        }
        Ok((before, now))
    }

    /// Start agent `id` (`name`) with one instance on `shard`, which does
    /// not run it yet, as a deploy there would (its partition records it).
    fn start_on_new_shard(
        &mut self,
        id: AgentId,
        name: &str,
        shard: usize,
    ) -> Result<(), NodeError> {
        let deployed = self.deployed.get(&id).ok_or_else(|| {
            NodeError::Refused(format!(
                "`{name}`'s module is not at hand to start it on shard {shard}"
            ))
        })?;
        let (ack, answer) = mpsc::channel();
        let command = Control::Deploy {
            id,
            name: name.to_owned(),
            module: deployed.module.clone(),
            source: Arc::clone(&deployed.source),
            instances: 1,
            limits: deployed.limits.clone(),
            ack,
        };
        self.command(shard, command, &answer)?
            .map_err(|error| NodeError::Deploy {
                agent: name.to_owned(),
                error,
            })?;
        self.adjust_instances(id, shard, 1);
        Ok(())
    }

    /// Start one more instance of `name` on `shard`; returns whether a warm
    /// spare served it and how long it took on the shard.
    /// With `cold`, the warm spares are bypassed (to measure a cold start).
    pub fn start_instance(
        &mut self,
        name: &str,
        shard: usize,
        cold: bool,
    ) -> Result<(StartKind, Duration), NodeError> {
        let id = self.agent_on_shard(name, shard)?;
        let (ack, answer) = mpsc::channel();
        let name = name.to_owned();
        let started = self
            .command(
                shard,
                Control::StartInstance {
                    id,
                    name: name.clone(),
                    cold,
                    ack,
                },
                &answer,
            )?
            .map_err(|error| NodeError::Deploy { agent: name, error })?;
        self.adjust_instances(id, shard, 1);
        Ok(started)
    }

    /// The id of `name`, after checking that `shard` is a data shard.
    fn agent_on_shard(&self, name: &str, shard: usize) -> Result<AgentId, NodeError> {
        if shard >= self.data_shards() {
            return Err(NodeError::Refused(format!(
                "there is no data shard {shard} (the node has {})",
                self.data_shards()
            )));
        }
        self.directory()
            .resolve(name)
            .ok_or_else(|| NodeError::UnknownAgent(name.to_owned()))
    }

    /// Publish `id`'s instance count on `shard` changed by `change`, so routing follows it.
    fn adjust_instances(&self, id: AgentId, shard: usize, change: i32) {
        let directory = self.directory();
        let Some(mut record) = directory.get(id).cloned() else {
            return;
        };
        let count = &mut record.instances_per_shard[shard];
        *count = u16::try_from((i32::from(*count) + change).max(0)).unwrap_or(u16::MAX);
        self.publish(directory.with_record(id, record));
    }

    /// Stop one instance of `name` on `shard`.
    pub fn stop_instance(&mut self, name: &str, shard: usize) -> Result<bool, NodeError> {
        let id = self.agent_on_shard(name, shard)?;
        let (ack, answer) = mpsc::channel();
        let name = name.to_owned();
        let stopped = self.command(shard, Control::StopInstance { id, name, ack }, &answer)?;
        if stopped {
            self.adjust_instances(id, shard, -1);
        }
        Ok(stopped)
    }

    /// After a restart with persistence: redeploy the agents the partitions
    /// recorded ([`Self::recover_agents`]), then deliver again every message
    /// that was accepted and never finished ([`Self::redeliver_unfinished`]).
    /// Returns (agents redeployed, messages redelivered). A no-op without
    /// persistence.
    pub fn recover(&mut self) -> Result<(usize, usize), NodeError> {
        let redeployed = self.recover_agents()?.len();
        Ok((redeployed, self.redeliver_unfinished()?))
    }

    /// Redeploy the agents the partitions recorded, with the same instances
    /// on the same shards, and the limits they were deployed with; which
    /// (so the caller can tell where they differ from what a profile asks
    /// now). A node in a cluster redelivers its messages later, once it
    /// knows the agents other nodes host.
    pub fn recover_agents(&mut self) -> Result<Vec<RecoveredAgent>, NodeError> {
        /// An agent as the partitions recorded it, gathered over shards.
        struct RecordedAgent {
            name: String,
            module: Vec<u8>,
            instances_per_shard: Vec<u16>,
            limits: String,
        }
        let mut agents: Vec<RecordedAgent> = Vec::new();
        for shard in 0..self.data_shards() {
            let (ack, answer) = mpsc::channel();
            for row in self.command(shard, Control::RecoveredAgents { ack }, &answer)? {
                let position = match agents.iter().position(|agent| agent.name == row.name) {
                    Some(position) => position,
                    None => {
                        agents.push(RecordedAgent {
                            name: row.name.clone(),
                            module: row.module.clone(),
                            instances_per_shard: vec![0; self.data_shards()],
                            limits: row.limits.clone(),
                        });
                        agents.len() - 1
                    }
                };
                agents[position].instances_per_shard[shard] = row.instances;
            }
        }
        let mut redeployed = Vec::new();
        for RecordedAgent {
            name,
            module,
            instances_per_shard,
            limits,
        } in agents
        {
            if self.directory().resolve(&name).is_some() {
                continue;
            }
            let limits: caxton_profiles::AgentLimits =
                serde_json::from_str(&limits).map_err(|error| {
                    NodeError::Storage(format!(
                        "agent `{name}`: stored limits do not read: {error}"
                    ))
                })?;
            self.deploy_placed_as(
                &name,
                &module,
                &instances_per_shard,
                &limits,
                caxton_profiles::check_node_name,
            )?;
            redeployed.push(RecoveredAgent {
                instances: instances_per_shard.iter().map(|&n| u32::from(n)).sum(),
                name,
                limits,
                module,
            });
        }
        Ok(redeployed)
    }

    /// The cluster directory has settled: the stored messages that waited
    /// for it ([`NodeOptions::await_directory`]) run now; how many waited.
    pub fn directory_settled(&mut self) -> Result<usize, NodeError> {
        self.count_over_shards(|ack| Control::DirectorySettled { ack })
    }

    /// Deliver again every stored message that was accepted and never
    /// finished; how many. A no-op without persistence.
    pub fn redeliver_unfinished(&mut self) -> Result<usize, NodeError> {
        self.count_over_shards(|ack| Control::Redeliver { ack })
    }

    /// Send every data shard the command `control` makes, in shard order;
    /// the sum of the counts they answer.
    fn count_over_shards(
        &self,
        control: impl Fn(mpsc::Sender<usize>) -> Control,
    ) -> Result<usize, NodeError> {
        let mut total = 0;
        for shard in 0..self.data_shards() {
            let (ack, answer) = mpsc::channel();
            total += self.command(shard, control(ack), &answer)?;
        }
        Ok(total)
    }

    /// Every shard's metrics, in shard order; `reset` clears them after copying.
    pub fn metrics(&self, reset: bool) -> Result<Vec<ShardMetrics>, NodeError> {
        (0..self.data_shards())
            .map(|shard| {
                let (ack, answer) = mpsc::channel();
                self.command(shard, Control::Metrics { reset, ack }, &answer)
            })
            .collect()
    }

    /// Message traces: with `start`, every shard samples up to that many
    /// more messages (0 stops sampling). Returns each shard's hops recorded
    /// since the last call.
    pub fn trace(&self, start: Option<u32>) -> Result<Vec<TraceTake>, NodeError> {
        (0..self.data_shards())
            .map(|shard| {
                let (ack, answer) = mpsc::channel();
                self.command(shard, Control::Trace { start, ack }, &answer)
            })
            .collect()
    }

    /// Agent `name`'s counters, summed over shards.
    pub fn agent_stats(&self, name: &str) -> Result<AgentStats, NodeError> {
        let id = self
            .directory()
            .resolve(name)
            .ok_or_else(|| NodeError::UnknownAgent(name.to_owned()))?;
        let mut total = AgentStats::default();
        for shard in 0..self.data_shards() {
            let (ack, answer) = mpsc::channel();
            if let Some(stats) = self.command(shard, Control::AgentStats { id, ack }, &answer)? {
                total.add(&stats);
            }
        }
        Ok(total)
    }

    /// Every agent's counters per shard: `result[shard]` lists (agent, running
    /// instances, counters) for the agents that shard hosts. One command per shard.
    pub fn all_agent_stats(&self) -> Result<Vec<Vec<AgentCounts>>, NodeError> {
        (0..self.data_shards())
            .map(|shard| {
                let (ack, answer) = mpsc::channel();
                self.command(shard, Control::AllAgentStats { ack }, &answer)
            })
            .collect()
    }

    /// Block until a stop is requested, then stop and join every shard.
    pub fn run_until_stopped(self) -> Result<(), NodeError> {
        self.stop.wait_blocking();
        self.shutdown()
    }

    /// Stop every shard and join its thread. Errors name the first shard that
    /// did not exit cleanly; every thread is joined regardless.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop.request();
        for (shard, control) in self.controls.iter().enumerate() {
            // A shard that already exited has dropped its receiver; nothing to stop.
            let _ = control.send(Control::Stop);
            self.doorbells[shard].notify_control();
        }
        let mut first_error = None;
        for (role, thread) in std::mem::take(&mut self.threads) {
            if let Err(reason) = join(thread) {
                first_error.get_or_insert(NodeError::ShardStart { role, reason });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn publish(&self, directory: Directory) {
        let directory = Arc::new(directory);
        self.directory.publish(Arc::clone(&directory));
        for (shard, control) in self.controls.iter().enumerate() {
            let _ = control.send(Control::Directory(Arc::clone(&directory)));
            self.doorbells[shard].notify_control();
        }
    }

    fn command<T>(
        &self,
        shard: usize,
        command: Control,
        answer: &mpsc::Receiver<T>,
    ) -> Result<T, NodeError> {
        self.controls[shard]
            .send(command)
            .map_err(|_| NodeError::ShardUnresponsive(shard))?;
        self.doorbells[shard].notify_control();
        answer
            .recv_timeout(SHARD_REPLY_TIMEOUT)
            .map_err(|_| NodeError::ShardUnresponsive(shard))
    }

    /// Join the thread of `role` (which has ended) and return why it failed.
    fn take_failure(&mut self, role: ShardRole) -> Option<String> {
        let position = self
            .threads
            .iter()
            .position(|(candidate, _)| *candidate == role)?;
        let (_, thread) = self.threads.remove(position);
        join(thread).err()
    }

    /// Stop what has started and hand back `error`.
    fn abort(self, error: NodeError) -> NodeError {
        // The startup error is the one worth reporting; shutdown errors of the
        // shards that did start are secondary.
        let _ = self.shutdown();
        error
    }
}

fn join(thread: ShardThread) -> Result<(), String> {
    match thread {
        ShardThread::Data(handle) => handle.join().map_err(|error| error.to_string()),
        ShardThread::Gossip(handle) => handle
            .join()
            .map_err(|_| "the gossip thread panicked".to_owned()),
    }
}

fn glommio_placement(binding: &CpuBinding) -> Result<Placement, String> {
    let online = || CpuSet::online().map_err(|error| format!("cannot list online CPUs: {error}"));
    Ok(match binding {
        CpuBinding::Pu(pu) => Placement::Fixed(*pu),
        CpuBinding::Pus(pus) => {
            Placement::Fenced(online()?.filter(|location| pus.contains(&location.cpu)))
        }
        // Fenced over every online CPU rather than Unbound: glommio turns
        // spin_before_park off for unbound executors.
        CpuBinding::Unbound => Placement::Fenced(online()?),
    })
}

struct DataShardBoot<'a> {
    index: usize,
    shards: usize,
    placement: &'a ShardPlacement,
    profile: &'a Profile,
    port: MeshPort,
    commands: mpsc::Receiver<Control>,
    clock: NodeClock,
    /// What it does idle before parking ([`spin_before_park`]).
    spin: Option<IdleSpin>,
    /// Told when it parks and wakes (for the epoch ticker).
    ticks: Arc<TickDemand>,
    report: BootSender,
    storage: Option<StorageBoot>,
    /// Stored messages wait for the directory ([`NodeOptions::await_directory`]).
    await_directory: bool,
}

/// What the idle shard `role` does before parking, from
/// `runtime.spin_before_park`: a shard alone on its PU polls holding it; one
/// that shares its PU (more shards than cores, or a one-core machine where
/// the gossip shard shares it) polls yielding it at every poll. A shard that
/// held a PU it shares would keep the thread that must answer it off the CPU
/// until the scheduler preempts it; one that parked at once would pay a
/// sleep and a wake for every message that comes a moment later. (glommio's
/// own spin, which holds the PU, is set only for the first kind.)
///
/// Two in-process nodes on the 2-core VM, each on one core shared by its
/// data shard and its gossip shard (`benchmark run --suite cluster --quick`,
/// two interleaved pairs, with clients that yield as they poll): remote
/// routing P50 74-75 µs parked, 23 µs yielding, on `low-latency`; 86 µs and
/// 28 µs on `high-throughput`, whose remote request-reply went from 242-248k/s
/// to 289-341k/s. `low-latency`'s went from 294k/s to 179-201k/s: with
/// `batch_size: 1` its gossip shard is handed one message per turn.
///
/// The gossip shard follows the same rule while it drives the remote port
/// (in a cluster), since it polls that port's rings as a data shard polls
/// its own. Parking at once, each gossip shard of two in-process nodes on
/// the 2-core VM (each node on one core, `benchmark run --suite cluster
/// --quick`) slept and woke about 15,000 times a second with 256 requests
/// outstanding, and a quarter of its CPU time went to the scheduler;
/// polling, about 1,000. Remote request-reply with 256 outstanding went
/// from 131-136k/s to 304-433k/s on `low-latency` (frames of 8-9 messages
/// became 55-63), and from 250-354k/s to 330-410k/s on `high-throughput`
/// with one data shard a node.
pub(crate) fn spin_before_park(
    profile: &Profile,
    plan: &PlacementPlan,
    role: ShardRole,
) -> Option<IdleSpin> {
    let window = profile.runtime.spin_before_park?.get();
    let home = match role {
        ShardRole::Data(index) => plan.data_shards.get(index)?.home_pu,
        ShardRole::Gossip => plan.gossip_shard.home_pu,
    };
    let sharing = plan
        .data_shards
        .iter()
        .enumerate()
        .map(|(index, shard)| (ShardRole::Data(index), shard.home_pu))
        .chain([(ShardRole::Gossip, plan.gossip_shard.home_pu)])
        .any(|(other, pu)| other != role && pu == home);
    Some(if sharing {
        IdleSpin::Yield(window)
    } else {
        IdleSpin::Hold(window)
    })
}

/// Where a shard's partition is and how it is kept.
struct StorageBoot {
    directory: std::path::PathBuf,
    settings: caxton_storage::StorageSettings,
    /// Where the partition's writer thread runs: the gossip shard's CPUs.
    writer_cpus: caxton_numa::CpuBinding,
}

fn spawn_data_shard(boot: DataShardBoot<'_>) -> Result<ExecutorJoinHandle<()>, String> {
    let DataShardBoot {
        index,
        shards,
        placement,
        profile,
        port,
        commands,
        clock,
        spin: spin_before_park,
        ticks,
        report,
        storage,
        await_directory,
    } = boot;
    // glommio names its thread `NAME-ID`, which the kernel cuts to 15
    // bytes (`caxton-shard-0-`), and the executor's blocking-I/O helper
    // takes the same name. The shard renames its own thread on start
    // (`caxton-shard-N`); the helper keeps this one.
    let mut builder = LocalExecutorBuilder::new(glommio_placement(&placement.cpu_binding)?)
        .name(&format!("caxton-io-{index}"))
        .io_memory(SHARD_IO_MEMORY_BYTES);
    // glommio's spin holds the PU: only for a shard alone on it.
    if let Some(IdleSpin::Hold(window)) = spin_before_park {
        builder = builder.spin_before_park(window);
    }
    let memory = placement.memory.clone();
    let profile = profile.clone();
    builder
        .spawn(move || async move {
            // A name that fits by construction; were prctl to refuse, the
            // thread would only keep glommio's name.
            let _ = caxton_numa::binding::name_current_thread(
                &caxton_numa::binding::shard_thread_name(index),
            );
            let placed = apply_memory(&memory).map(|memory_warning| {
                read_back(ShardRole::Data(index), memory_warning, spin_before_park)
            });
            let storage = match (&placed, storage) {
                (Ok(_), Some(boot)) => {
                    let doorbells = port.doorbells();
                    let writer_cpus = boot.writer_cpus;
                    ShardStorage::open(
                        &boot.directory,
                        &boot.settings,
                        index,
                        // Disk work runs on the gossip shard's core, never on this one.
                        Box::new(move || {
                            let _ = binding::bind_current_thread(&writer_cpus);
                        }),
                        Box::new(move || doorbells[index].notify_control()),
                    )
                    .map(Some)
                }
                _ => Ok(None),
            };
            let runtime = placed.and_then(|report| {
                let storage = storage?;
                ShardDriver::new(ShardDriverBoot {
                    profile: &profile,
                    index,
                    data_shards: shards,
                    port,
                    control: commands,
                    clock,
                    spin: spin_before_park,
                    storage,
                    ticks,
                    await_directory,
                })
                .map(|runtime| (report, runtime))
                .map_err(|error| error.to_string())
            });
            match runtime {
                Ok((placed, runtime)) => {
                    let engine = runtime.host().engine().clone();
                    // The receiver is gone only if boot already gave up; then stop at once.
                    if report.send(Ok((placed, Some(engine)))).is_ok() {
                        runtime.run().await;
                    }
                }
                Err(reason) => {
                    let _ = report.send(Err(reason));
                }
            }
        })
        .map_err(|error| error.to_string())
}

fn spawn_gossip_shard(
    placement: &ShardPlacement,
    stop: Arc<StopSignal>,
    report: BootSender,
    work: Option<GossipWork>,
) -> Result<JoinHandle<()>, String> {
    let binding = placement.cpu_binding.clone();
    let memory = placement.memory.clone();
    std::thread::Builder::new()
        .name("caxton-gossip".into())
        .spawn(move || {
            let placed = binding::bind_current_thread(&binding)
                .map_err(|error| error.to_string())
                .and_then(|()| apply_memory(&memory))
                .map(|memory_warning| (read_back(ShardRole::Gossip, memory_warning, None), None));
            let placed_ok = placed.is_ok();
            let _ = report.send(placed);
            if placed_ok {
                // The admin endpoint (and, with clustering, membership) runs here;
                // without work the gossip shard holds its core until the node stops.
                if let Some(work) = work {
                    work(Arc::clone(&stop));
                }
                stop.wait_blocking();
            }
        })
        .map_err(|error| format!("cannot spawn the gossip thread: {error}"))
}

/// Apply the memory policy. `local_alloc` is what the kernel does by default,
/// so a kernel that refuses to set it (a container without CAP_SYS_NICE) costs
/// nothing and is only reported; a refused `bind` or `interleave` fails the shard.
fn apply_memory(memory: &MemoryPlacement) -> Result<Option<String>, String> {
    match binding::apply_memory_placement(memory) {
        Ok(()) => Ok(None),
        Err(error @ BindError::Memory { .. })
            if matches!(memory, MemoryPlacement::LocalAlloc { .. }) =>
        {
            Ok(Some(error.to_string()))
        }
        Err(error) => Err(error.to_string()),
    }
}

fn read_back(
    role: ShardRole,
    memory_warning: Option<String>,
    spin_before_park: Option<IdleSpin>,
) -> ShardReport {
    ShardReport {
        role,
        tid: binding::current_tid(),
        allowed_pus: binding::current_thread_pus().unwrap_or_default(),
        memory_policy: binding::current_memory_policy().map_err(|error| error.to_string()),
        memory_warning,
        spin_before_park,
    }
}

/// The participant built for the remote port: the first client port, at
/// the bottom of the pool that clients pop from.
fn remote_port_participant(data_shards: usize) -> usize {
    data_shards
}

/// How many messages each ring of the mesh holds. Shard to shard: the
/// queue budget (`messaging.queue_size`) shared over every participant.
/// Client to shard and back: a shard's share of the budget, so a client's
/// burst (a load generator waking late, a shard descheduled for a few
/// milliseconds) fits in its ring rather than being refused. Clients talk
/// to each other only through the remote port (the first client port, taken
/// for good in a cluster): on a node built for one it has a ring to and
/// from every other client, so a client's remote round trip passes no data
/// shard; two other clients have no ring between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingSizes {
    data_shards: usize,
    between_shards: usize,
    with_clients: usize,
    /// The remote port's rings to and from the other clients are built.
    remote_port: bool,
}

impl RingSizes {
    fn from_queue_size(queue_size: usize, data_shards: usize, client_ports: usize) -> Self {
        let participants = data_shards + client_ports;
        Self {
            data_shards,
            between_shards: (queue_size / participants).clamp(RING_CAPACITY_MIN, RING_CAPACITY_MAX),
            with_clients: (queue_size / data_shards.max(1))
                .clamp(RING_CAPACITY_MIN, CLIENT_RING_CAPACITY_MAX),
            remote_port: false,
        }
    }

    /// Build the remote port's rings to the other clients (`wanted`), or none.
    fn with_remote_port(self, wanted: bool) -> Self {
        Self {
            remote_port: wanted,
            ..self
        }
    }

    /// The ring from participant `from` to `to` (0: none).
    fn capacity(&self, from: usize, to: usize) -> usize {
        match (from < self.data_shards, to < self.data_shards) {
            (true, true) => self.between_shards,
            // The remote port's rings to and from the other clients, sized
            // like rings between shards (a client's burst is bounded by
            // its window).
            (false, false)
                if self.remote_port
                    && [from, to].contains(&remote_port_participant(self.data_shards)) =>
            {
                self.between_shards
            }
            (false, false) => 0,
            _ => self.with_clients,
        }
    }
}

/// Deal `instances` over `candidates` round-robin, starting at
/// `candidates[first]`: instances per data shard, for `data_shards` shards.
fn spread_instances(
    instances: u16,
    candidates: &[usize],
    first: usize,
    data_shards: usize,
) -> Vec<u16> {
    let mut instances_per_shard = vec![0u16; data_shards];
    for instance in 0..usize::from(instances) {
        instances_per_shard[candidates[(first + instance) % candidates.len()]] += 1;
    }
    instances_per_shard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_between_shards_share_the_budget_and_clients_talk_only_to_the_remote_port() {
        let rings = RingSizes::from_queue_size(10_000, 2, 8).with_remote_port(true);
        let participants = 2 + 8;
        assert_eq!(rings.capacity(0, 1), 10_000 / participants);
        assert_eq!(rings.capacity(0, 2), 5_000);
        let large = RingSizes::from_queue_size(100_000, 1, 8);
        assert_eq!(large.capacity(1, 0), CLIENT_RING_CAPACITY_MAX);
        assert_eq!(rings.capacity(3, 1), rings.capacity(1, 3));
        assert_eq!(rings.capacity(3, 4), 0, "no ring between two other clients");
        // Participant 2, the first client port, is built for the remote port.
        for client in 3..10 {
            assert_eq!(rings.capacity(client, 2), 10_000 / participants);
            assert_eq!(rings.capacity(2, client), 10_000 / participants);
        }
        let tiny = RingSizes::from_queue_size(1, 4, 8);
        assert_eq!(tiny.capacity(0, 1), RING_CAPACITY_MIN);
        // A node outside a cluster builds no ring between two clients.
        let alone = RingSizes::from_queue_size(10_000, 2, 8);
        for client in 3..10 {
            assert_eq!(alone.capacity(client, 2), 0);
            assert_eq!(alone.capacity(2, client), 0);
        }
        assert_eq!(
            alone.capacity(2, 0),
            rings.capacity(2, 0),
            "clients still reach shards"
        );
    }

    /// `profile` planned on the synthetic machine `machine`.
    fn planned(machine: &str, overrides: &[&str]) -> (Profile, PlacementPlan) {
        let overrides: Vec<String> = overrides.iter().map(|&set| set.to_owned()).collect();
        let profile = caxton_profiles::load(&["low-latency".to_owned()], &overrides)
            .expect("profile loads")
            .profile;
        let topology = caxton_numa::MachineTopology::synthetic(machine).expect("topology");
        let plan = caxton_numa::plan(&topology, &profile).expect("plan");
        (profile, plan)
    }

    #[test]
    fn a_shard_alone_on_its_pu_holds_it_while_polling_and_one_that_shares_it_yields() {
        let window = Duration::from_micros(200);
        // Three data shards and the gossip shard on four cores: each alone.
        let (profile, plan) = planned("core:4 pu:1", &["runtime.worker_threads=3"]);
        let spins: Vec<_> = (0..3)
            .map(|index| spin_before_park(&profile, &plan, ShardRole::Data(index)))
            .collect();
        assert_eq!(spins, [Some(IdleSpin::Hold(window)); 3]);
        assert_eq!(
            spin_before_park(&profile, &plan, ShardRole::Gossip),
            Some(IdleSpin::Hold(window)),
            "the gossip shard has a core of its own"
        );
        // Five data shards and the gossip shard on four cores: some PUs
        // hold two shards (the gossip shard counts), others one.
        let (profile, plan) = planned("core:4 pu:1", &["runtime.worker_threads=5"]);
        assert!(plan.shares_pus);
        let mut outcomes = std::collections::BTreeSet::new();
        for index in 0..5 {
            let home = plan.data_shards[index].home_pu;
            let alone = plan
                .data_shards
                .iter()
                .filter(|shard| shard.home_pu == home)
                .count()
                == 1
                && plan.gossip_shard.home_pu != home;
            let expected = if alone {
                IdleSpin::Hold(window)
            } else {
                IdleSpin::Yield(window)
            };
            assert_eq!(
                spin_before_park(&profile, &plan, ShardRole::Data(index)),
                Some(expected),
                "shard {index}"
            );
            outcomes.insert(alone);
        }
        assert_eq!(
            outcomes.len(),
            2,
            "both kinds of shard in this plan: {plan:?}"
        );
        // One core: the data shard shares it with the gossip shard.
        let (profile, plan) = planned("core:1 pu:1", &["runtime.worker_threads=1"]);
        assert_eq!(
            spin_before_park(&profile, &plan, ShardRole::Data(0)),
            Some(IdleSpin::Yield(window))
        );
        assert_eq!(
            spin_before_park(&profile, &plan, ShardRole::Gossip),
            Some(IdleSpin::Yield(window)),
            "and the gossip shard shares it with the data shard"
        );
        // A profile that parks never polls, alone or not.
        for machine in ["core:4 pu:1", "core:1 pu:1"] {
            let (mut profile, plan) = planned(machine, &["runtime.worker_threads=1"]);
            profile.runtime.spin_before_park = None;
            assert_eq!(
                spin_before_park(&profile, &plan, ShardRole::Data(0)),
                None,
                "{machine}"
            );
            assert_eq!(
                spin_before_park(&profile, &plan, ShardRole::Gossip),
                None,
                "{machine}"
            );
        }
    }

    #[test]
    fn instances_are_dealt_round_robin_from_the_first_candidate() {
        assert_eq!(spread_instances(5, &[0, 1, 2], 1, 3), vec![1, 2, 2]);
        assert_eq!(spread_instances(2, &[3], 0, 4), vec![0, 0, 0, 2]);
        assert_eq!(spread_instances(0, &[0, 1], 0, 2), vec![0, 0]);
    }
}
