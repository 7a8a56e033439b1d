//! The shards as remote routing sees them: [`PortSide`] is the cluster's
//! [`LocalSide`] over a node's [`RemotePort`]. The engine's cluster loop
//! and the in-process cluster members of the benchmarks and tests drive
//! remote routing through it.

use caxton_cluster::remote::{IdlePoll, LocalSide};
use caxton_messaging::{Address, AgentId, Envelope};

use crate::node::IdleSpin;
use crate::remote_port::RemotePort;

/// A node's shards as remote routing sees them: its remote port, and what
/// to do when the agents other nodes host change.
pub struct PortSide<F> {
    port: RemotePort,
    on_remote_agents: F,
    on_settled: Option<Box<dyn FnOnce() + Send>>,
    wall: WallClock,
}

/// How long the wall clock's offset from the node clock is trusted before
/// it is read again. Every remote message reads the wall clock on both
/// nodes; the offset turns that into the node clock's counter read. A
/// step of the wall clock shows within this; a slew (at most 500 ppm)
/// moves it by at most 50 µs in the meantime.
const WALL_OFFSET_REREAD_NS: u64 = 100_000_000;

/// The wall clock as an offset from the node clock, and when (node clock)
/// the offset was taken.
#[derive(Debug, Default)]
struct WallClock {
    offset: std::cell::Cell<Option<(u64, u64)>>,
}

impl WallClock {
    /// The wall clock at node-clock time `now`: from the offset while it
    /// is fresh, else from `read_wall`, whose answer becomes the offset.
    fn unix_ns(&self, now: u64, read_wall: impl FnOnce() -> u64) -> u64 {
        match self.offset.get() {
            Some((taken_at, offset)) if now.saturating_sub(taken_at) < WALL_OFFSET_REREAD_NS => {
                now.wrapping_add(offset)
            }
            _ => {
                let unix = read_wall();
                self.offset.set(Some((now, unix.wrapping_sub(now))));
                unix
            }
        }
    }
}

/// The wall clock, Unix nanoseconds.
fn system_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

impl<F: FnMut(Vec<String>)> PortSide<F> {
    /// Route through `port`; `on_remote_agents` hears the names other nodes
    /// host (it should make the node's directory name them).
    pub fn new(port: RemotePort, on_remote_agents: F) -> Self {
        Self {
            port,
            on_remote_agents,
            on_settled: None,
            wall: WallClock::default(),
        }
    }

    /// Also call `settled` once the directory has settled
    /// ([`LocalSide::directory_settled`]).
    pub fn on_settled(mut self, settled: impl FnOnce() + Send + 'static) -> Self {
        self.on_settled = Some(Box::new(settled));
        self
    }
}

impl<F: FnMut(Vec<String>)> LocalSide for PortSide<F> {
    fn take_outbound(&mut self, max: usize, out: &mut Vec<Envelope>) {
        self.port.take_outbound(max, out);
    }

    fn deliver(&mut self, envelope: Envelope, route_key: u64) -> Result<(), Envelope> {
        self.port.deliver(envelope, route_key)
    }

    fn ring_deliveries(&mut self) {
        self.port.ring_deliveries();
    }

    fn resolve_local(&self, name: &str) -> Option<AgentId> {
        self.port.resolve_local(name)
    }

    fn remote_name(&self, id: AgentId) -> Option<String> {
        self.port.remote_name(id)
    }

    fn resolve_anywhere(&self, name: &str) -> Option<AgentId> {
        self.port.resolve_anywhere(name)
    }

    fn agent_name(&self, address: Address) -> Option<String> {
        self.port.agent_name(address)
    }

    fn participant(&self) -> u16 {
        self.port.participant()
    }

    fn now_ns(&self) -> u64 {
        self.port.now_ns()
    }

    fn unix_ns_at(&self, now_ns: u64) -> u64 {
        self.wall.unix_ns(now_ns, system_unix_ns)
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.port.wait()
    }

    fn has_outbound(&self) -> bool {
        self.port.has_outbound()
    }

    fn idle_poll(&self) -> Option<IdlePoll> {
        self.port.idle_spin().map(|spin| IdlePoll {
            window: spin.window(),
            yield_cpu: matches!(spin, IdleSpin::Yield(_)),
        })
    }

    fn remote_agents_changed(&mut self, names: Vec<String>) {
        (self.on_remote_agents)(names);
    }

    fn directory_settled(&mut self) {
        if let Some(settled) = self.on_settled.take() {
            settled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{WallClock, WALL_OFFSET_REREAD_NS};

    /// The wall clock is read once, then followed from the node clock by
    /// its offset, and read again once the offset is older than the limit
    /// (here the wall clock was stepped meanwhile, and the step shows).
    #[test]
    fn the_wall_clock_follows_the_node_clock_and_is_read_again() {
        let wall = WallClock::default();
        let mut reads = 0;
        let mut read = |unix: u64| {
            reads += 1;
            unix
        };
        assert_eq!(wall.unix_ns(1_000, || read(5_000_000)), 5_000_000);
        assert_eq!(wall.unix_ns(2_000, || panic!("fresh: not read")), 5_001_000);
        let later = 1_000 + WALL_OFFSET_REREAD_NS;
        assert_eq!(wall.unix_ns(later, || read(9_000_000_000)), 9_000_000_000);
        assert_eq!(
            wall.unix_ns(later + 7, || panic!("fresh: not read")),
            9_000_000_007
        );
        assert_eq!(reads, 2);
    }
}
