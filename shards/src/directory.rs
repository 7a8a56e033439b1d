//! The agent directory: agent name → id, and how many instances of it each
//! data shard runs. Routing decisions are pure functions of a directory
//! snapshot and the sender.
//!
//! The node (control plane) owns the master copy and publishes an immutable
//! snapshot to every shard after each deploy or undeploy. A shard reads its
//! snapshot without locks; nothing on the data path writes it.
//!
//! In a cluster the directory also names the agents only other nodes host
//! (from the cluster directory), each under a proxy id of its own range
//! ([`REMOTE_ID_BASE`] and up): a message addressed to one is routed to the
//! node's remote port (the gossip shard's mesh participant), which carries it
//! to a node that hosts the agent. Proxy ids are never reused within a run,
//! so a message in flight never changes its meaning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::FxHashMap;

use caxton_messaging::{Address, AgentId};

/// One deployed agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its name.
    pub name: String,
    /// Instances on each data shard, by shard index.
    pub instances_per_shard: Vec<u16>,
}

impl AgentRecord {
    /// The shards that run at least one instance, ascending.
    pub fn hosting_shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.instances_per_shard
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(shard, _)| shard)
    }
}

/// The first proxy id of an agent only other nodes host; local agents'
/// ids stay below it.
pub const REMOTE_ID_BASE: u32 = 1 << 31;

/// Where a message for an agent goes from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A data shard that hosts an instance.
    Shard(usize),
    /// Another node: the remote port, a mesh participant.
    Remote(usize),
}

/// How messages leave for other nodes: the remote port's participant index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RemoteRoute {
    port: usize,
}

/// An immutable view of every deployed agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    agents: Vec<Option<AgentRecord>>,
    /// Looked up on every send by name: Fx hashing, not SipHash (names come
    /// from deployers and authenticated peers, not from the open network).
    by_name: FxHashMap<String, AgentId>,
    /// Agents only other nodes host, by name, under proxy ids.
    remote: FxHashMap<String, AgentId>,
    /// Proxy id (less the base) → name; `None` once the name left.
    remote_names: Vec<Option<String>>,
    remote_route: Option<RemoteRoute>,
}

impl Directory {
    /// The record of agent `id`.
    pub fn get(&self, id: AgentId) -> Option<&AgentRecord> {
        self.agents.get(id.0 as usize)?.as_ref()
    }

    /// The id of the agent named `name` on this node.
    pub fn resolve(&self, name: &str) -> Option<AgentId> {
        self.by_name.get(name).copied()
    }

    /// The id a message to `name` is addressed with: the local agent's, or
    /// the proxy id of an agent only other nodes host.
    pub fn resolve_anywhere(&self, name: &str) -> Option<AgentId> {
        self.resolve(name).or_else(|| {
            self.remote_route?;
            self.remote.get(name).copied()
        })
    }

    /// The name behind proxy id `id`, if it is one.
    pub fn remote_name(&self, id: AgentId) -> Option<&str> {
        let index = id.0.checked_sub(REMOTE_ID_BASE)? as usize;
        self.remote_names.get(index)?.as_deref()
    }

    /// The agents only other nodes host, by name.
    pub fn remote_agents(&self) -> impl Iterator<Item = (&str, AgentId)> {
        self.remote.iter().map(|(name, id)| (name.as_str(), *id))
    }

    /// The remote port's participant index, once the node has one.
    pub fn remote_port(&self) -> Option<usize> {
        self.remote_route.map(|route| route.port)
    }

    /// A copy whose messages for other nodes leave through participant `port`.
    pub fn with_remote_port(&self, port: usize) -> Self {
        let mut next = self.clone();
        next.remote_route = Some(RemoteRoute { port });
        next
    }

