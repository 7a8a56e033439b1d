//! The cluster's drivers: the membership core on real time and real
//! sockets, on the gossip shard's tokio runtime.
//!
//! One loop owns the [`Membership`] and the links to peers; it wakes for a
//! frame, a timer of the core's, or a query from the admin endpoint, and
//! sends what the core leaves. Tasks it spawns (accepting, connecting,
//! reading a connection) only pass frames and connections back to it over a
//! bounded channel; a frame that finds the channel full is dropped and
//! counted, as the network could have dropped it.
//!
//! - QUIC (quinn): one endpoint both listens and dials, so a peer's
//!   connection comes from its cluster address. A frame goes as a datagram
//!   when the peer takes datagrams and the path carries its size, otherwise
//!   on a short unidirectional stream.
//! - TLS over TCP (`transport.type: tcp`): a connection per direction;
//!   frames are length-prefixed on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use caxton_messaging::idle_poll::PollContention;
use caxton_profiles::{CongestionControl, QuicConfig, TcpConfig, TransportKind};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::directory::{AgentCounts, NodeAgents};
use crate::lanes::{lane_key, read_lane, LaneContext, LaneCounts, LaneSnapshot, Lanes};
use crate::membership::{
    MemberView, Membership, MembershipCounters, MembershipEvent, Now, StateCounts,
};
use crate::remote::{
    IdlePoll, Inbound, LocalSide, NoLocal, Outbound, RemoteBatch, RemoteCounters, RemoteMessage,
    RemoteRouter, Target, TooLarge,
};
use crate::settings::ClusterSettings;
use crate::tls::{NodeTls, TlsError};
use crate::wire::{
    self, FrameKind, NodeId, DIRECTORY_PACKET_MAX, FRAME_OVERHEAD, MESSAGES_PACKET_MAX,
};

/// Frames waiting in the loop's channel at most.
const EVENTS_QUEUED_MAX: usize = 4096;

/// Frames held for a peer while its connection opens.
const PENDING_FRAMES_MAX: usize = 64;

/// QUIC frames being sent on streams at once (all peers together).
const STREAM_SENDS_MAX: usize = 256;

/// Inbound TLS-over-TCP connections at once (authenticated or not).
const TCP_CONNECTIONS_MAX: usize = 1024;

/// How long a leaving node waits for its farewell to be acknowledged.
const LEAVE_GRACE: Duration = Duration::from_millis(500);

/// Counts kept by the transport's tasks (all on the gossip shard's thread;
/// atomics because tokio tasks must be `Send`).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Handshakes refused, by either side: a peer without a certificate
    /// from the cluster's CA, or not speaking the cluster protocol, or a
    /// peer that refused this node's certificate.
    pub handshakes_refused: AtomicU64,
    /// Of those, the ones the peer refused (it closed with a TLS alert):
    /// this node's certificate is not from the peer's CA.
    pub handshakes_refused_by_peer: AtomicU64,
    /// Connections opened, both directions.
    pub connections_opened: AtomicU64,
    /// Dials that failed.
    pub connect_failures: AtomicU64,
    /// Frames sent as QUIC datagrams.
    pub frames_as_datagrams: AtomicU64,
    /// Frames sent on streams (TCP, or QUIC when a datagram would not do).
    pub frames_on_streams: AtomicU64,
    /// Frames the transport dropped: the loop's channel full, no connection
    /// came, a datagram refused, or (trial mode) an address beyond loopback.
    pub frames_dropped: AtomicU64,
    /// When a refused handshake with each peer host was last logged.
    // A lock, on the gossip shard's control plane only: refusals are
    // handshakes, never messages, and the tokio tasks that see them must
    // share one throttle per host.
    refusal_log: std::sync::Mutex<RefusalLog>,
}

/// Per peer host (its IP: an inbound dial comes from a new port each time),
/// when a refused handshake was last logged and how many were not since.
#[derive(Debug, Default)]
struct RefusalLog {
    hosts: HashMap<std::net::IpAddr, (Instant, u64)>,
}

impl RefusalLog {
    /// Hosts remembered at most: past this, those quiet for a whole
    /// [`REFUSAL_LOG_EVERY`] are forgotten, so a scan of many addresses
    /// cannot grow the map without bound.
    const HOSTS_MAX: usize = 1024;

    /// Whether a refusal from `host` at `now` is logged, and how many were
    /// not since the last line about that host.
    fn admit(&mut self, host: std::net::IpAddr, now: Instant) -> Option<u64> {
        if self.hosts.len() >= Self::HOSTS_MAX && !self.hosts.contains_key(&host) {
            self.hosts
                .retain(|_, (last, _)| now.duration_since(*last) < REFUSAL_LOG_EVERY);
            if self.hosts.len() >= Self::HOSTS_MAX {
                return None;
            }
        }
        match self.hosts.get_mut(&host) {
            Some((last, unlogged)) if now.duration_since(*last) < REFUSAL_LOG_EVERY => {
                *unlogged += 1;
                None
            }
            Some((last, unlogged)) => {
                let skipped = *unlogged;
                *last = now;
                *unlogged = 0;
                Some(skipped)
            }
            None => {
                self.hosts.insert(host, (now, 0));
                Some(0)
            }
        }
    }
}

/// A snapshot of the transport's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportCounts {
    /// See [`TransportStats::handshakes_refused`].
    pub handshakes_refused: u64,
    /// See [`TransportStats::handshakes_refused_by_peer`].
    #[serde(default)]
    pub handshakes_refused_by_peer: u64,
    /// See [`TransportStats::connections_opened`].
    pub connections_opened: u64,
    /// See [`TransportStats::connect_failures`].
    pub connect_failures: u64,
    /// See [`TransportStats::frames_as_datagrams`].
    pub frames_as_datagrams: u64,
    /// See [`TransportStats::frames_on_streams`].
    pub frames_on_streams: u64,
    /// See [`TransportStats::frames_dropped`].
    pub frames_dropped: u64,
    /// Peers with an open connection.
    pub connections: u64,
}

impl TransportStats {
    fn counts(&self, connections: usize) -> TransportCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportCounts {
            handshakes_refused: read(&self.handshakes_refused),
            handshakes_refused_by_peer: read(&self.handshakes_refused_by_peer),
            connections_opened: read(&self.connections_opened),
            connect_failures: read(&self.connect_failures),
            frames_as_datagrams: read(&self.frames_as_datagrams),
            frames_on_streams: read(&self.frames_on_streams),
            frames_dropped: read(&self.frames_dropped),
            connections: connections as u64,
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// This node's view of the cluster, for `engine cluster status|members`
/// and the metrics.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClusterSnapshot {
    /// This node.
    pub node: NodeId,
    /// `quic` or `tcp`.
    pub transport: String,
    /// The address the transport is bound to.
    pub listen: SocketAddr,
    /// Whether peers are authenticated against the cluster's CA.
    pub authenticated: bool,
    /// Members by state.
    pub counts: StateCounts,
    /// Every member this node knows.
    pub members: Vec<MemberView>,
    /// The seeds it joins through (its own address left out).
    pub seeds: Vec<SocketAddr>,
    /// Rounds of joins through the seeds no member has answered since the
    /// node started or was last alone.
    pub unanswered_joins: u32,
    /// The core's counts.
    pub membership: MembershipCounters,
    /// The transport's counts.
    pub transport_counts: TransportCounts,
    /// The suspicion timeout in force, in milliseconds.
    pub suspicion_timeout_ms: u64,
    /// The SWIM settings this node runs.
    pub swim: SwimSummary,
    /// Arrivals timed so far, and their P50/P99/max in seconds.
    pub convergence: ConvergenceSummary,
    /// The arrival times, for the Prometheus histogram.
    #[serde(skip)]
    pub convergence_histogram: Option<Histogram<u64>>,
    /// The cluster directory: this node's agents and every other node's.
    pub directory: DirectorySnapshot,
    /// Remote routing's counts.
    pub remote: RemoteCounters,
    /// Remote-message traffic per peer.
    pub remote_peers: Vec<RemotePeerTraffic>,
    /// Hops of durable chains kept until their hosts store them (sent and
    /// awaiting acknowledgement, or waiting for a host).
    #[serde(default)]
    pub chain_hops: u64,
    /// Of those, the hops waiting for a live node to host their agent.
    #[serde(default)]
    pub chain_hops_waiting: u64,
    /// Answers for senders on this node waiting for room in a full ring.
    #[serde(default)]
    pub answers_waiting: u64,
    /// Times the cluster loop, polling the remote port
    /// (`runtime.spin_before_park`), found its CPU taken by another thread
    /// and parked instead ([`caxton_messaging::idle_poll`]).
    #[serde(default)]
    pub idle_polls_contended: u64,
    /// The message lanes (`transport.connection_pool`).
    #[serde(default)]
    pub lanes: LaneSnapshot,
}

/// Remote messages between this node and one peer, each way.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemotePeerTraffic {
    /// The peer's address.
    pub peer: String,
    /// Messages sent to it.
    pub messages_out: u64,
    /// Frames (batches) sent to it.
    pub frames_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
    /// Messages received from it.
    pub messages_in: u64,
    /// Frames (batches) received from it.
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
}

/// The cluster directory as one node holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectorySnapshot {
    /// This node's list version (0: nothing published yet).
    pub version: u64,
    /// This node's agents and instances.
    pub local: AgentCounts,
    /// Every other node's list this node holds, by node name.
    pub nodes: Vec<NodeAgents>,
    /// Agents no live node hosts, each with the node declared down that
    /// hosted it last: a send to one is answered `caxton:node-down`.
    #[serde(default)]
    pub departed: Vec<(String, NodeId)>,
}

/// The SWIM settings, for `engine cluster analyze-gossip`.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwimSummary {
    /// `gossip_interval`, milliseconds.
    pub gossip_interval_ms: u64,
    /// `gossip_fanout`.
    pub gossip_fanout: u64,
    /// `probe_interval`, milliseconds.
    pub probe_interval_ms: u64,
    /// `probe_timeout`, milliseconds.
    pub probe_timeout_ms: u64,
    /// `suspicion_multiplier`.
    pub suspicion_multiplier: u32,
}

impl From<&crate::SwimSettings> for SwimSummary {
    fn from(swim: &crate::SwimSettings) -> Self {
        Self {
            gossip_interval_ms: swim.gossip_interval.as_millis() as u64,
            gossip_fanout: swim.gossip_fanout as u64,
            probe_interval_ms: swim.probe_interval.as_millis() as u64,
            probe_timeout_ms: swim.probe_timeout.as_millis() as u64,
            suspicion_multiplier: swim.suspicion_multiplier,
        }
    }
}

/// A convergence histogram, summarized.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ConvergenceSummary {
    /// Arrivals timed.
    pub count: u64,
    /// Median, seconds.
    pub p50_seconds: f64,
    /// 99th percentile, seconds.
    pub p99_seconds: f64,
    /// Slowest, seconds.
    pub max_seconds: f64,
}

/// A question for the cluster loop.
pub enum ClusterQuery {
    /// Answer with a [`ClusterSnapshot`].
    Snapshot(oneshot::Sender<ClusterSnapshot>),
    /// The agents this node now hosts (name → instances), for the directory.
    PublishAgents(AgentCounts),
}

/// How the admin endpoint asks the cluster loop.
#[derive(Clone)]
pub struct ClusterHandle {
    queries: mpsc::Sender<ClusterQuery>,
}

impl ClusterHandle {
    /// A handle and the receiving end for [`run`].
    pub fn channel() -> (Self, mpsc::Receiver<ClusterQuery>) {
        let (queries, receiver) = mpsc::channel(64);
        (Self { queries }, receiver)
    }

    /// This node's view, or `None` when the loop has stopped.
    pub async fn snapshot(&self) -> Option<ClusterSnapshot> {
        let (answer, result) = oneshot::channel();
        self.queries
            .send(ClusterQuery::Snapshot(answer))
            .await
            .ok()?;
        result.await.ok()
    }

