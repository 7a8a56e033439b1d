//! `engine benchmark run --suite cluster`: two nodes in this process, joined
//! over loopback QUIC (trial mode: no certificates, loopback only), each with
//! its own shards and its gossip side, and what the remote path costs
//! against the local one.
//!
//! - **remote routing**: send on node `a` to handler start on node `b`, from
//!   `b`'s `caxton_remote_routing_latency_seconds` histogram (one machine,
//!   one clock, so no skew in it), with one request outstanding at a time:
//!   the path's own latency, not a queue's.
//! - **remote request-reply**: a client on `a` keeps `window` requests
//!   outstanding to an echo on `b` for the run's duration: answers per
//!   second and round trips at saturation.
//! - **local**: the same two runs to an echo on `a` itself, for comparison.
//! - **node down**: `b` leaves; once `a` has declared it gone, a client on
//!   `a` sends to `b`'s agent one request at a time (its shard still routes
//!   the name to the remote port): the round trip of the `failure` answer.
//!
//! [`ClusterMember`] is also the harness of the cross-node tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_cluster::transport::{ClusterHandle, ClusterNode};
use caxton_cluster::{AgentCounts, ClusterSettings};
use caxton_messaging::Performative;
use caxton_numa::PlacementPlan;
use caxton_profiles::Profile;
use caxton_shards::{nanosecond_histogram, Node, PortSide, RemotePort, SendOptions};
use hdrhistogram::Histogram;
use serde::Serialize;

/// How long to wait for a join, a listing or an answer.
const PATIENCE: Duration = Duration::from_secs(10);

/// The goals of the issue that built remote routing (loopback).
pub const REMOTE_P50_GOAL_NS: u64 = 50_000;
/// P99 goal of remote routing.
pub const REMOTE_P99_GOAL_NS: u64 = 500_000;
/// Remote request-replies per second between two nodes on a 2-core machine.
pub const REMOTE_RATE_GOAL: f64 = 500_000.0;
/// A message to a node declared down is answered within this (P99).
pub const NODE_DOWN_ANSWER_GOAL_NS: u64 = 1_000_000;
/// Messages a figure needs before it is judged against its goal.
const VERDICT_SAMPLES_MIN: u64 = 100;
/// Requests sent to the departed node's agent.
const NODE_DOWN_SENDS: usize = 1_000;

/// One node of an in-process cluster: its shards, and its cluster loop on
/// its gossip shard's thread, as the engine runs it.
pub struct ClusterMember {
    /// The node's shards.
    pub node: Node,
    /// Queries to its cluster loop.
    pub handle: ClusterHandle,
    /// Where it listens.
    pub address: std::net::SocketAddr,
    remote_agents: Arc<Mutex<Option<Vec<String>>>>,
}

impl ClusterMember {
    /// Boot a node of `profile` on `plan`, named `name`, listening on a
    /// free loopback port, joining `seed` if given. Its cluster loop runs
    /// on the gossip shard (on that shard's core, as in the engine) until
    /// the node stops.
    pub fn start(
        profile: &Profile,
        plan: &PlacementPlan,
        name: &str,
        seed: Option<std::net::SocketAddr>,
    ) -> Result<Self, String> {
        let mut cluster_profile = profile.clone();
        cluster_profile.coordination.cluster.listen_address = Some("127.0.0.1:0".into());
        cluster_profile.coordination.cluster.node_name = Some(name.to_owned());
        cluster_profile.coordination.cluster.tls = Default::default();
        let joins: Vec<String> = seed.iter().map(ToString::to_string).collect();
        let settings = ClusterSettings::from_profile(&cluster_profile, &joins)
            .map_err(|error| format!("{}: {}", error.key, error.message))?
            .ok_or("no cluster settings")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        let cluster = {
            let _entered = runtime.enter();
            ClusterNode::bind(settings).map_err(|error| error.to_string())?
        };
        let address = cluster.local_addr();
        let remote_agents = Arc::new(Mutex::new(None));
        let names = Arc::clone(&remote_agents);
        let on_remote_agents = move |list| {
            *names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(list);
        };
        let (handle, queries) = ClusterHandle::channel();
        // The remote port exists once the node has started: handed over then.
        let (port_sender, port_wanted) = tokio::sync::oneshot::channel::<RemotePort>();
        let work: caxton_shards::GossipWork = Box::new(move |stop| {
            runtime.block_on(async move {
                let (stopped, until_stop) = tokio::sync::oneshot::channel::<()>();
                tokio::task::spawn_blocking(move || {
                    stop.wait_blocking();
                    let _ = stopped.send(());
                });
                let side = port_wanted
                    .await
                    .ok()
                    .map(|port| PortSide::new(port, on_remote_agents));
                cluster
                    .run_with(queries, side, async move {
                        let _ = until_stop.await;
                    })
                    .await;
            });
        });
        // The suite sends nothing durable: nothing needs to wait.
        let options = caxton_shards::NodeOptions {
            gossip_work: Some(work),
            remote_port: true,
            await_directory: false,
        };
        let mut node =
            Node::start_with(profile, plan, options).map_err(|error| error.to_string())?;
        let port = node
            .take_remote_port()
            .ok_or("no client port for the remote port")?;
        port_sender
            .send(port)
            .map_err(|_| "the cluster loop stopped before it started")?;
        Ok(Self {
            node,
            handle,
            address,
            remote_agents,
        })
    }

