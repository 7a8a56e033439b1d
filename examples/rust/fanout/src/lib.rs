//! fanout: a gatherer (the twin of `examples/agents/fanout.wat`). On a
//! `request` whose content names N agents (`[n: u8]` then, per agent,
//! `[name length: u8][name]`), it sends each a `request` and gathers their
//! answers; when all N have answered it answers the original request with
//! `inform` and N as 4 little-endian bytes. A `failure` from an agent (its
//! handler failed, or the engine gave up on the request) is an answer too: a
//! gather never waits for ever. One gather at a time: a request that arrives
//! during one is answered `refuse`.
//!
//! Failure codes, as the WAT twin's: 1 malformed content, 2 no ticket,
//! 3 a send failed (the gather is dropped).
#![no_std]

use caxton_agent::{request, Agent, Error, Message, Performative, Ticket};

/// The WAT twin reads at most this much content.
const CONTENT_MAX: usize = 64512;

/// The open gather, if any.
#[derive(Default)]
pub struct Fanout {
    gather: Option<Gather>,
}

/// A deferred answer and its count of answers.
struct Gather {
    ticket: Ticket,
    awaited: u32,
    received: u32,
}

impl Agent for Fanout {
    fn handle(&mut self, message: &Message) -> Result<(), Error> {
        if matches!(
            message.performative(),
            Performative::Inform | Performative::Failure
        ) {
            return self.answer(message);
        }
        if self.gather.is_some() {
            return message.reply(Performative::Refuse, &[]);
        }
        let mut content = message.content();
        content.truncate(CONTENT_MAX);
        let count = match content.first() {
            Some(&count) if count > 0 => count,
            _ => return Err(Error::Failed(1)),
        };
        let ticket = message.defer_reply().map_err(|_| Error::Failed(2))?;
        self.gather = Some(Gather {
            ticket,
            awaited: u32::from(count),
            received: 0,
        });
        let mut names = &content[1..];
        for _ in 0..count {
            let name = names.split_first().and_then(|(&len, rest)| {
                let (name, rest) = rest.split_at_checked(usize::from(len))?;
                names = rest;
                core::str::from_utf8(name).ok()
            });
            let sent = name.is_some_and(|name| request(name, &[], ticket.id()).is_ok());
            if !sent {
                self.gather = None;
                return Err(Error::Failed(3));
            }
        }
        Ok(())
    }
}

impl Fanout {
    /// An `inform` or `failure`: one of the gather's answers, or a stray one to ignore.
    fn answer(&mut self, message: &Message) -> Result<(), Error> {
        let Some(gather) = self.gather.as_mut() else {
            return Ok(());
        };
        if !gather.ticket.is_answered_by(message) {
            return Ok(());
        }
        gather.received += 1;
        if gather.received == gather.awaited {
            let done = self
                .gather
                .take()
                .map(|gather| (gather.ticket, gather.awaited));
            if let Some((ticket, awaited)) = done {
                // The ticket is used once whatever the outcome, as in the twin.
                let _ = ticket.reply(Performative::Inform, &awaited.to_le_bytes());
            }
        }
        Ok(())
    }
}

caxton_agent::export!(Fanout);
