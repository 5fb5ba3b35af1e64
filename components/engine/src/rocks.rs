//! The RocksDB engine: the one a store ships with.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    AsColumnFamilyRef, AsRawPtr, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor,
    DBCompressionType, Direction, IngestExternalFileOptions, IteratorMode, Options, ReadOptions,
    SnapshotWithThreadMode, SstFileWriter, WriteOptions, DB,
};

use crate::{
    check_range, keys, Error, KvEngine, Peekable, RangeStats, Result, ScanCallback, Snapshot,
    SstExt, SstInfo, SstWriter, WriteBatch, ALL_CFS, CF_RAFT, DATA_CFS,
};

/// Compression of one LSM level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

impl From<Compression> for DBCompressionType {
    fn from(c: Compression) -> Self {
        match c {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        }
    }
}

/// RocksDB options. Defaults suit one store of a few hundred GiB on a small machine; every field
/// is documented with why it has its default.
/// The `[rocksdb]` section of a store's TOML config (kebab-case keys; a missing key takes its
/// default).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RocksConfig {
    /// Shared LRU block cache for all CFs (data, index and filter blocks). Default 256 MiB: the
    /// page cache does the rest, and a playground runs three stores on one machine.
    pub block_cache_size: usize,
    /// Memtable size of each data CF. Default 64 MiB: large enough to batch writes into L0 files,
    /// small enough that recovery replays little WAL.
    pub write_buffer_size: usize,
    /// Memtables per CF before writes stall. Default 5.
    pub max_write_buffer_number: i32,
    /// Memtable size of CF raft (small metadata). Default 16 MiB.
    pub raft_cf_write_buffer_size: usize,
    /// Flush and compaction threads. Default 4.
    pub max_background_jobs: i32,
    /// Target SST file size at L1. Default 32 MiB.
    pub target_file_size_base: u64,
    /// Bloom filter bits per key for point lookups. Default 10 (about 1% false positives).
    pub bloom_bits_per_key: f64,
    /// Compression of levels L0..L6. Default: none for L0-L1 (hot, rewritten soon), LZ4 for
    /// L2-L4, ZSTD for L5-L6 (cold, most of the data).
    pub compression_per_level: [Compression; 7],
    /// Compression of SST files written outside compaction (region snapshots). Default LZ4:
    /// an SST writer otherwise takes the last level's ZSTD, which made snapshot generation
    /// several times slower than writing the file (measured by the snapshot bench);
    /// compaction recompresses the data to its level's setting later.
    pub sst_writer_compression: Compression,
    /// Open-file limit; -1 keeps every SST open. Default 40960.
    pub max_open_files: i32,
    /// Sync SST and WAL writes in the background every this many bytes, so a final fsync does
    /// not stall on gigabytes of dirty pages. Default 1 MiB.
    pub bytes_per_sync: u64,
}

impl Default for RocksConfig {
    fn default() -> Self {
        use Compression::*;
        RocksConfig {
            block_cache_size: 256 << 20,
            write_buffer_size: 64 << 20,
            max_write_buffer_number: 5,
            raft_cf_write_buffer_size: 16 << 20,
            max_background_jobs: 4,
            target_file_size_base: 32 << 20,
            bloom_bits_per_key: 10.0,
            compression_per_level: [None, None, Lz4, Lz4, Lz4, Zstd, Zstd],
            sst_writer_compression: Lz4,
            max_open_files: 40960,
            bytes_per_sync: 1 << 20,
        }
    }
}

