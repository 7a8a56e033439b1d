//! The host side of the agent ABI: the one implementation of every host
//! function in [`abi::HOST_FUNCTIONS`], with the ABI's limits (content and
//! name sizes, sends per handler call, open deferred replies, state key and
//! value sizes and key count), and what they keep per instance ([`AbiState`],
//! [`StateMap`]).
//!
//! Both designs that host agents link these same functions: the engine's
//! [`crate::AgentHost`] and the benchmarks' conventional baseline
//! (`caxton_bench::baseline`), so a comparison of the two measures the same
//! ABI code. What differs between them (how a receiver's name is found, how a
//! sender is named, the clock, where the agent's key-value state lives) is
//! the [`AbiContext`] their store data implements.

use std::collections::HashMap;

use caxton_messaging::{Address, AgentId, Envelope, Performative, NOBODY};
use wasmtime::{Caller, Linker, Memory};

use crate::abi::{self, errors};

/// What a design's store data gives the host functions.
pub trait AbiContext: 'static {
    /// The message being handled, the handler's outbox and the open tickets.
    fn abi(&self) -> &AbiState;
    /// The same, to change.
    fn abi_mut(&mut self) -> &mut AbiState;
    /// The deployed agent named `name`, for `send` and `forward`.
    fn resolve(&self, name: &str) -> Option<AgentId>;
    /// A number that changes whenever what [`Self::resolve`] answers may
    /// have changed: an instance keeps the last name it resolved while it
    /// stays the same.
    fn directory_generation(&self) -> u64;
    /// The name `msg_sender` gives `sender`. Called only when an agent asks,
    /// so the message path never builds a name it does not need.
    fn sender_name(&self, sender: Address) -> String;
    /// The clock `now_ns` reads, in nanoseconds.
    fn now_ns(&self) -> u64;
    /// The agent's name, which tags its log lines.
    fn agent_name(&self) -> &str;
    /// Run `use_state` on the agent's key-value state. A closure rather than
    /// a reference: the engine shares one map between an agent's instances
    /// on a shard, behind a `RefCell`.
    fn with_state<R>(&mut self, use_state: impl FnOnce(&mut StateMap) -> R) -> R;
}

/// A message an agent sent while handling one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Where it goes.
    pub receiver: Address,
    /// Its act.
    pub performative: Performative,
    /// Its conversation (the handled message's).
    pub conversation_id: u64,
    /// Token for an answer (0: none).
    pub reply_with: u64,
    /// The token it answers (0: none).
    pub in_reply_to: u64,
    /// For `forward`: the original sender, who stays the message's sender.
    pub on_behalf_of: Option<Address>,
    /// An answer (`reply`, `reply_to`): what settles the message it quotes,
    /// as opposed to a new message to the same agent.
    pub answers: bool,
    /// Its payload.
    pub content: Vec<u8>,
}

impl OutboundMessage {
    /// An answer to whoever `ticket` was taken for.
    fn answer(ticket: Ticket, performative: Performative, content: Vec<u8>) -> Self {
        Self {
            receiver: ticket.receiver,
            performative,
            conversation_id: ticket.conversation_id,
            reply_with: 0,
            in_reply_to: ticket.in_reply_to,
            on_behalf_of: None,
            answers: true,
            content,
        }
    }
}

/// Who an answer goes to, and what it quotes.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    receiver: Address,
    conversation_id: u64,
    in_reply_to: u64,
}

impl Ticket {
    /// The answer path of `message`. An engine `failure` was sent by
    /// nobody (its sender is the receiver that could not take a message):
    /// an answer to it goes to [`NOBODY`], where the shard drops it and
    /// counts it undeliverable. Sent to its sender instead, an agent that
    /// answers every message would answer the failure about an agent that
    /// is gone, be answered `unknown-agent` again, and so on for ever.
    fn of(message: &Envelope) -> Self {
        Self {
            receiver: if message.is_engine_failure() {
                NOBODY
            } else {
                message.sender
            },
            conversation_id: message.conversation_id,
            in_reply_to: message.reply_with,
        }
    }
}

