//! The scheduler over gRPC: PD's `pdpb.PD` (the subset TiKV clients and stores use: members,
//! TSO, bootstrap, ids, stores, routing, split ids and reports) and our `schedulerpb.Scheduler`
//! (unary region heartbeats answered with one operator step, the administrator's operators).
//!
//! Errors travel as PD does it: a `pdpb::Error` in the response header (the PD client checks the
//! header, not the gRPC status), with the cluster id in every header. A gRPC status error means
//! the call itself failed (the pdpb region heartbeat stream, which is not served).
//!
//! Calls that may write to the metadata store with a sync (bootstrap, ids, stores, heartbeats,
//! operators) run on tokio's blocking pool; lookups run inline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use api_version::ApiVersion;
use futures::{Stream, StreamExt};
use proto::keyspacepb;
use proto::keyspacepb::keyspace_server::{Keyspace, KeyspaceServer};
use proto::metapb::{self, Peer, PeerRole};
use proto::pdpb::pd_server::{Pd, PdServer};
use proto::pdpb::{self, ErrorType};
use proto::schedulerpb::add_operator_request::Kind;
use proto::schedulerpb::scheduler_server::{Scheduler as SchedulerRpc, SchedulerServer};
use proto::schedulerpb::{self, OperatorInfo};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

use crate::deadlock::Detected;
use crate::tso::LOGICAL_BITS;
use crate::{AdminOp, Error, OperatorStatus, RegionInfo, Scheduler, Step, StoreStats};

/// ScanRegions answers at most this many regions; a limit of 0 or less asks for all of them.
pub const MAX_SCAN_REGIONS: usize = 10_000;
/// AskBatchSplit hands out ids for at most this many new regions per request.
pub const MAX_SPLITS_PER_ASK: u32 = 1_000;
/// A region with more peers than this in a request is refused (each peer costs an id per split).
const MAX_PEERS: usize = 64;

/// A header error: its type, and a message saying what was wrong.
#[derive(Debug)]
struct Failure {
    kind: ErrorType,
    message: String,
}

fn failure(kind: ErrorType, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    failure(ErrorType::InvalidValue, message)
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let kind = match &e {
            Error::NotBootstrapped => ErrorType::NotBootstrapped,
            Error::AlreadyBootstrapped { .. } => ErrorType::AlreadyBootstrapped,
            Error::StoreNotFound { .. } | Error::KeyspaceNotFound { .. } => {
                ErrorType::EntryNotFound
            }
            Error::Invalid { .. } | Error::KeyspacesNeedV2 { .. } => ErrorType::InvalidValue,
            Error::Storage { .. } | Error::Corrupt { .. } | Error::Tso { .. } => ErrorType::Unknown,
        };
        failure(kind, e.to_string())
    }
}

/// A response with a PD header.
trait Reply: Default {
    fn header_mut(&mut self) -> &mut Option<pdpb::ResponseHeader>;
}

