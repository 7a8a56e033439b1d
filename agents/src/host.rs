//! One shard's agents: its own wasmtime engine, the instances of every agent
//! it hosts, their warm spares and their limits. Owned by one shard thread
//! and never shared. The ABI's host functions are [`crate::abi_host`]'s; this
//! module gives them the shard's context ([`HostState`]).
//!
//! Faults are contained here. A trap, a handler running past
//! `max_execution_time` (epoch interruption), or memory growth past the
//! agent's limit (a `ResourceLimiter` that traps) fails that one message: the
//! caller gets an [`Outcome`] saying which, the messages the handler sent
//! before failing are discarded, and the instance is replaced by a fresh one.
//! Other agents on the shard are untouched.
//!
//! # Time slices
//! With `runtime.wasm.stack_pooling` (the default), a handler runs as an
//! async call on a stack from wasmtime's pool. The epoch ticker ends a slice
//! every `runtime.time_slice`; a handler still running then yields: the call
//! is parked here with its instance ([`Handling::Suspended`]), the shard
//! serves other agents' messages, and [`AgentHost::resume_suspended`] gives
//! each parked call one more slice per shard turn. A parked instance takes
//! no other message, and neither do its agent's other instances on the
//! shard ([`Handling::Busy`]): they share the agent's state there, so one
//! agent's handlers never interleave, sliced or not. `max_execution_time`
//! bounds the handler's run time, slices added up. Without stack pooling,
//! handlers run on the shard's stack to completion.
//!
//! wasmtime keeps the last stack a store ran on until the store is dropped,
//! so an instance that ran sliced once holds a stack while it lives. A
//! shard pools a stack for every instance it may host, unless the node's
//! share of the kernel's mapping limit, dealt over its shards, allows fewer
//! ([`crate::PoolSizes::for_shard`]). Once every stack is held, a handler
//! that finds none runs directly (counted in
//! [`AgentStats::stackless_runs`]): it is served, but cannot yield at a
//! slice's end, so past the pool only `max_execution_time` bounds how long
//! it holds its shard.
//!
//! # The direct path
//! An async call costs a fiber switch and a boxed future per message. An
//! agent whose last [`QUICK_RUNS_FOR_DIRECT`] handlers each ended within an
//! eighth of a slice has shown it does not need slicing: its handlers then
//! run directly on the shard's stack. A direct handler that runs past a
//! slice's end cannot yield; it runs on (still bounded by
//! `max_execution_time`), and its agent is sliced for good from then on.
//! New agents start sliced, so an agent that loops from its first message
//! never holds its shard; one that is quick for a while and then runs long
//! can hold it once, for one handler, up to its `max_execution_time`. With
//! `runtime.wasm.direct_quick_handlers: false` (the low-latency profile) no
//! agent earns the direct path, and none can.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use caxton_messaging::{Address, AgentId, Envelope, InstanceId};
use caxton_profiles::{AgentLimits, Profile, WarmupStrategy};
use wasmtime::{
    Engine, InstancePre, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc, UpdateDeadline,
};

use crate::abi;
use crate::abi_host::{link_abi, AbiContext, AbiState, OutboundMessage, StateMap};
use crate::budget::CpuBudget;
use crate::compile::{engine_config, kernel_max_map_count, CompiledModule, PoolSizes};
use crate::error::DeployError;

/// How often the node's ticker advances every engine's epoch, for
/// `profile`: half of `runtime.time_slice`, so a slice ends between half
/// and all of its length. `max_execution_time` is enforced to within one
/// slice. Finer ticks would end slices more exactly but wake the ticker
/// more often, and each wake preempts whatever shares the gossip core
/// with it: with a 10 ms slice and a tick capped at 1 ms (as it once was),
/// a load generator there sent its P99 message 12-16 µs late on the 2-core
/// VM, at 1,000 wakes a second. At most [`EPOCH_TICK_MAX`].
pub fn epoch_tick(profile: &Profile) -> Duration {
    (profile.runtime.time_slice.get() / 2)
        .clamp(caxton_profiles::TIME_SLICE_MIN / 2, EPOCH_TICK_MAX)
}

/// The longest epoch tick. An agent's slice is the shorter of
/// `time_slice` and its `max_execution_time`, and lasts at least one tick:
/// an agent given a `max_execution_time` under a tick is stopped only
/// within a tick, so a long `time_slice` must not make ticks coarse.
pub const EPOCH_TICK_MAX: Duration = Duration::from_millis(5);

/// `duration` in epoch ticks of `tick`, at least one.
fn ticks(duration: Duration, tick: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(tick.as_nanos().max(1)).max(1)).unwrap_or(u64::MAX)
}

/// Nanoseconds on the node's monotonic clock.
pub type Clock = Rc<dyn Fn() -> u64>;

/// Finds a deployed agent by name, for `send`.
pub type Resolver = Rc<dyn Fn(&str) -> Option<AgentId>>;

/// Names a sender, for `msg_sender`. Called only when an agent asks, so the
/// message path never builds a name it does not need.
pub type Namer = Rc<dyn Fn(Address) -> String>;

/// How handling one message ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `caxton_handle` returned 0.
    Handled,
    /// `caxton_handle` returned this non-zero code.
    AgentFailed(i32),
    /// The agent trapped (the trap's description).
    Trapped(String),
    /// The handler ran past `max_execution_time`.
    TimedOut,
    /// The agent grew its memory past its limit.
    MemoryExceeded,
}

impl Outcome {
    /// Whether the instance must be replaced.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Self::Trapped(_) | Self::TimedOut | Self::MemoryExceeded
        )
    }
}

/// What became of a message handed to [`AgentHost::handle`].
#[derive(Debug)]
pub enum Handling {
    /// The handler ran to its end.
    Done(Handled),
    /// The handler used its time slice (`ran_ns` of it) and yielded; it
    /// finishes in a later [`AgentHost::resume_suspended`]. The instance
    /// takes nothing else meanwhile.
    Suspended {
        /// The instance running it.
        instance: InstanceId,
        /// How long its first slice ran.
        ran_ns: u64,
    },
    /// Every instance that could take it has a suspended handler: here it
    /// is back, to try again once one finishes.
    Busy(Envelope),
    /// The agent has no such instance here.
    NoInstance,
}

