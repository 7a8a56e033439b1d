//! Caxton's shards.
//!
//! This crate owns the threads of a node and the data plane inside them.
//! Read it in this order:
//! - `src/core/mod.rs`: the **shard core**, every decision
//!   a data shard makes about a message (routing, admission, deadlines,
//!   `cpu_shares` holds, faults to answers, durability bookkeeping) as a
//!   sans-IO state machine, with a message's path through it in its docs;
//! - `src/core/seams.rs`: the two traits the core works through, agents
//!   (`AgentRuntime`) and I/O (`ShardIo`), and their engine implementations;
//! - `src/driver.rs`: the **driver**, the thin glommio loop that feeds the
//!   core the clock, the rings and the partition writer's reports;
//! - `src/node.rs`: the control plane ([`Node`]) that boots the shards
//!   (pinned glommio executors, the gossip shard's thread), deploys agents
//!   and stops; `src/control.rs` its commands; `src/client.rs` the clients
//!   that send into the node from outside the agents; `src/remote_port.rs`
//!   the client port remote routing uses, and `src/cluster_side.rs` the
//!   cluster's view of it.
//!
//! A shard's state never leaves its thread. It does not decide placement
//! (`caxton-numa`) or run agents (`caxton-agents`); it drives both.

mod client;
mod clock;
mod cluster_side;
mod control;
mod core;
mod directory;
mod driver;
mod metrics;
mod node;
mod remote_port;
mod stop;

pub use crate::core::trace::{Hop, HopKind, TraceTake, TRACE_HOPS_MAX};
pub use crate::core::{FAILURE_PREFIX, PERSISTENCE_OFF};
/// The most content one message carries: what an agent may send, and so
/// what the admin API takes from a client.
pub use caxton_agents::abi::CONTENT_BYTES_MAX;
pub use caxton_agents::{AgentStats, DeployError};
pub use client::{
    acceptance, is_acceptance, Client, PersistError, RequestError, SendError, SendOptions,
};
pub use clock::NodeClock;
pub use cluster_side::PortSide;
pub use directory::{AgentRecord, Directory, Route, REMOTE_ID_BASE};
pub use metrics::{nanosecond_histogram, ShardMetrics};
pub use node::{
    client_ports, GossipWork, IdleSpin, Node, NodeError, NodeOptions, RecoveredAgent, ShardReport,
    ShardRole, CLIENT_PORTS_SPARE, SHARD_IO_MEMORY_BYTES,
};
pub use remote_port::RemotePort;
pub use stop::StopSignal;
