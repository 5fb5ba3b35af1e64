//! The raw methods of TiKV's `tikvpb.Tikv`, served over the store's embedded API. Keys and
//! values take the stored form of the cluster's API version on the way in and back
//! ([`crate::codec`]); everything below this module sees only stored keys.
//!
//! Region errors (NotLeader, EpochNotMatch with the current regions, KeyNotInRegion, ...)
//! travel in `region_error` as a TiKV client expects; anything else is a clear message in the
//! response's `error` string, or, for responses that have none, an INVALID_ARGUMENT /
//! INTERNAL status. Every bound is checked before anything is proposed.

use std::time::Instant;

use engine::{KvEngine, CF_DEFAULT, DATA_CFS};
use proto::errorpb;
use proto::kvrpcpb::*;
use proto::tikvpb::tikv_server::Tikv;
use raftstore::router::RegionSnapshot;
use raftstore::{Modify, StoreApi};
use tonic::{Request, Response, Status};

use crate::codec::{CodecError, RawCodec};
use crate::metrics::METRICS;
use crate::Config;

/// Most pairs one scan may ask for: what tikv-client itself allows (its
/// `MAX_RAW_KV_SCAN_LIMIT`). The response's size is bounded separately.
pub const MAX_SCAN_LIMIT: usize = 10240;

enum KvError {
    Region(Box<errorpb::Error>),
    /// Bad input: a clear message; asking again will not help.
    Invalid(String),
    /// The answer would not fit a message: ask for less.
    TooLarge(String),
    /// The store cannot answer now (stopping, a read or write whose outcome is unknown).
    Unavailable(String),
    /// The engine failed.
    Internal(String),
}

impl From<raftstore::Error> for KvError {
    fn from(e: raftstore::Error) -> Self {
        if let Some(region_error) = e.to_region_error() {
            return KvError::Region(Box::new(region_error));
        }
        match e {
            raftstore::Error::StoreStopped { .. }
            | raftstore::Error::ReadTimeout { .. }
            | raftstore::Error::Undetermined { .. } => KvError::Unavailable(e.to_string()),
            other => KvError::Internal(other.to_string()),
        }
    }
}

impl KvError {
    fn kind(&self) -> &'static str {
        match self {
            KvError::Region(e) if e.not_leader.is_some() => "not_leader",
            KvError::Region(e) if e.epoch_not_match.is_some() => "epoch_not_match",
            KvError::Region(e) if e.region_not_found.is_some() => "region_not_found",
            KvError::Region(e) if e.server_is_busy.is_some() => "server_is_busy",
            KvError::Region(_) => "region_other",
            KvError::Invalid(_) => "invalid",
            KvError::TooLarge(_) => "too_large",
            KvError::Unavailable(_) => "unavailable",
            KvError::Internal(_) => "internal",
        }
    }

    /// For responses with `region_error` and `error`.
    fn split(self) -> (Option<errorpb::Error>, String) {
        match self {
            KvError::Region(e) => (Some(*e), String::new()),
            KvError::Invalid(msg)
            | KvError::TooLarge(msg)
            | KvError::Unavailable(msg)
            | KvError::Internal(msg) => (None, msg),
        }
    }

    /// For responses with only `region_error`: other errors become a status.
    fn region_or_status(self) -> Result<errorpb::Error, Status> {
        match self {
            KvError::Region(e) => Ok(*e),
            KvError::Invalid(msg) => Err(Status::invalid_argument(msg)),
            KvError::TooLarge(msg) => Err(Status::resource_exhausted(msg)),
            KvError::Unavailable(msg) => Err(Status::unavailable(msg)),
            KvError::Internal(msg) => Err(Status::internal(msg)),
        }
    }
}

impl From<CodecError> for KvError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Invalid(msg) => KvError::Invalid(msg),
            CodecError::Corrupt(msg) => KvError::Internal(msg),
        }
    }
}

type KvResult<T> = std::result::Result<T, KvError>;

fn invalid(msg: String) -> KvError {
    KvError::Invalid(msg)
}

