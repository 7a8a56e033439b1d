//! Unit tests of the shard core: fake agents, recorded effects, and a
//! virtual clock (plain numbers handed in as `now`). No threads, no sleeps.

use std::collections::HashMap;
use std::sync::Arc;

use caxton_agents::{Handled, Handling, OutboundMessage, Outcome};
use caxton_messaging::{
    Address, AgentId, Durability, Envelope, InstanceId, MailboxConfig, Performative, PriorityClass,
    NOBODY,
};
use caxton_storage::{StorageEvent, Write, WriteRefused};

use super::{AgentRuntime, CoreLimits, ShardCore, ShardIo};
use crate::directory::{AgentRecord, Directory};

/// What a fake agent does with a message.
#[derive(Clone, Debug)]
pub(super) enum Behaviour {
    /// Answer `inform` with the same content.
    Echo,
    /// End with this outcome, sending nothing.
    End(Outcome),
    /// Send one `request` to each of these agents.
    SendTo(Vec<AgentId>),
    /// Answer `inform`, then end with this outcome (a handler that
    /// replied and then returned a failure code).
    EchoThen(Outcome),
    /// Forward the message to this agent, then end with this outcome.
    ForwardThen(AgentId, Outcome),
}

/// Agents that run instantly (plus `handler_ns`) and record what they ran.
#[derive(Default)]
pub(super) struct FakeAgents {
    pub behaviours: HashMap<AgentId, Behaviour>,
    /// Agents over their CPU budget until this time.
    pub blocked_until: HashMap<AgentId, u64>,
    /// (agent, content) of every handler run, in order.
    pub runs: Vec<(AgentId, Vec<u8>)>,
    /// How long each handler takes on the virtual clock.
    pub handler_ns: u64,
    /// Agents whose handlers use up their slice and yield.
    pub slow: std::collections::HashSet<AgentId>,
    /// Handlers suspended, to be finished by the test.
    pub suspended: Vec<Handled>,
    pub abandoned: Vec<OutboundMessage>,
    pub startups: Vec<u64>,
    /// What the node clock reads when the core asks (0: earlier than any step).
    pub clock_ns: u64,
    /// The start time the core gave each handler run, in order.
    pub started: Vec<u64>,
}

impl AgentRuntime for FakeAgents {
    fn cpu_blocked_until(&mut self, agent: AgentId, now_ns: u64) -> Option<u64> {
        self.blocked_until
            .get(&agent)
            .copied()
            .filter(|&until| until > now_ns)
    }

    fn run_handler(
        &mut self,
        agent: AgentId,
        slot: Option<u16>,
        envelope: Envelope,
        started_ns: u64,
    ) -> Handling {
        let Some(behaviour) = self.behaviours.get(&agent).cloned() else {
            return Handling::NoInstance;
        };
        let instance = InstanceId {
            agent,
            shard: 0,
            slot: slot.unwrap_or(0),
        };
        // One instance per agent: busy while its handler is suspended.
        if self
            .suspended
            .iter()
            .any(|handled| handled.instance == instance)
        {
            return Handling::Busy(envelope);
        }
        self.runs.push((agent, envelope.content.clone()));
        self.started.push(started_ns);
        let answer = |performative, content| OutboundMessage {
            receiver: envelope.sender,
            performative,
            conversation_id: envelope.conversation_id,
            reply_with: 0,
            in_reply_to: envelope.reply_with,
            on_behalf_of: None,
            answers: true,
            content,
        };
        let (outcome, outbox) = match behaviour {
            Behaviour::Echo => (
                Outcome::Handled,
                vec![answer(Performative::Inform, envelope.content.clone())],
            ),
            Behaviour::End(outcome) => (outcome, Vec::new()),
            Behaviour::EchoThen(outcome) => (
                outcome,
                vec![answer(Performative::Inform, envelope.content.clone())],
            ),
            Behaviour::ForwardThen(to, outcome) => (
                outcome,
                vec![OutboundMessage {
                    receiver: Address::Agent(to),
                    performative: envelope.performative,
                    conversation_id: envelope.conversation_id,
                    reply_with: envelope.reply_with,
                    in_reply_to: 0,
                    on_behalf_of: Some(envelope.sender),
                    answers: false,
                    content: envelope.content.clone(),
                }],
            ),
            Behaviour::SendTo(receivers) => (
                Outcome::Handled,
                receivers
                    .into_iter()
                    .map(|receiver| OutboundMessage {
                        receiver: Address::Agent(receiver),
                        performative: Performative::Request,
                        conversation_id: envelope.conversation_id,
                        reply_with: 0,
                        in_reply_to: 0,
                        on_behalf_of: None,
                        answers: false,
                        content: envelope.content.clone(),
                    })
                    .collect(),
            ),
        };
        let handled = Handled {
            instance,
            outcome,
            ran_ns: self.handler_ns,
            outbox,
            state_writes: Vec::new(),
        };
        if self.slow.contains(&agent) {
            self.suspended.push(handled);
            return Handling::Suspended {
                instance,
                ran_ns: self.handler_ns,
            };
        }
        Handling::Done(handled)
    }

    fn take_abandoned(&mut self) -> Vec<OutboundMessage> {
        std::mem::take(&mut self.abandoned)
    }

    fn has_reports(&self) -> bool {
        !self.abandoned.is_empty() || !self.startups.is_empty()
    }

    fn drain_startup_times(&mut self, record: &mut dyn FnMut(u64)) {
        self.startups.drain(..).for_each(record);
    }

    fn now_ns(&self) -> u64 {
        self.clock_ns
    }
}

/// Rings and a partition writer that record what they were given.
pub(super) struct RecordingIo {
    /// Mesh participants (data shards and client ports).
    pub participants: usize,
    pub this: usize,
    /// Messages pushed, per participant.
    pub rings: HashMap<usize, Vec<Envelope>>,
    /// Room per ring (unlimited when absent).
    pub ring_room: HashMap<usize, usize>,
    pub writes: Vec<Write>,
    pub writer: Result<(), WriteRefused>,
}

impl RecordingIo {
    pub fn new(participants: usize, this: usize) -> Self {
        Self {
            participants,
            this,
            rings: HashMap::new(),
            ring_room: HashMap::new(),
            writes: Vec::new(),
            writer: Ok(()),
        }
    }

    /// Everything pushed to `participant`, taken.
    pub fn take(&mut self, participant: usize) -> Vec<Envelope> {
        self.rings.remove(&participant).unwrap_or_default()
    }
}

impl ShardIo for RecordingIo {
    fn has_ring_to(&self, participant: usize) -> bool {
        participant < self.participants && participant != self.this
    }

    fn push(&mut self, participant: usize, envelope: Envelope) -> Result<(), Envelope> {
        assert!(self.has_ring_to(participant), "no ring to {participant}");
        if let Some(room) = self.ring_room.get_mut(&participant) {
            if *room == 0 {
                return Err(envelope);
            }
            *room -= 1;
        }
        self.rings.entry(participant).or_default().push(envelope);
        Ok(())
    }

    fn store(&mut self, write: Write) -> Result<(), WriteRefused> {
        self.writer?;
        self.writes.push(write);
        Ok(())
    }
}

const ECHO: AgentId = AgentId(0);
const OTHER: AgentId = AgentId(1);
/// Two data shards and one client port (participant 2).
const CLIENT_PORT: usize = 2;
const CLIENT: Address = Address::Client {
    port: CLIENT_PORT as u16,
    id: 7,
};

fn limits(capacity: usize) -> CoreLimits {
    CoreLimits {
        lanes: 1,
        lane: MailboxConfig {
            capacity,
            delivery_timeout_ns: u64::MAX,
            class_max_latency_ns: vec![None],
        },
        held_max: capacity,
        waiting_max: capacity,
        waiting_bytes_max: usize::MAX,
    }
}

/// `echo` on shard 0, `other` on shard 1.
fn directory() -> Arc<Directory> {
    let (directory, echo) = Directory::default().with_agent(AgentRecord {
        name: "echo".into(),
        instances_per_shard: vec![1, 0],
    });
    let (directory, other) = directory.with_agent(AgentRecord {
        name: "other".into(),
        instances_per_shard: vec![0, 1],
    });
    assert_eq!((echo, other), (ECHO, OTHER));
    Arc::new(directory)
}

