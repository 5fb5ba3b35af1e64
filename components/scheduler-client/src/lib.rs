//! The store's view of the placement scheduler, in two implementations of
//! `raftstore::SchedulerClient` (and of [`ClusterControl`], what bootstrap needs):
//!
//! - [`InProcessClient`]: a scheduler running in the same process (the test cluster, the
//!   playground's single process).
//! - [`GrpcSchedulerClient`] ([`grpc`]): the scheduler over gRPC (`scheduler::service`), with
//!   several endpoints tried in turn, per-call timeouts and lazily reconnecting channels. Its
//!   trait methods wait for calls run on a tokio runtime (its own or one it was given), so
//!   they must not be called from async context (they refuse to).
//!
//! [`bootstrap_store`] makes a fresh data directory a store of the scheduler's cluster over
//! either (the first store bootstraps the cluster).
//!
//! # Invariants
//! - While the scheduler is restarting or unreachable every call fails with
//!   `Error::Scheduler`, which the store treats as "try later" (a heartbeat is skipped, a split
//!   is asked again).
//!
//! # Must not depend on
//! test-cluster.

pub mod grpc;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use api_version::ApiVersion;
use engine::{keys, KvEngine, WriteBatch, CF_RAFT};
use proto::metapb::{Peer, Region, RegionEpoch, Store};
use proto::schedulerpb::WaitForEdge;
use raftstore::{
    DeadlockCheck, Error, RegionHeartbeat, Result, SchedulerClient, SchedulerStep, StoreHeartbeat,
};
use scheduler::deadlock::Detected;
use scheduler::{RegionInfo, Scheduler, Step, StoreStats};

pub use grpc::{GrpcConfig, GrpcSchedulerClient};

/// What [`ClusterControl::bootstrap`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// This call bootstrapped the cluster.
    Done,
    /// Another store was first.
    AlreadyBootstrapped,
}

/// What [`bootstrap_store`] asks of the scheduler, besides ids. The calls block.
pub trait ClusterControl: SchedulerClient {
    fn is_bootstrapped(&self) -> Result<bool>;
    /// Records the first store and the first region, unless a bootstrap came first.
    fn bootstrap(&self, store: Store, region: Region) -> Result<BootstrapOutcome>;
    /// Adds or updates a store.
    fn put_store(&self, store: Store) -> Result<()>;
    /// Whether the scheduler knows region `region_id`.
    fn region_recorded(&self, region_id: u64) -> Result<bool>;
    /// A joining store's API version; the answer is the cluster's (the first store's).
    fn check_api_version(&self, asked: ApiVersion) -> Result<ApiVersion>;
}

/// Id batches handed out to stores, kept for diagnostics (and split-latency benches).
const ALLOCATION_LOG: usize = 4096;

/// A handle on an in-process scheduler that may be stopped and reopened under it.
#[derive(Clone, Default)]
pub struct InProcessClient {
    slot: Arc<RwLock<Option<Arc<Scheduler>>>>,
    allocations: Arc<Mutex<Vec<(u64, Instant)>>>,
}

fn scheduler_err(e: scheduler::Error) -> Error {
    Error::Scheduler {
        detail: e.to_string(),
    }
}

impl InProcessClient {
    pub fn new(scheduler: Arc<Scheduler>) -> InProcessClient {
        let client = InProcessClient::default();
        client.set(Some(scheduler));
        client
    }

    /// The scheduler, unless it is being restarted.
    pub fn get(&self) -> Result<Arc<Scheduler>> {
        util::read(&self.slot)
            .clone()
            .ok_or_else(|| Error::Scheduler {
                detail: "the scheduler is restarting".into(),
            })
    }

    /// Takes the scheduler out (`None`) or puts one in.
    pub fn set(&self, scheduler: Option<Arc<Scheduler>>) -> Option<Arc<Scheduler>> {
        std::mem::replace(&mut *util::write(&self.slot), scheduler)
    }

    /// When each batch of ids was handed out, by its first id (the most recent 4096).
    pub fn allocations(&self) -> Vec<(u64, Instant)> {
        util::lock(&self.allocations).clone()
    }
}

impl SchedulerClient for InProcessClient {
    fn alloc_ids(&self, count: usize) -> Result<Vec<u64>> {
        let ids = self.get()?.ids.alloc(count).map_err(scheduler_err)?;
        if let Some(first) = ids.first() {
            let mut log = util::lock(&self.allocations);
            if log.len() >= ALLOCATION_LOG {
                log.remove(0);
            }
            log.push((*first, Instant::now()));
        }
        Ok(ids)
    }

