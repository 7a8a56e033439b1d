//! A client: a caller outside the agents (a test, a benchmark, the admin API)
//! that sends messages into the node and receives answers.
//!
//! A client owns one of the node's client ports: a participant of the mesh
//! with its own SPSC ring to and from every data shard, so a client on its own
//! thread sends and receives without locks. A node has
//! `runtime.client_ports` of them; a dropped client returns its port.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use caxton_messaging::{
    Address, AgentId, Durability, Envelope, MeshPort, Performative, PriorityClass,
};

use crate::clock::NodeClock;
use crate::directory::{DirectoryReader, PublishedDirectory, Route};

/// Most messages a client holds unread.
pub const CLIENT_INBOX_MAX: usize = 65_536;

/// The data shard that passes on a client's messages for other nodes, and
/// their answers coming back, when the client has no ring to the remote
/// port: on a node built without those rings (`NodeOptions::remote_port`
/// off), or whose remote port was taken while every client port was in
/// use. One shard both ways: each round trip then wakes one shard, not two.
pub(crate) fn relay_shard(client_participant: usize, data_shards: usize) -> usize {
    client_participant % data_shards.max(1)
}

/// Why a send was not accepted. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No agent has that name.
    #[error("no agent named `{0}`")]
    UnknownAgent(String),
    /// The agent has no instance on any shard.
    #[error("agent has no running instance")]
    NoInstance,
    /// The ring to the agent's shard is full: the node is at its bound.
    #[error("refused: the ring to shard {0} is full")]
    Refused(usize),
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Why a durable send was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The send itself was refused.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The node could not store it (persistence off, storage failing, stopping).
    #[error("not accepted: {0}")]
    Refused(String),
    /// No answer from the node within the timeout: it may or may not be stored.
    #[error("no acceptance within {0:?}; the message may or may not have been stored")]
    Timeout(Duration),
    /// The node that was to store it was lost after the message left for
    /// it and before it said whether it stored it (the reason): it may or
    /// may not be stored there.
    #[error("{0} before it said whether it stored the message; the message may or may not have been stored")]
    InDoubt(String),
}

/// Optional fields of a send.
#[derive(Clone, Copy, Debug)]
pub struct SendOptions {
    /// Priority class (see [`PriorityClass`]).
    pub priority: PriorityClass,
    /// Give up (answer `failure`) after this long.
    pub deadline: Option<Duration>,
    /// Conversation id.
    pub conversation_id: u64,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            priority: PriorityClass(0),
            deadline: None,
            conversation_id: 0,
        }
    }
}

/// See the module docs.
pub struct Client {
    port: Option<MeshPort>,
    generation: u64,
    directory: DirectoryReader,
    ports: PortPool,
    clock: NodeClock,
    next_token: u64,
    inbox: VecDeque<Envelope>,
    /// How long a wait polls the rings before parking (`runtime.client_spin_before_park`).
    spin: Option<Duration>,
    /// Times this client parked its thread waiting for an answer.
    parks: u64,
    /// Data shards of the node (participants `0..data_shards`).
    data_shards: usize,
}

/// The node's free client ports, each with how many owners it has had.
pub(crate) type PortPool = Arc<Mutex<Vec<(MeshPort, u64)>>>;

/// How long a waiting client polls before giving its CPU up once. Never
/// yielding let a client's poll keep a shard that shares its CPU waiting;
/// yielding at every poll pays a system call (about 0.24 µs on the 2-core
/// development VM) between an answer's arrival and its pickup. Two in-process
/// nodes on one core each there (`benchmark run --suite cluster --quick`,
/// `low-latency`, interleaved runs): remote routing P50 87-95 µs never
/// yielding, 35-41 µs yielding every poll, 30-39 µs yielding every 2 µs.
/// Client-driven request-reply on one shard (`high-throughput`,
/// `worker_threads=1`, five runs each) was within that VM's noise for all
/// three: 1.39-2.18M/s, 1.34-1.62M/s, 1.26-1.64M/s.
const CLIENT_YIELD_EVERY: Duration = Duration::from_micros(2);

/// Tokens carry the port's generation in their high bits, so an answer meant
/// for a port's previous owner never matches a request of the next one.
const TOKEN_GENERATION_SHIFT: u32 = 40;

/// Whether `envelope` answers a request of an earlier owner (an earlier
/// `generation`) of the port.
fn is_stale(generation: u64, envelope: &Envelope) -> bool {
    envelope.in_reply_to != 0 && envelope.in_reply_to >> TOKEN_GENERATION_SHIFT != generation
}

