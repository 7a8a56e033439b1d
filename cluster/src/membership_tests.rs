//! The membership core on a virtual clock: a few nodes, a network that
//! delays, drops and partitions, and each SWIM behaviour and key observed
//! through what it does.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{Header, Message};

use super::*;
use crate::directory::AgentCounts;
use crate::wire::{self, MessagePackCodec};

const START_US: u64 = 1_800_000_000_000_000;

fn settings() -> SwimSettings {
    SwimSettings {
        gossip_interval: Duration::from_millis(100),
        gossip_fanout: 3,
        probe_interval: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(200),
        indirect_probes: 3,
        suspicion_multiplier: 3,
        gossip_to_dead: 3,
        max_packet: 1200 - wire::FRAME_OVERHEAD,
    }
}

fn address(index: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + index as u16))
}

/// Frames sent: when, by which node, to where, of which SWIM kind.
#[derive(Default)]
struct Traffic {
    log: Vec<(Duration, usize, SocketAddr, &'static str)>,
}

impl Traffic {
    fn count(&self, kind: &str) -> u64 {
        self.log.iter().filter(|entry| entry.3 == kind).count() as u64
    }

    fn count_to(&self, to: SocketAddr, kind: &str) -> u64 {
        self.log
            .iter()
            .filter(|entry| entry.2 == to && entry.3 == kind)
            .count() as u64
    }
}

fn kind(frame: &[u8]) -> &'static str {
    let (kind, _, packet) =
        wire::unframe_any(frame, usize::MAX).expect("our own frames are well formed");
    if kind == wire::FrameKind::Directory {
        return match DirectoryMessage::decode(packet).expect("our own directory frames decode") {
            DirectoryMessage::Pull { .. } => "directory_pull",
            DirectoryMessage::List { .. } => "directory_list",
        };
    }
    if kind == wire::FrameKind::Watch {
        return match crate::watch::WatchMessage::decode(packet)
            .expect("our own watch frames decode")
        {
            crate::watch::WatchMessage::Ping { .. } => "watch_ping",
            crate::watch::WatchMessage::Ack { .. } => "watch_ack",
            crate::watch::WatchMessage::Down { .. } => "watch_down",
            crate::watch::WatchMessage::Suspect { .. } => "watch_suspect",
            crate::watch::WatchMessage::Suspected { .. } => "watch_suspected",
        };
    }
    let header: Header<NodeId> = rmp_serde::decode::from_read(packet).expect("a header");
    let _ = MessagePackCodec::default();
    match header.message {
        Message::Ping(_) => "ping",
        Message::Ack(_) => "ack",
        Message::PingReq { .. } => "ping_req",
        Message::IndirectPing { .. } => "indirect_ping",
        Message::IndirectAck { .. } => "indirect_ack",
        Message::ForwardedAck { .. } => "forwarded_ack",
        Message::Announce => "announce",
        Message::Feed => "feed",
        Message::Gossip => "gossip",
        Message::Broadcast => "broadcast",
        Message::TurnUndead => "turn_undead",
    }
}

/// Which frame kinds (as `kind` names them) a filter takes.
type KindFilter = fn(&str) -> bool;

/// A handful of nodes on a virtual clock.
struct Net {
    nodes: Vec<Option<Membership>>,
    now: Duration,
    latency: Duration,
    /// (deliver at, order, to, frame)
    in_flight: Vec<(Duration, u64, SocketAddr, Vec<u8>)>,
    order: u64,
    cut: HashSet<usize>,
    /// Extra delay on everything a node sends.
    slow: BTreeMap<usize, Duration>,
    traffic: Traffic,
    /// Nodes that receive no frame of these kinds.
    deaf: Vec<(usize, KindFilter)>,
}

impl Net {
    fn new(count: usize, swim: &SwimSettings) -> Self {
        let mut net = Self {
            nodes: Vec::new(),
            now: Duration::ZERO,
            latency: Duration::from_micros(300),
            in_flight: Vec::new(),
            order: 0,
            cut: HashSet::new(),
            slow: BTreeMap::new(),
            traffic: Traffic::default(),
            deaf: Vec::new(),
        };
        for index in 0..count {
            let node = net.node(index, swim.clone());
            net.nodes.push(Some(node));
        }
        net
    }

    fn clock(&self) -> Now {
        Now {
            elapsed: self.now,
            unix_us: START_US + self.now.as_micros() as u64,
        }
    }

    fn node(&self, index: usize, swim: SwimSettings) -> Membership {
        Membership::new(
            swim,
            format!("node-{index}"),
            address(index),
            index as u64 + 1,
            self.clock(),
        )
    }

    fn get(&mut self, index: usize) -> &mut Membership {
        self.nodes[index].as_mut().expect("a running node")
    }

    fn get_ref(&self, index: usize) -> &Membership {
        self.nodes[index].as_ref().expect("a running node")
    }

    /// Everyone joins through node 0.
    fn join_all(&mut self) {
        let now = self.clock();
        for index in 1..self.nodes.len() {
            self.get(index).join(&[address(0)], now);
        }
        self.collect();
    }

