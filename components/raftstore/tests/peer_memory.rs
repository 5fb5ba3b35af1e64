//! Where an idle region's memory goes: the heap each step of creating a region's peer on a
//! store adds, averaged over many regions, counted with a global allocator (hence a test
//! binary of its own). The steps are the store's own (`create_peer_as`): open the storage,
//! make the raft peer, elect and persist (raft-engine's index, the entry cache), box the FSMs
//! and register them with the raft and apply routers (mailboxes, router entries).

mod common;

use std::time::Instant;

use batch_system::{create_system, Config as BatchConfig, Fsm};
use engine::MemEngine;
use proto::build::{peer, region};
use proto::raft_serverpb::{PeerState, RaftApplyState};
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::fsm::{ApplyFsm, PeerFsm};
use raftstore::raft::Peer;
use raftstore::storage::{CacheBudget, PeerStorage};
use raftstore::Config;
use util::heap::live_bytes as live;

#[global_allocator]
static ALLOC: util::heap::CountingAlloc = util::heap::CountingAlloc;

struct Control;
impl Fsm for Control {
    type Message = ();
}

const REGIONS: u64 = 1_000;

/// Heap added by each step, summed over the regions.
#[derive(Default)]
struct Steps {
    storage: isize,
    peer: isize,
    elected: isize,
    raft_fsm: isize,
    apply_fsm: isize,
}

fn measure<T>(into: &mut isize, f: impl FnOnce() -> T) -> T {
    let before = live();
    let out = f();
    *into += live() - before;
    out
}

#[test]
fn an_idle_region_peers_memory_by_part() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = RaftLogEngine::open(&RaftLogConfig::new(dir.path().join("raft"))).expect("log");
    let kv = MemEngine::new();
    let budget = CacheBudget::new(64 << 20);
    let cfg = Config::default();
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let batch = BatchConfig {
        mailbox_capacity: cfg.peer_mailbox_capacity,
        ..BatchConfig::default()
    };
    let (raft_router, _raft_system) =
        create_system::<PeerFsm<MemEngine>, Control>("raft", &batch, Box::new(Control))
            .expect("raft system");
    let (apply_router, _apply_system) =
        create_system::<ApplyFsm<MemEngine>, Control>("apply", &batch, Box::new(Control))
            .expect("apply system");
    let now = Instant::now();
    let mut steps = Steps::default();
    let start = live();
    for id in 1..=REGIONS {
        // A one-voter region, so the peer elects itself: an idle leader, entry and all.
        let region = region(id)
            .range(
                format!("r{id:06}").into_bytes(),
                format!("r{:06}", id + 1).into_bytes(),
            )
            .epoch(1, 1)
            .peers([peer(id * 100 + 1, 1)])
            .build();
        let storage = measure(&mut steps.storage, || {
            PeerStorage::open(
                kv.clone(),
                log.clone(),
                region.clone(),
                PeerState::Normal,
                budget.clone(),
            )
            .expect("storage")
        });
        let mut peer = measure(&mut steps.peer, || {
            Peer::new(&cfg, 1, id * 100 + 1, storage, now, &logger).expect("peer")
        });
        measure(&mut steps.elected, || {
            common::elect_alone(&mut peer, &log, now);
            drop(peer.take_effects());
        });
        let apply_logger = peer.logger().clone();
        measure(&mut steps.raft_fsm, || {
            raft_router.register(id, Box::new(PeerFsm::new(peer)));
        });
        measure(&mut steps.apply_fsm, || {
            let apply = ApplyFsm::new(region, RaftApplyState::default(), apply_logger);
            apply_router.register(id, Box::new(apply));
        });
    }
    let total = (live() - start) / REGIONS as isize;
    let per = |sum: isize| sum / REGIONS as isize;
    let raft_box = std::mem::size_of::<PeerFsm<MemEngine>>() as isize;
    let apply_box = std::mem::size_of::<ApplyFsm<MemEngine>>() as isize;
    let rows = [
        ("PeerStorage (states, entry cache)", per(steps.storage)),
        ("Peer::new (RawNode, progress, logger)", per(steps.peer)),
        (
            "election persisted (log entry, raft-engine index)",
            per(steps.elected),
        ),
        ("PeerFsm box (Peer and RawNode inline)", raft_box),
        (
            "raft mailbox + router entry",
            per(steps.raft_fsm) - raft_box,
        ),
        ("ApplyFsm box", apply_box),
        (
            "apply mailbox + router entry",
            per(steps.apply_fsm) - apply_box,
        ),
    ];
    eprintln!("heap per idle region peer, by part (bytes, average of {REGIONS}):");
    for (part, bytes) in rows {
        eprintln!("  {part:<52} {bytes:>7}");
    }
    eprintln!("  {:<52} {total:>7}", "total");
    // The bound today (see docs/design/batch-system.md); the goal is 4 KiB.
    assert!(
        total < 16 << 10,
        "{total} bytes of heap per idle region peer"
    );
    assert!(
        per(steps.raft_fsm) - raft_box < 1024 && per(steps.apply_fsm) - apply_box < 1024,
        "a mailbox costs more than 1 KiB whatever its capacity"
    );
}
