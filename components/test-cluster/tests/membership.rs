//! Membership changes: adding a peer to a region that holds data (by snapshot), removing one
//! (its data goes), learners, joint consensus, and the refusals.

use std::time::{Duration, Instant};

use proto::metapb::PeerRole;
use raft::eraftpb::MessageType;
use raftstore::{Error, Modify};
use test_cluster::{peer_id, Cluster, ClusterConfig, ConfChangeType, DropMessages};

use ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};

fn key(i: u32) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

fn roles(region: &proto::metapb::Region) -> Vec<(u64, PeerRole)> {
    let mut r: Vec<_> = region
        .peers
        .iter()
        .map(|p| (p.store_id, p.role()))
        .collect();
    r.sort_by_key(|(store, _)| *store);
    r
}

fn conf_ver(region: &proto::metapb::Region) -> u64 {
    region.region_epoch.unwrap_or_default().conf_ver
}

/// Moves the leader of region 1 off `store` (a change may not remove or demote the leader).
fn lead_elsewhere(cluster: &Cluster, store: u64, to: u64) {
    if cluster.wait_leader(1) == store {
        cluster.must_transfer_leader(1, to);
    }
}

#[test]
fn a_peer_added_to_a_region_holding_32_mib_gets_all_of_it() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    cluster.wait_leader(1);
    // 32 requests of 64 × 16 KiB.
    let value = |i: u32| vec![(i % 251) as u8; 16 << 10];
    let keys = 32 * 64;
    for batch in 0..32 {
        let modifies = (batch * 64..(batch + 1) * 64)
            .map(|i| Modify::put(key(i), value(i)))
            .collect();
        cluster.must_write(&key(batch * 64), modifies);
    }
    let started = Instant::now();
    cluster.must_change_peer(1, &[(AddNode, 4)]);
    cluster.wait_applied(4, &key(keys - 1), Some(&value(keys - 1)));
    eprintln!("32 MiB reached the new peer in {:?}", started.elapsed());
    for i in 0..keys {
        assert_eq!(
            cluster.engine_get(4, &key(i)).as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
    let region = cluster.wait_region(4, 1, |r| r.peers.len() == 4);
    assert_eq!(conf_ver(&region), 2);
    assert!(roles(&region).iter().all(|(_, r)| *r == PeerRole::Voter));
    // It came by snapshot: its log starts after the data.
    let status = cluster.peer_status(4, 1).expect("peer on store 4");
    assert!(status.truncated_index > 5, "{status:?}");
    // And it takes part from now on.
    cluster.must_put(b"after", b"add");
    cluster.wait_applied(4, b"after", Some(b"add"));
}

#[test]
fn a_removed_peer_s_data_disappears_and_the_store_can_host_the_region_again() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    for i in 0..50 {
        cluster.must_put(&key(i), b"v");
    }
    cluster.wait_applied(3, &key(49), Some(b"v"));
    lead_elsewhere(&cluster, 3, 1);
    cluster.must_change_peer(1, &[(RemoveNode, 3)]);
    cluster.wait_peer_destroyed(3, 1);
    for i in 0..50 {
        assert_eq!(
            cluster.engine_get(3, &key(i)),
            None,
            "key {i} is still on store 3"
        );
    }
    for store in [1, 2] {
        let region = cluster.wait_region(store, 1, |r| r.peers.len() == 2);
        assert_eq!(conf_ver(&region), 2);
    }
    // Two voters go on.
    cluster.must_put(b"two", b"voters");
    // Old messages do not bring the peer back; a new peer id does.
    std::thread::sleep(Duration::from_millis(300));
    assert!(cluster.peer_status(3, 1).is_none());
    cluster.must_change_peer_ids(1, &[(AddNode, 3, 1003)]);
    cluster.wait_applied(3, b"two", Some(b"voters"));
    cluster.wait_applied(3, &key(49), Some(b"v"));
    let region = cluster.wait_region(3, 1, |r| r.peers.len() == 3);
    assert_eq!(conf_ver(&region), 3);
    assert!(region.peers.iter().any(|p| p.id == 1003));
}

#[test]
fn a_peer_removed_while_cut_off_is_told_when_it_comes_back() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"k", b"v");
    cluster.wait_applied(3, b"k", Some(b"v"));
    lead_elsewhere(&cluster, 3, 1);
    cluster.isolate(3);
    cluster.must_change_peer(1, &[(RemoveNode, 3)]);
    // Store 3 never saw its removal; it still has the region.
    assert!(cluster.peer_status(3, 1).is_some());
    cluster.clear_filters();
    // Its next campaign reaches the members, which answer that it is gone.
    cluster.wait_peer_destroyed(3, 1);
    assert_eq!(cluster.engine_get(3, b"k"), None);
}

