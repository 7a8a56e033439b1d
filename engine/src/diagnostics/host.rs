//! `engine host check`: is this machine set up for a pinned, latency-critical
//! engine? Reads `/sys` and `/proc` only (nothing is changed) and judges what
//! it finds against the profile: the CPUs its shards are planned on, whether
//! they spin, how many instances the pooling allocator maps, how much io_uring
//! memory the shards register.
//!
//! Every file is read through [`HostFiles`], rooted at `/` normally and at a
//! planted tree in tests. A file that is missing (containers and VMs hide
//! much of `/sys`) makes its check `unknown`, never an error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use caxton_profiles::Profile;

use super::{Finding, Verdict};

/// A C-state whose exit latency is above this (µs) costs a parked shard's
/// wake-up more than the engine's routing budget.
const DEEP_CSTATE_LATENCY_US: u64 = 10;
/// Swappiness above this lets the kernel page out a quiet agent's memory.
const SWAPPINESS_MAX: u64 = 10;
/// Mappings the process needs besides the pools (libraries, heaps, threads).
const BASE_MAPPINGS: u64 = 4096;

/// Reads the host's files under a root.
pub struct HostFiles {
    root: PathBuf,
}

impl HostFiles {
    /// Files under `root` (`/` on a real host).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// A file's text, trimmed; `None` when it cannot be read.
    pub fn read(&self, absolute: &str) -> Option<String> {
        std::fs::read_to_string(self.path(absolute))
            .ok()
            .map(|text| text.trim().to_owned())
    }

    fn number(&self, absolute: &str) -> Option<u64> {
        self.read(absolute)?.parse().ok()
    }

