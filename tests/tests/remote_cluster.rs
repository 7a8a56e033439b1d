//! Two nodes in one process, joined over loopback QUIC (trial mode, no
//! certificates), each with its shards and its gossip side: one sender's
//! pipelined requests to an agent on the other node are handled in the
//! order they were sent, whatever their number and size.

use std::time::Duration;

use caxton_bench::cluster::ClusterMember;
use caxton_messaging::{Envelope, Performative};
use caxton_shards::{Node, SendOptions};
use caxton_tests::{counter_pair, counter_value};
use proptest::prelude::*;

const PATIENCE: Duration = Duration::from_secs(10);

/// Node `a` and node `b` (hosting one `counter` instance), `a` knowing of it.
fn pair() -> (ClusterMember, ClusterMember) {
    counter_pair(&["runtime.worker_threads=1"])
}

/// Send `count` requests of `size` bytes to `agent` without waiting, then
/// collect the answers in send order.
fn pipelined(node: &Node, agent: &str, count: usize, size: usize) -> Vec<Envelope> {
    let mut client = node.client().expect("client");
    let id = client.resolve(agent).expect("resolvable");
    let tokens: Vec<u64> = (0..count)
        .map(|_| {
            client
                .send(
                    id,
                    Performative::Request,
                    vec![7; size],
                    SendOptions::default(),
                )
                .expect("sent")
        })
        .collect();
    tokens
        .into_iter()
        .map(|token| client.await_reply(token, PATIENCE).expect("answered"))
        .collect()
}

fn counts(answers: &[Envelope]) -> Vec<u64> {
    answers.iter().map(counter_value).collect()
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
            let seen = counts(&pipelined(&a.node, "counter", count, size));
            let expected: Vec<u64> = (handled + 1..=handled + count as u64).collect();
            prop_assert_eq!(seen, expected);
            handled += count as u64;
        }
        a.stop().expect("a stops");
        b.stop().expect("b stops");
    }
}
