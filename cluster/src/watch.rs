//! The ring watch: a bound on how long a crashed member goes unnoticed.
//!
//! SWIM probes members in a shuffled round, each node on its own, so the
//! first probe of a member that crashed can be several probe intervals
//! away: with N − 1 probers, an interval passes without one about a third
//! of the time, and at P99 about 4.6 intervals go by. The ring watch adds a
//! deterministic watcher beside those probes. The active members, ordered
//! by a hash of their address (the same order on every node that knows the
//! same members), form a ring, and each node watches its successor: once
//! per probe interval it pings it and expects to hear from it (an answer,
//! or any other frame) within the probe timeout. A ping is sent again at a
//! third and at two thirds of the timeout while nothing was heard, so one
//! lost packet does not raise a suspicion. A member that stays silent is
//! suspected through foca, as a failed probe would: the suspicion is
//! gossiped (the member refutes it if it is alive) and foca declares it
//! down when the suspicion timeout ends. Every active member has a watcher,
//! so a crash is suspected within one probe interval and a timeout.
//!
//! This module holds the ring and the rounds; the membership core
//! ([`crate::membership`]) sends the pings, answers them, and raises the
//! suspicion.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{NodeId, WireError};

/// A watch frame's message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchMessage {
    /// From a member's watcher: answer to `from`.
    Ping {
        /// Where the watcher listens.
        from: SocketAddr,
    },
    /// The answer to a ping.
    Ack {
        /// Where the watched member listens.
        from: SocketAddr,
    },
    /// A verdict, sent to every member by the node whose suspicion timer
    /// declared `member` down (see `Membership`'s verdicts).
    Down {
        /// The node that declared it.
        from: SocketAddr,
        /// The member declared down.
        member: NodeId,
    },
    /// From a node leaving gracefully, to the member that takes over its
    /// watch: a suspicion its own timer would have judged. foca runs a
    /// suspicion timer only on the node that suspected, so without this a
    /// leave orphans the suspicion, and the member is judged only once
    /// another node suspects it anew, a whole suspicion timeout later.
    Suspect {
        /// The node leaving.
        from: SocketAddr,
        /// The member suspected.
        member: NodeId,
        /// The incarnation it was suspected at (a refutation raises it).
        incarnation: u16,
        /// What was left of the suspicion timeout, in microseconds.
        left_us: u64,
    },
    /// A suspicion told to the member suspected, by the node whose timer
    /// judges it, at once and then each probe interval while it stands
    /// (Lifeguard's buddy system). SWIM spreads a suspicion as gossip, which
    /// can reach every node but the one suspected (at 5% loss a simulated
    /// day showed it), and then nothing refutes it: a live member is
    /// declared down. Told directly, the member refutes at once.
    Suspected {
        /// The node whose timer judges the suspicion.
        from: SocketAddr,
        /// The member suspected: the receiver, unless it restarted since.
        member: NodeId,
        /// The incarnation it is suspected at.
        incarnation: u16,
    },
}

impl WatchMessage {
    /// As MessagePack.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a watch message always encodes")
    }

    /// Read one.
    pub fn decode(packet: &[u8]) -> Result<Self, WireError> {
        rmp_serde::from_slice(packet).map_err(|error| WireError::Decode(error.to_string()))
    }

    /// Who sent it.
    pub fn sender(&self) -> SocketAddr {
        match self {
            WatchMessage::Ping { from }
            | WatchMessage::Ack { from }
            | WatchMessage::Down { from, .. }
            | WatchMessage::Suspect { from, .. }
            | WatchMessage::Suspected { from, .. } => *from,
        }
    }
}

/// Pings a round sends at most: at its start, then at a third and at two
/// thirds of the probe timeout while nothing was heard.
const PINGS_PER_ROUND: u32 = 3;

/// What the watch wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WatchAction {
    /// Ping this member.
    Ping(SocketAddr),
    /// Nothing was heard from this member within the probe timeout.
    Suspect(NodeId),
}

/// One round: the member watched, since when, and the pings sent.
#[derive(Clone, Debug)]
struct Round {
    /// The successor, and past each one this watch suspects, the next.
    targets: Vec<NodeId>,
    started: Duration,
    pings: u32,
}

/// Members a round watches at most: the successor and, while the ones
/// before are suspected here, those after it.
const TARGETS_MAX: usize = 3;

