//! The partition schema and its migrations. `PRAGMA user_version` holds the
//! version a database is at; opening one runs every later migration in one
//! transaction, so an older partition is upgraded in place or not at all.

/// Migrations in order: `MIGRATIONS[n]` takes a database from version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: agents, messages, conversations, with the performance tuning guide's indexes.
    "CREATE TABLE agents (
         name TEXT PRIMARY KEY,
         module BLOB NOT NULL,
         instances INTEGER NOT NULL,
         limits TEXT NOT NULL,
         status TEXT NOT NULL DEFAULT 'deployed',
         deployed_at INTEGER NOT NULL
     );
     CREATE INDEX idx_agents_status ON agents(status);
     CREATE TABLE messages (
         id INTEGER PRIMARY KEY,
         timestamp INTEGER NOT NULL,
         receiver TEXT NOT NULL,
         conversation_id INTEGER NOT NULL,
         envelope BLOB NOT NULL,
         done INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX idx_messages_timestamp ON messages(timestamp);
     CREATE TABLE conversations (
         id INTEGER NOT NULL,
         agent TEXT NOT NULL,
         active INTEGER NOT NULL DEFAULT 1,
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (id, agent)
     );
     CREATE INDEX idx_conversations_active ON conversations(active) WHERE active = 1;",
    // 2: compressed content, redelivery counts, and a cheap scan of unfinished messages.
    "ALTER TABLE messages ADD COLUMN compressed INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE messages ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX idx_messages_pending ON messages(id) WHERE done = 0;",
    // 3: agents' key-value state.
    "CREATE TABLE agent_state (
         agent TEXT NOT NULL,
         key BLOB NOT NULL,
         value BLOB NOT NULL,
         PRIMARY KEY (agent, key)
     ) WITHOUT ROWID;",
    // 4: the highest message id ever given, kept when cleanup removes the
    // rows that held it, so ids are never handed out twice.
    "CREATE TABLE message_ids (highest INTEGER NOT NULL);
     INSERT INTO message_ids (highest) SELECT COALESCE(MAX(id), 0) FROM messages;",
];

/// The version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