/// Serves raw KV requests for one store. Cheap to clone (a compare-and-swap runs on a task
/// of its own).
#[derive(Clone)]
pub struct KvService<EK: KvEngine> {
    api: StoreApi<EK>,
    cfg: std::sync::Arc<Config>,
    /// Keys and values as the cluster's API version stores them.
    codec: RawCodec,
    /// Transactional commands and reads; its latches also serialise raw compare-and-swap
    /// with other atomic writes to the same key on this store (the region leader).
    storage: storage::Storage<EK>,
}

impl<EK: KvEngine> KvService<EK> {
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// `api_version` is the cluster's (checked against the scheduler and the data directory
    /// before the store starts).
    pub fn new(api: StoreApi<EK>, cfg: Config, api_version: api_version::ApiVersion) -> Self {
        // A full mailbox is waited on here, asynchronously, not on the runtime's threads.
        let api = api.without_mailbox_wait();
        let storage = storage::Storage::new(
            api.clone(),
            storage::StorageConfig {
                api_version,
                max_key_size: cfg.max_key_size,
                max_value_size: cfg.max_value_size,
                max_batch_keys: cfg.max_batch_keys,
                max_scan_limit: MAX_SCAN_LIMIT,
                lock_wait_capacity: cfg.max_lock_waiters,
                default_lock_wait: std::time::Duration::from_millis(cfg.lock_wait_default_ms),
                max_lock_wait: std::time::Duration::from_millis(cfg.lock_wait_max_ms),
                ..Default::default()
            },
        );
        KvService {
            api,
            cfg: std::sync::Arc::new(cfg),
            codec: RawCodec::new(api_version),
            storage,
        }
    }

    /// The transactional layer these handlers and an embedding database share.
    pub fn storage(&self) -> &storage::Storage<EK> {
        &self.storage
    }

    fn context(&self, ctx: Option<&Context>) -> KvResult<Context> {
        let ctx = ctx.ok_or_else(|| invalid("request without a context".into()))?;
        self.codec.check_request_version(ctx.api_version)?;
        Ok(ctx.clone())
    }

    /// Unix seconds by the store's clock: what TTLs count from and expiries compare with.
    fn now_secs(&self) -> u64 {
        self.api.clock().unix_secs()
    }

    fn cf(&self, cf: &str) -> KvResult<String> {
        if cf.is_empty() {
            return Ok(CF_DEFAULT.into());
        }
        if !DATA_CFS.contains(&cf) {
            return Err(invalid(format!(
                "unknown column family {cf:?} (one of {DATA_CFS:?})"
            )));
        }
        Ok(cf.into())
    }

    /// Checks a key a request names; returns its stored form.
    fn key(&self, key: &[u8]) -> KvResult<Vec<u8>> {
        if key.is_empty() {
            return Err(invalid("empty key".into()));
        }
        if key.len() > self.cfg.max_key_size {
            return Err(invalid(format!(
                "key of {} bytes is over the limit of {} (server.max-key-size)",
                key.len(),
                self.cfg.max_key_size
            )));
        }
        Ok(self.codec.key(key)?)
    }

    /// Checks a range a request names (`upper` empty: unbounded); returns its stored form.
    fn range(&self, lower: &[u8], upper: &[u8]) -> KvResult<(Vec<u8>, Vec<u8>)> {
        if lower.len() > self.cfg.max_key_size || upper.len() > self.cfg.max_key_size {
            return Err(invalid(format!(
                "range bound over the key limit of {} bytes (server.max-key-size)",
                self.cfg.max_key_size
            )));
        }
        Ok(self.codec.range(lower, upper)?)
    }

    fn value(&self, value: &[u8]) -> KvResult<()> {
        if value.len() > self.cfg.max_value_size {
            return Err(invalid(format!(
                "value of {} bytes is over the limit of {} (server.max-value-size)",
                value.len(),
                self.cfg.max_value_size
            )));
        }
        Ok(())
    }

