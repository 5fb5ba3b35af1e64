//! Snapshots: a follower the log has left behind catches up by snapshot.

use std::sync::atomic::Ordering;

use test_cluster::{Cluster, ClusterConfig};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn config() -> ClusterConfig {
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.raft_log_gc_tick_interval_ms = 100;
    cfg.raftstore.raft_log_gc_threshold = 20;
    cfg.raftstore.raft_log_gc_count_limit = 50;
    cfg
}

fn assert_caught_up(cluster: &Cluster, follower: u64, written: u32) {
    cluster.wait_applied(follower, &key(written - 1), Some(&key(written - 1)));
    let leader = cluster.wait_leader(1);
    for i in 0..written {
        assert_eq!(
            cluster.engine_get(follower, &key(i)),
            cluster.engine_get(leader, &key(i)),
            "key {i}"
        );
    }
    let status = cluster.peer_status(follower, 1).unwrap();
    assert!(
        status.truncated_index > 5,
        "it was restored from a snapshot: {status:?}"
    );
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::run(config());
    let leader = cluster.wait_leader(1);
    cluster.must_put(b"before", b"1");
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    cluster.wait_applied(follower, b"before", Some(b"1"));
    let written = cluster.leave_behind(1, follower, key);
    cluster.clear_filters();
    assert_caught_up(&cluster, follower, written);
    assert!(cluster.snapshot_faults().sent.load(Ordering::Relaxed) >= 1);
    // Its state is consistent on disk: it restarts and keeps up.
    cluster.restart_store(follower);
    cluster.must_put(b"after", b"2");
    cluster.wait_applied(follower, b"after", Some(b"2"));
    assert_eq!(cluster.engine_get(follower, &key(0)), Some(key(0)));
}

#[test]
fn a_corrupted_snapshot_chunk_is_rejected_and_sent_again() {
    let cluster = Cluster::run(config());
    let leader = cluster.wait_leader(1);
    cluster.must_put(b"before", b"1");
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    cluster.wait_applied(follower, b"before", Some(b"1"));
    let written = cluster.leave_behind(1, follower, key);
    cluster
        .snapshot_faults()
        .corrupt_next_chunk
        .store(true, Ordering::Relaxed);
    cluster.clear_filters();
    assert_caught_up(&cluster, follower, written);
    assert!(
        cluster.snapshot_faults().rejected.load(Ordering::Relaxed) >= 1,
        "the corrupt copy was detected"
    );
}
