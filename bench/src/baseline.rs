//! The baseline: the conventional way to host the same agents, for
//! `--compare baseline`. One tokio multi-threaded work-stealing runtime with
//! as many workers as the node has data shards; one task per agent, owning
//! its wasmtime instance and draining a bounded tokio `mpsc` mailbox; one
//! wasmtime engine shared by all workers. The agents are the same modules,
//! linked to the same host functions as on the engine
//! ([`caxton_agents::link_abi`], with the same limits), and the load is the
//! same open-loop generator. The baseline's own parts are its agents'
//! [`AbiContext`] and the routing of what they send: load generator `n` is
//! `Address::Client { id: n, .. }`, agent `n` is `Address::Agent(AgentId(n))`,
//! a forward keeps the original sender, and every message carries in
//! `sent_at_ns` the intended send time of the load message it descends from,
//! which latency is measured from.
//!
//! It is deliberately what a careful team would build first, not a straw
//! man: bounded mailboxes, `try_send` with explicit refusals, pooling
//! allocator and the profile's compiler settings, no per-message allocation
//! beyond the content.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use caxton_agents::abi;
use caxton_agents::{link_abi, AbiContext, AbiState, OutboundMessage, PoolSizes, StateMap};
use caxton_messaging::{Address, AgentId, Envelope, Performative};
use caxton_profiles::Profile;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use wasmtime::{
    Engine, InstancePre, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc,
};

use crate::custom::{BenchError, LoadOptions, LoadResult, Pattern, Workload};
use crate::load::{self, Completion, Outcome, Outgoing, Port, Refused};
use crate::nanosecond_histogram;

/// The baseline's agents: agent `n` is `AgentId(n)`, named `names[n]`.
struct Directory {
    names: Vec<String>,
    ids: HashMap<String, AgentId>,
}

impl Directory {
    fn new(agents: &[(String, &'static str)]) -> Self {
        let names: Vec<String> = agents.iter().map(|(name, _)| name.clone()).collect();
        let ids = names
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), agent_id(index)))
            .collect();
        Self { names, ids }
    }
}

pub(crate) fn agent_id(index: usize) -> AgentId {
    AgentId(u32::try_from(index).unwrap_or(u32::MAX))
}

/// Load generator `index`'s address: the sender of its messages, the receiver of their answers.
pub(crate) fn client(index: usize) -> Address {
    Address::Client {
        port: 0,
        id: u32::try_from(index).unwrap_or(u32::MAX),
    }
}

/// The store data of one baseline agent: the context the ABI's host functions run in.
struct AgentState {
    limits: StoreLimits,
    abi: AbiState,
    /// The agent's key-value state; one instance per agent, so it owns it.
    state: StateMap,
    directory: Arc<Directory>,
    me: AgentId,
    epoch: Instant,
}

impl AgentState {
    /// Agent `me`'s store data, its memory limited to `memory_bytes`.
    fn new(directory: Arc<Directory>, me: AgentId, epoch: Instant, memory_bytes: usize) -> Self {
        Self {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(1)
                .build(),
            abi: AbiState::default(),
            state: StateMap::default(),
            directory,
            me,
            epoch,
        }
    }
}

impl AbiContext for AgentState {
    fn abi(&self) -> &AbiState {
        &self.abi
    }

    fn abi_mut(&mut self) -> &mut AbiState {
        &mut self.abi
    }

    fn resolve(&self, name: &str) -> Option<AgentId> {
        self.directory.ids.get(name).copied()
    }

    fn directory_generation(&self) -> u64 {
        // The baseline's directory is built once, before any agent runs.
        0
    }