    /// Tell the cluster which agents this node hosts now; `false` when the
    /// loop has stopped.
    pub async fn publish_agents(&self, agents: AgentCounts) -> bool {
        self.queries
            .send(ClusterQuery::PublishAgents(agents))
            .await
            .is_ok()
    }
}

/// The cluster transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {message}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        message: String,
    },
}

/// quinn's transport settings from `transport.quic`:
/// `max_concurrent_streams` → concurrent bidirectional and unidirectional
/// streams a peer may open; `stream_receive_window` and
/// `connection_receive_window` → the flow-control windows; `keep_alive_interval`
/// (0: none) and `idle_timeout`; `congestion_control` → the controller;
/// `enable_datagram` → whether this node accepts datagrams (a peer that does
/// not gets frames on streams); `max_datagram_size` → the upper bound of path
/// MTU discovery (a frame larger than the path carries goes on a stream).
pub fn quic_transport_config(quic: &QuicConfig) -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    let streams = quinn::VarInt::from_u32(quic.max_concurrent_streams);
    config.max_concurrent_bidi_streams(streams);
    config.max_concurrent_uni_streams(streams);
    let window = |bytes: u64| quinn::VarInt::from_u64(bytes).unwrap_or(quinn::VarInt::MAX);
    config.stream_receive_window(window(quic.stream_receive_window.bytes()));
    config.receive_window(window(quic.connection_receive_window.bytes()));
    let keep_alive = quic.keep_alive_interval.get();
    config.keep_alive_interval((!keep_alive.is_zero()).then_some(keep_alive));
    config.max_idle_timeout(quinn::IdleTimeout::try_from(quic.idle_timeout.get()).ok());
    let factory: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> =
        match quic.congestion_control {
            CongestionControl::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            CongestionControl::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
            CongestionControl::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
        };
    config.congestion_controller_factory(factory);
    if !quic.enable_datagram {
        config.datagram_receive_buffer_size(None);
    }
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    // A datagram carries the frame plus QUIC's own headers (< 64 bytes).
    let upper = (quic.max_datagram_size as usize + 64).min(u16::MAX as usize) as u16;
    mtu.upper_bound(upper.max(1200));
    config.mtu_discovery_config(Some(mtu));
    config
}

/// A quinn endpoint that listens and dials with the node's TLS.
pub fn quic_endpoint(
    listen: SocketAddr,
    tls: &NodeTls,
    quic: &QuicConfig,
) -> Result<quinn::Endpoint, ClusterError> {
    let transport = Arc::new(quic_transport_config(quic));
    let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::clone(&tls.server))
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(Arc::clone(&transport));
    let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&tls.client))
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    let mut endpoint =
        quinn::Endpoint::server(server, listen).map_err(|error| ClusterError::Bind {
            address: listen,
            message: error.to_string(),
        })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// The longest a QUIC handshake may take before the dial counts as failed.
/// quinn's own bound is the connection's idle timeout (`transport.quic.
/// idle_timeout`, 2 minutes by default), during which a seed that never
/// answers (nothing listens there, a firewall drops the packets) would show
/// no failure at all. A handshake is a few round trips; 5 s covers a WAN
/// with room to spare, as `transport.tcp.connect_timeout`'s default does
/// for TCP.
pub const QUIC_HANDSHAKE_MAX: Duration = Duration::from_secs(5);

/// Dial `to` on `endpoint`: connected, or why not within `limit` (at most
/// the idle timeout, which ends a handshake first when it is shorter).
/// With 0-RTT (`enable_0rtt` and a resumable session) frames go out with
/// the handshake and the connection is handed over at once.
pub async fn dial_quic(
    endpoint: &quinn::Endpoint,
    to: SocketAddr,
    limit: Duration,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect(to, crate::tls::SERVER_NAME)
        .map_err(|error| error.to_string())?;
    match connecting.into_0rtt() {
        Ok((connection, _accepted)) => Ok(connection),
        Err(connecting) => match tokio::time::timeout(limit, connecting).await {
            Ok(connected) => connected.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer to the QUIC handshake within {limit:?}")),
        },
    }
}

/// Apply `transport.tcp` to a socket: `nodelay`, `keepalive` with its time,
/// interval and probes, the buffer sizes, and `linger`.
pub fn configure_tcp(socket: &socket2::SockRef<'_>, tcp: &TcpConfig) -> std::io::Result<()> {
    socket.set_tcp_nodelay(tcp.nodelay)?;
    if tcp.keepalive {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(tcp.keepalive_time.get())
            .with_interval(tcp.keepalive_interval.get())
            .with_retries(tcp.keepalive_probes);
        socket.set_tcp_keepalive(&keepalive)?;
    } else {
        socket.set_keepalive(false)?;
    }
    socket.set_send_buffer_size(tcp.send_buffer_size.bytes() as usize)?;
    socket.set_recv_buffer_size(tcp.recv_buffer_size.bytes() as usize)?;
    socket.set_linger(Some(Duration::from_secs(u64::from(tcp.linger))))?;
    Ok(())
}

/// What the loop's helpers tell it.
enum Event {
    Frame(Vec<u8>),
    QuicConnected(quinn::Connection),
    TcpConnected(SocketAddr, mpsc::Sender<Vec<u8>>, Arc<tokio::sync::Notify>),
    /// The TCP connection this node dialed to a peer ended; the link is
    /// named by its `drained` signal, unique to each connection.
    TcpClosed(SocketAddr, Arc<tokio::sync::Notify>),
    ConnectFailed(SocketAddr),
    /// A message lane to a peer broke (on the connection of that id):
    /// remote messages on it may be lost.
    LaneBroken(SocketAddr, usize),
}

/// A link to one peer.
enum Peer {
    /// Frames waiting for the connection; a frame of remote messages with
    /// its lane key.
    Connecting(Vec<(Option<u64>, Vec<u8>)>),
    Quic(quinn::Connection),
    Tcp(mpsc::Sender<Vec<u8>>, Arc<tokio::sync::Notify>),
}

impl Peer {
    /// A connection that was open and has ended (not one being made).
    fn has_ended(&self) -> bool {
        match self {
            Self::Connecting(_) => false,
            Self::Quic(connection) => connection.close_reason().is_some(),
            Self::Tcp(writer, _) => writer.is_closed(),
        }
    }
}

/// Sockets and connections of either transport.
struct Links {
    kind: TransportKind,
    endpoint: Option<quinn::Endpoint>,
    tcp_connector: Option<tokio_rustls::TlsConnector>,
    tcp: TcpConfig,
    datagrams: bool,
    peers: HashMap<SocketAddr, Peer>,
    /// When each peer's current connection opened (wall clock, to compare
    /// with a restarted member's generation).
    opened_at: HashMap<SocketAddr, std::time::SystemTime>,
    events: mpsc::Sender<Event>,
    stats: Arc<TransportStats>,
    max_frame: usize,
    authenticated: bool,
    stream_sends: Arc<tokio::sync::Semaphore>,
    /// The QUIC streams that carry remote messages to each peer.
    lanes: Lanes,
    lane_context: LaneContext,
    /// Peers whose connection was found closed when a frame was to go on
    /// it, and is being replaced: what was in flight on it is lost
    /// ([`Links::take_broken`]). A QUIC connection that ends (its idle
    /// timeout passed while either side stalled, a reset) says so to no
    /// one, and its lanes may not notice before their next write.
    broken: Vec<SocketAddr>,
}

/// What became of a frame of remote messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameTaken {
    /// On its way, or queued for a connection being made.
    Yes,
    /// The lane's queue is full: the peer applies back-pressure.
    PeerBusy,
    /// The peer's connection had ended; the frame was not sent, and the
    /// next one dials afresh.
    ConnectionEnded,
}