/// What the ABI keeps for one instance: the message its handler is
/// handling, what the handler sent, and its open deferred replies.
#[derive(Debug, Default)]
pub struct AbiState {
    /// The instance's exported memory, once bound ([`Self::bind_memory`]).
    memory: Option<Memory>,
    current: Option<Envelope>,
    outbox: Vec<OutboundMessage>,
    /// Open deferred replies, by ticket - 1; a used ticket's slot is reused.
    tickets: Vec<Option<Ticket>>,
    /// The last receiver name `send` or `forward` resolved, and to whom:
    /// an agent that talks to the same peer message after message finds
    /// it by comparing a few bytes, not by hashing its name each time.
    last_receiver: Option<ResolvedName>,
    /// The content buffer of the last message handled, emptied: the first
    /// message the next handler sends is copied into it, so an agent that
    /// answers or passes on one message per message allocates and frees
    /// nothing for its contents (see [`SPARE_CONTENT_CAPACITY_MAX`]).
    spare_content: Vec<u8>,
}

/// The largest content buffer an instance keeps for its next send. Every
/// message a shard ran a handler for had its content allocated by the
/// sender and freed when the handler returned: 4.6% of a one-shard
/// agent-to-agent profile (jemalloc's `sdallocx` and `malloc`). Bounded so
/// that an instance idle after a large message holds little.
pub const SPARE_CONTENT_CAPACITY_MAX: usize = 4096;

/// A receiver name resolved under one directory generation.
#[derive(Debug)]
struct ResolvedName {
    generation: u64,
    name: Box<[u8]>,
    agent: AgentId,
}

impl AbiState {
    /// The instance's exported memory, found once after instantiation, so
    /// no host call looks it up by name.
    pub fn bind_memory(&mut self, memory: Memory) {
        self.memory = Some(memory);
    }

    /// Start handling `message`: the host functions see it until [`Self::finish`].
    pub fn begin(&mut self, message: Envelope) {
        self.current = Some(message);
        self.outbox.clear();
    }

    /// Stop handling the current message; returns what the handler sent,
    /// and keeps `spare` (an emptied outbox handed back) for the next
    /// handler, so a handler's sends allocate no outbox of their own.
    pub fn finish(&mut self, spare: Vec<OutboundMessage>) -> Vec<OutboundMessage> {
        if let Some(handled) = self.current.take() {
            let mut content = handled.content;
            if content.capacity() <= SPARE_CONTENT_CAPACITY_MAX {
                content.clear();
                self.spare_content = content;
            }
        }
        debug_assert!(spare.is_empty(), "a spare outbox comes back emptied");
        std::mem::replace(&mut self.outbox, spare)
    }

    /// Keep `outbox` (a handler's, its messages taken out) in `spare` for
    /// the next [`Self::finish`], when it holds more room than `spare`:
    /// whoever routes the outboxes keeps one spare, and no handler's sends
    /// allocate one.
    pub fn keep_spare_outbox(spare: &mut Vec<OutboundMessage>, mut outbox: Vec<OutboundMessage>) {
        outbox.clear();
        if outbox.capacity() > spare.capacity() {
            *spare = outbox;
        }
    }

    /// A `failure` with `content` for each deferred reply still open: what
    /// their askers get when the instance is dropped.
    pub fn failures_for_open_tickets<'a>(
        &'a self,
        content: &'a [u8],
    ) -> impl Iterator<Item = OutboundMessage> + 'a {
        self.tickets
            .iter()
            .flatten()
            .map(|ticket| OutboundMessage::answer(*ticket, Performative::Failure, content.to_vec()))
    }

    /// The message being handled, or `NO_MESSAGE` outside `caxton_handle`.
    fn current(&self) -> Result<&Envelope, i32> {
        self.current.as_ref().ok_or(errors::NO_MESSAGE)
    }
}

