//! Caxton's shards.
//!
//! This crate owns the threads of a node and the data plane inside them: one
//! glommio `LocalExecutor` per data shard, pinned where the placement plan
//! says, with the profile's wake policy; the gossip shard's thread; the
//! cross-shard mesh; each shard's agents, priority mailboxes, routing and
//! metrics ([`dataplane`](crate) is private: a shard's state never leaves its
//! thread); and the control plane ([`Node`]) that boots, deploys and stops.
//! It does not decide placement (`caxton-numa`) or run agents
//! (`caxton-agents`); it drives both.

mod client;
mod clock;
mod control;
mod core;
mod driver;
mod directory;
mod metrics;
mod node;
mod stop;

pub use caxton_agents::AgentStats;
pub use client::{Client, PersistError, RequestError, SendError, SendOptions};
pub use clock::NodeClock;
pub use crate::core::FAILURE_PREFIX;
pub use directory::{AgentRecord, Directory};
pub use metrics::{nanosecond_histogram, ShardMetrics};
pub use node::{GossipWork, Node, NodeError, ShardReport, ShardRole, CLIENT_PORTS};
pub use stop::StopSignal;
