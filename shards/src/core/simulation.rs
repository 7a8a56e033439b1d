//! A seeded simulation of a node's shard cores: random client sends (some
//! durable), random shard turns, random partition commits, random handler
//! faults and, in some runs, a crash of the whole node and a restart from
//! what the partitions committed. Some handlers use up their time slice
//! and are suspended, to finish in a later turn. It checks the data plane's promises:
//! - without a crash, every send is answered exactly once, and every
//!   message is handled at most once (exactly once when it was accepted);
//! - one sender's messages to one agent, in one priority class, are handled
//!   in the order they were sent;
//! - across a crash, every message the node acknowledged (`agree`), and
//!   every hop its handler sent, is handled at least once.
//!
//! A failing run prints its seed; `CAXTON_SIMULATION_SEED=N` replays it
//! alone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use caxton_agents::{Handled, Handling, OutboundMessage, Outcome};
use caxton_messaging::{
    Address, AgentId, Durability, Envelope, InstanceId, MailboxConfig, Performative, PriorityClass,
};
use caxton_storage::{StorageEvent, Write, WriteRefused};

use super::{AgentRuntime, CoreLimits, ShardCore, ShardIo};
use crate::directory::{AgentRecord, Directory};

const SHARDS: usize = 3;
const CLIENT_PORT: usize = SHARDS;
const PARTICIPANTS: usize = SHARDS + 1;
const RING_CAPACITY: usize = 16;
/// `relay` on shard 0 passes each message on to `echo` on shard 1 and to
/// `local` on shard 2 (two children, for durable chains), which answer.
const RELAY: AgentId = AgentId(0);
/// Marks the sequence number of the hop a relay sends to `local`, so each
/// hop is answered and checked on its own.
const LOCAL_HOP: Seq = 1 << 62;
const ECHO: AgentId = AgentId(1);
/// `local` on shard 2 answers directly.
const LOCAL: AgentId = AgentId(2);

/// A small deterministic generator (xorshift64*), so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One client message's identity: its sequence number, carried in `reply_with`
/// and, for hops, in the content.
type Seq = u64;

/// Handler runs, keyed by (agent, the client's sequence number).
#[derive(Default)]
struct Runs {
    count: HashMap<(AgentId, Seq), u32>,
    /// (agent, class, durable, the participant it came through) → sequence
    /// numbers in handling order. Order holds per path: a client's direct
    /// sends and the hops a relay sends for it travel different rings.
    order: HashMap<(AgentId, u8, bool, u16), Vec<Seq>>,
}

/// The agents of one shard: `relay` sends a hop, the others answer; a few
/// runs fault.
struct SimAgents {
    shard: u16,
    rng: Rng,
    runs: Runs,
    /// Messages the relay passed on in its latest run (a later run that
    /// faults, after a redelivery, finishes the message without hops).
    relayed: std::collections::HashSet<Seq>,
    /// Handlers that yielded, to finish in a later turn (one instance per
    /// agent, so an agent with one here is busy).
    suspended: Vec<Handled>,
}

impl AgentRuntime for SimAgents {
    fn cpu_blocked_until(&mut self, _agent: AgentId, _now_ns: u64) -> Option<u64> {
        None
    }

