//! The example agents under the agent host: the ABI end to end, limits,
//! fault containment, warm pools, recycling and deploy-time checks.

use std::rc::Rc;
use std::time::Duration;

use caxton_agents::{
    kernel_max_map_count, AgentHost, DeployError, EpochTicker, Handled, Handling, ModuleCompiler,
    Outcome, PoolSizes, StartKind, HANDLER_STACKS_MIN,
};
use caxton_messaging::{Address, AgentId, Envelope, Performative, PriorityClass};
use caxton_profiles::{AgentLimits, ByteSize, HumanDuration, Profile, WarmupStrategy};

const ECHO: AgentId = AgentId(0);
const COUNTER: AgentId = AgentId(1);
const FORWARDER: AgentId = AgentId(2);
const FANOUT: AgentId = AgentId(3);
const FAULTY: AgentId = AgentId(4);
const CLIENT: Address = Address::Client { port: 0, id: 9 };

fn example(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../examples/agents/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn names(name: &str) -> Option<AgentId> {
    match name {
        "echo" => Some(ECHO),
        "counter" => Some(COUNTER),
        "forwarder" => Some(FORWARDER),
        _ => None,
    }
}

fn small_profile() -> Profile {
    let mut profile = Profile::default();
    profile.runtime.max_agents = 16;
    profile.runtime.agent_pool_size = 8;
    profile.runtime.max_memory_per_agent = ByteSize::mib(4);
    profile
}

fn host(profile: &Profile) -> AgentHost {
    let namer = |address: Address| match address {
        Address::Client { id, .. } => format!("client-{id}"),
        _ => "agent".to_owned(),
    };
    AgentHost::new(
        profile,
        0,
        1,
        Rc::new(names),
        Rc::new(namer),
        Rc::new(now_ns),
    )
    .expect("host")
}

/// Nanoseconds on a clock that starts with the test process.
fn now_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Handle `envelope` with agent `id` to its end: a handler that yields at
/// the end of a time slice is resumed until it finishes, as a shard would.
fn run_to_end(host: &mut AgentHost, id: AgentId, envelope: Envelope) -> Option<Handled> {
    match host.handle(id, None, envelope, now_ns()) {
        Handling::Done(handled) => Some(handled),
        Handling::Suspended { .. } => loop {
            let mut finished = None;
            host.resume_suspended(&mut |handled| finished = Some(handled));
            if finished.is_some() {
                return finished;
            }
        },
        Handling::Busy(_) | Handling::NoInstance => None,
    }
}

fn deploy(
    host: &mut AgentHost,
    compiler: &mut ModuleCompiler,
    id: AgentId,
    example_name: &str,
    limits: &AgentLimits,
) {
    let module = compiler.compile(&example(example_name)).expect("compiles");
    host.deploy(id, example_name, &module, 1, limits)
        .expect("deploys");
}

fn request(content: &[u8]) -> Envelope {
    Envelope {
        performative: Performative::Request,
        sender: CLIENT,
        receiver: Address::Agent(ECHO),
        conversation_id: 5,
        reply_with: 77,
        in_reply_to: 0,
        priority: PriorityClass(0),
        deadline_ns: Envelope::NO_DEADLINE,
        sent_at_ns: 0,
        from_participant: 0,
        durability: caxton_messaging::Durability::Transient,
        content: content.to_vec(),
        trace: 0,
    }
}

#[test]
fn echo_answers_with_the_same_content() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    deploy(
        &mut host,
        &mut compiler,
        ECHO,
        "echo",
        &profile.agents.default_limits,
    );
    let handled = run_to_end(&mut host, ECHO, request(b"ping")).expect("hosted");
    assert_eq!(handled.outcome, Outcome::Handled);
    assert_eq!(handled.outbox.len(), 1);
    let answer = &handled.outbox[0];
    assert_eq!(
        (
            answer.receiver,
            answer.performative,
            answer.in_reply_to,
            answer.conversation_id
        ),
        (CLIENT, Performative::Inform, 77, 5)
    );
    assert_eq!(answer.content, b"ping");
}