    fn collect(&mut self) {
        for index in 0..self.nodes.len() {
            let Some(node) = self.nodes[index].as_mut() else {
                continue;
            };
            for out in node.take_outgoing() {
                self.traffic
                    .log
                    .push((self.now, index, out.to, kind(&out.frame)));
                if self.cut.contains(&index) {
                    continue;
                }
                self.order += 1;
                let delay = self.latency + self.slow.get(&index).copied().unwrap_or_default();
                self.in_flight
                    .push((self.now + delay, self.order, out.to, out.frame));
            }
        }
    }

    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let timer = self
                .nodes
                .iter()
                .flatten()
                .filter_map(Membership::next_deadline)
                .min();
            let frame = self.in_flight.iter().map(|(at, ..)| *at).min();
            let Some(next) = [timer, frame].into_iter().flatten().min() else {
                break;
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.clock();
            self.in_flight.sort_by_key(|(at, order, ..)| (*at, *order));
            let due: Vec<_> = {
                let split = self
                    .in_flight
                    .iter()
                    .take_while(|(at, ..)| *at <= self.now)
                    .count();
                self.in_flight.drain(..split).collect()
            };
            for (_, _, to, frame) in due {
                let index = (to.port() - 10_000) as usize;
                if self.cut.contains(&index) {
                    continue;
                }
                let frame_kind = kind(&frame);
                if self
                    .deaf
                    .iter()
                    .any(|(deaf, kinds)| *deaf == index && kinds(frame_kind))
                {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(index).and_then(Option::as_mut) {
                    let _ = node.handle_frame(&frame, now);
                }
            }
            for node in self.nodes.iter_mut().flatten() {
                if node.next_deadline().is_some_and(|at| at <= self.now) {
                    node.advance(now);
                }
            }
            self.collect();
        }
        self.now = end;
    }

    /// `count` nodes joined through node 0 and left to settle for 2 s.
    fn formed(count: usize, swim: &SwimSettings) -> Self {
        let mut net = Self::new(count, swim);
        net.join_all();
        net.run_for(Duration::from_secs(2));
        net
    }

    /// What `observer` knows of each member, without the time-dependent parts.
    fn view(&self, observer: usize) -> Vec<(SocketAddr, MemberState, u16, u64)> {
        self.nodes[observer].as_ref().map_or_else(Vec::new, |node| {
            node.members()
                .into_iter()
                .map(|member| {
                    (
                        member.addr,
                        member.state,
                        member.incarnation,
                        member.generation,
                    )
                })
                .collect()
        })
    }

    fn state_of(&self, observer: usize, member: usize) -> Option<MemberState> {
        self.nodes[observer]
            .as_ref()?
            .members()
            .into_iter()
            .find(|view| view.addr == address(member))
            .map(|view| view.state)
    }

    fn alive_seen_by(&self, observer: usize) -> usize {
        self.nodes[observer]
            .as_ref()
            .map_or(0, |node| node.counts().alive as usize)
    }

    /// The first time, stepping by `step` up to `limit`, when `done` holds.
    fn run_until(
        &mut self,
        limit: Duration,
        step: Duration,
        done: impl Fn(&Net) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            self.run_for(step);
            if done(self) {
                return Some(self.now - start);
            }
        }
        None
    }
}

#[test]
fn three_nodes_join_through_one_seed_and_agree() {
    let mut net = Net::new(3, &settings());
    net.join_all();
    let took = net.run_until(Duration::from_secs(5), Duration::from_millis(10), |net| {
        (0..3).all(|index| net.alive_seen_by(index) == 2)
    });
    assert!(took.is_some(), "every node sees the two others alive");
    let events = net.get(1).take_events();
    assert!(events.contains(&MembershipEvent::Joined), "{events:?}");
    assert!(events
        .iter()
        .any(|event| matches!(event, MembershipEvent::Up(id) if &*id.name == "node-2")));
    let view = net.get(0).members();
    assert_eq!(view.len(), 2);
    assert!(view.iter().all(|member| member.last_heard.is_some()));
    // Node 2 joined after node 0 started: its arrival was timed.
    assert!(!net.get(0).convergence().is_empty());
}

#[test]
fn joins_nobody_answers_are_counted_until_one_is() {
    let swim = settings();
    let mut net = Net::new(2, &swim);
    // The seed hears the joins but its answers are lost.
    net.cut.insert(0);
    net.join_all();
    net.run_for(swim.probe_interval * JOIN_WARN_ROUNDS + swim.probe_interval / 2);
    assert!(
        net.get_ref(1).unanswered_joins() > JOIN_WARN_ROUNDS,
        "{} rounds",
        net.get_ref(1).unanswered_joins()
    );
    net.cut.clear();
    let took = net.run_until(Duration::from_secs(10), Duration::from_millis(10), |net| {
        net.alive_seen_by(1) == 1
    });
    assert!(took.is_some(), "joined once the seed is heard");
    assert_eq!(net.get_ref(1).unanswered_joins(), 0, "counted afresh");
}

