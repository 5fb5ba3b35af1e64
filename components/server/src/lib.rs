//! The store's network face, over tonic:
//! - [`transport::GrpcTransport`] implements raftstore's `Transport`: one long-lived stream
//!   of message batches per peer store, plus one stream per snapshot;
//! - [`service::RaftService`] receives those streams and hands messages to the store's router
//!   (snapshots are written and verified before their message is delivered);
//! - [`kv::KvService`] serves TiKV's `tikvpb.Tikv`, so TiKV clients work unmodified: the raw
//!   methods over the embedded `StoreApi` ([`codec`] turns their keys and values into their
//!   stored form under the cluster's API version: keyspaces, TTL), and the transactional
//!   ones (`txn.rs`) over `storage::Storage`, the layer an embedding database uses too;
//!   [`batch_commands`] serves the same commands over TiKV's `BatchCommands` stream;
//! - [`status`] serves `/metrics` and `/status` over plain HTTP.
//!
//! # Invariants
//! - Nothing received from the network reaches the store unchecked: raft messages addressed
//!   to another store are dropped; client requests are bounded (key, value, batch sizes) and
//!   refused with a specific error before anything is proposed.
//! - Store-to-store sends never block a raft poller: a full per-store queue drops the batch
//!   (raft retransmits) and counts it.
//!
//! # Must not depend on
//! The scheduler's internals or the test cluster: the scheduler is reached through
//! [`transport::StoreResolver`] (addresses), implemented by whoever assembles the store.

pub mod batch_commands;
pub mod codec;
pub mod config;
pub mod kv;
pub mod metrics;
pub mod service;
pub mod status;
pub mod transport;
mod txn;

pub use config::Config;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config field `{field}`: {detail}")]
    Config { field: &'static str, detail: String },
    #[error("cannot resolve the address of store {store_id}: {detail}")]
    Resolve { store_id: u64, detail: String },
    #[error("cannot reach store {store_id} at {addr}: {detail}")]
    Connect {
        store_id: u64,
        addr: String,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] raftstore::Error),
}