fn core(capacity: usize, persistence: bool) -> ShardCore {
    let mut core = ShardCore::new(0, 2, &limits(capacity), persistence.then_some(1 << 48));
    core.set_directory(directory());
    core
}

fn request(to: AgentId, content: &[u8], sent_at_ns: u64) -> Envelope {
    Envelope {
        reply_with: 5,
        conversation_id: 9,
        ..Envelope::new(
            Performative::Request,
            CLIENT,
            Address::Agent(to),
            content.to_vec(),
            sent_at_ns,
            CLIENT_PORT as u16,
        )
    }
}

/// The agent and content of the last handler the fake agents ran.
fn last_run(agents: &FakeAgents) -> Option<(AgentId, &[u8])> {
    agents
        .runs
        .last()
        .map(|(agent, content)| (*agent, content.as_slice()))
}

fn echo_agents() -> FakeAgents {
    FakeAgents {
        behaviours: HashMap::from([(ECHO, Behaviour::Echo)]),
        ..FakeAgents::default()
    }
}

/// The single answer on the client's ring, with its content as text.
fn only_answer(io: &mut RecordingIo) -> (Performative, String) {
    let answers = io.take(CLIENT_PORT);
    assert_eq!(answers.len(), 1, "one answer: {answers:?}");
    let answer = &answers[0];
    assert_eq!(answer.receiver, CLIENT);
    assert_eq!(answer.in_reply_to, 5, "correlates with the request");
    (
        answer.performative,
        String::from_utf8_lossy(&answer.content).into_owned(),
    )
}

#[test]
fn a_request_is_handled_and_answered_with_latency_recorded() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.on_arrival(request(ECHO, b"hi", 100), 150, &mut io);
    assert!(io.rings.is_empty(), "nothing runs before the shard's turn");
    agents.handler_ns = 40;
    assert_eq!(
        core.handle_next(400, &mut agents, &mut io),
        Some(440),
        "the step ends when the handler does: the next step's start, with no clock read"
    );
    assert!(
        core.handle_next(500, &mut agents, &mut io).is_none(),
        "empty now"
    );
    assert_eq!(only_answer(&mut io), (Performative::Inform, "hi".into()));
    let metrics = core.metrics_mut();
    assert_eq!(metrics.handled, 1);
    // From a client port: cross-shard routing, 400 - 100, and counted as
    // a client's.
    assert_eq!(metrics.routing_cross_ns.len(), 1);
    assert_eq!(metrics.routing_cross_ns.max(), 300);
    assert_eq!(metrics.arrived_from_clients, 1);
    assert_eq!(metrics.processing_ns.max(), 40);
}

#[test]
fn a_message_handled_right_after_its_sender_has_its_dispatch_as_routing() {
    let mut core = core(8, false);
    let mut agents = FakeAgents {
        behaviours: HashMap::from([(ECHO, Behaviour::SendTo(vec![ECHO]))]),
        handler_ns: 40,
        ..FakeAgents::default()
    };
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(request(ECHO, b"go", 100), 150, &mut io);
    // It waited (sent at 100, started at 400): no clock read.
    agents.clock_ns = 10_000;
    let ended = core.handle_next(400, &mut agents, &mut io);
    assert_eq!(ended, Some(440));
    // Its message to ECHO was sent at 440, the step's end, which is also
    // the next step's start: the core reads the clock for it.
    agents.clock_ns = 690;
    assert_eq!(
        core.handle_next(440, &mut agents, &mut io),
        Some(730),
        "the step starts at the clock's reading"
    );
    let metrics = core.metrics_mut();
    assert_eq!(metrics.routing_local_ns.len(), 1);
    assert_eq!(
        metrics.routing_local_ns.max(),
        250,
        "the dispatch, not zero"
    );
    assert_eq!(metrics.routing_cross_ns.max(), 300, "the client's request");
}

#[test]
fn a_message_past_its_deadline_is_answered_timeout_and_never_run() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    let mut late = request(ECHO, b"late", 0);
    late.deadline_ns = 1_000;
    core.on_arrival(late, 10, &mut io);
    assert!(core.handle_next(1_001, &mut agents, &mut io).is_some());
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:timeout".into())
    );
    assert!(agents.runs.is_empty());
    assert_eq!(core.metrics_mut().timeouts, 1);
}

/// An answer from OTHER (shard 1) to ECHO's request 11, due by `deadline_ns`.
fn answer_to_echo(content: &[u8], deadline_ns: u64) -> Envelope {
    Envelope {
        in_reply_to: 11,
        deadline_ns,
        ..Envelope::new(
            Performative::Inform,
            Address::Agent(OTHER),
            Address::Agent(ECHO),
            content.to_vec(),
            0,
            1,
        )
    }
}

/// Whether none of `sent` is a `failure` (the fake echo answers answers too).
fn no_failure(sent: Vec<Envelope>) -> bool {
    sent.iter()
        .all(|envelope| envelope.performative != Performative::Failure)
}

#[test]
fn an_answer_past_its_deadline_is_still_handed_to_its_requester() {
    // The requester may hold a deferred reply open on it (a gatherer): had
    // the answer been dropped, with only its sender told, it would wait
    // for ever and so would its own asker.
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.on_arrival(answer_to_echo(b"late", 1_000), 10, &mut io);
    assert!(core.handle_next(1_001, &mut agents, &mut io).is_some());
    assert_eq!(agents.runs, vec![(ECHO, b"late".to_vec())]);
    assert!(no_failure(io.take(1)), "no timeout to its sender");
    assert_eq!(core.metrics_mut().timeouts, 0);
    // Held behind a CPU budget past its deadline: released to its handler too.
    agents.blocked_until.insert(ECHO, 5_000);
    core.on_arrival(answer_to_echo(b"held", 2_000), 1_100, &mut io);
    core.handle_next(1_100, &mut agents, &mut io);
    // Woken when the budget's window opens, not at the answer's deadline
    // (which would find it still held, and wake again at once).
    assert_eq!(core.next_wake_ns(), Some(5_000));
    core.release_held(5_000, &mut agents, &mut io);
    assert_eq!(agents.runs.last(), Some(&(ECHO, b"held".to_vec())));
    assert!(no_failure(io.take(1)));
    assert_eq!(core.metrics_mut().timeouts, 0);
}

#[test]
fn answers_are_admitted_past_a_full_mailbox_up_to_twice_its_bound() {
    let mut core = core(2, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    for content in [b"r1", b"r2"] {
        core.on_arrival(request(ECHO, content, 0), 0, &mut io);
    }
    for content in [b"a1", b"a2"] {
        core.on_arrival(answer_to_echo(content, u64::MAX), 0, &mut io);
    }
    // A request past the bound is refused; the answers were not.
    core.on_arrival(request(ECHO, b"refused", 0), 0, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:refused:queue-full".into())
    );
    assert!(
        no_failure(io.take(1)),
        "nothing refused to the answers' sender"
    );
    // Past twice the bound (an agent answering one request over and over),
    // answers are refused too.
    core.on_arrival(answer_to_echo(b"a3", u64::MAX), 0, &mut io);
    let refused = io.take(1);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].content, b"caxton:refused:queue-full".to_vec());
    while core.handle_next(10, &mut agents, &mut io).is_some() {}
    assert_eq!(agents.runs.len(), 4, "both requests and both answers ran");
}

#[test]
fn a_full_mailbox_refuses_with_failure() {
    let mut core = core(2, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    for content in [b"1", b"2", b"3"] {
        core.on_arrival(request(ECHO, content, 0), 0, &mut io);
    }
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:refused:queue-full".into())
    );
    assert_eq!(core.metrics_mut().refused, 1);
    while core.handle_next(10, &mut agents, &mut io).is_some() {}
    assert_eq!(agents.runs.len(), 2, "the two admitted ones ran");
}

