//! The raw methods of TiKV's `tikvpb.Tikv`, served over the store's embedded API.
//!
//! Region errors (NotLeader, EpochNotMatch with the current regions, KeyNotInRegion, ...)
//! travel in `region_error` as a TiKV client expects; anything else is a clear message in the
//! response's `error` string, or, for responses that have none, an INVALID_ARGUMENT /
//! INTERNAL status. Every bound is checked before anything is proposed.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use engine::{KvEngine, CF_DEFAULT, DATA_CFS};
use proto::errorpb;
use proto::kvrpcpb::*;
use proto::tikvpb::tikv_server::Tikv;
use raftstore::router::RegionSnapshot;
use raftstore::{Modify, StoreApi};
use tonic::{Request, Response, Status};

use crate::metrics::METRICS;
use crate::Config;

/// Latches serialising compare-and-swap with other atomic writes to the same key on this
/// store (the region leader), so the read and the write of a CAS see no write in between.
const LATCHES: usize = 1024;

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

type KvResult<T> = std::result::Result<T, KvError>;

fn invalid(msg: String) -> KvError {
    KvError::Invalid(msg)
}

/// Serves raw KV requests for one store.
pub struct KvService<EK: KvEngine> {
    api: StoreApi<EK>,
    cfg: Config,
    latches: Vec<tokio::sync::Mutex<()>>,
}

