//! Remote routing on the gossip shard, sans-IO: what happens to a message
//! that leaves this node for an agent another node hosts, and to one that
//! arrives from another node.
//!
//! # A request's path across two nodes
//! 1. On node A, a shard routes a message for an agent only other nodes host
//!    (a proxy id, see `caxton_shards::Directory`) to A's remote port.
//! 2. A's gossip shard takes it off the port ([`LocalSide::take_outbound`]),
//!    names the agent, picks a host from the cluster directory (rendezvous
//!    by sender, so one sender's messages keep one path and their order) and
//!    sends a [`RemoteMessage`] addressed to the agent by name, carrying the
//!    sender's address on A.
//! 3. C's gossip shard resolves the name, remembers where an answer must go
//!    under a token (the origin: A and the sender's address there), and hands
//!    the message to its shards with the token as the sender: a client
//!    address on C's remote port.
//! 4. The answer, addressed to that token, comes out of C's remote port;
//!    C sends it to A addressed to the sender's address on A, and A's gossip
//!    shard hands it to its shards, which deliver it like any answer.
//!
//! A message that cannot go on is answered `failure` to its sender at the
//! point it stops: no host (`caxton:unknown-agent`; `caxton:node-down` when
//! its hosts were declared down), the name unknown on the host, or no room
//! in the host's rings (`caxton:refused:ring-full`).
//! A request that expects an answer is remembered until the answer comes
//! home: when its host is declared down, or the stream it left on breaks,
//! its sender is answered at once (`caxton:node-down`,
//! `caxton:connection-lost`) instead of waiting for its deadline.
//! Priority class, conversation, tokens and the remaining time to the
//! deadline travel with the message (each node's clock is its own, so the
//! deadline is carried as time left). A durable send is stored by the node
//! that hosts its agent: that node's notice (stored, or refused) comes home
//! first, then the answer.
//!
//! A hop of a durable chain (sent by a handler of a message stored here) is
//! kept in custody until its host acknowledges it stored: it goes again when
//! its host is lost, when [`CHAIN_HOP_RESEND_AFTER`] passes without the
//! acknowledgement, and, while no live node hosts its agent, once one does
//! ([`RemoteRouter::resend_hops`]). The acknowledgement quotes the hop's id,
//! so a hop sent twice settles its parent once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use caxton_messaging::{
    Address, AgentId, Durability, Envelope, Performative, PriorityClass, NOBODY,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::directory::ClusterDirectory;
use crate::wire::{self, NodeId, WireError};

/// Answers a node waits for at most; past it the oldest origin is
/// forgotten (its answer, should one come, is dropped and counted).
pub const ORIGINS_MAX: usize = 65_536;

/// Requests this node sent to other nodes and still awaits answers for, at
/// most; past it the oldest is no longer tracked: should its host be lost,
/// or the connection it left on break, nobody answers for it.
pub const IN_FLIGHT_MAX: usize = 65_536;

/// Answers coming home that wait for room on a full ring, at most; past it
/// an answer is dropped and counted (`answers_given_up`).
pub const ANSWERS_WAITING_MAX: usize = 65_536;

/// How long answers wait for a receiver whose ring takes none of them
/// before they are given up (counted): a client that left reads nothing.
pub const ANSWERS_PATIENCE: Duration = Duration::from_secs(10);

/// Hops of durable chains a node keeps at most until their hosts store
/// them; past it a hop is sent untracked (counted), and one lost on its way
/// runs again only when this node restarts (its parent is still stored).
pub const CHAIN_HOPS_MAX: usize = 65_536;

/// How long a kept hop of a durable chain waits for its host's
/// acknowledgement before it is sent again. A host stores a hop within
/// milliseconds, so only a lost hop (or acknowledgement) waits this long;
/// a hop whose host is declared down, or whose stream breaks, goes again
/// at once.
pub const CHAIN_HOP_RESEND_AFTER: Duration = Duration::from_secs(2);

/// Prefix of the engine's own failure answers.
const FAILURE_PREFIX: &str = "caxton:";

/// The node's side of remote routing: its remote port and its directory.
pub trait LocalSide {
    /// Move up to `max` messages that left for other nodes into `out`.
    fn take_outbound(&mut self, max: usize, out: &mut Vec<Envelope>);
    /// Hand a message to the node's shards (routed like a client's send,
    /// `route_key` standing for its sender, so one sender's messages take one
    /// path and keep their order); a full ring gives it back. The receiver
    /// may be rung only at [`Self::ring_deliveries`], which the loop calls
    /// before it could wait.
    fn deliver(&mut self, envelope: Envelope, route_key: u64) -> Result<(), Envelope>;
    /// Ring every receiver that deliveries since the last call left unrung.
    fn ring_deliveries(&mut self) {}
    /// The local id of agent `name`, if this node hosts it.
    fn resolve_local(&self, name: &str) -> Option<AgentId>;
    /// The agent a proxy id stands for.
    fn remote_name(&self, id: AgentId) -> Option<String>;
    /// The id here of agent `name`: a local one, else the proxy of an agent
    /// only other nodes host (how an agent on another node is named as a
    /// sender here).
    fn resolve_anywhere(&self, name: &str) -> Option<AgentId>;
    /// The name of the agent that sent from `address`; `None` for a client.
    fn agent_name(&self, address: Address) -> Option<String>;
    /// The remote port's participant index.
    fn participant(&self) -> u16;
    /// The node clock, nanoseconds.
    fn now_ns(&self) -> u64;
    /// The wall clock, Unix nanoseconds, at node-clock time `now_ns` (a
    /// recent reading of [`Self::now_ns`]): to carry send times between
    /// nodes. Taking the node clock's reading saves each message a second
    /// read of the clock.
    fn unix_ns_at(&self, now_ns: u64) -> u64;
    /// Resolves once messages wait in [`Self::take_outbound`].
    fn wait(&self) -> impl std::future::Future<Output = ()> + '_;
    /// Whether messages wait in [`Self::take_outbound`] (what the loop
    /// polls while [`Self::idle_poll`] keeps it from parking).
    fn has_outbound(&self) -> bool {
        false
    }
    /// How the loop polls for messages once idle before it parks
    /// (`None`: it parks at once).
    fn idle_poll(&self) -> Option<IdlePoll> {
        None
    }
    /// The agents other nodes host changed (from the cluster directory):
    /// make messages to those without a local instance leave through the
    /// remote port.
    fn remote_agents_changed(&mut self, names: Vec<String>);
    /// Called once, after the names of every member known alive were
    /// handed to [`Self::remote_agents_changed`] (or once waiting for them
    /// took too long): a restarted node redelivers its stored messages
    /// then, so a handler that sends to another node's agent finds it.
    fn directory_settled(&mut self) {}
}

