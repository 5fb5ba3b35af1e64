//! The raft log of every region hosted by a store, kept in one shared raft-engine instance:
//! entries, and each region's `RaftLocalState` (hard state + last index).
//!
//! # Invariants
//! - Everything a poll round produces, for all regions, goes into one [`RaftLogBatch`] and is
//!   made durable with one [`RaftLogEngine::write`] and one fsync (group commit across regions).
//! - A region's log is contiguous: appends start at most one past its last index (an earlier
//!   start overwrites the tail, as raft requires). raft-engine panics on a gap, so after a
//!   snapshot the region's log is cleaned or compacted in the same batch that starts the new log.
//! - Compaction and region removal are commands inside the store's own batch, never
//!   `Engine::compact_to` (which writes unsynced and only logs its errors).
//! - An fsync failure inside raft-engine panics the writing thread: the store stops rather than
//!   retrying a write whose durability is unknown.
//!
//! # Must not depend on
//! engine (RocksDB), raftstore, batch-system or gRPC.

mod config;
mod error;
mod log_bridge;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message as _;
use proto::raft_serverpb::RaftLocalState;
use raft::eraftpb::Entry;
use raft_engine::{Command, LogBatch, MessageExt};

pub use config::{RaftLogConfig, RecoveryMode};
pub use error::{Error, Result};
pub use log_bridge::bridge_log_to_slog;

/// Where a region's `RaftLocalState` is kept in raft-engine's per-region key space. raft-engine
/// reserves keys starting with `__`.
const RAFT_STATE_KEY: &[u8] = b"raft_state";

/// Tells raft-engine how to read an entry's index. raft-engine stores raft-rs entries with
/// rust-protobuf; they are only ever read back from our own, checksummed files.
#[derive(Clone, Copy, Debug)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// The store's raft log. Cheap to clone.
#[derive(Clone)]
pub struct RaftLogEngine {
    engine: Arc<raft_engine::Engine>,
    dir: PathBuf,
}

impl RaftLogEngine {
    /// Opens (or creates) the log at `config.dir`, replaying it. Corruption that the recovery
    /// mode does not tolerate is an error naming the directory and what raft-engine found.
    pub fn open(config: &RaftLogConfig) -> Result<RaftLogEngine> {
        let engine =
            raft_engine::Engine::open(config.to_engine_config()).map_err(|e| Error::Open {
                dir: config.dir.clone(),
                detail: e.to_string(),
            })?;
        Ok(RaftLogEngine {
            engine: Arc::new(engine),
            dir: config.dir.clone(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty batch.
    pub fn batch(&self) -> RaftLogBatch {
        RaftLogBatch::default()
    }

    /// Writes `batch` (then empty, ready for reuse); with `sync`, fsyncs before returning.
    /// Returns the bytes written.
    pub fn write(&self, batch: &mut RaftLogBatch, sync: bool) -> Result<usize> {
        if batch.batch.is_empty() {
            return Ok(0);
        }
        let written = self
            .engine
            .write(&mut batch.batch, sync)
            .map_err(|e| Error::Engine {
                op: "write",
                region_id: None,
                detail: e.to_string(),
            })?;
        Ok(written)
    }

    /// Appends entries `[low, high)` of `region_id` to `out`, stopping early once more than
    /// `max_size` bytes are fetched (at least one entry is always returned). Returns how many
    /// were fetched. Asking for entries the log does not hold is an error: a region unknown to
    /// the log, indexes below its first index, or at or above its last index + 1.
    pub fn fetch_entries(
        &self,
        region_id: u64,
        low: u64,
        high: u64,
        max_size: Option<usize>,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        if low >= high {
            return Ok(0);
        }
        let fetched = self
            .engine
            .fetch_entries_to::<EntryExt>(region_id, low, high, max_size, out)
            .map_err(|e| match e {
                raft_engine::Error::EntryCompacted => Error::Compacted {
                    region_id,
                    index: low,
                },
                raft_engine::Error::EntryNotFound => Error::Unavailable {
                    region_id,
                    low,
                    high,
                },
                e => Error::Engine {
                    op: "fetch entries",
                    region_id: Some(region_id),
                    detail: e.to_string(),
                },
            })?;
        if fetched == 0 {
            // raft-engine answers "nothing" for a region it does not know.
            return Err(Error::Unavailable {
                region_id,
                low,
                high,
            });
        }
        Ok(fetched)
    }

    /// One entry, if the log holds it.
    pub fn entry(&self, region_id: u64, index: u64) -> Result<Option<Entry>> {
        self.engine
            .get_entry::<EntryExt>(region_id, index)
            .map_err(|e| Error::Engine {
                op: "get entry",
                region_id: Some(region_id),
                detail: e.to_string(),
            })
    }

    pub fn first_index(&self, region_id: u64) -> Option<u64> {
        self.engine.first_index(region_id)
    }

    pub fn last_index(&self, region_id: u64) -> Option<u64> {
        self.engine.last_index(region_id)
    }

    /// The region's persisted `RaftLocalState`, if any.
    pub fn raft_state(&self, region_id: u64) -> Result<Option<RaftLocalState>> {
        let Some(bytes) = self.engine.get(region_id, RAFT_STATE_KEY) else {
            return Ok(None);
        };
        RaftLocalState::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| Error::Corruption {
                dir: self.dir.clone(),
                region_id,
                detail: format!("RaftLocalState does not decode: {e}"),
            })
    }

    /// Regions that have anything in the log.
    pub fn regions(&self) -> Vec<u64> {
        self.engine.raft_groups()
    }

    /// Deletes log files whose entries are all compacted. Returns the regions whose old entries
    /// hold back purging: their logs should be compacted (forced GC) so space can be reclaimed.
    pub fn purge_expired_files(&self) -> Result<Vec<u64>> {
        self.engine
            .purge_expired_files()
            .map_err(|e| Error::Engine {
                op: "purge expired files",
                region_id: None,
                detail: e.to_string(),
            })
    }

    /// Bytes of log files on disk.
    pub fn used_size(&self) -> usize {
        self.engine.get_used_size()
    }
}

/// Changes to the logs of many regions, made durable together by [`RaftLogEngine::write`].
#[derive(Default)]
pub struct RaftLogBatch {
    batch: LogBatch,
}

impl RaftLogBatch {
    /// Appends `entries` (ascending, contiguous) to `region_id`'s log; entries at or below the
    /// current last index overwrite the tail.
    pub fn append(&mut self, region_id: u64, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.batch
            .add_entries::<EntryExt>(region_id, entries)
            .map_err(|e| Error::Engine {
                op: "add entries to batch",
                region_id: Some(region_id),
                detail: e.to_string(),
            })
    }

    pub fn put_raft_state(&mut self, region_id: u64, state: &RaftLocalState) -> Result<()> {
        self.batch
            .put(region_id, RAFT_STATE_KEY.to_vec(), state.encode_to_vec())
            .map_err(|e| Error::Engine {
                op: "put raft state",
                region_id: Some(region_id),
                detail: e.to_string(),
            })
    }

    /// Drops entries below `index` of `region_id`'s log.
    pub fn compact_to(&mut self, region_id: u64, index: u64) {
        self.batch
            .add_command(region_id, Command::Compact { index });
    }

    /// Removes `region_id`'s whole log and state (peer destroyed, or a snapshot replaces it).
    pub fn clean_region(&mut self, region_id: u64) {
        self.batch.add_command(region_id, Command::Clean);
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Approximate encoded size, for bounding a round's batch.
    pub fn approximate_size(&self) -> usize {
        self.batch.approximate_size()
    }
}