    fn batch(&self, what: &str, n: usize) -> KvResult<()> {
        if n > self.cfg.max_batch_keys {
            return Err(invalid(format!(
                "{n} {what} in one request, over the limit of {} (server.max-batch-keys)",
                self.cfg.max_batch_keys
            )));
        }
        Ok(())
    }

    fn scan_limit(&self, limit: usize) -> KvResult<()> {
        if limit > MAX_SCAN_LIMIT {
            return Err(invalid(format!(
                "scan limit {limit} is over {MAX_SCAN_LIMIT} pairs per request"
            )));
        }
        Ok(())
    }

    fn ttl(&self, ttl: u64) -> KvResult<()> {
        Ok(self.codec.check_ttl(ttl)?)
    }

    async fn snapshot(&self, ctx: &Context) -> KvResult<RegionSnapshot<EK::Snapshot>> {
        Ok(self.storage.busy_retry(|| self.api.snapshot(ctx)).await?)
    }

    /// Writes `modifies`; `for_cas`: under their keys' latches, ordered with compare-and-swaps
    /// ([`storage::raw_cas::latched_write`]).
    async fn write(&self, ctx: &Context, modifies: Vec<Modify>, for_cas: bool) -> KvResult<()> {
        if modifies.is_empty() {
            return Ok(());
        }
        if for_cas {
            return Ok(storage::raw_cas::latched_write(self.cas_context(), ctx, modifies).await?);
        }
        Ok(self
            .storage
            .busy_retry(|| self.api.write(ctx, modifies.clone()))
            .await?)
    }

