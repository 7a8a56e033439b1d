//! One shard's SQLite database: opened with the performance tuning guide's pragmas as the
//! profile shapes them, migrated to the current schema, and the statements
//! the writer thread runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use caxton_profiles::{AutoVacuum, Profile};
use rusqlite::{params, Connection, OptionalExtension};

use crate::schema::MIGRATIONS;
use crate::StorageError;

/// Page size of new partitions (the performance tuning guide's `PRAGMA page_size = 4096`).
pub const PAGE_SIZE: u32 = 4096;
/// Memory-mapped I/O per partition (the performance tuning guide's `PRAGMA mmap_size = 268435456`).
pub const MMAP_BYTES: u64 = 256 << 20;

/// What the profile says about storage, in the form the partition uses.
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// `storage.page_cache_size`: SQLite's page cache (`PRAGMA cache_size`).
    pub page_cache_bytes: u64,
    /// `storage.wal_size_limit`: the WAL is truncated to this after a checkpoint (`PRAGMA journal_size_limit`).
    pub wal_size_limit: u64,
    /// `storage.auto_vacuum`.
    pub auto_vacuum: AutoVacuum,
    /// `storage.batch_size`: most writes in one transaction.
    pub batch_size: usize,
    /// `storage.flush_interval`: the longest a write waits for others to share its transaction.
    pub flush_interval: Duration,
    /// `messaging.enable_compression`: LZ4-compress stored message content.
    pub compression: bool,
    /// `messaging.message_ttl`: messages and conversations older than this are removed.
    pub message_ttl: Option<Duration>,
    /// `messaging.cleanup_interval`: how often expired and finished rows are removed.
    pub cleanup_interval: Duration,
}

impl StorageSettings {
    /// The settings of `profile`.
    pub fn from_profile(profile: &Profile) -> Self {
        let storage = &profile.storage;
        let messaging = &profile.messaging;
        Self {
            page_cache_bytes: storage.page_cache_size.bytes(),
            wal_size_limit: storage.wal_size_limit.bytes(),
            auto_vacuum: storage.auto_vacuum,
            batch_size: storage.batch_size.max(1) as usize,
            flush_interval: storage.flush_interval.get(),
            compression: messaging.enable_compression,
            message_ttl: messaging.message_ttl.map(|ttl| ttl.get()),
            cleanup_interval: messaging.cleanup_interval.get(),
        }
    }
}

/// How a message's encoded envelope is kept in its row: as it is, or
/// LZ4-compressed with its length first (`messaging.enable_compression`).
pub fn stored_form(envelope: &[u8], compress: bool) -> std::borrow::Cow<'_, [u8]> {
    if compress {
        std::borrow::Cow::Owned(lz4_flex::compress_prepend_size(envelope))
    } else {
        std::borrow::Cow::Borrowed(envelope)
    }
}

/// LZ4 expands a block at most about 255 times: a length prefix claiming
/// more than this over the blob's own size is damage, and is refused before
/// anything is allocated for it.
const LZ4_EXPANSION_MAX: usize = 255;

/// The encoded envelope a row holds (the inverse of [`stored_form`]); a
/// damaged compressed blob is an error, never a panic or a huge allocation.
pub fn read_stored_form(stored: Vec<u8>, compressed: bool) -> Result<Vec<u8>, String> {
    if !compressed {
        return Ok(stored);
    }
    let claimed = stored
        .get(..4)
        .map(|prefix| u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize)
        .ok_or_else(|| "a compressed envelope shorter than its length prefix".to_owned())?;
    if claimed > (stored.len() - 4).saturating_mul(LZ4_EXPANSION_MAX) + 64 {
        return Err(format!(
            "a compressed envelope of {} bytes claims {claimed} bytes uncompressed",
            stored.len()
        ));
    }
    lz4_flex::decompress_size_prepended(&stored).map_err(|error| error.to_string())
}

/// An agent this shard hosts, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRow {
    /// Its name.
    pub name: String,
    /// Its module (`.wasm` or `.wat` source as deployed).
    pub module: Vec<u8>,
    /// Instances on this shard.
    pub instances: u16,
    /// Its limits, as JSON.
    pub limits: String,
}