#[test]
fn an_agent_over_its_cpu_shares_is_held_in_order_until_its_window() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    agents.blocked_until.insert(ECHO, 1_000);
    core.on_arrival(request(ECHO, b"first", 0), 0, &mut io);
    assert!(core.handle_next(10, &mut agents, &mut io).is_some());
    assert_eq!(
        core.next_wake_ns(),
        Some(1_000),
        "the driver sleeps until then"
    );
    // The budget is back, but the second must not overtake the held first.
    agents.blocked_until.clear();
    core.on_arrival(request(ECHO, b"second", 0), 20, &mut io);
    assert!(core.handle_next(30, &mut agents, &mut io).is_some());
    assert!(agents.runs.is_empty());
    assert_eq!(core.metrics_mut().throttled, 2);
    assert_eq!(core.release_held(999, &mut agents, &mut io), 0);
    assert_eq!(core.release_held(1_000, &mut agents, &mut io), 2);
    let ran: Vec<_> = agents
        .runs
        .iter()
        .map(|(_, content)| content.clone())
        .collect();
    assert_eq!(ran, vec![b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(core.next_wake_ns(), None);
}

/// Released together, each held handler starts when the one before it
/// ended: the host charges a handler (cpu_shares, busy time) from the start
/// it is given, so a shared start would charge each for those before it.
#[test]
fn released_handlers_start_when_the_one_before_ended() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    agents.handler_ns = 200;
    agents.blocked_until.insert(ECHO, 1_000);
    for content in [&b"a"[..], b"b", b"c"] {
        core.on_arrival(request(ECHO, content, 0), 0, &mut io);
        assert!(core.handle_next(1, &mut agents, &mut io).is_some());
    }
    agents.blocked_until.clear();
    assert_eq!(core.release_held(1_000, &mut agents, &mut io), 3);
    assert_eq!(agents.started, vec![1_000, 1_200, 1_400]);
}

/// A message held behind a handler that keeps its agent's only instance
/// is answered `timeout` at its deadline, not when the instance frees: the
/// core asks to be woken then.
#[test]
fn a_message_held_for_a_busy_instance_times_out_at_its_deadline() {
    let mut core = core(8, false);
    let mut agents = echo_agents();
    agents.slow.insert(ECHO);
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(request(ECHO, b"long", 0), 0, &mut io);
    assert!(core.handle_next(1, &mut agents, &mut io).is_some());
    let mut waiting = request(ECHO, b"waiting", 0);
    waiting.deadline_ns = 5_000;
    core.on_arrival(waiting, 2, &mut io);
    assert!(core.handle_next(3, &mut agents, &mut io).is_some());
    assert_eq!(core.queued(), 1);
    assert_eq!(core.next_wake_ns(), Some(5_000), "woken at its deadline");
    assert_eq!(core.release_held(4_999, &mut agents, &mut io), 0);
    assert!(io.rings.is_empty(), "not answered before its deadline");
    core.release_held(5_001, &mut agents, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:timeout".into())
    );
    assert_eq!(core.queued(), 0);
    assert_eq!(core.next_wake_ns(), None);
    assert_eq!(core.metrics_mut().timeouts, 1);
}

/// Besides their count, the content bytes waiting on a shard are bounded
/// (`messaging.queue_bytes`): a message that would pass it is refused, and
/// room comes back as messages are handled, held ones included.
#[test]
fn the_bytes_waiting_are_bounded_as_well_as_the_messages() {
    let mut core = ShardCore::new(
        0,
        2,
        &CoreLimits {
            waiting_bytes_max: 10,
            ..limits(100)
        },
        None,
    );
    core.set_directory(directory());
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.on_arrival(request(ECHO, b"123456", 0), 0, &mut io);
    core.on_arrival(request(ECHO, b"1234", 0), 0, &mut io);
    assert!(io.rings.is_empty(), "ten bytes fit");
    core.on_arrival(request(ECHO, b"1", 0), 0, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:refused:queue-full".into())
    );
    assert_eq!(core.metrics_mut().refused, 1);
    // Handled, the first frees its six bytes.
    assert!(core.handle_next(1, &mut agents, &mut io).is_some());
    io.take(CLIENT_PORT);
    core.on_arrival(request(ECHO, b"abcdef", 0), 2, &mut io);
    assert!(io.rings.is_empty(), "room again");
    // Held for the CPU budget, messages still count until they run.
    agents.blocked_until.insert(ECHO, 1_000);
    while core.handle_next(3, &mut agents, &mut io).is_some() {}
    assert_eq!(core.queued(), 2);
    core.on_arrival(request(ECHO, b"x", 0), 4, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:refused:queue-full".into())
    );
    agents.blocked_until.clear();
    assert_eq!(core.release_held(1_000, &mut agents, &mut io), 2);
    io.take(CLIENT_PORT);
    core.on_arrival(request(ECHO, b"0123456789", 0), 1_001, &mut io);
    assert!(
        io.rings.is_empty(),
        "everything handled: all ten bytes free"
    );
}

/// A message due at its window's end but behind another of its agent's
/// that is held again waits for what that one waits for: the core does
/// not ask to be woken at a time already past (the shard would spin).
#[test]
fn a_message_behind_one_held_again_waits_for_its_time_not_a_past_one() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    agents.blocked_until.insert(ECHO, 1_000);
    for content in [&b"first"[..], b"second"] {
        core.on_arrival(request(ECHO, content, 0), 0, &mut io);
        assert!(core.handle_next(1, &mut agents, &mut io).is_some());
    }
    // At the window's end the agent is over its share again, to 2,000.
    agents.blocked_until.insert(ECHO, 2_000);
    assert_eq!(core.release_held(1_000, &mut agents, &mut io), 1);
    assert!(agents.runs.is_empty(), "held again, both");
    assert_eq!(core.queued(), 2);
    assert_eq!(core.next_wake_ns(), Some(2_000), "not 1,000, already past");
}

/// A stored message was promised its handling: past the mailbox's bounds it
/// is admitted all the same, never failed and finished unhandled.
#[test]
fn a_stored_message_is_admitted_past_the_mailbox_bounds() {
    let mut core = core(1, true);
    let mut io = RecordingIo::new(3, 0);
    for id in [1, 2, 3] {
        core.redeliver(request(ECHO, b"stored", 0), id, 0, &mut io);
    }
    assert_eq!(core.queued(), 3);
    assert!(
        io.writes.is_empty(),
        "none finished unhandled: {:?}",
        io.writes
    );
    assert_eq!(core.metrics_mut().refused, 0);
}

#[test]
fn too_many_held_messages_are_refused() {
    let mut core = core(2, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    agents.blocked_until.insert(ECHO, 1_000);
    for round in 0..3u64 {
        core.on_arrival(request(ECHO, b"x", 0), round, &mut io);
        assert!(core.handle_next(round, &mut agents, &mut io).is_some());
    }
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:refused:cpu-budget".into())
    );
    assert_eq!(core.queued(), 2);
}

#[test]
fn held_messages_past_their_deadline_time_out_when_released() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    agents.blocked_until.insert(ECHO, 1_000);
    let mut message = request(ECHO, b"x", 0);
    message.deadline_ns = 500;
    core.on_arrival(message, 0, &mut io);
    core.handle_next(1, &mut agents, &mut io);
    core.release_held(1_000, &mut agents, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:timeout".into())
    );
    assert!(agents.runs.is_empty());
}

#[test]
fn faults_become_failure_answers_and_are_counted() {
    let cases = [
        (Outcome::AgentFailed(3), "caxton:agent-failed:3"),
        (
            Outcome::Trapped("unreachable".into()),
            "caxton:trap:unreachable",
        ),
        (Outcome::TimedOut, "caxton:execution-time"),
        (Outcome::MemoryExceeded, "caxton:memory-limit"),
    ];
    for (outcome, reason) in cases {
        let mut core = core(8, false);
        let mut agents = FakeAgents::default();
        agents
            .behaviours
            .insert(ECHO, Behaviour::End(outcome.clone()));
        let mut io = RecordingIo::new(3, 0);
        core.on_arrival(request(ECHO, b"x", 0), 0, &mut io);
        core.handle_next(1, &mut agents, &mut io);
        assert_eq!(only_answer(&mut io), (Performative::Failure, reason.into()));
        let metrics = core.metrics_mut();
        assert_eq!(metrics.handled, 1);
        assert_eq!(
            (metrics.faults, metrics.agent_failures),
            if matches!(outcome, Outcome::AgentFailed(_)) {
                (0, 1)
            } else {
                (1, 0)
            }
        );
    }
}

