//! Percolator transactions, TiKV-style, over the store's default, lock and write column
//! families. This part is the MVCC layout and its records; the actions (prewrite, commit,
//! rollback, check_txn_status, ...) build on it.
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
//! # Invariants
//! - Every record decodes to exactly what was encoded; anything else is
//!   [`Error::Corrupt`], never a default.
//!
//! # Must not depend on
//! raftstore, engine implementations, gRPC: it is pure logic over keys and bytes, so the
//! actions can be tested without a cluster, and replicated by whoever applies their writes.

mod codec;
pub mod key;
pub mod lock;
pub mod write;

pub use lock::{Lock, LockType};
pub use write::{ShortValue, Write, WriteType};

/// What can be wrong with stored transactional bytes or keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(transparent)]
    Key(#[from] api_version::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
