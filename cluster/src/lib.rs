//! Cluster membership: which nodes are in the cluster, which answer, and how
//! quickly the others learn it.
//!
//! - [`directory`]: which agents each node hosts, kept by the membership
//!   core (version notes by gossip, lists pulled from their node).
//! - [`lanes`]: the pool of ordered QUIC streams that carry remote messages
//!   to each peer (`transport.connection_pool.*`), retired without reordering.
//! - [`membership`]: the sans-IO core, SWIM (foca) with our timers, joins,
//!   rejoins, frame checks and counts; it takes time and frames, returns
//!   frames and events.
//! - [`wire`]: node identities, the MessagePack codec, and the frame every
//!   packet travels in (version, replay sequence, length, checksum).
//! - [`remote`]: remote routing, sans-IO: messages for agents other nodes
//!   host, out through the remote port and in from other nodes; its
//!   batches are written, and read where they can be, by hand (`remote_codec`).
//! - [`settings`]: how profile keys become foca's and the transport's settings.
//! - [`simulation`]: many cores on a virtual clock over a simulated network.
//! - [`tls`]: certificates: loading the cluster's, and `init-certs` for a test set.
//! - [`watch`]: the ring watch, each member pinging its successor on a ring
//!   every probe interval, so a crash is suspected within an interval.
//! - [`transport`]: the drivers that run the core over QUIC (quinn) or TLS over TCP
//!   on the gossip shard's tokio runtime.
//!
//! The data shards never wait on any of this: membership runs on the gossip
//! shard's thread, and nothing here is on a message's path.

pub mod directory;
pub mod lanes;
pub mod membership;
pub mod remote;
mod remote_codec;
pub mod settings;
pub mod simulation;
pub mod tls;
pub mod transport;
pub mod watch;
pub mod wire;

pub use directory::{AgentCounts, ClusterDirectory, NodeAgents};
pub use membership::{
    MemberState, MemberView, Membership, MembershipCounters, MembershipEvent, Now, Outgoing,
    StateCounts,
};
pub use settings::{ClusterSettings, SettingsError, SwimSettings};
pub use wire::NodeId;

/// splitmix64's finalizer: a cheap, well-spread hash of one word, where the
/// same input must give the same output on every node and every run (the
/// ring watch's order, the simulator's per-link latency).
pub(crate) fn mix64(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}