    fn cas_context(&self) -> storage::raw_cas::CasContext<'_, EK> {
        storage::raw_cas::CasContext {
            api: &self.api,
            latches: self.storage.latches(),
            runtime: self.storage.runtime(),
        }
    }

    /// Runs an engine read off the runtime's threads: a scan may read a whole region.
    async fn read<T: Send + 'static>(
        snap: RegionSnapshot<EK::Snapshot>,
        f: impl FnOnce(&RegionSnapshot<EK::Snapshot>) -> KvResult<T> + Send + 'static,
    ) -> KvResult<T> {
        tokio::task::spawn_blocking(move || f(&snap))
            .await
            .map_err(|e| KvError::Internal(format!("read task: {e}")))?
    }

    fn observe<T>(&self, method: &'static str, start: Instant, result: &KvResult<T>) {
        METRICS.kv_requests.with_label_values(&[method]).inc();
        METRICS
            .kv_duration
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        if let Err(e) = result {
            METRICS
                .kv_errors
                .with_label_values(&[method, e.kind()])
                .inc();
        }
    }

    fn check_scan_size(&self, kvs: &[KvPair]) -> KvResult<()> {
        let bytes: usize = kvs.iter().map(|p| p.key.len() + p.value.len() + 8).sum();
        // Half the message limit leaves room for framing; a client asks again with a lower
        // limit rather than getting a truncated answer it could mistake for the end.
        if bytes > self.cfg.grpc_max_message_size / 2 {
            return Err(KvError::TooLarge(format!(
                "scan result of {bytes} bytes is over half the message limit ({} bytes): \
                 ask for fewer pairs",
                self.cfg.grpc_max_message_size
            )));
        }
        Ok(())
    }

    /// Up to `limit` live pairs of `[lower, upper)` (stored form) in the region, with the
    /// keys a client sees. Expired values are skipped without counting towards the limit: a
    /// short answer tells a client the region has no more.
    #[allow(clippy::too_many_arguments)]
    fn scan_region(
        codec: RawCodec,
        snap: &RegionSnapshot<EK::Snapshot>,
        cf: &str,
        (lower, upper): (&[u8], &[u8]),
        limit: usize,
        key_only: bool,
        reverse: bool,
        now: u64,
    ) -> KvResult<Vec<KvPair>> {
        let mut pairs = Vec::new();
        if limit == 0 {
            return Ok(pairs);
        }
        let mut bad = None;
        snap.scan_cf_with(cf, lower, upper, reverse, |key, stored| {
            let pair = codec.read_value(stored, now).and_then(|value| {
                value
                    .map(|value| {
                        Ok(KvPair {
                            error: None,
                            key: codec.user_key(key)?,
                            value: if key_only { Vec::new() } else { value.to_vec() },
                        })
                    })
                    .transpose()
            });
            match pair {
                Ok(Some(pair)) => pairs.push(pair),
                Ok(None) => {}
                Err(e) => {
                    bad = Some(e);
                    return Ok(false);
                }
            }
            Ok(pairs.len() < limit)
        })?;
        match bad {
            Some(e) => Err(e.into()),
            None => Ok(pairs),
        }
    }

    async fn do_get(&self, req: &RawGetRequest) -> KvResult<Option<Vec<u8>>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let key = self.key(&req.key)?;
        let snap = self.snapshot(&ctx).await?;
        let now = self.now_secs();
        match snap.get_cf(&cf, &key)? {
            Some(stored) => Ok(self.codec.read_value(&stored, now)?.map(<[u8]>::to_vec)),
            None => Ok(None),
        }
    }

    async fn do_get_key_ttl(&self, req: &RawGetKeyTtlRequest) -> KvResult<Option<u64>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let key = self.key(&req.key)?;
        if !self.codec.version().has_ttl() {
            return Err(invalid(format!(
                "RawGetKeyTTL needs a TTL version: this cluster runs API version {} (start it \
                 with api-version = \"1ttl\" or \"2\")",
                self.codec.version()
            )));
        }
        let snap = self.snapshot(&ctx).await?;
        let now = self.now_secs();
        match snap.get_cf(&cf, &key)? {
            Some(stored) => Ok(self.codec.ttl_left(&stored, now)?),
            None => Ok(None),
        }
    }

    async fn do_batch_get(&self, req: &RawBatchGetRequest) -> KvResult<Vec<KvPair>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        self.batch("keys", req.keys.len())?;
        let mut keys = Vec::with_capacity(req.keys.len());
        for key in &req.keys {
            keys.push((self.key(key)?, key.clone()));
        }
        let snap = self.snapshot(&ctx).await?;
        let (codec, now) = (self.codec, self.now_secs());
        let pairs = Self::read(snap, move |snap| {
            let mut pairs = Vec::new();
            for (stored_key, key) in keys {
                let Some(stored) = snap.get_cf(&cf, &stored_key)? else {
                    continue;
                };
                if let Some(value) = codec.read_value(&stored, now)? {
                    pairs.push(KvPair {
                        error: None,
                        key,
                        value: value.to_vec(),
                    });
                }
            }
            Ok(pairs)
        })
        .await?;
        self.check_scan_size(&pairs)?;
        Ok(pairs)
    }

    async fn do_put(&self, req: &RawPutRequest) -> KvResult<()> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let key = self.key(&req.key)?;
        self.value(&req.value)?;
        self.ttl(req.ttl)?;
        let modify = Modify::Put {
            cf,
            value: self.codec.value(&req.value, req.ttl, self.now_secs()),
            key,
        };
        self.write(&ctx, vec![modify], req.for_cas).await
    }

    async fn do_batch_put(&self, req: &RawBatchPutRequest) -> KvResult<()> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        self.batch("pairs", req.pairs.len())?;
        // One TTL per pair, or none and the single (deprecated) `ttl` for every pair.
        let ttls = if req.ttls.is_empty() {
            #[allow(deprecated)] // Old clients still send the single TTL.
            let ttl = req.ttl;
            vec![ttl; req.pairs.len()]
        } else if req.ttls.len() == req.pairs.len() {
            req.ttls.clone()
        } else {
            return Err(invalid(format!(
                "{} TTLs for {} pairs: send one per pair, or none",
                req.ttls.len(),
                req.pairs.len()
            )));
        };
        for ttl in &ttls {
            self.ttl(*ttl)?;
        }
        let mut keys = Vec::with_capacity(req.pairs.len());
        for pair in &req.pairs {
            keys.push(self.key(&pair.key)?);
            self.value(&pair.value)?;
        }
        let now = self.now_secs();
        let modifies = keys
            .into_iter()
            .zip(&req.pairs)
            .zip(ttls)
            .map(|((key, pair), ttl)| Modify::Put {
                cf: cf.clone(),
                key,
                value: self.codec.value(&pair.value, ttl, now),
            })
            .collect();
        self.write(&ctx, modifies, req.for_cas).await
    }

    async fn do_delete(
        &self,
        ctx: Option<&Context>,
        cf: &str,
        keys: &[Vec<u8>],
        for_cas: bool,
    ) -> KvResult<()> {
        let ctx = self.context(ctx)?;
        let cf = self.cf(cf)?;
        self.batch("keys", keys.len())?;
        let mut stored = Vec::with_capacity(keys.len());
        for key in keys {
            stored.push(self.key(key)?);
        }
        let modifies = stored
            .into_iter()
            .map(|key| Modify::Delete {
                cf: cf.clone(),
                key,
            })
            .collect();
        self.write(&ctx, modifies, for_cas).await
    }

    async fn do_delete_range(&self, req: &RawDeleteRangeRequest) -> KvResult<()> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let (start, end) = self.range(&req.start_key, &req.end_key)?;
        if !end.is_empty() && start >= end {
            return Err(invalid(
                "delete range: start key is not below the end key".into(),
            ));
        }
        self.write(&ctx, vec![Modify::DeleteRange { cf, start, end }], false)
            .await
    }

    async fn do_scan(&self, req: &RawScanRequest) -> KvResult<Vec<KvPair>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let limit = req.limit as usize;
        self.scan_limit(limit)?;
        // A reverse scan reads [end_key, start_key) from the top (TiKV's convention). Either
        // way the range is clipped to the region: clients send the end unclipped.
        let (lower, upper) = if req.reverse {
            self.range(&req.end_key, &req.start_key)?
        } else {
            self.range(&req.start_key, &req.end_key)?
        };
        let snap = self.snapshot(&ctx).await?;
        if !req.reverse && !engine::keys::region_contains(snap.region(), &lower) {
            return Err(raftstore::Error::KeyNotInRegion {
                key: req.start_key.clone(),
                region_id: snap.region().id,
                start_key: snap.region().start_key.clone(),
                end_key: snap.region().end_key.clone(),
            }
            .into());
        }
        let (codec, now, key_only, reverse) =
            (self.codec, self.now_secs(), req.key_only, req.reverse);
        let kvs = Self::read(snap, move |snap| {
            let range = (lower.as_slice(), upper.as_slice());
            Self::scan_region(codec, snap, &cf, range, limit, key_only, reverse, now)
        })
        .await?;
        self.check_scan_size(&kvs)?;
        Ok(kvs)
    }

    async fn do_batch_scan(&self, req: &RawBatchScanRequest) -> KvResult<Vec<KvPair>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        self.batch("ranges", req.ranges.len())?;
        let limit = req.each_limit as usize;
        self.scan_limit(limit)?;
        let (key_only, reverse) = (req.key_only, req.reverse);
        let mut ranges = Vec::with_capacity(req.ranges.len());
        for range in &req.ranges {
            ranges.push(if reverse {
                self.range(&range.end_key, &range.start_key)?
            } else {
                self.range(&range.start_key, &range.end_key)?
            });
        }
        let snap = self.snapshot(&ctx).await?;
        let (codec, now) = (self.codec, self.now_secs());
        let max_bytes = self.cfg.grpc_max_message_size / 2;
        let kvs = Self::read(snap, move |snap| {
            let mut kvs = Vec::new();
            let mut bytes = 0;
            for (lower, upper) in &ranges {
                let range = (lower.as_slice(), upper.as_slice());
                let found =
                    Self::scan_region(codec, snap, &cf, range, limit, key_only, reverse, now)?;
                bytes += found
                    .iter()
                    .map(|p| p.key.len() + p.value.len() + 8)
                    .sum::<usize>();
                kvs.extend(found);
                // Over the limit already: the size check below refuses the whole answer.
                if bytes > max_bytes {
                    break;
                }
            }
            Ok(kvs)
        })
        .await?;
        self.check_scan_size(&kvs)?;
        Ok(kvs)
    }

    async fn do_cas(&self, req: &RawCasRequest) -> KvResult<(bool, Option<Vec<u8>>)> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let key = self.key(&req.key)?;
        self.value(&req.value)?;
        self.ttl(req.ttl)?;
        let outcome =
            storage::raw_cas::compare_and_swap(self.cas_context(), &ctx, &cf, key, |stored| {
                // Expiry is judged once, by the leader, under the latch and after the read
                // (as a get judges it): the write is what replicas apply.
                let now = self.now_secs();
                let current = match stored {
                    Some(stored) => self.codec.read_value(stored, now)?.map(<[u8]>::to_vec),
                    None => None,
                };
                let matches = match &current {
                    None => req.previous_not_exist,
                    Some(v) => !req.previous_not_exist && *v == req.previous_value,
                };
                let new = matches.then(|| self.codec.value(&req.value, req.ttl, now));
                Ok::<_, KvError>((current, new))
            })
            .await?;
        Ok((outcome.swapped, outcome.current))
    }
}

