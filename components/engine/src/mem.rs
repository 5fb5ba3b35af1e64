//! The in-memory engine: a `BTreeMap` per column family, for fast tests and simulation. It is
//! never what a store ships with.
//!
//! It keeps a sync boundary as RocksDB's WAL does: a write without `sync` is visible at once but
//! durable only after a later synced write or [`KvEngine::sync`]; [`MemEngine::power_cut`]
//! throws away what is not durable, so the simulator can crash a store the way a power loss
//! does. Its SST files (for snapshots) are real files in a simple format of its own.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{
    check_range, Error, FileSystem, FsRef, KvEngine, Peekable, RangeStats, Result, ScanCallback,
    Snapshot, SstExt, SstInfo, SstWriter, StdFileSystem, WriteBatch, ALL_CFS,
};

type CfMap = BTreeMap<Vec<u8>, Vec<u8>>;

fn cf_index(cf: &str) -> Result<usize> {
    ALL_CFS
        .iter()
        .position(|name| *name == cf)
        .ok_or_else(|| Error::UnknownCf { cf: cf.to_owned() })
}

fn bounds<'a>(start: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    };
    (Bound::Included(start), upper)
}

fn scan_map(
    map: &CfMap,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    f: &mut ScanCallback<'_>,
) -> Result<()> {
    check_range(start, end)?;
    let range = map.range::<[u8], _>(bounds(start, end));
    if reverse {
        for (k, v) in range.rev() {
            if !f(k, v)? {
                break;
            }
        }
    } else {
        for (k, v) in range {
            if !f(k, v)? {
                break;
            }
        }
    }
    Ok(())
}

/// Copy-on-write: a snapshot shares each CF's map until the engine next writes to that CF.
#[derive(Clone)]
pub struct MemEngine {
    state: Arc<RwLock<State>>,
    /// Where its SST files are written and ingested from (the host's unless simulated).
    fs: FsRef,
}

struct State {
    /// What reads see.
    live: Vec<Arc<CfMap>>,
    /// What survives a power cut: every write up to the last sync.
    durable: Vec<Arc<CfMap>>,
    /// Write batches since the last sync, oldest first, to be made durable by the next one.
    unsynced: Vec<Vec<Op>>,
    /// An injected disk fault: which writes fail (nothing of them is applied).
    fault: Option<DiskFault>,
    /// Writes refused by `fault`.
    failed_writes: usize,
}

/// A disk fault [`MemEngine::set_fault`] injects (the simulator's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// Every write fails, as on a full disk (ENOSPC).
    Full,
    /// Writes that must be synced fail, as when fsync reports an error.
    SyncFails,
}

// Not derived: a derived default would have no column families at all.
impl Default for MemEngine {
    fn default() -> Self {
        MemEngine::new()
    }
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine {
            state: Arc::new(RwLock::new(State {
                live: vec![Arc::default(); ALL_CFS.len()],
                durable: vec![Arc::default(); ALL_CFS.len()],
                unsynced: Vec::new(),
                fault: None,
                failed_writes: 0,
            })),
            fs: StdFileSystem::shared(),
        }
    }

    /// An engine whose SST files (so its store's snapshots) live on `fs`.
    pub fn with_file_system(fs: FsRef) -> MemEngine {
        MemEngine {
            fs,
            ..MemEngine::new()
        }
    }

    fn cfs(&self) -> Vec<Arc<CfMap>> {
        util::read(&self.state).live.clone()
    }

    /// Loses every write not yet synced, as a power cut does, and returns how many operations
    /// were lost. Handles and snapshots taken before keep what they saw.
    pub fn power_cut(&self) -> usize {
        self.power_cut_keeping(0)
    }

    /// A power cut after the OS had written out the first `kept` unsynced write batches (a
    /// write-ahead log survives as a prefix of whole batches; recovery drops a torn last one):
    /// those survive, later ones are lost. Returns how many operations were lost.
    pub fn power_cut_keeping(&self, kept: usize) -> usize {
        let mut state = util::write(&self.state);
        let mut unsynced = std::mem::take(&mut state.unsynced);
        let lost = unsynced.split_off(kept.min(unsynced.len()));
        state.unsynced = unsynced;
        state.make_durable();
        state.live = state.durable.clone();
        lost.iter().map(Vec::len).sum()
    }

    /// Write batches written but not yet durable.
    pub fn unsynced_batches(&self) -> usize {
        util::read(&self.state).unsynced.len()
    }

    /// Makes the writes `fault` names fail from now on (`None`: a good disk again).
    pub fn set_fault(&self, fault: Option<DiskFault>) {
        let mut state = util::write(&self.state);
        state.fault = fault;
        state.failed_writes = 0;
    }

    /// How many writes the fault last set has refused.
    pub fn failed_writes(&self) -> usize {
        util::read(&self.state).failed_writes
    }
}

