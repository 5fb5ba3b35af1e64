//! The store's behaviour in a 3-store in-process cluster: election, replication, failures,
//! partitions, restarts, request checks and reads.

use std::time::{Duration, Instant};

use futures::executor::block_on;
use proto::metapb::RegionEpoch;
use raftstore::{Error, Modify};
use test_cluster::{peer_id, region_key, wait_until, Cluster, ClusterConfig};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

#[test]
fn elects_a_leader_and_replicates_to_every_store() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let leader = cluster.wait_leader(1);
    for i in 0..100 {
        cluster.must_put(&key(i), format!("v{i}").as_bytes());
    }
    for store in 1..=3 {
        cluster.wait_applied(store, &key(99), Some(b"v99"));
        for i in 0..100 {
            assert_eq!(
                cluster.engine_get(store, &key(i)),
                Some(format!("v{i}").into_bytes()),
                "store {store} key {i}"
            );
        }
    }
    assert_eq!(cluster.must_get(&key(7)), Some(b"v7".to_vec()));
    cluster.must_delete(&key(7));
    assert_eq!(cluster.must_get(&key(7)), None);
    let status = cluster.peer_status(leader, 1).unwrap();
    assert!(status.applied_index >= 101);
    // Group commit: the 100 sequential writes needed at most one fsync each per store.
    for (store, (fsyncs, entries)) in cluster.log_write_stats() {
        assert!(entries >= 101, "store {store} wrote {entries} entries");
        assert!(fsyncs <= entries + 10, "store {store}: {fsyncs} fsyncs");
    }
}

fn put(k: &[u8], v: &[u8]) -> Vec<Modify> {
    vec![Modify::put(k.to_vec(), v.to_vec())]
}

/// Proposes on `store`'s peer in the background; the result arrives when the store answers.
fn spawn_write(
    cluster: &Cluster,
    store: u64,
    region_id: u64,
    k: &[u8],
    v: &[u8],
) -> std::thread::JoinHandle<Result<(), Error>> {
    let api = cluster.store(store).api();
    let ctx = cluster.context(store, region_id);
    let modifies = put(k, v);
    std::thread::spawn(move || block_on(api.write(&ctx, modifies)))
}

#[test]
fn isolated_leader_is_replaced_and_its_pending_proposal_never_succeeds() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let old = cluster.wait_leader(1);
    cluster.must_put(b"k", b"v0");
    cluster.isolate(old);
    let pending = spawn_write(&cluster, old, 1, b"k", b"lost");
    let new = cluster.wait_new_leader(1, old);
    cluster.must_put(b"k", b"v1");
    // Heal: the old leader's entry is replaced by the new leader's log.
    cluster.clear_filters();
    let result = pending.join().unwrap();
    match &result {
        // Its index was taken by the new leader's entries: definitely not applied.
        Err(Error::StaleCommand { .. }) => {}
        // It reached the peer after it stepped down: never proposed.
        Err(Error::NotLeader { .. }) => {}
        other => panic!("the isolated leader's write must fail as stale, got {other:?}"),
    }
    for store in 1..=3 {
        cluster.wait_applied(store, b"k", Some(b"v1"));
    }
    assert_eq!(cluster.must_get(b"k"), Some(b"v1".to_vec()));
    assert_ne!(new, old);
}

#[test]
fn a_proposal_whose_fate_is_unknown_times_out_as_undetermined() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let old = cluster.wait_leader(1);
    cluster.must_put(b"k", b"v0");
    cluster.isolate(old);
    let started = Instant::now();
    let result = spawn_write(&cluster, old, 1, b"k", b"maybe")
        .join()
        .unwrap();
    match result {
        Err(Error::Undetermined { .. }) => {
            let timeout = Duration::from_millis(cluster.cfg.raftstore.proposal_timeout_ms);
            assert!(started.elapsed() >= timeout, "answered before the timeout");
        }
        Err(Error::NotLeader { .. }) => {}
        other => panic!("expected an undetermined timeout, got {other:?}"),
    }
    // The majority never saw it.
    cluster.wait_new_leader(1, old);
    assert_eq!(cluster.must_get(b"k"), Some(b"v0".to_vec()));
}

