//! The command layer beside the store's embedded API ([`raftstore::StoreApi`]): Percolator
//! transactions (the `txn` crate's commands and reads) run here, on the region's leader.
//! gRPC (`server`) and a database that links the store call the same [`Storage`] methods.
//!
//! How a command runs: check the request (API version, key sizes and keyspace, limits) →
//! take the latches of its keys → a linearizable snapshot of the region → check every key is
//! in the region → the command computes its changes → one raft write, proposed in the term
//! the snapshot was read in → release the latches. A read raises `max_ts`, checks in-memory
//! locks, then reads a snapshot.
//!
//! # Invariants
//! - A command's latches are held from before its snapshot until its write is applied or has
//!   failed, so two commands on one key never interleave on this store; the write carries the
//!   snapshot's term, so a leader change in between refuses it (nothing written).
//! - A request that fails a check changes nothing.
//!
//! # Must not depend on
//! gRPC or the server crate: it speaks `kvrpcpb::Context` and the `txn` crate's types.

pub mod deadlock;
mod error;
pub mod gc;
mod latch;
pub mod lock_wait;
mod metrics;
pub mod raw_cas;
mod snapshot;

use std::time::{Duration, Instant};

use api_version::keyspace::{self, KeyMode};
use api_version::ApiVersion;
use engine::KvEngine;
use proto::kvrpcpb::{Context, LockInfo};
use raftstore::router::RegionSnapshot;
use raftstore::{Modify, StoreApi};
use txn::commands::read::{self, ReadOptions, ScanItem};
use txn::commands::*;
use txn::{ConcurrencyManager, MvccReader, MvccTxn};

pub use error::{Error, Result};
pub use gc::GcConfig;
pub use latch::{LatchGuard, Latches};
pub use snapshot::TxnSnapshot;

/// Limits and the cluster's API version, as the store's config sets them.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub api_version: ApiVersion,
    pub max_key_size: usize,
    pub max_value_size: usize,
    /// Most keys (mutations, ranges) in one request.
    pub max_batch_keys: usize,
    /// Most keys one scan may ask for.
    pub max_scan_limit: usize,
    pub latch_slots: usize,
    /// Pessimistic lock requests waiting for a lock at once, at most; more fail at once.
    pub lock_wait_capacity: usize,
    /// How long a pessimistic lock request waits for a lock when it asks for the default
    /// (`wait_timeout` 0), and at most.
    pub default_lock_wait: Duration,
    pub max_lock_wait: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            api_version: ApiVersion::V1,
            max_key_size: 8 << 10,
            max_value_size: 3 << 20,
            max_batch_keys: 4096,
            max_scan_limit: 10240,
            latch_slots: 2048,
            lock_wait_capacity: 10_000,
            default_lock_wait: Duration::from_secs(1),
            max_lock_wait: Duration::from_secs(10),
        }
    }
}

/// How much longer than its wait a wait-for edge may stay in the detector if its clean-up
/// is lost.
const DEADLOCK_EDGE_SLACK: Duration = Duration::from_secs(2);

/// Longest a lock wait waits for the deadlock detector's answer before it waits unchecked.
const DEADLOCK_DETECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Locks a resolve pass handles per raft write.
const RESOLVE_BATCH: usize = 256;

/// Serves transactional requests for one store.
#[derive(Clone)]
pub struct Storage<EK: KvEngine> {
    api: StoreApi<EK>,
    cfg: StorageConfig,
    cm: ConcurrencyManager,
    latches: std::sync::Arc<Latches>,
    lock_waits: std::sync::Arc<lock_wait::LockWaits>,
    /// The cluster's deadlock detector (`None`: its thread did not start; waits go
    /// unchecked and end by timeout).
    deadlocks: Option<deadlock::DeadlockClient>,
    /// Region → the leader term whose max_ts was raised to a fresh timestamp (see
    /// [`Storage::sync_max_ts`]).
    max_ts_synced: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, u64>>>,
    /// Timers and background tasks (Tokio's).
    runtime: std::sync::Arc<dyn raw_cas::Runtime>,
}

