//! Caxton's configuration profiles.
//!
//! This crate owns the profile schema (every key of the performance tuning
//! guide, typed), the built-in profiles, loading and layering of profiles from
//! built-ins, files and `--set` overrides, and validation with errors that name
//! the key, its line and column, and a fix. It does not own what the keys do:
//! placement, shards and later subsystems read the typed [`Profile`].
//!
//! ```
//! let loaded = caxton_profiles::load(&["low-latency".into()], &["runtime.worker_threads=2".into()]).unwrap();
//! assert_eq!(loaded.profile.runtime.worker_threads, Some(2));
//! assert_eq!(loaded.profile.messaging.batch_size, 1);
//! ```

mod builtin;
mod error;
mod keys;
mod load;
mod names;
mod schema;
mod units;
mod validate;

pub use builtin::{get as builtin_text, NAMES as BUILTIN_NAMES};
pub use error::{ProfileError, ProfileErrorKind, SourceLocation};
pub use keys::{key_reader, KEY_TABLE};
pub use load::{load, profile_to_yaml, LoadedProfile, PROFILE_FILE_BYTES_MAX};
pub use names::{check_agent_name, check_node_name, nearest_name, AGENT_NAME_BYTES_MAX};
pub use schema::*;
pub use units::{ByteSize, CpuShares, HumanDuration};
pub use validate::{
    idle_transport_keys, is_idle_transport_key, is_seed_address, mailbox_capacity,
    memory_limits_over_the_ceiling, messaging_notes, validate, without_idle_transport_keys,
    Violation, TIME_SLICE_MIN, WORKER_THREADS_MAX,
};
