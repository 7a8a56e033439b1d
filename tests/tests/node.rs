//! Whole nodes booted in-process: shard threads land where the plan says,
//! report what the kernel reads back, and stop cleanly.

use std::time::{Duration, Instant};

use caxton_messaging::Performative;
use caxton_numa::binding::thread_pus;
use caxton_numa::{CpuBinding, MemoryPlacement};
use caxton_shards::{Node, NodeError, ShardRole};
use caxton_tests::{
    deploy_example, example, plan_on_this_machine, thread_alive, thread_name, thread_status,
};

#[test]
fn two_data_shards_run_on_their_planned_cores_and_stop_cleanly() {
    let planned = plan_on_this_machine(&["low-latency"], &["runtime.worker_threads=2"]);
    assert_eq!(planned.plan.data_shards.len(), 2);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    let reports = node.reports().to_vec();
    assert_eq!(reports.len(), 3, "two data shards and the gossip shard");
    let all_pus = planned.topology.all_pus();
    let expected = planned
        .plan
        .data_shards
        .iter()
        .chain([&planned.plan.gossip_shard]);
    for (report, placement) in reports.iter().zip(expected) {
        let read_from_proc = thread_pus(report.tid).expect("read the shard thread's affinity");
        assert_eq!(
            read_from_proc,
            placement.cpu_binding.allowed_pus(&all_pus),
            "{} runs where planned",
            report.role
        );
        assert!(
            matches!(placement.cpu_binding, CpuBinding::Pu(_)),
            "low-latency pins each shard to one PU"
        );
        assert_eq!(
            report.allowed_pus, read_from_proc,
            "{}: its own read-back agrees with /proc",
            report.role
        );
        let (nodes, policy) = report
            .memory_policy
            .clone()
            .expect("memory policy readable");
        assert_eq!(policy, "first_touch", "local_alloc is first-touch");
        assert_eq!(nodes, [placement.numa_node]);
        let name = thread_name(report.tid).expect("thread exists while the node runs");
        // Whole, as profilers label samples with it: not cut by the
        // kernel's 15 bytes into a name another thread shares.
        let expected = match report.role {
            ShardRole::Data(index) => format!("caxton-shard-{index}"),
            ShardRole::Gossip => "caxton-gossip".into(),
        };
        assert_eq!(name.trim_end(), expected);
    }
    assert_eq!(
        reports[0]
            .spin_before_park
            .map(caxton_shards::IdleSpin::window),
        Some(Duration::from_micros(200)),
        "low-latency polls before parking"
    );
    let gossip_spin = |node: &Node| {
        node.reports()
            .iter()
            .find(|report| report.role == ShardRole::Gossip)
            .and_then(|report| report.spin_before_park)
            .map(caxton_shards::IdleSpin::window)
    };
    assert_eq!(
        gossip_spin(&node),
        None,
        "outside a cluster the gossip shard polls no rings"
    );
    let _remote = node.take_remote_port().expect("a free client port");
    assert_eq!(
        gossip_spin(&node),
        Some(Duration::from_micros(200)),
        "driving the remote port, it polls its rings before parking"
    );
    node.shutdown().expect("every shard exits cleanly");
    for report in &reports {
        assert!(!thread_alive(report.tid), "{} was joined", report.role);
    }
}

#[test]
fn parking_profiles_do_not_spin() {
    let planned = plan_on_this_machine(&["default"], &["runtime.worker_threads=2"]);
    let node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    assert!(node
        .reports()
        .iter()
        .all(|report| report.spin_before_park.is_none()));
    node.shutdown().expect("clean stop");
}

