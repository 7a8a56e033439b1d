//! The baseline: the conventional way to host the same agents, for
//! `--compare baseline`. One tokio multi-threaded work-stealing runtime with
//! as many workers as the node has data shards; one task per agent, owning
//! its wasmtime instance and draining a bounded tokio `mpsc` mailbox; one
//! wasmtime engine shared by all workers. The agents are the same modules
//! with the same ABI calls their patterns use (read, reply, send, forward,
//! deferred replies), and the load is the same open-loop generator.
//!
//! It is deliberately what a careful team would build first, not a straw
//! man: bounded mailboxes, `try_send` with explicit refusals, pooling
//! allocator and the profile's compiler settings, no per-message allocation
//! beyond the content.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use caxton_agents::abi::{self, errors};
use caxton_agents::{exported_memory, guest_bytes, write_guest};
use caxton_messaging::Performative;
use caxton_profiles::Profile;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use wasmtime::{Caller, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};

use crate::custom::{BenchError, LoadOptions, LoadResult, Pattern, Workload};
use crate::load::{self, Completion, Outcome, Outgoing, Port, Refused};
use crate::nanosecond_histogram;

/// Who an answer goes to.
#[derive(Clone, Copy, Debug)]
enum ReplyTarget {
    /// Load generator `n`.
    Client(usize),
    /// Agent `n` (a gather in progress).
    Agent(usize),
    /// Nobody (answers to answers).
    Nobody,
}

/// A message in a baseline mailbox.
#[derive(Debug)]
struct Message {
    performative: Performative,
    content: Vec<u8>,
    conversation_id: u64,
    reply_with: u64,
    in_reply_to: u64,
    intended_ns: u64,
    reply_to: ReplyTarget,
}

/// The store data of one baseline agent.
struct AgentState {
    limits: StoreLimits,
    current: Option<Message>,
    outbox: Vec<(usize, Message)>,
    replies: Vec<(ReplyTarget, Message)>,
    names: Arc<HashMap<String, usize>>,
    me: usize,
    epoch: Instant,
    tickets: Vec<(ReplyTarget, u64, u64)>,
}

/// Per-worker measurements: each worker thread records into its own, and
/// hands them over when it stops (the runtime's `on_thread_stop`).
#[derive(Default)]
struct WorkerTally {
    handled: u64,
    lost: u64,
    routing: Option<Histogram<u64>>,
}

thread_local! {
    static TALLY: RefCell<WorkerTally> = RefCell::new(WorkerTally::default());
}