impl RocksConfig {
    fn cf_options(&self, cf: &str, cache: &Cache) -> Options {
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(cache);
        block.set_bloom_filter(self.bloom_bits_per_key, false);
        block.set_cache_index_and_filter_blocks(true);
        block.set_format_version(5);
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&block);
        let compression: Vec<DBCompressionType> = self
            .compression_per_level
            .iter()
            .map(|c| (*c).into())
            .collect();
        opts.set_compression_per_level(&compression);
        opts.set_level_compaction_dynamic_level_bytes(true);
        opts.set_max_write_buffer_number(self.max_write_buffer_number);
        opts.set_target_file_size_base(self.target_file_size_base);
        opts.set_write_buffer_size(if cf == CF_RAFT {
            self.raft_cf_write_buffer_size
        } else {
            self.write_buffer_size
        });
        opts
    }

    fn db_options(&self, create: bool) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(create);
        opts.create_missing_column_families(create);
        opts.set_paranoid_checks(true);
        opts.set_max_background_jobs(self.max_background_jobs);
        opts.set_max_open_files(self.max_open_files);
        opts.set_bytes_per_sync(self.bytes_per_sync);
        opts.set_wal_bytes_per_sync(self.bytes_per_sync);
        opts
    }
}

struct RocksInner {
    // Declared first so it is dropped (closing the DB) before the options it was opened with.
    db: DB,
    path: PathBuf,
    /// Per CF, what SST writers use (the CF's options with `sst-writer-compression`).
    sst_opts: Vec<Options>,
}

/// Decides during compaction whether a pair of a data CF may be dropped: `(user key, value)`
/// → drop. It must only drop what no read can see any more, since when (and on which
/// replica) compaction runs is not replicated.
pub type DropFilter = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// A RocksDB instance with CFs default, lock, write and raft. Cheap to clone; the DB closes when
/// the last clone and the last snapshot are dropped.
#[derive(Clone)]
pub struct RocksEngine {
    inner: Arc<RocksInner>,
}

impl RocksEngine {
    /// Opens (or creates) the engine at `path`. An existing DB must have every CF; a missing CF
    /// or a damaged file is an error naming the path and the problem.
    pub fn open(path: &Path, config: &RocksConfig) -> Result<RocksEngine> {
        Self::open_with_filter(path, config, None)
    }

