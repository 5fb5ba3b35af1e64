//! Region split: by explicit key, by size/keys thresholds under sequential writes, and racing
//! a leader change or a membership change.

use std::time::{Duration, Instant};

use raft::eraftpb::MessageType;
use raftstore::Error;
use test_cluster::{
    wait_ok, wait_until, Cluster, ClusterConfig, ConfChangeType, DropMessages, WAIT,
};

fn key(i: u32) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

/// Waits until every running store hosts `count` regions.
fn wait_region_count(cluster: &Cluster, count: usize) {
    let counts = || -> Vec<usize> {
        cluster
            .running_stores()
            .into_iter()
            .map(|s| cluster.store_regions(s).len())
            .collect()
    };
    let what = format!("every store hosts {count} regions");
    wait_until(&what, WAIT, || counts().iter().all(|c| *c == count));
}

/// Every store's regions cover the key space and equal the scheduler's routing table.
fn assert_consistent(cluster: &Cluster) {
    let routing: Vec<_> = cluster
        .scheduler()
        .cluster
        .regions()
        .into_iter()
        .map(|info| {
            (
                info.region.id,
                info.region.start_key,
                info.region.end_key,
                info.region.region_epoch,
            )
        })
        .collect();
    for store in cluster.running_stores() {
        let regions: Vec<_> = cluster
            .assert_covers_key_space(store)
            .into_iter()
            .map(|r| (r.id, r.start_key, r.end_key, r.region_epoch))
            .collect();
        assert_eq!(
            regions, routing,
            "store {store} vs the scheduler's routing table"
        );
    }
}

#[test]
fn an_explicit_split_keeps_every_key_and_both_halves_serve() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    for i in 0..100 {
        cluster.must_put(&key(i), b"before");
    }
    cluster.split(&key(50)).expect("split at k50");
    wait_region_count(&cluster, 2);
    assert_consistent(&cluster);
    let right = cluster.region_for_key(&key(50));
    assert_ne!(right.id, 1);
    assert_eq!(right.start_key, key(50));
    assert_eq!(right.region_epoch.unwrap().version, 2);
    for i in 0..100 {
        assert_eq!(
            cluster.must_get(&key(i)).as_deref(),
            Some(&b"before"[..]),
            "key {i}"
        );
    }
    for i in 0..100 {
        cluster.must_put(&key(i), b"after");
    }
    for store in 1..=3 {
        cluster.wait_applied(store, &key(99), Some(b"after"));
        cluster.wait_applied(store, &key(0), Some(b"after"));
    }
    // A request with the parent's old epoch gets the current regions back.
    let stale = test_cluster::peer_id(1, 1);
    let _ = stale;
    let leader = cluster.wait_leader(1);
    let mut ctx = cluster.context(leader, 1);
    ctx.region_epoch = Some(proto::metapb::RegionEpoch {
        conf_ver: 1,
        version: 1,
    });
    let err = futures::executor::block_on(
        cluster
            .store(leader)
            .api()
            .write(&ctx, vec![raftstore::Modify::put(key(1), b"x".to_vec())]),
    )
    .unwrap_err();
    match err {
        Error::EpochNotMatch {
            current_regions, ..
        } => {
            assert_eq!(current_regions[0].end_key, key(50))
        }
        other => panic!("expected EpochNotMatch, got {other}"),
    }
    // Bad split keys are refused clearly.
    let err = cluster.split(&key(50)).unwrap_err();
    assert!(err.to_string().contains("split"), "{err}");
}

#[test]
fn sequential_writes_split_the_key_space_into_fifty_regions() {
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.split_region_check_tick_interval_ms = 100;
    cfg.raftstore.region_split_keys = 40;
    cfg.raftstore.region_max_keys = 60;
    let cluster = Cluster::run(cfg);
    let value = vec![7u8; 256];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut written = 0u32;
    while cluster.scheduler().cluster.regions().len() < 50 {
        assert!(
            Instant::now() < deadline,
            "only {} regions",
            cluster.scheduler().cluster.regions().len()
        );
        for _ in 0..20 {
            cluster.must_put(&key(written), &value);
            written += 1;
        }
    }
    let regions = cluster.scheduler().cluster.regions().len();
    // Let the last splits reach every store.
    wait_until("the stores catch up with the splits", WAIT, || {
        cluster
            .running_stores()
            .into_iter()
            .all(|s| cluster.store_regions(s).len() == cluster.scheduler().cluster.regions().len())
    });
    assert_consistent(&cluster);
    for i in 0..written {
        assert_eq!(
            cluster.must_get(&key(i)).as_deref(),
            Some(&value[..]),
            "key {i}"
        );
    }
    eprintln!("{written} keys, {regions} regions");
}

#[test]
fn a_split_racing_a_leader_change_stays_consistent() {
    let mut cluster = Cluster::run(ClusterConfig::new(3, 1));
    for i in 0..40 {
        cluster.must_put(&key(i), b"v1");
    }
    let leader = cluster.wait_leader(1);
    let held = (1..=3).find(|s| *s != leader).unwrap();
    let other = (1..=3).find(|s| *s != leader && *s != held).unwrap();
    cluster.wait_applied(held, &key(39), Some(b"v1"));
    // The held follower gets nothing: the split is applied elsewhere while leadership moves.
    cluster.isolate(held);
    cluster.split(&key(20)).expect("split");
    cluster.must_transfer_leader(1, other);
    for i in 0..40 {
        cluster.must_put(&key(i), b"v2");
    }
    // Restarting the held store on top of it.
    cluster.restart_store(held);
    cluster.clear_filters();
    wait_region_count(&cluster, 2);
    for i in 0..40 {
        cluster.wait_applied(held, &key(i), Some(b"v2"));
    }
    assert_consistent(&cluster);
}

#[test]
fn a_split_racing_a_membership_change_stays_consistent() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    for i in 0..40 {
        cluster.must_put(&key(i), b"v1");
    }
    // Both proposals wait in the log behind dropped appends: the conf change first.
    cluster.add_filter(DropMessages {
        msg_type: Some(MessageType::MsgAppend),
        region_id: Some(1),
    });
    let (change, split) = std::thread::scope(|s| {
        let change = s.spawn(|| cluster.change_peer(1, &[(ConfChangeType::AddLearnerNode, 4)]));
        std::thread::sleep(Duration::from_millis(100));
        let split = s.spawn(|| cluster.split(&key(20)));
        std::thread::sleep(Duration::from_millis(200));
        cluster.clear_filters();
        (change.join().unwrap(), split.join().unwrap())
    });
    change.expect("the membership change");
    // The split was made for three peers; the region has four by the time it applies.
    let err = split.expect_err("the split must not apply to the new membership");
    assert!(err.to_string().contains("peer ids"), "{err}");
    // Asked again, it goes through, and every store (the learner too) agrees.
    wait_ok("the split goes through", WAIT, || cluster.split(&key(20)));
    wait_region_count(&cluster, 2);
    assert_consistent(&cluster);
    for i in 0..40 {
        cluster.wait_applied(4, &key(i), Some(b"v1"));
    }
}
