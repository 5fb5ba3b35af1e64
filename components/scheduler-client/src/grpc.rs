//! The scheduler over gRPC: `raftstore::SchedulerClient` and [`ClusterControl`] as calls to
//! `scheduler::service` (PD's `pdpb.PD` plus our `schedulerpb.Scheduler`).
//!
//! - **Threads**: the trait methods block; they are called from the store's plain threads. Each
//!   call runs on the client's tokio runtime (its own, or one whose handle was given) and the
//!   caller waits for the answer. Called from inside a tokio runtime, they fail at once rather
//!   than stall it: use the async methods there.
//! - **Endpoints and failover**: one lazily connecting channel per endpoint (tonic reconnects
//!   by itself). A call starts at the endpoint that answered last and moves on to the next one
//!   when an endpoint cannot be reached, times out, fails the call, or serves another cluster.
//!   An error in an answer's header is the scheduler's answer: no other endpoint is asked.
//! - **Timeouts**: each attempt gives up after `GrpcConfig::timeout`, so a call takes at most
//!   that times the number of endpoints.
//! - **Errors**: every failure is `raftstore::Error::Scheduler`, naming the call, each endpoint
//!   tried and why it failed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::eraftpb::ConfChangeType;
use proto::metapb::{Region, Store};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::{self, ErrorType};
use proto::schedulerpb::scheduler_client::SchedulerClient as SchedulerRpcClient;
use proto::schedulerpb::{self, WaitForEdge};
use raftstore::{
    DeadlockCheck, Error, RegionHeartbeat, Result, SchedulerClient, SchedulerStep, StoreHeartbeat,
};
use tokio::runtime::{Handle, Runtime};
use tonic::transport::{Channel, Endpoint};

use crate::{ApiVersion, BootstrapOutcome, ClusterControl};

/// How the gRPC client calls the scheduler.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// One attempt (one endpoint) of a call gives up after this long. Default 5 s.
    pub timeout: Duration,
    /// Bound on a message either way. Default 16 MiB.
    pub max_message_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            timeout: Duration::from_secs(5),
            max_message_bytes: 16 << 20,
        }
    }
}

/// One scheduler endpoint: its URL and clients of both services over one channel.
#[derive(Clone)]
struct Target {
    url: String,
    pd: PdClient<Channel>,
    sched: SchedulerRpcClient<Channel>,
}

struct Inner {
    targets: Vec<Target>,
    /// The endpoint that answered last: calls start there.
    preferred: AtomicUsize,
    /// Learnt from `GetMembers` at connect; 0 until then.
    cluster_id: AtomicU64,
    timeout: Duration,
    logger: slog::Logger,
}

/// Why a call failed.
enum Failure {
    /// A scheduler answered with an error in the header.
    Refused {
        endpoint: String,
        kind: ErrorType,
        message: String,
    },
    /// No endpoint answered: each one and why.
    Unreachable(Vec<(String, String)>),
}

impl Failure {
    fn into_error(self, what: &str) -> Error {
        let detail = match self {
            Failure::Refused {
                endpoint,
                kind,
                message,
            } => format!("{what}: the scheduler at {endpoint} refused: {kind:?}: {message}"),
            Failure::Unreachable(causes) => {
                let causes: Vec<String> = causes
                    .into_iter()
                    .map(|(url, cause)| format!("{url}: {cause}"))
                    .collect();
                format!("{what}: no scheduler answered: {}", causes.join("; "))
            }
        };
        Error::Scheduler { detail }
    }
}