    /// Like [`RocksEngine::open`], with `drop_filter` deciding during compaction which pairs
    /// of the data CFs may go (expired values, say). Only data keys reach it, with their
    /// data prefix removed; local keys (region states, the raft CF) are never offered.
    pub fn open_with_filter(
        path: &Path,
        config: &RocksConfig,
        drop_filter: Option<DropFilter>,
    ) -> Result<RocksEngine> {
        let exists = path.join("CURRENT").exists();
        let cache = Cache::new_lru_cache(config.block_cache_size);
        let cf_opts: Vec<Options> = ALL_CFS
            .iter()
            .map(|cf| {
                let mut opts = config.cf_options(cf, &cache);
                if let Some(filter) = drop_filter.as_ref().filter(|_| DATA_CFS.contains(cf)) {
                    let filter = filter.clone();
                    opts.set_compaction_filter("regionstore-drop-filter", move |_, key, value| {
                        match keys::origin_key(key) {
                            Some(user_key) if filter(user_key, value) => {
                                rocksdb::compaction_filter::Decision::Remove
                            }
                            _ => rocksdb::compaction_filter::Decision::Keep,
                        }
                    });
                }
                opts
            })
            .collect();
        let sst_opts: Vec<Options> = cf_opts
            .iter()
            .map(|opts| {
                let mut opts = opts.clone();
                opts.set_compression_per_level(&[]);
                opts.set_compression_type(config.sst_writer_compression.into());
                opts
            })
            .collect();
        let descriptors = ALL_CFS
            .iter()
            .zip(&cf_opts)
            .map(|(cf, opts)| ColumnFamilyDescriptor::new(*cf, opts.clone()));
        let db = match DB::open_cf_descriptors(&config.db_options(!exists), path, descriptors) {
            Ok(db) => db,
            Err(e) => {
                let detail = e.into_string();
                // Name the missing CF when that is the problem; a damaged MANIFEST can also make
                // CFs look missing, so only trust the listing when RocksDB said exactly that.
                if exists && detail.contains("Column family not found") {
                    if let Ok(cfs) = DB::list_cf(&Options::default(), path) {
                        if let Some(cf) = ALL_CFS.iter().find(|cf| !cfs.iter().any(|c| c == *cf)) {
                            return Err(Error::MissingCf {
                                path: path.to_owned(),
                                cf: (*cf).to_owned(),
                            });
                        }
                    }
                }
                return Err(Error::Open {
                    path: path.to_owned(),
                    detail,
                });
            }
        };
        Ok(RocksEngine {
            inner: Arc::new(RocksInner {
                db,
                path: path.to_owned(),
                sst_opts,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn cf(&self, cf: &str) -> Result<&ColumnFamily> {
        self.inner
            .db
            .cf_handle(cf)
            .ok_or_else(|| Error::UnknownCf { cf: cf.to_owned() })
    }

    fn sst_opts(&self, cf: &str) -> Result<&Options> {
        ALL_CFS
            .iter()
            .position(|name| *name == cf)
            .map(|i| &self.inner.sst_opts[i])
            .ok_or_else(|| Error::UnknownCf { cf: cf.to_owned() })
    }

    /// `rocksdb_approximate_sizes_cf_with_flags`, which rust-rocksdb does not wrap; it is the
    /// only way to count unflushed memtables, without which small regions never look big.
    fn approximate_size(
        &self,
        cf: &ColumnFamily,
        start: &[u8],
        end: &[u8],
        flags: u8,
    ) -> Result<u64> {
        let starts = [start.as_ptr() as *const c_char];
        let start_lens = [start.len()];
        let ends = [end.as_ptr() as *const c_char];
        let end_lens = [end.len()];
        let mut sizes = [0u64; 1];
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: the DB and CF handle outlive the call; the key arrays hold one valid range.
        unsafe {
            librocksdb_sys::rocksdb_approximate_sizes_cf_with_flags(
                self.inner.db.as_raw_ptr(),
                cf.inner(),
                1,
                starts.as_ptr(),
                start_lens.as_ptr(),
                ends.as_ptr(),
                end_lens.as_ptr(),
                flags,
                sizes.as_mut_ptr(),
                &mut err,
            );
            if !err.is_null() {
                let detail = CStr::from_ptr(err).to_string_lossy().into_owned();
                librocksdb_sys::rocksdb_free(err as *mut libc::c_void);
                return Err(Error::Rocks {
                    op: "approximate sizes",
                    detail,
                });
            }
        }
        Ok(sizes[0])
    }

    fn int_property(&self, cf: &ColumnFamily, name: &str) -> Result<u64> {
        Ok(self
            .inner
            .db
            .property_int_value_cf(cf, name)
            .map_err(Error::rocks("read property"))?
            .unwrap_or(0))
    }
}

const SIZE_MEMTABLES: u8 = 1;
const SIZE_FILES: u8 = 2;
/// Sorts after every key regionstore writes (local keys start 0x01, data keys 'z'): stands for
/// "no upper bound" where RocksDB needs a key.
const KEY_SPACE_END: &[u8] = &[0xff];

fn read_opts(start: &[u8], end: &[u8]) -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.set_iterate_lower_bound(start.to_vec());
    if !end.is_empty() {
        opts.set_iterate_upper_bound(end.to_vec());
    }
    opts
}

/// Shared by the engine and its snapshots: iterate `[start, end)` with `iter`'s items.
fn drive<I>(iter: I, f: &mut ScanCallback<'_>) -> Result<()>
where
    I: Iterator<Item = std::result::Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    for item in iter {
        let (k, v) = item.map_err(Error::rocks("iterate"))?;
        if !f(&k, &v)? {
            break;
        }
    }
    Ok(())
}

fn mode(start: &[u8], reverse: bool) -> IteratorMode<'_> {
    if reverse {
        // The upper bound in the read options limits where the iterator starts.
        IteratorMode::End
    } else {
        IteratorMode::From(start, Direction::Forward)
    }
}

impl Peekable for RocksEngine {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = self.cf(cf)?;
        Ok(self
            .inner
            .db
            .get_pinned_cf(handle, key)
            .map_err(Error::rocks("get"))?
            .map(|v| v.to_vec()))
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        check_range(start, end)?;
        let handle = self.cf(cf)?;
        let iter =
            self.inner
                .db
                .iterator_cf_opt(handle, read_opts(start, end), mode(start, reverse));
        drive(iter, f)
    }
}

/// An atomic batch for [`RocksEngine`].
pub struct RocksWriteBatch {
    engine: RocksEngine,
    batch: rocksdb::WriteBatch,
}

impl WriteBatch for RocksWriteBatch {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let handle = self.engine.cf(cf)?;
        self.batch.put_cf(handle, key, value);
        Ok(())
    }

    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        let handle = self.engine.cf(cf)?;
        self.batch.delete_cf(handle, key);
        Ok(())
    }

    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        let handle = self.engine.cf(cf)?;
        let end = if end.is_empty() { KEY_SPACE_END } else { end };
        self.batch.delete_range_cf(handle, start, end);
        Ok(())
    }

    fn count(&self) -> usize {
        self.batch.len()
    }

    fn data_size(&self) -> usize {
        self.batch.size_in_bytes()
    }

    fn clear(&mut self) {
        self.batch.clear();
    }
}

