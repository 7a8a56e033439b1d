//! A data shard's driver: the thin glommio loop around the shard core. Each
//! turn it reads the clock, serves control commands, hands the partition
//! writer's reports, the rings' messages and the due held messages to the
//! core, moves what waited for a slow client's ring onto it, lets the core
//! handle a batch, gives each suspended handler one more time slice, and
//! parks or spins when idle (never while a handler is suspended). The
//! decisions are the core's (`crate::core`); this file owns the threads'
//! side: the clock, the rings, wasmtime, the writer, and waiting.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_agents::{AgentHost, DeployError, TickDemand};
use caxton_messaging::idle_poll::PollContention;
use caxton_messaging::{Address, Envelope, MeshPort};
use caxton_profiles::Profile;
use caxton_storage::{PartitionWriter, Recovered, Write};

use crate::clock::NodeClock;
use crate::control::Control;
use crate::core::{CoreLimits, MeshIo, ShardCore, WasmAgents};
use crate::directory::Directory;
use crate::node::IdleSpin;

/// How often an idle shard looks for room in the ring of a client it holds
/// messages for: a client that reads rings no doorbell of the shard. Only a
/// client that has fallen behind pays this (its answers wait at most this
/// much longer than its reading); an idle shard wakes this often only
/// while such messages wait.
const CLIENT_ROOM_POLL: Duration = Duration::from_micros(200);

/// After a handler that ran this long, what the turn's handlers so far left
/// waiting in the mesh port goes out before the next handler runs, rather
/// than at the turn's end: it has waited behind one long handler already
/// and would wait behind the rest of the batch too. Echo-sized handlers
/// take well under a microsecond, so a busy turn still sends once.
const LONG_HANDLER_NS: u64 = 20_000;

/// A shard's side of its partition: the writer thread's handle, and what
/// the partition held at boot until recovery takes it.
pub(crate) struct ShardStorage {
    writer: PartitionWriter,
    recovered: Option<Recovered>,
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
        let (writer, recovered) = PartitionWriter::start(
            &path,
            settings,
            format!("caxton-store-{index}"),
            on_start,
            wake,
        )
        .map_err(|error| format!("storage partition: {error}"))?;
        Ok(Self {
            writer,
            recovered: Some(recovered),
        })
    }

    /// The first message id free in this partition (data shard `index`'s).
    fn first_id(&self, index: usize) -> u64 {
        let recovered = self
            .recovered
            .as_ref()
            .map_or(0, |recovered| recovered.next_id);
        recovered.max(caxton_storage::durability::first_id(index))
    }
}

/// See the module docs.
pub(crate) struct ShardDriver {
    core: ShardCore,
    host: AgentHost,
    /// The snapshot the agents' `send` and `msg_sender` read; the core holds
    /// the same snapshot for routing.
    host_directory: Rc<RefCell<Arc<Directory>>>,
    port: MeshPort,
    control: mpsc::Receiver<Control>,
    batch_size: usize,
    /// With priority classes, take from each ring whatever the mailboxes
    /// have room for, not a batch: a message waiting in a ring waits in
    /// arrival order, and an urgent one behind a backlog there could not
    /// overtake it (nor would its class's deadline, which counts from its
    /// admission to a mailbox, see the wait).
    drain_eagerly: bool,
    spin: Option<IdleSpin>,
    clock: NodeClock,
    /// Reused buffer for messages drained from the rings.
    arrived: Vec<Envelope>,
    /// Reused buffer for suspended handlers that finished this turn.
    finished: Vec<caxton_agents::Handled>,
    storage: Option<ShardStorage>,
    /// Told when this shard parks and wakes, so the epoch ticker parks
    /// while every shard sleeps; and the shard's index there.
    ticks: Arc<TickDemand>,
    index: usize,
    /// Whether polling while idle still pays: not when another process's
    /// thread takes this shard's CPU after its idle polls.
    contention: PollContention,
}

