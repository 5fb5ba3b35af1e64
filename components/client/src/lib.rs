//! An async client of a regionstore cluster, speaking TiKV's RawKV, transactional (Percolator)
//! and PD's routing protocols over gRPC (so it also talks to TiKV + PD). [`TransactionClient`]
//! runs transactions: begin at a PD timestamp, buffered writes, two-phase commit with the
//! primary first (or async commit), and resolution of the locks it meets.
//!
//! [`Client::connect`] asks PD (`GetMembers`) for the cluster id and the leader; every KV
//! operation then finds the region of its keys in a cache filled from PD (`GetRegion`,
//! `ScanRegions`), sends one request per region to the region's leader (store addresses from
//! `GetStore`, one lazily connected channel per address) and retries with backoff on the
//! errors that mean "wrong route" or "not now". The admin calls go to the scheduler's own
//! service on the PD leader.
//!
//! # Invariants
//! - Every KV request carries a `kvrpcpb::Context` with the region id, the cached epoch and
//!   the peer it is sent to, and API V1, or V2 with a keyspace ([`ClientConfig::keyspace`]:
//!   keys prefixed, routed by their encoding, boundaries decoded); every PD request carries
//!   the cluster id.
//! - The region cache never holds overlapping regions; a store's answer (NotLeader hint,
//!   EpochNotMatch regions) overrides what PD said.
//! - An operation retries only while retrying is safe and useful: region errors that name a
//!   routing problem, busy servers, and transport failures; a compare-and-swap (or an
//!   operator) that may have reached the server is never sent again
//!   ([`Error::Undetermined`]). It gives up after `max_retry_time` of failures in a row.
//! - Every retry is counted ([`Client::retries`]).
//! - No `unwrap` on anything from the network or the caller.
//!
//! # Must not depend on
//! raftstore, engine, scheduler, server or any other regionstore crate but `proto` and
//! `api-version` (the protocol's byte rules, no I/O): a client is built from the protocol
//! alone, so it works against any wire-compatible server.

mod admin;
mod batch;
mod client;
mod config;
mod error;
mod keyspace;
mod kv;
mod net;
mod pd;
mod region_cache;
mod retry;
mod shard;
mod tso;
mod txn;

pub use admin::Operator;
pub use client::{Client, KvPair, RegionInfo};
pub use config::ClientConfig;
pub use error::{Error, Result};
pub use txn::{Transaction, TransactionClient, TxnOptions, TxnStatus, DEFAULT_LOCK_TTL_MS};
// The types the public API speaks in.
pub use proto::{metapb, schedulerpb};
