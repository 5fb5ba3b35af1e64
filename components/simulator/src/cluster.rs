//! The simulated cluster: stores over in-memory engines that a power cut can roll back, the
//! real scheduler in-process, one virtual clock, and the simulated network between them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use engine::{FsLoss, MemEngine, MemFileSystem};
use proto::build;
use proto::kvrpcpb::ApiVersion;
use proto::metapb::Region;
use raft_log::RaftLogEngine;
use raftstore::{StoreApi, StoreSystem};
use rand::rngs::StdRng;
use rand::Rng;
use scheduler_client::InProcessClient;
use util::{ClockRef, ManualClock};

use crate::net::SimNetwork;
use crate::{Error, Result};

const CLUSTER_ID: u64 = 7;

/// An overloaded store gets one tick in this many: enough for check-quorum to step an
/// isolated leader down only well after a new leader is elected (at 5×, it stepped down
/// first in every seed, and a lease read without a lease was never caught).
const SLOW_TICKS: u64 = 20;

/// One store's disks and, while it runs, the store.
pub(crate) struct SimStore {
    pub(crate) kv: MemEngine,
    pub(crate) raft_log: RaftLogEngine,
    /// The disk of its snapshot files (and the KV engine's SSTs).
    snap_fs: MemFileSystem,
    snap_dir: PathBuf,
    pub(crate) system: Option<StoreSystem<MemEngine>>,
    /// A paused store is neither stepped nor ticked (its process is stopped).
    pub(crate) paused: bool,
    /// An overloaded store gets one tick in `SLOW_TICKS` (its tick thread starves): raft's
    /// timers (elections, check-quorum) slow down; its clock does not.
    pub(crate) slow_ticks: bool,
    /// A slow disk: every step that writes its raft log takes this long (0: a good disk), so
    /// the store is not stepped again until `busy_until`; messages and ticks queue meanwhile,
    /// as behind a poller blocked in fsync (a peer then applies one of its queued ticks).
    pub(crate) disk_latency_ms: u64,
    busy_until: u64,
    ticks: u64,
    /// How many times it started: state of its process (its latches) lives this long.
    pub(crate) starts: u64,
}

pub(crate) struct SimCluster {
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) net: SimNetwork,
    pub(crate) stores: BTreeMap<u64, SimStore>,
    pub(crate) scheduler: InProcessClient,
    scheduler_meta: MemEngine,
    scheduler_cfg: scheduler::Config,
    pub(crate) store_cfg: raftstore::Config,
    logger: slog::Logger,
    /// Seeds the stores' election timeouts.
    seed: u64,
}

/// What a power cut lost: writes not yet synced.
#[derive(Clone, Copy, Debug, Default)]
pub struct PowerCutLoss {
    /// KV engine operations.
    pub kv_ops: usize,
    /// Raft-log changes.
    pub log_ops: usize,
    /// Snapshot files: names not yet durable, and bytes not yet synced.
    pub snap_files: FsLoss,
}

/// The first region's peers are `100 + store`; later ids come from the scheduler.
fn peer_id(store_id: u64) -> u64 {
    100 + store_id
}

impl SimCluster {
    /// `stores` stores, the first `replicas` holding the one region that covers every key.
    pub(crate) fn new(
        seed: u64,
        stores: u64,
        replicas: u64,
        net: SimNetwork,
        store_cfg: raftstore::Config,
        scheduler_cfg: scheduler::Config,
        logger: slog::Logger,
    ) -> Result<SimCluster> {
        // A fixed wall time: the scheduler's TSO and cluster id derive from it.
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let scheduler_meta = MemEngine::new();
        let scheduler = open_scheduler(&scheduler_meta, &scheduler_cfg, &clock, &logger)?;
        // The static bootstrap's ids are taken: the allocator starts above them.
        scheduler
            .ids
            .alloc(1000)
            .map_err(|e| Error::Setup(format!("reserve ids: {e}")))?;
        let region = build::region(1)
            .range(vec![], vec![])
            .epoch(1, 1)
            .peers((1..=replicas.min(stores)).map(|s| build::peer(peer_id(s), s)))
            .build();
        for store_id in 1..=stores {
            scheduler
                .cluster
                .put_store(proto::metapb::Store {
                    id: store_id,
                    ..Default::default()
                })
                .map_err(|e| Error::Setup(format!("register store: {e}")))?;
        }
        scheduler
            .cluster
            .region_heartbeat(scheduler::RegionInfo {
                region: region.clone(),
                ..Default::default()
            })
            .map_err(|e| Error::Setup(format!("register region: {e}")))?;
        let mut sim_stores = BTreeMap::new();
        for store_id in 1..=stores {
            let snap_fs = MemFileSystem::new();
            let kv = MemEngine::with_file_system(Arc::new(snap_fs.clone()));
            raftstore::bootstrap_store(&kv, CLUSTER_ID, store_id, ApiVersion::V1)
                .map_err(|e| Error::Setup(e.to_string()))?;
            if region.peers.iter().any(|p| p.store_id == store_id) {
                raftstore::bootstrap_region(&kv, &region)
                    .map_err(|e| Error::Setup(e.to_string()))?;
            }
            engine::KvEngine::sync(&kv).map_err(|e| Error::Setup(e.to_string()))?;
            sim_stores.insert(
                store_id,
                SimStore {
                    kv,
                    raft_log: RaftLogEngine::memory(&format!("store-{store_id}")),
                    snap_fs,
                    snap_dir: PathBuf::from(format!("/store-{store_id}/snap")),
                    system: None,
                    paused: false,
                    slow_ticks: false,
                    disk_latency_ms: 0,
                    busy_until: 0,
                    ticks: 0,
                    starts: 0,
                },
            );
        }
        let mut cluster = SimCluster {
            clock,
            net,
            stores: sim_stores,
            scheduler: InProcessClient::new(scheduler),
            scheduler_meta,
            scheduler_cfg,
            store_cfg,
            logger,
            seed,
        };
        for store_id in 1..=stores {
            cluster.start_store(store_id)?;
        }
        Ok(cluster)
    }