impl Links {
    /// The peers whose connections ended since the last call (see
    /// [`Links::broken`]). The caller answers what was in flight to them
    /// before any new message for them is tracked.
    fn take_broken(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.broken)
    }

    /// `to`'s link is no longer usable: note it as broken when it was an
    /// open connection (not one being made, nor none), and drop it.
    fn drop_ended_link(&mut self, to: SocketAddr) {
        if matches!(self.peers.get(&to), Some(Peer::Quic(_) | Peer::Tcp(..))) {
            self.peers.remove(&to);
            self.opened_at.remove(&to);
            self.lanes.forget(to);
            self.note_broken(to);
        }
    }

    /// What was in flight to `to` is lost (see [`Links::broken`]).
    fn note_broken(&mut self, to: SocketAddr) {
        if !self.broken.contains(&to) {
            self.broken.push(to);
        }
    }

    fn connections(&self) -> usize {
        self.peers
            .values()
            .filter(|peer| !matches!(peer, Peer::Connecting(_)))
            .count()
    }

    /// Send `frame` to `to`, dialing first if need be. `reliable` sends on a
    /// stream whatever its size (a farewell must arrive).
    fn send(
        &mut self,
        to: SocketAddr,
        frame: Vec<u8>,
        reliable: bool,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let to = canonical(to);
        // Without certificates (loopback trial mode) nothing leaves the machine.
        if !self.authenticated && !to.ip().is_loopback() {
            bump(&self.stats.frames_dropped);
            return None;
        }
        match self.peers.get_mut(&to) {
            Some(Peer::Quic(connection)) if connection.close_reason().is_none() => {
                let fits = connection
                    .max_datagram_size()
                    .is_some_and(|size| frame.len() <= size);
                if self.datagrams && fits && !reliable {
                    if connection.send_datagram(frame.into()).is_ok() {
                        bump(&self.stats.frames_as_datagrams);
                    } else {
                        bump(&self.stats.frames_dropped);
                    }
                    return None;
                }
                // Stream sends in flight are bounded: a peer that withholds
                // stream credit cannot make them pile up.
                let Ok(permit) = Arc::clone(&self.stream_sends).try_acquire_owned() else {
                    bump(&self.stats.frames_dropped);
                    return None;
                };
                bump(&self.stats.frames_on_streams);
                let connection = connection.clone();
                Some(tokio::spawn(async move {
                    let _permit = permit;
                    let sent = async {
                        let mut stream = connection.open_uni().await?;
                        stream.write_all(&frame).await?;
                        stream.finish()?;
                        let _ = stream.stopped().await;
                        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                    };
                    if let Err(error) = sent.await {
                        debug!("cluster: a frame on a stream failed: {error}");
                    }
                }))
            }
            Some(Peer::Tcp(writer, _)) if !writer.is_closed() => {
                bump(&self.stats.frames_on_streams);
                if writer.try_send(frame).is_err() {
                    bump(&self.stats.frames_dropped);
                }
                None
            }
            Some(Peer::Connecting(pending)) => {
                if pending.len() < PENDING_FRAMES_MAX {
                    pending.push((None, frame));
                } else {
                    bump(&self.stats.frames_dropped);
                }
                None
            }
            _ => {
                self.drop_ended_link(to);
                self.peers.insert(to, Peer::Connecting(vec![(None, frame)]));
                self.dial(to);
                None
            }
        }
    }

    fn dial(&self, to: SocketAddr) {
        let events = self.events.clone();
        let stats = Arc::clone(&self.stats);
        match self.kind {
            TransportKind::Quic => {
                let Some(endpoint) = self.endpoint.clone() else {
                    return;
                };
                tokio::spawn(async move {
                    match dial_quic(&endpoint, to, QUIC_HANDSHAKE_MAX).await {
                        Ok(connection) => {
                            bump(&stats.connections_opened);
                            let _ = events.send(Event::QuicConnected(connection)).await;
                        }
                        Err(error) => {
                            note_refusal(&stats, to, &error);
                            debug!(peer = %to, "cluster: cannot connect: {error}");
                            bump(&stats.connect_failures);
                            let _ = events.send(Event::ConnectFailed(to)).await;
                        }
                    }
                });
            }
            TransportKind::Tcp => {
                let Some(connector) = self.tcp_connector.clone() else {
                    return;
                };
                let tcp = self.tcp.clone();
                tokio::spawn(async move {
                    match dial_tcp(to, &tcp, connector).await {
                        Ok(stream) => {
                            bump(&stats.connections_opened);
                            let (writer, mut frames) = mpsc::channel::<Vec<u8>>(256);
                            // Signalled when the writer has written everything
                            // and closed: a leaving node waits for it.
                            let drained = Arc::new(tokio::sync::Notify::new());
                            let done = Arc::clone(&drained);
                            let (mut read_half, mut stream) = tokio::io::split(stream);
                            // The writer's end (the link dropped, or a write
                            // failed) stops the watch below, which holds the
                            // socket's read half: without it the socket would
                            // stay open until the peer closed it.
                            let (stop_watch, mut watch_stopped) =
                                tokio::sync::oneshot::channel::<()>();
                            tokio::spawn(async move {
                                while let Some(frame) = frames.recv().await {
                                    let length = (frame.len() as u32).to_be_bytes();
                                    if stream.write_all(&length).await.is_err()
                                        || stream.write_all(&frame).await.is_err()
                                    {
                                        break;
                                    }
                                    if frames.is_empty() && stream.flush().await.is_err() {
                                        break;
                                    }
                                }
                                let _ = stream.shutdown().await;
                                let _ = stop_watch.send(());
                                done.notify_one();
                            });
                            let link = Arc::clone(&drained);
                            let _ = events.send(Event::TcpConnected(to, writer, drained)).await;
                            // The peer never writes on a connection this node
                            // dialed: a read that ends (its process gone, or
                            // the connection reset) is the link's end, seen at
                            // once rather than at the next write or verdict.
                            // Watched only once the link is installed, so its
                            // end never overtakes its start in the loop.
                            tokio::spawn(async move {
                                let mut scratch = [0u8; 256];
                                let ended = async {
                                    while matches!(read_half.read(&mut scratch).await, Ok(read) if read > 0)
                                    {
                                    }
                                };
                                tokio::select! {
                                    () = ended => {
                                        let _ = events.send(Event::TcpClosed(to, link)).await;
                                    }
                                    _ = &mut watch_stopped => {}
                                }
                            });
                        }
                        Err(error) => {
                            note_refusal(&stats, to, &error);
                            debug!(peer = %to, "cluster: cannot connect over TCP: {error}");
                            bump(&stats.connect_failures);
                            let _ = events.send(Event::ConnectFailed(to)).await;
                        }
                    }
                });
            }
        }
    }

    /// Send a frame of remote messages to `to` on the lane `key` picks, in
    /// order after that lane's earlier frames; not taken when the lane's
    /// queue is full (the peer applies back-pressure) or the peer's
    /// connection has ended. `afresh`: a frame with no request awaiting an
    /// answer, sent even while the peer's ended connection is being
    /// answered for, on the connection dialed next.
    fn send_messages_frame(
        &mut self,
        to: SocketAddr,
        key: u64,
        frame: Vec<u8>,
        afresh: bool,
    ) -> FrameTaken {
        let to = canonical(to);
        // Without certificates (loopback trial mode) nothing leaves the machine.
        if !self.authenticated && !to.ip().is_loopback() {
            bump(&self.stats.frames_dropped);
            return FrameTaken::Yes;
        }
        // Its connection ended this round: the rest of the round's
        // requests for it go the same way, so that no request tracked
        // before the in-flight ones are answered lost goes out on a new
        // connection (and is answered twice).
        if !afresh && self.broken.contains(&to) {
            return FrameTaken::ConnectionEnded;
        }
        let taken = |sent: bool| {
            if sent {
                FrameTaken::Yes
            } else {
                FrameTaken::PeerBusy
            }
        };
        match self.peers.get_mut(&to) {
            Some(Peer::Quic(connection)) if connection.close_reason().is_none() => {
                let connection = connection.clone();
                bump(&self.stats.frames_on_streams);
                taken(
                    self.lanes
                        .send(to, &connection, key, frame, &self.lane_context),
                )
            }
            Some(Peer::Tcp(writer, _)) if !writer.is_closed() => {
                bump(&self.stats.frames_on_streams);
                taken(writer.try_send(frame).is_ok())
            }
            Some(Peer::Connecting(pending)) => {
                let room = pending.len() < PENDING_FRAMES_MAX;
                if room {
                    pending.push((Some(key), frame));
                }
                taken(room)
            }
            // Ended: this frame's messages are answered as not sent, and
            // those in flight on it as lost, before the next frame dials
            // again. Sent on the new connection after those answers, the
            // frame's requests could be answered twice.
            Some(Peer::Quic(_) | Peer::Tcp(..)) => {
                self.drop_ended_link(to);
                FrameTaken::ConnectionEnded
            }
            None => {
                self.peers
                    .insert(to, Peer::Connecting(vec![(Some(key), frame)]));
                self.dial(to);
                FrameTaken::Yes
            }
        }
    }

    /// Send what waited for `to`'s connection; the frames of remote
    /// messages it would not take (with their lanes), and why.
    fn send_pending(
        &mut self,
        to: SocketAddr,
        pending: Vec<(Option<u64>, Vec<u8>)>,
    ) -> Vec<NotSent> {
        let mut refused = Vec::new();
        for (key, frame) in pending {
            match key {
                // A copy, kept for the senders should it not be taken: this
                // is only the few frames that waited for a connection.
                Some(key) => match self.send_messages_frame(to, key, frame.clone(), false) {
                    FrameTaken::Yes => {}
                    FrameTaken::PeerBusy => refused.push(NotSent::Refused {
                        reason: "refused:peer-busy",
                        frame,
                    }),
                    FrameTaken::ConnectionEnded => {
                        refused.push(NotSent::ConnectionEnded { lane: key, frame })
                    }
                },
                None => {
                    self.send(to, frame, false);
                }
            }
        }
        refused
    }

    fn connected(&mut self, to: SocketAddr, peer: Peer) -> Vec<(Option<u64>, Vec<u8>)> {
        self.opened_at.insert(to, std::time::SystemTime::now());
        // The peer dialed again before a frame from here found the old
        // connection ended: what was in flight on it is lost all the same.
        // (Its lanes are the new connection's already; an open one being
        // replaced, as when both sides dial at once, loses nothing.)
        if self.peers.get(&to).is_some_and(Peer::has_ended) {
            self.note_broken(to);
        }
        match self.peers.insert(to, peer) {
            Some(Peer::Connecting(pending)) => pending,
            _ => Vec::new(),
        }
    }

    /// Close and drop the link to `peer` when it leads to an identity that
    /// is gone: always for a member declared down; for one back under a
    /// newer generation (`started`), when the link opened before that
    /// (less [`STALE_LINK_MARGIN`]). A QUIC connection to a dead process
    /// looks open until its idle timeout (minutes, by default): frames sent
    /// on it are lost, and a process restarted at the same address never
    /// hears them. A link the new process opened is kept: closing it would
    /// cut off the join it is making. The next frame for `peer` dials afresh.
    fn forget_stale(&mut self, peer: SocketAddr, started: Option<std::time::SystemTime>) {
        let peer = canonical(peer);
        let stale = match (started, self.opened_at.get(&peer)) {
            (None, _) => true,
            (Some(started), Some(opened)) => *opened + STALE_LINK_MARGIN < started,
            (Some(_), None) => false,
        };
        if !stale {
            return;
        }
        self.opened_at.remove(&peer);
        // Its lanes are old news: their breaking loses nothing more.
        self.lanes.forget(peer);
        match self.peers.remove(&peer) {
            Some(Peer::Quic(connection)) => {
                connection.close(0u32.into(), b"member gone");
            }
            // Dropping the writer ends its task, which shuts the stream.
            Some(Peer::Tcp(..)) => {}
            // Not connected yet: what waited is dialed again on the next frame.
            Some(Peer::Connecting(pending)) => {
                self.peers.insert(peer, Peer::Connecting(pending));
            }
            None => {}
        }
    }
}

/// A handshake that failed on certificates is a refusal, and is counted
/// ([`count_refusal`]); other failures (no answer, a reset) are not.
fn note_refusal(stats: &TransportStats, peer: SocketAddr, error: &str) {
    let lower = error.to_ascii_lowercase();
    if !(lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("crypto")
        || lower.contains("alpn"))
    {
        return;
    }
    count_refusal(stats, peer, error);
}

/// Whether a failed handshake was the peer's refusal of this node: it
/// closed with a TLS alert (rustls: "received fatal alert"; quinn:
/// "aborted by peer: the cryptographic handshake failed"). Otherwise this
/// node refused the peer ("invalid peer certificate", "peer sent no
/// certificates", a timeout). A peer that closed the connection for its
/// own reasons mid-handshake (quinn: "aborted by peer: the application
/// ... caused the connection to be closed", as a restarting or stopping
/// node does) refused nothing.
fn refused_by_peer(error: &str) -> bool {
    let lower = error.to_ascii_lowercase();
    lower.contains("received fatal alert")
        || (lower.contains("aborted by peer") && lower.contains("cryptographic"))
}

/// Count a refused handshake with `peer` and log it, naming which side
/// refused and, for a certificate from another CA, what to check; a host
/// refused again and again (it keeps dialing, or this node does) is logged
/// at most once every [`REFUSAL_LOG_EVERY`], with how many were not.
fn count_refusal(stats: &TransportStats, peer: SocketAddr, error: &str) {
    bump(&stats.handshakes_refused);
    let by_peer = refused_by_peer(error);
    if by_peer {
        bump(&stats.handshakes_refused_by_peer);
    }
    let skipped = match stats.refusal_log.lock() {
        Ok(mut log) => log.admit(peer.ip(), Instant::now()),
        Err(_) => Some(0),
    };
    let Some(skipped) = skipped else {
        return;
    };
    let lower = error.to_ascii_lowercase();
    let hint = if by_peer {
        ": the peer does not trust this node's certificate; one of the two holds a certificate or CA file (coordination.cluster.tls) from another CA, or none"
    } else if lower.contains("badsignature") || lower.contains("unknownissuer") {
        ": the peer's certificate is not from this node's CA (coordination.cluster.tls.ca_file); nodes of one cluster need certificates from one CA"
    } else {
        ""
    };
    let earlier = if skipped > 0 {
        format!(" ({skipped} more from this host since the last such line)")
    } else {
        String::new()
    };
    if by_peer {
        warn!(%peer, "cluster: {peer} refused this node's handshake: {error}{hint}{earlier}");
    } else {
        warn!(%peer, "cluster: refused a handshake with {peer}: {error}{hint}{earlier}");
    }
}

/// How much earlier than a restarted member's generation (its clock) a
/// link must have opened (this node's clock) to be taken for one to its
/// old process: the two clocks may disagree by a little, and a link the
/// new process opens comes milliseconds after its start. A link to the old
/// process opened within this margin of the restart is kept (the old
/// behaviour: it serves until its idle timeout).
const STALE_LINK_MARGIN: Duration = Duration::from_secs(1);

/// The least time between two log lines about refused handshakes.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Dial `to` over TCP with `transport.tcp`'s socket options, giving up after
/// its `connect_timeout`, then complete a TLS handshake as a client.
pub async fn dial_tcp(
    to: SocketAddr,
    tcp: &TcpConfig,
    connector: tokio_rustls::TlsConnector,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|error| error.to_string())?;
    configure_tcp(&socket2::SockRef::from(&socket), tcp).map_err(|error| error.to_string())?;
    socket
        .set_nonblocking(true)
        .map_err(|error| error.to_string())?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let stream = tokio::time::timeout(tcp.connect_timeout.get(), socket.connect(to))
        .await
        .map_err(|_| {
            format!(
                "no connection within {} (transport.tcp.connect_timeout)",
                tcp.connect_timeout
            )
        })?
        .map_err(|error| error.to_string())?;
    tokio::time::timeout(
        tcp.connect_timeout.get(),
        connector.connect(NodeTls::server_name(), stream),
    )
    .await
    .map_err(|_| {
        format!(
            "no TLS handshake within {} (transport.tcp.connect_timeout)",
            tcp.connect_timeout
        )
    })?
    .map_err(|error| format!("TLS handshake: {error}"))
}

