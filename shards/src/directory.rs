//! The agent directory: agent name → id, and how many instances of it each
//! data shard runs. Routing decisions are pure functions of a directory
//! snapshot and the sender.
//!
//! The node (control plane) owns the master copy and publishes an immutable
//! snapshot to every shard after each deploy or undeploy. A shard reads its
//! snapshot without locks; nothing on the data path writes it.

use std::collections::HashMap;

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

/// An immutable view of every deployed agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    agents: Vec<Option<AgentRecord>>,
    by_name: HashMap<String, AgentId>,
}

impl Directory {
    /// The record of agent `id`.
    pub fn get(&self, id: AgentId) -> Option<&AgentRecord> {
        self.agents.get(id.0 as usize)?.as_ref()
    }

    /// The id of the agent named `name`.
    pub fn resolve(&self, name: &str) -> Option<AgentId> {
        self.by_name.get(name).copied()
    }

    /// Every deployed agent.
    pub fn iter(&self) -> impl Iterator<Item = (AgentId, &AgentRecord)> {
        self.agents
            .iter()
            .enumerate()
            .filter_map(|(index, record)| Some((AgentId(index as u32), record.as_ref()?)))
    }

    /// Number of deployed agents.
    pub fn len(&self) -> usize {
        self.by_name.len()
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

    /// The name `msg_sender` reports for `address`: the agent's name, or
    /// `client-N` for a caller outside the agents.
    pub fn name_of(&self, address: Address) -> String {
        let agent = match address {
            Address::Agent(id) => id,
            Address::Instance(instance) => instance.agent,
            Address::Client { id, .. } => return format!("client-{id}"),
        };
        self.get(agent)
            .map_or_else(String::new, |record| record.name.clone())
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