/// Whether `envelope` is the node's acceptance notice of a durable send (it
/// quotes the send's token, as the reply does, but is not the reply).
pub fn is_acceptance(envelope: &Envelope) -> bool {
    matches!(envelope.durability, Durability::Notice(_))
}

/// What an acceptance notice says: the message's durable id once stored, or
/// why it was not (`InDoubt` when the storing node was lost meanwhile).
pub fn acceptance(notice: &Envelope) -> Result<u64, PersistError> {
    let reason = || String::from_utf8_lossy(&notice.content).into_owned();
    match (notice.performative, notice.durability) {
        (Performative::Agree, Durability::Notice(id)) => Ok(id),
        // The engine's word that the storing node was lost meanwhile.
        (Performative::Failure, Durability::Notice(_)) => Err(PersistError::InDoubt(reason())),
        _ => Err(PersistError::Refused(reason())),
    }
}

impl Client {
    pub(crate) fn new(
        port: MeshPort,
        generation: u64,
        directory: Arc<PublishedDirectory>,
        ports: PortPool,
        clock: NodeClock,
        spin: Option<Duration>,
        data_shards: usize,
    ) -> Self {
        Self {
            data_shards,
            port: Some(port),
            generation,
            directory: DirectoryReader::new(directory),
            ports,
            clock,
            next_token: (generation << TOKEN_GENERATION_SHIFT) | 1,
            inbox: VecDeque::new(),
            spin,
            parks: 0,
        }
    }

    /// Times this client parked its thread waiting for an answer (a busy-polled
    /// answer, within `runtime.client_spin_before_park`, costs no park).
    pub fn parks(&self) -> u64 {
        self.parks
    }

    fn port(&mut self) -> &mut MeshPort {
        // Present from construction until drop.
        self.port.as_mut().expect("a live client holds its port")
    }

    /// This client's address, as agents see it.
    pub fn address(&self) -> Address {
        let participant = self.port.as_ref().map_or(0, MeshPort::participant) as u16;
        Address::Client {
            port: participant,
            id: u32::from(participant),
        }
    }

    /// The id of the agent named `name`. Through the snapshot this client
    /// holds, renewed only when a newer one was published: the admin
    /// endpoint resolves a name at every send, and the directory's lock
    /// would pass its counters between the sending threads' cores each time.
    pub fn resolve(&mut self, name: &str) -> Result<AgentId, SendError> {
        self.directory
            .current()
            .resolve_anywhere(name)
            .ok_or_else(|| SendError::UnknownAgent(name.to_owned()))
    }

    /// The node clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// A message from this client to `agent`, with a fresh `reply_with`
    /// token (returned), for callers that send it with
    /// [`Client::send_envelope`] (load generators keeping many outstanding,
    /// or stamping `sent_at_ns` with an intended time).
    pub fn request_envelope(
        &mut self,
        agent: AgentId,
        performative: Performative,
        content: Vec<u8>,
        options: SendOptions,
        durability: Durability,
    ) -> (u64, Envelope) {
        let now = self.clock.now_ns();
        self.request_envelope_at(now, agent, performative, content, options, durability)
    }

