//! The cluster directory: which agents each node hosts, and how many
//! instances, as this node knows it. Sans-IO, owned by the membership core.
//!
//! # How it spreads
//! - A node's list has a **version**, raised on each change; with the
//!   node's generation (a restart takes a newer one) it orders lists, so a
//!   stale list never replaces a newer one.
//! - A change is announced by gossip: a small **version note** (node,
//!   version) rides on SWIM packets as a foca custom broadcast, and is
//!   announced again every [`NOTE_REFRESH_PROBES`] probe intervals so a
//!   node that missed it catches up.
//! - The list itself is **pulled**: a node that learns of a version newer
//!   than the one it holds (from a note, or because the node just came up)
//!   asks that node for its list, and the answer travels as one directory
//!   frame (on a QUIC stream when it does not fit a datagram). Lists never
//!   ride on gossip, so their size does not cost every SWIM packet; pulls
//!   are retried every probe interval while the holder stays behind.
//! - A node **declared down** (failed or left) is removed at once; one that
//!   comes back under a newer generation is removed and pulled again.
//!   A list from a node not known as a live member at that generation is
//!   dropped (counted): a delayed answer cannot bring a down node back.
//! - A name whose every host was **declared down** stays named (at most
//!   [`DEPARTED_MAX`] of them) with the node that last hosted it, so a send
//!   to it is answered `caxton:node-down`, which says what happened, rather
//!   than `caxton:unknown-agent`. It is forgotten once a live node lists it
//!   again, or once a node at that address comes back without it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};

use crate::wire::{self, NodeId, WireError, WireErrorBox};

/// Names whose hosts were all declared down that the directory keeps
/// naming, at most; past it the oldest is forgotten (a send to it is then
/// answered `caxton:unknown-agent`).
pub const DEPARTED_MAX: usize = 4_096;

/// Probe intervals between two announcements of this node's version note.
pub const NOTE_REFRESH_PROBES: u32 = 10;

/// Agents and instance counts, by agent name.
pub type AgentCounts = BTreeMap<String, u32>;

/// What one node hosts, at a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAgents {
    /// The node.
    pub node: NodeId,
    /// Its list's version (0: never published).
    pub version: u64,
    /// Its agents and their instances across its shards.
    pub agents: AgentCounts,
}

/// A directory message, the payload of a directory frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryMessage {
    /// "Send me your list."
    Pull {
        /// Who asks (the answer goes to its address).
        from: NodeId,
    },
    /// A node's whole list.
    List {
        /// The node it describes (and that sent it).
        from: NodeId,
        /// Its version.
        version: u64,
        /// Agent name and instance count, ascending by name.
        agents: Vec<(String, u32)>,
    },
}

impl DirectoryMessage {
    /// The node that sent it.
    pub fn sender(&self) -> &NodeId {
        match self {
            DirectoryMessage::Pull { from } | DirectoryMessage::List { from, .. } => from,
        }
    }

    /// As MessagePack.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a directory message always encodes")
    }

    /// Read one, checking every name against the naming rule.
    pub fn decode(packet: &[u8]) -> Result<Self, WireError> {
        let message: DirectoryMessage =
            rmp_serde::from_slice(packet).map_err(|error| WireError::Decode(error.to_string()))?;
        wire::check_identity(message.sender())?;
        if let DirectoryMessage::List { agents, .. } = &message {
            // The plain naming rule: a peer's agent deployed under an
            // earlier rule (and recovered so) is still its agent.
            for (name, _) in agents {
                caxton_profiles::check_node_name(name).map_err(|_| WireError::BadIdentity)?;
            }
        }
        Ok(message)
    }
}

/// Every node's list this node holds, its own apart.
#[derive(Debug, Default)]
pub struct ClusterDirectory {
    local: AgentCounts,
    local_version: u64,
    nodes: HashMap<SocketAddr, NodeAgents>,
    /// Names no live node hosts any more, each with the node declared down
    /// that hosted it last, and the order they were added in (to bound them).
    departed: HashMap<String, NodeId>,
    departed_order: std::collections::VecDeque<String>,
    changes: u64,
}

impl ClusterDirectory {
    /// This node's own agents and their version.
    pub fn local(&self) -> (u64, &AgentCounts) {
        (self.local_version, &self.local)
    }

