//! A shard's writer thread: the only user of the shard's partition.
//!
//! The shard sends [`Write`]s over a bounded channel and does not wait for
//! them to commit; it waits for room only when [`WRITES_QUEUED_MAX`] writes
//! of work it already accepted are queued (see there). The channel is std's
//! `sync_channel`: a shard and its own writer, never two shards, and one
//! send per durable message, which costs far less than the commit it asks
//! for. The writer takes the first
//! write, gathers more until `batch_size` or until `flush_interval` has
//! passed, applies them in one transaction, and answers with
//! [`StorageEvent`]s: which accepted messages are now durable, or which could
//! not be kept (the shard then refuses them rather than pretend). It rings
//! the shard's doorbell after each answer, so a parked shard wakes for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tracing::warn;

use crate::partition::{now_ms, AgentRow, Partition, PendingMessage, StorageSettings};
use crate::StorageError;

/// A write for the partition.
#[derive(Debug)]
pub enum Write {
    /// An accepted message, to be made durable before its sender is told.
    Persist {
        /// Its id (unique in the partition).
        id: u64,
        /// Its receiver's name.
        receiver: String,
        /// Its conversation.
        conversation_id: u64,
        /// The encoded envelope.
        envelope: Vec<u8>,
    },
    /// A message's handler finished.
    Done {
        /// Its id.
        id: u64,
    },
    /// An agent deployed here (or changed).
    PutAgent(AgentRow),
    /// An agent scaled: it now runs `instances` instances here.
    SetInstances {
        /// Its name.
        name: String,
        /// Its instances on this shard.
        instances: u16,
    },
    /// An agent removed from here (its state goes with it).
    RemoveAgent {
        /// Its name.
        name: String,
    },
    /// One key of an agent's state set (an empty value deletes it).
    PutState {
        /// The agent.
        agent: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
}

/// What the writer tells its shard.
#[derive(Debug)]
pub enum StorageEvent {
    /// These messages are durable.
    Durable(Vec<u64>),
    /// These messages could not be stored; nothing of the batch was kept.
    Failed {
        /// The messages.
        ids: Vec<u64>,
        /// Why.
        reason: String,
    },
    /// Unfinished messages removed because they outlived `message_ttl`.
    Expired(u64),
}

/// What a partition held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The agents the shard hosted.
    pub agents: Vec<AgentRow>,
    /// Messages accepted and never finished: to be delivered again.
    pub pending: Vec<PendingMessage>,
    /// The first id free for new messages.
    pub next_id: u64,
    /// The agents' state: (agent, key, value).
    pub state: Vec<crate::partition::StateRow>,
}

/// Most writes queued for the writer thread. A new durable send finding
/// the queue full is refused (`writer-busy`); bookkeeping of work already
/// accepted (a finished message, an agent's state) waits for room instead,
/// which only happens when the disk has fallen this far behind.
pub const WRITES_QUEUED_MAX: usize = 16_384;

/// Why the writer took no write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefused {
    /// The writer thread has stopped.
    #[error("writer-stopped")]
    Stopped,
    /// [`WRITES_QUEUED_MAX`] writes are already queued.
    #[error("writer-busy")]
    Busy,
}

/// What the writer has committed so far; counted by the writer thread and
/// only read (for metrics) by the shard that owns it.
#[derive(Debug, Default)]
struct CommitCounters {
    transactions: AtomicU64,
    writes: AtomicU64,
}

/// Transactions committed and writes they applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Transactions committed.
    pub transactions: u64,
    /// Writes those transactions applied.
    pub writes: u64,
}

/// The shard's handle on its writer thread.
pub struct PartitionWriter {
    writes: Option<mpsc::SyncSender<Write>>,
    /// Not bounded by a capacity: the writer must never wait on its shard
    /// (the shard may be waiting for room in `writes`). It holds at most one
    /// event per transaction plus one per cleanup, and every transaction
    /// needs writes that only the shard sends, from a queue of at most
    /// [`WRITES_QUEUED_MAX`]; the shard drains events every turn.
    events: mpsc::Receiver<StorageEvent>,
    thread: Option<JoinHandle<()>>,
    committed: Arc<CommitCounters>,
}

