//! The shard core: every decision a data shard makes about a message, as a
//! sans-IO state machine. It never reads a clock, never touches a thread, a
//! ring, wasmtime or SQLite: time comes in as `now` arguments, agents run
//! behind [`AgentRuntime`], and rings and the partition writer sit behind
//! [`ShardIo`]. The glommio driver (`crate::driver`) moves events in and
//! effects out; the core's tests drive it with fakes and a virtual clock.
//!
//! # A message's path through a shard
//! 1. **Arrival** ([`ShardCore::on_arrival`]): a message from a ring. A
//!    chain acknowledgement settles a child of a stored parent; a durable
//!    send (`Requested`, or a `Chained` hop) goes to the ledger and the
//!    partition first, and is admitted once stored (on a node joining a
//!    cluster, only once its directory has settled:
//!    [`ShardCore::await_directory`]); a message for a local agent is
//!    admitted to a mailbox lane; anything else is routed on
//!    ([`ShardCore::dispatch`]).
//! 2. **Admission** (`accept`): the agent's lane (a bounded priority
//!    mailbox with deadlines) takes it, or its sender is answered
//!    `failure` (`refused:queue-full`).
//! 3. **Turn** ([`ShardCore::handle_next`]): the next lane in turn pops its
//!    most urgent message. An expired one is answered `failure` (`timeout`).
//!    One whose agent is past its `cpu_shares` is held until its window
//!    opens, and one whose agent's instances are all busy with suspended
//!    handlers is held until one finishes (later messages to that agent wait
//!    behind it, so none overtakes). Otherwise the handler runs, for at
//!    most one time slice: it finishes, or it yields and is suspended
//!    ([`ShardCore::on_handler_finished`] hears of its end in a later turn).
//! 4. **Outcome** (`complete`): faults become `failure` answers to the
//!    sender; what the handler sent is routed; a stored message is finished
//!    at once, or once every child it sent is stored (a chain).
//! 5. **Routing** ([`ShardCore::dispatch`]): a local agent's message is
//!    admitted here; another shard's or a client's goes onto its ring; a
//!    full ring to another shard refuses the send with `failure`
//!    (`refused:ring-full`), unless it is an answer, which is owed: it
//!    waits here, in order, until the ring has room (and what this shard
//!    sends that shard meanwhile waits behind it). A full ring to a client
//!    that is slow to read refuses nothing: the message waits here, in
//!    order, and the shard takes no new message from that client until
//!    its ring has room again ([`ShardCore::flush_waiting`]). Only past
//!    `mailbox_capacity` waiting messages is a send refused.
//!
//! The durability protocol's bookkeeping (ids, messages waiting for their
//! writes, open chains) and its invariants live in
//! [`caxton_storage::durability`]; the core applies it.

mod seams;
pub mod trace;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use caxton_agents::{Handled, Handling, Outcome};
use caxton_messaging::{
    Address, AgentId, Durability, Envelope, InstanceId, Mailbox, MailboxConfig, Performative,
    Popped, ReplyPath, NOBODY,
};
use caxton_profiles::Profile;
use caxton_storage::{DurabilityLedger, StorageEvent, Write};

use crate::directory::{Directory, Route, REMOTE_ID_BASE};
use crate::metrics::ShardMetrics;

pub(crate) use seams::{AgentRuntime, MeshIo, ShardIo, WasmAgents};
use trace::{HopKind, Tracer};

/// Prefix of the content of every `failure` the engine itself sends.
pub const FAILURE_PREFIX: &str = caxton_messaging::FAILURE_PREFIX;

/// The reason a durable send is refused by a node without persistence:
/// how the node is configured, so no retry helps (the admin API answers
/// it 409, not 503).
pub const PERSISTENCE_OFF: &str = "caxton:persistence-off";

/// The limits a shard core works within, from the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CoreLimits {
    /// Mailbox lanes (`messaging.parallel_routes`); an agent always uses the same one.
    pub lanes: usize,
    /// Each lane's mailbox limits. Its `capacity` is the shard's, shared by
    /// its lanes: one busy agent may fill the shard's mailbox, as it may
    /// with one lane, rather than a lane's fraction of it.
    pub lane: MailboxConfig,
    /// Most messages held for their agents' CPU budgets.
    pub held_max: usize,
    /// Most durable messages waiting for their partition writes.
    pub waiting_max: usize,
    /// Most content bytes waiting in the mailboxes and held (`messaging.queue_bytes`).
    pub waiting_bytes_max: usize,
}

impl CoreLimits {
    /// The limits of one of `data_shards` shards running `profile`.
    pub fn from_profile(profile: &Profile, data_shards: usize) -> Self {
        let messaging = &profile.messaging;
        let routing = &messaging.priority_routing;
        let class_max_latency_ns = if routing.enabled {
            routing
                .by_urgency()
                .iter()
                .map(|class| Some(duration_ns(class.max_latency.get())))
                .collect()
        } else {
            vec![None]
        };
        let capacity = caxton_profiles::mailbox_capacity(profile, data_shards);
        let lanes = messaging.parallel_routes.max(1) as usize;
        Self {
            lanes,
            lane: MailboxConfig {
                capacity,
                delivery_timeout_ns: duration_ns(messaging.delivery_timeout.get()),
                class_max_latency_ns,
            },
            held_max: capacity,
            waiting_max: capacity,
            waiting_bytes_max: usize::try_from(messaging.queue_bytes.bytes()).unwrap_or(usize::MAX),
        }
    }
}

/// A message held back from its agent, in arrival order.
#[derive(Debug)]
struct Held {
    until: Until,
    envelope: Envelope,
}

/// What a held message waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// Node-clock time its agent's CPU budget opens again.
    Time(u64),
    /// One of its agent's instances to finish a suspended handler.
    FreeInstance,
}

/// A handler that yielded its shard, and what its end will need.
#[derive(Debug)]
struct SuspendedRun {
    instance: InstanceId,
    request: ReplyPath,
    durability: Durability,
}

