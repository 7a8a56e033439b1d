//! Helpers shared by the integration tests in `tests/tests/`: load a profile,
//! plan it on this machine, and read a thread's state from `/proc`.

use caxton_numa::{MachineTopology, PlacementPlan};
use caxton_profiles::Profile;

/// A profile, this machine's topology and the plan for both.
pub struct Planned {
    /// The effective profile.
    pub profile: Profile,
    /// This machine.
    pub topology: MachineTopology,
    /// Where the shards go.
    pub plan: PlacementPlan,
}

/// Load `profiles` with `overrides` and plan them on this machine; panics on
/// failure, as a test would.
pub fn plan_on_this_machine(profiles: &[&str], overrides: &[&str]) -> Planned {
    let profiles: Vec<String> = profiles.iter().map(|&name| name.to_owned()).collect();
    let overrides: Vec<String> = overrides.iter().map(|&set| set.to_owned()).collect();
    let profile = caxton_profiles::load(&profiles, &overrides)
        .unwrap_or_else(|error| panic!("{error}"))
        .profile;
    let topology = MachineTopology::discover().unwrap_or_else(|error| panic!("{error}"));
    let plan =
        caxton_numa::plan(&topology, &profile).unwrap_or_else(|violation| panic!("{violation:?}"));
    Planned {
        profile,
        topology,
        plan,
    }
}

/// Boot a node on the default profile with `data_shards` data shards and
/// `overrides` (applied after the shard count); panics on failure.
pub fn boot_default(data_shards: usize, overrides: &[&str]) -> (Planned, caxton_shards::Node) {
    boot_default_with(
        data_shards,
        overrides,
        caxton_shards::NodeOptions::default(),
    )
}

/// [`boot_default`], started with `options`.
pub fn boot_default_with(
    data_shards: usize,
    overrides: &[&str],
    options: caxton_shards::NodeOptions,
) -> (Planned, caxton_shards::Node) {
    let shards = format!("runtime.worker_threads={data_shards}");
    let mut all = vec![shards.as_str()];
    all.extend_from_slice(overrides);
    let planned = plan_on_this_machine(&["default"], &all);
    let node = caxton_shards::Node::start_with(&planned.profile, &planned.plan, options)
        .expect("node boots");
    (planned, node)
}

/// An agent (WAT) that keeps its handler busy for `nanos` of the node clock
/// per message, whatever the CPU, then answers `inform`. A handler entered
/// again while it runs (never allowed, even when suspended at a time slice's
/// end) answers with code 7 instead.
pub fn busy_agent(nanos: u64) -> String {
    format!(
        r#"(module
  (import "caxton" "now_ns" (func $now (result i64)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $until i64)
    (if (i32.load (i32.const 0)) (then (return (i32.const 7))))
    (i32.store (i32.const 0) (i32.const 1))
    (local.set $until (i64.add (call $now) (i64.const {nanos})))
    (block $done
      (loop $spin
        (br_if $done (i64.ge_s (call $now) (local.get $until)))
        (br $spin)))
    (i32.store (i32.const 0) (i32.const 0))
    (drop (call $reply (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#
    )
}

/// The name of thread `tid` of this process, from `/proc`.
pub fn thread_name(tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()
        .map(|name| name.trim().to_owned())
}

/// Whether thread `tid` of this process still exists.
pub fn thread_alive(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// The text of example agent `name` (`examples/agents/NAME.wat`).
pub fn example(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../examples/agents/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Deploy example agent `name` on `node`, one instance, with the limits
/// `profile` gives it.
pub fn deploy_example(
    node: &mut caxton_shards::Node,
    profile: &Profile,
    name: &str,
) -> caxton_messaging::AgentId {
    node.deploy(name, &example(name), 1, &profile.agent_limits(name))
        .unwrap_or_else(|error| panic!("deploy {name}: {error}"))
}

/// What the kernel says of a thread: its scheduling state and how often it
/// gave up the CPU by blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadStatus {
    /// `R` running or runnable, `S` asleep waiting for an event, ...
    pub state: char,
    /// Times the thread blocked (slept) of its own accord.
    pub voluntary_switches: u64,
}

/// The status of thread `tid` of this process, from `/proc`.
pub fn thread_status(tid: i32) -> Option<ThreadStatus> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(ThreadStatus {
        state: field("State")?.chars().next()?,
        voluntary_switches: field("voluntary_ctxt_switches")?.parse().ok()?,
    })
}

/// Two in-process cluster members on the default profile with `overrides`,
/// `b` joined through `a`, and the profile's agent limits for deploys.
pub fn cluster_pair(
    overrides: &[&str],
) -> (
    caxton_bench::cluster::ClusterMember,
    caxton_bench::cluster::ClusterMember,
    caxton_profiles::AgentLimits,
) {
    use caxton_bench::cluster::ClusterMember;
    let planned = plan_on_this_machine(&["default"], overrides);
    let start = |name, seed| {
        ClusterMember::start(&planned.profile, &planned.plan, name, seed).expect("a node")
    };
    let a = start("a", None);
    let b = start("b", Some(a.address));
    (a, b, planned.profile.agents.default_limits.clone())
}

/// [`cluster_pair`] with `b` hosting one `counter` instance, and `a`
/// knowing it does.
pub fn counter_pair(
    overrides: &[&str],
) -> (
    caxton_bench::cluster::ClusterMember,
    caxton_bench::cluster::ClusterMember,
) {
    let (mut a, mut b, limits) = cluster_pair(overrides);
    b.node
        .deploy("counter", &example("counter"), 1, &limits)
        .expect("deploys");
    b.publish().expect("published");
    a.await_remote("counter").expect("listed");
    (a, b)
}

/// The count a `counter` agent answered with (its first 8 bytes, little-endian).
pub fn counter_value(answer: &caxton_messaging::Envelope) -> u64 {
    assert_eq!(
        answer.performative,
        caxton_messaging::Performative::Inform,
        "{answer:?}"
    );
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&answer.content[..8]);
    u64::from_le_bytes(bytes)
}

/// `count` requests of `size` bytes from one client to a `counter` agent
/// named `agent`, all sent before any answer is awaited; the counts it
/// answered, in send order.
pub fn pipelined_counts(
    node: &caxton_shards::Node,
    agent: &str,
    count: usize,
    size: usize,
) -> Vec<u64> {
    let patience = std::time::Duration::from_secs(10);
    let mut client = node.client().expect("client");
    let id = client.resolve(agent).expect("resolvable");
    let tokens: Vec<u64> = (0..count)
        .map(|_| {
            client
                .send(
                    id,
                    caxton_messaging::Performative::Request,
                    vec![7; size],
                    caxton_shards::SendOptions::default(),
                )
                .expect("sent")
        })
        .collect();
    tokens
        .into_iter()
        .map(|token| counter_value(&client.await_reply(token, patience).expect("answered")))
        .collect()
}
