//! A shard's inbound mailbox: bounded, one FIFO per priority class, and
//! deadlines. A pure data structure: time comes in as an argument.
//!
//! Every message gets an effective deadline when it is accepted: the earliest
//! of its own deadline, `messaging.delivery_timeout` and its class's
//! `max_latency`. A message whose deadline has passed when it reaches the
//! front is handed back as expired, so the caller answers its sender with
//! `failure` (timeout): never dropped silently.
//!
//! An answer (`in_reply_to` set: a reply, or the engine's `failure` in
//! place of one) gets no deadline and never expires. A deadline bounds how
//! long a request may wait for its handler; an answer's receiver has been
//! waiting for it since it asked, and expired, it would only be reported to
//! its sender, leaving a requester that holds a deferred reply open on it
//! (a gatherer) waiting for ever. A stored message gets none either: once
//! acknowledged it is owed its handling (at least once), and only
//! `messaging.message_ttl` ends its life unhandled.

use std::collections::VecDeque;

use crate::envelope::{Envelope, PriorityClass};

/// The mailbox's limits, from the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Most messages held (`messaging.queue_size`).
    pub capacity: usize,
    /// `messaging.delivery_timeout` in nanoseconds.
    pub delivery_timeout_ns: u64,
    /// `max_latency` of each priority class in nanoseconds, most urgent first.
    /// One entry (and no class latency) when priority routing is off.
    pub class_max_latency_ns: Vec<Option<u64>>,
}

/// Why a message was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct MailboxFull(pub Envelope);

/// What [`Mailbox::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped {
    /// A message to handle.
    Ready(Envelope),
    /// A message whose deadline passed while it waited.
    Expired(Envelope),
    /// Nothing waiting.
    Empty,
}

/// See the module docs.
#[derive(Debug)]
pub struct Mailbox {
    classes: Vec<VecDeque<Envelope>>,
    config: MailboxConfig,
    len: usize,
}

