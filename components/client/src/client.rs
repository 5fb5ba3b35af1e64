//! The client: raw KV operations routed by the region cache, and the administrator's view.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::stream::{self, StreamExt};
use proto::kvrpcpb;
use proto::metapb;
use proto::pdpb::{self, RequestHeader};
use proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::error::{Error, KeyDisplay, Result};
use api_version::keyspace::KeyMode;

use crate::batch::{BatchConn, StreamConfig};
use crate::keyspace::Keyspace;
use crate::kv::{key_error, KvRequest, KvResponse, StoreConn};
use crate::net;
use crate::pd::{self, Pd, PdLeader, PdResponse};
use crate::region_cache::{describe, RegionCache, RegionErrorAction, Route};
use crate::retry::{Failure, RetryState};
use crate::shard::{self, KeyRange, Keys, Limits, Piece};

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A region with its leader as PD knows them.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionInfo {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
}

/// Regions asked of PD per `ScanRegions` call.
const SCAN_REGIONS_PAGE: i32 = 1024;

/// An async client of a regionstore cluster. Cheap to clone (clones share the caches,
/// connections and retry counter); `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: ClientConfig,
    /// Raw or transactional keys: a transactional client routes by encoded keys (region
    /// boundaries decoded) even without a keyspace, as tikv-client's does.
    mode: KeyMode,
    pd: Pd,
    /// Set once at connect when the config names a keyspace (API V2).
    keyspace: std::sync::OnceLock<Keyspace>,
    cache: RwLock<RegionCache>,
    stores: Mutex<StoreCache>,
    retries: AtomicU64,
    pub(crate) tso: crate::tso::TsoBatcher,
}

/// Store addresses from PD, and one channel per address shared by every request to it.
#[derive(Default)]
struct StoreCache {
    addresses: HashMap<u64, String>,
    channels: HashMap<String, Channel>,
    /// One BatchCommands stream per address, opened again after it fails.
    batches: HashMap<String, BatchConn>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("cluster_id", &self.inner.pd.cluster_id())
            .field("pd_leader", &self.inner.pd.leader().url)
            .field("cached_regions", &self.inner.cache().len())
            .field("retries", &self.retries())
            .finish()
    }
}

impl Client {
    /// Connects to the PD cluster: `GetMembers` on the endpoints in turn (`host:port` or
    /// `http://host:port`) finds the cluster id and the leader. Stores are dialled lazily.
    pub async fn connect(pd_endpoints: &[String], config: ClientConfig) -> Result<Client> {
        Client::connect_mode(pd_endpoints, config, KeyMode::Raw).await
    }

    pub(crate) async fn connect_mode(
        pd_endpoints: &[String],
        config: ClientConfig,
        mode: KeyMode,
    ) -> Result<Client> {
        config.validate()?;
        let pd = Pd::connect(
            pd_endpoints,
            config.request_timeout,
            config.max_message_size,
            config.logger.clone(),
        )
        .await?;
        let name = config.keyspace.clone();
        let client = Client {
            inner: Arc::new(Inner {
                config,
                mode,
                pd,
                keyspace: std::sync::OnceLock::new(),
                cache: RwLock::new(RegionCache::default()),
                stores: Mutex::new(StoreCache::default()),
                retries: AtomicU64::new(0),
                tso: Default::default(),
            }),
        };
        if let Some(name) = name {
            let inner = &client.inner;
            let mut state = inner.retry_state("load_keyspace");
            let resp = inner
                .pd_call(
                    &mut state,
                    "LoadKeyspace",
                    true,
                    |leader, header, timeout| {
                        let mut keyspace = leader.keyspace.clone();
                        let req = proto::keyspacepb::LoadKeyspaceRequest {
                            header,
                            name: name.clone(),
                        };
                        async move { keyspace.load_keyspace(net::request(req, timeout)).await }
                    },
                )
                .await?;
            let meta = resp.keyspace.ok_or_else(|| Error::NotFound {
                what: format!("keyspace {name:?}"),
            })?;
            if meta.id >= api_version::keyspace::MAX_KEYSPACE_ID {
                return Err(Error::NotFound {
                    what: format!(
                        "keyspace {name:?} with a usable id (PD answered {})",
                        meta.id
                    ),
                });
            }
            let _ = inner.keyspace.set(Keyspace::new(meta.id, mode));
        }
        Ok(client)
    }

    /// The id of the keyspace this client works in (`ClientConfig::keyspace`), if any.
    pub fn keyspace_id(&self) -> Option<u32> {
        self.inner.keyspace.get().map(|ks| ks.id)
    }

    /// The key a request carries for `key`: prefixed with the keyspace, if any.
    pub(crate) fn req_key(&self, key: impl Into<Vec<u8>>) -> Vec<u8> {
        let key = key.into();
        match self.inner.keyspace.get() {
            Some(ks) => ks.key(&key),
            None => key,
        }
    }

    /// The range a request covers for `[start, end)` (empty `end`: to the end of the key
    /// space, or of the keyspace).
    fn req_range(&self, start: Vec<u8>, end: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        match self.inner.keyspace.get() {
            Some(ks) => ks.range(&start, &end),
            None => (start, end),
        }
    }

    /// The caller's form of keys a store returned.
    fn user_pairs(&self, mut pairs: Vec<KvPair>) -> Vec<KvPair> {
        if let Some(ks) = self.inner.keyspace.get() {
            for pair in &mut pairs {
                pair.0 = ks.user_key(std::mem::take(&mut pair.0));
            }
        }
        pairs
    }