    /// Replace this node's own list; its version rises when it changed.
    /// Returns whether it changed.
    pub(crate) fn set_local(&mut self, agents: AgentCounts) -> bool {
        if agents == self.local && self.local_version > 0 {
            return false;
        }
        self.local = agents;
        self.local_version += 1;
        true
    }

    /// Rises whenever another node's list is taken or dropped: a cheap way
    /// to see that [`Self::remote_agents`] may have changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every agent some other node hosts, each name once, and those whose
    /// hosts were all declared down (see [`Self::departed_host`]): the
    /// shards keep routing those to the remote port, where a send is
    /// answered `caxton:node-down`.
    pub fn remote_agents(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> = self
            .nodes
            .values()
            .flat_map(|node| node.agents.iter())
            .filter(|(_, count)| **count > 0)
            .map(|(name, _)| name)
            .chain(self.departed.keys())
            .collect();
        names.into_iter().cloned().collect()
    }

    /// Every agent no live node hosts now, with the node declared down
    /// that hosted it last, by name.
    pub fn departed(&self) -> Vec<(String, NodeId)> {
        let mut departed: Vec<(String, NodeId)> = self
            .departed
            .iter()
            .map(|(name, node)| (name.clone(), node.clone()))
            .collect();
        departed.sort_by(|a, b| a.0.cmp(&b.0));
        departed
    }

    /// The node declared down that last hosted `agent`, when no live node
    /// hosts it now.
    pub fn departed_host(&self, agent: &str) -> Option<&NodeId> {
        self.departed.get(agent)
    }

    /// `node` was declared down: forget its list, and keep naming the agents
    /// only it hosted. Returns whether its list was held.
    pub(crate) fn declared_down(&mut self, node: &NodeId) -> bool {
        let Some(held) = self.nodes.get(&node.addr) else {
            return false;
        };
        let names: Vec<String> = held.agents.keys().cloned().collect();
        if !self.remove(node) {
            return false;
        }
        for name in names {
            if self.hosts(&name).is_empty() && !self.departed.contains_key(&name) {
                self.departed.insert(name.clone(), node.clone());
                self.departed_order.push_back(name);
            }
        }
        while self.departed.len() > DEPARTED_MAX {
            let Some(oldest) = self.departed_order.pop_front() else {
                break;
            };
            self.departed.remove(&oldest);
        }
        true
    }

    /// Forget the departed names `from` lists again, and those a node back
    /// at their last host's address no longer lists.
    fn settle_departed(&mut self, from: &SocketAddr, agents: &AgentCounts) {
        let before = self.departed.len();
        self.departed
            .retain(|name, last| last.addr != *from && !agents.contains_key(name));
        if self.departed.len() != before {
            let departed = &self.departed;
            self.departed_order
                .retain(|name| departed.contains_key(name));
        }
    }

    /// The list of the node at `addr`, if held.
    pub fn node(&self, addr: SocketAddr) -> Option<&NodeAgents> {
        self.nodes.get(&addr)
    }

    /// Every other node's list, by node name.
    pub fn nodes(&self) -> Vec<&NodeAgents> {
        let mut nodes: Vec<&NodeAgents> = self.nodes.values().collect();
        nodes.sort_by(|a, b| {
            a.node
                .name
                .cmp(&b.node.name)
                .then(a.node.addr.cmp(&b.node.addr))
        });
        nodes
    }

    /// The other nodes that host `agent`, by name.
    pub fn hosts(&self, agent: &str) -> Vec<&NodeId> {
        self.nodes()
            .into_iter()
            .filter(|node| node.agents.get(agent).is_some_and(|count| *count > 0))
            .map(|node| &node.node)
            .collect()
    }

    /// The node a message from `sender_key` to `agent` goes to, when no
    /// local instance takes it: the same one for the same sender while the
    /// hosts stay the same (rendezvous hashing), so one sender's messages
    /// keep their order, and only the senders of a host that goes away move.
    ///
    /// Called per message leaving the node: no allocation, no sort. The
    /// address breaks a tie of scores, so the choice never depends on the
    /// map's order.
    pub fn choose(&self, agent: &str, sender_key: u64) -> Option<&NodeId> {
        self.nodes
            .values()
            .filter(|node| node.agents.get(agent).is_some_and(|count| *count > 0))
            .map(|node| &node.node)
            .max_by_key(|node| (rendezvous(sender_key, node), node.addr))
    }

