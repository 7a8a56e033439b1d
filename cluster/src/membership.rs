//! The membership core: SWIM (foca) behind a sans-IO interface. It takes the
//! time and the frames that arrived as arguments and leaves behind frames to
//! send, events, and the next time it wants to be woken. No sockets, threads
//! or clocks: the QUIC and TCP drivers run one on real time, and the cluster
//! simulator runs a thousand on a virtual clock.
//!
//! Around foca it owns what foca leaves to its user: timers (a queue of
//! foca's own), joining through seeds until some member answers, renewing
//! this node's identity when the cluster declares it down, gossiping to dead
//! members for `gossip_to_dead` rounds, rescaling the suspicion timeout as
//! the cluster grows, the frame checks (see [`crate::wire`]), and the counts
//! the metrics show. It also keeps the cluster directory (which agents each
//! node hosts; [`crate::directory`]): version notes ride on foca's custom
//! broadcasts, and lists are pulled from their node in directory frames.
//! And it runs the ring watch ([`crate::watch`]): each node pings its
//! successor on a ring of the members every probe interval and suspects it,
//! through foca, when it stays silent, so a crash is noticed within an
//! interval instead of whenever SWIM's shuffled probes reach it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{Foca, Identity, Member, OwnedNotification, Runtime, State, Timer, TimerToken};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
// Keyed by member address and touched on every frame: Fx, not SipHash
// (the addresses come from authenticated peers, and the simulator runs a
// thousand cores on one thread).
use rustc_hash::{FxHashMap, FxHashSet};

use crate::directory::{
    AgentCounts, ClusterDirectory, DirectoryMessage, NoteBook, VersionNote, VersionNotes,
    NOTE_REFRESH_PROBES,
};
use crate::settings::SwimSettings;
use crate::watch::{RingWatch, WatchAction, WatchMessage};
use crate::wire::{
    self, FrameHeader, FrameKind, MessagePackCodec, NodeId, ReplayWindow, WireError,
};

/// The time, as the core sees it: a monotonic reading for its timers and
/// the wall clock that dates identities (for the convergence metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since an origin the caller picks.
    pub elapsed: Duration,
    /// Wall-clock Unix time in microseconds.
    pub unix_us: u64,
}

/// A frame to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The member's address.
    pub to: SocketAddr,
    /// The framed packet.
    pub frame: Vec<u8>,
}

/// What changed in the membership, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member is up (joined, or came back).
    Up(NodeId),
    /// A member was declared down, or left.
    Down(NodeId),
    /// This node now suspects a member (it missed this node's probe).
    Suspected(NodeId),
    /// A suspicion ran out without the member declared down: it refuted.
    Refuted(NodeId),
    /// A member came back under a newer identity (same address).
    Renamed {
        /// The identity it had.
        previous: NodeId,
        /// The one it has now.
        current: NodeId,
    },
    /// This node is known to at least one member.
    Joined,
    /// Every member this node knew is down or gone.
    Alone,
    /// The cluster declared this node down; it rejoined under this identity.
    Renewed(NodeId),
}

/// A member's state, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Answering.
    Alive,
    /// Missed a probe; down unless it refutes in time.
    Suspect,
    /// Declared down, or left.
    Down,
}

impl From<State> for MemberState {
    fn from(state: State) -> Self {
        match state {
            State::Alive => Self::Alive,
            State::Suspect => Self::Suspect,
            State::Down => Self::Down,
        }
    }
}

/// One member, for `engine cluster members`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberView {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Alive, suspect or down.
    pub state: MemberState,
    /// Its incarnation (raised each time it refutes a suspicion).
    pub incarnation: u16,
    /// Its generation (Unix microseconds of its start or last rejoin).
    pub generation: u64,
    /// How long ago a frame from it was accepted, if ever.
    pub last_heard: Option<Duration>,
    /// SWIM frames and bytes exchanged with it since this node started.
    pub traffic: PeerTraffic,
    /// Times this node saw it declared down (a member that flaps shows it).
    pub downs: u32,
    /// Times this node saw it become suspect (its own probes went
    /// unanswered, or another member's did and said so): a member that
    /// left gracefully was never suspected for it.
    #[serde(default)]
    pub suspicions: u32,
}

/// Frames and bytes exchanged with one member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerTraffic {
    /// Frames accepted from it.
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames sent to it.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
}

/// Members by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateCounts {
    /// Alive members (this node excluded).
    pub alive: u64,
    /// Suspected members.
    pub suspect: u64,
    /// Members declared down or gone.
    pub down: u64,
}

/// Rounds of joins (one each probe interval) that no member answers before
/// a node warns that it is still alone, and again every as many rounds.
pub const JOIN_WARN_ROUNDS: u32 = 10;

/// What the core counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MembershipCounters {
    /// Frames received.
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Frames dropped: shorter than they say.
    pub dropped_truncated: u64,
    /// Frames dropped: longer than they say, or than the largest packet.
    pub dropped_oversized: u64,
    /// Frames dropped: checksum mismatch.
    pub dropped_corrupt: u64,
    /// Frames dropped: unknown version or kind.
    pub dropped_version: u64,
    /// Frames dropped: already seen from that sender's boot.
    pub dropped_replayed: u64,
    /// Frames dropped: the packet inside does not decode, or foca refused it.
    pub dropped_invalid: u64,
    /// Suspicions this node raised (a member missed this node's probe and
    /// its indirect probes); one per suspicion, however often foca re-probes.
    pub suspicions_raised: u64,
    /// Suspicions whose timeout ended without the member declared down (it
    /// refuted in time); counted when the timeout ends.
    pub suspicions_refuted: u64,
    /// Members this node saw declared down (failures and graceful leaves).
    pub declared_down: u64,
    /// Times this node was declared down and rejoined under a new identity.
    pub renewals: u64,
    /// Arrivals dated in this node's future (clock skew); not timed.
    pub convergence_skewed: u64,
    /// Directory lists this node asked other nodes for.
    pub directory_pulls: u64,
    /// Directory lists taken (newer than the one held).
    pub directory_lists_taken: u64,
    /// Directory lists dropped: stale, or from a node not known alive at
    /// that generation.
    pub directory_lists_dropped: u64,
    /// Suspicions the ring watch raised: the watched member stayed silent
    /// through a probe timeout and three pings (also in `suspicions_raised`).
    #[serde(default)]
    pub watch_suspicions: u64,
    /// Verdicts this node sent every member directly: members its own
    /// suspicion timer declared down.
    #[serde(default)]
    pub verdicts_sent: u64,
    /// Suspicions handed to the member taking over this node's watch as it
    /// left (see [`WatchMessage::Suspect`]).
    #[serde(default)]
    pub suspicions_handed_over: u64,
    /// Suspicions a leaving node handed to this one, and taken on.
    #[serde(default)]
    pub suspicions_taken_over: u64,
    /// Times this node told a member it suspects so directly (see
    /// [`WatchMessage::Suspected`]).
    #[serde(default)]
    pub suspicions_told: u64,
    /// Suspicions of this node it was told of directly, and refuted.
    #[serde(default)]
    pub suspicions_heard: u64,
}