    /// [`Client::req_range`], for the transaction module.
    pub(crate) fn req_range_pub(&self, start: Vec<u8>, end: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        self.req_range(start, end)
    }

    /// The caller's key for a key a store returned (the keyspace prefix stripped).
    pub(crate) fn user_key(&self, key: Vec<u8>) -> Vec<u8> {
        match self.inner.keyspace.get() {
            Some(ks) => ks.user_key(key),
            None => key,
        }
    }

    pub(crate) fn inner_config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The id of the cluster, as PD reported it.
    pub fn cluster_id(&self) -> u64 {
        self.inner.pd.cluster_id()
    }

    /// Requests retried so far by this client and its clones (region errors, transport
    /// failures, PD lookups), for benches and diagnostics.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Requests waiting, over every store, for a `BatchCommands` stream to take them (bounded
    /// per store by [`ClientConfig::batch_commands_queue_capacity`]; callers waiting for room
    /// beyond it are not counted).
    pub fn batch_commands_queued(&self) -> usize {
        self.inner
            .stores()
            .batches
            .values()
            .map(BatchConn::queued)
            .sum()
    }

    /// The value of `key`, or `None` if it has none.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let key = self.req_key(key);
        let resp = self
            .inner
            .single("get", &key, true, || kvrpcpb::RawGetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        Ok((!resp.not_found).then_some(resp.value))
    }