/// A response with a PD header.
trait HasHeader {
    fn header(&self) -> Option<&pdpb::ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),* $(,)?) => {
        $(impl HasHeader for $t {
            fn header(&self) -> Option<&pdpb::ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

has_header!(
    pdpb::TsoResponse,
    pdpb::GetMembersResponse,
    pdpb::BootstrapResponse,
    pdpb::IsBootstrappedResponse,
    pdpb::AllocIdResponse,
    pdpb::GetStoreResponse,
    pdpb::PutStoreResponse,
    pdpb::StoreHeartbeatResponse,
    pdpb::RegionHeartbeatResponse,
    pdpb::GetRegionResponse,
    pdpb::ReportBatchSplitResponse,
    pdpb::GetGcSafePointResponse,
    schedulerpb::CheckApiVersionResponse,
    schedulerpb::DetectDeadlockResponse,
    schedulerpb::CleanUpWaitForResponse,
);

/// A gRPC status with its chain of causes ("transport error: tcp connect error: refused").
fn status_cause(status: &tonic::Status) -> String {
    let mut cause = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        cause.push_str(": ");
        cause.push_str(&s.to_string());
        source = s.source();
    }
    cause
}

/// An answer's header: `Err(Ok(cause))` makes the endpoint unusable (try the next one),
/// `Err(Err(..))` is the scheduler's refusal.
type HeaderCheck = std::result::Result<(), std::result::Result<String, (ErrorType, String)>>;

impl Inner {
    fn check(&self, header: Option<&pdpb::ResponseHeader>) -> HeaderCheck {
        let Some(header) = header else {
            return Err(Ok("an answer without a header".into()));
        };
        let ours = self.cluster_id.load(Ordering::Relaxed);
        if ours != 0 && header.cluster_id != ours {
            return Err(Ok(format!(
                "serves cluster {}, not {ours}",
                header.cluster_id
            )));
        }
        match &header.error {
            Some(e) if e.r#type() != ErrorType::Ok => Err(Err((e.r#type(), e.message.clone()))),
            _ => Ok(()),
        }
    }

    /// Makes the call `f` against each endpoint in turn, from the preferred one, until one
    /// answers.
    async fn call<R, F, Fut>(&self, f: F) -> std::result::Result<R, Failure>
    where
        R: HasHeader,
        F: Fn(Target, pdpb::RequestHeader) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let n = self.targets.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut causes = Vec::with_capacity(n);
        for i in 0..n {
            let idx = (start + i) % n;
            let target = &self.targets[idx];
            let header = pdpb::RequestHeader {
                cluster_id: self.cluster_id.load(Ordering::Relaxed),
                sender_id: 0,
            };
            let cause = match tokio::time::timeout(self.timeout, f(target.clone(), header)).await {
                Err(_) => format!("no answer within {:?}", self.timeout),
                Ok(Err(status)) => status_cause(&status),
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    match self.check(resp.header()) {
                        Ok(()) => {
                            self.preferred.store(idx, Ordering::Relaxed);
                            return Ok(resp);
                        }
                        Err(Err((kind, message))) => {
                            self.preferred.store(idx, Ordering::Relaxed);
                            return Err(Failure::Refused {
                                endpoint: target.url.clone(),
                                kind,
                                message,
                            });
                        }
                        Err(Ok(cause)) => cause,
                    }
                }
            };
            slog::debug!(self.logger, "scheduler endpoint failed"; "endpoint" => &target.url,
                "cause" => &cause);
            causes.push((target.url.clone(), cause));
        }
        Err(Failure::Unreachable(causes))
    }

    async fn get_members(&self) -> Result<u64> {
        let resp = self
            .call(|mut t, h| async move {
                let req = pdpb::GetMembersRequest { header: Some(h) };
                t.pd.get_members(req).await
            })
            .await
            .map_err(|f| f.into_error("GetMembers"))?;
        match resp.header.map_or(0, |h| h.cluster_id) {
            0 => Err(Error::Scheduler {
                detail: "GetMembers: the scheduler reports cluster id 0".into(),
            }),
            id => Ok(id),
        }
    }

    async fn alloc_ids(&self, count: usize) -> Result<Vec<u64>> {
        // One id per call (pdpb's AllocID), all in flight at once: a split of 8 keys over 3
        // peers needs 32.
        let calls = (0..count).map(|_| async {
            self.call(|mut t, h| async move {
                let req = pdpb::AllocIdRequest { header: Some(h) };
                t.pd.alloc_id(req).await
            })
            .await
            .map(|resp| resp.id)
            .map_err(|f| f.into_error("AllocID"))
        });
        let mut ids = futures::future::try_join_all(calls).await?;
        // Answers arrive in any order; callers get them ascending, as from one batch.
        ids.sort_unstable();
        Ok(ids)
    }

    async fn report_split(&self, parent: Region, new_regions: Vec<Region>) -> Result<()> {
        // As PD reads a report: the regions split off, then the parent last.
        let mut regions = new_regions;
        regions.push(parent);
        self.call(|mut t, h| {
            let req = pdpb::ReportBatchSplitRequest {
                header: Some(h),
                regions: regions.clone(),
            };
            async move { t.pd.report_batch_split(req).await }
        })
        .await
        .map(|_| ())
        .map_err(|f| f.into_error("ReportBatchSplit"))
    }

    async fn region_heartbeat(&self, hb: RegionHeartbeat) -> Result<Option<SchedulerStep>> {
        let region_id = hb.region.id;
        let req = pdpb::RegionHeartbeatRequest {
            header: None,
            region: Some(hb.region),
            leader: Some(hb.leader),
            down_peers: hb
                .down_peers
                .into_iter()
                .map(|peer| pdpb::PeerStats {
                    peer: Some(peer),
                    down_seconds: 0,
                })
                .collect(),
            pending_peers: hb.pending_peers,
            approximate_size: hb.approximate_size,
            approximate_keys: hb.approximate_keys,
            ..Default::default()
        };
        let resp = self
            .call(|mut t, h| {
                let req = pdpb::RegionHeartbeatRequest {
                    header: Some(h),
                    ..req.clone()
                };
                async move { t.sched.region_heartbeat(req).await }
            })
            .await
            .map_err(|f| f.into_error("RegionHeartbeat"))?;
        step_of(resp).map_err(|detail| Error::Scheduler {
            detail: format!("RegionHeartbeat of region {region_id}: {detail}"),
        })
    }

    async fn store_heartbeat(&self, hb: StoreHeartbeat) -> Result<Vec<u64>> {
        // pdpb's stats have no leader count: the scheduler counts leaders from its routing
        // table.
        let stats = pdpb::StoreStats {
            store_id: hb.store_id,
            capacity: hb.capacity,
            available: hb.available,
            used_size: hb.used,
            region_count: u32::try_from(hb.region_count).unwrap_or(u32::MAX),
            ..Default::default()
        };
        self.call(|mut t, h| {
            let req = pdpb::StoreHeartbeatRequest {
                header: Some(h),
                stats: Some(stats.clone()),
            };
            async move { t.pd.store_heartbeat(req).await }
        })
        .await
        .map(|r| r.regions_with_operators)
        .map_err(|f| f.into_error("StoreHeartbeat"))
    }

    async fn is_bootstrapped(&self) -> Result<bool> {
        self.call(|mut t, h| async move {
            let req = pdpb::IsBootstrappedRequest { header: Some(h) };
            t.pd.is_bootstrapped(req).await
        })
        .await
        .map(|r| r.bootstrapped)
        .map_err(|f| f.into_error("IsBootstrapped"))
    }

    async fn bootstrap(&self, store: Store, region: Region) -> Result<BootstrapOutcome> {
        let outcome = self
            .call(|mut t, h| {
                let req = pdpb::BootstrapRequest {
                    header: Some(h),
                    store: Some(store.clone()),
                    region: Some(region.clone()),
                };
                async move { t.pd.bootstrap(req).await }
            })
            .await;
        match outcome {
            Ok(_) => Ok(BootstrapOutcome::Done),
            Err(Failure::Refused {
                kind: ErrorType::AlreadyBootstrapped,
                ..
            }) => Ok(BootstrapOutcome::AlreadyBootstrapped),
            Err(f) => Err(f.into_error("Bootstrap")),
        }
    }

    async fn put_store(&self, store: Store) -> Result<()> {
        self.call(|mut t, h| {
            let req = pdpb::PutStoreRequest {
                header: Some(h),
                store: Some(store.clone()),
            };
            async move { t.pd.put_store(req).await }
        })
        .await
        .map(|_| ())
        .map_err(|f| f.into_error("PutStore"))
    }

    async fn gc_safe_point(&self) -> Result<u64> {
        self.call(|mut t, h| async move {
            let req = pdpb::GetGcSafePointRequest { header: Some(h) };
            t.pd.get_gc_safe_point(req).await
        })
        .await
        .map(|r| r.safe_point)
        .map_err(|f| f.into_error("GetGCSafePoint"))
    }

    async fn tso(&self) -> Result<u64> {
        self.call(|mut t, h| async move {
            let req = pdpb::TsoRequest {
                header: Some(h),
                count: 1,
                dc_location: String::new(),
            };
            let mut answers = t.pd.tso(futures::stream::iter([req])).await?.into_inner();
            match answers.message().await? {
                Some(resp) => Ok(tonic::Response::new(resp)),
                None => Err(tonic::Status::unavailable(
                    "the TSO stream ended without an answer",
                )),
            }
        })
        .await
        .map_err(|f| f.into_error("Tso"))?
        .timestamp
        .map(|ts| ((ts.physical as u64) << 18) | ts.logical as u64)
        .ok_or_else(|| Error::Scheduler {
            detail: "Tso: an answer without a timestamp".into(),
        })
    }

    async fn detect_deadlock(&self, edge: WaitForEdge, ttl: Duration) -> Result<DeadlockCheck> {
        self.call(|mut t, h| {
            let edge = edge.clone();
            async move {
                let req = schedulerpb::DetectDeadlockRequest {
                    header: Some(h),
                    edge: Some(edge),
                    ttl_ms: ttl.as_millis() as u64,
                };
                t.sched.detect_deadlock(req).await
            }
        })
        .await
        .map(|r| match (r.recorded, r.deadlock_chain.is_empty()) {
            (true, _) => DeadlockCheck::Recorded,
            (false, true) => DeadlockCheck::NotRecorded,
            (false, false) => DeadlockCheck::Deadlock(r.deadlock_chain),
        })
        .map_err(|f| f.into_error("DetectDeadlock"))
    }

    async fn clean_up_wait_for(&self, edge: WaitForEdge) -> Result<()> {
        self.call(|mut t, h| {
            let edge = edge.clone();
            async move {
                let req = schedulerpb::CleanUpWaitForRequest {
                    header: Some(h),
                    edge: Some(edge),
                };
                t.sched.clean_up_wait_for(req).await
            }
        })
        .await
        .map(|_| ())
        .map_err(|f| f.into_error("CleanUpWaitFor"))
    }

    async fn check_api_version(&self, asked: ApiVersion) -> Result<ApiVersion> {
        self.call(|mut t, h| async move {
            let req = schedulerpb::CheckApiVersionRequest {
                header: Some(h),
                api_version: asked.to_proto() as i32,
            };
            t.sched.check_api_version(req).await
        })
        .await
        .map(|r| ApiVersion::from_proto(r.api_version()))
        .map_err(|f| f.into_error("CheckApiVersion"))
    }

    async fn region_recorded(&self, region_id: u64) -> Result<bool> {
        self.call(|mut t, h| async move {
            let req = pdpb::GetRegionByIdRequest {
                header: Some(h),
                region_id,
                need_buckets: false,
            };
            t.pd.get_region_by_id(req).await
        })
        .await
        .map(|r| r.region.is_some_and(|r| r.id == region_id))
        .map_err(|f| f.into_error("GetRegionByID"))
    }

    async fn get_store(&self, store_id: u64) -> Result<Store> {
        let resp = self
            .call(|mut t, h| async move {
                let req = pdpb::GetStoreRequest {
                    header: Some(h),
                    store_id,
                };
                t.pd.get_store(req).await
            })
            .await
            .map_err(|f| f.into_error("GetStore"))?;
        resp.store.ok_or_else(|| Error::Scheduler {
            detail: format!("GetStore: no store {store_id} in the answer"),
        })
    }
}

