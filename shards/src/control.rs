//! The control plane's commands to a data shard: deploys, undeploys,
//! directory snapshots, recovery, metrics. They travel over a bounded std
//! channel followed by a doorbell ring, never on a message's path.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use caxton_agents::{AgentStats, CompiledModule, DeployError, StartKind};
use caxton_messaging::AgentId;
use caxton_profiles::AgentLimits;

use crate::directory::Directory;
use crate::metrics::ShardMetrics;

/// Most commands queued for one shard. The control plane is one thread
/// that waits for each answer, so a handful is plenty; a full queue makes
/// the sender wait, never the shard.
pub(crate) const CONTROL_QUEUE: usize = 64;

/// Commands from the control plane to a shard. See the module docs.
pub(crate) enum Control {
    /// A new directory snapshot.
    Directory(Arc<Directory>),
    /// Host `instances` instances of an agent.
    Deploy {
        id: AgentId,
        name: String,
        module: CompiledModule,
        /// The module as deployed, for the shard's partition (a restarted node redeploys from it).
        source: Arc<[u8]>,
        instances: u16,
        limits: AgentLimits,
        ack: mpsc::Sender<Result<(), DeployError>>,
    },
    /// Stop hosting an agent.
    Undeploy {
        id: AgentId,
        name: String,
        ack: mpsc::Sender<bool>,
    },
    /// Hand over the agents the shard's partition held at boot.
    RecoveredAgents {
        ack: mpsc::Sender<Vec<caxton_storage::AgentRow>>,
    },
    /// Deliver again the messages the partition held unfinished at boot;
    /// answers how many.
    Redeliver { ack: mpsc::Sender<usize> },
    /// The cluster directory has settled: run the stored messages that
    /// waited for it; answers how many.
    DirectorySettled { ack: mpsc::Sender<usize> },
    /// Start one more instance, and say how and how fast. The partition
    /// records the agent's new count (by `name`), so a restart keeps it.
    StartInstance {
        id: AgentId,
        name: String,
        cold: bool,
        ack: mpsc::Sender<Result<(StartKind, Duration), DeployError>>,
    },
    /// Remove one instance (the counterpart of `StartInstance`).
    StopInstance {
        id: AgentId,
        name: String,
        ack: mpsc::Sender<bool>,
    },
    /// Copy out the metrics, optionally resetting them.
    Metrics {
        reset: bool,
        ack: mpsc::Sender<ShardMetrics>,
    },
    /// Copy out every agent's counters and instance count on this shard.
    AllAgentStats {
        ack: mpsc::Sender<Vec<caxton_agents::AgentCounts>>,
    },
    /// Copy out an agent's counters.
    AgentStats {
        id: AgentId,
        ack: mpsc::Sender<Option<AgentStats>>,
    },
    /// Sample the next `start` messages (when given; 0 stops sampling) and
    /// hand over the hops recorded so far.
    Trace {
        start: Option<u32>,
        ack: mpsc::Sender<crate::core::trace::TraceTake>,
    },
    /// Leave the loop.
    Stop,
}
