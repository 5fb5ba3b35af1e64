//! Percolator transactions over TiKV's transactional API: begin with a timestamp from PD,
//! read at it, buffer writes, and commit in two phases (every key prewritten, then the
//! primary committed, which decides the transaction, then the secondaries), optionally with
//! async commit. Locks met on the way are resolved by asking their primary.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_version::keyspace::KeyMode;
use proto::kvrpcpb::{self, KeyError, LockInfo, Mutation, Op};

use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::shard::Keys;

/// How long a lock lives (ms) without heartbeats: what a reader waits before it may roll the
/// transaction back.
pub const DEFAULT_LOCK_TTL_MS: u64 = 3000;

/// Most keys a store answers in one scan request (tikv-client's own cap).
const MAX_SCAN_LIMIT: usize = 10240;

/// How a transaction runs.
#[derive(Clone, Debug)]
pub struct TxnOptions {
    /// Lock keys as they are written (and read for update), so commit cannot conflict.
    pub pessimistic: bool,
    /// Commit as soon as every key is prewritten: the commit ts is decided by the stores
    /// (TiKV's async commit), one round trip less before the answer.
    pub async_commit: bool,
    /// Milliseconds the transaction's locks live without heartbeats.
    pub lock_ttl_ms: u64,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            pessimistic: false,
            async_commit: false,
            lock_ttl_ms: DEFAULT_LOCK_TTL_MS,
        }
    }
}

impl TxnOptions {
    pub fn optimistic() -> TxnOptions {
        TxnOptions::default()
    }

    pub fn pessimistic() -> TxnOptions {
        TxnOptions {
            pessimistic: true,
            ..TxnOptions::default()
        }
    }

    pub fn with_async_commit(mut self) -> TxnOptions {
        self.async_commit = true;
        self
    }
}

/// What became of a transaction, by its primary key.
#[derive(Clone, Debug, PartialEq)]
pub enum TxnStatus {
    Committed {
        commit_ts: u64,
    },
    RolledBack,
    /// Still running: its primary lock, which lives `ttl_ms` from its start.
    Locked {
        ttl_ms: u64,
        lock: LockInfo,
    },
}

/// A client for transactions: cheap to clone, like [`Client`].
#[derive(Clone, Debug)]
pub struct TransactionClient {
    client: Client,
}

impl TransactionClient {
    /// Connects as [`Client::connect`] does, for transactional keys: it routes by encoded
    /// keys, and under a keyspace (`ClientConfig::keyspace`) uses its transactional half.
    pub async fn connect(pd_endpoints: &[String], config: ClientConfig) -> Result<Self> {
        Ok(TransactionClient {
            client: Client::connect_mode(pd_endpoints, config, KeyMode::Txn).await?,
        })
    }

    /// A timestamp from PD's oracle.
    pub async fn timestamp(&self) -> Result<u64> {
        self.client.inner.tso().await
    }

    /// The cluster's GC safe point.
    pub async fn gc_safe_point(&self) -> Result<u64> {
        self.client.inner.gc_safe_point().await
    }

    /// A transaction reading at a fresh timestamp.
    pub async fn begin(&self, options: TxnOptions) -> Result<Transaction> {
        let start_ts = self.timestamp().await?;
        Ok(Transaction {
            client: self.client.clone(),
            start_ts,
            for_update_ts: start_ts,
            options,
            buffer: BTreeMap::new(),
            locked: BTreeSet::new(),
            resolved: Vec::new(),
            primary: None,
            committing: false,
            done: false,
            began: Instant::now(),
            heartbeat: None,
        })
    }

