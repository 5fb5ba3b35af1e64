//! Snapshot files: what a region's snapshot is on disk, independent of how it is generated,
//! sent or scheduled (the snap-generator pool, the transport and the apply use it).
//!
//! A snapshot `{region}_{term}_{index}` is one SST per non-empty data CF and a meta file listing
//! each file's CF, size and crc32c. Every file is written as `*.tmp`, fsynced, then renamed
//! (and the directory fsynced), so a crash never leaves a complete-looking partial file.
//! Generated snapshots are prefixed `gen_`, received ones `rev_`.
//!
//! Applying clears the region's range with `delete_range` (not delete-files-in-range, whose end
//! is inclusive and would touch the next region) and then ingests the SSTs. Ingestion consumes
//! a file, so [`SnapManager::apply`] ingests hard links and the received files stay until the
//! caller deletes them (a crash mid-apply can redo it from them).

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use engine::{keys, FsRef, Peekable, SstExt, SstWriter, StdFileSystem, WriteBatch, DATA_CFS};
use prost::Message as _;
use proto::metapb::Region;
use proto::raft_serverpb::{SnapshotCfFile, SnapshotMeta};

use crate::metrics::METRICS;
use crate::{Error, Result};

/// Which snapshot: region, and the log position its data is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub region_id: u64,
    pub term: u64,
    pub index: u64,
}

impl fmt::Display for SnapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.region_id, self.term, self.index)
    }
}

impl SnapKey {
    fn parse(name: &str) -> Option<SnapKey> {
        let mut parts = name.splitn(3, '_');
        Some(SnapKey {
            region_id: parts.next()?.parse().ok()?,
            term: parts.next()?.parse().ok()?,
            index: parts.next()?.parse().ok()?,
        })
    }
}

/// A generated snapshot, or one being received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SnapKind {
    Generated,
    Received,
}

impl SnapKind {
    fn prefix(self) -> &'static str {
        match self {
            SnapKind::Generated => "gen",
            SnapKind::Received => "rev",
        }
    }
}

/// The snapshot directory of one store, and its limits on concurrent transfers (shared by
/// every clone).
#[derive(Clone, Debug)]
pub struct SnapManager {
    /// The disk the files live on: the KV engine's ([`SstExt::file_system`]), which writes
    /// and ingests the SSTs.
    fs: FsRef,
    dir: PathBuf,
    limits: Arc<TransferLimits>,
    /// When [`SnapManager::age`] first saw each snapshot, on the store's clock.
    first_seen: Arc<std::sync::Mutex<std::collections::HashMap<(SnapKind, SnapKey), Instant>>>,
}

#[derive(Debug)]
struct TransferLimits {
    max_sends: usize,
    max_recvs: usize,
    sending: AtomicUsize,
    receiving: AtomicUsize,
}

/// One snapshot transfer under way: its slot is given back when this is dropped.
#[derive(Debug)]
pub struct TransferSlot {
    limits: Arc<TransferLimits>,
    send: bool,
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        if self.send {
            self.limits.sending.fetch_sub(1, Ordering::AcqRel);
            METRICS.snapshots_sending.dec();
        } else {
            self.limits.receiving.fetch_sub(1, Ordering::AcqRel);
            METRICS.snapshots_receiving.dec();
        }
    }
}