#[test]
fn a_minority_partition_leaves_the_majority_serving() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let leader = cluster.wait_leader(1);
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|s| *s != follower).collect();
    cluster.partition(&[follower], &others);
    for i in 0..20 {
        cluster.must_put(&key(i), b"majority");
    }
    for store in &others {
        cluster.wait_applied(*store, &key(19), Some(b"majority"));
    }
    assert_eq!(
        cluster.engine_get(follower, &key(0)),
        None,
        "the minority got nothing"
    );
    cluster.clear_filters();

    // Now the leader itself in the minority: the other two elect a leader and serve.
    let leader = cluster.wait_leader(1);
    let rest: Vec<u64> = (1..=3).filter(|s| *s != leader).collect();
    cluster.partition(&[leader], &rest);
    let new = cluster.wait_new_leader(1, leader);
    assert!(rest.contains(&new));
    cluster.must_put(b"after", b"new-leader");
    cluster.clear_filters();
    for store in 1..=3 {
        cluster.wait_applied(store, &key(19), Some(b"majority"));
        cluster.wait_applied(store, b"after", Some(b"new-leader"));
    }
}

#[test]
fn restarting_every_store_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::run(ClusterConfig::new(3, 4));
    let keys: Vec<Vec<u8>> = (1..=4u64)
        .flat_map(|r| (0..50).map(move |i| [region_key(r), format!("/{i}").into_bytes()].concat()))
        .collect();
    for k in &keys {
        cluster.must_put(k, k);
    }
    cluster.shutdown();
    cluster.start();
    for k in &keys {
        assert_eq!(cluster.must_get(k).as_deref(), Some(k.as_slice()));
    }
    // And it keeps serving writes after the restart.
    cluster.must_put(b"after-restart", b"1");
    for store in 1..=3 {
        cluster.wait_applied(store, b"after-restart", Some(b"1"));
    }
}

#[test]
fn a_crashed_follower_catches_up_from_the_log() {
    let mut cluster = Cluster::run(ClusterConfig::new(3, 1));
    let leader = cluster.wait_leader(1);
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    cluster.must_put(b"before", b"1");
    cluster.wait_applied(follower, b"before", Some(b"1"));
    cluster.shutdown_store(follower);
    for i in 0..100 {
        cluster.must_put(&key(i), b"while-down");
    }
    cluster.start_store(follower);
    cluster.wait_applied(follower, &key(99), Some(b"while-down"));
    for i in 0..100 {
        assert_eq!(
            cluster.engine_get(follower, &key(i)),
            Some(b"while-down".to_vec())
        );
    }
}

