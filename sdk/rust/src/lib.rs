//! Write Caxton agents in Rust.
//!
//! An agent is a WebAssembly module the engine calls once per message
//! (`docs/agent-abi.md`). This crate owns everything between a Rust handler
//! and that ABI: the host imports, the `memory`, `caxton_abi_version` and
//! `caxton_handle` exports, reading the current message, turning host error
//! codes into [`Error`], typed content and state through serde (MessagePack),
//! and, on `wasm32`, the allocator and a panic handler that logs the panic
//! and traps (the sender is answered `failure` with `caxton:trap:…` and the
//! shard serves on).
//!
//! ```no_run
//! use caxton_agent::{Agent, Error, Message, Performative};
//!
//! /// Answers every message with `inform` and the same content.
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Agent for Echo {
//!     fn handle(&mut self, message: &Message) -> Result<(), Error> {
//!         message.reply(Performative::Inform, &message.content())
//!     }
//! }
//!
//! caxton_agent::export!(Echo);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-unknown-unknown`
//! (`engine agents build DIR`, or `cargo build --release --target
//! wasm32-unknown-unknown`) and deploy the `.wasm` like any agent. The
//! agent's value lives in the instance's linear memory: fields keep their
//! values from one message to the next, until the engine recycles the
//! instance (after a fault, or `runtime.agent_pool.max_reuse_count`
//! messages). What must outlive an instance goes in [`state`].
//!
//! Outside `wasm32` the crate compiles (so an agent's own logic can be unit
//! tested on the host), but there is no message: every host call answers
//! [`Error::NoMessage`].
#![cfg_attr(not(any(test, feature = "std")), no_std)]

extern crate alloc;

mod error;
mod host;
mod message;
mod performative;
#[cfg(target_arch = "wasm32")]
mod runtime;
pub mod state;

#[cfg(feature = "msgpack")]
pub mod msgpack;

pub use error::Error;
pub use message::{Message, Ticket};
pub use performative::Performative;

use core::time::Duration;

/// The agent ABI version this crate speaks; `export!` makes the module
/// report it, and the engine refuses a module that reports another.
pub const ABI_VERSION: i32 = 1;

/// An agent: one value per instance, handed every message in turn.
///
/// `Default` makes the value when the instance handles its first message.
/// The engine never enters an instance while it is already handling a
/// message, so `handle` gets `&mut self` without locks.
pub trait Agent: Default + 'static {
    /// Handle one message. `Ok(())` means handled; an error fails the
    /// message: its sender is answered `failure` with
    /// `caxton:agent-failed:CODE`, `CODE` being [`Error::code`]. Messages sent
    /// from a handler leave in both cases; they are discarded only if the
    /// handler traps (a panic), runs past its time or grows past its memory.
    fn handle(&mut self, message: &Message) -> Result<(), Error>;
}

/// Export an [`Agent`] type as the module's agent: emits
/// `caxton_abi_version` (returning [`ABI_VERSION`]) and `caxton_handle`.
/// Use it once per module, at the crate's top level.
///
/// ```ignore
/// caxton_agent::export!(Echo);
/// ```
///
/// `export!(Agent, abi_version = N)` reports another version; it exists to
/// test the engine's refusal of modules built against another ABI.
#[macro_export]
macro_rules! export {
    ($agent:ty) => {
        $crate::export!($agent, abi_version = $crate::ABI_VERSION);
    };
    ($agent:ty, abi_version = $version:expr) => {
        /// The agent ABI version this module speaks.
        #[unsafe(no_mangle)]
        pub extern "C" fn caxton_abi_version() -> i32 {
            $version
        }

        /// Called by the engine once per message.
        #[unsafe(no_mangle)]
        pub extern "C" fn caxton_handle() -> i32 {
            static AGENT: $crate::__private::AgentSlot<$agent> =
                $crate::__private::AgentSlot::new();
            AGENT.handle()
        }
    };
}

/// Send `content` to the agent `to` as a new message in the current
/// conversation, asking nothing back (`reply_with` 0).
///
/// Fails with [`Error::UnknownReceiver`] when no agent of that name is
/// deployed, [`Error::OutboxFull`] past 1,024 sends, replies and forwards together in
/// one handler call.
///
/// ```no_run
/// # use caxton_agent::{send, Performative, Error};
/// # fn handler() -> Result<(), Error> {
/// send("audit", Performative::Inform, b"order 42 shipped")?;
/// # Ok(()) }
/// ```
pub fn send(to: &str, performative: Performative, content: &[u8]) -> Result<(), Error> {
    send_with_token(to, performative, content, 0)
}

