//! The placement plan: a pure function of (topology, profile) that says where
//! every shard runs and where its memory lives.
//!
//! Rules, in order:
//! 1. The gossip shard takes one whole core of its own: the last core of the
//!    last NUMA node that no pinned agent names. Data shards share it only on
//!    a one-core machine.
//! 2. Data shards: `runtime.worker_threads`, else one per core left.
//! 3. Slots are filled whole cores first, SMT siblings second, and only then
//!    do shards share PUs (the plan says so). `numa_aware` deals the shards
//!    round-robin over NUMA nodes and keeps each node's shards contiguous;
//!    `compact` fills node 0 first.
//! 4. Every core a pinned agent names must hold a data shard; the agent's
//!    instances live on those shards.
//! 5. Memory: `local_alloc` and `bind` keep a shard's memory on its own node;
//!    `interleave` spreads it over all nodes. The gossip shard interleaves when
//!    `numa.interleave_memory` is on.

use std::collections::BTreeSet;
use std::fmt;

use caxton_profiles::{MemoryPolicy, PinnedAgent, PlacementStrategy, Profile, Violation};

use crate::topology::{format_index_list, Core, MachineTopology};

/// Which CPUs a shard's thread may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuBinding {
    /// Exactly one PU (OS index): `cpu_affinity.enabled`.
    Pu(usize),
    /// The PUs of the shard's NUMA node: `cpu_affinity` off, `numa.cpu_bind` on.
    Pus(Vec<usize>),
    /// Anywhere the operating system likes.
    Unbound,
}

impl CpuBinding {
    /// The PUs this binding allows, given every PU of the machine.
    pub fn allowed_pus(&self, all_pus: &[usize]) -> Vec<usize> {
        match self {
            Self::Pu(pu) => vec![*pu],
            Self::Pus(pus) => pus.clone(),
            Self::Unbound => all_pus.to_vec(),
        }
    }
}

/// Where a shard's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryPlacement {
    /// Leave the operating system's policy alone (`numa.enabled: false`).
    SystemDefault,
    /// Allocate on the node of the touching CPU (MPOL_LOCAL).
    LocalAlloc {
        /// The node the shard runs on.
        node: usize,
    },
    /// Allocate only on these nodes.
    Bind {
        /// OS indices of the nodes.
        nodes: Vec<usize>,
    },
    /// Spread pages round-robin over these nodes.
    Interleave {
        /// OS indices of the nodes.
        nodes: Vec<usize>,
    },
}

/// Where one shard runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlacement {
    /// The PU the shard was planned on (OS index); with `Pu` binding it is the binding.
    pub home_pu: usize,
    /// The core holding `home_pu` (logical index).
    pub core: usize,
    /// The NUMA node of `home_pu` (OS index).
    pub numa_node: usize,
    /// Which CPUs its thread may use.
    pub cpu_binding: CpuBinding,
    /// Its memory policy.
    pub memory: MemoryPlacement,
}

/// The shards that host a pinned agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPinning {
    /// The agent's name.
    pub agent_name: String,
    /// The PUs the profile named.
    pub pus: Vec<usize>,
    /// Indices into [`PlacementPlan::data_shards`] of the shards on those PUs.
    pub data_shards: Vec<usize>,
}

/// The whole plan for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementPlan {
    /// The data shards, in shard-id order.
    pub data_shards: Vec<ShardPlacement>,
    /// The gossip shard.
    pub gossip_shard: ShardPlacement,
    /// Pinned agents and their shards.
    pub pinned_agents: Vec<AgentPinning>,
    /// Two or more shards were planned on the same PU.
    pub shares_pus: bool,
    /// Things the operator should know (shared cores, SMT siblings in use).
    pub notes: Vec<String>,
}