/// How an idle cluster loop polls for remote messages before it parks:
/// the gossip shard's share of `runtime.spin_before_park`. A loop that
/// parks pays a sleep and a wake for each message that comes a moment
/// later (the shard that sends it a system call, the loop a trip through
/// the scheduler); one that polls picks it up at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePoll {
    /// How long after its last remote message the loop keeps polling.
    pub window: Duration,
    /// Whether it yields its CPU at every poll: the gossip shard shares its
    /// PU with a data shard, which must run to answer it.
    pub yield_cpu: bool,
}

/// No local side: a node that only takes part in membership (the
/// transport's tests, a node without shards).
#[derive(Debug, Default)]
pub struct NoLocal;

impl LocalSide for NoLocal {
    fn take_outbound(&mut self, _max: usize, _out: &mut Vec<Envelope>) {}

    fn deliver(&mut self, envelope: Envelope, _route_key: u64) -> Result<(), Envelope> {
        Err(envelope)
    }

    fn resolve_local(&self, _name: &str) -> Option<AgentId> {
        None
    }

    fn remote_name(&self, _id: AgentId) -> Option<String> {
        None
    }

    fn resolve_anywhere(&self, _name: &str) -> Option<AgentId> {
        None
    }

    fn agent_name(&self, _address: Address) -> Option<String> {
        None
    }

    fn participant(&self) -> u16 {
        u16::MAX
    }

    fn now_ns(&self) -> u64 {
        0
    }

    fn unix_ns_at(&self, _now_ns: u64) -> u64 {
        0
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::pending()
    }

    fn remote_agents_changed(&mut self, _names: Vec<String>) {}
}

/// Where a remote message goes on the receiving node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Any instance of the agent of that name.
    Agent(String),
    /// An address of the receiving node's own (an answer coming home).
    Address(Address),
}

/// A message between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMessage {
    /// Where it goes.
    pub target: Target,
    /// The sender's address on the sending node, when answers should reach it.
    pub sender: Option<Address>,
    /// What kind of act it is.
    pub performative: Performative,
    /// The conversation.
    pub conversation_id: u64,
    /// The token answers quote.
    pub reply_with: u64,
    /// The token this answers.
    pub in_reply_to: u64,
    /// The priority class.
    pub priority: u8,
    /// Time left to the deadline when it left, nanoseconds (`None`: none).
    pub deadline_in_ns: Option<u64>,
    /// Whether the sender asked for it to be stored before it is accepted.
    pub durable: bool,
    /// A durable send's notice from the node that stored it (the id it was
    /// stored under there), on its way home.
    pub notice: Option<u64>,
    /// A hop of a durable chain: the stored message on the sending node
    /// that sent it. The receiving node stores it, then acknowledges it with
    /// `chain_ack`, which settles that parent.
    pub chained: Option<u64>,
    /// The acknowledgement of a chain hop stored on the other node: the
    /// parent it settles here.
    pub chain_ack: Option<u64>,
    /// When its sender sent it, on the sending node's wall clock (Unix
    /// nanoseconds): the receiver times routing from it, so the two clocks'
    /// skew is in `caxton_remote_routing_latency_seconds`.
    pub sent_unix_ns: u64,
    /// The content, as MessagePack `bin`: one copy each way (see
    /// [`content_bytes`]).
    #[serde(with = "content_bytes")]
    pub content: Vec<u8>,
    /// The sending agent's name, so `msg_sender` on the receiving node
    /// reads it (`None`: a client, or the engine). Last and defaulted, so a
    /// message encoded without it still reads.
    #[serde(default)]
    pub sender_name: Option<String>,
    /// A chain hop's id on the sending node, which keeps the hop until the
    /// host acknowledges it stored (0: not kept). The acknowledgement
    /// quotes it, so a hop sent twice settles its parent once. Defaulted,
    /// so a message encoded without it still reads.
    #[serde(default)]
    pub hop: u64,
}

impl RemoteMessage {
    /// A message to `target`: no sender, conversation, tokens, deadline or
    /// durability, priority class 0; set what differs after.
    pub fn new(target: Target, performative: Performative, content: Vec<u8>) -> Self {
        Self {
            target,
            sender: None,
            performative,
            conversation_id: 0,
            reply_with: 0,
            in_reply_to: 0,
            priority: 0,
            deadline_in_ns: None,
            durable: false,
            notice: None,
            chained: None,
            chain_ack: None,
            sent_unix_ns: 0,
            content,
            sender_name: None,
            hop: 0,
        }
    }
}

/// [`RemoteMessage::content`] on the wire: MessagePack `bin`. Serde's
/// default for a `Vec<u8>` is an array of integers: a visitor call per
/// byte to read, and two bytes on the wire for every byte over 127. An
/// array of byte values (what nodes sent before) still reads.
mod content_bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;

    /// Most bytes reserved up front for an array-encoded content: its
    /// length is the sender's claim, and a claim is not an allocation.
    const RESERVE_MAX: usize = 4096;

    pub fn serialize<S: Serializer>(content: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(content)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Content)
    }

    struct Content;

    impl<'de> Visitor<'de> for Content {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("message content: bytes, or an array of byte values")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut content = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(RESERVE_MAX));
            while let Some(byte) = seq.next_element::<u8>()? {
                content.push(byte);
            }
            Ok(content)
        }
    }
}

/// Messages from one node to another, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteBatch {
    /// The sending node (inbound TCP connections do not say who they are).
    pub from: NodeId,
    /// The messages, oldest first.
    pub messages: Vec<RemoteMessage>,
}

