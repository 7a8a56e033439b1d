//! forwarder: passes a message down a pipeline (the twin of
//! `examples/agents/forwarder.wat`). Content is the route, then the payload:
//! `[hops: u8]` then, per hop, `[name length: u8][name]`, then the payload.
//! With hops left it strips the first hop and forwards the rest to it (the
//! original sender stays the sender); with none left it answers `inform`
//! with the payload.
//!
//! Failure codes, as the WAT twin's: 1 empty or oversized content, 2 a
//! route cut short, 3 the next hop is not deployed.
#![no_std]

extern crate alloc;

use caxton_agent::{Agent, Error, Message, Performative};

/// The WAT twin reads at most this much content.
const CONTENT_MAX: usize = 64512;

/// Stateless.
#[derive(Default)]
pub struct Forwarder;

impl Agent for Forwarder {
    fn handle(&mut self, message: &Message) -> Result<(), Error> {
        let content = message.content();
        let (&hops, route) = match content.split_first() {
            Some(parts) if content.len() <= CONTENT_MAX => parts,
            _ => return Err(Error::Failed(1)),
        };
        if hops == 0 {
            return message.reply(Performative::Inform, route);
        }
        let name_len = usize::from(*route.first().ok_or(Error::Failed(2))?);
        if name_len + 2 > content.len() {
            return Err(Error::Failed(2));
        }
        let name = core::str::from_utf8(&route[1..1 + name_len]).map_err(|_| Error::Failed(3))?;
        let mut rest = alloc::vec::Vec::with_capacity(content.len() - name_len - 1);
        rest.push(hops - 1);
        rest.extend_from_slice(&route[1 + name_len..]);
        message.forward(name, &rest).map_err(|_| Error::Failed(3))
    }
}

caxton_agent::export!(Forwarder);
