//! One module per command, each holding its propose-time checks and its apply half; `fsm/`
//! only dispatches to them.
//!
//! - [`write`]: put, delete, delete-range per CF.
//! - [`admin`]: region-changing commands (log compaction, membership, leader transfer, split).
//! - [`apply`]: the dispatch from a committed entry to the operation that applies it.
//! - [`read`]: the lease and ReadIndex rules for linearizable reads.

pub mod admin;
pub mod apply;
pub mod read;
pub mod write;