/// Plan `profile` on `topology`. Errors name the profile key at fault.
pub fn plan(topology: &MachineTopology, profile: &Profile) -> Result<PlacementPlan, Violation> {
    let all_pus = topology.all_pus();
    if topology.cores.is_empty() {
        return Err(violation(
            "runtime.worker_threads",
            "the topology has no cores".into(),
            None,
        ));
    }
    let all_pinned = profile.pinned_agents();
    let pinned_pus = pinned_pus(topology, profile, &all_pinned, &all_pus)?;

    // 1. The gossip shard's core.
    let gossip_core = gossip_core(topology, &pinned_pus);
    let reserve_gossip_core = topology.cores.len() > 1;

    // 2. How many data shards.
    let shard_count = shard_count(topology, profile, reserve_gossip_core, &pinned_pus)?;

    // 3. Which PU each data shard runs on.
    let node_ids = node_ids(topology);
    let excluded_core = reserve_gossip_core.then_some(gossip_core.index);
    let mut chosen: Vec<usize> = pinned_pus.iter().copied().collect();
    deal_free_slots(
        &free_slots(topology, &node_ids, excluded_core),
        profile.runtime.cpu_affinity.strategy,
        shard_count,
        &mut chosen,
    );
    let distinct_slots = chosen.len();
    share_pus(gossip_core, shard_count, &mut chosen);
    sort_in_hardware_order(topology, &mut chosen);

    // 4 and 5: bindings and memory.
    let placer = Placer {
        topology,
        profile,
        node_ids: &node_ids,
        all_pus: &all_pus,
    };
    let data_shards: Vec<ShardPlacement> = chosen
        .iter()
        .map(|&pu| placer.place(pu, placer.data_memory(pu)))
        .collect();
    let gossip_pu = gossip_core.pus[0];
    let gossip_shard = placer.place(gossip_pu, placer.gossip_memory(gossip_core));

    let pinned_agents = pinnings(&all_pinned, &data_shards);
    let (shares_pus, mut notes) = notes(topology, &data_shards, gossip_pu, distinct_slots);
    if shares_pus && profile.runtime.spin_before_park.is_some() {
        // A shard that shares its PU polls yielding it (see caxton-shards).
        notes.push(
            "runtime.spin_before_park: shards that share a PU yield it at every poll; only a shard alone on its PU holds it"
                .to_owned(),
        );
    }
    Ok(PlacementPlan {
        data_shards,
        gossip_shard,
        pinned_agents,
        shares_pus,
        notes,
    })
}

/// Every PU a pinned agent names; each must exist.
fn pinned_pus(
    topology: &MachineTopology,
    profile: &Profile,
    all_pinned: &[PinnedAgent],
    all_pus: &[usize],
) -> Result<BTreeSet<usize>, Violation> {
    let mut pinned_pus = BTreeSet::new();
    for (agent_index, pinned) in all_pinned.iter().enumerate() {
        for (core_index, &cpu) in pinned.pus.iter().enumerate() {
            let cpu = cpu as usize;
            if !all_pus.contains(&cpu) {
                return Err(violation(
                    &format!(
                        "{}.cpu_cores[{core_index}]",
                        pinned_key(profile, agent_index)
                    ),
                    format!(
                        "CPU {cpu} (for agent `{}`) does not exist on {}",
                        pinned.agent_name, topology.origin
                    ),
                    Some(format!(
                        "this machine's CPUs are {}",
                        format_index_list(all_pus)
                    )),
                ));
            }
            pinned_pus.insert(cpu);
        }
    }
    Ok(pinned_pus)
}

/// Rule 1: the last core that no pinned agent names (the last core when they name them all).
fn gossip_core<'t>(topology: &'t MachineTopology, pinned_pus: &BTreeSet<usize>) -> &'t Core {
    topology
        .cores
        .iter()
        .rev()
        .find(|core| !core.pus.iter().any(|pu| pinned_pus.contains(pu)))
        .unwrap_or_else(|| &topology.cores[topology.cores.len() - 1])
}

/// Rule 2: `runtime.worker_threads`, else one per core left; enough to cover every pinned PU.
fn shard_count(
    topology: &MachineTopology,
    profile: &Profile,
    reserve_gossip_core: bool,
    pinned_pus: &BTreeSet<usize>,
) -> Result<usize, Violation> {
    let data_cores = if reserve_gossip_core {
        topology.cores.len() - 1
    } else {
        1
    };
    let shard_count = profile
        .runtime
        .worker_threads
        .map_or(data_cores, |workers| workers as usize);
    if shard_count < pinned_pus.len() {
        return Err(violation(
            "runtime.worker_threads",
            format!(
                "{shard_count} data shard(s) cannot cover the {} CPUs that pinned agents name",
                pinned_pus.len()
            ),
            Some("raise runtime.worker_threads or pin agents to fewer CPUs".into()),
        ));
    }
    Ok(shard_count)
}