    fn run_handler(
        &mut self,
        agent: AgentId,
        slot: Option<u16>,
        envelope: Envelope,
        _started_ns: u64,
    ) -> Handling {
        let instance = InstanceId {
            agent,
            shard: self.shard,
            slot: slot.unwrap_or(0),
        };
        if self
            .suspended
            .iter()
            .any(|handled| handled.instance == instance)
        {
            return Handling::Busy(envelope);
        }
        let handled = |outcome, outbox| Handled {
            instance,
            outcome,
            ran_ns: 1_000,
            outbox,
            state_writes: Vec::new(),
        };
        let seq = envelope
            .content
            .get(..8)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u64::from_le_bytes);
        let (Some(seq), Performative::Request) = (seq, envelope.performative) else {
            // The engine's failures about this agent's own sends: nothing to answer.
            return Handling::Done(handled(Outcome::Handled, Vec::new()));
        };
        *self.runs.count.entry((agent, seq)).or_default() += 1;
        let durable = !matches!(envelope.durability, Durability::Transient);
        self.runs
            .order
            .entry((
                agent,
                envelope.priority.0,
                durable,
                envelope.from_participant,
            ))
            .or_default()
            .push(seq);
        let (outcome, outbox) = if self.rng.chance(3) {
            self.relayed.remove(&seq);
            (Outcome::Trapped("simulated".into()), Vec::new())
        } else if agent == RELAY {
            self.relayed.insert(seq);
            let hop = |receiver, seq: Seq| OutboundMessage {
                receiver: Address::Agent(receiver),
                performative: envelope.performative,
                conversation_id: envelope.conversation_id,
                reply_with: seq,
                in_reply_to: 0,
                on_behalf_of: Some(envelope.sender),
                answers: false,
                content: seq.to_le_bytes().to_vec(),
            };
            (
                Outcome::Handled,
                vec![hop(ECHO, seq), hop(LOCAL, seq | LOCAL_HOP)],
            )
        } else {
            let answer = OutboundMessage {
                receiver: envelope.sender,
                performative: Performative::Inform,
                conversation_id: envelope.conversation_id,
                reply_with: 0,
                in_reply_to: envelope.reply_with,
                on_behalf_of: None,
                answers: true,
                content: envelope.content.clone(),
            };
            (Outcome::Handled, vec![answer])
        };
        if self.rng.chance(10) {
            self.suspended.push(handled(outcome, outbox));
            return Handling::Suspended {
                instance,
                ran_ns: 1_000,
            };
        }
        Handling::Done(handled(outcome, outbox))
    }

    fn take_abandoned(&mut self) -> Vec<OutboundMessage> {
        Vec::new()
    }

    fn has_reports(&self) -> bool {
        false
    }

    fn drain_startup_times(&mut self, _record: &mut dyn FnMut(u64)) {}

    fn now_ns(&self) -> u64 {
        // The simulation's clock stands still within a step: the core keeps
        // the time it was handed.
        0
    }
}

/// A partition: rows committed (id → (envelope, finished)), and writes queued.
#[derive(Default)]
struct SimPartition {
    committed: BTreeMap<u64, (Envelope, bool)>,
    queued: Vec<Write>,
}

/// The mesh (one bounded ring per ordered pair) and the partitions.
struct SimWorld {
    rings: HashMap<(usize, usize), VecDeque<Envelope>>,
    partitions: Vec<SimPartition>,
    /// Sends whose client was pushed an engine `failure` (kept across a
    /// crash, which may lose the answer itself).
    failed: std::collections::HashSet<Seq>,
    /// Answers refused for good (the client's ring was full, and so was
    /// the shard's backlog for it): the engine counts them and tells the
    /// answerer, and the client's wait times out.
    refused_answers: std::collections::HashSet<Seq>,
}

/// One shard's view of the world, as its I/O.
struct SimIo<'a> {
    world: &'a mut SimWorld,
    shard: usize,
}

impl ShardIo for SimIo<'_> {
    fn has_ring_to(&self, participant: usize) -> bool {
        participant < PARTICIPANTS && participant != self.shard
    }

    fn push(&mut self, participant: usize, envelope: Envelope) -> Result<(), Envelope> {
        let ring = self
            .world
            .rings
            .entry((self.shard, participant))
            .or_default();
        if ring.len() >= RING_CAPACITY {
            return Err(envelope);
        }
        if participant == CLIENT_PORT && envelope.performative == Performative::Failure {
            self.world.failed.insert(envelope.in_reply_to);
        }
        ring.push_back(envelope);
        Ok(())
    }

    fn refused(&mut self, participant: usize, envelope: &Envelope) {
        if participant == CLIENT_PORT {
            self.world.refused_answers.insert(envelope.in_reply_to);
        }
    }

    fn store(&mut self, write: Write) -> Result<(), WriteRefused> {
        self.world.partitions[self.shard].queued.push(write);
        Ok(())
    }
}

fn limits() -> CoreLimits {
    CoreLimits {
        lanes: 2,
        lane: MailboxConfig {
            capacity: 12,
            delivery_timeout_ns: u64::MAX,
            class_max_latency_ns: vec![None, None],
        },
        held_max: 24,
        waiting_max: 24,
        waiting_bytes_max: usize::MAX,
    }
}

fn directory() -> Arc<Directory> {
    let mut directory = Directory::default();
    for (name, shard) in [("relay", 0), ("echo", 1), ("local", 2)] {
        let mut instances_per_shard = vec![0; SHARDS];
        instances_per_shard[shard] = 1;
        directory = directory
            .with_agent(AgentRecord {
                name: name.into(),
                instances_per_shard,
            })
            .0;
    }
    Arc::new(directory)
}

/// What the client sent and heard.
#[derive(Default)]
struct ClientLog {
    /// seq → (agent, durable).
    sent: BTreeMap<Seq, (AgentId, bool)>,
    /// seq → final answers (inform, failure, or refuse).
    answers: HashMap<Seq, u32>,
    /// Durable sends the node agreed to keep.
    agreed: Vec<Seq>,
}

