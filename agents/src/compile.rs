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

/// The fewest pooled handler stacks a shard gets, however many shards share
/// the node's mapping budget.
pub const HANDLER_STACKS_MIN: u32 = 16;

/// The kernel's limit on a process's memory mappings (`vm.max_map_count`)
/// when `/proc` cannot tell: Linux's default.
const MAX_MAP_COUNT_DEFAULT: u64 = 65_530;

/// The part of that limit (one in this many) a node's pooled handler stacks
/// may take, all shards together. The rest is for linear memories and tables
/// (two mappings per slot in use), module images and the process itself.
const STACK_SHARE_OF_MAPPINGS: u64 = 4;

/// Each pooled stack's guard page splits the pool's one mapping: two
/// mappings per stack.
const MAPPINGS_PER_STACK: u64 = 2;

/// How many instances a shard's engine pools, and how many handler stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSizes {
    /// Instances, memories and tables (`max_agents + agent_pool_size`).
    pub instances: u32,
    /// Handler stacks: handlers in progress as async calls at once, and
    /// stacks cached in the stores of instances that ran sliced.
    pub handler_stacks: u32,
}

impl PoolSizes {
    /// The pools of one of `data_shards` shards running `profile`, within a
    /// kernel mapping limit of `max_map_count` ([`kernel_max_map_count`]).
    ///
    /// wasmtime keeps the last stack a store ran on until the store is
    /// dropped, so every instance that ran sliced holds one: a stack per
    /// pooled instance means no handler ever runs without one. Stacks cost
    /// two mappings each, though, and the kernel caps a process's mappings,
    /// so the node's share of that cap is dealt over its shards, and a
    /// shard gets the lesser of the two (never fewer than
    /// [`HANDLER_STACKS_MIN`]). Past its stacks, a shard runs handlers
    /// directly ([`crate::AgentStats::stackless_runs`]).
    pub fn for_shard(profile: &Profile, data_shards: usize, max_map_count: u64) -> Self {
        let runtime = &profile.runtime;
        let instances = runtime
            .max_agents
            .saturating_add(runtime.agent_pool_size)
            .max(1);
        let shards = u64::try_from(data_shards.max(1)).unwrap_or(u64::MAX);
        let budget = max_map_count / STACK_SHARE_OF_MAPPINGS / MAPPINGS_PER_STACK / shards;
        let handler_stacks = u32::try_from(budget)
            .unwrap_or(u32::MAX)
            .max(HANDLER_STACKS_MIN)
            .min(instances);
        Self {
            instances,
            handler_stacks,
        }
    }

    /// A pool of `instances`, each with a stack of its own.
    pub fn with_stack_each(instances: u32) -> Self {
        let instances = instances.max(1);
        Self {
            instances,
            handler_stacks: instances,
        }
    }
}

/// `vm.max_map_count`, read once; Linux's default when it cannot be read.
pub fn kernel_max_map_count() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(MAX_MAP_COUNT_DEFAULT)
    })
}

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
    /// The linear memory the module starts with, bytes: an agent whose
    /// memory limit is lower cannot even be instantiated.
    pub initial_memory_bytes: u64,
}

impl CompiledModule {
    /// The source it was compiled from.
    pub fn source(&self) -> &Arc<[u8]> {
        &self.source
    }
}

/// The guard after each pooled linear memory.
const MEMORY_GUARD_BYTES: u64 = 64 << 10;

/// The address space a node's agent pools may reserve in all: half of the
/// 128 TiB a process has on x86-64 and AArch64 (four-level page tables),
/// the rest left to everything else.
pub const POOL_ADDRESS_SPACE_MAX: u64 = 64 << 40;

/// The address space one shard's memory pool reserves with `pools`: every
/// pooled instance's whole memory ceiling and its guard, whatever it uses.
/// Zero without `runtime.wasm.memory_pooling`: memories are then mapped
/// one at a time as instances start.
pub fn pool_reservation_bytes(profile: &Profile, pools: PoolSizes) -> u64 {
    if !profile.runtime.wasm.memory_pooling {
        return 0;
    }
    u64::from(pools.instances).saturating_mul(
        profile
            .runtime
            .max_memory_per_agent
            .bytes()
            .saturating_add(MEMORY_GUARD_BYTES),
    )
}

