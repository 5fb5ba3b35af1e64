//! Raft log GC and leader transfer.

use std::time::Duration;

use raftstore::Error;
use test_cluster::{wait_until, Cluster, ClusterConfig};

fn gc_config() -> ClusterConfig {
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.raft_log_gc_tick_interval_ms = 100;
    cfg.raftstore.raft_log_gc_threshold = 50;
    cfg.raftstore.raft_engine_purge_interval_ms = 100;
    // raft-engine deletes files only once its append queue exceeds the purge threshold.
    cfg.raft_log.target_file_size = 1 << 20;
    cfg.raft_log.purge_threshold = 2 << 20;
    cfg
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// The bound the test states for each store's raft-engine directory.
const LOG_DIR_BOUND: u64 = 7 << 20;

#[test]
fn log_gc_keeps_raft_engine_disk_use_bounded_under_steady_writes() {
    let mut cluster = Cluster::run(gc_config());
    // Incompressible values: raft-engine compresses its batches.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = vec![0u8; 16 << 10];
    let writes = (21 * LOG_DIR_BOUND / value.len() as u64) as u32;
    let mut largest = 0;
    for i in 0..writes {
        for chunk in value.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        cluster.must_put(&key(i % 512), &value);
        if i % 50 == 0 {
            for store in 1..=3 {
                largest = largest.max(cluster.raft_log_dir_size(store));
            }
        }
    }
    let written = u64::from(writes) * value.len() as u64;
    assert!(written >= 20 * LOG_DIR_BOUND);
    // Give the last compaction and purge a moment, then measure again.
    std::thread::sleep(Duration::from_millis(500));
    for store in 1..=3 {
        largest = largest.max(cluster.raft_log_dir_size(store));
    }
    eprintln!("largest raft-engine dir: {largest} bytes after {written} bytes of writes");
    assert!(
        largest < LOG_DIR_BOUND,
        "after {written} bytes of writes a raft-engine dir reached {largest} bytes"
    );
    let leader = cluster.wait_leader(1);
    let status = cluster.peer_status(leader, 1).unwrap();
    assert!(
        status.truncated_index > 5,
        "the log was compacted: {status:?}"
    );

    // A restart loads the compacted log (truncated state, first index) and serves on.
    let last = value.clone();
    cluster.shutdown();
    cluster.start();
    assert_eq!(cluster.must_get(&key((writes - 1) % 512)), Some(last));
    cluster.must_put(b"after-restart", b"1");
    for store in 1..=3 {
        cluster.wait_applied(store, b"after-restart", Some(b"1"));
    }
}

#[test]
fn the_log_is_not_compacted_past_a_lagging_follower() {
    let cluster = Cluster::run(gc_config());
    let leader = cluster.wait_leader(1);
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    cluster.must_put(b"before", b"1");
    cluster.wait_applied(follower, b"before", Some(b"1"));
    let reached = cluster.peer_status(follower, 1).unwrap().applied_index;
    let others: Vec<u64> = (1..=3).filter(|s| *s != follower).collect();
    cluster.partition(&[follower], &others);
    for i in 0..300 {
        cluster.must_put(&key(i), b"x");
    }
    // Several GC checks pass while the follower is cut off.
    std::thread::sleep(Duration::from_millis(500));
    let leader = cluster.wait_leader(1);
    let status = cluster.peer_status(leader, 1).unwrap();
    assert!(
        status.truncated_index <= reached,
        "compacted to {} past the follower's {reached}",
        status.truncated_index
    );
    cluster.clear_filters();
    // It catches up from the log (there is no snapshot to send yet).
    cluster.wait_applied(follower, &key(299), Some(b"x"));
    // Then the log can go.
    wait_until("the log is compacted", Duration::from_secs(10), || {
        cluster.peer_status(leader, 1).unwrap().truncated_index > reached
    });
}

#[test]
fn leadership_moves_to_a_caught_up_peer_on_request() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let old = cluster.wait_leader(1);
    cluster.must_put(b"k", b"v1");
    let target = (1..=3).find(|s| *s != old).unwrap();
    cluster.wait_applied(target, b"k", Some(b"v1"));
    cluster.transfer_leader(1, target).unwrap();
    let what = format!("store {target} becomes leader");
    wait_until(&what, Duration::from_secs(10), || {
        cluster.peer_status(target, 1).is_some_and(|s| s.is_leader)
    });
    match cluster.write_on(old, 1, vec![raftstore::Modify::put(*b"k", *b"v2")]) {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("the old leader must refuse writes, got {other:?}"),
    }
    cluster.must_put(b"k", b"v2");
    assert_eq!(cluster.must_get(b"k"), Some(b"v2".to_vec()));

    // A peer that cannot be caught up (cut off) is refused as a target.
    let leader = cluster.wait_leader(1);
    let behind = (1..=3).find(|s| *s != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|s| *s != behind).collect();
    cluster.partition(&[behind], &others);
    cluster.must_put(b"k", b"v3");
    match cluster.transfer_leader(1, behind) {
        Err(Error::InvalidCommand { detail, .. }) => assert!(detail.contains("caught-up")),
        other => panic!("a lagging target must be refused, got {other:?}"),
    }
    cluster.clear_filters();
}