/// An agent's key-value state: the entries, and the writes since they were
/// last taken (the engine keeps them in its storage partition).
///
/// Its bytes (keys and values) count against a budget, the agent's memory
/// limit: the entries live in the host's heap, outside the linear memory the
/// limit bounds, and without a budget an agent could hold
/// `STATE_KEYS_MAX × STATE_VALUE_BYTES_MAX` (256 MiB) on every shard.
#[derive(Debug)]
pub struct StateMap {
    entries: HashMap<Vec<u8>, Vec<u8>>,
    written: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of the keys and values held.
    bytes: usize,
    /// Most bytes `state_put` may bring the entries to.
    bytes_max: usize,
}

impl Default for StateMap {
    /// An empty state with no byte budget (the deploy check's).
    fn default() -> Self {
        Self::with_budget(usize::MAX)
    }
}

impl StateMap {
    /// An empty state whose keys and values may take at most `bytes_max` bytes.
    pub fn with_budget(bytes_max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            written: Vec::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Add `entries` without logging them as writes (state read back from
    /// storage). They were accepted once, so they are kept even past the
    /// budget (a smaller memory limit on redeploy); later puts then fail
    /// until deletes bring the state under it.
    pub fn seed(&mut self, entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        for (key, value) in entries {
            let key_bytes = key.len();
            self.bytes += key_bytes + value.len();
            if let Some(old) = self.entries.insert(key, value) {
                self.bytes -= key_bytes + old.len();
            }
        }
    }

    /// Bytes the keys and values take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The writes since the last call, in order; an empty value is a delete.
    pub fn take_writes(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.written)
    }

    /// Set `key` to `value`, or delete it when `value` is empty. `STATE_FULL`
    /// when a new key would pass `STATE_KEYS_MAX`, or the entries the budget.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> i32 {
        let held = self.entries.get(&key).map(|old| key.len() + old.len());
        let kept = if value.is_empty() {
            0
        } else {
            key.len() + value.len()
        };
        let bytes = self.bytes - held.unwrap_or(0) + kept;
        // A delete always goes through, even over the budget.
        if kept > 0
            && ((held.is_none() && self.entries.len() >= abi::STATE_KEYS_MAX)
                || bytes > self.bytes_max)
        {
            return errors::STATE_FULL;
        }
        if kept == 0 {
            self.entries.remove(&key);
        } else {
            self.entries.insert(key.clone(), value.clone());
        }
        self.bytes = bytes;
        self.written.push((key, value));
        0
    }
}

