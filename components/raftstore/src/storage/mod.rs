//! Raft storage of a region: [`PeerStorage`] (raft-rs's `Storage`), its [`EntryCache`], and the
//! initial states of a freshly created region.

mod entry_cache;
mod peer_storage;

pub use entry_cache::{CacheBudget, EntryCache};
pub use peer_storage::{
    conf_state_from_region, initial_apply_state, initial_raft_state, left_behind,
    persist_snapshot_steps, put_region_state, write_snapshot_raft_state, PeerStorage,
    SnapshotSteps, RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM,
};
