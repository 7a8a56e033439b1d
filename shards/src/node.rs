//! Starting and stopping a node's threads: one glommio executor per data
//! shard and one plain thread for the gossip shard, each placed as the plan says.
//!
//! Boot order: every shard thread starts, applies its CPU binding and memory
//! policy, reads both back, and reports. Only when every shard has reported
//! does [`Node::start`] return; if any fails, the ones already running are
//! stopped and joined, and the error names the shard and the cause.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use caxton_numa::binding::{self, BindError};
use caxton_numa::{CpuBinding, MemoryPlacement, PlacementPlan, ShardPlacement};
use caxton_profiles::Profile;
use glommio::{CpuSet, ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::stop::StopSignal;

/// io_uring buffer memory per data shard. glommio's default is 10 MiB per
/// executor; shards do no bulk file I/O through these buffers yet, so a node
/// with many shards should not pay 10 MiB for each.
const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;

/// How long a shard may take to come up before boot gives up on it.
const SHARD_BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which kind of shard a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRole {
    /// A data shard, with its index.
    Data(usize),
    /// The gossip shard.
    Gossip,
}

impl std::fmt::Display for ShardRole {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(index) => write!(formatter, "data-{index}"),
            Self::Gossip => formatter.write_str("gossip"),
        }
    }
}

/// What a shard found once it was placed: read back from the kernel, not
/// copied from the plan, so a caller can compare the two.
#[derive(Clone, Debug)]
pub struct ShardReport {
    /// Which shard.
    pub role: ShardRole,
    /// Its OS thread id.
    pub tid: i32,
    /// The PUs its thread may run on, per `sched_getaffinity`.
    pub allowed_pus: Vec<usize>,
    /// Its memory policy per hwloc (nodes, policy name), or why it could not be read.
    pub memory_policy: Result<(Vec<usize>, String), String>,
    /// A memory policy the kernel refused that the shard could run without.
    pub memory_warning: Option<String>,
    /// How long it polls before parking when idle (`None`: parks at once).
    pub spin_before_park: Option<Duration>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// One shard failed to come up.
    #[error("shard {role} failed to start: {reason}")]
    ShardStart {
        /// Which shard.
        role: ShardRole,
        /// The cause.
        reason: String,
    },
}

enum ShardThread {
    Data(ExecutorJoinHandle<()>),
    Gossip(JoinHandle<()>),
}

/// A running node. Dropping it without [`Node::shutdown`] leaves its threads running.
pub struct Node {
    threads: Vec<(ShardRole, ShardThread)>,
    reports: Vec<ShardReport>,
    stop: Arc<StopSignal>,
}