/// One key of an agent's state: (agent, key, value).
pub type StateRow = (String, Vec<u8>, Vec<u8>);

/// A message accepted and not yet finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMessage {
    /// Its durable id.
    pub id: u64,
    /// Its receiver's name.
    pub receiver: String,
    /// The encoded envelope.
    pub envelope: Vec<u8>,
    /// How many times it has been handed out, this recovery included.
    pub deliveries: u32,
}

/// An open partition.
pub struct Partition {
    connection: Connection,
    path: PathBuf,
    settings: StorageSettings,
}

/// Refuse a partition at a schema `version` newer than this build knows.
fn check_schema_version(path: &Path, version: usize) -> Result<(), StorageError> {
    if version > MIGRATIONS.len() {
        return Err(StorageError::Sqlite {
            path: path.display().to_string(),
            message: format!(
                "schema version {version} is newer than this build's {}; use a newer engine",
                MIGRATIONS.len()
            ),
        });
    }
    Ok(())
}

fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |error| StorageError::Sqlite {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Wall-clock milliseconds: stored times must mean the same after a restart.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl Partition {
    /// Open (creating if needed) the partition at `path` and bring it to the
    /// current schema. A file that is not a database, or not one of ours, is refused.
    pub fn open(path: &Path, settings: &StorageSettings) -> Result<Self, StorageError> {
        let fail = sqlite_error(path);
        let connection = Connection::open(path).map_err(&fail)?;
        // auto_vacuum and page_size take effect only before the first table exists.
        let auto_vacuum = match settings.auto_vacuum {
            AutoVacuum::None => "NONE",
            AutoVacuum::Full => "FULL",
            AutoVacuum::Incremental => "INCREMENTAL",
        };
        let cache_kib = (settings.page_cache_bytes / 1024).max(1);
        connection
            .execute_batch(&format!(
                "PRAGMA auto_vacuum = {auto_vacuum};
                 PRAGMA page_size = {PAGE_SIZE};
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA cache_size = -{cache_kib};
                 PRAGMA mmap_size = {MMAP_BYTES};
                 PRAGMA temp_store = MEMORY;
                 PRAGMA journal_size_limit = {};",
                settings.wal_size_limit
            ))
            .map_err(|error| StorageError::Sqlite {
                path: path.display().to_string(),
                message: format!("not a usable database: {error}"),
            })?;
        let check: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|error| StorageError::Sqlite {
                path: path.display().to_string(),
                message: format!("not a usable database: {error}"),
            })?;
        if check != "ok" {
            return Err(StorageError::Sqlite {
                path: path.display().to_string(),
                message: format!("the database is damaged: {check}"),
            });
        }
        let mut partition = Self {
            connection,
            path: path.to_owned(),
            settings: settings.clone(),
        };
        partition.migrate()?;
        Ok(partition)
    }

    /// Whether the partition at `path` can be opened and written by this
    /// build, checked without changing it: a file that can be written, a
    /// SQLite database, at a schema version this build knows. For refusing
    /// a profile before anything starts; opening it for good checks more
    /// (its pages, `PRAGMA quick_check`).
    pub fn check_usable(path: &Path) -> Result<(), StorageError> {
        let unusable = |message: String| StorageError::Sqlite {
            path: path.display().to_string(),
            message,
        };
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| unusable(format!("cannot be opened for writing: {error}")))?;
        let connection = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| unusable(format!("not a usable database: {error}")))?;
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .and_then(|version| {
                connection.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(version))
            })
            .map_err(|error| unusable(format!("not a usable database: {error}")))?;
        check_schema_version(path, version as usize)
    }

    /// The schema version the file is at.
    pub fn version(&self) -> Result<usize, StorageError> {
        let version: i64 = self
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sqlite_error(&self.path))?;
        Ok(version as usize)
    }

    fn migrate(&mut self) -> Result<(), StorageError> {
        let current = self.version()?;
        check_schema_version(&self.path, current)?;
        if current == MIGRATIONS.len() {
            return Ok(());
        }
        let path = self.path.clone();
        let transaction = self.connection.transaction().map_err(sqlite_error(&path))?;
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(current) {
            transaction
                .execute_batch(migration)
                .map_err(|error| StorageError::Sqlite {
                    path: path.display().to_string(),
                    message: format!("migration to schema version {}: {error}", version + 1),
                })?;
        }
        transaction
            .execute_batch(&format!("PRAGMA user_version = {};", MIGRATIONS.len()))
            .map_err(sqlite_error(&path))?;
        transaction.commit().map_err(sqlite_error(&path))
    }

    /// A pragma's value, as text (for tests and diagnostics).
    pub fn pragma(&self, name: &str) -> Result<String, StorageError> {
        self.connection
            .query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|value| match value {
                rusqlite::types::Value::Integer(number) => number.to_string(),
                rusqlite::types::Value::Text(text) => text,
                other => format!("{other:?}"),
            })
            .map_err(sqlite_error(&self.path))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its settings.
    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    /// Run `work` in one transaction.
    pub fn transaction<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, &StorageSettings) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let path = self.path.clone();
        let transaction = self.connection.transaction().map_err(sqlite_error(&path))?;
        let result = work(&transaction, &self.settings).map_err(sqlite_error(&path))?;
        transaction.commit().map_err(sqlite_error(&path))?;
        Ok(result)
    }

    /// Store an accepted message (and touch its conversation).
    pub fn persist(
        transaction: &rusqlite::Transaction<'_>,
        settings: &StorageSettings,
        id: u64,
        receiver: &str,
        conversation_id: u64,
        envelope: &[u8],
    ) -> rusqlite::Result<()> {
        let now = now_ms();
        let stored = stored_form(envelope, settings.compression);
        let content: &[u8] = &stored;
        transaction
            .prepare_cached(
                "INSERT INTO messages (id, timestamp, receiver, conversation_id, envelope, compressed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id as i64, now, receiver, conversation_id as i64, content, settings.compression])?;
        if conversation_id != 0 {
            transaction
                .prepare_cached(
                    "INSERT INTO conversations (id, agent, active, updated_at) VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (id, agent) DO UPDATE SET active = 1, updated_at = excluded.updated_at",
                )?
                .execute(params![conversation_id as i64, receiver, now])?;
        }
        Ok(())
    }

    /// Mark message `id` finished: its handler ran (or it was answered otherwise).
    pub fn mark_done(transaction: &rusqlite::Transaction<'_>, id: u64) -> rusqlite::Result<()> {
        transaction
            .prepare_cached("UPDATE messages SET done = 1 WHERE id = ?1")?
            .execute(params![id as i64])?;
        Ok(())
    }

    /// Record (or replace) an agent this shard hosts.
    pub fn put_agent(
        transaction: &rusqlite::Transaction<'_>,
        agent: &AgentRow,
    ) -> rusqlite::Result<()> {
        transaction
            .prepare_cached(
                "INSERT INTO agents (name, module, instances, limits, status, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, 'deployed', ?5)
                 ON CONFLICT (name) DO UPDATE SET module = excluded.module,
                     instances = excluded.instances, limits = excluded.limits, status = 'deployed'",
            )?
            .execute(params![
                agent.name,
                agent.module,
                agent.instances,
                agent.limits,
                now_ms()
            ])?;
        Ok(())
    }

    /// Record that agent `name` runs `instances` instances here now (it
    /// was scaled); a restart starts as many.
    pub fn set_instances(
        transaction: &rusqlite::Transaction<'_>,
        name: &str,
        instances: u16,
    ) -> rusqlite::Result<()> {
        transaction
            .prepare_cached("UPDATE agents SET instances = ?2 WHERE name = ?1")?
            .execute(params![name, instances])?;
        Ok(())
    }

    /// Forget an agent.
    pub fn remove_agent(
        transaction: &rusqlite::Transaction<'_>,
        name: &str,
    ) -> rusqlite::Result<()> {
        transaction
            .prepare_cached("DELETE FROM agents WHERE name = ?1")?
            .execute(params![name])?;
        transaction
            .prepare_cached("DELETE FROM agent_state WHERE agent = ?1")?
            .execute(params![name])?;
        Ok(())
    }

    /// Set (or, with an empty value, delete) one key of an agent's state.
    pub fn put_state(
        transaction: &rusqlite::Transaction<'_>,
        agent: &str,
        key: &[u8],
        value: &[u8],
    ) -> rusqlite::Result<()> {
        if value.is_empty() {
            transaction
                .prepare_cached("DELETE FROM agent_state WHERE agent = ?1 AND key = ?2")?
                .execute(params![agent, key])?;
        } else {
            transaction
                .prepare_cached(
                    "INSERT INTO agent_state (agent, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![agent, key, value])?;
        }
        Ok(())
    }

    /// Every agent's state: (agent, key, value).
    pub fn states(&self) -> Result<Vec<StateRow>, StorageError> {
        let fail = sqlite_error(&self.path);
        let mut statement = self
            .connection
            .prepare("SELECT agent, key, value FROM agent_state ORDER BY agent, key")
            .map_err(&fail)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// The agents stored.
    pub fn agents(&self) -> Result<Vec<AgentRow>, StorageError> {
        let fail = sqlite_error(&self.path);
        let mut statement = self
            .connection
            .prepare("SELECT name, module, instances, limits FROM agents WHERE status = 'deployed' ORDER BY deployed_at, name")
            .map_err(&fail)?;
        let rows = statement
            .query_map([], |row| {
                Ok(AgentRow {
                    name: row.get(0)?,
                    module: row.get(1)?,
                    instances: row.get(2)?,
                    limits: row.get(3)?,
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// Messages accepted and not finished, oldest first; each is counted as
    /// delivered once more.
    pub fn take_pending(&mut self) -> Result<Vec<PendingMessage>, StorageError> {
        self.transaction(|transaction, _| {
            transaction.execute("UPDATE messages SET deliveries = deliveries + 1 WHERE done = 0", [])?;
            let mut statement = transaction.prepare(
                "SELECT id, receiver, envelope, compressed, deliveries FROM messages WHERE done = 0 ORDER BY id",
            )?;
            let rows = statement.query_map([], |row| {
                let stored: Vec<u8> = row.get(2)?;
                let compressed: bool = row.get(3)?;
                let envelope = read_stored_form(stored, compressed).map_err(|error| {
                    rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Blob, error.into())
                })?;
                Ok(PendingMessage {
                    id: row.get::<_, i64>(0)? as u64,
                    receiver: row.get(1)?,
                    envelope,
                    deliveries: row.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The highest message id this partition ever stored (0 when none),
    /// the rows cleanup removed included: the next start numbers on from
    /// there, so a client never sees one id stand for two messages.
    pub fn max_id(&self) -> Result<u64, StorageError> {
        self.connection
            .query_row(
                "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM messages),
                            (SELECT COALESCE(MAX(highest), 0) FROM message_ids))",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|id| id as u64)
            .map_err(sqlite_error(&self.path))
    }

    /// Remove what has aged out: with a TTL, every message and conversation
    /// older than it (unfinished ones too: that is what expiry means); and
    /// finished messages older than one cleanup interval. Returns
    /// (unfinished messages expired, rows removed in all).
    pub fn cleanup(&mut self, now_ms: i64) -> Result<(u64, u64), StorageError> {
        let result = self.transaction(|transaction, settings| {
            // The highest id outlives the rows about to go.
            transaction.execute(
                "UPDATE message_ids SET highest =
                     MAX(highest, (SELECT COALESCE(MAX(id), 0) FROM messages))",
                [],
            )?;
            let mut expired = 0;
            let mut removed = 0;
            if let Some(ttl) = settings.message_ttl {
                let cutoff = now_ms - ttl.as_millis() as i64;
                expired = transaction.execute(
                    "DELETE FROM messages WHERE timestamp < ?1 AND done = 0",
                    params![cutoff],
                )? as u64;
                removed += expired;
                removed += transaction
                    .execute("DELETE FROM messages WHERE timestamp < ?1", params![cutoff])?
                    as u64;
                removed += transaction.execute(
                    "DELETE FROM conversations WHERE updated_at < ?1",
                    params![cutoff],
                )? as u64;
            }
            let finished_cutoff = now_ms - settings.cleanup_interval.as_millis() as i64;
            removed += transaction.execute(
                "DELETE FROM messages WHERE done = 1 AND timestamp < ?1",
                params![finished_cutoff],
            )? as u64;
            Ok((expired, removed))
        })?;
        if self.settings.auto_vacuum == AutoVacuum::Incremental {
            let _ = self.connection.execute_batch("PRAGMA incremental_vacuum;");
        }
        // Keep the WAL within wal_size_limit: checkpoint, then SQLite truncates it.
        let _ = self
            .connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        Ok(result)
    }

    /// Whether the partition holds message `id`, and if so whether it is finished.
    pub fn message_state(&self, id: u64) -> Result<Option<bool>, StorageError> {
        self.connection
            .query_row(
                "SELECT done FROM messages WHERE id = ?1",
                params![id as i64],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite_error(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MIGRATIONS;

    #[test]
    fn stored_forms_round_trip_and_a_damaged_length_is_refused_before_allocating() {
        let envelope = b"an encoded envelope, repeated, repeated, repeated".to_vec();
        for compress in [false, true] {
            let stored = stored_form(&envelope, compress).into_owned();
            assert_eq!(read_stored_form(stored, compress), Ok(envelope.clone()));
        }
        // Four bytes of prefix claiming 4 GiB, then a little: refused, not allocated.
        let lying = [0xff, 0xff, 0xff, 0xff, 0x10, 0x41];
        let refused = read_stored_form(lying.to_vec(), true).expect_err("refused");
        assert!(refused.contains("claims 4294967295 bytes"), "{refused}");
        assert!(
            read_stored_form(vec![1, 2], true).is_err(),
            "shorter than its prefix"
        );
    }

    /// A message `id` for `echo` to store, its envelope the id's low byte.
    fn persist_message(id: u64) -> crate::Write {
        crate::Write::Persist {
            id,
            receiver: "echo".into(),
            conversation_id: 0,
            envelope: vec![id as u8],
        }
    }

    /// A partition writer on `path` whose wake-ups arrive on the receiver.
    fn start_writer(
        path: &std::path::Path,
        settings: &StorageSettings,
        name: &str,
    ) -> (
        crate::PartitionWriter,
        crate::Recovered,
        std::sync::mpsc::Receiver<()>,
    ) {
        let (wake, woken) = std::sync::mpsc::channel();
        let (writer, recovered) = crate::PartitionWriter::start(
            path,
            settings,
            name.into(),
            Box::new(|| {}),
            Box::new(move || {
                let _ = wake.send(());
            }),
        )
        .expect("start");
        (writer, recovered, woken)
    }

    fn settings() -> StorageSettings {
        StorageSettings {
            page_cache_bytes: 10 << 20,
            wal_size_limit: 50 << 20,
            auto_vacuum: AutoVacuum::Full,
            batch_size: 100,
            flush_interval: Duration::from_millis(1),
            compression: false,
            message_ttl: None,
            cleanup_interval: Duration::from_secs(3600),
        }
    }

    fn persist(partition: &mut Partition, id: u64, envelope: &[u8]) {
        partition
            .transaction(|transaction, settings| {
                Partition::persist(transaction, settings, id, "echo", 7, envelope)
            })
            .expect("persist");
    }

    #[test]
    fn the_seeds_pragmas_are_applied_as_the_profile_shapes_them() {
        let directory = tempfile::tempdir().expect("tempdir");
        let partition =
            Partition::open(&directory.path().join("p.sqlite"), &settings()).expect("open");
        for (pragma, expected) in [
            ("journal_mode", "wal"),
            ("synchronous", "1"),
            ("cache_size", "-10240"),
            ("page_size", "4096"),
            ("mmap_size", "268435456"),
            ("temp_store", "2"),
            ("auto_vacuum", "1"),
            ("journal_size_limit", "52428800"),
        ] {
            assert_eq!(
                partition.pragma(pragma).expect(pragma),
                expected,
                "{pragma}"
            );
        }
        assert_eq!(partition.version().expect("version"), MIGRATIONS.len());
    }

    #[test]
    fn an_older_schema_is_migrated_in_place_and_keeps_its_rows() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("old.sqlite");
        {
            let old = Connection::open(&path).expect("create");
            old.execute_batch(MIGRATIONS[0]).expect("version 1 schema");
            old.execute_batch("PRAGMA user_version = 1;")
                .expect("version");
            old.execute(
                "INSERT INTO messages (id, timestamp, receiver, conversation_id, envelope, done)
                 VALUES (5, ?1, 'echo', 0, x'0102', 0)",
                params![now_ms()],
            )
            .expect("row");
        }
        let mut partition = Partition::open(&path, &settings()).expect("migrates");
        assert_eq!(partition.version().expect("version"), MIGRATIONS.len());
        let pending = partition.take_pending().expect("pending");
        assert_eq!(
            pending,
            vec![PendingMessage {
                id: 5,
                receiver: "echo".into(),
                envelope: vec![1, 2],
                deliveries: 1,
            }]
        );
    }

    #[test]
    fn a_newer_schema_and_a_file_that_is_not_a_database_are_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let newer = directory.path().join("newer.sqlite");
        Connection::open(&newer)
            .expect("create")
            .execute_batch("PRAGMA user_version = 99;")
            .expect("version");
        let error = Partition::open(&newer, &settings()).err().expect("refused");
        assert!(
            error.to_string().contains("newer than this build"),
            "{error}"
        );
        let garbage = directory.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
        let error = Partition::open(&garbage, &settings())
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("not a usable database"),
            "{error}"
        );
    }

    #[test]
    fn compressed_content_is_smaller_on_disk_and_reads_back_whole() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut compressing = settings();
        compressing.compression = true;
        let mut partition =
            Partition::open(&directory.path().join("c.sqlite"), &compressing).expect("open");
        let envelope = vec![b'a'; 10_000];
        persist(&mut partition, 1, &envelope);
        let stored: i64 = partition
            .connection
            .query_row(
                "SELECT length(envelope) FROM messages WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .expect("length");
        assert!(stored < 1_000, "stored {stored} bytes");
        assert_eq!(
            partition.take_pending().expect("pending")[0].envelope,
            envelope
        );
    }

    #[test]
    fn the_ttl_expires_old_messages_and_conversations_and_finished_rows_go() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut expiring = settings();
        expiring.message_ttl = Some(Duration::from_secs(60));
        expiring.cleanup_interval = Duration::from_secs(10);
        let mut partition =
            Partition::open(&directory.path().join("t.sqlite"), &expiring).expect("open");
        for id in 1..=3 {
            persist(&mut partition, id, b"x");
        }
        partition
            .transaction(|transaction, _| Partition::mark_done(transaction, 3))
            .expect("done");
        let now = now_ms();
        // Message 1 (and its conversation) is two minutes old; 3 is finished and 20 s old.
        partition
            .connection
            .execute_batch(&format!(
                "UPDATE messages SET timestamp = {} WHERE id = 1;
                 UPDATE messages SET timestamp = {} WHERE id = 3;
                 UPDATE conversations SET updated_at = {};",
                now - 120_000,
                now - 20_000,
                now - 120_000
            ))
            .expect("age");
        let (expired, removed) = partition.cleanup(now).expect("cleanup");
        assert_eq!(expired, 1);
        assert_eq!(
            removed, 3,
            "message 1, its conversation, finished message 3"
        );
        assert_eq!(partition.message_state(1).expect("state"), None);
        assert_eq!(partition.message_state(2).expect("state"), Some(false));
        assert_eq!(partition.message_state(3).expect("state"), None);
        // Message 3's row is gone, its id is not: the next start numbers
        // past it.
        assert_eq!(partition.max_id().expect("max"), 3);
    }

    #[test]
    fn the_writer_expires_messages_every_cleanup_interval() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut expiring = settings();
        expiring.message_ttl = Some(Duration::from_millis(1));
        expiring.cleanup_interval = Duration::from_millis(100);
        let (writer, _, woken) =
            start_writer(&directory.path().join("e.sqlite"), &expiring, "expiry-test");
        writer.write(persist_message(9)).expect("queued");
        let mut expired = 0;
        while expired == 0 {
            woken.recv_timeout(Duration::from_secs(10)).expect("woken");
            while let Some(event) = writer.next_event() {
                if let crate::StorageEvent::Expired(count) = event {
                    expired += count;
                }
            }
        }
        assert_eq!(expired, 1);
    }

    #[test]
    fn the_writer_reports_durability_and_finished_messages_stay_finished() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("w.sqlite");
        let (writer, recovered, woken) = start_writer(&path, &settings(), "writer-test");
        assert!(recovered.pending.is_empty());
        assert_eq!(recovered.next_id, 1);
        for id in [1, 2] {
            writer.write(persist_message(id)).expect("queued");
        }
        let mut durable = Vec::new();
        while durable.len() < 2 {
            woken.recv_timeout(Duration::from_secs(10)).expect("woken");
            while let Some(event) = writer.next_event() {
                match event {
                    crate::StorageEvent::Durable(ids) => durable.extend(ids),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(durable, vec![1, 2]);
        writer.write(crate::Write::Done { id: 1 }).expect("queued");
        drop(writer);
        let (_, recovered) = crate::PartitionWriter::start(
            &path,
            &settings(),
            "writer-test".into(),
            Box::new(|| {}),
            Box::new(|| {}),
        )
        .expect("reopen");
        assert_eq!(recovered.pending.len(), 1);
        assert_eq!(recovered.pending[0].id, 2);
        assert_eq!(recovered.next_id, 3);
    }

    /// An unfinished message that outlived `message_ttl` while the node
    /// was down is expired at the start, not delivered again.
    #[test]
    fn a_message_past_its_ttl_at_a_start_is_expired_not_redelivered() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("t.sqlite");
        let (writer, _, woken) = start_writer(&path, &settings(), "ttl-test");
        writer.write(persist_message(1)).expect("queued");
        woken.recv_timeout(Duration::from_secs(10)).expect("stored");
        drop(writer);
        std::thread::sleep(Duration::from_millis(20));
        let mut expiring = settings();
        expiring.message_ttl = Some(Duration::from_millis(5));
        let (writer, recovered, _) = start_writer(&path, &expiring, "ttl-test");
        assert!(
            recovered.pending.is_empty(),
            "{:?}",
            recovered.pending.len()
        );
        assert!(
            matches!(writer.next_event(), Some(crate::StorageEvent::Expired(1))),
            "the expiry is reported for the shard to count"
        );
        assert_eq!(recovered.next_id, 2, "its id is not handed out again");
    }
}

#[cfg(test)]
mod profile_tests {
    use super::*;

    #[test]
    fn the_memory_optimized_profile_shapes_the_partition() {
        let profile = caxton_profiles::load(&["memory-optimized".to_owned()], &[])
            .expect("built-in")
            .profile;
        let settings = StorageSettings::from_profile(&profile);
        assert!(settings.compression);
        assert_eq!(settings.message_ttl, Some(Duration::from_secs(60)));
        assert_eq!(settings.cleanup_interval, Duration::from_secs(10));
        let directory = tempfile::tempdir().expect("tempdir");
        let partition =
            Partition::open(&directory.path().join("m.sqlite"), &settings).expect("open");
        // 10MB page cache, 50MB WAL limit, auto_vacuum full.
        assert_eq!(partition.pragma("cache_size").expect("pragma"), "-10240");
        assert_eq!(
            partition.pragma("journal_size_limit").expect("pragma"),
            "52428800"
        );
        assert_eq!(partition.pragma("auto_vacuum").expect("pragma"), "1");
    }
}