#[test]
fn a_silent_member_is_suspected_then_declared_down_within_the_bound() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    net.nodes[2] = None;
    let bound = swim.down_detection_bound(3);
    let took = net
        .run_until(bound * 2, Duration::from_millis(10), |net| {
            net.state_of(0, 2) == Some(MemberState::Down)
                && net.state_of(1, 2) == Some(MemberState::Down)
        })
        .expect("declared down");
    assert!(
        took <= bound,
        "declared down after {took:?}, bound {bound:?}"
    );
    let counters = net.get(0).counters();
    assert!(counters.suspicions_raised >= 1, "{counters:?}");
    assert_eq!(counters.declared_down, 1);
    assert!(net
        .get(0)
        .take_events()
        .iter()
        .any(|event| matches!(event, MembershipEvent::Down(id) if &*id.name == "node-2")));
}

#[test]
fn the_ring_watch_suspects_a_crashed_member_within_an_interval_and_a_timeout() {
    let swim = settings();
    let mut net = Net::formed(8, &swim);
    // Every member has one watcher: the member node 3 watches has none other.
    let watched = net.get(3).watched().expect("a successor").addr;
    let watchers = (0..8)
        .filter(|index| net.get_ref(*index).watched().map(|id| id.addr) == Some(watched))
        .count();
    assert_eq!(watchers, 1);
    let victim = (watched.port() - 10_000) as usize;
    net.nodes[victim] = None;
    let crashed_at = net.now;
    // Its watcher's next round starts within an interval and ends in a
    // verdict a probe timeout later (two more pings on the way).
    let limit = swim.probe_interval + swim.probe_timeout + net.latency * 2;
    let suspected = net
        .run_until(limit * 2, Duration::from_millis(5), |net| {
            net.get_ref(3).counters().watch_suspicions > 0
        })
        .expect("suspected by its watcher");
    assert!(
        suspected <= limit,
        "suspected after {suspected:?}, bound {limit:?}"
    );
    let pings = net
        .traffic
        .log
        .iter()
        .filter(|(at, from, to, kind)| {
            *at >= crashed_at && *from == 3 && *to == watched && *kind == "watch_ping"
        })
        .count();
    assert_eq!(pings, 3, "pinged three times before suspecting");
    // Then declared down by every live node within the suspicion timeout
    // and two probe intervals of the crash.
    let goal =
        crate::settings::suspicion_timeout(swim.suspicion_multiplier, swim.probe_interval, 8)
            + swim.probe_interval * 2;
    let down = net
        .run_until(goal * 2, Duration::from_millis(5), |net| {
            (0..8)
                .filter(|index| *index != victim)
                .all(|index| net.state_of(index, victim) == Some(MemberState::Down))
        })
        .expect("declared down");
    assert!(
        suspected + down <= goal,
        "declared down after {:?}, goal {goal:?}",
        suspected + down
    );
    // The node whose timer declared it (its watcher) told every live member
    // directly, so none depends on gossip alone to hear it.
    assert_eq!(net.get_ref(3).counters().verdicts_sent, 1);
    let told: HashSet<SocketAddr> = net
        .traffic
        .log
        .iter()
        .filter(|(_, from, _, kind)| *from == 3 && *kind == "watch_down")
        .map(|(_, _, to, _)| *to)
        .collect();
    let live: HashSet<SocketAddr> = (0..8)
        .filter(|index| *index != victim && *index != 3)
        .map(address)
        .collect();
    assert_eq!(told, live);
}

#[test]
fn a_node_leaving_mid_suspicion_hands_it_to_its_watcher_who_judges_in_time() {
    let swim = settings();
    let mut net = Net::formed(8, &swim);
    let leaver = 3;
    let watched = net.get(leaver).watched().expect("a successor").addr;
    let victim = (watched.port() - 10_000) as usize;
    // The member watching the leaver inherits its watch, and its suspicions.
    let heir = (0..8)
        .find(|index| net.get_ref(*index).watched().map(|id| id.addr) == Some(address(leaver)))
        .expect("the leaver has a watcher");
    net.nodes[victim] = None;
    let crashed_at = net.now;
    net.run_until(Duration::from_secs(5), Duration::from_millis(5), |net| {
        net.get_ref(leaver).counters().watch_suspicions > 0
    })
    .expect("suspected by its watcher");
    let suspected_at = net.now;
    // Half-way through its suspicion timer, the suspecting node leaves.
    let timeout = net.get_ref(leaver).suspicion_timeout();
    net.run_for(timeout / 2);
    let now = net.clock();
    net.get(leaver).leave(now);
    net.collect();
    assert_eq!(net.get_ref(leaver).counters().suspicions_handed_over, 1);
    assert_eq!(net.traffic.count_to(address(heir), "watch_suspect"), 1);
    net.nodes[leaver] = None;
    // Declared down everywhere when the leaver's timer would have ended (the
    // heir judges then, and its verdict takes a hop), so within the bound
    // from the crash, as if the leaver had stayed. Without the handover the
    // heir's own watch starts a fresh suspicion half a timeout late.
    let goal = timeout + swim.probe_interval * 2;
    net.run_until(goal * 2, Duration::from_millis(5), |net| {
        (0..8)
            .filter(|index| *index != victim && *index != leaver)
            .all(|index| net.state_of(index, victim) == Some(MemberState::Down))
    })
    .expect("declared down");
    let slack = net.latency * 4 + Duration::from_millis(10);
    assert!(
        net.now - suspected_at <= timeout + slack,
        "declared down {:?} after the suspicion, which had {timeout:?} to run",
        net.now - suspected_at
    );
    assert!(net.now - crashed_at <= goal);
    assert_eq!(net.get_ref(heir).counters().suspicions_taken_over, 1);
}