/// Read frames off a QUIC connection (datagrams and streams) until it closes.
fn read_quic(
    connection: quinn::Connection,
    events: mpsc::Sender<Event>,
    stats: Arc<TransportStats>,
    max_frame: usize,
) {
    let lanes = connection.clone();
    let lane_events = events.clone();
    let lane_stats = Arc::clone(&stats);
    tokio::spawn(async move {
        while let Ok((send, recv)) = lanes.accept_bi().await {
            let events = lane_events.clone();
            let stats = Arc::clone(&lane_stats);
            tokio::spawn(async move {
                let read = read_lane(send, recv, max_frame, &events, Event::Frame).await;
                if let Err(error) = read {
                    debug!("cluster: a message lane ended early: {error}");
                    bump(&stats.frames_dropped);
                }
            });
        }
    });
    let streams = connection.clone();
    let stream_events = events.clone();
    let stream_stats = Arc::clone(&stats);
    tokio::spawn(async move {
        while let Ok(mut stream) = streams.accept_uni().await {
            let events = stream_events.clone();
            let stats = Arc::clone(&stream_stats);
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if stream.read_exact(&mut first).await.is_err() {
                    bump(&stats.frames_dropped);
                    return;
                }
                match stream.read_to_end(max_frame.saturating_sub(1)).await {
                    Ok(rest) => {
                        let mut frame = Vec::with_capacity(rest.len() + 1);
                        frame.push(first[0]);
                        frame.extend_from_slice(&rest);
                        forward(&events, &stats, frame);
                    }
                    Err(error) => {
                        debug!("cluster: a stream frame was not read: {error}");
                        bump(&stats.frames_dropped);
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        let ended = loop {
            match connection.read_datagram().await {
                Ok(datagram) => forward(&events, &stats, datagram.to_vec()),
                Err(error) => break error,
            }
        };
        // A peer that refuses this node's certificate (another CA's, or
        // none) does so just after the handshake looked done from here,
        // closing the connection with a TLS alert: a refusal too.
        note_refusal(
            &stats,
            canonical(connection.remote_address()),
            &ended.to_string(),
        );
    });
}

fn forward(events: &mpsc::Sender<Event>, stats: &TransportStats, frame: Vec<u8>) {
    if events.try_send(Event::Frame(frame)).is_err() {
        bump(&stats.frames_dropped);
    }
}

/// Accept QUIC connections; a refused handshake is counted and logged.
fn accept_quic(endpoint: quinn::Endpoint, events: mpsc::Sender<Event>, stats: Arc<TransportStats>) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let events = events.clone();
            let stats = Arc::clone(&stats);
            tokio::spawn(async move {
                let peer = incoming.remote_address();
                match incoming.await {
                    Ok(connection) => {
                        bump(&stats.connections_opened);
                        let _ = events.send(Event::QuicConnected(connection)).await;
                    }
                    // As when dialing: only a certificate's failure is a
                    // refusal, not a peer gone mid-handshake (a node
                    // stopping, or a trial-mode peer's close).
                    Err(error) => note_refusal(&stats, peer, &error.to_string()),
                }
            });
        }
    });
}

/// Accept TLS-over-TCP connections and read their frames.
fn accept_tcp(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpConfig,
    events: mpsc::Sender<Event>,
    stats: Arc<TransportStats>,
    max_frame: usize,
) {
    // Connections not yet authenticated, or quiet, are bounded and timed out,
    // so whoever can reach the port cannot pin sockets and tasks.
    let permits = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let socket = socket2::SockRef::from(&stream);
            if let Err(error) = configure_tcp(&socket, &tcp) {
                debug!(%peer, "cluster: socket options: {error}");
            }
            let acceptor = acceptor.clone();
            let events = events.clone();
            let stats = Arc::clone(&stats);
            let handshake_timeout = tcp.connect_timeout.get();
            let idle_timeout = tcp.keepalive_time.get().max(Duration::from_secs(60));
            tokio::spawn(async move {
                let _permit = permit;
                let mut stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            count_refusal(&stats, peer, &error.to_string());
                            return;
                        }
                        Err(_) => {
                            count_refusal(
                                &stats,
                                peer,
                                "no TLS handshake within transport.tcp.connect_timeout; closed",
                            );
                            return;
                        }
                    };
                bump(&stats.connections_opened);
                loop {
                    let mut length = [0u8; 4];
                    match tokio::time::timeout(idle_timeout, stream.read_exact(&mut length)).await {
                        Ok(Ok(_)) => {}
                        _ => break,
                    }
                    let length = u32::from_be_bytes(length) as usize;
                    if length > max_frame {
                        // A length past any frame: the stream cannot be trusted further.
                        bump(&stats.frames_dropped);
                        warn!(%peer, length, "cluster: an oversized frame; closing the connection");
                        break;
                    }
                    let mut frame = vec![0u8; length];
                    if stream.read_exact(&mut frame).await.is_err() {
                        break;
                    }
                    forward(&events, &stats, frame);
                }
            });
        }
    });
}

/// A bound, running cluster node: call [`ClusterNode::run`] to drive it.
pub struct ClusterNode {
    /// Remote-message traffic per peer.
    remote_peers: HashMap<SocketAddr, RemotePeerTraffic>,
    settings: ClusterSettings,
    tls: NodeTls,
    links: Links,
    events: mpsc::Receiver<Event>,
    listen: SocketAddr,
}

