//! The mesh: one bounded lock-free SPSC ring per ordered pair of
//! participants, allocated at boot, drained in batches. Participants are
//! the data shards (numbered first) and the client ports (numbered after
//! them); two client ports have no ring between them.
//!
//! Each ring has exactly one producer (the sending participant) and one
//! consumer (the receiving one), so a message crosses cores with one store and one
//! load, no lock and no allocation. A receiving shard either busy-polls its
//! rings (low-latency) or parks; a parked shard is woken through its
//! [`Doorbell`].
//!
//! Shared state, and why: the rings themselves (inherent to crossing cores)
//! and one doorbell per shard. A doorbell is an atomic flag plus a waker that
//! a sender touches only when the receiver has said it is parking; while the
//! receiver is running, a send never writes shared memory besides the ring.

use std::future::poll_fn;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use rtrb::{Consumer, Producer, RingBuffer};

use crate::envelope::Envelope;

/// How a parked shard is woken by its senders.
///
/// On lines of its own: each participant writes its own doorbell when it
/// parks and wakes, and senders read it after every batch; packed, two
/// participants' doorbells would share a line and each park would take it
/// from the other's core.
#[derive(Default)]
#[repr(align(128))]
pub struct Doorbell {
    parked: AtomicBool,
    waker: AtomicWaker,
    /// Set by the control plane after it queues a command for this
    /// participant: a parked shard must not sleep through a command that
    /// arrived through another channel than its rings.
    control_pending: AtomicBool,
}

impl Doorbell {
    /// Say a control command is queued, then wake the participant.
    pub fn notify_control(&self) {
        self.control_pending.store(true, Ordering::Release);
        self.ring();
    }

    /// Wake the participant if it parked. Called by senders after a push.
    pub fn ring(&self) {
        // Pairs with the fence in `wait_for_messages`: either the receiver
        // sees our push when it re-checks its rings, or we see it parked.
        fence(Ordering::SeqCst);
        self.wake_if_parked();
    }

