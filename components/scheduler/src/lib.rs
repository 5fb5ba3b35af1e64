//! The placement scheduler's core (TiKV calls it PD): it knows every store and region, hands
//! out ids and timestamps, and keeps the routing table that clients and stores consult. It is
//! used in-process by the test cluster and served over gRPC by [`service`].
//!
//! - [`storage`]: the durable metadata store behind a small trait ([`MetaStore`]); any
//!   [`engine::KvEngine`] is one (RocksDB in the product, the in-memory engine in tests).
//! - [`id`]: ids for regions, peers and stores, persisted in batches; the cluster id.
//! - [`tso`]: hybrid timestamps `physical_ms << 18 | logical` with a persisted upper bound.
//! - [`cluster`]: stores, regions and the routing table, updated by heartbeats.
//! - [`gc`]: the cluster's GC safe point, monotone and persisted.
//! - [`keyspace`]: the cluster's API version (chosen by its first store) and its keyspaces.
//! - [`operator`], [`schedule`]: what the scheduler (or an administrator) asks of a region.
//! - [`http`]: PD's HTTP API (regions, stores), served on the PD port beside gRPC.
//! - [`service`]: the gRPC face: PD's `pdpb.PD` (what TiKV clients and stores speak) and our
//!   `schedulerpb.Scheduler` (unary region heartbeats, operators).
//!
//! # Invariants
//! - An id is never handed out twice, across restarts: the persisted bound is written
//!   (synced) before any id below it is returned.
//! - Timestamps strictly increase, across restarts: a restart starts above the persisted
//!   bound, which is always ahead of every timestamp handed out.
//! - The routing table never holds two regions with overlapping ranges, and a region's entry
//!   only moves to a newer epoch.
//! - The cluster id is chosen once, is never 0, and never changes after.
//!
//! # Must not depend on
//! raftstore: stores reach the scheduler through `raftstore::SchedulerClient`, which the test
//! cluster and the scheduler client implement over this crate (in-process or over gRPC).

pub mod cluster;
pub mod deadlock;
mod error;
pub mod gc;
pub mod http;
pub mod id;
pub mod keyspace;
pub mod operator;
pub mod schedule;
pub mod service;
pub mod storage;
pub mod tso;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::metapb::{Peer, PeerRole};
use util::ClockRef;

pub use cluster::{Cluster, RegionInfo, StoreInfo, StoreStats};
pub use error::{Error, Result};
pub use gc::GcSafePoint;
pub use id::IdAllocator;
pub use keyspace::Keyspaces;
pub use operator::{AdminOp, Operator, OperatorKind, Progress, Step};
pub use storage::MetaStore;
pub use tso::Tso;

/// The scheduler's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ids reserved per persisted bound: one synced write per this many ids. Default 1000.
    pub id_batch: u64,
    /// How far ahead of the clock the persisted timestamp bound runs: one synced write per
    /// window, and how far a restart jumps ahead. Default 3 s.
    pub tso_window: Duration,
    /// Voters every region should have. Default 3.
    pub max_replicas: usize,
    /// A store not heard from for this long is down: its peers are replaced elsewhere.
    /// Default 30 min.
    pub max_store_down_time: Duration,
    /// An operator not finished after this long is dropped. Default 10 min.
    pub operator_timeout: Duration,
    /// Operators of each kind running at once. Defaults 8 (replica), 4 (leader), 4 (region).
    pub replica_schedule_limit: usize,
    pub leader_schedule_limit: usize,
    pub region_schedule_limit: usize,
    /// Finished or dropped operators kept for the status page. Default 256.
    pub operator_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id_batch: 1000,
            tso_window: Duration::from_secs(3),
            max_replicas: 3,
            max_store_down_time: Duration::from_secs(30 * 60),
            operator_timeout: Duration::from_secs(10 * 60),
            replica_schedule_limit: 8,
            leader_schedule_limit: 4,
            region_schedule_limit: 4,
            operator_history: 256,
        }
    }
}

impl Config {
    /// The defaults with every checker off (all schedule limits 0): only operators an
    /// administrator asks for run.
    pub fn without_checkers() -> Config {
        Config {
            replica_schedule_limit: 0,
            leader_schedule_limit: 0,
            region_schedule_limit: 0,
            ..Default::default()
        }
    }
}

