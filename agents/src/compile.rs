//! Turning uploaded bytes (`.wasm` or `.wat`) into a checked, compiled agent,
//! once per node, and caching the result.
//!
//! Compilation is control plane: it happens once, on the thread that deploys,
//! and yields a serialized artifact that each shard loads into its own engine
//! (`Module::deserialize`, which maps code rather than compiling it). The
//! shards therefore share no engine, no allocator pool and no lock.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use caxton_profiles::{OptimizationLevel, Profile};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, Module, PoolingAllocationConfig,
    ValType,
};

use crate::abi;
use crate::error::DeployError;
use crate::host::epoch_tick;

/// The most pooled handler stacks per shard: handlers in progress as async
/// calls at once (one running and the suspended ones). A shard with this
/// many suspended runs its next handlers directly until one finishes.
pub const HANDLER_STACKS_MAX: u32 = 128;

/// Room on a handler's pooled stack for the host functions it calls, above
/// the agent's own `runtime.agent_stack_size`.
const ASYNC_STACK_HOST_BYTES: usize = 256 << 10;

/// Largest module accepted, in bytes: a bound on compile time and memory.
pub const MODULE_BYTES_MAX: usize = 64 << 20;

/// A compiled, checked agent module, ready for any shard to load.
#[derive(Clone, Debug)]
pub struct CompiledModule {
    /// wasmtime's serialized artifact for this node's engine configuration.
    pub artifact: Arc<[u8]>,
    /// A digest of the source bytes (the cache key).
    pub digest: u64,
    /// The source it was compiled from: a cache hit must match it byte for
    /// byte, not just by digest.
    source: Arc<[u8]>,
}