    /// The second half of [`Self::ring`], for a sender that has already
    /// fenced after its pushes.
    fn wake_if_parked(&self) {
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

/// One ring slot: an envelope on cache lines of its own. Every line a
/// message touches moves from the sender's core to the receiver's and back
/// (the slot is written on one, read on the other, then written again):
/// packed back to back, a 120-byte envelope straddles three lines in most
/// slots; aligned, it takes exactly two.
#[repr(align(64))]
struct Slot(Envelope);

// An envelope that outgrows two lines makes every slot three: look again at
// the envelope's fields before letting it.
const _: () = assert!(std::mem::size_of::<Slot>() == 128);

/// One participant's end of the mesh: a producer to every participant it
/// talks to and a consumer from each. Owned by that participant's thread.
pub struct MeshPort {
    participant: usize,
    outbound: Vec<Option<Producer<Slot>>>,
    inbound: Vec<Option<Consumer<Slot>>>,
    doorbells: Arc<[Doorbell]>,
    next_inbound: usize,
    /// Participants sent to by [`MeshPort::send_ringing_later`] since the
    /// last [`MeshPort::ring_deferred`], each once.
    unrung: Vec<usize>,
    /// Per receiver: the messages sent to it this turn after the first,
    /// waiting for the turn's end ([`Self::send_ringing_later`]).
    staged: Vec<Vec<Envelope>>,
}

/// Build the mesh for `participants`, each ring holding `ring_capacity` messages.
pub fn build_mesh(participants: usize, ring_capacity: usize) -> Vec<MeshPort> {
    assert!(ring_capacity > 0, "a ring holds at least one message");
    build_mesh_with(participants, |_, _| ring_capacity)
}

/// Build the mesh for `participants`, the ring from `from` to `to`
/// holding `capacity(from, to)` messages; a capacity of 0 means no ring
/// (participants that never talk to each other, such as two clients).
pub fn build_mesh_with(
    participants: usize,
    capacity: impl Fn(usize, usize) -> usize,
) -> Vec<MeshPort> {
    let doorbells: Arc<[Doorbell]> = (0..participants).map(|_| Doorbell::default()).collect();
    let mut ports: Vec<MeshPort> = (0..participants)
        .map(|participant| MeshPort {
            participant,
            outbound: (0..participants).map(|_| None).collect(),
            inbound: (0..participants).map(|_| None).collect(),
            doorbells: Arc::clone(&doorbells),
            next_inbound: 0,
            unrung: Vec::new(),
            staged: (0..participants).map(|_| Vec::new()).collect(),
        })
        .collect();
    for from in 0..participants {
        for to in (0..participants).filter(|&to| to != from) {
            let ring_capacity = capacity(from, to);
            if ring_capacity == 0 {
                continue;
            }
            let (producer, consumer) = RingBuffer::new(ring_capacity);
            ports[from].outbound[to] = Some(producer);
            ports[to].inbound[from] = Some(consumer);
        }
    }
    ports
}

impl MeshPort {
    /// This port's participant number (a data shard's index, or a client
    /// port's number after the data shards).
    pub fn participant(&self) -> usize {
        self.participant
    }

    /// Participants in the mesh: data shards and client ports together.
    pub fn participants(&self) -> usize {
        self.outbound.len()
    }

    /// Send `envelope` to participant `to` and ring its doorbell. A full
    /// ring hands the envelope back: the caller refuses the send explicitly.
    pub fn send(&mut self, to: usize, envelope: Envelope) -> Result<(), Envelope> {
        // After the messages this turn left waiting for `to`, in order.
        self.publish(to);
        self.push(to, envelope)?;
        self.doorbells[to].ring();
        Ok(())
    }

    /// [`Self::send`] within a turn: the first send of the turn to `to`
    /// goes onto its ring and rings its doorbell (a parked receiver starts
    /// at once); later ones wait in this port, and [`Self::ring_deferred`]
    /// puts them on the ring and rings again. The caller must call it at
    /// the end of the turn, before it could wait for anything (until then
    /// the receiver sees only the first, and one that parked again sleeps).
    /// A full ring (counting the messages waiting for it) hands the
    /// envelope back, as [`Self::send`] does.
    ///
    /// Why: a doorbell's fence waits for every store before it, and the
    /// slot just written is on lines the receiver's core last read, so each
    /// fence waits out a cross-core miss. A shard sending a batch of
    /// messages to one receiver fences twice a turn, not once a message,
    /// and the misses overlap. (Deferring the first ring too starved
    /// receivers that park: cross-shard pairs fell from 1.27M/s to 451k/s
    /// per shard on the 2-core machine.)
    ///
    /// The later sends wait in a buffer of this port's and are copied into
    /// the ring at the turn's end, together. Each slot written lies on
    /// lines the receiver's core last read, so the store waits for those
    /// lines; until it completes every later store waits too, and so does
    /// any load the core cannot serve from them, such as the handler
    /// reading its next message. Written as they were sent, one such
    /// wait per message fell inside the handlers; copied after the turn's
    /// last handler, they overlap each other there. On the 2-core VM with
    /// its vCPUs far apart (a 380–430 ns cache-line round trip), cross-shard
    /// pairs ran at 1.54–1.64M/s per shard one way and 2.17–2.40M/s the
    /// other; with them close (85–130 ns), 3.69–3.77M/s against
    /// 3.51–3.68M/s: the copy costs a little.
    pub fn send_ringing_later(&mut self, to: usize, envelope: Envelope) -> Result<(), Envelope> {
        if !self.unrung.contains(&to) {
            self.push(to, envelope)?;
            self.doorbells[to].ring();
            self.unrung.push(to);
            return Ok(());
        }
        let waiting = self.staged[to].len();
        // Room for this one after those already waiting; rtrb rereads the
        // receiver's head only when its cached copy says full.
        if self.producer(to).write_chunk_uninit(waiting + 1).is_err() {
            return Err(envelope);
        }
        self.staged[to].push(envelope);
        Ok(())
    }

    /// Copy the messages waiting for `to` into its ring, in order.
    fn publish(&mut self, to: usize) {
        // Nothing waits for a participant with no ring (`send` then fails
        // in `push`, naming it) or for one not sent to since the last turn.
        let Some(staged) = self.staged.get_mut(to).filter(|staged| !staged.is_empty()) else {
            return;
        };
        let mut staged = std::mem::take(staged);
        let free = self
            .producer(to)
            .write_chunk_uninit(staged.len())
            .expect("room was counted for each as it was sent; only we fill the ring");
        free.fill_from_iter(staged.drain(..).map(Slot));
        // The buffer keeps its capacity for the next turn.
        self.staged[to] = staged;
    }

    fn producer(&mut self, to: usize) -> &mut Producer<Slot> {
        let participant = self.participant;
        self.outbound
            .get_mut(to)
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("participant {participant} has no ring to participant {to}"))
    }

    /// Put the messages [`Self::send_ringing_later`] left waiting onto
    /// their rings, ring with one fence every doorbell it sent to this
    /// turn, and start a new turn.
    pub fn ring_deferred(&mut self) {
        if self.unrung.is_empty() {
            return;
        }
        for index in 0..self.unrung.len() {
            self.publish(self.unrung[index]);
        }
        // The pairing of `Doorbell::ring`, once for all of them.
        fence(Ordering::SeqCst);
        for to in self.unrung.drain(..) {
            self.doorbells[to].wake_if_parked();
        }
    }

    fn push(&mut self, to: usize, envelope: Envelope) -> Result<(), Envelope> {
        // A missing ring is a programmer error: callers check `has_ring_to`
        // for addresses they did not compute themselves, and never send to
        // themselves.
        self.producer(to)
            .push(Slot(envelope))
            .map_err(|rtrb::PushError::Full(Slot(envelope))| envelope)
    }

    /// Whether this port has a ring to participant `to` (every other participant).
    pub fn has_ring_to(&self, to: usize) -> bool {
        self.outbound.get(to).is_some_and(Option::is_some)
    }

    /// Free room in the ring to participant `to`.
    pub fn room_to(&self, to: usize) -> usize {
        self.outbound
            .get(to)
            .and_then(Option::as_ref)
            .map_or(0, Producer::slots)
            .saturating_sub(self.staged.get(to).map_or(0, Vec::len))
    }

    /// Take up to `batch_size` messages from each inbound ring, starting with
    /// a different ring each call so that no sender starves, and hand each to
    /// `deliver`. Returns how many were taken.
    pub fn drain(&mut self, batch_size: usize, deliver: impl FnMut(Envelope)) -> usize {
        self.drain_except(batch_size, |_| false, deliver)
    }

    /// [`Self::drain`], leaving untouched the rings from the participants
    /// `skip` names: a shard takes nothing from a client it cannot answer.
    pub fn drain_except(
        &mut self,
        batch_size: usize,
        skip: impl Fn(usize) -> bool,
        mut deliver: impl FnMut(Envelope),
    ) -> usize {
        let rings = self.inbound.len();
        let mut taken = 0;
        for offset in 0..rings {
            let index = (self.next_inbound + offset) % rings;
            let Some(consumer) = self.inbound[index].as_mut().filter(|_| !skip(index)) else {
                continue;
            };
            // One read of the producer's tail and one store of our head per
            // ring, not one per message: under load those two lines would
            // otherwise cross cores with every message.
            let ready = consumer.slots().min(batch_size);
            if ready == 0 {
                continue;
            }
            let Ok(chunk) = consumer.read_chunk(ready) else {
                unreachable!("the consumer saw {ready} messages; only it takes them")
            };
            for Slot(envelope) in chunk {
                deliver(envelope);
                taken += 1;
            }
        }
        self.next_inbound = (self.next_inbound + 1) % rings.max(1);
        taken
    }

    /// Whether a message (on a ring `skip` does not name) or a control command waits.
    fn has_work(&self, skip: &impl Fn(usize) -> bool) -> bool {
        self.has_inbound_except(skip)
            || self.doorbells[self.participant]
                .control_pending
                .load(Ordering::Acquire)
    }

    /// Clear the control flag before draining the control channel; a command
    /// queued after this sets it again.
    ///
    /// Called at the top of every turn, and of every poll while a shard
    /// spins. The flag shares its line with `parked`, which every sender
    /// reads after a push: a swap would take that line for writing each
    /// time, and the senders' next read would take it back. Reading first
    /// writes only when a command is queued, which is rare.
    pub fn take_control_flag(&self) -> bool {
        let flag = &self.doorbells[self.participant].control_pending;
        flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::AcqRel)
    }

