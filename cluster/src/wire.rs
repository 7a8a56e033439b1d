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

/// The largest batch of remote messages in one frame: one message of the
/// largest content (1 MiB) always fits.
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
/// foca copies identities often (each member list update, each gossip
/// target chosen), so the name is shared, not copied: a clone is a count
/// increment, never an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's name (`coordination.cluster.node_name`).
    pub name: Arc<str>,
    /// The address other nodes reach it at.
    pub addr: SocketAddr,
    /// When this identity was made, Unix microseconds; also dates the news of
    /// the node's arrival, which `caxton_gossip_convergence_time_seconds` times.
    pub generation: u64,
}

impl NodeId {
    /// A placeholder for a seed known only by address: foca accepts an
    /// announce addressed to any identity with the receiver's address.
    pub fn seed(addr: SocketAddr) -> Self {
        Self {
            name: Arc::from(""),
            addr,
            generation: 0,
        }
    }

    /// The identity this node takes after being declared down: a generation
    /// above both the old one and the clock.
    pub fn renewed(&self, unix_ms: u64) -> Self {
        Self {
            name: Arc::clone(&self.name),
            addr: self.addr,
            generation: unix_ms.max(self.generation + 1),
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// The membership core renews identities itself (it knows the time), so
    /// foca reports `Defunct` instead of renewing.
    fn renew(&self) -> Option<Self> {
        None
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Why an identity read off the wire is refused.
pub(crate) fn check_identity(id: &NodeId) -> Result<(), WireError> {
    caxton_profiles::check_agent_name(&id.name).map_err(|_| WireError::BadIdentity)
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
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePackCodec;

impl MessagePackCodec {
    fn encode<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), WireError> {
        let bytes =
            rmp_serde::to_vec(value).map_err(|error| WireError::Decode(error.to_string()))?;
        // foca requires a failed encode to leave the buffer untouched.
        if buf.remaining_mut() < bytes.len() {
            return Err(WireError::NoRoom);
        }
        buf.put_slice(&bytes);
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
        Self::encode(header, buf).map_err(WireErrorBox)
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
        Self::encode(member, buf).map_err(WireErrorBox)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, Self::Error> {
        let member: Member<NodeId> = Self::decode(buf).map_err(WireErrorBox)?;
        check_identity(member.id()).map_err(WireErrorBox)?;
        Ok(member)
    }
}

/// Read the sender of a SWIM packet without handing it to foca.
pub fn packet_sender(packet: &[u8]) -> Result<NodeId, WireError> {
    let header: Header<NodeId> = MessagePackCodec::decode(packet)?;
    check_identity(&header.src)?;
    Ok(header.src)
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
    let mut out = Vec::with_capacity(FRAME_OVERHEAD + packet.len());
    out.push(FRAME_VERSION);
    out.push(kind.byte());
    out.extend_from_slice(&header.nonce.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    let length = u32::try_from(packet.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(packet).to_be_bytes());
    out.extend_from_slice(packet);
    out
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
        let good = NodeId {
            name: "node-a".into(),
            addr: "127.0.0.1:1".parse().expect("address"),
            generation: 5,
        };
        assert_eq!(check_identity(&good), Ok(()));
        assert_eq!(check_destination(&NodeId::seed(good.addr)), Ok(()));
        assert_eq!(
            check_identity(&NodeId::seed(good.addr)),
            Err(WireError::BadIdentity),
            "never a sender or member"
        );
        let bad = NodeId {
            name: "x".repeat(65).into(),
            ..good.clone()
        };
        assert_eq!(check_identity(&bad), Err(WireError::BadIdentity));
        assert!(good.renewed(1).generation > good.generation);
        assert_eq!(good.renewed(99).generation, 99);
    }
}
