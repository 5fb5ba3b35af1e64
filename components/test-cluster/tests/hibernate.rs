//! Hibernating regions: an idle region stops ticking on every member, wakes for a write, a
//! membership change or a split; a dead leader's store is noticed through the store liveness
//! heartbeat (the sleeping followers never tick); a partition does not give two leaders a
//! lease; a down follower does not keep the region awake, and the scheduler still sees it.

use std::time::{Duration, Instant};

use proto::eraftpb::ConfChangeType;
use proto::raft_serverpb::RaftMessage;
use raftstore::fsm::liveness::is_store_heartbeat;
use test_cluster::{
    region_key, wait_for, wait_until, Cluster, ClusterConfig, Filter, FilterAction,
};

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

/// Measures how late a thread that sleeps 5 ms at a time wakes: the longest stall of the
/// process while it runs.
struct StallWatch {
    longest_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallWatch {
    fn start() -> StallWatch {
        use std::sync::atomic::Ordering;
        let watch = StallWatch {
            longest_ms: Default::default(),
            stop: Default::default(),
        };
        let (longest, stop) = (watch.longest_ms.clone(), watch.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                std::thread::sleep(Duration::from_millis(5));
                let late = start.elapsed().as_millis() as u64;
                longest.fetch_max(late, Ordering::Relaxed);
            }
        });
        watch
    }

    fn longest(&self) -> Duration {
        Duration::from_millis(self.longest_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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
    let stalls = StallWatch::start();
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
    let stall = stalls.longest();
    if stall < election_timeout(&cluster) / 2 {
        assert_eq!(
            cluster.leader_of(1),
            Some(leader),
            "waking changed the leader"
        );
    } else {
        // The process stalled (20 ms ticks on a loaded two-core machine): stores that heard
        // nothing for an election timeout rightly elect again.
        eprintln!("the process stalled for {stall:?}: the leader may have changed");
    }
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

    // From before the shutdown: its messages stop as soon as it starts.
    let killed = Instant::now();
    cluster.shutdown_store(1);
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

/// Drops the store liveness heartbeats one store sends, and nothing else.
struct DropStoreHeartbeats(u64);

impl Filter for DropStoreHeartbeats {
    fn action(&self, msg: &RaftMessage) -> FilterAction {
        match is_store_heartbeat(msg) == Some(self.0) {
            true => FilterAction::Drop,
            false => FilterAction::Pass,
        }
    }
}

#[test]
fn a_partition_while_hibernating_does_not_give_two_leaders_a_lease() {
    let mut cfg = ClusterConfig::new(3, 1);
    // As long as the config allows (below (election ticks - 1) x tick = 180 ms), so that a
    // follower catching up on ticks it did not sleep through would campaign inside it.
    cfg.raftstore.max_leader_lease_ms = 170;
    let cluster = Cluster::run(cfg);
    cluster.must_transfer_leader(1, 1);
    cluster.must_put(b"k", b"old");
    wait_asleep(&cluster, &[1, 2, 3], 1..=1);
    // Stores 2 and 3 stop hearing store 1's liveness heartbeats, so they find it down an
    // election timeout from now, while store 1's raft messages still arrive. Half-way there,
    // a read wakes the leader and renews its lease through a ReadIndex round, which the
    // sleeping followers answer without waking. Then store 1 is cut off: the followers,
    // woken by the liveness check soon after, must count only the time since that round,
    // not the whole sleep, before they campaign.
    cluster.add_filter(DropStoreHeartbeats(1));
    std::thread::sleep(election_timeout(&cluster) / 2);
    assert_eq!(
        cluster.get_on(1, b"k").unwrap().as_deref(),
        Some(&b"old"[..])
    );
    cluster.partition(&[1], &[2, 3]);
    let cut = Instant::now();
    let old = cluster.peer_status(1, 1).expect("store 1 runs");
    let old_term = old.term;
    assert!(old.lease_valid, "the read did not renew the lease: {old:?}");
    assert!(asleep(&cluster, &[2, 3], 1), "the read woke the followers");

    // Until the majority's new leader has written: a new leader seen at one moment and the
    // old one claiming a valid lease at a later moment would be two leases at once.
    let mut old_lease_seen = false;
    let new_leader = loop {
        assert!(cut.elapsed() < WAIT, "no new leader on the majority side");
        let new_leader = [2, 3].into_iter().find(|s| {
            cluster
                .peer_status(*s, 1)
                .is_some_and(|st| st.is_leader && st.term > old_term)
        });
        let old = cluster.peer_status(1, 1).expect("store 1 runs");
        old_lease_seen |= old.lease_valid;
        if let Some(leader) = new_leader {
            assert!(
                !old.lease_valid,
                "store {leader} leads a newer term while the cut-off old leader still holds a \
                 lease: {old:?}"
            );
            if cluster
                .write_on(leader, 1, vec![storage_modify(b"k", b"new")])
                .is_ok()
            {
                break leader;
            }
        }
    };
    eprintln!(
        "new leader on store {new_leader} wrote {:?} after the cut (old leader's lease seen \
         valid after the cut: {old_lease_seen})",
        cut.elapsed()
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
    // The region sleeps (11 ticks) before the stopped follower counts as down (two election
    // timeouts, 20 ticks): the down peer can only reach the scheduler in a sleeping leader's
    // report.
    cfg.raftstore.hibernate_idle_ticks = 11;
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