/// How a response carries a failure. Region errors always go in `region_error`; the rest go
/// in the response's `error` string where it has one, otherwise they become a gRPC status.
trait KvResponse: Default {
    fn fail(&mut self, e: KvError) -> Result<(), Status>;
}

macro_rules! kv_response {
    (with_error: $($t:ty),*) => {$(
        impl KvResponse for $t {
            fn fail(&mut self, e: KvError) -> Result<(), Status> {
                (self.region_error, self.error) = e.split();
                Ok(())
            }
        }
    )*};
    (region_error_only: $($t:ty),*) => {$(
        impl KvResponse for $t {
            fn fail(&mut self, e: KvError) -> Result<(), Status> {
                self.region_error = Some(e.region_or_status()?);
                Ok(())
            }
        }
    )*};
}

kv_response!(with_error: RawGetResponse, RawPutResponse, RawBatchPutResponse,
    RawDeleteResponse, RawBatchDeleteResponse, RawDeleteRangeResponse, RawCasResponse,
    RawGetKeyTtlResponse);
kv_response!(region_error_only: RawScanResponse);

/// Batch reads carry a failure as TiKV does: one pair whose `error` aborts, which a TiKV
/// client reports at once. A store that cannot answer now stays a status, so the client
/// tries elsewhere.
macro_rules! kv_response_pairs {
    ($($t:ty => $field:ident),*) => {$(
        impl KvResponse for $t {
            fn fail(&mut self, e: KvError) -> Result<(), Status> {
                match e {
                    KvError::Region(e) => self.region_error = Some(*e),
                    KvError::Unavailable(msg) => return Err(Status::unavailable(msg)),
                    KvError::Invalid(msg) | KvError::TooLarge(msg) | KvError::Internal(msg) => {
                        self.$field = vec![KvPair {
                            error: Some(KeyError { abort: msg, ..Default::default() }),
                            ..Default::default()
                        }];
                    }
                }
                Ok(())
            }
        }
    )*};
}

