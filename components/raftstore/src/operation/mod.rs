//! One module per command, each holding its propose-time checks and its apply half; `fsm/`
//! only dispatches to them.
//!
//! - [`write`]: put, delete, delete-range per CF.
//! - [`admin`]: region-changing commands (log compaction, membership, leader transfer, split).
//! - [`apply`]: the dispatch from a committed entry to the operation that applies it.
//! - [`read`]: the lease and ReadIndex rules for linearizable reads.
//! - [`log_gc`]: when to compact a region's raft log, and the apply of `CompactLog`.
//! - [`conf_change`]: membership changes (ChangePeerV2, joint consensus).
//! - [`split`]: region split (BatchSplit) and finding split keys.

pub mod admin;
pub mod apply;
pub mod conf_change;
pub mod log_gc;
pub mod read;
pub mod split;
pub mod write;
