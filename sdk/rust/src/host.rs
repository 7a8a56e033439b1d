//! The host functions of ABI v1 (import module `caxton`), as the engine
//! declares them; the only `unsafe` calls of the crate. Outside `wasm32`
//! there is no host: every call answers `NO_MESSAGE`, so code built on
//! them compiles and unit-tests on the host.

/// A slice as the ABI's `(ptr, len)` pair of offsets into linear memory.
pub(crate) fn slice(bytes: &[u8]) -> (i32, i32) {
    (bytes.as_ptr() as usize as i32, bytes.len() as i32)
}

/// A mutable buffer as `(ptr, capacity)`.
pub(crate) fn buffer(bytes: &mut [u8]) -> (i32, i32) {
    (bytes.as_mut_ptr() as usize as i32, bytes.len() as i32)
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "caxton")]
    unsafe extern "C" {
        pub fn msg_performative() -> i32;
        pub fn msg_content_len() -> i32;
        pub fn msg_read_content(ptr: i32, cap: i32) -> i32;
        pub fn msg_sender(ptr: i32, cap: i32) -> i32;
        pub fn msg_conversation_id() -> i64;
        pub fn msg_reply_with() -> i64;
        pub fn msg_in_reply_to() -> i64;
        pub fn send(
            to_ptr: i32,
            to_len: i32,
            performative: i32,
            content_ptr: i32,
            content_len: i32,
            reply_with: i64,
        ) -> i32;
        pub fn reply(performative: i32, content_ptr: i32, content_len: i32) -> i32;
        pub fn forward(to_ptr: i32, to_len: i32, content_ptr: i32, content_len: i32) -> i32;
        pub fn defer_reply() -> i64;
        pub fn reply_to(ticket: i64, performative: i32, content_ptr: i32, content_len: i32) -> i32;
        pub fn log(level: i32, ptr: i32, len: i32) -> i32;
        pub fn now_ns() -> i64;
        pub fn state_get(key_ptr: i32, key_len: i32, buf_ptr: i32, buf_cap: i32) -> i32;
        pub fn state_put(key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32) -> i32;
    }
}

/// Declares each host function once: on `wasm32` a call of the import, which
/// only reads and writes the agent's own memory at the offsets given (the
/// host checks them against the memory's bounds); elsewhere `NO_MESSAGE`.
macro_rules! host_functions {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(
            #[cfg(target_arch = "wasm32")]
            pub(crate) fn $name($($arg: $ty),*) -> $ret {
                // SAFETY: the host validates every offset against the
                // agent's memory and never keeps a pointer past the call.
                unsafe { imports::$name($($arg),*) }
            }

            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables)]
            pub(crate) fn $name($($arg: $ty),*) -> $ret {
                crate::error::NO_MESSAGE as $ret
            }
        )*
    };
}

host_functions! {
    fn msg_performative() -> i32;
    fn msg_content_len() -> i32;
    fn msg_read_content(ptr: i32, cap: i32) -> i32;
    fn msg_sender(ptr: i32, cap: i32) -> i32;
    fn msg_conversation_id() -> i64;
    fn msg_reply_with() -> i64;
    fn msg_in_reply_to() -> i64;
    fn send(to_ptr: i32, to_len: i32, performative: i32, content_ptr: i32, content_len: i32, reply_with: i64) -> i32;
    fn reply(performative: i32, content_ptr: i32, content_len: i32) -> i32;
    fn forward(to_ptr: i32, to_len: i32, content_ptr: i32, content_len: i32) -> i32;
    fn defer_reply() -> i64;
    fn reply_to(ticket: i64, performative: i32, content_ptr: i32, content_len: i32) -> i32;
    fn log(level: i32, ptr: i32, len: i32) -> i32;
    fn now_ns() -> i64;
    fn state_get(key_ptr: i32, key_len: i32, buf_ptr: i32, buf_cap: i32) -> i32;
    fn state_put(key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32) -> i32;
}