    /// Messages waiting in the inbound rings. Reads every producer's tail:
    /// for snapshots (metrics), not for each turn.
    pub fn inbound_len(&self) -> usize {
        self.inbound.iter().flatten().map(Consumer::slots).sum()
    }

    /// Whether any inbound ring holds a message.
    pub fn has_inbound(&self) -> bool {
        self.has_inbound_except(&|_| false)
    }

    /// Whether an inbound ring from a participant `skip` does not name holds a message.
    fn has_inbound_except(&self, skip: &impl Fn(usize) -> bool) -> bool {
        self.inbound.iter().enumerate().any(|(from, consumer)| {
            consumer
                .as_ref()
                .is_some_and(|consumer| !consumer.is_empty())
                && !skip(from)
        })
    }

    /// Resolve when an inbound ring may hold a message or the doorbell was
    /// rung for another reason (a control command), parking the task (and,
    /// when nothing else is runnable, the executor) until then. Callers loop,
    /// so an early return costs one empty pass.
    pub async fn wait_for_messages(&self) {
        self.wait_for_messages_except(|_| false).await;
    }

    /// [`Self::wait_for_messages`], not counting messages on the rings from
    /// the participants `skip` names (those [`Self::drain_except`] leaves).
    pub async fn wait_for_messages_except(&self, skip: impl Fn(usize) -> bool) {
        let doorbell = &self.doorbells[self.participant];
        let mut registered = false;
        poll_fn(|context| {
            if registered || self.has_work(&skip) {
                doorbell.parked.store(false, Ordering::Relaxed);
                return Poll::Ready(());
            }
            doorbell.waker.register(context.waker());
            doorbell.parked.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.has_work(&skip) {
                doorbell.parked.store(false, Ordering::Relaxed);
                return Poll::Ready(());
            }
            registered = true;
            Poll::Pending
        })
        .await;
    }