impl Node {
    /// Start every shard of `plan` with the wake policy and limits of `profile`.
    pub fn start(profile: &Profile, plan: &PlacementPlan) -> Result<Self, NodeError> {
        let stop = Arc::new(StopSignal::default());
        let spin_before_park = profile.runtime.spin_before_park.map(|spin| spin.get());
        let mut node = Self {
            threads: Vec::new(),
            reports: Vec::new(),
            stop,
        };
        let mut pending = Vec::new();
        for (index, placement) in plan.data_shards.iter().enumerate() {
            let role = ShardRole::Data(index);
            match spawn_data_shard(index, placement, spin_before_park, Arc::clone(&node.stop)) {
                Ok((thread, report)) => {
                    node.threads.push((role, ShardThread::Data(thread)));
                    pending.push((role, report));
                }
                Err(reason) => return Err(node.abort(NodeError::ShardStart { role, reason })),
            }
        }
        match spawn_gossip_shard(&plan.gossip_shard, Arc::clone(&node.stop)) {
            Ok((thread, report)) => {
                node.threads
                    .push((ShardRole::Gossip, ShardThread::Gossip(thread)));
                pending.push((ShardRole::Gossip, report));
            }
            Err(reason) => {
                return Err(node.abort(NodeError::ShardStart {
                    role: ShardRole::Gossip,
                    reason,
                }))
            }
        }
        for (role, report) in pending {
            match report.recv_timeout(SHARD_BOOT_TIMEOUT) {
                Ok(Ok(report)) => node.reports.push(report),
                Ok(Err(reason)) => return Err(node.abort(NodeError::ShardStart { role, reason })),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let reason = format!("no report within {SHARD_BOOT_TIMEOUT:?}");
                    return Err(node.abort(NodeError::ShardStart { role, reason }));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let reason = node
                        .take_failure(role)
                        .unwrap_or_else(|| "the thread exited before reporting".into());
                    return Err(node.abort(NodeError::ShardStart { role, reason }));
                }
            }
        }
        Ok(node)
    }

    /// What each shard read back at boot: data shards in order, then the gossip shard.
    pub fn reports(&self) -> &[ShardReport] {
        &self.reports
    }

    /// The signal that stops this node; request it from any thread (a signal handler).
    pub fn stop_signal(&self) -> Arc<StopSignal> {
        Arc::clone(&self.stop)
    }

    /// Block until a stop is requested, then stop and join every shard.
    pub fn run_until_stopped(self) -> Result<(), NodeError> {
        self.stop.wait_blocking();
        self.shutdown()
    }

    /// Stop every shard and join its thread. Errors name the first shard that
    /// did not exit cleanly; every thread is joined regardless.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop.request();
        let mut first_error = None;
        for (role, thread) in std::mem::take(&mut self.threads) {
            if let Err(reason) = join(thread) {
                first_error.get_or_insert(NodeError::ShardStart { role, reason });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Join the thread of `role` (which has ended) and return why it failed.
    fn take_failure(&mut self, role: ShardRole) -> Option<String> {
        let position = self
            .threads
            .iter()
            .position(|(candidate, _)| *candidate == role)?;
        let (_, thread) = self.threads.remove(position);
        join(thread).err()
    }

    /// Stop what has started and hand back `error`.
    fn abort(self, error: NodeError) -> NodeError {
        // The startup error is the one worth reporting; shutdown errors of the
        // shards that did start are secondary.
        let _ = self.shutdown();
        error
    }
}

fn join(thread: ShardThread) -> Result<(), String> {
    match thread {
        ShardThread::Data(handle) => handle.join().map_err(|error| error.to_string()),
        ShardThread::Gossip(handle) => handle
            .join()
            .map_err(|_| "the gossip thread panicked".to_owned()),
    }
}

type ReportReceiver = mpsc::Receiver<Result<ShardReport, String>>;

fn glommio_placement(binding: &CpuBinding) -> Result<Placement, String> {
    let online = || CpuSet::online().map_err(|error| format!("cannot list online CPUs: {error}"));
    Ok(match binding {
        CpuBinding::Pu(pu) => Placement::Fixed(*pu),
        CpuBinding::Pus(pus) => {
            Placement::Fenced(online()?.filter(|location| pus.contains(&location.cpu)))
        }
        // Fenced over every online CPU rather than Unbound: glommio turns
        // spin_before_park off for unbound executors.
        CpuBinding::Unbound => Placement::Fenced(online()?),
    })
}

fn spawn_data_shard(
    index: usize,
    placement: &ShardPlacement,
    spin_before_park: Option<Duration>,
    stop: Arc<StopSignal>,
) -> Result<(ExecutorJoinHandle<()>, ReportReceiver), String> {
    let (report_sender, report) = mpsc::channel();
    let mut builder = LocalExecutorBuilder::new(glommio_placement(&placement.cpu_binding)?)
        .name(&format!("caxton-shard-{index}"))
        .io_memory(SHARD_IO_MEMORY_BYTES);
    if let Some(spin) = spin_before_park {
        builder = builder.spin_before_park(spin);
    }
    let memory = placement.memory.clone();
    let handle = builder
        .spawn(move || async move {
            let placed = apply_memory(&memory).map(|memory_warning| {
                read_back(ShardRole::Data(index), memory_warning, spin_before_park)
            });
            let placed_ok = placed.is_ok();
            // The receiver is gone only if boot already gave up; nothing to tell then.
            let _ = report_sender.send(placed);
            if placed_ok {
                stop.requested().await;
            }
        })
        .map_err(|error| error.to_string())?;
    Ok((handle, report))
}

fn spawn_gossip_shard(
    placement: &ShardPlacement,
    stop: Arc<StopSignal>,
) -> Result<(JoinHandle<()>, ReportReceiver), String> {
    let (report_sender, report) = mpsc::channel();
    let binding = placement.cpu_binding.clone();
    let memory = placement.memory.clone();
    let handle = std::thread::Builder::new()
        .name("caxton-gossip".into())
        .spawn(move || {
            let placed = binding::bind_current_thread(&binding)
                .map_err(|error| error.to_string())
                .and_then(|()| apply_memory(&memory))
                .map(|memory_warning| read_back(ShardRole::Gossip, memory_warning, None));
            let placed_ok = placed.is_ok();
            let _ = report_sender.send(placed);
            if placed_ok {
                // Membership and the admin endpoint will run here; until then the
                // gossip shard holds its core and waits for the node to stop.
                stop.wait_blocking();
            }
        })
        .map_err(|error| format!("cannot spawn the gossip thread: {error}"))?;
    Ok((handle, report))
}

/// Apply the memory policy. `local_alloc` is what the kernel does by default,
/// so a kernel that refuses to set it (a container without CAP_SYS_NICE) costs
/// nothing and is only reported; a refused `bind` or `interleave` fails the shard.
fn apply_memory(memory: &MemoryPlacement) -> Result<Option<String>, String> {
    match binding::apply_memory_placement(memory) {
        Ok(()) => Ok(None),
        Err(error @ BindError::Memory { .. })
            if matches!(memory, MemoryPlacement::LocalAlloc { .. }) =>
        {
            Ok(Some(error.to_string()))
        }
        Err(error) => Err(error.to_string()),
    }
}

fn read_back(
    role: ShardRole,
    memory_warning: Option<String>,
    spin_before_park: Option<Duration>,
) -> ShardReport {
    ShardReport {
        role,
        tid: binding::current_tid(),
        allowed_pus: binding::current_thread_pus().unwrap_or_default(),
        memory_policy: binding::current_memory_policy().map_err(|error| error.to_string()),
        memory_warning,
        spin_before_park,
    }
}
