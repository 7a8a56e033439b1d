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

/// The node's shards as remote routing sees them: the remote port; the
/// agents other nodes host go to the node through its controller, newest
/// set first (a task on the gossip runtime applies the latest).
pub fn shard_side(
    port: caxton_shards::RemotePort,
    controller: caxton_admin::ControllerHandle,
) -> caxton_bench::cluster::PortSide<impl FnMut(Vec<String>)> {
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
    caxton_bench::cluster::PortSide::new(port, move |names| {
        let _ = remote_agents.send(names);
    })
}