fn crc32c_of(fs: &dyn engine::FileSystem, path: &Path) -> std::io::Result<(u64, u32)> {
    let mut file = fs.open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

impl SnapManager {
    /// A manager on the host's file system with the default limits of [`crate::Config`].
    pub fn new(dir: impl Into<PathBuf>) -> Result<SnapManager> {
        let cfg = crate::Config::default();
        Self::with_limits(
            StdFileSystem::shared(),
            dir,
            cfg.snap_max_concurrent_sends,
            cfg.snap_max_concurrent_recvs,
        )
    }

    /// A manager of `dir` on `fs` that allows `max_sends` snapshots out and `max_recvs` in
    /// at once.
    pub fn with_limits(
        fs: FsRef,
        dir: impl Into<PathBuf>,
        max_sends: usize,
        max_recvs: usize,
    ) -> Result<SnapManager> {
        let dir = dir.into();
        fs.create_dir_all(&dir).map_err(|e| Error::Snapshot {
            region_id: 0,
            key: String::new(),
            detail: format!("cannot create snapshot dir {}: {e}", dir.display()),
        })?;
        Ok(SnapManager {
            fs,
            dir,
            limits: Arc::new(TransferLimits {
                max_sends,
                max_recvs,
                sending: AtomicUsize::new(0),
                receiving: AtomicUsize::new(0),
            }),
            first_seen: Arc::default(),
        })
    }

    /// Snapshots being sent and received now.
    pub fn transfers(&self) -> (usize, usize) {
        (
            self.limits.sending.load(Ordering::Acquire),
            self.limits.receiving.load(Ordering::Acquire),
        )
    }

    /// A slot to send snapshot `key`, or ServerIsBusy when `max_sends` are under way.
    pub fn try_start_send(&self, key: SnapKey) -> Result<TransferSlot> {
        self.try_start(key, true)
    }

    fn try_start(&self, key: SnapKey, send: bool) -> Result<TransferSlot> {
        let limits = &self.limits;
        let (count, max, what, field) = if send {
            (
                &limits.sending,
                limits.max_sends,
                "sent",
                "snap-max-concurrent-sends",
            )
        } else {
            (
                &limits.receiving,
                limits.max_recvs,
                "received",
                "snap-max-concurrent-recvs",
            )
        };
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
        if taken.is_err() {
            METRICS.snapshot_transfers_refused.inc();
            return Err(Error::ServerIsBusy {
                region_id: key.region_id,
                reason: format!(
                    "{max} snapshots are being {what} already ({field}); snapshot {key} waits"
                ),
            });
        }
        if send {
            METRICS.snapshots_sending.inc();
        } else {
            METRICS.snapshots_receiving.inc();
        }
        Ok(TransferSlot {
            limits: self.limits.clone(),
            send,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Total and available bytes of the disk holding the snapshot directory.
    pub fn disk_space(&self) -> std::io::Result<(u64, u64)> {
        self.fs.space(&self.dir)
    }

    /// Where the file of `cf` (or the meta file, for `None`) of a snapshot lives.
    pub fn path(&self, kind: SnapKind, key: SnapKey, cf: Option<&str>) -> PathBuf {
        let name = match cf {
            Some(cf) => format!("{}_{key}_{cf}.sst", kind.prefix()),
            None => format!("{}_{key}.meta", kind.prefix()),
        };
        self.dir.join(name)
    }

    fn err(key: SnapKey, what: &str, e: impl fmt::Display) -> Error {
        Error::Snapshot {
            region_id: key.region_id,
            key: key.to_string(),
            detail: format!("{what}: {e}"),
        }
    }

    /// Writes the region's data in `snapshot` as a generated snapshot: one SST per non-empty
    /// data CF, then the meta. Returns the meta, which is also what travels with the raft
    /// message.
    pub fn build<EK: SstExt, S: Peekable>(
        &self,
        kv: &EK,
        snapshot: &S,
        region: &Region,
        key: SnapKey,
    ) -> Result<SnapshotMeta> {
        let (start, end) = keys::region_data_bounds(region);
        let mut meta = SnapshotMeta::default();
        for cf in DATA_CFS {
            let path = self.path(SnapKind::Generated, key, Some(cf));
            let tmp = path.with_extension("sst.tmp");
            let mut writer = kv
                .sst_writer(cf, &tmp)
                .map_err(|e| Self::err(key, "create SST", e))?;
            snapshot
                .scan_cf(cf, &start, &end, false, &mut |k, v| {
                    writer.put(k, v)?;
                    Ok(true)
                })
                .map_err(|e| Self::err(key, "scan region", e))?;
            let Some(_info) = writer
                .finish()
                .map_err(|e| Self::err(key, "finish SST", e))?
            else {
                continue;
            };
            self.fs
                .sync_file(&tmp)
                .map_err(|e| Self::err(key, "fsync SST", e))?;
            let (size, checksum) =
                crc32c_of(&*self.fs, &tmp).map_err(|e| Self::err(key, "checksum", e))?;
            self.fs
                .rename(&tmp, &path)
                .map_err(|e| Self::err(key, "rename SST", e))?;
            meta.cf_files.push(SnapshotCfFile {
                cf: cf.to_string(),
                size,
                checksum,
            });
        }
        self.write_meta(SnapKind::Generated, key, &meta)?;
        Ok(meta)
    }

    /// Writes the meta file (tmp, fsync, rename, fsync dir): its presence marks the snapshot
    /// complete.
    pub fn write_meta(&self, kind: SnapKind, key: SnapKey, meta: &SnapshotMeta) -> Result<()> {
        let path = self.path(kind, key, None);
        let tmp = path.with_extension("meta.tmp");
        self.fs
            .create(&tmp)
            .and_then(|mut f| {
                f.write_all(&meta.encode_to_vec())?;
                f.sync()
            })
            .and_then(|()| self.fs.rename(&tmp, &path))
            .and_then(|()| self.fs.sync_dir(&self.dir))
            .map_err(|e| Self::err(key, "write meta", e))
    }

    /// The meta of a complete snapshot, if there is one.
    pub fn read_meta(&self, kind: SnapKind, key: SnapKey) -> Result<Option<SnapshotMeta>> {
        let path = self.path(kind, key, None);
        match self.fs.read(&path) {
            Ok(bytes) => SnapshotMeta::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| Error::SnapshotCorrupt {
                    region_id: key.region_id,
                    path,
                    detail: format!("meta does not decode: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err(key, "read meta", e)),
        }
    }

    /// Checks every file against the meta (present, same size, same crc32c).
    pub fn verify(&self, kind: SnapKind, key: SnapKey, meta: &SnapshotMeta) -> Result<()> {
        for file in &meta.cf_files {
            if !DATA_CFS.contains(&file.cf.as_str()) {
                return Err(Error::SnapshotCorrupt {
                    region_id: key.region_id,
                    path: self.path(kind, key, None),
                    detail: format!("meta names unknown column family {:?}", file.cf),
                });
            }
            let path = self.path(kind, key, Some(&file.cf));
            let corrupt = |detail: String| Error::SnapshotCorrupt {
                region_id: key.region_id,
                path: path.clone(),
                detail,
            };
            let (size, checksum) =
                crc32c_of(&*self.fs, &path).map_err(|e| corrupt(format!("cannot read: {e}")))?;
            if size != file.size {
                return Err(corrupt(format!("{size} bytes, meta says {}", file.size)));
            }
            if checksum != file.checksum {
                return Err(corrupt(format!(
                    "crc32c {checksum:#010x}, meta says {:#010x}",
                    file.checksum
                )));
            }
        }
        Ok(())
    }

    /// Replaces the region's data in `kv` with the snapshot's: verifies the files, clears the
    /// region's range in every data CF (one synced write), then ingests each SST. The files
    /// themselves stay (hard links are ingested); [`Self::delete`] removes them.
    pub fn apply<EK: SstExt>(
        &self,
        kv: &EK,
        region: &Region,
        kind: SnapKind,
        key: SnapKey,
        meta: &SnapshotMeta,
    ) -> Result<()> {
        self.verify(kind, key, meta)?;
        let (start, end) = keys::region_data_bounds(region);
        let mut wb = kv.write_batch();
        for cf in DATA_CFS {
            wb.delete_range_cf(cf, &start, &end)
                .map_err(|e| Self::err(key, "clear range", e))?;
        }
        kv.write(&mut wb, true)
            .map_err(|e| Self::err(key, "clear range", e))?;
        for file in &meta.cf_files {
            let path = self.path(kind, key, Some(&file.cf));
            let link = path.with_extension("sst.ingest");
            let _ = self.fs.remove_file(&link);
            self.fs
                .hard_link(&path, &link)
                .map_err(|e| Self::err(key, "link SST for ingest", e))?;
            kv.ingest_sst(&file.cf, &[link])
                .map_err(|e| Self::err(key, "ingest SST", e))?;
        }
        Ok(())
    }

    /// Writes a snapshot arriving as `chunks` (each file's bytes in meta order, no chunk
    /// spanning two files, as [`SnapshotFiles::chunks`] makes them) as received files, then
    /// verifies it. On any error nothing of it is left.
    pub fn receive(
        &self,
        key: SnapKey,
        meta: &SnapshotMeta,
        chunks: impl IntoIterator<Item = Result<Vec<u8>>>,
    ) -> Result<()> {
        let _slot = self.try_start(key, false)?;
        // A complete copy is already here (a duplicate transfer): keep it, it may be applying.
        if self
            .read_meta(SnapKind::Received, key)
            .ok()
            .flatten()
            .as_ref()
            == Some(meta)
            && self.verify(SnapKind::Received, key, meta).is_ok()
        {
            return Ok(());
        }
        // Temporary names of this transfer only: a failed duplicate must not touch another's.
        let nonce = RECEIVE_NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut renamed = Vec::new();
        let result = self.receive_files(key, meta, chunks.into_iter(), nonce, &mut renamed);
        if result.is_err() {
            for file in &meta.cf_files {
                let path = self.path(SnapKind::Received, key, Some(&file.cf));
                let _ = self
                    .fs
                    .remove_file(&path.with_extension(format!("sst.{nonce}.tmp")));
            }
            // Files this transfer completed, unless a duplicate finished the snapshot since.
            if self
                .read_meta(SnapKind::Received, key)
                .ok()
                .flatten()
                .is_none()
            {
                for path in renamed {
                    let _ = self.fs.remove_file(&path);
                }
            }
        }
        result
    }

    fn receive_files(
        &self,
        key: SnapKey,
        meta: &SnapshotMeta,
        mut chunks: impl Iterator<Item = Result<Vec<u8>>>,
        nonce: u64,
        renamed: &mut Vec<PathBuf>,
    ) -> Result<()> {
        for file in &meta.cf_files {
            if !DATA_CFS.contains(&file.cf.as_str()) {
                return Err(Self::err(
                    key,
                    "receive",
                    format!("unknown CF {:?}", file.cf),
                ));
            }
            let path = self.path(SnapKind::Received, key, Some(&file.cf));
            let tmp = path.with_extension(format!("sst.{nonce}.tmp"));
            let mut out = self
                .fs
                .create(&tmp)
                .map_err(|e| Self::err(key, "create file", e))?;
            let mut written = 0u64;
            while written < file.size {
                let chunk = chunks
                    .next()
                    .ok_or_else(|| Self::err(key, "receive", "the stream ended early"))??;
                if chunk.is_empty() || written + chunk.len() as u64 > file.size {
                    return Err(Self::err(key, "receive", "a chunk does not fit its file"));
                }
                out.write_all(&chunk)
                    .map_err(|e| Self::err(key, "write file", e))?;
                written += chunk.len() as u64;
            }
            out.sync().map_err(|e| Self::err(key, "fsync file", e))?;
            // Checked before it takes its final name: a bad transfer never looks complete.
            let (size, checksum) =
                crc32c_of(&*self.fs, &tmp).map_err(|e| Self::err(key, "checksum", e))?;
            if size != file.size || checksum != file.checksum {
                return Err(Error::SnapshotCorrupt {
                    region_id: key.region_id,
                    path: path.clone(),
                    detail: format!(
                        "received {size} bytes with crc32c {checksum:#010x}; meta says {} \
                         bytes, {:#010x}",
                        file.size, file.checksum
                    ),
                });
            }
            self.fs
                .rename(&tmp, &path)
                .map_err(|e| Self::err(key, "rename file", e))?;
            renamed.push(path);
        }
        if chunks.next().is_some() {
            return Err(Self::err(
                key,
                "receive",
                "more data than the meta describes",
            ));
        }
        self.write_meta(SnapKind::Received, key, meta)
    }

    /// Removes every file of a snapshot, temporary ones included (missing files are fine).
    pub fn delete(&self, kind: SnapKind, key: SnapKey) {
        util::lock(&self.first_seen).remove(&(kind, key));
        let files = format!("{}_{key}_", kind.prefix());
        let meta = format!("{}_{key}.", kind.prefix());
        let Ok(names) = self.fs.file_names(&self.dir) else {
            return;
        };
        for name in names {
            if name.starts_with(&files) || name.starts_with(&meta) {
                let _ = self.fs.remove_file(&self.dir.join(name));
            }
        }
    }

    /// Every snapshot with at least one file in the directory.
    pub fn list(&self) -> Vec<(SnapKind, SnapKey)> {
        let Ok(mut names) = self.fs.file_names(&self.dir) else {
            return vec![];
        };
        // In name order, whatever order the directory lists them in.
        names.sort();
        let mut found = Vec::new();
        for name in &names {
            let (kind, rest) = if let Some(rest) = name.strip_prefix("gen_") {
                (SnapKind::Generated, rest)
            } else if let Some(rest) = name.strip_prefix("rev_") {
                (SnapKind::Received, rest)
            } else {
                continue;
            };
            let stem = rest.split('.').next().unwrap_or(rest);
            // `{region}_{term}_{index}` or `{region}_{term}_{index}_{cf}`.
            let key_part: String = stem.splitn(4, '_').take(3).collect::<Vec<_>>().join("_");
            if let Some(key) = SnapKey::parse(&key_part) {
                if !found.contains(&(kind, key)) {
                    found.push((kind, key));
                }
            }
        }
        found
    }

    /// How long this manager has known the snapshot, by the store's clock: since the first
    /// call for it (this run). Not the files' modification times: those are the host's time,
    /// which the store's clock need not follow (a simulation's does not), and a restart
    /// should grant a found snapshot the full grace again anyway.
    pub fn age(&self, kind: SnapKind, key: SnapKey, now: Instant) -> std::time::Duration {
        let mut seen = util::lock(&self.first_seen);
        let first = *seen.entry((kind, key)).or_insert(now);
        now.saturating_duration_since(first)
    }

    /// Deletes the snapshots `keep` rejects (stale ones: older than the region's applied or
    /// truncated index, or of regions no longer here). Returns how many were removed.
    pub fn gc(&self, keep: impl Fn(SnapKind, SnapKey) -> bool) -> usize {
        let stale: Vec<_> = self
            .list()
            .into_iter()
            .filter(|(kind, key)| !keep(*kind, *key))
            .collect();
        for (kind, key) in &stale {
            self.delete(*kind, *key);
        }
        stale.len()
    }
}

static RECEIVE_NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Most bytes in one chunk of a snapshot transfer.
pub const SNAP_CHUNK_SIZE: usize = 1 << 20;

/// A generated snapshot on its way to another store.
#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    pub mgr: SnapManager,
    pub key: SnapKey,
    pub meta: SnapshotMeta,
}

impl SnapshotFiles {
    /// The files' bytes in meta order, at most [`SNAP_CHUNK_SIZE`] per chunk, never spanning
    /// two files.
    pub fn chunks(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.meta.cf_files.iter().flat_map(move |file| {
            let path = self.mgr.path(SnapKind::Generated, self.key, Some(&file.cf));
            let mut reader = self
                .mgr
                .fs
                .open(&path)
                .map_err(|e| SnapManager::err(self.key, "open", e));
            let mut left = file.size;
            std::iter::from_fn(move || {
                if left == 0 {
                    return None;
                }
                let f = match reader.as_mut() {
                    Ok(f) => f,
                    Err(e) => {
                        left = 0;
                        return Some(Err(SnapManager::err(self.key, "open", e.to_string())));
                    }
                };
                let mut buf = vec![0u8; (left as usize).min(SNAP_CHUNK_SIZE)];
                match f.read_exact(&mut buf) {
                    Ok(()) => {
                        left -= buf.len() as u64;
                        Some(Ok(buf))
                    }
                    Err(e) => {
                        left = 0;
                        Some(Err(SnapManager::err(self.key, "read", e)))
                    }
                }
            })
        })
    }
}