/// The ring and the current round. See the module docs.
#[derive(Debug)]
pub(crate) struct RingWatch {
    me: (u64, SocketAddr),
    /// The active members other than this node, in ring order.
    ring: BTreeMap<(u64, SocketAddr), NodeId>,
    /// The next member after this node on the ring, kept as the ring
    /// changes: each round asks for it, and a search of a thousand-member
    /// tree per round was a few percent of the simulator's time.
    successor: Option<NodeId>,
    /// Members this watch suspected and has not heard from since: a round
    /// watches past them, so a crash right after theirs is not left
    /// unwatched until they are declared down.
    suspected: std::collections::BTreeSet<SocketAddr>,
    round: Option<Round>,
    next_round: Duration,
}

/// A member's place on the ring: its address hashed (splitmix64), so
/// neighbours on the ring are not neighbours by address.
fn ring_key(addr: SocketAddr) -> (u64, SocketAddr) {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) => u128::from(ip.to_ipv6_mapped()),
        std::net::IpAddr::V6(ip) => u128::from(ip),
    };
    let seed = (ip as u64) ^ ((ip >> 64) as u64).rotate_left(29) ^ u64::from(addr.port());
    (crate::mix64(seed), addr)
}

impl RingWatch {
    /// The watch of the node at `me`, alone on its ring.
    pub(crate) fn new(me: SocketAddr) -> Self {
        Self {
            me: ring_key(me),
            ring: BTreeMap::new(),
            successor: None,
            suspected: std::collections::BTreeSet::new(),
            round: None,
            next_round: Duration::ZERO,
        }
    }

    /// A member became active (or came back under a newer identity).
    pub(crate) fn insert(&mut self, member: &NodeId) {
        if member.addr != self.me.1 {
            let before = self.successor().map(|successor| successor.addr);
            // A new identity at that address is not the one suspected.
            if self
                .ring
                .insert(ring_key(member.addr), member.clone())
                .as_ref()
                != Some(member)
            {
                self.suspected.remove(&member.addr);
            }
            self.ring_changed(before);
        }
    }

    /// Find the successor again; a new one is watched at once, not from the
    /// next round: it may be the member a departed watcher was watching,
    /// unwatched since.
    fn ring_changed(&mut self, before: Option<SocketAddr>) {
        self.successor = self.after(self.me).cloned();
        if self.successor().map(|successor| successor.addr) != before {
            self.next_round = Duration::ZERO;
        }
    }

    /// A member was declared down or left: it is watched no more.
    pub(crate) fn remove(&mut self, member: &NodeId) {
        let key = ring_key(member.addr);
        if self.ring.get(&key) == Some(member) {
            let before = self.successor().map(|successor| successor.addr);
            self.ring.remove(&key);
            self.suspected.remove(&member.addr);
            if let Some(round) = &mut self.round {
                round.targets.retain(|target| target.addr != member.addr);
            }
            self.ring_changed(before);
        }
    }