/// Wait until thread `tid` is asleep in the kernel and stays so: `S` on
/// reads 20 ms apart with no wake-up between them. Its voluntary switches then.
fn wait_until_asleep(tid: i32, what: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let status = thread_status(tid).expect("the shard thread exists");
        if status.state == 'S' && last == Some(status) {
            return status.voluntary_switches;
        }
        last = (status.state == 'S').then_some(status);
        assert!(
            Instant::now() < deadline,
            "{what}: the idle shard never parked ({status:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_shard_parks_and_a_message_wakes_it() {
    // One profile that parks at once, one that polls first (as high-throughput does too).
    for profile in ["default", "low-latency"] {
        let planned = plan_on_this_machine(&[profile], &["runtime.worker_threads=1"]);
        let mut node = Node::start(&planned.profile, &planned.plan).expect("node boots");
        let echo = deploy_example(&mut node, &planned.profile, "echo");
        let tid = node.reports()[0].tid;
        let mut client = node.client().expect("client");
        for round in 0..3u8 {
            let asleep = wait_until_asleep(tid, profile);
            let answer = client
                .request(echo, vec![round], Duration::from_secs(10))
                .expect("a parked shard wakes for a message");
            assert_eq!(
                (answer.performative, answer.content.as_slice()),
                (Performative::Inform, &[round][..]),
                "{profile}"
            );
            // It ran, and once idle again it blocked again.
            assert!(
                wait_until_asleep(tid, profile) > asleep,
                "{profile}: the shard did not sleep again after serving"
            );
        }
        drop(client);
        node.shutdown().expect("clean stop");
    }
}

/// A polling shard that shares its CPU with a busy thread of someone
/// else's sees its polls come back a scheduler slice late, counts it, and
/// parks instead of polling for a while; it serves throughout. The busy
/// thread is pinned to the shard's PU; the shard polls for a long window
/// after each message, so the scheduler must take the PU from it meanwhile.
#[test]
fn a_polling_shard_that_shares_its_cpu_with_a_busy_thread_notices_and_parks() {
    let planned = plan_on_this_machine(
        &["low-latency"],
        &["runtime.worker_threads=1", "runtime.spin_before_park=200ms"],
    );
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    let echo = deploy_example(&mut node, &planned.profile, "echo");
    let shard_pus = node.reports()[0].allowed_pus.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the busy thread however the test ends: a failed assertion must
    // not leave it spinning on a CPU the tests after it need. It gives up
    // by itself after the test's own deadline, too.
    let _stop_on_drop = SetOnDrop(std::sync::Arc::clone(&stop));
    let busy = {
        let stop = std::sync::Arc::clone(&stop);
        let pu = *shard_pus.first().expect("the shard runs somewhere");
        std::thread::spawn(move || {
            caxton_numa::binding::bind_current_thread(&CpuBinding::Pu(pu))
                .expect("pin the busy thread to the shard's PU");
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(90)
            {
                std::hint::spin_loop();
            }
        })
    };
    let mut client = node.client().expect("client");
    let contended = |node: &Node| {
        node.metrics(false)
            .expect("metrics")
            .iter()
            .map(|metrics| metrics.idle_polls_contended)
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0u32;
    while contended(&node) == 0 {
        assert!(
            Instant::now() < deadline,
            "the shard never noticed the busy thread on its PU"
        );
        let answer = client
            .request(echo, round.to_le_bytes().to_vec(), Duration::from_secs(10))
            .expect("served beside the busy thread");
        assert_eq!(answer.performative, Performative::Inform);
        round += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // Polling is off for a while now; messages are still served.
    for round in 0..5u32 {
        let answer = client
            .request(echo, round.to_le_bytes().to_vec(), Duration::from_secs(10))
            .expect("served while parked between messages");
        assert_eq!(answer.content, round.to_le_bytes());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().expect("the busy thread ends");
    drop(client);
    node.shutdown().expect("clean stop");
}

/// Sets its flag when dropped, on any path out of the scope that holds it.
struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn node_binding_and_memory_policies_are_applied() {
    let planned = plan_on_this_machine(
        &["default"],
        &[
            "runtime.worker_threads=2",
            "runtime.cpu_affinity.enabled=false",
            "runtime.numa.memory_policy=bind",
            "runtime.numa.interleave_memory=true",
        ],
    );
    let node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    let node_pus = &planned.topology.numa_nodes[planned.plan.data_shards[0].numa_node].pus;
    let data = &node.reports()[0];
    assert_eq!(
        &thread_pus(data.tid).expect("affinity"),
        node_pus,
        "bound to its NUMA node's CPUs, not one core"
    );
    assert_eq!(
        data.memory_policy
            .as_ref()
            .map(|(_, policy)| policy.as_str()),
        Ok("bind")
    );
    let gossip = node.reports().last().expect("gossip report");
    assert_eq!(gossip.role, ShardRole::Gossip);
    assert_eq!(
        gossip
            .memory_policy
            .as_ref()
            .map(|(_, policy)| policy.as_str()),
        Ok("interleave")
    );
    assert!(matches!(
        planned.plan.gossip_shard.memory,
        MemoryPlacement::Interleave { .. }
    ));
    node.shutdown().expect("clean stop");
}

#[test]
fn a_stop_from_another_thread_ends_run_until_stopped() {
    let planned = plan_on_this_machine(&["default"], &["runtime.worker_threads=3"]);
    let node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    let stop = node.stop_signal();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        stop.request();
    });
    node.run_until_stopped().expect("clean stop");
    stopper.join().expect("stopper ran");
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "it waited for the stop"
    );
}

#[test]
fn a_shard_that_cannot_start_stops_the_others_and_is_named() {
    let mut planned = plan_on_this_machine(&["default"], &["runtime.worker_threads=3"]);
    // A plan made for a bigger server: no machine has CPU 100000.
    planned.plan.data_shards[1].cpu_binding = CpuBinding::Pu(100_000);
    let error = match Node::start(&planned.profile, &planned.plan) {
        Ok(node) => {
            let _ = node.shutdown();
            panic!("pinning to CPU 100000 must fail");
        }
        Err(error) => error,
    };
    let NodeError::ShardStart { role, reason } = error else {
        panic!("expected a shard start error, got {error}")
    };
    assert_eq!(role, ShardRole::Data(1), "the shard that failed is named");
    assert!(
        reason.contains("100000"),
        "the cause names the CPU: {reason}"
    );
}

#[test]
fn the_high_throughput_profile_boots_sixteen_shards_with_pooled_handler_stacks() {
    // Each shard's engine pools 5,100 instances, and handler stacks within
    // its share of the kernel's mapping limit (caxton_agents::PoolSizes), so
    // many shards stay within that limit.
    let planned = plan_on_this_machine(&["high-throughput"], &["runtime.worker_threads=16"]);
    assert!(planned.profile.runtime.wasm.stack_pooling);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("16 shards boot");
    assert_eq!(node.data_shards(), 16);
    let echo = node
        .deploy(
            "echo",
            &example("echo"),
            16,
            &planned.profile.agents.default_limits,
        )
        .expect("deploys");
    let mut client = node.client().expect("client");
    let answer = client
        .request(echo, b"hi".to_vec(), Duration::from_secs(20))
        .expect("answered");
    assert_eq!(answer.performative, Performative::Inform);
    drop(client);
    node.shutdown().expect("clean stop");
}

/// A shard pools a handler stack for every instance it may host, within
/// its share of the kernel's mapping limit, and wasmtime keeps a store's
/// last stack while the store lives. So many agents on one shard (more
/// than the 128 stacks a shard once had) all run their handlers sliced:
/// none runs without a stack, where it could not yield at a slice's end.
#[test]
fn many_agents_on_one_shard_all_run_sliced() {
    let planned = plan_on_this_machine(&["default"], &["runtime.worker_threads=1"]);
    assert!(planned.profile.runtime.wasm.stack_pooling);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("boots");
    let agents = 200;
    let limits = &planned.profile.agents.default_limits;
    let ids: Vec<_> = (0..agents)
        .map(|index| {
            node.deploy(&format!("echo-{index}"), &example("echo"), 1, limits)
                .expect("deploys")
        })
        .collect();
    let mut client = node.client().expect("client");
    for (index, id) in ids.iter().enumerate() {
        let answer = client
            .request(*id, b"hi".to_vec(), Duration::from_secs(20))
            .expect("answered");
        assert_eq!(
            answer.performative,
            Performative::Inform,
            "echo-{index}: {}",
            String::from_utf8_lossy(&answer.content)
        );
    }
    drop(client);
    for index in 0..agents {
        let stats = node.agent_stats(&format!("echo-{index}")).expect("stats");
        assert_eq!(stats.traps, 0, "echo-{index} trapped");
        assert_eq!(
            stats.stackless_runs, 0,
            "echo-{index} found no handler stack"
        );
    }
    node.shutdown().expect("clean stop");
}

/// A pinned agent (`runtime.cpu_affinity.pinned_agents`, or an
/// `agents.deploy` entry's `cpu_cores`) gets its instances on the shards of
/// its cores only, on a running node; an unpinned one is spread over all.
#[test]
fn pinned_agents_run_only_on_the_shards_of_their_cores() {
    let unpinned = plan_on_this_machine(&["low-latency"], &["runtime.worker_threads=2"]);
    let second_core = unpinned.plan.data_shards[1].home_pu;
    let pin = format!(
        "runtime.cpu_affinity.pinned_agents=[{{agent_id: pinned, cpu_cores: [{second_core}]}}]"
    );
    let deploy = format!(
        "agents.deploy=[{{name: listed, module: examples/agents/echo.wat, cpu_cores: [{second_core}]}}]"
    );
    let planned = plan_on_this_machine(
        &["low-latency"],
        &["runtime.worker_threads=2", &pin, &deploy],
    );
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    let limits = planned.profile.agents.default_limits.clone();
    for name in ["pinned", "listed", "free"] {
        node.deploy(name, &example("echo"), 4, &limits)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let directory = node.directory();
    let placed = |name: &str| {
        let id = directory.resolve(name).expect("deployed");
        directory
            .get(id)
            .expect("record")
            .instances_per_shard
            .clone()
    };
    assert_eq!(placed("pinned"), [0, 4]);
    assert_eq!(placed("listed"), [0, 4]);
    assert_eq!(placed("free"), [2, 2]);
    node.shutdown().expect("stops");
}