    /// Publish the agents this node hosts to the cluster directory.
    pub fn publish(&self) -> Result<(), String> {
        let agents: AgentCounts = self.node.directory().hosted_agents();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|error| error.to_string())?;
        let handle = self.handle.clone();
        if runtime.block_on(handle.publish_agents(agents)) {
            Ok(())
        } else {
            Err("the cluster loop stopped".into())
        }
    }

    /// Wait until the cluster says another node hosts `agent`, applying
    /// each change of the names to this node's directory.
    pub fn await_remote(&mut self, agent: &str) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let names = self
                .remote_agents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(names) = names {
                let found = names.iter().any(|name| name == agent);
                self.node.set_remote_agents(names);
                if found {
                    return Ok(());
                }
            }
            if start.elapsed() > PATIENCE {
                return Err(format!(
                    "no other node listed `{agent}` within {PATIENCE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Remote messages and the frames that carried them, summed over
    /// every peer.
    fn remote_traffic(&self) -> Result<RemoteTraffic, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|error| error.to_string())?;
        let snapshot = runtime
            .block_on(self.handle.snapshot())
            .ok_or("the cluster loop stopped")?;
        Ok(snapshot
            .remote_peers
            .iter()
            .fold(RemoteTraffic::default(), |sum, peer| RemoteTraffic {
                messages_out: sum.messages_out + peer.messages_out,
                frames_out: sum.frames_out + peer.frames_out,
                messages_in: sum.messages_in + peer.messages_in,
                frames_in: sum.frames_in + peer.frames_in,
            }))
    }

    /// Stop the node; its cluster loop leaves the cluster on the way.
    pub fn stop(self) -> Result<(), String> {
        self.node.shutdown().map_err(|error| error.to_string())
    }
}

/// Remote messages and the frames (batches) that carried them, one
/// node's, over every peer.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RemoteTraffic {
    /// Messages sent to other nodes.
    pub messages_out: u64,
    /// Frames they went in.
    pub frames_out: u64,
    /// Messages received from other nodes.
    pub messages_in: u64,
    /// Frames they came in.
    pub frames_in: u64,
}

impl RemoteTraffic {
    /// What was sent and received between `earlier` and this.
    fn since(self, earlier: RemoteTraffic) -> RemoteTraffic {
        RemoteTraffic {
            messages_out: self.messages_out.saturating_sub(earlier.messages_out),
            frames_out: self.frames_out.saturating_sub(earlier.frames_out),
            messages_in: self.messages_in.saturating_sub(earlier.messages_in),
            frames_in: self.frames_in.saturating_sub(earlier.frames_in),
        }
    }

    /// Messages per frame sent, and per frame received.
    pub fn batch_sizes(&self) -> (f64, f64) {
        (
            self.messages_out as f64 / self.frames_out.max(1) as f64,
            self.messages_in as f64 / self.frames_in.max(1) as f64,
        )
    }
}

/// One request-reply run: answers per second and round trips.
#[derive(Clone, Debug, Serialize)]
pub struct RequestReply {
    /// Answers per second over the run.
    pub per_second: f64,
    /// Answers.
    pub answered: u64,
    /// Requests answered `failure` or `refuse` (a full queue on a profile
    /// with short mailboxes, say): counted, left out of the rate and the
    /// round trips, and the run goes on.
    pub failed: u64,
    /// The first of those answers' content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Round trip P50, nanoseconds.
    pub p50_ns: u64,
    /// Round trip P99, nanoseconds.
    pub p99_ns: u64,
    #[serde(skip)]
    round_trips: Histogram<u64>,
    #[serde(skip)]
    elapsed: Duration,
}

