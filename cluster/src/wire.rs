//! What travels between nodes: node identities, foca's SWIM packets encoded
//! as MessagePack, and the frame around each packet (a version byte, the
//! sender's boot nonce and sequence number, a length and a CRC-32).
//!
//! The frame lets a receiver drop, before foca sees a byte, a packet that is
//! truncated (the length disagrees), corrupt (the checksum disagrees),
//! from a future or past format (the version), too large, or replayed (its
//! sequence number was already seen from that sender's boot). Foca decodes
//! every update of a packet before it applies any, so a packet that passes the
//! frame and still fails to decode changes nothing either.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};
use serde::{Deserialize, Serialize};

/// The frame format this build speaks.
pub const FRAME_VERSION: u8 = 1;

/// Bytes a frame adds to the SWIM packet it carries.
pub const FRAME_OVERHEAD: usize = 1 + 1 + 8 + 8 + 4 + 4;

/// A frame carrying a SWIM packet (foca's).
const KIND_SWIM: u8 = 0;
/// A frame carrying a directory message (`crate::directory`).
const KIND_DIRECTORY: u8 = 1;
/// A frame carrying messages between agents (`crate::remote`).
const KIND_MESSAGES: u8 = 2;
/// A frame of the ring watch (`crate::watch`): a ping or its answer, a
/// verdict, or a suspicion handed over.
const KIND_WATCH: u8 = 3;

/// The largest batch of remote messages in one frame. A message too large
/// to fit one alone cannot cross nodes: it is refused where it was sent
/// (`caxton:refused:too-large`).
pub const MESSAGES_PACKET_MAX: usize = 2 * 1024 * 1024;

/// The largest directory message: one node's whole agent list travels in
/// one (on a QUIC stream when it does not fit a datagram), about 3,500
/// agents of 64-byte names.
pub const DIRECTORY_PACKET_MAX: usize = 256 * 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A SWIM packet, for foca.
    Swim,
    /// A directory message: which agents a node hosts, or a request for that.
    Directory,
    /// Messages between agents on different nodes, in order.
    Messages,
    /// The ring watch's: a ping or its answer, a verdict, or a suspicion
    /// handed over.
    Watch,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Swim => KIND_SWIM,
            FrameKind::Directory => KIND_DIRECTORY,
            FrameKind::Messages => KIND_MESSAGES,
            FrameKind::Watch => KIND_WATCH,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            KIND_SWIM => Some(FrameKind::Swim),
            KIND_DIRECTORY => Some(FrameKind::Directory),
            KIND_MESSAGES => Some(FrameKind::Messages),
            KIND_WATCH => Some(FrameKind::Watch),
            _ => None,
        }
    }
}

/// A cluster member: its name, where it listens, and its generation (the
/// Unix time in microseconds when it joined; a restart or a rejoin after
/// being declared down takes a higher one, so the newer identity wins).
///
/// Its fields live behind a shared pointer, read through `Deref`
/// (`id.name`, `id.addr`, `id.generation`), with the address's [`AddrKey`]
/// beside the pointer. Two reasons, both from foca, which copies identities
/// often and finds members by a linear walk over a list of them:
/// - a clone is a count increment, never an allocation;
/// - the list holds 24 bytes per member instead of 64, and the walk compares
///   one inline word per member without following the pointer. At a
///   thousand members that walk is most of the cluster simulator's time,
///   and it reads memory, not registers.
///
/// On the wire it is exactly its [`NodeInfo`].
#[derive(Clone)]
pub struct NodeId {
    key: AddrKey,
    info: Arc<NodeInfo>,
}

/// What a [`NodeId`] says: the fields that travel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name (`coordination.cluster.node_name`).
    pub name: Arc<str>,
    /// The address other nodes reach it at.
    pub addr: SocketAddr,
    /// When this identity was made, Unix microseconds; also dates the news of
    /// the node's arrival, which `caxton_gossip_convergence_time_seconds` times.
    pub generation: u64,
}

impl NodeId {
    /// The identity of node `name` at `addr`, made at `generation`.
    pub fn new(name: impl Into<Arc<str>>, addr: SocketAddr, generation: u64) -> Self {
        Self::from(NodeInfo {
            name: name.into(),
            addr,
            generation,
        })
    }

