//! The `regionstore` library facade: re-exports the components that make up a store, so an
//! embedding database depends on one crate. The binary in `src/main.rs` is built on it.

pub use batch_system;
pub use engine;
pub use proto;
pub use raft_log;
pub use raftstore;

/// What this build contains, for `regionstore` with no subcommand and for `make run`.
pub fn status() -> String {
    [
        "Components in this build:",
        "  proto         TiKV/PD-compatible client protocol + regionstore's raft wire messages",
        "  batch-system  FSM mailboxes, router and poller pool that run region state machines",
        "  engine        KV engine trait; RocksDB (ships) and in-memory (tests) implementations",
        "  raft-log      every region's raft log in one raft-engine, group-committed",
        "  raftstore     the store: region peers on the batch system, group commit, apply,",
        "                lease/ReadIndex reads, log GC, snapshots, leader transfer,",
        "                membership changes (joint consensus), region split, and the embedded",
        "                async API (StoreApi)",
        "  scheduler     placement scheduler core: ids, TSO, routing, heartbeats, operators",
        "  scheduler-client  the store's view of the scheduler (in-process), bootstrap",
        "Not yet: network (gRPC), playground, bench.",
    ]
    .join("\n")
}
