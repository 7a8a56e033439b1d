//! Remote batches in MessagePack, by hand: the gossip shard's hottest code
//! under remote load. Through rmp_serde, reading a batch was 17% of the
//! gossip thread's samples and writing one 6% (a visitor or serializer call
//! per field, an enum dance per address and performative).
//!
//! [`write_messages`] writes exactly the bytes serde writes for a batch's
//! messages (the tests compare them byte for byte). [`read_batch`] reads
//! only those exact shapes (a message as an array of its 16 fields, enums
//! as one-entry maps or names, content as `bin`); anything else (an older
//! node's shapes, a damaged packet) makes it give up, and
//! [`RemoteBatch::decode`] reads the packet with serde, which decides. So
//! it can only ever answer what serde would: the tests and the
//! `remote_batch` fuzz target check that whenever it reads a packet, serde
//! reads the same batch from it.

use std::sync::OnceLock;

use caxton_messaging::{Address, AgentId, InstanceId, Performative};

use crate::remote::{RemoteBatch, RemoteMessage, Target};
use crate::wire::NodeId;

/// The batch in `packet`, or `None` where this reader gives up (serde
/// then reads it). The sender's identity is read with serde: it is one
/// per batch, and it goes through the identity intern table.
pub(crate) fn read_batch(packet: &[u8]) -> Option<RemoteBatch> {
    let mut reader = Reader { rest: packet };
    if reader.array_len()? != 2 {
        return None;
    }
    let mut identity = reader.rest;
    let from: NodeId = rmp_serde::from_read(&mut identity).ok()?;
    reader.rest = identity;
    let count = reader.array_len()?;
    // A claimed count is not an allocation: each message is at least 16 bytes.
    let mut messages = Vec::with_capacity(count.min(reader.rest.len() / 16));
    for _ in 0..count {
        messages.push(reader.message()?);
    }
    reader
        .rest
        .is_empty()
        .then_some(RemoteBatch { from, messages })
}

/// The fields of a [`RemoteMessage`], as serde writes it.
const MESSAGE_FIELDS: usize = 16;

/// A MessagePack cursor over the unread bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    fn be(&mut self, width: usize) -> Option<u64> {
        Some(
            self.take(width)?
                .iter()
                .fold(0, |value, &byte| (value << 8) | u64::from(byte)),
        )
    }

    fn peek_nil(&mut self) -> bool {
        if self.rest.first() == Some(&NIL) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        let len = match self.byte()? {
            marker @ 0x90..=0x9f => u64::from(marker & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            _ => return None,
        };
        usize::try_from(len).ok()
    }

    /// A one-entry map's key: how serde writes an enum variant with data.
    fn variant(&mut self) -> Option<&'a str> {
        (self.byte()? == 0x81).then_some(())?;
        self.str()
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = match self.byte()? {
            marker @ 0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        std::str::from_utf8(self.take(usize::try_from(len).ok()?)?).ok()
    }

    /// An unsigned integer in any of MessagePack's unsigned widths.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            fixint @ 0x00..=0x7f => Some(u64::from(fixint)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    fn uint_as<T: TryFrom<u64>>(&mut self) -> Option<T> {
        T::try_from(self.uint()?).ok()
    }

    fn option_uint(&mut self) -> Option<Option<u64>> {
        if self.peek_nil() {
            return Some(None);
        }
        self.uint().map(Some)
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    fn bin(&mut self) -> Option<Vec<u8>> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        Some(self.take(usize::try_from(len).ok()?)?.to_vec())
    }

    fn address(&mut self) -> Option<Address> {
        let address = match self.variant()? {
            "Agent" => Address::Agent(AgentId(self.uint_as()?)),
            "Instance" => {
                (self.array_len()? == 3).then_some(())?;
                Address::Instance(InstanceId {
                    agent: AgentId(self.uint_as()?),
                    shard: self.uint_as()?,
                    slot: self.uint_as()?,
                })
            }
            "Client" => {
                (self.array_len()? == 2).then_some(())?;
                Address::Client {
                    port: self.uint_as()?,
                    id: self.uint_as()?,
                }
            }
            "Remote" => {
                (self.array_len()? == 3).then_some(())?;
                Address::Remote {
                    port: self.uint_as()?,
                    token: self.uint_as()?,
                    agent: AgentId(self.uint_as()?),
                }
            }
            _ => return None,
        };
        Some(address)
    }

    fn performative(&mut self) -> Option<Performative> {
        let name = self.str()?;
        performative_names()
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, performative)| *performative)
    }

    fn message(&mut self) -> Option<RemoteMessage> {
        (self.array_len()? == MESSAGE_FIELDS).then_some(())?;
        let target = match self.variant()? {
            "Agent" => Target::Agent(self.str()?.to_owned()),
            "Address" => Target::Address(self.address()?),
            _ => return None,
        };
        let sender = if self.peek_nil() {
            None
        } else {
            Some(self.address()?)
        };
        Some(RemoteMessage {
            target,
            sender,
            performative: self.performative()?,
            conversation_id: self.uint()?,
            reply_with: self.uint()?,
            in_reply_to: self.uint()?,
            priority: self.uint_as()?,
            deadline_in_ns: self.option_uint()?,
            durable: self.bool()?,
            notice: self.option_uint()?,
            chained: self.option_uint()?,
            chain_ack: self.option_uint()?,
            sent_unix_ns: self.uint()?,
            content: self.bin()?,
            sender_name: if self.peek_nil() {
                None
            } else {
                Some(self.str()?.to_owned())
            },
            hop: self.uint()?,
        })
    }
}