/// The engine configuration every engine of the node shares (they must agree
/// for a serialized artifact to load). `pools` sizes the pooling allocator
/// of one shard's engine.
pub fn engine_config(profile: &Profile, pools: PoolSizes) -> Result<Config, DeployError> {
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
    config.memory_guard_size(MEMORY_GUARD_BYTES);
    config.memory_reservation_for_growth(0);
    if runtime.wasm.memory_pooling {
        let mut pooling = PoolingAllocationConfig::default();
        pooling.total_core_instances(pools.instances);
        pooling.total_memories(pools.instances);
        pooling.total_tables(pools.instances);
        pooling.max_memory_size(usize::try_from(memory_ceiling).unwrap_or(usize::MAX));
        // Keep a little of each slot's memory mapped between uses, so that
        // re-instantiating a small agent does not fault its pages in again.
        pooling.linear_memory_keep_resident(64 << 10);
        if runtime.wasm.stack_pooling {
            // A stack is taken by each handler in progress as an async call,
            // and kept by its store once it ran sliced. Each is reserved
            // address space (and two mappings), resident only as deep as a
            // handler goes; past the pool, handlers run directly.
            pooling.total_stacks(pools.handler_stacks.max(1));
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
    /// What `check_deadline_ticks` come to (`agents.default_limits.max_execution_time`).
    check_time: caxton_profiles::HumanDuration,
    /// The epoch tick, counted only while a check runs: the check's start
    /// function and ABI call are stopped like a handler would be.
    tick: std::time::Duration,
    cache: VecDeque<CompiledModule>,
    cache_capacity: usize,
    /// Shared by every [`ModuleCheck`] it hands out: see there.
    one_at_a_time: std::sync::Arc<std::sync::Mutex<()>>,
    /// Modules compiled (cache misses).
    pub compilations: u64,
    /// Deploys served from the cache.
    pub cache_hits: u64,
}

impl ModuleCompiler {
    /// A compiler for `profile`'s engine configuration.
    pub fn new(profile: &Profile) -> Result<Self, DeployError> {
        // The compiler never instantiates from its pool beyond the ABI check.
        let engine = Engine::new(&engine_config(profile, PoolSizes::with_stack_each(1))?)
            .map_err(|error| DeployError::Engine(error.to_string()))?;
        let wasm = &profile.runtime.wasm;
        let cache_capacity = if wasm.cache_compiled_modules {
            wasm.module_cache_size as usize
        } else {
            0
        };
        let tick = epoch_tick(profile);
        // The start bound, or the default limit when that is shorter.
        let check_time = profile
            .agents
            .default_limits
            .max_execution_time
            .get()
            .min(crate::START_TIME_MAX);
        let check_deadline_ticks =
            u64::try_from(check_time.as_nanos().div_ceil(tick.as_nanos()).max(1))
                .unwrap_or(u64::MAX);
        Ok(Self {
            engine,
            heap_bytes_max: profile.runtime.agent_heap_size.bytes(),
            check_deadline_ticks,
            check_time: caxton_profiles::HumanDuration(check_time),
            tick,
            cache: VecDeque::new(),
            cache_capacity,
            one_at_a_time: std::sync::Arc::default(),
            compilations: 0,
            cache_hits: 0,
        })
    }

    /// Check and compile `source` (binary or text format): from the cache
    /// when it holds it, else through [`ModuleCheck::compile`].
    pub fn compile(&mut self, source: &[u8]) -> Result<CompiledModule, DeployError> {
        if let Some(cached) = self.cached(source) {
            return Ok(cached);
        }
        let compiled = self.check().compile(source)?;
        self.remember(&compiled, true);
        Ok(compiled)
    }

    /// `source`'s module from the cache, if it holds it (a hit is counted).
    pub fn cached(&mut self, source: &[u8]) -> Option<CompiledModule> {
        let position = self.position_of(digest(source), source)?;
        self.cache_hits += 1;
        // Move to the back: the back is the most recently used.
        let cached = self.cache.remove(position)?;
        self.cache.push_back(cached.clone());
        Some(cached)
    }

    /// What compiles a module for this compiler's engine, to run on any
    /// thread: a large module takes seconds, and the thread that owns the
    /// compiler (the admin endpoint's controller) has other callers.
    pub fn check(&self) -> ModuleCheck {
        ModuleCheck {
            one_at_a_time: std::sync::Arc::clone(&self.one_at_a_time),
            engine: self.engine.clone(),
            heap_bytes_max: self.heap_bytes_max,
            check_deadline_ticks: self.check_deadline_ticks,
            check_time: self.check_time,
            tick: self.tick,
        }
    }

    /// Keep `compiled` in the cache, and count it a compilation when it is
    /// `fresh` (compiled through [`Self::check`], not taken from the cache
    /// by [`Self::cached`], which counted that hit).
    pub fn remember(&mut self, compiled: &CompiledModule, fresh: bool) {
        if fresh {
            self.compilations += 1;
        }
        if self.cache_capacity > 0
            && self
                .position_of(compiled.digest, &compiled.source)
                .is_none()
        {
            if self.cache.len() >= self.cache_capacity {
                self.cache.pop_front();
            }
            self.cache.push_back(compiled.clone());
        }
    }

    /// Where the cache holds the module of `source` (whose digest is
    /// `digest`): a hit must match byte for byte, not just by digest.
    fn position_of(&self, digest: u64, source: &[u8]) -> Option<usize> {
        self.cache
            .iter()
            .position(|cached| cached.digest == digest && *cached.source == *source)
    }
}

/// Compiles and checks modules for one node's engine configuration, on
/// whichever thread calls it ([`ModuleCompiler::check`]).
#[derive(Clone)]
pub struct ModuleCheck {
    /// Held through each compile: the compiler's engine pools one instance
    /// and one stack for the ABI check, and runs one epoch ticker at a time
    /// for it; two checks at once would take each other's instance, or
    /// tick each other's deadline twice as fast. Compiles also take a core
    /// each, and a burst of deploys queues here rather than taking them
    /// all. Not on any shard's path: deploys only.
    one_at_a_time: std::sync::Arc<std::sync::Mutex<()>>,
    engine: Engine,
    heap_bytes_max: u64,
    check_deadline_ticks: u64,
    check_time: caxton_profiles::HumanDuration,
    tick: std::time::Duration,
}

impl ModuleCheck {
    /// Check and compile `source` (binary or text format).
    pub fn compile(&self, source: &[u8]) -> Result<CompiledModule, DeployError> {
        if source.len() > MODULE_BYTES_MAX {
            return Err(DeployError::TooLarge {
                bytes: source.len(),
                limit: MODULE_BYTES_MAX,
            });
        }
        // A compile that panicked left nothing behind the lock to repair.
        let _one = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let digest = digest(source);
        let binary = parse_module_source(source)?;
        // Before compiling: past the pool's memory size wasmtime refuses the
        // module in its own words, which name neither key nor size.
        if let Some(initial_bytes) = declared_memory_minimum(&binary)
            .map(|pages| pages.saturating_mul(64 << 10))
            .filter(|bytes| *bytes > self.heap_bytes_max)
        {
            return Err(DeployError::HeapTooLarge {
                initial_bytes,
                limit: self.heap_bytes_max,
            });
        }
        let module = Module::new(&self.engine, &binary)
            .map_err(|error| DeployError::NotWasm(bounded(&format!("{error:#}"))))?;
        let initial_memory_bytes = check_interface(&module, self.heap_bytes_max)?;
        crate::ticker::ticking_while(&self.engine, self.tick, || {
            crate::host::check_abi_version(
                &self.engine,
                &module,
                self.check_deadline_ticks,
                self.check_time,
            )
        })?;
        let artifact: Arc<[u8]> = module
            .serialize()
            .map_err(|error| DeployError::Engine(error.to_string()))?
            .into();
        Ok(CompiledModule {
            artifact,
            digest,
            source: source.into(),
            initial_memory_bytes,
        })
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

/// The minimum, in pages, of the first memory `binary` defines (its
/// memory section's first entry), read without compiling; `None` when it
/// defines none or the section does not read (compiling says what is wrong).
fn declared_memory_minimum(binary: &[u8]) -> Option<u64> {
    /// An unsigned LEB128 number at `*at`, moving past it.
    fn leb(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    const MEMORY_SECTION: u8 = 5;
    let mut at = 8; // `\0asm` and the version
    while at < binary.len() {
        let id = binary[at];
        at += 1;
        let size = usize::try_from(leb(binary, &mut at)?).ok()?;
        let end = at.checked_add(size)?;
        if id == MEMORY_SECTION {
            let section = binary.get(at..end)?;
            let mut inside = 0;
            if leb(section, &mut inside)? == 0 {
                return None;
            }
            // The limits' flags byte, then the minimum.
            inside += 1;
            return leb(section, &mut inside);
        }
        at = end;
    }
    None
}

/// The exports and imports the ABI requires, checked before anything runs;
/// the memory the module starts with, bytes.
fn check_interface(module: &Module, heap_bytes_max: u64) -> Result<u64, DeployError> {
    let export = |name: &str| module.get_export(name);
    let initial_bytes = match export(abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(memory)) => {
            let initial_bytes = memory.minimum().saturating_mul(64 << 10);
            if initial_bytes > heap_bytes_max {
                return Err(DeployError::HeapTooLarge {
                    initial_bytes,
                    limit: heap_bytes_max,
                });
            }
            initial_bytes
        }
        Some(_) => {
            return Err(DeployError::WrongExport {
                name: abi::EXPORT_MEMORY,
                expected: "a memory",
            })
        }
        None => return Err(DeployError::MissingExport(abi::EXPORT_MEMORY)),
    };
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
    Ok(initial_bytes)
}

/// The binary module of `source`: a WebAssembly binary as it is, WAT text
/// compiled. The error names which it was taken for and quotes at most a
/// little of it: WAT's errors quote the offending line, and a large file
/// on one line (or binary bytes without the `\0asm` header, read as text)
/// would otherwise come back whole.
fn parse_module_source(source: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DeployError> {
    if source.starts_with(b"\0asm") {
        return wat::parse_bytes(source)
            .map_err(|error| DeployError::NotWasm(bounded(&error.to_string())));
    }
    let Ok(text) = std::str::from_utf8(source) else {
        return Err(DeployError::NotWasm(
            "neither a WebAssembly binary (it does not start with the `\\0asm` header) nor WAT text (it is not UTF-8)".into(),
        ));
    };
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(DeployError::NotWasm(
            "neither a WebAssembly binary (it does not start with the `\\0asm` header) nor WAT text (it holds control characters)".into(),
        ));
    }
    wat::parse_bytes(source).map_err(|error| {
        DeployError::NotWasm(bounded(&format!(
            "not a WebAssembly binary (no `\\0asm` header), and as WAT text: {error}"
        )))
    })
}

/// `message` with each line cut to [`LINE_CHARS_MAX`] characters and at most
/// [`LINES_MAX`] lines, marked where cut.
fn bounded(message: &str) -> String {
    const LINE_CHARS_MAX: usize = 160;
    const LINES_MAX: usize = 8;
    let mut lines: Vec<String> = message
        .lines()
        .take(LINES_MAX)
        .map(|line| match line.char_indices().nth(LINE_CHARS_MAX) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_owned(),
        })
        .collect();
    if message.lines().count() > LINES_MAX {
        lines.push("…".to_owned());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(max_agents: u32, pool: u32) -> Profile {
        let mut profile = Profile::default();
        profile.runtime.max_agents = max_agents;
        profile.runtime.agent_pool_size = pool;
        profile
    }

    #[test]
    fn a_shard_gets_a_stack_per_instance_within_its_share_of_the_mapping_limit() {
        // One shard, a thousand instances: a stack each, far within the
        // quarter of 65,530 mappings (8,191 stacks) a node may take.
        let one = PoolSizes::for_shard(&profile(1000, 200), 1, 65_530);
        assert_eq!((one.instances, one.handler_stacks), (1200, 1200));
        // Sixteen shards of 5,100 instances share those 8,191 stacks.
        let sixteen = PoolSizes::for_shard(&profile(5000, 100), 16, 65_530);
        assert_eq!((sixteen.instances, sixteen.handler_stacks), (5100, 511));
        // A raised limit raises every shard's share.
        let raised = PoolSizes::for_shard(&profile(5000, 100), 16, 1 << 20);
        assert_eq!(raised.handler_stacks, 5100);
        // However many shards, each keeps a few; never more than it pools.
        let crowded = PoolSizes::for_shard(&profile(5000, 100), 4096, 65_530);
        assert_eq!(crowded.handler_stacks, HANDLER_STACKS_MIN);
        let tiny = PoolSizes::for_shard(&profile(4, 1), 4096, 65_530);
        assert_eq!((tiny.instances, tiny.handler_stacks), (5, 5));
    }

    #[test]
    fn a_bad_module_is_named_without_quoting_it_whole() {
        let message = |source: &[u8]| match parse_module_source(source) {
            Err(DeployError::NotWasm(message)) => message,
            other => panic!(
                "expected NotWasm, got {:?}",
                other.map(|binary| binary.len())
            ),
        };
        // A megabyte on one line, read as WAT: its error is cut.
        let long = message(&vec![b'x'; 1 << 20]);
        assert!(long.len() < 2_000, "{} bytes", long.len());
        assert!(long.contains('…') && long.contains("\\0asm"), "{long}");
        // Binary garbage that happens to be UTF-8 (NUL bytes) is not
        // parsed as WAT at all.
        let zeros = message(&vec![0u8; 1 << 20]);
        assert!(zeros.contains("control characters"), "{zeros}");
        // Bytes that are neither a binary module nor text.
        let binary = message(&[0xff, 0xfe, 0x00, 0x61]);
        assert!(
            binary.contains("\\0asm") && binary.contains("not UTF-8"),
            "{binary}"
        );
        // A real mistake in WAT still says where.
        let wat = message(b"(module (func (export \"f\") (result i32) (i32.const)))");
        assert!(wat.contains(":1:"), "{wat}");
        // A binary module and WAT text both pass.
        assert!(parse_module_source(b"\0asm\x01\0\0\0").is_ok());
        assert!(parse_module_source(b"(module)").is_ok());
    }

    #[test]
    fn the_mapping_limit_is_read_from_the_kernel() {
        let limit = kernel_max_map_count();
        match std::fs::read_to_string("/proc/sys/vm/max_map_count") {
            Ok(text) => assert_eq!(Some(limit), text.trim().parse().ok()),
            Err(_) => assert_eq!(limit, MAX_MAP_COUNT_DEFAULT),
        }
    }
}