/// Define every host function of the ABI in `linker`, under [`abi::IMPORT_MODULE`].
pub fn link_abi<T: AbiContext>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let module = abi::IMPORT_MODULE;
    linker.func_wrap(module, "msg_performative", |caller: Caller<'_, T>| {
        caller.data().abi().current().map_or_else(
            |code| code,
            |message| i32::from(message.performative.code()),
        )
    })?;
    linker.func_wrap(module, "msg_content_len", |caller: Caller<'_, T>| {
        caller.data().abi().current().map_or_else(
            |code| code,
            |message| i32::try_from(message.content.len()).unwrap_or(i32::MAX),
        )
    })?;
    linker.func_wrap(module, "msg_read_content", msg_read_content::<T>)?;
    linker.func_wrap(module, "msg_sender", msg_sender::<T>)?;
    linker.func_wrap(module, "msg_conversation_id", |caller: Caller<'_, T>| {
        header(&caller, |message| message.conversation_id)
    })?;
    linker.func_wrap(module, "msg_reply_with", |caller: Caller<'_, T>| {
        header(&caller, |message| message.reply_with)
    })?;
    linker.func_wrap(module, "msg_in_reply_to", |caller: Caller<'_, T>| {
        header(&caller, |message| message.in_reply_to)
    })?;
    linker.func_wrap(
        module,
        "send",
        |mut caller: Caller<'_, T>,
         to_pointer: i32,
         to_length: i32,
         performative: i32,
         content_pointer: i32,
         content_length: i32,
         reply_with: i64| {
            let sent = send(
                &mut caller,
                (to_pointer, to_length),
                performative,
                (content_pointer, content_length),
                reply_with,
            );
            queue(&mut caller, sent)
        },
    )?;
    linker.func_wrap(
        module,
        "reply",
        |mut caller: Caller<'_, T>,
         performative: i32,
         content_pointer: i32,
         content_length: i32| {
            let sent = reply(&mut caller, performative, (content_pointer, content_length));
            queue(&mut caller, sent)
        },
    )?;
    linker.func_wrap(
        module,
        "forward",
        |mut caller: Caller<'_, T>,
         to_pointer: i32,
         to_length: i32,
         content_pointer: i32,
         content_length: i32| {
            let sent = forward(
                &mut caller,
                (to_pointer, to_length),
                (content_pointer, content_length),
            );
            queue(&mut caller, sent)
        },
    )?;
    linker.func_wrap(module, "defer_reply", defer_reply::<T>)?;
    linker.func_wrap(
        module,
        "reply_to",
        |mut caller: Caller<'_, T>,
         ticket: i64,
         performative: i32,
         content_pointer: i32,
         content_length: i32| {
            let sent = reply_to(
                &mut caller,
                ticket,
                performative,
                (content_pointer, content_length),
            );
            queue(&mut caller, sent)
        },
    )?;
    linker.func_wrap(module, "log", log::<T>)?;
    linker.func_wrap(module, "now_ns", |caller: Caller<'_, T>| {
        caller.data().now_ns() as i64
    })?;
    linker.func_wrap(module, "state_get", state_get::<T>)?;
    linker.func_wrap(module, "state_put", state_put::<T>)?;
    Ok(())
}

/// A pointer and a length into the agent's memory.
type Span = (i32, i32);

/// The guest bytes `[pointer, pointer + length)` of `memory`, if they lie inside it.
fn guest_bytes(memory: &[u8], pointer: i32, length: i32) -> Option<&[u8]> {
    let start = usize::try_from(pointer).ok()?;
    let length = usize::try_from(length).ok()?;
    memory.get(start..start.checked_add(length)?)
}

/// The agent's exported memory: the one bound to its instance, else looked
/// up by name (a string lookup per call, which bound instances skip).
fn exported_memory<T: AbiContext>(caller: &mut Caller<'_, T>) -> Option<Memory> {
    caller.data().abi().memory.or_else(|| {
        caller
            .get_export(abi::EXPORT_MEMORY)
            .and_then(wasmtime::Extern::into_memory)
    })
}

/// Copy `bytes` into `memory` at `pointer`, at most `capacity` of them.
/// Returns the full length, so the agent can tell when its buffer was short.
fn copy_to_guest(memory: &mut [u8], pointer: i32, capacity: i32, bytes: &[u8]) -> i32 {
    let copied = bytes.len().min(usize::try_from(capacity).unwrap_or(0));
    let Some(target) = usize::try_from(pointer)
        .ok()
        .and_then(|start| memory.get_mut(start..start.checked_add(copied)?))
    else {
        return errors::OUT_OF_BOUNDS;
    };
    target.copy_from_slice(&bytes[..copied]);
    i32::try_from(bytes.len()).unwrap_or(i32::MAX)
}

/// A copy of the guest bytes at `span`, at most `max` of them.
fn read_guest<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    span: Span,
    max: usize,
) -> Result<Vec<u8>, i32> {
    read_guest_into(caller, span, max, Vec::new())
}

/// The guest bytes at `span`, at most `max` of them, copied into `buffer`
/// (emptied first).
fn read_guest_into<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    (pointer, length): Span,
    max: usize,
    mut buffer: Vec<u8>,
) -> Result<Vec<u8>, i32> {
    // The limit is checked first: an oversized length is refused as such,
    // wherever it points.
    if usize::try_from(length).is_ok_and(|length| length > max) {
        return Err(errors::TOO_LARGE);
    }
    let memory = exported_memory(caller).ok_or(errors::OUT_OF_BOUNDS)?;
    let bytes = guest_bytes(memory.data(&*caller), pointer, length).ok_or(errors::OUT_OF_BOUNDS)?;
    buffer.clear();
    buffer.extend_from_slice(bytes);
    Ok(buffer)
}

