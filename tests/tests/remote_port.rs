//! The remote port: the mesh participant through which a node's messages
//! for agents only other nodes host leave, and messages from other nodes
//! enter. Here the test plays the part the gossip shard plays in a cluster.

use std::time::{Duration, Instant};

use caxton_messaging::{Address, Envelope, Performative};
use caxton_shards::{NodeOptions, RemotePort, SendOptions, REMOTE_ID_BASE};
use caxton_tests::example;

const PATIENCE: Duration = Duration::from_secs(10);

/// The next message on `port`, parking until a shard rings the port's
/// doorbell, as the gossip shard does (for up to [`PATIENCE`]).
#[track_caller]
fn next_on(port: &mut RemotePort) -> Envelope {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime to park on");
    let start = Instant::now();
    loop {
        let mut taken = Vec::new();
        port.take_outbound(1, &mut taken);
        if let Some(envelope) = taken.pop() {
            return envelope;
        }
        let left = PATIENCE.saturating_sub(start.elapsed());
        runtime
            .block_on(async { tokio::time::timeout(left, port.wait()).await })
            .expect("nothing arrived at the remote port");
    }
}

/// Hops every shard traced since the last collection (which ends tracing).
fn hops_traced(node: &caxton_shards::Node) -> usize {
    node.trace(None)
        .expect("hops")
        .iter()
        .map(|take| take.hops.len())
        .sum()
}

/// `client` sends `out` to `faraway` with every shard tracing: what the
/// remote port took, the send's token, and the hops the shards traced.
fn send_out(
    node: &caxton_shards::Node,
    client: &mut caxton_shards::Client,
    remote: &mut RemotePort,
    faraway: caxton_messaging::AgentId,
) -> (Envelope, u64, usize) {
    node.trace(Some(100)).expect("tracing starts");
    let token = client
        .send(
            faraway,
            Performative::Request,
            b"out".to_vec(),
            SendOptions::default(),
        )
        .expect("sent");
    let outbound = next_on(remote);
    (outbound, token, hops_traced(node))
}

/// The other node answers `outbound` with `back`, handed in by `remote`:
/// what reaches the client.
fn answer_back(
    client: &mut caxton_shards::Client,
    remote: &mut RemotePort,
    outbound: &Envelope,
    token: u64,
) -> Envelope {
    let answer = outbound.reply_path().answer(
        Performative::Inform,
        b"back".to_vec(),
        0,
        remote.participant(),
    );
    remote.deliver(answer, 0).expect("room");
    remote.ring_deliveries();
    client.await_reply(token, PATIENCE).expect("answered")
}

#[test]
fn messages_for_other_nodes_leave_through_the_remote_port_and_answers_come_back() {
    let options = NodeOptions {
        remote_port: true,
        ..NodeOptions::default()
    };
    let (planned, mut node) = caxton_tests::boot_default_with(2, &[], options);
    let limits = planned.profile.agents.default_limits.clone();
    let echo = node
        .deploy("echo", &example("echo"), 1, &limits)
        .expect("deploys");
    node.deploy("forwarder", &example("forwarder"), 1, &limits)
        .expect("deploys");
    // A client connected before the remote port is taken leaves it the
    // participant built with rings to the clients.
    let mut client = node.client().expect("client");
    let mut remote = node.take_remote_port().expect("a free client port");
    assert!(
        node.take_remote_port().is_none(),
        "one remote port per node"
    );
    let remote_participant = remote.participant();

    assert!(
        client.resolve("faraway").is_err(),
        "unknown before the cluster names it"
    );
    node.set_remote_agents(["faraway".to_owned()]);
    let faraway = client.resolve("faraway").expect("a proxy id");
    assert!(faraway.0 >= REMOTE_ID_BASE);
    assert_eq!(
        client.resolve("echo").expect("local"),
        echo,
        "local agents keep their ids"
    );

    // A client's request leaves through the remote port, straight from the
    // client: with every shard sampling, no shard sees it (while a local
    // request, the control, is traced).
    node.trace(Some(100)).expect("tracing starts");
    let local = client
        .request(echo, b"here".to_vec(), PATIENCE)
        .expect("echo answers");
    assert_eq!(local.content, b"here");
    let traced_local = hops_traced(&node);
    assert!(traced_local > 0, "a local request is traced");
    let (outbound, token, traced_remote) = send_out(&node, &mut client, &mut remote, faraway);
    assert_eq!(traced_remote, 0, "no data shard passed the remote send on");
    assert_eq!(outbound.receiver, Address::Agent(faraway));
    assert_eq!(outbound.content, b"out");
    assert_eq!(outbound.reply_with, token);
    assert!(matches!(outbound.sender, Address::Client { .. }));

    // The other node's answer, handed in by the remote port, reaches the client.
    let reply = answer_back(&mut client, &mut remote, &outbound, token);
    assert_eq!(
        (reply.performative, reply.content.as_slice()),
        (Performative::Inform, &b"back"[..])
    );

    // An agent's message to it leaves the same way: a forwarder's last hop.
    let mut route = vec![1u8, 7];
    route.extend_from_slice(b"faraway");
    route.extend_from_slice(b"payload");
    let forwarder = client.resolve("forwarder").expect("local");
    client
        .send(
            forwarder,
            Performative::Request,
            route,
            SendOptions::default(),
        )
        .expect("sent");
    let forwarded = next_on(&mut remote);
    assert_eq!(forwarded.receiver, Address::Agent(faraway));
    assert_eq!(forwarded.content, b"\0payload");

    // A message from another node enters through the remote port; the
    // local agent's answer comes back to it.
    let inbound = Envelope {
        reply_with: 77,
        ..Envelope::new(
            Performative::Request,
            Address::Client {
                port: remote_participant,
                id: 9,
            },
            Address::Agent(echo),
            b"from afar".to_vec(),
            0,
            remote_participant,
        )
    };
    // Like a client, the remote port sends to a shard that hosts the agent.
    assert_eq!(remote.resolve_local("echo"), Some(echo));
    assert_eq!(remote.remote_name(faraway).as_deref(), Some("faraway"));
    remote.deliver(inbound, 3).expect("room");
    remote.ring_deliveries();
    let answered = next_on(&mut remote);
    assert_eq!(
        answered.receiver,
        Address::Client {
            port: remote_participant,
            id: 9
        }
    );
    assert_eq!(answered.in_reply_to, 77);
    assert_eq!(answered.content, b"from afar");

    // Once no other node hosts it, it is unknown again.
    node.set_remote_agents(Vec::new());
    assert!(client.resolve("faraway").is_err());
    drop(client);
    node.shutdown().expect("clean stop");
}

/// A node started outside a cluster builds no rings between the remote
/// port and the clients (their memory is saved). A remote port taken there
/// anyway still carries a client's remote round trip, relayed by a data
/// shard both ways.
#[test]
fn a_node_built_without_the_remote_ports_rings_relays_through_a_shard() {
    let (_planned, mut node) = caxton_tests::boot_default(2, &[]);
    let mut client = node.client().expect("client");
    let mut remote = node.take_remote_port().expect("a free client port");
    node.set_remote_agents(["faraway".to_owned()]);
    let faraway = client.resolve("faraway").expect("a proxy id");
    let (outbound, token, traced) = send_out(&node, &mut client, &mut remote, faraway);
    assert_eq!(outbound.content, b"out");
    assert!(
        traced > 0,
        "with no ring from the client, a data shard passed the send on"
    );
    let reply = answer_back(&mut client, &mut remote, &outbound, token);
    assert_eq!(reply.content, b"back");
    drop(client);
    node.shutdown().expect("clean stop");
}