impl State {
    /// Fails `op` (changing nothing) if the injected fault covers it: every op on a full
    /// disk, synced ones when fsync fails.
    fn refuse(&mut self, op: &'static str, sync: bool) -> Result<()> {
        let what = match self.fault {
            Some(DiskFault::Full) => "no space left on device",
            Some(DiskFault::SyncFails) if sync => "fsync failed",
            _ => return Ok(()),
        };
        self.failed_writes += 1;
        Err(Error::Io {
            op,
            path: "(memory engine)".into(),
            source: std::io::Error::other(format!("injected disk fault: {what}")),
        })
    }

    fn make_durable(&mut self) {
        for op in std::mem::take(&mut self.unsynced).iter().flatten() {
            apply_op(&mut self.durable, op);
        }
    }
}

fn apply_op(cfs: &mut [Arc<CfMap>], op: &Op) {
    match op {
        Op::Put(cf, k, v) => {
            Arc::make_mut(&mut cfs[*cf]).insert(k.clone(), v.clone());
        }
        Op::Delete(cf, k) => {
            Arc::make_mut(&mut cfs[*cf]).remove(k);
        }
        Op::DeleteRange(cf, start, end) => {
            let map = Arc::make_mut(&mut cfs[*cf]);
            let doomed: Vec<Vec<u8>> = map
                .range::<[u8], _>(bounds(start, end))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                map.remove(&k);
            }
        }
    }
}

impl Peekable for MemEngine {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let idx = cf_index(cf)?;
        let state = util::read(&self.state);
        Ok(state.live[idx].get(key).cloned())
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        // Scan a snapshot so `f` may write to the engine without deadlocking.
        let map = self.cfs()[cf_index(cf)?].clone();
        scan_map(&map, start, end, reverse, f)
    }
}

enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeleteRange(usize, Vec<u8>, Vec<u8>),
}

#[derive(Default)]
pub struct MemWriteBatch {
    ops: Vec<Op>,
    size: usize,
}

impl WriteBatch for MemWriteBatch {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.size += key.len() + value.len();
        self.ops
            .push(Op::Put(cf_index(cf)?, key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        self.size += key.len();
        self.ops.push(Op::Delete(cf_index(cf)?, key.to_vec()));
        Ok(())
    }

    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        self.size += start.len() + end.len();
        self.ops
            .push(Op::DeleteRange(cf_index(cf)?, start.to_vec(), end.to_vec()));
        Ok(())
    }

    fn count(&self) -> usize {
        self.ops.len()
    }

    fn data_size(&self) -> usize {
        self.size
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.size = 0;
    }
}

pub struct MemSnapshot {
    cfs: Vec<Arc<CfMap>>,
}

impl Peekable for MemSnapshot {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs[cf_index(cf)?].get(key).cloned())
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        scan_map(&self.cfs[cf_index(cf)?], start, end, reverse, f)
    }
}

impl Snapshot for MemSnapshot {}

impl KvEngine for MemEngine {
    type Snapshot = MemSnapshot;
    type WriteBatch = MemWriteBatch;

    fn write_batch(&self) -> MemWriteBatch {
        MemWriteBatch::default()
    }

    fn write(&self, batch: &mut MemWriteBatch, sync: bool) -> Result<()> {
        let mut state = util::write(&self.state);
        state.refuse(if sync { "sync write" } else { "write" }, sync)?;
        batch.size = 0;
        let ops: Vec<Op> = batch.ops.drain(..).collect();
        for op in &ops {
            apply_op(&mut state.live, op);
        }
        if !ops.is_empty() {
            state.unsynced.push(ops);
        }
        if sync {
            state.make_durable();
        }
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot { cfs: self.cfs() }
    }

