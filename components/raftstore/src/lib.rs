//! The multi-raft store: one peer per region hosted here, each a raft-rs `RawNode` over a
//! [`storage::PeerStorage`], driven by the batch system.
//!
//! Today this crate holds the storage layer: `PeerStorage` (raft-rs's `Storage` over the shared
//! raft log, an entry cache and the apply state in the KV engine). The peer, apply and store
//! FSMs arrive with the store issue, organised as in ARCHITECTURE.md (`router/`, `fsm/`, `raft/`,
//! `storage/`, `operation/`, `worker/`).
//!
//! # Invariants
//! - `truncated_index <= applied_index <= last_index` for every region not applying a snapshot;
//!   a violation found at load is an error, never a panic inside raft-rs.
//! - Entries handed to the raft log but not yet durable are always served from the entry cache.
//!
//! # Must not depend on
//! gRPC (tonic), the scheduler, or the server: the store talks to them through traits.

mod config;
mod error;
pub mod operation;
pub mod raft;
pub mod storage;

pub use config::Config;
pub use error::{Error, Result};
