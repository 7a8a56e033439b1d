//! The message a handler is called for, and tickets for answering it later.

use alloc::string::String;
use alloc::vec::Vec;
use core::num::NonZeroU64;

use crate::{host, Error, Performative};

/// The message the current handler call is for. Each accessor asks the host
/// (a call that reads the engine's copy of the message), so read what you
/// need once.
#[derive(Debug)]
pub struct Message {
    _current: (),
}

impl Message {
    /// The message of the current call (what `export!` hands the agent).
    pub(crate) fn current() -> Message {
        Message { _current: () }
    }

    /// What the message means.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Performative};
    /// # fn f(message: &Message) {
    /// if message.performative() == Performative::Inform { /* an answer */ }
    /// # }
    /// ```
    pub fn performative(&self) -> Performative {
        // The host only delivers ABI performatives; outside a handler there
        // is none, and `NotUnderstood` is the honest reading of that.
        Performative::from_code(host::msg_performative()).unwrap_or(Performative::NotUnderstood)
    }

    /// The content's length in bytes.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Error};
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// if message.content_len() > 4096 {
    ///     return Err(Error::Failed(413));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn content_len(&self) -> usize {
        host::msg_content_len().max(0) as usize
    }

    /// The content, copied out of the engine.
    ///
    /// ```no_run
    /// # use caxton_agent::Message;
    /// # fn f(message: &Message) {
    /// let text = String::from_utf8_lossy(&message.content()).into_owned();
    /// # }
    /// ```
    pub fn content(&self) -> Vec<u8> {
        let mut content = alloc::vec![0; self.content_len()];
        let (ptr, cap) = host::buffer(&mut content);
        let full = host::msg_read_content(ptr, cap).max(0) as usize;
        // The length cannot change during a call; keep what was copied.
        content.truncate(full);
        content
    }

    /// Copies as much of the content as fits into `buffer` and returns the
    /// content's full length (more than `buffer.len()` means it was cut).
    /// For handlers that want no allocation per message.
    ///
    /// ```no_run
    /// # use caxton_agent::Message;
    /// # fn f(message: &Message) {
    /// let mut buffer = [0u8; 256];
    /// let full = message.read_content(&mut buffer);
    /// let key = &buffer[..full.min(buffer.len())];
    /// # }
    /// ```
    pub fn read_content(&self, buffer: &mut [u8]) -> usize {
        let (ptr, cap) = host::buffer(buffer);
        host::msg_read_content(ptr, cap).max(0) as usize
    }

    /// The content decoded from MessagePack into `T`.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Error};
    /// #[derive(serde::Deserialize)]
    /// struct Order { sku: String, quantity: u32 }
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// let order: Order = message.content_as()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "msgpack")]
    pub fn content_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        crate::msgpack::from_slice(&self.content())
    }

    /// The sender's agent name, whichever node it runs on (`client-N` for a
    /// caller outside the agents).
    ///
    /// ```no_run
    /// # use caxton_agent::Message;
    /// # fn f(message: &Message) {
    /// let from_a_client = message.sender().starts_with("client-");
    /// # }
    /// ```
    pub fn sender(&self) -> String {
        let mut name = alloc::vec![0; 64];
        loop {
            let (ptr, cap) = host::buffer(&mut name);
            let full = host::msg_sender(ptr, cap).max(0) as usize;
            if full <= name.len() {
                name.truncate(full);
                // The host only hands out UTF-8 names.
                return String::from_utf8(name).unwrap_or_default();
            }
            name.resize(full, 0);
        }
    }

    /// The conversation the message belongs to, if any.
    ///
    /// ```no_run
    /// # use caxton_agent::Message;
    /// # fn f(message: &Message) {
    /// let conversation = message.conversation_id().map_or(0, |id| id.get());
    /// # }
    /// ```
    pub fn conversation_id(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(host::msg_conversation_id() as u64)
    }

    /// The token an answer must quote, if the sender asked for one
    /// ([`Message::reply`] quotes it for you).
    ///
    /// ```no_run
    /// # use caxton_agent::Message;
    /// # fn f(message: &Message) {
    /// let expects_an_answer = message.reply_with().is_some();
    /// # }
    /// ```
    pub fn reply_with(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(host::msg_reply_with() as u64)
    }

    /// The token this message answers (its sender's `reply_with`), if it is
    /// an answer.
    ///
    /// ```no_run
    /// # use caxton_agent::Message;
    /// # fn f(message: &Message) {
    /// if message.in_reply_to().is_some_and(|token| token.get() == 7) { /* our proposal's answer */ }
    /// # }
    /// ```
    pub fn in_reply_to(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(host::msg_in_reply_to() as u64)
    }

    /// Answer the sender, quoting its `reply_with`.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Performative, Error};
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// message.reply(Performative::Inform, b"done")?;
    /// # Ok(()) }
    /// ```
    pub fn reply(&self, performative: Performative, content: &[u8]) -> Result<(), Error> {
        let (ptr, len) = host::slice(content);
        Error::check(host::reply(performative.code(), ptr, len)).map(drop)
    }

    /// Answer the sender with `value` encoded as MessagePack.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Performative, Error};
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// message.reply_value(Performative::Inform, &("total", 42u32))?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "msgpack")]
    pub fn reply_value<T: serde::Serialize + ?Sized>(
        &self,
        performative: Performative,
        value: &T,
    ) -> Result<(), Error> {
        self.reply(performative, &crate::msgpack::to_vec(value)?)
    }

    /// Pass the message on to `to` with new content: the original sender,
    /// performative, conversation and `reply_with` stay, so the last hop
    /// answers the original sender.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Error};
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// message.forward("next-stage", &message.content())?;
    /// # Ok(()) }
    /// ```
    pub fn forward(&self, to: &str, content: &[u8]) -> Result<(), Error> {
        let (to_ptr, to_len) = host::slice(to.as_bytes());
        let (ptr, len) = host::slice(content);
        Error::check(host::forward(to_ptr, to_len, ptr, len)).map(drop)
    }

    /// Keep the right to answer this message later, from another handler
    /// call (a gather): the returned [`Ticket`] answers it once.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Error, request};
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// let ticket = message.defer_reply()?;
    /// request("inventory", b"sku-7", ticket.id())?; // its answer quotes the ticket
    /// # Ok(()) }
    /// ```
    pub fn defer_reply(&self) -> Result<Ticket, Error> {
        let ticket = host::defer_reply();
        if ticket < 0 {
            return Err(Error::from_host(ticket as i32));
        }
        NonZeroU64::new(ticket as u64)
            .map(Ticket)
            .ok_or(Error::Host(0))
    }
}

