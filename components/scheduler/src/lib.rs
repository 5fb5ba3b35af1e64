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
pub mod storage;
pub mod tso;

use std::sync::Arc;
use std::time::Duration;

pub use cluster::{Cluster, RegionInfo};
pub use error::{Error, Result};
pub use id::IdAllocator;
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id_batch: 1000,
            tso_window: Duration::from_secs(3),
        }
    }
}

/// The scheduler: ids, timestamps and the cluster model over one metadata store.
pub struct Scheduler {
    pub ids: IdAllocator,
    pub tso: Tso,
    pub cluster: Cluster,
}

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
        })
    }
}