    /// A copy where `names` are the agents other nodes host: new names get
    /// fresh proxy ids, names still there keep theirs, names gone lose them.
    pub fn with_remote_agents(&self, names: impl IntoIterator<Item = String>) -> Self {
        let mut next = self.clone();
        let wanted: std::collections::HashSet<String> = names.into_iter().collect();
        next.remote.retain(|name, id| {
            let keep = wanted.contains(name);
            if !keep {
                if let Some(slot) = next.remote_names.get_mut((id.0 - REMOTE_ID_BASE) as usize) {
                    *slot = None;
                }
            }
            keep
        });
        let mut fresh: Vec<String> = wanted
            .into_iter()
            .filter(|name| !next.remote.contains_key(name))
            .collect();
        fresh.sort();
        for name in fresh {
            let id = AgentId(REMOTE_ID_BASE + next.remote_names.len() as u32);
            next.remote_names.push(Some(name.clone()));
            next.remote.insert(name, id);
        }
        next
    }

    /// Every deployed agent.
    pub fn iter(&self) -> impl Iterator<Item = (AgentId, &AgentRecord)> {
        self.agents
            .iter()
            .enumerate()
            .filter_map(|(index, record)| Some((AgentId(index as u32), record.as_ref()?)))
    }

    /// Every name a send may address: the agents deployed here and those
    /// on other nodes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter()
            .map(|(_, record)| record.name.as_str())
            .chain(self.remote.keys().map(String::as_str))
    }

    /// Every agent deployed here and its instances across the shards, by
    /// name (what the cluster directory publishes for this node).
    pub fn hosted_agents(&self) -> std::collections::BTreeMap<String, u32> {
        self.iter()
            .map(|(_, record)| {
                let instances = record
                    .instances_per_shard
                    .iter()
                    .map(|&count| u32::from(count))
                    .sum();
                (record.name.clone(), instances)
            })
            .collect()
    }

    /// Number of deployed agents.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// One past the highest local agent number this snapshot gives out:
    /// numbers are reused after an undeploy, so this is not [`Self::len`].
    pub fn local_id_bound(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is deployed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// A copy with `record` added under a fresh id.
    pub fn with_agent(&self, record: AgentRecord) -> (Self, AgentId) {
        let mut next = self.clone();
        let id = match next.agents.iter().position(Option::is_none) {
            Some(free) => AgentId(free as u32),
            None => AgentId(next.agents.len() as u32),
        };
        next.by_name.insert(record.name.clone(), id);
        if id.0 as usize == next.agents.len() {
            next.agents.push(Some(record));
        } else {
            next.agents[id.0 as usize] = Some(record);
        }
        (next, id)
    }

    /// The name `msg_sender` reports for `address`: the agent's name (an
    /// agent on another node's too), or `client-N` for a caller outside the
    /// agents.
    pub fn name_of(&self, address: Address) -> String {
        match address {
            Address::Client { id, .. } => format!("client-{id}"),
            _ => self.agent_name(address).unwrap_or_default().to_owned(),
        }
    }

    /// The name of the agent at `address`, here or on another node; `None`
    /// for a client, or an agent no longer known.
    pub fn agent_name(&self, address: Address) -> Option<&str> {
        let agent = match address {
            Address::Agent(id) => id,
            Address::Instance(instance) => instance.agent,
            Address::Remote { agent, .. } => agent,
            Address::Client { .. } => return None,
        };
        match self.get(agent) {
            Some(record) => Some(record.name.as_str()),
            None => self.remote_name(agent),
        }
    }

    /// A copy with agent `id`'s record replaced.
    pub fn with_record(&self, id: AgentId, record: AgentRecord) -> Self {
        let mut next = self.clone();
        if let Some(slot) = next.agents.get_mut(id.0 as usize) {
            *slot = Some(record);
        }
        next
    }

    /// A copy without agent `id`.
    pub fn without_agent(&self, id: AgentId) -> Self {
        let mut next = self.clone();
        if let Some(record) = next.agents.get_mut(id.0 as usize).and_then(Option::take) {
            next.by_name.remove(&record.name);
        }
        next
    }

    /// Where a message for `agent` goes: [`Self::route`]'s shard for a
    /// local agent; the remote port for an agent only other nodes host.
    pub fn route_to(&self, agent: AgentId, from: Option<usize>, sender_key: u64) -> Option<Route> {
        if agent.0 >= REMOTE_ID_BASE {
            self.remote_name(agent)?;
            return self.remote_port().map(Route::Remote);
        }
        self.route(agent, from, sender_key).map(Route::Shard)
    }

    /// Which shard a message for any instance of `agent`, sent from shard
    /// `from` by `sender_key`, goes to: `from` itself when it hosts one;
    /// otherwise a hosting shard chosen by `sender_key`, so that one sender's
    /// messages to one agent always take the same path and stay in order.
    pub fn route(&self, agent: AgentId, from: Option<usize>, sender_key: u64) -> Option<usize> {
        let record = self.get(agent)?;
        if let Some(from) = from {
            if record
                .instances_per_shard
                .get(from)
                .is_some_and(|&count| count > 0)
            {
                return Some(from);
            }
        }
        // Counted, not collected: this runs for every message that leaves its shard.
        let hosting = record.hosting_shards().count();
        if hosting == 0 {
            return None;
        }
        record
            .hosting_shards()
            .nth((sender_key % hosting as u64) as usize)
    }
}