    /// Whether a list at `version` from `node` is newer than the one held.
    pub(crate) fn is_newer(&self, node: &NodeId, version: u64) -> bool {
        self.nodes
            .get(&node.addr)
            .is_none_or(|held| (node.generation, version) > (held.node.generation, held.version))
    }

    /// Take `from`'s list if it is newer; returns whether it was.
    pub(crate) fn apply(&mut self, from: NodeId, version: u64, agents: Vec<(String, u32)>) -> bool {
        if !self.is_newer(&from, version) {
            return false;
        }
        self.changes += 1;
        let agents: AgentCounts = agents.into_iter().filter(|(_, count)| *count > 0).collect();
        self.settle_departed(&from.addr, &agents);
        self.nodes.insert(
            from.addr,
            NodeAgents {
                node: from,
                version,
                agents,
            },
        );
        true
    }

    /// Forget what `node` (or an earlier identity at its address) hosts.
    pub(crate) fn remove(&mut self, node: &NodeId) -> bool {
        let held = self
            .nodes
            .get(&node.addr)
            .is_some_and(|held| held.node.generation <= node.generation);
        if held {
            self.nodes.remove(&node.addr);
            self.changes += 1;
        }
        held
    }

    /// This node's list as a message from `me`.
    pub(crate) fn local_list(&self, me: &NodeId) -> DirectoryMessage {
        DirectoryMessage::List {
            from: me.clone(),
            version: self.local_version,
            agents: self
                .local
                .iter()
                .map(|(name, count)| (name.clone(), *count))
                .collect(),
        }
    }
}

/// Rendezvous (highest random weight) score of `node` for `sender_key`.
fn rendezvous(sender_key: u64, node: &NodeId) -> u64 {
    // FNV-1a over the address's octets, its port and the key, then a 64-bit
    // mix: stable across processes and builds, unlike std's randomly keyed
    // hasher, and free of formatting (this runs per message and host).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match node.addr.ip() {
        std::net::IpAddr::V4(ip) => mix(&ip.octets()),
        std::net::IpAddr::V6(ip) => mix(&ip.octets()),
    }
    mix(&node.addr.port().to_le_bytes());
    mix(&sender_key.to_le_bytes());
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// A version note: "`node`'s list is at `version`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionNote {
    pub node: NodeId,
    pub version: u64,
}

impl VersionNote {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a version note always encodes")
    }
}

/// What foca's broadcast handler shares with the membership core: the
/// newest version seen per node, and the notes that raised it since the
/// core last looked. foca owns its handler and offers no way back to it, so
/// the two share this book. Both run inside the same `Membership` call on
/// one thread, so the mutex is never contended; it is there so the core may
/// move between threads (a tokio task), not to arbitrate between them.
#[derive(Debug, Default)]
pub(crate) struct NoteBook {
    latest: HashMap<SocketAddr, (u64, u64)>,
    pub fresh: Vec<VersionNote>,
}

/// The custom broadcast handler foca calls for each version note it
/// receives (and for each this node adds): it decides whether the note is
/// news worth passing on.
pub(crate) struct VersionNotes {
    pub book: Arc<Mutex<NoteBook>>,
    pub me: SocketAddr,
}

/// Which note a broadcast is, for foca's queue: a newer note of a node
/// replaces an older one still waiting to be sent.
pub(crate) struct NoteKey {
    addr: SocketAddr,
    generation: u64,
    version: u64,
}

impl Invalidates for NoteKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr
            && (self.generation, self.version) >= (other.generation, other.version)
    }
}

