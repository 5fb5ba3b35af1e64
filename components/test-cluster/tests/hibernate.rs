//! Hibernating regions: an idle region stops ticking on every member, wakes for a write, a
//! membership change or a split; a dead leader's store is noticed through the store liveness
//! heartbeat (the sleeping followers never tick); a partition does not give two leaders a
//! lease; a down follower does not keep the region awake, and the scheduler still sees it.

use std::time::{Duration, Instant};

use proto::eraftpb::ConfChangeType;
use test_cluster::{region_key, wait_for, wait_until, Cluster, ClusterConfig};

const WAIT: Duration = Duration::from_secs(30);

fn election_timeout(cluster: &Cluster) -> Duration {
    cluster.cfg.raftstore.election_timeout()
}

fn asleep(cluster: &Cluster, stores: &[u64], region_id: u64) -> bool {
    stores.iter().all(|s| {
        cluster
            .peer_status(*s, region_id)
            .is_some_and(|st| st.asleep)
    })
}

fn wait_asleep(cluster: &Cluster, stores: &[u64], regions: impl Iterator<Item = u64> + Clone) {
    wait_until("every member of the regions hibernates", WAIT, || {
        regions.clone().all(|r| asleep(cluster, stores, r))
    });
}

#[test]
fn an_idle_region_stops_ticking_and_a_write_wakes_it() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"k", b"v1");
    wait_asleep(&cluster, &[1, 2, 3], 1..=1);
    let ticks = |c: &Cluster| -> Vec<u64> {
        (1..=3)
            .map(|s| c.peer_status(s, 1).map_or(0, |st| st.ticks))
            .collect()
    };
    let before = ticks(&cluster);
    std::thread::sleep(election_timeout(&cluster) * 5);
    assert_eq!(ticks(&cluster), before, "a hibernating region ticked");
    assert!(asleep(&cluster, &[1, 2, 3], 1));

    let leader = cluster
        .leader_of(1)
        .expect("the sleeping leader still leads");
    cluster
        .put(b"k", b"v2")
        .expect("a write to a hibernating region is served");
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        cluster.leader_of(1),
        Some(leader),
        "waking changed the leader"
    );
    std::thread::sleep(cluster.cfg.raftstore.base_tick() * 3);
    let woke = ticks(&cluster);
    assert!(
        woke.iter().zip(&before).all(|(a, b)| a > b),
        "the write woke every member: {before:?} -> {woke:?}"
    );
    // And it goes back to sleep.
    wait_asleep(&cluster, &[1, 2, 3], 1..=1);
}

#[test]
fn hibernating_regions_elect_new_leaders_soon_after_their_leaders_store_dies() {
    let regions = 8;
    let mut cluster = Cluster::run(ClusterConfig::new(3, regions));
    for r in 1..=regions {
        cluster.must_transfer_leader(r, 1);
    }
    wait_asleep(&cluster, &[1, 2, 3], 1..=regions);
    let et = election_timeout(&cluster);

    cluster.shutdown_store(1);
    let killed = Instant::now();
    let mut slowest = Duration::ZERO;
    for r in 1..=regions {
        wait_for("a new leader", WAIT, || cluster.leader_of(r));
        slowest = slowest.max(killed.elapsed());
    }
    let leaders = killed.elapsed();
    for r in 1..=regions {
        cluster.must_put(&region_key(r), b"after");
    }
    eprintln!(
        "election timeout {et:?}: every region had a new leader {leaders:?} after the kill, \
         and took writes {:?} after it",
        killed.elapsed()
    );
    // The liveness check needs an election timeout of silence, the campaign up to one more.
    assert!(
        slowest < et * 4,
        "new leaders took {slowest:?}, more than 4 election timeouts ({et:?} each)"
    );
}

#[test]
fn a_partition_while_hibernating_does_not_give_two_leaders_a_lease() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_transfer_leader(1, 1);
    cluster.must_put(b"k", b"old");
    wait_asleep(&cluster, &[1, 2, 3], 1..=1);

    cluster.partition(&[1], &[2, 3]);
    let new_leader = wait_for("a leader on the majority side", WAIT, || {
        [2, 3]
            .into_iter()
            .find(|s| cluster.peer_status(*s, 1).is_some_and(|st| st.is_leader))
    });
    wait_until("the new leader writes", WAIT, || {
        cluster
            .write_on(new_leader, 1, vec![storage_modify(b"k", b"new")])
            .is_ok()
    });
    // The old leader, woken by the read, may not answer from a lease it held before sleeping.
    let old = cluster.peer_status(1, 1).expect("store 1 runs");
    assert!(
        !old.lease_valid,
        "the cut-off old leader still holds a lease: {old:?}"
    );
    match cluster.get_on(1, b"k") {
        Ok(v) => panic!("the cut-off old leader served a read: {v:?}"),
        Err(e) => eprintln!("the cut-off old leader refused the read: {e}"),
    }
    cluster.clear_filters();
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"new"[..]));
}

fn storage_modify(key: &[u8], value: &[u8]) -> raftstore::Modify {
    raftstore::Modify::put(key, value)
}

#[test]
fn membership_changes_and_splits_work_on_hibernating_regions() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    cluster.must_put(b"a", b"1");
    wait_asleep(&cluster, &[1, 2, 3], 1..=1);

    cluster.must_change_peer(1, &[(ConfChangeType::AddLearnerNode, 4)]);
    cluster.must_change_peer(1, &[(ConfChangeType::AddNode, 4)]);
    cluster.wait_region(4, 1, |r| r.peers.len() == 4);
    cluster.wait_applied(4, b"a", Some(b"1"));
    wait_asleep(&cluster, &[1, 2, 3, 4], 1..=1);

    cluster.split(b"m").expect("split a hibernating region");
    let right = wait_for("the scheduler learns of the split", WAIT, || {
        Some(cluster.region_for_key(b"z").id).filter(|id| *id != 1)
    });
    cluster.must_put(b"z", b"2");
    cluster.must_put(b"b", b"3");
    wait_asleep(&cluster, &[1, 2, 3, 4], [1, right].into_iter());

    let on_4 = cluster
        .region(right)
        .peers
        .iter()
        .find(|p| p.store_id == 4)
        .map(|p| p.id)
        .expect("the split copied store 4's peer");
    cluster.must_change_peer_ids(right, &[(ConfChangeType::RemoveNode, 4, on_4)]);
    cluster.wait_peer_destroyed(4, right);
    assert_eq!(cluster.must_get(b"z").as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_down_follower_does_not_keep_the_region_awake() {
    let mut cfg = ClusterConfig::new(3, 1).with_scheduling();
    // Nothing moves: the test watches what the scheduler sees, not what it does about it.
    cfg.scheduler.replica_schedule_limit = 0;
    cfg.scheduler.leader_schedule_limit = 0;
    cfg.scheduler.region_schedule_limit = 0;
    let mut cluster = Cluster::run(cfg);
    cluster.must_transfer_leader(1, 1);
    cluster.must_put(b"k", b"v");
    cluster.shutdown_store(3);
    wait_asleep(&cluster, &[1, 2], 1..=1);
    // The sleeping leader still reports its region, with the down peer.
    let scheduler = cluster.scheduler();
    wait_until("the scheduler sees the down peer", WAIT, || {
        scheduler
            .cluster
            .region_by_id(1)
            .is_some_and(|r| r.down_peers.iter().any(|p| p.store_id == 3))
    });
    // And a write still works, then the region sleeps again.
    cluster.must_put(b"k", b"v2");
    wait_asleep(&cluster, &[1, 2], 1..=1);
}
