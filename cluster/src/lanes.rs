//! Message lanes: the pool of ordered QUIC streams that carry remote
//! messages to each peer (`transport.connection_pool.*`).
//!
//! A lane is a bidirectional stream on the peer's QUIC connection that
//! carries frames of remote messages in order. A peer gets up to
//! `max_connections_per_node` lanes, and each message takes the lane its
//! sender hashes to ([`lane_key`]), so one sender's messages keep their
//! order while a lost packet stalls only the senders of its lane. With
//! `pre_warm`, `warm_connections` lanes open as soon as a connection to
//! the peer is up; the others open with their first message.
//!
//! Lanes are retired without reordering anything. A retiring lane stops
//! taking frames, writes what it holds, finishes its stream and waits for
//! the peer to say it has read the stream to the end (one byte back on the
//! stream, written only after every frame went to the peer's loop, in
//! order). A lane that replaces it opens its stream only after that, so a
//! sender's later messages can never overtake its earlier ones. Lanes
//! retire:
//! - when idle for `idle_timeout`, unless the pool would keep fewer than
//!   `min_idle` idle lanes;
//! - at once when they fall idle while the pool holds more than `max_idle`
//!   idle lanes;
//! - at `max_lifetime`: the lane drains its stream and goes on with a fresh
//!   one (rotation).
//!
//! A lane is idle when it is open with nothing queued. The pool's counts
//! (open, idle, opened, closed by reason) are gauges and counters of
//! `/metrics` and `GET /v1/cluster`.
//!
//! TCP carries every message on one connection per direction, so these keys
//! apply to the QUIC transport only (a TCP profile that changes them is
//! refused at load).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use caxton_profiles::ConnectionPoolConfig;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::remote::{RemoteMessage, Target};

/// The first byte of a lane's stream, and the byte the reader sends back
/// once it has read the stream to its end.
pub(crate) const LANE_STREAM: u8 = 0xDA;

/// Frames waiting for one lane, at most; a full lane refuses (back-pressure).
const LANE_QUEUE: usize = 1024;

/// How lanes open and retire: `transport.connection_pool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanePolicy {
    /// `max_connections_per_node`: lanes per peer at most.
    pub lanes_per_peer: usize,
    /// `warm_connections` when `pre_warm`, else 0: lanes opened when a
    /// connection comes up.
    pub warm: usize,
    /// `min_idle`: idle lanes the pool keeps through `idle_timeout`.
    pub min_idle: u64,
    /// `max_idle`: idle lanes the pool holds at most.
    pub max_idle: u64,
    /// `idle_timeout`: an idle lane retires after this.
    pub idle_timeout: Duration,
    /// `max_lifetime`: a lane's stream is replaced after this.
    pub max_lifetime: Duration,
}

impl From<&ConnectionPoolConfig> for LanePolicy {
    fn from(pool: &ConnectionPoolConfig) -> Self {
        Self {
            lanes_per_peer: pool.max_connections_per_node.max(1) as usize,
            warm: if pool.pre_warm {
                pool.warm_connections as usize
            } else {
                0
            },
            min_idle: u64::from(pool.min_idle),
            max_idle: u64::from(pool.max_idle),
            idle_timeout: pool.idle_timeout.get(),
            max_lifetime: pool.max_lifetime.get(),
        }
    }
}

impl Default for LanePolicy {
    fn default() -> Self {
        Self::from(&ConnectionPoolConfig::default())
    }
}

/// The number a message's lane is chosen by: its sender's address (one
/// sender, one lane), or for a message without one, its target. Runs per
/// message, so it hashes route keys and names with a cheap multiplicative
/// hash rather than formatting anything.
pub fn lane_key(message: &RemoteMessage) -> u64 {
    let key = match (&message.sender, &message.target) {
        (Some(sender), _) => sender.route_key(),
        (None, Target::Address(address)) => address.route_key(),
        (None, Target::Agent(name)) => {
            let mut hasher = rustc_hash::FxHasher::default();
            name.hash(&mut hasher);
            hasher.finish()
        }
    };
    // Spread the key's low bits, which pick the lane (`key % lanes`).
    let mixed = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed ^ (mixed >> 29)
}

