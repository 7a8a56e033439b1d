//! One shard's measurements: HDR histograms and counters owned by the shard
//! and never shared. They are copied out on request and merged by the reader.

use hdrhistogram::Histogram;

/// A histogram of nanoseconds from 1 ns to 100 s at 3 significant digits:
/// the one shape every latency histogram of the engine has, so any two merge.
pub fn nanosecond_histogram() -> Histogram<u64> {
    // Constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A shard's histograms and counters.
///
/// Aligned to two cache lines: every message records into these histograms,
/// and where they start must not hang on the fields laid out before them in
/// the shard core. Adding one `u64` counter here and one `Vec` to the core
/// cost one-shard agent-to-agent request-reply 7-9% on the 2-core
/// development VM (`benchmark run --suite scaling`, `high-throughput`,
/// `worker_threads=1`: 4.02-4.38M/s against 4.49-4.67M/s), the extra time
/// in loads of the histograms' own fields (`perf annotate` of
/// `Histogram::record_n_inner`); aligned, 4.49-4.66M/s.
#[derive(Clone, Debug)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Send to handler start, for messages sent on this shard.
    pub routing_local_ns: Histogram<u64>,
    /// Send to handler start, for messages that crossed from another shard or a client.
    pub routing_cross_ns: Histogram<u64>,
    /// Of the messages timed in `routing_cross_ns`, those a client sent
    /// (a load generator, the admin endpoint), not another shard's agent.
    pub arrived_from_clients: u64,
    /// Send on another node to handler start here, for messages that came
    /// through the remote port (two clocks: see `docs/cluster.md`).
    pub routing_remote_ns: Histogram<u64>,
    /// Handler run time.
    pub processing_ns: Histogram<u64>,
    /// Time to make an instance ready to serve: a warm spare taken, or a cold instantiation.
    pub startup_ns: Histogram<u64>,
    /// Messages handled (any outcome).
    pub handled: u64,
    /// Sends refused because a mailbox or ring was full.
    pub refused: u64,
    /// Of those, messages already admitted and then pushed out of a full
    /// mailbox to make room for a less busy agent's.
    pub pushed_out: u64,
    /// Messages answered with `failure` because their deadline passed.
    pub timeouts: u64,
    /// Handlers that trapped, ran too long, or grew past their memory.
    pub faults: u64,
    /// Handlers that returned a failure code.
    pub agent_failures: u64,
    /// Engine failures that could not be delivered (the sender's path was full).
    pub undeliverable: u64,
    /// Messages for a client that found its ring full and waited in the
    /// shard until the client read (refused only past the mailbox's size).
    pub waited_for_clients: u64,
    /// Answers for another shard (or the remote port) that found its ring
    /// full and waited in the shard until it had room.
    pub answers_waited: u64,
    /// Times the shard found its CPU taken by another
    /// thread for about a scheduler slice after an idle poll, and parked
    /// rather than poll on (`runtime.spin_before_park`; see
    /// [`caxton_messaging::idle_poll`]).
    pub idle_polls_contended: u64,
    /// Messages for an agent this shard does not host (undeployed meanwhile).
    pub unknown_receiver: u64,
    /// Messages waiting for this shard when the snapshot was taken: in its
    /// mailboxes, held for busy or throttled agents, and (added by the
    /// driver) still in the rings to it.
    pub queue_depth: u64,
    /// Messages held because their agent had used its `cpu_shares` for the window.
    pub throttled: u64,
    /// Handlers that used their `runtime.time_slice` and yielded the shard.
    pub suspended: u64,
    /// Messages made durable in this shard's partition (`messaging.enable_persistence`).
    pub persisted: u64,
    /// Stored messages delivered again after a restart.
    pub redelivered: u64,
    /// Sends asking for durability that the partition could not keep (refused).
    pub storage_failures: u64,
    /// Unfinished stored messages removed because they outlived `messaging.message_ttl`.
    pub expired: u64,
    /// Transactions the shard's partition writer committed (a level, like `queue_depth`).
    pub storage_transactions: u64,
    /// Writes those transactions applied (a level).
    pub storage_writes: u64,
    /// Turns in which the shard started at least one handler: `handled`
    /// over this is about the mean batch a turn took (a handler that yields
    /// its time slice counts as handled when it ends, in a later turn).
    pub handling_turns: u64,
    /// The most messages the shard handled in one turn (at most
    /// `messaging.batch_size`); merged as the larger.
    pub largest_batch: u64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            routing_local_ns: nanosecond_histogram(),
            routing_cross_ns: nanosecond_histogram(),
            routing_remote_ns: nanosecond_histogram(),
            processing_ns: nanosecond_histogram(),
            startup_ns: nanosecond_histogram(),
            arrived_from_clients: 0,
            handled: 0,
            refused: 0,
            pushed_out: 0,
            timeouts: 0,
            faults: 0,
            agent_failures: 0,
            undeliverable: 0,
            waited_for_clients: 0,
            answers_waited: 0,
            idle_polls_contended: 0,
            unknown_receiver: 0,
            queue_depth: 0,
            throttled: 0,
            suspended: 0,
            persisted: 0,
            redelivered: 0,
            storage_failures: 0,
            expired: 0,
            storage_transactions: 0,
            storage_writes: 0,
            handling_turns: 0,
            largest_batch: 0,
        }
    }
}

impl ShardMetrics {
    /// Add `other` into `self` (merging at read time).
    pub fn merge(&mut self, other: &Self) {
        // Histograms with identical bounds always merge.
        self.routing_local_ns
            .add(&other.routing_local_ns)
            .expect("same bounds");
        self.routing_remote_ns
            .add(&other.routing_remote_ns)
            .expect("same bounds");
        self.routing_cross_ns
            .add(&other.routing_cross_ns)
            .expect("same bounds");
        self.processing_ns
            .add(&other.processing_ns)
            .expect("same bounds");
        self.startup_ns.add(&other.startup_ns).expect("same bounds");
        self.arrived_from_clients += other.arrived_from_clients;
        self.handled += other.handled;
        self.refused += other.refused;
        self.pushed_out += other.pushed_out;
        self.timeouts += other.timeouts;
        self.faults += other.faults;
        self.agent_failures += other.agent_failures;
        self.undeliverable += other.undeliverable;
        self.waited_for_clients += other.waited_for_clients;
        self.answers_waited += other.answers_waited;
        self.idle_polls_contended += other.idle_polls_contended;
        self.unknown_receiver += other.unknown_receiver;
        self.queue_depth += other.queue_depth;
        self.throttled += other.throttled;
        self.suspended += other.suspended;
        self.persisted += other.persisted;
        self.redelivered += other.redelivered;
        self.storage_failures += other.storage_failures;
        self.expired += other.expired;
        self.storage_transactions += other.storage_transactions;
        self.storage_writes += other.storage_writes;
        self.handling_turns += other.handling_turns;
        self.largest_batch = self.largest_batch.max(other.largest_batch);
    }

    /// Clear histograms and counters (between benchmark phases).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