#[test]
fn a_verdict_from_another_node_is_applied_and_a_bad_one_refused() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    let judged = net.get_ref(2).identity().clone();
    let verdict = |member: NodeId, seq: u64| {
        wire::frame_of(
            wire::FrameKind::Watch,
            wire::FrameHeader { nonce: 77, seq },
            &crate::watch::WatchMessage::Down {
                from: address(9),
                member,
            }
            .encode(),
        )
    };
    let now = net.clock();
    // A name off the wire must follow the naming rule: refused, nothing changes.
    let bad = NodeId::new("no spaces allowed", judged.addr, judged.generation);
    assert!(net.get(0).handle_frame(&verdict(bad, 1), now).is_err());
    assert_eq!(net.state_of(0, 2), Some(MemberState::Alive));
    net.get(0)
        .handle_frame(&verdict(judged, 2), now)
        .expect("a verdict is taken");
    assert_eq!(net.state_of(0, 2), Some(MemberState::Down));
}

#[test]
fn a_slow_member_is_suspected_and_refutes_in_time() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    // Node 2 hears everything but answers too late for a probe.
    net.slow.insert(2, swim.probe_interval);
    net.run_until(Duration::from_secs(5), Duration::from_millis(10), |net| {
        net.state_of(0, 2) == Some(MemberState::Suspect)
            || net.state_of(1, 2) == Some(MemberState::Suspect)
    })
    .expect("suspected");
    net.slow.clear();
    net.run_until(Duration::from_secs(3), Duration::from_millis(10), |net| {
        net.state_of(0, 2) == Some(MemberState::Alive)
            && net.state_of(1, 2) == Some(MemberState::Alive)
    })
    .expect("alive again");
    // Refutations are counted when the suspicion's timeout ends.
    net.run_for(crate::settings::suspicion_timeout(
        swim.suspicion_multiplier,
        swim.probe_interval,
        3,
    ));
    let refutations: u64 = (0..2)
        .map(|index| net.get(index).counters().suspicions_refuted)
        .sum();
    assert!(refutations >= 1);
    assert_eq!(
        net.get(0).counters().declared_down + net.get(1).counters().declared_down,
        0
    );
}

#[test]
fn a_restarted_member_rejoins_under_a_newer_generation() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    let old = net.get(2).identity().clone();
    net.nodes[2] = None;
    net.run_until(
        swim.down_detection_bound(3) * 2,
        Duration::from_millis(10),
        |net| net.state_of(0, 2) == Some(MemberState::Down),
    )
    .expect("down");
    net.get(0).take_events();
    let restarted = net.node(2, swim.clone());
    net.nodes[2] = Some(restarted);
    let now = net.clock();
    net.get(2).join(&[address(0)], now);
    net.collect();
    net.run_until(Duration::from_secs(5), Duration::from_millis(10), |net| {
        (0..3).all(|index| net.alive_seen_by(index) == 2)
    })
    .expect("rejoined");
    let events = net.get(0).take_events();
    assert!(
        events.iter().any(
            |event| matches!(event, MembershipEvent::Renamed { previous, current }
            if *previous == old && current.generation > old.generation)
        ),
        "{events:?}"
    );
}

#[test]
fn a_member_declared_down_while_alive_renews_its_identity_and_rejoins() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    net.cut.insert(2);
    net.run_until(
        swim.down_detection_bound(3) * 2,
        Duration::from_millis(10),
        |net| {
            net.state_of(0, 2) == Some(MemberState::Down)
                && net.state_of(1, 2) == Some(MemberState::Down)
        },
    )
    .expect("down");
    net.cut.clear();
    net.run_until(Duration::from_secs(10), Duration::from_millis(10), |net| {
        (0..3).all(|index| net.alive_seen_by(index) == 2)
    })
    .expect("back");
    assert_eq!(net.get(2).counters().renewals, 1);
    // Its old identity's death reached it too; it is not its own member,
    // down or otherwise, once the news has spread.
    let _ = net.run_until(Duration::from_secs(2), Duration::from_millis(10), |_| false);
    let own = net.get(2).identity().addr;
    let members = net.get(2).members();
    assert!(
        members.iter().all(|member| member.addr != own),
        "{members:?}"
    );
    assert_eq!(net.get(2).counts().down, 0);
    assert_eq!(net.get(2).counts().alive, 2);
}

#[test]
fn a_member_that_leaves_is_seen_down_at_once() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    let now = net.clock();
    net.get(1).leave(now);
    net.collect();
    let took = net
        .run_until(Duration::from_secs(2), Duration::from_millis(1), |net| {
            net.state_of(0, 1) == Some(MemberState::Down)
                && net.state_of(2, 1) == Some(MemberState::Down)
        })
        .expect("seen to leave");
    assert!(
        took < swim.probe_timeout,
        "seen after {took:?}, before any probe could fail"
    );
}

