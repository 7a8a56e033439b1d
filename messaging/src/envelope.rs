//! The message envelope: FIPA performative, addressing, correlation,
//! priority, deadline and content.
//!
//! Inside a node an envelope moves between shards as an owned value; it is
//! encoded (MessagePack) only where it leaves the process. Identifiers are
//! integers so that routing a message allocates nothing but its content.

use serde::{Deserialize, Serialize};

/// The FIPA ACL communicative acts an envelope can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum Performative {
    /// Ask the receiver to perform an action.
    Request = 0,
    /// Tell the receiver a fact.
    Inform = 1,
    /// Ask whether a proposition holds.
    QueryIf = 2,
    /// Ask for the object a reference denotes.
    QueryRef = 3,
    /// Offer to act under conditions.
    Propose = 4,
    /// Accept a proposal.
    AcceptProposal = 5,
    /// Reject a proposal.
    RejectProposal = 6,
    /// Agree to perform a requested action.
    Agree = 7,
    /// Refuse to perform a requested action.
    Refuse = 8,
    /// An action failed (also: timeouts, traps, refusals by the engine).
    Failure = 9,
    /// The receiver did not understand the message.
    NotUnderstood = 10,
}

impl Performative {
    /// Every performative, in code order.
    pub const ALL: [Self; 11] = [
        Self::Request,
        Self::Inform,
        Self::QueryIf,
        Self::QueryRef,
        Self::Propose,
        Self::AcceptProposal,
        Self::RejectProposal,
        Self::Agree,
        Self::Refuse,
        Self::Failure,
        Self::NotUnderstood,
    ];

    /// The ABI code of this performative.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The performative with ABI code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(code).ok()?).copied()
    }
}

/// An agent deployed on the node, by its index in the node's directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId(pub u32);

/// One running instance of an agent: which shard it lives on and its slot there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    /// The agent.
    pub agent: AgentId,
    /// The data shard that owns it.
    pub shard: u16,
    /// Its index among the agent's instances on that shard.
    pub slot: u16,
}

/// Who a message is for, or who it is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// Any instance of the agent; the router picks one, preferring the sender's shard.
    Agent(AgentId),
    /// Exactly this instance.
    Instance(InstanceId),
    /// A caller outside the agents (the admin API, a benchmark, a test), by
    /// the shard its replies return through and its id there.
    Client {
        /// The client port (a mesh participant, numbered after the data
        /// shards) its answers return through.
        #[serde(rename = "shard")]
        port: u16,
        /// The client's id on that port.
        #[serde(rename = "client")]
        id: u32,
    },
    /// An agent on another node, answered through this node's remote port
    /// (a client port): `token` is the port's way home to the instance that
    /// sent it, and `agent` names the sender here (the proxy id of an agent
    /// other nodes host, or the local id of one this node hosts too), so
    /// `msg_sender` reads its name as it would on the sender's node.
    Remote {
        /// The remote port answers return through.
        port: u16,
        /// The remote port's token for the way home.
        token: u32,
        /// The sending agent, by its id on this node.
        agent: AgentId,
    },
}

impl Address {
    /// A stable number per sender, so that one sender's messages take one
    /// path (one shard, one node) and keep their order.
    pub fn route_key(self) -> u64 {
        match self {
            Address::Agent(id) => u64::from(id.0),
            Address::Instance(instance) => {
                (u64::from(instance.agent.0) << 32)
                    | (u64::from(instance.shard) << 16)
                    | u64::from(instance.slot)
            }
            // The same return path as a client's: one key.
            Address::Client { port, id }
            | Address::Remote {
                port, token: id, ..
            } => (1 << 63) | (u64::from(port) << 32) | u64::from(id),
        }
    }

    /// The client port answers to this address return through (a client's
    /// own, or the remote port for an agent on another node); `None` for an
    /// agent on this node.
    pub fn client_port(self) -> Option<u16> {
        match self {
            Address::Client { port, .. } | Address::Remote { port, .. } => Some(port),
            Address::Agent(_) | Address::Instance(_) => None,
        }
    }
}

/// Which priority class a message travels in: an index into
/// `messaging.priority_routing.queues` ranked by their `priority`, 0 the
/// most urgent; a number past the last class is the last class.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct PriorityClass(pub u8);