/// See the module docs.
pub(crate) struct ShardCore {
    /// This shard's index, which is also its mesh participant number.
    index: usize,
    data_shards: usize,
    directory: Arc<Directory>,
    lanes: Vec<Mailbox>,
    /// Messages the lanes hold together, kept as they push and pop so that
    /// admitting a message does not sum every lane.
    in_lanes: usize,
    /// Of those, the owed ones ([`Envelope::is_owed`]): never pushed out, so room that
    /// only they fill cannot be made (`make_room`).
    owed_in_lanes: usize,
    /// Most messages the lanes hold together (`queue_size`, within the
    /// shard's share of `max_concurrent_messages`).
    mailbox_capacity: usize,
    /// Messages in the lanes per local agent, by agent number: who to push
    /// out when the lanes are full ([`Self::make_room`]).
    in_lanes_per_agent: Vec<u32>,
    /// Content bytes of the messages in the lanes and held for their
    /// agents, kept as they come and go.
    waiting_bytes: usize,
    /// Most content bytes they may hold together (`messaging.queue_bytes`):
    /// the count alone would let a shard hold `queue_size` megabyte messages.
    waiting_bytes_max: usize,
    /// The lanes holding messages, each once, in the order they take
    /// turns: a lane that still holds messages after its turn goes to the
    /// back. The shard never looks at an empty lane to find work.
    ready: VecDeque<usize>,
    /// Messages held for CPU budgets or busy instances, in arrival order.
    held: Vec<Held>,
    held_max: usize,
    /// Handlers that yielded and have not finished. At most one per instance.
    suspended: Vec<SuspendedRun>,
    metrics: ShardMetrics,
    /// With persistence: the durability protocol's bookkeeping.
    ledger: Option<DurabilityLedger<Envelope>>,
    /// Stored messages wait for the cluster directory before they run
    /// ([`Self::await_directory`]).
    awaiting_directory: bool,
    /// Stored and acknowledged messages that wait for the directory, in the
    /// order they became durable, each with when it began to wait; at most
    /// `mailbox_capacity`.
    deferred: Vec<(Envelope, u64)>,
    /// Samples messages and records their hops (`engine profile trace`).
    tracer: Tracer,
    /// Per client port (participant minus `data_shards`): messages that
    /// found its ring full, oldest first, at most `mailbox_capacity` each.
    /// Refusing them would lose answers a client asked for merely because
    /// it read them late; holding them, and taking no new message from the
    /// client meanwhile, slows the client at its own sends instead (they
    /// are refused there, explicitly, once its ring to this shard fills).
    for_clients: Vec<Backlog>,
    /// Per participant below `data_shards`, and the remote port: answers
    /// that found its ring full, and what this shard sent it after them,
    /// oldest first, at most `mailbox_capacity` each. An answer is owed
    /// (its requester waits for nothing else), so it waits here for room
    /// rather than be refused. No back-pressure goes with it: the shard
    /// keeps reading that participant, which may itself wait for room in
    /// this shard's ring.
    for_peers: Vec<Backlog>,
    /// Messages `for_clients` and `for_peers` hold together.
    waiting_for_room: usize,
    /// How long a client's backlog may go without moving before the shard
    /// stops waiting for it (`messaging.delivery_timeout`): a client that
    /// left without reading must not keep the shard looking for room.
    client_patience_ns: u64,
}

/// Messages for one participant (a client, or for answers another shard or
/// the remote port) whose ring was full, and when they last moved.
#[derive(Debug, Default)]
struct Backlog {
    messages: VecDeque<Envelope>,
    /// When a message last went onto the ring, or the first one began to wait.
    moved_ns: u64,
}

impl Backlog {
    /// Push what waits onto the ring to `participant` at `now`, until it is
    /// full; given up once nothing has moved for `patience_ns`. How many
    /// went, and what was given up.
    fn flush(
        &mut self,
        participant: usize,
        now: u64,
        patience_ns: u64,
        io: &mut impl ShardIo,
    ) -> (usize, VecDeque<Envelope>) {
        let before = self.messages.len();
        while let Some(envelope) = self.messages.pop_front() {
            if let Err(envelope) = io.push(participant, envelope) {
                self.messages.push_front(envelope);
                break;
            }
        }
        let moved = before - self.messages.len();
        if moved > 0 {
            self.moved_ns = now;
            (moved, VecDeque::new())
        } else if now.saturating_sub(self.moved_ns) >= patience_ns {
            (0, std::mem::take(&mut self.messages))
        } else {
            (0, VecDeque::new())
        }
    }

    /// Keep `envelope`, which found the ring full at `now` (or others
    /// waiting before it), unless `capacity` already wait: then it is
    /// handed back.
    fn keep(&mut self, envelope: Envelope, now: u64, capacity: usize) -> Result<(), Envelope> {
        if self.messages.len() >= capacity {
            return Err(envelope);
        }
        if self.messages.is_empty() {
            self.moved_ns = now;
        }
        self.messages.push_back(envelope);
        Ok(())
    }
}

impl ShardCore {
    /// The core of data shard `index` of `data_shards`; with `first_id`, it
    /// keeps durable messages, numbering them from there.
    pub fn new(
        index: usize,
        data_shards: usize,
        limits: &CoreLimits,
        first_id: Option<u64>,
    ) -> Self {
        Self {
            index,
            data_shards,
            directory: Arc::default(),
            lanes: (0..limits.lanes.max(1))
                .map(|_| Mailbox::new(limits.lane.clone()))
                .collect(),
            in_lanes: 0,
            owed_in_lanes: 0,
            mailbox_capacity: limits.lane.capacity,
            in_lanes_per_agent: Vec::new(),
            waiting_bytes: 0,
            waiting_bytes_max: limits.waiting_bytes_max,
            ready: VecDeque::new(),
            held: Vec::new(),
            held_max: limits.held_max,
            suspended: Vec::new(),
            metrics: ShardMetrics::default(),
            ledger: first_id.map(|first| DurabilityLedger::new(first, limits.waiting_max)),
            awaiting_directory: false,
            deferred: Vec::new(),
            tracer: Tracer::new(index as u16),
            for_clients: Vec::new(),
            for_peers: Vec::new(),
            waiting_for_room: 0,
            client_patience_ns: limits.lane.delivery_timeout_ns,
        }
    }

    /// Keep stored messages from their handlers until
    /// [`Self::directory_settled`]: a node joining a cluster does not yet
    /// know the agents other nodes host, and a stored message whose handler
    /// forwards to one of them would fail, and a stored message whose
    /// handler ran is finished. They are still stored and acknowledged at
    /// once. Without persistence nothing waits: a failed send is answered.
    pub fn await_directory(&mut self) {
        self.awaiting_directory = self.ledger.is_some();
    }

    /// The cluster directory holds every live member's agents (or waiting
    /// for it took too long): the stored messages that waited run now, in
    /// order. The wait does not count against a message's deadline: it was
    /// the node's, not the message's. Returns how many waited.
    pub fn directory_settled(&mut self, now: u64, io: &mut impl ShardIo) -> usize {
        self.awaiting_directory = false;
        let deferred = std::mem::take(&mut self.deferred);
        let count = deferred.len();
        for (mut envelope, since) in deferred {
            envelope.deadline_ns = envelope
                .deadline_ns
                .saturating_add(now.saturating_sub(since));
            self.accept(envelope, now, io);
        }
        count
    }

    /// The message sampler and its hops.
    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    /// Take a new directory snapshot.
    pub fn set_directory(&mut self, directory: Arc<Directory>) {
        // Room to count every local agent number the snapshot can route to,
        // so admitting a message counts it without a length check of its own.
        let numbers = directory.local_id_bound();
        if self.in_lanes_per_agent.len() < numbers {
            self.in_lanes_per_agent.resize(numbers, 0);
        }
        self.directory = directory;
    }

    /// The directory snapshot routing uses.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// This shard's measurements, with the levels (queue depth) brought up to date.
    pub fn metrics_mut(&mut self) -> &mut ShardMetrics {
        self.metrics.queue_depth = self.queued() as u64;
        &mut self.metrics
    }