/// A handler that answered its message and then returned a failure code:
/// its answer stands, alone (a client takes the first answer, and a
/// failure sent first would hide it); the failure is still counted.
#[test]
fn a_failure_code_after_an_answer_leaves_the_answer_alone() {
    let mut core = core(8, false);
    let mut agents = FakeAgents::default();
    agents
        .behaviours
        .insert(ECHO, Behaviour::EchoThen(Outcome::AgentFailed(150)));
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(request(ECHO, b"x", 0), 0, &mut io);
    core.handle_next(1, &mut agents, &mut io);
    assert_eq!(only_answer(&mut io), (Performative::Inform, "x".into()));
    assert_eq!(core.metrics_mut().agent_failures, 1);
    // So with a message that asked for no token: the reply quotes none.
    let mut untokened = request(ECHO, b"y", 0);
    untokened.reply_with = 0;
    core.on_arrival(untokened, 0, &mut io);
    core.handle_next(2, &mut agents, &mut io);
    let answers = io.take(CLIENT_PORT);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        (answers[0].performative, answers[0].content.as_slice()),
        (Performative::Inform, &b"y"[..])
    );
    // A message passed on is answered by its last hop, not failed here.
    agents.behaviours.insert(
        ECHO,
        Behaviour::ForwardThen(OTHER, Outcome::AgentFailed(150)),
    );
    core.on_arrival(request(ECHO, b"z", 0), 0, &mut io);
    core.handle_next(3, &mut agents, &mut io);
    assert!(
        io.rings
            .values()
            .flatten()
            .all(|envelope| envelope.performative != Performative::Failure),
        "no failure for a forwarded message"
    );
    assert_eq!(core.metrics_mut().agent_failures, 3);
}

#[test]
fn unknown_agents_are_answered_and_failures_are_never_answered() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.dispatch(request(AgentId(42), b"x", 0), 0, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:unknown-agent".into())
    );
    let mut failure = request(AgentId(42), b"x", 0);
    failure.performative = Performative::Failure;
    core.dispatch(failure, 0, &mut io);
    assert!(io.rings.is_empty(), "no failure about a failure");
    // A message for an agent that left this shard after it was queued.
    core.on_arrival(request(OTHER, b"x", 0), 0, &mut io);
    core.handle_next(1, &mut agents, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:unknown-agent".into())
    );
    // 42 twice (the request and the failure about it), then `other`.
    assert_eq!(core.metrics_mut().unknown_receiver, 3);
    assert_eq!(core.metrics_mut().undeliverable, 1);
    // Answers to nobody (redelivered messages' senders) are dropped and counted.
    core.dispatch(
        Envelope::new(Performative::Inform, CLIENT, NOBODY, Vec::new(), 0, 0),
        0,
        &mut io,
    );
    assert_eq!(core.metrics_mut().undeliverable, 2);
}

#[test]
fn sends_route_to_other_shards_and_full_rings_refuse_the_sender() {
    let mut core = core(8, false);
    let mut agents = FakeAgents::default();
    agents
        .behaviours
        .insert(ECHO, Behaviour::SendTo(vec![OTHER, OTHER]));
    let mut io = RecordingIo::new(3, 0);
    io.ring_room.insert(1, 1);
    core.on_arrival(request(ECHO, b"x", 0), 0, &mut io);
    core.handle_next(1, &mut agents, &mut io);
    let forwarded = io.take(1);
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].receiver, Address::Agent(OTHER));
    assert_eq!(
        forwarded[0].sender,
        Address::Instance(InstanceId {
            agent: ECHO,
            shard: 0,
            slot: 0
        })
    );
    assert_eq!(forwarded[0].priority, PriorityClass(0));
    // The second did not fit: its sender, the echo instance on this shard,
    // is told so in its mailbox.
    assert_eq!(core.metrics_mut().refused, 1);
    assert_eq!(core.queued(), 1);
    assert!(core.handle_next(2, &mut agents, &mut io).is_some());
    assert_eq!(
        last_run(&agents),
        Some((ECHO, &b"caxton:refused:ring-full"[..]))
    );
}