struct Simulation {
    rng: Rng,
    cores: Vec<ShardCore>,
    agents: Vec<SimAgents>,
    world: SimWorld,
    client: ClientLog,
    /// Runs before the crash, kept when the agents are rebuilt.
    runs_before_crash: Vec<Runs>,
    next_seq: Seq,
    now: u64,
}

impl Simulation {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let agents = (0..SHARDS)
            .map(|shard| SimAgents {
                shard: shard as u16,
                rng: Rng::new(rng.next()),
                runs: Runs::default(),
                relayed: std::collections::HashSet::new(),
                suspended: Vec::new(),
            })
            .collect();
        Self {
            rng,
            cores: Self::boot(&[]),
            agents,
            world: SimWorld {
                rings: HashMap::new(),
                partitions: (0..SHARDS).map(|_| SimPartition::default()).collect(),
                failed: std::collections::HashSet::new(),
                refused_answers: std::collections::HashSet::new(),
            },
            client: ClientLog::default(),
            runs_before_crash: Vec::new(),
            next_seq: 1,
            now: 0,
        }
    }

    /// Fresh cores, numbering ids after what `partitions` hold.
    fn boot(partitions: &[SimPartition]) -> Vec<ShardCore> {
        (0..SHARDS)
            .map(|shard| {
                let first = caxton_storage::durability::first_id(shard);
                let next = partitions
                    .get(shard)
                    .and_then(|partition| partition.committed.keys().next_back())
                    .map_or(first, |last| last + 1);
                let mut core = ShardCore::new(shard, SHARDS, &limits(), Some(next));
                core.set_directory(directory());
                core
            })
            .collect()
    }

    fn send(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let agent = [RELAY, ECHO, LOCAL][self.rng.below(3) as usize];
        let durable = self.rng.chance(40);
        let shard = directory()
            .get(agent)
            .and_then(|record| record.hosting_shards().next())
            .unwrap_or(0);
        let envelope = Envelope {
            reply_with: seq,
            conversation_id: seq,
            priority: PriorityClass(self.rng.below(2) as u8),
            durability: if durable {
                Durability::Requested
            } else {
                Durability::Transient
            },
            ..Envelope::new(
                Performative::Request,
                Address::Client {
                    port: CLIENT_PORT as u16,
                    id: 1,
                },
                Address::Agent(agent),
                seq.to_le_bytes().to_vec(),
                self.now,
                CLIENT_PORT as u16,
            )
        };
        let ring = self.world.rings.entry((CLIENT_PORT, shard)).or_default();
        // A full ring refuses the send at the client: it was never sent.
        if ring.len() < RING_CAPACITY {
            ring.push_back(envelope);
            self.client.sent.insert(seq, (agent, durable));
        }
    }

    /// One turn of shard `shard`: move what waits for the client onto its
    /// ring, drain the rings (not the client's while answers wait for it),
    /// then handle a few.
    fn turn(&mut self, shard: usize) {
        let now = self.now;
        let mut io = SimIo {
            world: &mut self.world,
            shard,
        };
        self.cores[shard].flush_waiting(now, &mut io);
        for from in 0..PARTICIPANTS {
            if self.cores[shard].is_waiting_for(from) {
                continue;
            }
            let taken: Vec<Envelope> = io
                .world
                .rings
                .get_mut(&(from, shard))
                .map(|ring| ring.drain(..).collect())
                .unwrap_or_default();
            for envelope in taken {
                self.cores[shard].on_arrival(envelope, now, &mut io);
            }
        }
        let agents = &mut self.agents[shard];
        self.cores[shard].release_held(now, agents, &mut io);
        for _ in 0..4 {
            if self.cores[shard]
                .handle_next(now, agents, &mut io)
                .is_none()
            {
                break;
            }
        }
        // Some suspended handlers get to their end this turn.
        let suspended = std::mem::take(&mut agents.suspended);
        for handled in suspended {
            if self.rng.chance(50) {
                self.cores[shard].on_handler_finished(handled, now, agents, &mut io);
            } else {
                agents.suspended.push(handled);
            }
        }
    }

    /// The partition of `shard` commits the first `count` of its queued writes.
    fn commit(&mut self, shard: usize, count: usize) {
        let partition = &mut self.world.partitions[shard];
        let count = count.min(partition.queued.len());
        let mut durable = Vec::new();
        for write in partition.queued.drain(..count) {
            match write {
                Write::Persist { id, envelope, .. } => {
                    let envelope = Envelope::decode(&envelope).expect("the core encodes");
                    partition.committed.insert(id, (envelope, false));
                    durable.push(id);
                }
                Write::Done { id } => {
                    if let Some((_, done)) = partition.committed.get_mut(&id) {
                        *done = true;
                    }
                }
                _ => {}
            }
        }
        if !durable.is_empty() {
            let mut io = SimIo {
                world: &mut self.world,
                shard,
            };
            self.cores[shard].on_storage_event(StorageEvent::Durable(durable), self.now, &mut io);
        }
    }

    /// The client reads its ring.
    fn read_answers(&mut self) {
        for shard in 0..SHARDS {
            let answers: Vec<Envelope> = self
                .world
                .rings
                .get_mut(&(shard, CLIENT_PORT))
                .map(|ring| ring.drain(..).collect())
                .unwrap_or_default();
            for answer in answers {
                let seq = answer.in_reply_to;
                match (answer.performative, answer.durability) {
                    (Performative::Agree, Durability::Notice(_)) => self.client.agreed.push(seq),
                    _ => *self.client.answers.entry(seq).or_default() += 1,
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += 1 + self.rng.below(2_000);
        match self.rng.below(10) {
            0..=2 => self.send(),
            3..=6 => {
                let shard = self.rng.below(SHARDS as u64) as usize;
                self.turn(shard);
            }
            7..=8 => {
                let shard = self.rng.below(SHARDS as u64) as usize;
                let queued = self.world.partitions[shard].queued.len() as u64;
                let count = self.rng.below(queued + 1) as usize;
                self.commit(shard, count);
            }
            _ => self.read_answers(),
        }
    }

    /// Run every shard and partition until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            for shard in 0..SHARDS {
                self.turn(shard);
                self.commit(shard, usize::MAX);
            }
            self.read_answers();
            self.now += 1_000;
            let idle = self.world.rings.values().all(VecDeque::is_empty)
                && self.cores.iter().all(|core| {
                    core.queued() == 0 && core.suspended() == 0 && core.waiting_for_room() == 0
                })
                && self
                    .world
                    .partitions
                    .iter()
                    .all(|partition| partition.queued.is_empty());
            if idle {
                return;
            }
        }
        panic!("the node did not settle");
    }

    /// Kill the node: cores, rings and queued writes are gone; committed rows
    /// stay. Boot again and redeliver what is unfinished.
    fn crash_and_restart(&mut self) {
        self.world.rings.clear();
        for partition in &mut self.world.partitions {
            partition.queued.clear();
        }
        self.cores = Self::boot(&self.world.partitions);
        for agents in &mut self.agents {
            self.runs_before_crash
                .push(std::mem::take(&mut agents.runs));
            // Suspended handlers die with the node.
            agents.suspended.clear();
        }
        for shard in 0..SHARDS {
            let unfinished: Vec<(u64, Envelope)> = self.world.partitions[shard]
                .committed
                .iter()
                .filter(|(_, (_, done))| !done)
                .map(|(id, (envelope, _))| (*id, envelope.clone()))
                .collect();
            let mut io = SimIo {
                world: &mut self.world,
                shard,
            };
            for (id, envelope) in unfinished {
                self.cores[shard].redeliver(envelope, id, self.now, &mut io);
            }
        }
    }

    /// Handler runs of `agent` for `seq`, before and after any crash.
    fn runs_of(&self, agent: AgentId, seq: Seq) -> u32 {
        self.agents
            .iter()
            .map(|agents| &agents.runs)
            .chain(&self.runs_before_crash)
            .map(|runs| runs.count.get(&(agent, seq)).copied().unwrap_or(0))
            .sum()
    }
}