#[test]
fn damaged_replayed_and_foreign_frames_change_nothing() {
    let mut net = Net::formed(3, &settings());
    // A frame node 1 really sent to node 0, captured.
    let now = net.clock();
    net.get(1).leave(now);
    let captured = net
        .get(1)
        .take_outgoing()
        .into_iter()
        .find(|out| out.to == address(0))
        .expect("a frame");
    let before = net.view(0);
    let mut damaged = captured.frame.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let bad_packet = wire::frame(
        wire::FrameHeader { nonce: 1, seq: 1 },
        b"\xc1\xc1 not messagepack",
    );
    let results = [
        net.get(0)
            .handle_frame(&captured.frame[..captured.frame.len() / 2], now),
        net.get(0).handle_frame(&damaged, now),
        net.get(0).handle_frame(b"", now),
        net.get(0).handle_frame(&bad_packet, now),
        net.get(0).handle_frame(
            &wire::frame(wire::FrameHeader { nonce: 2, seq: 1 }, &[0u8; 70_000]),
            now,
        ),
    ];
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert_eq!(net.view(0), before, "nothing changed");
    assert_eq!(net.get(0).handle_frame(&captured.frame, now), Ok(()));
    assert_eq!(
        net.get(0).handle_frame(&captured.frame, now),
        Err(WireError::Replayed)
    );
    let counters = net.get(0).counters();
    assert_eq!(counters.dropped_truncated, 2);
    assert_eq!(counters.dropped_corrupt, 1);
    assert_eq!(counters.dropped_invalid, 1);
    assert_eq!(counters.dropped_oversized, 1);
    assert_eq!(counters.dropped_replayed, 1);
}

// Each key, observed through its effect.

/// Traffic of five nodes forming a cluster through one seed, for 3 s.
fn forming_traffic(swim: SwimSettings) -> Traffic {
    let mut net = Net::new(5, &swim);
    net.join_all();
    net.run_for(Duration::from_secs(3));
    std::mem::take(&mut net.traffic)
}

#[test]
fn gossip_interval_and_fanout_set_the_gossip_rate() {
    let base = forming_traffic(settings()).count("gossip");
    let slower = forming_traffic(SwimSettings {
        gossip_interval: Duration::from_millis(400),
        ..settings()
    })
    .count("gossip");
    let narrower = forming_traffic(SwimSettings {
        gossip_fanout: 1,
        ..settings()
    })
    .count("gossip");
    assert!(slower < base, "every 400ms: {slower}, every 100ms: {base}");
    assert!(narrower < base, "fanout 1: {narrower}, fanout 3: {base}");
}

#[test]
fn probe_interval_sets_the_probe_rate() {
    let count = |swim: SwimSettings| {
        let mut net = Net::new(3, &swim);
        net.join_all();
        net.run_for(Duration::from_secs(3));
        net.traffic = Traffic::default();
        net.run_for(Duration::from_secs(10));
        net.traffic.count("ping")
    };
    // 3 nodes × 2 probes/s × 10 s, then half as many.
    assert_eq!(count(settings()), 60);
    assert_eq!(
        count(SwimSettings {
            probe_interval: Duration::from_secs(1),
            ..settings()
        }),
        30
    );
}

/// How long after a member is first suspected every observer declares it down.
fn suspicion_span(swim: SwimSettings) -> Duration {
    let mut net = Net::formed(3, &swim);
    net.nodes[2] = None;
    net.run_until(Duration::from_secs(20), Duration::from_millis(5), |net| {
        net.state_of(0, 2) == Some(MemberState::Suspect)
            || net.state_of(1, 2) == Some(MemberState::Suspect)
    })
    .expect("suspected");
    net.run_until(Duration::from_secs(30), Duration::from_millis(5), |net| {
        net.state_of(0, 2) == Some(MemberState::Down)
            || net.state_of(1, 2) == Some(MemberState::Down)
    })
    .expect("down")
}

#[test]
fn suspicion_multiplier_sets_how_long_a_suspect_has_to_refute() {
    let three = suspicion_span(settings());
    let six = suspicion_span(SwimSettings {
        suspicion_multiplier: 6,
        ..settings()
    });
    // 3 × 500ms, then 6 × 500ms (log10 3 < 1).
    assert!(
        three >= Duration::from_millis(1400) && three <= Duration::from_millis(1600),
        "{three:?}"
    );
    assert!(
        six >= Duration::from_millis(2900) && six <= Duration::from_millis(3100),
        "{six:?}"
    );
}

/// Announces sent to a member that stopped, after it is declared down.
fn frames_after_down(swim: SwimSettings) -> u64 {
    let mut net = Net::formed(3, &swim);
    net.nodes[2] = None;
    net.run_until(Duration::from_secs(20), Duration::from_millis(5), |net| {
        net.state_of(0, 2) == Some(MemberState::Down)
            && net.state_of(1, 2) == Some(MemberState::Down)
    })
    .expect("down");
    net.traffic = Traffic::default();
    // Long enough for the rounds; short of the first reconnect attempt
    // (every ten probe intervals), which is not one of them.
    net.run_for(swim.gossip_interval * (swim.gossip_to_dead + 2));
    net.traffic.count_to(address(2), "announce")
}