/// Each performative's name as serde writes it, learned from serde itself
/// so the two can never disagree.
fn performative_names() -> &'static [(String, Performative)] {
    static NAMES: OnceLock<Vec<(String, Performative)>> = OnceLock::new();
    NAMES.get_or_init(|| {
        Performative::ALL
            .iter()
            .filter_map(|&performative| {
                let encoded = rmp_serde::to_vec(&performative).ok()?;
                let name: String = rmp_serde::from_slice(&encoded).ok()?;
                Some((name, performative))
            })
            .collect()
    })
}

/// Append a batch's `messages` array to `out`, as serde writes it.
pub(crate) fn write_messages(out: &mut Vec<u8>, messages: &[RemoteMessage]) {
    write_array_len(out, messages.len());
    for message in messages {
        write_message(out, message);
    }
}

fn write_message(out: &mut Vec<u8>, message: &RemoteMessage) {
    write_array_len(out, MESSAGE_FIELDS);
    match &message.target {
        Target::Agent(name) => {
            write_variant(out, "Agent");
            write_str(out, name);
        }
        Target::Address(address) => {
            write_variant(out, "Address");
            write_address(out, *address);
        }
    }
    match message.sender {
        Some(address) => write_address(out, address),
        None => out.push(NIL),
    }
    write_str(out, performative_name(message.performative));
    write_uint(out, message.conversation_id);
    write_uint(out, message.reply_with);
    write_uint(out, message.in_reply_to);
    write_uint(out, u64::from(message.priority));
    write_option_uint(out, message.deadline_in_ns);
    out.push(if message.durable { 0xc3 } else { 0xc2 });
    write_option_uint(out, message.notice);
    write_option_uint(out, message.chained);
    write_option_uint(out, message.chain_ack);
    write_uint(out, message.sent_unix_ns);
    write_length(out, message.content.len(), None, Some(0xc4), [0xc5, 0xc6]);
    out.extend_from_slice(&message.content);
    match &message.sender_name {
        Some(name) => write_str(out, name),
        None => out.push(NIL),
    }
    write_uint(out, message.hop);
}

fn write_address(out: &mut Vec<u8>, address: Address) {
    match address {
        Address::Agent(agent) => {
            write_variant(out, "Agent");
            write_uint(out, u64::from(agent.0));
        }
        Address::Instance(instance) => {
            write_variant(out, "Instance");
            write_array_len(out, 3);
            write_uint(out, u64::from(instance.agent.0));
            write_uint(out, u64::from(instance.shard));
            write_uint(out, u64::from(instance.slot));
        }
        Address::Client { port, id } => {
            write_variant(out, "Client");
            write_array_len(out, 2);
            write_uint(out, u64::from(port));
            write_uint(out, u64::from(id));
        }
        Address::Remote { port, token, agent } => {
            write_variant(out, "Remote");
            write_array_len(out, 3);
            write_uint(out, u64::from(port));
            write_uint(out, u64::from(token));
            write_uint(out, u64::from(agent.0));
        }
    }
}

/// MessagePack's nil: an `Option`'s `None`.
const NIL: u8 = 0xc0;

/// A one-entry map's key: how serde writes an enum variant with data.
fn write_variant(out: &mut Vec<u8>, name: &str) {
    out.push(0x81);
    write_str(out, name);
}

/// A length in its smallest form: below `short_max` in the marker `base`
/// itself (when there is a short form), then after the one-byte form's
/// marker (when there is one), the two-byte one's, or the four-byte one's.
fn write_length(
    out: &mut Vec<u8>,
    len: usize,
    short: Option<(u8, usize)>,
    one: Option<u8>,
    wide: [u8; 2],
) {
    match (short, one) {
        (Some((base, short_max)), _) if len < short_max => out.push(base | len as u8),
        (_, Some(one)) if len <= 0xff => out.extend([one, len as u8]),
        _ if len <= 0xffff => {
            out.push(wide[0]);
            out.extend((len as u16).to_be_bytes());
        }
        _ => {
            out.push(wide[1]);
            out.extend((len as u32).to_be_bytes());
        }
    }
}

fn write_array_len(out: &mut Vec<u8>, len: usize) {
    write_length(out, len, Some((0x90, 16)), None, [0xdc, 0xdd]);
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    write_length(out, text.len(), Some((0xa0, 32)), Some(0xd9), [0xda, 0xdb]);
    out.extend_from_slice(text.as_bytes());
}

/// An unsigned integer in the smallest of MessagePack's unsigned forms.
fn write_uint(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=0x7f => out.push(value as u8),
        0x80..=0xff => out.extend([0xcc, value as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend((value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend((value as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend(value.to_be_bytes());
        }
    }
}

fn write_option_uint(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => write_uint(out, value),
        None => out.push(NIL),
    }
}

fn performative_name(performative: Performative) -> &'static str {
    performative_names()
        .iter()
        .find(|(_, known)| *known == performative)
        .map_or("", |(name, _)| name.as_str())
}