/// A timer of foca's, due at a time.
struct Scheduled {
    due: Duration,
    order: u64,
    timer: Timer<NodeId>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// foca's runtime: collects what foca asks for during one call.
struct Effects {
    now: Duration,
    nonce: u64,
    sequence: u64,
    outbox: Vec<Outgoing>,
    timers: BinaryHeap<Reverse<Scheduled>>,
    timer_order: u64,
    notes: Vec<OwnedNotification<NodeId>>,
    suspected: Vec<NodeId>,
    /// The token foca's timers carry now (the ring watch's suspicion timers
    /// must carry it too).
    timer_token: Option<TimerToken>,
    frames_out: u64,
    bytes_out: u64,
    /// Per address: one map, so a frame costs one lookup on the way in.
    peers: FxHashMap<SocketAddr, PeerState>,
}

/// What this node keeps per address it exchanges frames with.
#[derive(Clone, Copy, Debug, Default)]
struct PeerState {
    traffic: PeerTraffic,
    /// The frames taken from it, for the replay check (unstarted until one
    /// was: an address only sent to has no window yet).
    replay: ReplayWindow,
    /// When a frame from it was last taken.
    last_heard: Option<Duration>,
}

impl Effects {
    /// The suspicion timers pending: the member each judges, the
    /// incarnation it was suspected at, and when it is due.
    fn suspicion_timers(&self) -> impl Iterator<Item = (&NodeId, u16, Duration)> {
        self.timers
            .iter()
            .filter_map(|Reverse(scheduled)| match &scheduled.timer {
                Timer::ChangeSuspectToDown {
                    member_id,
                    incarnation,
                    ..
                } => Some((member_id, *incarnation, scheduled.due)),
                _ => None,
            })
    }

    /// Frame and queue a directory message, in the same sequence as SWIM's.
    fn send_directory(&mut self, to: SocketAddr, message: &DirectoryMessage) {
        self.send_frame(FrameKind::Directory, to, &message.encode());
    }

    /// Frame and queue a ring watch's message.
    fn send_watch(&mut self, to: SocketAddr, message: &WatchMessage) {
        self.send_frame(FrameKind::Watch, to, &message.encode());
    }

    /// Frame `packet` as `kind` and queue it, in the same sequence as SWIM's.
    fn send_frame(&mut self, kind: FrameKind, to: SocketAddr, packet: &[u8]) {
        let frame = wire::frame_of(
            kind,
            FrameHeader {
                nonce: self.nonce,
                seq: self.sequence,
            },
            packet,
        );
        self.sequence += 1;
        self.frames_out += 1;
        self.bytes_out += frame.len() as u64;
        let peer = &mut self.peers.entry(to).or_default().traffic;
        peer.frames_out += 1;
        peer.bytes_out += frame.len() as u64;
        self.outbox.push(Outgoing { to, frame });
    }
}

impl Runtime<NodeId> for Effects {
    fn notify(&mut self, notification: foca::Notification<'_, NodeId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        let frame = wire::frame(
            FrameHeader {
                nonce: self.nonce,
                seq: self.sequence,
            },
            data,
        );
        self.sequence += 1;
        self.frames_out += 1;
        self.bytes_out += frame.len() as u64;
        let peer = &mut self.peers.entry(to.addr).or_default().traffic;
        peer.frames_out += 1;
        peer.bytes_out += frame.len() as u64;
        self.outbox.push(Outgoing { to: to.addr, frame });
    }

    fn submit_after(&mut self, timer: Timer<NodeId>, after: Duration) {
        // foca starts a suspicion timer exactly when it marks a member suspect.
        if let Timer::ChangeSuspectToDown { member_id, .. } = &timer {
            self.suspected.push(member_id.clone());
        }
        if let Timer::ProbeRandomMember(token) = &timer {
            self.timer_token = Some(*token);
        }
        self.timer_order += 1;
        self.timers.push(Reverse(Scheduled {
            due: self.now + after,
            order: self.timer_order,
            timer,
        }));
    }
}

/// A list this node wants from another node.
#[derive(Clone, Debug)]
struct Wanted {
    node: NodeId,
    version: u64,
    /// When it last asked (zero: not yet).
    asked: Duration,
}

/// Members a renewed node announces itself to directly, at most.
const RENEWAL_ANNOUNCES_MAX: usize = 64;

/// The highest convergence time recorded, in nanoseconds (an hour).
const CONVERGENCE_MAX_NS: u64 = 3_600_000_000_000;

