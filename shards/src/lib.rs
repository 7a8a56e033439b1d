//! Caxton's shards.
//!
//! This crate owns the threads of a node: one glommio `LocalExecutor` per data
//! shard, pinned where the placement plan says, with the profile's wake policy
//! (`runtime.spin_before_park`: poll before parking, or park at once), and one
//! thread for the gossip shard on its own core. It owns boot (every shard
//! places itself, reads its placement back and reports) and shutdown (one stop
//! signal, every thread joined). It does not decide placement (`caxton-numa`
//! does) and holds no data-plane state yet.

mod node;
mod stop;

pub use node::{Node, NodeError, ShardReport, ShardRole};
pub use stop::StopSignal;