/// A handler that ran to its end.
#[derive(Debug)]
pub struct Handled {
    /// Which instance handled it.
    pub instance: InstanceId,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it ran (ns), its slices added up, suspensions left out.
    pub ran_ns: u64,
    /// What it sent (empty after a fault).
    pub outbox: Vec<OutboundMessage>,
    /// The state it wrote, in order (an empty value deletes the key): for
    /// the shard's storage partition. Writes made before a fault stay.
    pub state_writes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An agent on a shard: its id, its running instances and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCounts {
    /// The agent.
    pub id: AgentId,
    /// Its instances on the shard (those with a suspended handler included).
    pub instances: usize,
    /// Its counters on the shard.
    pub stats: AgentStats,
    /// Linear memory of its idle instances on the shard, in bytes (an
    /// instance out running a handler is not counted). Its warm spares are
    /// apart, in `spare_memory_bytes`: the pool deals spares out among the
    /// agents, so their number changes as other agents come and go.
    pub memory_bytes: usize,
    /// Linear memory of its warm spares on the shard, in bytes.
    pub spare_memory_bytes: usize,
    /// Bytes of its key-value state on the shard (keys and values), which
    /// its memory limit bounds too.
    pub state_bytes: usize,
    /// Run time so far (ns) of its handlers still suspended on the shard
    /// (sliced, between slices): not yet in `stats.busy_ns`, which counts a
    /// handler when it ends. A handler that runs for seconds shows here
    /// while it runs.
    pub running_ns: u64,
}

/// Counters of one agent on one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Messages handled successfully.
    pub handled: u64,
    /// Messages the agent itself failed (non-zero return).
    pub agent_failures: u64,
    /// Traps.
    pub traps: u64,
    /// Handlers stopped at `max_execution_time`.
    pub timeouts: u64,
    /// Memory growth refused.
    pub memory_faults: u64,
    /// Instances replaced after a fault or by the recycling policy.
    pub recycled: u64,
    /// Instances that could not be replaced after a fault (pool exhausted).
    pub lost_instances: u64,
    /// Handlers that were to run sliced but ran directly, on the shard's
    /// stack, because every pooled handler stack was taken.
    pub stackless_runs: u64,
    /// Instances started from a warm spare.
    pub warm_starts: u64,
    /// Instances instantiated on demand.
    pub cold_starts: u64,
    /// Time spent in this agent's handlers (ns), every outcome included.
    pub busy_ns: u64,
    /// The longest handler run (ns).
    pub max_handler_ns: u64,
    /// Handler run times, every outcome included.
    pub run_times: crate::RunTimes,
}

impl AgentStats {
    /// Add `other`'s counts (summing an agent over shards).
    pub fn add(&mut self, other: &Self) {
        self.handled += other.handled;
        self.busy_ns += other.busy_ns;
        self.max_handler_ns = self.max_handler_ns.max(other.max_handler_ns);
        self.run_times.add(&other.run_times);
        self.agent_failures += other.agent_failures;
        self.traps += other.traps;
        self.timeouts += other.timeouts;
        self.memory_faults += other.memory_faults;
        self.recycled += other.recycled;
        self.lost_instances += other.lost_instances;
        self.stackless_runs += other.stackless_runs;
        self.warm_starts += other.warm_starts;
        self.cold_starts += other.cold_starts;
    }
}

/// Whether an instance came from the warm pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    /// Taken from the pre-instantiated spares.
    Warm,
    /// Instantiated on demand.
    Cold,
}

/// Per-store state: the context the ABI's host functions run in.
pub struct HostState {
    /// The agent's key-value state on this shard, shared by its instances here.
    state: Rc<RefCell<StateMap>>,
    limits: StoreLimits,
    abi: AbiState,
    resolver: Resolver,
    /// The host's directory generation ([`AgentHost::directory_changed`]).
    directory_generation: Rc<Cell<u64>>,
    namer: Namer,
    clock: Clock,
    agent_name: Rc<str>,
    /// Shared with the instance's suspended call, which sets it before each slice.
    run: Rc<std::cell::Cell<RunClock>>,
}

// SAFETY: wasmtime asks a store's data to be `Send` for async calls only so
// that a call's future may move between threads. Every store holding a
// `HostState` is created, run and dropped on one thread: a shard's stores
// live in its `AgentHost` (not `Send`: it holds `Rc`s) and so do their
// suspended calls, on a glommio executor that never moves work between
// threads; the compiler's check store lives and dies inside one function
// call. The `Rc`s inside are therefore never touched from two threads.
unsafe impl Send for HostState {}

/// What the epoch callback needs to end a slice or a run: the handler's run
/// time so far and its limits. Times are node-clock nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
struct RunClock {
    /// The most the run may take (`max_execution_time`).
    max_ns: u64,
    /// Run time in slices before the current one.
    ran_before_ns: u64,
    /// When the current slice started.
    slice_started_ns: u64,
    /// Whether the call can yield (an async call on a pooled stack).
    may_yield: bool,
    /// Ticks per slice.
    slice_ticks: u64,
    /// Set when a call that cannot yield ran past a slice's end.
    overran: bool,
}

/// The epoch deadline passed: yield (a slice is over), carry on (a call
/// that cannot yield, within its run time), or stop the run.
fn on_epoch_deadline(state: &HostState) -> UpdateDeadline {
    let run = state.run.get();
    let ran_ns = run.ran_before_ns + (state.clock)().saturating_sub(run.slice_started_ns);
    if ran_ns >= run.max_ns {
        UpdateDeadline::Interrupt
    } else if run.may_yield {
        UpdateDeadline::Yield(run.slice_ticks)
    } else {
        state.run.set(RunClock {
            overran: true,
            ..run
        });
        UpdateDeadline::Continue(run.slice_ticks)
    }
}

/// Handlers in a row an agent must finish within [`QUICK_FRACTION`] of a
/// slice before its handlers run directly (see the module docs).
const QUICK_RUNS_FOR_DIRECT: u32 = 64;

/// A handler is quick when it runs under this fraction of a time slice.
const QUICK_FRACTION: u64 = 8;

/// How an agent's handlers run on a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// As async calls that yield at slice ends; `quick` counts the handlers
    /// in a row that finished within a fraction of their first slice.
    Sliced { quick: u32 },
    /// Directly on the shard's stack: the agent has shown its handlers end
    /// well within a slice.
    Direct,
    /// Sliced for good: it once ran past a slice's end directly.
    SlicedForGood,
}

impl AbiContext for HostState {
    fn abi(&self) -> &AbiState {
        &self.abi
    }

    fn abi_mut(&mut self) -> &mut AbiState {
        &mut self.abi
    }

    fn resolve(&self, name: &str) -> Option<AgentId> {
        (self.resolver)(name)
    }

    fn directory_generation(&self) -> u64 {
        self.directory_generation.get()
    }

    fn sender_name(&self, sender: Address) -> String {
        (self.namer)(sender)
    }

    fn now_ns(&self) -> u64 {
        (self.clock)()
    }

    fn agent_name(&self) -> &str {
        &self.agent_name
    }

    fn with_state<R>(&mut self, use_state: impl FnOnce(&mut StateMap) -> R) -> R {
        use_state(&mut self.state.borrow_mut())
    }
}

/// Most table elements an agent may have: tables hold function references,
/// and a module must not be able to make the host allocate gigabytes for one.
pub const TABLE_ELEMENTS_MAX: usize = 10_000;

struct LiveInstance {
    /// The store's run clock, reachable while a call holds the store.
    run: Rc<std::cell::Cell<RunClock>>,
    store: Store<HostState>,
    memory: Memory,
    handle: TypedFunc<(), i32>,
    served: u32,
    /// When it started serving, on the node clock (recycling by age).
    born_ns: u64,
}