impl ClusterNode {
    /// Load certificates and bind the listen address. Must be called inside
    /// a tokio runtime (with IO and time enabled).
    pub fn bind(settings: ClusterSettings) -> Result<Self, ClusterError> {
        let tls = match &settings.tls {
            Some(files) => NodeTls::from_files(files, settings.quic.enable_0rtt)?,
            None => NodeTls::unauthenticated(settings.quic.enable_0rtt)?,
        };
        let (sender, events) = mpsc::channel(EVENTS_QUEUED_MAX);
        let stats = Arc::new(TransportStats::default());
        // A broken lane tells the loop through its event queue.
        let (broken, mut breaks) = mpsc::unbounded_channel::<(SocketAddr, usize)>();
        let lane_events = sender.clone();
        tokio::spawn(async move {
            while let Some((peer, connection)) = breaks.recv().await {
                if lane_events
                    .send(Event::LaneBroken(peer, connection))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        // A directory list or a batch of remote messages may be longer than
        // a SWIM packet; they travel on streams.
        let max_frame = settings
            .swim
            .max_packet
            .max(DIRECTORY_PACKET_MAX)
            .max(MESSAGES_PACKET_MAX)
            + FRAME_OVERHEAD;
        let mut links = Links {
            kind: settings.transport,
            endpoint: None,
            tcp_connector: None,
            tcp: settings.tcp.clone(),
            datagrams: settings.quic.enable_datagram,
            peers: HashMap::new(),
            opened_at: HashMap::new(),
            events: sender.clone(),
            stats: Arc::clone(&stats),
            max_frame,
            authenticated: tls.authenticated,
            stream_sends: Arc::new(tokio::sync::Semaphore::new(STREAM_SENDS_MAX)),
            lanes: Lanes::default(),
            lane_context: LaneContext {
                policy: settings.lanes,
                counts: Arc::new(LaneCounts::default()),
                broken,
            },
            broken: Vec::new(),
        };
        let listen = match settings.transport {
            TransportKind::Quic => {
                let endpoint = quic_endpoint(settings.listen, &tls, &settings.quic)?;
                let listen = endpoint.local_addr().unwrap_or(settings.listen);
                accept_quic(endpoint.clone(), sender, stats);
                links.endpoint = Some(endpoint);
                listen
            }
            TransportKind::Tcp => {
                let bind_error = |error: std::io::Error| ClusterError::Bind {
                    address: settings.listen,
                    message: error.to_string(),
                };
                let listener = std::net::TcpListener::bind(settings.listen).map_err(bind_error)?;
                listener.set_nonblocking(true).map_err(bind_error)?;
                let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
                let listen = listener.local_addr().unwrap_or(settings.listen);
                accept_tcp(
                    listener,
                    tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server)),
                    settings.tcp.clone(),
                    sender,
                    stats,
                    max_frame,
                );
                links.tcp_connector =
                    Some(tokio_rustls::TlsConnector::from(Arc::clone(&tls.client)));
                listen
            }
        };
        Ok(Self {
            remote_peers: HashMap::new(),
            settings,
            tls,
            links,
            events,
            listen,
        })
    }

    /// The address the transport is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address other members reach this node at: the advertised one,
    /// or, when that names port 0, the one the transport was bound to.
    fn advertised(&self) -> SocketAddr {
        if self.settings.advertise.port() == 0 {
            self.listen
        } else {
            self.settings.advertise
        }
    }

    /// The name this node goes by in the cluster: the configured one, or
    /// the default `HOST-PORT` with the port it advertises (known only once
    /// bound, for a listen address of port 0).
    pub fn node_name(&self) -> String {
        if self.settings.default_name {
            crate::settings::default_node_name(self.advertised().port())
        } else {
            self.settings.node_name.clone()
        }
    }

    /// Join the seeds and serve until `stop` resolves; then leave the
    /// cluster, waiting up to half a second for the farewell to be
    /// acknowledged, and close. Membership only: messages from other nodes
    /// are dropped (see [`Self::run_with`]).
    pub async fn run(
        self,
        queries: mpsc::Receiver<ClusterQuery>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        self.run_with(queries, None::<NoLocal>, stop).await;
    }

    /// [`Self::run`], routing messages between this node's shards (`local`:
    /// its remote port and directory) and other nodes.
    pub async fn run_with<L: LocalSide>(
        mut self,
        mut queries: mpsc::Receiver<ClusterQuery>,
        local: Option<L>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut remote = Remote {
            local,
            router: RemoteRouter::default(),
            outbox: Vec::new(),
            sends: Vec::new(),
            seen_changes: u64::MAX,
            last_work: None,
            poll_contention: PollContention::default(),
            // Set once the seeds are known, below.
            settle_by: None,
        };
        let origin = Instant::now();
        let clock = move || Now {
            elapsed: origin.elapsed(),
            unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_micros() as u64),
        };
        let advertise = self.advertised();
        self.settings.node_name = self.node_name();
        let seed = clock().unix_us ^ u64::from(std::process::id()).rotate_left(32);
        let mut membership = Membership::new(
            self.settings.swim.clone(),
            self.settings.node_name.clone(),
            advertise,
            seed,
            clock(),
        );
        info!(
            node = %membership.identity().name,
            %advertise,
            transport = ?self.settings.transport,
            authenticated = self.tls.authenticated,
            seeds = self.settings.seeds.len(),
            "cluster membership started"
        );
        membership.join(&self.settings.seeds, clock());
        // A node without seeds (its own address left out: the seed of a
        // cluster that shares one seed list) hears of the others only when
        // they announce to it, every DIRECTORY_SETTLE_PROBES probe
        // intervals to a member they hold down: it waits past that.
        remote.settle_by =
            Some(self.settings.swim.probe_interval * settle_probes(membership.has_seeds()));
        let mut name_twins = NameTwins::default();
        // Members this node suspects now: one declared down from here was
        // failing, one declared down without it left (or another member
        // judged it first).
        let mut suspected = std::collections::HashSet::new();
        let mut contention_told = false;
        tokio::pin!(stop);
        loop {
            // Back from an idle poll of the remote port (the loop may have
            // left it for any branch): away long enough, another thread
            // has this CPU, and polling is off for a while.
            remote.poll_contention.resumed(Instant::now);
            if !contention_told && remote.poll_contention.contended() > 0 {
                contention_told = true;
                warn!("cluster: another busy thread shares the gossip shard's CPU, so polling the remote port while idle (runtime.spin_before_park) costs a scheduler slice at a time; the loop parks instead for a while each time it sees this (caxton_remote_idle_polls_contended_total). Isolate the engine's CPUs, or set runtime.spin_before_park=0 where they must be shared");
            }
            self.flush(&mut membership, false);
            // A probe that found its peer's connection ended dialed again.
            // Answered here, and after resends below, nothing noted broken
            // is left when `pump_outbound` tracks new messages: those
            // answered lost are only ones that went on the ended connection.
            self.lose_broken_links(&mut remote);
            name_twins.judge(&membership, Instant::now());
            for gone in log_events(
                &mut membership,
                &mut name_twins,
                &mut suspected,
                &self.settings.swim,
            ) {
                self.links.forget_stale(gone.addr, gone.restarted_at);
                remote.lost(&[gone.addr], "node-down");
            }
            remote.follow_directory(&membership);
            remote.settle_directory(&membership, || clock().elapsed);
            let mut resends = remote.resend_hops(&membership);
            if !resends.is_empty() {
                self.send_messages(membership.identity(), &mut resends, &mut remote);
                self.lose_broken_links(&mut remote);
            }
            let deadline = membership
                .next_deadline()
                .map(|due| tokio::time::Instant::from_std(origin + due));
            // Answers that found a full ring: a ring rings no doorbell when
            // it has room again, so the loop looks again shortly.
            let answers_retry = remote
                .deliver_waiting_answers()
                .then(|| tokio::time::Instant::now() + ANSWER_ROOM_POLL);
            // Everything delivered to the shards since the last wait rings
            // its receivers here, before this loop could wait again.
            if let Some(local) = remote.local.as_mut() {
                local.ring_deliveries();
            }
            tokio::select! {
                () = &mut stop => break,
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    self.on_event(event, &mut membership, &mut remote, clock());
                    // Drain what else arrived, without waking again for each.
                    for _ in 0..256 {
                        let Ok(event) = self.events.try_recv() else { break };
                        self.on_event(event, &mut membership, &mut remote, clock());
                    }
                }
                () = wait_local(remote.local.as_ref(), remote.last_work, &mut remote.poll_contention) => {
                    self.pump_outbound(&membership, &mut remote);
                }
                () = sleep_until(deadline) => membership.advance(clock()),
                () = sleep_until(answers_retry) => {}
                // Disabled once every handle is gone (no admin endpoint):
                // a closed channel must not wake the loop again and again.
                Some(query) = queries.recv() => match query {
                    ClusterQuery::Snapshot(answer) => {
                        let _ = answer.send(self.snapshot(&membership, &remote));
                    }
                    ClusterQuery::PublishAgents(agents) => {
                        membership.publish_agents(agents, clock());
                    }
                },
            }
        }
        membership.leave(clock());
        let farewells = self.flush(&mut membership, true);
        // TCP writers: close each connection's queue, then wait for the
        // writer to flush it (the farewell is in it) and shut down.
        let mut drains = Vec::new();
        for (_, peer) in self.links.peers.drain() {
            if let Peer::Tcp(writer, drained) = peer {
                drop(writer);
                drains.push(drained);
            }
        }
        let _ = tokio::time::timeout(LEAVE_GRACE, async {
            for farewell in farewells {
                let _ = farewell.await;
            }
            for drained in drains {
                drained.notified().await;
            }
        })
        .await;
        info!("left the cluster");
        if let Some(endpoint) = &self.links.endpoint {
            endpoint.close(quinn::VarInt::from_u32(0), b"leaving");
            let _ = tokio::time::timeout(Duration::from_millis(100), endpoint.wait_idle()).await;
        }
    }

    fn on_event<L: LocalSide>(
        &mut self,
        event: Event,
        membership: &mut Membership,
        remote: &mut Remote<L>,
        now: Now,
    ) {
        match event {
            Event::Frame(frame) if wire::frame_kind(&frame) == Some(FrameKind::Messages) => {
                self.on_messages(&frame, membership, remote);
            }
            Event::Frame(frame) => {
                if let Err(error) = membership.handle_frame(&frame, now) {
                    debug!("cluster: dropped a frame: {error}");
                }
            }
            Event::QuicConnected(connection) => {
                // An endpoint bound to `[::]` sees IPv4 peers as mapped
                // IPv6 addresses; members are known by the plain form.
                let peer = canonical(connection.remote_address());
                read_quic(
                    connection.clone(),
                    self.links.events.clone(),
                    Arc::clone(&self.links.stats),
                    self.links.max_frame,
                );
                // Warm lanes wait for messages (remote routing only).
                if remote.local.is_some() {
                    self.links
                        .lanes
                        .warm(peer, &connection, &self.links.lane_context);
                }
                let pending = self.links.connected(peer, Peer::Quic(connection));
                let refused = self.links.send_pending(peer, pending);
                self.frames_not_sent(membership.identity(), peer, refused, remote);
            }
            Event::TcpConnected(peer, writer, drained) => {
                let pending = self.links.connected(peer, Peer::Tcp(writer, drained));
                let refused = self.links.send_pending(peer, pending);
                self.frames_not_sent(membership.identity(), peer, refused, remote);
            }
            // Only the current connection's end loses messages in flight: an
            // earlier one's is old news. The next frame for the peer dials again.
            Event::TcpClosed(peer, link) => {
                let current = matches!(
                    self.links.peers.get(&peer),
                    Some(Peer::Tcp(_, drained)) if Arc::ptr_eq(drained, &link)
                );
                if current {
                    self.links.peers.remove(&peer);
                    self.links.opened_at.remove(&peer);
                    remote.lost(&[peer], "connection-lost");
                }
            }
            // Only a lane of the current connection loses messages still in
            // flight: a lane of an earlier connection breaking is old news.
            Event::LaneBroken(peer, connection) => {
                if self.links.lanes.connection_of(peer) == Some(connection) {
                    self.links.lanes.forget(peer);
                    remote.lost(&[peer], "connection-lost");
                }
            }
            // What waited for the connection never left: its requests are
            // answered, as on a connection that ended.
            Event::ConnectFailed(peer) => {
                if let Some(Peer::Connecting(pending)) = self.links.peers.remove(&peer) {
                    let frames = pending
                        .into_iter()
                        .filter_map(|(key, frame)| match key {
                            Some(_) => Some(NotSent::Refused {
                                reason: "connection-lost",
                                frame,
                            }),
                            None => {
                                bump(&self.links.stats.frames_dropped);
                                None
                            }
                        })
                        .collect();
                    self.frames_not_sent(membership.identity(), peer, frames, remote);
                }
            }
        }
    }

    /// Frames of remote messages for `peer` that never left, answered as
    /// [`Self::send_batch`] answers a frame not taken. Where the connection
    /// just made had ended already, as for any ended connection
    /// ([`Self::connection_ended`]). Otherwise every message with a sender
    /// here is answered with the reason (requests and one-way sends alike),
    /// and the rest (answers and notices for other nodes' senders) is
    /// dropped: those nodes hear of a lost connection or node their own
    /// way, and dialing again for them could go on for as long as the peer
    /// is away. The frames are this node's own, so they read.
    fn frames_not_sent<L: LocalSide>(
        &mut self,
        me: &NodeId,
        peer: SocketAddr,
        frames: Vec<NotSent>,
        remote: &mut Remote<L>,
    ) {
        for not_sent in frames {
            let (NotSent::Refused { frame, .. } | NotSent::ConnectionEnded { frame, .. }) =
                &not_sent;
            let batch = match crate::remote::read_batch(frame, usize::MAX) {
                Ok(batch) => batch,
                Err(error) => {
                    bump(&self.links.stats.frames_dropped);
                    debug!("cluster: a frame of this node's own does not read: {error}");
                    continue;
                }
            };
            let reason = match not_sent {
                NotSent::ConnectionEnded { lane, .. } => {
                    self.connection_ended(me, peer, lane, batch.messages, remote);
                    continue;
                }
                NotSent::Refused { reason, .. } => reason,
            };
            let (answered, rest): (Vec<_>, Vec<_>) = batch
                .messages
                .into_iter()
                .partition(|message| message.sender.is_some());
            remote.refused(peer, answered, reason);
            if !rest.is_empty() {
                bump(&self.links.stats.frames_dropped);
            }
        }
    }

    /// `messages` for `to`'s lane `lane` found its connection ended: their
    /// requests are answered not sent, and what was in flight on it lost
    /// once this round's frames are all out (`lose_broken_links`). The
    /// rest (answers, notices, one-way messages) nobody could be told of:
    /// they go on a new connection.
    fn connection_ended<L: LocalSide>(
        &mut self,
        me: &NodeId,
        to: SocketAddr,
        lane: u64,
        messages: Vec<RemoteMessage>,
        remote: &mut Remote<L>,
    ) {
        let (requests, rest): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|message| message.sender.is_some() && message.reply_with != 0);
        remote.refused(to, requests, "connection-lost");
        if rest.is_empty() {
            return;
        }
        let count = rest.len();
        let frame = RemoteBatch {
            from: me.clone(),
            messages: rest,
        }
        .encode_frame(wire::FrameHeader { nonce: 0, seq: 0 });
        match self.links.send_messages_frame(to, lane, frame, true) {
            FrameTaken::Yes => remote.router.sent(count),
            _ => bump(&self.links.stats.frames_dropped),
        }
    }

    fn flush(
        &mut self,
        membership: &mut Membership,
        reliable: bool,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut sending = Vec::new();
        for out in membership.take_outgoing() {
            if let Some(task) = self.links.send(out.to, out.frame, reliable) {
                sending.push(task);
            }
        }
        sending
    }

    /// Messages from another node: each to the shards, or refused back.
    fn on_messages<L: LocalSide>(
        &mut self,
        frame: &[u8],
        membership: &Membership,
        remote: &mut Remote<L>,
    ) {
        let batch = match crate::remote::read_batch(frame, self.links.max_frame) {
            Ok(batch) => batch,
            Err(error) => {
                debug!("cluster: dropped a frame of messages: {error}");
                bump(&self.links.stats.frames_dropped);
                return;
            }
        };
        let Some(local) = remote.local.as_mut() else {
            bump(&self.links.stats.frames_dropped);
            return;
        };
        let traffic = self.remote_peers.entry(batch.from.addr).or_default();
        traffic.frames_in += 1;
        traffic.bytes_in += frame.len() as u64;
        traffic.messages_in += batch.messages.len() as u64;
        remote.last_work = Some(Instant::now());
        let mut answers: Vec<(SocketAddr, RemoteMessage)> = Vec::new();
        for message in batch.messages {
            match remote.router.inbound(batch.from.addr, message, local) {
                Inbound::Answer(to, answer) => answers.push((to, *answer)),
                Inbound::Delivered | Inbound::Dropped => {}
            }
        }
        if !answers.is_empty() {
            self.send_messages(membership.identity(), &mut answers, remote);
        }
    }

    /// Messages that left this node's shards: to their hosts, in batches.
    fn pump_outbound<L: LocalSide>(&mut self, membership: &Membership, remote: &mut Remote<L>) {
        let Some(local) = remote.local.as_mut() else {
            return;
        };
        // Kept across pumps (empty between them), so it grows once.
        let mut sends = std::mem::take(&mut remote.sends);
        // Bounded per wake-up, so membership's own work is never starved.
        for _ in 0..16 {
            remote.outbox.clear();
            local.take_outbound(256, &mut remote.outbox);
            if remote.outbox.is_empty() {
                break;
            }
            remote.last_work = Some(Instant::now());
            for envelope in remote.outbox.drain(..) {
                match remote
                    .router
                    .outbound(envelope, local, membership.directory())
                {
                    Outbound::Send(to, message) => sends.push((to, message)),
                    Outbound::Answer(answer) => remote.router.deliver_answer(answer, 0, local),
                    Outbound::Dropped | Outbound::Held => {}
                }
            }
        }
        self.send_messages(membership.identity(), &mut sends, remote);
        remote.sends = sends;
        self.lose_broken_links(remote);
    }

    /// Answer `connection-lost` for what was in flight to peers whose
    /// connections were found ended ([`Links::take_broken`]).
    fn lose_broken_links<L: LocalSide>(&mut self, remote: &mut Remote<L>) {
        let broken = self.links.take_broken();
        if !broken.is_empty() {
            for peer in &broken {
                debug!(%peer, "cluster: a connection ended; what was in flight on it is lost");
            }
            remote.lost(&broken, "connection-lost");
        }
    }

    /// Frame `messages` (taking them all) per node and lane, in order, in
    /// batches that fit a frame. Each lane's messages are counted first,
    /// so its batch is allocated once at its size: messages are moved
    /// once, not again at every doubling of a growing batch.
    fn send_messages<L: LocalSide>(
        &mut self,
        me: &NodeId,
        messages: &mut Vec<(SocketAddr, RemoteMessage)>,
        remote: &mut Remote<L>,
    ) {
        // One too large for a frame of its own would be refused by its
        // peer, breaking the lane every other sender on it shares.
        if messages
            .iter()
            .any(|(_, message)| message_cost(message) > MESSAGE_COST_MAX)
        {
            self.refuse_too_large(messages, remote);
        }
        let lanes = self.links.lane_context.policy.lanes_per_peer as u64;
        // (lane, messages for it, then bytes they cost in a frame), and
        // each message's lane as an index into it.
        let mut per_lane: Vec<((SocketAddr, u64), Vec<RemoteMessage>, usize)> = Vec::new();
        let lane_of: Vec<usize> = messages
            .iter()
            .map(|(to, message)| {
                let at = (*to, lane_key(message) % lanes);
                match per_lane.iter().position(|(lane, _, _)| *lane == at) {
                    Some(index) => {
                        per_lane[index].2 += 1;
                        index
                    }
                    None => {
                        per_lane.push((at, Vec::new(), 1));
                        per_lane.len() - 1
                    }
                }
            })
            .collect();
        for (_, batch, count) in &mut per_lane {
            batch.reserve_exact(std::mem::take(count));
        }
        for (index, (_, message)) in lane_of.into_iter().zip(messages.drain(..)) {
            let (_, batch, size) = &mut per_lane[index];
            *size += message_cost(&message);
            batch.push(message);
        }
        for ((to, lane), batch, size) in per_lane {
            if size <= MESSAGES_PACKET_MAX / 2 {
                self.send_batch(me, to, lane, batch, remote);
                continue;
            }
            let mut chunk = Vec::new();
            let mut size = 0;
            for message in batch {
                let cost = message_cost(&message);
                if !chunk.is_empty() && size + cost > MESSAGES_PACKET_MAX / 2 {
                    self.send_batch(me, to, lane, std::mem::take(&mut chunk), remote);
                    size = 0;
                }
                size += cost;
                chunk.push(message);
            }
            if !chunk.is_empty() {
                self.send_batch(me, to, lane, chunk, remote);
            }
        }
    }

    /// Take the messages too large to cross out of `messages`: each sender
    /// here is answered, and an answer for another node's sender goes as a
    /// `failure` in its place ([`RemoteRouter::too_large`]).
    #[cold]
    fn refuse_too_large<L: LocalSide>(
        &mut self,
        messages: &mut Vec<(SocketAddr, RemoteMessage)>,
        remote: &mut Remote<L>,
    ) {
        let (fitting, too_large): (Vec<_>, Vec<_>) = std::mem::take(messages)
            .into_iter()
            .partition(|(_, message)| message_cost(message) <= MESSAGE_COST_MAX);
        *messages = fitting;
        let Some(local) = remote.local.as_mut() else {
            return;
        };
        for (to, message) in too_large {
            debug!(peer = %to, bytes = message.content.len(), "cluster: a message too large to cross nodes");
            match remote.router.too_large(to, message, local) {
                TooLarge::Local(answers) => {
                    for answer in answers {
                        remote.router.deliver_answer(answer, 0, local);
                    }
                }
                TooLarge::SendInstead(failure) => messages.push((to, failure)),
                TooLarge::Dropped => {}
            }
        }
    }

    fn send_batch<L: LocalSide>(
        &mut self,
        me: &NodeId,
        to: SocketAddr,
        lane: u64,
        messages: Vec<RemoteMessage>,
        remote: &mut Remote<L>,
    ) {
        let batch = RemoteBatch {
            from: me.clone(),
            messages,
        };
        // Ordered streams are authenticated and in order: the replay
        // window's nonce and sequence are not used for these frames.
        let frame = batch.encode_frame(wire::FrameHeader { nonce: 0, seq: 0 });
        let traffic = self.remote_peers.entry(to).or_default();
        traffic.frames_out += 1;
        traffic.bytes_out += frame.len() as u64;
        traffic.messages_out += batch.messages.len() as u64;
        let count = batch.messages.len();
        match self.links.send_messages_frame(to, lane, frame, false) {
            FrameTaken::Yes => remote.router.sent(count),
            // The peer applies back-pressure: refused, as a full ring is.
            FrameTaken::PeerBusy => remote.refused(to, batch.messages, "refused:peer-busy"),
            FrameTaken::ConnectionEnded => {
                self.connection_ended(me, to, lane, batch.messages, remote);
            }
        }
    }

    fn snapshot<L>(&self, membership: &Membership, remote: &Remote<L>) -> ClusterSnapshot {
        let router = &remote.router;
        let histogram = membership.convergence();
        let seconds = |nanos: u64| nanos as f64 / 1e9;
        ClusterSnapshot {
            node: membership.identity().clone(),
            seeds: membership.seeds().to_vec(),
            unanswered_joins: membership.unanswered_joins(),
            transport: self.settings.transport.name().into(),
            listen: self.listen,
            authenticated: self.tls.authenticated,
            counts: membership.counts(),
            members: membership.members(),
            membership: membership.counters(),
            transport_counts: self.links.stats.counts(self.links.connections()),
            suspicion_timeout_ms: membership.suspicion_timeout().as_millis() as u64,
            swim: SwimSummary::from(membership.settings()),
            convergence: ConvergenceSummary {
                count: histogram.len(),
                p50_seconds: seconds(histogram.value_at_quantile(0.5)),
                p99_seconds: seconds(histogram.value_at_quantile(0.99)),
                max_seconds: seconds(histogram.max()),
            },
            convergence_histogram: Some(histogram.clone()),
            remote: router.counters(),
            chain_hops: router.chain_hops() as u64,
            chain_hops_waiting: router.chain_hops_waiting() as u64,
            answers_waiting: router.answers_waiting() as u64,
            idle_polls_contended: remote.poll_contention.contended(),
            lanes: self.links.lane_context.counts.snapshot(),
            remote_peers: {
                let mut peers: Vec<RemotePeerTraffic> = self
                    .remote_peers
                    .iter()
                    .map(|(addr, traffic)| RemotePeerTraffic {
                        peer: addr.to_string(),
                        ..traffic.clone()
                    })
                    .collect();
                peers.sort_by(|a, b| a.peer.cmp(&b.peer));
                peers
            },
            directory: {
                let directory = membership.directory();
                let (version, local) = directory.local();
                DirectorySnapshot {
                    version,
                    local: local.clone(),
                    nodes: directory.nodes().into_iter().cloned().collect(),
                    departed: directory.departed(),
                }
            },
        }
    }
}