/// One header field of the current message, or `NO_MESSAGE`.
fn header<T: AbiContext>(caller: &Caller<'_, T>, field: impl FnOnce(&Envelope) -> u64) -> i64 {
    caller
        .data()
        .abi()
        .current()
        .map_or_else(i64::from, |message| field(message) as i64)
}

fn msg_read_content<T: AbiContext>(mut caller: Caller<'_, T>, pointer: i32, capacity: i32) -> i32 {
    let Some(memory) = exported_memory(&mut caller) else {
        return errors::OUT_OF_BOUNDS;
    };
    // The content is copied straight from the message into the agent's memory.
    let (data, context) = memory.data_and_store_mut(&mut caller);
    match context.abi().current() {
        Ok(message) => copy_to_guest(data, pointer, capacity, &message.content),
        Err(code) => code,
    }
}

fn msg_sender<T: AbiContext>(mut caller: Caller<'_, T>, pointer: i32, capacity: i32) -> i32 {
    let context = caller.data();
    let name = match context.abi().current() {
        Ok(message) => context.sender_name(message.sender),
        Err(code) => return code,
    };
    let Some(memory) = exported_memory(&mut caller) else {
        return errors::OUT_OF_BOUNDS;
    };
    copy_to_guest(
        memory.data_mut(&mut caller),
        pointer,
        capacity,
        name.as_bytes(),
    )
}

fn performative_from(code: i32) -> Result<Performative, i32> {
    u32::try_from(code)
        .ok()
        .and_then(Performative::from_code)
        .ok_or(errors::BAD_PERFORMATIVE)
}

/// Read the receiver name at `span` and find its agent.
fn resolve_receiver<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    (pointer, length): Span,
) -> Result<Address, i32> {
    if usize::try_from(length).is_ok_and(|length| length > abi::NAME_BYTES_MAX) {
        return Err(errors::TOO_LARGE);
    }
    let memory = exported_memory(caller).ok_or(errors::OUT_OF_BOUNDS)?;
    let bytes = guest_bytes(memory.data(&*caller), pointer, length).ok_or(errors::OUT_OF_BOUNDS)?;
    let context = caller.data();
    let generation = context.directory_generation();
    if let Some(last) = &context.abi().last_receiver {
        // Equal bytes to a name that resolved are valid UTF-8 too.
        if last.generation == generation && *last.name == *bytes {
            return Ok(Address::Agent(last.agent));
        }
    }
    let name = std::str::from_utf8(bytes).map_err(|_| errors::BAD_UTF8)?;
    let agent = context.resolve(name).ok_or(errors::UNKNOWN_RECEIVER)?;
    let name = Box::from(name.as_bytes());
    caller.data_mut().abi_mut().last_receiver = Some(ResolvedName {
        generation,
        name,
        agent,
    });
    Ok(Address::Agent(agent))
}

/// Check the outbox has room and copy the content at `span` out of the guest.
fn outgoing_content<T: AbiContext>(caller: &mut Caller<'_, T>, span: Span) -> Result<Vec<u8>, i32> {
    if caller.data().abi().outbox.len() >= abi::SENDS_PER_MESSAGE_MAX {
        return Err(errors::OUTBOX_FULL);
    }
    let spare = std::mem::take(&mut caller.data_mut().abi_mut().spare_content);
    read_guest_into(caller, span, abi::CONTENT_BYTES_MAX, spare)
}

/// Queue `sent` in the outbox, or return its error code.
fn queue<T: AbiContext>(caller: &mut Caller<'_, T>, sent: Result<OutboundMessage, i32>) -> i32 {
    match sent {
        Ok(message) => {
            caller.data_mut().abi_mut().outbox.push(message);
            0
        }
        Err(code) => code,
    }
}