/// What a shard's driver is built from.
pub(crate) struct ShardDriverBoot<'a> {
    pub(crate) profile: &'a Profile,
    pub(crate) index: usize,
    pub(crate) data_shards: usize,
    pub(crate) port: MeshPort,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) clock: NodeClock,
    /// What an idle shard does before parking (the node decides:
    /// [`crate::node::spin_before_park`]).
    pub(crate) spin: Option<IdleSpin>,
    pub(crate) storage: Option<ShardStorage>,
    pub(crate) ticks: Arc<TickDemand>,
    /// Stored messages wait for the cluster directory ([`ShardCore::await_directory`]).
    pub(crate) await_directory: bool,
}

impl ShardDriver {
    pub(crate) fn new(boot: ShardDriverBoot<'_>) -> Result<Self, DeployError> {
        let ShardDriverBoot {
            profile,
            index,
            data_shards,
            port,
            control,
            clock,
            spin,
            storage,
            ticks,
            await_directory,
        } = boot;
        let host_directory: Rc<RefCell<Arc<Directory>>> = Rc::default();
        let resolver = {
            let directory = Rc::clone(&host_directory);
            Rc::new(move |name: &str| directory.borrow().resolve_anywhere(name))
        };
        let namer = {
            let directory = Rc::clone(&host_directory);
            Rc::new(move |address: Address| directory.borrow().name_of(address))
        };
        let host = AgentHost::new(
            profile,
            index as u16,
            data_shards,
            resolver,
            namer,
            Rc::new(move || clock.now_ns()),
        )?;
        let limits = CoreLimits::from_profile(profile, data_shards);
        let first_id = storage.as_ref().map(|storage| storage.first_id(index));
        let mut core = ShardCore::new(index, data_shards, &limits, first_id);
        if await_directory {
            core.await_directory();
        }
        Ok(Self {
            core,
            host,
            host_directory,
            port,
            control,
            batch_size: profile.messaging.batch_size.max(1) as usize,
            drain_eagerly: profile.messaging.priority_routing.enabled,
            spin,
            clock,
            arrived: Vec::new(),
            finished: Vec::new(),
            storage,
            ticks,
            index,
            contention: PollContention::default(),
        })
    }

    /// This shard's agent host (for the epoch ticker).
    pub(crate) fn host(&self) -> &AgentHost {
        &self.host
    }

    /// The core and the two seams it works through, borrowed apart.
    fn parts(&mut self) -> (&mut ShardCore, WasmAgents<'_>, MeshIo<'_>) {
        (
            &mut self.core,
            WasmAgents {
                host: &mut self.host,
            },
            MeshIo {
                port: &mut self.port,
                writer: self.storage.as_ref().map(|storage| &storage.writer),
            },
        )
    }

    /// Run until told to stop.
    pub(crate) async fn run(mut self) {
        // When the shard went idle: read at the first turn that finds no
        // work, never on a busy turn (at one message per turn, as on
        // `low-latency`, a clock read per turn cost about a tenth of the
        // shard's time). The spin window runs from there.
        let mut idle_since: Option<Instant> = None;
        loop {
            let (control_work, stop) = self.serve_control();
            if stop {
                self.shut_down();
                return;
            }
            let stored = self.serve_storage();
            let flushed = self.flush_waiting();
            let received = self.receive();
            let handled = self.handle_batch();
            // Suspended handlers each run a time slice next: what the batch
            // sent goes out before them, not after.
            if self.host.has_suspended() {
                self.port.ring_deferred();
            }
            let resumed = self.resume_suspended();
            // Everything this turn sent to other shards and clients rings
            // their doorbells here, once, before the shard can wait.
            self.port.ring_deferred();
            if control_work
                || stored > 0
                || flushed > 0
                || received > 0
                || handled > 0
                || resumed > 0
                || self.host.has_runnable_suspended()
            {
                idle_since = None;
                glommio::yield_if_needed().await;
                continue;
            }
            let spinning = self.spin.is_some_and(|spin| {
                let now = Instant::now();
                let polling = now.saturating_duration_since(*idle_since.get_or_insert(now))
                    < spin.window()
                    && self.contention.may_poll(now);
                if polling {
                    self.contention.polled(now);
                }
                polling
            });
            match self.spin {
                // Busy-poll the rings for a while after the last message: a
                // message that arrives in this window is picked up without a wake-up.
                Some(IdleSpin::Hold(_)) if spinning => {
                    yield_now().await;
                    self.back_from_idle_poll();
                }
                // On a shared PU: let whoever shares it run before polling again.
                Some(IdleSpin::Yield(_)) if spinning => {
                    std::thread::yield_now();
                    yield_now().await;
                    self.back_from_idle_poll();
                }
                _ => {
                    // Idle: top up warm spares, one at a time so a message
                    // arriving meanwhile waits for at most one instantiation.
                    if self.host.refill_spares_step(1) > 0 {
                        continue;
                    }
                    // Held messages, and handlers paused for their
                    // agent's CPU share, wake the shard when the agent's
                    // next window opens.
                    let wake_ns = match (self.core.next_wake_ns(), self.host.next_paused_wake_ns())
                    {
                        (Some(held), Some(paused)) => Some(held.min(paused)),
                        (held, paused) => held.or(paused),
                    };
                    let resume_in = wake_ns.map(|resume_ns| {
                        Duration::from_nanos(resume_ns.saturating_sub(self.clock.now_ns()))
                    });
                    // A client or shard reading its ring rings no doorbell
                    // here: the shard looks again for room while messages
                    // wait for one.
                    let resume_in = if self.core.waiting_for_room() > 0 {
                        Some(resume_in.map_or(CLIENT_ROOM_POLL, |at| at.min(CLIENT_ROOM_POLL)))
                    } else {
                        resume_in
                    };
                    // No guest code runs while parked: the ticker may park too.
                    self.ticks.shard_asleep(self.index);
                    let core = &self.core;
                    wait_for_messages_or(&self.port, resume_in, |from| core.is_waiting_for(from))
                        .await;
                    self.ticks.shard_awake(self.index);
                }
            }
        }
    }

