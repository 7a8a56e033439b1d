//! The durability protocol, as a pure state machine: which stored messages
//! a shard is waiting on, which handlers' children are not all stored yet,
//! and when a message may be acknowledged or finished. No I/O: the shard
//! core asks it what to do and carries the answer out (a write to its
//! partition, an `agree` to a client, a chain acknowledgement to another
//! shard).
//!
//! # The protocol
//! A client's durable send (`Requested`) reaches the receiving agent's
//! shard, which gives it an id ([`DurabilityLedger::begin`]) and hands a
//! `Persist` write to its partition writer. When the writer reports the
//! write durable ([`DurabilityLedger::stored`]) the sender is told `agree`
//! and the message enters a mailbox as `Stored(id)`. When its handler has
//! run, the message is finished (a `Done` write), unless the handler sent
//! messages to agents: those travel as `Chained(id)`, each is stored by its
//! own receiving shard the same way, and each stored child acknowledges its
//! parent ([`DurabilityLedger::child_settled`]); the parent is finished when
//! the last child is.
//!
//! # Invariants
//! 1. A message is acknowledged only once stored: `stored` is the only way
//!    a message leaves the waiting table as accepted.
//! 2. A parent is finished only once every child it sent is stored (or was
//!    answered and will never be stored): [`DurabilityLedger::open_chain`]
//!    counts children and only the last `child_settled` finishes it.
//! 3. Unfinished messages are redelivered after a restart: the partition
//!    keeps every stored message without a `Done`, and the next boot hands
//!    them to their shards again. Delivery is therefore at least once.
//!
//! # Bounds
//! The waiting table holds at most `waiting_max` messages; `begin` refuses
//! beyond that, and the shard refuses the send. Open chains need no bound of
//! their own: each has at least one child in flight, and every place a
//! child can be (a ring, a mailbox, a waiting table, a writer batch) is
//! bounded.
//!
//! # Ids
//! Ids carry their partition in the high 16 bits (`partition + 1`), so they
//! are unique across a node's partitions and a chain acknowledgement finds
//! its parent's shard without a lookup.

use std::collections::HashMap;

/// Bits below a message id's partition number.
const PARTITION_SHIFT: u32 = 48;

/// The first id partition `partition` hands out on a fresh database.
pub fn first_id(partition: usize) -> u64 {
    ((partition as u64) + 1) << PARTITION_SHIFT
}

/// The partition that gave out message id `id`.
pub fn partition_of(id: u64) -> usize {
    ((id >> PARTITION_SHIFT) as usize).wrapping_sub(1)
}

/// A message waiting for its partition write, and the stored message it was
/// sent under (a hop of a chain), if any.
#[derive(Debug, PartialEq, Eq)]
pub struct Waiting<M> {
    /// The message as it will be delivered once stored.
    pub message: M,
    /// Its parent's id when an agent sent it while handling a stored message.
    pub parent: Option<u64>,
}

/// Why a message cannot start being stored.
#[derive(Debug, PartialEq, Eq)]
pub struct LedgerFull<M>(pub M);

/// See the module docs. `M` is the message type (the shard's envelope).
#[derive(Debug)]
pub struct DurabilityLedger<M> {
    next_id: u64,
    waiting: HashMap<u64, Waiting<M>>,
    waiting_max: usize,
    /// Stored parents with children not all stored: how many are left.
    chains: HashMap<u64, usize>,
}

impl<M> DurabilityLedger<M> {
    /// A ledger handing out ids from `next_id`, holding at most
    /// `waiting_max` messages between `begin` and the writer's answer.
    pub fn new(next_id: u64, waiting_max: usize) -> Self {
        Self {
            next_id,
            waiting: HashMap::new(),
            waiting_max: waiting_max.max(1),
            chains: HashMap::new(),
        }
    }

    /// How many more messages may wait for their writes now.
    pub fn room(&self) -> usize {
        self.waiting_max.saturating_sub(self.waiting.len())
    }

    /// Give `message` an id and wait for its write. The caller hands the
    /// partition a `Persist` write under that id; when the writer refuses it
    /// outright, the caller takes the message back with [`Self::failed`].
    pub fn begin(&mut self, message: M, parent: Option<u64>) -> Result<u64, LedgerFull<M>> {
        if self.waiting.len() >= self.waiting_max {
            return Err(LedgerFull(message));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, Waiting { message, parent });
        Ok(id)
    }

