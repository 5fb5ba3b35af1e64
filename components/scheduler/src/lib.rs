//! The placement scheduler's core (TiKV calls it PD): it knows every store and region, hands
//! out ids and timestamps, and keeps the routing table that clients and stores consult. It is
//! used in-process by the test cluster and served over gRPC by the server.
//!
//! - [`storage`]: the durable metadata store behind a small trait ([`MetaStore`]); any
//!   [`engine::KvEngine`] is one (RocksDB in the product, the in-memory engine in tests).
//! - [`id`]: ids for regions, peers and stores, persisted in batches.
//! - [`tso`]: hybrid timestamps `physical_ms << 18 | logical` with a persisted upper bound.
//! - [`cluster`]: stores, regions and the routing table, updated by heartbeats.
//!
//! # Invariants
//! - An id is never handed out twice, across restarts: the persisted bound is written
//!   (synced) before any id below it is returned.
//! - Timestamps strictly increase, across restarts: a restart starts above the persisted
//!   bound, which is always ahead of every timestamp handed out.
//! - The routing table never holds two regions with overlapping ranges, and a region's entry
//!   only moves to a newer epoch.
//!
//! # Must not depend on
//! raftstore or gRPC: stores reach the scheduler through `raftstore::SchedulerClient`, which
//! the test cluster and the scheduler client implement over this crate.

pub mod cluster;
mod error;
pub mod id;
pub mod operator;
pub mod schedule;
pub mod storage;
pub mod tso;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use cluster::{Cluster, RegionInfo, StoreInfo, StoreStats};
pub use error::{Error, Result};
pub use id::IdAllocator;
pub use operator::{Operator, OperatorKind, Progress, Step};
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
    fn of(op: &Operator, finished: Option<bool>) -> OperatorStatus {
        OperatorStatus {
            region_id: op.region_id,
            kind: op.kind,
            description: op.description.clone(),
            step: op.current,
            steps: op.steps.len(),
            age: op.created.elapsed(),
            finished,
        }
    }
}

/// The scheduler: ids, timestamps and the cluster model over one metadata store, and the
/// operators it hands out in heartbeat responses.
pub struct Scheduler {
    pub ids: IdAllocator,
    pub tso: Tso,
    pub cluster: Cluster,
    config: Config,
    operators: Mutex<HashMap<u64, Operator>>,
    history: Mutex<VecDeque<OperatorStatus>>,
    /// Peers and leaders per store, recomputed at most every `LOADS_TTL`.
    loads: Mutex<(Instant, schedule::Loads)>,
    logger: slog::Logger,
}

const LOADS_TTL: Duration = Duration::from_millis(100);

impl Scheduler {
    /// Opens the scheduler over `store`, continuing from what it holds.
    pub fn open(
        store: Arc<dyn MetaStore>,
        config: &Config,
        logger: &slog::Logger,
    ) -> Result<Scheduler> {
        Ok(Scheduler {
            ids: IdAllocator::open(store.clone(), config.id_batch)?,
            tso: Tso::open(store.clone(), config.tso_window)?,
            cluster: Cluster::open(store, logger)?,
            config: config.clone(),
            operators: Mutex::default(),
            history: Mutex::default(),
            loads: Mutex::new((Instant::now() - LOADS_TTL * 2, schedule::Loads::default())),
            logger: logger.new(slog::o!("component" => "scheduler")),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store_heartbeat(&self, store_id: u64, stats: StoreStats) -> Result<()> {
        self.cluster.store_heartbeat(store_id, stats)
    }

    /// A region heartbeat from its leader: updates the routing table and answers with the
    /// step the leader should execute, if any.
    pub fn region_heartbeat(&self, info: RegionInfo) -> Result<Option<Step>> {
        let region_id = info.region.id;
        if !self.cluster.region_heartbeat(info.clone())? {
            return Ok(None);
        }
        let mut operators = self.operators.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(op) = operators.get_mut(&region_id) {
            match op.check(&info) {
                Progress::Run(step) => return Ok(Some(step)),
                Progress::Wait => return Ok(None),
                outcome => {
                    let finished = outcome == Progress::Finished;
                    slog::info!(self.logger, "operator ended"; "region_id" => region_id,
                        "operator" => &op.description, "finished" => finished);
                    let status = OperatorStatus::of(op, Some(finished));
                    operators.remove(&region_id);
                    self.record(status);
                }
            }
        }
        self.expire(&mut operators);
        let Some(mut op) = self.plan(&info, &operators)? else {
            return Ok(None);
        };
        let progress = op.check(&info);
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
    fn expire(&self, operators: &mut HashMap<u64, Operator>) {
        let expired: Vec<u64> = operators
            .values()
            .filter(|op| op.created.elapsed() > op.timeout)
            .map(|op| op.region_id)
            .collect();
        for region_id in expired {
            if let Some(op) = operators.remove(&region_id) {
                slog::info!(self.logger, "operator timed out"; "region_id" => region_id,
                    "operator" => &op.description);
                self.record(OperatorStatus::of(&op, Some(false)));
            }
        }
    }

    fn record(&self, status: OperatorStatus) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
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
        let loads = self.loads(&up);
        let ctx = schedule::Context {
            max_replicas: self.config.max_replicas,
            up_stores: &up,
            down_stores: &down,
            loads: &loads,
        };
        let running_of = |kind| running.values().filter(|o| o.kind == kind).count();
        let c = &self.config;
        let plan = None
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
        // Counted at once, so the next heartbeats see the load this operator will add.
        self.loads.lock().unwrap_or_else(|e| e.into_inner()).0 = Instant::now() - LOADS_TTL * 2;
        Ok(Some(Operator::new(
            info.region.id,
            plan.kind,
            plan.description,
            plan.steps,
            self.config.operator_timeout,
        )))
    }

    fn loads(&self, up: &[u64]) -> schedule::Loads {
        let mut cached = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0.elapsed() > LOADS_TTL {
            *cached = (
                Instant::now(),
                schedule::Loads::from_regions(&self.cluster.regions(), up),
            );
        }
        cached.1.clone()
    }

    /// Asks for region `region_id` to be split at `keys` (an administrator, `ctl split`): the
    /// region's leader gets it with its next heartbeat. Replaces no running operator.
    pub fn ask_split(&self, region_id: u64, keys: Vec<Vec<u8>>) -> Result<()> {
        let info = self
            .cluster
            .region_by_id(region_id)
            .ok_or_else(|| Error::Invalid {
                detail: format!("region {region_id} is not known"),
            })?;
        if keys.is_empty() {
            return Err(Error::Invalid {
                detail: "no split keys".into(),
            });
        }
        let mut operators = self.operators.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = operators.get(&region_id) {
            return Err(Error::Invalid {
                detail: format!(
                    "region {region_id} already has an operator: {}",
                    running.description
                ),
            });
        }
        let version = info.region.region_epoch.unwrap_or_default().version;
        let op = Operator::new(
            region_id,
            OperatorKind::Admin,
            format!("split at {} keys", keys.len()),
            vec![Step::Split { keys, version }],
            self.config.operator_timeout,
        );
        operators.insert(region_id, op);
        Ok(())
    }

    /// Running operators, then the most recent ended ones.
    pub fn operators(&self) -> Vec<OperatorStatus> {
        let running = self.operators.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = running
            .values()
            .map(|o| OperatorStatus::of(o, None))
            .collect();
        out.sort_by_key(|o| o.region_id);
        out.extend(
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .rev()
                .cloned(),
        );
        out
    }
}