#[test]
fn answers_for_a_client_that_reads_late_wait_in_order_and_hold_its_ring() {
    let mut core = core(2, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    io.ring_room.insert(CLIENT_PORT, 1);
    for content in [b"1", b"2"] {
        core.on_arrival(request(ECHO, content, 0), 0, &mut io);
    }
    while core.handle_next(10, &mut agents, &mut io).is_some() {}
    // The first answer fit; the second waits for the client, not refused.
    assert_eq!(io.rings[&CLIENT_PORT].len(), 1);
    assert_eq!(core.waiting_for_room(), 1);
    assert!(
        core.is_waiting_for(CLIENT_PORT),
        "the client is not read from"
    );
    assert!(!core.is_waiting_for(1), "another shard still is");
    assert_eq!(core.metrics_mut().refused, 0);
    assert_eq!(core.flush_waiting(15, &mut io), 0, "its ring is still full");
    for content in [b"3", b"4"] {
        core.on_arrival(request(ECHO, content, 0), 20, &mut io);
    }
    // Two turns, not "until empty": echo answers the refusal it is told
    // of, and that answer is refused in turn while the client reads nothing.
    for now in [30, 31] {
        assert!(core.handle_next(now, &mut agents, &mut io).is_some());
    }
    // "3" waits behind "2"; "4" is one more than the mailbox's size: refused,
    // and its answerer (echo, here) is told.
    assert_eq!(core.waiting_for_room(), 2);
    let metrics = core.metrics_mut();
    assert_eq!((metrics.refused, metrics.waited_for_clients), (1, 2));
    assert!(core.handle_next(40, &mut agents, &mut io).is_some());
    assert_eq!(
        agents.runs.last().map(|(_, content)| content.as_slice()),
        Some(&b"caxton:refused:ring-full"[..])
    );
    // The client reads: what waited goes, in order, and it is read again.
    io.ring_room.insert(CLIENT_PORT, 8);
    assert_eq!(core.flush_waiting(50, &mut io), 2);
    let answers: Vec<Vec<u8>> = io
        .take(CLIENT_PORT)
        .into_iter()
        .map(|answer| answer.content)
        .collect();
    assert_eq!(answers, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    assert_eq!(core.waiting_for_room(), 0);
    assert!(!core.is_waiting_for(CLIENT_PORT));
}

#[test]
fn answers_for_a_shard_whose_ring_is_full_wait_in_order_and_it_is_still_read() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    let other_instance = Address::Instance(InstanceId {
        agent: OTHER,
        shard: 1,
        slot: 0,
    });
    io.ring_room.insert(1, 1);
    for content in [b"1", b"2", b"3"] {
        let from_other_shard = Envelope {
            sender: other_instance,
            from_participant: 1,
            ..request(ECHO, content, 0)
        };
        core.on_arrival(from_other_shard, 0, &mut io);
    }
    while core.handle_next(10, &mut agents, &mut io).is_some() {}
    // The first answer fit; the others wait for room, not refused (their
    // requester would wait for ever) and not refused back to echo.
    assert_eq!(io.rings[&1].len(), 1);
    assert_eq!(core.waiting_for_room(), 2);
    let metrics = core.metrics_mut();
    assert_eq!(
        (
            metrics.refused,
            metrics.answers_waited,
            metrics.waited_for_clients
        ),
        (0, 2, 0)
    );
    // No back-pressure: that shard may itself wait for this one's ring.
    assert!(
        !core.is_waiting_for(1),
        "the other shard is still read from"
    );
    // A request for that shard while answers wait goes behind them.
    let echo_instance = Address::Instance(InstanceId {
        agent: ECHO,
        shard: 0,
        slot: 0,
    });
    core.dispatch(
        Envelope::new(
            Performative::Request,
            echo_instance,
            Address::Agent(OTHER),
            b"4".to_vec(),
            20,
            0,
        ),
        20,
        &mut io,
    );
    assert_eq!(core.waiting_for_room(), 3);
    assert_eq!(core.flush_waiting(25, &mut io), 0, "still full");
    io.ring_room.insert(1, 8);
    assert_eq!(core.flush_waiting(30, &mut io), 3);
    let arrived: Vec<Vec<u8>> = io
        .take(1)
        .into_iter()
        .map(|envelope| envelope.content)
        .collect();
    let in_order: [&[u8]; 4] = [b"1", b"2", b"3", b"4"];
    assert_eq!(arrived, in_order);
    assert_eq!(core.waiting_for_room(), 0);
    // With nothing waiting, a request that finds the ring full is refused
    // as before: back-pressure on new work, not on answers.
    io.ring_room.insert(1, 0);
    core.dispatch(
        Envelope::new(
            Performative::Request,
            echo_instance,
            Address::Agent(OTHER),
            b"5".to_vec(),
            40,
            0,
        ),
        40,
        &mut io,
    );
    assert_eq!(core.waiting_for_room(), 0);
    assert_eq!(core.metrics_mut().refused, 1);
}

/// A core whose messages (and backlogs) wait at most 1 µs.
fn impatient_core(capacity: usize) -> ShardCore {
    let mut core = ShardCore::new(
        0,
        2,
        &CoreLimits {
            lane: MailboxConfig {
                delivery_timeout_ns: 1_000,
                ..limits(capacity).lane
            },
            ..limits(capacity)
        },
        None,
    );
    core.set_directory(directory());
    core
}

#[test]
fn a_shard_backlog_that_never_moves_refuses_what_waited_behind_its_answers() {
    let mut core = impatient_core(8);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    io.ring_room.insert(1, 0);
    let from_other_shard = Envelope {
        sender: Address::Instance(InstanceId {
            agent: OTHER,
            shard: 1,
            slot: 0,
        }),
        from_participant: 1,
        ..request(ECHO, b"1", 0)
    };
    core.on_arrival(from_other_shard, 0, &mut io);
    while core.handle_next(100, &mut agents, &mut io).is_some() {}
    let echo_instance = Address::Instance(InstanceId {
        agent: ECHO,
        shard: 0,
        slot: 0,
    });
    let behind = Envelope {
        reply_with: 8,
        ..Envelope::new(
            Performative::Request,
            echo_instance,
            Address::Agent(OTHER),
            b"2".to_vec(),
            100,
            0,
        )
    };
    core.dispatch(behind, 100, &mut io);
    assert_eq!(
        core.waiting_for_room(),
        2,
        "the answer, and the request behind it"
    );
    assert_eq!(core.flush_waiting(1_099, &mut io), 0);
    assert_eq!(core.waiting_for_room(), 2, "still within its patience");
    assert_eq!(core.flush_waiting(1_100, &mut io), 0);
    assert_eq!(core.waiting_for_room(), 0, "given up");
    // The answer is counted lost; the request's sender, echo, is told.
    let metrics = core.metrics_mut();
    assert_eq!((metrics.undeliverable, metrics.refused), (1, 1));
    assert!(core.handle_next(1_200, &mut agents, &mut io).is_some());
    assert_eq!(
        last_run(&agents),
        Some((ECHO, &b"caxton:refused:ring-full"[..]))
    );
}

#[test]
fn a_client_backlog_that_never_moves_is_given_up_after_the_delivery_timeout() {
    let mut core = impatient_core(4);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    io.ring_room.insert(CLIENT_PORT, 0);
    core.on_arrival(request(ECHO, b"1", 0), 0, &mut io);
    core.on_arrival(request(ECHO, b"2", 0), 0, &mut io);
    while core.handle_next(100, &mut agents, &mut io).is_some() {}
    assert_eq!(core.waiting_for_room(), 2);
    assert_eq!(core.flush_waiting(1_099, &mut io), 0);
    assert_eq!(core.waiting_for_room(), 2, "still within its patience");
    assert_eq!(core.flush_waiting(1_100, &mut io), 0);
    assert_eq!(core.waiting_for_room(), 0, "given up");
    assert!(
        !core.is_waiting_for(CLIENT_PORT),
        "and the client is read again"
    );
    assert_eq!(core.metrics_mut().undeliverable, 2);
}

#[test]
fn a_stopping_shard_counts_what_still_waits_for_a_client_undeliverable() {
    let mut core = core(4, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    io.ring_room.insert(CLIENT_PORT, 0);
    core.on_arrival(request(ECHO, b"1", 0), 0, &mut io);
    while core.handle_next(10, &mut agents, &mut io).is_some() {}
    assert_eq!(core.waiting_for_room(), 1);
    core.shut_down(Vec::new(), 20, &mut io);
    assert_eq!(core.waiting_for_room(), 0);
    assert_eq!(core.metrics_mut().undeliverable, 1);
}

#[test]
fn abandoned_deferred_replies_are_answered() {
    let mut core = core(8, false);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    agents.abandoned.push(OutboundMessage {
        receiver: CLIENT,
        performative: Performative::Failure,
        conversation_id: 9,
        reply_with: 0,
        in_reply_to: 5,
        on_behalf_of: Some(Address::Agent(ECHO)),
        answers: true,
        content: b"caxton:instance-recycled".to_vec(),
    });
    core.answer_abandoned(0, &mut agents, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:instance-recycled".into())
    );
}

fn durable_request(to: AgentId) -> Envelope {
    Envelope {
        durability: Durability::Requested,
        ..request(to, b"keep", 0)
    }
}

/// The id of the only `Persist` write, and clear the writes.
fn persisted_id(io: &mut RecordingIo) -> u64 {
    let writes = std::mem::take(&mut io.writes);
    match writes.as_slice() {
        [Write::Persist { id, receiver, .. }] => {
            assert_eq!(receiver, "echo");
            *id
        }
        other => panic!("expected one persist write, got {other:?}"),
    }
}

#[test]
fn a_durable_send_is_acknowledged_only_once_stored() {
    let mut core = core(8, true);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.on_arrival(durable_request(ECHO), 0, &mut io);
    let id = persisted_id(&mut io);
    assert!(
        io.rings.is_empty(),
        "no acknowledgement before it is stored"
    );
    assert!(
        core.handle_next(1, &mut agents, &mut io).is_none(),
        "not deliverable yet"
    );
    core.on_storage_event(StorageEvent::Durable(vec![id]), 2, &mut io);
    let notices = io.take(CLIENT_PORT);
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].performative, Performative::Agree);
    assert_eq!(notices[0].durability, Durability::Notice(id));
    assert!(core.handle_next(3, &mut agents, &mut io).is_some());
    // Handled with no children: finished.
    assert!(matches!(io.writes.as_slice(), [Write::Done { id: done }] if *done == id));
    assert_eq!(core.metrics_mut().persisted, 1);
}

#[test]
fn durable_sends_past_a_mailbox_of_owed_messages_are_refused_before_they_are_stored() {
    let mut core = core(2, true);
    let mut io = RecordingIo::new(3, 0);
    // Two stored and owed, their agent not handling them yet.
    for _ in 0..2 {
        core.on_arrival(durable_request(ECHO), 0, &mut io);
        let id = persisted_id(&mut io);
        core.on_storage_event(StorageEvent::Durable(vec![id]), 1, &mut io);
    }
    let agreed = io.take(CLIENT_PORT);
    assert_eq!(agreed.len(), 2);
    // A third is not stored (it would be owed for ever behind them): its
    // sender hears so, as a refusal, not an acceptance.
    core.on_arrival(durable_request(ECHO), 2, &mut io);
    assert!(io.writes.is_empty(), "not stored");
    let refused = io.take(CLIENT_PORT);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].performative, Performative::Refuse);
    assert!(
        String::from_utf8_lossy(&refused[0].content).contains("backlog-full"),
        "{:?}",
        String::from_utf8_lossy(&refused[0].content)
    );
    // Once handled, there is room again.
    let mut agents = echo_agents();
    while core.handle_next(3, &mut agents, &mut io).is_some() {}
    io.writes.clear();
    core.on_arrival(durable_request(ECHO), 4, &mut io);
    persisted_id(&mut io);
}

#[test]
fn a_parent_is_finished_only_when_every_child_is_stored() {
    let mut core = core(8, true);
    let mut agents = FakeAgents::default();
    agents
        .behaviours
        .insert(ECHO, Behaviour::SendTo(vec![OTHER, OTHER]));
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(durable_request(ECHO), 0, &mut io);
    let id = persisted_id(&mut io);
    core.on_storage_event(StorageEvent::Durable(vec![id]), 1, &mut io);
    core.handle_next(2, &mut agents, &mut io);
    let children = io.take(1);
    assert_eq!(children.len(), 2);
    assert!(children
        .iter()
        .all(|child| child.durability == Durability::Chained(id)));
    assert!(io.writes.is_empty(), "the parent waits for its children");
    core.on_arrival(Envelope::chain_ack(id, 3, 1), 3, &mut io);
    assert!(io.writes.is_empty(), "one child is still unstored");
    core.on_arrival(Envelope::chain_ack(id, 4, 1), 4, &mut io);
    assert!(matches!(io.writes.as_slice(), [Write::Done { id: done }] if *done == id));
}

