//! In-process regionstore clusters for tests: N stores, each a real [`StoreSystem`] over
//! RocksDB and raft-engine in a temp dir, connected by a channel transport whose filters can
//! partition, isolate, drop and delay messages.
//!
//! With `regions = 0` the cluster is bootstrapped through the scheduler: store 1 creates the
//! first region (the whole key space, one peer), the others join empty, and the scheduler's
//! operators place replicas. Otherwise regions are bootstrapped statically: region `i` of `K`
//! has a peer on each of the first
//! `replicas` stores (peer id `i * 100 + store`, the id membership changes use too) and covers
//! `[key(i), key(i + 1))`, the first starting at `""` and the last ending at `""`, where
//! `key(i)` is `format!("r{i:06}")` ([`region_key`]), for tests that want a fixed layout.
//!
//! # Invariants
//! - Every helper that waits is bounded (it panics with what it waited for), so a broken
//!   store fails a test instead of hanging it.
//! - A store that is shut down is unreachable: messages to it are lost, as on a network.
//!
//! # Must not depend on
//! gRPC or the server: the stores talk over channels, and the scheduler runs in-process
//! (through `scheduler-client`'s in-process client).

mod filter;
mod logger;
mod scheduler;
mod transport;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{keys, Peekable, RocksConfig, RocksEngine, CF_DEFAULT};
use futures::executor::block_on;
use proto::build;
pub use proto::eraftpb::ConfChangeType;
use proto::kvrpcpb::{ApiVersion, Context};
use proto::metapb::Region;
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::router::{Callback, PeerMsg, PeerStatus};
use raftstore::{Error, Modify, StoreSystem};

pub use filter::{Delay, DropMessages, Filter, FilterAction, Partition};
pub use logger::logger;
use scheduler::open_scheduler;
pub use scheduler_client::InProcessClient;
pub use transport::{ChannelTransport, SnapshotFaults};

pub const CLUSTER_ID: u64 = 42;

/// How long a `must_*` or `wait_*` helper keeps trying before it fails the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `poll` every 10 ms until it gives a value; panics saying what was awaited if
/// `timeout` passes first.
pub fn wait_for<T>(what: &str, timeout: Duration, mut poll: impl FnMut() -> Option<T>) -> T {
    match poll_every_10ms(timeout, || poll().ok_or(())) {
        Ok(value) => value,
        Err(()) => panic!("{what}: not within {timeout:?}"),
    }
}

/// [`wait_for`] for a poll that says why it is not done yet: polls every 10 ms until `poll`
/// gives `Ok`; panics saying what was awaited and the last `Err` if `timeout` passes first.
pub fn wait_ok<T, E: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    poll: impl FnMut() -> Result<T, E>,
) -> T {
    match poll_every_10ms(timeout, poll) {
        Ok(value) => value,
        Err(last) => panic!("{what}: not within {timeout:?}; last: {last:?}"),
    }
}

/// `poll`'s first `Ok`, or its `Err` from the first poll at or past `timeout`.
fn poll_every_10ms<T, E>(
    timeout: Duration,
    mut poll: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match poll() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics saying what was awaited if `timeout`
/// passes first.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()))
}

pub fn peer_id(region_id: u64, store_id: u64) -> u64 {
    region_id * 100 + store_id
}

/// A key inside region `i` (the start key of every region but the first).
pub fn region_key(i: u64) -> Vec<u8> {
    format!("r{i:06}").into_bytes()
}

/// A raftstore config with short timeouts, for tests.
pub fn test_raftstore_config() -> raftstore::Config {
    raftstore::Config {
        store_pool_size: 1,
        apply_pool_size: 1,
        raft_base_tick_interval_ms: 20,
        raft_election_timeout_ticks: 10,
        raft_heartbeat_ticks: 2,
        max_leader_lease_ms: 150,
        proposal_timeout_ms: 3_000,
        read_index_timeout_ms: 2_000,
        entry_cache_limit: 16 << 20,
        ..Default::default()
    }
}