    /// Locks of `[start, end)` (empty `end`: to the end) taken at or below `max_ts`, up to
    /// `limit`, region by region.
    pub async fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        max_ts: u64,
        limit: usize,
    ) -> Result<Vec<LockInfo>> {
        let (mut from, end) = self.client.req_range_pub(start.to_vec(), end.to_vec());
        let mut out = Vec::new();
        while out.len() < limit {
            let f = from.clone();
            let e = end.clone();
            let (resp, region_end) = self
                .client
                .inner
                .single_with_route("scan_locks", &f, true, || kvrpcpb::ScanLockRequest {
                    max_version: max_ts,
                    start_key: f.clone(),
                    end_key: e.clone(),
                    limit: (limit - out.len()) as u32,
                    ..Default::default()
                })
                .await?;
            if let Some(e) = resp.error {
                return Err(txn_error("KvScanLock", max_ts, e));
            }
            out.extend(resp.locks.into_iter().map(|mut l| {
                l.key = self.client.user_key(l.key);
                l.primary_lock = self.client.user_key(l.primary_lock);
                l
            }));
            if region_end.is_empty() || (!end.is_empty() && region_end >= end) {
                break;
            }
            from = region_end;
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The status of the transaction started at `start_ts` whose primary key is `primary`.
    /// Asking changes nothing (no rollback of a missing or expired transaction).
    pub async fn txn_status(&self, primary: &[u8], start_ts: u64) -> Result<TxnStatus> {
        let primary = self.client.req_key(primary.to_vec());
        let resp = self
            .client
            .inner
            .single("txn_status", &primary, true, || {
                kvrpcpb::CheckTxnStatusRequest {
                    primary_key: primary.clone(),
                    lock_ts: start_ts,
                    current_ts: 0,
                    ..Default::default()
                }
            })
            .await?;
        status_of("KvCheckTxnStatus", start_ts, resp)
    }
}

fn txn_error(method: &'static str, start_ts: u64, key_error: KeyError) -> Error {
    let message = if let Some(c) = &key_error.conflict {
        format!(
            "write conflict on {:?} with the transaction committed at {}",
            String::from_utf8_lossy(&c.key),
            c.conflict_commit_ts
        )
    } else if let Some(a) = &key_error.already_exist {
        format!("key {:?} already exists", String::from_utf8_lossy(&a.key))
    } else if let Some(l) = &key_error.locked {
        format!(
            "key {:?} is locked by transaction {}",
            String::from_utf8_lossy(&l.key),
            l.lock_version
        )
    } else if let Some(t) = &key_error.txn_not_found {
        format!("transaction {} not found", t.start_ts)
    } else if let Some(e) = &key_error.commit_ts_expired {
        format!("commit ts below min_commit_ts {}", e.min_commit_ts)
    } else if !key_error.abort.is_empty() {
        key_error.abort.clone()
    } else {
        key_error.retryable.clone()
    };
    Error::Txn {
        method,
        start_ts,
        message,
        key_error: Box::new(key_error),
    }
}

fn status_of(
    method: &'static str,
    start_ts: u64,
    resp: kvrpcpb::CheckTxnStatusResponse,
) -> Result<TxnStatus> {
    if let Some(e) = resp.error {
        return Err(txn_error(method, start_ts, e));
    }
    Ok(match resp.lock_info {
        Some(lock) => TxnStatus::Locked {
            ttl_ms: resp.lock_ttl,
            lock,
        },
        None if resp.commit_version != 0 => TxnStatus::Committed {
            commit_ts: resp.commit_version,
        },
        None => TxnStatus::RolledBack,
    })
}

/// Physical milliseconds of a TSO timestamp.
fn physical(ts: u64) -> u64 {
    ts >> 18
}

/// One transaction. Reads see the database at `start_ts` plus the transaction's own writes;
/// writes are buffered until [`Transaction::commit`]. Dropping it without commit or
/// rollback leaves its locks (pessimistic ones) to expire.
pub struct Transaction {
    client: Client,
    start_ts: u64,
    for_update_ts: u64,
    options: TxnOptions,
    /// Request-form key → new value (`None`: delete).
    buffer: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys locked pessimistically (request form).
    locked: BTreeSet<Vec<u8>>,
    /// Transactions whose locks this one may read past (their commit is above start_ts).
    resolved: Vec<u64>,
    /// The primary key: the first key locked pessimistically, else the first written.
    primary: Option<Vec<u8>>,
    /// Commit started: from then on only its outcome decides (no rollback).
    committing: bool,
    done: bool,
    began: Instant,
    /// Set to stop the heartbeat task (started with the first lock), once the transaction
    /// is decided.
    heartbeat: Option<Arc<AtomicBool>>,
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Transaction {
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    fn context(&self) -> Option<kvrpcpb::Context> {
        Some(kvrpcpb::Context {
            resolved_locks: self.resolved.clone(),
            ..Default::default()
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.client.inner_config().max_retry_time
    }

    /// The value of `key` at the transaction's start, or as it wrote it.
    pub async fn get(&mut self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let key = self.client.req_key(key);
        if let Some(v) = self.buffer.get(&key) {
            return Ok(v.clone());
        }
        let deadline = self.deadline();
        loop {
            let ctx = self.context();
            let resp = self
                .client
                .inner
                .single("txn_get", &key, true, || kvrpcpb::GetRequest {
                    context: ctx.clone(),
                    key: key.clone(),
                    version: self.start_ts,
                })
                .await?;
            match resp.error {
                None => return Ok((!resp.not_found).then_some(resp.value)),
                Some(KeyError {
                    locked: Some(lock), ..
                }) => self.resolve(lock, deadline).await?,
                Some(e) => return Err(txn_error("KvGet", self.start_ts, e)),
            }
        }
    }

    /// The values of `keys` (absent keys left out), sorted by key: one request per region,
    /// sent together.
    pub async fn batch_get(
        &mut self,
        keys: impl IntoIterator<Item = impl Into<Vec<u8>>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = BTreeMap::new();
        let mut wanted = Vec::new();
        for key in keys {
            let key = self.client.req_key(key);
            match self.buffer.get(&key) {
                Some(Some(v)) => {
                    out.insert(key, v.clone());
                }
                Some(None) => {}
                None => wanted.push(key),
            }
        }
        let deadline = self.deadline();
        while !wanted.is_empty() {
            let ctx = self.context();
            let start_ts = self.start_ts;
            let results = self
                .client
                .inner
                .sharded(
                    "txn_batch_get",
                    Keys(wanted.clone()),
                    |piece: &Keys<Vec<u8>>| kvrpcpb::BatchGetRequest {
                        context: ctx.clone(),
                        keys: piece.0.clone(),
                        version: start_ts,
                    },
                    |resp: kvrpcpb::BatchGetResponse, _| Ok(resp),
                )
                .await?;
            let mut locks = Vec::new();
            let mut retry = Vec::new();
            for resp in results {
                if let Some(e) = resp.error {
                    return Err(txn_error("KvBatchGet", start_ts, e));
                }
                for pair in resp.pairs {
                    match pair.error {
                        None => {
                            out.insert(pair.key, pair.value);
                        }
                        Some(KeyError {
                            locked: Some(lock), ..
                        }) => {
                            retry.push(pair.key);
                            locks.push(lock);
                        }
                        Some(e) => return Err(txn_error("KvBatchGet", start_ts, e)),
                    }
                }
            }
            for lock in locks {
                self.resolve(lock, deadline).await?;
            }
            wanted = retry;
        }
        Ok(out
            .into_iter()
            .map(|(k, v)| (self.client.user_key(k), v))
            .collect())
    }

    /// Up to `limit` pairs of `[start, end)` (empty `end`: to the end) at the transaction's
    /// start, with its own writes, in key order.
    pub async fn scan(
        &mut self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (from, end) = self.client.req_range_pub(start.into(), end.into());
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let deadline = self.deadline();
        let mut at = from.clone();
        // Deleted keys of the buffer may hide stored ones: ask for that many more.
        let deleted = self
            .buffer
            .range(from.clone()..)
            .take_while(|(k, _)| end.is_empty() || **k < end)
            .filter(|(_, v)| v.is_none())
            .count();
        let want = limit + deleted;
        while found.len() < want {
            let ctx = self.context();
            let (a, e) = (at.clone(), end.clone());
            // A store answers at most MAX_SCAN_LIMIT keys per request.
            let asked = (want - found.len()).min(MAX_SCAN_LIMIT);
            let mut got = 0;
            let (resp, region_end) = self
                .client
                .inner
                .single_with_route("txn_scan", &a, true, || kvrpcpb::ScanRequest {
                    context: ctx.clone(),
                    start_key: a.clone(),
                    end_key: e.clone(),
                    limit: asked as u32,
                    version: self.start_ts,
                    ..Default::default()
                })
                .await?;
            if let Some(e) = resp.error {
                return Err(txn_error("KvScan", self.start_ts, e));
            }
            let mut locked = None;
            for pair in resp.pairs {
                match pair.error {
                    Some(KeyError {
                        locked: Some(lock), ..
                    }) => {
                        locked = Some(lock);
                        break;
                    }
                    Some(e) => return Err(txn_error("KvScan", self.start_ts, e)),
                    None => {
                        at = [pair.key.as_slice(), &[0]].concat();
                        found.insert(pair.key, pair.value);
                        got += 1;
                    }
                }
            }
            if let Some(lock) = locked {
                self.resolve(lock, deadline).await?;
                continue;
            }
            // A full answer: the region may hold more from `at` on.
            if got >= asked {
                continue;
            }
            // This region is done: go on in the next one.
            if region_end.is_empty() || (!end.is_empty() && region_end >= end) {
                break;
            }
            if at < region_end {
                at = region_end;
            }
        }
        for (k, v) in self.buffer.range(from.clone()..) {
            if !end.is_empty() && *k >= end {
                break;
            }
            match v {
                Some(v) => {
                    found.insert(k.clone(), v.clone());
                }
                None => {
                    found.remove(k);
                }
            }
        }
        Ok(found
            .into_iter()
            .take(limit)
            .map(|(k, v)| (self.client.user_key(k), v))
            .collect())
    }

    /// Sets `key` to `value` at commit. A pessimistic transaction locks the key now.
    pub async fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        let key = self.client.req_key(key);
        if self.options.pessimistic {
            self.lock_pessimistic(std::slice::from_ref(&key), false)
                .await?;
        }
        self.buffer.insert(key, Some(value.into()));
        Ok(())
    }

    /// Deletes `key` at commit. A pessimistic transaction locks the key now.
    pub async fn delete(&mut self, key: impl Into<Vec<u8>>) -> Result<()> {
        let key = self.client.req_key(key);
        if self.options.pessimistic {
            self.lock_pessimistic(std::slice::from_ref(&key), false)
                .await?;
        }
        self.buffer.insert(key, None);
        Ok(())
    }

    /// Reads `key` and locks it until commit (pessimistic transactions): the value is the
    /// newest one, and no other transaction can write it meanwhile.
    pub async fn get_for_update(&mut self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let key = self.client.req_key(key);
        if !self.options.pessimistic {
            return Err(Error::InvalidArgument {
                op: "get_for_update",
                reason: "needs a pessimistic transaction".into(),
            });
        }
        let value = self
            .lock_pessimistic(std::slice::from_ref(&key), true)
            .await?
            .pop()
            .flatten();
        Ok(match self.buffer.get(&key) {
            Some(buffered) => buffered.clone(),
            None => value,
        })
    }

    /// Takes pessimistic locks on `keys` (request form), one region at a time, retrying
    /// with a newer for_update_ts on a conflict and resolving locks in the way.
    async fn lock_pessimistic(
        &mut self,
        keys: &[Vec<u8>],
        return_values: bool,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let deadline = self.deadline();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let primary = self.primary_for(key);
            loop {
                self.for_update_ts = self.client.inner.tso().await?;
                let for_update_ts = self.for_update_ts;
                let resp = self
                    .client
                    .inner
                    .single("pessimistic_lock", key, true, || {
                        kvrpcpb::PessimisticLockRequest {
                            mutations: vec![Mutation {
                                op: Op::PessimisticLock as i32,
                                key: key.clone(),
                                ..Default::default()
                            }],
                            primary_lock: primary.clone(),
                            start_version: self.start_ts,
                            lock_ttl: self.lock_ttl(),
                            for_update_ts,
                            return_values,
                            ..Default::default()
                        }
                    })
                    .await?;
                match resp.errors.into_iter().next() {
                    None => {
                        if self.primary.is_none() {
                            self.primary = Some(primary.clone());
                        }
                        self.start_heartbeat(&primary);
                        self.locked.insert(key.clone());
                        if return_values {
                            let found = !resp.not_founds.first().copied().unwrap_or(true);
                            values.push(found.then(|| resp.values.into_iter().next()).flatten());
                        }
                        break;
                    }
                    Some(KeyError {
                        locked: Some(lock), ..
                    }) => self.resolve_as(lock, deadline, true).await?,
                    // A newer version: lock again above it (not when this transaction was
                    // rolled back: that never changes).
                    Some(e)
                        if e.conflict.as_ref().is_some_and(|c| {
                            c.reason != kvrpcpb::write_conflict::Reason::SelfRolledBack as i32
                        }) && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Some(e) => return Err(txn_error("KvPessimisticLock", self.start_ts, e)),
                }
            }
        }
        Ok(values)
    }

    /// Keeps the primary lock alive while the transaction runs (TTLs count from the
    /// transaction's start).
    fn start_heartbeat(&mut self, primary: &[u8]) {
        if self.heartbeat.is_some() {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        self.heartbeat = Some(stop.clone());
        let (client, start_ts, ttl, began) = (
            self.client.clone(),
            self.start_ts,
            self.options.lock_ttl_ms,
            self.began,
        );
        let primary = primary.to_vec();
        tokio::spawn(async move {
            // Every third of a TTL, for a TTL reaching two TTLs past now: a heartbeat or two
            // delayed by a busy store does not let the lock expire.
            let every = Duration::from_millis((ttl / 3).max(10));
            loop {
                tokio::time::sleep(every).await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let advise = began.elapsed().as_millis() as u64 + 2 * ttl;
                let sent = client
                    .inner
                    .single("heart_beat", &primary, true, || {
                        kvrpcpb::TxnHeartBeatRequest {
                            primary_lock: primary.clone(),
                            start_version: start_ts,
                            advise_lock_ttl: advise,
                            ..Default::default()
                        }
                    })
                    .await;
                // The lock is gone (committed, rolled back) or the cluster is unreachable:
                // nothing more to keep alive.
                if !matches!(sent, Ok(ref r) if r.error.is_none()) {
                    return;
                }
            }
        });
    }

    /// The TTL a new lock asks for: TTLs count from the transaction's start, so a lock taken
    /// late (a prewrite after a long pessimistic phase) lives `lock_ttl_ms` from now.
    fn lock_ttl(&self) -> u64 {
        self.began.elapsed().as_millis() as u64 + self.options.lock_ttl_ms
    }

    fn stop_heartbeat(&mut self) {
        if let Some(stop) = self.heartbeat.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// The primary key: the first key locked (stable once one is), or `key` itself.
    fn primary_for(&self, key: &[u8]) -> Vec<u8> {
        self.primary.clone().unwrap_or_else(|| key.to_vec())
    }

    /// Settles what `lock`'s transaction became, or waits a little while it lives.
    /// Readers push the lock's min_commit_ts above their start_ts (and may then read past
    /// it); writers (`as_writer`) do not, and wait instead.
    async fn resolve(&mut self, lock: LockInfo, deadline: Instant) -> Result<()> {
        self.resolve_as(lock, deadline, false).await
    }

    async fn resolve_as(
        &mut self,
        lock: LockInfo,
        deadline: Instant,
        as_writer: bool,
    ) -> Result<()> {
        if Instant::now() >= deadline {
            return Err(txn_error(
                "resolve",
                self.start_ts,
                KeyError {
                    locked: Some(lock),
                    ..Default::default()
                },
            ));
        }
        let caller_ts = if as_writer { 0 } else { self.start_ts };
        resolve_lock(&self.client, &lock, caller_ts, &mut self.resolved).await
    }

    /// Commits: prewrite every key, then commit the primary (the transaction is decided
    /// there), then the secondaries. Returns the commit ts (`start_ts` for a transaction
    /// that wrote nothing).
    pub async fn commit(&mut self) -> Result<u64> {
        if self.done {
            return Err(Error::InvalidArgument {
                op: "commit",
                reason: "the transaction already ended".into(),
            });
        }
        self.done = true;
        self.committing = true;
        let mut mutations: BTreeMap<Vec<u8>, Mutation> = BTreeMap::new();
        for (k, v) in &self.buffer {
            let m = match v {
                Some(v) => Mutation {
                    op: Op::Put as i32,
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                },
                None => Mutation {
                    op: Op::Del as i32,
                    key: k.clone(),
                    ..Default::default()
                },
            };
            mutations.insert(k.clone(), m);
        }
        for k in &self.locked {
            mutations.entry(k.clone()).or_insert_with(|| Mutation {
                op: Op::Lock as i32,
                key: k.clone(),
                ..Default::default()
            });
        }
        let Some(primary) = mutations.keys().next().cloned() else {
            return Ok(self.start_ts);
        };
        let primary = self.primary.clone().unwrap_or(primary);
        let keys: Vec<Vec<u8>> = mutations.keys().cloned().collect();
        self.start_heartbeat(&primary);
        let outcome = self.commit_mutations(&mutations, &primary, keys).await;
        self.stop_heartbeat();
        outcome
    }

    async fn commit_mutations(
        &mut self,
        mutations: &BTreeMap<Vec<u8>, Mutation>,
        primary: &[u8],
        keys: Vec<Vec<u8>>,
    ) -> Result<u64> {
        let min_commit_ts = match self.prewrite(mutations, primary).await {
            Ok(ts) => ts,
            // With async commit, every key prewritten means committed: only a definite
            // refusal (a key error) may be rolled back; otherwise the outcome is unknown.
            Err(e) if self.options.async_commit && !matches!(e, Error::Txn { .. }) => {
                return Err(Error::Undetermined {
                    op: "commit",
                    source: Box::new(e),
                });
            }
            Err(e) => {
                let _ = self.rollback_keys(&keys).await;
                return Err(e);
            }
        };
        let secondaries: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| k.as_slice() != primary)
            .cloned()
            .collect();
        if self.options.async_commit {
            // Decided once every key is prewritten: the locks become commits at
            // min_commit_ts in the background (a reader that meets one settles it too).
            self.commit_in_background(keys, min_commit_ts);
            return Ok(min_commit_ts);
        }
        let commit_ts = self.commit_primary(primary, &keys).await?;
        // Decided: the secondaries commit in the background; one still locked is committed
        // by whoever meets it.
        self.commit_in_background(secondaries, commit_ts);
        Ok(commit_ts)
    }

    /// Prewrites every mutation, region by region; resolves locks in the way and tries
    /// again. The largest min_commit_ts the stores answered (async commit).
    async fn prewrite(
        &mut self,
        mutations: &BTreeMap<Vec<u8>, Mutation>,
        primary: &[u8],
    ) -> Result<u64> {
        let deadline = self.deadline();
        let secondaries: Vec<Vec<u8>> = mutations
            .keys()
            .filter(|k| k.as_slice() != primary)
            .cloned()
            .collect();
        let pessimistic = self.options.pessimistic;
        loop {
            let keys: Vec<Vec<u8>> = mutations.keys().cloned().collect();
            let (start_ts, for_update_ts) = (self.start_ts, self.for_update_ts);
            let (ttl, use_async) = (self.lock_ttl(), self.options.async_commit);
            let locked = &self.locked;
            let results = self
                .client
                .inner
                .sharded(
                    "prewrite",
                    Keys(keys),
                    |piece: &Keys<Vec<u8>>| {
                        let has_primary = piece.0.iter().any(|k| k.as_slice() == primary);
                        kvrpcpb::PrewriteRequest {
                            mutations: piece
                                .0
                                .iter()
                                .filter_map(|k| mutations.get(k).cloned())
                                .collect(),
                            primary_lock: primary.to_vec(),
                            start_version: start_ts,
                            lock_ttl: ttl,
                            txn_size: mutations.len() as u64,
                            for_update_ts: if pessimistic { for_update_ts } else { 0 },
                            pessimistic_actions: if pessimistic {
                                piece
                                    .0
                                    .iter()
                                    .map(|k| {
                                        if locked.contains(k) {
                                            kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck
                                                as i32
                                        } else {
                                            kvrpcpb::prewrite_request::PessimisticAction::SkipPessimisticCheck
                                                as i32
                                        }
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            },
                            // Readers may push it (they need not wait for the commit).
                            min_commit_ts: start_ts + 1,
                            use_async_commit: use_async,
                            secondaries: if use_async && has_primary {
                                secondaries.clone()
                            } else {
                                Vec::new()
                            },
                            ..Default::default()
                        }
                    },
                    |resp: kvrpcpb::PrewriteResponse, _| Ok((resp.errors, resp.min_commit_ts)),
                )
                .await?;
            let mut min_commit_ts = 0;
            let mut locks = Vec::new();
            for (errors, ts) in results {
                min_commit_ts = min_commit_ts.max(ts);
                for e in errors {
                    match e.locked {
                        Some(lock) => locks.push(lock),
                        None => return Err(txn_error("KvPrewrite", self.start_ts, e)),
                    }
                }
            }
            if locks.is_empty() {
                return Ok(min_commit_ts);
            }
            for lock in locks {
                self.resolve_as(lock, deadline, true).await?;
            }
        }
    }

    /// Commits the primary at a fresh ts (again at a newer one if a reader pushed the
    /// transaction's min_commit_ts).
    /// A commit that got no definite answer may have applied: its outcome is unknown, and
    /// nothing is rolled back.
    async fn commit_primary(&mut self, primary: &[u8], keys: &[Vec<u8>]) -> Result<u64> {
        let deadline = self.deadline();
        let undetermined = |e: Error| Error::Undetermined {
            op: "commit",
            source: Box::new(e),
        };
        loop {
            let commit_ts = self.client.inner.tso().await.map_err(undetermined)?;
            let resp = self
                .client
                .inner
                .single("commit", primary, true, || kvrpcpb::CommitRequest {
                    start_version: self.start_ts,
                    keys: vec![primary.to_vec()],
                    commit_version: commit_ts,
                    ..Default::default()
                })
                .await
                .map_err(undetermined)?;
            match resp.error {
                None => return Ok(commit_ts),
                Some(e) if e.commit_ts_expired.is_some() && Instant::now() < deadline => {}
                Some(e) => {
                    // Refused (rolled back by a resolver, or bad input): not committed.
                    let _ = self.rollback_keys(keys).await;
                    return Err(txn_error("KvCommit", self.start_ts, e));
                }
            }
        }
    }

    fn commit_in_background(&self, keys: Vec<Vec<u8>>, commit_ts: u64) {
        if keys.is_empty() {
            return;
        }
        let (client, start_ts) = (self.client.clone(), self.start_ts);
        tokio::spawn(async move {
            let _ = commit_keys(&client, start_ts, &keys, commit_ts).await;
        });
    }

    async fn rollback_keys(&self, keys: &[Vec<u8>]) -> Result<()> {
        let start_ts = self.start_ts;
        self.client
            .inner
            .sharded(
                "rollback",
                Keys(keys.to_vec()),
                |piece: &Keys<Vec<u8>>| kvrpcpb::BatchRollbackRequest {
                    start_version: start_ts,
                    keys: piece.0.clone(),
                    ..Default::default()
                },
                |_: kvrpcpb::BatchRollbackResponse, _| Ok(()),
            )
            .await?;
        Ok(())
    }

    /// Gives the transaction up: its locks go, and it can never commit.
    pub async fn rollback(&mut self) -> Result<()> {
        if self.committing {
            return Err(Error::InvalidArgument {
                op: "rollback",
                reason: "the transaction's commit started: its outcome decides".into(),
            });
        }
        self.done = true;
        self.stop_heartbeat();
        let keys: BTreeSet<Vec<u8>> = self
            .buffer
            .keys()
            .chain(self.locked.iter())
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.rollback_keys(&keys.into_iter().collect::<Vec<_>>())
            .await
    }
}

/// Commits `keys` of the transaction at `start_ts` at `commit_ts`, region by region.
async fn commit_keys(
    client: &Client,
    start_ts: u64,
    keys: &[Vec<u8>],
    commit_ts: u64,
) -> Result<()> {
    let results = client
        .inner
        .sharded(
            "commit",
            Keys(keys.to_vec()),
            |piece: &Keys<Vec<u8>>| kvrpcpb::CommitRequest {
                start_version: start_ts,
                keys: piece.0.clone(),
                commit_version: commit_ts,
                ..Default::default()
            },
            |resp: kvrpcpb::CommitResponse, _| Ok(resp.error),
        )
        .await?;
    match results.into_iter().flatten().next() {
        Some(e) => Err(txn_error("KvCommit", start_ts, e)),
        None => Ok(()),
    }
}

/// Settles the transaction holding `lock` as its primary says: committed or rolled back
/// locks are resolved; a live one whose min_commit_ts the check pushed above `caller_ts`
/// goes into `resolved` (readable past); otherwise it is waited out (a short pause).
pub(crate) async fn resolve_lock(
    client: &Client,
    lock: &LockInfo,
    caller_ts: u64,
    resolved: &mut Vec<u64>,
) -> Result<()> {
    let current_ts = client.inner.tso().await?;
    let expired = physical(lock.lock_version).saturating_add(lock.lock_ttl) <= physical(current_ts);
    let primary = lock.primary_lock.clone();
    let resp = client
        .inner
        .single("check_txn_status", &primary, true, || {
            kvrpcpb::CheckTxnStatusRequest {
                primary_key: primary.clone(),
                lock_ts: lock.lock_version,
                caller_start_ts: caller_ts,
                current_ts,
                rollback_if_not_exist: expired,
                ..Default::default()
            }
        })
        .await?;
    let action = resp.action;
    let status = match status_of("KvCheckTxnStatus", lock.lock_version, resp) {
        // The primary is not locked yet (its prewrite is on the way): wait.
        Err(Error::Txn { key_error, .. }) if key_error.txn_not_found.is_some() => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(());
        }
        other => other?,
    };
    let commit_ts = match status {
        TxnStatus::Committed { commit_ts } => commit_ts,
        TxnStatus::RolledBack => 0,
        TxnStatus::Locked {
            lock: primary_lock, ..
        } => {
            if primary_lock.use_async_commit && expired {
                match check_secondaries(client, &primary_lock).await? {
                    Some(commit_ts) => commit_ts,
                    None => return Ok(()),
                }
            } else {
                if action == kvrpcpb::Action::MinCommitTsPushed as i32 {
                    resolved.push(lock.lock_version);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return Ok(());
            }
        }
    };
    let key = lock.key.clone();
    let resp = client
        .inner
        .single("resolve_lock", &key, true, || kvrpcpb::ResolveLockRequest {
            start_version: lock.lock_version,
            commit_version: commit_ts,
            keys: vec![key.clone()],
            ..Default::default()
        })
        .await?;
    match resp.error {
        Some(e) => Err(txn_error("KvResolveLock", lock.lock_version, e)),
        None => Ok(()),
    }
}

/// An expired async-commit transaction's fate from its secondaries: its commit ts if every
/// one is locked (the largest min_commit_ts) or one committed; 0 if one was rolled back;
/// `None` to ask again later.
async fn check_secondaries(client: &Client, primary: &LockInfo) -> Result<Option<u64>> {
    let start_ts = primary.lock_version;
    let keys: Vec<Vec<u8>> = primary.secondaries.clone();
    let mut commit_ts = primary.min_commit_ts;
    let results = client
        .inner
        .sharded(
            "check_secondary_locks",
            Keys(keys),
            |piece: &Keys<Vec<u8>>| kvrpcpb::CheckSecondaryLocksRequest {
                keys: piece.0.clone(),
                start_version: start_ts,
                ..Default::default()
            },
            |resp: kvrpcpb::CheckSecondaryLocksResponse, _| Ok(resp),
        )
        .await?;
    let mut locked = 0;
    for resp in results {
        if let Some(e) = resp.error {
            return Err(txn_error("KvCheckSecondaryLocks", start_ts, e));
        }
        if resp.commit_ts != 0 {
            return Ok(Some(resp.commit_ts));
        }
        if resp.locks.is_empty() {
            return Ok(Some(0));
        }
        locked += resp.locks.len();
        for l in resp.locks {
            commit_ts = commit_ts.max(l.min_commit_ts);
        }
    }
    if locked < primary.secondaries.len() {
        return Ok(None);
    }
    // Every key is prewritten: committed at the largest min_commit_ts. The primary first.
    let key = primary.key.clone();
    let resp = client
        .inner
        .single("commit", &key, true, || kvrpcpb::CommitRequest {
            start_version: start_ts,
            keys: vec![key.clone()],
            commit_version: commit_ts,
            ..Default::default()
        })
        .await?;
    if resp.error.is_some() {
        // The primary moved on meanwhile (rolled back, say): ask its status again.
        return Ok(None);
    }
    Ok(Some(commit_ts))
}
