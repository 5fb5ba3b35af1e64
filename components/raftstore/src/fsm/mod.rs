//! Thin adapters from the store's state machines to the batch system: the FSM types, the two
//! poll handlers (raft rounds with group commit, apply rounds with one KV write), the store
//! writer that makes raft rounds durable, and the store context they share. Command logic lives in `operation/`, peer state in `raft/`.

mod apply;
pub mod liveness;
mod peer;
mod store;
pub mod ticks;
mod writer;

pub use apply::{ApplyControlFsm, ApplyFsm, ApplyPollerBuilder};
pub use peer::{PeerFsm, RaftPoller, RaftPollerBuilder};
pub use store::{
    write_region_state, Engines, GenTask, Routers, SnapshotBuilder, SnapshotIngester, Snapshots,
    StopState, StoreContext, StoreFsm, StoreMeta, StoreStats, WorkerQueues,
};
pub(crate) use writer::spawn as spawn_store_writer;
pub use writer::LogWriter;