/// A region heartbeat's answer as the step for the leader (the inverse of the service's
/// mapping).
fn step_of(
    resp: pdpb::RegionHeartbeatResponse,
) -> std::result::Result<Option<SchedulerStep>, String> {
    if let Some(split) = resp.split_region {
        // The store finds no split keys by itself on the scheduler's word: only USEKEY.
        if split.keys.is_empty() {
            return Err(format!(
                "a split without keys (policy {:?}) is not supported",
                split.policy()
            ));
        }
        return Ok(Some(SchedulerStep::Split(split.keys)));
    }
    if let Some(change) = resp.change_peer {
        let peer = change
            .peer
            .ok_or_else(|| "a peer change without a peer".to_string())?;
        let kind = ConfChangeType::try_from(change.change_type)
            .map_err(|_| format!("unknown peer change type {}", change.change_type))?;
        return Ok(Some(match kind {
            ConfChangeType::AddLearnerNode => SchedulerStep::AddLearner(peer),
            ConfChangeType::AddNode => SchedulerStep::PromoteLearner(peer),
            ConfChangeType::RemoveNode => SchedulerStep::RemovePeer(peer),
        }));
    }
    if let Some(transfer) = resp.transfer_leader {
        let to = transfer
            .peer
            .or_else(|| transfer.peers.first().copied())
            .ok_or_else(|| "a leader transfer without a target".to_string())?;
        return Ok(Some(SchedulerStep::TransferLeader(to)));
    }
    if resp.change_peer_v2.is_some() {
        return Err("joint peer changes (change_peer_v2) are not supported".into());
    }
    Ok(None)
}

