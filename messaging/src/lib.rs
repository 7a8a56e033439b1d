//! Caxton's messages and how they move inside a node.
//!
//! This crate owns the envelope (FIPA performatives, addressing, correlation,
//! priority, deadline) and its MessagePack encoding, the per-shard priority
//! mailbox with deadlines and bounds, and the cross-shard mesh of SPSC rings.
//! Decisions here are pure (time is an argument); the shards crate drives them.

mod envelope;
pub mod idle_poll;
mod mailbox;
mod mesh;

pub use envelope::{
    Address, AgentId, DecodeError, Durability, Envelope, InstanceId, Performative, PriorityClass,
    ReplyPath, FAILURE_PREFIX, NOBODY,
};
pub use mailbox::{Mailbox, MailboxConfig, MailboxFull, Popped};
pub use mesh::{build_mesh, build_mesh_with, Doorbell, MeshPort};
