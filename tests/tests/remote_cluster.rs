//! Two nodes in one process, joined over loopback QUIC (trial mode, no
//! certificates), each with its shards and its gossip side: one sender's
//! pipelined requests to an agent on the other node are handled in the
//! order they were sent, whatever their number and size.

use caxton_bench::cluster::ClusterMember;
use caxton_tests::{counter_pair, pipelined_counts};
use proptest::prelude::*;

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