    /// [`Client::request_envelope`], stamped as sent at `now` (node clock
    /// ns), from which its deadline counts too: a load generator stamps
    /// each message with the time its schedule meant it to go, and reads
    /// no clock per message.
    pub fn request_envelope_at(
        &mut self,
        now: u64,
        agent: AgentId,
        performative: Performative,
        content: Vec<u8>,
        options: SendOptions,
        durability: Durability,
    ) -> (u64, Envelope) {
        let token = self.next_token();
        let envelope = Envelope {
            conversation_id: options.conversation_id,
            reply_with: token,
            priority: options.priority,
            deadline_ns: options.deadline.map_or(Envelope::NO_DEADLINE, |deadline| {
                now.saturating_add(u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX))
            }),
            durability,
            // The participant is stamped when the envelope is sent.
            ..Envelope::new(
                performative,
                self.address(),
                Address::Agent(agent),
                content,
                now,
                0,
            )
        };
        (token, envelope)
    }

    /// Send `performative` with `content` to any instance of `agent`. Returns
    /// the `reply_with` token an answer will quote.
    pub fn send(
        &mut self,
        agent: AgentId,
        performative: Performative,
        content: Vec<u8>,
        options: SendOptions,
    ) -> Result<u64, SendError> {
        self.send_as(agent, performative, content, options, Durability::Transient)
    }

    /// [`Client::send`] with `durability`: `Requested` asks the node to
    /// store the message first, and it answers with an acceptance notice
    /// ([`acceptance`]) before the reply. Returns the token both quote.
    pub fn send_as(
        &mut self,
        agent: AgentId,
        performative: Performative,
        content: Vec<u8>,
        options: SendOptions,
        durability: Durability,
    ) -> Result<u64, SendError> {
        let (token, envelope) =
            self.request_envelope(agent, performative, content, options, durability);
        self.send_envelope(envelope)?;
        Ok(token)
    }

    /// Send like [`Client::send`], but ask for the message to be made durable
    /// first (`messaging.enable_persistence`), and wait up to `timeout` for
    /// the node to accept it. Returns the token replies will quote and the
    /// message's durable id. Once accepted, the message is handled at least
    /// once, even if the node crashes before handling it.
    pub fn send_persistent(
        &mut self,
        agent: AgentId,
        performative: Performative,
        content: Vec<u8>,
        options: SendOptions,
        timeout: Duration,
    ) -> Result<(u64, u64), PersistError> {
        let token = self.send_as(agent, performative, content, options, Durability::Requested)?;
        let notice = self
            .wait_for(timeout, |envelope| {
                envelope.in_reply_to == token && is_acceptance(envelope)
            })
            .ok_or(PersistError::Timeout(timeout))?;
        acceptance(&notice).map(|id| (token, id))
    }

    /// A fresh `reply_with` token, for callers that build envelopes themselves.
    pub fn next_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Send a prepared envelope (sender, `from_participant` are filled in; `sent_at_ns`
    /// is kept, so a load generator can stamp the intended send time).
    pub fn send_envelope(&mut self, mut envelope: Envelope) -> Result<(), SendError> {
        envelope.sender = self.address();
        let participant = self.port().participant();
        envelope.from_participant = participant as u16;
        let target = match envelope.receiver {
            Address::Agent(agent) => {
                match self
                    .directory
                    .current()
                    .route_to(agent, None, participant as u64)
                {
                    Some(Route::Shard(shard)) => shard,
                    // Straight to the remote port: no data shard in the way.
                    Some(Route::Remote(port)) if self.port().has_ring_to(port) => port,
                    Some(Route::Remote(_)) => relay_shard(participant, self.data_shards),
                    None => return Err(SendError::NoInstance),
                }
            }
            Address::Instance(instance) => usize::from(instance.shard),
            Address::Client { port, .. } | Address::Remote { port, .. } => usize::from(port),
        };
        if !self.port().has_ring_to(target) {
            return Err(SendError::NoInstance);
        }
        self.port()
            .send(target, envelope)
            .map_err(|_| SendError::Refused(target))
    }

    /// The next message for this client, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Envelope> {
        self.wait_for(timeout, |_| true)
    }

    /// Every message for this client that has arrived, appended to `batch`
    /// in arrival order, waiting up to `timeout` for the first; how many.
    /// One pass over the rings serves the whole batch, where `recv` per
    /// message would look at every ring again each time: what a client
    /// with many requests outstanding on many shards (a load generator)
    /// reads answers with.
    pub fn recv_batch(&mut self, timeout: Duration, batch: &mut Vec<Envelope>) -> usize {
        let Some(first) = self.recv(timeout) else {
            return 0;
        };
        batch.push(first);
        let taken = 1 + self.inbox.len();
        batch.extend(self.inbox.drain(..));
        taken
    }

    /// Send a `request` and wait for the answer quoting it.
    pub fn request(
        &mut self,
        agent: AgentId,
        content: Vec<u8>,
        timeout: Duration,
    ) -> Result<Envelope, RequestError> {
        let token = self.send(
            agent,
            Performative::Request,
            content,
            SendOptions::default(),
        )?;
        self.await_reply(token, timeout)
    }

    /// Wait for the answer quoting `token`; other messages stay queued for `recv`.
    pub fn await_reply(&mut self, token: u64, timeout: Duration) -> Result<Envelope, RequestError> {
        // The node's acceptance notice of a durable send quotes the token too; it is not the reply.
        self.wait_for(timeout, |envelope| {
            envelope.in_reply_to == token && !is_acceptance(envelope)
        })
        .ok_or(RequestError::Timeout(timeout))
    }

    /// The first queued or arriving message that `wanted` accepts, waiting up
    /// to `timeout`. The inbox holds at most [`CLIENT_INBOX_MAX`] messages;
    /// past that, arrivals stay in the rings (and the shards refuse senders
    /// once those fill) until the client reads.
    fn wait_for(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Envelope) -> bool,
    ) -> Option<Envelope> {
        // `None`: a poll that may not wait, and reads no clock.
        let deadline = (!timeout.is_zero()).then(|| Instant::now().checked_add(timeout));
        loop {
            self.take_arrivals();
            if let Some(position) = self.inbox.iter().position(&wanted) {
                return self.inbox.remove(position);
            }
            // A poll that may not wait ends here.
            let remaining = match deadline? {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if remaining.is_zero() {
                return None;
            }
            if !self.spin_for_arrivals(remaining, || false) {
                self.parks += 1;
                self.park_until_rung(remaining);
            }
        }
    }

    /// Move what the rings hold into the inbox, up to its bound, dropping
    /// answers meant for an earlier owner of the port.
    fn take_arrivals(&mut self) {
        let room = CLIENT_INBOX_MAX.saturating_sub(self.inbox.len());
        if room > 0 {
            let generation = self.generation;
            let port = self.port.as_mut().expect("a live client holds its port");
            let rings = port.participants();
            let inbox = &mut self.inbox;
            port.drain(room.div_ceil(rings.max(1)), |envelope| {
                if !is_stale(generation, &envelope) {
                    inbox.push_back(envelope);
                }
            });
        }
    }

    /// Every message for this client that has arrived, appended to `batch`
    /// in arrival order; when none has, wait for one up to `timeout` first.
    /// Unlike [`Client::recv_batch`], the wait also ends early, perhaps
    /// with nothing, when another thread raises `woken` and unparks this
    /// one: how a thread that serves both this client's rings and a queue
    /// of its own work (the admin endpoint's sender) hears of new work.
    /// The flag ends the poll before parking, which an unpark alone would
    /// not; the caller lowers it before it looks at its queue. How many.
    pub fn recv_or_woken(
        &mut self,
        timeout: Duration,
        batch: &mut Vec<Envelope>,
        woken: &AtomicBool,
    ) -> usize {
        self.take_arrivals();
        if self.inbox.is_empty() && !timeout.is_zero() && !woken.load(Ordering::Acquire) {
            if !self.spin_for_arrivals(timeout, || woken.load(Ordering::Acquire)) {
                self.parks += 1;
                self.park_until_rung(timeout);
            }
            self.take_arrivals();
        }
        let taken = self.inbox.len();
        batch.extend(self.inbox.drain(..));
        taken
    }

    /// Poll the rings for up to `runtime.client_spin_before_park` (at most
    /// `limit`), or until `interrupted` says so: an answer arriving
    /// meanwhile is taken without the shard having to wake this thread.
    /// Whether one arrived or the poll was interrupted (either way, no park).
    ///
    /// The poll gives the CPU up every [`CLIENT_YIELD_EVERY`]. A client
    /// thread is not pinned: where every PU hosts a shard it shares one, and
    /// a poll that held it would keep the shard, perhaps the one that must
    /// answer, waiting for the scheduler. A yield with no one else to run
    /// returns at once, but costs about 0.24 µs on the 2-core development
    /// VM, so polls between yields only relax the core.
    fn spin_for_arrivals(&mut self, limit: Duration, interrupted: impl Fn() -> bool) -> bool {
        let Some(spin) = self.spin.map(|spin| spin.min(limit)) else {
            return false;
        };
        let start = Instant::now();
        let until = start + spin;
        let mut next_yield = start + CLIENT_YIELD_EVERY;
        loop {
            if self.port().has_inbound() || interrupted() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            if now >= next_yield {
                std::thread::yield_now();
                next_yield = Instant::now() + CLIENT_YIELD_EVERY;
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Park this thread until a shard rings this client's doorbell or `timeout` passes.
    fn park_until_rung(&mut self, timeout: Duration) {
        let Some(port) = self.port.as_ref() else {
            return;
        };
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut waiting = std::pin::pin!(port.wait_for_messages());
        if waiting.as_mut().poll(&mut context).is_pending() {
            std::thread::park_timeout(timeout);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut port) = self.port.take() {
            // Messages for the old owner are not the next owner's.
            port.drain(usize::MAX, drop);
            self.ports
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((port, self.generation + 1));
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}
