//! The message lanes (`transport.connection_pool.*`): two nodes in one
//! process over loopback QUIC, each key observed through the pool's counts
//! in `GET /v1/cluster`'s snapshot, and one sender's order kept while lanes
//! rotate under it.

use std::time::{Duration, Instant};

use caxton_bench::cluster::ClusterMember;
use caxton_cluster::lanes::LaneSnapshot;
use caxton_cluster::transport::ClusterSnapshot;
use caxton_messaging::Performative;
use caxton_shards::SendOptions;
use caxton_tests::{counter_pair, counter_value, pipelined_counts};

const PATIENCE: Duration = Duration::from_secs(10);

/// Node `a` and node `b` (hosting one `counter` instance) with the pool's
/// keys set by `pool` (`transport.connection_pool.` is prefixed), `a`
/// knowing that `b` hosts `counter`.
fn pair(pool: &[&str], client_ports: u32) -> (ClusterMember, ClusterMember) {
    let mut overrides = vec![
        "runtime.worker_threads=1".to_owned(),
        format!("runtime.client_ports={client_ports}"),
    ];
    overrides.extend(
        pool.iter()
            .map(|key| format!("transport.connection_pool.{key}")),
    );
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    counter_pair(&overrides)
}

fn snapshot(member: &ClusterMember) -> ClusterSnapshot {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(member.handle.snapshot())
        .expect("the cluster loop answers")
}

fn lanes(member: &ClusterMember) -> LaneSnapshot {
    snapshot(member).lanes
}

fn stop(a: ClusterMember, b: ClusterMember) {
    a.stop().expect("a stops");
    b.stop().expect("b stops");
}

/// Poll `member`'s lane counts until `done` holds; the last counts either way.
fn wait_for_lanes(member: &ClusterMember, done: impl Fn(&LaneSnapshot) -> bool) -> LaneSnapshot {
    let start = Instant::now();
    loop {
        let now = lanes(member);
        if done(&now) || start.elapsed() > PATIENCE {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pre_warm_opens_warm_connections_lanes_before_any_message() {
    let (a, b) = pair(
        &[
            "pre_warm=true",
            "warm_connections=3",
            "max_connections_per_node=8",
        ],
        8,
    );
    // `a` connected to `b` (it pulled b's agent list): its warm lanes open
    // with the connection, and no remote message has been sent yet.
    let warm = wait_for_lanes(&a, |lanes| lanes.open == 3);
    assert_eq!(warm.open, 3, "{warm:?}");
    assert_eq!(snapshot(&a).remote.sent, 0, "warm lanes need no message");
    stop(a, b);
}

#[test]
fn without_pre_warm_a_lane_opens_with_its_first_message() {
    let (a, b) = pair(&["pre_warm=false", "max_connections_per_node=8"], 8);
    // Connected (a holds b's list), yet no lane: nothing was sent.
    assert_eq!(lanes(&a).opened, 0, "{:?}", lanes(&a));
    assert_eq!(
        pipelined_counts(&a.node, "counter", 5, 16),
        vec![1, 2, 3, 4, 5]
    );
    let after = lanes(&a);
    assert_eq!(after.opened, 1, "one sender, one lane: {after:?}");
    assert_eq!(after.open, 1, "{after:?}");
    stop(a, b);
}

#[test]
fn a_peer_gets_at_most_max_connections_per_node_lanes() {
    let (a, b) = pair(&["pre_warm=false", "max_connections_per_node=2"], 20);
    // Sixteen senders: all of them hashing to one of the two lanes has a
    // chance of 2^-15.
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                let counts = pipelined_counts(&a.node, "counter", 20, 16);
                assert_eq!(counts.len(), 20);
                assert!(
                    counts.windows(2).all(|pair| pair[0] < pair[1]),
                    "{counts:?}"
                );
            });
        }
    });
    let after = lanes(&a);
    assert_eq!(
        after.opened, 2,
        "sixteen senders share two lanes: {after:?}"
    );
    assert_eq!(after.open, 2, "{after:?}");
    stop(a, b);
}

#[test]
fn idle_lanes_retire_after_idle_timeout_down_to_min_idle() {
    let (a, b) = pair(
        &[
            "warm_connections=3",
            "max_connections_per_node=4",
            "idle_timeout=200ms",
            "min_idle=1",
        ],
        8,
    );
    let settled = wait_for_lanes(&a, |lanes| lanes.closed_idle == 2 && lanes.open == 1);
    assert_eq!(settled.closed_idle, 2, "{settled:?}");
    assert_eq!(settled.open, 1, "min_idle keeps one: {settled:?}");
    // And the one kept stays through further timeouts.
    std::thread::sleep(Duration::from_millis(600));
    let later = lanes(&a);
    assert_eq!((later.open, later.closed_idle), (1, 2), "{later:?}");
    stop(a, b);
}

#[test]
fn lanes_falling_idle_over_max_idle_retire_at_once() {
    let (a, b) = pair(
        &[
            "warm_connections=4",
            "max_connections_per_node=4",
            "min_idle=0",
            "max_idle=2",
        ],
        8,
    );
    // The default idle_timeout (60 s) has no part in this.
    let settled = wait_for_lanes(&a, |lanes| lanes.closed_max_idle >= 2 && lanes.open == 2);
    assert_eq!(settled.open, 2, "{settled:?}");
    assert!(settled.idle <= 2, "{settled:?}");
    assert_eq!(settled.closed_idle, 0, "{settled:?}");
    stop(a, b);
}

#[test]
fn max_lifetime_rotates_a_lane_and_one_senders_order_holds() {
    let (a, b) = pair(
        &[
            "warm_connections=1",
            "max_connections_per_node=1",
            "max_lifetime=100ms",
        ],
        8,
    );
    let mut client = a.node.client().expect("client");
    let id = client.resolve("counter").expect("resolvable");
    // Requests pipelined across several rotations, a burst every 20 ms.
    let mut tokens = Vec::new();
    for _ in 0..30 {
        for _ in 0..10 {
            tokens.push(
                client
                    .send(
                        id,
                        Performative::Request,
                        vec![2; 64],
                        SendOptions::default(),
                    )
                    .expect("sent"),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let counts: Vec<u64> = tokens
        .into_iter()
        .map(|token| counter_value(&client.await_reply(token, PATIENCE).expect("answered")))
        .collect();
    assert_eq!(counts, (1..=300).collect::<Vec<u64>>());
    let after = lanes(&a);
    assert!(after.rotated >= 3, "600 ms of 100 ms lifetimes: {after:?}");
    assert_eq!(after.broken, 0, "{after:?}");
    stop(a, b);
}