pub struct ClusterConfig {
    pub stores: u64,
    pub regions: u64,
    /// Stores `1..=replicas` hold the bootstrapped regions; the others start empty.
    pub replicas: u64,
    pub raftstore: raftstore::Config,
    pub rocks: RocksConfig,
    /// raft-engine settings of every store (the directory is set per store).
    pub raft_log: RaftLogConfig,
    /// The in-process scheduler's settings.
    pub scheduler: ::scheduler::Config,
}

impl ClusterConfig {
    pub fn new(stores: u64, regions: u64) -> ClusterConfig {
        assert!(
            (1..100).contains(&stores),
            "peer ids leave room for 99 stores"
        );
        ClusterConfig {
            stores,
            regions,
            replicas: stores,
            raftstore: test_raftstore_config(),
            rocks: RocksConfig {
                block_cache_size: 8 << 20,
                write_buffer_size: 4 << 20,
                max_background_jobs: 2,
                ..Default::default()
            },
            raft_log: RaftLogConfig::default(),
            // No operators unless a test asks: most tests place replicas themselves.
            scheduler: ::scheduler::Config {
                max_store_down_time: Duration::from_secs(2),
                operator_timeout: Duration::from_secs(20),
                ..::scheduler::Config::without_checkers()
            },
        }
    }

    /// Lets the scheduler place replicas and balance leaders and regions (operators on).
    pub fn with_scheduling(mut self) -> ClusterConfig {
        let defaults = ::scheduler::Config::default();
        self.scheduler.replica_schedule_limit = defaults.replica_schedule_limit;
        self.scheduler.leader_schedule_limit = defaults.leader_schedule_limit;
        self.scheduler.region_schedule_limit = defaults.region_schedule_limit;
        self.raftstore.region_heartbeat_tick_interval_ms = 200;
        self.raftstore.hibernate_heartbeat_interval_ms = 200;
        self.raftstore.store_heartbeat_interval_ms = 200;
        self
    }
}

pub struct Cluster {
    pub cfg: ClusterConfig,
    dir: tempfile::TempDir,
    /// The real scheduler core, in-process, over RocksDB in the cluster's directory.
    scheduler: InProcessClient,
    regions: Vec<Region>,
    stores: BTreeMap<u64, StoreSystem<RocksEngine>>,
    routers: transport::Routers,
    filters: transport::Filters,
    transport: ChannelTransport,
    logger: slog::Logger,
}

