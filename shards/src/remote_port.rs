//! The remote port: the mesh participant through which a node's messages
//! for agents only other nodes host leave, and messages from other nodes
//! enter. In a cluster the gossip shard drives it (`caxton_cluster::remote`).
//!
//! It is one of the client ports, taken for good: it has a ring to and from
//! every data shard, no lock on the way, and it routes what enters like a
//! client does, from the node's directory snapshot.

use std::cell::RefCell;
use std::sync::Arc;

use caxton_messaging::{Address, AgentId, Durability, Envelope, MeshPort};

use crate::clock::NodeClock;
use crate::directory::{Directory, DirectoryReader, PublishedDirectory};
use crate::node::IdleSpin;

/// The node's remote port, with what routing through it needs.
pub struct RemotePort {
    port: MeshPort,
    /// Its copy of the node's directory. In a cell: routing asks it by
    /// `&self`, and the port is only ever used on the gossip shard's thread.
    directory: RefCell<DirectoryReader>,
    clock: NodeClock,
    data_shards: usize,
    /// How the gossip shard polls this port once idle before it parks.
    idle_spin: Option<IdleSpin>,
}

impl RemotePort {
    pub(crate) fn new(
        port: MeshPort,
        directory: Arc<PublishedDirectory>,
        clock: NodeClock,
        data_shards: usize,
        idle_spin: Option<IdleSpin>,
    ) -> Self {
        Self {
            port,
            directory: RefCell::new(DirectoryReader::new(directory)),
            clock,
            data_shards,
            idle_spin,
        }
    }

    /// How the gossip shard polls this port once idle before it parks:
    /// `runtime.spin_before_park`, yielding its PU at every poll when a
    /// data shard shares it (`None`: it parks at once).
    pub fn idle_spin(&self) -> Option<IdleSpin> {
        self.idle_spin
    }

    /// Whether messages for other nodes wait in [`Self::take_outbound`].
    pub fn has_outbound(&self) -> bool {
        self.port.has_inbound()
    }

    /// `read` of the current directory.
    fn with_directory<T>(&self, read: impl FnOnce(&Directory) -> T) -> T {
        read(self.directory.borrow_mut().current())
    }

    /// Its participant index (what a client address on it carries as `port`).
    pub fn participant(&self) -> u16 {
        self.port.participant() as u16
    }

    /// Move up to `max` messages per shard that left for other nodes into `out`.
    pub fn take_outbound(&mut self, max: usize, out: &mut Vec<Envelope>) {
        self.port.drain(max, |envelope| out.push(envelope));
    }

    /// Hand a message to the participant that takes it: a shard hosting
    /// its agent (chosen by `route_key`, which stands for its sender, so
    /// one sender's messages take one ring and keep their order), the shard
    /// of its instance, or, for a client's answer, the client itself (or,
    /// where it has no ring from here, the shard that passes its messages
    /// on). A full ring gives it back.
    ///
    /// The first message of a batch to a receiver rings it at once; later
    /// ones wait for [`Self::ring_deliveries`], one fence for them all (see
    /// `MeshPort::send_ringing_later`): a frame from another node brings
    /// dozens of messages for the same few receivers.
    pub fn deliver(&mut self, envelope: Envelope, route_key: u64) -> Result<(), Envelope> {
        let shards = self.data_shards.max(1);
        let target = if let Durability::ChainAck(parent) = envelope.durability {
            // A chain hop stored on another node: to the shard whose
            // partition holds the parent it settles.
            caxton_storage::durability::partition_of(parent)
        } else {
            match envelope.receiver {
                Address::Agent(agent) => self
                    .with_directory(|directory| directory.route(agent, None, route_key))
                    .unwrap_or(0),
                Address::Instance(instance) => usize::from(instance.shard),
                // Straight to the client where it has a ring from here.
                Address::Client { port, .. } if self.port.has_ring_to(port.into()) => {
                    return self.port.send_ringing_later(port.into(), envelope);
                }
                // Else the shard the client's own sends leave by.
                Address::Client { port, .. } => crate::client::relay_shard(port.into(), shards),
                Address::Remote { port, token, .. } => {
                    (usize::from(port) + token as usize) % shards
                }
            }
        };
        if target >= shards || !self.port.has_ring_to(target) {
            return Err(envelope);
        }
        self.port.send_ringing_later(target, envelope)
    }