#[test]
fn counter_keeps_state_and_recycling_resets_it() {
    let mut profile = small_profile();
    profile.runtime.agent_pool.max_reuse_count = 3;
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    deploy(
        &mut host,
        &mut compiler,
        COUNTER,
        "counter",
        &profile.agents.default_limits,
    );
    let counts: Vec<u64> = (0..5)
        .map(|_| {
            let handled = run_to_end(&mut host, COUNTER, request(b"")).expect("hosted");
            u64::from_le_bytes(
                handled.outbox[0]
                    .content
                    .clone()
                    .try_into()
                    .expect("8 bytes"),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [1, 2, 3, 1, 2],
        "a fresh instance after max_reuse_count messages"
    );
    assert_eq!(host.stats(COUNTER).expect("stats").recycled, 1);
}

#[test]
fn forwarder_strips_a_hop_and_keeps_the_original_sender() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    deploy(
        &mut host,
        &mut compiler,
        FORWARDER,
        "forwarder",
        &profile.agents.default_limits,
    );
    let mut route = vec![2u8, 9];
    route.extend_from_slice(b"forwarder");
    route.extend_from_slice(&[4]);
    route.extend_from_slice(b"echo");
    route.extend_from_slice(b"payload");
    let handled = run_to_end(&mut host, FORWARDER, request(&route)).expect("hosted");
    assert_eq!(handled.outcome, Outcome::Handled);
    let forwarded = &handled.outbox[0];
    assert_eq!(forwarded.receiver, Address::Agent(FORWARDER));
    assert_eq!(forwarded.on_behalf_of, Some(CLIENT));
    assert_eq!(
        forwarded.reply_with, 77,
        "the original correlation travels on"
    );
    let mut rest = vec![1u8, 4];
    rest.extend_from_slice(b"echo");
    rest.extend_from_slice(b"payload");
    assert_eq!(forwarded.content, rest);

    let last = run_to_end(&mut host, FORWARDER, request(&[0, b'h', b'i'])).expect("hosted");
    assert_eq!(
        (
            last.outbox[0].performative,
            last.outbox[0].content.as_slice()
        ),
        (Performative::Inform, &b"hi"[..])
    );

    let unknown =
        run_to_end(&mut host, FORWARDER, request(&[1, 3, b'n', b'o', b'p'])).expect("hosted");
    assert_eq!(
        unknown.outcome,
        Outcome::AgentFailed(3),
        "forward to an unknown agent returns an error the agent reports"
    );
}

#[test]
fn fanout_gathers_every_answer_before_replying() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    deploy(
        &mut host,
        &mut compiler,
        FANOUT,
        "fanout",
        &profile.agents.default_limits,
    );
    let mut content = vec![2u8, 4];
    content.extend_from_slice(b"echo");
    content.push(7);
    content.extend_from_slice(b"counter");
    let opened = run_to_end(&mut host, FANOUT, request(&content)).expect("hosted");
    assert_eq!(opened.outcome, Outcome::Handled);
    assert_eq!(opened.outbox.len(), 2);
    let ticket = opened.outbox[0].reply_with;
    assert!(ticket > 0);
    assert_eq!(opened.outbox[1].receiver, Address::Agent(COUNTER));

    let busy = run_to_end(&mut host, FANOUT, request(&content)).expect("hosted");
    assert_eq!(
        busy.outbox[0].performative,
        Performative::Refuse,
        "one gather at a time"
    );

    let answer = |from: AgentId| Envelope {
        performative: Performative::Inform,
        sender: Address::Agent(from),
        in_reply_to: ticket,
        ..request(b"")
    };
    let first = run_to_end(&mut host, FANOUT, answer(ECHO)).expect("hosted");
    assert!(first.outbox.is_empty(), "still waiting for one answer");
    let second = run_to_end(&mut host, FANOUT, answer(COUNTER)).expect("hosted");
    let done = &second.outbox[0];
    assert_eq!(
        (done.receiver, done.performative, done.in_reply_to),
        (CLIENT, Performative::Inform, 77)
    );
    assert_eq!(done.content, 2u32.to_le_bytes());
}

#[test]
fn faults_fail_one_message_and_the_shard_keeps_serving() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    let _ticker = EpochTicker::start(
        vec![host.engine().clone()],
        caxton_agents::epoch_tick(&profile),
    )
    .expect("ticker");
    deploy(
        &mut host,
        &mut compiler,
        ECHO,
        "echo",
        &profile.agents.default_limits,
    );

    let short = AgentLimits {
        max_execution_time: HumanDuration::from_millis(20),
        ..profile.agents.default_limits.clone()
    };
    let small = AgentLimits {
        memory: ByteSize::mib(1),
        ..profile.agents.default_limits.clone()
    };
    for (module, limits, expected) in [
        ("trap", &profile.agents.default_limits, "trap"),
        ("loop", &short, "timeout"),
        ("grow", &small, "memory"),
    ] {
        let compiled = compiler.compile(&example(module)).expect("compiles");
        host.deploy(FAULTY, module, &compiled, 1, limits)
            .expect("deploys");
        for round in 0..2 {
            let handled = run_to_end(&mut host, FAULTY, request(b"x")).expect("hosted");
            let matches = match expected {
                "trap" => matches!(handled.outcome, Outcome::Trapped(_)),
                "timeout" => handled.outcome == Outcome::TimedOut,
                _ => handled.outcome == Outcome::MemoryExceeded,
            };
            assert!(matches, "{module} round {round}: {:?}", handled.outcome);
            assert!(handled.outbox.is_empty());
            let echoed = run_to_end(&mut host, ECHO, request(b"still here")).expect("hosted");
            assert_eq!(
                echoed.outbox[0].content, b"still here",
                "other agents keep serving after {module}"
            );
        }
        let stats = host.stats(FAULTY).expect("stats").clone();
        assert_eq!(
            stats.recycled, 2,
            "{module}: each fault replaced the instance"
        );
        assert_eq!(
            host.instance_count(FAULTY),
            Some(1),
            "{module}: still one instance"
        );
        assert!(host.undeploy(FAULTY));
    }
}