#[test]
fn a_chained_hop_is_stored_here_and_acknowledges_its_parent_on_its_shard() {
    let mut core = core(8, true);
    let mut io = RecordingIo::new(3, 0);
    let parent = (2u64 << 48) + 5; // stored by shard 1
    let hop = Envelope {
        durability: Durability::Chained(parent),
        ..request(ECHO, b"hop", 0)
    };
    core.on_arrival(hop, 0, &mut io);
    let id = persisted_id(&mut io);
    core.on_storage_event(StorageEvent::Durable(vec![id]), 1, &mut io);
    let acks = io.take(1);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].durability, Durability::ChainAck(parent));
    assert!(
        io.take(CLIENT_PORT).is_empty(),
        "a hop is not acknowledged to anyone"
    );
    assert_eq!(core.queued(), 1, "and it is delivered here");
}

#[test]
fn a_send_that_cannot_be_stored_is_refused_with_the_reason() {
    let mut core = core(8, true);
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(durable_request(ECHO), 0, &mut io);
    let id = persisted_id(&mut io);
    core.on_storage_event(
        StorageEvent::Failed {
            ids: vec![id],
            reason: "disk full".into(),
        },
        1,
        &mut io,
    );
    let (performative, reason) = {
        let notices = io.take(CLIENT_PORT);
        assert_eq!(notices.len(), 1);
        (
            notices[0].performative,
            String::from_utf8_lossy(&notices[0].content).into_owned(),
        )
    };
    assert_eq!(performative, Performative::Refuse);
    assert_eq!(reason, "caxton:storage:disk full");
    assert_eq!(core.queued(), 0, "never delivered");
    io.writer = Err(WriteRefused::Busy);
    core.on_arrival(durable_request(ECHO), 2, &mut io);
    let notices = io.take(CLIENT_PORT);
    assert_eq!(notices[0].content, b"caxton:storage:writer-busy");
    assert_eq!(core.metrics_mut().storage_failures, 2);
}