fn host_linker(engine: &Engine) -> Result<Linker<AgentState>, BenchError> {
    let mut linker = Linker::new(engine);
    let module = abi::IMPORT_MODULE;
    let fail = |error: wasmtime::Error| BenchError::Run(format!("baseline linker: {error}"));
    linker
        .func_wrap(
            module,
            "msg_performative",
            |caller: Caller<'_, AgentState>| -> i32 {
                caller
                    .data()
                    .current
                    .as_ref()
                    .map_or(errors::NO_MESSAGE, |message| {
                        i32::from(message.performative.code())
                    })
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "msg_content_len",
            |caller: Caller<'_, AgentState>| -> i32 {
                caller
                    .data()
                    .current
                    .as_ref()
                    .map_or(errors::NO_MESSAGE, |message| {
                        i32::try_from(message.content.len()).unwrap_or(i32::MAX)
                    })
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "msg_read_content",
            |mut caller: Caller<'_, AgentState>, pointer: i32, capacity: i32| -> i32 {
                let Some(content) = caller
                    .data_mut()
                    .current
                    .as_mut()
                    .map(|message| std::mem::take(&mut message.content))
                else {
                    return errors::NO_MESSAGE;
                };
                let written = write_guest(&mut caller, pointer, capacity, &content);
                if let Some(message) = caller.data_mut().current.as_mut() {
                    message.content = content;
                }
                written
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "msg_in_reply_to",
            |caller: Caller<'_, AgentState>| -> i64 {
                caller
                    .data()
                    .current
                    .as_ref()
                    .map_or(i64::from(errors::NO_MESSAGE), |message| {
                        message.in_reply_to as i64
                    })
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(module, "now_ns", |caller: Caller<'_, AgentState>| -> i64 {
            caller.data().epoch.elapsed().as_nanos() as i64
        })
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "reply",
            |mut caller: Caller<'_, AgentState>,
             performative: i32,
             pointer: i32,
             length: i32|
             -> i32 {
                let Some((target, conversation_id, reply_with)) =
                    caller.data().current.as_ref().map(|message| {
                        (
                            message.reply_to,
                            message.conversation_id,
                            message.reply_with,
                        )
                    })
                else {
                    return errors::NO_MESSAGE;
                };
                answer(
                    &mut caller,
                    target,
                    conversation_id,
                    reply_with,
                    performative,
                    pointer,
                    length,
                )
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "defer_reply",
            |mut caller: Caller<'_, AgentState>| -> i64 {
                let Some(ticket) = caller.data().current.as_ref().map(|message| {
                    (
                        message.reply_to,
                        message.conversation_id,
                        message.reply_with,
                    )
                }) else {
                    return i64::from(errors::NO_MESSAGE);
                };
                let tickets = &mut caller.data_mut().tickets;
                tickets.push(ticket);
                tickets.len() as i64
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "reply_to",
            |mut caller: Caller<'_, AgentState>,
             ticket: i64,
             performative: i32,
             pointer: i32,
             length: i32|
             -> i32 {
                let Some(&(target, conversation_id, reply_with)) = usize::try_from(ticket - 1)
                    .ok()
                    .and_then(|index| caller.data().tickets.get(index))
                else {
                    return errors::NO_SENDER;
                };
                answer(
                    &mut caller,
                    target,
                    conversation_id,
                    reply_with,
                    performative,
                    pointer,
                    length,
                )
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "send",
            |mut caller: Caller<'_, AgentState>,
             to_pointer: i32,
             to_length: i32,
             performative: i32,
             pointer: i32,
             length: i32,
             reply_with: i64|
             -> i32 {
                let Some(current) = caller.data().current.as_ref() else {
                    return errors::NO_MESSAGE;
                };
                let (conversation_id, intended_ns) = (current.conversation_id, current.intended_ns);
                let Some(performative) = u32::try_from(performative)
                    .ok()
                    .and_then(Performative::from_code)
                else {
                    return errors::BAD_PERFORMATIVE;
                };
                let receiver = match read_name(&mut caller, to_pointer, to_length) {
                    Ok(receiver) => receiver,
                    Err(code) => return code,
                };
                let content = match read_content(&mut caller, pointer, length) {
                    Ok(content) => content,
                    Err(code) => return code,
                };
                let me = caller.data().me;
                caller.data_mut().outbox.push((
                    receiver,
                    Message {
                        performative,
                        content,
                        conversation_id,
                        reply_with: reply_with as u64,
                        in_reply_to: 0,
                        intended_ns,
                        reply_to: ReplyTarget::Agent(me),
                    },
                ));
                0
            },
        )
        .map_err(fail)?;
    linker
        .func_wrap(
            module,
            "forward",
            |mut caller: Caller<'_, AgentState>,
             to_pointer: i32,
             to_length: i32,
             pointer: i32,
             length: i32|
             -> i32 {
                let receiver = match read_name(&mut caller, to_pointer, to_length) {
                    Ok(receiver) => receiver,
                    Err(code) => return code,
                };
                let content = match read_content(&mut caller, pointer, length) {
                    Ok(content) => content,
                    Err(code) => return code,
                };
                let Some(current) = caller.data().current.as_ref() else {
                    return errors::NO_MESSAGE;
                };
                let forwarded = Message {
                    performative: current.performative,
                    content,
                    conversation_id: current.conversation_id,
                    reply_with: current.reply_with,
                    in_reply_to: current.in_reply_to,
                    intended_ns: current.intended_ns,
                    reply_to: current.reply_to,
                };
                caller.data_mut().outbox.push((receiver, forwarded));
                0
            },
        )
        .map_err(fail)?;
    Ok(linker)
}

fn read_name(caller: &mut Caller<'_, AgentState>, pointer: i32, length: i32) -> Result<usize, i32> {
    let memory = exported_memory(caller).ok_or(errors::OUT_OF_BOUNDS)?;
    let bytes = guest_bytes(memory.data(&*caller), pointer, length).ok_or(errors::OUT_OF_BOUNDS)?;
    let name = std::str::from_utf8(bytes).map_err(|_| errors::BAD_UTF8)?;
    caller
        .data()
        .names
        .get(name)
        .copied()
        .ok_or(errors::UNKNOWN_RECEIVER)
}

fn read_content(
    caller: &mut Caller<'_, AgentState>,
    pointer: i32,
    length: i32,
) -> Result<Vec<u8>, i32> {
    if caller.data().outbox.len() >= abi::SENDS_PER_MESSAGE_MAX {
        return Err(errors::OUTBOX_FULL);
    }
    let memory = exported_memory(caller).ok_or(errors::OUT_OF_BOUNDS)?;
    guest_bytes(memory.data(&*caller), pointer, length)
        .map(<[u8]>::to_vec)
        .ok_or(errors::OUT_OF_BOUNDS)
}

fn answer(
    caller: &mut Caller<'_, AgentState>,
    target: ReplyTarget,
    conversation_id: u64,
    in_reply_to: u64,
    performative: i32,
    pointer: i32,
    length: i32,
) -> i32 {
    let Some(performative) = u32::try_from(performative)
        .ok()
        .and_then(Performative::from_code)
    else {
        return errors::BAD_PERFORMATIVE;
    };
    let content = match read_content(caller, pointer, length) {
        Ok(content) => content,
        Err(code) => return code,
    };
    caller.data_mut().replies.push((
        target,
        Message {
            performative,
            content,
            conversation_id,
            reply_with: 0,
            in_reply_to,
            intended_ns: 0,
            reply_to: ReplyTarget::Nobody,
        },
    ));
    0
}

/// What a generator receives: (conversation id, performative).
type Answer = (u64, Performative);

/// A running baseline: the runtime, the mailboxes, the answer channels.
struct Baseline {
    runtime: tokio::runtime::Runtime,
    mailboxes: Arc<Vec<mpsc::Sender<Message>>>,
    answers: Vec<std_mpsc::Receiver<Answer>>,
    epoch: Instant,
    tallies: Arc<Mutex<Vec<WorkerTally>>>,
}

fn start(
    profile: &Profile,
    workload: &Workload,
    workers: usize,
    generators: usize,
) -> Result<Baseline, BenchError> {
    let config = caxton_agents::engine_config(profile, workload.agents.len() as u32 + 16)
        .map_err(|error| BenchError::Run(format!("baseline engine: {error}")))?;
    let engine = Engine::new(&config)
        .map_err(|error| BenchError::Run(format!("baseline engine: {error}")))?;
    let linker = host_linker(&engine)?;
    let names: Arc<HashMap<String, usize>> = Arc::new(
        workload
            .agents
            .iter()
            .enumerate()
            .map(|(index, (name, _))| (name.clone(), index))
            .collect(),
    );
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
    // The same bound as Caxton: `messaging.queue_size` messages per shard
    // (here: per worker), shared out over the agents' mailboxes.
    let capacity = (profile.messaging.queue_size as usize * workers / workload.agents.len().max(1))
        .clamp(16, 65_536);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workload.agents.len())
        .map(|_| mpsc::channel::<Message>(capacity))
        .unzip();
    let mailboxes = Arc::new(senders);
    let mut answer_senders = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..generators {
        let (sender, receiver) = std_mpsc::channel();
        answer_senders.push(sender);
        answers.push(receiver);
    }
    let answer_senders = Arc::new(answer_senders);
    let epoch = Instant::now();
    let mut modules: HashMap<&str, wasmtime::InstancePre<AgentState>> = HashMap::new();
    let one_way = workload.pattern == Pattern::OneWay;
    let memory = profile.agents.default_limits.memory.bytes() as usize;
    for ((index, (_, wat)), mut mailbox) in workload.agents.iter().enumerate().zip(receivers) {
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
        let state = AgentState {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(1)
                .build(),
            current: None,
            outbox: Vec::new(),
            replies: Vec::new(),
            names: Arc::clone(&names),
            me: index,
            epoch,
            tickets: Vec::new(),
        };
        let mut store = Store::new(&engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|error| BenchError::Run(format!("baseline instance: {error}")))?;
        let handle = instance
            .get_typed_func::<(), i32>(&mut store, abi::EXPORT_HANDLE)
            .map_err(|error| BenchError::Run(format!("baseline instance: {error}")))?;
        let peers = Arc::clone(&mailboxes);
        let answer_senders = Arc::clone(&answer_senders);
        runtime.spawn(async move {
            while let Some(message) = mailbox.recv().await {
                let started = epoch.elapsed().as_nanos() as u64;
                let reply_to = message.reply_to;
                let conversation_id = message.conversation_id;
                if one_way {
                    TALLY.with(|tally| {
                        tally
                            .borrow_mut()
                            .routing
                            .get_or_insert_with(nanosecond_histogram)
                            .saturating_record(started.saturating_sub(message.intended_ns).max(1));
                    });
                }
                store.data_mut().current = Some(message);
                let result = handle.call(&mut store, ());
                let state = store.data_mut();
                state.current = None;
                let mut lost = 0;
                for (receiver, outgoing) in state.outbox.drain(..) {
                    if peers[receiver].try_send(outgoing).is_err() {
                        lost += 1;
                    }
                }
                for (target, reply) in state.replies.drain(..) {
                    let delivered = match target {
                        ReplyTarget::Client(generator) => answer_senders[generator]
                            .send((reply.conversation_id, reply.performative))
                            .is_ok(),
                        ReplyTarget::Agent(agent) => peers[agent].try_send(reply).is_ok(),
                        ReplyTarget::Nobody => true,
                    };
                    lost += u64::from(!delivered);
                }
                if !matches!(result, Ok(0)) {
                    if let ReplyTarget::Client(generator) = reply_to {
                        let _ = answer_senders[generator]
                            .send((conversation_id, Performative::Failure));
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

/// A generator's way into the baseline.
struct BaselinePort {
    mailboxes: Arc<Vec<mpsc::Sender<Message>>>,
    entries: Arc<Vec<(usize, Vec<u8>)>>,
    answers: std_mpsc::Receiver<Answer>,
    performative: Performative,
    epoch: Instant,
    index: usize,
    generators: u64,
    next_token: u64,
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
        self.mailboxes[*agent]
            .try_send(Message {
                performative: self.performative,
                content: content.clone(),
                conversation_id: message.sequence,
                reply_with: self.next_token,
                in_reply_to: 0,
                intended_ns: message.intended_ns,
                reply_to: ReplyTarget::Client(self.index),
            })
            .map_err(|_| Refused)
    }

    fn poll(&mut self, wait: Duration, sink: &mut dyn FnMut(Completion)) {
        let epoch = self.epoch;
        load::drain_channel(&self.answers, wait, |(sequence, performative)| {
            let outcome = if performative == Performative::Inform {
                Outcome::Answered
            } else {
                Outcome::Failed
            };
            sink(Completion {
                sequence,
                outcome,
                at_ns: epoch.elapsed().as_nanos() as u64,
            });
        });
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
    let mut baseline = start(profile, workload, workers, generators)?;
    let names: HashMap<&str, usize> = workload
        .agents
        .iter()
        .enumerate()
        .map(|(index, (name, _))| (name.as_str(), index))
        .collect();
    let entries: Arc<Vec<(usize, Vec<u8>)>> = Arc::new(
        workload
            .entries
            .iter()
            .map(|(name, content)| (names[name.as_str()], content.clone()))
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
        })
        .collect();
    let (mut counts, mut latency) =
        crate::custom::run_generators("baseline", ports, options, None)?;
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
        counts.answered = handled.min(counts.sent);
        counts.timed_out = counts.sent - counts.answered;
        latency = delivered;
    }
    Ok(LoadResult::new("baseline", options, &counts, latency))
}
