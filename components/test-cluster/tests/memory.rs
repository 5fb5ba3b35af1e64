//! What an idle region costs a store in memory: the Rust heap each region peer holds once it
//! has a leader and nothing to do (FSMs, raft state, storage, entry cache, mailboxes, router
//! entries, raft-engine's index). RocksDB's C++ allocations are outside this count; an idle
//! region adds nothing to them. Its own test binary, because it counts every allocation of
//! the process with a global allocator.

use std::time::Duration;

use test_cluster::{wait_until, Cluster, ClusterConfig};

#[global_allocator]
static ALLOC: util::heap::CountingAlloc = util::heap::CountingAlloc;

const STORES: u64 = 3;

/// Heap bytes a running cluster of `regions` bootstrapped regions holds once every region has
/// a leader and the cluster has idled a little.
fn idle_heap(regions: u64) -> isize {
    let before = util::heap::live_bytes();
    let mut cfg = ClusterConfig::new(STORES, regions);
    // Production tick and election settings: a thousand regions at the tests' 20 ms tick
    // would keep two cores busy just ticking.
    let defaults = raftstore::Config::default();
    cfg.raftstore.raft_base_tick_interval_ms = defaults.raft_base_tick_interval_ms;
    cfg.raftstore.max_leader_lease_ms = defaults.max_leader_lease_ms;
    let cluster = Cluster::run(cfg);
    wait_until(
        "every region to have a leader",
        Duration::from_secs(120),
        || (1..=regions).all(|r| cluster.leader_of(r).is_some()),
    );
    // Heartbeats, the first log GC checks and the scheduler's reports have run.
    std::thread::sleep(Duration::from_secs(3));
    let held = util::heap::live_bytes() - before;
    drop(cluster);
    held
}

#[test]
fn an_idle_region_peer_holds_a_bounded_heap() {
    let regions = 500;
    let one = idle_heap(1);
    let many = idle_heap(1 + regions);
    let per_peer = (many - one) / (regions * STORES) as isize;
    eprintln!(
        "heap of a {STORES}-store cluster: {one} bytes with 1 region, {many} with {}; {per_peer} \
         bytes per idle region peer",
        1 + regions
    );
    // 1.4 MB before mailboxes allocated lazily (two of 4096 slots each), about 8 KB after;
    // the goal is 4 KiB.
    assert!(
        per_peer < 16 << 10,
        "{per_peer} bytes of heap per idle region peer"
    );
}