/// Found by the simulator: a heartbeat the leader sent before the removal reaches the
/// destroyed peer's store after it; it must not re-create the peer (same id, empty log), whose
/// raft-rs would panic on the heartbeat's commit index.
#[test]
fn a_destroyed_peer_is_not_re_created_by_a_stale_heartbeat() {
    use proto::eraftpb::Message as WireMessage;
    use proto::raft_serverpb::RaftMessage;

    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"k", b"v");
    cluster.wait_applied(3, b"k", Some(b"v"));
    lead_elsewhere(&cluster, 3, 1);
    let leader = cluster.wait_leader(1);
    cluster.isolate(3);
    cluster.must_change_peer(1, &[(RemoveNode, 3)]);
    cluster.clear_filters();
    // Told by a member, before it applied its removal: its tombstone has the old conf_ver.
    cluster.wait_peer_destroyed(3, 1);
    let region = cluster.region(1);
    let stale = RaftMessage {
        region_id: 1,
        from_peer: Some(proto::build::peer(peer_id(1, leader), leader)),
        to_peer: Some(proto::build::peer(peer_id(1, 3), 3)),
        message: Some(WireMessage {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: peer_id(1, leader),
            to: peer_id(1, 3),
            term: 100,
            commit: 7,
            ..Default::default()
        }),
        region_epoch: region.region_epoch,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        ..Default::default()
    };
    raftstore::router::deliver_raft_message(cluster.store(3).router(), stale);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cluster.peer_status(3, 1).is_none(), "the peer came back");
    assert_eq!(cluster.store(3).stopped_reason(), None);
    let mut cluster = cluster;
    assert_eq!(cluster.shutdown_store(3), 0, "no poller panicked");
}

#[test]
fn a_learner_gets_the_data_but_does_not_vote() {
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.replicas = 2;
    let mut cluster = Cluster::run(cfg);
    cluster.must_change_peer(1, &[(AddLearnerNode, 3)]);
    cluster.must_put(b"k1", b"v1");
    cluster.wait_applied(3, b"k1", Some(b"v1"));
    let region = cluster.wait_region(3, 1, |r| r.peers.len() == 3);
    assert_eq!(
        roles(&region),
        vec![
            (1, PeerRole::Voter),
            (2, PeerRole::Voter),
            (3, PeerRole::Learner)
        ]
    );

    // With one of the two voters down, the learner does not make a quorum: no leader.
    let leader = cluster.wait_leader(1);
    let follower = 3 - leader;
    cluster.shutdown_store(follower);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let learner = cluster.peer_status(3, 1).expect("learner is running");
        assert!(!learner.is_leader, "the learner became leader");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        cluster.leader_of(1),
        None,
        "a leader without a voter quorum"
    );
    let err = cluster
        .write_on(leader, 1, vec![Modify::put(b"k2", b"v2")])
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    cluster.start_store(follower);
    cluster.must_put(b"k2", b"v2");

    // Promoted, it votes: the same failure now leaves a quorum.
    cluster.must_change_peer(1, &[(AddNode, 3)]);
    cluster.wait_region(3, 1, |r| {
        r.peers.iter().all(|p| p.role() == PeerRole::Voter) && r.peers.len() == 3
    });
    let leader = cluster.wait_leader(1);
    let down = if leader == 1 { 2 } else { 1 };
    cluster.shutdown_store(down);
    cluster.must_put(b"k3", b"v3");
    cluster.wait_applied(3, b"k3", Some(b"v3"));
}

#[test]
fn several_changes_go_through_joint_consensus_and_leave_it() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    cluster.must_put(b"k", b"v");
    lead_elsewhere(&cluster, 3, 1);
    // Replace voter 3 by voter 4, keeping 3 as a learner.
    cluster.must_change_peer(1, &[(AddNode, 4), (AddLearnerNode, 3)]);
    let want = vec![
        (1, PeerRole::Voter),
        (2, PeerRole::Voter),
        (3, PeerRole::Learner),
        (4, PeerRole::Voter),
    ];
    for store in 1..=4 {
        let region = cluster.wait_region(store, 1, |r| roles(r) == want);
        // Entering (two changes) and leaving (one) the joint state.
        assert_eq!(conf_ver(&region), 4, "store {store}");
    }
    cluster.must_put(b"k2", b"v2");
    cluster.wait_applied(4, b"k2", Some(b"v2"));
    cluster.wait_applied(3, b"k2", Some(b"v2"));
    cluster.must_change_peer(1, &[(RemoveNode, 3)]);
    cluster.wait_peer_destroyed(3, 1);
    assert_eq!(cluster.engine_get(3, b"k"), None);
}