/// OS indices of the NUMA nodes; a machine hwloc shows none on is node 0.
fn node_ids(topology: &MachineTopology) -> Vec<usize> {
    match topology.numa_nodes.is_empty() {
        true => vec![0],
        false => topology
            .numa_nodes
            .iter()
            .map(|node| node.os_index)
            .collect(),
    }
}

/// The free slots, `tiers[t][n]`: the PUs of SMT level `t` on node `n`, in
/// core order, leaving out the gossip shard's core when it is reserved.
fn free_slots(
    topology: &MachineTopology,
    node_ids: &[usize],
    excluded_core: Option<usize>,
) -> Vec<Vec<Vec<usize>>> {
    let max_threads = topology
        .cores
        .iter()
        .map(|core| core.pus.len())
        .max()
        .unwrap_or(1);
    (0..max_threads)
        .map(|thread| {
            node_ids
                .iter()
                .map(|&node| {
                    topology
                        .cores
                        .iter()
                        .filter(|core| Some(core.index) != excluded_core)
                        .filter(|core| core.numa_node == node)
                        .filter_map(|core| core.pus.get(thread).copied())
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Rule 3: add free slots to `chosen` until it holds `shard_count` PUs or
/// the slots run out, whole cores (tier 0) before SMT siblings.
fn deal_free_slots(
    tiers: &[Vec<Vec<usize>>],
    strategy: PlacementStrategy,
    shard_count: usize,
    chosen: &mut Vec<usize>,
) {
    // numa_aware deals one slot per node per round; compact drains a node first.
    let take = match strategy {
        PlacementStrategy::NumaAware => 1,
        PlacementStrategy::Compact => usize::MAX,
    };
    'tiers: for tier in tiers {
        let mut cursors = vec![0usize; tier.len()];
        loop {
            let mut took_any = false;
            for (slots, cursor) in tier.iter().zip(cursors.iter_mut()) {
                if chosen.len() >= shard_count {
                    break 'tiers;
                }
                let mut taken = 0;
                while taken < take && *cursor < slots.len() && chosen.len() < shard_count {
                    let pu = slots[*cursor];
                    *cursor += 1;
                    if !chosen.contains(&pu) {
                        chosen.push(pu);
                        taken += 1;
                        took_any = true;
                    }
                }
            }
            if !took_any {
                break;
            }
        }
    }
}

/// Past every free PU, shards share: the gossip core's PUs first (the
/// gossip shard is mostly idle), then the data PUs in turn, so that the
/// load spreads over the whole machine.
fn share_pus(gossip_core: &Core, shard_count: usize, chosen: &mut Vec<usize>) {
    let mut shared_pool: Vec<usize> = gossip_core
        .pus
        .iter()
        .copied()
        .filter(|pu| !chosen.contains(pu))
        .collect();
    shared_pool.extend(chosen.iter().copied());
    let mut next_shared = 0;
    while chosen.len() < shard_count {
        chosen.push(shared_pool[next_shared % shared_pool.len()]);
        next_shared += 1;
    }
}

/// Keep each node's shards contiguous and in hardware order.
fn sort_in_hardware_order(topology: &MachineTopology, chosen: &mut [usize]) {
    let position = |pu: usize| {
        topology
            .core_of_pu(pu)
            .map_or((usize::MAX, pu), |core| (core.numa_node, core.index))
    };
    chosen.sort_by_key(|&pu| (position(pu).0, position(pu).1, pu));
}

/// Rules 4 and 5: how a shard on a given PU is bound, and where its memory comes from.
struct Placer<'a> {
    topology: &'a MachineTopology,
    profile: &'a Profile,
    node_ids: &'a [usize],
    all_pus: &'a [usize],
}

impl Placer<'_> {
    /// The shard on `pu`, with `memory`.
    fn place(&self, pu: usize, memory: MemoryPlacement) -> ShardPlacement {
        let runtime = &self.profile.runtime;
        let (core, numa_node) = self
            .topology
            .core_of_pu(pu)
            .map_or((0, 0), |core| (core.index, core.numa_node));
        let cpu_binding = if runtime.cpu_affinity.enabled {
            CpuBinding::Pu(pu)
        } else if runtime.numa.enabled && runtime.numa.cpu_bind {
            CpuBinding::Pus(self.node_pus(numa_node))
        } else {
            CpuBinding::Unbound
        };
        ShardPlacement {
            home_pu: pu,
            core,
            numa_node,
            cpu_binding,
            memory,
        }
    }

    /// The PUs of NUMA node `node` (every PU when hwloc shows no such node).
    fn node_pus(&self, node: usize) -> Vec<usize> {
        self.topology
            .numa_nodes
            .iter()
            .find(|candidate| candidate.os_index == node)
            .map_or_else(|| self.all_pus.to_vec(), |found| found.pus.clone())
    }

    /// The memory of a data shard on `pu`: `runtime.numa.memory_policy`.
    fn data_memory(&self, pu: usize) -> MemoryPlacement {
        let numa = &self.profile.runtime.numa;
        let node = self
            .topology
            .core_of_pu(pu)
            .map_or(0, |core| core.numa_node);
        match (numa.enabled, numa.memory_policy) {
            (false, _) => MemoryPlacement::SystemDefault,
            (true, MemoryPolicy::LocalAlloc) => MemoryPlacement::LocalAlloc { node },
            (true, MemoryPolicy::Bind) => MemoryPlacement::Bind { nodes: vec![node] },
            (true, MemoryPolicy::Interleave) => MemoryPlacement::Interleave {
                nodes: self.node_ids.to_vec(),
            },
        }
    }

    /// The gossip shard's memory: `runtime.numa.interleave_memory`, else its own node.
    fn gossip_memory(&self, gossip_core: &Core) -> MemoryPlacement {
        let numa = &self.profile.runtime.numa;
        match (numa.enabled, numa.interleave_memory) {
            (false, _) => MemoryPlacement::SystemDefault,
            (true, true) => MemoryPlacement::Interleave {
                nodes: self.node_ids.to_vec(),
            },
            (true, false) => MemoryPlacement::LocalAlloc {
                node: gossip_core.numa_node,
            },
        }
    }
}

/// Each pinned agent with the data shards on its PUs.
fn pinnings(all_pinned: &[PinnedAgent], data_shards: &[ShardPlacement]) -> Vec<AgentPinning> {
    all_pinned
        .iter()
        .map(|pinned| {
            let pus: Vec<usize> = pinned.pus.iter().map(|&cpu| cpu as usize).collect();
            let data_shards = (0..data_shards.len())
                .filter(|&shard| pus.contains(&data_shards[shard].home_pu))
                .collect();
            AgentPinning {
                agent_name: pinned.agent_name.clone(),
                pus,
                data_shards,
            }
        })
        .collect()
}

/// Whether two or more shards share a PU, and the notes for the operator:
/// shared CPUs, and data shards on SMT siblings of others.
fn notes(
    topology: &MachineTopology,
    data_shards: &[ShardPlacement],
    gossip_pu: usize,
    distinct_slots: usize,
) -> (bool, Vec<String>) {
    let mut notes = Vec::new();
    let mut planned_pus: Vec<usize> = data_shards.iter().map(|shard| shard.home_pu).collect();
    planned_pus.push(gossip_pu);
    planned_pus.sort_unstable();
    let shares_pus = planned_pus.windows(2).any(|pair| pair[0] == pair[1]);
    if shares_pus {
        notes.push(format!(
            "{} data shard(s) and the gossip shard on {} core(s) / {} PU(s): shards share CPUs, so expect higher latency than with one core per shard",
            data_shards.len(),
            topology.cores.len(),
            topology.pu_count()
        ));
    }
    let whole_cores: BTreeSet<usize> = data_shards.iter().map(|shard| shard.core).collect();
    if whole_cores.len() < distinct_slots {
        notes.push(format!(
            "{} data shard(s) run on SMT siblings of other shards",
            distinct_slots - whole_cores.len()
        ));
    }
    (shares_pus, notes)
}

/// The profile key of entry `index` of [`Profile::pinned_agents`]: an entry of
/// `runtime.cpu_affinity.pinned_agents`, or an `agents.deploy` entry with `cpu_cores`.
fn pinned_key(profile: &Profile, index: usize) -> String {
    let explicit = profile.runtime.cpu_affinity.pinned_agents.len();
    if index < explicit {
        return format!("runtime.cpu_affinity.pinned_agents[{index}]");
    }
    let deploy_index = profile
        .agents
        .deploy
        .iter()
        .enumerate()
        .filter(|(_, deployment)| deployment.pus.is_some())
        .nth(index - explicit)
        .map_or(0, |(deploy_index, _)| deploy_index);
    format!("agents.deploy[{deploy_index}]")
}

fn violation(key: &str, message: String, hint: Option<String>) -> Violation {
    Violation {
        key: key.to_owned(),
        message,
        hint,
    }
}

impl fmt::Display for CpuBinding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pu(pu) => write!(formatter, "cpu {pu}"),
            Self::Pus(pus) => write!(formatter, "cpus {}", format_index_list(pus)),
            Self::Unbound => formatter.write_str("unbound"),
        }
    }
}

