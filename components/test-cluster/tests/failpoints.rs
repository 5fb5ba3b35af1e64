//! Crash safety at every durability step of the store, with the `fail` crate's failpoints.
//! Built only with `--features failpoints` (`make test` turns it on for the whole suite).
//! Failpoints are process-wide, so every test holds `fail::FailScenario`'s lock for its whole
//! run: under `cargo test` they run one at a time; nextest gives each its own process.
//!
//! In-process restarts keep the OS page cache, so these tests show that the store's state
//! machine recovers from a crash at each point; that unsynced data is really lost on a power
//! cut is the process-level kill -9 tests' business (network issue).

use std::time::{Duration, Instant};

use raftstore::Error;
use test_cluster::{wait_until, Cluster, ClusterConfig};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Puts until acknowledged or `deadline`; returns whether it was acknowledged.
fn try_put(cluster: &Cluster, k: &[u8], deadline: Instant) -> bool {
    while Instant::now() < deadline {
        let region_id = cluster.region_for_key(k).id;
        if let Some(leader) = cluster.leader_of(region_id) {
            match cluster.write_on(leader, region_id, vec![raftstore::Modify::put(k, k)]) {
                Ok(()) => return true,
                Err(e) if e.is_retryable() => {}
                Err(e) => panic!("write of {k:?}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Writes, crashes one store's poller at `failpoint`, restarts every store and checks that
/// every acknowledged write is there on every store and that the cluster serves again.
fn crash_at(failpoint: &str) {
    crash_at_with(failpoint, raftstore::Config::default().store_io_pool_size);
}

/// [`crash_at`] with `store-io-pool-size` set: the raft-log failpoints are in the raft
/// poller's round (0, the default) or in the store writer (1).
fn crash_at_with(failpoint: &str, store_io_pool_size: usize) {
    let scenario = fail::FailScenario::setup();
    let mut cfg = ClusterConfig::new(3, 2);
    cfg.raftstore.store_io_pool_size = store_io_pool_size;
    let mut cluster = Cluster::run(cfg);
    let mut acked = Vec::new();
    for i in 0..20 {
        cluster.must_put(&key(i), &key(i));
        acked.push(key(i));
    }
    fail::cfg(failpoint, "1*panic").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 20..60 {
        if try_put(&cluster, &key(i), deadline) {
            acked.push(key(i));
        }
    }
    // The store stops once the panicking poller has unwound, which (backtrace printing
    // included) may take a moment after the writes went on without it.
    let stopped_stores = || -> Vec<u64> {
        cluster
            .running_stores()
            .into_iter()
            .filter(|s| cluster.store(*s).stopped_reason().is_some())
            .collect()
    };
    let what = format!("a store hits {failpoint} and stops");
    wait_until(&what, Duration::from_secs(20), || {
        !stopped_stores().is_empty()
    });
    let stopped = stopped_stores();
    assert_eq!(
        stopped.len(),
        1,
        "exactly one store hit {failpoint} and stopped"
    );
    assert!(acked.len() > 20, "the other two stores kept serving writes");
    fail::remove(failpoint);
    let panicked: usize = cluster
        .running_stores()
        .into_iter()
        .map(|s| cluster.shutdown_store(s))
        .sum();
    assert_eq!(panicked, 1, "one poller or writer crashed at {failpoint}");

    // Restart: every region loads (its invariants are checked at load) and every acknowledged
    // write is on every store.
    cluster.start();
    for k in &acked {
        assert_eq!(cluster.must_get(k).as_deref(), Some(k.as_slice()), "{k:?}");
    }
    for store in 1..=3 {
        for k in &acked {
            cluster.wait_applied(store, k, Some(k));
        }
    }
    cluster.must_put(b"after", b"restart");
    for store in 1..=3 {
        cluster.wait_applied(store, b"after", Some(b"restart"));
    }
    drop(cluster);
    scenario.teardown();
}

#[test]
fn crash_before_the_raft_log_write() {
    crash_at("raft_before_log_write");
}

#[test]
fn crash_after_the_raft_log_write() {
    crash_at("raft_after_log_write");
}

#[test]
fn crash_before_the_raft_log_write_of_the_store_writer() {
    crash_at_with("raft_before_log_write", 1);
}

#[test]
fn crash_after_the_raft_log_write_of_the_store_writer() {
    crash_at_with("raft_after_log_write", 1);
}

#[test]
fn crash_before_the_apply_write() {
    crash_at("apply_before_write");
}

#[test]
fn crash_after_the_apply_write() {
    crash_at("apply_after_write");
}

/// A failed write stops the store with the error as its reason: it is neither retried nor
/// ignored, and the store answers nothing as a success afterwards.
fn write_error_stops_the_store(failpoint: &str, reason: &str) {
    let scenario = fail::FailScenario::setup();
    let mut cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"k0", b"v0");
    fail::cfg(failpoint, "1*return").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stopped = None;
    let mut i = 1;
    while stopped.is_none() && Instant::now() < deadline {
        try_put(&cluster, &key(i), deadline);
        i += 1;
        stopped = cluster
            .running_stores()
            .into_iter()
            .find(|s| cluster.store(*s).stopped_reason().is_some());
    }
    let stopped = stopped.unwrap_or_else(|| panic!("no store stopped on {failpoint}"));
    let why = cluster.store(stopped).stopped_reason().unwrap();
    assert!(why.contains(reason) && why.contains("injected"), "{why}");
    match cluster.write_on(stopped, 1, vec![raftstore::Modify::put(*b"x", *b"y")]) {
        Err(Error::StoreStopped { .. }) => {}
        other => panic!("a stopped store must refuse requests, got {other:?}"),
    }
    // The others carry on.
    cluster.must_put(b"still", b"serving");
    fail::remove(failpoint);
    cluster.shutdown_store(stopped);
    cluster.start_store(stopped);
    cluster.wait_applied(stopped, b"still", Some(b"serving"));
    drop(cluster);
    scenario.teardown();
}

#[test]
fn a_raft_log_write_error_stops_the_store() {
    write_error_stops_the_store("raft_log_write_error", "writing the raft log");
}

#[test]
fn a_kv_write_error_stops_the_store() {
    write_error_stops_the_store("kv_write_error", "writing applied entries");
}

/// A region whose mailbox stays full answers ServerIsBusy after the bounded wait, and a busy
/// write is never applied.
#[test]
fn a_full_mailbox_answers_server_is_busy() {
    let scenario = fail::FailScenario::setup();
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.peer_mailbox_capacity = 16;
    cfg.raftstore.mailbox_full_wait_ms = 50;
    // Slow rounds must not cost the leader its leadership in this test.
    cfg.raftstore.raft_election_timeout_ticks = 100;
    cfg.raftstore.hibernate_idle_ticks = 200;
    // Slow rounds, not a slow store writer (which would fill its own queue first).
    cfg.raftstore.store_io_pool_size = 0;
    let cluster = Cluster::run(cfg);
    let leader = cluster.wait_leader(1);
    cluster.must_put(b"warm", b"up");
    let ctx = cluster.context(leader, 1);
    // Every raft round now takes 300 ms: the leader's mailbox fills up.
    fail::cfg("raft_before_log_write", "sleep(300)").unwrap();
    let writers: Vec<_> = (0..48)
        .map(|i| {
            let api = cluster.store(leader).api();
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let k = key(i);
                let r = futures::executor::block_on(
                    api.write(&ctx, vec![raftstore::Modify::put(k.clone(), k.clone())]),
                );
                (k, r)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    fail::remove("raft_before_log_write");
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let busy: Vec<&Vec<u8>> = results
        .iter()
        .filter(|(_, r)| matches!(r, Err(Error::ServerIsBusy { .. })))
        .map(|(k, _)| k)
        .collect();
    assert!(
        !busy.is_empty(),
        "48 writers against a 16-slot mailbox: some must be busy"
    );
    for (k, r) in &results {
        match r {
            Ok(()) => assert_eq!(cluster.must_get(k).as_deref(), Some(k.as_slice())),
            Err(Error::ServerIsBusy { .. }) | Err(Error::StaleCommand { .. }) => {
                assert_eq!(cluster.must_get(k), None)
            }
            Err(e) => panic!("unexpected error for {k:?}: {e}"),
        }
    }
    drop(cluster);
    scenario.teardown();
}

/// A store that crashes at `failpoint` while applying a snapshot is consistent when it
/// restarts: the apply is finished from the kept files (or was already done), every key is
/// there, and no received snapshot file is left behind.
fn crash_during_snapshot_apply(failpoint: &str) {
    let scenario = fail::FailScenario::setup();
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.raft_log_gc_tick_interval_ms = 100;
    cfg.raftstore.raft_log_gc_threshold = 20;
    cfg.raftstore.raft_log_gc_count_limit = 50;
    let mut cluster = Cluster::run(cfg);
    let leader = cluster.wait_leader(1);
    cluster.must_put(b"before", b"1");
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    cluster.wait_applied(follower, b"before", Some(b"1"));
    let written = cluster.leave_behind(1, follower, key);
    fail::cfg(failpoint, "1*panic").unwrap();
    cluster.clear_filters();
    let what = format!("the follower reaches {failpoint}");
    wait_until(&what, Duration::from_secs(20), || {
        cluster.store(follower).stopped_reason().is_some()
    });
    fail::remove(failpoint);
    assert_eq!(
        cluster.shutdown_store(follower),
        1,
        "one of its pollers crashed"
    );
    cluster.start_store(follower);
    let last = key(written - 1);
    cluster.wait_applied(follower, &last, Some(&last));
    for i in 0..written {
        assert_eq!(
            cluster.engine_get(follower, &key(i)),
            Some(key(i)),
            "key {i}"
        );
    }
    cluster.must_put(b"after", b"2");
    cluster.wait_applied(follower, b"after", Some(b"2"));
    let received: Vec<_> = cluster
        .store(follower)
        .snap_manager()
        .list()
        .into_iter()
        .filter(|(kind, _)| *kind == raftstore::snap::SnapKind::Received)
        .collect();
    assert!(received.is_empty(), "left behind: {received:?}");
    drop(cluster);
    scenario.teardown();
}

/// Step 1 (region marked Applying) done, step 2 (raft log reset) not.
#[test]
fn a_crash_after_the_applying_state_is_resumed_at_restart() {
    crash_during_snapshot_apply("snapshot_after_applying_state");
}

/// Steps 1-2 done, the data not in.
#[test]
fn a_crash_before_the_snapshot_ingest_is_resumed_at_restart() {
    crash_during_snapshot_apply("apply_snapshot_before_ingest");
}

/// The data ingested, the region not yet Normal.
#[test]
fn a_crash_after_the_snapshot_ingest_is_resumed_at_restart() {
    crash_during_snapshot_apply("snapshot_after_ingest");
}

/// The region Normal, its snapshot files not yet deleted.
#[test]
fn a_crash_after_the_snapshot_apply_leaves_no_files_behind() {
    crash_during_snapshot_apply("snapshot_after_normal_state");
}

/// A region heartbeat dropped because the scheduler worker's queue was full is not lost: the
/// region is owed a report, which the worker asks for once its queue has room, so the
/// scheduler learns the new leader long before the sleeping leader's next rare tick (10
/// minutes here). Before, a burst of new leaders (a failover of thousands of regions) left
/// some unknown to the scheduler, and so to clients, for a whole hibernate interval. And a
/// stalled scheduler keeps nobody awake.
#[test]
fn a_dropped_region_heartbeat_is_sent_again_once_the_worker_has_room() {
    let scenario = fail::FailScenario::setup();
    let regions = 8;
    let mut cfg = ClusterConfig::new(3, regions);
    cfg.raftstore.heartbeat_queue_capacity = 1;
    cfg.raftstore.hibernate_heartbeat_interval_ms = 600_000;
    let cluster = Cluster::run(cfg);
    let wait = Duration::from_secs(30);
    let scheduler = cluster.scheduler();
    let known_leader = |region_id: u64| {
        scheduler
            .cluster
            .region_by_id(region_id)
            .and_then(|r| r.leader)
            .map(|l| l.store_id)
    };
    let asleep = |region_id: u64| {
        (1..=3).all(|s| {
            cluster
                .peer_status(s, region_id)
                .is_some_and(|st| st.asleep)
        })
    };
    let settled = || {
        (1..=regions).all(|r| {
            let leader = cluster.leader_of(r);
            leader.is_some() && known_leader(r) == leader && asleep(r)
        })
    };
    for r in 1..=regions {
        cluster.must_transfer_leader(r, 1);
    }
    wait_until("every region led, reported and asleep", wait, settled);

    // Every store's worker stalls on its first batch (failpoints are process-wide), and its
    // queue has room for one more task: most reports of store 2's new leaders are dropped.
    let dropped_before = raftstore::metrics::METRICS.heartbeats_dropped.get();
    fail::cfg("heartbeat_worker_before_batch", "pause").unwrap();
    // Unpaused before the cluster is dropped, also when an assertion fails.
    struct Unpause;
    impl Drop for Unpause {
        fn drop(&mut self) {
            fail::remove("heartbeat_worker_before_batch");
        }
    }
    let unpause = Unpause;
    for r in 1..=regions {
        cluster.must_transfer_leader(r, 2);
    }
    let dropped = raftstore::metrics::METRICS.heartbeats_dropped.get() - dropped_before;
    assert!(dropped >= regions - 2, "{dropped} reports dropped");
    // The stalled scheduler keeps no region awake.
    wait_until("the regions sleep with their reports owed", wait, || {
        (1..=regions).all(asleep)
    });

    // Long enough for the sleeping leaders to have heard nothing from their members.
    std::thread::sleep(cluster.cfg.raftstore.election_timeout() * 3);
    drop(unpause);
    wait_until("the scheduler knows every new leader", wait, || {
        (1..=regions).all(|r| known_leader(r) == Some(2))
    });
    // Reported by sleeping leaders, with their members' stores answering: none is down.
    for r in 1..=regions {
        let info = scheduler.cluster.region_by_id(r).expect("known region");
        assert!(
            info.down_peers.is_empty(),
            "region {r}: {:?}",
            info.down_peers
        );
    }
    wait_until("the regions still sleep", wait, settled);
    drop(cluster);
    scenario.teardown();
}

/// Writes that reach a region while its poller is busy are handled in its next round and go
/// into one raft entry, each still checked and answered on its own: a bad one among them is
/// refused alone, the others are applied.
#[test]
fn writes_queued_for_one_round_share_an_entry_and_keep_their_own_answers() {
    let _scenario = fail::FailScenario::setup();
    let mut cfg = ClusterConfig::new(1, 1);
    // The raft poller writes its own round, so the failpoint below holds the poller (with a
    // store writer it would hold only the writer, and the poller would go on proposing).
    cfg.raftstore.store_io_pool_size = 0;
    let cluster = Cluster::run(cfg);
    cluster.must_put(b"k-first", b"v");
    let region_id = cluster.region_for_key(b"k-first").id;
    let leader = cluster.wait_leader(region_id);
    let ctx = cluster.context(leader, region_id);
    let last_index = || {
        cluster
            .peer_status(leader, region_id)
            .expect("the leader answers")
            .commit_index
    };
    let before = last_index();
    // Holds the only raft poller at its log write, with the first write's entry, while the
    // others queue in the region's mailbox.
    fail::cfg("raft_before_log_write", "pause").unwrap();
    const WRITES: u32 = 20;
    let api = cluster.store(leader).api();
    let answers = std::thread::scope(|s| {
        let first = s.spawn(|| {
            futures::executor::block_on(
                api.write(&ctx, vec![raftstore::Modify::put(key(999), "v")]),
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        let writes: Vec<_> = (0..WRITES)
            .map(|i| {
                let (api, ctx) = (&api, &ctx);
                s.spawn(move || {
                    let modify = if i == 7 {
                        raftstore::Modify::Put {
                            cf: "no-such-cf".into(),
                            key: key(i),
                            value: b"v".to_vec(),
                        }
                    } else {
                        raftstore::Modify::put(key(i), format!("v{i}"))
                    };
                    futures::executor::block_on(api.write(ctx, vec![modify]))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        fail::remove("raft_before_log_write");
        let mut answers: Vec<_> = writes.into_iter().map(|w| w.join().unwrap()).collect();
        answers.push(first.join().unwrap());
        answers
    });
    for (i, answer) in answers.iter().enumerate() {
        if i == 7 {
            assert!(
                matches!(answer, Err(Error::InvalidCommand { .. })),
                "write {i}: {answer:?}"
            );
        } else {
            assert!(answer.is_ok(), "write {i}: {answer:?}");
        }
    }
    for i in 0..WRITES {
        let expected = (i != 7).then(|| format!("v{i}").into_bytes());
        assert_eq!(cluster.must_get(&key(i)), expected, "key {i}");
    }
    // The first write in its own entry, the 19 good queued ones in one, or a few: a tick
    // (every 20 ms here) queued between them ends a batch. One entry each without batching.
    let entries = last_index() - before;
    assert!(
        entries <= u64::from(WRITES) / 2,
        "{WRITES} acknowledged writes took {entries} entries"
    );
}

/// With the store writer, a raft round does not wait on the disk: while the writer is held
/// at its log write, the raft poller goes on taking writes to other regions in rounds of its
/// own, and once released the writer makes all those rounds durable with one or two fsyncs.
#[test]
fn the_store_writer_merges_the_rounds_queued_while_it_writes() {
    let _scenario = fail::FailScenario::setup();
    const REGIONS: u64 = 16;
    let mut cfg = ClusterConfig::new(1, REGIONS);
    cfg.raftstore.store_io_pool_size = 1;
    let cluster = Cluster::run(cfg);
    let store = cluster.running_stores()[0];
    for i in 1..=REGIONS {
        let k = test_cluster::region_key(i);
        cluster.must_put(&k, b"warm");
    }
    let stats = cluster.store(store).stats();
    let fsyncs = || raftstore::fsm::StoreStats::get(&stats.fsyncs);
    fail::cfg("raft_before_log_write", "pause").unwrap();
    let api = cluster.store(store).api();
    let before = fsyncs();
    let answers = std::thread::scope(|s| {
        let writes: Vec<_> = (1..=REGIONS)
            .map(|i| {
                let api = &api;
                let ctx = cluster.context(
                    store,
                    cluster.region_for_key(&test_cluster::region_key(i)).id,
                );
                s.spawn(move || {
                    let k = test_cluster::region_key(i);
                    // One at a time, so each region's write takes a round of its own.
                    std::thread::sleep(Duration::from_millis(20 * i));
                    futures::executor::block_on(
                        api.write(&ctx, vec![raftstore::Modify::put(k, b"v".to_vec())]),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 * REGIONS + 300));
        assert_eq!(fsyncs(), before, "the writer is held: nothing was written");
        fail::remove("raft_before_log_write");
        writes
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.is_ok(), "write to region {}: {answer:?}", i + 1);
    }
    // The round held at the failpoint, then every round queued behind it in one write (a
    // third for a round that came in between). Without a writer: one per round, 16.
    let took = fsyncs() - before;
    assert!(
        (1..=3).contains(&took),
        "{REGIONS} writes queued in separate rounds took {took} fsyncs"
    );
    for i in 1..=REGIONS {
        let k = test_cluster::region_key(i);
        assert_eq!(cluster.must_get(&k).as_deref(), Some(b"v".as_slice()));
    }
}

/// A read that waits for a ReadIndex round while a split of its region is being applied is
/// answered EpochNotMatch, not with a snapshot of the smaller region: a client that still
/// sees the old range would take that snapshot for the whole of it, and a scan would skip
/// the keys that moved (tikv-client's raw scan returned 142 of 300 keys in CI).
#[test]
fn a_read_waiting_across_a_split_gets_epoch_not_match() {
    let _scenario = fail::FailScenario::setup();
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    cluster.must_put(b"a", b"1");
    cluster.must_put(b"m", b"2");
    let region_id = cluster.region_for_key(b"a").id;
    let leader = cluster.wait_leader(region_id);
    let old = cluster.context(leader, region_id);
    let status = || {
        cluster
            .peer_status(leader, region_id)
            .expect("the leader's peer")
    };
    let committed = status().commit_index;
    // The split commits, but its apply (on every store) is held before its write.
    fail::cfg("apply_before_write", "pause").unwrap();
    let api = cluster.store(leader).api();
    std::thread::scope(|s| {
        // A failed wait must release the apply, or the scope would wait for the split forever.
        let _release = RemoveOnDrop("apply_before_write");
        let split = s.spawn(|| cluster.split(b"k"));
        wait_until("the split commits", Duration::from_secs(10), || {
            status().commit_index > committed
        });
        // Proposing the split suspended lease reads, so this one waits for ReadIndex and for
        // the apply to reach the split.
        let read = s.spawn(|| futures::executor::block_on(api.snapshot(&old)));
        wait_until("the read waits", Duration::from_secs(10), || {
            status().pending_reads == 1
        });
        fail::remove("apply_before_write");
        split.join().unwrap().expect("the split");
        match read.join().unwrap() {
            Err(Error::EpochNotMatch { .. }) => {}
            Err(e) => panic!("expected EpochNotMatch, got {e}"),
            Ok(snap) => panic!(
                "a read with the pre-split epoch was served a snapshot of {:?}",
                snap.region()
            ),
        }
    });
}

/// Removes a failpoint when dropped, also while a test unwinds.
struct RemoveOnDrop(&'static str);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        fail::remove(self.0);
    }
}
