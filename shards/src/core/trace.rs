//! Message traces (`engine profile trace`): a shard samples messages while
//! it has a budget, and records each hop of a sampled message (arrival,
//! ring, mailbox admission, handler start and end, the answer's way out, the
//! hop to another node) with its time, its shard and its agent. Answers and
//! messages a traced handler sends carry the trace on, so one trace follows
//! a request through every agent it touches.
//!
//! The cost on a message that is not sampled is one test of a field the
//! shard already has in hand (`envelope.trace`, and the budget on arrival).

use caxton_messaging::{AgentId, Envelope};

/// Most hops a shard keeps between two collections; past it, hops are
/// counted as dropped, never stored.
pub const TRACE_HOPS_MAX: usize = 1 << 16;

/// What happened to a traced message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopKind {
    /// Sent (its `sent_at_ns`), by the participant named in `shard`.
    Sent,
    /// Pushed onto the ring to data shard or client port `to`.
    Ring {
        /// The mesh participant.
        to: u16,
    },
    /// Pushed onto the ring to the remote port: on to another node.
    Remote,
    /// Admitted to its agent's mailbox.
    Admitted,
    /// Refused: a full mailbox or ring.
    Refused,
    /// Its handler started.
    HandlerStart,
    /// Its handler ended (every outcome).
    HandlerEnd,
}

impl HopKind {
    /// The name traces show.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "send",
            Self::Ring { .. } => "ring",
            Self::Remote => "remote",
            Self::Admitted => "mailbox",
            Self::Refused => "refused",
            Self::HandlerStart => "handler-start",
            Self::HandlerEnd => "handler-end",
        }
    }
}

/// One hop of a traced message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The trace (nonzero).
    pub trace: u64,
    /// What happened.
    pub kind: HopKind,
    /// Node-clock nanoseconds.
    pub at_ns: u64,
    /// The mesh participant it happened on.
    pub shard: u16,
    /// The agent involved, when one is.
    pub agent: Option<AgentId>,
}

/// What a collection hands over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceTake {
    /// The hops recorded since the last collection, in order.
    pub hops: Vec<Hop>,
    /// Hops not kept because the buffer was full.
    pub dropped: u64,
    /// Messages this shard may still sample.
    pub budget: u32,
}

/// A shard's sampler and hop buffer.
#[derive(Debug)]
pub struct Tracer {
    shard: u16,
    budget: u32,
    next: u64,
    hops: Vec<Hop>,
    dropped: u64,
}

impl Tracer {
    /// The tracer of mesh participant `shard`, not sampling.
    pub fn new(shard: u16) -> Self {
        Self {
            shard,
            budget: 0,
            next: 0,
            hops: Vec::new(),
            dropped: 0,
        }
    }

    /// Sample the next `messages` messages that start on this shard (0 stops).
    pub fn start(&mut self, messages: u32) {
        self.budget = messages;
    }

    /// Hand over what was recorded.
    pub fn take(&mut self) -> TraceTake {
        TraceTake {
            hops: std::mem::take(&mut self.hops),
            dropped: std::mem::take(&mut self.dropped),
            budget: self.budget,
        }
    }

    /// Sample `envelope` if the budget allows and it is not traced yet:
    /// give it a trace and record its send.
    #[inline]
    pub fn sample(&mut self, envelope: &mut Envelope) {
        if self.budget == 0 || envelope.trace != 0 {
            return;
        }
        self.budget -= 1;
        self.next += 1;
        // Unique across shards: the shard in the top bits.
        envelope.trace = (u64::from(self.shard) + 1) << 40 | self.next;
        self.push(Hop {
            trace: envelope.trace,
            kind: HopKind::Sent,
            at_ns: envelope.sent_at_ns,
            shard: envelope.from_participant,
            agent: None,
        });
    }

    /// Record `kind` for `trace` at `at_ns` on this shard, when traced.
    #[inline]
    pub fn hop(&mut self, trace: u64, kind: HopKind, at_ns: u64, agent: Option<AgentId>) {
        if trace == 0 {
            return;
        }
        self.push(Hop {
            trace,
            kind,
            at_ns,
            shard: self.shard,
            agent,
        });
    }

    #[cold]
    fn push(&mut self, hop: Hop) {
        if self.hops.len() < TRACE_HOPS_MAX {
            self.hops.push(hop);
        } else {
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_messaging::{Address, Performative};

    fn message(at: u64) -> Envelope {
        Envelope::new(
            Performative::Request,
            Address::Client { port: 4, id: 1 },
            Address::Agent(AgentId(7)),
            Vec::new(),
            at,
            4,
        )
    }

    #[test]
    fn only_the_budget_is_sampled_and_untraced_messages_leave_no_hop() {
        let mut tracer = Tracer::new(1);
        let mut quiet = message(5);
        tracer.sample(&mut quiet);
        tracer.hop(quiet.trace, HopKind::Admitted, 6, None);
        assert_eq!(quiet.trace, 0);
        assert!(tracer.take().hops.is_empty());

        tracer.start(2);
        let mut traced: Vec<Envelope> = (0..3).map(message).collect();
        for envelope in &mut traced {
            tracer.sample(envelope);
        }
        assert_ne!(traced[0].trace, traced[1].trace);
        assert_eq!(traced[2].trace, 0, "past the budget");
        // A traced message is not sampled twice.
        let before = traced[0].trace;
        tracer.start(1);
        tracer.sample(&mut traced[0]);
        assert_eq!(traced[0].trace, before);
        tracer.hop(before, HopKind::HandlerStart, 9, Some(AgentId(7)));
        let take = tracer.take();
        assert_eq!(take.budget, 1);
        let kinds: Vec<_> = take.hops.iter().map(|hop| (hop.kind, hop.shard)).collect();
        assert_eq!(
            kinds,
            [
                (HopKind::Sent, 4),
                (HopKind::Sent, 4),
                (HopKind::HandlerStart, 1)
            ]
        );
        assert!(tracer.take().hops.is_empty(), "taken once");
    }
}