impl RemoteBatch {
    /// As MessagePack.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a batch always encodes")
    }

    /// As a whole frame of kind `Messages`, encoded in place behind the
    /// frame's header (one buffer, no copy of the packet): the same bytes
    /// as [`Self::encode`], the messages written by hand.
    pub fn encode_frame(&self, header: wire::FrameHeader) -> Vec<u8> {
        let content: usize = self
            .messages
            .iter()
            .map(|message| message.content.len())
            .sum();
        let mut frame = wire::frame_start(content + self.messages.len() * 96);
        // The batch: an array of the sender's identity and the messages.
        frame.push(0x92);
        rmp_serde::encode::write(&mut frame, &self.from).expect("an identity always encodes");
        crate::remote_codec::write_messages(&mut frame, &self.messages);
        wire::frame_finish(&mut frame, wire::FrameKind::Messages, header);
        frame
    }

    /// Read one, checking the sender's identity: by hand where the packet
    /// has the shapes this node writes, else (and for every error) by serde.
    pub fn decode(packet: &[u8]) -> Result<Self, WireError> {
        let batch = match crate::remote_codec::read_batch(packet) {
            Some(batch) => batch,
            None => rmp_serde::from_slice(packet)
                .map_err(|error| WireError::Decode(error.to_string()))?,
        };
        wire::check_identity(&batch.from)?;
        Ok(batch)
    }

    /// The hand-written reader alone: the batch, or `None` where it gives
    /// up. For the tests and the fuzz target that hold it to serde's answer.
    pub fn decode_by_hand(packet: &[u8]) -> Option<Self> {
        crate::remote_codec::read_batch(packet)
    }
}

/// A frame of remote messages, checked (version, kind, length, checksum)
/// and decoded; what fails is dropped and counted by the caller.
pub fn read_batch(frame: &[u8], max_frame: usize) -> Result<RemoteBatch, WireError> {
    match wire::unframe_any(frame, max_frame)? {
        (wire::FrameKind::Messages, _, packet) => RemoteBatch::decode(packet),
        _ => Err(WireError::UnknownVersion),
    }
}

/// What becomes of a message too large for a frame of its own
/// ([`RemoteRouter::too_large`]).
#[derive(Debug, PartialEq, Eq)]
pub enum TooLarge {
    /// For this node's shards: its sender's answer, and for a chain's hop
    /// the settlement of its parent.
    Local(Vec<Envelope>),
    /// An answer for another node's sender: this `failure` goes in its place.
    SendInstead(RemoteMessage),
    /// Nobody to tell (counted).
    Dropped,
}

/// What became of a message that left this node's shards.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send it to that node.
    Send(SocketAddr, RemoteMessage),
    /// It cannot go: this answer goes back to its sender here.
    Answer(Envelope),
    /// Nothing to do (an answer nobody waits for any more), counted.
    Dropped,
    /// A hop of a durable chain whose agent no live node hosts: kept, and
    /// sent once one does (see [`RemoteRouter::resend_hops`]).
    Held,
}

/// Hops of durable chains due again ([`RemoteRouter::resend_hops`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resends {
    /// Hops to send, each to a live host of its agent.
    pub sends: Vec<(SocketAddr, RemoteMessage)>,
    /// For this node's shards: for each hop whose deadline passed, the
    /// acknowledgement that settles its parent and, for a request, the
    /// `failure` (`caxton:timeout`) its sender is answered.
    pub local: Vec<Envelope>,
}

/// What became of a message that arrived from another node.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Handed to the shards.
    Delivered,
    /// Refused here: this answer goes back to the sending node (boxed: a
    /// refusal is rare, and `Delivered` is returned per message).
    Answer(SocketAddr, Box<RemoteMessage>),
    /// Dropped (counted): refused, and nobody to tell.
    Dropped,
}

/// Remote routing's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCounters {
    /// Messages sent to other nodes.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages refused here or with no host, answered `failure`.
    pub failed: u64,
    /// Answers dropped: their origin was forgotten, or nobody to tell.
    pub dropped: u64,
    /// Requests answered `failure` because their host went down or the
    /// stream they left on broke.
    pub lost: u64,
    /// Hops of durable chains sent again: unacknowledged for
    /// [`CHAIN_HOP_RESEND_AFTER`], their host lost, or waiting for a host.
    #[serde(default)]
    pub hops_resent: u64,
    /// Hops of durable chains whose deadline passed before any node stored
    /// them: answered `failure` (`caxton:timeout`), their parent settled.
    #[serde(default)]
    pub hops_expired: u64,
    /// Hops of durable chains sent untracked, the custody table being full
    /// (such a hop lost on its way runs again only after this node restarts).
    #[serde(default)]
    pub hops_untracked: u64,
    /// Acknowledgements of hops already settled (a hop sent twice), dropped.
    #[serde(default)]
    pub hop_acks_duplicate: u64,
    /// Kept hops their host refused to store (storage off or failing
    /// there): no longer sent; their parent runs again after a restart.
    #[serde(default)]
    pub hops_refused: u64,
    /// Answers for this node's senders that found a full ring and waited
    /// for room (see [`RemoteRouter::deliver_answer`]).
    #[serde(default)]
    pub answers_waited: u64,
    /// Answers for this node's senders given up: [`ANSWERS_WAITING_MAX`]
    /// already waited for room, or their receiver's ring took none for
    /// [`ANSWERS_PATIENCE`].
    #[serde(default)]
    pub answers_given_up: u64,
    /// Answers that came home for requests already answered lost
    /// (`node-down`, `connection-lost`): dropped, so no requester hears twice.
    #[serde(default)]
    pub answers_after_loss: u64,
}

/// Where an answer to a message from another node must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Origin {
    node: SocketAddr,
    sender: Address,
    /// The parent on the sending node, for a chain hop.
    chained: Option<u64>,
    /// The hop's id on the sending node, quoted by the acknowledgement.
    hop: u64,
}