/// The cluster suite's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// Remote routing (send on `a` to handler start on `b`): P50, ns.
    pub remote_routing_p50_ns: u64,
    /// P99, ns.
    pub remote_routing_p99_ns: u64,
    /// P99.9, ns.
    pub remote_routing_p999_ns: u64,
    /// Messages timed.
    pub remote_routing_count: u64,
    /// A client on `a` to an echo on `b`, one request outstanding.
    pub remote_unloaded: RequestReply,
    /// The same to an echo on `a`.
    pub local_unloaded: RequestReply,
    /// A client on `a` to an echo on `b`, `window` outstanding.
    pub remote: RequestReply,
    /// Node `a`'s remote traffic during `remote`: how many messages each
    /// frame carried to `b` (requests) and back (answers).
    pub remote_traffic: RemoteTraffic,
    /// The same load to an echo on `a`.
    pub local: RequestReply,
    /// Requests each client kept outstanding.
    pub window: usize,
    /// Requests to an agent whose node was declared down, one at a time:
    /// send to `failure` answer.
    pub node_down: FailFast,
    #[serde(skip)]
    remote_routing: Histogram<u64>,
}

/// Requests answered `failure` because their node is gone.
#[derive(Clone, Debug, Serialize)]
pub struct FailFast {
    /// Requests sent (each answered, or the run fails).
    pub answered: u64,
    /// The failure's reason, as the answer's content gives it.
    pub reason: String,
    /// Send to answer, P50, ns.
    pub p50_ns: u64,
    /// P99, ns.
    pub p99_ns: u64,
    /// The slowest, ns.
    pub max_ns: u64,
    #[serde(skip)]
    round_trips: Histogram<u64>,
    #[serde(skip)]
    elapsed: Duration,
}

impl ClusterReport {
    /// The histograms, for the HDR logs: (name, histogram, how long it
    /// was recorded over). Remote routing is timed through the unloaded
    /// remote run; the node-down answers over their own run.
    pub fn histograms(&self) -> Vec<(&'static str, &Histogram<u64>, Duration)> {
        vec![
            (
                "cluster_remote_routing",
                &self.remote_routing,
                self.remote_unloaded.elapsed,
            ),
            (
                "cluster_remote_round_trip_unloaded",
                &self.remote_unloaded.round_trips,
                self.remote_unloaded.elapsed,
            ),
            (
                "cluster_local_round_trip_unloaded",
                &self.local_unloaded.round_trips,
                self.local_unloaded.elapsed,
            ),
            (
                "cluster_remote_round_trip",
                &self.remote.round_trips,
                self.remote.elapsed,
            ),
            (
                "cluster_local_round_trip",
                &self.local.round_trips,
                self.local.elapsed,
            ),
            (
                "cluster_node_down_answer",
                &self.node_down.round_trips,
                self.node_down.elapsed,
            ),
        ]
    }
}

/// Run the suite: two nodes of `profile`, `a` on `plans[0]` and `b` on
/// `plans[1]` (each on its own part of the machine where it has the
/// cores: nodes pinned onto the same cores would take turns on them, and
/// measure that), `duration` per load run.
pub fn run(
    profile: &Profile,
    plans: [&PlacementPlan; 2],
    duration: Duration,
    window: usize,
    progress: &dyn Fn(&str),
) -> Result<ClusterReport, String> {
    progress("cluster: starting nodes a and b on loopback QUIC");
    let mut a = ClusterMember::start(profile, plans[0], "a", None)?;
    let mut b = ClusterMember::start(profile, plans[1], "b", Some(a.address))?;
    let limits = profile.agents.default_limits.clone();
    let everywhere = vec![1u16; b.node.data_shards()];
    b.node
        .deploy_placed(
            "bench-remote-echo",
            crate::standard::ECHO_WAT.as_bytes(),
            &everywhere,
            &limits,
        )
        .map_err(|error| error.to_string())?;
    let local_everywhere = vec![1u16; a.node.data_shards()];
    a.node
        .deploy_placed(
            "bench-local-echo",
            crate::standard::ECHO_WAT.as_bytes(),
            &local_everywhere,
            &limits,
        )
        .map_err(|error| error.to_string())?;
    b.publish()?;
    a.await_remote("bench-remote-echo")?;
    b.node.metrics(true).map_err(|error| error.to_string())?;
    progress(&format!(
        "cluster: remote routing, one request at a time, {duration:?}"
    ));
    let remote_unloaded = request_reply(&a.node, "bench-remote-echo", duration, 1)?;
    let merged = b.node.metrics(false).map_err(|error| error.to_string())?;
    let mut remote_routing = nanosecond_histogram();
    for shard in &merged {
        let _ = remote_routing.add(&shard.routing_remote_ns);
    }
    progress(&format!(
        "cluster: local, one request at a time, {duration:?}"
    ));
    let local_unloaded = request_reply(&a.node, "bench-local-echo", duration, 1)?;
    progress(&format!(
        "cluster: remote request-reply, {window} outstanding, {duration:?}"
    ));
    let before = a.remote_traffic()?;
    let remote = request_reply(&a.node, "bench-remote-echo", duration, window)?;
    let remote_traffic = a.remote_traffic()?.since(before);
    progress(&format!(
        "cluster: local request-reply, {window} outstanding, {duration:?}"
    ));
    let local = request_reply(&a.node, "bench-local-echo", duration, window)?;
    progress("cluster: b leaves; requests to its agent once a has declared it gone");
    b.stop()?;
    await_gone(&a)?;
    let node_down = fail_fast(&a.node, "bench-remote-echo", NODE_DOWN_SENDS)?;
    a.stop()?;
    Ok(ClusterReport {
        remote_routing_p50_ns: remote_routing.value_at_quantile(0.5),
        remote_routing_p99_ns: remote_routing.value_at_quantile(0.99),
        remote_routing_p999_ns: remote_routing.value_at_quantile(0.999),
        remote_routing_count: remote_routing.len(),
        remote_unloaded,
        local_unloaded,
        remote,
        remote_traffic,
        local,
        window,
        node_down,
        remote_routing,
    })
}