    fn approximate_range_stats(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<RangeStats> {
        let mut stats = RangeStats::default();
        self.scan_cf(cf, start, end, false, &mut |k, v| {
            stats.size += (k.len() + v.len()) as u64;
            stats.keys += 1;
            Ok(true)
        })?;
        Ok(stats)
    }

    fn sync(&self) -> Result<()> {
        let mut state = util::write(&self.state);
        state.refuse("sync", true)?;
        state.make_durable();
        Ok(())
    }
}

/// An SST file of the in-memory engine: `len key len value` pairs (lengths as u32 LE),
/// written whole at `finish` and fsynced.
pub struct MemSstWriter {
    fs: FsRef,
    path: PathBuf,
    buf: Vec<u8>,
    keys: u64,
    last: Option<Vec<u8>>,
}

impl SstWriter for MemSstWriter {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.last.as_deref().is_some_and(|last| last >= key) {
            return Err(Error::InvalidRange {
                start: self.last.clone().unwrap_or_default(),
                end: key.to_vec(),
            });
        }
        for part in [key, value] {
            let len = u32::try_from(part.len()).map_err(|_| Error::Corruption {
                what: format!("SST entry for {}", self.path.display()),
                detail: format!("{} bytes do not fit the format", part.len()),
            })?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(part);
        }
        self.keys += 1;
        self.last = Some(key.to_vec());
        Ok(())
    }

    fn finish(self) -> Result<Option<SstInfo>> {
        if self.keys == 0 {
            return Ok(None);
        }
        let io = |op| {
            let path = self.path.clone();
            move |source| Error::Io { op, path, source }
        };
        let mut file = self.fs.create(&self.path).map_err(io("create SST"))?;
        file.write_all(&self.buf).map_err(io("write SST"))?;
        file.sync().map_err(io("sync SST"))?;
        Ok(Some(SstInfo {
            path: self.path.clone(),
            size: self.buf.len() as u64,
            keys: self.keys,
        }))
    }
}

fn read_sst(fs: &dyn FileSystem, path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bytes = fs.read(path).map_err(|source| Error::Io {
        op: "read SST",
        path: path.to_owned(),
        source,
    })?;
    let corrupt = || Error::Corruption {
        what: format!("SST file {}", path.display()),
        detail: "truncated entry".into(),
    };
    let mut pairs = Vec::new();
    let mut rest = bytes.as_slice();
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt());
        }
        let (part, tail) = tail.split_at(len);
        *rest = tail;
        Ok(part.to_vec())
    };
    while !rest.is_empty() {
        let key = take(&mut rest)?;
        let value = take(&mut rest)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

impl SstExt for MemEngine {
    type SstWriter = MemSstWriter;

    fn sst_writer(&self, cf: &str, path: &Path) -> Result<MemSstWriter> {
        cf_index(cf)?;
        Ok(MemSstWriter {
            fs: self.fs.clone(),
            path: path.to_owned(),
            buf: Vec::new(),
            keys: 0,
            last: None,
        })
    }

    /// Like RocksDB's ingest: durable at once, and the files are moved in (deleted here).
    fn ingest_sst(&self, cf: &str, files: &[PathBuf]) -> Result<()> {
        let idx = cf_index(cf)?;
        let mut ops = Vec::new();
        for path in files {
            for (k, v) in read_sst(&*self.fs, path)? {
                ops.push(Op::Put(idx, k, v));
            }
        }
        let mut state = util::write(&self.state);
        // An ingest writes and syncs.
        state.refuse("ingest", true)?;
        // Earlier unsynced writes become durable first, keeping the order of writes.
        state.make_durable();
        for op in &ops {
            apply_op(&mut state.live, op);
            apply_op(&mut state.durable, op);
        }
        drop(state);
        for path in files {
            self.fs.remove_file(path).map_err(|source| Error::Io {
                op: "remove ingested SST",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn flush_cf(&self, cf: &str) -> Result<()> {
        cf_index(cf).map(|_| ())
    }

    fn compact_range_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        cf_index(cf).map(|_| ())
    }

    fn file_system(&self) -> FsRef {
        self.fs.clone()
    }
}