impl ClusterSnapshot {
    /// The metric families of `/metrics` (the convergence histogram apart).
    pub fn families(&self) -> Vec<caxton_telemetry::Family<'static>> {
        use caxton_telemetry::Family;
        let m = &self.membership;
        let t = &self.transport_counts;
        let one = |value: u64| vec![(String::new(), value as f64)];
        // One family of (sent, received) counts per peer.
        let per_peer = |name, help, counts: fn(&RemotePeerTraffic) -> (u64, u64)| Family {
            name,
            help,
            kind: "counter",
            samples: self
                .remote_peers
                .iter()
                .flat_map(|traffic| {
                    let (sent, received) = counts(traffic);
                    [
                        (
                            format!("peer=\"{}\",direction=\"sent\"", traffic.peer),
                            sent as f64,
                        ),
                        (
                            format!("peer=\"{}\",direction=\"received\"", traffic.peer),
                            received as f64,
                        ),
                    ]
                })
                .collect(),
        };
        let counter = |name, help, value| Family {
            name,
            help,
            kind: "counter",
            samples: one(value),
        };
        vec![
            Family {
                name: "caxton_cluster_members",
                help: "Members this node knows, by state (itself excluded)",
                kind: "gauge",
                samples: vec![
                    ("state=\"alive\"".into(), self.counts.alive as f64),
                    ("state=\"suspect\"".into(), self.counts.suspect as f64),
                    ("state=\"down\"".into(), self.counts.down as f64),
                ],
            },
            counter("caxton_cluster_suspicions_raised_total", "Members this node saw go from alive to suspect", m.suspicions_raised),
            counter("caxton_cluster_watch_suspicions_total", "Suspicions this node's ring watch raised: its successor on the ring stayed silent through a probe timeout and three pings", m.watch_suspicions),
            counter("caxton_cluster_suspicions_handed_over_total", "Suspicions this node handed, with the time they had left, to the member taking over its watch as it left gracefully", m.suspicions_handed_over),
            counter("caxton_cluster_suspicions_taken_over_total", "Suspicions a leaving member handed to this node and this node judged", m.suspicions_taken_over),
            counter("caxton_cluster_suspicions_told_total", "Times this node told a member its suspicion timer judges that it is suspected (repeated each probe interval while the suspicion stands)", m.suspicions_told),
            counter("caxton_cluster_suspicions_heard_total", "Suspicions of this node it was told of directly by the member judging them, and refuted", m.suspicions_heard),
            counter("caxton_cluster_suspicions_refuted_total", "Members this node saw refute a suspicion (suspect to alive)", m.suspicions_refuted),
            counter("caxton_cluster_members_down_total", "Members this node saw declared down, failed or left", m.declared_down),
            counter("caxton_cluster_rejoins_total", "Times this node was declared down and rejoined under a newer generation", m.renewals),
            counter("caxton_swim_packets_received_total", "SWIM frames received", m.frames_in),
            counter("caxton_swim_bytes_received_total", "Bytes of SWIM frames received", m.bytes_in),
            counter("caxton_swim_packets_sent_total", "SWIM frames sent", m.frames_out),
            counter("caxton_swim_bytes_sent_total", "Bytes of SWIM frames sent", m.bytes_out),
            Family {
                name: "caxton_swim_packets_dropped_total",
                help: "SWIM frames dropped unread, by reason",
                kind: "counter",
                samples: [
                    ("truncated", m.dropped_truncated),
                    ("oversized", m.dropped_oversized),
                    ("corrupt", m.dropped_corrupt),
                    ("version", m.dropped_version),
                    ("replayed", m.dropped_replayed),
                    ("invalid", m.dropped_invalid),
                    ("transport", t.frames_dropped),
                ]
                .into_iter()
                .map(|(reason, value)| (format!("reason=\"{reason}\""), value as f64))
                .collect(),
            },
            Family {
                name: "caxton_cluster_handshakes_refused_total",
                help: "Handshakes refused, by the side that refused: this node (the peer had no certificate from the cluster's CA, or did not speak the cluster protocol) or the peer (it did not trust this node's certificate)",
                kind: "counter",
                samples: vec![
                    (
                        "by=\"this_node\"".into(),
                        t.handshakes_refused.saturating_sub(t.handshakes_refused_by_peer) as f64,
                    ),
                    ("by=\"peer\"".into(), t.handshakes_refused_by_peer as f64),
                ],
            },
            counter("caxton_cluster_connect_failures_total", "Dials to members that failed", t.connect_failures),
            Family {
                name: "caxton_cluster_connections",
                help: "Members with an open connection",
                kind: "gauge",
                samples: one(t.connections),
            },
            Family {
                name: "caxton_remote_messages_total",
                help: "Messages between agents on this node and other nodes, by direction",
                kind: "counter",
                samples: vec![
                    ("direction=\"sent\"".into(), self.remote.sent as f64),
                    ("direction=\"received\"".into(), self.remote.received as f64),
                ],
            },
            per_peer("caxton_remote_peer_messages_total", "Remote messages per peer and direction", |t| (t.messages_out, t.messages_in)),
            per_peer("caxton_remote_peer_bytes_total", "Bytes of remote-message frames per peer and direction", |t| (t.bytes_out, t.bytes_in)),
            per_peer("caxton_remote_peer_frames_total", "Remote-message frames (batches) per peer and direction; messages over frames is the batch size", |t| (t.frames_out, t.frames_in)),
            counter("caxton_remote_messages_failed_total", "Remote messages answered failure where they stopped: no host, unknown on the host, or no room there", self.remote.failed),
            counter("caxton_remote_answers_dropped_total", "Answers from other nodes nobody waited for any more (their origin was forgotten)", self.remote.dropped),
            Family {
                name: "caxton_remote_answers_waiting",
                help: "Answers for senders on this node waiting now for room in a full ring",
                kind: "gauge",
                samples: one(self.answers_waiting),
            },
            counter("caxton_remote_answers_waited_total", "Answers for senders on this node (replies from other nodes, or failures in their place) that found a full ring and waited for room", self.remote.answers_waited),
            counter("caxton_remote_answers_given_up_total", "Answers for senders on this node given up: 65,536 already waited for room, or their receiver's ring took none for 10 s", self.remote.answers_given_up),
            counter("caxton_remote_answers_after_loss_total", "Answers that came home for requests already answered lost (node-down, connection-lost): dropped, so no sender hears twice", self.remote.answers_after_loss),
            Family {
                name: "caxton_remote_chain_hops",
                help: "Hops of durable chains kept until their host stores them: sent and awaiting acknowledgement, or waiting for a live host",
                kind: "gauge",
                samples: vec![
                    ("state=\"sent\"".into(), self.chain_hops.saturating_sub(self.chain_hops_waiting) as f64),
                    ("state=\"waiting\"".into(), self.chain_hops_waiting as f64),
                ],
            },
            counter("caxton_remote_chain_hops_resent_total", "Hops of durable chains sent again: unacknowledged, their host lost, or a host found at last", self.remote.hops_resent),
            counter("caxton_remote_chain_hops_expired_total", "Hops of durable chains whose deadline passed before any node stored them (answered caxton:timeout, parent settled)", self.remote.hops_expired),
            counter("caxton_remote_idle_polls_contended_total", "Times the cluster loop, polling the remote port (runtime.spin_before_park), found its CPU taken by another thread for about a scheduler slice and parked instead of polling on for 50 ms", self.idle_polls_contended),
            counter("caxton_remote_chain_hops_refused_total", "Hops of durable chains their host refused to store (storage off or failing there): no longer sent; the parent runs again after a restart", self.remote.hops_refused),
            Family {
                name: "caxton_remote_lanes",
                help: "Message lanes (QUIC streams of remote messages) open now, and those of them idle",
                kind: "gauge",
                samples: vec![
                    ("state=\"open\"".into(), self.lanes.open as f64),
                    ("state=\"idle\"".into(), self.lanes.idle as f64),
                ],
            },
            counter("caxton_remote_lanes_opened_total", "Message lane streams opened: warm, on demand and by rotation", self.lanes.opened),
            Family {
                name: "caxton_remote_lanes_closed_total",
                help: "Message lane streams closed, by reason (idle_timeout, max_idle, max_lifetime rotation, peer gone, broken)",
                kind: "counter",
                samples: [
                    ("idle_timeout", self.lanes.closed_idle),
                    ("max_idle", self.lanes.closed_max_idle),
                    ("max_lifetime", self.lanes.rotated),
                    ("peer_gone", self.lanes.closed_peer_gone),
                    ("broken", self.lanes.broken),
                ]
                .into_iter()
                .map(|(reason, value)| (format!("reason=\"{reason}\""), value as f64))
                .collect(),
            },
            Family {
                name: "caxton_cluster_directory_nodes",
                help: "Other nodes whose agent list this node holds",
                kind: "gauge",
                samples: one(self.directory.nodes.len() as u64),
            },
            counter("caxton_cluster_directory_pulls_total", "Agent lists this node asked other nodes for", m.directory_pulls),
            counter("caxton_cluster_directory_lists_taken_total", "Agent lists taken (newer than the one held)", m.directory_lists_taken),
            counter("caxton_cluster_directory_lists_dropped_total", "Agent lists dropped: stale, or from a node not known alive at that generation", m.directory_lists_dropped),
            Family {
                name: "caxton_cluster_suspicion_timeout_seconds",
                help: "The suspicion timeout in force: multiplier x max(1, log10 N) x probe interval",
                kind: "gauge",
                samples: vec![(String::new(), self.suspicion_timeout_ms as f64 / 1e3)],
            },
        ]
    }
}