/// Wait until `member` has declared every other node gone and dropped
/// their agent lists.
fn await_gone(member: &ClusterMember) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| error.to_string())?;
    let start = Instant::now();
    loop {
        let snapshot = runtime
            .block_on(member.handle.snapshot())
            .ok_or("the cluster loop stopped")?;
        if snapshot.counts.alive == 0
            && snapshot.counts.suspect == 0
            && snapshot.directory.nodes.is_empty()
        {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            return Err(format!(
                "the other node was not declared gone within {PATIENCE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `count` requests to `agent`, whose node is gone, one at a time: each
/// must be answered `failure`.
fn fail_fast(node: &Node, agent: &str, count: usize) -> Result<FailFast, String> {
    let mut client = node.client().map_err(|error| error.to_string())?;
    let id = client
        .resolve(agent)
        .map_err(|error| format!("{error:?}"))?;
    let mut round_trips = nanosecond_histogram();
    let mut reason = String::new();
    let started = Instant::now();
    for _ in 0..count {
        let sent = Instant::now();
        let token = client
            .send(
                id,
                Performative::Request,
                b"anyone?".to_vec(),
                SendOptions::default(),
            )
            .map_err(|error| format!("{error:?}"))?;
        let answer = client
            .await_reply(token, PATIENCE)
            .map_err(|error| format!("a request to a departed node: {error:?}"))?;
        round_trips.saturating_record(sent.elapsed().as_nanos() as u64);
        if answer.performative != Performative::Failure {
            return Err(format!(
                "a request to a departed node was answered {:?}",
                answer.performative
            ));
        }
        reason = String::from_utf8_lossy(&answer.content).into_owned();
    }
    Ok(FailFast {
        answered: round_trips.len(),
        reason,
        p50_ns: round_trips.value_at_quantile(0.5),
        p99_ns: round_trips.value_at_quantile(0.99),
        max_ns: round_trips.max(),
        round_trips,
        elapsed: started.elapsed(),
    })
}

/// One client keeping `window` requests to `agent` outstanding for `duration`.
fn request_reply(
    node: &Node,
    agent: &str,
    duration: Duration,
    window: usize,
) -> Result<RequestReply, String> {
    let mut client = node.client().map_err(|error| error.to_string())?;
    let id = client
        .resolve(agent)
        .map_err(|error| format!("{error:?}"))?;
    let mut round_trips = nanosecond_histogram();
    let mut outstanding: HashMap<u64, Instant> = HashMap::with_capacity(window);
    let started = Instant::now();
    let deadline = started + duration;
    let mut answered = 0u64;
    let mut failed = 0u64;
    let mut first_failure = None;
    let mut answers = Vec::with_capacity(window);
    loop {
        let sending = Instant::now() < deadline;
        while sending && outstanding.len() < window {
            let token = client
                .send(
                    id,
                    Performative::Request,
                    b"0123456789abcdef".to_vec(),
                    SendOptions::default(),
                )
                .map_err(|error| format!("{error:?}"))?;
            outstanding.insert(token, Instant::now());
        }
        if outstanding.is_empty() {
            break;
        }
        // Every answer in, with one pass over the rings and one clock
        // reading for the lot: each was in by then.
        if client.recv_batch(PATIENCE, &mut answers) == 0 {
            return Err(format!(
                "{} requests unanswered within {PATIENCE:?}",
                outstanding.len()
            ));
        }
        let now = Instant::now();
        for answer in answers.drain(..) {
            let Some(sent) = outstanding.remove(&answer.in_reply_to) else {
                continue;
            };
            if answer.performative != Performative::Inform {
                failed += 1;
                first_failure.get_or_insert_with(|| {
                    format!(
                        "{:?}: {}",
                        answer.performative,
                        String::from_utf8_lossy(&answer.content)
                    )
                });
                continue;
            }
            round_trips.saturating_record(now.duration_since(sent).as_nanos() as u64);
            answered += 1;
        }
    }
    let ran = started.elapsed();
    let elapsed = ran.as_secs_f64();
    Ok(RequestReply {
        elapsed: ran,
        per_second: answered as f64 / elapsed.max(1e-9),
        answered,
        failed,
        first_failure,
        p50_ns: round_trips.value_at_quantile(0.5),
        p99_ns: round_trips.value_at_quantile(0.99),
        round_trips,
    })
}

/// The report as text, each figure beside its goal.
pub fn render(report: &ClusterReport) -> String {
    let micros = |nanos: u64| format!("{:.1}µs", nanos as f64 / 1e3);
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    // A P99 of a handful of messages is one of them: no verdict on it.
    let judged = |count: u64, ok: bool| {
        if count < VERDICT_SAMPLES_MIN {
            "too few messages to judge"
        } else {
            met(ok)
        }
    };
    let routed = report.remote_routing_count;
    let mut out = String::new();
    out.push_str(&format!(
        "remote routing (send on a → handler start on b, {} messages): P50 {} (goal ≤ {}: {}), P99 {} (goal ≤ {}: {}), P99.9 {}\n",
        report.remote_routing_count,
        micros(report.remote_routing_p50_ns),
        micros(REMOTE_P50_GOAL_NS),
        judged(routed, report.remote_routing_p50_ns <= REMOTE_P50_GOAL_NS),
        micros(report.remote_routing_p99_ns),
        micros(REMOTE_P99_GOAL_NS),
        judged(routed, report.remote_routing_p99_ns <= REMOTE_P99_GOAL_NS),
        micros(report.remote_routing_p999_ns),
    ));
    for (label, run, window) in [
        ("remote (a → echo on b)", &report.remote_unloaded, 1),
        ("local (a → echo on a)", &report.local_unloaded, 1),
        ("remote (a → echo on b)", &report.remote, report.window),
        ("local (a → echo on a)", &report.local, report.window),
    ] {
        out.push_str(&format!(
            "{label:<24} {window:>4} outstanding: {:>7}/s, round trip P50 {} P99 {} ({} answers{})\n",
            crate::agent_to_agent::rate(run.per_second),
            micros(run.p50_ns),
            micros(run.p99_ns),
            run.answered,
            match &run.first_failure {
                Some(first) => format!(", {} failed, the first {first}", run.failed),
                None => String::new(),
            },
        ));
    }
    let (requests_per_frame, answers_per_frame) = report.remote_traffic.batch_sizes();
    out.push_str(&format!(
        "  with {} outstanding, each frame a → b carried {requests_per_frame:.1} requests and each b → a {answers_per_frame:.1} answers ({} and {} frames)\n",
        report.window, report.remote_traffic.frames_out, report.remote_traffic.frames_in,
    ));
    out.push_str(&format!(
        "remote request-reply goal ≥ {}/s between two nodes on a 2-core machine: {}\n",
        crate::agent_to_agent::rate(REMOTE_RATE_GOAL),
        judged(
            report.remote.answered,
            report.remote.per_second >= REMOTE_RATE_GOAL
        )
    ));
    out.push_str(&format!(
        "a node declared down: {} requests to its agent answered failure ({}), P50 {} P99 {} (goal ≤ {}: {}) max {}\n",
        report.node_down.answered,
        report.node_down.reason,
        micros(report.node_down.p50_ns),
        micros(report.node_down.p99_ns),
        micros(NODE_DOWN_ANSWER_GOAL_NS),
        met(report.node_down.p99_ns <= NODE_DOWN_ANSWER_GOAL_NS),
        micros(report.node_down.max_ns),
    ));
    out.push_str(&format!(
        "the remote path costs {:.1}× the local round trip at the median (one outstanding), and carries {:.0}% of its rate at saturation\n",
        report.remote_unloaded.p50_ns as f64 / report.local_unloaded.p50_ns.max(1) as f64,
        100.0 * report.remote.per_second / report.local.per_second.max(1e-9),
    ));
    out
}