/// Send a `request` to `to` whose answer quotes `token` (the answer's
/// [`Message::in_reply_to`]). A gatherer passes a [`Ticket`]'s id, so the
/// answers name the request they complete.
///
/// ```no_run
/// # use caxton_agent::{request, Message, Error};
/// # fn handler(message: &Message) -> Result<(), Error> {
/// let ticket = message.defer_reply()?;
/// request("pricing", b"sku-7", ticket.id())?;
/// # Ok(()) }
/// ```
pub fn request(to: &str, content: &[u8], token: u64) -> Result<(), Error> {
    send_with_token(to, Performative::Request, content, token)
}

/// Send with an explicit answer token (`reply_with`; 0 for none): a
/// proposal whose answer should quote 7, say.
///
/// ```no_run
/// # use caxton_agent::{send_with_token, Performative, Error};
/// # fn handler() -> Result<(), Error> {
/// send_with_token("buyer", Performative::Propose, b"price 12", 7)?;
/// # Ok(()) }
/// ```
pub fn send_with_token(
    to: &str,
    performative: Performative,
    content: &[u8],
    token: u64,
) -> Result<(), Error> {
    let (to_ptr, to_len) = host::slice(to.as_bytes());
    let (content_ptr, content_len) = host::slice(content);
    Error::check(host::send(
        to_ptr,
        to_len,
        performative.code(),
        content_ptr,
        content_len,
        token as i64,
    ))
    .map(drop)
}

/// The node clock: monotonic time since the node started.
///
/// ```no_run
/// let started = caxton_agent::now();
/// ```
pub fn now() -> Duration {
    Duration::from_nanos(host::now_ns().max(0) as u64)
}

/// How loud a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something looks wrong.
    Warn = 1,
    /// What an operator wants to see.
    Info = 2,
    /// What a developer wants to see.
    Debug = 3,
    /// Everything.
    Trace = 4,
}

/// Write a line to the engine's log, tagged with the agent's name (cut at
/// 4,096 bytes).
///
/// ```no_run
/// caxton_agent::log(caxton_agent::Level::Info, "cache warmed");
/// ```
pub fn log(level: Level, line: &str) {
    let (ptr, len) = host::slice(line.as_bytes());
    // A log line that cannot be written is not worth failing a message for.
    let _ = host::log(level as i32, ptr, len);
}

#[doc(hidden)]
pub mod __private {
    //! What `export!` expands to; not part of the API.
    use core::cell::UnsafeCell;

    use crate::{Agent, Message};

    /// The agent's value, made on first use. A WebAssembly agent module has
    /// one thread, and the engine never enters an instance twice at once,
    /// so the slot is only ever touched by one call at a time.
    pub struct AgentSlot<A> {
        agent: UnsafeCell<Option<A>>,
        busy: UnsafeCell<bool>,
    }

    // SAFETY: the module is single-threaded (no shared memory, no threads in
    // ABI v1); `busy` turns a re-entry, were one ever to happen, into an
    // error instead of two `&mut` to the agent.
    unsafe impl<A> Sync for AgentSlot<A> {}

    /// `caxton_handle`'s answer when the slot is entered while busy.
    pub const REENTERED: i32 = 98;

    impl<A: Agent> AgentSlot<A> {
        /// An empty slot.
        pub const fn new() -> Self {
            Self {
                agent: UnsafeCell::new(None),
                busy: UnsafeCell::new(false),
            }
        }

        /// Run the agent on the current message.
        pub fn handle(&self) -> i32 {
            // SAFETY: single-threaded, see the `Sync` impl; `busy` guards
            // against re-entry.
            unsafe {
                if *self.busy.get() {
                    return REENTERED;
                }
                *self.busy.get() = true;
                let agent = (*self.agent.get()).get_or_insert_with(A::default);
                let code = match agent.handle(&Message::current()) {
                    Ok(()) => 0,
                    Err(error) => error.code(),
                };
                *self.busy.get() = false;
                code
            }
        }
    }

    impl<A: Agent> Default for AgentSlot<A> {
        fn default() -> Self {
            Self::new()
        }
    }
}