    /// Count a turn of the driver's that handled `handled` messages (none:
    /// not a handling turn).
    pub fn note_handling_turn(&mut self, handled: usize) {
        if handled > 0 {
            self.metrics.handling_turns += 1;
            self.metrics.largest_batch = self.metrics.largest_batch.max(handled as u64);
        }
    }

    /// Messages waiting in mailboxes or held back from their agents.
    pub fn queued(&self) -> usize {
        debug_assert_eq!(
            self.in_lanes,
            self.lanes.iter().map(Mailbox::len).sum::<usize>(),
            "the lanes' running count drifted from what they hold"
        );
        self.in_lanes + self.held.len()
    }

    /// Messages this shard can take in now without refusing any: room in
    /// its mailboxes, and, with persistence, among the durable sends
    /// waiting for their writes.
    pub fn intake_room(&self) -> usize {
        let mailboxes = self.mailbox_capacity.saturating_sub(self.in_lanes);
        self.ledger
            .as_ref()
            .map_or(mailboxes, |ledger| mailboxes.min(ledger.room()))
    }

    /// Messages waiting for room in a client's ring, or (answers, and what
    /// followed them) in another shard's or the remote port's.
    pub fn waiting_for_room(&self) -> usize {
        self.waiting_for_room
    }

    /// Whether messages wait for room in the ring to client port
    /// `participant`: while they do, the shard takes nothing new from it.
    pub fn is_waiting_for(&self, participant: usize) -> bool {
        self.client_slot(participant)
            .and_then(|slot| self.for_clients.get(slot))
            .is_some_and(|backlog| !backlog.messages.is_empty())
    }

    /// Participant `participant`'s slot among the client ports, if it is one
    /// (not a shard, nor the remote port).
    fn client_slot(&self, participant: usize) -> Option<usize> {
        participant
            .checked_sub(self.data_shards)
            .filter(|_| self.directory.remote_port() != Some(participant))
    }

    /// What waits for room in the ring to `participant`, if anything has.
    fn backlog_of(&self, participant: usize) -> Option<&Backlog> {
        match self.client_slot(participant) {
            Some(slot) => self.for_clients.get(slot),
            None => self.for_peers.get(participant),
        }
    }

    /// Push what waits for room (for clients, and answers for other
    /// shards) onto the rings at `now`, oldest first, until a ring is full
    /// again; how many went. A backlog that has not moved for
    /// `messaging.delivery_timeout` is given up (its client left, or
    /// stopped reading; a shard stuck): its answers counted undeliverable,
    /// and a shard's other messages refused to their senders.
    pub fn flush_waiting(&mut self, now: u64, io: &mut impl ShardIo) -> usize {
        if self.waiting_for_room == 0 {
            return 0;
        }
        let (mut flushed, mut given_up) = (0, 0);
        for (slot, backlog) in self.for_clients.iter_mut().enumerate() {
            let participant = self.data_shards + slot;
            let (moved, dropped) = backlog.flush(participant, now, self.client_patience_ns, io);
            flushed += moved;
            given_up += dropped.len();
            self.metrics.undeliverable += dropped.len() as u64;
        }
        let mut refused = Vec::new();
        for (participant, backlog) in self.for_peers.iter_mut().enumerate() {
            let (moved, dropped) = backlog.flush(participant, now, self.client_patience_ns, io);
            flushed += moved;
            given_up += dropped.len();
            refused.extend(dropped);
        }
        self.waiting_for_room -= flushed + given_up;
        // A shard whose ring took nothing for so long: the requests and
        // other sends that waited behind answers for it are refused, as a
        // full ring refuses; the answers themselves cannot be.
        for envelope in refused {
            if envelope.is_answer() {
                self.metrics.undeliverable += 1;
            } else {
                self.refuse(&envelope, "refused:ring-full", now, io);
            }
        }
        flushed
    }

    /// Handlers suspended at the end of a time slice.
    #[cfg(test)]
    pub fn suspended(&self) -> usize {
        self.suspended.len()
    }

    /// When the core next has work that no arrival will prompt: the
    /// earliest time a held message may run, or must be answered `timeout`
    /// (one held for a free instance waits for no time, but its deadline
    /// still runs: a handler that holds the instance for seconds must not
    /// hold the messages queued behind it past theirs).
    pub fn next_wake_ns(&self) -> Option<u64> {
        self.held
            .iter()
            .filter_map(|held| {
                let deadline = (held.envelope.deadline_ns != Envelope::NO_DEADLINE)
                    .then_some(held.envelope.deadline_ns);
                match held.until {
                    Until::Time(resume_ns) => {
                        Some(deadline.map_or(resume_ns, |at| at.min(resume_ns)))
                    }
                    Until::FreeInstance => deadline,
                }
            })
            .min()
    }

    /// A message taken from a ring at `now`.
    pub fn on_arrival(&mut self, mut envelope: Envelope, now: u64, io: &mut impl ShardIo) {
        if let Durability::ChainAck(parent) = envelope.durability {
            self.settle_child(parent, io);
            return;
        }
        self.tracer.sample(&mut envelope);
        // For an agent only other nodes host: on to the remote port. A
        // durable one is stored by the node that handles it, not here.
        if matches!(envelope.receiver, Address::Agent(id) if id.0 >= REMOTE_ID_BASE) {
            self.dispatch(envelope, now, io);
            return;
        }
        if matches!(
            envelope.durability,
            Durability::Requested | Durability::Chained(_)
        ) && envelope.receiver.client_port().is_none()
        {
            self.persist(envelope, now, io);
            return;
        }
        match envelope.receiver {
            Address::Agent(_) => self.accept(envelope, now, io),
            Address::Instance(instance) if usize::from(instance.shard) == self.index => {
                self.accept(envelope, now, io)
            }
            // Not for this shard (a client's mistake, or a stale route): send it
            // on or answer `failure`; only messages for local agents enter a mailbox.
            Address::Instance(_) | Address::Client { .. } | Address::Remote { .. } => {
                self.dispatch(envelope, now, io)
            }
        }
    }

    /// A message for a local agent, delivered again after a restart (its
    /// sender is gone, so answers go to [`NOBODY`]).
    pub fn redeliver(&mut self, mut envelope: Envelope, id: u64, now: u64, io: &mut impl ShardIo) {
        envelope.sender = NOBODY;
        envelope.durability = Durability::Stored(id);
        envelope.deadline_ns = Envelope::NO_DEADLINE;
        envelope.sent_at_ns = now;
        envelope.from_participant = self.participant();
        self.metrics.redelivered += 1;
        self.accept(envelope, now, io);
    }

    /// A stored message whose agent is gone, or whose row no longer decodes:
    /// finished, and counted.
    pub fn drop_unroutable_stored(&mut self, id: u64, io: &mut impl ShardIo) {
        self.metrics.unknown_receiver += 1;
        self.finish(Durability::Stored(id), io);
    }