#[test]
fn warm_spares_serve_startups_when_eager() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut eager = host(&profile);
    deploy(
        &mut eager,
        &mut compiler,
        ECHO,
        "echo",
        &profile.agents.default_limits,
    );
    assert_eq!(
        eager.spare_count(ECHO),
        8,
        "the whole pool for the only agent"
    );
    assert_eq!(eager.refill_spares_step(1), 0, "every share is full");
    assert_eq!(
        eager.add_instance(ECHO, false).expect("starts").1,
        StartKind::Warm
    );
    // The spare taken is made again the next time the shard is idle.
    assert_eq!(eager.spare_count(ECHO), 7);
    assert_eq!(eager.refill_spares_step(1), 1);
    assert_eq!(eager.spare_count(ECHO), 8);

    let mut lazy_profile = small_profile();
    lazy_profile.runtime.agent_pool.warmup_strategy = WarmupStrategy::Lazy;
    let mut lazy = host(&lazy_profile);
    deploy(
        &mut lazy,
        &mut compiler,
        ECHO,
        "echo",
        &lazy_profile.agents.default_limits,
    );
    assert_eq!(lazy.spare_count(ECHO), 0);
    assert_eq!(
        lazy.add_instance(ECHO, false).expect("starts").1,
        StartKind::Cold
    );
    lazy.refill_spares();
    assert_eq!(
        lazy.add_instance(ECHO, false).expect("starts").1,
        StartKind::Warm
    );
}

#[test]
fn bad_modules_are_refused_at_deploy_with_the_reason() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let refuse = |compiler: &mut ModuleCompiler, source: &str| {
        compiler.compile(source.as_bytes()).expect_err("refused")
    };
    assert!(matches!(
        refuse(&mut compiler, "this is not wasm"),
        DeployError::NotWasm(_)
    ));
    assert!(matches!(
        compiler
            .compile(&[0, 0x61, 0x73, 0x6d, 9, 9])
            .expect_err("corrupt"),
        DeployError::NotWasm(_)
    ));
    assert_eq!(
        refuse(
            &mut compiler,
            r#"(module (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (i32.const 1)))"#
        ),
        DeployError::MissingExport("caxton_handle")
    );
    assert_eq!(
        refuse(
            &mut compiler,
            r#"(module (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#
        ),
        DeployError::MissingExport("memory")
    );
    assert_eq!(
        refuse(
            &mut compiler,
            r#"(module (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (i32.const 2)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#
        ),
        DeployError::WrongAbiVersion {
            found: 2,
            expected: 1
        }
    );
    assert!(matches!(
        refuse(
            &mut compiler,
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#
        ),
        DeployError::UnknownImport { .. }
    ));
    assert!(matches!(
        refuse(
            &mut compiler,
            r#"(module (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (param i32) (result i32) (i32.const 0)))"#
        ),
        DeployError::WrongExport {
            name: "caxton_handle",
            ..
        }
    ));
    let looping_start = r#"(module (memory (export "memory") 1) (func $spin (loop $l (br $l))) (start $spin) (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#;
    let mut quick = small_profile();
    quick.agents.default_limits.max_execution_time = HumanDuration(Duration::from_millis(20));
    let mut quick_compiler = ModuleCompiler::new(&quick).expect("compiler");
    let looped = quick_compiler
        .compile(looping_start.as_bytes())
        .expect_err("loops at start");
    assert!(
        matches!(&looped, DeployError::StartFailed(text)
            if text.contains("agents.default_limits.max_execution_time") && text.contains("20ms")),
        "{looped}"
    );
    // Under a long default limit, the start bound (50 ms) stops it: a
    // start function runs on the shard's thread and cannot yield.
    let looped = compiler
        .compile(looping_start.as_bytes())
        .expect_err("loops at start");
    assert!(
        matches!(&looped, DeployError::StartFailed(text) if text.contains("ran past 50ms")),
        "{looped}"
    );

    // A host function imported with another signature fails to link, and
    // is said to.
    let wrong_signature = refuse(
        &mut compiler,
        r#"(module (import "caxton" "reply" (func (param i64))) (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#,
    );
    assert!(
        matches!(&wrong_signature, DeployError::WrongImport(_))
            && wrong_signature.to_string().contains("does not link"),
        "{wrong_signature}"
    );
}