    /// A placeholder for a seed known only by address: foca accepts an
    /// announce addressed to any identity with the receiver's address.
    pub fn seed(addr: SocketAddr) -> Self {
        Self::new("", addr, 0)
    }

    /// The identity this node takes after being declared down: a generation
    /// above both the old one and the clock.
    pub fn renewed(&self, unix_ms: u64) -> Self {
        Self::new(
            Arc::clone(&self.name),
            self.addr,
            unix_ms.max(self.generation + 1),
        )
    }

    /// The key foca knows this identity's address by.
    pub fn key(&self) -> AddrKey {
        self.key
    }
}

impl NodeId {
    /// `info` as an identity, interned: one equal to the newest made on
    /// this thread at its address shares that one's allocation. Each packet
    /// brings its identities anew; shared, a member found in foca's list
    /// proves equal by pointer, without reading the stored identity (a
    /// cache miss per update at a thousand members), and a thread running
    /// many nodes (the simulator) holds one copy of each identity, not one
    /// per node. The table also makes a hashed [`AddrKey`] exact: an
    /// identity whose key another address holds is refused (given back,
    /// with why).
    fn interned(info: NodeInfo) -> Result<Self, (NodeInfo, String)> {
        let key = AddrKey::of(info.addr);
        IDENTITIES.with(|identities| {
            let mut identities = identities.borrow_mut();
            match identities.get(&key) {
                Some(known) if **known == info => {
                    return Ok(Self {
                        key,
                        info: Arc::clone(known),
                    })
                }
                Some(known) if known.addr != info.addr => {
                    let why = format!(
                        "addresses {} and {} share the address key {key:?}",
                        known.addr, info.addr
                    );
                    return Err((info, why));
                }
                // An older identity still in flight after a newer one (a
                // restart's news spreading) does not displace the newer.
                Some(known) if known.generation > info.generation => {
                    return Ok(Self {
                        key,
                        info: Arc::new(info),
                    })
                }
                _ => {}
            }
            if identities.len() >= IDENTITIES_MAX {
                identities.clear();
            }
            let info = Arc::new(info);
            identities.insert(key, Arc::clone(&info));
            Ok(Self { key, info })
        })
    }
}

impl From<NodeInfo> for NodeId {
    /// Interned (see `NodeId::interned`); an identity made here (this
    /// node's own, a seed's placeholder) is never refused, only not shared.
    fn from(info: NodeInfo) -> Self {
        Self::interned(info).unwrap_or_else(|(info, _)| Self {
            key: AddrKey::of(info.addr),
            info: Arc::new(info),
        })
    }
}

/// Identities interned per thread at most, far more than a cluster has;
/// past it the table starts over.
const IDENTITIES_MAX: usize = 1 << 16;

thread_local! {
    /// The newest identity made on this thread at each address key (see
    /// `NodeId::interned`). Per thread: nothing is shared between the
    /// gossip shard and any other.
    static IDENTITIES: std::cell::RefCell<rustc_hash::FxHashMap<AddrKey, Arc<NodeInfo>>> =
        std::cell::RefCell::new(rustc_hash::FxHashMap::default());
}

impl std::ops::Deref for NodeId {
    type Target = NodeInfo;

    fn deref(&self) -> &NodeInfo {
        &self.info
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && (Arc::ptr_eq(&self.info, &other.info) || self.info == other.info)
    }
}

impl Eq for NodeId {}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.info.hash(state);
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NodeId")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.info.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        NodeInfo::deserialize(deserializer)
            .and_then(|info| Self::interned(info).map_err(|(_, why)| serde::de::Error::custom(why)))
    }
}

/// A member's address as one word, what foca compares to find a member.
///
/// An IPv4 address and port are packed exactly (bit 63 clear). An IPv6
/// address (with its port, flow label and scope) does not fit: its key is
/// a 63-bit hash with bit 63 set, and an identity read off the wire whose
/// key another address already holds is refused (see `NodeId::interned`),
/// so two addresses are never taken for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey(u64);

const HASHED_KEY: u64 = 1 << 63;