    /// What the partition writer reported.
    pub fn on_storage_event(&mut self, event: StorageEvent, now: u64, io: &mut impl ShardIo) {
        match event {
            StorageEvent::Durable(ids) => {
                for id in ids {
                    let Some(waiting) = self.ledger.as_mut().and_then(|ledger| ledger.stored(id))
                    else {
                        continue;
                    };
                    self.metrics.persisted += 1;
                    match waiting.parent {
                        // A hop of a stored chain: its parent may now be finished.
                        Some(parent) => self.send_chain_ack(parent, now, io),
                        None => {
                            let notice = waiting.message.reply_path().notice(
                                Performative::Agree,
                                id,
                                Vec::new(),
                                now,
                                self.participant(),
                            );
                            self.dispatch(notice, now, io);
                        }
                    }
                    if self.awaiting_directory {
                        self.deferred.push((waiting.message, now));
                    } else {
                        self.accept(waiting.message, now, io);
                    }
                }
            }
            StorageEvent::Failed { ids, reason } => {
                for id in ids {
                    let Some(waiting) = self.ledger.as_mut().and_then(|ledger| ledger.failed(id))
                    else {
                        continue;
                    };
                    self.metrics.storage_failures += 1;
                    self.refuse_unstored(&waiting.message, waiting.parent, &reason, now, io);
                }
            }
            StorageEvent::Expired(count) => self.metrics.expired += count,
        }
    }

    /// Deliver held messages whose agents may run again, in arrival order;
    /// how many ran.
    pub fn release_held(
        &mut self,
        now: u64,
        agents: &mut impl AgentRuntime,
        io: &mut impl ShardIo,
    ) -> usize {
        if self.next_wake_ns().is_none_or(|resume_ns| resume_ns > now) {
            return 0;
        }
        let held = std::mem::take(&mut self.held);
        let mut released = 0;
        // Each released handler starts when the one before it ended: with
        // the turn's `now` for all, each would be charged (cpu_shares, its
        // busy time) for the handlers that ran before it.
        let mut now = now;
        for Held { until, envelope } in held {
            if envelope.deadline_ns < now {
                // Past its deadline while held, whatever it waited for.
                self.waiting_bytes = self.waiting_bytes.saturating_sub(envelope.content.len());
                self.metrics.timeouts += 1;
                self.fail(&envelope, "timeout", now, io);
                continue;
            }
            let agent = receiver_agent(&envelope);
            // The last of its agent's already kept: it must not be overtaken.
            let blocking = self
                .held
                .iter()
                .rev()
                .find(|other| receiver_agent(&other.envelope) == agent)
                .map(|other| other.until);
            let due = matches!(until, Until::Time(resume_ns) if resume_ns <= now);
            if !due {
                self.held.push(Held { until, envelope });
            } else if let Some(blocking) = blocking {
                // Due, but behind another of its agent's: it waits for what
                // that one waits for. Kept with its own past time, the shard
                // would be told to wake now, and spin until then.
                self.held.push(Held {
                    until: blocking,
                    envelope,
                });
            } else {
                released += 1;
                // It leaves the held; held again, it is counted again.
                self.waiting_bytes = self.waiting_bytes.saturating_sub(envelope.content.len());
                // Re-checks the budget: a burst may use it up again.
                now = self.deliver(envelope, now, agents, io);
            }
        }
        released
    }

    /// Take the next lane's most urgent message at `now` and act on it:
    /// answer it expired, hold it, or run its handler. Returns the node-clock
    /// time the step ended (`now` plus the handler's run), which is the next
    /// step's `now`: the shard reads no clock between messages, except for
    /// a message sent at `now` itself (see `deliver`). `None` when every
    /// lane is empty.
    pub fn handle_next(
        &mut self,
        now: u64,
        agents: &mut impl AgentRuntime,
        io: &mut impl ShardIo,
    ) -> Option<u64> {
        while let Some(lane) = self.ready.pop_front() {
            let popped = self.lanes[lane].pop(now);
            if let Popped::Ready(envelope) | Popped::Expired(envelope) = &popped {
                self.left_lanes(envelope);
            }
            if !self.lanes[lane].is_empty() {
                self.ready.push_back(lane);
            }
            return match popped {
                Popped::Empty => continue,
                Popped::Expired(envelope) => {
                    self.metrics.timeouts += 1;
                    self.fail(&envelope, "timeout", now, io);
                    Some(now)
                }
                Popped::Ready(envelope) => Some(self.deliver(envelope, now, agents, io)),
            };
        }
        None
    }

    /// After instances were dropped (undeploy, a stopped instance): answer
    /// the deferred replies they left open.
    pub fn answer_abandoned(
        &mut self,
        now: u64,
        agents: &mut impl AgentRuntime,
        io: &mut impl ShardIo,
    ) {
        for abandoned in agents.take_abandoned() {
            let envelope = Envelope {
                conversation_id: abandoned.conversation_id,
                in_reply_to: abandoned.in_reply_to,
                ..Envelope::new(
                    abandoned.performative,
                    abandoned.on_behalf_of.unwrap_or(abandoned.receiver),
                    abandoned.receiver,
                    abandoned.content,
                    now,
                    self.participant(),
                )
            };
            self.dispatch(envelope, now, io);
        }
    }

    /// Move the agents' instance start times into this shard's histogram.
    pub fn record_startups(&mut self, agents: &mut impl AgentRuntime) {
        let startup = &mut self.metrics.startup_ns;
        agents.drain_startup_times(&mut |nanos| startup.saturating_record(nanos));
    }

    /// Answer everything still queued before the shard stops: messages it
    /// accepted are never dropped silently. `inbound` is what was left in
    /// the rings.
    pub fn shut_down(&mut self, inbound: Vec<Envelope>, now: u64, io: &mut impl ShardIo) {
        let mut remaining = inbound;
        self.ready.clear();
        self.in_lanes = 0;
        self.owed_in_lanes = 0;
        self.in_lanes_per_agent.fill(0);
        self.waiting_bytes = 0;
        for lane in &mut self.lanes {
            while let Popped::Ready(envelope) | Popped::Expired(envelope) = lane.pop(now) {
                remaining.push(envelope);
            }
        }
        remaining.extend(
            std::mem::take(&mut self.held)
                .into_iter()
                .map(|held| held.envelope),
        );
        remaining.extend(self.deferred.drain(..).map(|(envelope, _)| envelope));
        // Handlers cancelled mid-run: a stored message stays unfinished and
        // runs again after a restart; every sender hears about this stop.
        for run in std::mem::take(&mut self.suspended) {
            self.fail_path(&run.request, "shutting-down", now, io);
        }
        for mut envelope in remaining {
            if let Durability::ChainAck(parent) = envelope.durability {
                // A child stored elsewhere: its parent here may be finished.
                self.settle_child(parent, io);
            } else if envelope.receiver.client_port().is_some() {
                // Bound for a client: pass it on; the client still gets it.
                self.dispatch(envelope, now, io);
            } else {
                // A stored message stays unfinished in its partition: the next
                // start delivers it again; a hop not yet stored leaves its parent
                // unfinished, so the parent runs again. Its sender hears about this stop.
                if matches!(
                    envelope.durability,
                    Durability::Stored(_) | Durability::Chained(_)
                ) {
                    envelope.durability = Durability::Transient;
                }
                self.fail(&envelope, "shutting-down", now, io);
            }
        }
        // Messages still waiting to become durable were never accepted.
        let unaccepted: Vec<Envelope> = self
            .ledger
            .as_mut()
            .map(|ledger| {
                ledger
                    .drain_waiting()
                    .filter(|waiting| waiting.parent.is_none())
                    .map(|waiting| waiting.message)
                    .collect()
            })
            .unwrap_or_default();
        for envelope in unaccepted {
            let notice = envelope.reply_path().notice(
                Performative::Refuse,
                0,
                b"caxton:shutting-down".to_vec(),
                now,
                self.participant(),
            );
            self.dispatch(notice, now, io);
        }
        // What still waits for a client that is not reading goes if its
        // ring has room now; the rest cannot wait for a shard that stops.
        self.flush_waiting(now, io);
        self.metrics.undeliverable += self.waiting_for_room as u64;
        self.for_clients.clear();
        self.for_peers.clear();
        self.waiting_for_room = 0;
    }

