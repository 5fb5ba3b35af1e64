//! The store's view of the in-process scheduler: the real scheduler core, called directly.
//! The scheduler sits in a slot the cluster can empty and refill, to restart it under running
//! stores (which then see "scheduler unavailable" for a moment).

use std::path::Path;
use std::sync::{Arc, RwLock};

use engine::{RocksConfig, RocksEngine};
use proto::metapb::Region;
use raftstore::{Error, RegionHeartbeat, Result, SchedulerClient, SchedulerStep, StoreHeartbeat};
use scheduler::{RegionInfo, Step, StoreStats};

pub(crate) type Slot = Arc<RwLock<Option<Arc<scheduler::Scheduler>>>>;

/// Opens (or reopens) the scheduler whose metadata lives under `dir/scheduler`.
pub(crate) fn open_scheduler(
    dir: &Path,
    config: &scheduler::Config,
    logger: &slog::Logger,
) -> Arc<scheduler::Scheduler> {
    let rocks = RocksConfig {
        block_cache_size: 4 << 20,
        write_buffer_size: 1 << 20,
        max_background_jobs: 1,
        ..Default::default()
    };
    let meta = RocksEngine::open(&dir.join("scheduler"), &rocks).expect("open scheduler store");
    let scheduler =
        scheduler::Scheduler::open(Arc::new(meta), config, logger).expect("open scheduler");
    Arc::new(scheduler)
}

/// When each batch of ids was handed out, by its first id (a split's first id is its first
/// new region's): lets a bench time a split from its ask.
pub(crate) type Allocations = Arc<std::sync::Mutex<Vec<(u64, std::time::Instant)>>>;

/// A store's handle on the in-process scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    pub(crate) slot: Slot,
    pub(crate) allocations: Allocations,
}

impl SchedulerHandle {
    fn get(&self) -> Result<Arc<scheduler::Scheduler>> {
        self.slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Scheduler {
                detail: "the scheduler is restarting".into(),
            })
    }
}

fn scheduler_err(e: scheduler::Error) -> Error {
    Error::Scheduler {
        detail: e.to_string(),
    }
}

impl SchedulerClient for SchedulerHandle {
    fn alloc_ids(&self, count: usize) -> Result<Vec<u64>> {
        let ids = self.get()?.ids.alloc(count).map_err(scheduler_err)?;
        if let Some(first) = ids.first() {
            self.allocations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*first, std::time::Instant::now()));
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
        }))
    }

    fn store_heartbeat(&self, hb: StoreHeartbeat) -> Result<()> {
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
}
