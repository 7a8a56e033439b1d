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

/// Whether a node of `data_shards` data shards could take `directory`
/// now: it is (or can be made) a directory, no other node holds it, and it
/// holds no partitions of shards such a node would not run. For a caller
/// that refuses a profile before it starts anything; the node takes the
/// lock for good when it starts, and checks again then.
pub fn check_data_directory(
    directory: &std::path::Path,
    data_shards: usize,
) -> Result<(), StorageError> {
    drop(DirectoryLock::acquire(directory)?);
    check_partitions_fit(directory, data_shards)?;
    for shard in 0..data_shards {
        let path = partition_path(directory, shard);
        if path.exists() {
            partition::Partition::check_usable(&path)?;
        }
    }
    Ok(())
}

/// The partition file of data shard `shard` in `directory`.
pub fn partition_path(directory: &std::path::Path, shard: usize) -> std::path::PathBuf {
    directory.join(format!("shard-{shard}.sqlite"))
}

/// Refuse a data directory that holds partitions of data shards this node
/// will not run (`shard-N.sqlite` with N at or past `data_shards`): a node
/// started with fewer shards than the one that wrote them would never read
/// them, and the messages it acknowledged there, its agents and their state
/// would be stranded without a word. A directory that cannot be listed
/// passes here; opening the partitions reports it.
pub fn check_partitions_fit(
    directory: &std::path::Path,
    data_shards: usize,
) -> Result<(), StorageError> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Ok(());
    };
    let mut beyond: Vec<usize> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let index = name
                .to_str()?
                .strip_prefix("shard-")?
                .strip_suffix(".sqlite")?
                .parse::<usize>()
                .ok()?;
            (index >= data_shards).then_some(index)
        })
        .collect();
    beyond.sort_unstable();
    let Some(&highest) = beyond.last() else {
        return Ok(());
    };
    let files: Vec<String> = beyond
        .iter()
        .map(|index| format!("shard-{index}.sqlite"))
        .collect();
    Err(StorageError::Directory {
        path: directory.display().to_string(),
        message: format!(
            "holds the partitions of data shards this node would not run ({}): it has {data_shards} data shard(s) and they were written by a node with at least {}. Their stored messages, agents and state would be stranded. Start with at least {} data shards (runtime.worker_threads), or move those files away if what they hold is not wanted",
            files.join(", "),
            highest + 1,
            highest + 1,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_shards_a_node_would_not_run_are_named() {
        let directory = tempfile::tempdir().expect("a directory");
        for name in [
            "shard-0.sqlite",
            "shard-1.sqlite",
            "shard-3.sqlite",
            "other.sqlite",
        ] {
            std::fs::write(directory.path().join(name), b"").expect("written");
        }
        assert!(check_partitions_fit(directory.path(), 4).is_ok());
        let refused = check_partitions_fit(directory.path(), 1)
            .expect_err("two partitions left out")
            .to_string();
        assert!(
            refused.contains("shard-1.sqlite, shard-3.sqlite")
                && refused.contains("at least 4 data shards")
                && refused.contains("runtime.worker_threads")
                && !refused.contains("shard-0.sqlite"),
            "{refused}"
        );
        assert!(check_partitions_fit(&directory.path().join("absent"), 1).is_ok());
    }
}