impl BroadcastHandler<NodeId> for VersionNotes {
    type Key = NoteKey;
    type Error = WireErrorBox;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<NoteKey>, WireErrorBox> {
        let note: VersionNote = rmp_serde::from_slice(data)
            .map_err(|error| WireErrorBox(WireError::Decode(error.to_string())))?;
        wire::check_identity(&note.node).map_err(WireErrorBox)?;
        let key = NoteKey {
            addr: note.node.addr,
            generation: note.node.generation,
            version: note.version,
        };
        // Our own note, added here: always sent.
        if sender.is_none() {
            return Ok(Some(key));
        }
        // Someone else's note about us (an echo) is not news.
        if note.node.addr == self.me {
            return Ok(None);
        }
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newest = book.latest.get(&note.node.addr).copied();
        if newest.is_some_and(|held| held >= (note.node.generation, note.version)) {
            return Ok(None);
        }
        book.latest
            .insert(note.node.addr, (note.node.generation, note.version));
        book.fresh.push(note);
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16, generation: u64) -> NodeId {
        NodeId::new(
            format!("node-{port}"),
            SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        )
    }

    fn agents(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter()
            .map(|(name, count)| ((*name).to_owned(), *count))
            .collect()
    }

    #[test]
    fn newer_lists_replace_older_ones_and_never_the_reverse() {
        let mut directory = ClusterDirectory::default();
        assert!(directory.apply(node(1, 10), 2, agents(&[("echo", 2)])));
        assert!(
            !directory.apply(node(1, 10), 1, agents(&[("old", 1)])),
            "older version"
        );
        assert!(
            !directory.apply(node(1, 10), 2, agents(&[("same", 1)])),
            "same version"
        );
        assert_eq!(directory.hosts("echo").len(), 1);
        // A restart (newer generation) starts its versions again.
        assert!(directory.apply(node(1, 11), 1, agents(&[("counter", 1)])));
        assert!(directory.hosts("echo").is_empty());
        assert!(
            !directory.apply(node(1, 10), 9, agents(&[("echo", 1)])),
            "older generation"
        );
    }

    #[test]
    fn a_node_is_removed_only_for_its_own_or_a_newer_identity() {
        let mut directory = ClusterDirectory::default();
        directory.apply(node(1, 11), 1, agents(&[("echo", 1)]));
        assert!(
            !directory.remove(&node(1, 10)),
            "an older identity's death is old news"
        );
        assert!(directory.remove(&node(1, 11)));
        assert!(directory.hosts("echo").is_empty());
    }

    #[test]
    fn names_whose_hosts_are_all_down_stay_named_until_a_live_node_says_otherwise() {
        let mut directory = ClusterDirectory::default();
        directory.apply(node(1, 1), 1, agents(&[("echo", 1), ("tally", 1)]));
        directory.apply(node(2, 1), 1, agents(&[("tally", 1)]));
        let changes = directory.changes();
        assert!(!directory.declared_down(&node(1, 0)), "an older identity");
        assert!(directory.declared_down(&node(1, 1)));
        assert!(directory.changes() > changes);
        // `tally` still has a live host; `echo` had only the node now down.
        assert_eq!(directory.departed_host("echo"), Some(&node(1, 1)));
        assert_eq!(directory.departed_host("tally"), None);
        assert!(directory.hosts("echo").is_empty());
        assert_eq!(directory.remote_agents(), vec!["echo", "tally"]);

        // Another node lists it: it is hosted again, no longer departed.
        directory.apply(node(3, 1), 1, agents(&[("echo", 1)]));
        assert_eq!(directory.departed_host("echo"), None);
        assert!(directory.declared_down(&node(3, 1)));
        assert_eq!(directory.departed_host("echo"), Some(&node(3, 1)));

        // The node back at that address without it: the name is gone.
        directory.apply(node(3, 2), 1, agents(&[("other", 1)]));
        assert_eq!(directory.departed_host("echo"), None);
        assert_eq!(directory.remote_agents(), vec!["other", "tally"]);
    }

    #[test]
    fn departed_names_are_bounded_oldest_first() {
        let mut directory = ClusterDirectory::default();
        for index in 0..=DEPARTED_MAX {
            let host = node(1 + (index % 60_000) as u16, 1 + index as u64);
            directory.apply(host.clone(), 1, vec![(format!("agent-{index}"), 1)]);
            assert!(directory.declared_down(&host));
        }
        assert_eq!(directory.departed.len(), DEPARTED_MAX);
        assert_eq!(directory.departed_host("agent-0"), None, "the oldest went");
        assert!(directory
            .departed_host(&format!("agent-{DEPARTED_MAX}"))
            .is_some());
    }