/// The pool's counts, kept by the lane tasks (on the gossip shard's thread;
/// atomics because tokio tasks must be `Send`).
#[derive(Debug, Default)]
pub struct LaneCounts {
    open: AtomicU64,
    idle: AtomicU64,
    opened: AtomicU64,
    closed_idle: AtomicU64,
    closed_max_idle: AtomicU64,
    rotated: AtomicU64,
    closed_peer_gone: AtomicU64,
    broken: AtomicU64,
}

/// A snapshot of the pool's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneSnapshot {
    /// Lanes with a stream open now.
    pub open: u64,
    /// Open lanes with nothing queued.
    pub idle: u64,
    /// Streams opened, warm, on demand and by rotation.
    pub opened: u64,
    /// Lanes retired after `idle_timeout`.
    pub closed_idle: u64,
    /// Lanes retired because the pool held more than `max_idle` idle lanes.
    pub closed_max_idle: u64,
    /// Streams replaced at `max_lifetime`.
    pub rotated: u64,
    /// Lanes closed because their peer's connection was replaced or is gone.
    pub closed_peer_gone: u64,
    /// Lanes whose stream broke (their messages may be lost; senders are
    /// answered `caxton:connection-lost`).
    pub broken: u64,
}

impl LaneCounts {
    /// The counts now.
    pub fn snapshot(&self) -> LaneSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LaneSnapshot {
            open: read(&self.open),
            idle: read(&self.idle),
            opened: read(&self.opened),
            closed_idle: read(&self.closed_idle),
            closed_max_idle: read(&self.closed_max_idle),
            rotated: read(&self.rotated),
            closed_peer_gone: read(&self.closed_peer_gone),
            broken: read(&self.broken),
        }
    }
}

/// A gauge held up by one while this lives.
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn up(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The loop's handle on one lane.
pub(crate) struct Lane {
    frames: mpsc::Sender<Vec<u8>>,
    /// Fires when the lane has retired and the peer has read all it wrote.
    drained: Option<oneshot::Receiver<()>>,
}

/// One peer's lanes, on one of its connections.
pub(crate) struct PeerLanes {
    connection: usize,
    slots: Vec<Option<Lane>>,
}

/// Why a lane's stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// `max_lifetime`: go on with a fresh stream.
    Rotate,
    /// `idle_timeout`.
    Idle,
    /// Over `max_idle`.
    MaxIdle,
    /// The loop dropped the lane (a newer connection, or the node leaves).
    PeerGone,
}

/// What a lane needs to run.
#[derive(Clone)]
pub(crate) struct LaneContext {
    pub policy: LanePolicy,
    pub counts: Arc<LaneCounts>,
    /// Told the peer and the connection's id when a lane's stream breaks.
    pub broken: mpsc::UnboundedSender<(SocketAddr, usize)>,
}

impl PeerLanes {
    fn new(connection: usize, lanes: usize) -> Self {
        Self {
            connection,
            slots: (0..lanes).map(|_| None).collect(),
        }
    }
}

/// Every peer's lanes.
#[derive(Default)]
pub(crate) struct Lanes {
    peers: std::collections::HashMap<SocketAddr, PeerLanes>,
}