/// An operator as the status page shows it.
#[derive(Clone, Debug)]
pub struct OperatorStatus {
    pub region_id: u64,
    pub kind: OperatorKind,
    pub description: String,
    pub step: usize,
    pub steps: usize,
    pub age: Duration,
    /// `None` while running; `Some(true)` finished, `Some(false)` timed out.
    pub finished: Option<bool>,
}

impl OperatorStatus {
    fn of(op: &Operator, finished: Option<bool>, now: Instant) -> OperatorStatus {
        OperatorStatus {
            region_id: op.region_id,
            kind: op.kind,
            description: op.description.clone(),
            step: op.current,
            steps: op.steps.len(),
            age: now.saturating_duration_since(op.created),
            finished,
        }
    }
}

/// The scheduler: ids, timestamps and the cluster model over one metadata store, and the
/// operators it hands out in heartbeat responses.
pub struct Scheduler {
    cluster_id: u64,
    pub ids: IdAllocator,
    pub tso: Tso,
    pub cluster: Cluster,
    pub gc_safe_point: GcSafePoint,
    pub keyspaces: Keyspaces,
    /// The cluster's wait-for graph of pessimistic lock requests.
    pub deadlocks: deadlock::Detector,
    config: Config,
    operators: Mutex<HashMap<u64, Operator>>,
    history: Mutex<VecDeque<OperatorStatus>>,
    clock: ClockRef,
    logger: slog::Logger,
}

/// Most keys in one split operator: what a store accepts in one split request (raftstore's
/// `MAX_SPLITS_PER_REQUEST`). More would be refused at every heartbeat, for ever.
pub const MAX_SPLIT_KEYS: usize = 64;

/// Most regions one store heartbeat's answer asks to report at once (the rest at the next).
pub const MAX_REGIONS_WITH_OPERATORS: usize = 4096;