/// A handler call in progress: the instance travels with it.
type Call = Pin<Box<dyn Future<Output = (LiveInstance, wasmtime::Result<i32>)>>>;

/// Where a handler's instance goes when the handler ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Back in its slot, to take the agent's next message.
    BackInSlot,
    /// Dropped: its slot was removed while the handler ran.
    Retired,
}

/// A handler that yielded at the end of a slice.
struct SuspendedCall {
    agent: AgentId,
    slot: usize,
    call: Call,
    run: Rc<std::cell::Cell<RunClock>>,
    ran_ns: u64,
    /// Where its instance goes when it ends: `Retired` once the instance
    /// was removed while the handler ran.
    settle: Settle,
}

struct HostedAgent {
    name: Rc<str>,
    pre: InstancePre<HostState>,
    memory_limit_bytes: usize,
    max_execution_ns: u64,
    slice_ticks: u64,
    slice_ns: u64,
    pace: Pace,
    cpu_budget: CpuBudget,
    /// By slot; `None` while the slot's handler is suspended.
    instances: Vec<Option<LiveInstance>>,
    spares: Vec<LiveInstance>,
    next_slot: usize,
    stats: AgentStats,
    state: Rc<RefCell<StateMap>>,
}

/// A shard's hosted agents by id. Ids are small, dense directory indices,
/// so a vector indexed by id finds an agent with no hashing on the message
/// path.
#[derive(Default)]
struct AgentTable {
    slots: Vec<Option<HostedAgent>>,
    len: usize,
}

impl AgentTable {
    fn get(&self, id: &AgentId) -> Option<&HostedAgent> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: &AgentId) -> Option<&mut HostedAgent> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    fn insert(&mut self, id: AgentId, agent: HostedAgent) {
        let index = id.0 as usize;
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        if self.slots[index].replace(agent).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, id: &AgentId) -> Option<HostedAgent> {
        let removed = self.slots.get_mut(id.0 as usize)?.take();
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = (AgentId, &HostedAgent)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, agent)| Some((AgentId(index as u32), agent.as_ref()?)))
    }

    fn values(&self) -> impl Iterator<Item = &HostedAgent> {
        self.slots.iter().flatten()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut HostedAgent> {
        self.slots.iter_mut().flatten()
    }
}

/// The recycling, pool and slicing settings of the profile.
#[derive(Clone, Debug)]
struct PoolPolicy {
    pool_size: usize,
    warmup: WarmupStrategy,
    max_reuse_count: u32,
    /// `agent_pool.recycle_after`, in node-clock nanoseconds: compared with
    /// each message's start, so recycling by age reads no clock of its own.
    recycle_after_ns: u64,
    memory_ceiling_bytes: u64,
    epoch_tick: Duration,
    time_slice: Duration,
    /// Handlers run as async calls on pooled stacks and yield at slice ends.
    sliced: bool,
    /// A quick agent may earn the direct path (`runtime.wasm.direct_quick_handlers`).
    direct_quick: bool,
    /// Pooled handler stacks of this shard's engine.
    handler_stacks: usize,
    /// Instances this shard's engine pools, live and warm spares together.
    pool_instances: u32,
}

/// See the module docs.
pub struct AgentHost {
    shard: u16,
    engine: Engine,
    linker: Linker<HostState>,
    agents: AgentTable,
    policy: PoolPolicy,
    resolver: Resolver,
    /// Bumped when what `resolver` answers may have changed; every
    /// instance's store holds it.
    directory_generation: Rc<Cell<u64>>,
    namer: Namer,
    clock: Clock,
    abandoned: Vec<OutboundMessage>,
    /// An emptied outbox the shard handed back ([`Self::recycle_outbox`]):
    /// the next handler to finish takes it in place of the one it filled.
    spare_outbox: Vec<OutboundMessage>,
    /// How long each instance start took (ns), warm or cold, until the shard
    /// moves them into its startup histogram.
    startup_times_ns: Vec<u64>,
    /// Handlers that yielded and have not finished, in the order they yielded.
    suspended: Vec<SuspendedCall>,
    /// Whether the last refill found every spare share full (or the pool
    /// out of slots): cleared when spares are taken or agents change.
    spares_settled: bool,
    /// What of the agents' faults the operator's log has been told; made
    /// at the first fault, so a host that sees none carries a pointer only.
    fault_log: Option<Box<crate::log::FaultLog>>,
}

impl AgentHost {
    /// A host for shard `shard` of `data_shards`, configured from `profile`.
    /// `resolver` maps agent names to ids for `send`, `namer` names senders
    /// for `msg_sender`, and `clock` is the node clock.
    pub fn new(
        profile: &Profile,
        shard: u16,
        data_shards: usize,
        resolver: Resolver,
        namer: Namer,
        clock: Clock,
    ) -> Result<Self, DeployError> {
        let runtime = &profile.runtime;
        let pools = PoolSizes::for_shard(profile, data_shards, kernel_max_map_count());
        let engine = Engine::new(&engine_config(profile, pools)?).map_err(|error| {
            // Mostly the pool's reservation failing: say what it asked for.
            let reserved = crate::compile::pool_reservation_bytes(profile, pools);
            DeployError::Engine(if reserved > 0 {
                format!(
                    "{error}: this shard's pool reserves {} pooled instances × runtime.max_memory_per_agent ({}) = {} GiB of address space; lower runtime.max_memory_per_agent, runtime.max_agents or runtime.agent_pool_size, or set runtime.wasm.memory_pooling: false",
                    pools.instances,
                    runtime.max_memory_per_agent,
                    reserved >> 30
                )
            } else {
                error.to_string()
            })
        })?;
        let linker = host_linker(&engine)?;
        let policy = PoolPolicy {
            pool_size: runtime.agent_pool_size as usize,
            warmup: runtime.agent_pool.warmup_strategy,
            max_reuse_count: runtime.agent_pool.max_reuse_count,
            recycle_after_ns: u64::try_from(runtime.agent_pool.recycle_after.get().as_nanos())
                .unwrap_or(u64::MAX),
            memory_ceiling_bytes: runtime.max_memory_per_agent.bytes(),
            epoch_tick: epoch_tick(profile),
            time_slice: runtime.time_slice.get(),
            sliced: runtime.wasm.stack_pooling,
            direct_quick: runtime.wasm.direct_quick_handlers,
            handler_stacks: pools.handler_stacks as usize,
            pool_instances: pools.instances,
        };
        Ok(Self {
            shard,
            engine,
            linker,
            agents: AgentTable::default(),
            policy,
            resolver,
            directory_generation: Rc::default(),
            namer,
            clock,
            abandoned: Vec::new(),
            spare_outbox: Vec::new(),
            startup_times_ns: Vec::new(),
            suspended: Vec::new(),
            spares_settled: false,
            fault_log: None,
        })
    }

