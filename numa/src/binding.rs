//! Applying a [`ShardPlacement`](crate::ShardPlacement) to the calling thread,
//! and reading a thread's placement back.
//!
//! A single-CPU pin needs no topology, so it goes through `core_affinity`; a
//! set of CPUs, and reading the calling thread's set back, go through hwloc's
//! thread CPU binding, which checks the set against the CPUs this process may
//! use. Another thread's set is read from `/proc`, as `taskset -p` does.
//! Memory policy goes through hwloc, which maps `local_alloc`, `bind` and
//! `interleave` onto `set_mempolicy`. These run once per thread at boot, never
//! on the data path.

use std::io;
use std::sync::OnceLock;

use hwlocality::bitmap::BitmapIndex;
use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::memory::nodeset::NodeSet;
use hwlocality::Topology;

use crate::plan::{CpuBinding, MemoryPlacement};

/// The most CPUs the fixed-size mask of a single-CPU pin can name.
const CPU_SET_CAPACITY: usize = libc::CPU_SETSIZE as usize;

/// Why a thread could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The kernel or hwloc refused the CPU binding.
    #[error("cannot set CPU affinity to {binding}: {reason}")]
    Cpu {
        /// The binding asked for.
        binding: String,
        /// hwloc's or the kernel's reason.
        reason: String,
    },
    /// A CPU number beyond what an affinity mask can name.
    #[error("CPU {0} is beyond the CPUs an affinity mask can name")]
    CpuOutOfRange(usize),
    /// hwloc could not read the machine.
    #[error("cannot read the topology to bind the thread: {0}")]
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
    let refused = |reason: String| BindError::Cpu {
        binding: binding.to_string(),
        reason,
    };
    match binding {
        CpuBinding::Pu(pu) => {
            // core_affinity fills a fixed-size cpu_set_t, which has no bit past its capacity.
            if *pu >= CPU_SET_CAPACITY {
                return Err(BindError::CpuOutOfRange(*pu));
            }
            if core_affinity::set_for_current(core_affinity::CoreId { id: *pu }) {
                Ok(())
            } else {
                // core_affinity reports failure as a bare `false`; the errno
                // its sched_setaffinity set is still this thread's last error.
                Err(refused(io::Error::last_os_error().to_string()))
            }
        }
        CpuBinding::Pus(pus) => {
            let set = pus
                .iter()
                .map(|&pu| BitmapIndex::try_from(pu).map_err(|_| BindError::CpuOutOfRange(pu)))
                .collect::<Result<CpuSet, _>>()?;
            machine_topology()?
                .bind_cpu(&set, CpuBindingFlags::THREAD)
                .map_err(|error| refused(error.to_string()))
        }
        CpuBinding::Unbound => Ok(()),
    }
}

/// The PUs the calling thread may run on.
pub fn current_thread_pus() -> io::Result<Vec<usize>> {
    let set = machine_topology()
        .map_err(io::Error::other)?
        .cpu_binding(CpuBindingFlags::THREAD)
        .map_err(|error| io::Error::other(error.to_string()))?;
    Ok(set.iter_set().map(usize::from).collect())
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

/// Let the calling thread's timed waits end within a microsecond or so of
/// their deadline, instead of up to the kernel's default timer slack of
/// 50 µs later: for threads whose wake-ups are a schedule (the epoch
/// ticker, a load generator), where every late wake is a late tick or send.
pub fn tighten_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a value, touches no memory and
    // changes only this thread's slack; a kernel that refuses leaves it as it was.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
}

/// Name the calling thread `name` as the kernel shows it (`/proc`, `top
/// -H`, profilers' thread labels), which keeps 15 bytes: a longer name is
/// refused here rather than cut into one that may be another thread's.
pub fn name_current_thread(name: &str) -> Result<(), String> {
    if name.len() > 15 || name.contains('\0') {
        return Err(format!("thread name `{name}` is over 15 bytes"));
    }
    let name = std::ffi::CString::new(name).map_err(|error| error.to_string())?;
    // SAFETY: prctl(PR_SET_NAME) reads a NUL-terminated string of at most
    // 16 bytes, which `name` is, and renames only this thread.
    let result = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// The name of data shard `index`'s thread: `caxton-shard-N`, or past
/// shard 99, where that would not fit the kernel's 15 bytes,
/// `cx-shard-N`.
pub fn shard_thread_name(index: usize) -> String {
    let name = format!("caxton-shard-{index}");
    if name.len() <= 15 {
        name
    } else {
        format!("cx-shard-{index}")
    }
}

/// The calling thread's OS thread id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments, touches no memory and cannot fail;
    // neither core_affinity nor hwlocality offers it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_thread_names_fit_the_kernels_fifteen_bytes_and_stay_distinct() {
        assert_eq!(shard_thread_name(0), "caxton-shard-0");
        assert_eq!(shard_thread_name(99), "caxton-shard-99");
        assert_eq!(shard_thread_name(100), "cx-shard-100");
        let names: std::collections::HashSet<String> = (0..4096).map(shard_thread_name).collect();
        assert_eq!(names.len(), 4096);
        assert!(names.iter().all(|name| name.len() <= 15));
        assert!(name_current_thread("sixteen-bytes-xx").is_err());
        std::thread::spawn(|| {
            name_current_thread("caxton-shard-7").expect("renamed");
            let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", current_tid()))
                .expect("comm");
            assert_eq!(comm.trim_end(), "caxton-shard-7");
        })
        .join()
        .expect("the thread");
    }

    /// Run `check` on a thread of its own, so that the test runner's threads
    /// keep the mask they started with.
    fn on_own_thread(check: impl FnOnce() + Send + 'static) {
        std::thread::spawn(check).join().expect("the check passed");
    }

    #[test]
    fn a_thread_bound_to_a_set_of_cpus_reads_it_back() {
        on_own_thread(|| {
            let allowed = current_thread_pus().expect("own mask");
            // All but the last allowed CPU, so that the set differs from the
            // inherited mask wherever the machine has two CPUs or more.
            let set = match allowed.split_last() {
                Some((_, rest)) if !rest.is_empty() => rest.to_vec(),
                _ => allowed.clone(),
            };
            bind_current_thread(&CpuBinding::Pus(set.clone())).expect("binds");
            assert_eq!(current_thread_pus().expect("own mask"), set);
            assert_eq!(thread_pus(current_tid()).expect("mask from /proc"), set);
        });
    }

    #[test]
    fn a_thread_pinned_to_one_cpu_reads_it_back_and_unbound_keeps_it() {
        on_own_thread(|| {
            let allowed = current_thread_pus().expect("own mask");
            let last = *allowed.last().expect("at least one CPU");
            bind_current_thread(&CpuBinding::Pu(last)).expect("pins");
            assert_eq!(current_thread_pus().expect("own mask"), [last]);
            bind_current_thread(&CpuBinding::Unbound).expect("nothing to do");
            assert_eq!(thread_pus(current_tid()).expect("mask from /proc"), [last]);
        });
    }

    #[test]
    fn cpus_past_the_mask_are_refused_before_any_syscall() {
        assert!(matches!(
            bind_current_thread(&CpuBinding::Pu(CPU_SET_CAPACITY)),
            Err(BindError::CpuOutOfRange(pu)) if pu == CPU_SET_CAPACITY
        ));
    }

    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(
            parse_index_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_index_list(""), Some(vec![]));
        assert_eq!(parse_index_list("0-x"), None);
    }
}
