//! Agents and messages through whole nodes: request-reply, local and
//! cross-shard routing, ordering, faults, backpressure and deadlines.

use std::time::Duration;

use caxton_messaging::{Performative, PriorityClass};
use caxton_profiles::{AgentLimits, ByteSize, HumanDuration};
use caxton_shards::{Node, NodeError, SendError, SendOptions, FAILURE_PREFIX};
use caxton_tests::{busy_agent, example, plan_on_this_machine, Planned};
use proptest::prelude::*;

const PATIENCE: Duration = Duration::from_secs(10);

fn boot(overrides: &[&str]) -> (Planned, Node) {
    caxton_tests::boot_default(2, overrides)
}

fn limits(planned: &Planned) -> AgentLimits {
    planned.profile.agents.default_limits.clone()
}

fn failure_reason(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    text.strip_prefix(FAILURE_PREFIX)
        .unwrap_or_else(|| panic!("not an engine failure: {text}"))
        .to_owned()
}

#[test]
fn echo_answers_a_client_request() {
    let (planned, mut node) = boot(&[]);
    let echo = node
        .deploy("echo", &example("echo"), 2, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    let answer = client
        .request(echo, b"hello".to_vec(), PATIENCE)
        .expect("answered");
    assert_eq!(answer.performative, Performative::Inform);
    assert_eq!(answer.content, b"hello");
    assert_eq!(
        node.directory()
            .get(echo)
            .expect("listed")
            .instances_per_shard,
        [1, 1]
    );
    drop(client);
    node.shutdown().expect("clean stop");
}

/// An answer to an engine `failure` goes nowhere: the failure's sender is
/// the receiver that could not take a message, and it sent nothing. An
/// agent that answers every message (echo) would otherwise answer the
/// failure about an agent undeployed meanwhile, be answered
/// `caxton:unknown-agent` again, and so on for ever. A `failure` an agent
/// or client sends itself is answered as any message.
#[test]
fn an_answer_to_an_engine_failure_goes_nowhere() {
    let (planned, mut node) = boot(&[]);
    let echo = node
        .deploy("echo", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    let undeliverable = |node: &Node| -> u64 {
        node.metrics(false)
            .expect("metrics")
            .iter()
            .map(|shard| shard.undeliverable)
            .sum()
    };
    let before = undeliverable(&node);
    let engine_failure = client
        .send(
            echo,
            Performative::Failure,
            format!("{FAILURE_PREFIX}unknown-agent").into_bytes(),
            SendOptions::default(),
        )
        .expect("sent");
    let dropped_by = std::time::Instant::now() + PATIENCE;
    while undeliverable(&node) == before {
        assert!(
            std::time::Instant::now() < dropped_by,
            "echo's answer to the failure was never dropped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        client
            .await_reply(engine_failure, Duration::from_millis(100))
            .is_err(),
        "the answer to an engine failure reached its sender"
    );
    let own_failure = client
        .send(
            echo,
            Performative::Failure,
            b"mine".to_vec(),
            SendOptions::default(),
        )
        .expect("sent");
    let answer = client.await_reply(own_failure, PATIENCE).expect("answered");
    assert_eq!(answer.content, b"mine");
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn a_pipeline_crosses_shards_and_answers_the_original_sender() {
    let (planned, mut node) = boot(&[]);
    // One instance each: the directory places them on different shards.
    let forwarder = node
        .deploy("forwarder", &example("forwarder"), 1, &limits(&planned))
        .expect("deploys");
    let echo = node
        .deploy("echo", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    let directory = node.directory();
    let forwarder_shard = directory
        .get(forwarder)
        .expect("listed")
        .hosting_shards()
        .next();
    let echo_shard = directory.get(echo).expect("listed").hosting_shards().next();
    assert_ne!(
        forwarder_shard, echo_shard,
        "the pipeline must cross shards"
    );
    node.metrics(true).expect("reset");

    let mut route = vec![2u8, 9];
    route.extend_from_slice(b"forwarder");
    route.push(9);
    route.extend_from_slice(b"forwarder");
    route.extend_from_slice(b"payload");
    let mut client = node.client().expect("client");
    let answer = client
        .request(forwarder, route, PATIENCE)
        .expect("answered");
    assert_eq!(
        (answer.performative, answer.content.as_slice()),
        (Performative::Inform, &b"payload"[..])
    );

    let mut to_echo = vec![1u8, 4];
    to_echo.extend_from_slice(b"echo");
    to_echo.extend_from_slice(b"across");
    let answer = client
        .request(forwarder, to_echo, PATIENCE)
        .expect("answered");
    // The forwarder passes on the rest of the route (no hops left) and the payload.
    assert_eq!(
        answer.content, b"\0across",
        "echo on the other shard answered the client directly"
    );
    let metrics = node.metrics(false).expect("metrics");
    let echo_metrics = &metrics[echo_shard.expect("hosted")];
    assert!(
        !echo_metrics.routing_cross_ns.is_empty(),
        "the forwarded message crossed shards"
    );
    let forwarder_metrics = &metrics[forwarder_shard.expect("hosted")];
    assert!(
        !forwarder_metrics.routing_local_ns.is_empty(),
        "forwarder-to-forwarder stayed local"
    );
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn fanout_gathers_answers_from_agents_on_every_shard() {
    let (planned, mut node) = boot(&[]);
    node.deploy("echo", &example("echo"), 2, &limits(&planned))
        .expect("deploys");
    node.deploy("counter", &example("counter"), 1, &limits(&planned))
        .expect("deploys");
    let fanout = node
        .deploy("fanout", &example("fanout"), 1, &limits(&planned))
        .expect("deploys");
    let mut content = vec![2u8, 4];
    content.extend_from_slice(b"echo");
    content.push(7);
    content.extend_from_slice(b"counter");
    let mut client = node.client().expect("client");
    let answer = client.request(fanout, content, PATIENCE).expect("answered");
    assert_eq!(answer.content, 2u32.to_le_bytes());
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn faults_answer_failure_and_the_node_keeps_serving() {
    let (planned, mut node) = boot(&[]);
    let echo = node
        .deploy("echo", &example("echo"), 2, &limits(&planned))
        .expect("deploys");
    let quick = AgentLimits {
        max_execution_time: HumanDuration::from_millis(30),
        ..limits(&planned)
    };
    let small = AgentLimits {
        memory: ByteSize::mib(1),
        ..limits(&planned)
    };
    let trap = node
        .deploy("trap", &example("trap"), 1, &limits(&planned))
        .expect("deploys");
    let looping = node
        .deploy("loop", &example("loop"), 1, &quick)
        .expect("deploys");
    let grow = node
        .deploy("grow", &example("grow"), 1, &small)
        .expect("deploys");
    let mut client = node.client().expect("client");
    for (agent, expected) in [
        (trap, "trap:"),
        (looping, "execution-time"),
        (grow, "memory-limit"),
    ] {
        let answer = client
            .request(agent, b"x".to_vec(), PATIENCE)
            .expect("answered");
        assert_eq!(answer.performative, Performative::Failure);
        assert!(
            failure_reason(&answer.content).starts_with(expected),
            "{expected}: {}",
            failure_reason(&answer.content)
        );
        let echoed = client
            .request(echo, b"alive".to_vec(), PATIENCE)
            .expect("echo still serves");
        assert_eq!(echoed.content, b"alive");
    }
    assert_eq!(node.agent_stats("trap").expect("stats").traps, 1);
    assert_eq!(node.agent_stats("loop").expect("stats").timeouts, 1);
    assert_eq!(node.agent_stats("grow").expect("stats").memory_faults, 1);
    let total_faults: u64 = node
        .metrics(false)
        .expect("metrics")
        .iter()
        .map(|shard| shard.faults)
        .sum();
    assert_eq!(total_faults, 3);
    drop(client);
    node.shutdown().expect("clean stop");
}

/// A millisecond per message.
fn slow_agent() -> String {
    busy_agent(1_000_000)
}

#[test]
fn a_flood_is_refused_explicitly_and_the_agent_recovers() {
    let (planned, mut node) = boot(&["messaging.queue_size=64", "messaging.delivery_timeout=60s"]);
    let slow = node
        .deploy("slow", slow_agent().as_bytes(), 1, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    let flood = 2_000;
    let mut refused_at_send = 0;
    let mut accepted = 0;
    for _ in 0..flood {
        match client.send(
            slow,
            Performative::Request,
            Vec::new(),
            SendOptions::default(),
        ) {
            Ok(_) => accepted += 1,
            Err(SendError::Refused(_)) => refused_at_send += 1,
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    // A client that reads late: more answers than its ring holds are ready
    // before it reads, and none of them may be lost for that.
    std::thread::sleep(Duration::from_millis(300));
    let (mut answered, mut refused_by_shard) = (0, 0);
    while answered + refused_by_shard < accepted {
        let envelope = client
            .recv(PATIENCE)
            .expect("every accepted send is answered");
        match envelope.performative {
            Performative::Inform => answered += 1,
            Performative::Failure => {
                assert_eq!(failure_reason(&envelope.content), "refused:queue-full");
                refused_by_shard += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        refused_at_send + refused_by_shard > 0,
        "a flood past the bounds is refused"
    );
    assert_eq!(
        answered + refused_by_shard + refused_at_send,
        flood,
        "nothing is lost silently"
    );
    let metrics = node.metrics(false).expect("metrics");
    assert_eq!(
        metrics.iter().map(|shard| shard.refused).sum::<u64>(),
        refused_by_shard as u64
    );
    assert!(
        metrics.iter().all(|shard| shard.queue_depth == 0),
        "the backlog drained"
    );
    let after = client
        .request(slow, Vec::new(), PATIENCE)
        .expect("serves after the flood");
    assert_eq!(after.performative, Performative::Inform);
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn deadlines_that_pass_in_the_queue_are_answered_with_failure() {
    let (planned, mut node) = boot(&["messaging.priority_routing.enabled=true"]);
    let slow = node
        .deploy("slow", slow_agent().as_bytes(), 1, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    // A backlog, then messages that must start within a millisecond.
    for _ in 0..20 {
        client
            .send(
                slow,
                Performative::Request,
                Vec::new(),
                SendOptions::default(),
            )
            .expect("accepted");
    }
    let urgent = SendOptions {
        deadline: Some(Duration::from_micros(1)),
        priority: PriorityClass(3),
        ..SendOptions::default()
    };
    let token = client
        .send(slow, Performative::Request, Vec::new(), urgent)
        .expect("accepted");
    let answer = client.await_reply(token, PATIENCE).expect("answered");
    assert_eq!(answer.performative, Performative::Failure);
    assert_eq!(failure_reason(&answer.content), "timeout");
    let timeouts: u64 = node
        .metrics(false)
        .expect("metrics")
        .iter()
        .map(|shard| shard.timeouts)
        .sum();
    assert!(timeouts >= 1);
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn bad_modules_and_bad_deploys_are_refused() {
    let (planned, mut node) = boot(&[]);
    let error = node
        .deploy("junk", b"not wasm at all", 1, &limits(&planned))
        .expect_err("refused");
    assert!(matches!(error, NodeError::Deploy { .. }), "{error}");
    assert!(error.to_string().contains("junk"), "{error}");
    node.deploy("echo", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    assert!(matches!(
        node.deploy("echo", &example("echo"), 1, &limits(&planned)),
        Err(NodeError::Refused(_))
    ));
    node.undeploy("echo").expect("undeploys");
    assert!(matches!(
        node.undeploy("echo"),
        Err(NodeError::UnknownAgent(_))
    ));
    let mut client = node.client().expect("client");
    assert!(matches!(
        client.resolve("echo"),
        Err(SendError::UnknownAgent(_))
    ));
    drop(client);
    node.shutdown().expect("clean stop");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Every message reaches an echo instance exactly once, and one sender's
    /// messages keep their order within a priority class.
    #[test]
    fn routing_is_exactly_once_and_ordered_per_sender_and_class(
        classes in proptest::collection::vec(0u8..4, 1..120),
        instances in 1u16..4,
    ) {
        // Classes with room to wait: this checks order and delivery, not latency.
        let (planned, mut node) = boot(&[
            "messaging.priority_routing.enabled=true",
            "messaging.priority_routing.queues=[{name: critical, priority: 0, max_latency: 60s}, {name: high, priority: 1, max_latency: 60s}, {name: normal, priority: 2, max_latency: 60s}, {name: low, priority: 3, max_latency: 60s}]",
            "messaging.delivery_timeout=60s",
        ]);
        let echo = node.deploy("echo", &example("echo"), instances, &limits(&planned)).expect("deploys");
        let mut client = node.client().expect("client");
        for (sequence, class) in classes.iter().enumerate() {
            let options = SendOptions { priority: PriorityClass(*class), ..SendOptions::default() };
            client.send(echo, Performative::Request, (sequence as u32).to_le_bytes().to_vec(), options).expect("accepted");
        }
        let mut seen = vec![0u32; classes.len()];
        let mut last_per_class = [None::<u32>; 4];
        for _ in 0..classes.len() {
            let answer = client.recv(PATIENCE).expect("answered");
            prop_assert_eq!(answer.performative, Performative::Inform, "{}", String::from_utf8_lossy(&answer.content));
            let sequence = u32::from_le_bytes(answer.content.clone().try_into().expect("4 bytes"));
            seen[sequence as usize] += 1;
            let class = classes[sequence as usize] as usize;
            if let Some(previous) = last_per_class[class] {
                prop_assert!(sequence > previous, "class {} out of order: {} after {}", class, sequence, previous);
            }
            last_per_class[class] = Some(sequence);
        }
        prop_assert!(seen.iter().all(|&count| count == 1), "exactly once: {:?}", seen);
        prop_assert!(client.recv(Duration::from_millis(20)).is_none(), "no duplicates");
        drop(client);
        node.shutdown().expect("clean stop");
    }
}

/// With priority classes an urgent message overtakes a backlog, even one
/// still waiting in the ring: the shard takes whatever its mailbox has room
/// for, not one batch (`batch_size: 1` here, as on `low-latency`).
#[test]
fn an_urgent_message_overtakes_a_backlog_still_in_the_ring() {
    let (planned, mut node) = boot(&[
        "runtime.worker_threads=1",
        "messaging.batch_size=1",
        "messaging.priority_routing.enabled=true",
        "messaging.priority_routing.queues=[{name: critical, priority: 0, max_latency: 60s}, {name: low, priority: 1, max_latency: 60s}]",
        "messaging.delivery_timeout=60s",
    ]);
    let slow = node
        .deploy(
            "slow",
            busy_agent(1_000_000).as_bytes(),
            1,
            &limits(&planned),
        )
        .expect("deploys");
    let mut client = node.client().expect("client");
    let class = |priority| SendOptions {
        priority: PriorityClass(priority),
        ..SendOptions::default()
    };
    for _ in 0..60 {
        client
            .send(slow, Performative::Request, Vec::new(), class(1))
            .expect("accepted");
    }
    let urgent = client
        .send(slow, Performative::Request, Vec::new(), class(0))
        .expect("accepted");
    let position = (0..61)
        .position(|_| client.recv(PATIENCE).expect("answered").in_reply_to == urgent)
        .expect("the urgent message was answered");
    // 60 ms of backlog: the urgent one runs within the first few, not last.
    assert!(position < 10, "answered {position}th of 61");
    drop(client);
    node.shutdown().expect("clean stop");
}

/// Busy for a second: while it runs, everything the test sends next is
/// queued in the shard's ring, so it all reaches the mailbox together.
fn gate_agent() -> String {
    busy_agent(1_000_000_000)
}

/// Where the echo answer lands among the answers to a backlog of slow requests
/// sent just before it, with `lanes` mailbox lanes (0: first answer after the gate's).
fn echo_position_behind_backlog(lanes: u32) -> usize {
    let parallel = format!("messaging.parallel_routes={lanes}");
    let planned = plan_on_this_machine(
        &["default"],
        &[
            "runtime.worker_threads=1",
            &parallel,
            "messaging.delivery_timeout=60s",
            // The gate must hold the shard while the backlog queues: handlers
            // run to completion, not in time slices.
            "runtime.wasm.stack_pooling=false",
        ],
    );
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node boots");
    let limits = AgentLimits {
        max_execution_time: HumanDuration::from_secs(30),
        ..planned.profile.agents.default_limits.clone()
    };
    // Ids 0 and 2 share lane 0 with two lanes; echo (id 1) has lane 1.
    let slow = node
        .deploy("slow", slow_agent().as_bytes(), 1, &limits)
        .expect("deploys");
    let echo = node
        .deploy("echo", &example("echo"), 1, &limits)
        .expect("deploys");
    let gate = node
        .deploy("gate", gate_agent().as_bytes(), 1, &limits)
        .expect("deploys");
    let mut client = node.client().expect("client");
    let gate_token = client
        .send(
            gate,
            Performative::Request,
            Vec::new(),
            SendOptions::default(),
        )
        .expect("accepted");
    // Let the shard take the gate alone and start it; the backlog then
    // queues behind it and reaches the mailbox in one drain.
    std::thread::sleep(Duration::from_millis(100));
    let backlog = 20;
    for _ in 0..backlog {
        client
            .send(
                slow,
                Performative::Request,
                Vec::new(),
                SendOptions::default(),
            )
            .expect("accepted");
    }
    let token = client
        .send(
            echo,
            Performative::Request,
            b"quick".to_vec(),
            SendOptions::default(),
        )
        .expect("accepted");
    assert_eq!(
        client
            .recv(PATIENCE)
            .expect("the gate answers first")
            .in_reply_to,
        gate_token
    );
    let mut position = None;
    for index in 0..=backlog {
        let answer = client.recv(PATIENCE).expect("answered");
        if answer.in_reply_to == token {
            position = Some(index);
        }
    }
    drop(client);
    node.shutdown().expect("clean stop");
    position.expect("echo answered")
}

#[test]
fn parallel_routes_keep_one_agents_backlog_from_delaying_another() {
    assert_eq!(
        echo_position_behind_backlog(1),
        20,
        "one lane: echo waits behind the whole backlog"
    );
    assert!(
        echo_position_behind_backlog(2) <= 1,
        "two lanes: echo is served in turn with the backlog"
    );
}

#[test]
fn misaddressed_messages_are_answered_not_fatal() {
    use caxton_messaging::{Address, AgentId, Envelope, InstanceId};
    let (planned, mut node) = boot(&[]);
    let echo = node
        .deploy("echo", &example("echo"), 2, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    let envelope = |receiver| Envelope {
        performative: Performative::Request,
        sender: client_address_placeholder(),
        receiver,
        conversation_id: 0,
        reply_with: 42,
        in_reply_to: 0,
        priority: PriorityClass(0),
        deadline_ns: Envelope::NO_DEADLINE,
        sent_at_ns: 0,
        from_participant: 0,
        durability: caxton_messaging::Durability::Transient,
        content: Vec::new(),
        trace: 0,
    };
    let nowhere = Address::Instance(InstanceId {
        agent: AgentId(0),
        shard: 999,
        slot: 0,
    });
    assert_eq!(
        client.send_envelope(envelope(nowhere)),
        Err(SendError::NoInstance)
    );
    // A "client" address that is really a data shard: the shard answers failure.
    client
        .send_envelope(envelope(Address::Client { port: 0, id: 0 }))
        .expect("accepted");
    let answer = client.await_reply(42, PATIENCE).expect("answered");
    assert_eq!(
        (answer.performative, failure_reason(&answer.content)),
        (Performative::Failure, "unknown-agent".to_owned())
    );
    // An instance slot that does not exist is not silently replaced by another instance.
    let shard = node
        .directory()
        .get(echo)
        .expect("listed")
        .hosting_shards()
        .next()
        .expect("hosted") as u16;
    let stray = Address::Instance(InstanceId {
        agent: echo,
        shard,
        slot: 77,
    });
    client.send_envelope(envelope(stray)).expect("accepted");
    let answer = client.await_reply(42, PATIENCE).expect("answered");
    assert_eq!(
        (answer.performative, failure_reason(&answer.content)),
        (Performative::Failure, "unknown-agent".to_owned())
    );
    let existing = Address::Instance(InstanceId {
        agent: echo,
        shard,
        slot: 0,
    });
    client.send_envelope(envelope(existing)).expect("accepted");
    assert_eq!(
        client
            .await_reply(42, PATIENCE)
            .expect("answered")
            .performative,
        Performative::Inform
    );
    let echoed = client
        .request(echo, b"still fine".to_vec(), PATIENCE)
        .expect("echo serves");
    assert_eq!(echoed.content, b"still fine");
    drop(client);
    node.shutdown().expect("clean stop");
}

/// `send_envelope` overwrites the sender; any address will do here.
fn client_address_placeholder() -> caxton_messaging::Address {
    caxton_messaging::Address::Agent(caxton_messaging::AgentId(u32::MAX))
}

#[test]
fn max_agents_bounds_deploys() {
    let (planned, mut node) = boot(&["runtime.max_agents=2", "runtime.agent_pool_size=2"]);
    node.deploy("one", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    node.deploy("two", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    let refused = node
        .deploy("three", &example("echo"), 1, &limits(&planned))
        .expect_err("over max_agents");
    assert!(
        refused.to_string().contains("runtime.max_agents"),
        "{refused}"
    );
    node.undeploy("one").expect("undeploys");
    node.deploy("three", &example("echo"), 1, &limits(&planned))
        .expect("room again");
    node.shutdown().expect("clean stop");
}

#[test]
fn the_engine_library_refuses_names_the_api_would_refuse() {
    let (planned, mut node) = boot(&[]);
    for bad in ["", "has space", "a/b", &"n".repeat(65)] {
        let refused = node
            .deploy(bad, &example("echo"), 1, &limits(&planned))
            .expect_err("a bad name");
        assert!(
            refused.to_string().contains("is not an agent name"),
            "{refused}"
        );
    }
    assert!(node.directory().is_empty(), "nothing was deployed");
    node.deploy(&"n".repeat(64), &example("echo"), 1, &limits(&planned))
        .expect("64 bytes is allowed");
    node.shutdown().expect("clean stop");
}

/// Busy for a millisecond of the node clock, then answers with its content
/// (so order can be checked).
const SLOW_ECHO: &str = r#"(module
  (import "caxton" "now_ns" (func $now (result i64)))
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $until i64) (local $length i32)
    (local.set $until (i64.add (call $now) (i64.const 1000000)))
    (block $done
      (loop $spin
        (br_if $done (i64.ge_s (call $now) (local.get $until)))
        (br $spin)))
    (local.set $length (call $read (i32.const 64) (i32.const 64)))
    (drop (call $reply (i32.const 1) (i32.const 64) (local.get $length)))
    (i32.const 0)))"#;

/// Messages held for the CPU budget while `messages` go through an agent with `shares`.
fn throttled_with_shares(shares: &str) -> u64 {
    let (planned, mut node) = boot(&["runtime.worker_threads=1", "messaging.delivery_timeout=60s"]);
    let limits = AgentLimits {
        cpu_shares: shares.parse().expect("share"),
        ..limits(&planned)
    };
    let slow = node
        .deploy("slow", SLOW_ECHO.as_bytes(), 1, &limits)
        .expect("deploys");
    let mut client = node.client().expect("client");
    let messages = 12u8;
    for sequence in 0..messages {
        client
            .send(
                slow,
                Performative::Request,
                vec![sequence],
                SendOptions::default(),
            )
            .expect("accepted");
    }
    for expected in 0..messages {
        let answer = client
            .recv(PATIENCE)
            .expect("every message is handled, throttled or not");
        assert_eq!(answer.content, [expected], "order holds through throttling");
    }
    let throttled = node
        .metrics(false)
        .expect("metrics")
        .iter()
        .map(|shard| shard.throttled)
        .sum();
    drop(client);
    node.shutdown().expect("clean stop");
    throttled
}

#[test]
fn cpu_shares_hold_an_agent_to_its_fraction_of_a_core() {
    assert!(
        throttled_with_shares("10m") > 0,
        "a hundredth of a core cannot run twelve slow handlers in one window"
    );
    assert_eq!(
        throttled_with_shares("1000m"),
        0,
        "a whole core is never held"
    );
}

/// A handler that runs long is held to its agent's share too: past the
/// share it pauses until the next window, rather than running on at a
/// whole core. A loop with 200 ms of run time at 100m (10 ms a 100 ms
/// window) takes about two seconds; at a whole core, 200 ms. (A lower
/// bound on wall time: a slow machine cannot make it pass wrongly.)
#[test]
fn a_long_handler_pauses_at_its_agents_cpu_share() {
    let (planned, mut node) = boot(&["runtime.worker_threads=1"]);
    let shared = AgentLimits {
        cpu_shares: "100m".parse().expect("share"),
        max_execution_time: HumanDuration(Duration::from_millis(200)),
        ..limits(&planned)
    };
    let spin = node
        .deploy("spin", &example("loop"), 1, &shared)
        .expect("deploys");
    let echo = node
        .deploy("echo", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    let started = std::time::Instant::now();
    let token = client
        .send(
            spin,
            Performative::Request,
            b"go".to_vec(),
            SendOptions::default(),
        )
        .expect("sent");
    // Its neighbour is served meanwhile.
    let echoed = client
        .request(echo, b"still here".to_vec(), PATIENCE)
        .expect("answered");
    assert_eq!(echoed.content, b"still here");
    let answer = client.await_reply(token, PATIENCE).expect("answered");
    assert_eq!(failure_reason(&answer.content), "execution-time");
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "200 ms of run time at 100m ended after {:?}",
        started.elapsed()
    );
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn client_ports_bound_the_clients_connected_at_once() {
    let (_, node) = boot(&[]);
    assert_eq!(node.client_ports(), 2 + caxton_shards::CLIENT_PORTS_SPARE);
    node.shutdown().expect("clean stop");
    let (_, node) = boot(&["runtime.client_ports=2"]);
    assert_eq!(node.client_ports(), 2);
    let first = node.client().expect("one");
    let _second = node.client().expect("two");
    let Err(refused) = node.client() else {
        panic!("a third client got a port");
    };
    assert!(
        refused.to_string().contains("runtime.client_ports"),
        "{refused}"
    );
    drop(first);
    let _again = node.client().expect("a returned port serves again");
    node.shutdown().expect("clean stop");
}

#[test]
fn a_spinning_client_takes_its_answers_without_parking() {
    for (spin, parks_expected) in [(None, true), (Some("10s"), false)] {
        let overrides: Vec<String> = spin
            .map(|spin| format!("runtime.client_spin_before_park={spin}"))
            .into_iter()
            .collect();
        let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let (planned, mut node) = boot(&overrides);
        let echo = node
            .deploy("echo", &example("echo"), 1, &limits(&planned))
            .expect("deploys");
        let mut client = node.client().expect("client");
        for _ in 0..50 {
            client
                .request(echo, b"ping".to_vec(), PATIENCE)
                .expect("answered");
        }
        // Without a spin, a client parks while the shard wakes and answers;
        // with one longer than any answer takes, it never has to.
        assert_eq!(
            client.parks() > 0,
            parks_expected,
            "spin {spin:?}: {} parks",
            client.parks()
        );
        drop(client);
        node.shutdown().expect("clean stop");
    }
}

#[test]
fn a_raised_flag_ends_a_spinning_clients_wait_without_a_park() {
    // A spin as long as the wait: only the flag can end it early, and a
    // wait that ran out would count a park.
    let (_, node) = boot(&["runtime.client_spin_before_park=60s"]);
    let mut client = node.client().expect("client");
    let woken = std::sync::atomic::AtomicBool::new(false);
    let mut batch = Vec::new();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            woken.store(true, std::sync::atomic::Ordering::Release);
        });
        assert_eq!(
            client.recv_or_woken(Duration::from_secs(60), &mut batch, &woken),
            0
        );
    });
    assert_eq!(client.parks(), 0, "the wait ran out instead");
    assert!(started.elapsed() < Duration::from_secs(60));
    // Raised before the call: no wait at all, and nothing taken.
    assert_eq!(
        client.recv_or_woken(Duration::from_secs(60), &mut batch, &woken),
        0
    );
    assert_eq!(client.parks(), 0);
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn a_batch_read_hands_over_every_answer_in_arrival_order() {
    let (planned, mut node) = boot(&[]);
    let echo = node
        .deploy("echo", &example("echo"), 1, &limits(&planned))
        .expect("deploys");
    let mut client = node.client().expect("client");
    let mut batch = Vec::new();
    // Nothing outstanding: a read that may not wait comes back empty.
    assert_eq!(client.recv_batch(Duration::ZERO, &mut batch), 0);
    let tokens: Vec<u64> = (0..40u64)
        .map(|conversation_id| {
            let options = SendOptions {
                conversation_id,
                ..SendOptions::default()
            };
            client
                .send(echo, Performative::Request, b"x".to_vec(), options)
                .expect("sent")
        })
        .collect();
    // One instance answers in order, so once the last answer is in, the 39
    // before it are queued in the client or still in its ring.
    let last = client
        .await_reply(tokens[39], PATIENCE)
        .expect("the last answered");
    assert_eq!(last.conversation_id, 39);
    let taken = client.recv_batch(Duration::ZERO, &mut batch);
    assert_eq!(taken, 39);
    let conversations: Vec<u64> = batch.iter().map(|answer| answer.conversation_id).collect();
    assert_eq!(conversations, (0..39).collect::<Vec<u64>>());
    // A batch appends: what the caller holds stays.
    assert_eq!(client.recv_batch(Duration::from_millis(20), &mut batch), 0);
    assert_eq!(batch.len(), 39);
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn a_turn_handles_at_most_batch_size_messages() {
    // 40 requests to an agent that spends 500 µs on each: they pile up in
    // the ring while it works, and each turn takes what batch_size allows.
    let backlog = 40u64;
    for batch_size in [1u64, 8] {
        let setting = format!("messaging.batch_size={batch_size}");
        let (planned, mut node) = boot(&[&setting, "messaging.delivery_timeout=60s"]);
        let busy = node
            .deploy("busy", busy_agent(500_000).as_bytes(), 1, &limits(&planned))
            .expect("deploys");
        let mut client = node.client().expect("client");
        node.metrics(true).expect("reset");
        for _ in 0..backlog {
            client
                .send(
                    busy,
                    Performative::Request,
                    Vec::new(),
                    SendOptions::default(),
                )
                .expect("accepted");
        }
        for _ in 0..backlog {
            let answer = client.recv(PATIENCE).expect("answered");
            assert_eq!(answer.performative, Performative::Inform, "{answer:?}");
        }
        let metrics = node.metrics(false).expect("metrics");
        let handled: u64 = metrics.iter().map(|shard| shard.handled).sum();
        let turns: u64 = metrics.iter().map(|shard| shard.handling_turns).sum();
        let largest = metrics
            .iter()
            .map(|shard| shard.largest_batch)
            .max()
            .unwrap_or(0);
        assert_eq!(handled, backlog, "batch_size {batch_size}");
        assert!(
            (1..=batch_size).contains(&largest),
            "batch_size {batch_size}: a turn handled {largest}"
        );
        if batch_size == 1 {
            assert_eq!(turns, backlog, "one message a turn");
        } else {
            // The backlog went in fuller turns.
            assert!(
                turns < backlog && largest > 1,
                "batch_size {batch_size}: {handled} messages in {turns} turns, at most {largest}"
            );
        }
        node.shutdown().expect("clean stop");
    }
}