impl Lanes {
    /// The lanes to `peer` on `connection`; lanes on an earlier connection
    /// of the peer are dropped (they finish what they hold, or break).
    fn on(
        &mut self,
        peer: SocketAddr,
        connection: &quinn::Connection,
        lanes: usize,
    ) -> &mut PeerLanes {
        let id = connection.stable_id();
        let entry = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerLanes::new(id, lanes));
        if entry.connection != id {
            *entry = PeerLanes::new(id, lanes);
        }
        entry
    }

    /// Queue `frame` on the lane `key` picks; `false` when that lane's
    /// queue is full (the peer applies back-pressure).
    pub fn send(
        &mut self,
        peer: SocketAddr,
        connection: &quinn::Connection,
        key: u64,
        frame: Vec<u8>,
        context: &LaneContext,
    ) -> bool {
        let lanes = self.on(peer, connection, context.policy.lanes_per_peer);
        let slot = (key % lanes.slots.len() as u64) as usize;
        let lane = &mut lanes.slots[slot];
        let (after, frame) = match lane.as_mut() {
            None => (None, frame),
            Some(open) => match open.frames.try_send(frame) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                // The lane retired: its successor waits until it has drained.
                Err(mpsc::error::TrySendError::Closed(frame)) => (open.drained.take(), frame),
            },
        };
        let fresh = spawn(peer, connection.clone(), after, context);
        let taken = fresh.frames.try_send(frame).is_ok();
        *lane = Some(fresh);
        taken
    }

    /// Open the warm lanes to `peer` on `connection`.
    pub fn warm(
        &mut self,
        peer: SocketAddr,
        connection: &quinn::Connection,
        context: &LaneContext,
    ) {
        let warm = context.policy.warm.min(context.policy.lanes_per_peer);
        let lanes = self.on(peer, connection, context.policy.lanes_per_peer);
        for slot in lanes.slots.iter_mut().take(warm) {
            if slot.is_none() {
                *slot = Some(spawn(peer, connection.clone(), None, context));
            }
        }
    }

    /// The id of the connection `peer`'s lanes run on.
    pub fn connection_of(&self, peer: SocketAddr) -> Option<usize> {
        self.peers.get(&peer).map(|lanes| lanes.connection)
    }

    /// Drop `peer`'s lanes (its connection broke).
    pub fn forget(&mut self, peer: SocketAddr) {
        self.peers.remove(&peer);
    }
}

