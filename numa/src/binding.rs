//! Applying a [`ShardPlacement`](crate::ShardPlacement) to the calling thread,
//! and reading a thread's placement back.
//!
//! CPU affinity goes through `sched_setaffinity` directly (it is one syscall and
//! reads back from `/proc` the same way); memory policy goes through hwloc,
//! which maps `local_alloc`, `bind` and `interleave` onto `set_mempolicy`.
//! These run once per thread at boot, never on the data path.

use std::io;
use std::sync::OnceLock;

use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::memory::nodeset::NodeSet;
use hwlocality::Topology;

use crate::plan::{CpuBinding, MemoryPlacement};

/// The most CPUs `cpu_set_t` can name.
const CPU_SET_CAPACITY: usize = libc::CPU_SETSIZE as usize;

/// Why a thread could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// `sched_setaffinity` or `sched_getaffinity` failed.
    #[error("cannot set CPU affinity to {binding}: {source}")]
    Cpu {
        /// The binding asked for.
        binding: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A CPU number beyond what `cpu_set_t` holds.
    #[error("CPU {0} is beyond the {CPU_SET_CAPACITY} CPUs an affinity mask can name")]
    CpuOutOfRange(usize),
    /// hwloc could not read the machine.
    #[error("cannot read the topology to bind memory: {0}")]
    Topology(String),
    /// The kernel refused the memory policy.
    #[error("cannot apply memory policy {policy}: {reason}")]
    Memory {
        /// The policy asked for.
        policy: String,
        /// hwloc's or the kernel's reason.
        reason: String,
    },
}

/// Pin the calling thread as `binding` says. `Unbound` leaves the inherited mask alone.
pub fn bind_current_thread(binding: &CpuBinding) -> Result<(), BindError> {
    let pus = match binding {
        CpuBinding::Pu(pu) => vec![*pu],
        CpuBinding::Pus(pus) => pus.clone(),
        CpuBinding::Unbound => return Ok(()),
    };
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for pu in pus {
        if pu >= CPU_SET_CAPACITY {
            return Err(BindError::CpuOutOfRange(pu));
        }
        // SAFETY: `pu` is below CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(pu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let status =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if status != 0 {
        return Err(BindError::Cpu {
            binding: binding.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The PUs the calling thread may run on.
pub fn current_thread_pus() -> io::Result<Vec<usize>> {
    // SAFETY: as above; sched_getaffinity fills `set`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is writable and of the size passed.
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: each index is below CPU_SETSIZE.
    Ok((0..CPU_SET_CAPACITY)
        .filter(|&pu| unsafe { libc::CPU_ISSET(pu, &set) })
        .collect())
}

/// The PUs thread `tid` of this process may run on, read from `/proc` (as
/// `taskset -p` would), so one thread can check another's placement.
pub fn thread_pus(tid: i32) -> io::Result<Vec<usize>> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no Cpus_allowed_list in /proc status",
            )
        })?;
    parse_index_list(list.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad CPU list `{list}`")))
}

/// Parse `0-3,8,10-11`.
pub fn parse_index_list(text: &str) -> Option<Vec<usize>> {
    let mut indices = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((start, end)) => {
                indices.extend(start.parse::<usize>().ok()?..=end.parse::<usize>().ok()?)
            }
            None => indices.push(part.parse().ok()?),
        }
    }
    Some(indices)
}

/// The calling thread's OS thread id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn machine_topology() -> Result<&'static Topology, BindError> {
    static TOPOLOGY: OnceLock<Result<Topology, String>> = OnceLock::new();
    TOPOLOGY
        .get_or_init(|| Topology::new().map_err(|error| error.to_string()))
        .as_ref()
        .map_err(|error| BindError::Topology(error.clone()))
}

/// Apply `memory` to the calling thread's future allocations.
pub fn apply_memory_placement(memory: &MemoryPlacement) -> Result<(), BindError> {
    let (nodes, policy) = match memory {
        MemoryPlacement::SystemDefault => return Ok(()),
        MemoryPlacement::LocalAlloc { node } => (vec![*node], MemoryBindingPolicy::FirstTouch),
        MemoryPlacement::Bind { nodes } => (nodes.clone(), MemoryBindingPolicy::Bind),
        MemoryPlacement::Interleave { nodes } => (nodes.clone(), MemoryBindingPolicy::Interleave),
    };
    let topology = machine_topology()?;
    let mut nodeset = NodeSet::new();
    for node in nodes {
        nodeset.set(node);
    }
    // STRICT turns `bind` into MPOL_BIND rather than hwloc's default of MPOL_PREFERRED.
    let flags = match policy {
        MemoryBindingPolicy::Bind => MemoryBindingFlags::THREAD | MemoryBindingFlags::STRICT,
        _ => MemoryBindingFlags::THREAD,
    };
    topology
        .bind_memory(&nodeset, policy, flags)
        .map_err(|error| BindError::Memory {
            policy: memory.to_string(),
            reason: error.to_string(),
        })
}

/// The calling thread's memory policy as hwloc reports it: its nodes and a
/// name (`first_touch`, `bind`, `interleave`).
pub fn current_memory_policy() -> Result<(Vec<usize>, String), BindError> {
    let topology = machine_topology()?;
    let (nodeset, policy) = topology
        .memory_binding::<NodeSet>(MemoryBindingFlags::THREAD)
        .map_err(|error| BindError::Memory {
            policy: "(reading back)".into(),
            reason: error.to_string(),
        })?;
    let name = match policy {
        Some(MemoryBindingPolicy::FirstTouch) => "first_touch".to_owned(),
        Some(MemoryBindingPolicy::Bind) => "bind".to_owned(),
        Some(MemoryBindingPolicy::Interleave) => "interleave".to_owned(),
        Some(other) => format!("{other:?}").to_lowercase(),
        None => "mixed".to_owned(),
    };
    Ok((nodeset.iter_set().map(usize::from).collect(), name))
}