#[test]
fn refused_changes_say_why_and_change_nothing() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    let leader = cluster.wait_leader(1);
    let follower = if leader == 1 { 2 } else { 1 };
    let refused =
        |changes: &[(ConfChangeType, u64)], want: &str| match cluster.change_peer(1, changes) {
            Err(Error::ConfChange { detail, .. }) => {
                assert!(detail.contains(want), "{changes:?}: {detail}")
            }
            other => panic!("{changes:?}: expected a refusal ({want}), got {other:?}"),
        };
    refused(&[(RemoveNode, leader)], "transfer leadership first");
    refused(&[(AddLearnerNode, leader)], "transfer leadership first");
    refused(&[(AddNode, follower)], "already a Voter");
    refused(&[(RemoveNode, 4)], "not a member");
    refused(&[(AddNode, 4), (RemoveNode, follower)], "demote it");

    // One change at a time: while one cannot commit, the next is refused.
    cluster.add_filter(DropMessages {
        msg_type: Some(MessageType::MsgAppend),
        region_id: Some(1),
    });
    let first = std::thread::scope(|s| {
        let first = s.spawn(|| cluster.change_peer(1, &[(AddLearnerNode, 4)]));
        std::thread::sleep(Duration::from_millis(200));
        refused(&[(AddNode, 4)], "not applied yet");
        cluster.clear_filters();
        first.join().expect("first change")
    });
    first.expect("the first change is applied once appends flow again");
    let region = cluster.wait_region(4, 1, |r| r.peers.len() == 4);
    assert_eq!(conf_ver(&region), 2);
    assert!(region
        .peers
        .iter()
        .any(|p| p.id == peer_id(1, 4) && p.role() == PeerRole::Learner));
}

/// Drops a store's appends that carry the leave of a joint state (raft-rs's empty
/// ConfChangeV2), so only another leader can get the region out of it.
struct DropLeaveJoint {
    from_store: u64,
}

impl test_cluster::Filter for DropLeaveJoint {
    fn action(&self, msg: &proto::raft_serverpb::RaftMessage) -> test_cluster::FilterAction {
        let leaves = msg.message.as_ref().is_some_and(|m| {
            m.entries.iter().any(|e| {
                e.entry_type == proto::eraftpb::EntryType::EntryConfChangeV2 as i32
                    && e.data.is_empty()
            })
        });
        if leaves && msg.from_peer.is_some_and(|p| p.store_id == self.from_store) {
            test_cluster::FilterAction::Drop
        } else {
            test_cluster::FilterAction::Pass
        }
    }
}

#[test]
fn a_new_leader_takes_the_region_out_of_a_joint_state() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    cluster.must_put(b"k", b"v");
    lead_elsewhere(&cluster, 3, 1);
    let old = cluster.wait_leader(1);
    cluster.add_filter(DropLeaveJoint { from_store: old });
    cluster.must_change_peer(1, &[(AddNode, 4), (AddLearnerNode, 3)]);
    let joint = cluster.wait_region(old, 1, |r| conf_ver(r) == 3);
    assert!(joint
        .peers
        .iter()
        .any(|p| p.role() == PeerRole::DemotingVoter));
    // The old leader's leave never leaves it; it is cut off and another peer leads.
    cluster.isolate(old);
    let new = cluster.wait_new_leader(1, old);
    let want = |r: &proto::metapb::Region| {
        conf_ver(r) == 4 && r.peers.iter().all(|p| p.role() != PeerRole::DemotingVoter)
    };
    cluster.wait_region(new, 1, want);
    cluster.clear_filters();
    for store in 1..=4 {
        cluster.wait_region(store, 1, want);
    }
    cluster.must_put(b"k2", b"v2");
}

