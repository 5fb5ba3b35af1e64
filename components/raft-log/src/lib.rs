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
//! - [`RaftLogEngine::memory`] is an in-memory log with the same batch and sync rules, for the
//!   simulator, whose [`RaftLogEngine::power_cut`] loses what was not synced. Stores ship with
//!   raft-engine.
//!
//! # Must not depend on
//! engine (RocksDB), raftstore, batch-system or gRPC.

mod config;
mod error;
mod log_bridge;
mod memory;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    backend: Backend,
    dir: PathBuf,
}

#[derive(Clone)]
enum Backend {
    Disk(Arc<raft_engine::Engine>),
    Memory(Arc<Mutex<memory::MemLog>>),
}

fn lock(log: &Mutex<memory::MemLog>) -> std::sync::MutexGuard<'_, memory::MemLog> {
    // A panic while holding it leaves the log as consistent as the panicking write left it.
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            backend: Backend::Disk(Arc::new(engine)),
            dir: config.dir.clone(),
        })
    }

    /// An empty in-memory log (simulation only), named `name` in errors.
    pub fn memory(name: &str) -> RaftLogEngine {
        RaftLogEngine {
            backend: Backend::Memory(Arc::default()),
            dir: PathBuf::from(format!("<memory:{name}>")),
        }
    }

    /// Of an in-memory log: plants a bug, an fsync that returns without making anything
    /// durable (a disk that lies), so a test can show that a power cut then loses
    /// acknowledged writes and that its checker notices. No effect on a raft-engine log.
    pub fn set_sync_lies(&self, lies: bool) {
        if let Backend::Memory(log) = &self.backend {
            lock(log).sync_lies = lies;
        }
    }

    /// Of an in-memory log: loses every write since the last synced one, as a power cut does,
    /// and returns how many changes were lost. A raft-engine log cannot be cut (0).
    pub fn power_cut(&self) -> usize {
        self.power_cut_keeping(0)
    }

    /// Of an in-memory log: a power cut after the OS had written out the first `kept`
    /// unsynced batches, which survive whole; later ones are lost. Returns the changes lost.
    pub fn power_cut_keeping(&self, kept: usize) -> usize {
        match &self.backend {
            Backend::Disk(_) => 0,
            Backend::Memory(log) => lock(log).power_cut(kept),
        }
    }

    /// Of an in-memory log: batches written since the last sync.
    pub fn unsynced_batches(&self) -> usize {
        match &self.backend {
            Backend::Disk(_) => 0,
            Backend::Memory(log) => lock(log).unsynced_batches(),
        }
    }

    /// Of an in-memory log: batches written since it was made (0 for a raft-engine log).
    pub fn writes(&self) -> u64 {
        match &self.backend {
            Backend::Disk(_) => 0,
            Backend::Memory(log) => lock(log).writes,
        }
    }

    /// Of an in-memory log: a disk fault, every fsync failing (`true`) until cleared. The
    /// store must stop on the first failure, never retry.
    pub fn set_sync_fails(&self, fails: bool) {
        if let Backend::Memory(log) = &self.backend {
            lock(log).sync_fails = fails;
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty batch.
    pub fn batch(&self) -> RaftLogBatch {
        RaftLogBatch {
            batch: LogBatch::default(),
            memory: match self.backend {
                Backend::Disk(_) => None,
                Backend::Memory(_) => Some(Vec::new()),
            },
        }
    }

    /// Writes `batch` (then empty, ready for reuse); with `sync`, fsyncs before returning.
    /// Returns the bytes written.
    pub fn write(&self, batch: &mut RaftLogBatch, sync: bool) -> Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        let engine = match &self.backend {
            Backend::Disk(engine) => engine,
            Backend::Memory(log) => {
                let ops = std::mem::take(batch.memory.get_or_insert_with(Vec::new));
                let written = ops.iter().map(memory::MemOp::size).sum();
                lock(log).write(ops, sync)?;
                return Ok(written);
            }
        };
        let written = engine
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
        let engine = match &self.backend {
            Backend::Disk(engine) => engine,
            Backend::Memory(log) => return lock(log).fetch(region_id, low, high, max_size, out),
        };
        let fetched = engine
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
        let engine = match &self.backend {
            Backend::Disk(engine) => engine,
            Backend::Memory(log) => return Ok(lock(log).entry(region_id, index)),
        };
        engine
            .get_entry::<EntryExt>(region_id, index)
            .map_err(|e| Error::Engine {
                op: "get entry",
                region_id: Some(region_id),
                detail: e.to_string(),
            })
    }

    pub fn first_index(&self, region_id: u64) -> Option<u64> {
        match &self.backend {
            Backend::Disk(engine) => engine.first_index(region_id),
            Backend::Memory(log) => lock(log).first_index(region_id),
        }
    }

    pub fn last_index(&self, region_id: u64) -> Option<u64> {
        match &self.backend {
            Backend::Disk(engine) => engine.last_index(region_id),
            Backend::Memory(log) => lock(log).last_index(region_id),
        }
    }

    /// The region's persisted `RaftLocalState`, if any.
    pub fn raft_state(&self, region_id: u64) -> Result<Option<RaftLocalState>> {
        let bytes = match &self.backend {
            Backend::Disk(engine) => engine.get(region_id, RAFT_STATE_KEY),
            Backend::Memory(log) => lock(log).state(region_id),
        };
        let Some(bytes) = bytes else {
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
        match &self.backend {
            Backend::Disk(engine) => engine.raft_groups(),
            Backend::Memory(log) => lock(log).regions(),
        }
    }

    /// Deletes log files whose entries are all compacted. Returns the regions whose old entries
    /// hold back purging: their logs should be compacted (forced GC) so space can be reclaimed.
    pub fn purge_expired_files(&self) -> Result<Vec<u64>> {
        let engine = match &self.backend {
            Backend::Disk(engine) => engine,
            Backend::Memory(_) => return Ok(Vec::new()),
        };
        engine.purge_expired_files().map_err(|e| Error::Engine {
            op: "purge expired files",
            region_id: None,
            detail: e.to_string(),
        })
    }

    /// Bytes of log files on disk.
    pub fn used_size(&self) -> usize {
        match &self.backend {
            Backend::Disk(engine) => engine.get_used_size(),
            Backend::Memory(log) => lock(log).used_size(),
        }
    }
}

/// Changes to the logs of many regions, made durable together by [`RaftLogEngine::write`].
/// Made by [`RaftLogEngine::batch`], for that log.
pub struct RaftLogBatch {
    batch: LogBatch,
    /// The changes, when the batch is for an in-memory log.
    memory: Option<Vec<memory::MemOp>>,
}

impl RaftLogBatch {
    /// Appends `entries` (ascending, contiguous) to `region_id`'s log; entries at or below the
    /// current last index overwrite the tail.
    pub fn append(&mut self, region_id: u64, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(ops) = &mut self.memory {
            ops.push(memory::MemOp::Append(region_id, entries.to_vec()));
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
        if let Some(ops) = &mut self.memory {
            ops.push(memory::MemOp::PutState(region_id, state.encode_to_vec()));
            return Ok(());
        }
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
        if let Some(ops) = &mut self.memory {
            ops.push(memory::MemOp::Compact(region_id, index));
            return;
        }
        self.batch
            .add_command(region_id, Command::Compact { index });
    }

    /// Removes `region_id`'s whole log and state (peer destroyed, or a snapshot replaces it).
    pub fn clean_region(&mut self, region_id: u64) {
        if let Some(ops) = &mut self.memory {
            ops.push(memory::MemOp::Clean(region_id));
            return;
        }
        self.batch.add_command(region_id, Command::Clean);
    }

    /// Moves every change of `other` after the ones already here, leaving `other` empty: one
    /// write then makes the changes of several batches durable together.
    pub fn merge(&mut self, other: &mut RaftLogBatch) -> Result<()> {
        let err = |detail: String| Error::Engine {
            op: "merge batches",
            region_id: None,
            detail,
        };
        match (&mut self.memory, &mut other.memory) {
            (Some(ops), Some(more)) => {
                ops.append(more);
                Ok(())
            }
            (None, None) => self
                .batch
                .merge(&mut other.batch)
                .map_err(|e| err(e.to_string())),
            _ => Err(err("the batches belong to different kinds of log".into())),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.memory {
            Some(ops) => ops.is_empty(),
            None => self.batch.is_empty(),
        }
    }

    /// Approximate encoded size, for bounding a round's batch.
    pub fn approximate_size(&self) -> usize {
        match &self.memory {
            Some(ops) => ops.iter().map(memory::MemOp::size).sum(),
            None => self.batch.approximate_size(),
        }
    }
}