impl Scheduler {
    /// Opens the scheduler over `store`, continuing from what it holds. Every time it reads
    /// (TSO, heartbeat ages, operator timeouts) comes from `clock`.
    pub fn open(
        store: Arc<dyn MetaStore>,
        config: &Config,
        clock: ClockRef,
        logger: &slog::Logger,
    ) -> Result<Scheduler> {
        Ok(Scheduler {
            cluster_id: id::load_or_init_cluster_id(store.as_ref(), clock.wall())?,
            ids: IdAllocator::open(store.clone(), config.id_batch)?,
            tso: Tso::open(store.clone(), config.tso_window, clock.clone())?,
            gc_safe_point: GcSafePoint::open(store.clone())?,
            keyspaces: Keyspaces::open(store.clone())?,
            deadlocks: deadlock::Detector::default(),
            cluster: Cluster::open(store, clock.clone(), logger)?,
            config: config.clone(),
            operators: Mutex::default(),
            history: Mutex::default(),
            clock,
            logger: logger.new(slog::o!("component" => "scheduler")),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cluster's id: chosen at the first open, kept in the metadata store, never 0.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn logger(&self) -> &slog::Logger {
        &self.logger
    }

    /// A joining store's API version; answers the cluster's, which the store must match.
    pub fn check_api_version(
        &self,
        asked: api_version::ApiVersion,
    ) -> Result<api_version::ApiVersion> {
        let chosen = self.keyspaces.check_api_version(
            asked,
            self.cluster.is_bootstrapped(),
            self.now_secs(),
        )?;
        if chosen != asked {
            slog::warn!(self.logger, "a store asks for another API version than the cluster's";
                "asked" => %asked, "cluster" => %chosen);
        }
        Ok(chosen)
    }

    /// The scheduler's monotonic time (heartbeat ages).
    pub fn clock_now(&self) -> Instant {
        self.clock.now()
    }

    /// Unix seconds by the scheduler's clock (keyspaces' creation times).
    pub fn now_secs(&self) -> i64 {
        i64::try_from(self.clock.unix_secs()).unwrap_or(i64::MAX)
    }

    /// A store's report. The answer: the regions it leads (by the routing table) that have an
    /// operator waiting for their next region heartbeat, at most
    /// [`MAX_REGIONS_WITH_OPERATORS`]. A hibernating leader reports only every
    /// `hibernate-heartbeat-interval`, so an operator would wait that long for its first step;
    /// the store asks these regions to report now instead.
    pub fn store_heartbeat(&self, store_id: u64, stats: StoreStats) -> Result<Vec<u64>> {
        self.cluster.store_heartbeat(store_id, stats)?;
        let operators = util::lock(&self.operators);
        let mut waiting: Vec<u64> = operators
            .keys()
            .copied()
            .filter(|id| {
                self.cluster
                    .region_by_id(*id)
                    .and_then(|r| r.leader)
                    .is_some_and(|l| l.store_id == store_id)
            })
            .take(MAX_REGIONS_WITH_OPERATORS)
            .collect();
        waiting.sort_unstable();
        Ok(waiting)
    }

    /// A region heartbeat from its leader: updates the routing table and answers with the
    /// step the leader should execute, if any.
    pub fn region_heartbeat(&self, info: RegionInfo) -> Result<Option<Step>> {
        let region_id = info.region.id;
        if !self.cluster.region_heartbeat(info.clone())? {
            return Ok(None);
        }
        let now = self.clock.now();
        let mut operators = util::lock(&self.operators);
        if let Some(op) = operators.get_mut(&region_id) {
            match op.check(&info, now) {
                Progress::Run(step) => return Ok(Some(step)),
                Progress::Wait => return Ok(None),
                outcome => {
                    let finished = outcome == Progress::Finished;
                    slog::info!(self.logger, "operator ended"; "region_id" => region_id,
                        "operator" => &op.description, "finished" => finished);
                    let status = OperatorStatus::of(op, Some(finished), now);
                    operators.remove(&region_id);
                    self.record(status);
                }
            }
        }
        self.expire(&mut operators, now);
        let Some(mut op) = self.plan(&info, &operators)? else {
            return Ok(None);
        };
        let progress = op.check(&info, now);
        slog::info!(self.logger, "operator created"; "region_id" => region_id,
            "operator" => &op.description);
        operators.insert(region_id, op);
        Ok(match progress {
            Progress::Run(step) => Some(step),
            _ => None,
        })
    }

    /// Drops operators past their timeout, also of regions that stopped heartbeating (a
    /// region without a quorum): they would hold their kind's limit forever.
    fn expire(&self, operators: &mut HashMap<u64, Operator>, now: Instant) {
        let expired: Vec<u64> = operators
            .values()
            .filter(|op| now.saturating_duration_since(op.created) > op.timeout)
            .map(|op| op.region_id)
            .collect();
        for region_id in expired {
            if let Some(op) = operators.remove(&region_id) {
                slog::info!(self.logger, "operator timed out"; "region_id" => region_id,
                    "operator" => &op.description);
                self.record(OperatorStatus::of(&op, Some(false), now));
            }
        }
    }

    fn record(&self, status: OperatorStatus) {
        let mut history = util::lock(&self.history);
        if history.len() >= self.config.operator_history {
            history.pop_front();
        }
        history.push_back(status);
    }

    fn plan(
        &self,
        info: &RegionInfo,
        running: &HashMap<u64, Operator>,
    ) -> Result<Option<Operator>> {
        let down: HashSet<u64> = self
            .cluster
            .down_stores(self.config.max_store_down_time)
            .into_iter()
            .collect();
        let up: Vec<u64> = self
            .cluster
            .stores()
            .iter()
            .map(|s| s.id)
            .filter(|id| !down.contains(id))
            .collect();
        let mut loads = self.cluster.loads(&up);
        // A leader being transferred counts where it goes: otherwise balancing, seeing its
        // old store still over-led, moves another leader off it at once (and, each time an
        // administrator moves a leader, moves one back onto the store it went to).
        for op in running.values() {
            let Some(Step::TransferLeader { to }) = op.steps.get(op.current) else {
                continue;
            };
            let from = self
                .cluster
                .region_by_id(op.region_id)
                .and_then(|r| r.leader)
                .map(|l| l.store_id);
            if let Some(from) = from.filter(|f| *f != to.store_id) {
                if let Some(n) = loads.leaders.get_mut(&from) {
                    *n = n.saturating_sub(1);
                }
                *loads.leaders.entry(to.store_id).or_default() += 1;
            }
        }
        let ctx = schedule::Context {
            max_replicas: self.config.max_replicas,
            up_stores: &up,
            down_stores: &down,
            loads: &loads,
        };
        let running_of = |kind| running.values().filter(|o| o.kind == kind).count();
        let c = &self.config;
        let plan = self
            .keyspace_split(info)
            .or_else(|| {
                (running_of(OperatorKind::Replica) < c.replica_schedule_limit)
                    .then(|| schedule::replica_check(info, &ctx))
                    .flatten()
            })
            .or_else(|| {
                (running_of(OperatorKind::BalanceLeader) < c.leader_schedule_limit)
                    .then(|| schedule::balance_leader(info, &ctx))
                    .flatten()
            })
            .or_else(|| {
                (running_of(OperatorKind::BalanceRegion) < c.region_schedule_limit)
                    .then(|| schedule::balance_region(info, &ctx))
                    .flatten()
            });
        let Some(mut plan) = plan else {
            return Ok(None);
        };
        // A new peer's id, shared by its add and promote steps.
        if plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::AddLearner { peer } if peer.id == 0))
        {
            let id = self.ids.alloc_one()?;
            for step in &mut plan.steps {
                match step {
                    Step::AddLearner { peer } | Step::PromoteLearner { peer } if peer.id == 0 => {
                        peer.id = id
                    }
                    _ => {}
                }
            }
        }
        Ok(Some(Operator::new(
            info.region.id,
            plan.kind,
            plan.description,
            plan.steps,
            self.config.operator_timeout,
            self.clock.now(),
        )))
    }