    /// The doorbells of every participant, so the control plane can wake a
    /// shard after queueing a command for it.
    pub fn doorbells(&self) -> Arc<[Doorbell]> {
        Arc::clone(&self.doorbells)
    }
}

impl Drop for MeshPort {
    /// Messages still waiting for their turn's end go into their rings, so
    /// the receivers get them.
    fn drop(&mut self) {
        for to in 0..self.staged.len() {
            self.publish(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Address, AgentId, Performative, PriorityClass};

    fn message(tag: u64) -> Envelope {
        Envelope {
            performative: Performative::Inform,
            sender: Address::Client { port: 0, id: 0 },
            receiver: Address::Agent(AgentId(0)),
            conversation_id: 0,
            reply_with: tag,
            in_reply_to: 0,
            priority: PriorityClass(0),
            deadline_ns: Envelope::NO_DEADLINE,
            sent_at_ns: 0,
            from_participant: 0,
            durability: crate::Durability::Transient,
            content: Vec::new(),
            trace: 0,
        }
    }

    #[test]
    fn every_ordered_pair_has_its_own_bounded_ring() {
        let mut ports = build_mesh(3, 2);
        ports[0].send(2, message(1)).expect("room");
        ports[1].send(2, message(2)).expect("room");
        ports[0].send(2, message(3)).expect("room");
        assert_eq!(
            ports[0]
                .send(2, message(4))
                .expect_err("ring 0->2 holds two")
                .reply_with,
            4
        );
        assert_eq!(ports[2].inbound_len(), 3, "waiting over both rings");
        assert_eq!(ports[0].inbound_len(), 0);
        let mut seen = Vec::new();
        let taken = ports[2].drain(8, |envelope| seen.push(envelope.reply_with));
        assert_eq!(taken, 3);
        assert_eq!(ports[2].inbound_len(), 0);
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3]);
        assert!(!ports[2].has_inbound());
    }

    #[test]
    fn a_skipped_ring_is_neither_drained_nor_counted_as_work() {
        let mut ports = build_mesh(3, 4);
        ports[0].send(2, message(1)).expect("room");
        ports[1].send(2, message(2)).expect("room");
        let skip_0 = |from: usize| from == 0;
        let mut seen = Vec::new();
        assert_eq!(
            ports[2].drain_except(8, skip_0, |envelope| seen.push(envelope.reply_with)),
            1
        );
        assert_eq!(seen, [2], "only the ring from participant 1");
        assert!(ports[2].has_inbound(), "the skipped message is still there");
        assert!(
            !ports[2].has_work(&skip_0),
            "but it is no work while skipped"
        );
        assert!(ports[2].has_work(&|_| false));
        ports[2].drain(8, |envelope| seen.push(envelope.reply_with));
        assert_eq!(seen, [2, 1]);
    }