    /// The entries of a directory, sorted; empty when it cannot be read.
    fn list(&self, absolute: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(absolute))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// What the profile asks of the host.
pub struct HostNeeds {
    /// The CPUs (OS indices) the data shards run on.
    pub shard_cpus: BTreeSet<usize>,
    /// The shards keep spinning when idle (`runtime.spin_before_park`).
    pub spinning: bool,
    /// `numa.enabled`.
    pub numa: bool,
    /// Memory mappings the agent pools need.
    pub mappings: u64,
    /// io_uring buffer memory the shards register (counted as locked memory).
    pub locked_bytes: u64,
}

impl HostNeeds {
    /// What `profile` needs with its data shards on `shard_cpus`.
    pub fn of(profile: &Profile, shard_cpus: BTreeSet<usize>) -> Self {
        let shards = shard_cpus.len().max(1) as u64;
        let runtime = &profile.runtime;
        let instances = u64::from(runtime.max_agents) + u64::from(runtime.agent_pool_size);
        // The pooling allocator splits each memory and table slot into an
        // accessible part and a guard, and each handler stack has its guard
        // page: about two mappings each, per shard. Shards size their stack
        // pools from this machine's limit, as the node will.
        let pools = caxton_agents::PoolSizes::for_shard(
            profile,
            shard_cpus.len(),
            caxton_agents::kernel_max_map_count(),
        );
        let stacks = u64::from(pools.handler_stacks);
        let per_shard = if runtime.wasm.memory_pooling {
            2 * (2 * instances + stacks)
        } else {
            2 * stacks
        };
        Self {
            shard_cpus,
            spinning: runtime.spin_before_park.is_some(),
            numa: runtime.numa.enabled,
            mappings: BASE_MAPPINGS + shards * per_shard,
            locked_bytes: shards * caxton_shards::SHARD_IO_MEMORY_BYTES as u64,
        }
    }
}

/// Every check, in a fixed order.
pub fn check(files: &HostFiles, needs: &HostNeeds) -> Vec<Finding> {
    vec![
        governor(files, needs),
        turbo(files),
        cstates(files, needs),
        smt(files, needs),
        isolation(files, needs),
        irqs(files, needs),
        huge_pages(files),
        memory_housekeeping(files),
        numa_balancing(files, needs),
        swap(files),
        map_count(files, needs),
        locked_memory(files, needs),
    ]
}

fn cpu_list(cpus: &BTreeSet<usize>) -> String {
    let list: Vec<usize> = cpus.iter().copied().collect();
    caxton_numa::format_index_list(&list)
}

fn parse_list(text: &str) -> BTreeSet<usize> {
    caxton_numa::binding::parse_index_list(text)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn unknown(check: &'static str, what: &str) -> Finding {
    Finding::new(
        check,
        Verdict::Unknown,
        format!("{what} is not visible here (a container or VM may hide it)"),
    )
}

fn governor(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let mut slow = Vec::new();
    let mut seen = 0;
    for cpu in &needs.shard_cpus {
        if let Some(governor) = files.read(&format!(
            "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) {
            seen += 1;
            if governor != "performance" {
                slow.push(format!("cpu{cpu}: {governor}"));
            }
        }
    }
    if seen == 0 {
        return unknown("cpu-governor", "the CPU frequency governor");
    }
    if slow.is_empty() {
        return Finding::new(
            "cpu-governor",
            Verdict::Ok,
            "shard CPUs run the `performance` governor",
        );
    }
    let mut finding = Finding::new(
        "cpu-governor",
        Verdict::Warn,
        format!(
            "{} of the shard CPUs scale their frequency down when idle; the first messages after a pause run slow",
            slow.len()
        ),
    )
    .remedy(format!(
        "cpupower -c {} frequency-set -g performance (or write `performance` to /sys/devices/system/cpu/cpuN/cpufreq/scaling_governor)",
        cpu_list(&needs.shard_cpus)
    ))
    .weight(slow.len() as f64);
    finding.evidence = slow;
    finding
}

fn turbo(files: &HostFiles) -> Finding {
    let turbo_on = match (
        files.number("/sys/devices/system/cpu/intel_pstate/no_turbo"),
        files.number("/sys/devices/system/cpu/cpufreq/boost"),
    ) {
        (Some(no_turbo), _) => no_turbo == 0,
        (None, Some(boost)) => boost == 1,
        (None, None) => return unknown("turbo", "turbo/boost"),
    };
    if !turbo_on {
        return Finding::new("turbo", Verdict::Ok, "turbo is off: clock speed is steady");
    }
    Finding::new(
        "turbo",
        Verdict::Info,
        "turbo is on: higher peak speed, but the clock varies with load and temperature, which widens P99",
    )
    .remedy("for the steadiest tail: echo 1 > /sys/devices/system/cpu/intel_pstate/no_turbo (or echo 0 > /sys/devices/system/cpu/cpufreq/boost)")
}

fn cstates(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let mut deep = Vec::new();
    let mut seen = false;
    for cpu in &needs.shard_cpus {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle");
        for state in files.list(&base) {
            let dir = format!("{base}/{state}");
            let Some(latency) = files.number(&format!("{dir}/latency")) else {
                continue;
            };
            seen = true;
            let disabled = files.number(&format!("{dir}/disable")) == Some(1);
            if latency > DEEP_CSTATE_LATENCY_US && !disabled {
                let name = files.read(&format!("{dir}/name")).unwrap_or(state);
                deep.push(format!(
                    "cpu{cpu} may enter {name} (exit latency {latency} µs)"
                ));
            }
        }
    }
    if !seen {
        return unknown("cstates", "the CPU idle states");
    }
    if deep.is_empty() {
        return Finding::new(
            "cstates",
            Verdict::Ok,
            format!("no idle state deeper than {DEEP_CSTATE_LATENCY_US} µs on the shard CPUs"),
        );
    }
    // A spinning shard never idles, so its core never reaches a deep state.
    let verdict = if needs.spinning {
        Verdict::Info
    } else {
        Verdict::Warn
    };
    let mut finding = Finding::new(
        "cstates",
        verdict,
        "a parked shard's core can sleep deeply; waking it adds the state's exit latency to the next message",
    )
    .remedy(format!(
        "cpupower -c {} idle-set -D {DEEP_CSTATE_LATENCY_US}, or boot with intel_idle.max_cstate=1 processor.max_cstate=1; or keep shards spinning",
        cpu_list(&needs.shard_cpus)
    ))
    .key("runtime.spin_before_park")
    .weight(deep.len() as f64);
    finding.evidence = deep;
    finding
}

fn smt(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let isolated = files
        .read("/sys/devices/system/cpu/isolated")
        .map(|text| parse_list(&text))
        .unwrap_or_default();
    let mut shared = Vec::new();
    let mut seen = false;
    for cpu in &needs.shard_cpus {
        let Some(text) = files.read(&format!(
            "/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        )) else {
            continue;
        };
        seen = true;
        for sibling in parse_list(&text) {
            if sibling == *cpu {
                continue;
            }
            if needs.shard_cpus.contains(&sibling) {
                if sibling > *cpu {
                    shared.push(format!(
                        "cpu{cpu} and cpu{sibling} are one core and both run shards"
                    ));
                }
            } else if !isolated.contains(&sibling) {
                shared.push(format!("cpu{cpu}'s sibling cpu{sibling} runs other work"));
            }
        }
    }
    if !seen {
        return unknown("smt", "the SMT sibling topology");
    }
    if shared.is_empty() {
        return Finding::new("smt", Verdict::Ok, "no shard shares its physical core");
    }
    let mut finding = Finding::new(
        "smt",
        Verdict::Warn,
        "shards share physical cores with other threads; a sibling's work halves the core's speed unpredictably",
    )
    .remedy("echo off > /sys/devices/system/cpu/smt/control (or add the siblings to isolcpus= so nothing runs on them)")
    .key("runtime.cpu_affinity.strategy")
    .weight(shared.len() as f64);
    finding.evidence = shared;
    finding
}

fn isolation(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let (Some(isolated), nohz) = (
        files.read("/sys/devices/system/cpu/isolated"),
        files.read("/sys/devices/system/cpu/nohz_full"),
    ) else {
        return unknown("isolation", "CPU isolation (isolcpus)");
    };
    let isolated = parse_list(&isolated);
    let nohz = nohz.map(|text| parse_list(&text)).unwrap_or_default();
    let not_isolated: BTreeSet<usize> = needs.shard_cpus.difference(&isolated).copied().collect();
    let no_tick: BTreeSet<usize> = needs.shard_cpus.difference(&nohz).copied().collect();
    if not_isolated.is_empty() && no_tick.is_empty() {
        return Finding::new(
            "isolation",
            Verdict::Ok,
            "shard CPUs are isolated and tickless",
        );
    }
    let mut finding = Finding::new(
        "isolation",
        if needs.spinning {
            Verdict::Warn
        } else {
            Verdict::Info
        },
        "the scheduler may run other threads, and the timer tick, on shard CPUs",
    )
    .remedy(isolation_remedy(needs))
    .weight((not_isolated.len() + no_tick.len()) as f64);
    if needs.spinning {
        finding = finding.key("runtime.spin_before_park");
    }
    if !not_isolated.is_empty() {
        finding = finding.evidence(format!("not in isolcpus: {}", cpu_list(&not_isolated)));
    }
    if !no_tick.is_empty() {
        finding = finding.evidence(format!("not in nohz_full: {}", cpu_list(&no_tick)));
    }
    finding
}

/// Isolate the shard CPUs; where spinning shards cannot have them to
/// themselves, stop the spinning. A polling shard that shares its PU yields
/// it at every poll, and a yield to a busy process hands that process a
/// whole scheduler slice: with one busy-looping process beside two
/// in-process nodes on the 2-core development VM, remote routing's P50 was
/// 4.06 ms polling (`low-latency`) against 71 µs parking at once.
fn isolation_remedy(needs: &HostNeeds) -> String {
    let isolate = format!(
        "boot with isolcpus=managed_irq,domain,{list} nohz_full={list} rcu_nocbs={list}",
        list = cpu_list(&needs.shard_cpus)
    );
    if needs.spinning {
        format!("{isolate}; where other busy processes must share these CPUs, set runtime.spin_before_park=0 instead: a polling shard loses its CPU to them a whole scheduler slice at a time")
    } else {
        isolate
    }
}

fn irqs(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let mut on_shards = Vec::new();
    let mut seen = false;
    for irq in files.list("/proc/irq") {
        if irq.parse::<u32>().is_err() {
            continue;
        }
        let Some(text) = files.read(&format!("/proc/irq/{irq}/smp_affinity_list")) else {
            continue;
        };
        seen = true;
        let cpus = parse_list(&text);
        if cpus.is_disjoint(&needs.shard_cpus) {
            continue;
        }
        // The handlers registered on the line are its subdirectories.
        let names: Vec<String> = files
            .list(&format!("/proc/irq/{irq}"))
            .into_iter()
            .filter(|name| files.path(&format!("/proc/irq/{irq}/{name}")).is_dir())
            .collect();
        let label = if names.is_empty() {
            format!("irq {irq} -> cpus {text}")
        } else {
            format!("irq {irq} ({}) -> cpus {text}", names.join(", "))
        };
        on_shards.push(label);
    }
    if !seen {
        return unknown("irq-affinity", "IRQ affinity");
    }
    if on_shards.is_empty() {
        return Finding::new(
            "irq-affinity",
            Verdict::Ok,
            "no IRQ is routed to a shard CPU",
        );
    }
    let count = on_shards.len();
    let mut finding = Finding::new(
        "irq-affinity",
        Verdict::Warn,
        format!("{count} IRQs may interrupt shard CPUs; each interrupt stalls the shard's current message"),
    )
    .remedy(format!(
        "write the housekeeping CPUs to /proc/irq/N/smp_affinity_list for each, and IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance",
        cpu_list(&needs.shard_cpus)
    ))
    .weight(count as f64);
    finding.evidence = on_shards.into_iter().take(8).collect();
    if count > 8 {
        finding = finding.evidence(format!("... and {} more", count - 8));
    }
    finding
}

fn huge_pages(files: &HostFiles) -> Finding {
    let Some(enabled) = files.read("/sys/kernel/mm/transparent_hugepage/enabled") else {
        return unknown("transparent-huge-pages", "transparent huge pages");
    };
    if enabled.contains("[always]") {
        Finding::new(
            "transparent-huge-pages",
            Verdict::Warn,
            "transparent huge pages are `always`: khugepaged compaction and huge-page faults stall threads for milliseconds",
        )
        .evidence(format!("/sys/kernel/mm/transparent_hugepage/enabled: {enabled}"))
        .remedy("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (transparent_hugepage=madvise at boot)")
        .weight(1.0)
    } else {
        Finding::new(
            "transparent-huge-pages",
            Verdict::Ok,
            format!("transparent huge pages: {enabled}"),
        )
    }
}

/// The kernel's own memory housekeeping threads: proactive compaction
/// (`kcompactd`) and DAMON's monitors (`kdamond`) run on any CPU they are
/// not kept from, and preempt a running shard for about a millisecond each
/// time (measured on a 2-core VM: a runnable shard held off its CPU for
/// 0.87-0.93 ms a few dozen times in 8 s, the size of its stress tail).
fn memory_housekeeping(files: &HostFiles) -> Finding {
    const CHECK: &str = "memory-housekeeping";
    let proactiveness = files.number("/proc/sys/vm/compaction_proactiveness");
    let monitors = "/sys/kernel/mm/damon/admin/kdamonds";
    let running: Vec<String> = files
        .list(monitors)
        .into_iter()
        .filter(|name| files.read(&format!("{monitors}/{name}/state")).as_deref() == Some("on"))
        .collect();
    if proactiveness.is_none() && files.read(&format!("{monitors}/nr_kdamonds")).is_none() {
        return unknown(CHECK, "the kernel's memory housekeeping");
    }
    let mut evidence = Vec::new();
    let mut remedies = Vec::new();
    if let Some(level) = proactiveness.filter(|&level| level > 0) {
        evidence.push(format!("vm.compaction_proactiveness: {level}"));
        remedies.push("sysctl -w vm.compaction_proactiveness=0".to_owned());
    }
    for name in &running {
        evidence.push(format!("DAMON monitor kdamond {name} is on"));
        remedies.push(format!("echo off > {monitors}/{name}/state"));
    }
    if evidence.is_empty() {
        return Finding::new(
            CHECK,
            Verdict::Ok,
            "no proactive compaction, no DAMON monitor running",
        );
    }
    let mut finding = Finding::new(
        CHECK,
        Verdict::Warn,
        "kernel memory housekeeping (kcompactd, kdamond) runs on any CPU not isolated from it, preempting a shard for about a millisecond at a time",
    )
    .remedy(format!(
        "{} (or isolate the shard CPUs: isolcpus=, nohz_full=)",
        remedies.join("; ")
    ))
    .weight(1.0);
    for line in evidence {
        finding = finding.evidence(line);
    }
    finding
}

fn numa_balancing(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let Some(balancing) = files.number("/proc/sys/kernel/numa_balancing") else {
        return unknown("numa-balancing", "automatic NUMA balancing");
    };
    if balancing == 0 {
        return Finding::new(
            "numa-balancing",
            Verdict::Ok,
            "automatic NUMA balancing is off",
        );
    }
    // With numa.enabled the engine places memory itself; the kernel moving
    // pages behind it only adds hinting faults.
    Finding::new(
        "numa-balancing",
        if needs.numa { Verdict::Warn } else { Verdict::Info },
        "automatic NUMA balancing is on: the kernel unmaps pages to sample access, and each sample is a fault on a shard",
    )
    .remedy("sysctl -w kernel.numa_balancing=0 (and kernel.numa_balancing = 0 in /etc/sysctl.d/)")
    .key("numa.enabled")
    .weight(1.0)
}

fn swap(files: &HostFiles) -> Finding {
    let Some(swaps) = files.read("/proc/swaps") else {
        return unknown("swap", "swap");
    };
    let devices: Vec<&str> = swaps
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .collect();
    if devices.is_empty() {
        return Finding::new("swap", Verdict::Ok, "no swap");
    }
    let swappiness = files.number("/proc/sys/vm/swappiness");
    if swappiness.is_some_and(|value| value <= SWAPPINESS_MAX) {
        return Finding::new(
            "swap",
            Verdict::Ok,
            format!(
                "swap is on, swappiness {} keeps memory resident",
                swappiness.unwrap_or(0)
            ),
        );
    }
    let mut finding = Finding::new(
        "swap",
        Verdict::Warn,
        "swap is on: a quiet agent's memory can be paged out, and its next message waits for the disk",
    )
    .remedy("swapoff -a, or sysctl -w vm.swappiness=1")
    .weight(1.0);
    for device in devices {
        finding = finding.evidence(
            device
                .split_whitespace()
                .next()
                .unwrap_or(device)
                .to_owned(),
        );
    }
    if let Some(value) = swappiness {
        finding = finding.evidence(format!("vm.swappiness = {value}"));
    }
    finding
}

fn map_count(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let Some(limit) = files.number("/proc/sys/vm/max_map_count") else {
        return unknown("max-map-count", "vm.max_map_count");
    };
    let summary = format!(
        "vm.max_map_count is {limit}; the profile's agent pools need about {}",
        needs.mappings
    );
    if limit >= needs.mappings {
        return Finding::new("max-map-count", Verdict::Ok, summary);
    }
    Finding::new("max-map-count", Verdict::Problem, summary)
        .evidence("instantiation fails with ENOMEM once the process runs out of mappings")
        .remedy(format!(
            "sysctl -w vm.max_map_count={}",
            needs.mappings.next_power_of_two()
        ))
        .key("runtime.max_agents")
        .weight(needs.mappings as f64 / limit.max(1) as f64)
}

/// The soft `Max locked memory` of `/proc/self/limits`, in bytes; `None`
/// for unlimited.
fn memlock_limit(limits: &str) -> Option<Option<u64>> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

fn locked_memory(files: &HostFiles, needs: &HostNeeds) -> Finding {
    let Some(limit) = files
        .read("/proc/self/limits")
        .as_deref()
        .and_then(memlock_limit)
    else {
        return unknown("locked-memory", "the locked-memory limit");
    };
    let need = needs.locked_bytes;
    match limit {
        None => Finding::new("locked-memory", Verdict::Ok, "locked memory is unlimited"),
        Some(limit) if limit >= need => Finding::new(
            "locked-memory",
            Verdict::Ok,
            format!("locked-memory limit {limit} B covers the shards' io_uring buffers ({need} B)"),
        ),
        Some(limit) => Finding::new(
            "locked-memory",
            Verdict::Warn,
            format!(
                "locked-memory limit {limit} B is below the {need} B of io_uring buffers the shards register"
            ),
        )
        .remedy(format!(
            "LimitMEMLOCK={need} in the systemd unit, `ulimit -l {}` in the shell, or memlock in /etc/security/limits.conf",
            need.div_ceil(1024)
        ))
        .key("runtime.worker_threads")
        .weight(need as f64 / limit.max(1) as f64),
    }
}

/// Where `engine host check` reads from: `/`, unless a test plants a tree.
pub fn files_at(root: Option<&Path>) -> HostFiles {
    HostFiles::new(root.unwrap_or(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(cpus: &[usize], spinning: bool) -> HostNeeds {
        HostNeeds {
            shard_cpus: cpus.iter().copied().collect(),
            spinning,
            numa: true,
            mappings: 10_000,
            locked_bytes: 2 << 20,
        }
    }

    fn plant(root: &Path, file: &str, text: &str) {
        let path = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, text).expect("write");
    }

    fn verdict_of(findings: &[Finding], check: &str) -> Verdict {
        findings
            .iter()
            .find(|finding| finding.check == check)
            .map(|finding| finding.verdict)
            .expect("checked")
    }

    #[test]
    fn an_empty_tree_is_unknown_everywhere() {
        let root = tempfile::tempdir().expect("tempdir");
        let findings = check(&HostFiles::new(root.path()), &needs(&[0, 1], false));
        assert_eq!(findings.len(), 12);
        assert!(findings
            .iter()
            .all(|finding| finding.verdict == Verdict::Unknown));
    }

    #[test]
    fn a_planted_badly_tuned_host_is_named_check_by_check() {
        let root = tempfile::tempdir().expect("tempdir");
        let at = root.path();
        for cpu in 0..4 {
            let base = format!("/sys/devices/system/cpu/cpu{cpu}");
            plant(
                at,
                &format!("{base}/cpufreq/scaling_governor"),
                if cpu == 1 {
                    "powersave\n"
                } else {
                    "performance\n"
                },
            );
            plant(at, &format!("{base}/cpuidle/state0/latency"), "0\n");
            plant(at, &format!("{base}/cpuidle/state2/name"), "C6\n");
            plant(at, &format!("{base}/cpuidle/state2/latency"), "133\n");
            plant(at, &format!("{base}/cpuidle/state2/disable"), "0\n");
            let siblings = if cpu % 2 == 0 {
                format!("{cpu}-{}", cpu + 1)
            } else {
                format!("{}-{cpu}", cpu - 1)
            };
            plant(
                at,
                &format!("{base}/topology/thread_siblings_list"),
                &siblings,
            );
        }
        plant(at, "/sys/devices/system/cpu/isolated", "2\n");
        plant(at, "/sys/devices/system/cpu/nohz_full", "(null)\n");
        plant(at, "/sys/devices/system/cpu/intel_pstate/no_turbo", "0\n");
        plant(at, "/proc/irq/24/smp_affinity_list", "0-3\n");
        plant(at, "/proc/irq/24/eth0-rx-0/.keep", "");
        plant(at, "/proc/irq/25/smp_affinity_list", "3\n");
        plant(
            at,
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        );
        plant(at, "/proc/sys/kernel/numa_balancing", "1\n");
        plant(at, "/proc/sys/vm/compaction_proactiveness", "20\n");
        plant(at, "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", "2\n");
        plant(at, "/sys/kernel/mm/damon/admin/kdamonds/0/state", "on\n");
        plant(at, "/sys/kernel/mm/damon/admin/kdamonds/1/state", "off\n");
        plant(
            at,
            "/proc/swaps",
            "Filename Type Size Used Priority\n/dev/sda2 partition 1000 0 -2\n",
        );
        plant(at, "/proc/sys/vm/swappiness", "60\n");
        plant(at, "/proc/sys/vm/max_map_count", "65530\n");
        plant(
            at,
            "/proc/self/limits",
            "Limit Soft Hard Units\nMax locked memory 65536 65536 bytes\n",
        );
        let findings = check(&HostFiles::new(at), &needs(&[0, 1], false));
        for (check, verdict) in [
            ("cpu-governor", Verdict::Warn),
            ("turbo", Verdict::Info),
            ("cstates", Verdict::Warn),
            ("smt", Verdict::Warn),
            ("isolation", Verdict::Info),
            ("irq-affinity", Verdict::Warn),
            ("transparent-huge-pages", Verdict::Warn),
            ("memory-housekeeping", Verdict::Warn),
            ("numa-balancing", Verdict::Warn),
            ("swap", Verdict::Warn),
            ("max-map-count", Verdict::Ok),
            ("locked-memory", Verdict::Warn),
        ] {
            assert_eq!(verdict_of(&findings, check), verdict, "{check}");
        }
        let by = |check: &str| {
            findings
                .iter()
                .find(|finding| finding.check == check)
                .expect("present")
        };
        assert_eq!(by("cpu-governor").evidence, ["cpu1: powersave"]);
        assert_eq!(
            by("smt").evidence,
            ["cpu0 and cpu1 are one core and both run shards"]
        );
        assert_eq!(
            by("irq-affinity").evidence,
            ["irq 24 (eth0-rx-0) -> cpus 0-3"]
        );
        assert_eq!(
            by("memory-housekeeping").evidence,
            [
                "vm.compaction_proactiveness: 20",
                "DAMON monitor kdamond 0 is on"
            ]
        );
        // Spinning shards never idle: deep C-states matter less, isolation more.
        let spinning = check(&HostFiles::new(at), &needs(&[0, 1], true));
        assert_eq!(verdict_of(&spinning, "cstates"), Verdict::Info);
        assert_eq!(verdict_of(&spinning, "isolation"), Verdict::Warn);
        // And the finding names the key that stops the spinning.
        let isolation = by_check(&spinning, "isolation");
        assert_eq!(isolation.key, Some("runtime.spin_before_park"));
        assert!(isolation
            .remedy
            .as_deref()
            .is_some_and(|remedy| remedy.contains("runtime.spin_before_park=0")));
        let parking = check(&HostFiles::new(at), &needs(&[0, 1], false));
        assert_eq!(by_check(&parking, "isolation").key, None);
        // A shard on cpu 2 has an isolated sibling... cpu 3 is not, so it is named.
        let upper = check(&HostFiles::new(at), &needs(&[2], false));
        assert_eq!(
            by_check(&upper, "smt").evidence,
            ["cpu2's sibling cpu3 runs other work"]
        );
        assert_eq!(verdict_of(&upper, "irq-affinity"), Verdict::Warn);
    }

    fn by_check<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
        findings
            .iter()
            .find(|finding| finding.check == check)
            .expect("present")
    }

    #[test]
    fn a_tuned_host_passes_and_small_map_limits_are_problems() {
        let root = tempfile::tempdir().expect("tempdir");
        let at = root.path();
        plant(
            at,
            "/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
            "performance",
        );
        plant(
            at,
            "/sys/devices/system/cpu/cpu3/cpuidle/state0/latency",
            "0",
        );
        plant(
            at,
            "/sys/devices/system/cpu/cpu3/cpuidle/state3/latency",
            "200",
        );
        plant(
            at,
            "/sys/devices/system/cpu/cpu3/cpuidle/state3/disable",
            "1",
        );
        plant(
            at,
            "/sys/devices/system/cpu/cpu3/topology/thread_siblings_list",
            "3",
        );
        plant(at, "/sys/devices/system/cpu/isolated", "2-3");
        plant(at, "/sys/devices/system/cpu/nohz_full", "2-3");
        plant(at, "/sys/devices/system/cpu/cpufreq/boost", "0");
        plant(at, "/proc/irq/9/smp_affinity_list", "0-1");
        plant(
            at,
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never",
        );
        plant(at, "/proc/sys/kernel/numa_balancing", "0");
        plant(at, "/proc/sys/vm/compaction_proactiveness", "0");
        plant(at, "/proc/swaps", "Filename Type Size Used Priority\n");
        plant(at, "/proc/sys/vm/max_map_count", "4000");
        plant(
            at,
            "/proc/self/limits",
            "Max locked memory unlimited unlimited bytes",
        );
        let findings = check(&HostFiles::new(at), &needs(&[3], true));
        for finding in &findings {
            let expected = if finding.check == "max-map-count" {
                Verdict::Problem
            } else {
                Verdict::Ok
            };
            assert_eq!(
                finding.verdict, expected,
                "{}: {}",
                finding.check, finding.summary
            );
        }
        assert_eq!(
            by_check(&findings, "max-map-count").remedy.as_deref(),
            Some("sysctl -w vm.max_map_count=16384")
        );
    }

    #[test]
    fn the_profile_sizes_mappings_and_locked_memory() {
        let profile = caxton_profiles::load(&["low-latency".to_owned()], &[])
            .expect("loads")
            .profile;
        let needs = HostNeeds::of(&profile, [0, 1, 2].into_iter().collect());
        assert!(needs.spinning, "low-latency spins before parking");
        assert_eq!(
            needs.locked_bytes,
            3 * caxton_shards::SHARD_IO_MEMORY_BYTES as u64
        );
        assert!(needs.mappings > BASE_MAPPINGS);
        let bigger = caxton_profiles::load(
            &["low-latency".to_owned()],
            &["runtime.max_agents=100000".to_owned()],
        )
        .expect("loads")
        .profile;
        assert!(HostNeeds::of(&bigger, needs.shard_cpus.clone()).mappings > needs.mappings);
    }
}