#[test]
fn bad_requests_get_specific_errors_and_write_nothing() {
    let cluster = Cluster::run(ClusterConfig::new(3, 2));
    let leader = cluster.wait_leader(1);
    let api = cluster.store(leader).api();
    let in_region_1 = b"a-key".to_vec();

    let mut ctx = cluster.context(leader, 1);
    ctx.region_epoch = Some(RegionEpoch {
        conf_ver: 1,
        version: 0,
    });
    match block_on(api.write(&ctx, put(&in_region_1, b"x"))) {
        Err(Error::EpochNotMatch {
            current_regions, ..
        }) => {
            assert_eq!(current_regions.len(), 1);
            assert_eq!(current_regions[0].id, 1);
            assert_eq!(current_regions[0].region_epoch.unwrap().version, 1);
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    match block_on(api.snapshot(&ctx)) {
        Err(Error::EpochNotMatch { .. }) => {}
        other => panic!("a stale-epoch read must fail too, got {:?}", other.err()),
    }

    let ctx = cluster.context(leader, 1);
    let in_region_2 = region_key(2);
    assert!(matches!(
        block_on(api.write(&ctx, put(&in_region_2, b"x"))),
        Err(Error::KeyNotInRegion { region_id: 1, .. })
    ));

    let mut wrong_store = ctx.clone();
    wrong_store.peer = Some(proto::build::peer(peer_id(1, 9), 9));
    assert!(matches!(
        block_on(api.write(&wrong_store, put(&in_region_1, b"x"))),
        Err(Error::StoreNotMatch {
            request_store_id: 9,
            ..
        })
    ));

    let mut unknown = ctx.clone();
    unknown.region_id = 77;
    assert!(matches!(
        block_on(api.write(&unknown, put(&in_region_1, b"x"))),
        Err(Error::RegionNotFound { region_id: 77, .. })
    ));

    let limit = cluster.cfg.raftstore.raft_entry_max_size as usize;
    assert!(matches!(
        block_on(api.write(&ctx, put(&in_region_1, &vec![7u8; limit + 1]))),
        Err(Error::RaftEntryTooLarge { region_id: 1, .. })
    ));

    let bad_cf = vec![Modify::Put {
        cf: "no-such-cf".into(),
        key: in_region_1.clone(),
        value: b"x".to_vec(),
    }];
    assert!(matches!(
        block_on(api.write(&ctx, bad_cf)),
        Err(Error::InvalidCommand { .. })
    ));

    // A write made for another term than the leader's (a compare-and-swap that read under
    // an earlier leader) is refused; one for the current term goes through.
    let read_term = block_on(api.snapshot(&ctx)).expect("read").term();
    assert!(read_term > 0);
    let mut old_term = ctx.clone();
    old_term.term = read_term - 1;
    assert!(matches!(
        block_on(api.write(&old_term, put(&in_region_1, b"x"))),
        Err(Error::StaleCommand { region_id: 1, .. })
    ));
    let mut this_term = ctx.clone();
    this_term.term = read_term;
    block_on(api.write(&this_term, put(b"a-term-key", b"1"))).expect("a write for this term");

    let follower = (1..=3).find(|s| *s != leader).unwrap();
    match cluster.write_on(follower, 1, put(&in_region_1, b"x")) {
        Err(Error::NotLeader {
            region_id: 1,
            leader: Some(hint),
        }) => assert_eq!(hint.store_id, leader),
        other => panic!("expected NotLeader with a hint, got {other:?}"),
    }

    // None of it was written anywhere.
    cluster.must_put(b"a-marker", b"1");
    for store in 1..=3 {
        cluster.wait_applied(store, b"a-marker", Some(b"1"));
        assert_eq!(cluster.engine_get(store, &in_region_1), None);
        assert_eq!(cluster.engine_get(store, &in_region_2), None);
    }
}

#[test]
fn lease_reads_stop_when_the_lease_expires_under_partition() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let old = cluster.wait_leader(1);
    cluster.must_put(b"k", b"v1");
    // Reads keep the lease renewed: the leader ends up serving them locally.
    wait_until("the leader holds a lease", Duration::from_secs(10), || {
        assert_eq!(cluster.get_on(old, b"k").unwrap(), Some(b"v1".to_vec()));
        cluster.peer_status(old, 1).unwrap().lease_valid
    });
    cluster.isolate(old);
    std::thread::sleep(Duration::from_millis(
        cluster.cfg.raftstore.max_leader_lease_ms + 50,
    ));
    assert!(
        !cluster.peer_status(old, 1).unwrap().lease_valid,
        "the lease outlived its length without a quorum"
    );
    let new = cluster.wait_new_leader(1, old);
    cluster.must_put(b"k", b"v2");
    // The old leader must not serve the old value, locally or otherwise.
    for _ in 0..3 {
        match cluster.get_on(old, b"k") {
            Err(Error::NotLeader { .. }) | Err(Error::ReadTimeout { .. }) => {}
            other => panic!("the isolated old leader served a read: {other:?}"),
        }
    }
    assert_eq!(cluster.get_on(new, b"k").unwrap(), Some(b"v2".to_vec()));
}

#[test]
fn a_thousand_regions_on_three_stores_elect_leaders_and_serve_writes() {
    let regions = 1000;
    let mut cfg = ClusterConfig::new(3, regions);
    // 3,000 peers on 2 cores: slower ticks keep elections from fighting each other.
    cfg.raftstore.raft_base_tick_interval_ms = 50;
    cfg.raftstore.max_leader_lease_ms = 400;
    cfg.raftstore.proposal_timeout_ms = 10_000;
    cfg.raftstore.read_index_timeout_ms = 5_000;
    let cluster = Cluster::run(cfg);
    for r in 1..=regions {
        cluster.wait_leader(r);
    }
    for r in 1..=regions {
        let k = [region_key(r), b"/x".to_vec()].concat();
        cluster.must_put(&k, &k);
    }
    let last = [region_key(regions), b"/x".to_vec()].concat();
    for store in 1..=3 {
        cluster.wait_applied(store, &last, Some(&last));
    }
    let (fsyncs, entries) = cluster
        .log_write_stats()
        .values()
        .fold((0, 0), |(f, e), (f2, e2)| (f + f2, e + e2));
    assert!(
        entries >= 3 * 2 * regions,
        "every region wrote its noop and its put"
    );
    assert!(
        fsyncs < entries,
        "regions shared fsyncs: {fsyncs} fsyncs for {entries} entries"
    );
}

#[test]
fn without_a_lease_reads_are_confirmed_by_read_index() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let leader = cluster.wait_leader(1);
    cluster.must_put(b"k", b"v1");
    // Idle for longer than the lease: the next read cannot be served locally.
    std::thread::sleep(Duration::from_millis(
        3 * cluster.cfg.raftstore.max_leader_lease_ms,
    ));
    assert!(!cluster.peer_status(leader, 1).unwrap().lease_valid);
    assert_eq!(cluster.get_on(leader, b"k").unwrap(), Some(b"v1".to_vec()));
    // The confirmed ReadIndex round renewed the lease.
    assert!(cluster.peer_status(leader, 1).unwrap().is_leader);
}