    /// This host's engine, for the node's epoch ticker.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load `module` as agent `id` named `name` with `instances` instances on
    /// this shard, under `limits`.
    pub fn deploy(
        &mut self,
        id: AgentId,
        name: &str,
        module: &CompiledModule,
        instances: u16,
        limits: &AgentLimits,
    ) -> Result<(), DeployError> {
        // SAFETY: the artifact was produced by `ModuleCompiler` of this node
        // with the same engine configuration; it is not untrusted input.
        let module = unsafe { Module::deserialize(&self.engine, &*module.artifact) }
            .map_err(|error| DeployError::Engine(format!("{error:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|error| DeployError::NotWasm(format!("{error:#}")))?;
        let memory_limit = limits.memory.bytes().min(self.policy.memory_ceiling_bytes);
        let max_execution = limits.max_execution_time.get();
        // An agent allowed less than a slice is checked as often as its limit asks.
        let slice = self.policy.time_slice.min(max_execution);
        let mut agent = HostedAgent {
            name: Rc::from(name),
            pre,
            memory_limit_bytes: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            max_execution_ns: u64::try_from(max_execution.as_nanos()).unwrap_or(u64::MAX),
            slice_ticks: ticks(slice, self.policy.epoch_tick),
            slice_ns: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            pace: Pace::Sliced { quick: 0 },
            cpu_budget: CpuBudget::new(limits.cpu_shares.millicores()),
            instances: Vec::new(),
            spares: Vec::new(),
            next_slot: 0,
            // The entries live in the host's heap, beyond the linear memory
            // the limit bounds: they get a budget of their own, as large.
            state: Rc::new(RefCell::new(StateMap::with_budget(
                usize::try_from(memory_limit).unwrap_or(usize::MAX),
            ))),
            stats: AgentStats::default(),
        };
        for _ in 0..instances {
            let started = Instant::now();
            let instance = self.instantiate(&agent).map_err(DeployError::Capacity)?;
            self.record_startup(started);
            agent.instances.push(Some(instance));
        }
        self.agents.insert(id, agent);
        self.spares_settled = false;
        if self.policy.warmup == WarmupStrategy::Eager {
            self.refill_spares();
        }
        Ok(())
    }

    /// Remove agent `id` and every instance of it from this shard.
    pub fn undeploy(&mut self, id: AgentId) -> bool {
        let Some(agent) = self.agents.remove(&id) else {
            return false;
        };
        self.spares_settled = false;
        if let Some(fault_log) = &mut self.fault_log {
            fault_log.forget(&agent.name);
        }
        for instance in agent.instances.into_iter().flatten() {
            self.abandon(id, instance);
        }
        // Their handlers are cancelled with them (the shard answers their senders).
        let suspended = std::mem::take(&mut self.suspended);
        for call in suspended {
            if call.agent == id {
                drop(call.call);
            } else {
                self.suspended.push(call);
            }
        }
        if self.policy.warmup == WarmupStrategy::Eager {
            self.refill_spares();
        }
        true
    }

    /// Whether agent `id` has instances here, and how many.
    pub fn instance_count(&self, id: AgentId) -> Option<usize> {
        self.agents.get(&id).map(|agent| agent.instances.len())
    }

    /// When agent `id` has used its `cpu_shares` of the current window: the
    /// node-clock time it may run again. `None` when it may run now.
    pub fn cpu_blocked_until(&mut self, id: AgentId, now_ns: u64) -> Option<u64> {
        self.agents.get_mut(&id)?.cpu_budget.blocked_until(now_ns)
    }

    /// Load agent `id`'s state on this shard (from the partition, after a restart).
    pub fn seed_state(&mut self, id: AgentId, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        if let Some(agent) = self.agents.get(&id) {
            agent.state.borrow_mut().seed(entries);
        }
    }

    /// The counters of every agent on this shard, with its instance count.
    pub fn all_stats(&self) -> Vec<AgentCounts> {
        self.agents
            .iter()
            .map(|(id, agent)| AgentCounts {
                id,
                instances: agent.instances.len(),
                stats: agent.stats.clone(),
                memory_bytes: agent
                    .instances
                    .iter()
                    .flatten()
                    .map(|instance| instance.memory.data_size(&instance.store))
                    .sum(),
                spare_memory_bytes: agent
                    .spares
                    .iter()
                    .map(|instance| instance.memory.data_size(&instance.store))
                    .sum(),
                state_bytes: agent.state.borrow().bytes(),
                running_ns: self
                    .suspended
                    .iter()
                    .filter(|call| call.agent == id)
                    .map(|call| call.ran_ns)
                    .sum(),
            })
            .collect()
    }

    /// The counters of agent `id` on this shard.
    pub fn stats(&self, id: AgentId) -> Option<&AgentStats> {
        self.agents.get(&id).map(|agent| &agent.stats)
    }

    /// Warm spares currently held for agent `id`.
    pub fn spare_count(&self, id: AgentId) -> usize {
        self.agents.get(&id).map_or(0, |agent| agent.spares.len())
    }

    /// Top up every agent's warm spares to its share of `runtime.agent_pool_size`.
    /// Run off the message path (at deploy, or when the shard is idle).
    pub fn refill_spares(&mut self) {
        while self.refill_spares_step(usize::MAX) > 0 {}
    }

    /// Start at most `budget` warm spares; returns how many were started. A
    /// shard calls this with a small budget when idle, so refilling never
    /// holds a message up for long. Returns 0 when every share is full or
    /// the pool has no free slot.
    pub fn refill_spares_step(&mut self, budget: usize) -> usize {
        // A shard asks each time it goes idle, which under load is often:
        // once a pass found nothing to do, nothing is until spares are
        // taken or agents come and go.
        if self.spares_settled {
            return 0;
        }
        let started = self.refill_spares_pass(budget);
        self.spares_settled = started == 0;
        started
    }

    fn refill_spares_pass(&mut self, budget: usize) -> usize {
        let hosted = self.agents.len().max(1);
        let share = self.policy.pool_size / hosted;
        // Shares shrink as agents arrive: give back what is now over them, so
        // the spares of the whole shard stay within agent_pool_size.
        for agent in self.agents.values_mut() {
            agent.spares.truncate(share);
        }
        let mut started = 0;
        // Lazy pools fill an agent's spares only once it has started an instance on demand.
        let lazy = self.policy.warmup == WarmupStrategy::Lazy;
        let ids: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, agent)| !lazy || agent.stats.cold_starts + agent.stats.warm_starts > 0)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            while started < budget {
                let Some(agent) = self.agents.get(&id) else {
                    break;
                };
                if agent.spares.len() >= share {
                    break;
                }
                match self.instantiate(agent) {
                    Ok(instance) => {
                        if let Some(agent) = self.agents.get_mut(&id) {
                            agent.spares.push(instance);
                        }
                        started += 1;
                    }
                    // The pooling allocator is full: spares are an optimization, stop here.
                    Err(_) => return started,
                }
            }
        }
        started
    }

    /// Start one more instance of agent `id`; returns its slot and whether a
    /// warm spare served it. With `cold`, spares are bypassed.
    pub fn add_instance(
        &mut self,
        id: AgentId,
        cold: bool,
    ) -> Result<(u16, StartKind), DeployError> {
        let (instance, kind) = if cold {
            let started = Instant::now();
            let agent = self.agents.get(&id).ok_or_else(|| {
                DeployError::Capacity(format!("agent {} is not on this shard", id.0))
            })?;
            let instance = self.instantiate(agent).map_err(DeployError::Capacity)?;
            self.record_startup(started);
            self.spares_settled = false;
            if let Some(agent) = self.agents.get_mut(&id) {
                agent.stats.cold_starts += 1;
            }
            (instance, StartKind::Cold)
        } else {
            self.take_or_instantiate(id)?
        };
        let agent = self
            .agents
            .get_mut(&id)
            .ok_or_else(|| DeployError::Capacity(format!("agent {} is not on this shard", id.0)))?;
        agent.instances.push(Some(instance));
        let slot = u16::try_from(agent.instances.len() - 1)
            .map_err(|_| DeployError::Capacity("more than 65535 instances".into()))?;
        Ok((slot, kind))
    }

    /// Stop the last instance of agent `id` (keeping at least none). One
    /// with a suspended handler finishes that handler first.
    pub fn remove_instance(&mut self, id: AgentId) -> bool {
        let Some(agent) = self.agents.get_mut(&id) else {
            return false;
        };
        let slot = agent.instances.len().wrapping_sub(1);
        match agent.instances.pop() {
            Some(Some(instance)) => {
                self.abandon(id, instance);
                true
            }
            Some(None) => {
                if let Some(call) = self
                    .suspended
                    .iter_mut()
                    .find(|call| call.agent == id && call.slot == slot)
                {
                    call.settle = Settle::Retired;
                }
                true
            }
            None => false,
        }
    }

    /// Startup times (ns) of the instances started since the last call: warm
    /// (a spare taken) and cold (instantiated on demand), for deploys,
    /// explicit starts and recycling alike. Pre-warming spares is not a start.
    pub fn take_startup_times(&mut self) -> std::vec::Drain<'_, u64> {
        self.startup_times_ns.drain(..)
    }