    #[test]
    fn zero_instances_are_not_hosting() {
        let mut directory = ClusterDirectory::default();
        directory.apply(node(1, 1), 1, agents(&[("echo", 0), ("tally", 1)]));
        assert!(directory.hosts("echo").is_empty());
        assert_eq!(directory.hosts("tally").len(), 1);
    }

    #[test]
    fn one_sender_always_reaches_the_same_host_and_senders_spread() {
        let mut directory = ClusterDirectory::default();
        for port in 1..=4 {
            directory.apply(node(port, 1), 1, agents(&[("echo", 1)]));
        }
        let mut chosen = std::collections::HashSet::new();
        for sender in 0..64u64 {
            let first = directory.choose("echo", sender).cloned();
            assert_eq!(directory.choose("echo", sender).cloned(), first, "stable");
            chosen.insert(first.expect("a host").addr);
        }
        assert_eq!(chosen.len(), 4, "64 senders spread over every host");
        // Removing one host moves only its senders.
        let before: Vec<_> = (0..64u64)
            .map(|sender| directory.choose("echo", sender).expect("host").addr)
            .collect();
        directory.remove(&node(4, 1));
        for (sender, host) in before.iter().enumerate() {
            let now = directory.choose("echo", sender as u64).expect("host").addr;
            if host.port() != 4 {
                assert_eq!(now, *host, "sender {sender} moved though its host stayed");
            }
        }
    }

    #[test]
    fn local_versions_rise_only_on_change() {
        let mut directory = ClusterDirectory::default();
        let list: AgentCounts = [("echo".to_owned(), 2)].into_iter().collect();
        assert!(
            directory.set_local(AgentCounts::new()),
            "the first publication counts"
        );
        assert_eq!(directory.local().0, 1);
        assert!(directory.set_local(list.clone()));
        assert!(!directory.set_local(list));
        assert_eq!(directory.local().0, 2);
    }

    #[test]
    fn messages_round_trip_and_bad_names_are_refused() {
        let list = DirectoryMessage::List {
            from: node(1, 5),
            version: 3,
            agents: agents(&[("echo", 2)]),
        };
        assert_eq!(DirectoryMessage::decode(&list.encode()), Ok(list));
        let bad = DirectoryMessage::List {
            from: node(1, 5),
            version: 3,
            agents: agents(&[("no spaces allowed", 1)]),
        };
        assert_eq!(
            DirectoryMessage::decode(&bad.encode()),
            Err(WireError::BadIdentity)
        );
        assert!(matches!(
            DirectoryMessage::decode(b"\xc1"),
            Err(WireError::Decode(_))
        ));
    }

    #[test]
    fn notes_pass_on_only_news() {
        let book = Arc::new(Mutex::new(NoteBook::default()));
        let me = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut handler = VersionNotes {
            book: Arc::clone(&book),
            me,
        };
        let sender = node(2, 1);
        let note = |port, generation, version| {
            VersionNote {
                node: node(port, generation),
                version,
            }
            .encode()
        };
        assert!(handler
            .receive_item(&note(1, 1, 2), Some(&sender))
            .expect("ok")
            .is_some());
        assert!(
            handler
                .receive_item(&note(1, 1, 2), Some(&sender))
                .expect("ok")
                .is_none(),
            "seen"
        );
        assert!(
            handler
                .receive_item(&note(1, 1, 1), Some(&sender))
                .expect("ok")
                .is_none(),
            "older"
        );
        assert!(
            handler
                .receive_item(&note(1, 2, 1), Some(&sender))
                .expect("ok")
                .is_some(),
            "restart"
        );
        assert!(
            handler
                .receive_item(&note(9, 1, 1), Some(&sender))
                .expect("ok")
                .is_none(),
            "about me"
        );
        assert!(
            handler
                .receive_item(&note(9, 1, 1), None)
                .expect("ok")
                .is_some(),
            "my own"
        );
        assert_eq!(book.lock().expect("not poisoned").fresh.len(), 2);
        assert!(handler.receive_item(b"\xc1", Some(&sender)).is_err());
    }
}