#[test]
fn the_module_cache_follows_the_profile() {
    let profile = small_profile();
    let mut cached = ModuleCompiler::new(&profile).expect("compiler");
    cached.compile(&example("echo")).expect("compiles");
    cached.compile(&example("echo")).expect("compiles");
    assert_eq!((cached.compilations, cached.cache_hits), (1, 1));

    let mut uncached_profile = small_profile();
    uncached_profile.runtime.wasm.cache_compiled_modules = false;
    let mut uncached = ModuleCompiler::new(&uncached_profile).expect("compiler");
    uncached.compile(&example("echo")).expect("compiles");
    uncached.compile(&example("echo")).expect("compiles");
    assert_eq!((uncached.compilations, uncached.cache_hits), (2, 0));

    // module_cache_size: the oldest module leaves a full cache.
    for (size, expected) in [(1, (3, 0)), (2, (2, 1))] {
        let mut sized_profile = small_profile();
        sized_profile.runtime.wasm.module_cache_size = size;
        let mut sized = ModuleCompiler::new(&sized_profile).expect("compiler");
        for name in ["echo", "counter", "echo"] {
            sized.compile(&example(name)).expect("compiles");
        }
        assert_eq!(
            (sized.compilations, sized.cache_hits),
            expected,
            "module_cache_size {size}"
        );
        assert_eq!(sized.cache_footprint().0, size as usize);
    }
}

#[test]
fn runtime_keys_shape_the_engine() {
    // agent_heap_size: a module may not start with more memory than this.
    let mut small_heap = small_profile();
    small_heap.runtime.agent_heap_size = ByteSize::kib(64);
    let mut compiler = ModuleCompiler::new(&small_heap).expect("compiler");
    let two_pages = r#"(module (memory (export "memory") 2) (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#;
    assert!(matches!(
        compiler.compile(two_pages.as_bytes()),
        Err(DeployError::HeapTooLarge {
            initial_bytes: 131_072,
            limit: 65_536
        })
    ));
    compiler.compile(&example("echo")).expect("one page fits");
    // A memory past the pool's whole size is named the same way, not in the
    // compiler's words (60,000 pages: 3.7 GiB, over the 64MB ceiling).
    let huge = two_pages.replace("\"memory\") 2)", "\"memory\") 60000)");
    assert!(matches!(
        compiler.compile(huge.as_bytes()),
        Err(DeployError::HeapTooLarge {
            initial_bytes: 3_932_160_000,
            limit: 65_536
        })
    ));

    // memory_pooling: the pool holds max_agents + agent_pool_size instances; on demand has no such bound.
    let mut tiny = small_profile();
    tiny.runtime.max_agents = 2;
    tiny.runtime.agent_pool_size = 0;
    let mut compiler = ModuleCompiler::new(&tiny).expect("compiler");
    let module = compiler.compile(&example("echo")).expect("compiles");
    let mut pooled = host(&tiny);
    pooled
        .deploy(ECHO, "echo", &module, 2, &tiny.agents.default_limits)
        .expect("two fit the pool");
    match pooled.add_instance(ECHO, true) {
        // Said in the profile's words, with the pool's size.
        Err(DeployError::Capacity(message)) => assert!(
            message.contains("instance pool is full (2 instances")
                && message.contains("runtime.max_agents + runtime.agent_pool_size"),
            "{message}"
        ),
        other => panic!("a third does not fit: {other:?}"),
    }
    tiny.runtime.wasm.memory_pooling = false;
    let mut on_demand = host(&tiny);
    on_demand
        .deploy(ECHO, "echo", &module, 2, &tiny.agents.default_limits)
        .expect("deploys");
    on_demand
        .add_instance(ECHO, true)
        .expect("no pool bound without pooling");

    // optimization_level reaches the code generator.
    let mut unoptimized = small_profile();
    unoptimized.runtime.wasm.optimization_level = caxton_profiles::OptimizationLevel::None;
    let fast = ModuleCompiler::new(&small_profile())
        .expect("compiler")
        .compile(&example("fanout"))
        .expect("compiles");
    let slow = ModuleCompiler::new(&unoptimized)
        .expect("compiler")
        .compile(&example("fanout"))
        .expect("compiles");
    assert_ne!(
        fast.artifact, slow.artifact,
        "different code for different optimization levels"
    );

    // jit_enabled: false runs agents on wasmtime's Pulley interpreter.
    let mut interpreted = small_profile();
    interpreted.runtime.wasm.jit_enabled = false;
    let mut compiler = ModuleCompiler::new(&interpreted).expect("compiler");
    let mut interpreter_host = host(&interpreted);
    deploy(
        &mut interpreter_host,
        &mut compiler,
        ECHO,
        "echo",
        &interpreted.agents.default_limits,
    );
    let handled = run_to_end(&mut interpreter_host, ECHO, request(b"interpreted")).expect("hosted");
    assert_eq!(handled.outbox[0].content, b"interpreted");
    // It is Pulley bytecode, not native code: a native engine will not load it.
    let bytecode = compiler.compile(&example("echo")).expect("compiles");
    let mut native_host = host(&small_profile());
    assert!(
        native_host
            .deploy(
                ECHO,
                "echo",
                &bytecode,
                1,
                &small_profile().agents.default_limits
            )
            .is_err(),
        "an interpreter's module runs on the interpreter only"
    );
}