    #[test]
    fn drains_are_bounded_by_the_batch_size() {
        let mut ports = build_mesh(2, 16);
        for tag in 0..10 {
            ports[0].send(1, message(tag)).expect("room");
        }
        let mut seen = Vec::new();
        assert_eq!(
            ports[1].drain(4, |envelope| seen.push(envelope.reply_with)),
            4
        );
        assert_eq!(
            ports[1].drain(4, |envelope| seen.push(envelope.reply_with)),
            4
        );
        assert_eq!(
            ports[1].drain(4, |envelope| seen.push(envelope.reply_with)),
            2
        );
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "order holds per ring");
    }

    #[test]
    fn a_drain_across_the_end_of_the_ring_keeps_order_and_frees_every_slot() {
        let mut ports = build_mesh(2, 4);
        let mut seen = Vec::new();
        // Three laps of a 4-slot ring, 3 messages a time: every drain but
        // the first reads a run that wraps past the last slot.
        for lap in 0..4u64 {
            for tag in lap * 3..lap * 3 + 3 {
                ports[0]
                    .send(1, message(tag))
                    .expect("the last drain freed the ring");
            }
            assert_eq!(
                ports[1].drain(8, |envelope| seen.push(envelope.reply_with)),
                3
            );
            assert_eq!(ports[0].room_to(1), 4, "every slot read is free again");
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_turns_later_sends_reach_the_ring_together_in_order_and_count_against_the_room() {
        let mut ports = build_mesh(2, 4);
        let mut seen = Vec::new();
        for lap in 0..3u64 {
            // The first send of a turn goes onto the ring at once; the next
            // three wait for the turn's end, across the end of the ring.
            ports[0]
                .send_ringing_later(1, message(lap * 4))
                .expect("room");
            for tag in lap * 4 + 1..lap * 4 + 4 {
                ports[0].send_ringing_later(1, message(tag)).expect("room");
            }
            assert_eq!(ports[0].room_to(1), 0, "written slots are taken");
            let refused = ports[0]
                .send_ringing_later(1, message(99))
                .expect_err("a full ring refuses, counting the messages still waiting");
            assert_eq!(refused.reply_with, 99);
            assert_eq!(
                ports[1].drain(8, |envelope| seen.push(envelope.reply_with)),
                1,
                "only the first is on the ring before the turn ends"
            );
            ports[0].ring_deferred();
            assert_eq!(
                ports[1].drain(8, |envelope| seen.push(envelope.reply_with)),
                3
            );
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_plain_send_goes_after_what_the_turn_already_wrote() {
        let mut ports = build_mesh(2, 8);
        ports[0].send_ringing_later(1, message(1)).expect("room");
        ports[0].send_ringing_later(1, message(2)).expect("room");
        ports[0].send(1, message(3)).expect("room");
        let mut seen = Vec::new();
        ports[1].drain(8, |envelope| seen.push(envelope.reply_with));
        assert_eq!(seen, [1, 2, 3]);
    }

    #[test]
    fn a_dropped_port_puts_what_waits_on_the_ring() {
        let mut ports = build_mesh(2, 4);
        let mut receiver = ports.remove(1);
        let mut sender = ports.remove(0);
        for tag in 0..3 {
            sender.send_ringing_later(1, message(tag)).expect("room");
        }
        // Two still wait for the turn's end: dropping the port puts them
        // on the ring, or the receiver would never get them.
        drop(sender);
        let mut seen = Vec::new();
        receiver.drain(8, |envelope| seen.push(envelope.reply_with));
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn a_turn_rings_each_receiver_at_its_first_send_and_again_at_its_end() {
        use std::sync::atomic::AtomicUsize;
        let mut ports = build_mesh(3, 4);
        let mut receiver = ports.remove(1);
        let sender = &mut ports[0];
        let doorbells = sender.doorbells();
        let waker_state = Arc::new(ThreadWaker {
            thread: std::thread::current(),
            wakes: AtomicUsize::new(0),
        });
        let waker = std::task::Waker::from(Arc::clone(&waker_state));
        let mut context = std::task::Context::from_waker(&waker);
        let wakes = || waker_state.wakes.load(Ordering::Acquire);
        let mut park = |receiver: &MeshPort| {
            let mut waiting = std::pin::pin!(receiver.wait_for_messages());
            assert!(std::future::Future::poll(waiting.as_mut(), &mut context).is_pending());
            assert!(doorbells[1].parked.load(Ordering::Acquire), "it parked");
        };
        park(&receiver);
        // The turn's first send to it rings at once.
        sender.send_ringing_later(1, message(1)).expect("room");
        assert_eq!(wakes(), 1, "rung at once");
        assert_eq!(receiver.drain(8, |_| {}), 1);
        // It parked again; the turn's next send leaves it asleep...
        park(&receiver);
        sender.send_ringing_later(1, message(2)).expect("room");
        assert_eq!(wakes(), 1, "not rung again within the turn");
        assert!(!receiver.has_inbound(), "it waits for the turn's end");
        // ...until the turn ends.
        sender.ring_deferred();
        assert_eq!(wakes(), 2, "the end of the turn rings");
        assert!(!doorbells[1].parked.load(Ordering::Acquire));
        assert!(receiver.has_inbound(), "on the ring now");
        sender.ring_deferred();
        assert_eq!(wakes(), 2, "nothing left to ring");
    }

    #[test]
    fn a_control_command_is_taken_once_per_notice() {
        let ports = build_mesh(2, 4);
        let doorbells = ports[0].doorbells();
        assert!(!ports[1].take_control_flag(), "nothing was queued");
        doorbells[1].notify_control();
        assert!(ports[1].has_work(&|_| false), "a queued command is work");
        assert!(
            !ports[0].take_control_flag(),
            "another participant's notice"
        );
        assert!(ports[1].take_control_flag(), "the notice is taken");
        assert!(!ports[1].take_control_flag(), "once");
        assert!(!ports[1].has_work(&|_| false), "and is no longer work");
    }

    #[test]
    fn a_parked_receiver_is_woken_by_a_send_from_another_thread() {
        use std::sync::atomic::AtomicUsize;
        use std::time::{Duration, Instant};
        let patience = Duration::from_secs(10);
        let mut ports = build_mesh(2, 4);
        let receiver = ports.pop().expect("port 1");
        let mut sender = ports.pop().expect("port 0");
        let doorbells = sender.doorbells();
        let waiter = std::thread::spawn(move || {
            // A minimal executor: block on the future with a thread-parking
            // waker that records being woken; gives up after `patience`.
            let waker_state = Arc::new(ThreadWaker {
                thread: std::thread::current(),
                wakes: AtomicUsize::new(0),
            });
            let waker = std::task::Waker::from(Arc::clone(&waker_state));
            let mut context = std::task::Context::from_waker(&waker);
            let mut future = std::pin::pin!(receiver.wait_for_messages());
            let deadline = Instant::now() + patience;
            let mut pending = 0;
            while std::future::Future::poll(future.as_mut(), &mut context).is_pending() {
                pending += 1;
                while waker_state.wakes.load(Ordering::Acquire) == 0 {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return (pending, 0, receiver.has_inbound());
                    }
                    std::thread::park_timeout(left);
                }
            }
            (
                pending,
                waker_state.wakes.load(Ordering::Acquire),
                receiver.has_inbound(),
            )
        });
        // Send only once the receiver has said it is parked.
        let deadline = Instant::now() + patience;
        while !doorbells[1].parked.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the receiver never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        sender.send(1, message(7)).expect("room");
        let (pending, wakes, has_inbound) = waiter.join().expect("waiter");
        assert_eq!(pending, 1, "the receiver waited once, parked");
        assert_eq!(wakes, 1, "the send woke it through its waker");
        assert!(has_inbound, "and it finds the message");
        assert!(
            !doorbells[1].parked.load(Ordering::Acquire),
            "a woken receiver is no longer marked parked"
        );
    }

    struct ThreadWaker {
        thread: std::thread::Thread,
        wakes: std::sync::atomic::AtomicUsize,
    }

    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::Release);
            self.thread.unpark();
        }
    }
}
