//! Topology and placement for Caxton.
//!
//! This crate owns three things: reading the machine (packages, NUMA nodes,
//! L3 groups, cores, PUs) through hwloc into plain data ([`MachineTopology`]);
//! the placement plan, a pure function of topology and profile that puts
//! every data shard, the gossip shard and every pinned agent on a core with a
//! memory policy ([`plan`]); and applying one shard's placement to the thread
//! that runs it ([`binding`]). It does not start threads: the `shards` crate does.
//!
//! ```
//! let topology = caxton_numa::MachineTopology::synthetic("package:2 numa:1 core:4 pu:2").unwrap();
//! let profile = caxton_profiles::Profile::default();
//! let plan = caxton_numa::plan(&topology, &profile).unwrap();
//! assert_eq!(plan.data_shards.len(), 7, "one core is the gossip shard's");
//! ```

pub mod binding;
mod plan;
mod topology;

pub use plan::{plan, AgentPinning, CpuBinding, MemoryPlacement, PlacementPlan, ShardPlacement};
pub use topology::{format_index_list, Core, MachineTopology, NumaNode, TopologyError};