/// One node's view of the cluster. See the module docs.
pub struct Membership {
    foca: Foca<NodeId, MessagePackCodec, SmallRng, VersionNotes>,
    effects: Effects,
    directory: ClusterDirectory,
    /// Shared with foca's broadcast handler (see `NoteBook`): notes it found new.
    notes: Arc<Mutex<NoteBook>>,
    /// Nodes whose list this node lacks or holds behind: the version wanted
    /// and when it last asked.
    /// (Ordered, so a seeded simulation asks in the same order every run.)
    wanted: BTreeMap<SocketAddr, Wanted>,
    /// When the first wanted list is due to be asked for (again): never
    /// later than that, possibly earlier (a list that arrived is not
    /// accounted for until the next ask). Spares a walk over every wanted
    /// list per frame, which at a thousand nodes forming made formation
    /// quadratic.
    pulls_due: Option<Duration>,
    /// When the members this node's timers judge are next told so.
    next_suspect_notice: Option<Duration>,
    /// Members that came up (or were renamed) since the last settle: any
    /// that foca learned as already suspect get a timer here.
    came_up: Vec<NodeId>,
    next_note_refresh: Option<Duration>,
    swim: SwimSettings,
    configured_for: usize,
    seeds: Vec<SocketAddr>,
    next_join: Option<Duration>,
    /// Rounds of announces to the seeds that no member answered, since the
    /// node started or was last alone ([`JOIN_WARN_ROUNDS`]).
    unanswered_joins: u32,
    joined_since_us: u64,
    downs: FxHashMap<SocketAddr, u32>,
    /// Suspicions this node saw begin, per member.
    suspicions: FxHashMap<SocketAddr, u32>,
    open_suspicions: FxHashSet<SocketAddr>,
    /// The generation last timed per address, so an arrival is timed once.
    timed: FxHashMap<SocketAddr, u64>,
    dead: Vec<(NodeId, u32)>,
    next_dead_round: Option<Duration>,
    events: Vec<MembershipEvent>,
    counters: MembershipCounters,
    convergence: Histogram<u64>,
    watch: RingWatch,
    now: Duration,
    leaving: bool,
}

impl Membership {
    /// A node named `name` at `addr`, alone until it joins; `seed` drives
    /// every random choice (probe order, gossip targets, the frame nonce).
    pub fn new(swim: SwimSettings, name: String, addr: SocketAddr, seed: u64, now: Now) -> Self {
        let me = NodeId::new(name, addr, now.unix_us);
        let mut rng = SmallRng::seed_from_u64(seed);
        let nonce = rng.random::<u64>();
        let notes = Arc::new(Mutex::new(NoteBook::default()));
        let foca = Foca::with_custom_broadcast(
            me,
            swim.foca_config(1),
            rng,
            MessagePackCodec::default(),
            VersionNotes {
                book: Arc::clone(&notes),
                me: addr,
            },
        );
        let convergence = Histogram::new_with_bounds(1_000, CONVERGENCE_MAX_NS, 3)
            .expect("1µs to an hour at 3 significant figures are valid bounds");
        Self {
            foca,
            effects: Effects {
                now: now.elapsed,
                nonce,
                sequence: 0,
                outbox: Vec::new(),
                timers: BinaryHeap::new(),
                timer_order: 0,
                notes: Vec::new(),
                suspected: Vec::new(),
                timer_token: None,
                frames_out: 0,
                bytes_out: 0,
                peers: FxHashMap::default(),
            },
            directory: ClusterDirectory::default(),
            notes,
            wanted: BTreeMap::new(),
            pulls_due: None,
            next_suspect_notice: None,
            came_up: Vec::new(),
            next_note_refresh: None,
            swim,
            configured_for: 1,
            seeds: Vec::new(),
            next_join: None,
            unanswered_joins: 0,
            joined_since_us: now.unix_us,
            downs: FxHashMap::default(),
            suspicions: FxHashMap::default(),
            open_suspicions: FxHashSet::default(),
            timed: FxHashMap::default(),
            dead: Vec::new(),
            next_dead_round: None,
            events: Vec::new(),
            counters: MembershipCounters::default(),
            convergence,
            watch: RingWatch::new(addr),
            now: now.elapsed,
            leaving: false,
        }
    }

    /// This node's identity.
    pub fn identity(&self) -> &NodeId {
        self.foca.identity()
    }

    /// The SWIM settings it runs.
    pub fn settings(&self) -> &SwimSettings {
        &self.swim
    }

    /// Join through `seeds` (announcing to each, again every probe interval
    /// until some member answers). This node's own address is skipped, so
    /// every node of a cluster may list the same seeds.
    pub fn join(&mut self, seeds: &[SocketAddr], now: Now) {
        let me = self.identity().addr;
        self.seeds = seeds.iter().copied().filter(|seed| *seed != me).collect();
        self.announce_to_seeds(now);
        self.settle(now);
    }

    /// Take `members` as known and alive, hosting no agents, with no news
    /// of them to spread: what a node of a settled cluster of agentless
    /// nodes knows (foca's `apply_many` without broadcast, and each
    /// member's empty list held at version 0, so none is pulled). The
    /// simulator starts a formed cluster this way; this node's own
    /// identity is skipped.
    pub fn assume_members(&mut self, members: impl IntoIterator<Item = NodeId>, now: Now) {
        self.enter(now);
        let me = self.identity().addr;
        let members: Vec<NodeId> = members
            .into_iter()
            .filter(|member| member.addr != me)
            .collect();
        for member in &members {
            self.directory.apply(member.clone(), 0, Vec::new());
        }
        let alive = members
            .into_iter()
            .map(|member| Member::new(member, 0, State::Alive));
        if let Err(error) = self.foca.apply_many(alive, false, &mut self.effects) {
            tracing::debug!("assumed members: {error}");
        }
        self.settle(now);
    }

    /// A frame that arrived. A frame that fails a check is counted and
    /// dropped, and changes nothing.
    pub fn handle_frame(&mut self, frame: &[u8], now: Now) -> Result<(), WireError> {
        self.enter(now);
        self.counters.frames_in += 1;
        self.counters.bytes_in += frame.len() as u64;
        let result = self.accept_frame(frame);
        if let Err(error) = &result {
            let counter = match error {
                WireError::Truncated => &mut self.counters.dropped_truncated,
                WireError::Oversized => &mut self.counters.dropped_oversized,
                WireError::Corrupt => &mut self.counters.dropped_corrupt,
                WireError::UnknownVersion => &mut self.counters.dropped_version,
                WireError::Replayed => &mut self.counters.dropped_replayed,
                WireError::Decode(_)
                | WireError::BadIdentity
                | WireError::NoRoom
                | WireError::Refused(_) => &mut self.counters.dropped_invalid,
            };
            *counter += 1;
        }
        self.settle(now);
        result
    }