/// Remote routing's side of the loop: the node's shards, the router, and
/// what the last directory change was.
struct Remote<L> {
    local: Option<L>,
    router: RemoteRouter,
    outbox: Vec<caxton_messaging::Envelope>,
    /// What a pump sends, by peer; empty between pumps.
    sends: Vec<(SocketAddr, RemoteMessage)>,
    seen_changes: u64,
    /// When the loop last moved remote messages either way: an idle loop
    /// polls for more within [`LocalSide::idle_poll`]'s window after it.
    last_work: Option<Instant>,
    /// Whether polling the remote port while idle still pays.
    poll_contention: PollContention,
    /// Until [`LocalSide::directory_settled`] is called: when it is called
    /// even if the directory has not settled (node-clock time).
    settle_by: Option<Duration>,
}

/// What a message is reckoned to cost in a batch's frame: its content, its
/// names, and the rest of its fields, generously.
fn message_cost(message: &RemoteMessage) -> usize {
    let target = match &message.target {
        Target::Agent(name) => name.len(),
        Target::Address(_) => 0,
    };
    message.content.len() + target + message.sender_name.as_ref().map_or(0, String::len) + 128
}

/// The most a message may cost ([`message_cost`]) to cross nodes: a frame
/// of its own, with room for the batch's header (the sending node's
/// identity).
const MESSAGE_COST_MAX: usize = MESSAGES_PACKET_MAX - 4096;

/// How soon the loop looks again for room for answers that found a full
/// ring (tokio's timer rounds it up to its millisecond).
const ANSWER_ROOM_POLL: Duration = Duration::from_micros(200);

/// A frame of remote messages that waited for a connection and was not
/// taken (see [`ClusterNode::frames_not_sent`]).
enum NotSent {
    /// Refused for `reason` (a busy peer, a dial that failed), as its
    /// senders are told.
    Refused {
        reason: &'static str,
        frame: Vec<u8>,
    },
    /// The connection just made had ended already: sent again, on lane
    /// `lane` of the next.
    ConnectionEnded { lane: u64, frame: Vec<u8> },
}

/// Probe intervals a starting node waits at most for the directory to
/// settle (see [`LocalSide::directory_settled`]); a cluster that cannot
/// be reached does not hold up the node's own stored messages longer.
pub const DIRECTORY_SETTLE_PROBES: u32 = 10;

/// Probe intervals more a node without seeds waits: the others announce to
/// a member they hold down every
/// [`crate::settings::ANNOUNCE_TO_DOWN_PROBES`] probe intervals, and the
/// wait must outlast one such round with its delivery.
pub const SEEDLESS_EXTRA_PROBES: u32 = 2;

/// Probe intervals a starting node waits at most for the directory.
pub fn settle_probes(has_seeds: bool) -> u32 {
    if has_seeds {
        DIRECTORY_SETTLE_PROBES
    } else {
        crate::settings::ANNOUNCE_TO_DOWN_PROBES + SEEDLESS_EXTRA_PROBES
    }
}

impl<L: LocalSide> Remote<L> {
    /// Tell the local side once the directory has settled, or once waiting
    /// for it has taken too long.
    fn settle_directory(&mut self, membership: &Membership, now: impl FnOnce() -> Duration) {
        let Some(settle_by) = self.settle_by else {
            return;
        };
        let settled = membership.directory_settled();
        if !settled && now() < settle_by {
            return;
        }
        self.settle_by = None;
        if let Some(local) = self.local.as_mut() {
            let reached = membership
                .members()
                .iter()
                .any(|member| member.state == crate::membership::MemberState::Alive);
            if settled {
                info!("cluster: the directory holds every live member's agents");
            } else if !reached && !membership.has_seeds() {
                info!(
                    "cluster: no other member made contact within {} probe intervals; this node has no seeds, so it runs alone for now, and stored messages run without other nodes' agents",
                    settle_probes(false)
                );
            } else if !reached {
                warn!(
                    "cluster: no member answered within {} probe intervals (check the seeds and that they run); stored messages run without other nodes' agents, and the seeds are tried on",
                    settle_probes(true)
                );
            } else {
                warn!(
                    "cluster: the directory has not settled within {} probe intervals; going on without it",
                    settle_probes(membership.has_seeds())
                );
            }
            local.directory_settled();
        }
    }

    /// Messages for `node` that could not be sent (`reason`): each sender
    /// here is answered `failure`.
    fn refused(&mut self, node: SocketAddr, messages: Vec<RemoteMessage>, reason: &str) {
        let Some(local) = self.local.as_mut() else {
            return;
        };
        for message in messages {
            if let Some(answer) = self.router.unsent(node, message, reason, local) {
                self.router.deliver_answer(answer, 0, local);
            }
        }
    }

    /// Hand the answers that waited for room to the shards; whether some
    /// still wait.
    fn deliver_waiting_answers(&mut self) -> bool {
        let Some(local) = self.local.as_mut() else {
            return false;
        };
        self.router.deliver_waiting_answers(local);
        self.router.answers_waiting() > 0
    }

    /// Nodes lost (`reason`): answer the senders still waiting on them.
    fn lost(&mut self, nodes: &[SocketAddr], reason: &str) {
        let Some(local) = self.local.as_mut() else {
            return;
        };
        for node in nodes {
            for answer in self.router.node_lost(*node, reason, local) {
                self.router.deliver_answer(answer, 0, local);
            }
        }
    }

    /// Tell the shards which agents other nodes host, when that changed.
    fn follow_directory(&mut self, membership: &Membership) {
        let changes = membership.directory().changes();
        if changes == self.seen_changes {
            return;
        }
        self.seen_changes = changes;
        if let Some(local) = self.local.as_mut() {
            local.remote_agents_changed(membership.directory().remote_agents());
            self.router.directory_changed(local);
        }
    }

    /// Hops of durable chains due again: the sends for their hosts; what
    /// stays on this node (a given-up hop's settlement and answer) is
    /// delivered here.
    fn resend_hops(&mut self, membership: &Membership) -> Vec<(SocketAddr, RemoteMessage)> {
        let Some(local) = self.local.as_mut() else {
            return Vec::new();
        };
        let resends = self.router.resend_hops(membership.directory(), local);
        for envelope in resends.local {
            self.router.deliver_answer(envelope, 0, local);
        }
        resends.sends
    }
}

/// Resolves when the shards left messages for other nodes; never without
/// shards. See [`poll_then_wait`] for the local side's [`IdlePoll`].
async fn wait_local<L: LocalSide>(
    local: Option<&L>,
    last_work: Option<Instant>,
    contention: &mut PollContention,
) {
    let Some(local) = local else {
        return std::future::pending().await;
    };
    poll_then_wait(
        local.idle_poll(),
        last_work,
        contention,
        || local.has_outbound(),
        local.wait(),
    )
    .await;
}

