//! Starting cluster membership: settings from the profile and `--join`,
//! certificates and the listen address checked and bound before any shard
//! starts, so a refusal stops the engine before it serves anything.

use caxton_cluster::transport::ClusterNode;
use caxton_cluster::ClusterSettings;
use caxton_profiles::LoadedProfile;
use tracing::{info, warn};

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
    let seeds = settings.seeds.len();
    let _entered = runtime.enter();
    let node = ClusterNode::bind(settings).map_err(|error| match error {
        caxton_cluster::transport::ClusterError::Tls(tls) => {
            // A file that would not read: named by its own key, so the
            // error points where that key was set (a `--set`, say).
            let key = match &tls {
                caxton_cluster::tls::TlsError::Setting { key, .. } => {
                    Some(format!("coordination.cluster.tls.{key}"))
                }
                _ => None,
            };
            refuse(
                key.as_deref().unwrap_or("coordination.cluster.tls"),
                tls.to_string(),
            )
        }
        other => refuse("coordination.cluster.listen_address", other.to_string()),
    })?;
    info!(
        node = %node.node_name(),
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
///
/// Once the directory has settled, in the same task and after the names it
/// then held, the shards run the stored messages accepted meanwhile (the
/// node started with `NodeOptions::await_directory`), and with `redeliver`
/// (a restart with persistence) deliver the node's unfinished stored
/// messages again. A handler that forwards to an agent on another node
/// then finds it, where before the directory it would have found no such
/// agent and failed its message, which a stored message's handler run
/// finishes.
pub fn shard_side(
    port: caxton_shards::RemotePort,
    controller: caxton_admin::ControllerHandle,
    redeliver: bool,
) -> caxton_shards::PortSide<impl FnMut(Vec<String>)> {
    let (remote_agents, mut latest) = tokio::sync::watch::channel(Vec::new());
    let (settled, mut settling) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut awaiting = true;
        loop {
            tokio::select! {
                changed = latest.changed() => if changed.is_err() { return },
                changed = settling.changed(), if awaiting => if changed.is_err() { return },
            }
            // Names first, then (once settled) the messages that may use them.
            let names = latest.borrow_and_update().clone();
            let applied = controller
                .call(move |controller| controller.node.set_remote_agents(names))
                .await;
            if applied.is_err() {
                return;
            }
            if awaiting && *settling.borrow_and_update() {
                awaiting = false;
                let released = controller
                    .call(move |controller| {
                        let waited = controller.node.directory_settled()?;
                        let redelivered = if redeliver {
                            controller.node.redeliver_unfinished()?
                        } else {
                            0
                        };
                        Ok::<_, caxton_shards::NodeError>((waited, redelivered))
                    })
                    .await;
                match released {
                    Ok(Ok((waited, redelivered))) => info!(
                        waited,
                        redelivered, "stored messages released, the cluster directory in place"
                    ),
                    Ok(Err(error)) => warn!("releasing stored messages failed: {error}"),
                    Err(_) => return,
                }
            }
        }
    });
    caxton_shards::PortSide::new(port, move |names| {
        let _ = remote_agents.send(names);
    })
    .on_settled(move || {
        let _ = settled.send(true);
    })
}