/// How much of the protocol a run exercised, so a change that quietly stops
/// the simulation from reaching a path fails the test.
#[derive(Debug, Default)]
struct Coverage {
    agreed: usize,
    hops_run: u32,
    redelivered: u64,
    faults: u64,
    refused: u64,
    suspended: u64,
    waited_for_client: u64,
}

fn run(seed: u64, crash: bool) -> Result<Coverage, String> {
    let mut simulation = Simulation::new(seed);
    let steps = 600 + simulation.rng.below(600);
    let crash_at = crash.then(|| simulation.rng.below(steps));
    for step in 0..steps {
        if crash_at == Some(step) {
            simulation.crash_and_restart();
        }
        simulation.step();
    }
    simulation.settle();
    let client = &simulation.client;
    let world = &simulation.world;
    // The sender of `seq` heard an engine failure, or its answer was refused
    // by its full ring (counted; the client's wait times out).
    let told = |seq: Seq| world.failed.contains(&seq) || world.refused_answers.contains(&seq);
    let relayed = |seq: Seq| {
        simulation
            .agents
            .iter()
            .any(|agents| agents.relayed.contains(&seq))
    };
    for (&seq, &(agent, durable)) in &client.sent {
        let agreed = client.agreed.contains(&seq);
        // A relayed message has two answers: from `echo` (`seq`) and from
        // `local` (`seq | LOCAL_HOP`).
        let mut paths = vec![(agent, seq)];
        if agent == RELAY && relayed(seq) {
            paths = vec![(ECHO, seq), (LOCAL, seq | LOCAL_HOP)];
        }
        for (handler, key) in paths {
            let answers = client.answers.get(&key).copied().unwrap_or(0);
            let runs = simulation.runs_of(handler, key);
            if !crash {
                if answers > 1 || (answers == 0 && !world.refused_answers.contains(&key)) {
                    return Err(format!("seq {key} via {handler:?}: {answers} answers"));
                }
                if runs > 1 || simulation.runs_of(agent, seq) > 1 {
                    return Err(format!("seq {key}: handled more than once"));
                }
            }
            // Accepted (or a hop of an accepted message): handled at least
            // once, or its sender was told it failed.
            if durable && agreed && runs == 0 && !told(key) && (handler == agent || relayed(seq)) {
                return Err(format!(
                    "seq {key} via {handler:?}: agreed, never handled, never failed"
                ));
            }
        }
    }
    if !crash {
        for agents in &simulation.agents {
            for ((agent, class, durable, path), seqs) in &agents.runs.order {
                if seqs.windows(2).any(|pair| pair[0] >= pair[1]) {
                    return Err(format!(
                        "{agent:?} class {class} durable {durable} via {path}: out of order {seqs:?}"
                    ));
                }
            }
        }
    }
    // Nothing stored stays unfinished once the node has settled.
    for (shard, partition) in simulation.world.partitions.iter().enumerate() {
        if let Some((id, _)) = partition.committed.iter().find(|(_, (_, done))| !done) {
            return Err(format!("shard {shard}: stored message {id} never finished"));
        }
    }
    let mut coverage = Coverage {
        agreed: simulation.client.agreed.len(),
        hops_run: simulation
            .client
            .sent
            .iter()
            .filter(|(_, (agent, _))| *agent == RELAY)
            .map(|(&seq, _)| {
                simulation.runs_of(ECHO, seq) + simulation.runs_of(LOCAL, seq | LOCAL_HOP)
            })
            .sum(),
        ..Coverage::default()
    };
    for core in &mut simulation.cores {
        let metrics = core.metrics_mut();
        coverage.redelivered += metrics.redelivered;
        coverage.faults += metrics.faults;
        coverage.refused += metrics.refused;
        coverage.suspended += metrics.suspended;
        coverage.waited_for_client += metrics.waited_for_clients;
    }
    Ok(coverage)
}