    fn report_split(&self, parent: &Region, new_regions: &[Region]) {
        if let Ok(s) = self.get() {
            let _ = s.cluster.report_split(parent, new_regions);
        }
    }

    fn region_heartbeat(&self, hb: RegionHeartbeat) -> Result<Option<SchedulerStep>> {
        let info = RegionInfo {
            region: hb.region,
            leader: Some(hb.leader),
            down_peers: hb.down_peers,
            pending_peers: hb.pending_peers,
            approximate_size: hb.approximate_size,
            approximate_keys: hb.approximate_keys,
        };
        let step = self.get()?.region_heartbeat(info).map_err(scheduler_err)?;
        Ok(step.map(|step| match step {
            Step::AddLearner { peer } => SchedulerStep::AddLearner(peer),
            Step::PromoteLearner { peer } => SchedulerStep::PromoteLearner(peer),
            Step::RemovePeer { peer } => SchedulerStep::RemovePeer(peer),
            Step::TransferLeader { to } => SchedulerStep::TransferLeader(to),
            Step::Split { keys, .. } => SchedulerStep::Split(keys),
        }))
    }

    fn store_heartbeat(&self, hb: StoreHeartbeat) -> Result<Vec<u64>> {
        let stats = StoreStats {
            capacity: hb.capacity,
            used: hb.used,
            available: hb.available,
            region_count: hb.region_count,
            leader_count: hb.leader_count,
        };
        self.get()?
            .store_heartbeat(hb.store_id, stats)
            .map_err(scheduler_err)
    }

    fn gc_safe_point(&self) -> Result<u64> {
        Ok(self.get()?.gc_safe_point.get())
    }

    fn tso(&self) -> Result<u64> {
        self.get()?.tso.get(1).map_err(scheduler_err)
    }

    fn detect_deadlock(&self, edge: WaitForEdge, ttl: Duration) -> Result<DeadlockCheck> {
        let scheduler = self.get()?;
        let detected = scheduler
            .deadlocks
            .detect(edge, ttl, scheduler.clock_now())
            .map_err(|e| Error::Scheduler {
                detail: e.to_string(),
            })?;
        Ok(match detected {
            Detected::Recorded => DeadlockCheck::Recorded,
            Detected::Full => DeadlockCheck::NotRecorded,
            Detected::Deadlock(chain) => DeadlockCheck::Deadlock(chain),
        })
    }

    fn clean_up_wait_for(&self, edge: WaitForEdge) -> Result<()> {
        self.get()?.deadlocks.clean_up_wait_for(&edge);
        Ok(())
    }
}

impl ClusterControl for InProcessClient {
    fn is_bootstrapped(&self) -> Result<bool> {
        Ok(self.get()?.cluster.is_bootstrapped())
    }

    fn bootstrap(&self, store: Store, region: Region) -> Result<BootstrapOutcome> {
        match self.get()?.cluster.bootstrap(store, region) {
            Ok(()) => Ok(BootstrapOutcome::Done),
            Err(scheduler::Error::AlreadyBootstrapped { .. }) => {
                Ok(BootstrapOutcome::AlreadyBootstrapped)
            }
            Err(e) => Err(scheduler_err(e)),
        }
    }

    fn put_store(&self, store: Store) -> Result<()> {
        self.get()?.cluster.put_store(store).map_err(scheduler_err)
    }

    fn region_recorded(&self, region_id: u64) -> Result<bool> {
        Ok(self.get()?.cluster.region_by_id(region_id).is_some())
    }

    fn check_api_version(&self, asked: ApiVersion) -> Result<ApiVersion> {
        self.get()?.check_api_version(asked).map_err(scheduler_err)
    }
}