    pub(crate) fn clock_ref(&self) -> ClockRef {
        self.clock.clone()
    }

    pub(crate) fn start_store(&mut self, store_id: u64) -> Result<()> {
        let clock = self.clock_ref();
        let transport = self.net.transport(store_id);
        let scheduler = Arc::new(self.scheduler.clone());
        let store = self
            .stores
            .get_mut(&store_id)
            .ok_or_else(|| Error::Setup(format!("no store {store_id}")))?;
        if store.system.is_some() {
            return Ok(());
        }
        let system = StoreSystem::builder(
            store_id,
            store.kv.clone(),
            store.raft_log.clone(),
            &store.snap_dir,
        )
        .config(self.store_cfg.clone())
        .clock(clock)
        .logger(&self.logger)
        .election_seed(self.seed ^ store_id)
        .manual()
        .start(transport, scheduler)
        .map_err(|source| Error::Restart { store_id, source })?;
        self.net
            .set_snap_manager(store_id, Some(system.snap_manager().clone()));
        store.system = Some(system);
        store.paused = false;
        store.starts += 1;
        Ok(())
    }

    /// Cuts the power of a running store: it stops where it is (nothing queued runs), and each
    /// disk keeps what was synced plus, half the time, a random prefix of the unsynced write
    /// batches (what the OS had written out); snapshot files keep their synced contents (half
    /// the time plus a prefix of the rest) and their names as of their directory's last fsync.
    pub(crate) fn power_cut(&mut self, store_id: u64, rng: &mut StdRng) -> Option<PowerCutLoss> {
        let store = self.stores.get_mut(&store_id)?;
        let mut system = store.system.take()?;
        self.net.set_snap_manager(store_id, None);
        system.shutdown();
        drop(system);
        let mut kept = |unsynced: usize| {
            if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(0..=unsynced)
            }
        };
        let kv_kept = kept(store.kv.unsynced_batches());
        let log_kept = kept(store.raft_log.unsynced_batches());
        let kv_ops = store.kv.power_cut_keeping(kv_kept);
        let log_ops = store.raft_log.power_cut_keeping(log_kept);
        let snap_files = store.snap_fs.power_cut(&mut kept);
        Some(PowerCutLoss {
            kv_ops,
            log_ops,
            snap_files,
        })
    }

    /// The scheduler loses its unsynced metadata and comes back at once (its clients see one
    /// failed call at most: everything here runs between two of their calls).
    pub(crate) fn restart_scheduler(&mut self) -> Result<()> {
        self.scheduler.set(None);
        self.scheduler_meta.power_cut();
        let scheduler = open_scheduler(
            &self.scheduler_meta,
            &self.scheduler_cfg,
            &self.clock,
            &self.logger,
        )?;
        self.scheduler.set(Some(scheduler));
        Ok(())
    }

    pub(crate) fn api(&self, store_id: u64) -> Option<StoreApi<MemEngine>> {
        let store = self.stores.get(&store_id)?;
        store
            .system
            .as_ref()
            .map(|s| s.api().without_mailbox_wait())
    }

    /// Delivers what the network has due, then runs every running, unpaused store until it is
    /// idle. Returns the rounds and tasks run.
    pub(crate) fn step(&mut self, now_ms: u64) -> usize {
        for msg in self.net.due(now_ms) {
            let to = msg.to_peer.map_or(0, |p| p.store_id);
            if let Some(system) = self.stores.get(&to).and_then(|s| s.system.as_ref()) {
                raftstore::router::deliver_raft_message(system.router(), msg);
            }
        }
        let mut ran = 0;
        for store in self.stores.values_mut() {
            let Some(system) = store.system.as_mut() else {
                continue;
            };
            if store.paused || system.stopped_reason().is_some() || now_ms < store.busy_until {
                continue;
            }
            let writes = store.raft_log.writes();
            // A store stops on a fatal error (a failed fsync) by unwinding the poller, here
            // the simulation's thread: that is its designed stop, seen by `stopped_reason`.
            // Any other panic is the seed's failure.
            let stepped =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| system.step(100_000)));
            if store.disk_latency_ms > 0 && store.raft_log.writes() > writes {
                store.busy_until = now_ms + store.disk_latency_ms;
            }
            match stepped {
                Ok(n) => ran += n,
                Err(_) if system.stopped_reason().is_some() => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        ran
    }

    pub(crate) fn tick(&mut self) {
        for store in self.stores.values_mut() {
            store.ticks += 1;
            if store.slow_ticks && store.ticks % SLOW_TICKS != 0 {
                continue;
            }
            if let (Some(system), false) = (store.system.as_ref(), store.paused) {
                system.tick();
            }
        }
    }

    /// Every peer's state, one line each (for a failure report: who leads, who sleeps).
    pub(crate) fn peer_states(&mut self, now_ms: u64) -> Vec<String> {
        let states = Arc::new(std::sync::Mutex::new(Vec::new()));
        for (store_id, store) in &self.stores {
            let Some(system) = store.system.as_ref() else {
                states
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("store {store_id}: down"));
                continue;
            };
            let mut ids = system.region_ids();
            // In id order: the steps below must not depend on a hash map's order.
            ids.sort_unstable();
            for region_id in ids {
                let (states, store_id) = (states.clone(), *store_id);
                let cb = raftstore::router::Callback::new(
                    move |r: raftstore::Result<raftstore::router::PeerStatus>| {
                        let line = match r {
                        Ok(s) => format!(
                            "store {store_id} region {region_id} peer {}: leader {} (is_leader {}) term {} \
                             commit {} applied {} proposals {} asleep {} ticks {} lease {} peers {:?}",
                            s.peer_id, s.leader_id, s.is_leader, s.term, s.commit_index,
                            s.applied_index, s.pending_proposals, s.asleep, s.ticks, s.lease_valid,
                            s.region.peers.iter().map(|p| p.id).collect::<Vec<_>>()
                        ),
                        Err(e) => format!("store {store_id} region {region_id}: {e}"),
                    };
                        states.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    },
                );
                let _ = system
                    .router()
                    .send(region_id, raftstore::router::PeerMsg::QueryStatus(cb));
            }
        }
        self.step(now_ms);
        let mut lines = std::mem::take(&mut *states.lock().unwrap_or_else(|e| e.into_inner()));
        lines.sort();
        lines
    }

    /// Why a store stopped itself, if one did (an fsync or engine failure).
    pub(crate) fn stopped_reason(&self) -> Option<(u64, String)> {
        self.stores.iter().find_map(|(id, s)| {
            s.system
                .as_ref()
                .and_then(|sys| sys.stopped_reason())
                .map(|r| (*id, r))
        })
    }

    pub(crate) fn scheduler(&self) -> Option<Arc<scheduler::Scheduler>> {
        self.scheduler.get().ok()
    }

    /// The region holding `key`, as the scheduler knows it.
    pub(crate) fn region_for_key(&self, key: &[u8]) -> Option<scheduler::RegionInfo> {
        self.scheduler()?.cluster.region_by_key(key)
    }

    /// Every region the scheduler knows.
    pub(crate) fn regions(&self) -> Vec<Region> {
        let Some(scheduler) = self.scheduler() else {
            return Vec::new();
        };
        let mut regions = Vec::new();
        let mut key = Vec::new();
        while let Some(info) = scheduler.cluster.region_by_key(&key) {
            key = info.region.end_key.clone();
            regions.push(info.region);
            if key.is_empty() {
                break;
            }
        }
        regions
    }
}

fn open_scheduler(
    meta: &MemEngine,
    cfg: &scheduler::Config,
    clock: &Arc<ManualClock>,
    logger: &slog::Logger,
) -> Result<Arc<scheduler::Scheduler>> {
    let clock: ClockRef = clock.clone();
    scheduler::Scheduler::open(Arc::new(meta.clone()), cfg, clock, logger)
        .map(Arc::new)
        .map_err(|e| Error::Setup(format!("open scheduler: {e}")))
}