    /// Under API V2, a region that straddles a keyspace boundary splits there first: a client
    /// with a keyspace must find its keyspace's last region ending at the next keyspace.
    fn keyspace_split(&self, info: &RegionInfo) -> Option<schedule::Plan> {
        let region = &info.region;
        let keys =
            self.keyspaces
                .split_keys_inside(&region.start_key, &region.end_key, MAX_SPLIT_KEYS);
        if keys.is_empty() {
            return None;
        }
        let version = region.region_epoch.unwrap_or_default().version;
        Some(schedule::Plan {
            kind: OperatorKind::KeyspaceSplit,
            description: format!(
                "split at {} keyspace boundaries (version {version})",
                keys.len()
            ),
            steps: vec![Step::Split { keys, version }],
        })
    }

    /// Asks for region `region_id` to be split at `keys` (an administrator, `ctl split`): the
    /// region's leader gets it with its next heartbeat. Replaces no running operator.
    pub fn ask_split(&self, region_id: u64, keys: Vec<Vec<u8>>) -> Result<()> {
        self.add_admin_operator(region_id, AdminOp::Split(keys))
            .map(|_| ())
    }

    /// Asks for an administrator's operator on region `region_id`; the region's leader gets
    /// its first step with its next heartbeat. Refused (`Error::Invalid`, saying why) when the
    /// region is not known, already has an operator, or the operator cannot apply to it.
    /// Returns the operator's description.
    pub fn add_admin_operator(&self, region_id: u64, op: AdminOp) -> Result<String> {
        let invalid = |detail: String| Error::Invalid { detail };
        let info = self
            .cluster
            .region_by_id(region_id)
            .ok_or_else(|| invalid(format!("region {region_id} is not known")))?;
        let region = &info.region;
        let on_store = |store: u64| region.peers.iter().find(|p| p.store_id == store).copied();
        let mut operators = util::lock(&self.operators);
        if let Some(running) = operators.get(&region_id) {
            return Err(invalid(format!(
                "region {region_id} already has an operator: {}",
                running.description
            )));
        }
        let (description, steps) = match op {
            AdminOp::Split(mut keys) => {
                if keys.is_empty() {
                    return Err(invalid("no split keys".into()));
                }
                if keys.len() > MAX_SPLIT_KEYS {
                    return Err(invalid(format!(
                        "{} split keys: a store takes at most {MAX_SPLIT_KEYS} in one split",
                        keys.len()
                    )));
                }
                // Under V2 boundaries are encoded keys, which clients decode.
                if self.keyspaces.api_version() == Some(api_version::ApiVersion::V2) {
                    for k in &keys {
                        match api_version::memcomparable::decode_exact("split key", k) {
                            Err(bad) => {
                                return Err(invalid(format!(
                                    "{bad}: under API version 2 region boundaries are encoded \
                                     keys"
                                )))
                            }
                            // It would read as "no bound" once a client decodes it.
                            Ok(decoded) if decoded.is_empty() => {
                                return Err(invalid(
                                    "split key: the encoding of the empty key is no boundary"
                                        .into(),
                                ))
                            }
                            Ok(_) => {}
                        }
                    }
                }
                keys.sort();
                keys.dedup();
                // A key at or outside the range would make the split fail at the leader,
                // again at every heartbeat until the operator times out.
                let inside = |k: &Vec<u8>| {
                    k.as_slice() > region.start_key.as_slice()
                        && (region.end_key.is_empty() || k.as_slice() < region.end_key.as_slice())
                };
                if let Some(k) = keys.iter().find(|k| !inside(k)) {
                    return Err(invalid(format!(
                        "split key {k:?} is not inside region {region_id} [{:?}, {:?})",
                        region.start_key, region.end_key
                    )));
                }
                let version = region.region_epoch.unwrap_or_default().version;
                // The keys, readably, so that an operator's description tells it apart from
                // another split of the same region.
                let shown: Vec<String> = keys
                    .iter()
                    .take(4)
                    .map(|k| String::from_utf8_lossy(k).escape_debug().to_string())
                    .collect();
                let more = if keys.len() > 4 { ", ..." } else { "" };
                (
                    format!(
                        "split at {} keys [{}{more}] (version {version})",
                        keys.len(),
                        shown.join(", ")
                    ),
                    vec![Step::Split { keys, version }],
                )
            }
            AdminOp::TransferLeader { to_store } => {
                let to = on_store(to_store)
                    .filter(|p| p.role() == PeerRole::Voter)
                    .ok_or_else(|| {
                        invalid(format!(
                            "region {region_id} has no voter on store {to_store}"
                        ))
                    })?;
                if info.leader.is_some_and(|l| l.id == to.id) {
                    return Err(invalid(format!(
                        "peer {} on store {to_store} already leads region {region_id}",
                        to.id
                    )));
                }
                (
                    format!("transfer leader to peer {} on store {to_store}", to.id),
                    vec![Step::TransferLeader { to }],
                )
            }
            AdminOp::AddPeer { store } => {
                match self.cluster.get_store(store) {
                    Err(Error::StoreNotFound { .. }) => {
                        return Err(invalid(format!("store {store} is not known")))
                    }
                    other => other?,
                };
                if let Some(p) = on_store(store) {
                    return Err(invalid(format!(
                        "region {region_id} already has peer {} on store {store}",
                        p.id
                    )));
                }
                let peer = Peer {
                    id: self.ids.alloc_one()?,
                    store_id: store,
                    role: PeerRole::Learner as i32,
                    ..Default::default()
                };
                (
                    format!("add peer {} on store {store}", peer.id),
                    vec![Step::AddLearner { peer }, Step::PromoteLearner { peer }],
                )
            }
            AdminOp::RemovePeer { store } => {
                let peer = on_store(store).ok_or_else(|| {
                    invalid(format!("region {region_id} has no peer on store {store}"))
                })?;
                if info.leader.is_some_and(|l| l.id == peer.id) {
                    return Err(invalid(format!(
                        "peer {} on store {store} leads region {region_id}: transfer the \
                         leader first",
                        peer.id
                    )));
                }
                (
                    format!("remove peer {} on store {store}", peer.id),
                    vec![Step::RemovePeer { peer }],
                )
            }
        };
        slog::info!(self.logger, "administrator's operator created"; "region_id" => region_id,
            "operator" => &description);
        operators.insert(
            region_id,
            Operator::new(
                region_id,
                OperatorKind::Admin,
                description.clone(),
                steps,
                self.config.operator_timeout,
                self.clock.now(),
            ),
        );
        Ok(description)
    }