#[test]
fn delayed_and_dropped_messages_slow_or_stall_only_what_they_hit() {
    let cluster = Cluster::run(ClusterConfig::new(3, 2));
    cluster.wait_leader(1);
    let leader2 = cluster.wait_leader(2);
    let in_region_1 = b"a".to_vec();
    let in_region_2 = [region_key(2), b"/x".to_vec()].concat();

    // Every message 30 ms late: a write needs an append and its response, so >= 60 ms.
    cluster.add_filter(test_cluster::Delay {
        duration: Duration::from_millis(30),
        region_id: None,
    });
    let started = Instant::now();
    cluster.must_put(&in_region_1, b"slow");
    assert!(started.elapsed() >= Duration::from_millis(60));
    cluster.clear_filters();

    // Region 2's appends are lost: its writes cannot commit, region 1 is unaffected.
    cluster.add_filter(test_cluster::DropMessages {
        msg_type: Some(raft::eraftpb::MessageType::MsgAppend),
        region_id: Some(2),
    });
    let pending = spawn_write(&cluster, leader2, 2, &in_region_2, b"late");
    cluster.must_put(&in_region_1, b"fast");
    std::thread::sleep(Duration::from_millis(300));
    for store in (1..=3).filter(|s| *s != leader2) {
        assert_eq!(cluster.engine_get(store, &in_region_2), None);
    }
    assert!(
        !pending.is_finished(),
        "a write cannot commit without its appends"
    );
    // Healed: raft sends the appends again and the write commits.
    cluster.clear_filters();
    assert!(pending.join().unwrap().is_ok());
    for store in 1..=3 {
        cluster.wait_applied(store, &in_region_2, Some(b"late"));
    }
}

#[test]
fn a_new_peer_is_refused_when_its_range_overlaps_or_its_id_is_taken() {
    let cluster = Cluster::run(ClusterConfig::new(3, 2));
    let store = cluster.store(1);
    let mut overlapping = cluster.region(2).clone();
    overlapping.id = 9;
    overlapping.start_key = b"a".to_vec();
    assert!(matches!(
        store.create_region(overlapping),
        Err(Error::InvalidState { region_id: 9, .. })
    ));
    let same_id = cluster.region(1).clone();
    assert!(matches!(
        store.create_region(same_id),
        Err(Error::InvalidState { region_id: 1, .. })
    ));
    let mut ids = store.region_ids();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2], "nothing was registered");
}