/// Recurses `depth` times (content's first byte × 100) before answering.
const DEEP_AGENT: &str = r#"(module
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $down (param $n i32) (result i32)
    (if (result i32) (i32.eqz (local.get $n))
      (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $down (i32.sub (local.get $n) (i32.const 1)))))))
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (drop (call $down (i32.const 5000)))
    (drop (call $reply (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#;

#[test]
fn agent_stack_size_bounds_recursion() {
    for (stack, expect_trap) in [(ByteSize::kib(16), true), (ByteSize::kib(512), false)] {
        let mut profile = small_profile();
        profile.runtime.agent_stack_size = stack;
        let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
        let mut host = host(&profile);
        let module = compiler.compile(DEEP_AGENT.as_bytes()).expect("compiles");
        host.deploy(ECHO, "deep", &module, 1, &profile.agents.default_limits)
            .expect("deploys");
        let handled = run_to_end(&mut host, ECHO, request(b"")).expect("hosted");
        assert_eq!(
            matches!(handled.outcome, Outcome::Trapped(_)),
            expect_trap,
            "{stack}: {:?}",
            handled.outcome
        );
    }
}

#[test]
fn instances_are_recycled_after_their_age() {
    let mut profile = small_profile();
    profile.runtime.agent_pool.recycle_after = HumanDuration::from_millis(30);
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    // The host's clock is the test's: ages are exact, however busy the machine.
    let clock = Rc::new(std::cell::Cell::new(1_000_000u64));
    let host_clock = Rc::clone(&clock);
    let mut host = AgentHost::new(
        &profile,
        0,
        1,
        Rc::new(names),
        Rc::new(|_| "agent".to_owned()),
        Rc::new(move || host_clock.get()),
    )
    .expect("host");
    deploy(
        &mut host,
        &mut compiler,
        COUNTER,
        "counter",
        &profile.agents.default_limits,
    );
    let count = |host: &mut AgentHost| {
        let Handling::Done(handled) = host.handle(COUNTER, None, request(b""), clock.get()) else {
            panic!("the counter runs to its end at once");
        };
        u64::from_le_bytes(
            handled.outbox[0]
                .content
                .clone()
                .try_into()
                .expect("8 bytes"),
        )
    };
    assert_eq!(count(&mut host), 1);
    clock.set(clock.get() + 29_000_000);
    assert_eq!(count(&mut host), 2, "29 ms old: kept");
    clock.set(clock.get() + 1_000_000);
    assert_eq!(
        count(&mut host),
        1,
        "an instance recycle_after old is replaced"
    );
    assert_eq!(host.stats(COUNTER).expect("stats").recycled, 1);
}

/// The pool's spares are dealt among the agents, not multiplied. An
/// agent's memory is its instances'; its spares are counted apart, since
/// their number follows what the other agents leave of the pool (a deploy
/// beside it must not read as its memory shrinking, nor an undeploy as it
/// growing).
#[test]
fn spares_stay_within_the_pool_and_apart_from_an_agents_memory() {
    let profile = small_profile(); // agent_pool_size 8
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    deploy(
        &mut host,
        &mut compiler,
        ECHO,
        "echo",
        &profile.agents.default_limits,
    );
    let echo = |host: &AgentHost| {
        let counts = host.all_stats();
        let echo = counts
            .iter()
            .find(|counts| counts.id == ECHO)
            .expect("echo is hosted");
        (echo.memory_bytes, echo.spare_memory_bytes)
    };
    assert_eq!(host.spare_count(ECHO), 8);
    let (alone, spares_alone) = echo(&host);
    assert!(alone > 0, "its one instance has a memory");
    assert_eq!(spares_alone, 8 * alone, "eight spares, each as large");
    deploy(
        &mut host,
        &mut compiler,
        COUNTER,
        "counter",
        &profile.agents.default_limits,
    );
    assert_eq!(
        (host.spare_count(ECHO), host.spare_count(COUNTER)),
        (4, 4),
        "the pool is shared, not multiplied"
    );
    let (beside, spares_beside) = echo(&host);
    assert_eq!(
        beside, alone,
        "a neighbour's deploy leaves echo's memory as it was"
    );
    assert_eq!(
        spares_beside,
        4 * alone,
        "half the pool went to the neighbour"
    );
}

#[test]
fn dropping_an_instance_answers_its_open_deferred_replies() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    deploy(
        &mut host,
        &mut compiler,
        FANOUT,
        "fanout",
        &profile.agents.default_limits,
    );
    let mut content = vec![1u8, 4];
    content.extend_from_slice(b"echo");
    let opened = run_to_end(&mut host, FANOUT, request(&content)).expect("hosted");
    assert_eq!(opened.outbox.len(), 1, "the gather is open");
    assert!(host.take_abandoned().is_empty());
    assert!(host.remove_instance(FANOUT));
    let abandoned = host.take_abandoned();
    assert_eq!(abandoned.len(), 1, "the waiting requester is answered");
    assert_eq!(
        (
            abandoned[0].receiver,
            abandoned[0].performative,
            abandoned[0].in_reply_to
        ),
        (CLIENT, Performative::Failure, 77)
    );
    assert_eq!(abandoned[0].content, b"caxton:instance-recycled");
}

#[test]
fn huge_tables_are_refused_not_allocated() {
    let mut profile = small_profile();
    profile.runtime.wasm.memory_pooling = false;
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let huge = r#"(module (table 100000000 funcref) (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#;
    assert!(matches!(
        compiler.compile(huge.as_bytes()),
        Err(DeployError::StartFailed(_))
    ));
}

#[test]
fn a_module_that_loops_in_the_deploy_check_is_stopped_and_refused() {
    let mut profile = small_profile();
    profile.agents.default_limits.max_execution_time = "50ms".parse().expect("a duration");
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    // The engine is ticked only while a check runs: this loop ends only if
    // that ticking happens.
    let looping = r#"(module (memory (export "memory") 1) (func (export "caxton_abi_version") (result i32) (loop (br 0)) (i32.const 1)) (func (export "caxton_handle") (result i32) (i32.const 0)))"#;
    let refused = compiler.compile(looping.as_bytes());
    assert!(
        matches!(&refused, Err(DeployError::StartFailed(reason)) if reason.contains("interrupt")),
        "{refused:?}"
    );
    // And the compiler goes on: the next module is checked and compiled.
    compiler
        .compile(&example("echo"))
        .expect("echo compiles after the loop");
}

#[test]
fn msg_sender_names_the_sender_only_when_asked() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    let module = compiler.compile(&example("who")).expect("compiles");
    host.deploy(ECHO, "who", &module, 1, &profile.agents.default_limits)
        .expect("deploys");
    let handled = run_to_end(&mut host, ECHO, request(b"")).expect("hosted");
    assert_eq!(handled.outbox[0].content, b"client-9");
}

/// Answers at once, unless the first byte of the message is 1: then it is
/// busy for 20 ms of the node clock first.
const SOMETIMES_SLOW: &str = r#"(module
  (import "caxton" "now_ns" (func $now (result i64)))
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $until i64)
    (drop (call $read (i32.const 0) (i32.const 1)))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 1))
      (then
        (local.set $until (i64.add (call $now) (i64.const 20000000)))
        (block $done
          (loop $spin
            (br_if $done (i64.ge_s (call $now) (local.get $until)))
            (br $spin)))))
    (drop (call $reply (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#;

/// A host for `profile` with `sometimes-slow` deployed as `ECHO`, and the
/// epoch ticker that ends its slices.
fn sometimes_slow_host(profile: &Profile) -> (AgentHost, EpochTicker) {
    let mut compiler = ModuleCompiler::new(profile).expect("compiler");
    let mut host = host(profile);
    let ticker = EpochTicker::start(
        vec![host.engine().clone()],
        caxton_agents::epoch_tick(profile),
    )
    .expect("ticker");
    let module = compiler
        .compile(SOMETIMES_SLOW.as_bytes())
        .expect("compiles");
    host.deploy(
        ECHO,
        "sometimes-slow",
        &module,
        1,
        &profile.agents.default_limits,
    )
    .expect("deploys");
    (host, ticker)
}

#[test]
fn quick_agents_run_directly_until_one_handler_runs_long() {
    let profile = small_profile();
    let (mut host, _ticker) = sometimes_slow_host(&profile);
    assert!(!host.runs_directly(ECHO), "a new agent starts sliced");
    // A long handler while sliced yields at its slice's end.
    assert!(matches!(
        host.handle(ECHO, None, request(&[1]), now_ns()),
        Handling::Suspended { .. }
    ));
    run_to_end_of_suspended(&mut host);
    // Quick handlers in a row earn the direct path (each far within its
    // slice, so a loaded machine at most delays it).
    let mut quick = 0;
    while !host.runs_directly(ECHO) {
        run_to_end(&mut host, ECHO, request(&[0])).expect("hosted");
        quick += 1;
        assert!(quick < 10_000, "never earned the direct path");
    }
    assert!(
        quick >= 64,
        "direct only after a run of quick handlers: {quick}"
    );
    // Directly, a long handler cannot yield: it runs to its end in one call,
    // and once the ticker has ended a slice under it (a starved ticker may
    // miss a 20 ms run on a loaded machine), the agent is sliced for good.
    let mut long_runs = 0;
    while host.runs_directly(ECHO) {
        assert!(matches!(
            host.handle(ECHO, None, request(&[1]), now_ns()),
            Handling::Done(_)
        ));
        long_runs += 1;
        assert!(
            long_runs < 20,
            "a 20 ms handler never ran past a 2 ms slice"
        );
    }
    for _ in 0..200 {
        run_to_end(&mut host, ECHO, request(&[0])).expect("hosted");
    }
    assert!(!host.runs_directly(ECHO), "no second chance");
    assert!(matches!(
        host.handle(ECHO, None, request(&[1]), now_ns()),
        Handling::Suspended { .. }
    ));
    run_to_end_of_suspended(&mut host);
}

/// With `runtime.wasm.direct_quick_handlers: false` no run of quick
/// handlers earns the direct path: a long handler after them still yields.
#[test]
fn without_the_direct_path_every_handler_stays_sliced() {
    let mut profile = small_profile();
    profile.runtime.wasm.direct_quick_handlers = false;
    let (mut host, _ticker) = sometimes_slow_host(&profile);
    for _ in 0..200 {
        run_to_end(&mut host, ECHO, request(&[0])).expect("hosted");
    }
    assert!(!host.runs_directly(ECHO), "quick runs earned nothing");
    assert!(matches!(
        host.handle(ECHO, None, request(&[1]), now_ns()),
        Handling::Suspended { .. }
    ));
    run_to_end_of_suspended(&mut host);
}

/// A handler between its slices has its run time so far reported as
/// `running_ns`, and only once it ends in `busy_ns`: a long handler shows
/// in the agent's counters while it runs.
#[test]
fn a_suspended_handlers_run_time_so_far_is_reported() {
    let mut profile = small_profile();
    profile.runtime.wasm.direct_quick_handlers = false;
    let (mut host, _ticker) = sometimes_slow_host(&profile);
    let ran_ns = match host.handle(ECHO, None, request(&[1]), now_ns()) {
        Handling::Suspended { ran_ns, .. } => ran_ns,
        _ => panic!("a 20 ms handler yields at a 2 ms slice's end"),
    };
    let counts = |host: &AgentHost| {
        host.all_stats()
            .into_iter()
            .find(|counts| counts.id == ECHO)
            .expect("echo's counts")
    };
    let suspended = counts(&host);
    assert!(ran_ns > 0);
    assert_eq!(
        suspended.running_ns, ran_ns,
        "the first slice, while suspended"
    );
    assert_eq!(suspended.stats.busy_ns, 0, "nothing has ended yet");
    run_to_end_of_suspended(&mut host);
    let ended = counts(&host);
    assert_eq!(ended.running_ns, 0);
    assert!(
        ended.stats.busy_ns >= ran_ns,
        "the whole run, once ended: {} ns",
        ended.stats.busy_ns
    );
}

/// An instance removed (scaled down) while its handler is suspended
/// finishes that handler as any other ends: the shard hears of its end,
/// with what it sent, and the instance is then dropped, not put back.
#[test]
fn a_handler_whose_instance_is_removed_under_it_still_reports_its_end() {
    let mut profile = small_profile();
    profile.runtime.wasm.direct_quick_handlers = false;
    let (mut host, _ticker) = sometimes_slow_host(&profile);
    assert!(matches!(
        host.handle(ECHO, None, request(&[1]), now_ns()),
        Handling::Suspended { .. }
    ));
    assert!(host.remove_instance(ECHO));
    let mut ended = Vec::new();
    while host.has_suspended() {
        host.resume_suspended(&mut |handled| ended.push(handled));
    }
    assert_eq!(ended.len(), 1, "its end is reported");
    assert!(matches!(ended[0].outcome, Outcome::Handled));
    assert_eq!(ended[0].outbox.len(), 1, "its reply goes out");
    assert!(
        matches!(
            host.handle(ECHO, None, request(&[0]), now_ns()),
            Handling::NoInstance
        ),
        "the instance was dropped, not put back"
    );
}

/// Resume suspended handlers until none is left.
fn run_to_end_of_suspended(host: &mut AgentHost) {
    while host.has_suspended() {
        host.resume_suspended(&mut |_| {});
    }
}

/// An instance keeps the last receiver name it resolved, and finds it
/// again by its bytes; a new directory (`directory_changed`) makes it ask
/// the resolver again, so a name moved to another agent is followed.
#[test]
fn a_resolved_receiver_is_kept_until_the_directory_changes() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let echo_id = Rc::new(std::cell::Cell::new(ECHO));
    let resolver = {
        let echo_id = Rc::clone(&echo_id);
        Rc::new(move |name: &str| match name {
            "echo" => Some(echo_id.get()),
            other => names(other),
        })
    };
    let mut host = AgentHost::new(
        &profile,
        0,
        1,
        resolver,
        Rc::new(|_| "agent".to_owned()),
        Rc::new(now_ns),
    )
    .expect("host");
    deploy(
        &mut host,
        &mut compiler,
        FORWARDER,
        "forwarder",
        &profile.agents.default_limits,
    );
    let forward_to = |host: &mut AgentHost, name: &str| {
        let mut content = vec![1, name.len() as u8];
        content.extend_from_slice(name.as_bytes());
        content.extend_from_slice(b"payload");
        let handled = run_to_end(
            host,
            FORWARDER,
            Envelope {
                receiver: Address::Agent(FORWARDER),
                ..request(&content)
            },
        )
        .expect("hosted");
        assert_eq!(handled.outcome, Outcome::Handled, "forwarding to {name}");
        assert_eq!(handled.outbox.len(), 1, "one message forwarded to {name}");
        handled.outbox[0].receiver
    };
    assert_eq!(forward_to(&mut host, "echo"), Address::Agent(ECHO));
    // Another name is not mistaken for the one kept.
    assert_eq!(forward_to(&mut host, "counter"), Address::Agent(COUNTER));
    assert_eq!(forward_to(&mut host, "echo"), Address::Agent(ECHO));
    // "echo" now names another agent: the kept answer stands until the
    // shard says its directory changed, then the new one is found.
    let moved = AgentId(42);
    echo_id.set(moved);
    assert_eq!(forward_to(&mut host, "echo"), Address::Agent(ECHO));
    host.directory_changed();
    assert_eq!(forward_to(&mut host, "echo"), Address::Agent(moved));
}

/// A shard that shares the node's mapping budget with many others gets
/// fewer handler stacks than it pools instances. wasmtime keeps a store's
/// last stack until the store is dropped, so once every stack is held by
/// an instance that ran sliced, the next agents' handlers run directly:
/// served, and counted, never failed.
#[test]
fn agents_past_the_handler_stacks_are_served_directly() {
    let mut profile = small_profile();
    profile.runtime.max_agents = 40;
    // Enough shards that the budget gives each the fewest stacks.
    let shards = 1_000_000;
    let pools = PoolSizes::for_shard(&profile, shards, kernel_max_map_count());
    assert_eq!(pools.handler_stacks, HANDLER_STACKS_MIN);
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = AgentHost::new(
        &profile,
        0,
        shards,
        Rc::new(names),
        Rc::new(|_| "agent".to_owned()),
        Rc::new(now_ns),
    )
    .expect("host");
    let agents = HANDLER_STACKS_MIN + 8;
    let module = compiler.compile(&example("echo")).expect("compiles");
    for id in 0..agents {
        host.deploy(
            AgentId(100 + id),
            &format!("echo-{id}"),
            &module,
            1,
            &profile.agents.default_limits,
        )
        .expect("deploys");
    }
    for id in 0..agents {
        let handled = run_to_end(&mut host, AgentId(100 + id), request(b"hi")).expect("hosted");
        assert_eq!(handled.outcome, Outcome::Handled, "echo-{id}");
        assert_eq!(handled.outbox[0].content, b"hi", "echo-{id}");
    }
    let stackless: u64 = (0..agents)
        .map(|id| host.stats(AgentId(100 + id)).expect("stats").stackless_runs)
        .sum();
    assert!(
        stackless >= 8,
        "the agents past the stacks ran without one: {stackless} such runs"
    );
}

#[test]
fn the_epoch_tick_is_half_a_slice_within_its_bounds() {
    let tick = |slice: Duration| {
        let mut profile = small_profile();
        profile.runtime.time_slice = HumanDuration(slice);
        caxton_agents::epoch_tick(&profile)
    };
    assert_eq!(tick(Duration::from_micros(500)), Duration::from_micros(250));
    assert_eq!(tick(Duration::from_millis(2)), Duration::from_millis(1));
    // high-throughput's 10 ms slice: 200 wakes a second, not 1,000.
    assert_eq!(tick(Duration::from_millis(10)), Duration::from_millis(5));
    // A long slice keeps ticks fine enough for a short max_execution_time.
    assert_eq!(tick(Duration::from_secs(5)), caxton_agents::EPOCH_TICK_MAX);
    assert_eq!(caxton_agents::EPOCH_TICK_MAX, Duration::from_millis(5));
}

/// Puts 60,000 bytes under the key its message's content names, and fails
/// with the put's code negated when the host refuses it.
const HOARDER: &str = r#"(module
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "state_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $key i32) (local $code i32)
    (local.set $key (call $read (i32.const 0) (i32.const 256)))
    (local.set $code (call $put (i32.const 0) (local.get $key) (i32.const 1024) (i32.const 60000)))
    (i32.sub (i32.const 0) (local.get $code))))"#;

