//! The KV engine: where region data (CFs `default`, `lock`, `write`) and local metadata (CF
//! `raft`: region states, apply states, the store ident) live.
//!
//! - [`KvEngine`] is what both implementations really do: atomic write batches, point-in-time
//!   snapshots, point reads, bounded iteration, and approximate size and key counts of a range.
//! - [`RocksEngine`] is the engine that ships. What only RocksDB can do — SST files, ingest,
//!   flush, compaction — is the separate [`SstExt`] trait, so code that needs it (snapshots)
//!   says so in its types.
//! - [`MemEngine`] (a `BTreeMap` per CF) is for fast tests and simulation; it reports exact
//!   sizes and key counts, and keeps a sync boundary that a simulated power cut loses.
//!   `tests/conformance.rs` runs one suite against both.
//! - [`fs`]: the file system SST and snapshot files live on: the host's, or (with
//!   [`MemEngine::with_file_system`]) an in-memory one a simulated power cut rolls back.
//! - [`keys`] documents every key written here.
//!
//! # Invariants
//! - A write batch is applied atomically or not at all; `write(batch, true)` returns only after
//!   the WAL is fsynced.
//! - A region's range is cleared with `delete_range` (never RocksDB's delete-files-in-range,
//!   which includes the end key and would drop the next region's first keys).
//! - A [`KvEngine::Snapshot`] is `Send + 'static` and keeps the DB open while it lives; dropping
//!   the last engine handle and snapshot closes the DB, so a store can be reopened.
//!
//! # Must not depend on
//! raftstore, raft-log, batch-system or gRPC.

mod error;
pub mod fs;
mod ident;
pub mod keys;
mod mem;
mod rocks;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use fs::{FileSystem, FileWriter, FsLoss, FsRef, MemFileSystem, StdFileSystem};
pub use ident::{read_store_ident, write_store_ident};
pub use mem::{DiskFault, MemEngine, MemSnapshot, MemSstWriter, MemWriteBatch};
pub use rocks::{
    Compression, DropFilter, RocksConfig, RocksEngine, RocksSnapshot, RocksSstWriter,
    RocksWriteBatch,
};

pub const CF_DEFAULT: &str = "default";
pub const CF_LOCK: &str = "lock";
pub const CF_WRITE: &str = "write";
pub const CF_RAFT: &str = "raft";
/// Every column family, in the order they are opened.
pub const ALL_CFS: &[&str] = &[CF_DEFAULT, CF_LOCK, CF_WRITE, CF_RAFT];
/// The column families holding user data (keys prefixed 'z').
pub const DATA_CFS: &[&str] = &[CF_DEFAULT, CF_LOCK, CF_WRITE];

/// `[start, end)` with an empty `end` meaning "no upper bound" must not run backwards.
pub(crate) fn check_range(start: &[u8], end: &[u8]) -> Result<()> {
    if !end.is_empty() && start > end {
        return Err(Error::InvalidRange {
            start: start.to_vec(),
            end: end.to_vec(),
        });
    }
    Ok(())
}

/// Size and key count of a key range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// Bytes of keys and values (approximate for RocksDB: on-disk size plus memtables).
    pub size: u64,
    pub keys: u64,
}

/// Called by [`Peekable::scan_cf`] with each key and value; `Ok(false)` stops the scan.
pub type ScanCallback<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Reads shared by engines and snapshots. Ranges are `[start, end)`; an empty `end` means no
/// upper bound.
pub trait Peekable {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `f` with each key/value in `[start, end)`, ascending (or descending if `reverse`),
    /// until `f` returns `Ok(false)` or an error.
    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()>;

    /// Reads and decodes a protobuf message; a value that does not decode is
    /// [`Error::Corruption`] naming the key.
    fn get_msg_cf<M: prost::Message + Default>(&self, cf: &str, key: &[u8]) -> Result<Option<M>> {
        match self.get_value_cf(cf, key)? {
            None => Ok(None),
            Some(value) => M::decode(value.as_slice())
                .map(Some)
                .map_err(|e| Error::Corruption {
                    what: format!("{} at key {:?} in cf {cf}", std::any::type_name::<M>(), key),
                    detail: e.to_string(),
                }),
        }
    }
}

/// A batch of changes applied atomically by [`KvEngine::write`].
pub trait WriteBatch: Send {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()>;
    /// Deletes `[start, end)`.
    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()>;
    /// Number of operations in the batch.
    fn count(&self) -> usize;
    /// Approximate bytes of the batch.
    fn data_size(&self) -> usize;
    fn clear(&mut self);

    fn is_empty(&self) -> bool {
        self.count() == 0
    }

    fn put_msg_cf<M: prost::Message>(&mut self, cf: &str, key: &[u8], msg: &M) -> Result<()> {
        self.put_cf(cf, key, &msg.encode_to_vec())
    }
}

/// A consistent, point-in-time view of the engine.
pub trait Snapshot: Peekable + Send + Sync + 'static {}

/// What every KV engine does for real.
pub trait KvEngine: Peekable + Clone + Send + Sync + 'static {
    type Snapshot: Snapshot;
    type WriteBatch: WriteBatch;

    fn write_batch(&self) -> Self::WriteBatch;

    /// Applies `batch` atomically; with `sync`, returns only once it is durable. The batch is
    /// empty afterwards, ready for reuse (also after an error: its contents were handed over).
    fn write(&self, batch: &mut Self::WriteBatch, sync: bool) -> Result<()>;

    fn snapshot(&self) -> Self::Snapshot;

    /// Size and key count of `[start, end)` in `cf`, cheaply: approximate for RocksDB (unflushed
    /// memtables included), exact for the in-memory engine.
    fn approximate_range_stats(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<RangeStats>;

    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;
}

/// What a finished SST file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SstInfo {
    pub path: PathBuf,
    pub size: u64,
    pub keys: u64,
}

/// Writes one SST file of sorted keys.
pub trait SstWriter {
    /// Keys must be strictly ascending.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Finishes the file. Returns `None` and writes nothing if no key was put: RocksDB cannot
    /// finish an empty SST.
    fn finish(self) -> Result<Option<SstInfo>>;
}

/// RocksDB-only operations: SST files, ingest, flush and compaction.
pub trait SstExt: KvEngine {
    type SstWriter: SstWriter;

    fn sst_writer(&self, cf: &str, path: &Path) -> Result<Self::SstWriter>;
    /// Ingests finished SST files into `cf`, moving them into the DB.
    fn ingest_sst(&self, cf: &str, files: &[PathBuf]) -> Result<()>;
    /// Flushes `cf`'s memtables to SST files and waits for it.
    fn flush_cf(&self, cf: &str) -> Result<()>;
    /// Compacts `[start, end)` of `cf` (empty `end`: to the end).
    fn compact_range_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<()>;
    /// The file system this engine's SST files are written to and ingested from: snapshot
    /// files must live there too.
    fn file_system(&self) -> FsRef;
}