/// A point-in-time view that keeps the DB open while it lives.
pub struct RocksSnapshot {
    // Declared before `engine`: it borrows the DB the engine keeps alive, so it must go first.
    snap: SnapshotWithThreadMode<'static, DB>,
    engine: RocksEngine,
}

impl RocksSnapshot {
    fn new(engine: RocksEngine) -> RocksSnapshot {
        let snap = engine.inner.db.snapshot();
        // SAFETY: the snapshot borrows the DB inside `engine.inner`, an `Arc` allocation that
        // this struct keeps alive and that never moves; `snap` is dropped before `engine`.
        let snap = unsafe {
            std::mem::transmute::<SnapshotWithThreadMode<'_, DB>, SnapshotWithThreadMode<'static, DB>>(
                snap,
            )
        };
        RocksSnapshot { snap, engine }
    }
}

impl Peekable for RocksSnapshot {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = self.engine.cf(cf)?;
        Ok(self
            .snap
            .get_pinned_cf_opt(handle, key, ReadOptions::default())
            .map_err(Error::rocks("get"))?
            .map(|v| v.to_vec()))
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        check_range(start, end)?;
        let handle = self.engine.cf(cf)?;
        let iter = self
            .snap
            .iterator_cf_opt(handle, read_opts(start, end), mode(start, reverse));
        drive(iter, f)
    }
}

impl Snapshot for RocksSnapshot {}

impl KvEngine for RocksEngine {
    type Snapshot = RocksSnapshot;
    type WriteBatch = RocksWriteBatch;

    fn write_batch(&self) -> RocksWriteBatch {
        RocksWriteBatch {
            engine: self.clone(),
            batch: rocksdb::WriteBatch::default(),
        }
    }

    fn write(&self, batch: &mut RocksWriteBatch, sync: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let taken = std::mem::take(&mut batch.batch);
        self.inner
            .db
            .write_opt(taken, &opts)
            .map_err(Error::rocks("write"))
    }

    fn snapshot(&self) -> RocksSnapshot {
        RocksSnapshot::new(self.clone())
    }