/// Makes `kv` a store of the scheduler's cluster and returns its store id. A directory that
/// is already a store keeps its id (and is registered again). A fresh one gets `store_id`, or
/// an id from the scheduler; if the cluster is not bootstrapped yet, this store bootstraps it
/// with the first region (the whole key space, one peer here). If another store bootstrapped
/// first, the local first region is taken back and this store just joins.
///
/// `api_version` must be the cluster's (the first store's choice) and, for a directory
/// already in use, the one its data was written under; nothing is written otherwise.
pub fn bootstrap_store<EK: KvEngine, C: ClusterControl + ?Sized>(
    client: &C,
    kv: &EK,
    cluster_id: u64,
    store_id: Option<u64>,
    address: &str,
    api_version: ApiVersion,
) -> Result<u64> {
    let ident: Option<proto::raft_serverpb::StoreIdent> = kv
        .get_msg_cf(CF_RAFT, keys::STORE_IDENT_KEY)
        .map_err(|source| Error::Engine {
            region_id: 0,
            source,
        })?;
    if let Some(ident) = &ident {
        if ident.cluster_id != cluster_id {
            return Err(Error::Store {
                store_id: ident.store_id,
                detail: format!(
                    "data directory belongs to cluster {}, not {cluster_id}",
                    ident.cluster_id
                ),
            });
        }
        let written = ApiVersion::from_proto(ident.api_version());
        if written != api_version {
            return Err(Error::Store {
                store_id: ident.store_id,
                detail: format!(
                    "the data directory was written under API version {written} and the \
                     config asks for {api_version} (api-version): a store never serves data \
                     written under another version"
                ),
            });
        }
    }
    let cluster_version = client.check_api_version(api_version)?;
    if cluster_version != api_version {
        return Err(Error::Store {
            store_id: ident.as_ref().map_or(0, |i| i.store_id),
            detail: format!(
                "the cluster runs API version {cluster_version} (its first store's choice) and \
                 this store's config asks for {api_version} (api-version)"
            ),
        });
    }
    let existing = ident.map(|i| i.store_id);
    let store_id = match (existing, store_id) {
        (Some(id), _) => id,
        (None, Some(id)) => id,
        (None, None) => alloc_exactly::<_, 1>(client)?[0],
    };
    if existing.is_none() {
        raftstore::bootstrap_store(kv, cluster_id, store_id, api_version.to_proto())?;
    }
    let store = Store {
        id: store_id,
        address: address.to_string(),
        ..Default::default()
    };
    // A first region written here earlier by a bootstrap that a crash cut short (before the
    // scheduler recorded it, or before a lost race took it back).
    let prepared = prepared_first_region(kv, store_id)?;
    let bootstrapped = client.is_bootstrapped()?;
    if let Some(region) = &prepared {
        if bootstrapped && !client.region_recorded(region.id)? {
            delete_region_state(kv, region.id)?;
        }
    }
    if !bootstrapped && (existing.is_none() || prepared.is_some()) {
        let region = match prepared {
            Some(region) => region,
            None => {
                let [region_id, peer_id] = alloc_exactly::<_, 2>(client)?;
                let region = first_region(region_id, peer_id, store_id);
                raftstore::bootstrap_region(kv, &region)?;
                region
            }
        };
        match client.bootstrap(store.clone(), region.clone())? {
            BootstrapOutcome::Done => return Ok(store_id),
            // Another store won: this one joins with no region.
            BootstrapOutcome::AlreadyBootstrapped => {
                // Unless it was this store's own bootstrap, answered on another endpoint after
                // the first one timed out: then the region is the cluster's, keep it.
                if client.region_recorded(region.id)? {
                    return Ok(store_id);
                }
                delete_region_state(kv, region.id)?
            }
        }
    }
    client.put_store(store)?;
    Ok(store_id)
}

/// `N` fresh ids (a remote scheduler's answer is checked, not trusted).
fn alloc_exactly<C: ClusterControl + ?Sized, const N: usize>(client: &C) -> Result<[u64; N]> {
    let ids = client.alloc_ids(N)?;
    let got = ids.len();
    <[u64; N]>::try_from(ids).map_err(|_| Error::Scheduler {
        detail: format!("asked for {N} ids, got {got}"),
    })
}

fn delete_region_state<EK: KvEngine>(kv: &EK, region_id: u64) -> Result<()> {
    let mut wb = kv.write_batch();
    wb.delete_cf(CF_RAFT, &keys::region_state_key(region_id))
        .and_then(|()| kv.write(&mut wb, true))
        .map_err(|source| Error::Engine { region_id, source })
}

