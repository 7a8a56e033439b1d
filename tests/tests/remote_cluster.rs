//! Two nodes in one process, joined over loopback QUIC (trial mode, no
//! certificates), each with its shards and its gossip side: one sender's
//! pipelined requests to an agent on the other node are handled in the
//! order they were sent, whatever their number and size; an agent on the
//! other node reads the sender's name as it would on the sender's node.

use std::time::Duration;

use caxton_bench::cluster::ClusterMember;
use caxton_tests::{cluster_pair, counter_pair, example, pipelined_counts};
use proptest::prelude::*;

/// On a request naming an agent, asks it (a `request` of its own) and
/// answers with what that agent answered.
const RELAY: &str = r#"(module
  (import "caxton" "msg_performative" (func $performative (result i32)))
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "send" (func $send (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "caxton" "defer_reply" (func $defer (result i64)))
  (import "caxton" "reply_to" (func $reply_to (param i64 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $length i32) (local $ticket i64)
    (local.set $length (call $read (i32.const 1024) (i32.const 1024)))
    ;; The answer (inform 1, failure 9): passed on to the one who asked.
    (if (i32.or (i32.eq (call $performative) (i32.const 1))
                (i32.eq (call $performative) (i32.const 9)))
      (then
        (drop (call $reply_to (i64.load (i32.const 0)) (call $performative)
                              (i32.const 1024) (local.get $length)))
        (return (i32.const 0))))
    (local.set $ticket (call $defer))
    (i64.store (i32.const 0) (local.get $ticket))
    (call $send (i32.const 1024) (local.get $length) (i32.const 0)
                (i32.const 0) (i32.const 0) (local.get $ticket))))"#;

/// Node `a` and node `b` (hosting one `counter` instance), `a` knowing of it.
fn pair() -> (ClusterMember, ClusterMember) {
    counter_pair(&["runtime.worker_threads=1"])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn one_senders_requests_to_another_node_are_handled_in_order(
        batches in proptest::collection::vec((1usize..200, 0usize..4096), 1..4),
    ) {
        let (a, b) = pair();
        let mut handled = 0;
        for (count, size) in batches {
            let seen = pipelined_counts(&a.node, "counter", count, size);
            let expected: Vec<u64> = (handled + 1..=handled + count as u64).collect();
            prop_assert_eq!(seen, expected);
            handled += count as u64;
        }
        a.stop().expect("a stops");
        b.stop().expect("b stops");
    }
}

#[test]
fn an_agent_on_another_node_reads_the_senders_name() {
    let (mut a, mut b, limits) = cluster_pair(&["runtime.worker_threads=1"]);
    b.node
        .deploy("who", &example("who"), 1, &limits)
        .expect("deploys");
    a.node
        .deploy("relay", RELAY.as_bytes(), 1, &limits)
        .expect("deploys");
    b.publish().expect("published");
    a.publish().expect("published");
    a.await_remote("who").expect("a knows who b hosts");
    b.await_remote("relay").expect("b knows who a hosts");

    let patience = Duration::from_secs(10);
    let mut client = a.node.client().expect("client");
    // An agent on `a` asks `who` on `b`: `who` reads the agent's name.
    let relay = client.resolve("relay").expect("resolvable");
    let answer = client
        .request(relay, b"who".to_vec(), patience)
        .expect("answered");
    assert_eq!(
        (
            answer.performative,
            String::from_utf8_lossy(&answer.content)
        ),
        (caxton_messaging::Performative::Inform, "relay".into())
    );
    // A client on `a` asking directly stays a client.
    let who = client.resolve("who").expect("resolvable");
    let answer = client.request(who, Vec::new(), patience).expect("answered");
    let name = String::from_utf8_lossy(&answer.content).into_owned();
    assert!(name.starts_with("client-"), "{name}");
    a.stop().expect("a stops");
    b.stop().expect("b stops");
}
