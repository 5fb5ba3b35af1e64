//! The multi-raft store: one peer per region hosted here, each a raft-rs `RawNode` over a
//! [`storage::PeerStorage`], driven by the batch system.
//!
//! - `raft/`: [`raft::Peer`]'s raft core — the `RawNode`, its ready (what a round persists and
//!   sends), apply results, tick and status; no batch-system types.
//! - `operation/`: one module per command (write, read, conf_change, split, log_gc, snapshot,
//!   transfer_leader, destroy, heartbeat), each with its propose-time checks (`impl Peer`), its
//!   apply, and its on-applied handling (`impl RaftPoller`).
//! - `storage/`: `PeerStorage` (raft-rs's `Storage` over the shared raft log), the entry cache.
//! - `fsm/`: PeerFsm, ApplyFsm, StoreFsm, the raft / apply poll handlers that dispatch to
//!   `operation/`, and the store-level periodic work (raft-engine purge, snapshot GC, store
//!   heartbeat).
//! - `router/`: the messages between them and the callbacks that answer requests.
//! - `snap/`: snapshot files (SST per CF, crc32c, tmp-then-rename) and their apply.
//! - `worker/`: threads beside the pollers (split check, scheduler reports).
//! - [`SchedulerClient`]: what the store asks of and tells the placement scheduler (ids,
//!   heartbeats, split reports).
//! - [`StoreSystem::builder`] starts a store; [`StoreApi`] is the embedded async API. All time
//!   is read through the injected `util::Clock`.
//!
//! # Invariants
//! - Per raft round, the entries and hard states of every region in the round go into one
//!   raft-log write with one fsync; only a leader's appends leave before it.
//! - Per apply round, the writes of every region in the round and each region's
//!   `RaftApplyState` go into one KV write; callbacks run after it.
//! - A request answered `Ok` was applied; `StaleCommand` only when another entry took its index
//!   (or the index is gone); `Undetermined`/`StoreStopped` when its fate is unknown.
//! - `truncated_index <= applied_index <= last_index` for every region not applying a snapshot;
//!   a violation found at load is an error, never a panic inside raft-rs.
//! - Region ranges on a store never overlap ([`fsm::StoreMeta`]).
//! - A failed raft-log or KV write stops the store (fatal log, requests refused); it is never
//!   retried.
//!
//! # Must not depend on
//! gRPC (tonic), the scheduler, or the server: the store talks to them through traits
//! ([`transport::Transport`], [`SchedulerClient`]).

pub mod api;
mod config;
mod error;
pub mod fsm;
pub mod metrics;
pub mod operation;
pub mod raft;
pub mod router;
mod scheduler;
pub mod snap;
pub mod storage;
mod system;
pub mod transport;
pub mod worker;

pub use api::{Modify, StoreApi};
pub use config::{Config, ConfigError};
pub use error::{Error, Result};
pub use router::RegionSnapshot;
pub use scheduler::{
    DeadlockCheck, RegionHeartbeat, SchedulerClient, SchedulerStep, StoreHeartbeat,
};
pub use system::{bootstrap_region, bootstrap_store, StoreBuilder, StoreSystem};
pub use transport::Transport;