/// Remote routing's state on one node: the origins of messages from other
/// nodes still waiting for answers.
#[derive(Debug, Default)]
pub struct RemoteRouter {
    // Fx hashing: these maps are touched per message, their keys are tokens
    // and addresses this node made itself, and SipHash showed among the
    // gossip shard's top symbols in a profile of remote request-reply.
    origins: FxHashMap<u32, Origin>,
    order: VecDeque<u32>,
    next_token: u32,
    /// Requests sent to other nodes awaiting answers, by (sender, token).
    in_flight: FxHashMap<(Address, u64), InFlight>,
    in_flight_order: VecDeque<(Address, u64)>,
    /// Requests answered lost, by (sender, token), at most
    /// [`IN_FLIGHT_MAX`]: an answer that still comes for one (its host had
    /// stalled, not died) is dropped. Each is numbered, and
    /// `answered_lost_order` lists them oldest first by number: a key
    /// remembered again leaves a stale entry there, which must not forget
    /// the newer one when it is evicted.
    answered_lost: FxHashMap<(Address, u64), u64>,
    answered_lost_order: VecDeque<((Address, u64), u64)>,
    answered_lost_count: u64,
    /// Hops of durable chains sent to other nodes, by hop id, kept until
    /// their host acknowledges them stored.
    hops: FxHashMap<u64, ChainHop>,
    /// The last hop id given out; seeded from the wall clock, so an
    /// acknowledgement of a hop sent before a restart matches nothing.
    last_hop: u64,
    /// When the earliest kept hop is due to be sent again (node clock, ns).
    hops_due_ns: u64,
    /// Answers for this node's senders that a full ring refused, per
    /// receiver ([`waiting_key`]), in arrival order (see
    /// [`Self::deliver_answer`]).
    answers_waiting: FxHashMap<(Address, u64), WaitingAnswers>,
    /// How many wait there, over all receivers.
    answers_waiting_count: usize,
    counters: RemoteCounters,
}

/// A hop of a durable chain in this node's custody: its parent is stored
/// here and stays unfinished until the hop is stored by the node hosting
/// its agent. Until that node's acknowledgement comes, the hop is sent
/// again, to whichever live node hosts the agent then, so a hop lost with
/// its host (or on a broken stream) is not lost while this node runs on.
#[derive(Debug)]
struct ChainHop {
    /// Where it was last sent; `None` while no live node hosts its agent.
    node: Option<SocketAddr>,
    /// When to send it again unless acknowledged (node clock, ns).
    due_ns: u64,
    /// Its deadline on the node clock (`Envelope::NO_DEADLINE`: none).
    deadline_ns: u64,
    /// Its sender's route key: a host is chosen for it as for any message.
    route_key: u64,
    /// The message as first sent, its hop id set (and `chained`, its parent).
    message: RemoteMessage,
}

/// What answers wait behind one another under: their receiver, for a chain
/// acknowledgement (to nobody, for the shard holding its parent) also the
/// parent, since acknowledgements keep no order among themselves.
fn waiting_key(envelope: &Envelope) -> (Address, u64) {
    match envelope.durability {
        Durability::ChainAck(parent) => (envelope.receiver, parent),
        _ => (envelope.receiver, 0),
    }
}

/// The agent an address names, if it names one.
fn agent_of(address: Address) -> Option<AgentId> {
    match address {
        Address::Agent(id) | Address::Remote { agent: id, .. } => Some(id),
        Address::Instance(instance) => Some(instance.agent),
        Address::Client { .. } => None,
    }
}

/// Answers for one receiver that wait for room in its ring, oldest first.
#[derive(Debug)]
struct WaitingAnswers {
    answers: VecDeque<(Envelope, u64)>,
    /// When one last went onto the ring, or the first began to wait.
    moved_ns: u64,
}

/// A request sent to another node, awaiting its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    node: SocketAddr,
    conversation_id: u64,
    priority: PriorityClass,
    /// A durable send whose notice (stored or refused) has not come: its
    /// sender waits for a notice, not an answer.
    awaiting_notice: bool,
}

impl RemoteRouter {
    /// What was counted.
    pub fn counters(&self) -> RemoteCounters {
        self.counters
    }

    /// `count` messages were taken for sending to another node (a frame
    /// its peer's queue accepted).
    pub fn sent(&mut self, count: usize) {
        self.counters.sent += count as u64;
    }

    /// Answers still awaited from this node's agents.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    /// Requests sent to other nodes whose answers are still awaited.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Hops of durable chains kept until their host stores them.
    pub fn chain_hops(&self) -> usize {
        self.hops.len()
    }

    /// Of those, the hops waiting for a live node to host their agent.
    pub fn chain_hops_waiting(&self) -> usize {
        self.hops.values().filter(|hop| hop.node.is_none()).count()
    }

    /// Answers waiting for room on a full ring.
    pub fn answers_waiting(&self) -> usize {
        self.answers_waiting_count
    }

    /// Hand an answer for a sender on this node (a reply, a `failure` or a
    /// notice in its place, a chain's acknowledgement) to the shards.
    ///
    /// An answer is owed: its sender waits for it, and nothing else will
    /// tell it (a request's deadline is enforced where it is handled, not
    /// where it was sent). So a full ring does not refuse one, as it does a
    /// request: it waits here, behind any earlier answer to the same
    /// receiver so that none overtakes another, and goes at
    /// [`Self::deliver_waiting_answers`] once the ring has room. Only past
    /// [`ANSWERS_WAITING_MAX`] waiting is one dropped, or past
    /// [`ANSWERS_PATIENCE`] without room a receiver's (counted).
    pub fn deliver_answer(
        &mut self,
        envelope: Envelope,
        route_key: u64,
        local: &mut impl LocalSide,
    ) {
        let key = waiting_key(&envelope);
        let envelope = match self.answers_waiting.get(&key) {
            Some(_) => envelope,
            None => match local.deliver(envelope, route_key) {
                Ok(()) => return,
                Err(envelope) => envelope,
            },
        };
        if self.answers_waiting_count >= ANSWERS_WAITING_MAX {
            self.counters.answers_given_up += 1;
            return;
        }
        self.counters.answers_waited += 1;
        self.answers_waiting_count += 1;
        let waiting = self
            .answers_waiting
            .entry(key)
            .or_insert_with(|| WaitingAnswers {
                answers: VecDeque::new(),
                moved_ns: local.now_ns(),
            });
        waiting.answers.push_back((envelope, route_key));
    }

    /// Hand the answers that waited for room to the shards, each
    /// receiver's in order, as far as their rings take them; how many went.
    pub fn deliver_waiting_answers(&mut self, local: &mut impl LocalSide) -> usize {
        if self.answers_waiting_count == 0 {
            return 0;
        }
        let now = local.now_ns();
        let patience_ns = ANSWERS_PATIENCE.as_nanos() as u64;
        let (mut delivered, mut given_up) = (0, 0);
        self.answers_waiting.retain(|_, waiting| {
            let before = waiting.answers.len();
            while let Some((envelope, route_key)) = waiting.answers.pop_front() {
                if let Err(envelope) = local.deliver(envelope, route_key) {
                    waiting.answers.push_front((envelope, route_key));
                    break;
                }
            }
            let moved = before - waiting.answers.len();
            delivered += moved;
            if moved > 0 {
                waiting.moved_ns = now;
            } else if now.saturating_sub(waiting.moved_ns) >= patience_ns {
                given_up += waiting.answers.len();
                waiting.answers.clear();
            }
            !waiting.answers.is_empty()
        });
        self.answers_waiting_count -= delivered + given_up;
        self.counters.answers_given_up += given_up as u64;
        delivered
    }