/// A message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// What kind of act it is.
    pub performative: Performative,
    /// Who sent it.
    pub sender: Address,
    /// Who it is for.
    pub receiver: Address,
    /// The conversation it belongs to (0: none).
    pub conversation_id: u64,
    /// A token the receiver quotes in `in_reply_to` when it answers (0: no answer expected).
    pub reply_with: u64,
    /// The `reply_with` of the message this one answers (0: not an answer).
    pub in_reply_to: u64,
    /// Its priority class.
    pub priority: PriorityClass,
    /// Node-clock nanoseconds after which it must not be handled; it is
    /// answered with `failure` instead. `u64::MAX`: no deadline.
    pub deadline_ns: u64,
    /// Node-clock nanoseconds when it was sent (for latency measurement).
    pub sent_at_ns: u64,
    /// The mesh participant (data shard, or client port) that last sent it:
    /// a shard tells local from cross-shard deliveries by it. Encoded under
    /// its first name, so stored messages stay readable.
    #[serde(rename = "from_shard")]
    pub from_participant: u16,
    /// The payload, opaque to the engine.
    pub content: Vec<u8>,
    /// Whether the engine keeps it durable (`messaging.enable_persistence`).
    #[serde(default)]
    pub durability: Durability,
    /// The trace this message belongs to (`engine profile trace`); 0: not
    /// sampled. Left out of the encoding when 0, so untraced messages encode
    /// as they did before traces existed.
    #[serde(default, skip_serializing_if = "is_untraced")]
    pub trace: u64,
}

fn is_untraced(trace: &u64) -> bool {
    *trace == 0
}

/// Where a message stands with the node's storage partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Durability {
    /// Not kept: lost if the node stops before it is handled.
    #[default]
    Transient,
    /// The sender asks for it to be stored before it is accepted.
    Requested,
    /// Stored in its shard's partition under this id; marked done once handled.
    Stored(u64),
    /// The engine's answer to a `Requested` send, quoting it in `in_reply_to`:
    /// `agree` (stored under this id, accepted) or `refuse` (not kept; the
    /// reason is the content).
    Notice(u64),
    /// Sent by an agent while it handled the stored message with this id:
    /// its receiving shard stores it too, and the parent is finished only
    /// once every such child is stored, so a crash loses no hop of a chain.
    Chained(u64),
    /// A shard's word to the parent's shard that one child of the stored
    /// message with this id is stored (or was answered and will not be).
    ChainAck(u64),
}

/// Prefix of the content of every `failure` the engine itself sends.
pub const FAILURE_PREFIX: &str = "caxton:";

/// Where answers go that have nobody to go to: the senders of messages
/// redelivered after a restart did not survive it, and chain
/// acknowledgements travel between shards, not to anyone. A shard counts a
/// message for it as undeliverable and drops it.
pub const NOBODY: Address = Address::Client {
    port: u16::MAX,
    id: u32::MAX,
};

/// What an answer needs from the message it answers: kept apart from the
/// message so a handler may consume the message and still be answered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyPath {
    /// The act being answered (a `failure` is never answered by the engine).
    pub performative: Performative,
    /// Who asked: the answer's receiver.
    pub asker: Address,
    /// Who was asked: the answer's sender.
    pub answerer: Address,
    /// The conversation.
    pub conversation_id: u64,
    /// The token the answer quotes in `in_reply_to`.
    pub reply_with: u64,
    /// The class the answer travels in.
    pub priority: PriorityClass,
    /// The trace the answer continues (0: none).
    pub trace: u64,
}

impl Envelope {
    /// A `failure` the engine sent (its content starts with
    /// [`FAILURE_PREFIX`]): its sender is the receiver that could not take
    /// the message, which sent nothing, so an answer to it goes nowhere.
    pub fn is_engine_failure(&self) -> bool {
        self.performative == Performative::Failure
            && self.content.starts_with(FAILURE_PREFIX.as_bytes())
    }
}

impl ReplyPath {
    /// The answer, sent at `sent_at_ns` by mesh participant `from`.
    pub fn answer(
        &self,
        performative: Performative,
        content: Vec<u8>,
        sent_at_ns: u64,
        from: u16,
    ) -> Envelope {
        Envelope {
            conversation_id: self.conversation_id,
            in_reply_to: self.reply_with,
            priority: self.priority,
            trace: self.trace,
            ..Envelope::new(
                performative,
                self.answerer,
                self.asker,
                content,
                sent_at_ns,
                from,
            )
        }
    }

    /// The engine's answer to a durable send: `agree` with the id it was
    /// stored under, or `refuse` with the reason.
    pub fn notice(
        &self,
        performative: Performative,
        id: u64,
        content: Vec<u8>,
        sent_at_ns: u64,
        from: u16,
    ) -> Envelope {
        Envelope {
            durability: Durability::Notice(id),
            ..self.answer(performative, content, sent_at_ns, from)
        }
    }
}

impl Envelope {
    /// No deadline.
    pub const NO_DEADLINE: u64 = u64::MAX;