    /// Back from the yields of an idle poll: away long enough, another
    /// thread has this CPU, and polling is off for a while. Measured here
    /// rather than at each turn's start, so a busy shard pays nothing for
    /// it (at each turn, agent-to-agent request-reply on one shard ran
    /// 2-4% slower in four interleaved pairs); a preemption elsewhere in
    /// an idle turn goes unseen, but an idle turn spends its time here.
    fn back_from_idle_poll(&mut self) {
        if self.contention.resumed(Instant::now) {
            self.core.metrics_mut().idle_polls_contended += 1;
        }
    }

    /// Serve every queued control command; returns (any served, stop asked).
    fn serve_control(&mut self) -> (bool, bool) {
        self.port.take_control_flag();
        let mut worked = false;
        while let Ok(command) = self.control.try_recv() {
            worked = true;
            if self.serve_command(command) {
                return (worked, true);
            }
        }
        (worked, false)
    }

    /// Carry out `command`; whether it asks the shard to stop.
    fn serve_command(&mut self, command: Control) -> bool {
        match command {
            Control::Directory(directory) => {
                *self.host_directory.borrow_mut() = Arc::clone(&directory);
                self.host.directory_changed();
                self.core.set_directory(directory);
            }
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
                    self.restore_state(id, &name);
                    if let Some(storage) = &self.storage {
                        let _ = storage
                            .writer
                            .write(Write::PutAgent(caxton_storage::AgentRow {
                                name,
                                module: source.to_vec(),
                                instances,
                                limits: serde_json::to_string(&limits).unwrap_or_default(),
                            }));
                    }
                }
                let _ = ack.send(deployed);
            }
            Control::Undeploy { id, name, ack } => {
                let undeployed = self.host.undeploy(id);
                // Queued for the writer before the caller hears of it: a
                // node stopped right after an acknowledged undeploy must
                // not bring the agent (and its state) back at restart.
                if let Some(storage) = &self.storage {
                    let _ = storage.writer.write(Write::RemoveAgent { name });
                }
                let _ = ack.send(undeployed);
                let now = self.clock.now_ns();
                let (core, _, mut io) = self.parts();
                core.on_agent_undeployed(id, now, &mut io);
                self.answer_abandoned();
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
            Control::DirectorySettled { ack } => {
                let now = self.clock.now_ns();
                let (core, _, mut io) = self.parts();
                let _ = ack.send(core.directory_settled(now, &mut io));
            }
            Control::StartInstance {
                id,
                name,
                cold,
                ack,
            } => {
                let started = Instant::now();
                let result = self
                    .host
                    .add_instance(id, cold)
                    .map(|(_, kind)| (kind, started.elapsed()));
                if result.is_ok() {
                    self.record_instances(id, name);
                }
                let _ = ack.send(result);
            }
            Control::StopInstance { id, name, ack } => {
                let stopped = self.host.remove_instance(id);
                if stopped {
                    self.record_instances(id, name);
                }
                let _ = ack.send(stopped);
                self.answer_abandoned();
            }
            Control::Metrics { reset, ack } => {
                let committed = self
                    .storage
                    .as_ref()
                    .map(|storage| storage.writer.committed());
                let in_rings = self.port.inbound_len() as u64;
                let (core, mut agents, _) = self.parts();
                core.record_startups(&mut agents);
                let metrics = core.metrics_mut();
                // Sent to the shard but not yet taken: waiting all the same.
                metrics.queue_depth += in_rings;
                if let Some(committed) = committed {
                    metrics.storage_transactions = committed.transactions;
                    metrics.storage_writes = committed.writes;
                }
                let _ = ack.send(metrics.clone());
                if reset {
                    metrics.reset();
                }
            }
            Control::AllAgentStats { ack } => {
                let _ = ack.send(self.host.all_stats());
            }
            Control::AgentStats { id, ack } => {
                let _ = ack.send(self.host.stats(id).cloned());
            }
            Control::Trace { start, ack } => {
                let tracer = self.core.tracer_mut();
                if let Some(messages) = start {
                    tracer.start(messages);
                }
                let _ = ack.send(tracer.take());
            }
            Control::Stop => return true,
        }
        false
    }

    /// After a restart: agent `name`'s state on this shard comes back with it.
    fn restore_state(&mut self, id: caxton_messaging::AgentId, name: &str) {
        let Some(recovered) = self
            .storage
            .as_mut()
            .and_then(|storage| storage.recovered.as_mut())
        else {
            return;
        };
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut recovered.state)
            .into_iter()
            .partition(|(agent, _, _)| agent == name);
        recovered.state = others;
        if !mine.is_empty() {
            let entries = mine
                .into_iter()
                .map(|(_, key, value)| (key, value))
                .collect();
            self.host.seed_state(id, entries);
        }
    }

    fn answer_abandoned(&mut self) {
        let now = self.clock.now_ns();
        let (core, mut agents, mut io) = self.parts();
        core.answer_abandoned(now, &mut agents, &mut io);
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
        let (core, _, mut io) = self.parts();
        let mut redelivered = 0;
        for message in pending {
            let agent = core.directory().resolve(&message.receiver);
            match (agent, Envelope::decode(&message.envelope)) {
                (Some(agent), Ok(mut envelope)) => {
                    envelope.receiver = Address::Agent(agent);
                    core.redeliver(envelope, message.id, now, &mut io);
                    redelivered += 1;
                }
                _ => core.drop_unroutable_stored(message.id, &mut io),
            }
        }
        redelivered
    }

    /// Hand the core what the partition writer reported; how many reports.
    fn serve_storage(&mut self) -> usize {
        let mut served = 0;
        while let Some(event) = self
            .storage
            .as_ref()
            .and_then(|storage| storage.writer.next_event())
        {
            served += 1;
            let now = self.clock.now_ns();
            let (core, _, mut io) = self.parts();
            core.on_storage_event(event, now, &mut io);
        }
        served
    }

    /// Record agent `id`'s instance count on this shard in the partition,
    /// so a restart starts as many.
    fn record_instances(&self, id: caxton_messaging::AgentId, name: String) {
        let (Some(storage), Some(count)) = (&self.storage, self.host.instance_count(id)) else {
            return;
        };
        let _ = storage.writer.write(Write::SetInstances {
            name,
            instances: u16::try_from(count).unwrap_or(u16::MAX),
        });
    }

    /// Move what waits for room in rings (clients', and answers for other
    /// shards) onto them; how many.
    fn flush_waiting(&mut self) -> usize {
        if self.core.waiting_for_room() == 0 {
            return 0;
        }
        let now = self.clock.now_ns();
        let (core, _, mut io) = self.parts();
        core.flush_waiting(now, &mut io)
    }

    /// Move messages from the rings into the core; how many. A client with
    /// messages waiting for room in its own ring is not read from.
    fn receive(&mut self) -> usize {
        // One buffer for the shard's lifetime: a drain allocates nothing.
        let mut arrived = std::mem::take(&mut self.arrived);
        let per_ring = if self.drain_eagerly {
            // The room shared over the rings, so that what is taken can be
            // admitted (a full mailbox answers queue-full; a full ring holds);
            // never less than a batch, as without priorities.
            (self.core.intake_room() / self.port.participants().max(1)).max(self.batch_size)
        } else {
            self.batch_size
        };
        let taken = if self.core.waiting_for_room() == 0 {
            self.port.drain(per_ring, |envelope| arrived.push(envelope))
        } else {
            let core = &self.core;
            self.port.drain_except(
                per_ring,
                |from| core.is_waiting_for(from),
                |envelope| arrived.push(envelope),
            )
        };
        // Nothing arrived and nothing is held for a time: no clock to read.
        // Agents that talk on their own shard never use the rings, and at
        // one message per turn (`low-latency`) this read was per message.
        if arrived.is_empty() && self.core.next_wake_ns().is_none() {
            self.arrived = arrived;
            return taken;
        }
        let now = self.clock.now_ns();
        let (core, mut agents, mut io) = self.parts();
        for envelope in arrived.drain(..) {
            core.on_arrival(envelope, now, &mut io);
        }
        let released = core.release_held(now, &mut agents, &mut io);
        self.arrived = arrived;
        taken + released
    }

    /// Let the core handle up to `batch_size` messages; how many.
    /// One clock read for the batch: each step starts when the last ended
    /// (the host measured its handler), so no message pays for a read of its own.
    fn handle_batch(&mut self) -> usize {
        let batch_size = self.batch_size;
        let mut now = self.clock.now_ns();
        let (core, mut agents, mut io) = self.parts();
        let mut handled = 0;
        while handled < batch_size {
            match core.handle_next(now, &mut agents, &mut io) {
                Some(ended_ns) => {
                    // What this turn's handlers sent waits in the port for
                    // the turn's end (`MeshPort::send_ringing_later`); after
                    // a long handler it goes out now, and the fence that
                    // costs is nothing beside such a handler.
                    if ended_ns.saturating_sub(now) >= LONG_HANDLER_NS {
                        io.port.ring_deferred();
                    }
                    now = ended_ns;
                }
                None => break,
            }
            handled += 1;
        }
        core.note_handling_turn(handled);
        handled
    }

    /// Give each suspended handler one more slice; complete those that end.
    fn resume_suspended(&mut self) -> usize {
        if !self.host.has_suspended() {
            return 0;
        }
        // Taken and given back: a buffer for the shard's lifetime, as `arrived`.
        let mut finished = std::mem::take(&mut self.finished);
        let resumed = self
            .host
            .resume_suspended(&mut |handled| finished.push(handled));
        let now = self.clock.now_ns();
        let (core, mut agents, mut io) = self.parts();
        for handled in finished.drain(..) {
            core.on_handler_finished(handled, now, &mut agents, &mut io);
        }
        self.finished = finished;
        resumed
    }

    /// Answer everything still queued or in the rings before the shard stops.
    fn shut_down(&mut self) {
        // Suspended handlers are cancelled; the core answers their senders.
        self.host.cancel_suspended();
        let mut inbound = Vec::new();
        self.port
            .drain(usize::MAX, |envelope| inbound.push(envelope));
        let now = self.clock.now_ns();
        let (core, _, mut io) = self.parts();
        core.shut_down(inbound, now, &mut io);
        self.port.ring_deferred();
    }
}

/// Wait for the shard's doorbell, or at most `timeout` when given; messages
/// on the rings from the participants `skip` names do not end the wait.
async fn wait_for_messages_or(
    port: &MeshPort,
    timeout: Option<Duration>,
    skip: impl Fn(usize) -> bool,
) {
    let Some(timeout) = timeout else {
        port.wait_for_messages_except(skip).await;
        return;
    };
    let mut timer = std::pin::pin!(glommio::timer::Timer::new(timeout));
    let mut rung = std::pin::pin!(port.wait_for_messages_except(skip));
    std::future::poll_fn(|context| {
        if timer.as_mut().poll(context).is_ready() || rung.as_mut().poll(context).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
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