    /// Node `node` was declared down, or the stream to it broke (`reason`):
    /// answer `failure` to every sender still waiting on it. The answers go
    /// to this node's shards.
    pub fn node_lost(
        &mut self,
        node: SocketAddr,
        reason: &str,
        local: &impl LocalSide,
    ) -> Vec<Envelope> {
        let lost: Vec<((Address, u64), InFlight)> = self
            .in_flight
            .iter()
            .filter(|(_, pending)| pending.node == node)
            .map(|(key, pending)| (*key, *pending))
            .collect();
        // Hops of durable chains sent there go again, to a live host.
        self.hops_due_now(local.now_ns(), |hop| hop.node == Some(node));
        let mut answers = Vec::with_capacity(lost.len());
        for ((sender, token), pending) in lost {
            self.in_flight.remove(&(sender, token));
            self.remember_answered_lost((sender, token));
            self.counters.lost += 1;
            answers.push(failure_to(
                sender,
                token,
                pending.conversation_id,
                pending.priority,
                reason,
                // It left: its host may have stored it before it was lost.
                if pending.awaiting_notice {
                    Unanswered::InDoubt
                } else {
                    Unanswered::Failure
                },
                local,
            ));
        }
        answers
    }

    /// A message for `node` that could not be sent (`reason`): the answer
    /// for its sender here, if it has one waiting.
    pub fn unsent(
        &mut self,
        node: SocketAddr,
        message: RemoteMessage,
        reason: &str,
        local: &impl LocalSide,
    ) -> Option<Envelope> {
        // A hop of a durable chain is kept: it goes again when due.
        if message.hop != 0 && self.hops.contains_key(&message.hop) {
            return None;
        }
        let sender = message.sender?;
        if message.performative == Performative::Failure {
            return None;
        }
        // Answered lost already (its node was declared down while its frame
        // waited for a connection): its sender has heard.
        if message.reply_with != 0
            && self
                .answered_lost
                .contains_key(&(sender, message.reply_with))
        {
            return None;
        }
        if self
            .in_flight
            .get(&(sender, message.reply_with))
            .is_some_and(|pending| pending.node == node)
        {
            self.in_flight.remove(&(sender, message.reply_with));
        }
        self.counters.failed += 1;
        Some(failure_to(
            sender,
            message.reply_with,
            message.conversation_id,
            PriorityClass(message.priority),
            reason,
            // It never left this node.
            if message.durable {
                Unanswered::NotStored
            } else {
                Unanswered::Failure
            },
            local,
        ))
    }

    /// A request answered lost: what comes for it later is dropped.
    fn remember_answered_lost(&mut self, key: (Address, u64)) {
        if self.answered_lost_order.len() >= IN_FLIGHT_MAX {
            if let Some((oldest, number)) = self.answered_lost_order.pop_front() {
                if self.answered_lost.get(&oldest) == Some(&number) {
                    self.answered_lost.remove(&oldest);
                }
            }
        }
        self.answered_lost_count += 1;
        self.answered_lost.insert(key, self.answered_lost_count);
        self.answered_lost_order
            .push_back((key, self.answered_lost_count));
    }

    /// A message for `node` too large for a frame of its own: it cannot
    /// cross. Its sender here is answered `failure` (`refused:too-large`);
    /// an answer for a sender on `node` is replaced by that `failure`, so
    /// the requester there hears why rather than nothing; a hop of a
    /// durable chain leaves custody and settles its parent, as one past its
    /// deadline does (it would be refused again at every resend, and at
    /// every run of its parent after a restart).
    pub fn too_large(
        &mut self,
        node: SocketAddr,
        message: RemoteMessage,
        local: &impl LocalSide,
    ) -> TooLarge {
        const REASON: &str = "refused:too-large";
        let mut settled = Vec::new();
        if message.hop != 0 && self.hops.remove(&message.hop).is_some() {
            self.counters.hops_refused += 1;
            if let Some(parent) = message.chained {
                settled.push(Envelope::chain_ack(
                    parent,
                    local.now_ns(),
                    local.participant(),
                ));
            }
        }
        if message.sender.is_some() {
            settled.extend(self.unsent(node, message, REASON, local));
            return if settled.is_empty() {
                TooLarge::Dropped
            } else {
                TooLarge::Local(settled)
            };
        }
        if !settled.is_empty() {
            return TooLarge::Local(settled);
        }
        match message.target {
            Target::Address(to)
                if message.in_reply_to != 0 && message.performative != Performative::Failure =>
            {
                self.counters.failed += 1;
                TooLarge::SendInstead(RemoteMessage {
                    conversation_id: message.conversation_id,
                    in_reply_to: message.in_reply_to,
                    priority: message.priority,
                    ..RemoteMessage::new(
                        Target::Address(to),
                        Performative::Failure,
                        format!("{FAILURE_PREFIX}{REASON}").into_bytes(),
                    )
                })
            }
            _ => {
                self.counters.dropped += 1;
                TooLarge::Dropped
            }
        }
    }