#[test]
fn snapshots_beyond_the_transfer_limits_wait_their_turn() {
    let mut cfg = ClusterConfig::new(4, 4);
    cfg.replicas = 3;
    cfg.raftstore.snap_max_concurrent_sends = 1;
    cfg.raftstore.snap_max_concurrent_recvs = 1;
    let cluster = Cluster::run(cfg);
    for region in 1..=4u64 {
        let k = test_cluster::region_key(region);
        cluster.must_write(
            &k,
            (0..64)
                .map(|i| {
                    Modify::put(
                        [k.clone(), format!("/{i}").into_bytes()].concat(),
                        vec![7; 4096],
                    )
                })
                .collect(),
        );
    }
    // Four regions at once want a snapshot into store 4, which takes one at a time.
    for region in 1..=4u64 {
        cluster.must_change_peer(region, &[(AddNode, 4)]);
    }
    for region in 1..=4u64 {
        let k = [test_cluster::region_key(region), b"/63".to_vec()].concat();
        cluster.wait_applied(4, &k, Some(&[7; 4096]));
    }
    let (sending, receiving) = cluster.store(4).snap_manager().transfers();
    assert_eq!((sending, receiving), (0, 0));
}

#[test]
fn a_member_behind_a_change_follows_a_leader_it_does_not_know_yet() {
    let mut cfg = ClusterConfig::new(4, 1);
    cfg.replicas = 3;
    let cluster = Cluster::run(cfg);
    cluster.must_put(b"k", b"v");
    lead_elsewhere(&cluster, 3, 1);
    // Store 3 misses the addition of store 4's peer...
    cluster.isolate(3);
    cluster.must_change_peer(1, &[(AddNode, 4)]);
    cluster.must_put(b"k2", b"v2");
    cluster.wait_applied(4, b"k2", Some(b"v2"));
    // ...which then leads.
    cluster.must_transfer_leader(1, 4);
    cluster.clear_filters();
    // Store 3 takes the unknown leader's messages and catches up with the change.
    let region = cluster.wait_region(3, 1, |r| r.peers.len() == 4);
    assert_eq!(conf_ver(&region), 2);
    cluster.wait_applied(3, b"k2", Some(b"v2"));
}

#[test]
fn a_learner_removed_while_cut_off_asks_and_goes() {
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.replicas = 2;
    let cluster = Cluster::run(cfg);
    cluster.must_change_peer(1, &[(AddLearnerNode, 3)]);
    cluster.must_put(b"k", b"v");
    cluster.wait_applied(3, b"k", Some(b"v"));
    // Cut off, it misses its removal and the leader's tombstone; a learner never campaigns.
    cluster.isolate(3);
    cluster.must_change_peer(1, &[(RemoveNode, 3)]);
    std::thread::sleep(Duration::from_millis(300));
    cluster.clear_filters();
    // After a few election timeouts without a leader it asks the members, who answer.
    cluster.wait_peer_destroyed(3, 1);
    assert_eq!(cluster.engine_get(3, b"k"), None);
}

/// A store that applied the membership change removing its peer and stopped before the
/// destroy that follows (a crash, or a failed fsync of the tombstone: simulator seed 5287)
/// finishes the destroy when it starts, instead of refusing to start.
#[test]
fn a_peer_removed_before_its_destroy_is_destroyed_at_start() {
    let mut cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"k1", b"v1");
    let leader = cluster.wait_leader(1);
    test_cluster::wait_until("store 3 applies the put", Duration::from_secs(10), || {
        let applied = |store| cluster.peer_status(store, 1).map(|s| s.applied_index);
        applied(3).is_some() && applied(3) >= applied(leader)
    });
    let mut region = cluster.region(1);
    cluster.shutdown_store(3);
    {
        use engine::Peekable;
        let (kv, _raft) = cluster.open_engines(3);
        let k1 = kv.get_value_cf(engine::CF_DEFAULT, &engine::keys::data_key(b"k1"));
        assert!(k1.unwrap().is_some(), "store 3 holds k1");
    }
    // What apply writes for a membership change that removes store 3's peer.
    region.peers.retain(|p| p.store_id != 3);
    {
        let (kv, _raft) = cluster.open_engines(3);
        raftstore::fsm::write_region_state(&kv, &region, proto::raft_serverpb::PeerState::Normal)
            .unwrap();
    }
    cluster.start_store(3);
    assert!(cluster.peer_status(3, 1).is_none(), "store 3 hosts no peer");
    cluster.shutdown_store(3);
    let (kv, _raft) = cluster.open_engines(3);
    use engine::Peekable;
    let state = kv
        .get_msg_cf::<proto::raft_serverpb::RegionLocalState>(
            engine::CF_RAFT,
            &engine::keys::region_state_key(1),
        )
        .unwrap()
        .expect("region state");
    assert_eq!(
        state.state,
        proto::raft_serverpb::PeerState::Tombstone as i32
    );
    assert_eq!(
        kv.get_value_cf(engine::CF_DEFAULT, &engine::keys::data_key(b"k1"))
            .unwrap(),
        None,
        "its data is gone"
    );
}