    /// Route `envelope` sent on this shard: into a local mailbox, a ring to
    /// another shard, a ring to a client, or the ring to the remote port
    /// (an agent only other nodes host).
    pub fn dispatch(&mut self, envelope: Envelope, now: u64, io: &mut impl ShardIo) {
        if envelope.receiver == NOBODY {
            self.metrics.undeliverable += 1;
            return;
        }
        let data_shards = self.data_shards;
        let target = match envelope.receiver {
            Address::Client { port, .. } | Address::Remote { port, .. } => {
                Some(usize::from(port)).filter(|&participant| participant >= data_shards)
            }
            Address::Instance(instance) => {
                Some(usize::from(instance.shard)).filter(|&shard| shard < data_shards)
            }
            Address::Agent(id) => {
                match self
                    .directory
                    .route_to(id, Some(self.index), envelope.sender.route_key())
                {
                    Some(Route::Shard(shard)) => Some(shard),
                    // An agent only other nodes host: to the remote port.
                    Some(Route::Remote(port)) => Some(port),
                    None => None,
                }
            }
        };
        let Some(target) = target.filter(|&target| target == self.index || io.has_ring_to(target))
        else {
            self.metrics.unknown_receiver += 1;
            self.fail(&envelope, "unknown-agent", now, io);
            return;
        };
        let trace = envelope.trace;
        if target == self.index {
            if matches!(envelope.durability, Durability::Chained(_)) {
                self.persist(envelope, now, io);
            } else {
                self.accept(envelope, now, io);
            }
        } else if let Err(refused) = self.push_to(target, envelope, now, io) {
            io.refused(target, &refused);
            self.tracer.hop(trace, HopKind::Refused, now, None);
            if matches!(refused.durability, Durability::Notice(_)) {
                // The engine's own notice to a client that is not reading: the
                // message stays stored (and is handled); the client's wait
                // times out and says it may have been stored.
                self.metrics.refused += 1;
                self.metrics.undeliverable += 1;
            } else {
                self.refuse(&refused, "refused:ring-full", now, io);
            }
        } else if trace != 0 {
            let kind = if self.directory.remote_port() == Some(target) {
                HopKind::Remote
            } else {
                HopKind::Ring { to: target as u16 }
            };
            self.tracer.hop(trace, kind, now, None);
        }
    }

    /// Push `envelope` onto the ring to `target`, or keep it waiting here,
    /// from `now`, while fewer than `mailbox_capacity` wait for `target`:
    /// - for a client whose ring is full, any message (and the shard takes
    ///   no new message from that client meanwhile, [`Self::is_waiting_for`]);
    /// - for another shard or the remote port whose ring is full, an answer
    ///   (owed: its requester waits for nothing else), and, while answers
    ///   wait, whatever follows them, so that none overtakes another. Other
    ///   messages are refused, as back-pressure. The shard keeps reading
    ///   such a participant: it may itself wait for this shard's ring.
    ///
    /// Hands it back when refused.
    fn push_to(
        &mut self,
        target: usize,
        envelope: Envelope,
        now: u64,
        io: &mut impl ShardIo,
    ) -> Result<(), Envelope> {
        // Nothing waits for `target` (nearly always nothing waits for
        // anyone): straight onto its ring. Otherwise behind what waits, so
        // one sender's order holds.
        let waits = self.waiting_for_room > 0
            && self
                .backlog_of(target)
                .is_some_and(|backlog| !backlog.messages.is_empty());
        let envelope = if waits {
            envelope
        } else {
            match io.push(target, envelope) {
                Ok(()) => return Ok(()),
                Err(envelope) => envelope,
            }
        };
        let client_slot = self.client_slot(target);
        let answer = envelope.is_answer();
        let backlog = match client_slot {
            Some(slot) => grown_to(&mut self.for_clients, slot),
            None if waits || answer => grown_to(&mut self.for_peers, target),
            None => return Err(envelope),
        };
        backlog.keep(envelope, now, self.mailbox_capacity)?;
        self.waiting_for_room += 1;
        if client_slot.is_some() {
            self.metrics.waited_for_clients += 1;
        } else if answer {
            self.metrics.answers_waited += 1;
        }
        Ok(())
    }

    /// This shard as a mesh participant (what `from_participant` carries).
    fn participant(&self) -> u16 {
        self.index as u16
    }

    /// The lane of agent number `agent`: always the same one. A mask where
    /// the lanes are a power of two (every built-in profile), sparing the
    /// division of a `%` on every message.
    fn lane_of(&self, agent: usize) -> usize {
        let lanes = self.lanes.len();
        if lanes.is_power_of_two() {
            agent & (lanes - 1)
        } else {
            agent % lanes
        }
    }

    /// Admit `envelope` to its agent's lane, or refuse it when the lanes
    /// are full and no busier agent's message can make room.
    fn accept(&mut self, envelope: Envelope, now: u64, io: &mut impl ShardIo) {
        let agent = receiver_agent(&envelope);
        let trace = envelope.trace;
        let number = agent.map_or(0, |agent| agent.0 as usize);
        let bytes = envelope.content.len();
        let owed = envelope.is_owed();
        // A stored message or an answer is owed its handling: admitted past the bounds.
        if !self.has_room_for(bytes)
            && !self.passes_bounds(&envelope, self.in_lanes, self.mailbox_capacity)
            && !self.make_room(number, envelope.priority, bytes, now, io)
        {
            self.tracer.hop(trace, HopKind::Refused, now, agent);
            self.refuse(&envelope, "refused:queue-full", now, io);
            return;
        }
        let lane = self.lane_of(number);
        self.lanes[lane].push_owed(envelope, now);
        self.in_lanes += 1;
        self.owed_in_lanes += usize::from(owed);
        self.waiting_bytes += bytes;
        // Counted for the agent numbers a directory snapshot has held (the
        // table grows in `set_directory`); a made-up number (a stale
        // instance address) must not grow it.
        if let Some(count) = self.in_lanes_per_agent.get_mut(number) {
            *count += 1;
        }
        if self.lanes[lane].len() == 1 {
            self.ready.push_back(lane);
        }
        self.tracer.hop(trace, HopKind::Admitted, now, agent);
    }

