//! The agent ABI, version 1: the names and codes a WebAssembly agent and the
//! host agree on. `docs/agent-abi.md` is the prose form of this module.
//!
//! An agent exports `memory`, `caxton_abi_version() -> i32` (returns
//! [`ABI_VERSION`]) and `caxton_handle() -> i32`, called once per message
//! (0: handled; anything else: the agent failed and its sender gets `failure`).
//! During `caxton_handle` it reads the message and acts through imports from
//! the `caxton` module, listed in [`HOST_FUNCTIONS`].

/// The ABI version this host implements.
pub const ABI_VERSION: i32 = 1;

/// The import module of every host function.
pub const IMPORT_MODULE: &str = "caxton";

/// Exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// Exported `() -> i32` returning the ABI version.
pub const EXPORT_ABI_VERSION: &str = "caxton_abi_version";
/// Exported `() -> i32` message handler.
pub const EXPORT_HANDLE: &str = "caxton_handle";

/// Host functions an agent may import from [`IMPORT_MODULE`].
pub const HOST_FUNCTIONS: [&str; 16] = [
    "msg_performative",
    "msg_content_len",
    "msg_read_content",
    "msg_sender",
    "msg_conversation_id",
    "msg_reply_with",
    "msg_in_reply_to",
    "send",
    "reply",
    "forward",
    "defer_reply",
    "reply_to",
    "log",
    "now_ns",
    "state_get",
    "state_put",
];

/// Host function results below zero.
pub mod errors {
    /// Called outside `caxton_handle`: there is no current message.
    pub const NO_MESSAGE: i32 = -1;
    /// A pointer and length that do not lie inside the agent's memory.
    pub const OUT_OF_BOUNDS: i32 = -2;
    /// Content or a name longer than the host accepts.
    pub const TOO_LARGE: i32 = -3;
    /// More sends in one handler call, or more open deferred replies, than
    /// the host accepts.
    pub const OUTBOX_FULL: i32 = -4;
    /// A performative code that is not one of the eleven.
    pub const BAD_PERFORMATIVE: i32 = -5;
    /// A receiver name no deployed agent has.
    pub const UNKNOWN_RECEIVER: i32 = -6;
    /// A name that is not UTF-8.
    pub const BAD_UTF8: i32 = -7;
    /// `reply_to` a ticket whose message's sender cannot be answered.
    pub const NO_SENDER: i32 = -8;
    /// `state_get` of a key the agent never put (or deleted).
    pub const NOT_FOUND: i32 = -9;
    /// `state_put` of a new key when the agent already holds [`super::STATE_KEYS_MAX`].
    pub const STATE_FULL: i32 = -10;
}

/// Longest state key, in bytes.
pub const STATE_KEY_BYTES_MAX: usize = 256;
/// Longest state value, in bytes.
pub const STATE_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Most state keys one agent holds on one shard.
pub const STATE_KEYS_MAX: usize = 4096;

/// Largest message content an agent may send, in bytes.
pub const CONTENT_BYTES_MAX: usize = 1 << 20;
/// Longest agent name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Most messages one handler call may send.
pub const SENDS_PER_MESSAGE_MAX: usize = 1024;
/// Most deferred replies one instance may hold open.
pub const DEFERRED_REPLIES_MAX: usize = 1024;
/// Longest log line kept, in bytes; longer lines are cut.
pub const LOG_BYTES_MAX: usize = 4096;