/// The node's current directory as the threads outside its shards read it:
/// clients and the remote port. The node publishes each new snapshot here
/// (as it sends one to every shard); a reader keeps the snapshot it last
/// took ([`DirectoryReader`]) and takes the new one only when the version
/// says it changed.
///
/// Why not read the lock per message: a read lock and an `Arc` clone write
/// the lock's and the snapshot's counters, cache lines every client thread
/// and the gossip shard share. Sending threads would pass those lines
/// between their cores at every message. A version that only changes at a
/// deploy stays in every core's cache, read-only, so a message costs one
/// load of it.
#[derive(Debug, Default)]
pub(crate) struct PublishedDirectory {
    /// Bumped after each publication, never otherwise.
    version: AtomicU64,
    current: RwLock<Arc<Directory>>,
}

impl PublishedDirectory {
    /// The current snapshot (takes the read lock: for the control plane
    /// and for readers refreshing their copy, not for each message).
    pub(crate) fn load(&self) -> Arc<Directory> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Make `directory` the current snapshot.
    pub(crate) fn publish(&self, directory: Arc<Directory>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = directory;
        // After the store: a reader that sees the new version finds (at
        // least) this snapshot under the lock.
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// One thread's copy of the [`PublishedDirectory`]: the snapshot it last
/// took, refreshed when the version moved.
#[derive(Debug)]
pub(crate) struct DirectoryReader {
    published: Arc<PublishedDirectory>,
    seen: u64,
    snapshot: Arc<Directory>,
}

impl DirectoryReader {
    pub(crate) fn new(published: Arc<PublishedDirectory>) -> Self {
        // Version first: a publication between the two reads is taken again.
        let seen = published.version.load(Ordering::Acquire);
        let snapshot = published.load();
        Self {
            published,
            seen,
            snapshot,
        }
    }

    /// The current snapshot: the copy held, unless a newer one was published.
    #[inline]
    pub(crate) fn current(&mut self) -> &Directory {
        let version = self.published.version.load(Ordering::Acquire);
        if version != self.seen {
            self.snapshot = self.published.load();
            self.seen = version;
        }
        &self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, instances_per_shard: Vec<u16>) -> AgentRecord {
        AgentRecord {
            name: name.into(),
            instances_per_shard,
        }
    }

    #[test]
    fn local_instances_win_and_remote_choice_is_stable_per_sender() {
        let (directory, echo) = Directory::default().with_agent(record("echo", vec![0, 1, 1, 0]));
        assert_eq!(directory.resolve("echo"), Some(echo));
        assert_eq!(
            directory.route(echo, Some(2), 99),
            Some(2),
            "the sender's own shard hosts one"
        );
        let first = directory.route(echo, Some(0), 7);
        assert!(matches!(first, Some(1) | Some(2)));
        assert_eq!(
            directory.route(echo, Some(3), 7),
            first,
            "same sender, same path"
        );
        assert_ne!(
            directory.route(echo, Some(0), 7),
            directory.route(echo, Some(0), 8),
            "senders spread over hosting shards"
        );
    }

    #[test]
    fn agents_other_nodes_host_route_to_the_remote_port_under_stable_proxy_ids() {
        let (directory, echo) = Directory::default().with_agent(record("echo", vec![1, 0]));
        let directory = directory.with_remote_agents(["faraway".to_owned(), "echo".to_owned()]);
        assert_eq!(
            directory.resolve_anywhere("faraway"),
            None,
            "no remote port yet: nothing routes to other nodes"
        );
        let directory = directory.with_remote_port(5);
        let faraway = directory.resolve_anywhere("faraway").expect("a proxy");
        assert!(faraway.0 >= REMOTE_ID_BASE);
        assert_eq!(directory.resolve("faraway"), None, "not a local agent");
        assert_eq!(directory.resolve_anywhere("echo"), Some(echo), "local wins");
        assert_eq!(
            directory.route_to(faraway, Some(0), 1),
            Some(Route::Remote(5))
        );
        assert_eq!(directory.route_to(echo, Some(1), 1), Some(Route::Shard(0)));
        assert_eq!(directory.name_of(Address::Agent(faraway)), "faraway");
        // A new set keeps the ids of the names still in it; a name gone no longer routes.
        let next = directory.with_remote_agents(["faraway".to_owned(), "later".to_owned()]);
        assert_eq!(next.resolve_anywhere("faraway"), Some(faraway));
        let later = next.resolve_anywhere("later").expect("a proxy");
        assert_ne!(later, faraway);
        let gone = next.with_remote_agents(["later".to_owned()]);
        assert_eq!(gone.route_to(faraway, Some(0), 1), None);
        assert_eq!(gone.remote_name(faraway), None);
        assert_eq!(gone.resolve_anywhere("later"), Some(later));
        assert_eq!(gone.len(), 1, "proxies are not deployed agents");
    }

    /// A reader keeps its copy until a publication, then takes the new one.
    #[test]
    fn a_reader_follows_publications() {
        let published = Arc::new(PublishedDirectory::default());
        let mut reader = DirectoryReader::new(Arc::clone(&published));
        assert_eq!(reader.current().resolve("echo"), None);
        let (next, echo) = Directory::default().with_agent(record("echo", vec![1]));
        published.publish(Arc::new(next));
        assert_eq!(reader.current().resolve("echo"), Some(echo));
        let held = Arc::as_ptr(&reader.snapshot);
        assert_eq!(reader.current().resolve("echo"), Some(echo));
        assert!(
            std::ptr::eq(held, Arc::as_ptr(&reader.snapshot)),
            "no publication: the copy is kept, not taken again"
        );
        published.publish(Arc::new(Directory::default()));
        assert_eq!(reader.current().resolve("echo"), None);
    }

    #[test]
    fn ids_are_reused_after_undeploy() {
        let (directory, first) = Directory::default().with_agent(record("a", vec![1]));
        let (directory, second) = directory.with_agent(record("b", vec![1]));
        let directory = directory.without_agent(first);
        assert_eq!(directory.resolve("a"), None);
        assert_eq!(directory.route(first, Some(0), 0), None);
        let (directory, third) = directory.with_agent(record("c", vec![1]));
        assert_eq!(third, first);
        assert_eq!(directory.len(), 2);
        assert_eq!(
            directory.get(second).map(|record| record.name.as_str()),
            Some("b")
        );
    }
}