/// The engine configuration every engine of the node shares (they must agree
/// for a serialized artifact to load). `pool_instances` sizes the pooling
/// allocator of one shard's engine.
pub fn engine_config(profile: &Profile, pool_instances: u32) -> Result<Config, DeployError> {
    let runtime = &profile.runtime;
    let mut config = Config::new();
    config.epoch_interruption(true);
    let agent_stack_bytes = usize::try_from(runtime.agent_stack_size.bytes()).unwrap_or(usize::MAX);
    config.max_wasm_stack(agent_stack_bytes);
    config.cranelift_opt_level(match runtime.wasm.optimization_level {
        OptimizationLevel::None => wasmtime::OptLevel::None,
        OptimizationLevel::Speed => wasmtime::OptLevel::Speed,
        OptimizationLevel::SpeedAndSize => wasmtime::OptLevel::SpeedAndSize,
    });
    if !runtime.wasm.jit_enabled {
        // Pulley is wasmtime's portable interpreter: same semantics, no native code.
        config.target("pulley64").map_err(|error| {
            DeployError::Engine(format!(
                "runtime.wasm.jit_enabled: false needs the Pulley interpreter: {error}"
            ))
        })?;
    }
    // Reserve only what an agent may use, not wasmtime's default 4 GiB per
    // memory: a node reserves address space for every pooled instance.
    let memory_ceiling = runtime.max_memory_per_agent.bytes();
    config.memory_reservation(memory_ceiling);
    config.memory_guard_size(64 << 10);
    config.memory_reservation_for_growth(0);
    if runtime.wasm.memory_pooling {
        let mut pooling = PoolingAllocationConfig::default();
        pooling.total_core_instances(pool_instances.max(1));
        pooling.total_memories(pool_instances.max(1));
        pooling.total_tables(pool_instances.max(1));
        pooling.max_memory_size(usize::try_from(memory_ceiling).unwrap_or(usize::MAX));
        // Keep a little of each slot's memory mapped between uses, so that
        // re-instantiating a small agent does not fault its pages in again.
        pooling.linear_memory_keep_resident(64 << 10);
        if runtime.wasm.stack_pooling {
            // A stack is taken by each handler in progress as an async call:
            // the running one and the suspended ones. Each is reserved
            // address space (and two mappings), resident only as deep as a
            // handler goes; past the pool, handlers run directly.
            pooling.total_stacks(pool_instances.clamp(1, HANDLER_STACKS_MAX));
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    if runtime.wasm.stack_pooling {
        // A handler's stack holds its WebAssembly frames (agent_stack_size)
        // and the host functions it calls.
        config.async_stack_size(agent_stack_bytes.saturating_add(ASYNC_STACK_HOST_BYTES));
    }
    Ok(config)
}

/// Compiles and checks modules, keeping the last `module_cache_size` results
/// when `cache_compiled_modules` is on.
pub struct ModuleCompiler {
    engine: Engine,
    heap_bytes_max: u64,
    check_deadline_ticks: u64,
    /// The epoch tick, counted only while a check runs: the check's start
    /// function and ABI call are stopped like a handler would be.
    tick: std::time::Duration,
    cache: VecDeque<CompiledModule>,
    cache_capacity: usize,
    /// Modules compiled (cache misses).
    pub compilations: u64,
    /// Deploys served from the cache.
    pub cache_hits: u64,
}

impl ModuleCompiler {
    /// A compiler for `profile`'s engine configuration.
    pub fn new(profile: &Profile) -> Result<Self, DeployError> {
        // The compiler never instantiates from its pool beyond the ABI check.
        let engine = Engine::new(&engine_config(profile, 1)?)
            .map_err(|error| DeployError::Engine(error.to_string()))?;
        let wasm = &profile.runtime.wasm;
        let cache_capacity = if wasm.cache_compiled_modules {
            wasm.module_cache_size as usize
        } else {
            0
        };
        let tick = epoch_tick(profile);
        let check_time = profile.agents.default_limits.max_execution_time.get();
        let check_deadline_ticks =
            u64::try_from(check_time.as_nanos().div_ceil(tick.as_nanos()).max(1))
                .unwrap_or(u64::MAX);
        Ok(Self {
            engine,
            heap_bytes_max: profile.runtime.agent_heap_size.bytes(),
            check_deadline_ticks,
            tick,
            cache: VecDeque::new(),
            cache_capacity,
            compilations: 0,
            cache_hits: 0,
        })
    }

    /// Check and compile `source` (binary or text format).
    pub fn compile(&mut self, source: &[u8]) -> Result<CompiledModule, DeployError> {
        if source.len() > MODULE_BYTES_MAX {
            return Err(DeployError::TooLarge {
                bytes: source.len(),
                limit: MODULE_BYTES_MAX,
            });
        }
        let digest = digest(source);
        if let Some(position) = self
            .cache
            .iter()
            .position(|cached| cached.digest == digest && *cached.source == *source)
        {
            self.cache_hits += 1;
            // Move to the back: the back is the most recently used.
            let cached = self.cache.remove(position).expect("position is in range");
            self.cache.push_back(cached.clone());
            return Ok(cached);
        }
        let binary =
            wat::parse_bytes(source).map_err(|error| DeployError::NotWasm(error.to_string()))?;
        let module = Module::new(&self.engine, &binary)
            .map_err(|error| DeployError::NotWasm(format!("{error:#}")))?;
        check_interface(&module, self.heap_bytes_max)?;
        crate::ticker::ticking_while(&self.engine, self.tick, || {
            crate::host::check_abi_version(&self.engine, &module, self.check_deadline_ticks)
        })?;
        let artifact: Arc<[u8]> = module
            .serialize()
            .map_err(|error| DeployError::Engine(error.to_string()))?
            .into();
        self.compilations += 1;
        let compiled = CompiledModule {
            artifact,
            digest,
            source: source.into(),
        };
        if self.cache_capacity > 0 {
            if self.cache.len() >= self.cache_capacity {
                self.cache.pop_front();
            }
            self.cache.push_back(compiled.clone());
        }
        Ok(compiled)
    }
}

impl ModuleCompiler {
    /// Modules the cache holds, and their bytes (source and compiled artifact).
    pub fn cache_footprint(&self) -> (usize, usize) {
        let bytes = self
            .cache
            .iter()
            .map(|cached| cached.artifact.len() + cached.source.len())
            .sum();
        (self.cache.len(), bytes)
    }
}

fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The exports and imports the ABI requires, checked before anything runs.
fn check_interface(module: &Module, heap_bytes_max: u64) -> Result<(), DeployError> {
    let export = |name: &str| module.get_export(name);
    match export(abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(memory)) => {
            let initial_bytes = memory.minimum().saturating_mul(64 << 10);
            if initial_bytes > heap_bytes_max {
                return Err(DeployError::HeapTooLarge {
                    initial_bytes,
                    limit: heap_bytes_max,
                });
            }
        }
        Some(_) => {
            return Err(DeployError::WrongExport {
                name: abi::EXPORT_MEMORY,
                expected: "a memory",
            })
        }
        None => return Err(DeployError::MissingExport(abi::EXPORT_MEMORY)),
    }
    for name in [abi::EXPORT_ABI_VERSION, abi::EXPORT_HANDLE] {
        match export(name) {
            Some(ExternType::Func(function)) => {
                let params: Vec<ValType> = function.params().collect();
                let results: Vec<ValType> = function.results().collect();
                if !params.is_empty() || results.len() != 1 || !matches!(results[0], ValType::I32) {
                    return Err(DeployError::WrongExport {
                        name,
                        expected: "a function () -> i32",
                    });
                }
            }
            Some(_) => {
                return Err(DeployError::WrongExport {
                    name,
                    expected: "a function () -> i32",
                })
            }
            None => return Err(DeployError::MissingExport(name)),
        }
    }
    for import in module.imports() {
        if import.module() != abi::IMPORT_MODULE || !abi::HOST_FUNCTIONS.contains(&import.name()) {
            return Err(DeployError::UnknownImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    Ok(())
}