    /// The id `begin` will hand out next.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Message `id` is durable: accept it (for a client's send, acknowledge
    /// it; for a hop, settle one child of its parent). `None` for an id this
    /// ledger is not waiting on.
    pub fn stored(&mut self, id: u64) -> Option<Waiting<M>> {
        self.waiting.remove(&id)
    }

    /// Message `id` could not be stored: it was never accepted.
    pub fn failed(&mut self, id: u64) -> Option<Waiting<M>> {
        self.waiting.remove(&id)
    }

    /// Stored message `parent`'s handler sent `children` messages to agents.
    /// With none, the parent is finished at once (the caller writes `Done`):
    /// returns whether it is.
    pub fn open_chain(&mut self, parent: u64, children: usize) -> bool {
        if children == 0 {
            return true;
        }
        self.chains.insert(parent, children);
        false
    }

    /// One child of stored message `parent` is stored (or was answered and
    /// never will be). Returns whether the parent is now finished.
    pub fn child_settled(&mut self, parent: u64) -> bool {
        let Some(left) = self.chains.get_mut(&parent) else {
            return false;
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return false;
        }
        self.chains.remove(&parent);
        true
    }

    /// Messages waiting for their writes.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Parents waiting for children.
    pub fn open_chains(&self) -> usize {
        self.chains.len()
    }

    /// At shutdown: every message still waiting for its write. None was
    /// accepted; the caller refuses the ones clients sent.
    pub fn drain_waiting(&mut self) -> impl Iterator<Item = Waiting<M>> + '_ {
        self.waiting.drain().map(|(_, waiting)| waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_partition() {
        for partition in [0, 1, 7, 300] {
            let id = first_id(partition);
            assert_eq!(partition_of(id), partition);
            assert_eq!(partition_of(id + 12_345), partition);
        }
        assert_ne!(first_id(0), first_id(1));
    }

    #[test]
    fn a_message_is_accepted_only_once_stored() {
        let mut ledger = DurabilityLedger::new(first_id(0), 8);
        let id = ledger.begin("hello", None).expect("room");
        assert_eq!(ledger.waiting_len(), 1);
        assert_eq!(
            ledger.stored(id),
            Some(Waiting {
                message: "hello",
                parent: None
            })
        );
        // Twice stored (a duplicate event) accepts nothing more.
        assert_eq!(ledger.stored(id), None);
        let failed = ledger.begin("lost", None).expect("room");
        assert_eq!(
            ledger.failed(failed).map(|waiting| waiting.message),
            Some("lost")
        );
        assert_eq!(ledger.stored(failed), None);
    }

    #[test]
    fn the_waiting_table_is_bounded() {
        let mut ledger = DurabilityLedger::new(1, 2);
        let first = ledger.begin(1, None).expect("room");
        ledger.begin(2, None).expect("room");
        assert_eq!(ledger.begin(3, None), Err(LedgerFull(3)));
        ledger.stored(first);
        assert!(ledger.begin(3, None).is_ok());
    }

    #[test]
    fn a_parent_finishes_with_its_last_child() {
        let mut ledger = DurabilityLedger::<()>::new(1, 8);
        assert!(ledger.open_chain(10, 0), "no children: finished at once");
        assert!(!ledger.open_chain(11, 3));
        assert!(!ledger.child_settled(11));
        assert!(!ledger.child_settled(11));
        assert_eq!(ledger.open_chains(), 1);
        assert!(ledger.child_settled(11));
        assert_eq!(ledger.open_chains(), 0);
        // A late or duplicate acknowledgement finishes nothing twice.
        assert!(!ledger.child_settled(11));
    }

    #[test]
    fn shutdown_hands_back_what_was_never_stored() {
        let mut ledger = DurabilityLedger::new(1, 8);
        ledger.begin("client", None).expect("room");
        ledger.begin("hop", Some(99)).expect("room");
        let mut drained: Vec<_> = ledger.drain_waiting().collect();
        drained.sort_by_key(|waiting| waiting.message);
        assert_eq!(drained.len(), 2);
        assert_eq!(drained[0].parent, None);
        assert_eq!(drained[1].parent, Some(99));
        assert_eq!(ledger.waiting_len(), 0);
    }
}