    fn record_startup(&mut self, started: Instant) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.startup_times_ns.push(nanos.max(1));
    }

    /// What the resolver answers may have changed (the shard took a new
    /// directory): names the instances resolved are looked up again.
    pub fn directory_changed(&self) {
        self.directory_generation
            .set(self.directory_generation.get().wrapping_add(1));
    }

    /// The node clock, nanoseconds (the clock the host measures handlers with).
    pub fn now_ns(&self) -> u64 {
        (self.clock)()
    }

    /// Whether answers for abandoned deferred replies or instance start
    /// times wait to be taken ([`Self::take_abandoned`], [`Self::take_startup_times`]).
    pub fn has_reports(&self) -> bool {
        !self.abandoned.is_empty() || !self.startup_times_ns.is_empty()
    }

    /// Give back a handler's outbox once its messages were taken out, so the
    /// next handler reuses its capacity instead of allocating one.
    pub fn recycle_outbox(&mut self, outbox: Vec<OutboundMessage>) {
        AbiState::keep_spare_outbox(&mut self.spare_outbox, outbox);
    }

    /// Failure answers for the deferred replies of instances that were
    /// dropped (recycled, faulted, removed): the shard sends them, so no
    /// requester waits forever for an answer that can no longer come.
    pub fn take_abandoned(&mut self) -> Vec<OutboundMessage> {
        std::mem::take(&mut self.abandoned)
    }

    /// Drop `instance` of agent `id`, answering its open deferred replies with `failure`.
    fn abandon(&mut self, id: AgentId, instance: LiveInstance) {
        // Its pool slot is free again: a refill that ran out may go on.
        self.spares_settled = false;
        let failures = instance
            .store
            .data()
            .abi
            .failures_for_open_tickets(b"caxton:instance-recycled");
        self.abandoned
            .extend(failures.map(|answer| OutboundMessage {
                on_behalf_of: Some(Address::Agent(id)),
                ..answer
            }));
    }

    /// Handle `envelope` with agent `id`, starting at `started_ns` on the
    /// node clock: instance `slot` if given, else the next free one in turn.
    pub fn handle(
        &mut self,
        id: AgentId,
        slot: Option<u16>,
        envelope: Envelope,
        started_ns: u64,
    ) -> Handling {
        // An agent's instances on a shard share its state, so its handlers
        // never interleave: while one is suspended, its other messages wait.
        if self.suspended.iter().any(|parked| parked.agent == id) {
            return if self.agents.get(&id).is_some() {
                Handling::Busy(envelope)
            } else {
                Handling::NoInstance
            };
        }
        let Some(agent) = self.agents.get_mut(&id) else {
            return Handling::NoInstance;
        };
        let slots = agent.instances.len();
        let index = match slot {
            // An instance that no longer exists is not silently replaced by another.
            Some(slot) if usize::from(slot) >= slots => return Handling::NoInstance,
            Some(slot) if agent.instances[usize::from(slot)].is_none() => {
                return Handling::Busy(envelope)
            }
            Some(slot) => usize::from(slot),
            None if slots == 0 => return Handling::NoInstance,
            None => {
                // Round robin from `next_slot`, wrapping by a second range
                // rather than a `%` (a division on every message).
                let start = if agent.next_slot < slots {
                    agent.next_slot
                } else {
                    0
                };
                let Some(index) = (start..slots)
                    .chain(0..start)
                    .find(|&index| agent.instances[index].is_some())
                else {
                    return Handling::Busy(envelope);
                };
                agent.next_slot = index + 1;
                index
            }
        };
        let due_for_recycling = agent.instances[index].as_ref().is_some_and(|instance| {
            instance.served >= self.policy.max_reuse_count
                || started_ns.saturating_sub(instance.born_ns) >= self.policy.recycle_after_ns
        });
        if due_for_recycling {
            self.replace_instance(id, index);
        }
        let sliced = self.policy.sliced;
        let Some(agent) = self.agents.get_mut(&id) else {
            return Handling::NoInstance;
        };
        // Recycling may have failed for want of a pool slot, leaving one instance fewer.
        let Some(mut instance) = agent.instances.get_mut(index).and_then(Option::take) else {
            return Handling::NoInstance;
        };
        instance.served += 1;
        instance.store.data_mut().abi.begin(envelope);
        // The stack pool is bounded: with every stack held by a suspended
        // handler, this one runs directly.
        let stacks_free = self.suspended.len() + 1 < self.policy.handler_stacks;
        let direct = !sliced || agent.pace == Pace::Direct || !stacks_free;
        instance.run.set(RunClock {
            max_ns: agent.max_execution_ns,
            ran_before_ns: 0,
            slice_started_ns: started_ns,
            may_yield: !direct,
            slice_ticks: agent.slice_ticks,
            overran: false,
        });
        instance.store.set_epoch_deadline(agent.slice_ticks);
        if direct {
            return Handling::Done(self.run_directly(id, index, instance, started_ns));
        }
        let run = Rc::clone(&instance.run);
        let mut call: Call = Box::pin(async move {
            let handle = instance.handle.clone();
            let result = handle.call_async(&mut instance.store, ()).await;
            (instance, result)
        });
        let polled = poll_once(&mut call);
        // No stack to run it on: every pooled stack is held, by suspended
        // handlers or cached in the stores of instances that ran sliced
        // before (wasmtime keeps a store's last stack until the store is
        // dropped). The call failed before any WebAssembly ran, so the
        // handler runs now, directly, as the pool's bound promises; the
        // failed attempt says nothing of the agent's pace.
        let polled = match polled {
            Poll::Ready((instance, Err(error)))
                if error
                    .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                let mut run = instance.run.get();
                run.may_yield = false;
                instance.run.set(run);
                if let Some(agent) = self.agents.get_mut(&id) {
                    agent.stats.stackless_runs += 1;
                }
                let handled = self.run_directly(id, index, instance, started_ns);
                // Its run counts toward the direct path as a sliced one would.
                self.pace_after(id, handled.ran_ns, true);
                return Handling::Done(handled);
            }
            polled => polled,
        };
        let finished_ns = (self.clock)();
        let ran_ns = finished_ns.saturating_sub(started_ns);
        self.pace_after(id, ran_ns, polled.is_ready());
        match polled {
            Poll::Ready((instance, result)) => Handling::Done(self.finish_call(
                id,
                index,
                instance,
                result,
                (ran_ns, ran_ns, finished_ns),
                Settle::BackInSlot,
            )),
            Poll::Pending => {
                if let Some(agent) = self.agents.get_mut(&id) {
                    agent.cpu_budget.charge(ran_ns, finished_ns);
                }
                self.suspended.push(SuspendedCall {
                    agent: id,
                    slot: index,
                    call,
                    run,
                    ran_ns,
                    settle: Settle::BackInSlot,
                });
                Handling::Suspended {
                    instance: self.instance_id(id, index),
                    ran_ns,
                }
            }
        }
    }

    /// Move agent `id`'s pace on after a handler's first slice of `ran_ns`
    /// (`finished`: the handler ended within it): toward the direct path
    /// while its handlers end quickly, back to the start otherwise.
    fn pace_after(&mut self, id: AgentId, ran_ns: u64, finished: bool) {
        if !self.policy.direct_quick {
            return;
        }
        let Some(agent) = self.agents.get_mut(&id) else {
            return;
        };
        agent.pace = match agent.pace {
            Pace::Sliced { quick }
                if finished && ran_ns.saturating_mul(QUICK_FRACTION) < agent.slice_ns =>
            {
                if quick + 1 >= QUICK_RUNS_FOR_DIRECT {
                    Pace::Direct
                } else {
                    Pace::Sliced { quick: quick + 1 }
                }
            }
            Pace::Sliced { .. } => Pace::Sliced { quick: 0 },
            pace => pace,
        };
    }

    /// Run a handler (begun on `instance`, its run clock set) to its end on
    /// the shard's stack: it cannot yield at a slice's end.
    fn run_directly(
        &mut self,
        id: AgentId,
        index: usize,
        mut instance: LiveInstance,
        started_ns: u64,
    ) -> Handled {
        let result = instance.handle.call(&mut instance.store, ());
        let finished_ns = (self.clock)();
        let ran_ns = finished_ns.saturating_sub(started_ns);
        if self.policy.sliced && instance.run.get().overran {
            // It ran past a slice where it could not yield: never again.
            if let Some(agent) = self.agents.get_mut(&id) {
                agent.pace = Pace::SlicedForGood;
            }
        }
        self.finish_call(
            id,
            index,
            instance,
            result,
            (ran_ns, ran_ns, finished_ns),
            Settle::BackInSlot,
        )
    }

    /// Whether agent `id`'s handlers run directly on the shard's stack (see
    /// the module docs), rather than as sliced async calls.
    pub fn runs_directly(&self, id: AgentId) -> bool {
        self.policy.sliced
            && self
                .agents
                .get(&id)
                .is_some_and(|agent| agent.pace == Pace::Direct)
    }

    /// Whether any handler is suspended (running, or paused for its
    /// agent's CPU share).
    pub fn has_suspended(&self) -> bool {
        !self.suspended.is_empty()
    }

    /// Whether a suspended handler may run its next slice now: the shard
    /// must come back to it rather than park. One whose agent has used its
    /// `cpu_shares` for the window waits for the next
    /// ([`Self::next_paused_wake_ns`]).
    pub fn has_runnable_suspended(&mut self) -> bool {
        if self.suspended.is_empty() {
            return false;
        }
        let now = (self.clock)();
        let agents = &mut self.agents;
        self.suspended
            .iter()
            .any(|parked| paused_until(agents, parked, now).is_none())
    }

    /// When the first handler paused for its agent's CPU share may run
    /// again, if any is paused.
    pub fn next_paused_wake_ns(&mut self) -> Option<u64> {
        if self.suspended.is_empty() {
            return None;
        }
        let now = (self.clock)();
        let agents = &mut self.agents;
        self.suspended
            .iter()
            .filter_map(|parked| paused_until(agents, parked, now))
            .min()
    }

    /// Give every suspended handler one more slice, oldest first, except
    /// those whose agent has used its CPU share for the window: a handler
    /// past its share pauses until the next window, as its queued messages
    /// wait (`cpu_shares` bounds a long handler, not only how many start).
    /// Hand the ones that finish to `finished`; returns how many finished.
    pub fn resume_suspended(&mut self, finished: &mut dyn FnMut(Handled)) -> usize {
        let mut done = 0;
        for mut parked in std::mem::take(&mut self.suspended) {
            let slice_started_ns = (self.clock)();
            if paused_until(&mut self.agents, &parked, slice_started_ns).is_some() {
                self.suspended.push(parked);
                continue;
            }
            // The epoch callback measures this slice, and the run, from here.
            let mut run = parked.run.get();
            run.ran_before_ns = parked.ran_ns;
            run.slice_started_ns = slice_started_ns;
            parked.run.set(run);
            let polled = poll_once(&mut parked.call);
            let slice_ended_ns = (self.clock)();
            let slice_ns = slice_ended_ns.saturating_sub(slice_started_ns);
            parked.ran_ns += slice_ns;
            match polled {
                Poll::Pending => {
                    if let Some(agent) = self.agents.get_mut(&parked.agent) {
                        agent.cpu_budget.charge(slice_ns, slice_ended_ns);
                    }
                    self.suspended.push(parked);
                }
                Poll::Ready((instance, result)) => {
                    done += 1;
                    // A retired instance's handler ends like any other: the
                    // shard hears of it (its sender is answered, a stored
                    // message finished, the agent's held messages freed).
                    finished(self.finish_call(
                        parked.agent,
                        parked.slot,
                        instance,
                        result,
                        (parked.ran_ns, slice_ns, slice_ended_ns),
                        parked.settle,
                    ));
                }
            }
        }
        done
    }

    /// Cancel every suspended handler (the node is stopping); returns their instances.
    pub fn cancel_suspended(&mut self) -> Vec<InstanceId> {
        std::mem::take(&mut self.suspended)
            .into_iter()
            .map(|parked| self.instance_id(parked.agent, parked.slot))
            .collect()
    }

    fn instance_id(&self, agent: AgentId, slot: usize) -> InstanceId {
        InstanceId {
            agent,
            shard: self.shard,
            slot: u16::try_from(slot).unwrap_or(u16::MAX),
        }
    }

    /// A handler ended after `ran_ns` of run time, `unpaid_ns` of it not yet
    /// charged to the agent's CPU budget: put its instance back in `slot` (a
    /// fresh one after a fault), count it, and say what it did.
    #[allow(clippy::too_many_arguments)]
    fn finish_call(
        &mut self,
        id: AgentId,
        slot: usize,
        mut instance: LiveInstance,
        result: wasmtime::Result<i32>,
        (ran_ns, unpaid_ns, finished_ns): (u64, u64, u64),
        settle: Settle,
    ) -> Handled {
        let instance_id = self.instance_id(id, slot);
        let state = instance.store.data_mut();
        let outbox = state.abi.finish(std::mem::take(&mut self.spare_outbox));
        // The agent's state is shared by its instances here; this handler's writes are the log's tail.
        let state_writes = state.state.borrow_mut().take_writes();
        let outcome = match result {
            Ok(0) => Outcome::Handled,
            Ok(code) => Outcome::AgentFailed(code),
            Err(error) => classify(&error),
        };
        // What a faulted handler sent is discarded, as is what one sent
        // while its agent was undeployed under it.
        let keeps_outbox = self.settle_instance(
            id,
            slot,
            instance,
            &outcome,
            (ran_ns, unpaid_ns, finished_ns),
            settle,
        );
        Handled {
            instance: instance_id,
            outcome,
            ran_ns,
            outbox: if keeps_outbox { outbox } else { Vec::new() },
            state_writes,
        }
    }

    /// Count a handler's end against its agent, put its instance back in
    /// `slot` (a fresh one after a fault), or drop it when it was retired.
    /// Whether what it sent goes out: not after a fault, nor when its agent
    /// was undeployed while it ran.
    fn settle_instance(
        &mut self,
        id: AgentId,
        slot: usize,
        instance: LiveInstance,
        outcome: &Outcome,
        (ran_ns, unpaid_ns, finished_ns): (u64, u64, u64),
        settle: Settle,
    ) -> bool {
        let Some(agent) = self.agents.get_mut(&id) else {
            self.abandon(id, instance);
            return false;
        };
        agent.cpu_budget.charge(unpaid_ns, finished_ns);
        let stats = &mut agent.stats;
        stats.busy_ns += ran_ns;
        stats.max_handler_ns = stats.max_handler_ns.max(ran_ns);
        stats.run_times.record(ran_ns);
        match outcome {
            Outcome::Handled => stats.handled += 1,
            Outcome::AgentFailed(_) => stats.agent_failures += 1,
            // A fault is told to the operator's log too, out of line.
            Outcome::Trapped(_) => {
                stats.traps += 1;
                log_fault(&mut self.fault_log, self.shard, agent, outcome, finished_ns);
            }
            Outcome::TimedOut => {
                stats.timeouts += 1;
                log_fault(&mut self.fault_log, self.shard, agent, outcome, finished_ns);
            }
            Outcome::MemoryExceeded => {
                stats.memory_faults += 1;
                log_fault(&mut self.fault_log, self.shard, agent, outcome, finished_ns);
            }
        }
        if settle == Settle::Retired {
            // Its slot was removed (`remove_instance`): nothing to put back,
            // nor to replace after a fault.
            self.abandon(id, instance);
            return !outcome.is_fault();
        }
        match agent.instances.get_mut(slot) {
            Some(empty @ None) => *empty = Some(instance),
            _ => self.abandon(id, instance),
        }
        if outcome.is_fault() {
            self.replace_instance(id, slot);
            return false;
        }
        true
    }

    /// Replace instance `index` of agent `id` by a spare or a fresh instance.
    fn replace_instance(&mut self, id: AgentId, index: usize) {
        let Some(agent) = self.agents.get_mut(&id) else {
            return;
        };
        agent.stats.recycled += 1;
        // Drop the old instance first: its pool slot is what the new one may need.
        if let Some(old) = agent.instances.get_mut(index).and_then(Option::take) {
            self.abandon(id, old);
        }
        match self.take_or_instantiate(id) {
            Ok((fresh, _)) => {
                if let Some(slot) = self
                    .agents
                    .get_mut(&id)
                    .and_then(|agent| agent.instances.get_mut(index))
                {
                    *slot = Some(fresh);
                }
            }
            // Out of pool slots: the agent runs with one instance fewer, and says so in its stats.
            Err(_) => {
                if let Some(agent) = self.agents.get_mut(&id) {
                    agent.stats.lost_instances += 1;
                    // Rare and lasting (the agent serves with fewer
                    // instances from now on): every one is logged.
                    tracing::warn!(
                        shard = self.shard,
                        agent = &*agent.name,
                        "a faulted instance could not be replaced (the shard's instance pool is full); the agent runs with one instance fewer"
                    );
                    if index < agent.instances.len() {
                        agent.instances.remove(index);
                    }
                }
                // Later slots moved down one; so do their suspended handlers.
                for parked in &mut self.suspended {
                    if parked.agent == id && parked.slot > index {
                        parked.slot -= 1;
                    }
                }
            }
        }
    }

    fn take_or_instantiate(
        &mut self,
        id: AgentId,
    ) -> Result<(LiveInstance, StartKind), DeployError> {
        let started = Instant::now();
        let agent = self
            .agents
            .get_mut(&id)
            .ok_or_else(|| DeployError::Capacity(format!("agent {} is not on this shard", id.0)))?;
        // A start changes what the spares should be (taken, or a lazy pool woken).
        self.spares_settled = false;
        if let Some(mut spare) = agent.spares.pop() {
            agent.stats.warm_starts += 1;
            spare.born_ns = (self.clock)();
            self.record_startup(started);
            return Ok((spare, StartKind::Warm));
        }
        let agent = self
            .agents
            .get(&id)
            .ok_or_else(|| DeployError::Capacity(format!("agent {} is not on this shard", id.0)))?;
        let instance = self.instantiate(agent).map_err(DeployError::Capacity)?;
        self.record_startup(started);
        if let Some(agent) = self.agents.get_mut(&id) {
            agent.stats.cold_starts += 1;
        }
        Ok((instance, StartKind::Cold))
    }

    fn instantiate(&self, agent: &HostedAgent) -> Result<LiveInstance, String> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(agent.memory_limit_bytes)
            .table_elements(TABLE_ELEMENTS_MAX)
            .instances(1)
            .memories(1)
            .tables(1)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            limits,
            abi: AbiState::default(),
            resolver: Rc::clone(&self.resolver),
            directory_generation: Rc::clone(&self.directory_generation),
            namer: Rc::clone(&self.namer),
            clock: Rc::clone(&self.clock),
            agent_name: Rc::clone(&agent.name),
            state: Rc::clone(&agent.state),
            run: Rc::default(),
        };
        let run = Rc::clone(&state.run);
        // A start function runs on the shard's stack and cannot yield: it
        // is bounded by the start time (the deploy check refused modules
        // whose start ran longer), not by the agent's max_execution_time,
        // so that a fresh instance never holds its shard for long.
        run.set(RunClock {
            max_ns: agent.max_execution_ns.min(crate::START_TIME_MAX_NS),
            ran_before_ns: 0,
            slice_started_ns: (self.clock)(),
            may_yield: false,
            slice_ticks: agent.slice_ticks,
            overran: false,
        });
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|context| Ok(on_epoch_deadline(context.data())));
        store.set_epoch_deadline(agent.slice_ticks);
        let instance = agent.pre.instantiate(&mut store).map_err(|error| {
            if error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                // Said in the profile's words, not the allocator's.
                format!(
                    "cannot start an instance of `{}`: this shard's instance pool is full \
                         ({} instances, live and warm spares together: runtime.max_agents + \
                         runtime.agent_pool_size, on each data shard); deploy fewer instances \
                         or raise runtime.max_agents",
                    agent.name, self.policy.pool_instances
                )
            } else {
                format!("cannot instantiate `{}`: {error:#}", agent.name)
            }
        })?;
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| "no exported memory".to_owned())?;
        store.data_mut().abi.bind_memory(memory);
        let handle = instance
            .get_typed_func::<(), i32>(&mut store, abi::EXPORT_HANDLE)
            .map_err(|error| error.to_string())?;
        Ok(LiveInstance {
            run,
            store,
            memory,
            handle,
            served: 0,
            born_ns: (self.clock)(),
        })
    }
}

