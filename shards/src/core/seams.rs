//! The seams between the shard core and the world: what the core asks of
//! its agents ([`AgentRuntime`]) and of its shard's I/O ([`ShardIo`]). The
//! driver implements both over wasmtime, the mesh rings and the partition
//! writer; the core's tests implement them with plain vectors and a
//! virtual clock.

use caxton_agents::{AgentHost, Handling, OutboundMessage};
use caxton_messaging::{AgentId, Envelope, MeshPort};
use caxton_storage::{PartitionWriter, Write, WriteRefused};

/// What the core needs of the agents hosted on its shard.
pub(crate) trait AgentRuntime {
    /// When agent `agent`, past its `cpu_shares` for the current window, may
    /// run again; `None` when it may run now.
    fn cpu_blocked_until(&mut self, agent: AgentId, now_ns: u64) -> Option<u64>;

    /// Run `agent`'s handler (instance `slot`, or the next free one) on
    /// `envelope`, starting at `started_ns`, for at most one time slice:
    /// it ends, it is suspended (the core hears of its end later, in
    /// `ShardCore::on_handler_finished`), its agent is busy (the message
    /// comes back), or there is no such instance.
    fn run_handler(
        &mut self,
        agent: AgentId,
        slot: Option<u16>,
        envelope: Envelope,
        started_ns: u64,
    ) -> Handling;

    /// Answers owed by instances that were dropped with deferred replies open.
    fn take_abandoned(&mut self) -> Vec<OutboundMessage>;

    /// Whether [`Self::take_abandoned`] or [`Self::drain_startup_times`]
    /// has anything: asked after every handler, so the common answer (no)
    /// costs a look at two lengths.
    fn has_reports(&self) -> bool;

    /// A handler's outbox, its messages taken out: the runtime may reuse
    /// it for the next handler rather than allocate (none need to).
    fn recycle_outbox(&mut self, _outbox: Vec<OutboundMessage>) {}

    /// Hand each instance start time (ns) recorded since the last call to `record`.
    fn drain_startup_times(&mut self, record: &mut dyn FnMut(u64));

    /// The node clock, read now: the core reads it only where the time it
    /// was handed cannot tell two moments apart ([`super::ShardCore::handle_next`]).
    fn now_ns(&self) -> u64;
}

/// What the core needs of its shard's I/O.
pub(crate) trait ShardIo {
    /// Whether there is a ring to mesh participant `participant`.
    fn has_ring_to(&self, participant: usize) -> bool;

    /// Push `envelope` onto the ring to `participant`; a full ring hands it back.
    fn push(&mut self, participant: usize, envelope: Envelope) -> Result<(), Envelope>;

    /// `envelope`, for `participant`, was refused for good (its ring was
    /// full, and for a client so was the shard's backlog for it). Only an
    /// observer needs this: the simulation, to know which answers never came.
    fn refused(&mut self, _participant: usize, _envelope: &Envelope) {}

    /// Hand `write` to the shard's partition writer.
    fn store(&mut self, write: Write) -> Result<(), WriteRefused>;
}

/// The engine's agent host.
pub(crate) struct WasmAgents<'a> {
    pub host: &'a mut AgentHost,
}

impl AgentRuntime for WasmAgents<'_> {
    fn cpu_blocked_until(&mut self, agent: AgentId, now_ns: u64) -> Option<u64> {
        self.host.cpu_blocked_until(agent, now_ns)
    }

    fn run_handler(
        &mut self,
        agent: AgentId,
        slot: Option<u16>,
        envelope: Envelope,
        started_ns: u64,
    ) -> Handling {
        self.host.handle(agent, slot, envelope, started_ns)
    }

    fn take_abandoned(&mut self) -> Vec<OutboundMessage> {
        self.host.take_abandoned()
    }

    fn has_reports(&self) -> bool {
        self.host.has_reports()
    }

    fn recycle_outbox(&mut self, outbox: Vec<OutboundMessage>) {
        self.host.recycle_outbox(outbox);
    }

    fn drain_startup_times(&mut self, record: &mut dyn FnMut(u64)) {
        self.host.take_startup_times().for_each(record);
    }

    fn now_ns(&self) -> u64 {
        self.host.now_ns()
    }
}

/// The shard's mesh port and partition writer.
pub(crate) struct MeshIo<'a> {
    pub port: &'a mut MeshPort,
    pub writer: Option<&'a PartitionWriter>,
}

impl ShardIo for MeshIo<'_> {
    fn has_ring_to(&self, participant: usize) -> bool {
        self.port.has_ring_to(participant)
    }

    fn push(&mut self, participant: usize, envelope: Envelope) -> Result<(), Envelope> {
        // The driver rings the doorbells once per turn (`MeshPort::ring_deferred`).
        self.port.send_ringing_later(participant, envelope)
    }

    fn store(&mut self, write: Write) -> Result<(), WriteRefused> {
        self.writer
            .ok_or(WriteRefused::Stopped)
            .and_then(|writer| writer.write(write))
    }
}