impl AddrKey {
    /// The key of `addr`.
    pub fn of(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(v4) => Self((u64::from(v4.ip().to_bits()) << 16) | u64::from(v4.port())),
            SocketAddr::V6(v6) => {
                let bits = v6.ip().to_bits();
                let mut hash = crate::mix64((bits >> 64) as u64);
                hash = crate::mix64(hash ^ bits as u64);
                hash = crate::mix64(hash ^ (u64::from(v6.port()) << 32) ^ u64::from(v6.flowinfo()));
                hash = crate::mix64(hash ^ u64::from(v6.scope_id()));
                Self(HASHED_KEY | (hash >> 1))
            }
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = AddrKey;

    /// The membership core renews identities itself (it knows the time), so
    /// foca reports `Defunct` instead of renewing.
    fn renew(&self) -> Option<Self> {
        None
    }

    fn addr(&self) -> AddrKey {
        self.key
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Why an identity read off the wire is refused.
pub(crate) fn check_identity(id: &NodeId) -> Result<(), WireError> {
    check_name(&id.name)
}

/// A node's name follows the agent naming rule.
fn check_name(name: &str) -> Result<(), WireError> {
    caxton_profiles::check_node_name(name).map_err(|_| WireError::BadIdentity)
}

/// A packet's destination may also be the placeholder a joining node
/// announces to (an empty name, generation 0).
fn check_destination(id: &NodeId) -> Result<(), WireError> {
    if id.name.is_empty() && id.generation == 0 {
        return Ok(());
    }
    check_identity(id)
}

/// A packet or frame that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header or its stated length.
    #[error("truncated frame")]
    Truncated,
    /// Longer than its stated length or the largest packet.
    #[error("oversized frame")]
    Oversized,
    /// A format this build does not speak.
    #[error("unknown frame version or kind")]
    UnknownVersion,
    /// The checksum disagrees.
    #[error("corrupt frame (checksum)")]
    Corrupt,
    /// MessagePack that is not a SWIM packet.
    #[error("undecodable packet: {0}")]
    Decode(String),
    /// A node name outside the naming rule.
    #[error("a node identity breaks the naming rule")]
    BadIdentity,
    /// Not enough room to encode into.
    #[error("no room to encode")]
    NoRoom,
    /// Already seen from this sender's boot.
    #[error("replayed frame")]
    Replayed,
    /// foca refused the packet (for example one from this node's own address).
    #[error("refused by the membership protocol: {0}")]
    Refused(String),
}

/// foca's packets as MessagePack (rmp-serde).
#[derive(Clone, Debug, Default)]
pub struct MessagePackCodec {
    /// Each encode's bytes, before they go to foca's buffer (kept, so an
    /// encode allocates nothing once it has grown).
    scratch: Vec<u8>,
}

impl MessagePackCodec {
    fn encode<T: Serialize>(&mut self, value: &T, mut buf: impl BufMut) -> Result<(), WireError> {
        self.scratch.clear();
        rmp_serde::encode::write(&mut self.scratch, value)
            .map_err(|error| WireError::Decode(error.to_string()))?;
        // foca requires a failed encode to leave the buffer untouched.
        if buf.remaining_mut() < self.scratch.len() {
            return Err(WireError::NoRoom);
        }
        buf.put_slice(&self.scratch);
        Ok(())
    }

    fn decode<T: for<'de> Deserialize<'de>>(mut buf: impl Buf) -> Result<T, WireError> {
        // foca hands contiguous buffers (see its `Codec` docs).
        let mut chunk = buf.chunk();
        let before = chunk.len();
        let value = rmp_serde::decode::from_read(&mut chunk)
            .map_err(|error| WireError::Decode(error.to_string()))?;
        buf.advance(before - chunk.len());
        Ok(value)
    }
}

impl std::error::Error for WireErrorBox {}

/// [`WireError`] as foca's codec error (foca needs `'static + Error`).
#[derive(Debug)]
pub struct WireErrorBox(pub WireError);

impl std::fmt::Display for WireErrorBox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl Codec<NodeId> for MessagePackCodec {
    type Error = WireErrorBox;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        self.encode(header, buf).map_err(WireErrorBox)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeId>, Self::Error> {
        let header: Header<NodeId> = Self::decode(buf).map_err(WireErrorBox)?;
        check_identity(&header.src).map_err(WireErrorBox)?;
        check_destination(&header.dst).map_err(WireErrorBox)?;
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        self.encode(member, buf).map_err(WireErrorBox)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, Self::Error> {
        let member: Member<NodeId> = Self::decode(buf).map_err(WireErrorBox)?;
        check_identity(member.id()).map_err(WireErrorBox)?;
        Ok(member)
    }
}

/// Read the sender's address of a SWIM packet without handing it to foca:
/// the header's first field, borrowed in place (foca decodes the packet
/// in full next).
pub fn packet_sender(packet: &[u8]) -> Result<SocketAddr, WireError> {
    #[derive(Deserialize)]
    struct Sender<'a> {
        #[serde(borrow)]
        name: &'a str,
        addr: SocketAddr,
        #[serde(rename = "generation")]
        _generation: serde::de::IgnoredAny,
    }
    type HeaderPeek<'a> = (
        Sender<'a>,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
    );
    let (sender, ..): HeaderPeek<'_> =
        rmp_serde::from_slice(packet).map_err(|error| WireError::Decode(error.to_string()))?;
    check_name(sender.name)?;
    Ok(sender.addr)
}

/// A frame's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Random per process start: a restarted sender's sequence starts afresh.
    pub nonce: u64,
    /// Counts the sender's frames since it started.
    pub seq: u64,
}