    fn approximate_range_stats(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<RangeStats> {
        check_range(start, end)?;
        let handle = self.cf(cf)?;
        let end = if end.is_empty() { KEY_SPACE_END } else { end };
        let mem_size = self.approximate_size(handle, start, end, SIZE_MEMTABLES)?;
        let file_size = self.approximate_size(handle, start, end, SIZE_FILES)?;

        // RocksDB counts keys per SST file and per memtable, not per range: pro-rate each by the
        // share of its bytes that falls in the range.
        let mut keys = 0.0f64;
        if file_size > 0 {
            let files = self
                .inner
                .db
                .live_files()
                .map_err(Error::rocks("list live files"))?;
            let (mut entries, mut bytes) = (0u64, 0u64);
            for file in files.iter().filter(|f| f.column_family_name == cf) {
                let overlaps = file.start_key.as_deref().is_none_or(|s| s < end)
                    && file.end_key.as_deref().is_none_or(|e| e >= start);
                if overlaps {
                    entries += file.num_entries;
                    bytes += file.size as u64;
                }
            }
            if bytes > 0 {
                keys += entries as f64 * (file_size as f64 / bytes as f64).min(1.0);
            }
        }
        if mem_size > 0 {
            let mem_total = self.approximate_size(handle, &[], KEY_SPACE_END, SIZE_MEMTABLES)?;
            let mem_entries = self.int_property(handle, "rocksdb.num-entries-active-mem-table")?
                + self.int_property(handle, "rocksdb.num-entries-imm-mem-tables")?;
            if mem_total > 0 {
                keys += mem_entries as f64 * (mem_size as f64 / mem_total as f64).min(1.0);
            }
        }
        Ok(RangeStats {
            size: mem_size + file_size,
            keys: keys.round() as u64,
        })
    }

    fn sync(&self) -> Result<()> {
        self.inner
            .db
            .flush_wal(true)
            .map_err(Error::rocks("sync WAL"))
    }
}

/// Writes one SST file for [`RocksEngine::ingest_sst`].
pub struct RocksSstWriter {
    // Declared before `_engine`: it borrows the CF options the engine keeps alive.
    writer: SstFileWriter<'static>,
    path: PathBuf,
    keys: u64,
    _engine: RocksEngine,
}

impl SstWriter for RocksSstWriter {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.writer
            .put(key, value)
            .map_err(Error::rocks("write SST"))?;
        self.keys += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Option<SstInfo>> {
        if self.keys == 0 {
            // Nothing was written; drop the open (empty) file.
            let path = self.path.clone();
            drop(self);
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Io {
                    op: "remove empty SST",
                    path,
                    source,
                }),
            };
        }
        self.writer.finish().map_err(Error::rocks("finish SST"))?;
        Ok(Some(SstInfo {
            path: self.path.clone(),
            size: self.writer.file_size(),
            keys: self.keys,
        }))
    }
}

impl SstExt for RocksEngine {
    type SstWriter = RocksSstWriter;

    fn sst_writer(&self, cf: &str, path: &Path) -> Result<RocksSstWriter> {
        let writer = SstFileWriter::create(self.sst_opts(cf)?);
        // SAFETY: the options live in `self.inner` (an `Arc` allocation that never moves), which
        // the writer struct keeps alive and drops after the writer.
        let writer =
            unsafe { std::mem::transmute::<SstFileWriter<'_>, SstFileWriter<'static>>(writer) };
        writer.open(path).map_err(|e| Error::Io {
            op: "create SST",
            path: path.to_owned(),
            source: std::io::Error::other(e.into_string()),
        })?;
        Ok(RocksSstWriter {
            writer,
            path: path.to_owned(),
            keys: 0,
            _engine: self.clone(),
        })
    }

    fn ingest_sst(&self, cf: &str, files: &[PathBuf]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let handle = self.cf(cf)?;
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(true);
        self.inner
            .db
            .ingest_external_file_cf_opts(handle, &opts, files.to_vec())
            .map_err(Error::rocks("ingest SST"))
    }

    fn flush_cf(&self, cf: &str) -> Result<()> {
        let handle = self.cf(cf)?;
        self.inner
            .db
            .flush_cf(handle)
            .map_err(Error::rocks("flush"))
    }

    fn compact_range_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        let handle = self.cf(cf)?;
        let end = (!end.is_empty()).then_some(end);
        self.inner.db.compact_range_cf(handle, Some(start), end);
        Ok(())
    }

    fn file_system(&self) -> crate::FsRef {
        crate::StdFileSystem::shared()
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn rocks_config_round_trips_through_kebab_case_toml() {
        let config = RocksConfig::default();
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("block-cache-size = 268435456"), "{text}");
        assert!(text.contains("\"lz4\""), "{text}");
        let back: RocksConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
        let partial: RocksConfig = toml::from_str("max-background-jobs = 2").unwrap();
        assert_eq!(partial.max_background_jobs, 2);
        assert!(toml::from_str::<RocksConfig>("block_cache_size = 1").is_err());
    }
}