/// A runtime this client made for itself, stopped without waiting when the last clone of the
/// client goes (dropping a runtime the usual way panics inside another runtime).
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The scheduler over gRPC. Clones share the channels (and the runtime).
#[derive(Clone)]
pub struct GrpcSchedulerClient {
    inner: Arc<Inner>,
    handle: Handle,
    _runtime: Option<Arc<OwnedRuntime>>,
}

/// `host:port` becomes `http://host:port`; a URL is kept.
fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl GrpcSchedulerClient {
    /// Connects to the scheduler at `endpoints` (URLs or `host:port`) with default settings,
    /// running its calls on the runtime of `handle`, and learns the cluster id. Blocks: must
    /// not be called from inside a tokio runtime.
    pub fn connect(
        endpoints: Vec<String>,
        handle: Handle,
        logger: &slog::Logger,
    ) -> Result<GrpcSchedulerClient> {
        GrpcSchedulerClient::connect_with(endpoints, GrpcConfig::default(), Some(handle), logger)
    }

    /// As [`connect`](Self::connect), with `config`, and on a runtime of its own (one worker
    /// thread) when `handle` is `None`. Fails if no endpoint answers `GetMembers`: the caller
    /// decides whether to wait and retry.
    pub fn connect_with(
        endpoints: Vec<String>,
        config: GrpcConfig,
        handle: Option<Handle>,
        logger: &slog::Logger,
    ) -> Result<GrpcSchedulerClient> {
        if endpoints.is_empty() {
            return Err(Error::Scheduler {
                detail: "no scheduler endpoints given".into(),
            });
        }
        let (handle, runtime) = match handle {
            Some(handle) => (handle, None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("scheduler-client")
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Scheduler {
                        detail: format!("starting the scheduler client's runtime: {e}"),
                    })?;
                (rt.handle().clone(), Some(Arc::new(OwnedRuntime(Some(rt)))))
            }
        };
        let targets = {
            // Lazy channels spawn their connection task on the current runtime: ours.
            let _enter = handle.enter();
            endpoints
                .iter()
                .map(|e| {
                    let url = endpoint_url(e);
                    let endpoint = Endpoint::from_shared(url.clone())
                        .map_err(|err| Error::Scheduler {
                            detail: format!("scheduler endpoint {e:?}: {err}"),
                        })?
                        .connect_timeout(config.timeout)
                        .tcp_nodelay(true);
                    let channel = endpoint.connect_lazy();
                    let max = config.max_message_bytes;
                    Ok(Target {
                        url,
                        pd: PdClient::new(channel.clone())
                            .max_decoding_message_size(max)
                            .max_encoding_message_size(max),
                        sched: SchedulerRpcClient::new(channel)
                            .max_decoding_message_size(max)
                            .max_encoding_message_size(max),
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let client = GrpcSchedulerClient {
            inner: Arc::new(Inner {
                targets,
                preferred: AtomicUsize::new(0),
                cluster_id: AtomicU64::new(0),
                timeout: config.timeout,
                logger: logger.new(slog::o!("component" => "scheduler-client")),
            }),
            handle,
            _runtime: runtime,
        };
        let cluster_id = client.block(|inner| async move { inner.get_members().await })?;
        client.inner.cluster_id.store(cluster_id, Ordering::Relaxed);
        slog::info!(client.inner.logger, "connected to the scheduler";
            "endpoints" => ?endpoints, "cluster_id" => cluster_id);
        Ok(client)
    }

    /// The id of the scheduler's cluster, learnt at connect.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id.load(Ordering::Relaxed)
    }

    /// A store's metadata (its address, to send it raft messages). Usable from any runtime or
    /// executor: the call runs on the client's runtime.
    pub async fn get_store(&self, store_id: u64) -> Result<Store> {
        let inner = self.inner.clone();
        self.run(async move { inner.get_store(store_id).await })
            .await
    }

    async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.handle.spawn(fut).await.unwrap_or_else(|e| {
            Err(Error::Scheduler {
                detail: format!("the scheduler call did not finish: {e}"),
            })
        })
    }

    /// Runs `f` on the client's runtime and waits for it. Refused inside a runtime, where
    /// waiting would stall (or deadlock) its worker.
    fn block<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        if Handle::try_current().is_ok() {
            return Err(Error::Scheduler {
                detail: "a blocking scheduler call was made from inside a tokio runtime; use \
                         the async methods there"
                    .into(),
            });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        // Every attempt is bounded by the timeout, so this waits at most that per endpoint.
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Scheduler {
                detail: "the scheduler client's runtime has stopped".into(),
            })
        })
    }
}