/// Wrap a SWIM `packet` in a frame.
pub fn frame(header: FrameHeader, packet: &[u8]) -> Vec<u8> {
    frame_of(FrameKind::Swim, header, packet)
}

/// Wrap `packet` of `kind` in a frame.
pub fn frame_of(kind: FrameKind, header: FrameHeader, packet: &[u8]) -> Vec<u8> {
    let mut out = frame_start(packet.len());
    out.extend_from_slice(packet);
    frame_finish(&mut out, kind, header);
    out
}

/// A buffer for a frame whose packet is written in place after the header
/// ([`frame_finish`] fills the header in): `packet_hint` bytes reserved.
pub fn frame_start(packet_hint: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_OVERHEAD + packet_hint);
    frame.resize(FRAME_OVERHEAD, 0);
    frame
}

/// Fill in the header of a frame begun with [`frame_start`], whose packet
/// is everything after it.
pub fn frame_finish(frame: &mut [u8], kind: FrameKind, header: FrameHeader) {
    let (head, packet) = frame.split_at_mut(FRAME_OVERHEAD);
    head[0] = FRAME_VERSION;
    head[1] = kind.byte();
    head[2..10].copy_from_slice(&header.nonce.to_be_bytes());
    head[10..18].copy_from_slice(&header.seq.to_be_bytes());
    let length = u32::try_from(packet.len()).unwrap_or(u32::MAX);
    head[18..22].copy_from_slice(&length.to_be_bytes());
    head[22..26].copy_from_slice(&crc32fast::hash(packet).to_be_bytes());
}

/// The kind a frame says it carries, before any check.
pub fn frame_kind(frame: &[u8]) -> Option<FrameKind> {
    frame.get(1).copied().and_then(FrameKind::from_byte)
}

/// Check a SWIM frame and return its header and packet; a frame of
/// another kind is `UnknownVersion`.
pub fn unframe(frame: &[u8], max_packet: usize) -> Result<(FrameHeader, &[u8]), WireError> {
    match unframe_any(frame, max_packet)? {
        (FrameKind::Swim, header, packet) => Ok((header, packet)),
        _ => Err(WireError::UnknownVersion),
    }
}