fn send<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    to: Span,
    performative: i32,
    content: Span,
    reply_with: i64,
) -> Result<OutboundMessage, i32> {
    let conversation_id = caller.data().abi().current()?.conversation_id;
    let performative = performative_from(performative)?;
    let receiver = resolve_receiver(caller, to)?;
    let content = outgoing_content(caller, content)?;
    Ok(OutboundMessage {
        receiver,
        performative,
        conversation_id,
        reply_with: reply_with as u64,
        in_reply_to: 0,
        on_behalf_of: None,
        answers: false,
        content,
    })
}

fn reply<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    performative: i32,
    content: Span,
) -> Result<OutboundMessage, i32> {
    let ticket = Ticket::of(caller.data().abi().current()?);
    let performative = performative_from(performative)?;
    let content = outgoing_content(caller, content)?;
    Ok(OutboundMessage::answer(ticket, performative, content))
}

fn forward<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    to: Span,
    content: Span,
) -> Result<OutboundMessage, i32> {
    let message = caller.data().abi().current()?;
    let (original_sender, performative, conversation_id, reply_with) = (
        message.sender,
        message.performative,
        message.conversation_id,
        message.reply_with,
    );
    let receiver = resolve_receiver(caller, to)?;
    let content = outgoing_content(caller, content)?;
    // Forwarding keeps the original sender, so the last hop answers it directly.
    Ok(OutboundMessage {
        receiver,
        performative,
        conversation_id,
        reply_with,
        in_reply_to: 0,
        on_behalf_of: Some(original_sender),
        answers: false,
        content,
    })
}

fn defer_reply<T: AbiContext>(mut caller: Caller<'_, T>) -> i64 {
    let abi = caller.data_mut().abi_mut();
    let ticket = match abi.current() {
        Ok(message) => Ticket::of(message),
        Err(code) => return i64::from(code),
    };
    let tickets = &mut abi.tickets;
    let index = match tickets.iter().position(Option::is_none) {
        Some(index) => index,
        None if tickets.len() < abi::DEFERRED_REPLIES_MAX => {
            tickets.push(None);
            tickets.len() - 1
        }
        None => return i64::from(errors::OUTBOX_FULL),
    };
    tickets[index] = Some(ticket);
    index as i64 + 1
}

fn reply_to<T: AbiContext>(
    caller: &mut Caller<'_, T>,
    ticket: i64,
    performative: i32,
    content: Span,
) -> Result<OutboundMessage, i32> {
    caller.data().abi().current()?;
    let performative = performative_from(performative)?;
    // Read the content first: a bad pointer must not use up the ticket.
    let content = outgoing_content(caller, content)?;
    let slot = usize::try_from(ticket - 1).ok();
    let ticket = slot
        .and_then(|slot| caller.data_mut().abi_mut().tickets.get_mut(slot)?.take())
        .ok_or(errors::NO_SENDER)?;
    Ok(OutboundMessage::answer(ticket, performative, content))
}

fn log<T: AbiContext>(mut caller: Caller<'_, T>, level: i32, pointer: i32, length: i32) -> i32 {
    let Some(memory) = exported_memory(&mut caller) else {
        return errors::OUT_OF_BOUNDS;
    };
    let length = length.min(i32::try_from(abi::LOG_BYTES_MAX).unwrap_or(i32::MAX));
    let Some(bytes) = guest_bytes(memory.data(&caller), pointer, length) else {
        return errors::OUT_OF_BOUNDS;
    };
    crate::log::agent_log(
        caller.data().agent_name(),
        level,
        &String::from_utf8_lossy(bytes),
    );
    0
}