impl SchedulerClient for GrpcSchedulerClient {
    fn alloc_ids(&self, count: usize) -> Result<Vec<u64>> {
        self.block(|inner| async move { inner.alloc_ids(count).await })
    }

    fn report_split(&self, parent: &Region, new_regions: &[Region]) {
        let (parent, new_regions) = (parent.clone(), new_regions.to_vec());
        let region_id = parent.id;
        let result =
            self.block(|inner| async move { inner.report_split(parent, new_regions).await });
        // Best effort: the next heartbeats tell the scheduler the same.
        if let Err(e) = result {
            slog::debug!(self.inner.logger, "split report failed"; "region_id" => region_id,
                "error" => %e);
        }
    }

    fn region_heartbeat(&self, heartbeat: RegionHeartbeat) -> Result<Option<SchedulerStep>> {
        self.block(|inner| async move { inner.region_heartbeat(heartbeat).await })
    }

    fn region_heartbeats(
        &self,
        heartbeats: Vec<RegionHeartbeat>,
    ) -> Vec<Result<Option<SchedulerStep>>> {
        let n = heartbeats.len();
        let all = self.block(|inner| async move {
            let calls = heartbeats.into_iter().map(|hb| {
                let inner = inner.clone();
                async move { inner.region_heartbeat(hb).await }
            });
            Ok(futures::future::join_all(calls).await)
        });
        match all {
            Ok(answers) => answers,
            Err(e) => (0..n)
                .map(|_| {
                    Err(Error::Scheduler {
                        detail: e.to_string(),
                    })
                })
                .collect(),
        }
    }

