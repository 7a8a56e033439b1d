//! The agent's key-value state: kept by the engine, shared by the agent's
//! instances on one shard, outliving any instance, and kept in the shard's
//! storage partition when the node persists (`docs/agent-abi.md`).
//!
//! Keys up to 256 bytes, values up to 64 KiB, 4,096 keys per agent per shard.

use alloc::vec::Vec;

use crate::error::NOT_FOUND;
use crate::{host, Error};

/// The value of `key`, or `None` when it is not set.
///
/// ```no_run
/// # fn f() -> Result<(), caxton_agent::Error> {
/// let greeting = caxton_agent::state::get(b"greeting")?.unwrap_or_default();
/// # Ok(()) }
/// ```
pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let (key_ptr, key_len) = host::slice(key);
    let mut value = alloc::vec![0; 64];
    loop {
        let (ptr, cap) = host::buffer(&mut value);
        let full = host::state_get(key_ptr, key_len, ptr, cap);
        if full == NOT_FOUND {
            return Ok(None);
        }
        let full = Error::check(full)? as usize;
        if full <= value.len() {
            value.truncate(full);
            return Ok(Some(value));
        }
        value.resize(full, 0);
    }
}

/// Set `key` to `value` (an empty value deletes the key).
///
/// ```no_run
/// # fn f() -> Result<(), caxton_agent::Error> {
/// caxton_agent::state::put(b"greeting", b"hello")?;
/// # Ok(()) }
/// ```
pub fn put(key: &[u8], value: &[u8]) -> Result<(), Error> {
    let (key_ptr, key_len) = host::slice(key);
    let (ptr, len) = host::slice(value);
    Error::check(host::state_put(key_ptr, key_len, ptr, len)).map(drop)
}

/// Delete `key` (nothing happens when it is not set).
///
/// ```no_run
/// # fn f() -> Result<(), caxton_agent::Error> {
/// caxton_agent::state::delete(b"session")?;
/// # Ok(()) }
/// ```
pub fn delete(key: &[u8]) -> Result<(), Error> {
    put(key, &[])
}

/// The value of `key` decoded from MessagePack, or `None` when not set.
///
/// ```no_run
/// # fn f() -> Result<(), caxton_agent::Error> {
/// let seen: u32 = caxton_agent::state::get_value(b"seen")?.unwrap_or(0);
/// # Ok(()) }
/// ```
#[cfg(feature = "msgpack")]
pub fn get_value<T: serde::de::DeserializeOwned>(key: &[u8]) -> Result<Option<T>, Error> {
    get(key)?
        .map(|bytes| crate::msgpack::from_slice(&bytes))
        .transpose()
}

/// Set `key` to `value` encoded as MessagePack.
///
/// ```no_run
/// # fn f() -> Result<(), caxton_agent::Error> {
/// caxton_agent::state::put_value(b"seen", &3u32)?;
/// # Ok(()) }
/// ```
#[cfg(feature = "msgpack")]
pub fn put_value<T: serde::Serialize + ?Sized>(key: &[u8], value: &T) -> Result<(), Error> {
    put(key, &crate::msgpack::to_vec(value)?)
}