/// Within `poll`'s window after `last_work`, poll `has_work` instead of
/// parking: each poll first lets the runtime read the sockets (a frame from
/// another node ends the loop's wait through its own branch) and, on a
/// shared PU, yields the CPU to the data shard that shares it. Past the
/// window (or with none), or while `contention` says another thread was
/// seen taking this CPU, await `wait`, which a ring ends.
async fn poll_then_wait(
    poll: Option<IdlePoll>,
    last_work: Option<Instant>,
    contention: &mut PollContention,
    has_work: impl Fn() -> bool,
    wait: impl std::future::Future<Output = ()>,
) {
    if let (Some(poll), Some(last_work)) = (poll, last_work) {
        loop {
            let now = Instant::now();
            // Back from the previous poll: a late return may turn polling off.
            contention.resumed(|| now);
            if now.saturating_duration_since(last_work) >= poll.window || !contention.may_poll(now)
            {
                break;
            }
            if has_work() {
                return;
            }
            contention.polled(now);
            if poll.yield_cpu {
                std::thread::yield_now();
            }
            // Deferred until the runtime has polled its I/O driver.
            tokio::task::yield_now().await;
        }
    }
    wait.await;
}

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A member whose identity is gone: declared down, or back under a newer
/// generation (a restarted process, or one the cluster declared down that
/// rejoined) taken at `restarted_at` on its clock.
struct Gone {
    addr: SocketAddr,
    restarted_at: Option<std::time::SystemTime>,
}

/// Members that took the name of another still alive (or of this node),
/// waiting to be judged: a node restarted at a new address comes up under
/// its old name before its earlier entry is declared down, and is no
/// mistake; two nodes that keep one name are.
#[derive(Default)]
struct NameTwins(Vec<NameTwin>);

struct NameTwin {
    name: String,
    addr: SocketAddr,
    /// The member whose name it took; `None`: this node's.
    twin: Option<SocketAddr>,
    judge_at: Instant,
}

impl NameTwins {
    /// Warn about the twins both still alive at their judging time; forget
    /// those whose earlier entry went down (a restart) or that went down.
    fn judge(&mut self, membership: &Membership, now: Instant) {
        if self.0.is_empty() {
            return;
        }
        let members = membership.members();
        let alive = |addr: SocketAddr| {
            members.iter().any(|member| {
                member.addr == addr && member.state == crate::membership::MemberState::Alive
            })
        };
        self.0.retain(|pending| {
            // This node is alive while it judges.
            if !pending.twin.is_none_or(alive) || !alive(pending.addr) {
                return false;
            }
            if now < pending.judge_at {
                return true;
            }
            match pending.twin {
                Some(twin) => warn_name_twin(&pending.name, pending.addr, twin),
                None => warn_own_name_taken(&pending.name, pending.addr),
            }
            false
        });
    }
}

/// How long a member that stopped takes, twice over, to be probed, missed
/// and declared down: a node restarted at a new address has its old entry
/// gone by then, and is no twin of its own.
fn restart_grace(swim: &crate::SwimSettings, membership: &Membership) -> Duration {
    2 * (swim.probe_interval + swim.probe_timeout + membership.suspicion_timeout())
}

fn warn_own_name_taken(name: &str, addr: SocketAddr) {
    warn!(
        member = %name,
        %addr,
        "cluster: member `{name}` at {addr} has this node's name; give each node a name of its own (coordination.cluster.node_name)"
    );
}

fn warn_name_twin(name: &str, addr: SocketAddr, twin: SocketAddr) {
    warn!(
        member = %name,
        %addr,
        "cluster: member `{name}` at {addr} has the name of the member at {twin}; give each node a name of its own (coordination.cluster.node_name)"
    );
}

/// Log what changed in the membership; the members whose identity is gone.
/// Messages in flight to a member back under a newer generation went to its
/// old identity: a restarted process will never answer them, and one that
/// was declared down had its requests answered then. Either way they are
/// lost as a downed member's are.
fn log_events(
    membership: &mut Membership,
    name_twins: &mut NameTwins,
    suspected: &mut std::collections::HashSet<SocketAddr>,
    swim: &crate::SwimSettings,
) -> Vec<Gone> {
    let mut gone = Vec::new();
    for event in membership.take_events() {
        match &event {
            MembershipEvent::Down(member) => gone.push(Gone {
                addr: member.addr,
                restarted_at: None,
            }),
            MembershipEvent::Renamed { current, .. } => gone.push(Gone {
                addr: current.addr,
                restarted_at: Some(
                    std::time::UNIX_EPOCH + Duration::from_micros(current.generation),
                ),
            }),
            _ => {}
        }
        match event {
            MembershipEvent::Up(member) => {
                suspected.remove(&member.addr);
                info!(member = %member.name, addr = %member.addr, "cluster: member up");
                // Names are how operators tell members apart (`cluster
                // members`, logs, metrics): two at once is a mistake. Either
                // of the two may be the other's earlier process, restarted at
                // a new address before its old entry was declared down, so
                // every pair is judged once that would have happened.
                let me = membership.identity();
                let twin = if me.name == member.name && me.addr != member.addr {
                    Some(None)
                } else {
                    membership
                        .members()
                        .into_iter()
                        .find(|other| {
                            *other.name == *member.name
                                && other.addr != member.addr
                                && other.state == crate::membership::MemberState::Alive
                        })
                        .map(|other| Some(other.addr))
                };
                if let Some(twin) = twin {
                    name_twins.0.push(NameTwin {
                        name: member.name.to_string(),
                        addr: member.addr,
                        twin,
                        judge_at: Instant::now() + restart_grace(swim, membership),
                    });
                }
            }
            MembershipEvent::Down(member) => {
                if suspected.remove(&member.addr) {
                    warn!(member = %member.name, addr = %member.addr, "cluster: member down: it failed (suspected, and no refutation came)");
                } else {
                    // A graceful leave goes straight to down; so does a
                    // member another node judged before this one suspected it.
                    warn!(member = %member.name, addr = %member.addr, "cluster: member down: it left, or another member declared it down first");
                }
            }
            MembershipEvent::Renamed { previous, current } => info!(
                member = %current.name,
                addr = %current.addr,
                previous_generation = previous.generation,
                generation = current.generation,
                "cluster: member came back under a newer generation"
            ),
            MembershipEvent::Suspected(member) => {
                suspected.insert(member.addr);
                debug!(member = %member.name, "cluster: member suspected")
            }
            MembershipEvent::Refuted(member) => {
                suspected.remove(&member.addr);
                debug!(member = %member.name, "cluster: member refuted a suspicion")
            }
            MembershipEvent::Joined => info!("cluster: joined"),
            MembershipEvent::Alone => warn!("cluster: every known member is down or gone"),
            MembershipEvent::Renewed(me) => {
                warn!(
                    generation = me.generation,
                    "cluster: this node was declared down; rejoining under a newer generation"
                );
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A refusal is the peer's when it closed with a TLS alert, on either
    /// transport; certificate errors found here are this node's.
    #[test]
    fn the_side_that_refused_is_read_from_the_error() {
        assert!(refused_by_peer(
            "aborted by peer: the cryptographic handshake failed: error 48"
        ));
        assert!(refused_by_peer("received fatal alert: UnknownCA"));
        assert!(!refused_by_peer(
            "the cryptographic handshake failed: error 42: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!refused_by_peer("peer sent no certificates"));
        // A peer that closed mid-handshake for its own reasons (restarting,
        // stopping) refused nothing of this node's.
        assert!(!refused_by_peer(
            "aborted by peer: the application or application protocol caused the connection to be closed during the handshake"
        ));
    }

    /// One line per host per window, however many ports it dials from,
    /// with the count skipped; other hosts are not held back by it; and
    /// the map stays bounded under a scan of many hosts.
    #[test]
    fn refusals_are_logged_once_a_window_per_host() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        let one: std::net::IpAddr = "10.0.0.1".parse().expect("an address");
        let two: std::net::IpAddr = "10.0.0.2".parse().expect("an address");
        assert_eq!(log.admit(one, start), Some(0));
        assert_eq!(log.admit(one, start + Duration::from_secs(1)), None);
        assert_eq!(log.admit(one, start + Duration::from_secs(2)), None);
        assert_eq!(log.admit(two, start + Duration::from_secs(2)), Some(0));
        assert_eq!(
            log.admit(one, start + REFUSAL_LOG_EVERY + Duration::from_secs(1)),
            Some(2)
        );
        for host in 0..(RefusalLog::HOSTS_MAX as u32 * 2) {
            let _ = log.admit(std::net::IpAddr::from(host.to_be_bytes()), start);
        }
        assert!(log.hosts.len() <= RefusalLog::HOSTS_MAX);
        // Past the window, the quiet hosts make room again.
        let later = start + REFUSAL_LOG_EVERY * 3;
        assert_eq!(
            log.admit("192.168.0.1".parse().expect("an address"), later),
            Some(0)
        );
    }

    /// Within its window after the last remote message, an idle loop finds
    /// new ones by polling (the shards never ring it here); past the window,
    /// with no window, or once another thread was seen taking its CPU
    /// after an idle poll, it waits for a ring and never polls.
    #[test]
    fn an_idle_loop_polls_within_its_window_and_then_waits_for_a_ring() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let polls = Cell::new(0u32);
        // Messages show at the fourth poll.
        let has_work = || {
            polls.set(polls.get() + 1);
            polls.get() > 3
        };
        let never_rung = std::future::pending::<()>;
        runtime.block_on(async {
            for yield_cpu in [true, false] {
                polls.set(0);
                let poll = IdlePoll {
                    window: Duration::from_secs(30),
                    yield_cpu,
                };
                // However slowly this machine runs the test, it polls on.
                let mut patient = PollContention::with_gap(Duration::MAX);
                tokio::time::timeout(
                    Duration::from_secs(10),
                    poll_then_wait(
                        Some(poll),
                        Some(Instant::now()),
                        &mut patient,
                        has_work,
                        never_rung(),
                    ),
                )
                .await
                .expect("found by polling, without a ring");
                assert_eq!(polls.get(), 4, "polled until the messages showed");
            }
            let short = IdlePoll {
                window: Duration::from_millis(1),
                yield_cpu: true,
            };
            let long_ago = Instant::now()
                .checked_sub(Duration::from_secs(1))
                .expect("an instant a second back");
            let long = IdlePoll {
                window: Duration::from_secs(30),
                yield_cpu: true,
            };
            // Another thread kept the CPU from the loop (back an hour
            // after its poll, so polling stays off however slow this run):
            let mut contended = PollContention::default();
            for strike in [false, true] {
                contended.polled(Instant::now());
                let later = Instant::now() + Duration::from_secs(3600);
                assert_eq!(contended.resumed(|| later), strike);
            }
            for (poll, last_work, contention) in [
                // Within the window, but contended.
                (Some(long), Some(Instant::now()), contended),
                // Past the window.
                (Some(short), Some(long_ago), PollContention::default()),
                // Nothing moved yet.
                (Some(short), None, PollContention::default()),
                // No window: it parks at once.
                (None, Some(Instant::now()), PollContention::default()),
            ] {
                polls.set(0);
                let mut contention = contention;
                let waited = tokio::time::timeout(
                    Duration::from_millis(50),
                    poll_then_wait(poll, last_work, &mut contention, has_work, never_rung()),
                )
                .await;
                assert!(waited.is_err(), "only a ring ends this wait");
                assert_eq!(polls.get(), 0, "and it never polled");
            }
            // A ring ends the wait past the window.
            tokio::time::timeout(
                Duration::from_secs(10),
                poll_then_wait(
                    Some(short),
                    Some(long_ago),
                    &mut PollContention::default(),
                    has_work,
                    async {},
                ),
            )
            .await
            .expect("the ring ends it");
        });
    }
}
