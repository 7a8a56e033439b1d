//! Two nodes in one process, joined over loopback QUIC (trial mode, no
//! certificates), each with its shards and its gossip side: one sender's
//! pipelined requests to an agent on the other node are handled in the
//! order they were sent, whatever their number and size.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_cluster::remote::LocalSide;
use caxton_cluster::transport::{ClusterHandle, ClusterNode};
use caxton_cluster::{AgentCounts, ClusterSettings};
use caxton_messaging::{AgentId, Envelope, Performative};
use caxton_shards::{Node, RemotePort, SendOptions};
use caxton_tests::{example, Planned};
use proptest::prelude::*;

const PATIENCE: Duration = Duration::from_secs(10);

/// The shards' side of one node, for its cluster loop; the names of the
/// agents other nodes host land in `remote_agents` for the test to apply.
struct TestSide {
    port: RemotePort,
    remote_agents: Arc<Mutex<Option<Vec<String>>>>,
}

impl LocalSide for TestSide {
    fn take_outbound(&mut self, max: usize, out: &mut Vec<Envelope>) {
        self.port.take_outbound(max, out);
    }

    fn deliver(&mut self, envelope: Envelope, route_key: u64) -> Result<(), Envelope> {
        self.port.deliver(envelope, route_key)
    }

    fn resolve_local(&self, name: &str) -> Option<AgentId> {
        self.port.resolve_local(name)
    }

    fn remote_name(&self, id: AgentId) -> Option<String> {
        self.port.remote_name(id)
    }

    fn participant(&self) -> u16 {
        self.port.participant()
    }

    fn now_ns(&self) -> u64 {
        self.port.now_ns()
    }

    fn now_unix_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64)
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.port.wait()
    }

    fn remote_agents_changed(&mut self, names: Vec<String>) {
        *self.remote_agents.lock().expect("not poisoned") = Some(names);
    }
}

/// One node of the pair: its shards, its cluster loop on a thread of its own.
struct ClusterMember {
    planned: Planned,
    node: Node,
    handle: ClusterHandle,
    address: std::net::SocketAddr,
    remote_agents: Arc<Mutex<Option<Vec<String>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterMember {
    fn start(name: &str, seed: Option<std::net::SocketAddr>) -> Self {
        let (planned, mut node) = caxton_tests::boot_default(1, &[]);
        let mut profile = planned.profile.clone();
        profile.coordination.cluster.listen_address =
            Some("127.0.0.1:0".parse().expect("an address"));
        profile.coordination.cluster.node_name = Some(name.to_owned());
        let joins: Vec<String> = seed.iter().map(ToString::to_string).collect();
        let settings = ClusterSettings::from_profile(&profile, &joins)
            .expect("valid settings")
            .expect("a cluster");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let cluster = {
            let _entered = runtime.enter();
            ClusterNode::bind(settings).expect("bound")
        };
        let address = cluster.local_addr();
        let port = node.take_remote_port().expect("a remote port");
        let remote_agents = Arc::new(Mutex::new(None));
        let side = TestSide {
            port,
            remote_agents: Arc::clone(&remote_agents),
        };
        let (handle, queries) = ClusterHandle::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                cluster
                    .run_with(queries, Some(side), async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            planned,
            node,
            handle,
            address,
            remote_agents,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Publish the agents this node hosts to the cluster directory.
    fn publish(&self) {
        let agents: AgentCounts = self
            .node
            .directory()
            .iter()
            .map(|(_, record)| {
                let instances = record
                    .instances_per_shard
                    .iter()
                    .map(|&c| u32::from(c))
                    .sum();
                (record.name.clone(), instances)
            })
            .collect();
        let handle = self.handle.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        assert!(
            runtime.block_on(handle.publish_agents(agents)),
            "the loop runs"
        );
    }

    /// Wait until the cluster names `agent` as hosted elsewhere, and apply it.
    fn await_remote(&mut self, agent: &str) {
        let start = Instant::now();
        loop {
            let names = self.remote_agents.lock().expect("not poisoned").take();
            if let Some(names) = names {
                let found = names.iter().any(|name| name == agent);
                self.node.set_remote_agents(names);
                if found {
                    return;
                }
            }
            assert!(start.elapsed() < PATIENCE, "{agent} never listed elsewhere");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the cluster loop ends");
        }
        self.node.shutdown().expect("clean stop");
    }
}

/// Node `a` and node `b` (hosting one `counter` instance), `a` knowing of it.
fn pair() -> (ClusterMember, ClusterMember) {
    let mut a = ClusterMember::start("a", None);
    let b = ClusterMember::start("b", Some(a.address));
    let limits = b.planned.profile.agents.default_limits.clone();
    let mut b = b;
    b.node
        .deploy("counter", &example("counter"), 1, &limits)
        .expect("deploys");
    b.publish();
    a.await_remote("counter");
    (a, b)
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
    answers
        .iter()
        .map(|answer| {
            assert_eq!(answer.performative, Performative::Inform, "{answer:?}");
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&answer.content[..8]);
            u64::from_le_bytes(bytes)
        })
        .collect()
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
        a.stop();
        b.stop();
    }
}
