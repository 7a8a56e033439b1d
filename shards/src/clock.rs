//! The node clock: monotonic nanoseconds since the node started. Every shard
//! and client of a node reads the same origin, so a timestamp taken on one
//! shard means the same on another (deadlines, routing latency).

use std::time::Instant;

/// See the module docs. `Copy`: each thread holds its own.
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    origin: Instant,
}

impl NodeClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the node started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
