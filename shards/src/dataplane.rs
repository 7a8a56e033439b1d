//! A data shard's loop: drain the mesh into priority mailboxes, hand messages
//! to agents, route what they send, answer failures, and park or spin when
//! idle. Everything here is owned by the shard's thread.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_agents::{AgentHost, AgentStats, CompiledModule, DeployError, Outcome, StartKind};
use caxton_messaging::{
    Address, AgentId, Durability, Envelope, Mailbox, MailboxConfig, MailboxFull, MeshPort,
    Performative, Popped,
};
use caxton_profiles::{AgentLimits, Profile};

use crate::clock::NodeClock;
use crate::directory::Directory;
use crate::metrics::ShardMetrics;

/// Commands from the control plane to a shard. Sent over a std channel and
/// followed by a doorbell ring; never on a message's path.
pub(crate) enum Control {
    /// A new directory snapshot.
    Directory(Arc<Directory>),
    /// Host `instances` instances of an agent.
    Deploy {
        id: AgentId,
        name: String,
        module: CompiledModule,
        /// The module as deployed, for the shard's partition (a restarted node redeploys from it).
        source: Arc<[u8]>,
        instances: u16,
        limits: AgentLimits,
        ack: mpsc::Sender<Result<(), DeployError>>,
    },
    /// Stop hosting an agent.
    Undeploy {
        id: AgentId,
        name: String,
        ack: mpsc::Sender<bool>,
    },
    /// Hand over the agents the shard's partition held at boot.
    RecoveredAgents {
        ack: mpsc::Sender<Vec<caxton_storage::AgentRow>>,
    },
    /// Deliver again the messages the partition held unfinished at boot;
    /// answers how many.
    Redeliver { ack: mpsc::Sender<usize> },
    /// Start one more instance, and say how and how fast.
    StartInstance {
        id: AgentId,
        cold: bool,
        ack: mpsc::Sender<Result<(StartKind, Duration), DeployError>>,
    },
    /// Remove one instance (the counterpart of `StartInstance`).
    StopInstance {
        id: AgentId,
        ack: mpsc::Sender<bool>,
    },
    /// Copy out the metrics, optionally resetting them.
    Metrics {
        reset: bool,
        ack: mpsc::Sender<ShardMetrics>,
    },
    /// Copy out every agent's counters and instance count on this shard.
    AllAgentStats {
        ack: mpsc::Sender<Vec<caxton_agents::AgentCounts>>,
    },
    /// Copy out an agent's counters.
    AgentStats {
        id: AgentId,
        ack: mpsc::Sender<Option<AgentStats>>,
    },
    /// Leave the loop.
    Stop,
}

/// Prefix of the content of every `failure` the engine itself sends.
pub const FAILURE_PREFIX: &str = "caxton:";

/// The shard's state.
pub(crate) struct ShardRuntime {
    index: usize,
    data_shards: usize,
    host: AgentHost,
    directory: Rc<RefCell<Arc<Directory>>>,
    port: MeshPort,
    lanes: Vec<Mailbox>,
    next_lane: usize,
    control: mpsc::Receiver<Control>,
    batch_size: usize,
    spin: Option<Duration>,
    clock: NodeClock,
    metrics: ShardMetrics,
    /// Messages held while their agent is over its CPU budget, in arrival
    /// order, with the node-clock time their agent may run again.
    throttled: Vec<(u64, Envelope)>,
    /// The most messages held for CPU budgets (the shard's mailbox capacity).
    throttled_max: usize,
    /// Reused buffer for messages drained from the rings.
    arrived: Vec<Envelope>,
    /// The shard's storage partition, with `messaging.enable_persistence`.
    storage: Option<ShardStorage>,
}

/// A shard's side of its partition: the writer thread's handle, the
/// messages waiting to become durable, and what the partition held at boot.
pub(crate) struct ShardStorage {
    writer: caxton_storage::PartitionWriter,
    next_id: u64,
    /// Messages handed to the writer and not yet durable, with the stored
    /// parent they were sent under, if any.
    awaiting: std::collections::HashMap<u64, (Envelope, Option<u64>)>,
    /// Stored messages whose handlers sent children not all stored yet: how many are left.
    chains: std::collections::HashMap<u64, usize>,
    recovered: Option<caxton_storage::Recovered>,
}