/// A bootstrap's first region on this store: the whole key space, version 1, one peer here,
/// and nothing else hosted.
fn prepared_first_region<EK: KvEngine>(kv: &EK, store_id: u64) -> Result<Option<Region>> {
    let (start, end) = keys::region_state_range();
    let mut regions = Vec::new();
    kv.scan_cf(CF_RAFT, &start, &end, false, &mut |_, value| {
        if let Ok(state) = <proto::raft_serverpb::RegionLocalState as prost::Message>::decode(value)
        {
            regions.push(state.region.unwrap_or_default());
        }
        Ok(regions.len() < 2)
    })
    .map_err(|source| Error::Engine {
        region_id: 0,
        source,
    })?;
    Ok(match regions.as_slice() {
        [r] if r.start_key.is_empty()
            && r.end_key.is_empty()
            && r.region_epoch.unwrap_or_default().version == 1
            && r.peers.len() == 1
            && r.peers[0].store_id == store_id =>
        {
            Some(r.clone())
        }
        _ => None,
    })
}

/// A bootstrap's first region: the whole key space, version 1, one peer on `store_id`.
pub(crate) fn first_region(region_id: u64, peer_id: u64, store_id: u64) -> Region {
    Region {
        id: region_id,
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: peer_id,
            store_id,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::MemEngine;

    fn scheduler() -> Arc<Scheduler> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        Arc::new(
            Scheduler::open(
                Arc::new(MemEngine::new()),
                &Default::default(),
                util::SystemClock::shared(),
                &logger,
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_store_runs_the_cluster_s_api_version_and_its_directory_s() {
        let client = InProcessClient::new(scheduler());
        let (a, b) = (MemEngine::new(), MemEngine::new());
        let first = bootstrap_store(&client, &a, 7, None, "a", ApiVersion::V2).unwrap();
        assert_eq!(
            client.get().unwrap().keyspaces.api_version(),
            Some(ApiVersion::V2)
        );
        // Another version is refused before anything is written.
        let err = bootstrap_store(&client, &b, 7, None, "b", ApiVersion::V1).unwrap_err();
        assert!(err.to_string().contains("runs API version 2"), "{err}");
        assert_eq!(engine::read_store_ident(&b).unwrap(), None);
        // A directory written under V2 does not open as V1, even in a cluster of V1.
        let other = InProcessClient::new(scheduler());
        let err = bootstrap_store(&other, &a, 7, None, "a", ApiVersion::V1).unwrap_err();
        assert!(
            err.to_string().contains("written under API version 2"),
            "{err}"
        );
        assert_eq!(
            bootstrap_store(&client, &a, 7, None, "a", ApiVersion::V2).unwrap(),
            first
        );
    }

    #[test]
    fn the_first_store_bootstraps_the_cluster_and_the_others_join() {
        let client = InProcessClient::new(scheduler());
        let (a, b) = (MemEngine::new(), MemEngine::new());
        let first = bootstrap_store(&client, &a, 7, None, "a", ApiVersion::V1).unwrap();
        let second = bootstrap_store(&client, &b, 7, None, "b", ApiVersion::V1).unwrap();
        assert_ne!(first, second);
        let s = client.get().unwrap();
        assert!(s.cluster.is_bootstrapped());
        let regions = s.cluster.regions();
        assert_eq!(regions.len(), 1);
        let region = &regions[0].region;
        assert!(region.start_key.is_empty() && region.end_key.is_empty());
        assert_eq!(region.peers[0].store_id, first);
        assert_eq!(s.cluster.stores().len(), 2);
        // Again: the ids stay.
        assert_eq!(
            bootstrap_store(&client, &a, 7, None, "a", ApiVersion::V1).unwrap(),
            first
        );

        // A bootstrap cut short after writing the first region locally finishes at restart.
        let client2 = InProcessClient::new(scheduler());
        let c = MemEngine::new();
        raftstore::bootstrap_store(&c, 7, 50, ApiVersion::V1.to_proto()).unwrap();
        let region = first_region(60, 61, 50);
        raftstore::bootstrap_region(&c, &region).unwrap();
        assert_eq!(
            bootstrap_store(&client2, &c, 7, None, "c", ApiVersion::V1).unwrap(),
            50
        );
        let s2 = client2.get().unwrap();
        assert!(s2.cluster.is_bootstrapped());
        assert_eq!(s2.cluster.regions()[0].region.id, 60);
        // A restarting scheduler is a clear, retryable error.
        let taken = client.set(None);
        assert!(matches!(client.alloc_ids(1), Err(Error::Scheduler { .. })));
        client.set(taken);
        assert_eq!(client.alloc_ids(2).unwrap().len(), 2);
    }
}