kv_response_pairs!(RawBatchGetResponse => pairs, RawBatchScanResponse => kvs);

/// Runs `work` on a task of its own. A compare-and-swap (and a write `for_cas`) holds latches
/// across its write: a caller that gives up (a client's deadline drops the request) must not
/// release them while the write is in flight.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = KvResult<T>> + Send + 'static,
) -> KvResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| KvError::Internal(format!("request task: {e}")))?
}

impl<EK: KvEngine> KvService<EK> {
    /// Every handler's frame: runs `work`, records its metrics under `method`, and builds the
    /// response, with `ok` filling in a success and [`KvResponse::fail`] a failure.
    async fn handle<T, R: KvResponse>(
        &self,
        method: &'static str,
        work: impl std::future::Future<Output = KvResult<T>>,
        ok: impl FnOnce(&mut R, T),
    ) -> Result<Response<R>, Status> {
        let start = Instant::now();
        let result = work.await;
        self.observe(method, start, &result);
        let mut resp = R::default();
        match result {
            Ok(value) => ok(&mut resp, value),
            Err(e) => resp.fail(e)?,
        }
        Ok(Response::new(resp))
    }
}

#[tonic::async_trait]
impl<EK: KvEngine> Tikv for KvService<EK> {
    async fn raw_get(
        &self,
        request: Request<RawGetRequest>,
    ) -> Result<Response<RawGetResponse>, Status> {
        let work = self.do_get(request.get_ref());
        self.handle(
            "raw_get",
            work,
            |resp: &mut RawGetResponse, value| match value {
                Some(value) => resp.value = value,
                None => resp.not_found = true,
            },
        )
        .await
    }