#[test]
fn gossip_to_dead_bounds_the_rounds_a_dead_member_still_receives() {
    let three = frames_after_down(settings());
    let five = frames_after_down(SwimSettings {
        gossip_to_dead: 5,
        ..settings()
    });
    // Each of the two observers sends one a round (the second observer may
    // learn a moment later, and still be sending when the window opens).
    assert!((5..=6).contains(&three), "{three}");
    assert!((9..=10).contains(&five), "{five}");
    let none = frames_after_down(SwimSettings {
        gossip_to_dead: 0,
        ..settings()
    });
    assert_eq!(none, 0, "0 sends nothing to a member declared down");
}

#[test]
fn probe_timeout_and_indirect_probes_shape_the_indirect_cycle() {
    // (ping_req frames, the wait from each ping to a silent member until the
    // prober asks others)
    let observe = |swim: SwimSettings| {
        let mut net = Net::new(5, &swim);
        net.join_all();
        net.run_for(Duration::from_secs(3));
        net.cut.insert(4);
        net.traffic = Traffic::default();
        net.run_for(Duration::from_millis(1200));
        let log = &net.traffic.log;
        let mut waits = Vec::new();
        for (at, from, _, _) in log.iter().filter(|entry| entry.3 == "ping_req") {
            // A prober whose ping went out before the window opened is skipped.
            let ping = log
                .iter()
                .filter(|entry| {
                    entry.1 == *from && entry.2 == address(4) && entry.3 == "ping" && entry.0 <= *at
                })
                .map(|entry| entry.0)
                .max();
            if let Some(ping) = ping {
                waits.push(*at - ping);
            }
        }
        (net.traffic.count("ping_req"), waits)
    };
    let (three, waits) = observe(settings());
    let (one, _) = observe(SwimSettings {
        indirect_probes: 1,
        ..settings()
    });
    assert!(three > 0 && one > 0);
    assert_eq!(three % 3, 0, "three members asked each time: {three}");
    assert_eq!(three / 3, one, "one member asked each time: {one}");
    assert!(
        !waits.is_empty() && waits.iter().all(|wait| *wait == Duration::from_millis(200)),
        "{waits:?}"
    );
    let (_, waits) = observe(SwimSettings {
        probe_timeout: Duration::from_millis(350),
        ..settings()
    });
    assert!(
        !waits.is_empty() && waits.iter().all(|wait| *wait == Duration::from_millis(350)),
        "{waits:?}"
    );
}

mod decoders {
    //! Arbitrary bytes through every decoder a peer can reach: the frame,
    //! the packet's sender, and the whole core. Nothing panics, and nothing
    //! that fails a check changes membership.
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_and_never_change_membership(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = wire::unframe(&bytes, 4096);
            let _ = wire::packet_sender(&bytes);
            let mut net = Net::new(2, &settings());
            net.join_all();
            net.run_for(Duration::from_secs(1));
            let before = net.view(0);
            let now = net.clock();
            prop_assert!(net.get(0).handle_frame(&bytes, now).is_err());
            prop_assert_eq!(net.view(0), before);
        }

        #[test]
        fn a_well_framed_arbitrary_packet_changes_nothing_when_it_fails(packet in proptest::collection::vec(any::<u8>(), 0..1100), seq in any::<u64>()) {
            let mut net = Net::new(2, &settings());
            net.join_all();
            net.run_for(Duration::from_secs(1));
            let before = net.view(0);
            let now = net.clock();
            let framed = wire::frame(wire::FrameHeader { nonce: 99, seq }, &packet);
            if net.get(0).handle_frame(&framed, now).is_err() {
                prop_assert_eq!(net.view(0), before);
            }
        }

        #[test]
        fn a_real_frame_with_one_byte_flipped_is_refused(flip in any::<usize>(), bit in 0u8..8) {
            let mut net = Net::new(2, &settings());
            net.join_all();
            net.run_for(Duration::from_secs(1));
            let now = net.clock();
            net.get(1).leave(now);
            let mut frame = net.get(1).take_outgoing().into_iter().next().expect("a farewell").frame;
            let at = flip % frame.len();
            frame[at] ^= 1 << bit;
            let before = net.view(0);
            // A flipped header byte may still parse (the nonce, the
            // sequence); the payload's checksum catches the rest.
            if net.get(0).handle_frame(&frame, now).is_err() {
                prop_assert_eq!(net.view(0), before);
            } else {
                prop_assert!((2..18).contains(&at), "a flip at {} got through", at);
            }
        }
    }
}

// The cluster directory: which agents each node hosts.

fn agents(list: &[(&str, u32)]) -> AgentCounts {
    list.iter()
        .map(|(name, count)| ((*name).to_owned(), *count))
        .collect()
}