    /// Every active member but this node.
    pub(crate) fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.ring.values()
    }

    /// The active member at `addr`, if there is one.
    pub(crate) fn member(&self, addr: SocketAddr) -> Option<&NodeId> {
        self.ring.get(&ring_key(addr))
    }

    /// The member this node watches: the next one after it on the ring.
    pub(crate) fn successor(&self) -> Option<&NodeId> {
        self.successor.as_ref()
    }

    /// The member before this node on the ring (wrapping): the one that
    /// watches it, and so takes over its watch when it leaves.
    pub(crate) fn predecessor(&self) -> Option<&NodeId> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.ring
            .range((Unbounded, Excluded(self.me)))
            .next_back()
            .or_else(|| self.ring.iter().next_back())
            .map(|(_, member)| member)
    }

    /// The next member after `key` on the ring (wrapping), never this node.
    fn after(&self, key: (u64, SocketAddr)) -> Option<&NodeId> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.ring
            .range((Excluded(key), Unbounded))
            .next()
            .or_else(|| self.ring.iter().next())
            .map(|(_, member)| member)
    }

    /// What a round watches: the successor and, past each member this
    /// watch suspects, the next one (at most [`TARGETS_MAX`]).
    fn targets(&self) -> Vec<NodeId> {
        let mut targets: Vec<NodeId> = Vec::new();
        let mut next = self.successor();
        while let Some(member) = next {
            if targets.iter().any(|target| target.addr == member.addr) {
                break;
            }
            targets.push(member.clone());
            if targets.len() == TARGETS_MAX || !self.suspected.contains(&member.addr) {
                break;
            }
            next = self.after(ring_key(member.addr));
        }
        targets
    }

    /// What is due at `now`: the round's verdict or its next ping, or a new
    /// round. `heard_since(addr, t)` tells whether a frame from `addr` was
    /// taken at or after `t`.
    pub(crate) fn poll(
        &mut self,
        now: Duration,
        interval: Duration,
        timeout: Duration,
        heard_since: impl Fn(SocketAddr, Duration) -> bool,
    ) -> Vec<WatchAction> {
        let mut actions = Vec::new();
        if let Some(round) = &mut self.round {
            // Heard from since the round began: alive, and no longer suspected here.
            let suspected = &mut self.suspected;
            round.targets.retain(|target| {
                let heard = heard_since(target.addr, round.started);
                if heard {
                    suspected.remove(&target.addr);
                }
                !heard
            });
            if round.targets.is_empty() {
                self.round = None;
            } else if now >= round.started + timeout {
                for target in std::mem::take(&mut round.targets) {
                    // Suspected once; a member already suspected here is
                    // only watched past.
                    if self.suspected.insert(target.addr) {
                        actions.push(WatchAction::Suspect(target));
                    }
                }
                self.round = None;
            } else {
                let elapsed = now.saturating_sub(round.started);
                let due = 1
                    + (elapsed.as_nanos() * u128::from(PINGS_PER_ROUND) / timeout.as_nanos().max(1))
                        as u32;
                while round.pings < due.min(PINGS_PER_ROUND) {
                    round.pings += 1;
                    actions.extend(
                        round
                            .targets
                            .iter()
                            .map(|target| WatchAction::Ping(target.addr)),
                    );
                }
            }
        }
        if self.round.is_none() && now >= self.next_round {
            let targets = self.targets();
            if !targets.is_empty() {
                actions.extend(targets.iter().map(|target| WatchAction::Ping(target.addr)));
                self.round = Some(Round {
                    targets,
                    started: now,
                    pings: 1,
                });
            }
            self.next_round = now + interval;
        }
        actions
    }

    /// When [`Self::poll`] next has work, if ever.
    pub(crate) fn next_deadline(&self, timeout: Duration) -> Option<Duration> {
        match &self.round {
            Some(round) => {
                // The first instant `poll` counts the next ping due (or the verdict).
                let next_ping = (u128::from(round.pings) * timeout.as_nanos())
                    .div_ceil(u128::from(PINGS_PER_ROUND));
                let next_ping = Duration::from_nanos(next_ping.min(u128::from(u64::MAX)) as u64);
                Some(round.started + next_ping.min(timeout))
            }
            None => (!self.ring.is_empty()).then_some(self.next_round),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16) -> NodeId {
        NodeId::new(
            format!("node-{port}"),
            SocketAddr::from(([127, 0, 0, 1], port)),
            1,
        )
    }

    const INTERVAL: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_millis(300);

    #[test]
    fn every_member_has_exactly_one_watcher() {
        let members: Vec<NodeId> = (1..=40).map(member).collect();
        let mut watched = Vec::new();
        for me in &members {
            let mut watch = RingWatch::new(me.addr);
            for other in &members {
                watch.insert(other);
            }
            watched.push(watch.successor().expect("a successor").addr);
        }
        watched.sort();
        let mut all: Vec<SocketAddr> = members.iter().map(|member| member.addr).collect();
        all.sort();
        assert_eq!(watched, all, "a permutation: each member watched once");
    }

    #[test]
    fn a_members_predecessor_is_the_one_whose_successor_it_is() {
        let members: Vec<NodeId> = (1..=40).map(member).collect();
        let watch_of = |me: &NodeId| {
            let mut watch = RingWatch::new(me.addr);
            for other in &members {
                watch.insert(other);
            }
            watch
        };
        for me in &members {
            let predecessor = watch_of(me).predecessor().expect("a predecessor").clone();
            assert_ne!(predecessor.addr, me.addr);
            assert_eq!(
                watch_of(&predecessor)
                    .successor()
                    .map(|successor| successor.addr),
                Some(me.addr),
                "{} watches {}",
                predecessor.addr,
                me.addr
            );
        }
        assert!(RingWatch::new(members[0].addr).predecessor().is_none());
    }

    #[test]
    fn a_member_that_answers_is_not_suspected_and_a_silent_one_is() {
        let mut watch = RingWatch::new(member(1).addr);
        watch.insert(&member(2));
        let target = member(2).addr;
        let start = Duration::from_secs(10);
        assert_eq!(
            watch.poll(start, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Ping(target)]
        );
        // Nothing heard: pinged again at a third and two thirds of the timeout.
        assert_eq!(watch.next_deadline(TIMEOUT), Some(start + TIMEOUT / 3));
        assert_eq!(
            watch.poll(start + TIMEOUT / 3, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Ping(target)]
        );
        assert_eq!(
            watch.poll(start + TIMEOUT * 2 / 3, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Ping(target)]
        );
        assert_eq!(
            watch.poll(start + TIMEOUT, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Suspect(member(2))]
        );
        // The next round starts a probe interval after the last began.
        assert_eq!(watch.next_deadline(TIMEOUT), Some(start + INTERVAL));
        assert!(watch
            .poll(start + INTERVAL / 2, INTERVAL, TIMEOUT, |_, _| false)
            .is_empty());
        let again = start + INTERVAL;
        assert_eq!(
            watch.poll(again, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Ping(target)]
        );
        // Heard from (its answer, or any frame): the round ends quietly.
        let heard = |addr: SocketAddr, since: Duration| addr == target && since <= again;
        assert!(watch
            .poll(again + TIMEOUT, INTERVAL, TIMEOUT, heard)
            .is_empty());
    }

    #[test]
    fn a_round_watches_past_a_suspected_successor_until_it_is_heard_from() {
        let mut watch = RingWatch::new(member(1).addr);
        for port in 2..=4 {
            watch.insert(&member(port));
        }
        let first = watch.successor().cloned().expect("a successor");
        let second = watch
            .after(ring_key(first.addr))
            .cloned()
            .expect("the one after");
        let start = Duration::from_secs(10);
        let _ = watch.poll(start, INTERVAL, TIMEOUT, |_, _| false);
        assert_eq!(
            watch.poll(start + TIMEOUT, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Suspect(first.clone())]
        );
        // While it is suspected (and may be dead), the one after it is
        // watched too: a crash there is not left to SWIM's shuffled probes.
        let again = start + INTERVAL;
        assert_eq!(
            watch.poll(again, INTERVAL, TIMEOUT, |_, _| false),
            vec![
                WatchAction::Ping(first.addr),
                WatchAction::Ping(second.addr)
            ]
        );
        // The one after answers; the first stays silent, and is not
        // suspected twice.
        let second_heard = |addr: SocketAddr, _: Duration| addr == second.addr;
        assert!(watch
            .poll(again + TIMEOUT, INTERVAL, TIMEOUT, second_heard)
            .is_empty());
        // The first refutes (it is heard from): back to watching it alone.
        let later = again + INTERVAL;
        assert_eq!(
            watch.poll(later, INTERVAL, TIMEOUT, |_, _| false),
            vec![
                WatchAction::Ping(first.addr),
                WatchAction::Ping(second.addr)
            ]
        );
        assert!(watch
            .poll(later + TIMEOUT / 2, INTERVAL, TIMEOUT, |_, _| true)
            .is_empty());
        assert_eq!(
            watch.poll(later + INTERVAL, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Ping(first.addr)]
        );
    }

    #[test]
    fn a_member_that_leaves_the_ring_is_watched_no_more() {
        let mut watch = RingWatch::new(member(1).addr);
        assert_eq!(watch.successor(), None);
        assert!(watch
            .poll(Duration::ZERO, INTERVAL, TIMEOUT, |_, _| false)
            .is_empty());
        assert_eq!(
            watch.next_deadline(TIMEOUT),
            None,
            "alone: nothing to watch"
        );
        watch.insert(&member(2));
        watch.insert(&member(3));
        let first = watch.successor().cloned().expect("a successor");
        let _ = watch.poll(INTERVAL, INTERVAL, TIMEOUT, |_, _| false);
        watch.remove(&first);
        let second = watch.successor().cloned().expect("the other one");
        assert_ne!(first, second);
        // The new successor is watched at once, not a round later: the
        // round on the departed member ends at the next look, and one on
        // the new successor begins.
        assert_eq!(
            watch.poll(INTERVAL + TIMEOUT / 3, INTERVAL, TIMEOUT, |_, _| false),
            vec![WatchAction::Ping(second.addr)]
        );
        // The round on the member gone ended with it: no verdict on it.
        let actions = watch.poll(INTERVAL + TIMEOUT, INTERVAL, TIMEOUT, |_, _| false);
        assert!(!actions.contains(&WatchAction::Suspect(first)));
        // An older identity's removal leaves a newer one at that address.
        let newer = NodeId::new(second.name.clone(), second.addr, 2);
        watch.insert(&newer);
        watch.remove(&second);
        assert_eq!(watch.successor(), Some(&newer));
    }

    #[test]
    fn messages_round_trip() {
        for message in [
            WatchMessage::Ping {
                from: member(1).addr,
            },
            WatchMessage::Ack {
                from: "[::1]:7946".parse().expect("an address"),
            },
            WatchMessage::Down {
                from: member(1).addr,
                member: member(2),
            },
        ] {
            assert_eq!(WatchMessage::decode(&message.encode()), Ok(message.clone()));
        }
        assert!(WatchMessage::decode(b"\xc1").is_err());
    }
}