impl fmt::Display for MemoryPlacement {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemDefault => formatter.write_str("system default"),
            Self::LocalAlloc { node } => write!(formatter, "local_alloc (node {node})"),
            Self::Bind { nodes } => write!(formatter, "bind nodes {}", format_index_list(nodes)),
            Self::Interleave { nodes } => {
                write!(formatter, "interleave nodes {}", format_index_list(nodes))
            }
        }
    }
}

impl fmt::Display for PlacementPlan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "placement plan: {} data shard(s) + gossip shard",
            self.data_shards.len()
        )?;
        writeln!(
            formatter,
            "  {:<10} {:>5} {:>5} {:>5}  {:<16} memory",
            "shard", "pu", "core", "node", "binding"
        )?;
        let row = |formatter: &mut fmt::Formatter<'_>, name: &str, shard: &ShardPlacement| {
            writeln!(
                formatter,
                "  {:<10} {:>5} {:>5} {:>5}  {:<16} {}",
                name,
                shard.home_pu,
                shard.core,
                shard.numa_node,
                shard.cpu_binding.to_string(),
                shard.memory
            )
        };
        for (index, shard) in self.data_shards.iter().enumerate() {
            row(formatter, &format!("data-{index}"), shard)?;
        }
        row(formatter, "gossip", &self.gossip_shard)?;
        for pinning in &self.pinned_agents {
            let shards: Vec<String> = pinning
                .data_shards
                .iter()
                .map(|shard| format!("data-{shard}"))
                .collect();
            writeln!(
                formatter,
                "  agent {} pinned to cpus {} -> {}",
                pinning.agent_name,
                format_index_list(&pinning.pus),
                shards.join(", ")
            )?;
        }
        for note in &self.notes {
            writeln!(formatter, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_with(edit: impl FnOnce(&mut Profile)) -> Profile {
        let mut profile = Profile::default();
        edit(&mut profile);
        profile
    }

    fn pus(plan: &PlacementPlan) -> Vec<usize> {
        plan.data_shards.iter().map(|shard| shard.home_pu).collect()
    }

    fn nodes(plan: &PlacementPlan) -> Vec<usize> {
        plan.data_shards
            .iter()
            .map(|shard| shard.numa_node)
            .collect()
    }

    #[test]
    fn one_numa_node_gives_every_core_but_one_a_shard() {
        let topology =
            MachineTopology::synthetic("package:1 numa:1 core:4 pu:1").expect("synthetic");
        let plan = plan(&topology, &Profile::default()).expect("plans");
        assert_eq!(pus(&plan), [0, 1, 2]);
        assert_eq!(plan.gossip_shard.home_pu, 3);
        assert_eq!(plan.gossip_shard.cpu_binding, CpuBinding::Pu(3));
        assert!(plan
            .data_shards
            .iter()
            .all(|shard| shard.memory == MemoryPlacement::LocalAlloc { node: 0 }));
        assert!(!plan.shares_pus);
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn two_numa_nodes_with_smt_balance_and_avoid_siblings() {
        // Node 0: cores 0-3 (PUs 0-7); node 1: cores 4-7 (PUs 8-15); PU pairs are SMT siblings.
        let topology =
            MachineTopology::synthetic("package:2 numa:1 core:4 pu:2").expect("synthetic");
        assert_eq!(topology.numa_nodes.len(), 2);
        let six = profile_with(|profile| {
            profile.runtime.worker_threads = Some(6);
            profile.runtime.numa.memory_policy = MemoryPolicy::Bind;
        });
        let plan = plan(&topology, &six).expect("plans");
        assert_eq!(
            pus(&plan),
            [0, 2, 4, 8, 10, 12],
            "whole cores only, three per node"
        );
        assert_eq!(nodes(&plan), [0, 0, 0, 1, 1, 1]);
        assert_eq!(
            plan.data_shards[4].memory,
            MemoryPlacement::Bind { nodes: vec![1] },
            "memory stays on the shard's node"
        );
        assert_eq!(plan.gossip_shard.core, 7);

        let compact = profile_with(|profile| {
            profile.runtime.worker_threads = Some(6);
            profile.runtime.cpu_affinity.strategy = PlacementStrategy::Compact;
        });
        let compact_plan = super::plan(&topology, &compact).expect("plans");
        assert_eq!(
            pus(&compact_plan),
            [0, 2, 4, 6, 8, 10],
            "compact fills node 0 first"
        );

        let ten = profile_with(|profile| profile.runtime.worker_threads = Some(10));
        let smt_plan = super::plan(&topology, &ten).expect("plans");
        let whole: BTreeSet<usize> = smt_plan
            .data_shards
            .iter()
            .map(|shard| shard.core)
            .collect();
        assert_eq!(
            whole.len(),
            7,
            "all seven free whole cores are used before any sibling"
        );
        assert!(
            !smt_plan.data_shards.iter().any(|shard| shard.core == 7),
            "the gossip core stays free"
        );
        assert!(!smt_plan.shares_pus);
        assert!(
            smt_plan.notes.iter().any(|note| note.contains("SMT")),
            "{:?}",
            smt_plan.notes
        );
    }

    #[test]
    fn four_numa_nodes_over_two_packages_spread_evenly() {
        let topology =
            MachineTopology::synthetic("package:2 numa:2 core:4 pu:2").expect("synthetic");
        assert_eq!(
            (
                topology.packages,
                topology.numa_nodes.len(),
                topology.cores.len()
            ),
            (2, 4, 16)
        );
        let plan = plan(&topology, &Profile::default()).expect("plans");
        assert_eq!(plan.data_shards.len(), 15);
        let per_node: Vec<usize> = (0..4)
            .map(|node| {
                nodes(&plan)
                    .iter()
                    .filter(|&&shard_node| shard_node == node)
                    .count()
            })
            .collect();
        assert_eq!(
            per_node,
            [4, 4, 4, 3],
            "the gossip shard takes a core of the last node"
        );
        assert!(
            nodes(&plan).windows(2).all(|pair| pair[0] <= pair[1]),
            "each node's shards are contiguous"
        );
    }

    #[test]
    fn more_shards_than_cores_share_and_say_so() {
        let topology =
            MachineTopology::synthetic("package:1 numa:1 core:2 pu:1").expect("synthetic");
        let profile = profile_with(|profile| profile.runtime.worker_threads = Some(5));
        let plan = plan(&topology, &profile).expect("plans");
        assert_eq!(
            pus(&plan),
            [0, 0, 0, 1, 1],
            "cycles over the whole machine, sorted by core"
        );
        assert!(plan.shares_pus);
        assert!(plan.notes[0].contains("share"), "{:?}", plan.notes);

        let single = MachineTopology::synthetic("package:1 numa:1 core:1 pu:1").expect("synthetic");
        let single_plan = super::plan(&single, &Profile::default()).expect("plans");
        assert_eq!(single_plan.data_shards.len(), 1);
        assert!(single_plan.shares_pus, "one core holds both shards");
    }

    #[test]
    fn pinned_agents_get_shards_on_their_cores() {
        let topology =
            MachineTopology::synthetic("package:1 numa:1 core:4 pu:1").expect("synthetic");
        let profile = profile_with(|profile| {
            profile.runtime.cpu_affinity.pinned_agents = vec![
                PinnedAgent {
                    agent_name: "router".into(),
                    pus: vec![0, 1],
                },
                PinnedAgent {
                    agent_name: "coordinator".into(),
                    pus: vec![3],
                },
            ];
        });
        let plan = plan(&topology, &profile).expect("plans");
        assert_eq!(
            plan.gossip_shard.home_pu, 2,
            "the gossip shard moves off the pinned core 3"
        );
        assert_eq!(pus(&plan), [0, 1, 3]);
        assert_eq!(plan.pinned_agents[0].data_shards, [0, 1]);
        assert_eq!(plan.pinned_agents[1].data_shards, [2]);
    }

    #[test]
    fn impossible_pins_name_the_key() {
        let topology =
            MachineTopology::synthetic("package:1 numa:1 core:2 pu:1").expect("synthetic");
        let missing = profile_with(|profile| {
            profile.runtime.cpu_affinity.pinned_agents = vec![PinnedAgent {
                agent_name: "router".into(),
                pus: vec![0, 7],
            }];
        });
        let error = plan(&topology, &missing).expect_err("CPU 7 does not exist");
        assert_eq!(
            error.key,
            "runtime.cpu_affinity.pinned_agents[0].cpu_cores[1]"
        );
        assert!(error.message.contains("CPU 7"), "{}", error.message);
        assert_eq!(error.hint.as_deref(), Some("this machine's CPUs are 0-1"));

        let too_few = profile_with(|profile| {
            profile.runtime.worker_threads = Some(1);
            profile.runtime.cpu_affinity.pinned_agents = vec![PinnedAgent {
                agent_name: "router".into(),
                pus: vec![0, 1],
            }];
        });
        assert_eq!(
            plan(&topology, &too_few)
                .expect_err("one shard, two pinned CPUs")
                .key,
            "runtime.worker_threads"
        );
    }

    #[test]
    fn affinity_and_numa_switches_change_bindings() {
        let topology =
            MachineTopology::synthetic("package:2 numa:1 core:2 pu:1").expect("synthetic");
        let node_bound = profile_with(|profile| profile.runtime.cpu_affinity.enabled = false);
        let plan = plan(&topology, &node_bound).expect("plans");
        assert_eq!(plan.data_shards[0].cpu_binding, CpuBinding::Pus(vec![0, 1]));
        assert_eq!(plan.data_shards[2].cpu_binding, CpuBinding::Pus(vec![2, 3]));
        let memory = plan.data_shards[0].memory.clone();

        // numa.cpu_bind off: the shard's memory stays on its node, its
        // thread may run anywhere.
        let memory_only = profile_with(|profile| {
            profile.runtime.cpu_affinity.enabled = false;
            profile.runtime.numa.cpu_bind = false;
        });
        let memory_only_plan = super::plan(&topology, &memory_only).expect("plans");
        assert!(memory_only_plan
            .data_shards
            .iter()
            .all(|shard| shard.cpu_binding == CpuBinding::Unbound));
        assert_eq!(memory_only_plan.data_shards[0].memory, memory);
        assert_ne!(memory, MemoryPlacement::SystemDefault);

        let floating = profile_with(|profile| {
            profile.runtime.cpu_affinity.enabled = false;
            profile.runtime.numa.enabled = false;
        });
        let floating_plan = super::plan(&topology, &floating).expect("plans");
        assert!(floating_plan
            .data_shards
            .iter()
            .all(|shard| shard.cpu_binding == CpuBinding::Unbound));
        assert!(floating_plan
            .data_shards
            .iter()
            .all(|shard| shard.memory == MemoryPlacement::SystemDefault));

        let interleaved = profile_with(|profile| {
            profile.runtime.numa.interleave_memory = true;
            profile.runtime.numa.memory_policy = MemoryPolicy::Interleave;
        });
        let interleaved_plan = super::plan(&topology, &interleaved).expect("plans");
        assert_eq!(
            interleaved_plan.gossip_shard.memory,
            MemoryPlacement::Interleave { nodes: vec![0, 1] }
        );
        assert_eq!(
            interleaved_plan.data_shards[0].memory,
            MemoryPlacement::Interleave { nodes: vec![0, 1] }
        );
    }
}