/// The agents `observer` believes `node` hosts, if it holds `node`'s list.
fn listed(net: &Net, observer: usize, node: usize) -> Option<AgentCounts> {
    net.nodes[observer]
        .as_ref()?
        .directory()
        .node(address(node))
        .map(|entry| entry.agents.clone())
}

#[test]
fn published_agents_reach_every_node_and_changes_replace_them() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    let now = net.clock();
    net.get(0).publish_agents(agents(&[("echo", 2)]), now);
    net.collect();
    net.run_until(Duration::from_secs(3), Duration::from_millis(10), |net| {
        (1..3).all(|index| listed(net, index, 0) == Some(agents(&[("echo", 2)])))
    })
    .expect("the list reached both other nodes");
    let holder = net.get(0).identity().clone();
    assert_eq!(
        net.get(1).directory().choose("echo", 7).cloned(),
        Some(holder)
    );
    assert_eq!(net.get(0).directory().local().0, 1);

    let now = net.clock();
    net.get(0)
        .publish_agents(agents(&[("echo", 2), ("counter", 1)]), now);
    net.collect();
    net.run_until(Duration::from_secs(3), Duration::from_millis(10), |net| {
        (1..3).all(|index| listed(net, index, 0) == Some(agents(&[("echo", 2), ("counter", 1)])))
    })
    .expect("the change replaced the list");
    let now = net.clock();
    net.get(0).publish_agents(AgentCounts::new(), now);
    net.collect();
    net.run_until(Duration::from_secs(3), Duration::from_millis(10), |net| {
        (1..3).all(|index| net.get_ref(index).directory().hosts("echo").is_empty())
    })
    .expect("an undeploy empties the list");
    // Lists are pulled, never gossiped: each node asked node 0 for each version.
    assert!(net.traffic.count("directory_list") >= 6);
}

#[test]
fn a_node_that_joins_later_learns_every_list() {
    let swim = settings();
    let mut net = Net::new(4, &swim);
    let now = net.clock();
    for index in 1..3 {
        net.get(index).join(&[address(0)], now);
    }
    net.get(0).publish_agents(agents(&[("echo", 1)]), now);
    net.get(1).publish_agents(agents(&[("tally", 3)]), now);
    net.collect();
    net.run_for(Duration::from_secs(2));
    let now = net.clock();
    net.get(3).join(&[address(2)], now);
    net.collect();
    net.run_until(Duration::from_secs(3), Duration::from_millis(10), |net| {
        listed(net, 3, 0) == Some(agents(&[("echo", 1)]))
            && listed(net, 3, 1) == Some(agents(&[("tally", 3)]))
            && listed(net, 3, 2) == Some(AgentCounts::new())
    })
    .expect("the newcomer pulled every member's list");
}

#[test]
fn a_crashed_node_leaves_the_directory_and_its_restart_is_listed_anew() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    let now = net.clock();
    net.get(2).publish_agents(agents(&[("tally", 1)]), now);
    net.collect();
    net.run_until(Duration::from_secs(3), Duration::from_millis(10), |net| {
        listed(net, 0, 2).is_some_and(|list| !list.is_empty())
    })
    .expect("listed");
    net.nodes[2] = None;
    net.run_until(
        swim.down_detection_bound(3) * 2,
        Duration::from_millis(10),
        |net| net.state_of(0, 2) == Some(MemberState::Down),
    )
    .expect("declared down");
    assert_eq!(listed(&net, 0, 2), None, "a down node hosts nothing");
    assert!(net.get(0).directory().hosts("tally").is_empty());

    let restarted = net.node(2, swim.clone());
    net.nodes[2] = Some(restarted);
    let now = net.clock();
    net.get(2).publish_agents(agents(&[("echo", 4)]), now);
    net.get(2).join(&[address(0)], now);
    net.collect();
    net.run_until(Duration::from_secs(5), Duration::from_millis(10), |net| {
        listed(net, 0, 2) == Some(agents(&[("echo", 4)]))
    })
    .expect("the restart's list");
    let entry = net
        .get(0)
        .directory()
        .node(address(2))
        .expect("held")
        .clone();
    assert_eq!(
        entry.node,
        *net.get(2).identity(),
        "held under the new generation"
    );
}

#[test]
fn a_note_lost_to_a_cut_is_made_good_by_the_refresh() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    // Node 1 hears nothing for a moment (shorter than a suspicion).
    net.cut.insert(1);
    let now = net.clock();
    net.get(0).publish_agents(agents(&[("echo", 1)]), now);
    net.collect();
    net.run_for(Duration::from_millis(300));
    net.cut.remove(&1);
    let took = net
        .run_until(
            swim.probe_interval * (crate::directory::NOTE_REFRESH_PROBES + 4),
            Duration::from_millis(10),
            |net| listed(net, 1, 0) == Some(agents(&[("echo", 1)])),
        )
        .expect("caught up by the refreshed note or a retried pull");
    assert!(listed(&net, 2, 0).is_some(), "{took:?}");
}

