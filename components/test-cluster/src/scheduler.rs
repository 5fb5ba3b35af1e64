//! The in-process scheduler of a test cluster: the real scheduler core over RocksDB in the
//! cluster's directory, reached by the stores through `scheduler_client::InProcessClient`.

use std::path::Path;
use std::sync::Arc;

use engine::{RocksConfig, RocksEngine};

/// Opens (or reopens) the scheduler whose metadata lives under `dir/scheduler`.
pub(crate) fn open_scheduler(
    dir: &Path,
    config: &::scheduler::Config,
    logger: &slog::Logger,
) -> Arc<::scheduler::Scheduler> {
    let rocks = RocksConfig {
        block_cache_size: 4 << 20,
        write_buffer_size: 1 << 20,
        max_background_jobs: 1,
        ..Default::default()
    };
    let meta = RocksEngine::open(&dir.join("scheduler"), &rocks).expect("open scheduler store");
    let scheduler =
        ::scheduler::Scheduler::open(Arc::new(meta), config, util::SystemClock::shared(), logger)
            .expect("open scheduler");
    Arc::new(scheduler)
}