    fn accept_frame(&mut self, frame: &[u8]) -> Result<(), WireError> {
        let (kind, header, packet) = wire::unframe_any(frame, self.swim.max_packet)?;
        // The header is read here as well as in foca: the replay check
        // needs the sender first (an inbound TCP connection's address is
        // ephemeral, so the transport cannot say who sent it).
        let (directory, watch) = match kind {
            FrameKind::Swim => (None, None),
            FrameKind::Directory => (Some(DirectoryMessage::decode(packet)?), None),
            FrameKind::Watch => (None, Some(WatchMessage::decode(packet)?)),
            // The transport hands these to remote routing, never here.
            FrameKind::Messages => return Err(WireError::UnknownVersion),
        };
        let sender = match (&directory, &watch) {
            (Some(message), _) => message.sender().addr,
            (_, Some(message)) => message.sender(),
            _ => wire::packet_sender(packet)?,
        };
        // The window is stored only once the packet was taken, so frames
        // that fail create no state for the address they claim.
        let mut window = self
            .effects
            .peers
            .get(&sender)
            .map(|peer| peer.replay)
            .unwrap_or_default();
        if !window.accept(header) {
            return Err(WireError::Replayed);
        }
        match (directory, watch) {
            (Some(message), _) => self.on_directory(message),
            (_, Some(WatchMessage::Ping { from })) if !self.leaving => {
                let me = self.identity().addr;
                self.effects
                    .send_watch(from, &WatchMessage::Ack { from: me });
            }
            // A leaving node's suspicion: judged here, when it would have been there.
            (
                _,
                Some(WatchMessage::Suspect {
                    member,
                    incarnation,
                    left_us,
                    ..
                }),
            ) if !self.leaving => {
                wire::check_identity(&member)?;
                let left = Duration::from_micros(left_us).min(self.suspicion_timeout());
                if self.suspect(&member, Some(incarnation), left) {
                    self.counters.suspicions_taken_over += 1;
                }
            }
            // Told it is suspected: refuted at once (foca raises this
            // node's incarnation and gossips). About an earlier identity at
            // this address, foca declares that one down.
            (
                _,
                Some(WatchMessage::Suspected {
                    member,
                    incarnation,
                    ..
                }),
            ) if !self.leaving => {
                wire::check_identity(&member)?;
                if member.addr == self.identity().addr {
                    if member == *self.identity() {
                        self.counters.suspicions_heard += 1;
                    }
                    self.foca
                        .apply_many(
                            std::iter::once(Member::new(member, incarnation, State::Suspect)),
                            true,
                            &mut self.effects,
                        )
                        .map_err(|error| WireError::Refused(error.to_string()))?;
                }
            }
            // Another node's verdict: applied (and passed on) as if gossiped.
            (_, Some(WatchMessage::Down { member, .. })) => {
                wire::check_identity(&member)?;
                self.foca
                    .apply_many(
                        std::iter::once(Member::new(member, 0, State::Down)),
                        true,
                        &mut self.effects,
                    )
                    .map_err(|error| WireError::Refused(error.to_string()))?;
            }
            // An answer (or a ping while leaving) proves its sender alive:
            // being heard from is what the watch looks for.
            (_, Some(_)) => {}
            _ => self
                .foca
                .handle_data(packet, &mut self.effects)
                .map_err(|error| WireError::Refused(error.to_string()))?,
        }
        let peer = self.effects.peers.entry(sender).or_default();
        peer.replay = window;
        peer.last_heard = Some(self.now);
        peer.traffic.frames_in += 1;
        peer.traffic.bytes_in += frame.len() as u64;
        Ok(())
    }

    /// Fire what is due at `now`: foca's timers, a join retry, a round of
    /// gossip to dead members.
    pub fn advance(&mut self, now: Now) {
        self.enter(now);
        while let Some(Reverse(next)) = self.effects.timers.peek() {
            if next.due > now.elapsed {
                break;
            }
            let Some(Reverse(due)) = self.effects.timers.pop() else {
                break;
            };
            let suspect = match &due.timer {
                Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
                _ => None,
            };
            let was_active = suspect
                .as_ref()
                .is_some_and(|suspect| self.is_active(suspect));
            if let Err(error) = self.foca.handle_timer(due.timer, &mut self.effects) {
                tracing::debug!("membership timer: {error}");
            }
            let judged = suspect
                .clone()
                .filter(|suspect| was_active && !self.is_active(suspect));
            if let Some(suspect) = suspect {
                self.close_suspicion(suspect);
            }
            // A timer may raise notifications that schedule more work.
            self.settle(now);
            if let Some(down) = judged {
                self.send_verdict(&down);
            }
        }
        if self.next_join.is_some_and(|at| at <= now.elapsed) {
            self.announce_to_seeds(now);
        }
        if self.next_dead_round.is_some_and(|at| at <= now.elapsed) {
            self.gossip_to_dead(now);
        }
        if self.next_note_refresh.is_some_and(|at| at <= now.elapsed) {
            self.announce_version(now);
        }
        self.run_watch(now);
        self.settle(now);
    }

    /// The ring watch's due work: ping the successor, or suspect it.
    fn run_watch(&mut self, now: Now) {
        if self.leaving {
            return;
        }
        let peers = &self.effects.peers;
        let actions = self.watch.poll(
            now.elapsed,
            self.swim.probe_interval,
            self.swim.probe_timeout,
            |addr, since| {
                peers
                    .get(&addr)
                    .and_then(|peer| peer.last_heard)
                    .is_some_and(|at| at >= since)
            },
        );
        // Encoded once for every target of the round.
        let ping = WatchMessage::Ping {
            from: self.identity().addr,
        }
        .encode();
        for action in actions {
            match action {
                WatchAction::Ping(to) => self.effects.send_frame(FrameKind::Watch, to, &ping),
                WatchAction::Suspect(member) => self.watch_suspect(&member),
            }
        }
    }

