//! Time slices through whole nodes: a long handler yields its shard after
//! `runtime.time_slice`, so its neighbours keep being served, and still
//! fails at `max_execution_time`. Assertions are about order and outcome,
//! never about how fast anything ran.

use std::time::Duration;

use caxton_messaging::Performative;
use caxton_profiles::{AgentLimits, HumanDuration};
use caxton_shards::{Client, Node, SendOptions, FAILURE_PREFIX};
use caxton_tests::{boot_default, busy_agent, example, Planned};

const PATIENCE: Duration = Duration::from_secs(20);

/// One data shard, so every agent shares it.
fn boot(overrides: &[&str]) -> (Planned, Node) {
    boot_default(1, overrides)
}

fn with_max_execution(planned: &Planned, limit: Duration) -> AgentLimits {
    AgentLimits {
        max_execution_time: HumanDuration(limit),
        ..planned.profile.agents.default_limits.clone()
    }
}

fn reason(content: &[u8]) -> String {
    String::from_utf8_lossy(content)
        .strip_prefix(FAILURE_PREFIX)
        .unwrap_or_default()
        .to_owned()
}

/// Handlers the node's shards suspended so far.
fn suspended(node: &Node) -> u64 {
    node.metrics(false)
        .expect("metrics")
        .iter()
        .map(|shard| shard.suspended)
        .sum()
}

/// Deploy `loop` under `limits` and send it one message: a client and the
/// token the loop's answer will quote.
fn start_loop(node: &mut Node, limits: &AgentLimits) -> (Client, u64) {
    start_loop_once(node, limits, |_| {})
}

/// [`start_loop`], sending once `ready` has returned.
fn start_loop_once(
    node: &mut Node,
    limits: &AgentLimits,
    ready: impl FnOnce(&Node),
) -> (Client, u64) {
    let looping = node
        .deploy("loop", &example("loop"), 1, limits)
        .expect("deploys");
    let mut client = node.client().expect("client");
    ready(node);
    let token = client
        .send(
            looping,
            Performative::Request,
            Vec::new(),
            SendOptions::default(),
        )
        .expect("sent");
    (client, token)
}

/// Send `loop` one message, then echo requests one after another until the
/// loop's answer comes; returns (echo answers that came first, the loop's answer).
fn echo_while_looping(node: &mut Node, planned: &Planned) -> (usize, String) {
    let echo = node
        .deploy(
            "echo",
            &example("echo"),
            1,
            &planned.profile.agents.default_limits,
        )
        .expect("deploys");
    let (mut client, loop_token) =
        start_loop(node, &with_max_execution(planned, Duration::from_secs(2)));
    let mut echoed = 0;
    let loop_answer = loop {
        let token = client
            .send(
                echo,
                Performative::Request,
                b"hi".to_vec(),
                SendOptions::default(),
            )
            .expect("sent");
        let answer = client.await_reply(token, PATIENCE).expect("echo answers");
        assert_eq!(answer.performative, Performative::Inform);
        if let Ok(answer) = client.await_reply(loop_token, Duration::ZERO) {
            break answer;
        }
        echoed += 1;
    };
    assert_eq!(loop_answer.performative, Performative::Failure);
    (echoed, reason(&loop_answer.content))
}

#[test]
fn a_looping_agent_yields_to_its_neighbours_and_still_fails_at_its_limit() {
    let (planned, mut node) = boot(&["runtime.time_slice=1ms"]);
    let (echoed, loop_reason) = echo_while_looping(&mut node, &planned);
    assert_eq!(loop_reason, "execution-time");
    assert!(
        echoed > 0,
        "echo was answered while the loop ran (before its execution-time failure)"
    );
    assert!(suspended(&node) >= 1, "the loop was suspended");
    node.shutdown().expect("clean stop");
}