macro_rules! reply {
    ($($t:ty),* $(,)?) => {
        $(impl Reply for $t {
            fn header_mut(&mut self) -> &mut Option<pdpb::ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

reply!(
    pdpb::GetMembersResponse,
    pdpb::TsoResponse,
    pdpb::BootstrapResponse,
    pdpb::IsBootstrappedResponse,
    pdpb::AllocIdResponse,
    pdpb::GetStoreResponse,
    pdpb::PutStoreResponse,
    pdpb::GetAllStoresResponse,
    pdpb::StoreHeartbeatResponse,
    pdpb::RegionHeartbeatResponse,
    pdpb::GetRegionResponse,
    pdpb::ScanRegionsResponse,
    pdpb::AskBatchSplitResponse,
    pdpb::ReportBatchSplitResponse,
    pdpb::GetClusterConfigResponse,
    pdpb::GetGcSafePointResponse,
    pdpb::UpdateGcSafePointResponse,
    schedulerpb::AddOperatorResponse,
    schedulerpb::ListOperatorsResponse,
    schedulerpb::CheckApiVersionResponse,
    schedulerpb::CreateKeyspaceResponse,
    schedulerpb::DetectDeadlockResponse,
    schedulerpb::CleanUpWaitForResponse,
    keyspacepb::LoadKeyspaceResponse,
    keyspacepb::GetAllKeyspacesResponse,
);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Both gRPC services over one scheduler.
#[derive(Clone)]
pub struct SchedulerService {
    scheduler: Arc<Scheduler>,
    /// The URL clients reach this scheduler at (`GetMembers`), e.g. `http://10.0.0.1:2379`.
    advertise_url: String,
}

fn require_bootstrapped(s: &Scheduler) -> Result<(), Failure> {
    if s.cluster.is_bootstrapped() {
        Ok(())
    } else {
        Err(Error::NotBootstrapped.into())
    }
}

impl SchedulerService {
    pub fn new(scheduler: Arc<Scheduler>, advertise_url: String) -> SchedulerService {
        SchedulerService {
            scheduler,
            advertise_url,
        }
    }

    fn header(&self, failure: Option<Failure>) -> pdpb::ResponseHeader {
        pdpb::ResponseHeader {
            cluster_id: self.scheduler.cluster_id(),
            error: failure.map(|f| pdpb::Error {
                r#type: f.kind as i32,
                message: f.message,
            }),
        }
    }

    /// A request for another cluster is refused; cluster id 0 is a client still discovering
    /// which cluster it talks to (its first `GetMembers`), and is accepted.
    fn check(&self, header: Option<&pdpb::RequestHeader>) -> Result<(), Failure> {
        let asked = header.map_or(0, |h| h.cluster_id);
        let ours = self.scheduler.cluster_id();
        if asked != 0 && asked != ours {
            return Err(invalid(format!(
                "cluster id mismatch: this scheduler serves cluster {ours}, the request is for \
                 cluster {asked}"
            )));
        }
        Ok(())
    }

    fn finish<R: Reply>(&self, what: &'static str, out: Result<R, Failure>) -> R {
        let (mut reply, failure) = match out {
            Ok(reply) => (reply, None),
            Err(f) => {
                slog::debug!(self.scheduler.logger(), "request refused"; "method" => what,
                    "error_type" => ?f.kind, "error" => &f.message);
                (R::default(), Some(f))
            }
        };
        *reply.header_mut() = Some(self.header(failure));
        reply
    }

    /// Answers inline: for lookups that never wait on the disk.
    fn reply<R: Reply>(
        &self,
        what: &'static str,
        header: Option<&pdpb::RequestHeader>,
        f: impl FnOnce(&Scheduler) -> Result<R, Failure>,
    ) -> Result<Response<R>, Status> {
        let out = self.check(header).and_then(|()| f(&self.scheduler));
        Ok(Response::new(self.finish(what, out)))
    }

    /// Answers from tokio's blocking pool: for calls that may sync the metadata store, which
    /// would otherwise stall every connection served by this worker thread.
    async fn reply_blocking<R, F>(
        &self,
        what: &'static str,
        header: Option<&pdpb::RequestHeader>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        R: Reply + Send + 'static,
        F: FnOnce(&Scheduler) -> Result<R, Failure> + Send + 'static,
    {
        let out = match self.check(header) {
            Ok(()) => {
                let scheduler = self.scheduler.clone();
                tokio::task::spawn_blocking(move || f(&scheduler))
                    .await
                    .map_err(|e| Status::internal(format!("{what}: the handler failed: {e}")))?
            }
            Err(f) => Err(f),
        };
        Ok(Response::new(self.finish(what, out)))
    }

    fn member(&self) -> pdpb::Member {
        pdpb::Member {
            name: "scheduler".into(),
            member_id: self.scheduler.cluster_id(),
            peer_urls: vec![self.advertise_url.clone()],
            client_urls: vec![self.advertise_url.clone()],
            ..Default::default()
        }
    }

    fn tso_reply(&self, req: pdpb::TsoRequest) -> pdpb::TsoResponse {
        let out = self.check(req.header.as_ref()).and_then(|()| {
            let count = req.count;
            if count == 0 || u64::from(count) >= 1 << LOGICAL_BITS {
                return Err(invalid(format!(
                    "timestamp count {count} must be 1 to {}",
                    (1u64 << LOGICAL_BITS) - 1
                )));
            }
            // Inline, though the oracle syncs its bound once per tso window (3 s): a few ms
            // on this thread that often cost less than a thread hop per request.
            let ts = self.scheduler.tso.get(count)?;
            Ok(pdpb::TsoResponse {
                header: None,
                count,
                timestamp: Some(timestamp(ts)),
            })
        });
        self.finish("Tso", out)
    }
}

/// `physical_ms << 18 | logical` as PD's two fields.
fn timestamp(ts: u64) -> pdpb::Timestamp {
    pdpb::Timestamp {
        physical: (ts >> LOGICAL_BITS) as i64,
        logical: (ts & ((1 << LOGICAL_BITS) - 1)) as i64,
        suffix_bits: 0,
    }
}

fn peer_stats(peers: Vec<Peer>) -> Vec<pdpb::PeerStats> {
    // How long a peer has been down is not tracked: the leader only reports that it is.
    peers
        .into_iter()
        .map(|peer| pdpb::PeerStats {
            peer: Some(peer),
            down_seconds: 0,
        })
        .collect()
}

fn region_response(info: Option<RegionInfo>) -> pdpb::GetRegionResponse {
    match info {
        Some(info) => pdpb::GetRegionResponse {
            header: None,
            region: Some(info.region),
            leader: info.leader,
            down_peers: peer_stats(info.down_peers),
            pending_peers: info.pending_peers,
        },
        // As PD: an unknown region is no error, just no region (the client decides).
        None => pdpb::GetRegionResponse::default(),
    }
}

fn pd_store_stats(store_id: u64, stats: &StoreStats) -> pdpb::StoreStats {
    pdpb::StoreStats {
        store_id,
        capacity: stats.capacity,
        available: stats.available,
        used_size: stats.used,
        region_count: u32::try_from(stats.region_count).unwrap_or(u32::MAX),
        ..Default::default()
    }
}

/// The region heartbeat's answer for one operator step (the inverse is in the scheduler
/// client).
fn step_response(step: Step) -> pdpb::RegionHeartbeatResponse {
    use proto::eraftpb::ConfChangeType;
    let change = |mut peer: Peer, role: PeerRole, kind: ConfChangeType| pdpb::ChangePeer {
        peer: Some({
            peer.role = role as i32;
            peer
        }),
        change_type: kind as i32,
    };
    let mut resp = pdpb::RegionHeartbeatResponse::default();
    match step {
        Step::AddLearner { peer } => {
            resp.change_peer = Some(change(
                peer,
                PeerRole::Learner,
                ConfChangeType::AddLearnerNode,
            ))
        }
        Step::PromoteLearner { peer } => {
            resp.change_peer = Some(change(peer, PeerRole::Voter, ConfChangeType::AddNode))
        }
        Step::RemovePeer { peer } => {
            let role = peer.role();
            resp.change_peer = Some(change(peer, role, ConfChangeType::RemoveNode))
        }
        Step::TransferLeader { to } => {
            resp.transfer_leader = Some(pdpb::TransferLeader {
                peer: Some(to),
                peers: vec![],
            })
        }
        Step::Split { keys, .. } => {
            resp.split_region = Some(pdpb::SplitRegion {
                policy: pdpb::CheckPolicy::Usekey as i32,
                keys,
            })
        }
    }
    resp
}

fn operator_info(op: OperatorStatus) -> OperatorInfo {
    OperatorInfo {
        region_id: op.region_id,
        kind: op.kind.as_str().into(),
        description: op.description,
        step: u32::try_from(op.step).unwrap_or(u32::MAX),
        steps: u32::try_from(op.steps).unwrap_or(u32::MAX),
        age_ms: u64::try_from(op.age.as_millis()).unwrap_or(u64::MAX),
        // The scheduler records "did not finish" for both a timeout and a cancel.
        state: match op.finished {
            None => "running",
            Some(true) => "finished",
            Some(false) => "timed out",
        }
        .into(),
    }
}

#[tonic::async_trait]
impl Pd for SchedulerService {
    async fn get_members(
        &self,
        request: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetMembers", req.header.as_ref(), |_| {
            let member = self.member();
            Ok(pdpb::GetMembersResponse {
                header: None,
                members: vec![member.clone()],
                leader: Some(member.clone()),
                etcd_leader: Some(member),
            })
        })
    }

    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let this = self.clone();
        // One answer per request, in order; the stream ends when the client closes its side.
        let answers = request
            .into_inner()
            .map(move |req| req.map(|req| this.tso_reply(req)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn bootstrap(
        &self,
        request: Request<pdpb::BootstrapRequest>,
    ) -> Result<Response<pdpb::BootstrapResponse>, Status> {
        let req = request.into_inner();
        let (store, region) = (req.store, req.region);
        self.reply_blocking("Bootstrap", req.header.as_ref(), move |s| {
            let store = store.ok_or_else(|| invalid("bootstrap without a store"))?;
            let region = region.ok_or_else(|| invalid("bootstrap without a region"))?;
            if store.id == 0 || region.id == 0 {
                return Err(invalid("bootstrap with store id or region id 0"));
            }
            s.cluster.bootstrap(store, region)?;
            Ok(pdpb::BootstrapResponse::default())
        })
        .await
    }

    async fn is_bootstrapped(
        &self,
        request: Request<pdpb::IsBootstrappedRequest>,
    ) -> Result<Response<pdpb::IsBootstrappedResponse>, Status> {
        let req = request.into_inner();
        self.reply("IsBootstrapped", req.header.as_ref(), |s| {
            Ok(pdpb::IsBootstrappedResponse {
                header: None,
                bootstrapped: s.cluster.is_bootstrapped(),
            })
        })
    }

    async fn alloc_id(
        &self,
        request: Request<pdpb::AllocIdRequest>,
    ) -> Result<Response<pdpb::AllocIdResponse>, Status> {
        let req = request.into_inner();
        self.reply_blocking("AllocID", req.header.as_ref(), |s| {
            Ok(pdpb::AllocIdResponse {
                header: None,
                id: s.ids.alloc_one()?,
            })
        })
        .await
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetStore", req.header.as_ref(), |s| {
            let info = s.cluster.store_info(req.store_id)?;
            let stats = (info.stats != StoreStats::default())
                .then(|| pd_store_stats(req.store_id, &info.stats));
            Ok(pdpb::GetStoreResponse {
                header: None,
                store: Some(info.store),
                stats,
            })
        })
    }

    async fn put_store(
        &self,
        request: Request<pdpb::PutStoreRequest>,
    ) -> Result<Response<pdpb::PutStoreResponse>, Status> {
        let req = request.into_inner();
        let store = req.store;
        self.reply_blocking("PutStore", req.header.as_ref(), move |s| {
            let store = store.ok_or_else(|| invalid("PutStore without a store"))?;
            s.cluster.put_store(store)?;
            Ok(pdpb::PutStoreResponse::default())
        })
        .await
    }

    async fn get_all_stores(
        &self,
        request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetAllStores", req.header.as_ref(), |s| {
            let stores = s
                .cluster
                .stores()
                .into_iter()
                .filter(|st| {
                    !req.exclude_tombstone_stores || st.state() != metapb::StoreState::Tombstone
                })
                .collect();
            Ok(pdpb::GetAllStoresResponse {
                header: None,
                stores,
            })
        })
    }

    async fn store_heartbeat(
        &self,
        request: Request<pdpb::StoreHeartbeatRequest>,
    ) -> Result<Response<pdpb::StoreHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let stats = req.stats;
        self.reply_blocking("StoreHeartbeat", req.header.as_ref(), move |s| {
            require_bootstrapped(s)?;
            let stats = stats.ok_or_else(|| invalid("store heartbeat without stats"))?;
            let store_id = stats.store_id;
            let stats = StoreStats {
                capacity: stats.capacity,
                used: stats.used_size,
                available: stats.available,
                region_count: u64::from(stats.region_count),
                // pdpb's StoreStats has no leader count: the routing table knows it.
                leader_count: s.cluster.leader_count(store_id),
            };
            let regions_with_operators = s.store_heartbeat(store_id, stats)?;
            Ok(pdpb::StoreHeartbeatResponse {
                regions_with_operators,
                ..Default::default()
            })
        })
        .await
    }

    type RegionHeartbeatStream = BoxStream<pdpb::RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        _request: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        Err(Status::unimplemented(
            "region heartbeats are served by schedulerpb.Scheduler/RegionHeartbeat (unary), \
             not by the pdpb.PD stream",
        ))
    }

    async fn get_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetRegion", req.header.as_ref(), |s| {
            require_bootstrapped(s)?;
            Ok(region_response(s.cluster.region_by_key(&req.region_key)))
        })
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetRegionByID", req.header.as_ref(), |s| {
            require_bootstrapped(s)?;
            Ok(region_response(s.cluster.region_by_id(req.region_id)))
        })
    }

    async fn scan_regions(
        &self,
        request: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        let req = request.into_inner();
        self.reply("ScanRegions", req.header.as_ref(), |s| {
            require_bootstrapped(s)?;
            let limit = match usize::try_from(req.limit) {
                Ok(n) if n > 0 => n.min(MAX_SCAN_REGIONS),
                _ => MAX_SCAN_REGIONS,
            };
            let mut resp = pdpb::ScanRegionsResponse::default();
            for info in s.cluster.scan_regions(&req.start_key, &req.end_key, limit) {
                // The legacy parallel arrays, then the current form.
                resp.region_metas.push(info.region.clone());
                resp.leaders.push(info.leader.unwrap_or_default());
                resp.regions.push(pdpb::Region {
                    region: Some(info.region),
                    leader: info.leader,
                    down_peers: peer_stats(info.down_peers),
                    pending_peers: info.pending_peers,
                });
            }
            Ok(resp)
        })
    }

    async fn ask_batch_split(
        &self,
        request: Request<pdpb::AskBatchSplitRequest>,
    ) -> Result<Response<pdpb::AskBatchSplitResponse>, Status> {
        let req = request.into_inner();
        let (region, count) = (req.region, req.split_count);
        self.reply_blocking("AskBatchSplit", req.header.as_ref(), move |s| {
            require_bootstrapped(s)?;
            let region = region.ok_or_else(|| invalid("AskBatchSplit without a region"))?;
            if s.cluster.region_by_id(region.id).is_none() {
                return Err(failure(
                    ErrorType::RegionNotFound,
                    format!("region {} is not known", region.id),
                ));
            }
            if count == 0 || count > MAX_SPLITS_PER_ASK {
                return Err(invalid(format!(
                    "split count {count} must be 1 to {MAX_SPLITS_PER_ASK}"
                )));
            }
            let peers = region.peers.len();
            if peers == 0 || peers > MAX_PEERS {
                return Err(invalid(format!(
                    "region {} has {peers} peers (1 to {MAX_PEERS} expected)",
                    region.id
                )));
            }
            // Per new region: its id, then one id for each peer of the region.
            let ids = s.ids.alloc(count as usize * (1 + peers))?;
            let ids = ids
                .chunks_exact(1 + peers)
                .map(|c| pdpb::SplitId {
                    new_region_id: c[0],
                    new_peer_ids: c[1..].to_vec(),
                })
                .collect();
            Ok(pdpb::AskBatchSplitResponse { header: None, ids })
        })
        .await
    }

    /// The regions of one split. As PD reads them: the last is the parent (its new range and
    /// version), the others the regions split off it (TiKV's right-derived split order).
    async fn report_batch_split(
        &self,
        request: Request<pdpb::ReportBatchSplitRequest>,
    ) -> Result<Response<pdpb::ReportBatchSplitResponse>, Status> {
        let req = request.into_inner();
        let regions = req.regions;
        self.reply_blocking("ReportBatchSplit", req.header.as_ref(), move |s| {
            require_bootstrapped(s)?;
            let Some((parent, new_regions)) = regions.split_last() else {
                return Err(invalid("ReportBatchSplit without regions"));
            };
            if new_regions.is_empty() {
                return Err(invalid(format!(
                    "ReportBatchSplit of region {} without new regions",
                    parent.id
                )));
            }
            // A stale report (a newer epoch is known) is ignored, as a stale heartbeat is.
            s.cluster.report_split(parent, new_regions)?;
            Ok(pdpb::ReportBatchSplitResponse::default())
        })
        .await
    }

    async fn get_cluster_config(
        &self,
        request: Request<pdpb::GetClusterConfigRequest>,
    ) -> Result<Response<pdpb::GetClusterConfigResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetClusterConfig", req.header.as_ref(), |s| {
            Ok(pdpb::GetClusterConfigResponse {
                header: None,
                cluster: Some(metapb::Cluster {
                    id: s.cluster_id(),
                    max_peer_count: u32::try_from(s.config().max_replicas).unwrap_or(u32::MAX),
                }),
            })
        })
    }

    async fn get_gc_safe_point(
        &self,
        request: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetGCSafePoint", req.header.as_ref(), |s| {
            Ok(pdpb::GetGcSafePointResponse {
                header: None,
                safe_point: s.gc_safe_point.get(),
            })
        })
    }

    /// Monotone, as PD's: an update below the safe point in force changes nothing and
    /// answers the one in force.
    async fn update_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let req = request.into_inner();
        let asked = req.safe_point;
        self.reply_blocking("UpdateGCSafePoint", req.header.as_ref(), move |s| {
            let before = s.gc_safe_point.get();
            let new_safe_point = s.gc_safe_point.update(asked)?;
            if new_safe_point != before {
                slog::info!(s.logger(), "GC safe point advanced"; "from" => before,
                    "to" => new_safe_point);
            }
            Ok(pdpb::UpdateGcSafePointResponse {
                header: None,
                new_safe_point,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl SchedulerRpc for SchedulerService {
    async fn region_heartbeat(
        &self,
        request: Request<pdpb::RegionHeartbeatRequest>,
    ) -> Result<Response<pdpb::RegionHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.reply_blocking("RegionHeartbeat", header.as_ref(), move |s| {
            require_bootstrapped(s)?;
            let region = req
                .region
                .ok_or_else(|| invalid("region heartbeat without a region"))?;
            let leader = req.leader.ok_or_else(|| {
                invalid(format!(
                    "heartbeat of region {} without a leader",
                    region.id
                ))
            })?;
            if region.id == 0 || !region.peers.iter().any(|p| p.id == leader.id) {
                return Err(invalid(format!(
                    "heartbeat of region {}: leader {} is not one of its peers",
                    region.id, leader.id
                )));
            }
            let (region_id, region_epoch) = (region.id, region.region_epoch);
            let info = RegionInfo {
                region,
                leader: Some(leader),
                down_peers: req.down_peers.into_iter().filter_map(|p| p.peer).collect(),
                pending_peers: req.pending_peers,
                approximate_size: req.approximate_size,
                approximate_keys: req.approximate_keys,
            };
            let mut resp = match s.region_heartbeat(info)? {
                Some(step) => step_response(step),
                None => pdpb::RegionHeartbeatResponse::default(),
            };
            resp.region_id = region_id;
            resp.region_epoch = region_epoch;
            Ok(resp)
        })
        .await
    }

    async fn add_operator(
        &self,
        request: Request<schedulerpb::AddOperatorRequest>,
    ) -> Result<Response<schedulerpb::AddOperatorResponse>, Status> {
        let req = request.into_inner();
        let (region_id, kind) = (req.region_id, req.kind);
        self.reply_blocking("AddOperator", req.header.as_ref(), move |s| {
            let op = match kind.ok_or_else(|| invalid("AddOperator without an operator"))? {
                Kind::Split(at) => AdminOp::Split(at.keys),
                Kind::TransferLeaderToStore(to_store) => AdminOp::TransferLeader { to_store },
                Kind::AddPeerOnStore(store) => AdminOp::AddPeer { store },
                Kind::RemovePeerOnStore(store) => AdminOp::RemovePeer { store },
            };
            Ok(schedulerpb::AddOperatorResponse {
                header: None,
                description: s.add_admin_operator(region_id, op)?,
            })
        })
        .await
    }

    async fn list_operators(
        &self,
        request: Request<schedulerpb::ListOperatorsRequest>,
    ) -> Result<Response<schedulerpb::ListOperatorsResponse>, Status> {
        let req = request.into_inner();
        self.reply("ListOperators", req.header.as_ref(), |s| {
            Ok(schedulerpb::ListOperatorsResponse {
                header: None,
                operators: s.operators().into_iter().map(operator_info).collect(),
            })
        })
    }

    async fn check_api_version(
        &self,
        request: Request<schedulerpb::CheckApiVersionRequest>,
    ) -> Result<Response<schedulerpb::CheckApiVersionResponse>, Status> {
        let req = request.into_inner();
        let asked = ApiVersion::from_proto(req.api_version());
        self.reply_blocking("CheckApiVersion", req.header.as_ref(), move |s| {
            let chosen = s.check_api_version(asked)?;
            Ok(schedulerpb::CheckApiVersionResponse {
                header: None,
                api_version: chosen.to_proto() as i32,
            })
        })
        .await
    }

    /// Creates a keyspace; the regions it falls in split at its boundaries with their next
    /// heartbeats.
    async fn create_keyspace(
        &self,
        request: Request<schedulerpb::CreateKeyspaceRequest>,
    ) -> Result<Response<schedulerpb::CreateKeyspaceResponse>, Status> {
        let req = request.into_inner();
        let name = req.name;
        self.reply_blocking("CreateKeyspace", req.header.as_ref(), move |s| {
            let keyspace = s.keyspaces.create(&name, s.now_secs())?;
            slog::info!(s.logger(), "keyspace created"; "name" => &keyspace.name,
                "id" => keyspace.id);
            Ok(schedulerpb::CreateKeyspaceResponse {
                header: None,
                keyspace: Some(keyspace),
            })
        })
        .await
    }

    async fn detect_deadlock(
        &self,
        request: Request<schedulerpb::DetectDeadlockRequest>,
    ) -> Result<Response<schedulerpb::DetectDeadlockResponse>, Status> {
        let req = request.into_inner();
        self.reply("DetectDeadlock", req.header.as_ref(), |s| {
            let edge = req
                .edge
                .ok_or_else(|| invalid("the request has no wait-for edge"))?;
            let (waiter_ts, holder_ts) = (edge.waiter_ts, edge.holder_ts);
            let ttl = Duration::from_millis(req.ttl_ms.max(1));
            let detected = s
                .deadlocks
                .detect(edge, ttl, s.clock_now())
                .map_err(|e| invalid(e.to_string()))?;
            let (recorded, deadlock_chain) = match detected {
                Detected::Recorded => (true, Vec::new()),
                Detected::Full => {
                    slog::warn!(s.logger(), "deadlock detector full: a wait goes unchecked";
                        "edges" => s.deadlocks.len());
                    (false, Vec::new())
                }
                Detected::Deadlock(chain) => {
                    slog::info!(s.logger(), "deadlock refused";
                        "waiter_ts" => waiter_ts, "holder_ts" => holder_ts,
                        "cycle_len" => chain.len() + 1);
                    (false, chain)
                }
            };
            Ok(schedulerpb::DetectDeadlockResponse {
                header: None,
                deadlock_chain,
                recorded,
            })
        })
    }

    async fn clean_up_wait_for(
        &self,
        request: Request<schedulerpb::CleanUpWaitForRequest>,
    ) -> Result<Response<schedulerpb::CleanUpWaitForResponse>, Status> {
        let req = request.into_inner();
        self.reply("CleanUpWaitFor", req.header.as_ref(), |s| {
            let edge = req
                .edge
                .as_ref()
                .ok_or_else(|| invalid("the request has no wait-for edge"))?;
            s.deadlocks.clean_up_wait_for(edge);
            Ok(schedulerpb::CleanUpWaitForResponse::default())
        })
    }
}

/// PD's keyspace service: what a client with a keyspace (API V2) asks first.
#[tonic::async_trait]
impl Keyspace for SchedulerService {
    async fn load_keyspace(
        &self,
        request: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        let req = request.into_inner();
        self.reply("LoadKeyspace", req.header.as_ref(), |s| {
            Ok(keyspacepb::LoadKeyspaceResponse {
                header: None,
                keyspace: Some(s.keyspaces.load(&req.name)?),
            })
        })
    }

    async fn get_all_keyspaces(
        &self,
        request: Request<keyspacepb::GetAllKeyspacesRequest>,
    ) -> Result<Response<keyspacepb::GetAllKeyspacesResponse>, Status> {
        let req = request.into_inner();
        self.reply("GetAllKeyspaces", req.header.as_ref(), |s| {
            Ok(keyspacepb::GetAllKeyspacesResponse {
                header: None,
                keyspaces: s.keyspaces.list(req.start_id, req.limit as usize)?,
            })
        })
    }
}

/// Serves `pdpb.PD` and `schedulerpb.Scheduler` over `scheduler` on `listener` until
/// `shutdown` completes (then lets calls in flight finish). `advertise_url` is what
/// `GetMembers` tells clients to use; messages are bounded to `max_message_bytes` both ways.
pub async fn serve(
    scheduler: Arc<Scheduler>,
    listener: tokio::net::TcpListener,
    advertise_url: String,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let http = crate::http::PdHttp::new(scheduler.clone());
    let service = Arc::new(SchedulerService::new(scheduler, advertise_url));
    // gzip: accepted, and used for answers to a client that asks for it.
    let pd = PdServer::from_arc(service.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let keyspace = KeyspaceServer::from_arc(service.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let sched = SchedulerServer::from_arc(service)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    // Small request/response calls: Nagle's delay would add to each of them.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    tonic::transport::Server::builder()
        // PD's HTTP API shares the port; curl and browsers speak HTTP/1.1.
        .accept_http1(true)
        .add_service(http)
        .add_service(pd)
        .add_service(keyspace)
        .add_service(sched)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engine::MemEngine;
    use proto::build::{self, peer};
    use proto::metapb::{Region, Store};
    use proto::pdpb::pd_client::PdClient;
    use proto::schedulerpb::scheduler_client::SchedulerClient;

    use super::*;

    fn header(cluster_id: u64) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id,
            sender_id: 0,
        })
    }

    /// The error type in a response header (`Ok` for none).
    fn error_of(h: &Option<pdpb::ResponseHeader>) -> ErrorType {
        h.as_ref()
            .and_then(|h| h.error.as_ref())
            .map_or(ErrorType::Ok, |e| e.r#type())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_services_answer_over_loopback() {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        // No checker runs (a second store would get a replica): only the operators asked for.
        let config = crate::Config::without_checkers();
        let scheduler = Arc::new(
            Scheduler::open(
                Arc::new(MemEngine::new()),
                &config,
                util::SystemClock::shared(),
                &logger,
            )
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            scheduler.clone(),
            listener,
            url.clone(),
            1 << 20,
            async {
                let _ = stopped.await;
            },
        ));
        tokio::time::timeout(Duration::from_secs(60), exercise(&scheduler, &url))
            .await
            .expect("the calls finish in time");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }

    async fn exercise(scheduler: &Scheduler, url: &str) {
        // gzip both ways, as TiKV's CI runs its clients: every call below is compressed.
        let mut pd = PdClient::connect(url.to_string())
            .await
            .unwrap()
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        let mut sched = SchedulerClient::connect(url.to_string()).await.unwrap();

        // Discovery: cluster id 0 is accepted and learns the id.
        let members = pd
            .get_members(pdpb::GetMembersRequest { header: header(0) })
            .await
            .unwrap();
        assert_eq!(
            members
                .metadata()
                .get("grpc-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("gzip"),
            "the answer is compressed for a client that asks"
        );
        let members = members.into_inner();
        let id = members.header.as_ref().unwrap().cluster_id;
        assert_eq!(id, scheduler.cluster_id());
        assert_ne!(id, 0);
        assert_eq!(members.members.len(), 1);
        let leader = members.leader.unwrap();
        assert_eq!(leader.client_urls, vec![url.to_string()]);
        assert_eq!(members.etcd_leader, Some(leader));

        // The GC safe point only moves forward and answers the one in force.
        let update = |safe_point| pdpb::UpdateGcSafePointRequest {
            header: header(id),
            safe_point,
        };
        let moved = pd.update_gc_safe_point(update(200)).await.unwrap();
        assert_eq!(moved.into_inner().new_safe_point, 200);
        let back = pd.update_gc_safe_point(update(100)).await.unwrap();
        assert_eq!(back.into_inner().new_safe_point, 200);
        let got = pd
            .get_gc_safe_point(pdpb::GetGcSafePointRequest { header: header(id) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.safe_point, 200);
        assert_eq!(scheduler.gc_safe_point.get(), 200);

        // Another cluster's request is refused in the header.
        let other = pd
            .is_bootstrapped(pdpb::IsBootstrappedRequest {
                header: header(id + 1),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&other.header), ErrorType::InvalidValue);

        let boot = |bootstrapped| pdpb::IsBootstrappedResponse {
            header: Some(pdpb::ResponseHeader {
                cluster_id: id,
                error: None,
            }),
            bootstrapped,
        };
        let ask_boot = || pdpb::IsBootstrappedRequest { header: header(id) };
        assert_eq!(
            pd.is_bootstrapped(ask_boot()).await.unwrap().into_inner(),
            boot(false)
        );
        let not_yet = pd
            .get_region(pdpb::GetRegionRequest {
                header: header(id),
                region_key: b"a".to_vec(),
                need_buckets: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&not_yet.header), ErrorType::NotBootstrapped);

        let mut ids = vec![];
        for _ in 0..3 {
            let r = pd
                .alloc_id(pdpb::AllocIdRequest { header: header(id) })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(error_of(&r.header), ErrorType::Ok);
            ids.push(r.id);
        }
        assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
        let (store_id, region_id, peer_id) = (ids[0], ids[1], ids[2]);
        let store = Store {
            id: store_id,
            address: "127.0.0.1:20160".into(),
            ..Default::default()
        };
        let region = build::region(region_id)
            .epoch(1, 1)
            .peers([peer(peer_id, store_id)])
            .build();
        let bootstrap = pdpb::BootstrapRequest {
            header: header(id),
            store: Some(store.clone()),
            region: Some(region.clone()),
        };
        let r = pd.bootstrap(bootstrap.clone()).await.unwrap().into_inner();
        assert_eq!(error_of(&r.header), ErrorType::Ok);
        let r = pd.bootstrap(bootstrap).await.unwrap().into_inner();
        assert_eq!(error_of(&r.header), ErrorType::AlreadyBootstrapped);
        assert_eq!(
            pd.is_bootstrapped(ask_boot()).await.unwrap().into_inner(),
            boot(true)
        );

        // Stores.
        let second = Store {
            id: 1000,
            address: "127.0.0.1:20161".into(),
            ..Default::default()
        };
        let r = pd
            .put_store(pdpb::PutStoreRequest {
                header: header(id),
                store: Some(second.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&r.header), ErrorType::Ok);
        let r = pd
            .store_heartbeat(pdpb::StoreHeartbeatRequest {
                header: header(id),
                stats: Some(pdpb::StoreStats {
                    store_id: 1000,
                    capacity: 100,
                    available: 60,
                    used_size: 40,
                    region_count: 0,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&r.header), ErrorType::Ok);
        let got = pd
            .get_store(pdpb::GetStoreRequest {
                header: header(id),
                store_id: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.store, Some(second));
        assert_eq!(
            got.stats.map(|s| (s.capacity, s.used_size)),
            Some((100, 40))
        );
        let missing = pd
            .get_store(pdpb::GetStoreRequest {
                header: header(id),
                store_id: 999_999,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&missing.header), ErrorType::EntryNotFound);
        let all = pd
            .get_all_stores(pdpb::GetAllStoresRequest {
                header: header(id),
                exclude_tombstone_stores: true,
            })
            .await
            .unwrap()
            .into_inner();
        let all: Vec<u64> = all.stores.iter().map(|s| s.id).collect();
        assert_eq!(all, vec![store_id, 1000]);

        // Routing.
        let get_region = |key: &[u8]| pdpb::GetRegionRequest {
            header: header(id),
            region_key: key.to_vec(),
            need_buckets: false,
        };
        let r = pd.get_region(get_region(b"k")).await.unwrap().into_inner();
        assert_eq!(r.region.as_ref().map(|r| r.id), Some(region_id));
        let r = pd
            .get_region_by_id(pdpb::GetRegionByIdRequest {
                header: header(id),
                region_id: 424_242,
                need_buckets: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((error_of(&r.header), r.region), (ErrorType::Ok, None));

        // A heartbeat names the leader, which routing then reports.
        let heartbeat = |region: &Region| pdpb::RegionHeartbeatRequest {
            header: header(id),
            region: Some(region.clone()),
            leader: Some(peer(peer_id, store_id)),
            ..Default::default()
        };
        let r = sched
            .region_heartbeat(heartbeat(&region))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&r.header), ErrorType::Ok);
        assert_eq!((r.region_id, r.change_peer), (region_id, None));
        let scan = pd
            .scan_regions(pdpb::ScanRegionsRequest {
                header: header(id),
                start_key: vec![],
                limit: 0,
                end_key: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(scan.region_metas, vec![region.clone()]);
        assert_eq!(scan.leaders, vec![peer(peer_id, store_id)]);
        assert_eq!(scan.regions.len(), 1);
        assert_eq!(scan.regions[0].leader, Some(peer(peer_id, store_id)));

        // Timestamps: the last of each batch, increasing across requests.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut answers = pd
            .tso(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut last = (0, 0);
        for _ in 0..3 {
            tx.send(pdpb::TsoRequest {
                header: header(id),
                count: 10,
                dc_location: String::new(),
            })
            .await
            .unwrap();
            let r = answers.message().await.unwrap().unwrap();
            assert_eq!((error_of(&r.header), r.count), (ErrorType::Ok, 10));
            let ts = r.timestamp.unwrap();
            // The batch is logical - 9 ..= logical, all after the previous batch.
            assert!(ts.logical >= 10);
            assert!(
                (ts.physical, ts.logical - 9) > last,
                "{ts:?} after {last:?}"
            );
            last = (ts.physical, ts.logical);
        }
        tx.send(pdpb::TsoRequest {
            header: header(id),
            count: 0,
            dc_location: String::new(),
        })
        .await
        .unwrap();
        let r = answers.message().await.unwrap().unwrap();
        assert_eq!(error_of(&r.header), ErrorType::InvalidValue);
        drop(tx);
        assert!(answers.message().await.unwrap().is_none());

        // Operators: refusals say why, in the header.
        let add_op = |kind| schedulerpb::AddOperatorRequest {
            header: header(id),
            region_id,
            kind: Some(kind),
        };
        for (kind, expected) in [
            (
                Kind::RemovePeerOnStore(store_id),
                "transfer the leader first",
            ),
            (Kind::AddPeerOnStore(store_id), "already has peer"),
            (Kind::AddPeerOnStore(777), "not known"),
            (Kind::TransferLeaderToStore(1000), "no voter"),
        ] {
            let r = sched.add_operator(add_op(kind)).await.unwrap().into_inner();
            let error = r.header.and_then(|h| h.error).unwrap();
            assert_eq!(error.r#type(), ErrorType::InvalidValue);
            assert!(error.message.contains(expected), "{}", error.message);
        }
        let r = sched
            .add_operator(add_op(Kind::Split(schedulerpb::SplitAt {
                keys: vec![b"m".to_vec()],
            })))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&r.header), ErrorType::Ok);
        assert!(r.description.starts_with("split"), "{}", r.description);
        let ops = sched
            .list_operators(schedulerpb::ListOperatorsRequest { header: header(id) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ops.operators.len(), 1);
        assert_eq!(ops.operators[0].state, "running");
        // The next heartbeat carries the split.
        let r = sched
            .region_heartbeat(heartbeat(&region))
            .await
            .unwrap()
            .into_inner();
        let split = r.split_region.unwrap();
        assert_eq!(
            (split.policy(), split.keys),
            (pdpb::CheckPolicy::Usekey, vec![b"m".to_vec()])
        );
        assert_eq!(r.region_epoch, region.region_epoch);

        // The split's ids, and its report: new regions first, the parent last.
        let r = pd
            .ask_batch_split(pdpb::AskBatchSplitRequest {
                header: header(id),
                region: Some(region.clone()),
                split_count: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.ids.len(), 2);
        assert!(r.ids.iter().all(|s| s.new_peer_ids.len() == 1));
        let split_id = &r.ids[0];
        let right = build::region(split_id.new_region_id)
            .range(b"m", b"")
            .epoch(1, 2)
            .peers([peer(split_id.new_peer_ids[0], store_id)])
            .build();
        let left = Region {
            end_key: b"m".to_vec(),
            region_epoch: right.region_epoch,
            ..region.clone()
        };
        let r = pd
            .report_batch_split(pdpb::ReportBatchSplitRequest {
                header: header(id),
                regions: vec![right.clone(), left],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_of(&r.header), ErrorType::Ok);
        let r = pd.get_region(get_region(b"z")).await.unwrap().into_inner();
        assert_eq!(r.region, Some(right));

        let config = pd
            .get_cluster_config(pdpb::GetClusterConfigRequest { header: header(id) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            config.cluster,
            Some(metapb::Cluster {
                id,
                max_peer_count: 3
            })
        );

        // The pdpb heartbeat stream points at the unary one.
        let status = pd
            .region_heartbeat(futures::stream::empty())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);

        // PD's HTTP API on the same port, over plain HTTP/1.1, agrees with the routing table.
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = url.trim_start_matches("http://");
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            conn.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            conn.read_to_string(&mut out).await.unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            (
                head.to_string(),
                serde_json::from_str::<serde_json::Value>(body).unwrap(),
            )
        };
        let (head, regions) = get("/pd/api/v1/regions").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            regions["count"].as_u64(),
            Some(scheduler.cluster.regions().len() as u64)
        );
        let (head, body) = get("/pd/api/v1/region/id/nope").await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert!(body["error"].is_string());
    }
}
