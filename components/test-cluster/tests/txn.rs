//! Transactions over a whole in-process cluster, through the storage layer (the code path
//! gRPC and an embedding database share): latches across undetermined writes, commits
//! across a split and a leader change, and a bank workload under leader transfers and
//! partitions.

use std::time::Duration;

use proto::kvrpcpb::{Mutation, Op};
use raft::eraftpb::MessageType;
use storage::{Storage, StorageConfig};
use test_cluster::{Cluster, ClusterConfig, DropMessages};
use txn::commands::{Commit, Prewrite};

fn put(k: &[u8], v: &[u8]) -> Mutation {
    Mutation {
        op: Op::Put as i32,
        key: k.to_vec(),
        value: v.to_vec(),
        ..Default::default()
    }
}

fn prewrite(k: &[u8], v: &[u8], start_ts: u64) -> Prewrite {
    Prewrite {
        mutations: vec![put(k, v)],
        primary: k.to_vec(),
        start_ts,
        lock_ttl: 60_000,
        ..Default::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A command whose write timed out undetermined keeps its latches until the write settles:
/// the next command on the key waits, then sees the first one's lock (without the wait it
/// would read a snapshot without it, and both locks would be written, the second
/// overwriting the first).
/// Splits at the (encoded) user key `at` and waits until the scheduler, which learns of the
/// split from the leader's report, routes `left` and `at` to two regions.
fn split_between(cluster: &Cluster, left: &[u8], at: &[u8]) {
    cluster
        .split(&txn::key::encode(at))
        .expect("split at an encoded key");
    test_cluster::wait_until(
        "the scheduler sees the split",
        Duration::from_secs(10),
        || {
            cluster.region_for_key(&txn::key::encode(at)).id
                != cluster.region_for_key(&txn::key::encode(left)).id
        },
    );
}

#[test]
fn an_undetermined_write_keeps_its_latches_until_it_settles() {
    let mut cfg = ClusterConfig::new(3, 1);
    cfg.raftstore.proposal_timeout_ms = 400;
    let cluster = Cluster::run(cfg);
    let leader = cluster.wait_leader(1);
    let rt = runtime();
    let storage = {
        let _entered = rt.enter();
        Storage::new(cluster.store(leader).api(), StorageConfig::default())
    };
    let ctx = cluster.context(leader, 1);
    // Followers get the entry, the leader never hears that they did: it cannot commit.
    cluster.add_filter(DropMessages {
        msg_type: Some(MessageType::MsgAppendResponse),
        region_id: Some(1),
    });
    let first = rt.block_on(storage.prewrite(&ctx, prewrite(b"k", b"a", 10)));
    assert!(
        matches!(
            first,
            Err(storage::Error::Raft(raftstore::Error::Undetermined { .. }))
        ),
        "{first:?}"
    );
    let second = {
        let (storage, ctx) = (storage.clone(), ctx.clone());
        rt.spawn(async move { storage.prewrite(&ctx, prewrite(b"k", b"b", 20)).await })
    };
    std::thread::sleep(Duration::from_millis(800));
    assert!(!second.is_finished(), "the key's latch is still held");
    cluster.clear_filters();
    let second = rt
        .block_on(second)
        .expect("the task ran")
        .expect("the prewrite is answered");
    assert_eq!(
        second.locks.len(),
        1,
        "the second prewrite meets the first one's lock"
    );
    match &second.locks[0] {
        txn::Error::KeyIsLocked { lock } => assert_eq!(lock.lock_version, 10),
        other => panic!("{other:?}"),
    }
    // The first transaction's lock is the one in place, and it commits.
    rt.block_on(storage.commit(
        &ctx,
        Commit {
            keys: vec![b"k".to_vec()],
            start_ts: 10,
            commit_ts: 11,
        },
    ))
    .expect("the first transaction commits");
    assert_eq!(
        rt.block_on(storage.get(&ctx, b"k", 12)).unwrap(),
        Some(b"a".to_vec())
    );
}

/// Routes requests as a client would: each store's storage layer, and the region and
/// leader of a key by the scheduler's table.
struct Router<'a> {
    cluster: &'a Cluster,
    storages: Vec<(u64, Storage<engine::RocksEngine>)>,
}

type Result<T> = std::result::Result<T, storage::Error>;

impl<'a> Router<'a> {
    fn new(cluster: &'a Cluster, rt: &tokio::runtime::Runtime) -> Router<'a> {
        let _entered = rt.enter();
        let storages = cluster
            .running_stores()
            .into_iter()
            .map(|s| {
                (
                    s,
                    Storage::new(cluster.store(s).api(), StorageConfig::default()),
                )
            })
            .collect();
        Router { cluster, storages }
    }

    fn tso(&self) -> u64 {
        self.cluster.scheduler().tso.get(1).expect("a timestamp")
    }

    /// The storage of `key`'s region leader, and a context for it (`leader`: a store to
    /// ask instead of the current leader, to see the answer a stale client gets).
    fn route(
        &self,
        key: &[u8],
        leader: Option<u64>,
    ) -> (Storage<engine::RocksEngine>, proto::kvrpcpb::Context) {
        let region = self.cluster.region_for_key(&txn::key::encode(key));
        let store = leader.unwrap_or_else(|| self.cluster.wait_leader(region.id));
        let peer = region
            .peers
            .iter()
            .find(|p| p.store_id == store)
            .copied()
            .expect("the store has a peer");
        let storage = self
            .storages
            .iter()
            .find(|(s, _)| *s == store)
            .map(|(_, st)| st.clone())
            .expect("a running store");
        let ctx = proto::kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(peer),
            ..Default::default()
        };
        (storage, ctx)
    }
}

/// Moves the leadership of `key`'s region to its peer on store `to`, and waits for it.
fn move_leader(router: &Router<'_>, rt: &tokio::runtime::Runtime, key: &[u8], to: u64) {
    let region = router.cluster.region_for_key(&txn::key::encode(key));
    let peer = region
        .peers
        .iter()
        .find(|p| p.store_id == to)
        .copied()
        .expect("a peer on the target store");
    // A region just split may refuse until the target's peer has caught up: ask again.
    test_cluster::wait_ok(
        "the leader transfer is accepted",
        Duration::from_secs(10),
        || {
            rt.block_on(async {
                let (storage, ctx) = router.route(key, None);
                let admin = proto::raft_cmdpb::AdminRequest {
                    cmd_type: proto::raft_cmdpb::AdminCmdType::TransferLeader as i32,
                    transfer_leader: Some(proto::raft_cmdpb::TransferLeaderRequest {
                        peer: Some(peer),
                    }),
                    ..Default::default()
                };
                storage.api().admin(&ctx, admin).await.map(|_| ())
            })
        },
    );
    test_cluster::wait_until("the leader moves", Duration::from_secs(10), || {
        router.cluster.leader_of(region.id) == Some(to)
    });
}

fn is_region_error(e: &storage::Error) -> bool {
    matches!(e, storage::Error::Raft(r) if r.to_region_error().is_some())
        || matches!(
            e,
            storage::Error::Raft(
                raftstore::Error::ReadTimeout { .. } | raftstore::Error::Undetermined { .. }
            )
        )
}

/// Runs `call` on the current route of `key` until it answers something other than a
/// region error (leaders move, regions split), for up to 30 s.
async fn routed<T, F, Fut>(router: &Router<'_>, key: &[u8], mut call: F) -> Result<T>
where
    F: FnMut(Storage<engine::RocksEngine>, proto::kvrpcpb::Context) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (storage, ctx) = router.route(key, None);
        match call(storage, ctx).await {
            Err(e) if is_region_error(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[test]
fn a_transaction_commits_across_a_split_and_a_leader_change_after_prewrite() {
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let rt = runtime();
    let router = Router::new(&cluster, &rt);
    let start = router.tso();
    let (storage, ctx) = router.route(b"a", None);
    let cmd = Prewrite {
        mutations: vec![put(b"a", b"1"), put(b"m", b"2"), put(b"x", b"3")],
        primary: b"a".to_vec(),
        start_ts: start,
        lock_ttl: 60_000,
        ..Default::default()
    };
    let r = rt.block_on(storage.prewrite(&ctx, cmd)).expect("prewrite");
    assert!(r.locks.is_empty());

    // A split between the keys, then a leader change of the new right half.
    split_between(&cluster, b"a", b"h");
    let right = cluster.region_for_key(&txn::key::encode(b"m"));
    let old_leader = cluster.wait_leader(right.id);
    let follower = right
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|s| *s != old_leader)
        .unwrap();
    let (stale_storage, stale_ctx) = (storage, ctx);

    let commit_ts = router.tso();
    // The old context names the region before the split: refused, nothing written.
    let stale = rt.block_on(stale_storage.commit(
        &stale_ctx,
        Commit {
            keys: vec![b"a".to_vec()],
            start_ts: start,
            commit_ts,
        },
    ));
    assert!(matches!(&stale, Err(e) if is_region_error(e)), "{stale:?}");
    move_leader(&router, &rt, b"m", follower);
    // Asked of the old leader: NotLeader, nothing written.
    let (old_storage, old_ctx) = router.route(b"m", Some(old_leader));
    let not_leader = rt.block_on(old_storage.commit(
        &old_ctx,
        Commit {
            keys: vec![b"m".to_vec()],
            start_ts: start,
            commit_ts,
        },
    ));
    assert!(
        matches!(&not_leader, Err(e) if is_region_error(e)),
        "{not_leader:?}"
    );
    // Primary first, then the secondaries, each in its region now.
    for keys in [vec![b"a".to_vec()], vec![b"m".to_vec(), b"x".to_vec()]] {
        let first = keys[0].clone();
        rt.block_on(routed(&router, &first, |storage, ctx| {
            let keys = keys.clone();
            async move {
                storage
                    .commit(
                        &ctx,
                        Commit {
                            keys,
                            start_ts: start,
                            commit_ts,
                        },
                    )
                    .await
            }
        }))
        .expect("commit");
    }
    let read_ts = router.tso();
    for (k, v) in [(b"a", b"1"), (b"m", b"2"), (b"x", b"3")] {
        let got = rt
            .block_on(routed(&router, k, |storage, ctx| async move {
                storage.get(&ctx, k, read_ts).await
            }))
            .unwrap();
        assert_eq!(got, Some(v.to_vec()));
    }
}

/// What became of the transaction holding `lock`: settles it (commit or roll back its lock on
/// `lock.key`) when its primary says, or waits a little while it is alive.
async fn resolve(
    router: &Router<'_>,
    lock: &proto::kvrpcpb::LockInfo,
    caller_ts: u64,
) -> Result<()> {
    use txn::commands::{CheckTxnStatus, TxnStatus};
    let current_ts = router.tso();
    let primary = lock.primary_lock.clone();
    let status = routed(router, &primary, |storage, ctx| {
        let cmd = CheckTxnStatus {
            primary: primary.clone(),
            lock_ts: lock.lock_version,
            caller_start_ts: caller_ts,
            current_ts,
            rollback_if_not_exist: true,
            ..Default::default()
        };
        async move { storage.check_txn_status(&ctx, cmd).await }
    })
    .await?;
    let commit_ts = match status {
        TxnStatus::Committed { commit_ts } => commit_ts,
        TxnStatus::RolledBack { .. } => 0,
        TxnStatus::Locked { .. } => {
            tokio::time::sleep(Duration::from_millis(30)).await;
            return Ok(());
        }
    };
    let key = lock.key.clone();
    routed(router, &key, |storage, ctx| {
        let status = std::collections::HashMap::from([(lock.lock_version, commit_ts)]);
        let keys = vec![key.clone()];
        async move { storage.resolve_lock(&ctx, status, keys).await }
    })
    .await
}

/// The balance of `key` at `ts`, resolving the locks in the way.
async fn balance(router: &Router<'_>, key: &[u8], ts: u64) -> Result<u64> {
    loop {
        let got = routed(router, key, |storage, ctx| async move {
            storage.get(&ctx, key, ts).await
        })
        .await;
        match got {
            Ok(v) => {
                return Ok(v.map_or(0, |b| String::from_utf8(b).unwrap().parse().unwrap()));
            }
            Err(storage::Error::Txn(txn::Error::KeyIsLocked { lock })) => {
                resolve(router, &lock, ts).await?
            }
            Err(e) => return Err(e),
        }
    }
}

async fn rollback(router: &Router<'_>, keys: &[&[u8]], start_ts: u64) {
    for key in keys {
        let _ = routed(router, key, |storage, ctx| {
            let cmd = txn::commands::BatchRollback {
                keys: vec![key.to_vec()],
                start_ts,
            };
            async move { storage.batch_rollback(&ctx, cmd).await }
        })
        .await;
    }
}

/// Moves `amount` from `from` to `to` in one transaction: `Ok(true)` if it committed.
async fn transfer(router: &Router<'_>, from: &[u8], to: &[u8], amount: u64) -> Result<bool> {
    let start_ts = router.tso();
    let (a, b) = (
        balance(router, from, start_ts).await?,
        balance(router, to, start_ts).await?,
    );
    if a < amount {
        return Ok(false);
    }
    for (key, value) in [(from, a - amount), (to, b + amount)] {
        let prewritten = routed(router, key, |storage, ctx| {
            let cmd = Prewrite {
                mutations: vec![put(key, value.to_string().as_bytes())],
                primary: from.to_vec(),
                start_ts,
                lock_ttl: 1_000,
                ..Default::default()
            };
            async move { storage.prewrite(&ctx, cmd).await }
        })
        .await;
        match prewritten {
            Ok(r) if r.locks.is_empty() => {}
            Ok(_) | Err(storage::Error::Txn(_)) => {
                rollback(router, &[from, to], start_ts).await;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    let mut commit_ts = router.tso();
    for (i, key) in [from, to].into_iter().enumerate() {
        let committed = loop {
            let attempt = routed(router, key, |storage, ctx| {
                let cmd = Commit {
                    keys: vec![key.to_vec()],
                    start_ts,
                    commit_ts,
                };
                async move { storage.commit(&ctx, cmd).await }
            })
            .await;
            match attempt {
                // A reader pushed the primary's min_commit_ts: commit later, as clients do.
                Err(storage::Error::Txn(txn::Error::CommitTsExpired { .. })) if i == 0 => {
                    commit_ts = router.tso();
                }
                other => break other,
            }
        };
        match committed {
            Ok(()) => {}
            // The primary was rolled back by a resolver (its lock expired): not committed.
            Err(storage::Error::Txn(txn::Error::TxnLockNotFound { .. })) if i == 0 => {
                rollback(router, &[to], start_ts).await;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Concurrent transfers between accounts in two regions, under leader transfers and
/// partitions: every snapshot read sees the same total, and so does the end.
#[test]
fn the_bank_total_never_changes_under_leader_transfers_and_partitions() {
    let cluster = Cluster::run(ClusterConfig::new(3, 2));
    let rt = runtime();
    let router = Router::new(&cluster, &rt);
    // Region 2 starts at "r000002": these accounts fall on both sides.
    let accounts: Vec<Vec<u8>> = (0..4)
        .flat_map(|i| {
            [
                format!("acct-{i}").into_bytes(),
                format!("r000002-acct-{i}").into_bytes(),
            ]
        })
        .collect();
    let regions: std::collections::HashSet<u64> = accounts
        .iter()
        .map(|a| cluster.region_for_key(&txn::key::encode(a)).id)
        .collect();
    assert_eq!(regions.len(), 2, "the accounts span both regions");
    let start = router.tso();
    for account in &accounts {
        let cmd = Prewrite {
            mutations: vec![put(account, b"100")],
            primary: account.clone(),
            start_ts: start,
            lock_ttl: 10_000,
            ..Default::default()
        };
        let commit_ts = router.tso();
        rt.block_on(async {
            routed(&router, account, |s, ctx| {
                let cmd = cmd.clone();
                async move { s.prewrite(&ctx, cmd).await }
            })
            .await
            .unwrap();
            routed(&router, account, |s, ctx| {
                let keys = vec![account.clone()];
                async move {
                    s.commit(
                        &ctx,
                        Commit {
                            keys,
                            start_ts: start,
                            commit_ts,
                        },
                    )
                    .await
                }
            })
            .await
            .unwrap();
        });
    }
    let total = 100 * accounts.len() as u64;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let faults = {
        let stop = stop.clone();
        let cluster = &cluster;
        move || {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let region = 1 + round % 2;
                if round % 3 == 0 {
                    // A minority partition for a while.
                    let victim = 1 + round % 3;
                    cluster.isolate(victim);
                    std::thread::sleep(Duration::from_millis(300));
                    cluster.clear_filters();
                } else if let Some(leader) = cluster.leader_of(region) {
                    let to = 1 + (leader % 3);
                    let _ = cluster.transfer_leader(region, to);
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        }
    };
    /// Stops the faults when the workload ends, panics included (the scope waits for them).
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let (committed, checks) = std::thread::scope(|scope| {
        scope.spawn(faults);
        let _stop = StopOnDrop(stop.clone());
        let result = rt.block_on(async {
            let work = |seed: u64| {
                let (router, accounts) = (&router, &accounts);
                async move {
                    let mut committed = 0;
                    for i in 0..40u64 {
                        let n = accounts.len() as u64;
                        let from = &accounts[((seed * 7 + i * 3) % n) as usize];
                        let to = &accounts[((seed * 5 + i * 5 + 1) % n) as usize];
                        if from == to {
                            continue;
                        }
                        if transfer(router, from, to, 1 + i % 7)
                            .await
                            .expect("transfer")
                        {
                            committed += 1;
                        }
                    }
                    committed
                }
            };
            let reader = async {
                let mut checks = 0;
                for _ in 0..15 {
                    let ts = router.tso();
                    let mut sum = 0;
                    for a in &accounts {
                        sum += balance(&router, a, ts).await.expect("read");
                    }
                    assert_eq!(sum, total, "a snapshot at {ts} sees a different total");
                    checks += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                checks
            };
            let (a, b, checks) = tokio::join!(work(1), work(2), reader);
            (a + b, checks)
        });
        result
    });
    cluster.clear_filters();
    let ts = router.tso();
    let end: u64 = rt.block_on(async {
        let mut sum = 0;
        for a in &accounts {
            sum += balance(&router, a, ts).await.expect("read");
        }
        sum
    });
    assert_eq!(end, total);
    assert!(committed > 10, "only {committed} transfers committed");
    assert_eq!(checks, 15);
}

/// A pessimistic lock request waits for the lock in its way and takes it as soon as it is
/// released; a wait that would close a cycle is answered Deadlock at once, though the two
/// locks of the cycle are led by different stores (the cluster's detector sees it).
#[test]
fn pessimistic_waits_are_woken_on_release_and_deadlocks_are_refused() {
    use txn::commands::{PessimisticLock, PessimisticRollback};
    let cluster = Cluster::run(ClusterConfig::new(3, 1));
    let rt = runtime();
    let router = Router::new(&cluster, &rt);
    // k1 and k2 in two regions, led by two stores.
    split_between(&cluster, b"k1", b"k2");
    let left_leader = cluster.wait_leader(cluster.region_for_key(&txn::key::encode(b"k1")).id);
    let other = cluster
        .running_stores()
        .into_iter()
        .find(|s| *s != left_leader)
        .expect("another store");
    move_leader(&router, &rt, b"k2", other);
    let (storage, ctx) = router.route(b"k1", None);
    let (storage2, ctx2) = router.route(b"k2", None);
    let store_of = |ctx: &proto::kvrpcpb::Context| ctx.peer.as_ref().map(|p| p.store_id);
    assert_ne!(
        store_of(&ctx),
        store_of(&ctx2),
        "k1 and k2 led by one store"
    );
    let lock = |key: &[u8], start_ts: u64| PessimisticLock {
        mutations: vec![Mutation {
            op: Op::PessimisticLock as i32,
            key: key.to_vec(),
            ..Default::default()
        }],
        primary: key.to_vec(),
        start_ts,
        lock_ttl: 60_000,
        for_update_ts: start_ts,
        ..Default::default()
    };
    let (a, b) = (router.tso(), router.tso());
    rt.block_on(storage.pessimistic_lock(&ctx, lock(b"k1", a), -1))
        .expect("a locks k1");
    rt.block_on(storage2.pessimistic_lock(&ctx2, lock(b"k2", b), -1))
        .expect("b locks k2");
    // Without waiting: locked at once.
    let no_wait = rt.block_on(storage.pessimistic_lock(&ctx, lock(b"k1", b), -1));
    assert!(
        matches!(
            no_wait,
            Err(storage::Error::Txn(txn::Error::KeyIsLocked { .. }))
        ),
        "{no_wait:?}"
    );
    // b waits for k1 (held by a).
    let waiter = {
        let (storage, ctx, cmd) = (storage.clone(), ctx.clone(), lock(b"k1", b));
        rt.spawn(async move {
            let started = std::time::Instant::now();
            let r = storage.pessimistic_lock(&ctx, cmd, 8_000).await;
            (r, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished());
    // a asking for k2 (held by b, who waits for a) is a deadlock, found at once.
    let asked = std::time::Instant::now();
    let deadlock = rt.block_on(storage2.pessimistic_lock(&ctx2, lock(b"k2", a), 8_000));
    match &deadlock {
        Err(storage::Error::Txn(txn::Error::Deadlock {
            start_ts,
            lock_ts,
            deadlock_key,
            deadlock_key_hash,
            wait_chain,
            ..
        })) => {
            assert_eq!((*start_ts, *lock_ts), (a, b));
            // TiKV's shape: the cycle's waits, then the refused one; the deadlock key is the
            // one a holds that b waits for, hashed as TiDB hashes keys.
            let chain: Vec<_> = wait_chain
                .iter()
                .map(|w| (w.txn, w.wait_for_txn, w.key.as_slice()))
                .collect();
            assert_eq!(chain, [(b, a, &b"k1"[..]), (a, b, &b"k2"[..])]);
            assert_eq!(deadlock_key.as_slice(), b"k1");
            assert_eq!(*deadlock_key_hash, storage::deadlock::key_hash(b"k1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    assert!(!waiter.is_finished(), "the refused request changed nothing");
    // a gives up k1: b gets it at once, long before its timeout.
    rt.block_on(storage.pessimistic_rollback(
        &ctx,
        PessimisticRollback {
            keys: vec![b"k1".to_vec()],
            start_ts: a,
            for_update_ts: a,
        },
    ))
    .unwrap();
    let (result, waited) = rt.block_on(waiter).unwrap();
    result.expect("b takes k1 once a released it");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    // Every wait cleaned its edge up.
    test_cluster::wait_until("the detector is empty", Duration::from_secs(5), || {
        cluster.scheduler().deadlocks.is_empty()
    });
    let _ = router;
}