#[test]
fn a_destroyed_peer_leaves_no_data_and_stays_gone_after_restart() {
    let mut cluster = Cluster::run(ClusterConfig::new(3, 2));
    let in_region_1 = b"a".to_vec();
    let in_region_2 = [region_key(2), b"/x".to_vec()].concat();
    cluster.must_put(&in_region_1, b"1");
    cluster.must_put(&in_region_2, b"2");
    cluster.wait_applied(3, &in_region_2, Some(b"2"));

    cluster.store(3).destroy_region(2).unwrap();
    assert_eq!(
        cluster.engine_get(3, &in_region_2),
        None,
        "its data is gone"
    );
    assert_eq!(
        cluster.engine_get(3, &in_region_1),
        Some(b"1".to_vec()),
        "only its data"
    );
    assert_eq!(cluster.store(3).region_ids(), vec![1]);
    assert!(matches!(
        cluster.write_on(3, 2, put(&in_region_2, b"x")),
        Err(Error::RegionNotFound { region_id: 2, .. })
    ));
    assert!(matches!(
        cluster.store(3).destroy_region(2),
        Err(Error::RegionNotFound { region_id: 2, .. })
    ));
    // The other two replicas still make a quorum.
    cluster.must_put(&in_region_2, b"3");

    cluster.restart_store(3);
    assert_eq!(
        cluster.store(3).region_ids(),
        vec![1],
        "a tombstone is not loaded"
    );
    assert_eq!(cluster.engine_get(3, &in_region_2), None);
    cluster.must_put(&in_region_1, b"4");
    cluster.wait_applied(3, &in_region_1, Some(b"4"));
}

#[test]
fn malformed_or_foreign_raft_messages_are_dropped_without_harm() {
    use proto::eraftpb::Message as WireMessage;
    use proto::raft_serverpb::RaftMessage;
    use raft::eraftpb::MessageType;

    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let leader = cluster.wait_leader(1);
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    let region = cluster.region(1).clone();
    let peer = |store: u64| proto::build::peer(peer_id(1, store), store);
    let message = |msg_type: MessageType, from: u64, to: u64| RaftMessage {
        region_id: 1,
        from_peer: Some(peer(from)),
        to_peer: Some(peer(to)),
        message: Some(WireMessage {
            msg_type: msg_type as i32,
            from: peer_id(1, from),
            to: peer_id(1, to),
            term: 100,
            ..Default::default()
        }),
        region_epoch: region.region_epoch,
        ..Default::default()
    };
    let router = cluster.store(leader).router();
    // raft-rs panics on an empty MsgPropose or MsgReadIndex; neither may come from the network.
    raftstore::router::deliver_raft_message(
        router,
        message(MessageType::MsgPropose, follower, leader),
    );
    raftstore::router::deliver_raft_message(
        router,
        message(MessageType::MsgReadIndex, follower, leader),
    );
    // A vote from a peer that is not a member, and a message meant for another peer.
    let mut stranger = message(MessageType::MsgRequestVote, follower, leader);
    if let Some(m) = stranger.message.as_mut() {
        m.from = 999;
    }
    raftstore::router::deliver_raft_message(router, stranger);
    let mut misaddressed = message(MessageType::MsgHeartbeat, follower, leader);
    if let Some(m) = misaddressed.message.as_mut() {
        m.to = peer_id(1, follower);
    }
    raftstore::router::deliver_raft_message(router, misaddressed);

    cluster.must_put(b"still", b"fine");
    assert_eq!(
        cluster.leader_of(1),
        Some(leader),
        "no term was bumped by the strangers"
    );
    for store in 1..=3 {
        assert!(cluster.store(store).stopped_reason().is_none());
        cluster.wait_applied(store, b"still", Some(b"fine"));
    }
}