    async fn raw_batch_get(
        &self,
        request: Request<RawBatchGetRequest>,
    ) -> Result<Response<RawBatchGetResponse>, Status> {
        let work = self.do_batch_get(request.get_ref());
        self.handle(
            "raw_batch_get",
            work,
            |resp: &mut RawBatchGetResponse, pairs| resp.pairs = pairs,
        )
        .await
    }

    async fn raw_put(
        &self,
        request: Request<RawPutRequest>,
    ) -> Result<Response<RawPutResponse>, Status> {
        let (this, req) = (self.clone(), request.into_inner());
        let work = detached(async move { this.do_put(&req).await });
        self.handle("raw_put", work, |_: &mut RawPutResponse, ()| {})
            .await
    }

    async fn raw_batch_put(
        &self,
        request: Request<RawBatchPutRequest>,
    ) -> Result<Response<RawBatchPutResponse>, Status> {
        let (this, req) = (self.clone(), request.into_inner());
        let work = detached(async move { this.do_batch_put(&req).await });
        self.handle("raw_batch_put", work, |_: &mut RawBatchPutResponse, ()| {})
            .await
    }

    async fn raw_delete(
        &self,
        request: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        let (this, req) = (self.clone(), request.into_inner());
        let work = detached(async move {
            let keys = std::slice::from_ref(&req.key);
            this.do_delete(req.context.as_ref(), &req.cf, keys, req.for_cas)
                .await
        });
        self.handle("raw_delete", work, |_: &mut RawDeleteResponse, ()| {})
            .await
    }

    async fn raw_batch_delete(
        &self,
        request: Request<RawBatchDeleteRequest>,
    ) -> Result<Response<RawBatchDeleteResponse>, Status> {
        let (this, req) = (self.clone(), request.into_inner());
        let work = detached(async move {
            this.do_delete(req.context.as_ref(), &req.cf, &req.keys, req.for_cas)
                .await
        });
        self.handle(
            "raw_batch_delete",
            work,
            |_: &mut RawBatchDeleteResponse, ()| {},
        )
        .await
    }

    async fn raw_scan(
        &self,
        request: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        let work = self.do_scan(request.get_ref());
        self.handle("raw_scan", work, |resp: &mut RawScanResponse, kvs| {
            resp.kvs = kvs
        })
        .await
    }

    async fn raw_delete_range(
        &self,
        request: Request<RawDeleteRangeRequest>,
    ) -> Result<Response<RawDeleteRangeResponse>, Status> {
        let work = self.do_delete_range(request.get_ref());
        self.handle(
            "raw_delete_range",
            work,
            |_: &mut RawDeleteRangeResponse, ()| {},
        )
        .await
    }

    async fn raw_batch_scan(
        &self,
        request: Request<RawBatchScanRequest>,
    ) -> Result<Response<RawBatchScanResponse>, Status> {
        let work = self.do_batch_scan(request.get_ref());
        self.handle(
            "raw_batch_scan",
            work,
            |resp: &mut RawBatchScanResponse, kvs| resp.kvs = kvs,
        )
        .await
    }

