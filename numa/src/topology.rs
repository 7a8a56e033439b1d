//! The machine as the planner sees it: packages, NUMA nodes, L3 groups, cores
//! and their hardware threads (PUs), read from hwloc once and kept as plain data.

use std::fmt;

use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::Topology;

/// Why a topology could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// hwloc could not read this machine.
    #[error("cannot read this machine's topology with hwloc: {0}")]
    Discover(String),
    /// The `--synthetic` description is not one hwloc accepts.
    #[error("invalid synthetic topology `{description}`: {reason} (write it like \"package:2 numa:1 l3:1 core:8 pu:2\")")]
    Synthetic {
        /// What the user wrote.
        description: String,
        /// hwloc's complaint.
        reason: String,
    },
}

/// One physical core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Core {
    /// Logical index of the core across the machine (0-based, hardware order).
    pub index: usize,
    /// Logical index of its package.
    pub package: usize,
    /// OS index of the NUMA node its memory is local to.
    pub numa_node: usize,
    /// Logical index of the L3 cache it shares, if hwloc reports one.
    pub l3_group: Option<usize>,
    /// OS indices of its hardware threads (PUs), first one first.
    pub pus: Vec<usize>,
}

/// One NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// OS index (as in `/sys/devices/system/node/nodeN`).
    pub os_index: usize,
    /// OS indices of the PUs local to it.
    pub pus: Vec<usize>,
    /// Memory attached to it, in bytes (0 when unknown, as on synthetic topologies).
    pub memory_bytes: u64,
}

/// A machine's topology as plain data. Build it with [`MachineTopology::discover`],
/// [`MachineTopology::synthetic`], or by hand in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineTopology {
    /// Where it came from: `this machine` or `synthetic "..."`.
    pub origin: String,
    /// Number of packages (sockets).
    pub packages: usize,
    /// Number of L3 groups.
    pub l3_groups: usize,
    /// NUMA nodes in OS-index order.
    pub numa_nodes: Vec<NumaNode>,
    /// Cores in logical order.
    pub cores: Vec<Core>,
}

impl MachineTopology {
    /// Read the machine this process runs on.
    pub fn discover() -> Result<Self, TopologyError> {
        let topology =
            Topology::new().map_err(|error| TopologyError::Discover(error.to_string()))?;
        Ok(Self::from_hwloc(&topology, "this machine".to_owned()))
    }

    /// Build an hwloc synthetic topology, e.g. `package:2 numa:2 core:8 pu:2`.
    /// Note hwloc's rule: with `numa:N` above 1, each level below counts per NUMA node.
    pub fn synthetic(description: &str) -> Result<Self, TopologyError> {
        let invalid = |reason: String| TopologyError::Synthetic {
            description: description.to_owned(),
            reason,
        };
        let topology = Topology::builder()
            .from_synthetic(description)
            .map_err(|error| invalid(error.to_string()))?
            .build()
            .map_err(|error| invalid(error.to_string()))?;
        Ok(Self::from_hwloc(
            &topology,
            format!("synthetic \"{description}\""),
        ))
    }

    fn from_hwloc(topology: &Topology, origin: String) -> Self {
        let numa_nodes: Vec<NumaNode> = topology
            .objects_with_type(ObjectType::NUMANode)
            .map(|node| NumaNode {
                os_index: node.os_index().unwrap_or(node.logical_index()),
                pus: pu_indices(node),
                memory_bytes: node.total_memory(),
            })
            .collect();
        let node_of_pu = |pu: usize| {
            numa_nodes
                .iter()
                .find(|node| node.pus.contains(&pu))
                .map_or(0, |node| node.os_index)
        };
        // Some virtual machines report PUs without cores; then each PU stands for a core.
        let core_type = if topology.objects_with_type(ObjectType::Core).len() > 0 {
            ObjectType::Core
        } else {
            ObjectType::PU
        };
        let cores = topology
            .objects_with_type(core_type)
            .enumerate()
            .map(|(index, core)| {
                let pus = pu_indices(core);
                Core {
                    index,
                    package: core
                        .first_ancestor_with_type(ObjectType::Package)
                        .map_or(0, |package| package.logical_index()),
                    numa_node: pus.first().map_or(0, |&pu| node_of_pu(pu)),
                    l3_group: core
                        .first_ancestor_with_type(ObjectType::L3Cache)
                        .map(|l3| l3.logical_index()),
                    pus,
                }
            })
            .collect();
        Self {
            origin,
            packages: topology.objects_with_type(ObjectType::Package).len().max(1),
            l3_groups: topology.objects_with_type(ObjectType::L3Cache).len(),
            numa_nodes,
            cores,
        }
    }

    /// Every PU's OS index, ascending.
    pub fn all_pus(&self) -> Vec<usize> {
        let mut pus: Vec<usize> = self
            .cores
            .iter()
            .flat_map(|core| core.pus.iter().copied())
            .collect();
        pus.sort_unstable();
        pus
    }

    /// The core that holds PU `pu`.
    pub fn core_of_pu(&self, pu: usize) -> Option<&Core> {
        self.cores.iter().find(|core| core.pus.contains(&pu))
    }