    /// Remember a request sent to `node`, until its answer comes home.
    fn track(&mut self, node: SocketAddr, envelope: &Envelope) {
        if envelope.reply_with == 0 || envelope.sender == NOBODY {
            return;
        }
        // A sender that uses a token again asks afresh.
        if !self.answered_lost.is_empty() {
            self.answered_lost
                .remove(&(envelope.sender, envelope.reply_with));
        }
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            while let Some(oldest) = self.in_flight_order.pop_front() {
                if self.in_flight.remove(&oldest).is_some() {
                    break;
                }
            }
        }
        let key = (envelope.sender, envelope.reply_with);
        self.in_flight.insert(
            key,
            InFlight {
                node,
                conversation_id: envelope.conversation_id,
                priority: envelope.priority,
                awaiting_notice: envelope.durability == Durability::Requested,
            },
        );
        self.in_flight_order.push_back(key);
        drop_settled_front(&mut self.in_flight_order, &self.in_flight, IN_FLIGHT_MAX);
    }

    /// Take a hop of a durable chain into custody and send it to `host`,
    /// or keep it until a live node hosts its agent.
    fn take_custody(
        &mut self,
        envelope: Envelope,
        name: String,
        host: Option<SocketAddr>,
        local: &impl LocalSide,
    ) -> Outbound {
        let now = local.now_ns();
        if self.last_hop == 0 {
            self.last_hop = local.unix_ns_at(now).max(1);
        }
        self.last_hop = self.last_hop.wrapping_add(1).max(1);
        let hop = self.last_hop;
        let route_key = envelope.sender.route_key();
        let deadline_ns = envelope.deadline_ns;
        let sender = envelope.sender;
        let mut message = to_remote(envelope, Target::Agent(name), Some(sender), local);
        message.hop = hop;
        // Without a host it is looked at again when the directory changes.
        let due_ns = now.saturating_add(CHAIN_HOP_RESEND_AFTER.as_nanos() as u64);
        self.hops_due_ns = if self.hops.is_empty() {
            due_ns
        } else {
            self.hops_due_ns.min(due_ns)
        };
        let outbound = match host {
            Some(host) => Outbound::Send(host, message.clone()),
            None => Outbound::Held,
        };
        self.hops.insert(
            hop,
            ChainHop {
                node: host,
                due_ns,
                deadline_ns,
                route_key,
                message,
            },
        );
        outbound
    }

    /// The directory changed: kept hops waiting for a host look again now.
    pub fn directory_changed(&mut self, local: &impl LocalSide) {
        self.hops_due_now(local.now_ns(), |hop| hop.node.is_none());
    }

    /// Kept hops that `pick` chooses are due at `now`.
    fn hops_due_now(&mut self, now: u64, pick: impl Fn(&ChainHop) -> bool) {
        for hop in self.hops.values_mut().filter(|hop| pick(hop)) {
            hop.due_ns = now;
            self.hops_due_ns = self.hops_due_ns.min(now);
        }
    }

    /// Kept hops of durable chains that are due: each is sent again to a
    /// live host of its agent (kept, waiting, when there is none), and one
    /// whose deadline passed is given up (its parent settled, its sender
    /// answered `caxton:timeout`, as its host would have). Cheap when
    /// nothing is due.
    pub fn resend_hops(&mut self, directory: &ClusterDirectory, local: &impl LocalSide) -> Resends {
        let mut resends = Resends::default();
        if self.hops.is_empty() {
            return resends;
        }
        let now = local.now_ns();
        if now < self.hops_due_ns {
            return resends;
        }
        let again = now.saturating_add(CHAIN_HOP_RESEND_AFTER.as_nanos() as u64);
        let mut next_due = u64::MAX;
        let mut expired = Vec::new();
        for (id, hop) in &mut self.hops {
            if hop.due_ns > now {
                next_due = next_due.min(hop.due_ns);
                continue;
            }
            if hop.deadline_ns != Envelope::NO_DEADLINE && hop.deadline_ns <= now {
                expired.push(*id);
                continue;
            }
            let Target::Agent(name) = &hop.message.target else {
                continue;
            };
            hop.node = directory.choose(name, hop.route_key).map(|host| host.addr);
            hop.due_ns = again;
            next_due = next_due.min(again);
            if let Some(host) = hop.node {
                let mut message = hop.message.clone();
                if hop.deadline_ns != Envelope::NO_DEADLINE {
                    message.deadline_in_ns = Some(hop.deadline_ns - now);
                }
                self.counters.hops_resent += 1;
                resends.sends.push((host, message));
            }
        }
        self.hops_due_ns = next_due;
        for id in expired {
            let Some(hop) = self.hops.remove(&id) else {
                continue;
            };
            self.counters.hops_expired += 1;
            let message = hop.message;
            if let Some(parent) = message.chained {
                resends
                    .local
                    .push(Envelope::chain_ack(parent, now, local.participant()));
            }
            if let (Some(sender), true) = (message.sender, message.reply_with != 0) {
                resends.local.push(failure_to(
                    sender,
                    message.reply_with,
                    message.conversation_id,
                    PriorityClass(message.priority),
                    "timeout",
                    // A chain hop's sender waits for its answer, not a notice.
                    Unanswered::Failure,
                    local,
                ));
            }
        }
        resends
    }

    /// A message that left this node's shards through the remote port.
    pub fn outbound(
        &mut self,
        envelope: Envelope,
        local: &impl LocalSide,
        directory: &ClusterDirectory,
    ) -> Outbound {
        match envelope.receiver {
            Address::Agent(id) => {
                let Some(name) = local.remote_name(id) else {
                    return self.fail_here(&envelope, "unknown-agent", local);
                };
                let host = directory
                    .choose(&name, envelope.sender.route_key())
                    .map(|host| host.addr);
                if let Durability::Chained(_) = envelope.durability {
                    if self.hops.len() < CHAIN_HOPS_MAX {
                        return self.take_custody(envelope, name, host, local);
                    }
                    self.counters.hops_untracked += 1;
                }
                let Some(host) = host else {
                    // Its hosts are all declared down: say so.
                    let reason = if directory.departed_host(&name).is_some() {
                        "node-down"
                    } else {
                        "unknown-agent"
                    };
                    return self.fail_here(&envelope, reason, local);
                };
                self.track(host, &envelope);
                Outbound::Send(host, {
                    let sender = envelope.sender;
                    to_remote(envelope, Target::Agent(name), Some(sender), local)
                })
            }
            Address::Client { port, id }
            | Address::Remote {
                port, token: id, ..
            } if port == local.participant() => {
                // A durable send's notice (stored, or refused) comes before
                // its answer: the origin stays for the answer.
                let origin = if matches!(envelope.durability, Durability::Notice(_)) {
                    self.origins.get(&id).copied()
                } else {
                    self.origins.remove(&id)
                };
                let Some(origin) = origin else {
                    self.counters.dropped += 1;
                    return Outbound::Dropped;
                };
                // A chain hop stored here: acknowledge it to its parent's node.
                if let (Some(parent), Durability::Notice(_), Performative::Agree) =
                    (origin.chained, envelope.durability, envelope.performative)
                {
                    if origin.sender == NOBODY {
                        // Nobody waits for an answer: the origin served its purpose.
                        self.origins.remove(&id);
                    }
                    let mut ack = to_remote(envelope, Target::Address(NOBODY), None, local);
                    ack.notice = None;
                    ack.chain_ack = Some(parent);
                    ack.hop = origin.hop;
                    ack.content.clear();
                    return Outbound::Send(origin.node, ack);
                }
                // Refused, not stored: no answer follows. A refused chain hop's
                // node is told even when nobody waits, so it stops sending it.
                let refused = matches!(envelope.durability, Durability::Notice(_))
                    && envelope.performative != Performative::Agree;
                if refused {
                    self.origins.remove(&id);
                }
                let refused_hop = refused && origin.hop != 0;
                if origin.sender == NOBODY && !refused_hop {
                    self.counters.dropped += 1;
                    return Outbound::Dropped;
                }
                let mut message = to_remote(envelope, Target::Address(origin.sender), None, local);
                if refused_hop {
                    message.hop = origin.hop;
                }
                Outbound::Send(origin.node, message)
            }
            _ => {
                self.counters.dropped += 1;
                Outbound::Dropped
            }
        }
    }

    /// A message that arrived from node `from`.
    pub fn inbound(
        &mut self,
        from: SocketAddr,
        mut message: RemoteMessage,
        local: &mut impl LocalSide,
    ) -> Inbound {
        self.counters.received += 1;
        // A kept hop's acknowledgement ends its custody; a second one (the
        // hop was sent twice) must not settle the parent again.
        if message.chain_ack.is_some()
            && message.hop != 0
            && self.hops.remove(&message.hop).is_none()
        {
            self.counters.hop_acks_duplicate += 1;
            return Inbound::Dropped;
        }
        // A kept hop its host refused to store (its storage is off, or
        // failed): it is not sent again. Its parent stays unfinished and runs
        // again after this node restarts, as with a hop refused here.
        if let (Target::Address(to), Some(_), None, hop @ 1..) = (
            &message.target,
            message.notice,
            message.chain_ack,
            message.hop,
        ) {
            if self.hops.remove(&hop).is_some() {
                self.counters.hops_refused += 1;
            }
            if *to == NOBODY {
                return Inbound::Dropped;
            }
        }
        let now = local.now_ns();
        let (receiver, token) = match &message.target {
            Target::Agent(name) => {
                let Some(id) = local.resolve_local(name) else {
                    return self.refuse(from, &message, "unknown-agent");
                };
                let hop = message.hop;
                let token = match (message.sender, message.chained) {
                    (Some(sender), chained) => Some(self.remember(from, sender, chained, hop)),
                    // A chain hop always needs its way home, for the acknowledgement.
                    (None, Some(parent)) => Some(self.remember(from, NOBODY, Some(parent), hop)),
                    (None, None) => None,
                };
                (Address::Agent(id), token)
            }
            Target::Address(address) => {
                // An answer coming home: its request is no longer in flight.
                if message.in_reply_to != 0 {
                    let key = (*address, message.in_reply_to);
                    if self.in_flight.remove(&key).is_none()
                        && !self.answered_lost.is_empty()
                        && self.answered_lost.contains_key(&key)
                    {
                        // Its sender was told the answer is lost, and acted
                        // on that: a second answer would contradict it.
                        self.counters.answers_after_loss += 1;
                        return Inbound::Dropped;
                    }
                }
                (*address, None)
            }
        };
        // An agent sender is named by its id here, so `msg_sender` reads
        // its name; the token (if any) is the way home for answers.
        let port = local.participant();
        let named = message
            .sender_name
            .as_deref()
            .and_then(|name| local.resolve_anywhere(name));
        let sender = match (token, named) {
            (Some(token), Some(agent)) => Address::Remote { port, token, agent },
            (Some(id), None) => Address::Client { port, id },
            // An answer: nothing goes back to it (an answer to it is dropped, counted).
            (None, Some(agent)) => Address::Remote {
                port,
                token: NOBODY_ID,
                agent,
            },
            (None, None) => NOBODY,
        };
        // The send time on this node's clock: now, less how long ago the
        // sender's wall clock says it was (no time at all when the clocks
        // disagree the other way).
        let sent_at_ns = if message.sent_unix_ns == 0 {
            now
        } else {
            now.saturating_sub(local.unix_ns_at(now).saturating_sub(message.sent_unix_ns))
        };
        let envelope = Envelope {
            conversation_id: message.conversation_id,
            reply_with: message.reply_with,
            in_reply_to: message.in_reply_to,
            priority: PriorityClass(message.priority),
            deadline_ns: message
                .deadline_in_ns
                .map_or(Envelope::NO_DEADLINE, |left| now.saturating_add(left)),
            // A chain hop from another node is stored here like a durable
            // send; its notice becomes the chain's acknowledgement.
            durability: match (
                message.chain_ack,
                message.notice,
                message.durable || message.chained.is_some(),
            ) {
                (Some(parent), _, _) => Durability::ChainAck(parent),
                (None, Some(id), _) => Durability::Notice(id),
                (None, None, true) => Durability::Requested,
                (None, None, false) => Durability::Transient,
            },
            ..Envelope::new(
                message.performative,
                sender,
                receiver,
                // Moved in; given back should the shards refuse it.
                std::mem::take(&mut message.content),
                sent_at_ns,
                local.participant(),
            )
        };
        let route_key = message
            .sender
            .map_or(0, |sender| sender.route_key() ^ node_key(from));
        if let Target::Address(_) = message.target {
            // Coming home: owed to its receiver, so it waits for room.
            self.deliver_answer(envelope, route_key, local);
            return Inbound::Delivered;
        }
        // Answers wait for room in this agent's ring: a message for it does
        // not overtake them (it would find the ring full but for a race
        // with the shard's reading).
        let refused = self.answers_waiting_count > 0
            && self
                .answers_waiting
                .keys()
                .any(|(waiting, _)| agent_of(*waiting) == agent_of(receiver));
        let delivered = if refused {
            Err(envelope)
        } else {
            local.deliver(envelope, route_key)
        };
        match delivered {
            Ok(()) => Inbound::Delivered,
            Err(envelope) => {
                message.content = envelope.content;
                if let Some(token) = token {
                    self.origins.remove(&token);
                }
                self.refuse(from, &message, "refused:ring-full")
            }
        }
    }

    /// Remember where the answer to a message from `node` goes; the token.
    fn remember(
        &mut self,
        node: SocketAddr,
        sender: Address,
        chained: Option<u64>,
        hop: u64,
    ) -> u32 {
        if self.origins.len() >= ORIGINS_MAX {
            while let Some(oldest) = self.order.pop_front() {
                if self.origins.remove(&oldest).is_some() {
                    break;
                }
            }
        }
        // Tokens wrap after four billion; one still waiting is skipped.
        loop {
            self.next_token = self.next_token.wrapping_add(1);
            if self.next_token != NOBODY_ID && !self.origins.contains_key(&self.next_token) {
                break;
            }
        }
        let token = self.next_token;
        self.origins.insert(
            token,
            Origin {
                node,
                sender,
                chained,
                hop,
            },
        );
        self.order.push_back(token);
        drop_settled_front(&mut self.order, &self.origins, ORIGINS_MAX);
        token
    }

    /// A message that stops on this node: `failure` to its sender, here.
    fn fail_here(&mut self, envelope: &Envelope, reason: &str, local: &impl LocalSide) -> Outbound {
        let path = envelope.reply_path();
        if path.performative == Performative::Failure || envelope.sender == NOBODY {
            self.counters.dropped += 1;
            return Outbound::Dropped;
        }
        self.counters.failed += 1;
        let content = format!("{FAILURE_PREFIX}{reason}").into_bytes();
        let (now, participant) = (local.now_ns(), local.participant());
        // A durable send's sender waits for a notice: it is refused, not stored.
        Outbound::Answer(if envelope.durability == Durability::Requested {
            path.notice(Performative::Refuse, 0, content, now, participant)
        } else {
            path.answer(Performative::Failure, content, now, participant)
        })
    }

    /// A message from another node refused here: `failure` back to its sender.
    fn refuse(&mut self, from: SocketAddr, message: &RemoteMessage, reason: &str) -> Inbound {
        let Some(sender) = message.sender else {
            self.counters.dropped += 1;
            return Inbound::Dropped;
        };
        if message.performative == Performative::Failure {
            self.counters.dropped += 1;
            return Inbound::Dropped;
        }
        self.counters.failed += 1;
        Inbound::Answer(
            from,
            Box::new(RemoteMessage {
                conversation_id: message.conversation_id,
                in_reply_to: message.reply_with,
                priority: message.priority,
                ..RemoteMessage::new(
                    Target::Address(sender),
                    Performative::Failure,
                    format!("{FAILURE_PREFIX}{reason}").into_bytes(),
                )
            }),
        )
    }
}