impl Mailbox {
    /// An empty mailbox with `config`'s limits.
    pub fn new(config: MailboxConfig) -> Self {
        assert!(
            !config.class_max_latency_ns.is_empty(),
            "a mailbox has at least one class"
        );
        assert!(
            config.capacity > 0,
            "validated by the profile: queue_size >= 1"
        );
        Self {
            classes: config
                .class_max_latency_ns
                .iter()
                .map(|_| VecDeque::new())
                .collect(),
            config,
            len: 0,
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most messages it holds.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// Accept `envelope` at `now_ns`, or hand it back when full.
    pub fn push(&mut self, envelope: Envelope, now_ns: u64) -> Result<(), MailboxFull> {
        if self.len >= self.config.capacity {
            return Err(MailboxFull(envelope));
        }
        self.push_owed(envelope, now_ns);
        Ok(())
    }

    /// Accept `envelope` at `now_ns` even past the capacity: a message the
    /// node already promised to handle (a stored one) is never handed back.
    ///
    /// An owed message ([`Envelope::is_owed`]: an answer, a stored message)
    /// gets no deadline: the one is handed to its requester however late,
    /// and the other is handled at least once (only
    /// `messaging.message_ttl` ends its life unhandled).
    pub fn push_owed(&mut self, mut envelope: Envelope, now_ns: u64) {
        let class = usize::from(envelope.priority.0).min(self.classes.len() - 1);
        envelope.deadline_ns = if envelope.is_owed() {
            Envelope::NO_DEADLINE
        } else {
            let deadline = envelope
                .deadline_ns
                .min(now_ns.saturating_add(self.config.delivery_timeout_ns));
            match self.config.class_max_latency_ns[class] {
                Some(max_latency) => deadline.min(now_ns.saturating_add(max_latency)),
                None => deadline,
            }
        };
        self.classes[class].push_back(envelope);
        self.len += 1;
    }

    /// Take back the newest message `is_taken` picks that is no more urgent
    /// than class `class`, looking at the least urgent class first: the
    /// message a full shard refuses to make room for one of `class`.
    pub fn take_newest(
        &mut self,
        class: PriorityClass,
        is_taken: impl Fn(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let most_urgent = usize::from(class.0).min(self.classes.len() - 1);
        let taken = self.classes[most_urgent..]
            .iter_mut()
            .rev()
            .find_map(|queue| {
                let position = queue.iter().rposition(&is_taken)?;
                queue.remove(position)
            })?;
        self.len -= 1;
        Some(taken)
    }

    /// The next message at `now_ns`: the front of the most urgent non-empty class.
    pub fn pop(&mut self, now_ns: u64) -> Popped {
        let Some(class) = self.classes.iter_mut().find(|class| !class.is_empty()) else {
            return Popped::Empty;
        };
        let Some(envelope) = class.pop_front() else {
            return Popped::Empty;
        };
        self.len -= 1;
        if envelope.deadline_ns < now_ns {
            Popped::Expired(envelope)
        } else {
            Popped::Ready(envelope)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Address, AgentId, Performative, PriorityClass};

    fn message(priority: u8, tag: u8) -> Envelope {
        Envelope {
            performative: Performative::Request,
            sender: Address::Client { port: 0, id: 1 },
            receiver: Address::Agent(AgentId(0)),
            conversation_id: 0,
            reply_with: u64::from(tag),
            in_reply_to: 0,
            priority: PriorityClass(priority),
            deadline_ns: Envelope::NO_DEADLINE,
            sent_at_ns: 0,
            from_participant: 0,
            durability: crate::Durability::Transient,
            content: vec![tag],
            trace: 0,
        }
    }

    fn config(capacity: usize) -> MailboxConfig {
        MailboxConfig {
            capacity,
            delivery_timeout_ns: 1_000_000,
            class_max_latency_ns: vec![Some(10), Some(100), Some(1_000), Some(10_000)],
        }
    }

    fn tag(popped: Popped) -> (bool, u8) {
        match popped {
            Popped::Ready(envelope) => (true, envelope.content[0]),
            Popped::Expired(envelope) => (false, envelope.content[0]),
            Popped::Empty => panic!("empty"),
        }
    }

    #[test]
    fn urgent_classes_go_first_and_order_holds_within_a_class() {
        let mut mailbox = Mailbox::new(config(10));
        for (priority, tag) in [(3, 1), (2, 2), (0, 3), (2, 4), (0, 5)] {
            mailbox.push(message(priority, tag), 0).expect("room");
        }
        let order: Vec<u8> = (0..5).map(|_| tag(mailbox.pop(0)).1).collect();
        assert_eq!(order, [3, 5, 2, 4, 1]);
        assert_eq!(mailbox.pop(0), Popped::Empty);
    }

    #[test]
    fn a_full_mailbox_hands_the_message_back() {
        let mut mailbox = Mailbox::new(config(2));
        mailbox.push(message(0, 1), 0).expect("room");
        mailbox.push(message(0, 2), 0).expect("room");
        let MailboxFull(refused) = mailbox.push(message(0, 3), 0).expect_err("full");
        assert_eq!(refused.content, [3]);
        assert_eq!(mailbox.len(), 2);
    }

    #[test]
    fn an_answer_never_expires() {
        let mut mailbox = Mailbox::new(config(10));
        let answer = Envelope {
            in_reply_to: 7,
            deadline_ns: 5,
            ..message(0, 1)
        };
        mailbox.push(answer, 0).expect("room");
        // Past its own deadline, the class's 10 ns and the delivery timeout.
        assert_eq!(tag(mailbox.pop(2_000_000)), (true, 1));
    }

    #[test]
    fn a_stored_message_never_expires() {
        let mut mailbox = Mailbox::new(config(10));
        let stored = Envelope {
            durability: crate::Durability::Stored(3),
            deadline_ns: 5,
            ..message(0, 1)
        };
        mailbox.push(stored, 0).expect("room");
        assert_eq!(tag(mailbox.pop(2_000_000)), (true, 1));
    }

    #[test]
    fn class_latency_and_delivery_timeout_expire_messages() {
        let mut mailbox = Mailbox::new(config(10));
        mailbox.push(message(0, 1), 0).expect("room"); // critical: 10 ns
        mailbox.push(message(3, 2), 0).expect("room"); // low: 10 µs
        assert_eq!(
            tag(mailbox.pop(11)),
            (false, 1),
            "critical waited past 10 ns"
        );
        assert_eq!(tag(mailbox.pop(11)), (true, 2), "low is still in time");

        let mut own_deadline = message(3, 3);
        own_deadline.deadline_ns = 5;
        mailbox.push(own_deadline, 0).expect("room");
        assert_eq!(
            tag(mailbox.pop(6)),
            (false, 3),
            "the sender's own deadline counts"
        );

        let mut untimed = Mailbox::new(MailboxConfig {
            capacity: 4,
            delivery_timeout_ns: 50,
            class_max_latency_ns: vec![None],
        });
        untimed.push(message(2, 4), 0).expect("room");
        assert_eq!(
            tag(untimed.pop(51)),
            (false, 4),
            "delivery_timeout applies without priority classes"
        );
    }

    #[test]
    fn the_newest_picked_message_no_more_urgent_is_taken_back() {
        let mut mailbox = Mailbox::new(config(10));
        for (priority, tag) in [(1, 1), (1, 2), (3, 3), (1, 4), (0, 5)] {
            mailbox.push(message(priority, tag), 0).expect("room");
        }
        let odd = |envelope: &Envelope| envelope.content[0] % 2 == 1;
        // Least urgent class first: 3 (low), then the newest odd of class 1.
        assert_eq!(
            mailbox
                .take_newest(PriorityClass(1), odd)
                .map(|e| e.content[0]),
            Some(3)
        );
        assert_eq!(
            mailbox
                .take_newest(PriorityClass(1), odd)
                .map(|e| e.content[0]),
            Some(1)
        );
        // 5 is critical: more urgent than class 1, so it stays.
        assert_eq!(mailbox.take_newest(PriorityClass(1), odd), None);
        assert_eq!(mailbox.len(), 3);
        let order: Vec<u8> = (0..3).map(|_| tag(mailbox.pop(0)).1).collect();
        assert_eq!(order, [5, 2, 4]);
    }
}