    /// Number of PUs (hardware threads).
    pub fn pu_count(&self) -> usize {
        self.cores.iter().map(|core| core.pus.len()).sum()
    }

    /// Part `index` of this machine cut into `parts` runs of whole cores
    /// (in core order, the first parts one core larger when they do not
    /// divide evenly), as a machine of its own: for processes, or
    /// in-process nodes, that must not plan shards on each other's cores.
    /// `None` when there are fewer cores than parts.
    pub fn part(&self, index: usize, parts: usize) -> Option<Self> {
        if parts == 0 || index >= parts || self.cores.len() < parts {
            return None;
        }
        let (size, larger) = (self.cores.len() / parts, self.cores.len() % parts);
        let start = index * size + index.min(larger);
        let end = start + size + usize::from(index < larger);
        let cores: Vec<Core> = self.cores[start..end].to_vec();
        let pus: Vec<usize> = cores.iter().flat_map(|core| core.pus.clone()).collect();
        let numa_nodes = self
            .numa_nodes
            .iter()
            .filter_map(|node| {
                let mine: Vec<usize> = node
                    .pus
                    .iter()
                    .copied()
                    .filter(|pu| pus.contains(pu))
                    .collect();
                (!mine.is_empty()).then_some(NumaNode {
                    os_index: node.os_index,
                    pus: mine,
                    memory_bytes: node.memory_bytes,
                })
            })
            .collect();
        Some(Self {
            origin: format!(
                "{}, cores {start}-{} of {}",
                self.origin,
                end - 1,
                self.cores.len()
            ),
            numa_nodes,
            cores,
            ..self.clone()
        })
    }
}

/// OS indices of the PUs of `object`.
fn pu_indices(object: &TopologyObject) -> Vec<usize> {
    object
        .cpuset()
        .map(|set| set.iter_set().map(usize::from).collect())
        .unwrap_or_default()
}

/// `0-3,8,10-11` for a sorted list of indices.
pub fn format_index_list(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut iter = indices.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

impl fmt::Display for MachineTopology {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "topology ({}): {} package(s), {} NUMA node(s), {} L3 group(s), {} core(s), {} PU(s)",
            self.origin,
            self.packages,
            self.numa_nodes.len(),
            self.l3_groups,
            self.cores.len(),
            self.pu_count()
        )?;
        for package in 0..self.packages {
            let cores: Vec<&Core> = self
                .cores
                .iter()
                .filter(|core| core.package == package)
                .collect();
            let mut nodes: Vec<usize> = cores.iter().map(|core| core.numa_node).collect();
            nodes.dedup();
            let mut l3_groups: Vec<usize> = cores.iter().filter_map(|core| core.l3_group).collect();
            l3_groups.dedup();
            let core_indices: Vec<usize> = cores.iter().map(|core| core.index).collect();
            write!(
                formatter,
                "  package {package}: NUMA nodes {}, cores {}",
                format_index_list(&nodes),
                format_index_list(&core_indices)
            )?;
            if !l3_groups.is_empty() {
                write!(formatter, ", L3 groups {}", format_index_list(&l3_groups))?;
            }
            writeln!(formatter)?;
        }
        for node in &self.numa_nodes {
            let cores: Vec<usize> = self
                .cores
                .iter()
                .filter(|core| core.numa_node == node.os_index)
                .map(|core| core.index)
                .collect();
            write!(
                formatter,
                "  NUMA node {}: cores {} PUs {}",
                node.os_index,
                format_index_list(&cores),
                format_index_list(&node.pus)
            )?;
            if node.memory_bytes > 0 {
                write!(formatter, ", {} MiB", node.memory_bytes >> 20)?;
            }
            writeln!(formatter)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_cut_in_parts_gives_each_its_own_cores() {
        let machine =
            MachineTopology::synthetic("package:1 numa:2 core:3 pu:2").expect("synthetic machine");
        assert_eq!(machine.cores.len(), 6);
        let first = machine.part(0, 2).expect("two parts of six cores");
        let second = machine.part(1, 2).expect("two parts of six cores");
        assert_eq!(first.cores.len(), 3);
        assert_eq!(second.cores.len(), 3);
        let (mine, theirs) = (first.all_pus(), second.all_pus());
        assert!(
            mine.iter().all(|pu| !theirs.contains(pu)),
            "{mine:?} {theirs:?}"
        );
        assert_eq!(mine.len() + theirs.len(), machine.pu_count());
        // Three cores per NUMA node: each part is one node, with its memory.
        assert_eq!(first.numa_nodes.len(), 1);
        assert_eq!(first.numa_nodes[0].pus, mine);
        assert_ne!(first.numa_nodes[0].os_index, second.numa_nodes[0].os_index);
        // Uneven: the first part takes the extra core.
        let sizes: Vec<usize> = (0..4)
            .map(|index| machine.part(index, 4).expect("four parts").cores.len())
            .collect();
        assert_eq!(sizes, [2, 2, 1, 1]);
        assert!(machine.part(0, 7).is_none(), "more parts than cores");
        assert!(machine.part(2, 2).is_none(), "no such part");
    }
}