impl ShardStorage {
    /// Open data shard `index`'s partition in `directory`; `wake` rings the shard.
    pub(crate) fn open(
        directory: &std::path::Path,
        settings: &caxton_storage::StorageSettings,
        index: usize,
        on_start: Box<dyn FnOnce() + Send>,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<Self, String> {
        let path = caxton_storage::partition_path(directory, index);
        let (writer, recovered) = caxton_storage::PartitionWriter::start(
            &path,
            settings,
            format!("caxton-store-{index}"),
            on_start,
            wake,
        )
        .map_err(|error| format!("storage partition: {error}"))?;
        // Ids carry the shard in their high bits: unique across the node's partitions.
        let first = ((index as u64) + 1) << 48;
        Ok(Self {
            writer,
            next_id: recovered.next_id.max(first),
            awaiting: std::collections::HashMap::new(),
            chains: std::collections::HashMap::new(),
            recovered: Some(recovered),
        })
    }
}

/// Where answers to redelivered messages go: their senders did not survive
/// the restart. Answers to it are counted as undeliverable and dropped.
pub const NOBODY: Address = Address::Client {
    shard: u16::MAX,
    client: u32::MAX,
};

impl ShardRuntime {
    pub(crate) fn new(
        profile: &Profile,
        index: usize,
        shards: usize,
        port: MeshPort,
        control: mpsc::Receiver<Control>,
        clock: NodeClock,
        storage: Option<ShardStorage>,
    ) -> Result<Self, DeployError> {
        let directory: Rc<RefCell<Arc<Directory>>> = Rc::default();
        let resolver = {
            let directory = Rc::clone(&directory);
            Rc::new(move |name: &str| directory.borrow().resolve(name))
        };
        let namer = {
            let directory = Rc::clone(&directory);
            Rc::new(move |address: Address| directory.borrow().name_of(address))
        };
        let host = AgentHost::new(
            profile,
            index as u16,
            resolver,
            namer,
            Rc::new(move || clock.now_ns()),
        )?;
        let messaging = &profile.messaging;
        let routing = &messaging.priority_routing;
        let class_max_latency_ns = if routing.enabled {
            let mut classes: Vec<_> = routing.queues.iter().collect();
            classes.sort_by_key(|class| class.priority);
            classes
                .iter()
                .map(|class| Some(duration_ns(class.max_latency.get())))
                .collect()
        } else {
            vec![None]
        };
        // max_concurrent_messages is split evenly over the data shards, so that
        // no shard consults another to enforce it; queue_size bounds each shard.
        let share = (profile.runtime.max_concurrent_messages as usize).div_ceil(shards.max(1));
        let capacity = (messaging.queue_size as usize).min(share).max(1);
        let lanes_count = messaging.parallel_routes.max(1) as usize;
        let lane_capacity = capacity.div_ceil(lanes_count).max(1);
        let lanes = (0..lanes_count)
            .map(|_| {
                Mailbox::new(MailboxConfig {
                    capacity: lane_capacity,
                    delivery_timeout_ns: duration_ns(messaging.delivery_timeout.get()),
                    class_max_latency_ns: class_max_latency_ns.clone(),
                })
            })
            .collect();
        Ok(Self {
            index,
            data_shards: shards,
            host,
            directory,
            port,
            lanes,
            next_lane: 0,
            control,
            batch_size: messaging.batch_size.max(1) as usize,
            spin: profile.runtime.spin_before_park.map(|spin| spin.get()),
            clock,
            metrics: ShardMetrics::default(),
            throttled: Vec::new(),
            throttled_max: capacity,
            arrived: Vec::new(),
            storage,
        })
    }

    /// This shard's agent host (for the epoch ticker).
    pub(crate) fn host(&self) -> &AgentHost {
        &self.host
    }

    /// Run until told to stop.
    pub(crate) async fn run(mut self) {
        let mut last_work = Instant::now();
        loop {
            let (control_work, stop) = self.serve_control();
            if stop {
                self.refuse_remaining();
                return;
            }
            let stored = self.serve_storage();
            let received = self.receive();
            let released = self.release_throttled();
            let handled = self.handle_batch();
            if control_work || stored > 0 || received > 0 || released > 0 || handled > 0 {
                last_work = Instant::now();
                glommio::yield_if_needed().await;
                continue;
            }
            match self.spin {
                // Busy-poll the rings for a while after the last message: a
                // message that arrives in this window is picked up without a wake-up.
                Some(spin) if last_work.elapsed() < spin => yield_now().await,
                _ => {
                    // Idle: top up warm spares, one at a time so a message
                    // arriving meanwhile waits for at most one instantiation.
                    if self.host.refill_spares_step(1) > 0 {
                        continue;
                    }
                    // Throttled messages wake the shard when their agent's next window opens.
                    let resume_in = self.throttled_resume_ns().map(|resume_ns| {
                        Duration::from_nanos(resume_ns.saturating_sub(self.clock.now_ns()))
                    });
                    wait_for_messages_or(&self.port, resume_in).await;
                }
            }
        }
    }