    fn sender_name(&self, sender: Address) -> String {
        let agent = match sender {
            Address::Agent(agent) => agent,
            Address::Instance(instance) => instance.agent,
            Address::Remote { agent, .. } => agent,
            Address::Client { id, .. } => return format!("client-{id}"),
        };
        self.directory
            .names
            .get(agent.0 as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn now_ns(&self) -> u64 {
        nanos_since(self.epoch)
    }

    fn agent_name(&self) -> &str {
        self.directory
            .names
            .get(self.me.0 as usize)
            .map_or("", String::as_str)
    }

    fn with_state<R>(&mut self, use_state: impl FnOnce(&mut StateMap) -> R) -> R {
        use_state(&mut self.state)
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One baseline agent's instance, owned by its task (or by the bare loop,
/// [`crate::bare_loop`]).
pub(crate) struct BaselineAgent {
    store: Store<AgentState>,
    handle: TypedFunc<(), i32>,
    /// An emptied outbox handed back ([`Self::recycle_outbox`]), reused by
    /// the next handler as the engine's host reuses its own.
    spare_outbox: Vec<OutboundMessage>,
}

impl BaselineAgent {
    fn new(
        engine: &Engine,
        pre: &InstancePre<AgentState>,
        state: AgentState,
    ) -> Result<Self, BenchError> {
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|error| BenchError::Run(format!("baseline instance: {error}")))?;
        // Found once, as the engine's host finds it, so no host call looks
        // the memory up by name.
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| BenchError::Run("baseline instance: no exported memory".into()))?;
        store.data_mut().abi.bind_memory(memory);
        let handle = instance
            .get_typed_func::<(), i32>(&mut store, abi::EXPORT_HANDLE)
            .map_err(|error| BenchError::Run(format!("baseline instance: {error}")))?;
        Ok(Self {
            store,
            handle,
            spare_outbox: Vec::new(),
        })
    }

    /// Handle `message`: how the handler ended, and what it sent (nothing
    /// when it trapped, as on the engine).
    pub(crate) fn handle(
        &mut self,
        message: Envelope,
    ) -> (wasmtime::Result<i32>, Vec<OutboundMessage>) {
        self.store.data_mut().abi.begin(message);
        let result = self.handle.call(&mut self.store, ());
        let state = self.store.data_mut();
        let outbox = state.abi.finish(std::mem::take(&mut self.spare_outbox));
        // The engine takes the write log for its storage partition after
        // every handler; the baseline keeps no storage and drops it.
        drop(state.state.take_writes());
        let outbox = if result.is_ok() { outbox } else { Vec::new() };
        (result, outbox)
    }

    /// Give back an outbox whose messages were sent, for the next handler.
    pub(crate) fn recycle_outbox(&mut self, outbox: Vec<OutboundMessage>) {
        AbiState::keep_spare_outbox(&mut self.spare_outbox, outbox);
    }
}

/// Per-worker measurements: each worker thread records into its own, and
/// hands them over when it stops (the runtime's `on_thread_stop`).
#[derive(Default)]
struct WorkerTally {
    handled: u64,
    lost: u64,
    routing: Option<Histogram<u64>>,
    processing: Option<Histogram<u64>>,
}

/// Record `nanos` (at least 1) in a worker's histogram, created on first use.
fn record(histogram: &mut Option<Histogram<u64>>, nanos: u64) {
    histogram
        .get_or_insert_with(nanosecond_histogram)
        .saturating_record(nanos.max(1));
}

/// What the workers time, and what time a message sent by an agent carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    /// Nothing: every message carries the intended send time of the load
    /// message it descends from, and the generators time the answers.
    Intended,
    /// As `Intended`, and each handler start is recorded against that time
    /// (one-way, where nothing answers).
    Delivery,
    /// Each hop on its own, as the engine's shards time theirs: a message an
    /// agent sends carries the time its sender's handler finished; routing
    /// records that time to the receiver's handler start, processing the
    /// handler's run time.
    Hops,
}

thread_local! {
    static TALLY: RefCell<WorkerTally> = RefCell::new(WorkerTally::default());
}

fn baseline_linker(engine: &Engine) -> Result<Linker<AgentState>, BenchError> {
    let mut linker = Linker::new(engine);
    link_abi(&mut linker).map_err(|error| BenchError::Run(format!("baseline linker: {error}")))?;
    Ok(linker)
}

/// Where the messages of the baseline go: the agents' mailboxes and the
/// load generators' answer channels.
struct Routes {
    mailboxes: Arc<Vec<mpsc::Sender<Envelope>>>,
    answers: Arc<Vec<std_mpsc::Sender<Answer>>>,
}

impl Routes {
    /// Deliver `sent`, sent by agent `me` while it handled a message
    /// intended at `intended_ns`. Whether it was delivered.
    fn deliver(&self, me: AgentId, sent: OutboundMessage, intended_ns: u64) -> bool {
        match sent.receiver {
            Address::Agent(agent) => self.mailboxes.get(agent.0 as usize).is_some_and(|mailbox| {
                mailbox.try_send(envelope_of(me, sent, intended_ns)).is_ok()
            }),
            Address::Client { id, .. } => {
                self.answer(id, sent.conversation_id, sent.performative, sent.content)
            }
            // The baseline addresses agents, never their instances, and
            // is a single node.
            Address::Instance(_) | Address::Remote { .. } => false,
        }
    }

