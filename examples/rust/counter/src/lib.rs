//! counter: keeps a count across messages in the instance's memory and
//! answers each with `inform` and the new count as 8 little-endian bytes
//! (the twin of `examples/agents/counter.wat`). The count lives as long as
//! the instance; `tally` shows state that outlives it.
#![no_std]

use caxton_agent::{Agent, Error, Message, Performative};

/// Messages this instance has handled.
#[derive(Default)]
pub struct Counter {
    count: u64,
}

impl Agent for Counter {
    fn handle(&mut self, message: &Message) -> Result<(), Error> {
        self.count += 1;
        message.reply(Performative::Inform, &self.count.to_le_bytes())
    }
}

caxton_agent::export!(Counter);
