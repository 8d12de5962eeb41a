//! Fleet mode's client of the engine (NATS JetStream): the connection with its checks, the
//! environment's buckets and stream, and the values both the agents and the CLI write.
//!
//! The engine is a server the user runs; this crate only refuses one that lacks what fleet mode
//! needs (per-key TTL: nats-server >= 2.11, JetStream enabled). It knows nothing of deploys:
//! the agent's `fleet/` module runs them, the CLI's `fleet/nats.rs` asks for them.

#![forbid(unsafe_code)]

mod engine;
pub mod proto;

pub use engine::{Credentials, Engine, EngineError, EngineOptions, MIN_SERVER, Written, decode};
