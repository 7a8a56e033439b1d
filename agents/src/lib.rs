//! WebAssembly agents for Caxton.
//!
//! This crate owns the agent ABI ([`abi`], prose in `docs/agent-abi.md`) and
//! the one implementation of its host functions ([`link_abi`], generic over
//! an [`AbiContext`], linked by the engine's hosts and by the benchmarks'
//! baseline alike); compiling and checking modules once per node
//! ([`ModuleCompiler`]); and each shard's [`AgentHost`]: its own wasmtime
//! engine and pooling allocator, the instances and warm spares of the agents
//! it hosts, their limits (memory through a `ResourceLimiter`, execution time
//! through epoch interruption), and fault containment. It does not route
//! messages: the shard hands it one message at a time and routes what the
//! agent sent.

pub mod abi;
mod abi_host;
mod budget;
mod compile;
mod error;
mod host;
mod log;
mod run_times;
mod ticker;

pub use abi_host::{link_abi, AbiContext, AbiState, OutboundMessage, StateMap};
pub use budget::{CpuBudget, BUDGET_WINDOW_NS};
pub use compile::{
    engine_config, kernel_max_map_count, pool_reservation_bytes, CompiledModule, ModuleCheck,
    ModuleCompiler, PoolSizes, HANDLER_STACKS_MIN, MODULE_BYTES_MAX, POOL_ADDRESS_SPACE_MAX,
};
pub use error::DeployError;
pub use host::{
    epoch_tick, AgentCounts, AgentHost, AgentStats, Clock, Handled, Handling, Namer, Outcome,
    Resolver, StartKind, EPOCH_TICK_MAX,
};
pub use run_times::{quantile_of, RunTimes, RUN_TIME_BUCKETS};

/// The most a module's start function and its `caxton_abi_version` may run,
/// at deploy and each time an instance starts: they run on the shard's
/// stack and cannot yield, so whatever they take, every agent on the shard
/// waits for (an agent's own `max_execution_time` bounds its handlers only).
pub const START_TIME_MAX: std::time::Duration = std::time::Duration::from_millis(50);
pub(crate) const START_TIME_MAX_NS: u64 = 50_000_000;
pub use ticker::{EpochTicker, TickDemand, QUIET_TICKS_BEFORE_PARK};