/// Run every seed; panic with the first failing one, else sum the coverage.
fn run_seeds(crash: bool) -> Coverage {
    let mut total = Coverage::default();
    for seed in seeds() {
        match run(seed, crash) {
            Ok(coverage) => {
                total.agreed += coverage.agreed;
                total.hops_run += coverage.hops_run;
                total.redelivered += coverage.redelivered;
                total.faults += coverage.faults;
                total.refused += coverage.refused;
                total.suspended += coverage.suspended;
                total.waited_for_client += coverage.waited_for_client;
            }
            Err(failure) => {
                panic!("seed {seed} failed (replay: CAXTON_SIMULATION_SEED={seed}): {failure}")
            }
        }
    }
    total
}

fn seeds() -> Vec<u64> {
    match std::env::var("CAXTON_SIMULATION_SEED") {
        Ok(seed) => vec![seed.parse().expect("CAXTON_SIMULATION_SEED is a number")],
        Err(_) => (0..150).collect(),
    }
}

#[test]
fn without_crashes_every_send_is_answered_once_and_order_is_kept() {
    let coverage = run_seeds(false);
    if std::env::var("CAXTON_SIMULATION_SEED").is_err() {
        assert!(coverage.agreed > 0 && coverage.hops_run > 0, "{coverage:?}");
        assert!(coverage.faults > 0 && coverage.refused > 0, "{coverage:?}");
        assert!(coverage.suspended > 0, "{coverage:?}");
        assert!(coverage.waited_for_client > 0, "{coverage:?}");
    }
}

#[test]
fn across_a_crash_nothing_acknowledged_is_lost() {
    let coverage = run_seeds(true);
    if std::env::var("CAXTON_SIMULATION_SEED").is_err() {
        assert!(
            coverage.redelivered > 0,
            "crashes left work to redeliver: {coverage:?}"
        );
    }
}