/// The right to answer a message later, taken with
/// [`Message::defer_reply`]. Plain data: keep it in the agent's value
/// between calls. The host accepts each ticket once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(NonZeroU64);

impl Ticket {
    /// The ticket's number: pass it as the token of requests whose answers
    /// complete the deferred reply, and compare it with their
    /// [`Message::in_reply_to`].
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Error, request};
    /// # fn f(message: &Message) -> Result<(), Error> {
    /// let ticket = message.defer_reply()?;
    /// request("stock", b"sku-7", ticket.id())?;
    /// # Ok(()) }
    /// ```
    pub fn id(self) -> u64 {
        self.0.get()
    }

    /// Whether `message` answers a request sent with this ticket's id.
    ///
    /// ```no_run
    /// # use caxton_agent::{Message, Ticket, Performative, Error};
    /// # fn f(message: &Message, ticket: Ticket) -> Result<(), Error> {
    /// if ticket.is_answered_by(message) {
    ///     ticket.reply(Performative::Inform, &message.content())?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_answered_by(self, message: &Message) -> bool {
        message.in_reply_to() == Some(self.0)
    }

    /// Answer the message this ticket was taken for. Fails with
    /// [`Error::NoSender`] if the ticket was already used.
    ///
    /// ```no_run
    /// # use caxton_agent::{Ticket, Performative, Error};
    /// # fn f(ticket: Ticket) -> Result<(), Error> {
    /// ticket.reply(Performative::Inform, &3u32.to_le_bytes())?;
    /// # Ok(()) }
    /// ```
    pub fn reply(self, performative: Performative, content: &[u8]) -> Result<(), Error> {
        let (ptr, len) = host::slice(content);
        Error::check(host::reply_to(
            self.id() as i64,
            performative.code(),
            ptr,
            len,
        ))
        .map(drop)
    }
}