impl Cluster {
    /// Creates and bootstraps the stores' data directories; [`Self::start`] starts them.
    pub fn new(cfg: ClusterConfig) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("regionstore-cluster")
            .tempdir()
            .expect("create the cluster's temp dir");
        let regions: Vec<Region> = (1..=cfg.regions)
            .map(|i| {
                let start = if i == 1 { vec![] } else { region_key(i) };
                let end = if i == cfg.regions {
                    vec![]
                } else {
                    region_key(i + 1)
                };
                build::region(i)
                    .range(start, end)
                    .epoch(1, 1)
                    .peers(
                        (1..=cfg.replicas.min(cfg.stores)).map(|s| build::peer(peer_id(i, s), s)),
                    )
                    .build()
            })
            .collect();
        let routers: transport::Routers = Arc::default();
        let filters: transport::Filters = Arc::default();
        let transport = ChannelTransport::new(routers.clone(), filters.clone());
        let scheduler = open_scheduler(dir.path(), &cfg.scheduler, &logger());
        // The static bootstrap's ids are taken: the allocator starts above them.
        let static_ids = (cfg.regions + 1) * 100;
        scheduler
            .ids
            .alloc(static_ids as usize)
            .expect("reserve static ids");
        for store_id in 1..=cfg.stores {
            scheduler
                .cluster
                .put_store(proto::metapb::Store {
                    id: store_id,
                    ..Default::default()
                })
                .expect("register store");
        }
        for region in &regions {
            scheduler
                .cluster
                .region_heartbeat(::scheduler::RegionInfo {
                    region: region.clone(),
                    ..Default::default()
                })
                .expect("register region");
        }
        let cluster = Cluster {
            cfg,
            dir,
            scheduler: InProcessClient::new(scheduler),
            regions,
            stores: BTreeMap::new(),
            routers,
            filters,
            transport,
            logger: logger(),
        };
        for store_id in 1..=cluster.cfg.stores {
            let (kv, _) = cluster.open_engines(store_id);
            if cluster.cfg.regions == 0 {
                // The scheduler's way: store 1 bootstraps the cluster (the first region, one
                // peer), the others join.
                scheduler_client::bootstrap_store(
                    &cluster.scheduler,
                    &kv,
                    CLUSTER_ID,
                    Some(store_id),
                    &format!("store-{store_id}"),
                    scheduler_client::ApiVersion::V1,
                )
                .expect("bootstrap through the scheduler");
                continue;
            }
            raftstore::bootstrap_store(&kv, CLUSTER_ID, store_id, ApiVersion::V1)
                .expect("bootstrap store");
            for region in &cluster.regions {
                if !region.peers.iter().any(|p| p.store_id == store_id) {
                    continue;
                }
                raftstore::bootstrap_region(&kv, region).expect("bootstrap region");
            }
        }
        cluster
    }

    /// A started cluster.
    pub fn run(cfg: ClusterConfig) -> Cluster {
        let mut cluster = Cluster::new(cfg);
        cluster.start();
        cluster
    }

    pub fn start(&mut self) {
        for store_id in 1..=self.cfg.stores {
            self.start_store(store_id);
        }
    }

    fn store_dir(&self, store_id: u64) -> PathBuf {
        self.dir.path().join(format!("store-{store_id}"))
    }

    /// Opens a stopped store's engines (to set up a state on its disk).
    pub fn open_engines(&self, store_id: u64) -> (RocksEngine, RaftLogEngine) {
        let dir = self.store_dir(store_id);
        let kv = RocksEngine::open(&dir.join("kv"), &self.cfg.rocks).expect("open kv engine");
        let raft_cfg = RaftLogConfig {
            dir: dir.join("raft"),
            ..self.cfg.raft_log.clone()
        };
        let raft = RaftLogEngine::open(&raft_cfg).expect("open raft log");
        (kv, raft)
    }

    pub fn start_store(&mut self, store_id: u64) {
        assert!(
            !self.stores.contains_key(&store_id),
            "store {store_id} is running"
        );
        let (kv, raft) = self.open_engines(store_id);
        let snap_dir = self.store_dir(store_id).join("snap");
        let store = StoreSystem::builder(store_id, kv, raft, &snap_dir)
            .config(self.cfg.raftstore.clone())
            .logger(&self.logger)
            .start(self.transport.clone(), Arc::new(self.scheduler.clone()))
            .expect("start store");
        util::write(&self.routers).insert(store_id, store.router().clone());
        util::write(&self.transport.snap_mgrs).insert(store_id, store.snap_manager().clone());
        self.stores.insert(store_id, store);
    }

    /// Stops a store (its engines are closed). Returns how many of its pollers had panicked.
    pub fn shutdown_store(&mut self, store_id: u64) -> usize {
        util::write(&self.routers).remove(&store_id);
        util::write(&self.transport.snap_mgrs).remove(&store_id);
        match self.stores.remove(&store_id) {
            Some(mut store) => store.shutdown(),
            None => 0,
        }
    }

    pub fn restart_store(&mut self, store_id: u64) {
        self.shutdown_store(store_id);
        self.start_store(store_id);
    }

    pub fn shutdown(&mut self) {
        let ids: Vec<u64> = self.stores.keys().copied().collect();
        for id in ids {
            self.shutdown_store(id);
        }
    }

    pub fn store(&self, store_id: u64) -> &StoreSystem<RocksEngine> {
        self.stores
            .get(&store_id)
            .unwrap_or_else(|| panic!("store {store_id} is not running"))
    }

    pub fn running_stores(&self) -> Vec<u64> {
        self.stores.keys().copied().collect()
    }

    /// The region as the scheduler knows it (as bootstrapped, until it changes).
    pub fn region(&self, region_id: u64) -> Region {
        self.scheduler()
            .cluster
            .region_by_id(region_id)
            .map(|info| info.region)
            .unwrap_or_else(|| self.regions[region_id as usize - 1].clone())
    }

    /// The region holding `key` in the scheduler's routing table.
    pub fn region_for_key(&self, key: &[u8]) -> Region {
        match self.scheduler().cluster.region_by_key(key) {
            Some(info) => info.region,
            None => self
                .regions
                .iter()
                .find(|r| keys::region_contains(r, key))
                .cloned()
                .expect("the regions cover the key space"),
        }
    }

    /// The in-process scheduler (panics while it is being restarted).
    pub fn scheduler(&self) -> Arc<::scheduler::Scheduler> {
        self.scheduler.get().expect("the scheduler is running")
    }

    /// When each batch of ids was handed out to a store, by its first id.
    pub fn id_allocations(&self) -> Vec<(u64, Instant)> {
        self.scheduler.allocations()
    }

    /// Puts `key` the way a client would: routed by the scheduler's table, to the leader it
    /// last heard of (`leaders` caches region → store), retrying NotLeader, EpochNotMatch,
    /// KeyNotInRegion, RegionNotFound, ServerIsBusy and the like with backoff until
    /// [`WAIT`]. Returns how many retries it took, or the last error.
    pub fn put_retrying(
        &self,
        key: &[u8],
        value: &[u8],
        leaders: &mut HashMap<u64, u64>,
    ) -> Result<u32, Error> {
        let deadline = Instant::now() + WAIT;
        let mut backoff = Duration::from_millis(1);
        let mut retries = 0;
        loop {
            let info = self.scheduler().cluster.region_by_key(key);
            let tried_epoch = info.as_ref().and_then(|i| i.region.region_epoch);
            let result = match info {
                None => Err(Error::RegionNotFound {
                    region_id: 0,
                    store_id: 0,
                }),
                Some(info) => {
                    let region = &info.region;
                    let store = leaders
                        .get(&region.id)
                        .copied()
                        .or(info.leader.map(|l| l.store_id))
                        .or_else(|| self.leader_of(region.id))
                        .unwrap_or(1);
                    let ctx = Context {
                        region_id: region.id,
                        region_epoch: region.region_epoch,
                        peer: region.peers.iter().find(|p| p.store_id == store).copied(),
                        ..Default::default()
                    };
                    let put = vec![Modify::put(key.to_vec(), value.to_vec())];
                    let r = match self.stores.get(&store) {
                        Some(s) => block_on(s.api().write(&ctx, put)),
                        None => Err(Error::StoreStopped {
                            store_id: store,
                            reason: "not running".into(),
                        }),
                    };
                    match &r {
                        Err(Error::NotLeader {
                            leader: Some(l), ..
                        }) => {
                            leaders.insert(region.id, l.store_id);
                        }
                        Err(_) => {
                            leaders.remove(&region.id);
                        }
                        Ok(()) => {
                            leaders.insert(region.id, store);
                        }
                    }
                    r
                }
            };
            match result {
                Ok(()) => return Ok(retries),
                Err(e) if (e.is_retryable() || e.is_stale_route()) && Instant::now() < deadline => {
                    retries += 1;
                    // A leader hint, or a routing table that has since moved (the leader reports
                    // a split when it applies it), is worth trying at once; the rest waits.
                    let route_moved = e.is_stale_route()
                        && self
                            .scheduler()
                            .cluster
                            .region_by_key(key)
                            .is_some_and(|now| now.region.region_epoch != tried_epoch);
                    if !route_moved
                        && !matches!(
                            e,
                            Error::NotLeader {
                                leader: Some(_),
                                ..
                            }
                        )
                    {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_millis(50));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops the scheduler and opens it again from its directory, under the running stores.
    pub fn restart_scheduler(&self) {
        let old = self.scheduler.set(None);
        // Its metadata store must be closed before it is opened again: wait for calls in
        // flight to let go of it.
        if let Some(old) = old {
            let mut old = Some(old);
            let unshared = wait_for("calls in flight let go of the scheduler", WAIT, || {
                Arc::try_unwrap(old.take()?)
                    .map_err(|still| old = Some(still))
                    .ok()
            });
            drop(unshared);
        }
        let new = open_scheduler(self.dir.path(), &self.cfg.scheduler, &self.logger);
        self.scheduler.set(Some(new));
    }

    // ---- filters ----

    pub fn add_filter(&self, filter: impl Filter + 'static) {
        util::write(&self.filters).push(Arc::new(filter));
    }

    pub fn clear_filters(&self) {
        util::write(&self.filters).clear();
    }

    pub fn partition(&self, left: &[u64], right: &[u64]) {
        self.add_filter(Partition::new(left, right));
    }

    /// Cuts `store_id` off from every other store.
    pub fn isolate(&self, store_id: u64) {
        let others: Vec<u64> = (1..=self.cfg.stores).filter(|s| *s != store_id).collect();
        self.partition(&[store_id], &others);
    }

    // ---- peers ----

    /// The state of `region_id`'s peer on `store_id`, or `None` if the store or peer is not
    /// running.
    pub fn peer_status(&self, store_id: u64, region_id: u64) -> Option<PeerStatus> {
        let store = self.stores.get(&store_id)?;
        if store.stopped_reason().is_some() {
            return None;
        }
        let (tx, rx) = crossbeam::channel::bounded(1);
        let cb = Callback::new(move |r| {
            let _ = tx.send(r);
        });
        store
            .router()
            .send_timeout(region_id, PeerMsg::QueryStatus(cb), Duration::from_secs(1))
            .ok()?;
        // A store whose poller is crashing never answers: treat it as down.
        rx.recv_timeout(Duration::from_secs(1)).ok()?.ok()
    }

    /// The store whose peer leads `region_id` now, if exactly one claims it among running
    /// stores with the highest term.
    pub fn leader_of(&self, region_id: u64) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for store_id in self.stores.keys() {
            if let Some(s) = self.peer_status(*store_id, region_id) {
                if s.is_leader && best.is_none_or(|(term, _)| s.term > term) {
                    best = Some((s.term, *store_id));
                }
            }
        }
        best.map(|(_, store)| store)
    }

    /// Waits until `region_id` has a leader among running stores, and returns its store.
    pub fn wait_leader(&self, region_id: u64) -> u64 {
        let what = format!("region {region_id} elects a leader");
        wait_for(&what, WAIT, || self.leader_of(region_id))
    }

    /// Waits until a store other than `old` leads `region_id`.
    pub fn wait_new_leader(&self, region_id: u64, old: u64) -> u64 {
        let what = format!("region {region_id}: a store other than {old} becomes leader");
        wait_for(&what, WAIT, || {
            self.stores.keys().copied().find(|store_id| {
                *store_id != old
                    && self
                        .peer_status(*store_id, region_id)
                        .is_some_and(|s| s.is_leader)
            })
        })
    }

    /// Asks `region_id`'s peer on `store_id` to campaign.
    pub fn campaign(&self, store_id: u64, region_id: u64) {
        let _ = self
            .store(store_id)
            .router()
            .send(region_id, PeerMsg::Campaign);
    }

    /// The request context for `region_id` addressed to its peer on `store_id`, with the
    /// region's current epoch as that peer knows it.
    pub fn context(&self, store_id: u64, region_id: u64) -> Context {
        let region = self
            .peer_status(store_id, region_id)
            .map(|s| s.region)
            .unwrap_or_else(|| self.region(region_id));
        Context {
            region_id,
            region_epoch: region.region_epoch,
            peer: Some(build::peer(peer_id(region_id, store_id), store_id)),
            ..Default::default()
        }
    }

    // ---- requests ----

    /// Writes through `store_id`'s peer (one attempt).
    pub fn write_on(
        &self,
        store_id: u64,
        region_id: u64,
        modifies: Vec<Modify>,
    ) -> Result<(), Error> {
        let ctx = self.context(store_id, region_id);
        block_on(self.store(store_id).api().write(&ctx, modifies))
    }

    /// Puts through the current leader (one attempt).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let region_id = self.region_for_key(key).id;
        let leader = self.wait_leader(region_id);
        self.write_on(leader, region_id, vec![Modify::put(key, value)])
    }

    /// Puts until acknowledged, following leader changes.
    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.must_write(key, vec![Modify::put(key, value)]);
    }

    pub fn must_delete(&self, key: &[u8]) {
        self.must_write(key, vec![Modify::delete(key)]);
    }

    /// Writes `modifies` (all in `key`'s region) until acknowledged, following leader changes.
    pub fn must_write(&self, key: &[u8], modifies: Vec<Modify>) {
        let what = format!("write of {key:?} is acknowledged");
        // The last attempt's error (`None`: there was no leader to ask).
        wait_ok(&what, WAIT, || {
            let region_id = self.region_for_key(key).id;
            let Some(leader) = self.leader_of(region_id) else {
                return Err(None);
            };
            match self.write_on(leader, region_id, modifies.clone()) {
                Ok(()) => Ok(()),
                // The routing table or the epoch moved under it (a split): route again.
                Err(e) if e.is_retryable() || e.is_stale_route() => Err(Some(e)),
                Err(e) => panic!("write of {key:?} failed: {e}"),
            }
        })
    }

    /// A linearizable read through `store_id`'s peer (one attempt).
    pub fn get_on(&self, store_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let region_id = self.region_for_key(key).id;
        let ctx = self.context(store_id, region_id);
        let snapshot = block_on(self.store(store_id).api().snapshot(&ctx))?;
        snapshot.get_cf(CF_DEFAULT, key)
    }

    /// A linearizable read through the leader, retried until it is served.
    pub fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let what = format!("read of {key:?} is served");
        // The last attempt's error (`None`: there was no leader to ask).
        wait_ok(&what, WAIT, || {
            let region_id = self.region_for_key(key).id;
            let Some(leader) = self.leader_of(region_id) else {
                return Err(None);
            };
            match self.get_on(leader, key) {
                Ok(v) => Ok(v),
                Err(e) if e.is_retryable() || e.is_stale_route() => Err(Some(e)),
                Err(e) => panic!("read of {key:?} failed: {e}"),
            }
        })
    }

    /// What `store_id`'s KV engine holds for `key` (applied data, not a linearizable read).
    pub fn engine_get(&self, store_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.store(store_id)
            .kv()
            .get_value_cf(CF_DEFAULT, &keys::data_key(key))
            .expect("read the kv engine")
    }

    /// Waits until `store_id` has applied `key` = `value` (`None`: deleted).
    pub fn wait_applied(&self, store_id: u64, key: &[u8], value: Option<&[u8]>) {
        let what = format!("store {store_id} applies {key:?} = {value:?}");
        // What the store has.
        wait_ok(&what, WAIT, || {
            let has = self.engine_get(store_id, key);
            if has.as_deref() == value {
                Ok(())
            } else {
                Err(has)
            }
        })
    }

    /// Cuts `follower` off and puts `key(i)` = `key(i)` for i = 0, 1, ... until the leader of
    /// `region_id` has compacted its log past what the follower has (so it can only catch up
    /// by snapshot). Returns how many keys it wrote. The partition stays in place.
    pub fn leave_behind(&self, region_id: u64, follower: u64, key: impl Fn(u32) -> Vec<u8>) -> u32 {
        let reached = self
            .peer_status(follower, region_id)
            .map_or(0, |s| s.applied_index);
        let others: Vec<u64> = (1..=self.cfg.stores).filter(|s| *s != follower).collect();
        self.partition(&[follower], &others);
        let deadline = Instant::now() + WAIT;
        let mut written = 0;
        loop {
            for _ in 0..50 {
                self.must_put(&key(written), &key(written));
                written += 1;
            }
            let leader = self.wait_leader(region_id);
            if self
                .peer_status(leader, region_id)
                .is_some_and(|s| s.truncated_index > reached + 1)
            {
                return written;
            }
            assert!(
                Instant::now() < deadline,
                "region {region_id}'s leader never compacted its log past store {follower}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the transport does to snapshots (corrupt the next chunk) and what it counted.
    pub fn snapshot_faults(&self) -> &SnapshotFaults {
        &self.transport.snapshot_faults
    }

    /// Bytes of raft-engine files in `store_id`'s log directory.
    pub fn raft_log_dir_size(&self, store_id: u64) -> u64 {
        let dir = self.store_dir(store_id).join("raft");
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Asks `region_id`'s leader to hand leadership to its peer on `to_store` (one attempt).
    pub fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<(), Error> {
        use proto::raft_cmdpb::{AdminCmdType, AdminRequest, TransferLeaderRequest};
        let leader = self.wait_leader(region_id);
        let ctx = self.context(leader, region_id);
        let admin = AdminRequest {
            cmd_type: AdminCmdType::TransferLeader as i32,
            transfer_leader: Some(TransferLeaderRequest {
                peer: Some(build::peer(peer_id(region_id, to_store), to_store)),
            }),
            ..Default::default()
        };
        block_on(self.store(leader).api().admin(&ctx, admin))
    }

    /// Proposes a membership change of `region_id` through its leader (one attempt). Each
    /// change names a store; the peer id is [`peer_id`]`(region_id, store)`.
    pub fn change_peer(
        &self,
        region_id: u64,
        changes: &[(ConfChangeType, u64)],
    ) -> Result<(), Error> {
        let changes: Vec<_> = changes
            .iter()
            .map(|(kind, store)| (*kind, *store, peer_id(region_id, *store)))
            .collect();
        self.change_peer_ids(region_id, &changes)
    }

    /// [`Self::change_peer`] with explicit peer ids: `(change, store, peer id)`.
    pub fn change_peer_ids(
        &self,
        region_id: u64,
        changes: &[(ConfChangeType, u64, u64)],
    ) -> Result<(), Error> {
        use proto::raft_cmdpb::{
            AdminCmdType, AdminRequest, ChangePeerRequest, ChangePeerV2Request,
        };
        let leader = self.wait_leader(region_id);
        let ctx = self.context(leader, region_id);
        let admin = AdminRequest {
            cmd_type: AdminCmdType::ChangePeerV2 as i32,
            change_peer_v2: Some(ChangePeerV2Request {
                changes: changes
                    .iter()
                    .map(|(kind, store_id, id)| ChangePeerRequest {
                        change_type: *kind as i32,
                        peer: Some(build::peer(*id, *store_id)),
                    })
                    .collect(),
            }),
            ..Default::default()
        };
        block_on(self.store(leader).api().admin(&ctx, admin))
    }

    /// [`Self::change_peer`] until it is applied, retrying while the leader moves or another
    /// change is still pending.
    pub fn must_change_peer(&self, region_id: u64, changes: &[(ConfChangeType, u64)]) {
        let changes: Vec<_> = changes
            .iter()
            .map(|(kind, store)| (*kind, *store, peer_id(region_id, *store)))
            .collect();
        self.must_change_peer_ids(region_id, &changes);
    }

    /// [`Self::must_change_peer`] with explicit peer ids.
    pub fn must_change_peer_ids(&self, region_id: u64, changes: &[(ConfChangeType, u64, u64)]) {
        let what = format!("membership change {changes:?} of region {region_id} is applied");
        wait_ok(&what, WAIT, || {
            match self.change_peer_ids(region_id, changes) {
                Ok(()) => Ok(()),
                Err(e) if e.is_retryable() || matches!(e, Error::ConfChange { .. }) => Err(e),
                Err(e) => panic!("membership change {changes:?} of region {region_id}: {e}"),
            }
        })
    }

    /// Waits until `store_id`'s peer of `region_id` sees the region satisfy `pred`, and
    /// returns the region as it sees it.
    pub fn wait_region(
        &self,
        store_id: u64,
        region_id: u64,
        pred: impl Fn(&Region) -> bool,
    ) -> Region {
        let what = format!("store {store_id}: region {region_id} reaches the expected state");
        // The region as the store last saw it (`None`: no peer there).
        wait_ok(&what, WAIT, || {
            match self.peer_status(store_id, region_id) {
                Some(s) if pred(&s.region) => Ok(s.region),
                seen => Err(seen.map(|s| s.region)),
            }
        })
    }

    /// Waits until `store_id` no longer has a peer of `region_id` and its state there is a
    /// tombstone.
    pub fn wait_peer_destroyed(&self, store_id: u64, region_id: u64) {
        use proto::raft_serverpb::{PeerState, RegionLocalState};
        let what = format!("store {store_id} no longer hosts region {region_id}");
        wait_until(&what, WAIT, || {
            let state: Option<RegionLocalState> = self
                .store(store_id)
                .kv()
                .get_msg_cf(engine::CF_RAFT, &keys::region_state_key(region_id))
                .expect("read the region state");
            let tombstone = state.is_some_and(|s| s.state == PeerState::Tombstone as i32);
            tombstone && self.peer_status(store_id, region_id).is_none()
        })
    }

    /// Makes `to_store` the leader of `region_id`, retrying the transfer until it is.
    pub fn must_transfer_leader(&self, region_id: u64, to_store: u64) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.leader_of(region_id) == Some(to_store) {
                return;
            }
            let _ = self.transfer_leader(region_id, to_store);
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("store {to_store} did not become leader of region {region_id} within {WAIT:?}");
    }

    /// Splits the region holding `split_key` there, through its leader (one attempt).
    pub fn split(&self, split_key: &[u8]) -> Result<(), Error> {
        let region_id = self.region_for_key(split_key).id;
        let leader = self.wait_leader(region_id);
        let ctx = self.context(leader, region_id);
        block_on(
            self.store(leader)
                .api()
                .split(&ctx, vec![split_key.to_vec()]),
        )
    }

    /// The regions `store_id` hosts (initialized ones), in key order.
    pub fn store_regions(&self, store_id: u64) -> Vec<Region> {
        let mut regions: Vec<Region> = self
            .store(store_id)
            .region_ids()
            .into_iter()
            .filter_map(|id| self.peer_status(store_id, id))
            .map(|s| s.region)
            .filter(|r| !r.peers.is_empty())
            .collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        regions
    }

    /// Panics unless `store_id`'s regions are contiguous, do not overlap and cover the whole
    /// key space.
    pub fn assert_covers_key_space(&self, store_id: u64) -> Vec<Region> {
        let regions = self.store_regions(store_id);
        let mut expect_start: &[u8] = b"";
        for r in &regions {
            assert_eq!(
                r.start_key.as_slice(),
                expect_start,
                "store {store_id}: region {} starts at {:?}, the previous ended at {:?}",
                r.id,
                r.start_key,
                expect_start
            );
            assert!(
                r.end_key.is_empty() || r.end_key > r.start_key,
                "store {store_id}: region {} is empty or inverted",
                r.id
            );
            expect_start = &r.end_key;
        }
        assert!(
            expect_start.is_empty() && !regions.is_empty(),
            "store {store_id}: the last region ends at {expect_start:?}, not at the end"
        );
        regions
    }

    /// Group-commit counters of every running store: (fsyncs, entries written).
    pub fn log_write_stats(&self) -> HashMap<u64, (u64, u64)> {
        use raftstore::fsm::StoreStats;
        self.stores
            .iter()
            .map(|(id, s)| {
                let st = s.stats();
                (
                    *id,
                    (
                        StoreStats::get(&st.fsyncs),
                        StoreStats::get(&st.entries_written),
                    ),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.clear_filters();
        self.shutdown();
    }
}