/// Check a frame of any kind this build speaks and return its kind, header
/// and packet. A SWIM packet may be `max_packet` bytes long, a directory
/// message [`DIRECTORY_PACKET_MAX`].
pub fn unframe_any(
    frame: &[u8],
    max_packet: usize,
) -> Result<(FrameKind, FrameHeader, &[u8]), WireError> {
    if frame.len() < FRAME_OVERHEAD {
        return Err(WireError::Truncated);
    }
    if frame[0] != FRAME_VERSION {
        return Err(WireError::UnknownVersion);
    }
    let kind = FrameKind::from_byte(frame[1]).ok_or(WireError::UnknownVersion)?;
    let limit = match kind {
        FrameKind::Swim | FrameKind::Watch => max_packet,
        FrameKind::Directory => DIRECTORY_PACKET_MAX,
        FrameKind::Messages => MESSAGES_PACKET_MAX,
    };
    if frame.len() > FRAME_OVERHEAD.saturating_add(limit) {
        return Err(WireError::Oversized);
    }
    let be64 = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&frame[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let be32 = |at: usize| {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&frame[at..at + 4]);
        u32::from_be_bytes(bytes)
    };
    let header = FrameHeader {
        nonce: be64(2),
        seq: be64(10),
    };
    let length = be32(18) as usize;
    let checksum = be32(22);
    let packet = &frame[FRAME_OVERHEAD..];
    if length > limit {
        return Err(WireError::Oversized);
    }
    if packet.len() < length {
        return Err(WireError::Truncated);
    }
    if packet.len() > length {
        return Err(WireError::Oversized);
    }
    if crc32fast::hash(packet) != checksum {
        return Err(WireError::Corrupt);
    }
    Ok((kind, header, packet))
}

/// Which frames of one sender were seen: the highest sequence number and a
/// 64-frame window below it (frames may arrive out of order as datagrams),
/// and the boot nonces it used before, so frames of an earlier boot are
/// refused once a later one has spoken.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayWindow {
    nonce: u64,
    highest: u64,
    seen: u64,
    started: bool,
    retired: [u64; RETIRED_NONCES],
    retired_next: usize,
}

/// Earlier boot nonces remembered per sender.
const RETIRED_NONCES: usize = 4;

impl ReplayWindow {
    /// Whether a frame is new; records it if so. A new nonce (the sender
    /// restarted) starts a new window and retires the old one; a frame of a
    /// retired nonce, or older than the window, is refused, as a replay
    /// would be.
    pub fn accept(&mut self, header: FrameHeader) -> bool {
        if !self.started || header.nonce != self.nonce {
            if self.started && self.retired.contains(&header.nonce) {
                return false;
            }
            if self.started {
                self.retired[self.retired_next] = self.nonce;
                self.retired_next = (self.retired_next + 1) % RETIRED_NONCES;
            }
            self.nonce = header.nonce;
            self.highest = header.seq;
            self.seen = 1;
            self.started = true;
            return true;
        }
        if header.seq > self.highest {
            let shift = header.seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = header.seq;
            return true;
        }
        let age = self.highest - header.seq;
        if age >= 64 {
            return false;
        }
        let bit = 1u64 << age;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64) -> FrameHeader {
        FrameHeader { nonce: 7, seq }
    }

    #[test]
    fn frames_round_trip_and_damage_is_named() {
        let packet = b"swim packet".to_vec();
        let framed = frame(header(3), &packet);
        assert_eq!(unframe(&framed, 64), Ok((header(3), &packet[..])));
        assert_eq!(
            unframe(&framed[..framed.len() - 1], 64),
            Err(WireError::Truncated)
        );
        assert_eq!(unframe(&framed[..10], 64), Err(WireError::Truncated));
        let mut longer = framed.clone();
        longer.push(0);
        assert_eq!(unframe(&longer, 64), Err(WireError::Oversized));
        assert_eq!(unframe(&framed, 4), Err(WireError::Oversized));
        let mut flipped = framed.clone();
        *flipped.last_mut().expect("not empty") ^= 0x40;
        assert_eq!(unframe(&flipped, 64), Err(WireError::Corrupt));
        let mut future = framed;
        future[0] = FRAME_VERSION + 1;
        assert_eq!(unframe(&future, 64), Err(WireError::UnknownVersion));
    }

    #[test]
    fn the_replay_window_takes_each_frame_once() {
        let mut window = ReplayWindow::default();
        assert!(window.accept(header(10)));
        assert!(!window.accept(header(10)), "the same frame twice");
        assert!(window.accept(header(12)));
        assert!(window.accept(header(11)), "late but new");
        assert!(!window.accept(header(11)));
        assert!(window.accept(header(200)));
        assert!(!window.accept(header(12)), "older than the window");
        assert!(
            window.accept(FrameHeader { nonce: 8, seq: 0 }),
            "a restarted sender"
        );
        assert!(
            !window.accept(FrameHeader { nonce: 7, seq: 500 }),
            "a frame of the earlier boot, once the later one has spoken"
        );
        assert!(window.accept(FrameHeader { nonce: 8, seq: 1 }));
    }