#[test]
fn key_value_state_is_bounded_by_the_agent_memory_limit() {
    let profile = small_profile();
    let mut compiler = ModuleCompiler::new(&profile).expect("compiler");
    let mut host = host(&profile);
    let module = compiler.compile(HOARDER.as_bytes()).expect("compiles");
    let limits = AgentLimits {
        memory: ByteSize::kib(256),
        ..profile.agents.default_limits.clone()
    };
    host.deploy(ECHO, "hoarder", &module, 1, &limits)
        .expect("deploys");
    let outcomes: Vec<Outcome> = (0..6)
        .map(|key| {
            run_to_end(&mut host, ECHO, request(&[b'k', key]))
                .expect("hosted")
                .outcome
        })
        .collect();
    // 256 KiB hold four 60,002-byte entries; the fifth and sixth are refused.
    let state_full = Outcome::AgentFailed(-caxton_agents::abi::errors::STATE_FULL);
    assert_eq!(
        outcomes,
        [
            Outcome::Handled,
            Outcome::Handled,
            Outcome::Handled,
            Outcome::Handled,
            state_full.clone(),
            state_full
        ]
    );
    let counts = host.all_stats();
    assert_eq!(counts[0].state_bytes, 4 * 60_002);
    // Replacing an entry needs no more room than it holds.
    let replaced = run_to_end(&mut host, ECHO, request(&[b'k', 0])).expect("hosted");
    assert_eq!(replaced.outcome, Outcome::Handled);
}