    fn serve_control(&mut self) -> (bool, bool) {
        self.port.take_control_flag();
        let mut worked = false;
        while let Ok(command) = self.control.try_recv() {
            worked = true;
            match command {
                Control::Directory(directory) => *self.directory.borrow_mut() = directory,
                Control::Deploy {
                    id,
                    name,
                    module,
                    source,
                    instances,
                    limits,
                    ack,
                } => {
                    let deployed = self.host.deploy(id, &name, &module, instances, &limits);
                    if deployed.is_ok() {
                        // After a restart: the agent's state on this shard comes back with it.
                        let recovered_state: Vec<(Vec<u8>, Vec<u8>)> = self
                            .storage
                            .as_mut()
                            .and_then(|storage| storage.recovered.as_mut())
                            .map(|recovered| {
                                let (mine, others) = std::mem::take(&mut recovered.state)
                                    .into_iter()
                                    .partition(|(agent, _, _)| *agent == name);
                                recovered.state = others;
                                mine.into_iter()
                                    .map(|(_, key, value)| (key, value))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if !recovered_state.is_empty() {
                            self.host.seed_state(id, recovered_state);
                        }
                        if let Some(storage) = &self.storage {
                            storage.writer.write(caxton_storage::Write::PutAgent(
                                caxton_storage::AgentRow {
                                    name,
                                    module: source.to_vec(),
                                    instances,
                                    limits: serde_json::to_string(&limits).unwrap_or_default(),
                                },
                            ));
                        }
                    }
                    let _ = ack.send(deployed);
                }
                Control::Undeploy { id, name, ack } => {
                    let _ = ack.send(self.host.undeploy(id));
                    if let Some(storage) = &self.storage {
                        storage
                            .writer
                            .write(caxton_storage::Write::RemoveAgent { name });
                    }
                    self.send_abandoned();
                }
                Control::RecoveredAgents { ack } => {
                    let agents = self
                        .storage
                        .as_mut()
                        .and_then(|storage| storage.recovered.as_mut())
                        .map(|recovered| std::mem::take(&mut recovered.agents))
                        .unwrap_or_default();
                    let _ = ack.send(agents);
                }
                Control::Redeliver { ack } => {
                    let _ = ack.send(self.redeliver());
                }
                Control::StartInstance { id, cold, ack } => {
                    let started = Instant::now();
                    let result = self
                        .host
                        .add_instance(id, cold)
                        .map(|(_, kind)| (kind, started.elapsed()));
                    let _ = ack.send(result);
                }
                Control::StopInstance { id, ack } => {
                    let _ = ack.send(self.host.remove_instance(id));
                    self.send_abandoned();
                }
                Control::Metrics { reset, ack } => {
                    self.record_startups();
                    self.metrics.queue_depth =
                        self.lanes.iter().map(|lane| lane.len() as u64).sum::<u64>()
                            + self.throttled.len() as u64;
                    if let Some(storage) = &self.storage {
                        let (transactions, writes) = storage.writer.committed();
                        self.metrics.storage_transactions = transactions;
                        self.metrics.storage_writes = writes;
                    }
                    let _ = ack.send(self.metrics.clone());
                    if reset {
                        self.metrics.reset();
                    }
                }
                Control::AllAgentStats { ack } => {
                    let _ = ack.send(self.host.all_stats());
                }
                Control::AgentStats { id, ack } => {
                    let _ = ack.send(self.host.stats(id).cloned());
                }
                Control::Stop => return (worked, true),
            }
        }
        (worked, false)
    }

    /// Move messages from the rings into the mailboxes, refusing what does not fit.
    fn receive(&mut self) -> usize {
        // One buffer for the shard's lifetime: a drain allocates nothing.
        let mut arrived = std::mem::take(&mut self.arrived);
        let taken = self
            .port
            .drain(self.batch_size, |envelope| arrived.push(envelope));
        let now = self.clock.now_ns();
        for envelope in arrived.drain(..) {
            if let Durability::ChainAck(parent) = envelope.durability {
                self.chain_ack(parent);
                continue;
            }
            if matches!(
                envelope.durability,
                Durability::Requested | Durability::Chained(_)
            ) && !matches!(envelope.receiver, Address::Client { .. })
            {
                self.persist(envelope);
                continue;
            }
            match envelope.receiver {
                Address::Agent(_) => self.accept(envelope, now),
                Address::Instance(instance) if usize::from(instance.shard) == self.index => {
                    self.accept(envelope, now)
                }
                // Not for this shard (a client's mistake, or a stale route): send it
                // on or answer `failure`; only messages for local agents enter a mailbox.
                Address::Instance(_) | Address::Client { .. } => self.dispatch(envelope),
            }
        }
        self.arrived = arrived;
        taken
    }

    fn accept(&mut self, envelope: Envelope, now: u64) {
        let lane = match envelope.receiver {
            Address::Agent(id) => id.0 as usize,
            Address::Instance(instance) => instance.agent.0 as usize,
            Address::Client { .. } => 0,
        } % self.lanes.len();
        if let Err(MailboxFull(refused)) = self.lanes[lane].push(envelope, now) {
            self.metrics.refused += 1;
            self.fail(&refused, "refused:queue-full");
        }
    }

    /// Handle up to `batch_size` messages, serving the lanes in turn.
    fn handle_batch(&mut self) -> usize {
        let mut handled = 0;
        let mut empty_lanes = 0;
        while handled < self.batch_size && empty_lanes < self.lanes.len() {
            let lane = self.next_lane;
            self.next_lane = (self.next_lane + 1) % self.lanes.len();
            let now = self.clock.now_ns();
            match self.lanes[lane].pop(now) {
                Popped::Empty => empty_lanes += 1,
                Popped::Expired(envelope) => {
                    empty_lanes = 0;
                    handled += 1;
                    self.metrics.timeouts += 1;
                    self.fail(&envelope, "timeout");
                }
                Popped::Ready(envelope) => {
                    empty_lanes = 0;
                    handled += 1;
                    self.deliver(envelope, now);
                }
            }
        }
        handled
    }

    fn deliver(&mut self, envelope: Envelope, started_ns: u64) {
        let (agent, slot) = match envelope.receiver {
            Address::Agent(id) => (id, None),
            Address::Instance(instance) => (instance.agent, Some(instance.slot)),
            Address::Client { .. } => {
                unreachable!("client-bound messages never enter a shard mailbox")
            }
        };
        // An agent past its cpu_shares waits for its next window; so do its
        // later messages, which must not overtake the held ones.
        // Follow-ons wait for the same window as the held head, so the shard
        // sleeps until then instead of re-checking them.
        let held_until = self
            .throttled
            .iter()
            .filter(|(_, held)| receiver_agent(held) == Some(agent))
            .map(|(resume_ns, _)| *resume_ns)
            .max();
        if let Some(resume_ns) =
            held_until.or_else(|| self.host.cpu_blocked_until(agent, started_ns))
        {
            self.hold(envelope, resume_ns);
            return;
        }
        let routing_ns = started_ns.saturating_sub(envelope.sent_at_ns);
        if usize::from(envelope.from_shard) == self.index {
            self.metrics
                .routing_local_ns
                .saturating_record(routing_ns.max(1));
        } else {
            self.metrics
                .routing_cross_ns
                .saturating_record(routing_ns.max(1));
        }
        let request = RequestSummary::of(&envelope);
        let durability = envelope.durability;
        let Some(handled) = self.host.handle(agent, slot, envelope) else {
            self.metrics.unknown_receiver += 1;
            self.mark_done(durability);
            self.fail_summary(&request, "unknown-agent");
            return;
        };
        // The handler ran: a stored message is finished whatever it did, once
        // every message it sent to agents is stored too (see `chain_ack`).
        let children = match (durability, &self.storage) {
            (Durability::Stored(_), Some(_)) => handled
                .outbox
                .iter()
                .filter(|outbound| !matches!(outbound.receiver, Address::Client { .. }))
                .count(),
            _ => 0,
        };
        let child_durability = match durability {
            Durability::Stored(id) if children > 0 => {
                if let Some(storage) = self.storage.as_mut() {
                    storage.chains.insert(id, children);
                }
                Durability::Chained(id)
            }
            _ => {
                self.mark_done(durability);
                Durability::Transient
            }
        };
        if !handled.state_writes.is_empty() {
            if let Some(storage) = &self.storage {
                let name = self.directory.borrow().name_of(Address::Agent(agent));
                for (key, value) in handled.state_writes {
                    storage.writer.write(caxton_storage::Write::PutState {
                        agent: name.clone(),
                        key,
                        value,
                    });
                }
            }
        }
        let finished_ns = self.clock.now_ns();
        self.send_abandoned();
        self.record_startups();
        self.metrics
            .processing_ns
            .saturating_record(finished_ns.saturating_sub(started_ns).max(1));
        self.metrics.handled += 1;
        match &handled.outcome {
            Outcome::Handled => {}
            Outcome::AgentFailed(code) => {
                self.metrics.agent_failures += 1;
                self.fail_summary(&request, &format!("agent-failed:{code}"));
            }
            Outcome::Trapped(reason) => {
                self.metrics.faults += 1;
                self.fail_summary(&request, &format!("trap:{reason}"));
            }
            Outcome::TimedOut => {
                self.metrics.faults += 1;
                self.fail_summary(&request, "execution-time");
            }
            Outcome::MemoryExceeded => {
                self.metrics.faults += 1;
                self.fail_summary(&request, "memory-limit");
            }
        }
        for outbound in handled.outbox {
            let envelope = Envelope {
                performative: outbound.performative,
                sender: outbound
                    .on_behalf_of
                    .unwrap_or(Address::Instance(handled.instance)),
                receiver: outbound.receiver,
                conversation_id: outbound.conversation_id,
                reply_with: outbound.reply_with,
                in_reply_to: outbound.in_reply_to,
                priority: request.priority,
                deadline_ns: Envelope::NO_DEADLINE,
                sent_at_ns: finished_ns,
                from_shard: self.index as u16,
                durability: if matches!(outbound.receiver, Address::Client { .. }) {
                    Durability::Transient
                } else {
                    child_durability
                },
                content: outbound.content,
            };
            self.dispatch(envelope);
        }
    }

    /// Send the failure answers of deferred replies whose instance was dropped.
    /// Move the agent host's instance startup times into this shard's histogram.
    fn record_startups(&mut self) {
        for nanos in self.host.take_startup_times() {
            self.metrics.startup_ns.saturating_record(nanos);
        }
    }

    /// Hand `envelope` to the writer; it is accepted once durable.
    fn persist(&mut self, mut envelope: Envelope) {
        let parent = match envelope.durability {
            Durability::Chained(parent) => Some(parent),
            _ => None,
        };
        let Some(storage) = self.storage.as_mut() else {
            self.notice(
                &envelope,
                Performative::Refuse,
                0,
                b"caxton:persistence-off: this node runs without messaging.enable_persistence"
                    .to_vec(),
            );
            return;
        };
        let Some(agent) = receiver_agent(&envelope) else {
            self.fail(&envelope, "unknown-agent");
            return;
        };
        let receiver = self.directory.borrow().name_of(Address::Agent(agent));
        let id = storage.next_id;
        storage.next_id += 1;
        envelope.durability = Durability::Stored(id);
        let written = storage.writer.write(caxton_storage::Write::Persist {
            id,
            receiver,
            conversation_id: envelope.conversation_id,
            envelope: envelope.encode(),
        });
        if written {
            storage.awaiting.insert(id, (envelope, parent));
        } else {
            self.metrics.storage_failures += 1;
            self.refuse_unstored(&envelope, parent, "writer-stopped");
        }
    }

    /// Act on what the writer has reported: accept what became durable,
    /// refuse what could not be kept.
    fn serve_storage(&mut self) -> usize {
        let mut served = 0;
        loop {
            let Some(event) = self
                .storage
                .as_ref()
                .and_then(|storage| storage.writer.next_event())
            else {
                return served;
            };
            served += 1;
            match event {
                caxton_storage::StorageEvent::Durable(ids) => {
                    let now = self.clock.now_ns();
                    for id in ids {
                        let Some((envelope, parent)) = self
                            .storage
                            .as_mut()
                            .and_then(|storage| storage.awaiting.remove(&id))
                        else {
                            continue;
                        };
                        self.metrics.persisted += 1;
                        match parent {
                            // A hop of a stored chain: its parent may now be finished.
                            Some(parent) => self.send_chain_ack(parent),
                            None => self.notice(&envelope, Performative::Agree, id, Vec::new()),
                        }
                        self.accept(envelope, now);
                    }
                }
                caxton_storage::StorageEvent::Failed { ids, reason } => {
                    for id in ids {
                        let Some((envelope, parent)) = self
                            .storage
                            .as_mut()
                            .and_then(|storage| storage.awaiting.remove(&id))
                        else {
                            continue;
                        };
                        self.metrics.storage_failures += 1;
                        self.refuse_unstored(&envelope, parent, &reason);
                    }
                }
                caxton_storage::StorageEvent::Expired(count) => self.metrics.expired += count,
            }
        }
    }

    /// A message that could not be stored. A client's send is refused (its
    /// sender hears why). An agent's hop of a stored chain is answered
    /// `failure`, and its parent is left unfinished: the next start runs the
    /// parent again, and with it this hop.
    fn refuse_unstored(&mut self, envelope: &Envelope, parent: Option<u64>, reason: &str) {
        match parent {
            None => {
                let content = format!("{FAILURE_PREFIX}storage:{reason}").into_bytes();
                self.notice(envelope, Performative::Refuse, 0, content);
            }
            Some(_) => {
                let summary = RequestSummary::of(envelope);
                self.fail_summary(&summary, &format!("storage:{reason}"));
            }
        }
    }

    /// Tell the shard of stored message `parent` that one of its children is
    /// stored (or finished without being stored).
    fn send_chain_ack(&mut self, parent: u64) {
        let owner = ((parent >> 48) as usize).wrapping_sub(1);
        if owner == self.index {
            self.chain_ack(parent);
            return;
        }
        let ack = Envelope {
            performative: Performative::Inform,
            sender: NOBODY,
            receiver: NOBODY,
            conversation_id: 0,
            reply_with: 0,
            in_reply_to: 0,
            priority: caxton_messaging::PriorityClass(0),
            deadline_ns: Envelope::NO_DEADLINE,
            sent_at_ns: self.clock.now_ns(),
            from_shard: self.index as u16,
            durability: Durability::ChainAck(parent),
            content: Vec::new(),
        };
        if owner >= self.data_shards
            || !self.port.has_ring_to(owner)
            || self.port.send(owner, ack).is_err()
        {
            // The parent stays unfinished and runs again after a restart: at least once.
            self.metrics.undeliverable += 1;
        }
    }

    /// One child of stored message `parent` is stored: finish the parent when none is left.
    fn chain_ack(&mut self, parent: u64) {
        let Some(storage) = self.storage.as_mut() else {
            return;
        };
        let finished = match storage.chains.get_mut(&parent) {
            Some(left) => {
                *left -= 1;
                *left == 0
            }
            None => false,
        };
        if finished {
            storage.chains.remove(&parent);
            self.mark_done(Durability::Stored(parent));
        }
    }

    /// The engine's answer to a send that asked for durability.
    fn notice(
        &mut self,
        request: &Envelope,
        performative: Performative,
        id: u64,
        content: Vec<u8>,
    ) {
        let notice = Envelope {
            performative,
            sender: request.receiver,
            receiver: request.sender,
            conversation_id: request.conversation_id,
            reply_with: 0,
            in_reply_to: request.reply_with,
            priority: request.priority,
            deadline_ns: Envelope::NO_DEADLINE,
            sent_at_ns: self.clock.now_ns(),
            from_shard: self.index as u16,
            durability: Durability::Notice(id),
            content,
        };
        self.dispatch(notice);
    }

    /// Tell the writer a stored message is finished.
    fn mark_done(&mut self, durability: Durability) {
        if let (Durability::Stored(id), Some(storage)) = (durability, self.storage.as_ref()) {
            storage.writer.write(caxton_storage::Write::Done { id });
        }
    }

    /// Deliver again what the partition held unfinished at boot; how many.
    fn redeliver(&mut self) -> usize {
        let pending = self
            .storage
            .as_mut()
            .and_then(|storage| storage.recovered.take())
            .map(|recovered| recovered.pending)
            .unwrap_or_default();
        let now = self.clock.now_ns();
        let mut redelivered = 0;
        for message in pending {
            let agent = self.directory.borrow().resolve(&message.receiver);
            let decoded = Envelope::decode(&message.envelope);
            match (agent, decoded) {
                (Some(agent), Ok(mut envelope)) => {
                    envelope.receiver = Address::Agent(agent);
                    envelope.sender = NOBODY;
                    envelope.durability = Durability::Stored(message.id);
                    envelope.deadline_ns = Envelope::NO_DEADLINE;
                    envelope.sent_at_ns = now;
                    envelope.from_shard = self.index as u16;
                    self.metrics.redelivered += 1;
                    redelivered += 1;
                    self.accept(envelope, now);
                }
                // Its agent is gone, or the row does not decode: finished, and counted.
                _ => {
                    self.metrics.unknown_receiver += 1;
                    self.mark_done(Durability::Stored(message.id));
                }
            }
        }
        redelivered
    }

    fn send_abandoned(&mut self) {
        for abandoned in self.host.take_abandoned() {
            let envelope = Envelope {
                performative: abandoned.performative,
                sender: abandoned.on_behalf_of.unwrap_or(abandoned.receiver),
                receiver: abandoned.receiver,
                conversation_id: abandoned.conversation_id,
                reply_with: 0,
                in_reply_to: abandoned.in_reply_to,
                priority: caxton_messaging::PriorityClass(0),
                deadline_ns: Envelope::NO_DEADLINE,
                sent_at_ns: self.clock.now_ns(),
                from_shard: self.index as u16,
                durability: caxton_messaging::Durability::Transient,
                content: abandoned.content,
            };
            self.dispatch(envelope);
        }
    }

    /// Answer everything still queued with `failure` before the shard stops:
    /// messages it accepted are never dropped silently.
    fn refuse_remaining(&mut self) {
        let mut remaining = Vec::new();
        self.port
            .drain(usize::MAX, |envelope| remaining.push(envelope));
        let now = self.clock.now_ns();
        for lane in &mut self.lanes {
            while let Popped::Ready(envelope) | Popped::Expired(envelope) = lane.pop(now) {
                remaining.push(envelope);
            }
        }
        remaining.extend(
            std::mem::take(&mut self.throttled)
                .into_iter()
                .map(|(_, envelope)| envelope),
        );
        for mut envelope in remaining {
            if let Durability::ChainAck(parent) = envelope.durability {
                // A child stored elsewhere: its parent here may be finished.
                self.chain_ack(parent);
            } else if matches!(envelope.receiver, Address::Client { .. }) {
                // Bound for a client: pass it on; the client still gets it.
                self.dispatch(envelope);
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
                self.fail(&envelope, "shutting-down");
            }
        }
        // Messages still waiting to become durable were never accepted.
        let awaiting: Vec<Envelope> = self
            .storage
            .as_mut()
            .map(|storage| {
                storage
                    .awaiting
                    .drain()
                    .filter(|(_, (_, parent))| parent.is_none())
                    .map(|(_, (envelope, _))| envelope)
                    .collect()
            })
            .unwrap_or_default();
        for envelope in awaiting {
            self.notice(
                &envelope,
                Performative::Refuse,
                0,
                b"caxton:shutting-down".to_vec(),
            );
        }
    }

    /// Hold `envelope` until `resume_ns`, or refuse it when too many are held.
    fn hold(&mut self, envelope: Envelope, resume_ns: u64) {
        if self.throttled.len() >= self.throttled_max {
            self.metrics.refused += 1;
            self.fail(&envelope, "refused:cpu-budget");
            return;
        }
        self.metrics.throttled += 1;
        self.throttled.push((resume_ns, envelope));
    }

    /// The earliest time a held message may run.
    fn throttled_resume_ns(&self) -> Option<u64> {
        self.throttled.iter().map(|(resume_ns, _)| *resume_ns).min()
    }

    /// Deliver held messages whose agents may run again, in arrival order.
    fn release_throttled(&mut self) -> usize {
        let now = self.clock.now_ns();
        if self
            .throttled_resume_ns()
            .is_none_or(|resume_ns| resume_ns > now)
        {
            return 0;
        }
        let held = std::mem::take(&mut self.throttled);
        let mut released = 0;
        for (resume_ns, envelope) in held {
            let agent = receiver_agent(&envelope);
            let still_held = self
                .throttled
                .iter()
                .any(|(_, other)| receiver_agent(other) == agent);
            if resume_ns > now || still_held {
                self.throttled.push((resume_ns, envelope));
            } else if envelope.deadline_ns < now {
                self.metrics.timeouts += 1;
                self.fail(&envelope, "timeout");
            } else {
                released += 1;
                // Re-checks the budget: a burst may use it up again.
                self.deliver(envelope, now);
            }
        }
        released
    }

    /// Route `envelope` sent on this shard: into a local mailbox, a ring to
    /// another shard, or a ring to a client.
    fn dispatch(&mut self, envelope: Envelope) {
        if envelope.receiver == NOBODY {
            self.metrics.undeliverable += 1;
            return;
        }
        let data_shards = self.data_shards;
        let target = match envelope.receiver {
            Address::Client { shard, .. } => {
                Some(usize::from(shard)).filter(|&participant| participant >= data_shards)
            }
            Address::Instance(instance) => {
                Some(usize::from(instance.shard)).filter(|&shard| shard < data_shards)
            }
            Address::Agent(id) => {
                self.directory
                    .borrow()
                    .route(id, Some(self.index), sender_key(envelope.sender))
            }
        };
        let Some(target) =
            target.filter(|&target| target == self.index || self.port.has_ring_to(target))
        else {
            self.metrics.unknown_receiver += 1;
            self.fail(&envelope, "unknown-agent");
            return;
        };
        if target == self.index {
            if matches!(envelope.durability, Durability::Chained(_)) {
                self.persist(envelope);
                return;
            }
            let now = self.clock.now_ns();
            self.accept(envelope, now);
        } else if let Err(refused) = self.port.send(target, envelope) {
            self.metrics.refused += 1;
            if matches!(refused.durability, Durability::Notice(_)) {
                // The engine's own notice to a client that is not reading: the
                // message stays stored (and is handled); the client's wait
                // times out and says it may have been stored.
                self.metrics.undeliverable += 1;
            } else {
                self.fail(&refused, "refused:ring-full");
            }
        }
    }

    /// Answer `envelope`'s sender with an engine `failure`.
    fn fail(&mut self, envelope: &Envelope, reason: &str) {
        // Answered: a stored message is finished, even though no handler ran;
        // a hop that never got stored no longer holds its parent back.
        match envelope.durability {
            Durability::Chained(parent) => self.send_chain_ack(parent),
            durability => self.mark_done(durability),
        }
        self.fail_summary(&RequestSummary::of(envelope), reason);
    }

    fn fail_summary(&mut self, request: &RequestSummary, reason: &str) {
        // A failure about a failure is not answered: that could ping-pong forever.
        if request.performative == Performative::Failure {
            self.metrics.undeliverable += 1;
            return;
        }
        let failure = Envelope {
            performative: Performative::Failure,
            sender: request.receiver,
            receiver: request.sender,
            conversation_id: request.conversation_id,
            reply_with: 0,
            in_reply_to: request.reply_with,
            priority: request.priority,
            deadline_ns: Envelope::NO_DEADLINE,
            sent_at_ns: self.clock.now_ns(),
            from_shard: self.index as u16,
            durability: caxton_messaging::Durability::Transient,
            content: format!("{FAILURE_PREFIX}{reason}").into_bytes(),
        };
        self.dispatch(failure);
    }
}

/// What a failure answer needs from the message it answers.
struct RequestSummary {
    performative: Performative,
    sender: Address,
    receiver: Address,
    conversation_id: u64,
    reply_with: u64,
    priority: caxton_messaging::PriorityClass,
}

impl RequestSummary {
    fn of(envelope: &Envelope) -> Self {
        Self {
            performative: envelope.performative,
            sender: envelope.sender,
            receiver: envelope.receiver,
            conversation_id: envelope.conversation_id,
            reply_with: envelope.reply_with,
            priority: envelope.priority,
        }
    }
}

/// The agent a message is for, if it is for an agent.
fn receiver_agent(envelope: &Envelope) -> Option<AgentId> {
    match envelope.receiver {
        Address::Agent(id) => Some(id),
        Address::Instance(instance) => Some(instance.agent),
        Address::Client { .. } => None,
    }
}

/// Wait for the shard's doorbell, or at most `timeout` when given.
async fn wait_for_messages_or(port: &MeshPort, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        port.wait_for_messages().await;
        return;
    };
    let mut timer = std::pin::pin!(glommio::timer::Timer::new(timeout));
    let mut rung = std::pin::pin!(port.wait_for_messages());
    std::future::poll_fn(|context| {
        if timer.as_mut().poll(context).is_ready() || rung.as_mut().poll(context).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A stable number per sender, so one sender's messages take one path.
fn sender_key(sender: Address) -> u64 {
    match sender {
        Address::Agent(id) => u64::from(id.0),
        Address::Instance(instance) => {
            (u64::from(instance.agent.0) << 32)
                | (u64::from(instance.shard) << 16)
                | u64::from(instance.slot)
        }
        Address::Client { shard, client } => {
            (1 << 63) | (u64::from(shard) << 32) | u64::from(client)
        }
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Yield once to the executor so other tasks and I/O get a turn.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|context| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        context.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}