type Snap<EK> = TxnSnapshot<<EK as KvEngine>::Snapshot>;

impl<EK: KvEngine> Storage<EK> {
    /// The server's storage: commands on Tokio, and the deadlock detector's thread.
    pub fn new(api: StoreApi<EK>, cfg: StorageConfig) -> Storage<EK> {
        let deadlocks = match deadlock::DeadlockClient::start(api.clone(), cfg.lock_wait_capacity) {
            Ok(client) => Some(client),
            Err(e) => {
                slog::error!(api.logger(), "cannot start the deadlock detection thread: lock \
                    waits end by timeout only"; "error" => %e);
                None
            }
        };
        let mut storage = Self::with_runtime(api, cfg, std::sync::Arc::new(raw_cas::TokioRuntime));
        storage.deadlocks = deadlocks;
        storage
    }

    /// Storage whose commands, timers and background tasks run on `runtime` (the
    /// simulator's virtual one), without the deadlock detector's thread: lock waits end by
    /// timeout only.
    pub fn with_runtime(
        api: StoreApi<EK>,
        cfg: StorageConfig,
        runtime: std::sync::Arc<dyn raw_cas::Runtime>,
    ) -> Storage<EK> {
        Storage {
            lock_waits: std::sync::Arc::new(lock_wait::LockWaits::new(cfg.lock_wait_capacity)),
            deadlocks: None,
            latches: std::sync::Arc::new(Latches::new(cfg.latch_slots)),
            api,
            cfg,
            cm: ConcurrencyManager::default(),
            max_ts_synced: Default::default(),
            runtime,
        }
    }

    pub fn concurrency_manager(&self) -> &ConcurrencyManager {
        &self.cm
    }

    /// The latches commands hold; raw compare-and-swap uses them too.
    pub fn latches(&self) -> &Latches {
        &self.latches
    }

    pub fn api(&self) -> &StoreApi<EK> {
        &self.api
    }

    // ---- Checks ----

