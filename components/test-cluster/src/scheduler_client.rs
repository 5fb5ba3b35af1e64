//! The store's view of the in-process scheduler: the real scheduler core, called directly.

use std::path::Path;
use std::sync::Arc;

use engine::{RocksConfig, RocksEngine};
use proto::metapb::Region;
use raftstore::{Error, Result, SchedulerClient};

/// Opens (or reopens) the scheduler whose metadata lives under `dir/scheduler`.
pub(crate) fn open_scheduler(dir: &Path, logger: &slog::Logger) -> Arc<scheduler::Scheduler> {
    let rocks = RocksConfig {
        block_cache_size: 4 << 20,
        write_buffer_size: 1 << 20,
        max_background_jobs: 1,
        ..Default::default()
    };
    let meta = RocksEngine::open(&dir.join("scheduler"), &rocks).expect("open scheduler store");
    let scheduler = scheduler::Scheduler::open(Arc::new(meta), &Default::default(), logger)
        .expect("open scheduler");
    Arc::new(scheduler)
}

/// A store's handle on the in-process scheduler.
#[derive(Clone)]
pub struct SchedulerHandle(pub Arc<scheduler::Scheduler>);

impl SchedulerClient for SchedulerHandle {
    fn alloc_ids(&self, count: usize) -> Result<Vec<u64>> {
        self.0.ids.alloc(count).map_err(|e| Error::Scheduler {
            detail: e.to_string(),
        })
    }

    fn report_split(&self, parent: &Region, new_regions: &[Region]) {
        let _ = self.0.cluster.report_split(parent, new_regions);
    }
}