    #[test]
    fn identities_off_the_wire_follow_the_naming_rule() {
        let good = NodeId::new("node-a", "127.0.0.1:1".parse().expect("address"), 5);
        assert_eq!(check_identity(&good), Ok(()));
        assert_eq!(check_destination(&NodeId::seed(good.addr)), Ok(()));
        assert_eq!(
            check_identity(&NodeId::seed(good.addr)),
            Err(WireError::BadIdentity),
            "never a sender or member"
        );
        let bad = NodeId::new("x".repeat(65), good.addr, good.generation);
        assert_eq!(check_identity(&bad), Err(WireError::BadIdentity));
        assert!(good.renewed(1).generation > good.generation);
        assert_eq!(good.renewed(99).generation, 99);
    }

    #[test]
    fn a_member_of_foca_list_is_a_key_and_a_pointer() {
        assert_eq!(std::mem::size_of::<NodeId>(), 16);
        assert_eq!(std::mem::size_of::<Member<NodeId>>(), 24);
    }

    #[test]
    fn identities_travel_as_their_fields_and_compare_by_them() {
        let id = NodeId::new("node-a", "10.0.0.1:7946".parse().expect("address"), 5);
        let bytes = rmp_serde::to_vec(&id).expect("encodes");
        let info = NodeInfo {
            name: "node-a".into(),
            addr: id.addr,
            generation: 5,
        };
        assert_eq!(bytes, rmp_serde::to_vec(&info).expect("encodes"));
        let back: NodeId = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back, id, "equal fields, separate allocations");
        assert_eq!(back.key(), id.key());
        assert_ne!(id, NodeId::new("node-a", id.addr, 6));
        assert_ne!(id, NodeId::new("node-b", id.addr, 5));
    }

    #[test]
    fn ipv4_keys_are_exact_and_ipv6_keys_are_checked() {
        let v4 = |text: &str| AddrKey::of(text.parse().expect("address"));
        assert_eq!(v4("10.0.0.1:7946"), v4("10.0.0.1:7946"));
        assert_ne!(v4("10.0.0.1:7946"), v4("10.0.0.1:7947"));
        assert_ne!(v4("10.0.0.1:7946"), v4("10.0.0.2:7946"));
        let hashed = |addr: SocketAddr| AddrKey::of(addr).0 & HASHED_KEY != 0;
        assert!(!hashed("255.255.255.255:65535".parse().expect("address")));
        let a: SocketAddr = "[fd00::1]:7946".parse().expect("address");
        let b: SocketAddr = "[fd00::2]:7946".parse().expect("address");
        assert!(hashed(a));
        assert_ne!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(
            AddrKey::of(a),
            AddrKey::of("[::ffff:10.0.0.1]:7946".parse().expect("address")),
        );

        // Two addresses under one key: an identity read off the wire at the
        // second is refused, so foca never takes one member for the other.
        let mut codec = MessagePackCodec::default();
        let mut packet = Vec::new();
        codec
            .encode_member(&Member::alive(NodeId::new("node-b", b, 1)), &mut packet)
            .expect("encodes");
        assert!(
            codec.decode_member(packet.as_slice()).is_ok(),
            "no collision: read as itself"
        );
        // As if node-a, at `a`, had taken b's key first.
        IDENTITIES.with(|identities| {
            identities.borrow_mut().insert(
                AddrKey::of(b),
                Arc::new(NodeInfo {
                    name: "node-a".into(),
                    addr: a,
                    generation: 1,
                }),
            )
        });
        assert!(matches!(
            codec.decode_member(packet.as_slice()),
            Err(WireErrorBox(WireError::Decode(message))) if message.contains("share the address key")
        ));
        // Every other message carrying it (a verdict, a batch) reads it the same way.
        let alone = rmp_serde::to_vec(&NodeId::new("node-b", b, 1)).expect("encodes");
        assert!(rmp_serde::from_slice::<NodeId>(&alone).is_err());
    }
}