#[test]
fn a_restarted_peer_ignores_votes_for_an_election_timeout() {
    use proto::eraftpb::Message as WireMessage;
    use proto::raft_serverpb::RaftMessage;
    use raft::eraftpb::MessageType;

    let mut cfg = ClusterConfig::new(3, 1);
    // A long election timeout, so the test acts well inside the restarted peer's quiet time.
    cfg.raftstore.raft_election_timeout_ticks = 100;
    cfg.raftstore.hibernate_idle_ticks = 200;
    let mut cluster = Cluster::run(cfg);
    let leader = cluster.wait_leader(1);
    cluster.must_put(b"k", b"v");
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    let candidate = (1..=3).find(|s| *s != leader && *s != follower).unwrap();
    cluster.restart_store(follower);
    let term = cluster.peer_status(follower, 1).unwrap().term;
    let peer = |store: u64| proto::build::peer(peer_id(1, store), store);
    let last = cluster.peer_status(leader, 1).unwrap().commit_index;
    let vote = RaftMessage {
        region_id: 1,
        from_peer: Some(peer(candidate)),
        to_peer: Some(peer(follower)),
        message: Some(WireMessage {
            msg_type: MessageType::MsgRequestVote as i32,
            from: peer_id(1, candidate),
            to: peer_id(1, follower),
            term: term + 5,
            index: last + 10,
            log_term: term + 4,
            ..Default::default()
        }),
        region_epoch: cluster.region(1).region_epoch,
        ..Default::default()
    };
    raftstore::router::deliver_raft_message(cluster.store(follower).router(), vote);
    cluster.must_put(b"k2", b"v2");
    let status = cluster.peer_status(follower, 1).unwrap();
    assert!(
        status.term < term + 5,
        "the restarted peer took the vote's term: {status:?}"
    );
}

/// Every hop of the write path's cost model (`regionstore_write_hop_seconds`) is timed for a
/// write through the store's API.
#[test]
fn every_hop_of_a_write_is_timed() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"warm", b"up");
    let hops = &raftstore::metrics::METRICS.write_hop;
    let all = || {
        [
            ("mailbox", &hops.mailbox),
            ("propose_to_commit", &hops.propose_to_commit),
            ("log_write", &hops.log_write),
            ("apply_wait", &hops.apply_wait),
            ("apply_write", &hops.apply_write),
            ("total", &hops.total),
        ]
        .map(|(name, h)| (name, h.get_sample_count()))
    };
    let before = all();
    for i in 0..10 {
        cluster.must_put(&key(i), b"v");
    }
    for ((name, was), (_, now)) in before.iter().zip(all()) {
        // Round-level hops (log and KV writes) count at least once per write here: one
        // client, one write at a time.
        assert!(
            now >= was + 10,
            "hop {name}: {was} -> {now} samples for 10 writes"
        );
    }
}

/// A healthy cluster's entry caches let go of entries once they are applied and every
/// follower has them: after 400 writes of 1 KiB, each store holds a few cached entries, not
/// the 400 KiB written (the caches used to fill to `entry-cache-limit` and then evict).
#[test]
fn entry_caches_let_go_of_applied_and_replicated_entries() {
    let mut cfg = ClusterConfig::new(3, 1);
    // No log compaction during the test (not even before a region sleeps): it also empties
    // the cache.
    cfg.raftstore.raft_log_gc_threshold = 1_000_000;
    cfg.raftstore.raft_log_gc_count_limit = 1_000_000;
    let cluster = Cluster::run(cfg);
    let value = vec![b'v'; 1024];
    for i in 0..400u32 {
        cluster.must_put(format!("k{i:04}").as_bytes(), &value);
    }
    for store in cluster.running_stores() {
        cluster.wait_applied(store, b"k0399", Some(&value));
    }
    wait_until(
        "every store's entry caches hold under 16 KiB",
        Duration::from_secs(10),
        || {
            cluster
                .running_stores()
                .iter()
                .all(|s| cluster.store(*s).entry_cache_bytes() < 16 << 10)
        },
    );
}