    async fn raw_get_key_ttl(
        &self,
        request: Request<RawGetKeyTtlRequest>,
    ) -> Result<Response<RawGetKeyTtlResponse>, Status> {
        let work = self.do_get_key_ttl(request.get_ref());
        self.handle(
            "raw_get_key_ttl",
            work,
            |resp: &mut RawGetKeyTtlResponse, ttl| match ttl {
                Some(ttl) => resp.ttl = ttl,
                None => resp.not_found = true,
            },
        )
        .await
    }

    async fn raw_compare_and_swap(
        &self,
        request: Request<RawCasRequest>,
    ) -> Result<Response<RawCasResponse>, Status> {
        let (this, req) = (self.clone(), request.into_inner());
        let work = detached(async move { this.do_cas(&req).await });
        self.handle(
            "raw_compare_and_swap",
            work,
            |resp: &mut RawCasResponse, (succeed, previous)| {
                resp.succeed = succeed;
                resp.previous_not_exist = previous.is_none();
                resp.previous_value = previous.unwrap_or_default();
            },
        )
        .await
    }

    async fn raw_checksum(
        &self,
        _request: Request<RawChecksumRequest>,
    ) -> Result<Response<RawChecksumResponse>, Status> {
        Ok(Response::new(RawChecksumResponse {
            error: "RawChecksum is not supported by regionstore".into(),
            ..Default::default()
        }))
    }

    async fn kv_get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.kv_get_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_scan(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<ScanResponse>, Status> {
        self.kv_scan_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_prewrite(
        &self,
        request: Request<PrewriteRequest>,
    ) -> Result<Response<PrewriteResponse>, Status> {
        self.kv_prewrite_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_pessimistic_lock(
        &self,
        request: Request<PessimisticLockRequest>,
    ) -> Result<Response<PessimisticLockResponse>, Status> {
        self.kv_pessimistic_lock_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_pessimistic_rollback(
        &self,
        request: Request<PessimisticRollbackRequest>,
    ) -> Result<Response<PessimisticRollbackResponse>, Status> {
        self.kv_pessimistic_rollback_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_txn_heart_beat(
        &self,
        request: Request<TxnHeartBeatRequest>,
    ) -> Result<Response<TxnHeartBeatResponse>, Status> {
        self.kv_txn_heart_beat_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_check_txn_status(
        &self,
        request: Request<CheckTxnStatusRequest>,
    ) -> Result<Response<CheckTxnStatusResponse>, Status> {
        self.kv_check_txn_status_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_check_secondary_locks(
        &self,
        request: Request<CheckSecondaryLocksRequest>,
    ) -> Result<Response<CheckSecondaryLocksResponse>, Status> {
        self.kv_check_secondary_locks_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        self.kv_commit_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_cleanup(
        &self,
        request: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        self.kv_cleanup_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        self.kv_batch_get_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_batch_rollback(
        &self,
        request: Request<BatchRollbackRequest>,
    ) -> Result<Response<BatchRollbackResponse>, Status> {
        self.kv_batch_rollback_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_scan_lock(
        &self,
        request: Request<ScanLockRequest>,
    ) -> Result<Response<ScanLockResponse>, Status> {
        self.kv_scan_lock_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_resolve_lock(
        &self,
        request: Request<ResolveLockRequest>,
    ) -> Result<Response<ResolveLockResponse>, Status> {
        self.kv_resolve_lock_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.kv_delete_range_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn unsafe_destroy_range(
        &self,
        request: Request<UnsafeDestroyRangeRequest>,
    ) -> Result<Response<UnsafeDestroyRangeResponse>, Status> {
        self.unsafe_destroy_range_impl(request.into_inner())
            .await
            .map(Response::new)
    }

    type BatchCommandsStream = crate::batch_commands::AnswerStream;

    async fn batch_commands(
        &self,
        request: Request<tonic::Streaming<proto::tikvpb::BatchCommandsRequest>>,
    ) -> Result<Response<Self::BatchCommandsStream>, Status> {
        Ok(Response::new(crate::batch_commands::serve(
            self.clone(),
            request.into_inner(),
        )))
    }
}