    /// Whether `envelope` is taken whatever a bound (`count` of `bound`)
    /// says: a stored message always; an answer (see [`Envelope::is_owed`]) up to
    /// twice the bound, messages and bytes, since an agent may `reply` more
    /// than once to one request, and past the bound a misbehaving one would
    /// grow a neighbour's mailbox without end.
    fn passes_bounds(&self, envelope: &Envelope, count: usize, bound: usize) -> bool {
        match envelope.durability {
            Durability::Stored(_) => true,
            _ if envelope.is_answer() => {
                count < bound.saturating_mul(2)
                    && self.waiting_bytes.saturating_add(envelope.content.len())
                        <= self.waiting_bytes_max.saturating_mul(2)
            }
            _ => false,
        }
    }

    /// Whether the lanes (shared by all: one busy agent may use them all
    /// while no other needs room) take one more message of `bytes`.
    fn has_room_for(&self, bytes: usize) -> bool {
        self.in_lanes < self.mailbox_capacity
            && self.waiting_bytes.saturating_add(bytes) <= self.waiting_bytes_max
    }

    /// The lanes are full, and a message of class `priority` and `bytes`
    /// for agent number `number` arrives: push out the newest message (no
    /// more urgent) of the agent holding the most, while that agent holds
    /// more than this one will. Whether there is room now.
    ///
    /// Refusing the arrival instead would let one flooded agent fill the
    /// shard's mailbox and have every neighbour's message refused; with
    /// push-out a flood costs its own agent's senders, and an agent alone
    /// may still use every slot. Either way one sender hears
    /// `refused:queue-full`; it is the busy agent's.
    ///
    /// Out of line: only a full shard comes here, and kept apart it leaves
    /// `accept`, which every message passes, small.
    #[cold]
    #[inline(never)]
    fn make_room(
        &mut self,
        number: usize,
        priority: caxton_messaging::PriorityClass,
        bytes: usize,
        now: u64,
        io: &mut impl ShardIo,
    ) -> bool {
        // Owed messages alone fill the lanes: pushing others out would
        // refuse them for no room at all.
        if self.owed_in_lanes >= self.mailbox_capacity {
            return false;
        }
        loop {
            if self.has_room_for(bytes) {
                return true;
            }
            let holds = self.in_lanes_per_agent.get(number).copied().unwrap_or(0);
            let Some((busiest, most)) = self
                .in_lanes_per_agent
                .iter()
                .copied()
                .enumerate()
                .max_by_key(|&(_, count)| count)
            else {
                return false;
            };
            if busiest == number || most <= holds + 1 {
                return false;
            }
            let victim = AgentId(busiest as u32);
            let lane = self.lane_of(busiest);
            let Some(pushed_out) = self.lanes[lane].take_newest(priority, |envelope| {
                receiver_agent(envelope) == Some(victim) && !envelope.is_owed()
            }) else {
                return false;
            };
            self.left_lanes(&pushed_out);
            if self.lanes[lane].is_empty() {
                self.ready.retain(|&ready| ready != lane);
            }
            self.metrics.pushed_out += 1;
            self.tracer
                .hop(pushed_out.trace, HopKind::Refused, now, Some(victim));
            self.refuse(&pushed_out, "refused:queue-full", now, io);
        }
    }

    /// `envelope` left the lanes (popped or pushed out): uncount it.
    fn left_lanes(&mut self, envelope: &Envelope) {
        self.in_lanes -= 1;
        self.owed_in_lanes -= usize::from(envelope.is_owed());
        self.waiting_bytes = self.waiting_bytes.saturating_sub(envelope.content.len());
        if let Some(count) = receiver_agent(envelope)
            .and_then(|agent| self.in_lanes_per_agent.get_mut(agent.0 as usize))
        {
            *count = count.saturating_sub(1);
        }
    }

    /// Run `envelope`'s handler (or hold it back from its agent), then
    /// complete it, or note it suspended. Returns when the handler stopped
    /// running (`started_ns` when none ran).
    fn deliver(
        &mut self,
        envelope: Envelope,
        started_ns: u64,
        agents: &mut impl AgentRuntime,
        io: &mut impl ShardIo,
    ) -> u64 {
        let (agent, slot) = match envelope.receiver {
            Address::Agent(id) => (id, None),
            Address::Instance(instance) => (instance.agent, Some(instance.slot)),
            Address::Client { .. } | Address::Remote { .. } => {
                unreachable!("client-bound messages never enter a shard mailbox")
            }
        };
        // An agent past its cpu_shares waits for its next window; so do its
        // later messages, which must not overtake the held ones. Follow-ons
        // wait for what the held head waits for, so the shard sleeps until
        // then instead of re-checking them.
        let held_until = self
            .held
            .iter()
            .filter(|held| receiver_agent(&held.envelope) == Some(agent))
            .map(|held| held.until)
            .max_by_key(|until| match until {
                Until::Time(resume_ns) => *resume_ns,
                Until::FreeInstance => u64::MAX,
            });
        if let Some(until) =
            held_until.or_else(|| agents.cpu_blocked_until(agent, started_ns).map(Until::Time))
        {
            self.hold(envelope, until, started_ns, io);
            return started_ns;
        }
        let sent_at_ns = envelope.sent_at_ns;
        // A batch reads the clock once per handler, at its end, and each
        // handler starts when the last ended. A message that handler sent
        // carries that end as its send time, so, handled next, it would
        // show no routing at all: read the clock again for it, and its
        // routing is the dispatch it took. Messages that waited behind
        // others (the loaded case) need no read.
        let started_ns = if sent_at_ns >= started_ns {
            agents.now_ns().max(started_ns)
        } else {
            started_ns
        };
        let from_participant = envelope.from_participant;
        let request = envelope.reply_path();
        let durability = envelope.durability;
        match agents.run_handler(agent, slot, envelope, started_ns) {
            Handling::Done(handled) => {
                self.tracer.hop(
                    request.trace,
                    HopKind::HandlerStart,
                    started_ns,
                    Some(agent),
                );
                self.record_routing(sent_at_ns, from_participant, started_ns);
                let finished_ns = started_ns + handled.ran_ns;
                self.complete(request, durability, handled, finished_ns, agents, io);
                finished_ns
            }
            Handling::Suspended { instance, ran_ns } => {
                self.tracer.hop(
                    request.trace,
                    HopKind::HandlerStart,
                    started_ns,
                    Some(agent),
                );
                self.record_routing(sent_at_ns, from_participant, started_ns);
                self.metrics.suspended += 1;
                self.suspended.push(SuspendedRun {
                    instance,
                    request,
                    durability,
                });
                started_ns + ran_ns
            }
            Handling::Busy(envelope) => {
                self.hold(envelope, Until::FreeInstance, started_ns, io);
                started_ns
            }
            Handling::NoInstance => {
                self.metrics.unknown_receiver += 1;
                self.finish(durability, io);
                self.fail_path(&request, "unknown-agent", started_ns, io);
                started_ns
            }
        }
    }