    /// A message from `sender` to `receiver`, sent at `sent_at_ns` by mesh
    /// participant `from`: outside any conversation, expecting no answer,
    /// most urgent class, no deadline, not kept. Set other fields with
    /// struct update syntax.
    pub fn new(
        performative: Performative,
        sender: Address,
        receiver: Address,
        content: Vec<u8>,
        sent_at_ns: u64,
        from: u16,
    ) -> Self {
        Self {
            performative,
            sender,
            receiver,
            conversation_id: 0,
            reply_with: 0,
            in_reply_to: 0,
            priority: PriorityClass(0),
            deadline_ns: Self::NO_DEADLINE,
            sent_at_ns,
            from_participant: from,
            durability: Durability::Transient,
            content,
            trace: 0,
        }
    }

    /// Whether it answers a request (a reply, or the engine's `failure` in
    /// place of one).
    pub fn is_answer(&self) -> bool {
        self.in_reply_to != 0
    }

    /// Whether the node owes it to its receiver whatever the bounds and
    /// deadlines: an answer (its requester waits for nothing else; a
    /// gatherer holding a deferred reply open on it would wait for ever),
    /// or a stored message (acknowledged, or redelivered: at least once).
    pub fn is_owed(&self) -> bool {
        self.is_answer() || matches!(self.durability, Durability::Stored(_))
    }

    /// What an answer to this message needs from it.
    pub fn reply_path(&self) -> ReplyPath {
        ReplyPath {
            performative: self.performative,
            asker: self.sender,
            answerer: self.receiver,
            conversation_id: self.conversation_id,
            reply_with: self.reply_with,
            priority: self.priority,
            trace: self.trace,
        }
    }

    /// The answer to this message from `responder`, with `performative` and `content`.
    pub fn reply(
        &self,
        responder: Address,
        performative: Performative,
        content: Vec<u8>,
        now_ns: u64,
    ) -> Self {
        let mut path = self.reply_path();
        path.answerer = responder;
        path.answer(performative, content, now_ns, self.from_participant)
    }

    /// A shard's word to the shard of stored message `parent` that one of
    /// its children is settled (see `caxton_storage::durability`).
    pub fn chain_ack(parent: u64, sent_at_ns: u64, from: u16) -> Self {
        Self {
            durability: Durability::ChainAck(parent),
            ..Self::new(
                Performative::Inform,
                NOBODY,
                NOBODY,
                Vec::new(),
                sent_at_ns,
                from,
            )
        }
    }

    /// MessagePack bytes, for wherever the envelope leaves the process.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain integers, enums and bytes into a Vec cannot fail.
        rmp_serde::to_vec_named(self).expect("an envelope always encodes")
    }

    /// Decode MessagePack bytes; a corrupt frame is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        rmp_serde::from_slice(bytes).map_err(|error| DecodeError(error.to_string()))
    }
}

/// A frame that is not a valid envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt envelope: {0}")]
pub struct DecodeError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            performative: Performative::QueryRef,
            sender: Address::Client { port: 1, id: 7 },
            receiver: Address::Agent(AgentId(3)),
            conversation_id: 42,
            reply_with: 9,
            in_reply_to: 0,
            priority: PriorityClass(1),
            deadline_ns: Envelope::NO_DEADLINE,
            sent_at_ns: 1_000,
            from_participant: 0,
            durability: Durability::Transient,
            content: b"hello".to_vec(),
            trace: 0,
        }
    }

    #[test]
    fn replies_correlate() {
        let request = sample();
        let responder = Address::Instance(InstanceId {
            agent: AgentId(3),
            shard: 0,
            slot: 0,
        });
        let answer = request.reply(responder, Performative::Inform, b"hi".to_vec(), 2_000);
        assert_eq!(answer.receiver, request.sender);
        assert_eq!(answer.in_reply_to, 9);
        assert_eq!(answer.conversation_id, 42);
    }

    #[test]
    fn a_trace_travels_in_the_encoding_only_when_there_is_one() {
        let untraced = sample().encode();
        assert!(!untraced.windows(5).any(|window| window == b"trace"));
        let traced = Envelope {
            trace: 1 << 40 | 3,
            ..sample()
        };
        assert_eq!(Envelope::decode(&traced.encode()), Ok(traced.clone()));
        assert_eq!(
            traced
                .reply_path()
                .answer(Performative::Inform, Vec::new(), 5, 0)
                .trace,
            traced.trace
        );
    }

    #[test]
    fn performative_codes_round_trip() {
        for performative in Performative::ALL {
            assert_eq!(
                Performative::from_code(u32::from(performative.code())),
                Some(performative)
            );
        }
        assert_eq!(Performative::from_code(11), None);
    }

    proptest! {
        #[test]
        fn envelopes_round_trip_through_messagepack(content in proptest::collection::vec(any::<u8>(), 0..256), conversation in any::<u64>()) {
            let mut envelope = sample();
            envelope.content = content;
            envelope.conversation_id = conversation;
            prop_assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }

        #[test]
        fn corrupt_frames_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Envelope::decode(&bytes);
        }
    }
}