    /// Give a suspicion timer of this node's own to each member that came up
    /// already suspect. foca runs a suspicion's timer only on the node that
    /// raised it, and a node learns a member suspect from a joining feed or
    /// from gossip without one: if the verdict then passes it by (it joined
    /// as the verdict went out), it holds a member that may be long dead as
    /// suspect, and hands it as alive news to each node joining through
    /// it, until its own probes come round to that member. A simulated
    /// day showed a crash still held this way six minutes after every
    /// other node had declared it down. The timer runs the full suspicion
    /// timeout, and a refutation voids it, as any other.
    fn judge_suspects_learned(&mut self) {
        if self.came_up.is_empty() || self.leaving {
            self.came_up.clear();
            return;
        }
        let came_up: rustc_hash::FxHashSet<wire::AddrKey> =
            self.came_up.drain(..).map(|member| member.key()).collect();
        // One walk over the members for every arrival of this settle (a
        // formed start brings a thousand at once).
        let suspects: Vec<NodeId> = self
            .foca
            .iter_membership_state()
            .filter(|known| known.state() == State::Suspect && came_up.contains(&known.id().key()))
            .map(|known| known.id().clone())
            .collect();
        let timeout = self.suspicion_timeout();
        for suspect in suspects {
            self.suspect(&suspect, None, timeout);
        }
    }

    /// Tell each member one of this node's suspicion timers judges, and that
    /// foca still holds suspect at the timer's incarnation, that it is
    /// suspected; again in a probe interval while any is.
    fn tell_suspects(&mut self) {
        let judged: Vec<(NodeId, u16)> = self
            .effects
            .suspicion_timers()
            .map(|(member, incarnation, _)| (member.clone(), incarnation))
            .collect();
        self.next_suspect_notice = None;
        if judged.is_empty() || self.leaving {
            return;
        }
        let from = self.identity().addr;
        let mut told = 0;
        for (member, incarnation) in judged {
            let standing = self.foca.iter_membership_state().any(|known| {
                known.id() == &member
                    && known.state() == State::Suspect
                    && known.incarnation() == incarnation
            });
            if standing {
                self.effects.send_watch(
                    member.addr,
                    &WatchMessage::Suspected {
                        from,
                        member,
                        incarnation,
                    },
                );
                told += 1;
            }
        }
        self.counters.suspicions_told += told;
        if told > 0 {
            self.next_suspect_notice = Some(self.now + self.swim.probe_interval);
        }
    }

    /// Whether foca holds `member` (this identity) alive or suspect.
    fn is_active(&self, member: &NodeId) -> bool {
        self.foca
            .iter_membership_state()
            .any(|known| known.id() == member && known.state() != State::Down)
    }

    /// This node's suspicion timer declared `down` down: tell every member
    /// directly, beside foca's gossip. Gossip reaches each member with high
    /// probability, not certainty (at 34 members and 8 transmissions, about
    /// one member in 3,000 misses a verdict), and foca has no anti-entropy
    /// sync to repair a miss: a member that missed it would hold the dead
    /// one up until its own shuffled probes reached it, minutes later.
    fn send_verdict(&mut self, down: &NodeId) {
        let verdict = WatchMessage::Down {
            from: self.identity().addr,
            member: down.clone(),
        }
        .encode();
        for member in self.watch.members() {
            self.effects
                .send_frame(FrameKind::Watch, member.addr, &verdict);
        }
        self.counters.verdicts_sent += 1;
    }

    /// The watched member stayed silent: suspect it through foca, as a
    /// failed probe would (gossiped, so it can refute), and have foca
    /// declare it down when the suspicion timeout ends unless it refuted.
    fn watch_suspect(&mut self, silent: &NodeId) {
        let timeout = self.suspicion_timeout();
        if self.suspect(silent, None, timeout) {
            self.counters.watch_suspicions += 1;
        }
    }

    /// Suspect the member at `member`'s address (at `incarnation`, when
    /// given: a suspicion handed over is void once refuted) and have foca
    /// judge it `after` from now. Whether a suspicion timer started.
    fn suspect(&mut self, member: &NodeId, incarnation: Option<u16>, after: Duration) -> bool {
        let Some(token) = self.effects.timer_token else {
            return false;
        };
        let Some((id, held, state)) = self
            .foca
            .iter_membership_state()
            .find(|known| known.id().addr == member.addr && known.state() != State::Down)
            .map(|known| (known.id().clone(), known.incarnation(), known.state()))
        else {
            return false;
        };
        if incarnation.is_some_and(|incarnation| incarnation != held || id != *member) {
            return false;
        }
        if state == State::Alive {
            let suspect = Member::new(id.clone(), held, State::Suspect);
            if let Err(error) =
                self.foca
                    .apply_many(std::iter::once(suspect), true, &mut self.effects)
            {
                tracing::debug!("ring watch: {error}");
                return false;
            }
        }
        self.effects.submit_after(
            Timer::ChangeSuspectToDown {
                member_id: id,
                incarnation: held,
                token,
            },
            after,
        );
        true
    }

    /// Leaving: hand every suspicion this node's timers would still judge
    /// to the member that watches this node (and so takes over its watch),
    /// with the time each had left.
    fn hand_over_suspicions(&mut self) {
        let Some(heir) = self.watch.predecessor().map(|heir| heir.addr) else {
            return;
        };
        let now = self.now;
        let from = self.identity().addr;
        let pending: Vec<WatchMessage> = self
            .effects
            .suspicion_timers()
            .map(|(member, incarnation, due)| WatchMessage::Suspect {
                from,
                member: member.clone(),
                incarnation,
                left_us: due.saturating_sub(now).as_micros() as u64,
            })
            .collect();
        for suspicion in &pending {
            self.effects.send_watch(heir, suspicion);
        }
        self.counters.suspicions_handed_over += pending.len() as u64;
    }