fn state_get<T: AbiContext>(
    mut caller: Caller<'_, T>,
    key_pointer: i32,
    key_length: i32,
    pointer: i32,
    capacity: i32,
) -> i32 {
    let key = match read_guest(
        &mut caller,
        (key_pointer, key_length),
        abi::STATE_KEY_BYTES_MAX,
    ) {
        Ok(key) => key,
        Err(code) => return code,
    };
    let Some(memory) = exported_memory(&mut caller) else {
        return errors::OUT_OF_BOUNDS;
    };
    // The value is copied straight from the map into the agent's memory.
    let (data, context) = memory.data_and_store_mut(&mut caller);
    context.with_state(|state| match state.entries.get(&key) {
        Some(value) => copy_to_guest(data, pointer, capacity, value),
        None => errors::NOT_FOUND,
    })
}

fn state_put<T: AbiContext>(
    mut caller: Caller<'_, T>,
    key_pointer: i32,
    key_length: i32,
    pointer: i32,
    length: i32,
) -> i32 {
    let key = match read_guest(
        &mut caller,
        (key_pointer, key_length),
        abi::STATE_KEY_BYTES_MAX,
    ) {
        Ok(key) => key,
        Err(code) => return code,
    };
    match read_guest(&mut caller, (pointer, length), abi::STATE_VALUE_BYTES_MAX) {
        Ok(value) => caller.data_mut().with_state(|state| state.put(key, value)),
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Module, Store, TypedFunc};

    /// The probes of `tests/abi_probe.wat`, by number, and what each must return.
    const PROBES: [(u8, i32); 12] = [
        (0, errors::NO_SENDER),
        (1, 0),
        (2, errors::TOO_LARGE),
        (3, errors::TOO_LARGE),
        (4, errors::UNKNOWN_RECEIVER),
        (5, errors::OUTBOX_FULL),
        (6, errors::OUTBOX_FULL),
        (7, errors::TOO_LARGE),
        (8, errors::TOO_LARGE),
        (9, errors::STATE_FULL),
        (10, errors::BAD_PERFORMATIVE),
        (11, errors::OUT_OF_BOUNDS),
    ];

    const ASKER: Address = Address::Client { port: 0, id: 3 };

    /// The least a design must give the host functions.
    #[derive(Default)]
    struct TestContext {
        abi: AbiState,
        state: StateMap,
    }

    impl AbiContext for TestContext {
        fn abi(&self) -> &AbiState {
            &self.abi
        }

        fn abi_mut(&mut self) -> &mut AbiState {
            &mut self.abi
        }

        fn resolve(&self, name: &str) -> Option<AgentId> {
            (name == "echo").then_some(AgentId(1))
        }

        fn directory_generation(&self) -> u64 {
            0
        }

        fn sender_name(&self, _: Address) -> String {
            "asker".to_owned()
        }

        fn now_ns(&self) -> u64 {
            7
        }

        fn agent_name(&self) -> &str {
            "probe"
        }

        fn with_state<R>(&mut self, use_state: impl FnOnce(&mut StateMap) -> R) -> R {
            use_state(&mut self.state)
        }
    }

    /// A fresh instance of the probe module, and its handler.
    fn probe_instance() -> (Store<TestContext>, TypedFunc<(), i32>) {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        link_abi(&mut linker).expect("every host function links");
        let module =
            Module::new(&engine, include_str!("../tests/abi_probe.wat")).expect("compiles");
        let mut store = Store::new(&engine, TestContext::default());
        let instance = linker
            .instantiate(&mut store, &module)
            .expect("instantiates");
        let handle = instance
            .get_typed_func::<(), i32>(&mut store, abi::EXPORT_HANDLE)
            .expect("handler");
        (store, handle)
    }

    /// Run probe `number` on a fresh instance: the handler's result and what it sent.
    fn probe(number: u8) -> (i32, Vec<OutboundMessage>) {
        let (mut store, handle) = probe_instance();
        store.data_mut().abi.begin(Envelope {
            conversation_id: 5,
            reply_with: 42,
            ..Envelope::new(
                Performative::Request,
                ASKER,
                Address::Agent(AgentId(0)),
                vec![number],
                0,
                0,
            )
        });
        let code = handle.call(&mut store, ()).expect("no trap");
        (code, store.data_mut().abi.finish(Vec::new()))
    }

    #[test]
    fn a_send_reuses_the_content_buffer_of_the_message_handled_before() {
        let (mut store, handle) = probe_instance();
        // Probe 0 answers its asker through a ticket: one send per message.
        let mut run = |content: Vec<u8>| {
            store.data_mut().abi.begin(Envelope::new(
                Performative::Request,
                ASKER,
                Address::Agent(AgentId(0)),
                content,
                0,
                0,
            ));
            assert_eq!(
                handle.call(&mut store, ()).expect("no trap"),
                errors::NO_SENDER
            );
            store.data_mut().abi.finish(Vec::new())
        };
        let mut small = Vec::with_capacity(64);
        small.push(0);
        let small_buffer = small.as_ptr();
        let first = run(small);
        assert_eq!(first.len(), 1);
        // The first message's buffer carries the second handler's answer.
        let second = run(vec![0]);
        assert_eq!(second[0].content.as_ptr(), small_buffer);
        assert_eq!(second[0].content, first[0].content);

        // A buffer past the bound is freed, not kept.
        let mut large = Vec::with_capacity(SPARE_CONTENT_CAPACITY_MAX + 1);
        large.push(0);
        run(large);
        assert_eq!(store.data().abi.spare_content.capacity(), 0);
    }

    #[test]
    fn every_limit_and_rule_gives_its_code() {
        for (number, expected) in PROBES {
            assert_eq!(probe(number).0, expected, "probe {number}");
        }
    }

    #[test]
    fn a_ticket_answers_its_asker_once() {
        let (code, outbox) = probe(0);
        assert_eq!(code, errors::NO_SENDER);
        let answers: Vec<_> = outbox
            .iter()
            .map(|sent| (sent.receiver, sent.in_reply_to, sent.conversation_id))
            .collect();
        assert_eq!(answers, [(ASKER, 42, 5)]);
    }

    #[test]
    fn the_outbox_holds_what_was_accepted() {
        assert_eq!(probe(2).1, []);
        assert_eq!(probe(5).1.len(), abi::SENDS_PER_MESSAGE_MAX);
        assert_eq!(probe(1).1[0].content.len(), abi::CONTENT_BYTES_MAX);
    }

    #[test]
    fn state_bytes_are_bounded_by_the_budget_and_deletes_always_pass() {
        let mut state = StateMap::with_budget(10);
        assert_eq!(state.put(b"a".to_vec(), vec![1; 5]), 0);
        assert_eq!(state.bytes(), 6);
        // Replacing a value counts the difference, not both.
        assert_eq!(state.put(b"a".to_vec(), vec![2; 9]), 0);
        assert_eq!(state.bytes(), 10);
        assert_eq!(state.put(b"b".to_vec(), vec![3]), errors::STATE_FULL);
        assert_eq!(state.put(b"a".to_vec(), vec![2; 10]), errors::STATE_FULL);
        // A refused put changes nothing and logs no write.
        assert_eq!(state.entries.get(b"a".as_slice()), Some(&vec![2; 9]));
        assert_eq!(state.take_writes().len(), 2);
        assert_eq!(state.put(b"a".to_vec(), Vec::new()), 0);
        assert_eq!(state.bytes(), 0);
        assert_eq!(state.put(b"b".to_vec(), vec![3; 9]), 0);

        // State read back past a smaller budget is kept; puts fail until
        // deletes bring it under, and deletes pass.
        let mut seeded = StateMap::with_budget(4);
        seeded.seed([(b"k".to_vec(), vec![0; 7]), (b"j".to_vec(), vec![0; 1])]);
        assert_eq!(seeded.bytes(), 10);
        assert_eq!(seeded.put(b"j".to_vec(), vec![1]), errors::STATE_FULL);
        assert_eq!(seeded.put(b"k".to_vec(), Vec::new()), 0);
        assert_eq!(seeded.bytes(), 2);
        assert_eq!(seeded.put(b"j".to_vec(), vec![1, 2]), 0);
    }
}
