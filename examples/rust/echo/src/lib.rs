//! echo: answers every message with `inform` carrying the same content
//! (the twin of `examples/agents/echo.wat`, which echoes up to 63 KiB).
#![no_std]

use caxton_agent::{Agent, Error, Message, Performative};

/// Content past this is cut, as the WAT echo cuts it.
const ECHO_MAX: usize = 64512;

/// Stateless: nothing is kept between messages.
#[derive(Default)]
pub struct Echo;

impl Agent for Echo {
    fn handle(&mut self, message: &Message) -> Result<(), Error> {
        let mut content = message.content();
        content.truncate(ECHO_MAX);
        message.reply(Performative::Inform, &content)
    }
}

caxton_agent::export!(Echo);