    /// Hand load generator `id` the answer to its message `conversation_id`.
    fn answer(
        &self,
        id: u32,
        conversation_id: u64,
        performative: Performative,
        content: Vec<u8>,
    ) -> bool {
        self.answers.get(id as usize).is_some_and(|answers| {
            answers
                .send((conversation_id, performative, content))
                .is_ok()
        })
    }
}

/// The envelope of `sent`, an agent's message to another agent, sent by
/// agent `me` and stamped `sent_at_ns`.
pub(crate) fn envelope_of(me: AgentId, sent: OutboundMessage, sent_at_ns: u64) -> Envelope {
    Envelope {
        conversation_id: sent.conversation_id,
        reply_with: sent.reply_with,
        in_reply_to: sent.in_reply_to,
        ..Envelope::new(
            sent.performative,
            // A forward keeps the original sender, so the last hop answers it.
            sent.on_behalf_of.unwrap_or(Address::Agent(me)),
            sent.receiver,
            sent.content,
            sent_at_ns,
            0,
        )
    }
}

/// What a generator receives: (conversation id, performative, content).
type Answer = (u64, Performative, Vec<u8>);

/// A running baseline: the runtime, the mailboxes, the answer channels.
struct Baseline {
    runtime: tokio::runtime::Runtime,
    mailboxes: Arc<Vec<mpsc::Sender<Envelope>>>,
    answers: Vec<std_mpsc::Receiver<Answer>>,
    epoch: Instant,
    tallies: Arc<Mutex<Vec<WorkerTally>>>,
}

/// Start `agents` (name and module text; agent `n` is `agents[n]`) on
/// `workers` workers, with answer channels for `generators` clients.
fn start(
    profile: &Profile,
    agents: &[(String, &'static str)],
    timing: Timing,
    workers: usize,
    generators: usize,
) -> Result<Baseline, BenchError> {
    let tallies = Arc::new(Mutex::new(Vec::new()));
    let handed_over = Arc::clone(&tallies);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("baseline-worker")
        .on_thread_stop(move || {
            let tally = TALLY.with(|tally| std::mem::take(&mut *tally.borrow_mut()));
            handed_over
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(tally);
        })
        .build()
        .map_err(|error| BenchError::Run(format!("baseline runtime: {error}")))?;
    // The same bound as Caxton's shards (`caxton_shards::core`): per shard
    // (here: per worker), `messaging.queue_size` messages, and at most its
    // share of `runtime.max_concurrent_messages`, shared out over the
    // agents' mailboxes.
    let per_worker = (profile.messaging.queue_size as usize)
        .min((profile.runtime.max_concurrent_messages as usize).div_ceil(workers.max(1)));
    let capacity = (per_worker * workers / agents.len().max(1)).clamp(16, 65_536);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..agents.len())
        .map(|_| mpsc::channel::<Envelope>(capacity))
        .unzip();
    let mailboxes = Arc::new(senders);
    let mut answer_senders = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..generators {
        let (sender, receiver) = std_mpsc::channel();
        answer_senders.push(sender);
        answers.push(receiver);
    }
    let routes = Arc::new(Routes {
        mailboxes: Arc::clone(&mailboxes),
        answers: Arc::new(answer_senders),
    });
    let epoch = Instant::now();
    let instances = instantiate(profile, agents, epoch)?;
    for ((index, mut agent), mut mailbox) in instances.into_iter().enumerate().zip(receivers) {
        let me = agent_id(index);
        let routes = Arc::clone(&routes);
        runtime.spawn(async move {
            while let Some(message) = mailbox.recv().await {
                let intended_ns = message.sent_at_ns;
                let started_ns = match timing {
                    Timing::Intended => 0,
                    Timing::Delivery | Timing::Hops => {
                        let started = nanos_since(epoch);
                        TALLY.with(|tally| {
                            record(
                                &mut tally.borrow_mut().routing,
                                started.saturating_sub(intended_ns),
                            );
                        });
                        started
                    }
                };
                let (sender, conversation_id) = (message.sender, message.conversation_id);
                let (result, mut outbox) = agent.handle(message);
                let stamp_ns = match timing {
                    Timing::Intended | Timing::Delivery => intended_ns,
                    Timing::Hops => {
                        let finished = nanos_since(epoch);
                        TALLY.with(|tally| {
                            record(
                                &mut tally.borrow_mut().processing,
                                finished.saturating_sub(started_ns),
                            );
                        });
                        finished
                    }
                };
                let mut lost = 0;
                for sent in outbox.drain(..) {
                    lost += u64::from(!routes.deliver(me, sent, stamp_ns));
                }
                agent.recycle_outbox(outbox);
                if !matches!(result, Ok(0)) {
                    if let Address::Client { id, .. } = sender {
                        routes.answer(id, conversation_id, Performative::Failure, Vec::new());
                    }
                }
                TALLY.with(|tally| {
                    let mut tally = tally.borrow_mut();
                    tally.handled += 1;
                    tally.lost += lost;
                });
            }
        });
    }
    Ok(Baseline {
        runtime,
        mailboxes,
        answers,
        epoch,
        tallies,
    })
}

/// One instance of each of `agents` (name and module text; agent `n` is
/// `AgentId(n)`, named `agents[n].0`), as the baseline runs them: the
/// profile's compiler settings, the ABI's host functions, the agents'
/// memory limit, and `now_ns` counted from `epoch`.
pub(crate) fn instantiate(
    profile: &Profile,
    agents: &[(String, &'static str)],
    epoch: Instant,
) -> Result<Vec<BaselineAgent>, BenchError> {
    // Handlers are called synchronously: no stacks.
    let pools = PoolSizes {
        instances: agents.len() as u32 + 16,
        handler_stacks: 1,
    };
    let config = caxton_agents::engine_config(profile, pools)
        .map_err(|error| BenchError::Run(format!("baseline engine: {error}")))?;
    let engine = Engine::new(&config)
        .map_err(|error| BenchError::Run(format!("baseline engine: {error}")))?;
    let linker = baseline_linker(&engine)?;
    let directory = Arc::new(Directory::new(agents));
    let memory = profile.agents.default_limits.memory.bytes() as usize;
    let mut modules: HashMap<&str, InstancePre<AgentState>> = HashMap::new();
    let mut instances = Vec::with_capacity(agents.len());
    for (index, (_, wat)) in agents.iter().enumerate() {
        let pre = match modules.get(wat) {
            Some(pre) => pre.clone(),
            None => {
                let module = Module::new(&engine, wat)
                    .map_err(|error| BenchError::Run(format!("baseline module: {error}")))?;
                let pre = linker
                    .instantiate_pre(&module)
                    .map_err(|error| BenchError::Run(format!("baseline module: {error}")))?;
                modules.insert(wat, pre.clone());
                pre
            }
        };
        let state = AgentState::new(Arc::clone(&directory), agent_id(index), epoch, memory);
        instances.push(BaselineAgent::new(&engine, &pre, state)?);
    }
    Ok(instances)
}

/// A generator's way into the baseline.
struct BaselinePort {
    mailboxes: Arc<Vec<mpsc::Sender<Envelope>>>,
    entries: Arc<Vec<(AgentId, Vec<u8>)>>,
    answers: std_mpsc::Receiver<Answer>,
    performative: Performative,
    epoch: Instant,
    index: usize,
    generators: u64,
    next_token: u64,
    /// The answers of one poll (kept to reuse its allocation).
    arrived: Vec<(u64, Performative)>,
}

impl Port for BaselinePort {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn submit(&mut self, message: Outgoing) -> Result<(), Refused> {
        let slot =
            (message.sequence * self.generators + self.index as u64) % self.entries.len() as u64;
        let (agent, content) = &self.entries[slot as usize];
        self.next_token += 1;
        let envelope = Envelope {
            conversation_id: message.sequence,
            reply_with: self.next_token,
            ..Envelope::new(
                self.performative,
                client(self.index),
                Address::Agent(*agent),
                content.clone(),
                message.intended_ns,
                0,
            )
        };
        self.mailboxes[agent.0 as usize]
            .try_send(envelope)
            .map_err(|_| Refused)
    }

    fn poll(&mut self, wait: Duration, sink: &mut dyn FnMut(Completion)) {
        // As Caxton's port does: every answer in, then one clock reading
        // that times them all.
        let arrived = &mut self.arrived;
        load::drain_channel(&self.answers, wait, |(sequence, performative, _)| {
            arrived.push((sequence, performative));
        });
        if arrived.is_empty() {
            return;
        }
        let at_ns = self.epoch.elapsed().as_nanos() as u64;
        for (sequence, performative) in arrived.drain(..) {
            let outcome = if performative == Performative::Inform {
                Outcome::Answered
            } else {
                Outcome::Failed
            };
            sink(Completion {
                sequence,
                outcome,
                at_ns,
            });
        }
    }

    fn expects_answers(&self) -> bool {
        self.performative != Performative::Inform
    }
}

/// Run `workload` under `options` on a fresh baseline with `workers` worker threads.
pub fn run_on_baseline(
    profile: &Profile,
    workload: &Workload,
    workers: usize,
    generators: usize,
    options: &LoadOptions,
) -> Result<LoadResult, BenchError> {
    let timing = if workload.pattern == Pattern::OneWay {
        Timing::Delivery
    } else {
        Timing::Intended
    };
    let mut baseline = start(profile, &workload.agents, timing, workers, generators)?;
    let directory = Directory::new(&workload.agents);
    let entries: Arc<Vec<(AgentId, Vec<u8>)>> = Arc::new(
        workload
            .entries
            .iter()
            .map(|(name, content)| (directory.ids[name], content.clone()))
            .collect(),
    );
    let ports: Vec<BaselinePort> = std::mem::take(&mut baseline.answers)
        .into_iter()
        .enumerate()
        .map(|(index, answers)| BaselinePort {
            mailboxes: Arc::clone(&baseline.mailboxes),
            entries: Arc::clone(&entries),
            answers,
            performative: workload.performative(),
            epoch: baseline.epoch,
            index,
            generators: generators as u64,
            next_token: 0,
            arrived: Vec::new(),
        })
        .collect();
    let mut generated = crate::custom::run_generators("baseline", ports, options, None)?;
    // One-way: wait for the mailboxes to empty, then stop the workers to read their tallies.
    if workload.pattern == Pattern::OneWay {
        let until = Instant::now() + options.drain;
        while Instant::now() < until
            && baseline
                .mailboxes
                .iter()
                .any(|mailbox| mailbox.capacity() < mailbox.max_capacity())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let Baseline {
        runtime,
        mailboxes,
        tallies,
        ..
    } = baseline;
    drop(mailboxes);
    drop(entries);
    runtime.shutdown_timeout(Duration::from_secs(10));
    let tallies = std::mem::take(&mut *tallies.lock().unwrap_or_else(PoisonError::into_inner));
    if workload.pattern == Pattern::OneWay {
        let mut delivered = nanosecond_histogram();
        let mut handled = 0;
        for tally in &tallies {
            handled += tally.handled;
            if let Some(routing) = &tally.routing {
                let _ = delivered.add(routing);
            }
        }
        let counts = &mut generated.counts;
        counts.answered = handled.min(counts.sent);
        counts.timed_out = counts.sent - counts.answered;
        generated.latency = delivered;
    }
    let mut result = LoadResult::generated("baseline", options, generated);
    result.generators =
        format!("{generators} load generator(s) placed by the kernel, as its workers are");
    Ok(result)
}

/// What a seeded run on the baseline did.
pub struct SeededRun {
    /// The answer to each seed, in seed order: performative and content
    /// (`None`: none came within the time allowed).
    pub answers: Vec<Option<(Performative, Vec<u8>)>>,
    /// Messages the agents handled.
    pub handled: u64,
    /// Messages agents sent that no mailbox took (full, or no such receiver).
    pub lost: u64,
    /// Send (the sender's handler end) to handler start, every message.
    pub routing: Histogram<u64>,
    /// Handler run time, every message.
    pub processing: Histogram<u64>,
}

/// Start `agents` (name and module text) on a fresh baseline with `workers`
/// worker threads, send each seed (an agent's index and a content) as a
/// `request` from one client, and wait up to `timeout` for their answers.
/// The agents load each other in between, each hop timed as the engine's
/// shards time theirs.
pub fn run_seeded(
    profile: &Profile,
    agents: &[(String, &'static str)],
    workers: usize,
    seeds: &[(usize, Vec<u8>)],
    timeout: Duration,
) -> Result<SeededRun, BenchError> {
    let mut baseline = start(profile, agents, Timing::Hops, workers, 1)?;
    let answers = baseline
        .answers
        .pop()
        .ok_or_else(|| BenchError::Run("the baseline has no answer channel".into()))?;
    for (seed, (agent, content)) in seeds.iter().enumerate() {
        // Conversation `n + 1` is seed `n`'s; its answer quotes it.
        let conversation = seed as u64 + 1;
        let envelope = Envelope {
            conversation_id: conversation,
            reply_with: conversation,
            ..Envelope::new(
                Performative::Request,
                client(0),
                Address::Agent(agent_id(*agent)),
                content.clone(),
                nanos_since(baseline.epoch),
                0,
            )
        };
        baseline
            .mailboxes
            .get(*agent)
            .ok_or_else(|| {
                BenchError::Run(format!("a seed for agent {agent}, of {}", agents.len()))
            })?
            .try_send(envelope)
            .map_err(|_| BenchError::Run(format!("agent {agent}'s mailbox refused its seed")))?;
    }
    let mut answered: Vec<Option<(Performative, Vec<u8>)>> = vec![None; seeds.len()];
    let until = Instant::now() + timeout;
    while answered.iter().any(Option::is_none) {
        let left = until.saturating_duration_since(Instant::now());
        let Ok((conversation, performative, content)) = answers.recv_timeout(left) else {
            break;
        };
        if let Some(slot) = (conversation as usize)
            .checked_sub(1)
            .and_then(|seed| answered.get_mut(seed))
        {
            *slot = Some((performative, content));
        }
    }
    let Baseline {
        runtime,
        mailboxes,
        tallies,
        ..
    } = baseline;
    drop(mailboxes);
    runtime.shutdown_timeout(Duration::from_secs(10));
    let tallies = std::mem::take(&mut *tallies.lock().unwrap_or_else(PoisonError::into_inner));
    let mut run = SeededRun {
        answers: answered,
        handled: 0,
        lost: 0,
        routing: nanosecond_histogram(),
        processing: nanosecond_histogram(),
    };
    for tally in &tallies {
        run.handled += tally.handled;
        run.lost += tally.lost;
        if let Some(routing) = &tally.routing {
            let _ = run.routing.add(routing);
        }
        if let Some(processing) = &tally.processing {
            let _ = run.processing.add(processing);
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use caxton_agents::abi::errors;
    use caxton_agents::{AgentHost, ModuleCompiler};
    use caxton_profiles::ByteSize;

    use super::*;

    /// One rule or limit of the ABI per message (see the file).
    const PROBE_WAT: &str = include_str!("../../agents/tests/abi_probe.wat");
    /// How many probes it has.
    const PROBES: u8 = 12;

    fn small_profile() -> Profile {
        let mut profile = Profile::default();
        profile.runtime.max_agents = 16;
        profile.runtime.agent_pool_size = 0;
        profile.runtime.max_memory_per_agent = ByteSize::mib(4);
        profile.agents.default_limits.memory = ByteSize::mib(4);
        profile
    }

    /// Probe `number`, asked by load generator 0 of agent 0.
    fn probe_message(number: u8) -> Envelope {
        Envelope {
            conversation_id: 5,
            reply_with: 42,
            ..Envelope::new(
                Performative::Request,
                client(0),
                Address::Agent(AgentId(0)),
                vec![number],
                0,
                0,
            )
        }
    }

    /// What each probe's handler returns on fresh baseline agents.
    fn on_the_baseline(profile: &Profile) -> Vec<i32> {
        let config = caxton_agents::engine_config(profile, PoolSizes::with_stack_each(4))
            .expect("engine config");
        let engine = Engine::new(&config).expect("engine");
        let pre = baseline_linker(&engine)
            .expect("linker")
            .instantiate_pre(&Module::new(&engine, PROBE_WAT).expect("compiles"))
            .expect("links");
        let workload = Workload {
            pattern: Pattern::RequestReply,
            agents: vec![
                ("probe".to_owned(), PROBE_WAT),
                ("echo".to_owned(), crate::standard::ECHO_WAT),
            ],
            entries: Vec::new(),
        };
        let directory = Arc::new(Directory::new(&workload.agents));
        let memory = profile.agents.default_limits.memory.bytes() as usize;
        (0..PROBES)
            .map(|number| {
                let state =
                    AgentState::new(Arc::clone(&directory), AgentId(0), Instant::now(), memory);
                let mut agent = BaselineAgent::new(&engine, &pre, state).expect("instance");
                agent.handle(probe_message(number)).0.expect("no trap")
            })
            .collect()
    }

    /// What each probe's handler returns on fresh agents of the engine's host.
    fn on_the_engine(profile: &Profile) -> Vec<i32> {
        let mut compiler = ModuleCompiler::new(profile).expect("compiler");
        let module = compiler.compile(PROBE_WAT.as_bytes()).expect("compiles");
        let mut host = AgentHost::new(
            profile,
            0,
            1,
            Rc::new(|name: &str| (name == "echo").then_some(AgentId(1))),
            Rc::new(|_| String::new()),
            Rc::new(|| 0),
        )
        .expect("host");
        (0..PROBES)
            .map(|number| {
                // A fresh agent each: tickets and state outlive a message.
                let id = AgentId(u32::from(number) + 2);
                host.deploy(id, "probe", &module, 1, &profile.agents.default_limits)
                    .expect("deploys");
                // No epoch ticker runs here, so no probe's slice ends: it finishes.
                let caxton_agents::Handling::Done(handled) =
                    host.handle(id, None, probe_message(number), 0)
                else {
                    panic!("probe {number} did not run to its end");
                };
                match handled.outcome {
                    caxton_agents::Outcome::Handled => 0,
                    caxton_agents::Outcome::AgentFailed(code) => code,
                    fault => panic!("probe {number}: {fault:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn the_baseline_and_the_engine_share_the_abi_limits() {
        let profile = small_profile();
        let baseline = on_the_baseline(&profile);
        assert_eq!(baseline, on_the_engine(&profile));
        // A deferred-reply ticket answers once; content over 1 MiB is refused.
        assert_eq!(baseline[0], errors::NO_SENDER);
        assert_eq!(baseline[2], errors::TOO_LARGE);
    }

    #[test]
    fn every_pattern_is_routed_on_the_baseline() {
        let profile = small_profile();
        let options = LoadOptions {
            rate: 500.0,
            duration: Duration::from_millis(200),
            drain: Duration::from_secs(10),
            progress: false,
            generators: None,
        };
        for (_, pattern) in Pattern::ALL {
            let workload = Workload::new(pattern, 10, None).expect("workload");
            let result = run_on_baseline(&profile, &workload, 2, 2, &options).expect("runs");
            let counts = &result.counts;
            assert_eq!(
                counts.refused + counts.timed_out,
                0,
                "{pattern:?} {counts:?}"
            );
            assert_eq!(
                counts.sent,
                counts.answered + counts.failed,
                "{pattern:?} {counts:?}"
            );
            match pattern {
                // A gatherer refuses requests that arrive during its gather.
                Pattern::FanOut => assert!(counts.answered > counts.sent / 2, "{counts:?}"),
                _ => assert_eq!(counts.answered, counts.sent, "{pattern:?} {counts:?}"),
            }
            // Every answer or delivery is timed from its message's intended send time.
            assert_eq!(
                result.latency.len(),
                counts.answered + counts.failed,
                "{pattern:?}"
            );
        }
    }
}