#[test]
fn lists_from_a_node_not_known_alive_are_dropped_and_bad_ones_refused() {
    let swim = settings();
    let mut net = Net::formed(3, &swim);
    let stranger = NodeId::new("stranger", address(9), START_US);
    let list = |from: &NodeId, agents: Vec<(String, u32)>| {
        wire::frame_of(
            wire::FrameKind::Directory,
            wire::FrameHeader { nonce: 5, seq: 1 },
            &DirectoryMessage::List {
                from: from.clone(),
                version: 1,
                agents,
            }
            .encode(),
        )
    };
    let now = net.clock();
    let before = net.get(0).counters();
    assert_eq!(
        net.get(0)
            .handle_frame(&list(&stranger, vec![("echo".into(), 1)]), now),
        Ok(())
    );
    assert!(net.get(0).directory().hosts("echo").is_empty());
    assert_eq!(
        net.get(0).counters().directory_lists_dropped,
        before.directory_lists_dropped + 1
    );
    let member = net.get(1).identity().clone();
    assert_eq!(
        net.get(0)
            .handle_frame(&list(&member, vec![("not a name".into(), 1)]), now),
        Err(WireError::BadIdentity)
    );
    assert_eq!(
        net.get(0).counters().dropped_invalid,
        before.dropped_invalid + 1
    );
}

/// SWIM's own frames (not the ring watch's, not the directory's).
fn swim_kind(kind: &str) -> bool {
    !kind.starts_with("watch_") && !kind.starts_with("directory")
}

#[test]
fn a_member_gossip_never_reaches_is_told_it_is_suspected_and_refutes() {
    let swim = settings();
    let mut net = Net::formed(8, &swim);
    let deaf = 5;
    // Node 5 hears no SWIM frame: every probe of it fails, and no gossip
    // of the suspicions that follow reaches it, though it still sends and
    // its ring watch still answers. Only being told can save it.
    net.deaf.push((deaf, swim_kind));
    let timeout = net.get_ref(0).suspicion_timeout();
    let span = timeout * 3;
    let declared = net.run_until(span, Duration::from_millis(5), |net| {
        (0..8)
            .filter(|index| *index != deaf)
            .any(|index| net.state_of(index, deaf) == Some(MemberState::Down))
    });
    assert!(
        declared.is_none(),
        "a live member was declared down at {:?}",
        net.now
    );
    let told: u64 = (0..8)
        .map(|index| net.get_ref(index).counters().suspicions_told)
        .sum();
    assert!(told > 0, "its suspicions were told to it");
    assert!(net.get_ref(deaf).counters().suspicions_heard > 0);
    assert!(net.traffic.count_to(address(deaf), "watch_suspected") > 0);

    // The control: with the notices lost too, the same member is declared
    // down within a suspicion timeout, so they are what kept it alive.
    net.deaf.push((deaf, |kind| kind == "watch_suspected"));
    net.run_until(span, Duration::from_millis(5), |net| {
        (0..8)
            .filter(|index| *index != deaf)
            .any(|index| net.state_of(index, deaf) == Some(MemberState::Down))
    })
    .expect("declared down once nothing tells it");
}

#[test]
fn a_member_learned_already_suspect_gets_a_timer_of_its_own() {
    let swim = settings();
    let mut net = Net::formed(6, &swim);
    let crashed = 4;
    net.nodes[crashed] = None;
    net.run_until(Duration::from_secs(5), Duration::from_millis(5), |net| {
        net.state_of(0, crashed) == Some(MemberState::Suspect)
    })
    .expect("node 0 suspects the crashed member");
    // A node joining through node 0 now learns the crashed member as
    // suspect. foca would time it only once its own probes came round to
    // it; the membership core times it at once.
    let joiner = net.node(6, swim.clone());
    net.nodes.push(Some(joiner));
    let now = net.clock();
    net.get(6).join(&[address(0)], now);
    net.collect();
    net.run_until(Duration::from_secs(1), Duration::from_millis(1), |net| {
        net.state_of(6, crashed) == Some(MemberState::Suspect)
    })
    .expect("the joiner learns the member as suspect");
    let timed = net.get_ref(6).effects.timers.iter().any(|Reverse(due)| {
        matches!(&due.timer, Timer::ChangeSuspectToDown { member_id, .. } if member_id.addr == address(crashed))
    });
    assert!(timed, "the joiner runs its own suspicion timer");
    assert!(net.get_ref(6).counters().suspicions_raised >= 1);
}

/// A node without seeds (a seed restarted) is not settled alone: its
/// stored messages would run before it knows the other nodes' agents. It
/// settles once another member reaches it.
#[test]
fn a_node_without_seeds_settles_only_once_a_member_reaches_it() {
    let mut net = Net::new(2, &settings());
    net.run_for(Duration::from_secs(2));
    assert!(!net.get_ref(0).has_seeds());
    assert!(
        !net.get_ref(0).directory_settled(),
        "alone, it knows no other node's agents yet"
    );
    net.join_all();
    let settled = net.run_until(Duration::from_secs(5), Duration::from_millis(10), |net| {
        net.get_ref(0).directory_settled()
    });
    assert!(
        settled.is_some(),
        "a member reached it and its list arrived"
    );
    assert!(net.get_ref(1).has_seeds() && net.get_ref(1).directory_settled());
}