    /// Ring every receiver [`Self::deliver`] left unrung, with one fence.
    /// Call before the thread driving the port could wait.
    pub fn ring_deliveries(&mut self) {
        self.port.ring_deferred();
    }

    /// The local id of agent `name`, if this node hosts it.
    pub fn resolve_local(&self, name: &str) -> Option<AgentId> {
        self.with_directory(|directory| directory.resolve(name))
    }

    /// The id here of agent `name`: a local one, else the proxy of an
    /// agent only other nodes host.
    pub fn resolve_anywhere(&self, name: &str) -> Option<AgentId> {
        self.with_directory(|directory| directory.resolve_anywhere(name))
    }

    /// The name of the agent that sent from `address` (`None` for a client).
    pub fn agent_name(&self, address: Address) -> Option<String> {
        if matches!(address, Address::Client { .. }) {
            return None;
        }
        self.with_directory(|directory| directory.agent_name(address).map(str::to_owned))
    }

    /// The agent only other nodes host that proxy id `id` stands for.
    pub fn remote_name(&self, id: AgentId) -> Option<String> {
        self.with_directory(|directory| directory.remote_name(id).map(str::to_owned))
    }

    /// The node clock, nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Resolves once messages wait in [`Self::take_outbound`].
    pub async fn wait(&self) {
        self.port.wait_for_messages().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use caxton_messaging::{build_mesh_with, Address, AgentId, Envelope, Performative};

    use super::RemotePort;
    use crate::client::relay_shard;
    use crate::clock::NodeClock;

    /// An answer from another node for `client`: what `remote` (participant
    /// 7, for 4 data shards) hands it to.
    fn answer_for(client: u16) -> Envelope {
        Envelope::new(
            Performative::Inform,
            Address::Remote {
                port: 7,
                token: 1,
                agent: AgentId(3),
            },
            Address::Client {
                port: client,
                id: client.into(),
            },
            Vec::new(),
            0,
            7,
        )
    }

    /// Where there is a ring from the remote port to the client (the mesh
    /// a node builds), an answer from another node goes straight to it: no
    /// data shard wakes.
    #[test]
    fn a_clients_answers_from_other_nodes_come_straight_to_it() {
        let shards = 4;
        // Data shards 0-3, client ports 4-6, the remote port 7; rings
        // between every pair but two clients.
        let mut ports = build_mesh_with(8, |from, to| {
            usize::from(from < shards || to < shards || from == 7 || to == 7) * 8
        });
        let remote = ports.pop().expect("port 7");
        let mut remote = RemotePort::new(remote, Arc::default(), NodeClock::start(), shards, None);
        for client in 4..7u16 {
            remote
                .deliver(answer_for(client), 0)
                .expect("room on the ring");
            let mut received = Vec::new();
            ports[usize::from(client)].drain(8, |envelope| received.push(envelope.receiver));
            assert_eq!(received, [answer_for(client).receiver], "client {client}");
            assert!(
                ports.iter().all(|port| !port.has_inbound()),
                "no shard got it"
            );
        }
    }

    /// Without that ring (a node built without it, or its remote port taken
    /// while a client held the participant built for it), an answer goes to
    /// the shard the client's
    /// own sends to other nodes leave by, so a client's remote round trip
    /// wakes one data shard, not two.
    #[test]
    fn without_a_ring_a_clients_answers_come_back_through_the_shard_its_sends_leave_by() {
        let shards = 4;
        let mut ports =
            build_mesh_with(8, |from, to| usize::from(from < shards || to < shards) * 8);
        let remote = ports.pop().expect("port 7");
        let mut remote = RemotePort::new(remote, Arc::default(), NodeClock::start(), shards, None);
        let mut relays = Vec::new();
        for client in 4..7u16 {
            remote
                .deliver(answer_for(client), 0)
                .expect("room on the ring");
            let relay = relay_shard(client.into(), shards);
            let mut passed_on = Vec::new();
            ports[relay].drain(8, |envelope| passed_on.push(envelope.receiver));
            assert_eq!(
                passed_on,
                [answer_for(client).receiver],
                "client {client} relays through shard {relay}"
            );
            assert!(
                ports.iter().all(|port| !port.has_inbound()),
                "no other shard got it"
            );
            relays.push(relay);
        }
        assert_eq!(relays, [0, 1, 2], "clients spread over the shards");
    }
}