    /// A handler that ran to its end at `finished_ns`: keep the durability
    /// protocol, answer its faults, count it and route what it sent.
    fn complete(
        &mut self,
        request: ReplyPath,
        durability: Durability,
        handled: Handled,
        finished_ns: u64,
        agents: &mut impl AgentRuntime,
        io: &mut impl ShardIo,
    ) {
        let agent = handled.instance.agent;
        self.tracer
            .hop(request.trace, HopKind::HandlerEnd, finished_ns, Some(agent));
        let child_durability = self.settle_handled(durability, &handled.outbox, io);
        if !handled.state_writes.is_empty() && self.ledger.is_some() {
            let name = self.directory.name_of(Address::Agent(agent));
            for (key, value) in handled.state_writes {
                // Only a stopped writer refuses; the node is going down then.
                let _ = io.store(Write::PutState {
                    agent: name.clone(),
                    key,
                    value,
                });
            }
        }
        if agents.has_reports() {
            self.answer_abandoned(finished_ns, agents, io);
            self.record_startups(agents);
        }
        self.metrics
            .processing_ns
            .saturating_record(handled.ran_ns.max(1));
        self.metrics.handled += 1;
        if let Some(reason) = self.failure_reason(&handled.outcome) {
            // A handler that answered its message (or passed it on) and
            // then returned a failure code: the answer stands. Its sender
            // takes one answer, and a failure sent ahead of it would be
            // the one taken; the code is counted all the same.
            let answered = handled.outbox.iter().any(|outbound| {
                outbound.on_behalf_of == Some(request.asker)
                    || (outbound.answers
                        && outbound.receiver == request.asker
                        && outbound.in_reply_to == request.reply_with)
            });
            if !answered {
                self.fail_path(&request, &reason, finished_ns, io);
            }
        }
        let mut outbox = handled.outbox;
        for outbound in outbox.drain(..) {
            let to_client = outbound.receiver.client_port().is_some();
            let mut envelope = Envelope {
                conversation_id: outbound.conversation_id,
                reply_with: outbound.reply_with,
                in_reply_to: outbound.in_reply_to,
                priority: request.priority,
                // What a traced handler sends continues its trace.
                trace: request.trace,
                durability: if to_client {
                    Durability::Transient
                } else {
                    child_durability
                },
                ..Envelope::new(
                    outbound.performative,
                    outbound
                        .on_behalf_of
                        .unwrap_or(Address::Instance(handled.instance)),
                    outbound.receiver,
                    outbound.content,
                    finished_ns,
                    self.participant(),
                )
            };
            self.tracer.sample(&mut envelope);
            self.dispatch(envelope, finished_ns, io);
        }
        agents.recycle_outbox(outbox);
    }

    /// A suspended handler ran to its end at `now`: complete it, and let the
    /// messages waiting for one of its agent's instances run.
    pub fn on_handler_finished(
        &mut self,
        handled: Handled,
        now: u64,
        agents: &mut impl AgentRuntime,
        io: &mut impl ShardIo,
    ) {
        let Some(position) = self
            .suspended
            .iter()
            .position(|run| run.instance == handled.instance)
        else {
            return;
        };
        let run = self.suspended.swap_remove(position);
        self.free_waiting(run.instance.agent, now);
        self.complete(run.request, run.durability, handled, now, agents, io);
    }

    /// Agent `agent` was undeployed: its suspended handlers were cancelled
    /// with it, and nothing it held back will run. Answer their senders.
    pub fn on_agent_undeployed(&mut self, agent: AgentId, now: u64, io: &mut impl ShardIo) {
        let (cancelled, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.suspended)
            .into_iter()
            .partition(|run| run.instance.agent == agent);
        self.suspended = kept;
        for run in cancelled {
            // Its agent is gone: a redelivery would only find no one.
            self.finish(run.durability, io);
            self.fail_path(&run.request, "undeployed", now, io);
        }
        // Held for an instance that will never be free: let them run into
        // the missing agent and be answered.
        self.free_waiting(agent, now);
    }

    /// Messages held for a free instance of `agent` may try again at `now`.
    fn free_waiting(&mut self, agent: AgentId, now: u64) {
        for held in &mut self.held {
            if held.until == Until::FreeInstance && receiver_agent(&held.envelope) == Some(agent) {
                held.until = Until::Time(now);
            }
        }
    }

    /// Send to handler start, into the local, cross-shard or remote histogram.
    fn record_routing(&mut self, sent_at_ns: u64, from_participant: u16, started_ns: u64) {
        let routing_ns = started_ns.saturating_sub(sent_at_ns).max(1);
        let from = usize::from(from_participant);
        let histogram = if from == self.index {
            &mut self.metrics.routing_local_ns
        } else if self.directory.remote_port() == Some(from) {
            &mut self.metrics.routing_remote_ns
        } else {
            if from >= self.data_shards {
                self.metrics.arrived_from_clients += 1;
            }
            &mut self.metrics.routing_cross_ns
        };
        histogram.saturating_record(routing_ns);
    }

    /// The handler ran: a stored message is finished whatever it did, once
    /// every message it sent to agents is stored too. Returns the durability
    /// its messages to agents travel with.
    fn settle_handled(
        &mut self,
        durability: Durability,
        outbox: &[caxton_agents::OutboundMessage],
        io: &mut impl ShardIo,
    ) -> Durability {
        let Durability::Stored(id) = durability else {
            self.finish(durability, io);
            return Durability::Transient;
        };
        // Without persistence nothing is stored, so nothing is finished.
        let Some(ledger) = self.ledger.as_mut() else {
            return Durability::Transient;
        };
        let children = outbox
            .iter()
            .filter(|outbound| outbound.receiver.client_port().is_none())
            .count();
        if ledger.open_chain(id, children) {
            self.finish(durability, io);
            Durability::Transient
        } else {
            Durability::Chained(id)
        }
    }

    /// The `failure` reason a handler's outcome owes its sender, counting it.
    fn failure_reason(&mut self, outcome: &Outcome) -> Option<String> {
        match outcome {
            Outcome::Handled => None,
            Outcome::AgentFailed(code) => {
                self.metrics.agent_failures += 1;
                Some(format!("agent-failed:{code}"))
            }
            Outcome::Trapped(reason) => {
                self.metrics.faults += 1;
                Some(format!("trap:{reason}"))
            }
            Outcome::TimedOut => {
                self.metrics.faults += 1;
                Some("execution-time".to_owned())
            }
            Outcome::MemoryExceeded => {
                self.metrics.faults += 1;
                Some("memory-limit".to_owned())
            }
        }
    }

    /// Hold `envelope` until `resume_ns`, or refuse it when too many are held.
    fn hold(&mut self, envelope: Envelope, until: Until, now: u64, io: &mut impl ShardIo) {
        // A stored message or an answer is held past the bound, as it is admitted (`Envelope::is_owed`).
        if self.held.len() >= self.held_max
            && !self.passes_bounds(&envelope, self.held.len(), self.held_max)
        {
            let reason = match until {
                Until::Time(_) => "refused:cpu-budget",
                Until::FreeInstance => "refused:queue-full",
            };
            self.refuse(&envelope, reason, now, io);
            return;
        }
        if matches!(until, Until::Time(_)) {
            self.metrics.throttled += 1;
        }
        self.waiting_bytes += envelope.content.len();
        self.held.push(Held { until, envelope });
    }