    fn check_context(&self, ctx: &Context) -> Result<()> {
        let is_v2 = ApiVersion::request_is_v2(ctx.api_version).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown API version {} in the request",
                ctx.api_version
            ))
        })?;
        match (is_v2, self.cfg.api_version) {
            (false, ApiVersion::V1) | (true, ApiVersion::V2) => Ok(()),
            (_, ApiVersion::V1Ttl) => Err(Error::Invalid(
                "this cluster runs API version 1ttl, which serves raw requests only: \
                 transactions need api-version = \"1\" or \"2\""
                    .into(),
            )),
            (true, v) => Err(Error::Invalid(format!(
                "this cluster runs API version {v}: keyspaces need a cluster started with \
                 api-version = \"2\""
            ))),
            (false, _) => Err(Error::Invalid(
                "this cluster runs API version 2: transactional requests must be API V2 (a \
                 client with a keyspace)"
                    .into(),
            )),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Invalid("empty key".into()));
        }
        if key.len() > self.cfg.max_key_size {
            return Err(Error::Invalid(format!(
                "key of {} bytes is over the limit of {} (server.max-key-size)",
                key.len(),
                self.cfg.max_key_size
            )));
        }
        if self.cfg.api_version == ApiVersion::V2 {
            keyspace::check(key, KeyMode::Txn).map_err(|e| Error::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    fn check_keys<'a>(&self, keys: impl ExactSizeIterator<Item = &'a Vec<u8>>) -> Result<()> {
        if keys.len() > self.cfg.max_batch_keys {
            return Err(Error::Invalid(format!(
                "{} keys in one request, over the limit of {} (server.max-batch-keys)",
                keys.len(),
                self.cfg.max_batch_keys
            )));
        }
        for k in keys {
            self.check_key(k)?;
        }
        Ok(())
    }

    /// The encoded form of `[lower, upper)` (`upper` empty: unbounded; under V2, the end of
    /// `lower`'s keyspace).
    fn range(&self, lower: &[u8], upper: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        for bound in [lower, upper] {
            if bound.len() > self.cfg.max_key_size {
                return Err(Error::Invalid(format!(
                    "range bound over the key limit of {} bytes (server.max-key-size)",
                    self.cfg.max_key_size
                )));
            }
        }
        let upper = if self.cfg.api_version == ApiVersion::V2 {
            let id =
                keyspace::check(lower, KeyMode::Txn).map_err(|e| Error::Invalid(e.to_string()))?;
            let end = keyspace::prefix(KeyMode::Txn, id + 1);
            if upper.is_empty() || upper > end.as_slice() {
                end
            } else {
                upper.to_vec()
            }
        } else {
            upper.to_vec()
        };
        let lower = txn::key::encode(lower);
        let upper = if upper.is_empty() {
            Vec::new()
        } else {
            txn::key::encode(&upper)
        };
        Ok((lower, upper))
    }

    // ---- Running ----

    /// Runs `call` again while it answers ServerIsBusy (nothing proposed), pausing between
    /// tries, for up to `mailbox-full-wait-ms`.
    pub async fn busy_retry<T, F, Fut>(&self, call: F) -> raftstore::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = raftstore::Result<T>>,
    {
        raw_cas::busy_retry(self.runtime.as_ref(), self.api.mailbox_full_wait(), call).await
    }

    async fn snapshot(&self, ctx: &Context) -> Result<RegionSnapshot<EK::Snapshot>> {
        Ok(self.busy_retry(|| self.api.snapshot(ctx)).await?)
    }

    fn in_region(snap: &RegionSnapshot<EK::Snapshot>, raw: &[u8], encoded: &[u8]) -> Result<()> {
        if engine::keys::region_contains(snap.region(), encoded) {
            return Ok(());
        }
        Err(raftstore::Error::KeyNotInRegion {
            key: raw.to_vec(),
            region_id: snap.region().id,
            start_key: snap.region().start_key.clone(),
            end_key: snap.region().end_key.clone(),
        }
        .into())
    }

    /// A leader picks async-commit and one-phase commit timestamps above `max_ts`, which
    /// only knows the reads it served. Reads served by earlier leaders of the region may be
    /// above it: once per leader term, raise it to a fresh timestamp from the oracle, which
    /// is above every timestamp any reader held before.
    async fn sync_max_ts(&self, region_id: u64, term: u64) -> Result<()> {
        let synced = |s: &Self| {
            s.max_ts_synced
                .lock()
                .map(|m| m.get(&region_id) == Some(&term))
                .unwrap_or(false)
        };
        if term == 0 || synced(self) {
            return Ok(());
        }
        let api = self.api.clone();
        let ts = off_runtime(move || api.tso()).await?;
        self.cm.update_max_ts(ts);
        metrics::METRICS.max_ts_syncs.inc();
        if let Ok(mut m) = self.max_ts_synced.lock() {
            m.insert(region_id, term);
        }
        Ok(())
    }

    /// Latches `keys` (raw), reads a snapshot, runs `f`, and replicates its changes in the
    /// snapshot's term; the latches (and `f`'s in-memory locks) go once that is settled.
    /// `sync_max_ts`: the command picks commit timestamps itself (async commit, 1PC).
    async fn run<T: Send + 'static>(
        &self,
        ctx: &Context,
        keys: &[Vec<u8>],
        sync_max_ts: bool,
        f: impl FnOnce(&MvccReader<'_, Snap<EK>>) -> txn::Result<(T, MvccTxn)> + Send + 'static,
    ) -> Result<T> {
        self.check_context(ctx)?;
        let (this, ctx, keys) = (self.clone(), ctx.clone(), keys.to_vec());
        // Detached from the caller: a caller that gives up (a client's deadline drops the
        // gRPC request) must not release the latches while the write is in flight.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime.spawn(Box::pin(async move {
            let _ = tx.send(this.run_detached(&ctx, &keys, sync_max_ts, f).await);
        }));
        rx.await
            .map_err(|_| Error::Invalid("the command's task ended without an answer".into()))?
    }

    async fn run_detached<T>(
        &self,
        ctx: &Context,
        keys: &[Vec<u8>],
        sync_max_ts: bool,
        f: impl FnOnce(&MvccReader<'_, Snap<EK>>) -> txn::Result<(T, MvccTxn)>,
    ) -> Result<T> {
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| txn::key::encode(k)).collect();
        let latches = self.latches.acquire(encoded.iter()).await;
        let snap = self.snapshot(ctx).await?;
        for (raw, ek) in keys.iter().zip(&encoded) {
            Self::in_region(&snap, raw, ek)?;
        }
        let term = snap.term();
        if sync_max_ts {
            self.sync_max_ts(ctx.region_id, term).await?;
        }
        let snap = TxnSnapshot(snap);
        let (out, changes) = f(&MvccReader::new(&snap))?;
        let (modifies, memory_locks) = changes.into_parts();
        metrics::METRICS
            .memory_locks
            .set(self.cm.memory_lock_count() as i64);
        if !modifies.is_empty() {
            let modifies: Vec<Modify> = modifies.into_iter().map(to_raft_modify).collect();
            let mut ctx = ctx.clone();
            ctx.term = term;
            if let Err(e) = self
                .busy_retry(|| self.api.write(&ctx, modifies.clone()))
                .await
            {
                self.settle_latches(&ctx, (latches, memory_locks), &e);
                return Err(e.into());
            }
            // Locks on these keys may be gone: whoever waits for them looks again.
            self.lock_waits.wake(encoded.iter());
        }
        drop(memory_locks);
        Ok(out)
    }

    /// Holds `held` (latches, in-memory locks) after a failed write until the write can no
    /// longer apply ([`raw_cas::settle`]).
    pub fn settle_latches<H: Send + 'static>(
        &self,
        ctx: &Context,
        held: H,
        error: &raftstore::Error,
    ) {
        raw_cas::settle(&self.api, &self.runtime, ctx, held, error);
    }

    /// The timers and background tasks commands use.
    pub fn runtime(&self) -> &std::sync::Arc<dyn raw_cas::Runtime> {
        &self.runtime
    }

    async fn read_snapshot(&self, ctx: &Context) -> Result<Snap<EK>> {
        self.check_context(ctx)?;
        Ok(TxnSnapshot(self.snapshot(ctx).await?))
    }

    // ---- Reads ----

    fn read_options(ctx: &Context, ts: u64) -> ReadOptions {
        ReadOptions {
            ts,
            bypass_locks: ctx.resolved_locks.clone(),
        }
    }

    /// The value of `key` at `ts`.
    pub async fn get(&self, ctx: &Context, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        let opts = Self::read_options(ctx, ts);
        let ek = txn::key::encode(key);
        read::check_memory_lock(&self.cm, &ek, &opts)?;
        let snap = self.read_snapshot(ctx).await?;
        Self::in_region(&snap.0, key, &ek)?;
        Ok(read::get(&MvccReader::new(&snap), key, &opts)?)
    }

    /// The values of `keys` at `ts` (absent keys are left out; locked ones carry their lock).
    pub async fn batch_get(
        &self,
        ctx: &Context,
        keys: &[Vec<u8>],
        ts: u64,
    ) -> Result<Vec<ScanItem>> {
        self.check_keys(keys.iter())?;
        let opts = Self::read_options(ctx, ts);
        let mut out = Vec::with_capacity(keys.len());
        let mut encoded = Vec::with_capacity(keys.len());
        for k in keys {
            let ek = txn::key::encode(k);
            if let Err(e) = read::check_memory_lock(&self.cm, &ek, &opts) {
                out.push((k.clone(), Err(e)));
            }
            encoded.push(ek);
        }
        let snap = self.read_snapshot(ctx).await?;
        for (k, ek) in keys.iter().zip(&encoded) {
            Self::in_region(&snap.0, k, ek)?;
        }
        let reader = MvccReader::new(&snap);
        for k in keys {
            if out.iter().any(|(locked, _)| locked == k) {
                continue;
            }
            match read::get(&reader, k, &opts) {
                Ok(Some(v)) => out.push((k.clone(), Ok(v))),
                Ok(None) => {}
                Err(e @ txn::Error::KeyIsLocked { .. }) => out.push((k.clone(), Err(e))),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Up to `limit` keys of `[start, end)` visible at `ts`; in reverse, `[end, start)` from
    /// the top (TiKV's convention). Clipped to the region.
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        ctx: &Context,
        start: &[u8],
        end: &[u8],
        limit: usize,
        ts: u64,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<ScanItem>> {
        if limit > self.cfg.max_scan_limit {
            return Err(Error::Invalid(format!(
                "scan limit {limit} is over {} keys per request",
                self.cfg.max_scan_limit
            )));
        }
        let (lower, upper) = if reverse {
            self.range(end, start)?
        } else {
            self.range(start, end)?
        };
        let opts = Self::read_options(ctx, ts);
        read::check_memory_range(&self.cm, &lower, &upper, &opts)?;
        let snap = self.read_snapshot(ctx).await?;
        if !reverse {
            Self::in_region(&snap.0, start, &lower)?;
        }
        let items = read::scan(
            &MvccReader::new(&snap),
            (&lower, &upper),
            limit,
            key_only,
            reverse,
            &opts,
        )?;
        Ok(items)
    }

    /// Locks of `[start, end)` (clipped to the region) taken at or below `max_ts`.
    pub async fn scan_lock(
        &self,
        ctx: &Context,
        start: &[u8],
        end: &[u8],
        max_ts: u64,
        limit: usize,
    ) -> Result<Vec<LockInfo>> {
        let (lower, upper) = if start.is_empty() && self.cfg.api_version != ApiVersion::V2 {
            (
                Vec::new(),
                if end.is_empty() {
                    Vec::new()
                } else {
                    txn::key::encode(end)
                },
            )
        } else {
            self.range(start, end)?
        };
        let snap = self.read_snapshot(ctx).await?;
        Ok(read::scan_locks(
            &MvccReader::new(&snap),
            (&lower, &upper),
            max_ts,
            limit,
        )?)
    }

    // ---- Commands ----

    /// One GC batch of the region of `ctx` from `start` (an encoded key; empty: the region's
    /// start) at `safe_point`: the progress, and the versions deleted.
    pub async fn gc_batch(
        &self,
        ctx: &Context,
        start: &[u8],
        safe_point: u64,
        limit: usize,
    ) -> Result<(txn::gc::GcProgress, usize)> {
        let snap = self.snapshot(ctx).await?;
        let term = snap.term();
        let snap = TxnSnapshot(snap);
        let (progress, changes) =
            txn::gc::gc(&MvccReader::new(&snap), (start, &[]), safe_point, limit)?;
        let deleted = progress.versions_deleted;
        let (modifies, _) = changes.into_parts();
        if !modifies.is_empty() {
            let modifies: Vec<Modify> = modifies.into_iter().map(to_raft_modify).collect();
            let mut ctx = ctx.clone();
            ctx.term = term;
            self.busy_retry(|| self.api.write(&ctx, modifies.clone()))
                .await?;
        }
        Ok((progress, deleted))
    }

    /// Deletes every version and lock of `[start, end)` in the region, as one raft write
    /// (no latches: the caller owns the range, e.g. a dropped table).
    pub async fn delete_range(&self, ctx: &Context, start: &[u8], end: &[u8]) -> Result<()> {
        let (lower, upper) = self.range(start, end)?;
        if !upper.is_empty() && lower >= upper {
            return Err(Error::Invalid(
                "delete range: start key is not below the end key".into(),
            ));
        }
        let snap = self.read_snapshot(ctx).await?;
        Self::in_region(&snap.0, start, &lower)?;
        let region = snap.0.region();
        // Clipped to the region, as a raft write must be.
        let upper = if upper.is_empty()
            || (!region.end_key.is_empty() && upper.as_slice() > region.end_key.as_slice())
        {
            region.end_key.clone()
        } else {
            upper
        };
        let modifies: Vec<Modify> = engine::DATA_CFS
            .iter()
            .map(|cf| Modify::DeleteRange {
                cf: (*cf).into(),
                start: lower.clone(),
                end: upper.clone(),
            })
            .collect();
        Ok(self
            .busy_retry(|| self.api.write(ctx, modifies.clone()))
            .await?)
    }

    /// Deletes `[start, end)` from every data column family of this store at once, without
    /// raft ([`StoreApi::unsafe_destroy_range`]). Not region-scoped: the client sends it to
    /// every store.
    pub async fn unsafe_destroy_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let (lower, upper) = self.range(start, end)?;
        if !upper.is_empty() && lower >= upper {
            return Err(Error::Invalid(
                "unsafe destroy range: start key is not below the end key".into(),
            ));
        }
        let api = self.api.clone();
        tokio::task::spawn_blocking(move || api.unsafe_destroy_range(&lower, &upper))
            .await
            .map_err(|e| Error::Invalid(format!("destroy task: {e}")))??;
        Ok(())
    }

    pub async fn prewrite(&self, ctx: &Context, cmd: Prewrite) -> Result<PrewriteResult> {
        self.check_keys(cmd.mutations.iter().map(|m| &m.key))?;
        for m in &cmd.mutations {
            if m.value.len() > self.cfg.max_value_size {
                return Err(Error::Invalid(format!(
                    "value of {} bytes for key {:?} is over the limit of {} (server.max-value-size)",
                    m.value.len(),
                    m.key,
                    self.cfg.max_value_size
                )));
            }
        }
        self.check_key(&cmd.primary)?;
        let keys: Vec<Vec<u8>> = cmd.mutations.iter().map(|m| m.key.clone()).collect();
        let cm = self.cm.clone();
        let sync = cmd.secondaries.is_some() || cmd.try_one_pc;
        self.run(ctx, &keys, sync, move |reader| cmd.process(reader, &cm))
            .await
    }

    pub async fn commit(&self, ctx: &Context, cmd: Commit) -> Result<()> {
        self.check_keys(cmd.keys.iter())?;
        let keys = cmd.keys.clone();
        self.run(ctx, &keys, false, move |reader| {
            Ok(((), cmd.process(reader)?))
        })
        .await
    }

    pub async fn batch_rollback(&self, ctx: &Context, cmd: BatchRollback) -> Result<()> {
        self.check_keys(cmd.keys.iter())?;
        let keys = cmd.keys.clone();
        self.run(ctx, &keys, false, move |reader| {
            Ok(((), cmd.process(reader)?))
        })
        .await
    }

    pub async fn cleanup(&self, ctx: &Context, cmd: Cleanup) -> Result<()> {
        self.check_key(&cmd.key)?;
        let keys = vec![cmd.key.clone()];
        self.run(ctx, &keys, false, move |reader| {
            Ok(((), cmd.process(reader)?))
        })
        .await
    }

    pub async fn check_txn_status(&self, ctx: &Context, cmd: CheckTxnStatus) -> Result<TxnStatus> {
        self.check_key(&cmd.primary)?;
        let keys = vec![cmd.primary.clone()];
        let cm = self.cm.clone();
        self.run(ctx, &keys, false, move |reader| cmd.process(reader, &cm))
            .await
    }

    pub async fn check_secondary_locks(
        &self,
        ctx: &Context,
        cmd: CheckSecondaryLocks,
    ) -> Result<SecondaryLocksStatus> {
        self.check_keys(cmd.keys.iter())?;
        let keys = cmd.keys.clone();
        self.run(ctx, &keys, false, move |reader| cmd.process(reader))
            .await
    }

    /// The primary lock's TTL after the heartbeat.
    pub async fn txn_heart_beat(&self, ctx: &Context, cmd: TxnHeartBeat) -> Result<u64> {
        self.check_key(&cmd.primary)?;
        let keys = vec![cmd.primary.clone()];
        self.run(ctx, &keys, false, move |reader| cmd.process(reader))
            .await
    }

    /// Takes pessimistic locks. Meeting another transaction's lock, the request waits for
    /// it to go for up to `wait_timeout_ms` (0: the default wait, negative: no wait), in a
    /// bounded queue; a wait that would deadlock is answered Deadlock at once.
    pub async fn pessimistic_lock(
        &self,
        ctx: &Context,
        cmd: PessimisticLock,
        wait_timeout_ms: i64,
    ) -> Result<PessimisticLockResult> {
        self.check_keys(cmd.mutations.iter().map(|m| &m.key))?;
        self.check_key(&cmd.primary)?;
        let keys: Vec<Vec<u8>> = cmd.mutations.iter().map(|m| m.key.clone()).collect();
        let wait = match wait_timeout_ms {
            t if t < 0 => Duration::ZERO,
            0 => self.cfg.default_lock_wait,
            t => Duration::from_millis(t as u64).min(self.cfg.max_lock_wait),
        };
        let deadline = Instant::now() + wait;
        let mark_all = |keys: &[Vec<u8>]| -> Vec<u64> {
            keys.iter()
                .map(|k| self.lock_waits.release_mark(&txn::key::encode(k)))
                .collect()
        };
        // Noted before each look: a release in between means look again, not wait.
        let mut marks = mark_all(&keys);
        loop {
            let attempt = cmd.clone();
            let result = self
                .run(ctx, &keys, false, move |reader| attempt.process(reader))
                .await;
            let lock = match &result {
                Err(Error::Txn(txn::Error::KeyIsLocked { lock })) => lock.clone(),
                _ => return result,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return result;
            }
            let key = txn::key::encode(&lock.key);
            let mark = keys
                .iter()
                .position(|k| *k == lock.key)
                .and_then(|i| marks.get(i).copied())
                .unwrap_or_default();
            let waiting = match self.lock_waits.wait(&key, cmd.start_ts, mark) {
                Ok(w) => w,
                Err(lock_wait::WaitRefused::Changed) => {
                    marks = mark_all(&keys);
                    continue;
                }
                Err(lock_wait::WaitRefused::Full { .. }) => return result,
            };
            metrics::METRICS
                .lock_waiters
                .set(self.lock_waits.len() as i64);
            // Enqueued before asking: a release while the detector answers still wakes us.
            let edge = proto::schedulerpb::WaitForEdge {
                waiter_ts: cmd.start_ts,
                holder_ts: lock.lock_version,
                key_hash: deadlock::key_hash(&lock.key),
                key: lock.key.clone(),
                wait_id: 0,
            };
            let verdict = match &self.deadlocks {
                // The edge outlives the wait a little, should its clean-up be lost; the
                // answer is awaited only so long, so a slow scheduler cannot hold the wait
                // past its deadline (the wait then goes unchecked).
                Some(d) => {
                    let ask = d.detect(edge.clone(), left + DEADLOCK_EDGE_SLACK);
                    match tokio::time::timeout(left.min(DEADLOCK_DETECT_TIMEOUT), ask).await {
                        Ok(verdict) => verdict,
                        Err(_) => {
                            metrics::METRICS.deadlock_detect_failures.inc();
                            deadlock::Verdict::Unchecked
                        }
                    }
                }
                None => deadlock::Verdict::Unchecked,
            };
            let guard = match verdict {
                deadlock::Verdict::Wait(guard) => Some(guard),
                deadlock::Verdict::Unchecked => None,
                deadlock::Verdict::Deadlock(chain) => {
                    drop(waiting);
                    metrics::METRICS.deadlocks.inc();
                    metrics::METRICS
                        .lock_waiters
                        .set(self.lock_waits.len() as i64);
                    // TiKV's shape: the cycle's edges, then the refused request's own; the
                    // deadlock key is the one this transaction holds that the cycle waits on.
                    let closing = chain.last().cloned().unwrap_or_default();
                    let wait_chain = chain
                        .into_iter()
                        .chain([edge])
                        .map(|e| txn::WaitFor {
                            txn: e.waiter_ts,
                            wait_for_txn: e.holder_ts,
                            key: e.key,
                            key_hash: e.key_hash,
                        })
                        .collect();
                    return Err(txn::Error::Deadlock {
                        start_ts: cmd.start_ts,
                        lock_ts: lock.lock_version,
                        lock_key: lock.key.clone(),
                        deadlock_key: closing.key,
                        deadlock_key_hash: closing.key_hash,
                        wait_chain,
                    }
                    .into());
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            marks = mark_all(&keys);
            waiting.until_woken(left).await;
            drop(waiting);
            drop(guard);
            metrics::METRICS
                .lock_waiters
                .set(self.lock_waits.len() as i64);
        }
    }

    pub async fn pessimistic_rollback(
        &self,
        ctx: &Context,
        cmd: PessimisticRollback,
    ) -> Result<()> {
        self.check_keys(cmd.keys.iter())?;
        let keys = cmd.keys.clone();
        self.run(ctx, &keys, false, move |reader| {
            Ok(((), cmd.process(reader)?))
        })
        .await
    }

    /// Resolves the locks of the transactions in `txn_status` (start_ts → commit_ts, 0 for
    /// rolled back): on `keys`, or, when `keys` is empty, on every lock of theirs in the
    /// region, a batch per raft write.
    pub async fn resolve_lock(
        &self,
        ctx: &Context,
        txn_status: std::collections::HashMap<u64, u64>,
        keys: Vec<Vec<u8>>,
    ) -> Result<()> {
        if txn_status.is_empty() {
            return Err(Error::Invalid("resolve_lock without a transaction".into()));
        }
        if !keys.is_empty() {
            self.check_keys(keys.iter())?;
            let cmd = ResolveLock { txn_status, keys };
            let latched = cmd.keys.clone();
            return self
                .run(ctx, &latched, false, move |reader| {
                    Ok(((), cmd.process(reader)?))
                })
                .await;
        }
        // Find the locks first, then resolve them under their latches (the command re-reads
        // each one); a key resolved meanwhile is simply left alone.
        let mut start = Vec::new();
        loop {
            let snap = self.read_snapshot(ctx).await?;
            let found = MvccReader::new(&snap).scan_locks(&start, &[], RESOLVE_BATCH, |l| {
                txn_status.contains_key(&l.start_ts)
            })?;
            let Some((last, _)) = found.last() else {
                return Ok(());
            };
            let mut next = last.clone();
            next.push(0);
            let more = found.len() == RESOLVE_BATCH;
            let keys = found
                .iter()
                .map(|(ek, _)| txn::key::decode(ek))
                .collect::<txn::Result<Vec<_>>>()?;
            let cmd = ResolveLock {
                txn_status: txn_status.clone(),
                keys,
            };
            let latched = cmd.keys.clone();
            self.run(ctx, &latched, false, move |reader| {
                Ok(((), cmd.process(reader)?))
            })
            .await?;
            if !more {
                return Ok(());
            }
            start = next;
        }
    }
}

/// Runs a blocking scheduler call on a thread of its own: the scheduler client refuses to
/// block a runtime's threads (blocking ones included), where it could stall them.
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> raftstore::Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("scheduler-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::Invalid(format!("cannot start a thread: {e}")))?;
    match rx.await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Invalid("the scheduler call's thread died".into())),
    }
}

fn to_raft_modify(m: txn::Modify) -> Modify {
    match m {
        txn::Modify::Put { cf, key, value } => Modify::Put {
            cf: cf.into(),
            key,
            value,
        },
        txn::Modify::Delete { cf, key } => Modify::Delete { cf: cf.into(), key },
    }
}
