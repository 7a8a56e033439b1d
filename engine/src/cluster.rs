//! Starting cluster membership: settings from the profile and `--join`,
//! certificates and the listen address checked and bound before any shard
//! starts, so a refusal stops the engine before it serves anything.

use caxton_cluster::transport::ClusterNode;
use caxton_cluster::ClusterSettings;
use caxton_profiles::LoadedProfile;
use tracing::info;

use crate::commands::CommandError;

/// The bound cluster node, or `None` when the node runs alone (no
/// `coordination.cluster.listen_address`). Binds on `runtime`, which the
/// gossip shard then drives.
pub fn prepare(
    loaded: &LoadedProfile,
    joins: &[String],
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<ClusterNode>, CommandError> {
    let refuse = |key: &str, message: String| crate::admin::refuse(loaded, key, message, "");
    let settings = ClusterSettings::from_profile(&loaded.profile, joins)
        .map_err(|error| refuse(&error.key, error.message))?;
    let Some(settings) = settings else {
        return Ok(None);
    };
    let name = settings.node_name.clone();
    let seeds = settings.seeds.len();
    let _entered = runtime.enter();
    let node = ClusterNode::bind(settings).map_err(|error| match error {
        caxton_cluster::transport::ClusterError::Tls(tls) => {
            refuse("coordination.cluster.tls", tls.to_string())
        }
        other => refuse("coordination.cluster.listen_address", other.to_string()),
    })?;
    info!(
        node = %name,
        seeds,
        "cluster listening on {} ({:?})",
        node.local_addr(),
        loaded.profile.transport.kind
    );
    Ok(Some(node))
}

/// The node's shards as remote routing sees them: the remote port, and the
/// controller that renames the agents other nodes host.
pub struct ShardSide {
    port: caxton_shards::RemotePort,
    remote_agents: tokio::sync::watch::Sender<Vec<String>>,
}

impl ShardSide {
    /// Route through `port`; name changes go to the node through `controller`,
    /// latest first (a task on the gossip runtime applies the newest set).
    pub fn new(
        port: caxton_shards::RemotePort,
        controller: caxton_admin::ControllerHandle,
    ) -> Self {
        let (remote_agents, mut latest) = tokio::sync::watch::channel(Vec::new());
        tokio::spawn(async move {
            while latest.changed().await.is_ok() {
                let names = latest.borrow_and_update().clone();
                let applied = controller
                    .call(move |controller| controller.node.set_remote_agents(names))
                    .await;
                if applied.is_err() {
                    return;
                }
            }
        });
        Self {
            port,
            remote_agents,
        }
    }
}

impl caxton_cluster::remote::LocalSide for ShardSide {
    fn take_outbound(&mut self, max: usize, out: &mut Vec<caxton_messaging::Envelope>) {
        self.port.take_outbound(max, out);
    }

    fn deliver(
        &mut self,
        envelope: caxton_messaging::Envelope,
        route_key: u64,
    ) -> Result<(), caxton_messaging::Envelope> {
        self.port.deliver(envelope, route_key)
    }

    fn resolve_local(&self, name: &str) -> Option<caxton_messaging::AgentId> {
        self.port.resolve_local(name)
    }

    fn remote_name(&self, id: caxton_messaging::AgentId) -> Option<String> {
        self.port.remote_name(id)
    }

    fn participant(&self) -> u16 {
        self.port.participant()
    }

    fn now_ns(&self) -> u64 {
        self.port.now_ns()
    }

    fn now_unix_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64)
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.port.wait()
    }

    fn remote_agents_changed(&mut self, names: Vec<String>) {
        let _ = self.remote_agents.send(names);
    }
}