/// How the engine answers for a message that will get no answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unanswered {
    /// `failure`, as an answer.
    Failure,
    /// A durable send that never left this node: the notice that refuses
    /// it (not stored), which is what its sender waits for.
    NotStored,
    /// A durable send that left, whose host was lost before its notice
    /// came: a `failure` notice, since it may or may not be stored there.
    InDoubt,
}

/// The engine's `failure` (`caxton:REASON`) to `sender` here, answering
/// `token`, in the form `how` says.
fn failure_to(
    sender: Address,
    token: u64,
    conversation_id: u64,
    priority: PriorityClass,
    reason: &str,
    how: Unanswered,
    local: &impl LocalSide,
) -> Envelope {
    let (performative, durability) = match how {
        Unanswered::Failure => (Performative::Failure, Durability::Transient),
        Unanswered::NotStored => (Performative::Refuse, Durability::Notice(0)),
        Unanswered::InDoubt => (Performative::Failure, Durability::Notice(0)),
    };
    Envelope {
        conversation_id,
        in_reply_to: token,
        priority,
        durability,
        ..Envelope::new(
            performative,
            NOBODY,
            sender,
            format!("{FAILURE_PREFIX}{reason}").into_bytes(),
            local.now_ns(),
            local.participant(),
        )
    }
}