    /// Running operators, then the most recent ended ones.
    pub fn operators(&self) -> Vec<OperatorStatus> {
        let now = self.clock.now();
        let running = util::lock(&self.operators);
        let mut out: Vec<_> = running
            .values()
            .map(|o| OperatorStatus::of(o, None, now))
            .collect();
        out.sort_by_key(|o| o.region_id);
        out.extend(util::lock(&self.history).iter().rev().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::MemEngine;
    use proto::build::{peer, region};
    use proto::metapb::Store;

    /// Stores 1-3 (and 4, known but holding nothing); region 1 [a, z) with voters on stores 1
    /// and 2, led from store 1.
    fn open(config: &Config) -> Scheduler {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        Scheduler::open(
            Arc::new(MemEngine::new()),
            config,
            util::SystemClock::shared(),
            &logger,
        )
        .unwrap()
    }

    fn store(id: u64) -> Store {
        Store {
            id,
            ..Default::default()
        }
    }

    fn cluster() -> (Scheduler, RegionInfo) {
        // No checker runs: only the administrator's operators.
        let s = open(&Config::without_checkers());
        let first = region(1).epoch(1, 1).peers([peer(11, 1)]).build();
        s.cluster.bootstrap(store(1), first).unwrap();
        for id in 2..=4 {
            s.cluster.put_store(store(id)).unwrap();
        }
        let info = RegionInfo {
            region: region(1)
                .range(b"a", b"z")
                .epoch(2, 2)
                .peers([peer(11, 1), peer(12, 2)])
                .build(),
            leader: Some(peer(11, 1)),
            ..Default::default()
        };
        assert_eq!(s.region_heartbeat(info.clone()).unwrap(), None);
        (s, info)
    }

    fn refused(s: &Scheduler, op: AdminOp, why: &str) {
        match s.add_admin_operator(1, op.clone()) {
            Err(Error::Invalid { detail }) => assert!(detail.contains(why), "{op:?}: {detail}"),
            other => panic!("{op:?}: {other:?}"),
        }
    }

    #[test]
    fn split_keys_are_bounded_and_encoded_under_v2() {
        let (s, info) = cluster();
        let many: Vec<Vec<u8>> = (0..=MAX_SPLIT_KEYS)
            .map(|i| format!("k{i:03}").into_bytes())
            .collect();
        refused(&s, AdminOp::Split(many), "at most 64");
        // As if the first store had chosen V2 before the bootstrap.
        s.keyspaces
            .check_api_version(api_version::ApiVersion::V2, false, 0)
            .unwrap();
        refused(&s, AdminOp::Split(vec![b"k".to_vec()]), "encoded keys");
        let empty = api_version::memcomparable::encode(b"");
        refused(&s, AdminOp::Split(vec![empty]), "empty key");
        let encoded = api_version::memcomparable::encode(b"k");
        s.add_admin_operator(1, AdminOp::Split(vec![encoded]))
            .unwrap();
        // Without an operator in the way, the region is cut at keyspace 0's boundaries
        // inside it ([a, z) holds r and x's).
        util::lock(&s.operators).clear();
        let Some(Step::Split { keys, .. }) = s.region_heartbeat(info).unwrap() else {
            panic!("no keyspace split");
        };
        assert_eq!(keys, api_version::keyspace::split_keys(0));
    }

    /// Balancing counts a leader under transfer at its destination: store 1 leads two
    /// regions, an administrator moves one leader to store 2, and the other region is then
    /// balanced enough (otherwise its leader would move at once, undoing or doubling the
    /// administrator's move before the region reports it done).
    #[test]
    fn a_leader_under_transfer_counts_where_it_goes() {
        let s = open(&Config {
            replica_schedule_limit: 0,
            region_schedule_limit: 0,
            ..Default::default()
        });
        s.cluster
            .bootstrap(store(1), region(1).epoch(1, 1).peers([peer(11, 1)]).build())
            .unwrap();
        for id in 2..=3 {
            s.cluster.put_store(store(id)).unwrap();
        }
        let info = |id: u64, range: (&[u8], &[u8])| RegionInfo {
            region: region(id)
                .range(range.0, range.1)
                .epoch(3, 2)
                .peers([
                    peer(id * 10 + 1, 1),
                    peer(id * 10 + 2, 2),
                    peer(id * 10 + 3, 3),
                ])
                .build(),
            leader: Some(peer(id * 10 + 1, 1)),
            ..Default::default()
        };
        let (a, b) = (info(1, (b"", b"m")), info(2, (b"m", b"")));
        s.cluster.region_heartbeat(a.clone()).unwrap();
        s.cluster.region_heartbeat(b.clone()).unwrap();
        s.add_admin_operator(2, AdminOp::TransferLeader { to_store: 2 })
            .unwrap();
        assert_eq!(
            s.region_heartbeat(b).unwrap(),
            Some(Step::TransferLeader { to: peer(22, 2) })
        );
        // Store 1 will lead one region, stores 2 and 3 at most one: nothing to move.
        assert_eq!(s.region_heartbeat(a).unwrap(), None);
    }

    #[test]
    fn admin_operators_are_checked_against_the_region() {
        let (s, _) = cluster();
        assert!(matches!(
            s.add_admin_operator(9, AdminOp::AddPeer { store: 3 }),
            Err(Error::Invalid { .. })
        ));
        refused(&s, AdminOp::Split(vec![]), "no split keys");
        refused(&s, AdminOp::Split(vec![b"a".to_vec()]), "not inside");
        refused(&s, AdminOp::Split(vec![b"zz".to_vec()]), "not inside");
        refused(&s, AdminOp::TransferLeader { to_store: 3 }, "no voter");
        refused(&s, AdminOp::TransferLeader { to_store: 1 }, "already leads");
        refused(&s, AdminOp::AddPeer { store: 9 }, "store 9 is not known");
        refused(&s, AdminOp::AddPeer { store: 2 }, "already has peer 12");
        refused(&s, AdminOp::RemovePeer { store: 3 }, "no peer on store 3");
        refused(
            &s,
            AdminOp::RemovePeer { store: 1 },
            "transfer the leader first",
        );
        assert!(s.operators().is_empty());
    }

    #[test]
    fn a_store_heartbeat_names_the_regions_it_leads_that_wait_with_an_operator() {
        let (s, info) = cluster();
        let stats = StoreStats::default();
        assert!(s.store_heartbeat(1, stats).unwrap().is_empty());
        s.add_admin_operator(1, AdminOp::AddPeer { store: 3 })
            .unwrap();
        // Region 1 is led from store 1: only store 1 is told.
        assert_eq!(s.store_heartbeat(1, stats).unwrap(), vec![1]);
        assert!(s.store_heartbeat(2, stats).unwrap().is_empty());
        // The leader reported and took its step; the region is told until the operator ends.
        assert!(s.region_heartbeat(info).unwrap().is_some());
        assert_eq!(s.store_heartbeat(1, stats).unwrap(), vec![1]);
    }

    #[test]
    fn admin_operators_reach_the_leader_one_step_at_a_time() {
        let (s, mut info) = cluster();
        let description = s
            .add_admin_operator(1, AdminOp::AddPeer { store: 3 })
            .unwrap();
        assert!(description.starts_with("add peer"), "{description}");
        refused(
            &s,
            AdminOp::RemovePeer { store: 2 },
            "already has an operator",
        );
        let Some(Step::AddLearner { peer: new }) = s.region_heartbeat(info.clone()).unwrap() else {
            panic!("no add-learner step");
        };
        assert_eq!((new.store_id, new.role()), (3, PeerRole::Learner));
        assert!(![11, 12].contains(&new.id), "{new:?}");
        info.region.peers.push(new);
        assert_eq!(
            s.region_heartbeat(info.clone()).unwrap(),
            Some(Step::PromoteLearner { peer: new })
        );
        info.region.peers[2].role = PeerRole::Voter as i32;
        assert_eq!(s.region_heartbeat(info.clone()).unwrap(), None);
        let ops = s.operators();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].kind, ops[0].finished),
            (OperatorKind::Admin, Some(true))
        );

        s.add_admin_operator(1, AdminOp::TransferLeader { to_store: 3 })
            .unwrap();
        assert_eq!(
            s.region_heartbeat(info.clone()).unwrap(),
            Some(Step::TransferLeader {
                to: info.region.peers[2]
            })
        );
        info.leader = Some(info.region.peers[2]);
        assert_eq!(s.region_heartbeat(info.clone()).unwrap(), None);

        s.add_admin_operator(1, AdminOp::RemovePeer { store: 1 })
            .unwrap();
        assert_eq!(
            s.region_heartbeat(info.clone()).unwrap(),
            Some(Step::RemovePeer { peer: peer(11, 1) })
        );
        info.region.peers.remove(0);
        assert_eq!(s.region_heartbeat(info.clone()).unwrap(), None);

        // Unsorted, repeated keys: asked once each, in order.
        s.ask_split(1, vec![b"q".to_vec(), b"c".to_vec(), b"q".to_vec()])
            .unwrap();
        assert_eq!(
            s.region_heartbeat(info.clone()).unwrap(),
            Some(Step::Split {
                keys: vec![b"c".to_vec(), b"q".to_vec()],
                version: 2
            })
        );
    }
}
