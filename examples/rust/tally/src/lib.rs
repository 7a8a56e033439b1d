//! tally: counts how often it has seen each content, in the agent's
//! key-value state (kept in the shard's storage partition when the node
//! persists), and answers `inform` with the new count as 4 little-endian
//! bytes; the twin of `examples/agents/tally.wat`. Contents up to 256 bytes
//! are keys; longer ones fail the message (code 1). The count is stored
//! typed, as MessagePack.
#![no_std]

use caxton_agent::{state, Agent, Error, Message, Performative};

/// The longest key the state takes.
const KEY_MAX: usize = 256;

/// Stateless itself: the counts live in the agent's state.
#[derive(Default)]
pub struct Tally;

impl Agent for Tally {
    fn handle(&mut self, message: &Message) -> Result<(), Error> {
        let key = message.content();
        if key.len() > KEY_MAX {
            return Err(Error::Failed(1));
        }
        let count = state::get_value::<u32>(&key)?.unwrap_or(0) + 1;
        state::put_value(&key, &count).map_err(|_| Error::Failed(2))?;
        message.reply(Performative::Inform, &count.to_le_bytes())
    }
}

caxton_agent::export!(Tally);