impl AgentHost {
    /// Linear memory in use by every instance and spare on this shard, in bytes.
    pub fn linear_memory_bytes(&self) -> usize {
        self.agents
            .values()
            .flat_map(|agent| agent.instances.iter().flatten().chain(&agent.spares))
            .map(|instance| instance.memory.data_size(&instance.store))
            .sum()
    }
}

/// When a suspended handler, paused for its agent's CPU share, may run its
/// next slice; `None` when it may now. A retiring one (its instance
/// removed) is never paused: it only has to end.
fn paused_until(agents: &mut AgentTable, parked: &SuspendedCall, now_ns: u64) -> Option<u64> {
    if parked.settle == Settle::Retired {
        return None;
    }
    agents
        .get_mut(&parked.agent)?
        .cpu_budget
        .blocked_until(now_ns)
}

/// Poll a handler call once. Nothing wakes a call: the shard polls every
/// suspended call each turn, so the waker does nothing.
fn poll_once(call: &mut Call) -> Poll<(LiveInstance, wasmtime::Result<i32>)> {
    call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

fn classify(error: &wasmtime::Error) -> Outcome {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => Outcome::TimedOut,
            other => Outcome::Trapped(other.to_string()),
        };
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        Outcome::MemoryExceeded
    } else {
        Outcome::Trapped(text.lines().next().unwrap_or_default().to_owned())
    }
}