#[test]
fn a_loop_sent_to_an_idle_node_is_still_stopped_at_its_limit() {
    let (planned, mut node) = boot(&["runtime.time_slice=1ms"]);
    let limits = with_max_execution(&planned, Duration::from_millis(200));
    // Idle, the node's epoch ticker parks: it ticks for nobody. The loop's
    // message then wakes the shard, which wakes the ticker: without that
    // the loop would never be stopped.
    let (mut client, token) = start_loop_once(&mut node, &limits, |node| {
        let start = std::time::Instant::now();
        while !node.epoch_ticker_parked() {
            assert!(
                start.elapsed() < PATIENCE,
                "the ticker of an idle node parks"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let answer = client
        .await_reply(token, PATIENCE)
        .expect("the loop is answered");
    assert_eq!(answer.performative, Performative::Failure);
    assert_eq!(reason(&answer.content), "execution-time");
    node.shutdown().expect("clean stop");
}

#[test]
fn without_stack_pooling_a_handler_holds_its_shard_to_the_end() {
    let (planned, mut node) = boot(&["runtime.wasm.stack_pooling=false"]);
    let (echoed, loop_reason) = echo_while_looping(&mut node, &planned);
    assert_eq!(loop_reason, "execution-time");
    assert_eq!(echoed, 0, "the first echo waited for the loop's end");
    assert_eq!(suspended(&node), 0);
    node.shutdown().expect("clean stop");
}

#[test]
fn a_suspended_instance_takes_no_second_message() {
    let (planned, mut node) = boot(&["runtime.time_slice=1ms"]);
    let busy = node
        .deploy(
            "busy",
            busy_agent(30_000_000).as_bytes(),
            1,
            &planned.profile.agents.default_limits,
        )
        .expect("deploys");
    let mut client = node.client().expect("client");
    // Four at once: while the first is suspended, the others wait for it.
    // A slice ends only when the epoch ticker runs; on a machine loaded by
    // other work it may be starved through a whole round (no handler
    // suspended, so nothing was tested), and the round is run again.
    for _round in 0..10 {
        let tokens: Vec<u64> = (0..4)
            .map(|_| {
                client
                    .send(
                        busy,
                        Performative::Request,
                        Vec::new(),
                        SendOptions::default(),
                    )
                    .expect("sent")
            })
            .collect();
        for token in tokens {
            let answer = client.await_reply(token, PATIENCE).expect("answered");
            assert_eq!(
                answer.performative,
                Performative::Inform,
                "not entered while suspended: {}",
                String::from_utf8_lossy(&answer.content)
            );
        }
        if suspended(&node) > 0 {
            break;
        }
    }
    assert!(
        suspended(&node) > 0,
        "a 30 ms handler used several 1 ms slices in some round"
    );
    node.shutdown().expect("clean stop");
}

#[test]
fn the_time_slice_decides_whether_a_handler_yields() {
    // A 30 ms handler and a slice far longer: it runs to its end in one go.
    let (planned, mut node) = boot(&["runtime.time_slice=5s"]);
    let busy = node
        .deploy(
            "busy",
            busy_agent(30_000_000).as_bytes(),
            1,
            &planned.profile.agents.default_limits,
        )
        .expect("deploys");
    let mut client = node.client().expect("client");
    let answer = client
        .request(busy, Vec::new(), PATIENCE)
        .expect("answered");
    assert_eq!(answer.performative, Performative::Inform);
    assert_eq!(suspended(&node), 0);
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn stopping_the_node_answers_suspended_handlers_senders() {
    let (planned, mut node) = boot(&["runtime.time_slice=1ms"]);
    let (mut client, token) = start_loop(&mut node, &planned.profile.agents.default_limits);
    let deadline = std::time::Instant::now() + PATIENCE;
    while suspended(&node) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop never yielded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    node.shutdown().expect("clean stop");
    let answer = client
        .await_reply(token, PATIENCE)
        .expect("answered at stop");
    assert_eq!(answer.performative, Performative::Failure);
    assert_eq!(reason(&answer.content), "shutting-down");
}