#[test]
fn stored_messages_wait_for_the_directory_when_asked_and_run_in_order_once_it_settles() {
    let mut core = core(2, true);
    core.await_directory();
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    let mut ids = Vec::new();
    for content in [&b"first"[..], b"second"] {
        core.on_arrival(
            Envelope {
                durability: Durability::Requested,
                ..request(ECHO, content, 0)
            },
            0,
            &mut io,
        );
        ids.push(persisted_id(&mut io));
    }
    core.on_storage_event(StorageEvent::Durable(ids.clone()), 1, &mut io);
    // Stored and acknowledged at once...
    let notices = io.take(CLIENT_PORT);
    assert_eq!(notices.len(), 2);
    assert!(notices
        .iter()
        .all(|notice| notice.performative == Performative::Agree));
    // ...but no handler runs before the directory is in place.
    assert!(core.handle_next(2, &mut agents, &mut io).is_none());
    assert!(io.writes.is_empty(), "nothing finished");
    // Waiting, the backlog is bounded like a mailbox: refused before stored.
    core.on_arrival(durable_request(ECHO), 3, &mut io);
    let refused = io.take(CLIENT_PORT);
    assert_eq!(refused[0].performative, Performative::Refuse);
    assert_eq!(refused[0].content, b"caxton:storage:backlog-full");
    assert!(io.writes.is_empty(), "the refused send was never stored");

    assert_eq!(core.directory_settled(4, &mut io), 2);
    let mut answers = Vec::new();
    while core.handle_next(5, &mut agents, &mut io).is_some() {
        answers.extend(
            io.take(CLIENT_PORT)
                .into_iter()
                .map(|answer| answer.content),
        );
    }
    assert_eq!(answers, vec![b"first".to_vec(), b"second".to_vec()]);
    let finished: Vec<u64> = std::mem::take(&mut io.writes)
        .into_iter()
        .filter_map(|write| match write {
            Write::Done { id } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ids, "each finished once handled");
    // Settled, stored messages run as they come.
    core.on_arrival(durable_request(ECHO), 6, &mut io);
    let id = persisted_id(&mut io);
    core.on_storage_event(StorageEvent::Durable(vec![id]), 7, &mut io);
    assert!(core.handle_next(8, &mut agents, &mut io).is_some());
}

/// A message delivered again after a restart waits in the mailbox past
/// `delivery_timeout` (a slow agent ahead of it) and is still handled.
#[test]
fn a_redelivered_message_outwaits_the_delivery_timeout() {
    let mut core = ShardCore::new(
        0,
        2,
        &CoreLimits {
            lane: MailboxConfig {
                delivery_timeout_ns: 1_000,
                ..limits(8).lane
            },
            ..limits(8)
        },
        Some(1 << 48),
    );
    core.set_directory(directory());
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.redeliver(request(ECHO, b"again", 0), 1 << 48, 0, &mut io);
    let handled = core.handle_next(1_000_000, &mut agents, &mut io);
    assert!(handled.is_some());
    assert_eq!(core.metrics_mut().timeouts, 0, "not answered timeout");
    assert_eq!(last_run(&agents), Some((ECHO, &b"again"[..])));
}

/// Neither the wait for the directory nor one in the mailbox ends a stored
/// message's life: once acknowledged it is owed its handling.
#[test]
fn a_stored_message_is_handled_however_long_past_its_deadline() {
    let mut core = core(8, true);
    core.await_directory();
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.on_arrival(
        Envelope {
            deadline_ns: 1_000,
            ..durable_request(ECHO)
        },
        0,
        &mut io,
    );
    let id = persisted_id(&mut io);
    core.on_storage_event(StorageEvent::Durable(vec![id]), 100, &mut io);
    let _agree = io.take(CLIENT_PORT);
    // It waited 10 µs for the directory, ten times its own deadline, and
    // then 5 ms in the mailbox.
    core.directory_settled(10_100, &mut io);
    assert!(core.handle_next(5_000_000, &mut agents, &mut io).is_some());
    let answers = io.take(CLIENT_PORT);
    assert_eq!(
        answers[0].performative,
        Performative::Inform,
        "handled, not timed out"
    );
}

#[test]
fn without_persistence_nothing_waits_for_the_directory() {
    let mut core = core(8, false);
    core.await_directory();
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.on_arrival(request(ECHO, b"now", 0), 0, &mut io);
    assert!(core.handle_next(1, &mut agents, &mut io).is_some());
    assert_eq!(io.take(CLIENT_PORT)[0].content, b"now");
}

#[test]
fn without_persistence_a_durable_send_is_refused() {
    let mut core = core(8, false);
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(durable_request(ECHO), 0, &mut io);
    let notices = io.take(CLIENT_PORT);
    assert_eq!(notices[0].performative, Performative::Refuse);
    assert!(String::from_utf8_lossy(&notices[0].content).contains("persistence-off"));
}

#[test]
fn shutting_down_answers_everything_queued_and_refuses_what_was_not_stored() {
    let mut core = core(8, true);
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(request(ECHO, b"queued", 0), 0, &mut io);
    core.on_arrival(durable_request(ECHO), 0, &mut io);
    let _ = persisted_id(&mut io);
    let for_client = request(ECHO, b"in a ring", 0).reply(
        Address::Agent(ECHO),
        Performative::Inform,
        b"passing".to_vec(),
        0,
    );
    core.shut_down(vec![for_client], 1, &mut io);
    let mut answers: Vec<(Performative, Vec<u8>)> = io
        .take(CLIENT_PORT)
        .into_iter()
        .map(|answer| (answer.performative, answer.content))
        .collect();
    answers.sort_by_key(|(performative, content)| (performative.code(), content.clone()));
    assert_eq!(
        answers,
        vec![
            (Performative::Inform, b"passing".to_vec()),
            (Performative::Refuse, b"caxton:shutting-down".to_vec()),
            (Performative::Failure, b"caxton:shutting-down".to_vec()),
        ]
    );
    assert_eq!(core.queued(), 0);
}

#[test]
fn redelivered_messages_run_and_finish_and_their_answers_go_nowhere() {
    let mut core = core(8, true);
    let (mut agents, mut io) = (echo_agents(), RecordingIo::new(3, 0));
    core.redeliver(request(ECHO, b"again", 0), 77, 10, &mut io);
    core.handle_next(11, &mut agents, &mut io);
    assert_eq!(agents.runs.len(), 1);
    assert!(io.rings.is_empty(), "the answer is to nobody");
    assert!(matches!(io.writes.as_slice(), [Write::Done { id: 77 }]));
    let metrics = core.metrics_mut();
    assert_eq!((metrics.redelivered, metrics.undeliverable), (1, 1));
}

#[test]
fn startup_times_reach_the_histogram() {
    let mut core = core(8, false);
    let mut agents = echo_agents();
    agents.startups = vec![5_000, 7_000];
    core.record_startups(&mut agents);
    assert_eq!(core.metrics_mut().startup_ns.len(), 2);
}

#[test]
fn a_suspended_handler_takes_no_second_message_and_its_neighbours_keep_running() {
    let mut core = core(8, false);
    let mut agents = echo_agents();
    agents.behaviours.insert(OTHER, Behaviour::Echo);
    agents.slow.insert(ECHO);
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(request(ECHO, b"long", 0), 0, &mut io);
    assert!(core.handle_next(10, &mut agents, &mut io).is_some());
    assert_eq!(core.suspended(), 1);
    assert!(io.rings.is_empty(), "not answered while suspended");
    agents.slow.clear();
    // The next message for the busy agent waits; a neighbour's runs now.
    core.on_arrival(request(ECHO, b"next", 0), 20, &mut io);
    assert!(core.handle_next(30, &mut agents, &mut io).is_some());
    assert_eq!(agents.runs.len(), 1, "the busy instance took nothing");
    assert_eq!(core.queued(), 1);
    assert_eq!(
        core.next_wake_ns(),
        None,
        "woken by the handler's end, not a timer"
    );
    // (A neighbour on this shard: `other` is hosted elsewhere in the
    // directory, so address its instance here directly.)
    let neighbour = Envelope {
        receiver: Address::Instance(InstanceId {
            agent: OTHER,
            shard: 0,
            slot: 0,
        }),
        ..request(OTHER, b"neighbour", 0)
    };
    core.on_arrival(neighbour, 40, &mut io);
    assert!(core.handle_next(50, &mut agents, &mut io).is_some());
    assert_eq!(
        agents.runs.last().map(|run| run.1.as_slice()),
        Some(&b"neighbour"[..])
    );
    io.take(CLIENT_PORT);
    // The long handler ends: answered, and the waiting message runs next.
    let handled = agents.suspended.pop().expect("suspended");
    core.on_handler_finished(handled, 1_000, &mut agents, &mut io);
    assert_eq!(only_answer(&mut io), (Performative::Inform, "long".into()));
    assert_eq!(core.release_held(1_000, &mut agents, &mut io), 1);
    assert_eq!(only_answer(&mut io), (Performative::Inform, "next".into()));
    let metrics = core.metrics_mut();
    assert_eq!((metrics.suspended, metrics.handled), (1, 3));
}

#[test]
fn undeploying_or_stopping_answers_suspended_handlers_senders() {
    let mut core = core(8, true);
    let mut agents = echo_agents();
    agents.slow.insert(ECHO);
    let mut io = RecordingIo::new(3, 0);
    core.on_arrival(request(ECHO, b"long", 0), 0, &mut io);
    core.handle_next(1, &mut agents, &mut io);
    core.on_arrival(request(ECHO, b"waiting", 0), 2, &mut io);
    core.handle_next(3, &mut agents, &mut io);
    agents.behaviours.clear();
    agents.suspended.clear();
    core.on_agent_undeployed(ECHO, 4, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:undeployed".into())
    );
    core.release_held(4, &mut agents, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:unknown-agent".into())
    );

    let mut core = self::core(8, false);
    let mut agents = echo_agents();
    agents.slow.insert(ECHO);
    core.on_arrival(request(ECHO, b"long", 0), 0, &mut io);
    core.handle_next(1, &mut agents, &mut io);
    core.shut_down(Vec::new(), 2, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:shutting-down".into())
    );
    assert_eq!(core.suspended(), 0);
}

/// Lanes with messages take turns, one message each; a lane that empties
/// leaves the turn order and rejoins at the back when a message arrives.
#[test]
fn lanes_with_messages_take_turns_and_empty_ones_take_none() {
    let two_lanes = CoreLimits {
        lanes: 2,
        ..limits(8)
    };
    let mut core = ShardCore::new(0, 2, &two_lanes, None);
    core.set_directory(directory());
    let mut agents = FakeAgents {
        behaviours: HashMap::from([(ECHO, Behaviour::Echo), (OTHER, Behaviour::Echo)]),
        ..FakeAgents::default()
    };
    let mut io = RecordingIo::new(3, 0);
    // ECHO (id 0) queues in lane 0, OTHER (id 1) in lane 1.
    for content in [b"a1", b"a2", b"a3"] {
        core.on_arrival(request(ECHO, content, 0), 0, &mut io);
    }
    core.on_arrival(request(OTHER, b"b1", 0), 0, &mut io);
    while core.handle_next(10, &mut agents, &mut io).is_some() {}
    // Lane 1 is empty now; it rejoins behind lane 0, which fills first here.
    core.on_arrival(request(OTHER, b"b2", 0), 20, &mut io);
    core.on_arrival(request(ECHO, b"a4", 0), 20, &mut io);
    core.on_arrival(request(OTHER, b"b3", 0), 20, &mut io);
    while core.handle_next(30, &mut agents, &mut io).is_some() {}
    let order: Vec<String> = agents
        .runs
        .iter()
        .map(|(_, content)| String::from_utf8_lossy(content).into_owned())
        .collect();
    assert_eq!(order, ["a1", "b1", "a2", "a3", "b2", "a4", "b3"]);
    assert_eq!(core.queued(), 0);
}

/// Two lanes with room for three messages between them: one agent may use
/// all of it; an agent on the other lane then gets room by pushing out the
/// busy one's newest, and a message for the agent holding the most is
/// refused outright.
#[test]
fn mailbox_lanes_share_the_shards_capacity() {
    let mut core = ShardCore::new(
        0,
        2,
        &CoreLimits {
            lanes: 2,
            ..limits(3)
        },
        None,
    );
    let (directory, first) = Directory::default().with_agent(AgentRecord {
        name: "first".into(),
        instances_per_shard: vec![1, 0],
    });
    let (directory, second) = directory.with_agent(AgentRecord {
        name: "second".into(),
        instances_per_shard: vec![1, 0],
    });
    assert_eq!((first.0 % 2, second.0 % 2), (0, 1), "on different lanes");
    core.set_directory(Arc::new(directory));
    let mut io = RecordingIo::new(3, 0);
    for content in [b"1", b"2", b"3"] {
        core.on_arrival(request(first, content, 0), 0, &mut io);
    }
    assert!(
        io.take(CLIENT_PORT).is_empty(),
        "one agent fills the shard's capacity, not its lane's share of it"
    );
    core.on_arrival(request(second, b"4", 0), 0, &mut io);
    core.on_arrival(request(first, b"5", 0), 0, &mut io);
    let refused: Vec<(Performative, Vec<u8>)> = io
        .take(CLIENT_PORT)
        .into_iter()
        .map(|answer| (answer.performative, answer.content))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(
        |(performative, content)| *performative == Performative::Failure
            && content == b"caxton:refused:queue-full"
    ));
    let metrics = core.metrics_mut();
    assert_eq!((metrics.refused, metrics.pushed_out), (2, 1));
    assert_eq!(core.queued(), 3);
    let mut agents = FakeAgents {
        behaviours: HashMap::from([(first, Behaviour::Echo), (second, Behaviour::Echo)]),
        ..FakeAgents::default()
    };
    while core.handle_next(1, &mut agents, &mut io).is_some() {}
    let ran: Vec<&[u8]> = agents
        .runs
        .iter()
        .map(|(_, content)| content.as_slice())
        .collect();
    assert_eq!(
        ran,
        [b"1", b"4", b"2"],
        "first's newest (3) was pushed out, 5 refused"
    );
}