    /// When [`Self::advance`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<Duration> {
        let timer = self.effects.timers.peek().map(|Reverse(next)| next.due);
        let pull = self.pulls_due;
        let watch = if self.leaving {
            None
        } else {
            self.watch.next_deadline(self.swim.probe_timeout)
        };
        [
            timer,
            self.next_join,
            self.next_dead_round,
            self.next_note_refresh,
            self.next_suspect_notice,
            pull,
            watch,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Publish the agents this node hosts (name → instances across its
    /// shards). A change raises this node's list version and is announced
    /// to the cluster; other nodes pull the list.
    pub fn publish_agents(&mut self, agents: AgentCounts, now: Now) {
        self.enter(now);
        if self.directory.set_local(agents) {
            self.announce_version(now);
        }
        self.settle(now);
    }

    /// Whether this node has met another member and holds the agent list
    /// of every member it knows alive: what a restarted node waits for
    /// before it redelivers stored messages, whose handlers may send to
    /// agents on other nodes.
    ///
    /// A node with no seeds waits for a member too: a seed that restarts
    /// learns of the others only when they announce to it, and stored
    /// messages run before that would find no other node's agents (a
    /// durable chain's hops to them lost). Alone for good, the wait's bound
    /// ([`Self::has_seeds`] lengthens it to cover the others' announce)
    /// ends it.
    pub fn directory_settled(&self) -> bool {
        self.foca.num_members() > 0 && self.wanted.is_empty()
    }

    /// Whether this node was given seeds to join through.
    pub fn has_seeds(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// The seeds it joins through (its own address left out).
    pub fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    /// Rounds of joins through the seeds that no member has answered since
    /// the node started or was last alone; a warning is logged every
    /// [`JOIN_WARN_ROUNDS`].
    pub fn unanswered_joins(&self) -> u32 {
        self.unanswered_joins
    }

    /// The member this node's ring watch pings: its successor on the ring.
    pub fn watched(&self) -> Option<&NodeId> {
        self.watch.successor()
    }

    /// The cluster directory as this node knows it.
    pub fn directory(&self) -> &ClusterDirectory {
        &self.directory
    }

    /// Add (or refresh) this node's version note to the broadcasts and
    /// schedule the next refresh.
    fn announce_version(&mut self, now: Now) {
        let (version, _) = self.directory.local();
        if version == 0 || self.leaving {
            self.next_note_refresh = None;
            return;
        }
        let note = VersionNote {
            node: self.identity().clone(),
            version,
        };
        if let Err(error) = self.foca.add_broadcast(&note.encode()) {
            tracing::debug!("directory note: {error}");
        }
        self.next_note_refresh = Some(now.elapsed + self.swim.probe_interval * NOTE_REFRESH_PROBES);
    }

    /// A directory frame: answer a pull, or take a list.
    fn on_directory(&mut self, message: DirectoryMessage) {
        match message {
            DirectoryMessage::Pull { from } => {
                if from.addr != self.identity().addr && !self.leaving {
                    let list = self.directory.local_list(self.identity());
                    self.effects.send_directory(from.addr, &list);
                }
            }
            DirectoryMessage::List {
                from,
                version,
                agents,
            } => {
                // Only from a member known alive (or suspect) at that very
                // identity: a late answer must not bring back a node the
                // cluster declared down.
                let live = self
                    .foca
                    .iter_membership_state()
                    .any(|member| *member.id() == from && member.state() != State::Down);
                if live && self.directory.apply(from.clone(), version, agents) {
                    self.counters.directory_lists_taken += 1;
                } else {
                    self.counters.directory_lists_dropped += 1;
                }
                let satisfied = self.wanted.get(&from.addr).is_some_and(|wanted| {
                    wanted.node.generation <= from.generation && wanted.version <= version
                });
                if satisfied {
                    self.forget_wanted(from.addr);
                }
            }
        }
    }

    /// Want `node`'s list at `version` or later, and ask now unless asked
    /// within the last probe interval.
    fn want_list(&mut self, node: NodeId, version: u64) {
        if node.addr == self.identity().addr || !self.directory.is_newer(&node, version) {
            return;
        }
        let earlier = self
            .wanted
            .get(&node.addr)
            .filter(|wanted| wanted.node.generation == node.generation)
            .map(|wanted| (wanted.asked, wanted.version));
        // Never asked: due at once.
        let asked = earlier.map_or(Duration::ZERO, |(asked, _)| asked);
        let due = if asked == Duration::ZERO {
            Duration::ZERO
        } else {
            asked + self.swim.probe_interval
        };
        self.pulls_due = Some(self.pulls_due.map_or(due, |earliest| earliest.min(due)));
        self.wanted.insert(
            node.addr,
            Wanted {
                node,
                version: earlier.map_or(version, |(_, wanted)| wanted.max(version)),
                asked,
            },
        );
    }

    /// `addr`'s list is wanted no more.
    fn forget_wanted(&mut self, addr: SocketAddr) {
        self.wanted.remove(&addr);
        if self.wanted.is_empty() {
            self.pulls_due = None;
        }
    }

    /// Ask for every list still wanted whose last request is a probe
    /// interval old; forget what is held by now or whose node is gone.
    fn request_lists(&mut self) {
        let now = self.now;
        let retry = self.swim.probe_interval;
        // Most calls find nothing due: skip the walk over every member.
        let due = |wanted: &Wanted| wanted.asked == Duration::ZERO || wanted.asked + retry <= now;
        if self.pulls_due.is_none_or(|earliest| earliest > now) {
            return;
        }
        let me = self.identity().clone();
        // Wanted from live members only, at the generation wanted. The
        // ring watch holds exactly foca's active members (it follows every
        // up, rename and down), so this is a look-up per wanted list, not a
        // walk over every member: at a thousand members the walk was a
        // tenth of the simulator's time.
        let (watch, directory) = (&self.watch, &self.directory);
        self.wanted.retain(|addr, wanted| {
            watch.member(*addr) == Some(&wanted.node)
                && directory.is_newer(&wanted.node, wanted.version)
        });
        for wanted in self.wanted.values_mut() {
            if due(wanted) {
                wanted.asked = now.max(Duration::from_nanos(1));
                self.counters.directory_pulls += 1;
                self.effects.send_directory(
                    wanted.node.addr,
                    &DirectoryMessage::Pull { from: me.clone() },
                );
            }
        }
        self.pulls_due = self
            .wanted
            .values()
            .map(|wanted| wanted.asked + retry)
            .min();
    }

    /// Leave the cluster: declare this node down to a few members, who
    /// spread it. Frames to send follow in [`Self::take_outgoing`].
    pub fn leave(&mut self, now: Now) {
        self.enter(now);
        self.hand_over_suspicions();
        self.leaving = true;
        self.next_join = None;
        self.next_dead_round = None;
        if let Err(error) = self.foca.leave_cluster(&mut self.effects) {
            tracing::debug!("leaving the cluster: {error}");
        }
        self.settle(now);
    }

    /// Frames to send, oldest first.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.effects.outbox)
    }

    /// Whether frames wait in [`Self::take_outgoing`].
    pub fn has_outgoing(&self) -> bool {
        !self.effects.outbox.is_empty()
    }

    /// Membership changes since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<MembershipEvent> {
        std::mem::take(&mut self.events)
    }

    /// Every member this node knows, itself excluded, by name.
    pub fn members(&self) -> Vec<MemberView> {
        let mut members: Vec<MemberView> = self
            .others()
            .map(|member| MemberView {
                name: member.id().name.to_string(),
                addr: member.id().addr,
                state: member.state().into(),
                incarnation: member.incarnation(),
                generation: member.id().generation,
                last_heard: self
                    .effects
                    .peers
                    .get(&member.id().addr)
                    .and_then(|peer| peer.last_heard)
                    .map(|heard| self.now.saturating_sub(heard)),
                traffic: self
                    .effects
                    .peers
                    .get(&member.id().addr)
                    .map(|peer| peer.traffic)
                    .unwrap_or_default(),
                downs: self.downs.get(&member.id().addr).copied().unwrap_or(0),
                suspicions: self.suspicions.get(&member.id().addr).copied().unwrap_or(0),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        members
    }

    /// The members foca knows, less this node's own earlier identities: once
    /// this node was declared down and rejoined under a newer generation,
    /// the gossip of its old identity's death reaches it too, and it is no
    /// member of the cluster this node sees (nor a down one to alert on).
    fn others(&self) -> impl Iterator<Item = &foca::Member<NodeId>> {
        let own = self.identity().addr;
        self.foca
            .iter_membership_state()
            .filter(move |member| member.id().addr != own)
    }

    /// Members by state.
    pub fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for member in self.others() {
            match member.state() {
                State::Alive => counts.alive += 1,
                State::Suspect => counts.suspect += 1,
                State::Down => counts.down += 1,
            }
        }
        counts
    }

    /// What was counted.
    pub fn counters(&self) -> MembershipCounters {
        MembershipCounters {
            frames_out: self.effects.frames_out,
            bytes_out: self.effects.bytes_out,
            ..self.counters
        }
    }

    /// Arrival times of members (see `docs/cluster.md`), in nanoseconds.
    pub fn convergence(&self) -> &Histogram<u64> {
        &self.convergence
    }

    /// Updates waiting to be piggybacked on outgoing packets.
    pub fn updates_backlog(&self) -> usize {
        self.foca.updates_backlog()
    }

    /// The suspicion timeout in force (it grows with the cluster).
    pub fn suspicion_timeout(&self) -> Duration {
        crate::settings::suspicion_timeout(
            self.swim.suspicion_multiplier,
            self.swim.probe_interval,
            self.configured_for,
        )
    }

    fn enter(&mut self, now: Now) {
        // The clock never runs backwards for the timers.
        self.now = self.now.max(now.elapsed);
        self.effects.now = self.now;
    }

    fn announce_to_seeds(&mut self, now: Now) {
        if self.leaving || self.seeds.is_empty() {
            self.next_join = None;
            return;
        }
        if self.foca.num_members() == 0 {
            self.unanswered_joins += 1;
            if self.unanswered_joins.is_multiple_of(JOIN_WARN_ROUNDS) {
                let seeds: Vec<String> = self.seeds.iter().map(ToString::to_string).collect();
                tracing::warn!(
                    seeds = %seeds.join(", "),
                    rounds = self.unanswered_joins,
                    "cluster: no member has answered this node's joins yet; still trying. Check that each seed runs with coordination.cluster.listen_address at that address, on the same transport.type, with certificates from the same CA"
                );
            }
        }
        for seed in self.seeds.clone() {
            if let Err(error) = self.foca.announce(NodeId::seed(seed), &mut self.effects) {
                tracing::debug!(%seed, "announce: {error}");
            }
        }
        self.next_join = Some(now.elapsed + self.swim.probe_interval);
    }

    fn gossip_to_dead(&mut self, now: Now) {
        for (member, _) in &self.dead {
            if let Err(error) = self.foca.announce(member.clone(), &mut self.effects) {
                tracing::debug!(member = %member.name, "gossip to a dead member: {error}");
            }
        }
        for entry in &mut self.dead {
            entry.1 = entry.1.saturating_sub(1);
        }
        self.dead.retain(|(_, rounds)| *rounds > 0);
        self.next_dead_round =
            (!self.dead.is_empty()).then(|| now.elapsed + self.swim.gossip_interval);
    }

    /// React to what foca reported, then bring the bookkeeping up to date.
    fn settle(&mut self, now: Now) {
        while !self.effects.notes.is_empty() {
            for note in std::mem::take(&mut self.effects.notes) {
                self.react(note, now);
            }
        }
        self.judge_suspects_learned();
        let suspected = std::mem::take(&mut self.effects.suspected);
        if !suspected.is_empty() {
            // A new suspicion timer: its member is told at once, below.
            self.next_suspect_notice = Some(self.now);
        }
        for suspect in suspected {
            // foca probes a suspect again and starts another timer; one
            // suspicion is counted once, until its first timer ends.
            if self.open_suspicions.insert(suspect.addr) {
                self.counters.suspicions_raised += 1;
                *self.suspicions.entry(suspect.addr).or_default() += 1;
                self.events.push(MembershipEvent::Suspected(suspect));
            }
        }
        if self.next_suspect_notice.is_some_and(|at| at <= self.now) {
            self.tell_suspects();
        }
        let fresh = std::mem::take(
            &mut self
                .notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .fresh,
        );
        for note in fresh {
            self.want_list(note.node, note.version);
        }
        if !self.wanted.is_empty() {
            self.request_lists();
        }
        let members = self.foca.num_members() + 1;
        if members != self.configured_for {
            self.configured_for = members;
            if let Err(error) = self.foca.set_config(self.swim.foca_config(members)) {
                tracing::debug!("membership config: {error}");
            }
        }
    }

    fn react(&mut self, note: OwnedNotification<NodeId>, now: Now) {
        match note {
            OwnedNotification::MemberUp(member) => {
                self.came_up.push(member.clone());
                self.watch.insert(&member);
                self.time_arrival(&member, now);
                self.dead.retain(|(dead, _)| dead.addr() != member.addr());
                self.want_list(member.clone(), 0);
                self.events.push(MembershipEvent::Up(member));
            }
            OwnedNotification::MemberDown(member) => {
                self.watch.remove(&member);
                self.directory.declared_down(&member);
                self.forget_wanted(member.addr);
                self.counters.declared_down += 1;
                *self.downs.entry(member.addr).or_default() += 1;
                if self.swim.gossip_to_dead > 0 && !self.leaving {
                    self.dead.retain(|(dead, _)| dead.addr() != member.addr());
                    self.dead.push((member.clone(), self.swim.gossip_to_dead));
                    self.next_dead_round
                        .get_or_insert(now.elapsed + self.swim.gossip_interval);
                }
                self.events.push(MembershipEvent::Down(member));
            }
            OwnedNotification::Rename(previous, current) => {
                // A restart seen as a rename (the old identity still alive
                // here) is an arrival too.
                self.time_arrival(&current, now);
                self.came_up.push(current.clone());
                self.watch.insert(&current);
                self.directory.remove(&previous);
                self.want_list(current.clone(), 0);
                self.events
                    .push(MembershipEvent::Renamed { previous, current });
            }
            OwnedNotification::Active => {
                self.next_join = None;
                self.unanswered_joins = 0;
                self.events.push(MembershipEvent::Joined);
            }
            OwnedNotification::Idle => {
                if !self.leaving && !self.seeds.is_empty() {
                    self.next_join = Some(now.elapsed);
                }
                self.events.push(MembershipEvent::Alone);
            }
            OwnedNotification::Defunct if !self.leaving => {
                // Start over under a newer identity. A fresh foca (cheap, as
                // its docs say) rather than `change_identity`: that keeps the
                // old member states while dropping their timers, which can
                // leave a suspect suspected for ever.
                let renewed = self.identity().renewed(now.unix_us);
                // Everyone it knew, down or not (a bounded few): after a
                // partition the members it holds down are the other side,
                // and telling them at once merges the halves.
                let known: Vec<SocketAddr> = self
                    .foca
                    .iter_membership_state()
                    .map(|member| member.id().addr)
                    .take(RENEWAL_ANNOUNCES_MAX)
                    .collect();
                let rng = SmallRng::seed_from_u64(self.effects.nonce ^ renewed.generation);
                self.foca = Foca::with_custom_broadcast(
                    renewed.clone(),
                    self.swim.foca_config(1),
                    rng,
                    MessagePackCodec::default(),
                    VersionNotes {
                        book: Arc::clone(&self.notes),
                        me: renewed.addr,
                    },
                );
                self.configured_for = 1;
                self.watch = RingWatch::new(renewed.addr);
                self.effects.timer_token = None;
                self.effects.timers.clear();
                self.effects.suspected.clear();
                self.open_suspicions.clear();
                self.dead.clear();
                self.next_dead_round = None;
                self.joined_since_us = renewed.generation;
                self.counters.renewals += 1;
                for addr in known {
                    let _ = self.foca.announce(NodeId::seed(addr), &mut self.effects);
                }
                self.announce_to_seeds(now);
                // Under the new identity, the list is news again.
                self.announce_version(now);
                self.events.push(MembershipEvent::Renewed(renewed));
            }
            _ => {}
        }
    }

    /// Time the news of an arrival that happened after this node joined;
    /// members that were there before it are not news. A member renamed
    /// and then up is timed once.
    fn time_arrival(&mut self, member: &NodeId, now: Now) {
        if member.generation < self.joined_since_us
            || self.timed.get(&member.addr) == Some(&member.generation)
        {
            return;
        }
        self.timed.insert(member.addr, member.generation);
        match now.unix_us.checked_sub(member.generation) {
            Some(took_us) => {
                let took = took_us
                    .saturating_mul(1_000)
                    .clamp(1_000, CONVERGENCE_MAX_NS);
                let _ = self.convergence.record(took);
            }
            None => self.counters.convergence_skewed += 1,
        }
    }

    /// A suspicion's timeout ended: the member was declared down, or it
    /// refuted in time (alive again, or a newer identity at its address).
    fn close_suspicion(&mut self, suspect: NodeId) {
        if !self.open_suspicions.remove(&suspect.addr) {
            return;
        }
        let refuted = self
            .foca
            .iter_membership_state()
            .any(|member| member.id().addr == suspect.addr && member.state() == State::Alive);
        if refuted {
            self.counters.suspicions_refuted += 1;
            self.events.push(MembershipEvent::Refuted(suspect));
        }
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