/// Instantiate `module` once with a throwaway store and ask its ABI version,
/// each stopped after `deadline_ticks` epoch ticks (`limit`).
pub(crate) fn check_abi_version(
    engine: &Engine,
    module: &Module,
    deadline_ticks: u64,
    limit: caxton_profiles::HumanDuration,
) -> Result<(), DeployError> {
    // Said where wasmtime's words do not: a start that ran too long was
    // stopped at the deploy's bound, and an import with another signature
    // than the host's fails to link.
    let failed = |error: wasmtime::Error| {
        let text = format!("{error:#}");
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            DeployError::StartFailed(format!(
                "{text}: its start function or `caxton_abi_version` ran past {limit}, the most they may take (they run on the shard's own thread and cannot yield; the lesser of 50 ms and agents.default_limits.max_execution_time)"
            ))
        } else if text.contains("incompatible import type") {
            DeployError::WrongImport(text)
        } else {
            DeployError::StartFailed(text)
        }
    };
    let linker = host_linker(engine)?;
    let state = HostState {
        limits: StoreLimitsBuilder::new()
            .table_elements(TABLE_ELEMENTS_MAX)
            .instances(1)
            .memories(1)
            .tables(1)
            .build(),
        abi: AbiState::default(),
        resolver: Rc::new(|_| None),
        directory_generation: Rc::default(),
        namer: Rc::new(|_| String::new()),
        clock: Rc::new(|| 0),
        agent_name: Rc::from("(deploy check)"),
        state: Rc::default(),
        run: Rc::default(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_trap();
    // The compiler ticks this engine's epoch while the check runs
    // (`ticker::ticking_while`): a start function or ABI call that loops is
    // stopped like a handler would be.
    store.set_epoch_deadline(deadline_ticks);
    let instance = linker.instantiate(&mut store, module).map_err(failed)?;
    let version = instance
        .get_typed_func::<(), i32>(&mut store, abi::EXPORT_ABI_VERSION)
        .and_then(|function| function.call(&mut store, ()))
        .map_err(failed)?;
    if version != abi::ABI_VERSION {
        return Err(DeployError::WrongAbiVersion {
            found: version,
            expected: abi::ABI_VERSION,
        });
    }
    Ok(())
}

/// A linker with every host function of the ABI, for this engine.
fn host_linker(engine: &Engine) -> Result<Linker<HostState>, DeployError> {
    let mut linker = Linker::new(engine);
    link_abi(&mut linker).map_err(|error| DeployError::Engine(error.to_string()))?;
    Ok(linker)
}

/// Tell the operator's log of `agent`'s fault (`outcome`), as often as
/// [`crate::log::FaultLog`] allows. Out of line: a handler that ends well,
/// the case on every message, passes one comparison.
#[cold]
#[inline(never)]
fn log_fault(
    fault_log: &mut Option<Box<crate::log::FaultLog>>,
    shard: u16,
    agent: &HostedAgent,
    outcome: &Outcome,
    finished_ns: u64,
) {
    let what = match outcome {
        Outcome::Trapped(trap) => format!("trapped: {trap}"),
        Outcome::TimedOut => format!(
            "its handler ran past max_execution_time ({:?})",
            Duration::from_nanos(agent.max_execution_ns)
        ),
        _ => format!(
            "it grew its memory past its limit of {} bytes",
            agent.memory_limit_bytes
        ),
    };
    let fault_log = fault_log.get_or_insert_with(Box::default);
    if let Some(line) = fault_log.fault(&agent.name, &what, finished_ns) {
        crate::log::log_fault(shard, &agent.name, &line);
    }
}