    /// The pairs of the keys that have a value, sorted by key; keys without one are absent.
    /// Keys are grouped by region, one request (at most `max_batch_keys` keys) per group.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Vec<u8>>>,
    ) -> Result<Vec<KvPair>> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| self.req_key(k)).collect();
        let groups = self
            .inner
            .sharded(
                "batch_get",
                Keys(keys),
                |piece: &Keys<Vec<u8>>| kvrpcpb::RawBatchGetRequest {
                    keys: piece.0.clone(),
                    ..Default::default()
                },
                |resp: kvrpcpb::RawBatchGetResponse, route: &Route| {
                    check_pairs("RawBatchGet", route, &resp.pairs)?;
                    Ok(resp.pairs)
                },
            )
            .await?;
        let mut pairs: Vec<KvPair> = groups
            .into_iter()
            .flatten()
            .map(|p| (p.key, p.value))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(self.user_pairs(pairs))
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        let (key, value) = (self.req_key(key), value.into());
        self.inner
            .single("put", &key, true, || kvrpcpb::RawPutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Sets `key` to `value` for `ttl_secs` seconds (0: for ever). Needs a cluster of API
    /// version 1ttl or 2; others refuse a TTL.
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        ttl_secs: u64,
    ) -> Result<()> {
        let (key, value) = (self.req_key(key), value.into());
        self.inner
            .single("put_with_ttl", &key, true, || kvrpcpb::RawPutRequest {
                key: key.clone(),
                value: value.clone(),
                ttl: ttl_secs,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Seconds `key` has left to live: `None` if it has no value (or it expired), `Some(0)`
    /// if it never expires. Needs a cluster of API version 1ttl or 2.
    pub async fn ttl(&self, key: impl Into<Vec<u8>>) -> Result<Option<u64>> {
        let key = self.req_key(key);
        let resp = self
            .inner
            .single("ttl", &key, true, || kvrpcpb::RawGetKeyTtlRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        Ok((!resp.not_found).then_some(resp.ttl))
    }

    /// Sets every pair: one request per region, split into requests of at most
    /// `max_batch_keys` pairs (and half `max_message_size` bytes). Atomic per request only:
    /// on error, some pairs may have been written. A key given twice gets its last value.
    pub async fn batch_put(
        &self,
        pairs: impl IntoIterator<Item = (impl Into<Vec<u8>>, impl Into<Vec<u8>>)>,
    ) -> Result<()> {
        // The last value of a key wins: a key twice could otherwise land in two requests
        // that run, or retry, in either order.
        let mut last: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        for (k, v) in pairs {
            last.insert(self.req_key(k), v.into());
        }
        let pairs: Vec<KvPair> = last.into_iter().collect();
        self.inner
            .sharded(
                "batch_put",
                Keys(pairs),
                |piece: &Keys<KvPair>| kvrpcpb::RawBatchPutRequest {
                    pairs: piece
                        .0
                        .iter()
                        .map(|(key, value)| kvrpcpb::KvPair {
                            key: key.clone(),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
                |_: kvrpcpb::RawBatchPutResponse, _: &Route| Ok(()),
            )
            .await?;
        Ok(())
    }

    /// Deletes `key` (no error if it has no value).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<()> {
        let key = self.req_key(key);
        self.inner
            .single("delete", &key, true, || kvrpcpb::RawDeleteRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Deletes every key given, grouped by region like [`Client::batch_put`].
    pub async fn batch_delete(
        &self,
        keys: impl IntoIterator<Item = impl Into<Vec<u8>>>,
    ) -> Result<()> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| self.req_key(k)).collect();
        self.inner
            .sharded(
                "batch_delete",
                Keys(keys),
                |piece: &Keys<Vec<u8>>| kvrpcpb::RawBatchDeleteRequest {
                    keys: piece.0.clone(),
                    ..Default::default()
                },
                |_: kvrpcpb::RawBatchDeleteResponse, _: &Route| Ok(()),
            )
            .await?;
        Ok(())
    }

    /// Deletes every key in `[start, end)`; an empty `end` means the end of the key space.
    /// One request per region, each clipped to its region.
    pub async fn delete_range(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> Result<()> {
        let (start, end) = (start.into(), end.into());
        if check_range("delete_range", &start, &end)? {
            return Ok(());
        }
        let (start, end) = self.req_range(start, end);
        let range = KeyRange { start, end };
        self.inner
            .sharded(
                "delete_range",
                range,
                |piece: &KeyRange| kvrpcpb::RawDeleteRangeRequest {
                    start_key: piece.start.clone(),
                    end_key: piece.end.clone(),
                    ..Default::default()
                },
                |_: kvrpcpb::RawDeleteRangeResponse, _: &Route| Ok(()),
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` pairs of `[start, end)` in ascending key order (empty `end`: no end),
    /// region after region. With `key_only` the values are left empty.
    pub async fn scan(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
        limit: u32,
        key_only: bool,
    ) -> Result<Vec<KvPair>> {
        let (start, end) = (start.into(), end.into());
        if limit == 0 || check_range("scan", &start, &end)? {
            return Ok(Vec::new());
        }
        let (start, end) = self.req_range(start, end);
        let pairs = self.inner.scan(start, end, limit, key_only, false).await?;
        Ok(self.user_pairs(pairs))
    }

    /// Up to `limit` pairs of `[start, end)` in descending key order (empty `end`: no end),
    /// starting from the largest key below `end`.
    pub async fn scan_reverse(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
        limit: u32,
        key_only: bool,
    ) -> Result<Vec<KvPair>> {
        let (start, end) = (start.into(), end.into());
        if limit == 0 || check_range("scan_reverse", &start, &end)? {
            return Ok(Vec::new());
        }
        let (start, end) = self.req_range(start, end);
        let pairs = self.inner.scan(start, end, limit, key_only, true).await?;
        Ok(self.user_pairs(pairs))
    }

    /// Sets `key` to `new` if its value is `previous` (`None`: if it has no value). Returns
    /// the value before the call and whether the swap happened. Not retried after a failure
    /// that may have reached the store ([`Error::Undetermined`]).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        previous: Option<Vec<u8>>,
        new: impl Into<Vec<u8>>,
    ) -> Result<(Option<Vec<u8>>, bool)> {
        let (key, new) = (self.req_key(key), new.into());
        let resp = self
            .inner
            .single("compare_and_swap", &key, false, || kvrpcpb::RawCasRequest {
                key: key.clone(),
                value: new.clone(),
                previous_not_exist: previous.is_none(),
                previous_value: previous.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await?;
        let before = (!resp.previous_not_exist).then_some(resp.previous_value);
        Ok((before, resp.succeed))
    }

    /// Every region with its leader, in key order (`ScanRegions`, paged). Refreshes the cache.
    /// With a keyspace the boundaries come back decoded (keyspace-prefixed keys).
    pub async fn regions(&self) -> Result<Vec<RegionInfo>> {
        let inner = &self.inner;
        let mut state = inner.retry_state("regions");
        let regions = inner.pd_scan_regions(b"", b"", &mut state).await?;
        let mut cache = inner.cache_mut();
        for info in &regions {
            cache.insert(info.region.clone(), info.leader);
        }
        Ok(regions)
    }

    /// Every store PD knows, tombstones included (`GetAllStores`).
    pub async fn stores(&self) -> Result<Vec<metapb::Store>> {
        let inner = &self.inner;
        let mut state = inner.retry_state("stores");
        let resp = inner
            .pd_call(
                &mut state,
                "GetAllStores",
                true,
                |leader, header, timeout| {
                    let mut pd = leader.pd.clone();
                    let req = pdpb::GetAllStoresRequest {
                        header,
                        exclude_tombstone_stores: false,
                    };
                    async move { pd.get_all_stores(net::request(req, timeout)).await }
                },
            )
            .await?;
        Ok(resp.stores)
    }

    /// The region holding `key` as PD knows it now (not from the cache).
    /// With a keyspace, `key` is the caller's, and the region's boundaries are decoded.
    pub async fn region_by_key(&self, key: impl Into<Vec<u8>>) -> Result<Option<RegionInfo>> {
        let key = self.req_key(key);
        let inner = &self.inner;
        let mut state = inner.retry_state("region_by_key");
        let info = inner.pd_get_region(&key, &mut state).await?;
        if let Some(info) = &info {
            inner.cache_mut().insert(info.region.clone(), info.leader);
        }
        Ok(info)
    }
}

/// Checks a `[start, end)` argument; true when it is empty (nothing to do).
fn check_range(op: &'static str, start: &[u8], end: &[u8]) -> Result<bool> {
    if end.is_empty() {
        return Ok(false);
    }
    if start > end {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "start {} is after end {}",
                KeyDisplay(start),
                KeyDisplay(end)
            ),
        });
    }
    Ok(start == end)
}

fn check_pairs(method: &'static str, route: &Route, pairs: &[kvrpcpb::KvPair]) -> Result<()> {
    match key_error(pairs) {
        Some(message) => Err(Error::Server {
            method,
            region_id: route.region_id(),
            message,
        }),
        None => Ok(()),
    }
}

/// The regions of a `ScanRegions` answer: the `regions` form if the server filled it, else
/// the legacy parallel `region_metas`/`leaders` lists. A leader with id 0 means none.
/// A store refused an answer as too large for one message (RESOURCE_EXHAUSTED): asking
/// for fewer pairs helps.
fn too_large(failure: &Failure) -> bool {
    matches!(failure, Failure::Fatal(Error::Grpc { status, .. })
        if status.code() == tonic::Code::ResourceExhausted)
}

/// Most pairs asked of a store in one RawScan: what stores (and tikv-client) accept.
const MAX_SCAN_PER_REQUEST: u32 = 10240;

fn scan_regions_infos(resp: pdpb::ScanRegionsResponse) -> Vec<RegionInfo> {
    let no_zero = |l: Option<metapb::Peer>| l.filter(|l| l.id != 0);
    if !resp.regions.is_empty() {
        return resp
            .regions
            .into_iter()
            .filter_map(|r| {
                Some(RegionInfo {
                    region: r.region?,
                    leader: no_zero(r.leader),
                })
            })
            .collect();
    }
    let mut leaders = resp.leaders.into_iter();
    resp.region_metas
        .into_iter()
        .map(|region| RegionInfo {
            region,
            leader: no_zero(leaders.next()),
        })
        .collect()
}

impl Inner {
    fn cache(&self) -> RwLockReadGuard<'_, RegionCache> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than a stale route, which requests correct anyway.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn cache_mut(&self) -> RwLockWriteGuard<'_, RegionCache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn stores(&self) -> std::sync::MutexGuard<'_, StoreCache> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn logger(&self) -> &slog::Logger {
        &self.config.logger
    }

    pub(crate) fn retry_state(&self, op: &'static str) -> RetryState<'_> {
        RetryState::new(op, &self.config, &self.retries)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_keys: self.config.max_batch_keys,
            max_bytes: self.config.max_batch_bytes(),
        }
    }

    // ---- PD ----

    /// One PD RPC against the current leader; transport failures find the leader again and
    /// retry (if `idempotent`, or if the request certainly never left), within the budget of
    /// `state`. A header error fails at once.
    pub(crate) async fn pd_call<T, F, Fut>(
        &self,
        state: &mut RetryState<'_>,
        method: &'static str,
        idempotent: bool,
        call: F,
    ) -> Result<T>
    where
        T: PdResponse,
        F: Fn(Arc<PdLeader>, Option<RequestHeader>, std::time::Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.config.request_timeout;
        loop {
            let leader = self.pd.leader();
            let outcome =
                tokio::time::timeout(timeout, call(leader.clone(), self.pd.header(), timeout))
                    .await;
            let failure = match outcome {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    pd::check_header(method, resp.header())?;
                    return Ok(resp);
                }
                Ok(Err(status)) if net::is_transport(&status) => Failure::Transport {
                    maybe_sent: !net::never_sent(&status),
                    cause: Error::Grpc {
                        method,
                        target: leader.url.clone(),
                        status: Box::new(status),
                    },
                },
                Ok(Err(status)) => {
                    return Err(Error::Grpc {
                        method,
                        target: leader.url.clone(),
                        status: Box::new(status),
                    })
                }
                Err(_) => Failure::Transport {
                    maybe_sent: true,
                    cause: Error::Timeout {
                        method,
                        target: leader.url.clone(),
                        timeout,
                    },
                },
            };
            self.pd.reconnect(&leader).await;
            let pause = state.admit(failure, idempotent)?;
            state.pause([pause]).await?;
        }
    }

    /// The region holding `key` according to PD; `None` if PD has none.
    async fn pd_get_region(
        &self,
        key: &[u8],
        state: &mut RetryState<'_>,
    ) -> Result<Option<RegionInfo>> {
        let pd_key;
        let key = if self.encoded_routing() {
            pd_key = Keyspace::to_pd(key);
            pd_key.as_slice()
        } else {
            key
        };
        let result = self
            .pd_call(state, "GetRegion", true, |leader, header, timeout| {
                let mut pd = leader.pd.clone();
                let req = pdpb::GetRegionRequest {
                    header,
                    region_key: key.to_vec(),
                    need_buckets: false,
                };
                async move { pd.get_region(net::request(req, timeout)).await }
            })
            .await;
        match result {
            Ok(resp) => resp
                .region
                .map(|region| {
                    Ok(RegionInfo {
                        region: self.cached_form(region)?,
                        leader: resp.leader.filter(|l| l.id != 0),
                    })
                })
                .transpose(),
            Err(e) if pd::is_region_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every region overlapping `[start, end)` (empty `end`: no end), page by page.
    async fn pd_scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        state: &mut RetryState<'_>,
    ) -> Result<Vec<RegionInfo>> {
        let mut out = Vec::new();
        // PD's table holds encoded keys under a keyspace: ask in its form, page in its form,
        // and decode what it answers.
        let (start, end) = if self.encoded_routing() {
            (Keyspace::to_pd(start), Keyspace::to_pd(end))
        } else {
            (start.to_vec(), end.to_vec())
        };
        let end = end.as_slice();
        let mut from = start;
        loop {
            let resp = self
                .pd_call(state, "ScanRegions", true, |leader, header, timeout| {
                    let mut pd = leader.pd.clone();
                    let req = pdpb::ScanRegionsRequest {
                        header,
                        start_key: from.clone(),
                        limit: SCAN_REGIONS_PAGE,
                        end_key: end.to_vec(),
                    };
                    async move { pd.scan_regions(net::request(req, timeout)).await }
                })
                .await?;
            let page = scan_regions_infos(resp);
            let full = page.len() >= SCAN_REGIONS_PAGE as usize;
            let Some(last_end) = page.last().map(|r| r.region.end_key.clone()) else {
                break;
            };
            out.extend(page);
            let done = !full
                || last_end.is_empty()
                || (!end.is_empty() && last_end.as_slice() >= end)
                // A page that does not move forward would loop forever.
                || last_end <= from;
            if done {
                break;
            }
            from = last_end;
        }
        out.into_iter()
            .map(|info| {
                Ok(RegionInfo {
                    region: self.cached_form(info.region)?,
                    leader: info.leader,
                })
            })
            .collect()
    }

    /// A region as PD or a store reported it, in the form the cache holds: boundaries decoded
    /// under a keyspace.
    fn cached_form(&self, region: metapb::Region) -> Result<metapb::Region> {
        if self.encoded_routing() {
            Keyspace::decode_region(region)
        } else {
            Ok(region)
        }
    }

    /// `count` consecutive timestamps from PD's oracle (`Tso`, one answer on its stream):
    /// the last of them. Callers batch through `Inner::tso` (tso.rs).
    pub(crate) async fn tso_batch(&self, count: u32) -> Result<u64> {
        let mut state = self.retry_state("tso");
        let resp = self
            .pd_call(&mut state, "Tso", true, |leader, header, timeout| {
                let mut pd = leader.pd.clone();
                let req = pdpb::TsoRequest {
                    header,
                    count,
                    dc_location: String::new(),
                };
                async move {
                    let mut answers = pd
                        .tso(net::request(futures::stream::iter([req]), timeout))
                        .await?
                        .into_inner();
                    match answers.message().await? {
                        Some(resp) => Ok(tonic::Response::new(resp)),
                        None => Err(tonic::Status::unavailable("the Tso stream ended early")),
                    }
                }
            })
            .await?;
        let bad = |reason: String| Error::BadResponse {
            method: "Tso",
            target: "PD".into(),
            reason,
        };
        let ts = resp.timestamp.ok_or_else(|| bad("no timestamp".into()))?;
        // The batch is the `count` timestamps up to this one: all must exist.
        if ts.physical < 0 || !(0..1 << 18).contains(&ts.logical) || resp.count != count {
            return Err(bad(format!(
                "timestamp {}/{} for {} of {count} asked",
                ts.physical, ts.logical, resp.count
            )));
        }
        Ok(((ts.physical as u64) << 18) | ts.logical as u64)
    }

    /// The cluster's GC safe point (0 before anyone set it).
    pub(crate) async fn gc_safe_point(&self) -> Result<u64> {
        let mut state = self.retry_state("gc_safe_point");
        let resp = self
            .pd_call(
                &mut state,
                "GetGCSafePoint",
                true,
                |leader, header, timeout| {
                    let mut pd = leader.pd.clone();
                    let req = pdpb::GetGcSafePointRequest { header };
                    async move { pd.get_gc_safe_point(net::request(req, timeout)).await }
                },
            )
            .await?;
        Ok(resp.safe_point)
    }

    /// Whether PD's table and the stores' region boundaries hold encoded keys for the keys
    /// this client sends: under a keyspace, and for transactional keys always.
    pub(crate) fn encoded_routing(&self) -> bool {
        self.keyspace.get().is_some() || self.mode == KeyMode::Txn
    }

    /// The cached route for `key`, asking PD on a miss.
    pub(crate) async fn locate(&self, key: &[u8], state: &mut RetryState<'_>) -> Result<Route> {
        loop {
            if let Some(route) = self.cache().locate(key) {
                return Ok(route);
            }
            if let Err(failure) = self.load_region(key, state).await {
                let pause = state.admit(failure, true)?;
                state.pause([pause]).await?;
            }
        }
    }

    /// Caches the region holding `key` from PD.
    pub(crate) async fn load_region(
        &self,
        key: &[u8],
        state: &mut RetryState<'_>,
    ) -> Result<(), Failure> {
        let unusable = |reason: String| Failure::Retry {
            cause: Error::NotFound { what: reason },
            now: false,
            hint: None,
        };
        let Some(info) = self.pd_get_region(key, state).await? else {
            return Err(unusable(format!(
                "PD knows no region holding key {}",
                KeyDisplay(key)
            )));
        };
        let region = &info.region;
        let holds = region.start_key.as_slice() <= key
            && (region.end_key.is_empty() || key < region.end_key.as_slice());
        if !holds {
            return Err(unusable(format!(
                "PD answered region {} for key {}, which it does not hold",
                region.id,
                KeyDisplay(key)
            )));
        }
        if !self.cache_mut().insert(info.region.clone(), info.leader) {
            return Err(unusable(format!("region {} has no peers", info.region.id)));
        }
        Ok(())
    }

    /// The cached route of the keys just below `upper` (empty: the last region), asking PD
    /// on a miss; `lower` bounds how far back a PD scan has to look.
    async fn locate_before(
        &self,
        upper: &[u8],
        lower: &[u8],
        state: &mut RetryState<'_>,
    ) -> Result<Route> {
        loop {
            if let Some(route) = self.cache().locate_before(upper) {
                return Ok(route);
            }
            if let Err(failure) = self.load_region_before(upper, lower, state).await {
                let pause = state.admit(failure, true)?;
                state.pause([pause]).await?;
            }
        }
    }

    async fn load_region_before(
        &self,
        upper: &[u8],
        lower: &[u8],
        state: &mut RetryState<'_>,
    ) -> Result<(), Failure> {
        // Usually `upper` is inside the region wanted.
        if !upper.is_empty() {
            if let Some(info) = self.pd_get_region(upper, state).await? {
                if info.region.start_key.as_slice() < upper {
                    self.cache_mut().insert(info.region, info.leader);
                    return Ok(());
                }
            }
        }
        // `upper` is a region's start (or the end of the key space): the region wanted ends
        // there. The pdpb subset has no "previous region" call, so scan up to it.
        let regions = self.pd_scan_regions(lower, upper, state).await?;
        {
            let mut cache = self.cache_mut();
            for info in regions {
                cache.insert(info.region, info.leader);
            }
        }
        if self.cache().locate_before(upper).is_some() {
            Ok(())
        } else {
            Err(Failure::Retry {
                cause: Error::NotFound {
                    what: format!("PD knows no region ending at {}", KeyDisplay(upper)),
                },
                now: false,
                hint: None,
            })
        }
    }

    // ---- stores ----

    /// A client for the store of `route.peer`: address from PD (cached), channel reused.
    async fn store_client(
        &self,
        route: &Route,
        state: &mut RetryState<'_>,
    ) -> Result<(StoreConn, String), Failure> {
        let store_id = route.peer.store_id;
        let cached = self.stores().addresses.get(&store_id).cloned();
        let address = match cached {
            Some(address) => address,
            None => match self.fetch_store_address(store_id, state).await {
                Ok(address) => address,
                Err(failure) => {
                    if matches!(failure, Failure::Transport { .. }) {
                        self.cache_mut().on_send_failure(route);
                    }
                    return Err(failure);
                }
            },
        };
        let channel = {
            let mut stores = self.stores();
            match stores.channels.get(&address) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = net::lazy_channel(&address, self.config.request_timeout)?;
                    stores.channels.insert(address.clone(), channel.clone());
                    channel
                }
            }
        };
        let unary = TikvClient::new(channel)
            .max_decoding_message_size(self.config.max_message_size)
            .max_encoding_message_size(self.config.max_message_size);
        let batch = if self.config.batch_commands {
            let mut stores = self.stores();
            match stores.batches.get(&address) {
                Some(conn) if conn.is_unsupported() => None,
                Some(conn) if !conn.is_closed() => Some(conn.clone()),
                _ => {
                    let conn = BatchConn::open(
                        unary.clone(),
                        StreamConfig {
                            max_message_size: self.config.max_message_size,
                            max_requests: self.config.batch_commands_max_requests,
                            max_shared_bytes: self.config.batch_commands_max_shared_bytes,
                            queue_capacity: self.config.batch_commands_queue_capacity,
                        },
                    );
                    stores.batches.insert(address.clone(), conn.clone());
                    Some(conn)
                }
            }
        } else {
            None
        };
        Ok((StoreConn { unary, batch }, address))
    }

    /// The URL of a store from PD. A store without an address, or gone, fails like an
    /// unreachable one: the request moves on to another peer.
    async fn fetch_store_address(
        &self,
        store_id: u64,
        state: &mut RetryState<'_>,
    ) -> Result<String, Failure> {
        let result = self
            .pd_call(state, "GetStore", true, |leader, header, timeout| {
                let mut pd = leader.pd.clone();
                let req = pdpb::GetStoreRequest { header, store_id };
                async move { pd.get_store(net::request(req, timeout)).await }
            })
            .await;
        let unusable = |what: String| Failure::Transport {
            cause: Error::NotFound { what },
            maybe_sent: false,
        };
        let store = match result {
            Ok(resp) => resp.store,
            Err(Error::Pd { kind, message, .. })
                if kind == pdpb::ErrorType::StoreTombstone.as_str_name() =>
            {
                return Err(unusable(format!(
                    "store {store_id} is a tombstone: {message}"
                )));
            }
            Err(e) => return Err(Failure::Fatal(e)),
        };
        let store = match store {
            Some(s) if s.state != metapb::StoreState::Tombstone as i32 => s,
            Some(_) => return Err(unusable(format!("store {store_id} is a tombstone"))),
            None => return Err(unusable(format!("PD knows no store {store_id}"))),
        };
        if store.address.is_empty() {
            return Err(unusable(format!("store {store_id} has no address")));
        }
        let url = net::endpoint_url(&store.address)?;
        self.stores().addresses.insert(store_id, url.clone());
        Ok(url)
    }

    /// The request could not reach `route.peer`: aim at another peer next time, and ask PD
    /// for the store's address again (it may have moved).
    fn on_send_failure(&self, route: &Route) {
        self.cache_mut().on_send_failure(route);
        self.stores().addresses.remove(&route.peer.store_id);
    }

    // ---- KV ----

    /// Sends one request to `route` and sorts out the answer: a region error updates the
    /// cache and becomes a retry (or a failure), an error string a failure.
    async fn send_to<R: KvRequest>(
        &self,
        route: &Route,
        conn: StoreConn,
        address: &str,
        mut req: R,
    ) -> Result<R::Response, Failure> {
        let mut ctx = route.context();
        if self.keyspace.get().is_some() {
            ctx.api_version = kvrpcpb::ApiVersion::V2 as i32;
        }
        req.set_context(ctx);
        let timeout = self.config.request_timeout;
        let status = match tokio::time::timeout(timeout, req.call(conn, timeout)).await {
            Ok(Ok(mut resp)) => {
                if let Some(mut err) = resp.take_region_error() {
                    if let Some(e) = err.epoch_not_match.as_mut() {
                        // In the cache's form; one that does not decode drops them all, and
                        // the cache asks PD instead.
                        let regions = std::mem::take(&mut e.current_regions);
                        e.current_regions = regions
                            .into_iter()
                            .map(|r| self.cached_form(r))
                            .collect::<Result<_>>()
                            .unwrap_or_default();
                    }
                    return Err(self.on_region_error(R::METHOD, route, &err));
                }
                if !resp.error().is_empty() {
                    return Err(Failure::Fatal(Error::Server {
                        method: R::METHOD,
                        region_id: route.region_id(),
                        message: resp.error().to_owned(),
                    }));
                }
                return Ok(resp);
            }
            Ok(Err(status)) => status,
            Err(_) => {
                self.on_send_failure(route);
                return Err(Failure::Transport {
                    cause: Error::Timeout {
                        method: R::METHOD,
                        target: format!("store {} at {address}", route.peer.store_id),
                        timeout,
                    },
                    maybe_sent: true,
                });
            }
        };
        let transport = net::is_transport(&status);
        let maybe_sent = !net::never_sent(&status);
        let cause = Error::Grpc {
            method: R::METHOD,
            target: format!("store {} at {address}", route.peer.store_id),
            status: Box::new(status),
        };
        if transport {
            self.on_send_failure(route);
            Err(Failure::Transport { cause, maybe_sent })
        } else {
            Err(Failure::Fatal(cause))
        }
    }

    fn on_region_error(
        &self,
        method: &'static str,
        route: &Route,
        err: &proto::errorpb::Error,
    ) -> Failure {
        let action = self.cache_mut().on_region_error(route, err);
        if err.store_not_match.is_some() {
            // The address led to another store: ask PD again.
            self.stores().addresses.remove(&route.peer.store_id);
        }
        let cause = Error::Region {
            method,
            region_id: route.region_id(),
            message: describe(err),
        };
        match action {
            RegionErrorAction::RetryNow => Failure::Retry {
                cause,
                now: true,
                hint: None,
            },
            RegionErrorAction::Backoff { hint } => Failure::Retry {
                cause,
                now: false,
                hint,
            },
            RegionErrorAction::Fail => Failure::Fatal(cause),
        }
    }

    /// One attempt at `route`: resolve the store, send.
    async fn attempt<R: KvRequest>(
        &self,
        route: &Route,
        req: R,
        state: &mut RetryState<'_>,
    ) -> Result<R::Response, Failure> {
        let (client, address) = self.store_client(route, state).await?;
        self.send_to(route, client, &address, req).await
    }

    /// A request for the region holding `key`, retried until it succeeds, fails for good or
    /// runs out of retry time.
    pub(crate) async fn single<R: KvRequest>(
        &self,
        op: &'static str,
        key: &[u8],
        idempotent: bool,
        build: impl Fn() -> R,
    ) -> Result<R::Response> {
        let mut state = self.retry_state(op);
        loop {
            let route = self.locate(key, &mut state).await?;
            match self.attempt(&route, build(), &mut state).await {
                Ok(resp) => return Ok(resp),
                Err(failure) => {
                    let pause = state.admit(failure, idempotent)?;
                    state.pause([pause]).await?;
                }
            }
        }
    }

    /// [`Inner::single`], also answering the end key of the region that served it (request
    /// form; empty: the last region), for requests that walk a range region by region.
    pub(crate) async fn single_with_route<R: KvRequest>(
        &self,
        op: &'static str,
        key: &[u8],
        idempotent: bool,
        build: impl Fn() -> R,
    ) -> Result<(R::Response, Vec<u8>)> {
        let mut state = self.retry_state(op);
        loop {
            let route = self.locate(key, &mut state).await?;
            match self.attempt(&route, build(), &mut state).await {
                Ok(resp) => return Ok((resp, route.end_key().to_vec())),
                Err(failure) => {
                    let pause = state.admit(failure, idempotent)?;
                    state.pause([pause]).await?;
                }
            }
        }
    }

    /// Splits `work` by region, sends the parts (at most `max_concurrent_requests` at once),
    /// and re-splits and resends the parts that failed with a retryable error. The results of
    /// the parts, in no particular order. All requests of this kind are idempotent.
    pub(crate) async fn sharded<W, R, T>(
        &self,
        op: &'static str,
        work: W,
        build: impl Fn(&W) -> R,
        extract: impl Fn(R::Response, &Route) -> Result<T>,
    ) -> Result<Vec<T>>
    where
        W: Piece,
        R: KvRequest,
    {
        let mut state = self.retry_state(op);
        let mut results = Vec::new();
        let mut pending = vec![work];
        while !pending.is_empty() {
            let mut routed = Vec::new();
            let mut pauses = Vec::new();
            let mut failed = Vec::new();
            for piece in pending {
                for (route, part) in self.route_piece(piece, &mut state).await? {
                    match self.store_client(&route, &mut state).await {
                        Ok((client, address)) => routed.push((route, part, client, address)),
                        Err(failure) => {
                            pauses.push(state.admit(failure, true)?);
                            failed.push(part);
                        }
                    }
                }
            }
            let outcomes: Vec<_> = stream::iter(routed)
                .map(|(route, part, client, address)| {
                    let req = build(&part);
                    async move {
                        let outcome = self.send_to(&route, client, &address, req).await;
                        (route, part, outcome)
                    }
                })
                .buffer_unordered(self.config.max_concurrent_requests)
                .collect()
                .await;
            let mut progressed = false;
            for (route, part, outcome) in outcomes {
                match outcome {
                    Ok(resp) => {
                        results.push(extract(resp, &route)?);
                        progressed = true;
                    }
                    Err(failure) => {
                        pauses.push(state.admit(failure, true)?);
                        failed.push(part);
                    }
                }
            }
            if progressed {
                state.progress();
            }
            if !failed.is_empty() {
                state.pause(pauses).await?;
            }
            pending = failed;
        }
        Ok(results)
    }

    /// `piece` cut along the cached regions, loading the missing ones from PD.
    async fn route_piece<W: Piece>(
        &self,
        mut piece: W,
        state: &mut RetryState<'_>,
    ) -> Result<Vec<(Route, W)>> {
        loop {
            let split = piece.split(&self.cache(), self.limits());
            match split {
                Ok(parts) => return Ok(parts),
                Err((back, missing)) => {
                    piece = back;
                    self.locate(&missing, state).await?;
                }
            }
        }
    }

    /// Scans `[lower, upper)` (empty `upper`: no end) region by region, up from `lower` or,
    /// if `reverse`, down from `upper`. TiKV's `RawScan` with `reverse` takes the *upper*
    /// bound (exclusive) in `start_key` and the lower bound (inclusive) in `end_key`; an empty
    /// `start_key` there means no upper bound.
    async fn scan(
        &self,
        mut lower: Vec<u8>,
        mut upper: Vec<u8>,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        let mut state = self.retry_state(if reverse { "scan_reverse" } else { "scan" });
        let mut out: Vec<KvPair> = Vec::new();
        // Halved when a store finds the answer too large for one message.
        let mut cap = MAX_SCAN_PER_REQUEST;
        loop {
            let route = if reverse {
                self.locate_before(&upper, &lower, &mut state).await?
            } else {
                self.locate(&lower, &mut state).await?
            };
            // The request's far bound in this region, and where the next region starts.
            let (bound, next) = if reverse {
                shard::reverse_step(&route, &lower)
            } else {
                shard::forward_step(&route, &upper)
            };
            let remaining = limit - out.len() as u32;
            let ask = remaining.min(cap);
            let req = kvrpcpb::RawScanRequest {
                start_key: if reverse {
                    upper.clone()
                } else {
                    lower.clone()
                },
                end_key: bound,
                limit: ask,
                key_only,
                reverse,
                ..Default::default()
            };
            match self.attempt(&route, req, &mut state).await {
                Ok(resp) => {
                    state.progress();
                    check_pairs("RawScan", &route, &resp.kvs)?;
                    let full = resp.kvs.len() >= ask as usize;
                    out.extend(
                        resp.kvs
                            .into_iter()
                            .take(ask as usize)
                            .map(|p| (p.key, p.value)),
                    );
                    if out.len() >= limit as usize {
                        return Ok(out);
                    }
                    // A full answer may have stopped inside the region: go on past its last
                    // key, in the same region (after it going up; below it going down, where
                    // it is the exclusive upper bound).
                    if full {
                        if let Some((last, _)) = out.last() {
                            if reverse {
                                upper = last.clone();
                            } else {
                                lower = last.clone();
                                lower.push(0);
                            }
                            continue;
                        }
                    }
                    match next {
                        Some(next) if reverse => upper = next,
                        Some(next) => lower = next,
                        None => return Ok(out),
                    }
                }
                Err(failure) if too_large(&failure) && ask > 1 => cap = (ask / 2).max(1),
                Err(failure) => {
                    let pause = state.admit(failure, true)?;
                    state.pause([pause]).await?;
                }
            }
        }
    }

    // ---- scheduler ----
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region_cache::tests::{peer, region};

    #[test]
    fn range_arguments() {
        assert!(!check_range("scan", b"a", b"").unwrap());
        assert!(!check_range("scan", b"a", b"b").unwrap());
        assert!(check_range("scan", b"b", b"b").unwrap());
        let err = check_range("delete_range", b"c", b"b").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("delete_range: invalid argument"),
            "{err}"
        );
    }

    #[test]
    fn scan_regions_answer_in_both_forms() {
        let new_form = pdpb::ScanRegionsResponse {
            regions: vec![
                pdpb::Region {
                    region: Some(region(1, b"", b"m", 1)),
                    leader: Some(peer(11, 1)),
                    ..Default::default()
                },
                pdpb::Region {
                    region: Some(region(2, b"m", b"", 1)),
                    leader: Some(metapb::Peer::default()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let infos = scan_regions_infos(new_form);
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].leader, Some(peer(11, 1)));
        assert_eq!(infos[1].leader, None);

        let legacy = pdpb::ScanRegionsResponse {
            region_metas: vec![region(1, b"", b"m", 1), region(2, b"m", b"", 1)],
            leaders: vec![peer(12, 2)],
            ..Default::default()
        };
        let infos = scan_regions_infos(legacy);
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].leader, Some(peer(12, 2)));
        assert_eq!(infos[1].leader, None);
    }

    #[test]
    fn key_errors_fail_with_the_key() {
        let route = Route {
            region: region(3, b"", b"", 1),
            peer: peer(31, 1),
        };
        let pairs = vec![kvrpcpb::KvPair {
            key: b"k".to_vec(),
            error: Some(kvrpcpb::KeyError {
                abort: "corrupted".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let err = check_pairs("RawScan", &route, &pairs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RawScan on region 3: store error: key \"k\": corrupted"
        );
        assert!(check_pairs("RawScan", &route, &[]).is_ok());
    }

    /// Compile-time only: the client and its futures can move between threads.
    #[allow(dead_code)]
    fn client_and_futures_are_send(client: &Client) {
        fn send<T: Send>(_: T) {}
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<Client>();
        send(Client::connect(&[], ClientConfig::default()));
        send(client.get(b"k".to_vec()));
        send(client.batch_get(vec![b"k".to_vec()]));
        send(client.put(b"k".to_vec(), b"v".to_vec()));
        send(client.batch_put(vec![(b"k".to_vec(), b"v".to_vec())]));
        send(client.delete(b"k".to_vec()));
        send(client.batch_delete(vec![b"k".to_vec()]));
        send(client.delete_range(b"a".to_vec(), b"b".to_vec()));
        send(client.scan(b"a".to_vec(), b"b".to_vec(), 10, false));
        send(client.scan_reverse(b"a".to_vec(), b"b".to_vec(), 10, false));
        send(client.compare_and_swap(b"k".to_vec(), None, b"v".to_vec()));
        send(client.regions());
        send(client.stores());
        send(client.split(b"k"));
        send(client.operators());
    }
}