impl PartitionWriter {
    /// Open `path`, read what it holds, and start its writer thread, which
    /// first runs `on_start` (to place itself) and rings the owning shard
    /// with `wake` after each answer.
    pub fn start(
        path: &std::path::Path,
        settings: &StorageSettings,
        name: String,
        on_start: Box<dyn FnOnce() + Send>,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<(Self, Recovered), StorageError> {
        let mut partition = Partition::open(path, settings)?;
        // A cleanup first: what aged past `message_ttl` while the node was
        // down goes before anything is delivered again, so an expired
        // message is never handled.
        let (expired_while_down, _) = partition.cleanup(now_ms())?;
        let recovered = Recovered {
            agents: partition.agents()?,
            pending: partition.take_pending()?,
            next_id: partition.max_id()? + 1,
            state: partition.states()?,
        };
        let (writes, receiver) = mpsc::sync_channel(WRITES_QUEUED_MAX);
        let (events_sender, events) = mpsc::channel();
        if expired_while_down > 0 {
            // Counted by the shard with the rest (`caxton_shard_expired_total`).
            let _ = events_sender.send(StorageEvent::Expired(expired_while_down));
        }
        let committed = Arc::new(CommitCounters::default());
        let counters = Arc::clone(&committed);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                on_start();
                run(partition, receiver, events_sender, wake, &counters)
            })
            .map_err(|error| StorageError::Directory {
                path: path.display().to_string(),
                message: format!("cannot start its writer thread: {error}"),
            })?;
        Ok((
            Self {
                writes: Some(writes),
                events,
                thread: Some(thread),
                committed,
            },
            recovered,
        ))
    }

    /// Queue `write`. A durable send is refused when the queue is full; any
    /// other write waits for room (see [`WRITES_QUEUED_MAX`]).
    pub fn write(&self, write: Write) -> Result<(), WriteRefused> {
        let writes = self.writes.as_ref().ok_or(WriteRefused::Stopped)?;
        if matches!(write, Write::Persist { .. }) {
            return writes.try_send(write).map_err(|error| match error {
                mpsc::TrySendError::Full(_) => WriteRefused::Busy,
                mpsc::TrySendError::Disconnected(_) => WriteRefused::Stopped,
            });
        }
        writes.send(write).map_err(|_| WriteRefused::Stopped)
    }

    /// What the writer has committed so far.
    pub fn committed(&self) -> Committed {
        Committed {
            transactions: self.committed.transactions.load(Ordering::Relaxed),
            writes: self.committed.writes.load(Ordering::Relaxed),
        }
    }

    /// The next answer, if one is waiting.
    pub fn next_event(&self) -> Option<StorageEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for PartitionWriter {
    fn drop(&mut self) {
        // Closing the channel lets the writer apply what it has and stop.
        drop(self.writes.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut partition: Partition,
    writes: mpsc::Receiver<Write>,
    events: mpsc::Sender<StorageEvent>,
    wake: Box<dyn Fn() + Send>,
    committed: &CommitCounters,
) {
    let settings = partition.settings().clone();
    let mut next_cleanup = Instant::now() + settings.cleanup_interval;
    let mut open = true;
    while open {
        let wait = next_cleanup.saturating_duration_since(Instant::now());
        let first = match writes.recv_timeout(wait) {
            Ok(write) => Some(write),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(first) = first {
            let mut batch = vec![first];
            let flush_by = Instant::now() + settings.flush_interval;
            while batch.len() < settings.batch_size {
                match writes.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                    Err(mpsc::TryRecvError::Empty) => {
                        let left = flush_by.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match writes.recv_timeout(left) {
                            Ok(write) => batch.push(write),
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                }
            }
            let writes_in_batch = batch.len() as u64;
            let event = apply(&mut partition, batch);
            if !matches!(event, Some(StorageEvent::Failed { .. })) {
                committed.transactions.fetch_add(1, Ordering::Relaxed);
                committed
                    .writes
                    .fetch_add(writes_in_batch, Ordering::Relaxed);
            }
            if let Some(event) = event {
                let _ = events.send(event);
                wake();
            }
        }
        if Instant::now() >= next_cleanup {
            match partition.cleanup(now_ms()) {
                Ok((expired, _)) if expired > 0 => {
                    let _ = events.send(StorageEvent::Expired(expired));
                    wake();
                }
                Ok(_) => {}
                Err(error) => warn!("cleanup of {} failed: {error}", partition.path().display()),
            }
            next_cleanup = Instant::now() + settings.cleanup_interval;
        }
    }
}

/// Apply `batch` in one transaction; the event for the shard, if it needs one.
fn apply(partition: &mut Partition, batch: Vec<Write>) -> Option<StorageEvent> {
    let persisted: Vec<u64> = batch
        .iter()
        .filter_map(|write| match write {
            Write::Persist { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let result = partition.transaction(|transaction, settings| {
        for write in &batch {
            match write {
                Write::Persist {
                    id,
                    receiver,
                    conversation_id,
                    envelope,
                } => Partition::persist(
                    transaction,
                    settings,
                    *id,
                    receiver,
                    *conversation_id,
                    envelope,
                )?,
                Write::Done { id } => Partition::mark_done(transaction, *id)?,
                Write::PutAgent(agent) => Partition::put_agent(transaction, agent)?,
                Write::SetInstances { name, instances } => {
                    Partition::set_instances(transaction, name, *instances)?
                }
                Write::RemoveAgent { name } => Partition::remove_agent(transaction, name)?,
                Write::PutState { agent, key, value } => {
                    Partition::put_state(transaction, agent, key, value)?
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) if persisted.is_empty() => None,
        Ok(()) => Some(StorageEvent::Durable(persisted)),
        Err(error) => {
            warn!(
                "a write batch of {} was not stored: {error}",
                partition.path().display()
            );
            Some(StorageEvent::Failed {
                ids: persisted,
                reason: error.to_string(),
            })
        }
    }
}