/// The id part of [`NOBODY`], never a token.
const NOBODY_ID: u32 = u32::MAX;

/// `envelope` as a remote message to `target` (its content moved, not copied).
fn to_remote(
    envelope: Envelope,
    target: Target,
    sender: Option<Address>,
    local: &impl LocalSide,
) -> RemoteMessage {
    let now = local.now_ns();
    // The send time on this node's wall clock: now, less how long ago it was sent.
    let sent_unix_ns = local
        .unix_ns_at(now)
        .saturating_sub(now.saturating_sub(envelope.sent_at_ns));
    RemoteMessage {
        target,
        sender: sender.filter(|sender| *sender != NOBODY),
        performative: envelope.performative,
        conversation_id: envelope.conversation_id,
        reply_with: envelope.reply_with,
        in_reply_to: envelope.in_reply_to,
        priority: envelope.priority.0,
        deadline_in_ns: (envelope.deadline_ns != Envelope::NO_DEADLINE)
            .then(|| envelope.deadline_ns.saturating_sub(now)),
        durable: matches!(envelope.durability, Durability::Requested),
        chained: match envelope.durability {
            Durability::Chained(parent) => Some(parent),
            _ => None,
        },
        chain_ack: None,
        sent_unix_ns,
        notice: match envelope.durability {
            Durability::Notice(id) => Some(id),
            _ => None,
        },
        sender_name: local.agent_name(envelope.sender),
        content: envelope.content,
        hop: 0,
    }
}

/// A node's part of a route key.
fn node_key(node: SocketAddr) -> u64 {
    let port = u64::from(node.port());
    match node.ip() {
        std::net::IpAddr::V4(ip) => (u64::from(u32::from(ip)) << 16) | port,
        std::net::IpAddr::V6(ip) => (u128::from(ip) as u64).rotate_left(16) ^ port,
    }
    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Keep an age queue of keys (`order`, oldest first) short: a key settled
/// leaves `live` at once but `order` lazily. The settled at its front go at
/// each push: answers mostly come back in the order their requests left, so
/// the queue stays about as long as what still waits, for one lookup a
/// push. One key that waits long holds those behind it, so past twice
/// `max` the whole queue is swept. Sweeping only then, the queue grew to
/// twice `max` between sweeps: in a profile of remote request-reply with
/// 256 outstanding, pushing onto it took about 7% of the gossip shard's
/// samples, most of them growing it (reallocation and page faults), and
/// throughput rose 6-16% once it stayed short.
fn drop_settled_front<K: Eq + std::hash::Hash, V>(
    order: &mut VecDeque<K>,
    live: &FxHashMap<K, V>,
    max: usize,
) {
    while order.front().is_some_and(|key| !live.contains_key(key)) {
        order.pop_front();
    }
    if order.len() > max * 2 {
        order.retain(|key| live.contains_key(key));
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
