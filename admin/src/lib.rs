//! Caxton's admin endpoint: Prometheus metrics, HDR histogram dumps and a JSON
//! API (deploy, list, undeploy, send, stats) over HTTP, and a client for it.
//!
//! The endpoint runs on the gossip shard's core (a tokio current-thread
//! runtime) and never touches a data shard directly. The node's control plane
//! stays on one controller thread ([`Controller`]); the endpoint sends it
//! jobs. Messages go in through node clients, each driven by a sender thread
//! that keeps many sends in flight ([`SendPool`]): the same ring-based
//! entrance any caller uses. Metrics are read from the
//! shards only when someone asks (a scrape, a dump, an HDR log interval) and
//! merged here ([`Collector`]).
//!
//! Security: the endpoint binds to loopback by default. Binding anything else
//! requires an access token (checked when the engine starts); with a token
//! set, every request must carry `Authorization: Bearer <token>`.

mod api;
mod client;
mod collector;
mod controller;
mod cpu_profile;
mod profiling;
pub mod request;
mod sender;
mod server;

pub use api::{DEPLOY_INSTANCES_MAX, SEND_TIMEOUT_DEFAULT, SEND_TIMEOUT_MAX};
pub use client::{AdminClient, Answer, ClientError};
pub use collector::{resident_memory_bytes, Collector, HDR_TAGS};
pub use controller::{Controller, ControllerGone, ControllerHandle, Job};
pub use cpu_profile::{CPU_PROFILE_FREQUENCY, CPU_PROFILE_FREQUENCY_MAX, CPU_PROFILE_SECONDS_MAX};
pub use profiling::HeapStep;
pub use request::TRACE_MESSAGES_MAX;
pub use sender::{SendFailure, SendJob, SendPool, Sent, SENDS_IN_FLIGHT_PER_PORT};
pub use server::{serve, AdminSettings, AllocatorStats, HeapDump, HeapProfiler};

/// The environment variable that carries the access token (it wins over the profile's).
pub const TOKEN_ENV: &str = "CAXTON_ADMIN_TOKEN";