impl<EK: KvEngine> KvService<EK> {
    pub fn new(api: StoreApi<EK>, cfg: Config) -> KvService<EK> {
        KvService {
            // A full mailbox is waited on here, asynchronously, not on the runtime's threads.
            api: api.without_mailbox_wait(),
            cfg,
            latches: (0..LATCHES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn context(&self, ctx: Option<&Context>) -> KvResult<Context> {
        let ctx = ctx.ok_or_else(|| invalid("request without a context".into()))?;
        if ctx.api_version != ApiVersion::V1 as i32 {
            return Err(invalid(format!(
                "API version {} is not supported: regionstore serves API V1 (raw keys as \
                 given, no TTL)",
                ctx.api_version
            )));
        }
        Ok(ctx.clone())
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

    fn key(&self, key: &[u8]) -> KvResult<()> {
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
        Ok(())
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
        if ttl != 0 {
            return Err(invalid(
                "TTL is not supported: send ttl = 0 (keys never expire)".into(),
            ));
        }
        Ok(())
    }

    fn latch_index(cf: &str, key: &[u8]) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        cf.hash(&mut h);
        key.hash(&mut h);
        (h.finish() % LATCHES as u64) as usize
    }

    /// Holds the latches of `keys` (in index order, so two holders never wait on each other).
    async fn latch<'a>(
        &'a self,
        cf: &str,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<tokio::sync::MutexGuard<'a, ()>> {
        let indexes: BTreeSet<usize> = keys.map(|k| Self::latch_index(cf, k)).collect();
        let mut guards = Vec::with_capacity(indexes.len());
        for i in indexes {
            guards.push(self.latches[i].lock().await);
        }
        guards
    }

    /// Runs `call` again while it answers ServerIsBusy (nothing proposed: a full mailbox or
    /// too much uncommitted), pausing between tries, for up to `mailbox-full-wait-ms`.
    async fn busy_retry<T, F, Fut>(&self, mut call: F) -> KvResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = raftstore::Result<T>>,
    {
        let start = Instant::now();
        let wait = self.api.mailbox_full_wait();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match call().await {
                Err(raftstore::Error::ServerIsBusy { .. }) if start.elapsed() + pause < wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                other => return Ok(other?),
            }
        }
    }

    async fn snapshot(&self, ctx: &Context) -> KvResult<RegionSnapshot<EK::Snapshot>> {
        self.busy_retry(|| self.api.snapshot(ctx)).await
    }

    async fn write(&self, ctx: &Context, modifies: Vec<Modify>) -> KvResult<()> {
        if modifies.is_empty() {
            return Ok(());
        }
        self.busy_retry(|| self.api.write(ctx, modifies.clone()))
            .await
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

    fn scan_region(
        snap: &RegionSnapshot<EK::Snapshot>,
        cf: &str,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
        key_only: bool,
        reverse: bool,
    ) -> KvResult<Vec<KvPair>> {
        let pairs = snap.scan_cf(cf, lower, upper, limit, reverse)?;
        Ok(pairs
            .into_iter()
            .map(|(key, value)| KvPair {
                error: None,
                key,
                value: if key_only { Vec::new() } else { value },
            })
            .collect())
    }

    async fn do_get(&self, req: &RawGetRequest) -> KvResult<Option<Vec<u8>>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        self.key(&req.key)?;
        let snap = self.snapshot(&ctx).await?;
        Ok(snap.get_cf(&cf, &req.key)?)
    }

    async fn do_batch_get(&self, req: &RawBatchGetRequest) -> KvResult<Vec<KvPair>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        self.batch("keys", req.keys.len())?;
        for key in &req.keys {
            self.key(key)?;
        }
        let snap = self.snapshot(&ctx).await?;
        let keys = req.keys.clone();
        let pairs = Self::read(snap, move |snap| {
            let mut pairs = Vec::new();
            for key in keys {
                if let Some(value) = snap.get_cf(&cf, &key)? {
                    pairs.push(KvPair {
                        error: None,
                        key,
                        value,
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
        self.key(&req.key)?;
        self.value(&req.value)?;
        self.ttl(req.ttl)?;
        let modify = Modify::Put {
            cf: cf.clone(),
            key: req.key.clone(),
            value: req.value.clone(),
        };
        let _latch = if req.for_cas {
            self.latch(&cf, std::iter::once(req.key.as_slice())).await
        } else {
            Vec::new()
        };
        self.write(&ctx, vec![modify]).await
    }

    async fn do_batch_put(&self, req: &RawBatchPutRequest) -> KvResult<()> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        self.batch("pairs", req.pairs.len())?;
        #[allow(deprecated)] // Old clients still send the single TTL.
        let ttl = req.ttl;
        self.ttl(ttl)?;
        for ttl in &req.ttls {
            self.ttl(*ttl)?;
        }
        let mut modifies = Vec::with_capacity(req.pairs.len());
        for pair in &req.pairs {
            self.key(&pair.key)?;
            self.value(&pair.value)?;
            modifies.push(Modify::Put {
                cf: cf.clone(),
                key: pair.key.clone(),
                value: pair.value.clone(),
            });
        }
        let _latch = if req.for_cas {
            self.latch(&cf, req.pairs.iter().map(|p| p.key.as_slice()))
                .await
        } else {
            Vec::new()
        };
        self.write(&ctx, modifies).await
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
        let mut modifies = Vec::with_capacity(keys.len());
        for key in keys {
            self.key(key)?;
            modifies.push(Modify::Delete {
                cf: cf.clone(),
                key: key.clone(),
            });
        }
        let _latch = if for_cas {
            self.latch(&cf, keys.iter().map(|k| k.as_slice())).await
        } else {
            Vec::new()
        };
        self.write(&ctx, modifies).await
    }

    async fn do_delete_range(&self, req: &RawDeleteRangeRequest) -> KvResult<()> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        if req.start_key.len() > self.cfg.max_key_size || req.end_key.len() > self.cfg.max_key_size
        {
            return Err(invalid(format!(
                "range bound over the key limit of {} bytes",
                self.cfg.max_key_size
            )));
        }
        if !req.end_key.is_empty() && req.start_key >= req.end_key {
            return Err(invalid(
                "delete range: start key is not below the end key".into(),
            ));
        }
        self.write(
            &ctx,
            vec![Modify::DeleteRange {
                cf,
                start: req.start_key.clone(),
                end: req.end_key.clone(),
            }],
        )
        .await
    }

    async fn do_scan(&self, req: &RawScanRequest) -> KvResult<Vec<KvPair>> {
        let ctx = self.context(req.context.as_ref())?;
        let cf = self.cf(&req.cf)?;
        let limit = req.limit as usize;
        self.scan_limit(limit)?;
        let snap = self.snapshot(&ctx).await?;
        // A reverse scan reads [end_key, start_key) from the top (TiKV's convention). Either
        // way the range is clipped to the region: clients send the end unclipped.
        let (lower, upper) = if req.reverse {
            (&req.end_key, &req.start_key)
        } else {
            if !engine::keys::region_contains(snap.region(), &req.start_key) {
                return Err(raftstore::Error::KeyNotInRegion {
                    key: req.start_key.clone(),
                    region_id: snap.region().id,
                    start_key: snap.region().start_key.clone(),
                    end_key: snap.region().end_key.clone(),
                }
                .into());
            }
            (&req.start_key, &req.end_key)
        };
        let (lower, upper, key_only, reverse) =
            (lower.clone(), upper.clone(), req.key_only, req.reverse);
        let kvs = Self::read(snap, move |snap| {
            Self::scan_region(snap, &cf, &lower, &upper, limit, key_only, reverse)
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
        let snap = self.snapshot(&ctx).await?;
        let (ranges, key_only, reverse) = (req.ranges.clone(), req.key_only, req.reverse);
        let max_bytes = self.cfg.grpc_max_message_size / 2;
        let kvs = Self::read(snap, move |snap| {
            let mut kvs = Vec::new();
            let mut bytes = 0;
            for range in &ranges {
                let (lower, upper) = if reverse {
                    (&range.end_key, &range.start_key)
                } else {
                    (&range.start_key, &range.end_key)
                };
                let found = Self::scan_region(snap, &cf, lower, upper, limit, key_only, reverse)?;
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
        self.key(&req.key)?;
        self.value(&req.value)?;
        self.ttl(req.ttl)?;
        let _latch = self.latch(&cf, std::iter::once(req.key.as_slice())).await;
        let snap = self.snapshot(&ctx).await?;
        let current = snap.get_cf(&cf, &req.key)?;
        let matches = match &current {
            None => req.previous_not_exist,
            Some(v) => !req.previous_not_exist && *v == req.previous_value,
        };
        if matches {
            // Proposed only in the term it read in (StaleCommand otherwise, nothing written):
            // a leader in between could have changed the key without this store's latch.
            let mut ctx = ctx;
            ctx.term = snap.term();
            self.write(
                &ctx,
                vec![Modify::Put {
                    cf,
                    key: req.key.clone(),
                    value: req.value.clone(),
                }],
            )
            .await?;
        }
        Ok((matches, current))
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
    RawDeleteResponse, RawBatchDeleteResponse, RawDeleteRangeResponse, RawCasResponse);
kv_response!(region_error_only: RawBatchGetResponse, RawScanResponse, RawBatchScanResponse);

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
        let work = self.do_put(request.get_ref());
        self.handle("raw_put", work, |_: &mut RawPutResponse, ()| {})
            .await
    }

    async fn raw_batch_put(
        &self,
        request: Request<RawBatchPutRequest>,
    ) -> Result<Response<RawBatchPutResponse>, Status> {
        let work = self.do_batch_put(request.get_ref());
        self.handle("raw_batch_put", work, |_: &mut RawBatchPutResponse, ()| {})
            .await
    }

    async fn raw_delete(
        &self,
        request: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        let req = request.get_ref();
        let keys = std::slice::from_ref(&req.key);
        let work = self.do_delete(req.context.as_ref(), &req.cf, keys, req.for_cas);
        self.handle("raw_delete", work, |_: &mut RawDeleteResponse, ()| {})
            .await
    }

    async fn raw_batch_delete(
        &self,
        request: Request<RawBatchDeleteRequest>,
    ) -> Result<Response<RawBatchDeleteResponse>, Status> {
        let req = request.get_ref();
        let work = self.do_delete(req.context.as_ref(), &req.cf, &req.keys, req.for_cas);
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
        _request: Request<RawGetKeyTtlRequest>,
    ) -> Result<Response<RawGetKeyTtlResponse>, Status> {
        Ok(Response::new(RawGetKeyTtlResponse {
            error: "TTL is not supported: regionstore keys never expire".into(),
            ..Default::default()
        }))
    }

    async fn raw_compare_and_swap(
        &self,
        request: Request<RawCasRequest>,
    ) -> Result<Response<RawCasResponse>, Status> {
        let work = self.do_cas(request.get_ref());
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
}