    fn store_heartbeat(&self, heartbeat: StoreHeartbeat) -> Result<Vec<u64>> {
        self.block(|inner| async move { inner.store_heartbeat(heartbeat).await })
    }

    fn gc_safe_point(&self) -> Result<u64> {
        self.block(|inner| async move { inner.gc_safe_point().await })
    }

    fn tso(&self) -> Result<u64> {
        self.block(|inner| async move { inner.tso().await })
    }

    fn detect_deadlock(&self, edge: WaitForEdge, ttl: Duration) -> Result<DeadlockCheck> {
        self.block(|inner| async move { inner.detect_deadlock(edge, ttl).await })
    }

    fn clean_up_wait_for(&self, edge: WaitForEdge) -> Result<()> {
        self.block(|inner| async move { inner.clean_up_wait_for(edge).await })
    }
}

impl ClusterControl for GrpcSchedulerClient {
    fn is_bootstrapped(&self) -> Result<bool> {
        self.block(|inner| async move { inner.is_bootstrapped().await })
    }

    fn bootstrap(&self, store: Store, region: Region) -> Result<BootstrapOutcome> {
        self.block(|inner| async move { inner.bootstrap(store, region).await })
    }

    fn put_store(&self, store: Store) -> Result<()> {
        self.block(|inner| async move { inner.put_store(store).await })
    }

    fn region_recorded(&self, region_id: u64) -> Result<bool> {
        self.block(|inner| async move { inner.region_recorded(region_id).await })
    }

    fn check_api_version(&self, asked: ApiVersion) -> Result<ApiVersion> {
        self.block(|inner| async move { inner.check_api_version(asked).await })
    }
}