/// Start a lane to `peer`; it opens its stream once `after` (the drain of
/// the lane it replaces) has fired.
fn spawn(
    peer: SocketAddr,
    connection: quinn::Connection,
    after: Option<oneshot::Receiver<()>>,
    context: &LaneContext,
) -> Lane {
    let (frames, queue) = mpsc::channel(LANE_QUEUE);
    let (drained, drained_receiver) = oneshot::channel();
    let context = context.clone();
    tokio::spawn(async move {
        if let Some(after) = after {
            let _ = after.await;
        }
        let id = connection.stable_id();
        let outcome = run(connection, queue, &context).await;
        match outcome {
            Ok(ending) => {
                let counter = match ending {
                    Ending::Idle => &context.counts.closed_idle,
                    Ending::MaxIdle => &context.counts.closed_max_idle,
                    // `run` rotates in place: it never ends with `Rotate`.
                    Ending::PeerGone | Ending::Rotate => &context.counts.closed_peer_gone,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                debug!(%peer, "cluster: a message lane broke: {error}");
                context.counts.broken.fetch_add(1, Ordering::Relaxed);
                let _ = context.broken.send((peer, id));
            }
        }
        let _ = drained.send(());
    });
    Lane {
        frames,
        drained: Some(drained_receiver),
    }
}

type LaneError = Box<dyn std::error::Error + Send + Sync>;

async fn write_frame(stream: &mut quinn::SendStream, frame: &[u8]) -> Result<(), LaneError> {
    let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(frame).await?;
    Ok(())
}

/// A lane: streams one after another (a new one at each rotation) until it
/// retires; each stream drained before the next opens or the lane ends.
async fn run(
    connection: quinn::Connection,
    mut queue: mpsc::Receiver<Vec<u8>>,
    context: &LaneContext,
) -> Result<Ending, LaneError> {
    let policy = context.policy;
    let counts = &context.counts;
    loop {
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(&[LANE_STREAM]).await?;
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let _open = Held::up(&counts.open);
        let opened = tokio::time::Instant::now();
        let mut quiet_since = opened;
        let mut idle = Some(Held::up(&counts.idle));
        let ending = loop {
            if idle.is_some() && counts.idle.load(Ordering::Relaxed) > policy.max_idle {
                break Ending::MaxIdle;
            }
            let idle_at = quiet_since + policy.idle_timeout;
            tokio::select! {
                frame = queue.recv() => match frame {
                    Some(frame) => {
                        drop(idle.take());
                        write_frame(&mut send, &frame).await?;
                        while let Ok(frame) = queue.try_recv() {
                            write_frame(&mut send, &frame).await?;
                        }
                        quiet_since = tokio::time::Instant::now();
                        idle = Some(Held::up(&counts.idle));
                    }
                    None => break Ending::PeerGone,
                },
                () = tokio::time::sleep_until(opened + policy.max_lifetime) => break Ending::Rotate,
                () = tokio::time::sleep_until(idle_at), if idle.is_some() => {
                    if counts.idle.load(Ordering::Relaxed) > policy.min_idle {
                        break Ending::Idle;
                    }
                    // Kept for `min_idle`: look again a timeout later.
                    quiet_since = tokio::time::Instant::now();
                }
            }
        };
        if ending != Ending::Rotate {
            // A retiring lane no longer counts as idle in the pool, so a
            // lane that falls idle meanwhile judges `max_idle` without it.
            drop(idle.take());
            // No more frames for this lane; what it holds still goes out.
            queue.close();
            while let Ok(frame) = queue.try_recv() {
                write_frame(&mut send, &frame).await?;
            }
        }
        send.finish()?;
        // The peer writes one byte back once it has read to the end.
        let mut read_all = [0u8; 1];
        recv.read_exact(&mut read_all).await?;
        drop(idle.take());
        if ending == Ending::Rotate {
            counts.rotated.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        return Ok(ending);
    }
}

/// Read a lane's frames, in order, into `deliver` (each made an event by
/// `wrap`) until the stream ends; at a clean end, say so to the writer (one
/// byte back), which is what lets its successor open. A frame longer than
/// `max_frame` or a broken stream ends the lane without that byte. A full
/// `deliver` queue holds the reader back (and, through QUIC's flow control,
/// the writer): frames are never dropped for want of room.
pub(crate) async fn read_lane<T>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    max_frame: usize,
    deliver: &mpsc::Sender<T>,
    wrap: fn(Vec<u8>) -> T,
) -> Result<(), LaneError> {
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await?;
    if first[0] != LANE_STREAM {
        return Err("not a lane".into());
    }
    loop {
        let mut length = [0u8; 4];
        match recv.read_exact(&mut length).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => break,
            Err(error) => return Err(error.into()),
        }
        let length = u32::from_be_bytes(length) as usize;
        if length > max_frame {
            return Err(format!("a frame of {length} bytes on a lane").into());
        }
        let mut frame = vec![0; length];
        recv.read_exact(&mut frame).await?;
        if deliver.send(wrap(frame)).await.is_err() {
            return Err("the loop is gone".into());
        }
    }
    send.write_all(&[LANE_STREAM]).await?;
    send.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use caxton_messaging::{Address, Performative};

    use super::*;

    fn from(sender: Option<Address>, target: Target) -> RemoteMessage {
        let mut message = RemoteMessage::new(target, Performative::Request, vec![1]);
        message.sender = sender;
        message
    }

    #[test]
    fn one_sender_keeps_one_lane_and_senders_spread_over_lanes() {
        let lanes = 4;
        let client = |id| Some(Address::Client { port: 3, id });
        let first = lane_key(&from(client(1), Target::Agent("echo".into())));
        assert_eq!(
            lane_key(&from(client(1), Target::Agent("tally".into()))),
            first,
            "the sender, not the target, picks the lane"
        );
        let used: std::collections::HashSet<u64> = (0..64)
            .map(|id| lane_key(&from(client(id), Target::Agent("echo".into()))) % lanes)
            .collect();
        assert_eq!(used.len(), lanes as usize, "64 senders use every lane");
        // Without a sender: the target picks, and the same target the same lane.
        let home = Address::Client { port: 3, id: 9 };
        assert_eq!(
            lane_key(&from(None, Target::Address(home))),
            lane_key(&from(None, Target::Address(home)))
        );
        let answers: std::collections::HashSet<u64> = (0..64)
            .map(|id| {
                lane_key(&from(
                    None,
                    Target::Address(Address::Client { port: 3, id }),
                )) % lanes
            })
            .collect();
        assert_eq!(answers.len(), lanes as usize, "answers home spread too");
    }
}