/// Push-out keeps what a flooded agent may take from its neighbours fair,
/// and never takes a more urgent message for a less urgent arrival.
/// Agents `busy` and `quiet`, both on `core`'s shard (0 of 2).
fn busy_and_quiet(core: &mut ShardCore) -> (AgentId, AgentId) {
    let (directory, busy) = Directory::default().with_agent(AgentRecord {
        name: "busy".into(),
        instances_per_shard: vec![1, 0],
    });
    let (directory, quiet) = directory.with_agent(AgentRecord {
        name: "quiet".into(),
        instances_per_shard: vec![1, 0],
    });
    core.set_directory(Arc::new(directory));
    (busy, quiet)
}

#[test]
fn no_message_is_pushed_out_when_owed_ones_alone_fill_the_lanes() {
    // Answers to busy fill the lanes; a request of busy's and one for
    // quiet come after. Pushing busy's request out could not make room
    // (the answers are owed, and never pushed out): only quiet's is refused.
    let mut core = ShardCore::new(0, 2, &limits(2), None);
    let (busy, quiet) = busy_and_quiet(&mut core);
    let mut io = RecordingIo::new(3, 0);
    let answer = |content: &[u8]| Envelope {
        receiver: Address::Agent(busy),
        ..answer_to_echo(content, u64::MAX)
    };
    core.on_arrival(request(busy, b"r1", 0), 0, &mut io);
    for content in [b"a1", b"a2", b"a3"] {
        core.on_arrival(answer(content), 0, &mut io);
    }
    core.on_arrival(request(quiet, b"q1", 0), 0, &mut io);
    assert_eq!(
        only_answer(&mut io),
        (Performative::Failure, "caxton:refused:queue-full".into())
    );
    assert_eq!(core.metrics_mut().pushed_out, 0, "busy's request kept");
    assert_eq!(core.queued(), 4);
}

#[test]
fn a_flooded_agent_gives_up_its_newest_to_its_neighbours() {
    let two_classes = CoreLimits {
        lane: MailboxConfig {
            class_max_latency_ns: vec![None, None],
            ..limits(4).lane
        },
        ..limits(4)
    };
    let mut core = ShardCore::new(0, 2, &two_classes, None);
    let (busy, quiet) = busy_and_quiet(&mut core);
    let mut io = RecordingIo::new(3, 0);
    let urgent = |content: &[u8]| Envelope {
        priority: PriorityClass(0),
        ..request(busy, content, 0)
    };
    let calm = |to, content: &[u8]| Envelope {
        priority: PriorityClass(1),
        ..request(to, content, 0)
    };
    core.on_arrival(urgent(b"u1"), 0, &mut io);
    core.on_arrival(calm(busy, b"c1"), 0, &mut io);
    core.on_arrival(calm(busy, b"c2"), 0, &mut io);
    core.on_arrival(urgent(b"u2"), 0, &mut io);
    assert!(io.take(CLIENT_PORT).is_empty());
    // Three quiet arrivals: the first two push out busy's calm c2, then
    // c1 (never u2, which is more urgent); the third finds busy holding
    // two, quiet two: no one to push out, so it is refused itself.
    for content in [b"q1", b"q2", b"q3"] {
        core.on_arrival(calm(quiet, content), 0, &mut io);
    }
    assert_eq!(io.take(CLIENT_PORT).len(), 3);
    assert_eq!(core.metrics_mut().pushed_out, 2);
    assert_eq!(
        run_all_handled(&mut core, &[busy, quiet], &mut io),
        [b"u1".as_slice(), b"u2", b"q1", b"q2"]
    );
}

/// Agent numbers are reused after an undeploy, so a directory's highest
/// number can pass its count of agents: such an agent's messages are still
/// counted, and it gives up its newest when flooded like any other.
#[test]
fn an_agent_numbered_past_the_directory_count_can_be_pushed_out() {
    let mut core = ShardCore::new(0, 2, &limits(3), None);
    let on_shard_0 = |name: &str| AgentRecord {
        name: name.into(),
        instances_per_shard: vec![1, 0],
    };
    let (directory, gone) = Directory::default().with_agent(on_shard_0("gone"));
    let (directory, quiet) = directory.with_agent(on_shard_0("quiet"));
    let (directory, busy) = directory.with_agent(on_shard_0("busy"));
    let directory = directory.without_agent(gone);
    assert!(
        busy.0 as usize >= directory.len(),
        "busy is numbered past the count"
    );
    core.set_directory(Arc::new(directory));
    let mut io = RecordingIo::new(3, 0);
    for content in [b"b1", b"b2", b"b3"] {
        core.on_arrival(request(busy, content, 0), 0, &mut io);
    }
    core.on_arrival(request(quiet, b"q1", 0), 0, &mut io);
    assert_eq!(core.metrics_mut().pushed_out, 1, "busy's b3 made room");
    let refused = io.take(CLIENT_PORT);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        run_all_handled(&mut core, &[busy, quiet], &mut io),
        [b"b1".as_slice(), b"b2", b"q1"]
    );
}

/// Handle everything `core` holds, each of `agents` handling every message:
/// the contents, in the order they ran.
fn run_all_handled(core: &mut ShardCore, agents: &[AgentId], io: &mut RecordingIo) -> Vec<Vec<u8>> {
    let mut host = FakeAgents {
        behaviours: agents
            .iter()
            .map(|&agent| (agent, Behaviour::End(Outcome::Handled)))
            .collect(),
        ..FakeAgents::default()
    };
    while core.handle_next(1, &mut host, io).is_some() {}
    host.runs.into_iter().map(|(_, content)| content).collect()
}

/// `queue_size` bounds the shard's mailbox whatever `parallel_routes` is.
#[test]
fn the_mailbox_capacity_is_not_divided_among_lanes() {
    let overrides = [
        "messaging.queue_size=1000".to_owned(),
        "messaging.parallel_routes=8".to_owned(),
        "runtime.max_concurrent_messages=100000".to_owned(),
    ];
    let profile = caxton_profiles::load(&["default".to_owned()], &overrides)
        .expect("loads")
        .profile;
    let limits = CoreLimits::from_profile(&profile, 4);
    assert_eq!((limits.lanes, limits.lane.capacity), (8, 1000));
    // max_concurrent_messages is still split over the shards.
    let overrides = [
        "messaging.parallel_routes=8".to_owned(),
        "runtime.max_concurrent_messages=400".to_owned(),
    ];
    let profile = caxton_profiles::load(&["default".to_owned()], &overrides)
        .expect("loads")
        .profile;
    assert_eq!(CoreLimits::from_profile(&profile, 4).lane.capacity, 100);
}

#[test]
fn the_mailbox_takes_its_deadlines_from_the_profile() {
    let ms = |ms: u64| ms * 1_000_000;
    // low-latency routes by priority, with the default four classes, and
    // bounds every wait at 1 s.
    let profile = caxton_profiles::load(&["low-latency".to_owned()], &[])
        .expect("loads")
        .profile;
    let limits = CoreLimits::from_profile(&profile, 2);
    assert_eq!(limits.lane.delivery_timeout_ns, ms(1_000));
    assert_eq!(
        limits.lane.class_max_latency_ns,
        [
            Some(ms(10)),
            Some(ms(100)),
            Some(ms(1_000)),
            Some(ms(10_000))
        ]
    );
    // Classes listed out of order are served by their `priority`.
    let mut reordered = profile.clone();
    let class = |name: &str, priority, max_latency| caxton_profiles::PriorityQueueConfig {
        name: name.to_owned(),
        priority,
        max_latency,
    };
    reordered.messaging.delivery_timeout = caxton_profiles::HumanDuration::from_millis(50);
    reordered.messaging.priority_routing.queues = vec![
        class("bulk", 7, caxton_profiles::HumanDuration::from_secs(5)),
        class("urgent", 1, caxton_profiles::HumanDuration::from_millis(2)),
    ];
    let limits = CoreLimits::from_profile(&reordered, 2);
    assert_eq!(limits.lane.delivery_timeout_ns, ms(50));
    assert_eq!(
        limits.lane.class_max_latency_ns,
        [Some(ms(2)), Some(ms(5_000))]
    );
    // Without priority routing: one class, no class bound.
    let profile = caxton_profiles::load(&["default".to_owned()], &[])
        .expect("loads")
        .profile;
    assert_eq!(
        CoreLimits::from_profile(&profile, 2)
            .lane
            .class_max_latency_ns,
        [None]
    );
}