#[cfg(test)]
mod tests {
    use engine::MemEngine;
    use proto::build;
    use proto::metapb::{Peer, RegionEpoch};
    use scheduler::{AdminOp, Scheduler};

    use super::*;
    use crate::bootstrap_store;

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    /// The blocking API is called from this test's own thread; the server runs on `rt`.
    #[test]
    fn stores_bootstrap_and_heartbeat_over_grpc() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // No checker runs: only the operator this test asks for.
        let config = scheduler::Config::without_checkers();
        let scheduler = Arc::new(
            Scheduler::open(
                Arc::new(MemEngine::new()),
                &config,
                util::SystemClock::shared(),
                &logger(),
            )
            .unwrap(),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(scheduler::service::serve(
            scheduler.clone(),
            listener,
            url.clone(),
            1 << 20,
            async {
                let _ = stopped.await;
            },
        ));
        // Nothing listens on the first endpoint (given as host:port): the client moves on.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .to_string();
        let config = GrpcConfig {
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let client = GrpcSchedulerClient::connect_with(
            vec![dead.clone(), url.clone()],
            config,
            None,
            &logger(),
        )
        .unwrap();
        assert_eq!(client.cluster_id(), scheduler.cluster_id());

        // The first store bootstraps the cluster, the second joins; ids stay on a restart.
        let (a, b) = (MemEngine::new(), MemEngine::new());
        let first = bootstrap_store(&client, &a, 7, None, "a", ApiVersion::V1).unwrap();
        let second = bootstrap_store(&client, &b, 7, None, "b", ApiVersion::V1).unwrap();
        assert_ne!(first, second);
        assert!(scheduler.cluster.is_bootstrapped());
        let regions = scheduler.cluster.regions();
        assert_eq!(regions.len(), 1);
        let region = regions[0].region.clone();
        assert!(region.start_key.is_empty() && region.end_key.is_empty());
        assert_eq!(region.peers[0].store_id, first);
        assert_eq!(scheduler.cluster.stores().len(), 2);
        assert_eq!(
            bootstrap_store(&client, &a, 7, None, "a", ApiVersion::V1).unwrap(),
            first
        );
        assert_eq!(
            bootstrap_store(&client, &b, 7, None, "b", ApiVersion::V1).unwrap(),
            second
        );
        // A first region left by a bootstrap that lost the race (and crashed) is taken back.
        let c = MemEngine::new();
        raftstore::bootstrap_store(&c, 7, 50, ApiVersion::V1.to_proto()).unwrap();
        let lost = crate::first_region(60, 61, 50);
        raftstore::bootstrap_region(&c, &lost).unwrap();
        assert_eq!(
            bootstrap_store(&client, &c, 7, None, "c", ApiVersion::V1).unwrap(),
            50
        );
        assert_eq!(crate::prepared_first_region(&c, 50).unwrap(), None);
        assert_eq!(scheduler.cluster.regions().len(), 1);

        // A store's address, asked from another runtime.
        assert_eq!(rt.block_on(client.get_store(second)).unwrap().address, "b");
        // A client on a runtime it was given (here the server's).
        let shared =
            GrpcSchedulerClient::connect(vec![url.clone()], rt.handle().clone(), &logger())
                .unwrap();
        assert!(shared.is_bootstrapped().unwrap());
        assert_eq!(rt.block_on(shared.get_store(first)).unwrap().address, "a");
        drop(shared);

        // An operator's steps come back as the store's steps.
        let leader = region.peers[0];
        let heartbeat = |region: &Region| RegionHeartbeat {
            region: region.clone(),
            leader,
            ..Default::default()
        };
        assert_eq!(client.region_heartbeat(heartbeat(&region)).unwrap(), None);
        scheduler
            .add_admin_operator(region.id, AdminOp::AddPeer { store: second })
            .unwrap();
        let Some(SchedulerStep::AddLearner(new)) =
            client.region_heartbeat(heartbeat(&region)).unwrap()
        else {
            panic!("no add-learner step");
        };
        assert_eq!(new.store_id, second);
        let mut grown = region.clone();
        grown.peers.push(new);
        grown.region_epoch = Some(RegionEpoch {
            conf_ver: 2,
            version: 1,
        });
        // The wire names the promoted peer with the role it gets.
        let promoted = Peer {
            role: proto::metapb::PeerRole::Voter as i32,
            ..new
        };
        assert_eq!(
            client.region_heartbeat(heartbeat(&grown)).unwrap(),
            Some(SchedulerStep::PromoteLearner(promoted))
        );

        // A store heartbeat; its leader count comes from the routing table.
        client
            .store_heartbeat(StoreHeartbeat {
                store_id: first,
                capacity: 100,
                available: 60,
                used: 40,
                region_count: 1,
                leader_count: 0,
            })
            .unwrap();
        let stats = scheduler.cluster.store_info(first).unwrap().stats;
        assert_eq!((stats.used, stats.leader_count), (40, 1));

        // Stores read the GC safe point someone else moved.
        assert_eq!(client.gc_safe_point().unwrap(), 0);
        scheduler.gc_safe_point.update(42).unwrap();
        assert_eq!(client.gc_safe_point().unwrap(), 42);
        let (first, second) = (client.tso().unwrap(), client.tso().unwrap());
        assert!(first > 0 && second > first, "{first} then {second}");

        // A split report reaches the routing table.
        let ids = client.alloc_ids(2).unwrap();
        assert!(ids[0] < ids[1], "{ids:?}");
        let right = build::region(ids[0])
            .range(b"m", b"")
            .epoch(2, 2)
            .peers([build::peer(ids[1], first)])
            .build();
        let left = Region {
            end_key: b"m".to_vec(),
            region_epoch: right.region_epoch,
            ..grown.clone()
        };
        client.report_split(&left, std::slice::from_ref(&right));
        let routed = scheduler.cluster.region_by_key(b"z").map(|r| r.region);
        assert_eq!(routed, Some(right));

        // Blocking calls refuse inside a runtime rather than stall it.
        let inside = rt.block_on(async { client.alloc_ids(1) });
        assert!(matches!(inside, Err(Error::Scheduler { .. })), "{inside:?}");
        // The async calls can be boxed as `Send` futures (the store's address resolver).
        fn is_send<T: Send>(_: &T) {}
        is_send(&client.get_store(first));

        // The scheduler stops: calls fail, naming every endpoint tried.
        let _ = stop.send(());
        rt.block_on(server).unwrap().unwrap();
        match client.alloc_ids(1) {
            Err(Error::Scheduler { detail }) => {
                assert!(detail.contains(&url) && detail.contains(&dead), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heartbeat_answers_map_back_to_steps() {
        let peer = build::learner(5, 2);
        let change = |kind: ConfChangeType| pdpb::RegionHeartbeatResponse {
            change_peer: Some(pdpb::ChangePeer {
                peer: Some(peer),
                change_type: kind as i32,
            }),
            ..Default::default()
        };
        assert_eq!(
            step_of(change(ConfChangeType::AddLearnerNode)),
            Ok(Some(SchedulerStep::AddLearner(peer)))
        );
        assert_eq!(
            step_of(change(ConfChangeType::AddNode)),
            Ok(Some(SchedulerStep::PromoteLearner(peer)))
        );
        assert_eq!(
            step_of(change(ConfChangeType::RemoveNode)),
            Ok(Some(SchedulerStep::RemovePeer(peer)))
        );
        let transfer = pdpb::RegionHeartbeatResponse {
            transfer_leader: Some(pdpb::TransferLeader {
                peer: None,
                peers: vec![peer],
            }),
            ..Default::default()
        };
        assert_eq!(
            step_of(transfer),
            Ok(Some(SchedulerStep::TransferLeader(peer)))
        );
        let mut unknown = change(ConfChangeType::AddNode);
        if let Some(c) = unknown.change_peer.as_mut() {
            c.change_type = 42;
        }
        assert!(step_of(unknown).is_err());
        let keyless = pdpb::RegionHeartbeatResponse {
            split_region: Some(pdpb::SplitRegion {
                policy: pdpb::CheckPolicy::Approximate as i32,
                keys: vec![],
            }),
            ..Default::default()
        };
        assert!(step_of(keyless).is_err());
        assert_eq!(step_of(pdpb::RegionHeartbeatResponse::default()), Ok(None));
    }
}
