//! Percolator transactions, TiKV-style, over the store's default, lock and write column
//! families: the MVCC layout, its records, the reads at a timestamp and the transactional
//! commands (prewrite, commit, rollback, check_txn_status, ...).
//!
//! # Layout (TiKV's shape)
//! - lock CF: `encode(key)` → [`Lock`];
//! - write CF: `encode(key) ++ !commit_ts` (big-endian, so newer versions sort first) →
//!   [`Write`], whose `start_ts` names the value;
//! - default CF: `encode(key) ++ !start_ts` → the value, unless the write record holds it
//!   inline (values up to [`write::SHORT_VALUE_MAX_LEN`] bytes).
//!
//! `encode` is the memcomparable encoding ([`api_version::memcomparable`]), the form region
//! boundaries take for transactional data: no encoded key is a prefix of another, so a
//! timestamp suffix never changes the order of user keys.
//!
//! # How a command runs
//! A command reads one [`Snapshot`] through an [`MvccReader`] and returns its outcome with
//! the [`Modify`]s to replicate ([`MvccTxn`]); it writes nothing itself. Whoever runs it
//! (the `storage` crate) holds the latches of its keys from before the snapshot until the
//! modifications are applied or failed, and replicates them as one raft command. A failed
//! command returns no modifications: it changes nothing.
//!
//! # Invariants
//! - Every record decodes to exactly what was encoded; anything else is
//!   [`Error::Corrupt`], never a default.
//! - A transaction commits at most once per key, and never after a rollback record for its
//!   start_ts exists on that key.
//! - Reads at `ts` see exactly the newest committed Put or Delete at or below `ts`, unless a
//!   lock that may commit at or below `ts` blocks them ([`Error::KeyIsLocked`]).
//!
//! # Must not depend on
//! raftstore, engine implementations, gRPC: it is pure logic over keys and bytes, so the
//! commands can be tested without a cluster, and replicated by whoever applies their writes.
//! It uses `proto`'s kvrpcpb messages only for the shapes clients see (LockInfo, KeyError).

mod codec;
pub mod commands;
pub mod concurrency;
mod error;
pub mod gc;
pub mod key;
pub mod lock;
pub mod reader;
pub mod snapshot;
pub mod ts;
pub mod txn;
pub mod write;

pub use concurrency::ConcurrencyManager;
pub use error::{Error, Result, WaitFor, WriteConflictReason};
pub use lock::{Lock, LockType};
pub use reader::MvccReader;
pub use snapshot::{Modify, Snapshot};
pub use txn::MvccTxn;
pub use write::{ShortValue, Write, WriteType};
