//! Caxton's storage partitions.
//!
//! Each data shard owns one SQLite database, `DIR/shard-N.sqlite`, and one
//! writer thread that is the only thing to touch it: the shard hands it
//! writes over a channel and never waits on SQLite, so a slow disk delays
//! acknowledgements, not routing. The writer groups writes into one
//! transaction per batch (`storage.batch_size`, `storage.flush_interval`),
//! tells the shard which messages are durable, and expires old rows
//! (`messaging.message_ttl`, `messaging.cleanup_interval`).
//!
//! What is kept: the agents a shard hosts (so a restarted node redeploys
//! them), the messages accepted for its agents until their handlers finish
//! (so a crash loses none: they are delivered again), and conversations.
//! The durability protocol itself (when a message is acknowledged, when it
//! is finished) is the pure state machine in [`durability`].
//! A node takes an exclusive lock on its data directory ([`DirectoryLock`]).

pub mod durability;
mod lock;
mod partition;
mod schema;
mod writer;

pub use durability::{DurabilityLedger, LedgerFull, Waiting};
pub use lock::DirectoryLock;
pub use partition::{
    read_stored_form, stored_form, AgentRow, Partition, PendingMessage, StateRow, StorageSettings,
};
pub use schema::{MIGRATIONS, SCHEMA_VERSION};
pub use writer::{
    Committed, PartitionWriter, Recovered, StorageEvent, Write, WriteRefused, WRITES_QUEUED_MAX,
};

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// SQLite refused.
    #[error("{path}: {message}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The data directory cannot be used.
    #[error("data directory `{path}`: {message}")]
    Directory {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The partition file of data shard `shard` in `directory`.
pub fn partition_path(directory: &std::path::Path, shard: usize) -> std::path::PathBuf {
    directory.join(format!("shard-{shard}.sqlite"))
}