    /// Give `envelope` an id and hand it to the partition writer; it is
    /// accepted once durable ([`Self::on_storage_event`]).
    fn persist(&mut self, envelope: Envelope, now: u64, io: &mut impl ShardIo) {
        let parent = match envelope.durability {
            Durability::Chained(parent) => Some(parent),
            _ => None,
        };
        if self.ledger.is_none() {
            let notice = envelope.reply_path().notice(
                Performative::Refuse,
                0,
                format!("{PERSISTENCE_OFF}: this node runs without messaging.enable_persistence")
                    .into_bytes(),
                now,
                self.participant(),
            );
            self.dispatch(notice, now, io);
            return;
        }
        let Some(agent) = receiver_agent(&envelope) else {
            self.fail(&envelope, "unknown-agent", now, io);
            return;
        };
        // A stored message is owed its handling, however long it waits, so
        // what the shard holds in memory is bounded here, like a mailbox:
        // refused before it is stored, never after.
        let waiting = self.deferred.len()
            + self
                .ledger
                .as_ref()
                .map_or(0, DurabilityLedger::waiting_len);
        // A sender's durable send, past `queue_size` owed messages (in the
        // lanes, held, waiting for the directory or their writes) or twice
        // `queue_bytes`: its agents are not keeping up, and the sender hears
        // so. A chain's hop is not refused for that (its parent would stay
        // unfinished until the next start); its parents bound it.
        let behind = parent.is_none()
            && (self.owed_in_lanes + self.held.len() + waiting >= self.mailbox_capacity
                || self.waiting_bytes.saturating_add(envelope.content.len())
                    > self.waiting_bytes_max.saturating_mul(2));
        // Waiting for the directory, hops as well.
        if behind || (self.awaiting_directory && waiting >= self.mailbox_capacity) {
            self.metrics.refused += 1;
            self.refuse_unstored(&envelope, parent, "backlog-full", now, io);
            return;
        }
        let receiver = self.directory.name_of(Address::Agent(agent));
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        let id = ledger.next_id();
        let mut stored = envelope;
        stored.durability = Durability::Stored(id);
        let write = Write::Persist {
            id,
            receiver,
            conversation_id: stored.conversation_id,
            envelope: stored.encode(),
        };
        let id = match ledger.begin(stored, parent) {
            Ok(id) => id,
            Err(caxton_storage::LedgerFull(refused)) => {
                self.metrics.storage_failures += 1;
                self.refuse_unstored(&refused, parent, "backlog-full", now, io);
                return;
            }
        };
        if let Err(refused) = io.store(write) {
            let Some(waiting) = self.ledger.as_mut().and_then(|ledger| ledger.failed(id)) else {
                return;
            };
            self.metrics.storage_failures += 1;
            self.refuse_unstored(&waiting.message, parent, &refused.to_string(), now, io);
        }
    }

    /// A message that could not be stored. A client's send is refused (its
    /// sender hears why). An agent's hop of a stored chain is answered
    /// `failure`, and its parent is left unfinished: the next start runs the
    /// parent again, and with it this hop.
    fn refuse_unstored(
        &mut self,
        envelope: &Envelope,
        parent: Option<u64>,
        reason: &str,
        now: u64,
        io: &mut impl ShardIo,
    ) {
        let path = envelope.reply_path();
        match parent {
            None => {
                let content = format!("{FAILURE_PREFIX}storage:{reason}").into_bytes();
                let notice = path.notice(Performative::Refuse, 0, content, now, self.participant());
                self.dispatch(notice, now, io);
            }
            Some(_) => self.fail_path(&path, &format!("storage:{reason}"), now, io),
        }
    }

    /// Tell the shard of stored message `parent` that one of its children is
    /// stored (or finished without being stored).
    fn send_chain_ack(&mut self, parent: u64, now: u64, io: &mut impl ShardIo) {
        let owner = caxton_storage::durability::partition_of(parent);
        if owner == self.index {
            self.settle_child(parent, io);
            return;
        }
        let ack = Envelope::chain_ack(parent, now, self.participant());
        if owner >= self.data_shards || !io.has_ring_to(owner) || io.push(owner, ack).is_err() {
            // The parent stays unfinished and runs again after a restart: at least once.
            self.metrics.undeliverable += 1;
        }
    }

    /// One child of stored message `parent` is settled: finish the parent when none is left.
    fn settle_child(&mut self, parent: u64, io: &mut impl ShardIo) {
        let finished = self
            .ledger
            .as_mut()
            .is_some_and(|ledger| ledger.child_settled(parent));
        if finished {
            self.finish(Durability::Stored(parent), io);
        }
    }

    /// Tell the writer a stored message is finished.
    fn finish(&mut self, durability: Durability, io: &mut impl ShardIo) {
        if let (Durability::Stored(id), Some(_)) = (durability, self.ledger.as_ref()) {
            // Only a stopped writer refuses: the message stays unfinished
            // and runs again after a restart (at least once).
            let _ = io.store(Write::Done { id });
        }
    }

    /// Refuse `envelope` for want of room, answering its sender `reason`.
    /// A failure that finds no room is not a refused send: `fail` drops it
    /// and counts it undeliverable, as a failure is never answered.
    fn refuse(&mut self, envelope: &Envelope, reason: &str, now: u64, io: &mut impl ShardIo) {
        if envelope.performative != Performative::Failure {
            self.metrics.refused += 1;
        }
        self.fail(envelope, reason, now, io);
    }

    /// Answer `envelope`'s sender with an engine `failure`.
    fn fail(&mut self, envelope: &Envelope, reason: &str, now: u64, io: &mut impl ShardIo) {
        // Answered: a stored message is finished, even though no handler ran;
        // a hop that never got stored no longer holds its parent back.
        match envelope.durability {
            Durability::Chained(parent) => self.send_chain_ack(parent, now, io),
            durability => self.finish(durability, io),
        }
        self.fail_path(&envelope.reply_path(), reason, now, io);
    }

    fn fail_path(&mut self, request: &ReplyPath, reason: &str, now: u64, io: &mut impl ShardIo) {
        // A failure about a failure is not answered: that could ping-pong forever.
        if request.performative == Performative::Failure {
            self.metrics.undeliverable += 1;
            return;
        }
        let failure = request.answer(
            Performative::Failure,
            format!("{FAILURE_PREFIX}{reason}").into_bytes(),
            now,
            self.participant(),
        );
        self.dispatch(failure, now, io);
    }
}

/// The backlog at `index`, the list grown to hold it.
fn grown_to(backlogs: &mut Vec<Backlog>, index: usize) -> &mut Backlog {
    if backlogs.len() <= index {
        backlogs.resize_with(index + 1, Backlog::default);
    }
    &mut backlogs[index]
}

/// The agent a message is for, if it is for an agent.
fn receiver_agent(envelope: &Envelope) -> Option<AgentId> {
    match envelope.receiver {
        Address::Agent(id) => Some(id),
        Address::Instance(instance) => Some(instance.agent),
        Address::Client { .. } | Address::Remote { .. } => None,
    }
}

pub(crate) fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
