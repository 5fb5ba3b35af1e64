//! Transactions on a real 3-store cluster (separate processes on loopback), through
//! tikv-client 0.4's `TransactionClient`, unmodified, and through raw gRPC for what a
//! well-behaved client never sends (a client that dies between prewrite and commit).

mod common;

use std::time::Duration;

use api_version::memcomparable::encode;
use common::{ctl, wait_until, ProcCluster};
use proto::kvrpcpb::{self, Context, Mutation, Op};
use proto::tikvpb::tikv_client::TikvClient;
use tikv_client::{TimestampExt as _, TransactionClient, TransactionOptions};

fn key(i: usize) -> String {
    format!("k{i:04}")
}

/// Asks a split at `at` (a stored key), waiting out an operator of the scheduler's own on
/// the region, until the routing table shows `regions` regions.
async fn split(admin: &client::Client, at: Vec<u8>, regions: usize) {
    common::wait_ok("the split is accepted", Duration::from_secs(60), || async {
        match admin.split(at.clone()).await {
            Ok(op) => Ok(op),
            Err(e) if e.to_string().contains("already has an operator") => Err(e.to_string()),
            Err(e) => panic!("split at {at:?}: {e}"),
        }
    })
    .await;
    wait_until("the split is applied", Duration::from_secs(30), || async {
        admin.regions().await.map(|r| r.len()).unwrap_or(0) >= regions
    })
    .await;
}

async fn tso(client: &TransactionClient) -> u64 {
    use tikv_client::TimestampExt as _;
    client
        .current_timestamp()
        .await
        .expect("a timestamp")
        .version()
}

/// A context for the region holding `raw_key` (its encoded form routes), and a connection
/// to its leader.
async fn context_for(
    admin: &client::Client,
    raw_key: &[u8],
) -> (Context, TikvClient<tonic::transport::Channel>) {
    let info = admin
        .region_by_key(encode(raw_key))
        .await
        .unwrap()
        .expect("the key's region is known");
    let leader = info.leader.expect("the region has a leader");
    let ctx = Context {
        region_id: info.region.id,
        region_epoch: info.region.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    let stores = admin.stores().await.unwrap();
    let addr = stores
        .iter()
        .find(|s| s.id == leader.store_id)
        .map(|s| format!("http://{}", s.address))
        .expect("the leader's store is known");
    (ctx, TikvClient::connect(addr).await.expect("connect"))
}

/// A 3-store cluster (API V1, `tune` laid over each store's config), replicated, with an
/// admin client and tikv-client's `TransactionClient`.
async fn v1_cluster(
    tune: impl Fn(&mut regionstore::config::StoreConfig),
) -> (ProcCluster, client::Client, TransactionClient) {
    let cluster = ProcCluster::start_with_stores(3, tune);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    let client = TransactionClient::new(vec![cluster.pd.clone()])
        .await
        .expect("tikv-client connects");
    (cluster, admin, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_optimistic_transactions_across_region_splits() {
    let (cluster, admin, client) = v1_cluster(|_| {}).await;

    // CRUD in one transaction, read back by the next.
    let mut t = client.begin_optimistic().await.unwrap();
    for i in 0..100 {
        t.put(key(i), format!("v{i}")).await.unwrap();
    }
    t.put("big".to_owned(), vec![7u8; 4000]).await.unwrap();
    assert_eq!(t.get(key(3)).await.unwrap(), Some(b"v3".to_vec()));
    t.commit().await.expect("commit");

    // Boundaries at encoded keys, as a transactional client routes.
    split(&admin, encode(key(30).as_bytes()), 2).await;
    split(&admin, encode(key(60).as_bytes()), 3).await;

    let mut t = client.begin_optimistic().await.unwrap();
    assert_eq!(t.get(key(0)).await.unwrap(), Some(b"v0".to_vec()));
    assert_eq!(t.get(key(99)).await.unwrap(), Some(b"v99".to_vec()));
    assert_eq!(
        t.get("big".to_owned()).await.unwrap(),
        Some(vec![7u8; 4000])
    );
    assert_eq!(t.get("nope".to_owned()).await.unwrap(), None);
    let got = t
        .batch_get((0..100).step_by(7).map(key).collect::<Vec<_>>())
        .await
        .unwrap()
        .count();
    assert_eq!(got, (0..100).step_by(7).count());
    let scanned: Vec<_> = t.scan(key(10)..key(70), 1000).await.unwrap().collect();
    assert_eq!(scanned.len(), 60);
    assert_eq!(
        Vec::<u8>::from(scanned[0].key().clone()),
        key(10).into_bytes()
    );
    let reverse: Vec<_> = t
        .scan_reverse(key(10)..key(70), 1000)
        .await
        .unwrap()
        .collect();
    assert_eq!(reverse.len(), 60);
    assert_eq!(
        Vec::<u8>::from(reverse[0].key().clone()),
        key(69).into_bytes()
    );
    // Writes across the three regions, then a delete.
    t.put(key(5), "five".to_owned()).await.unwrap();
    t.put(key(45), "forty-five".to_owned()).await.unwrap();
    t.delete(key(75)).await.unwrap();
    t.commit().await.expect("commit across regions");

    let snap_ts = tso(&client).await;
    let mut t = client.begin_optimistic().await.unwrap();
    assert_eq!(t.get(key(5)).await.unwrap(), Some(b"five".to_vec()));
    assert_eq!(t.get(key(45)).await.unwrap(), Some(b"forty-five".to_vec()));
    assert_eq!(t.get(key(75)).await.unwrap(), None);
    // Insert of an existing key fails; nothing of the transaction is written.
    t.insert(key(1), "again".to_owned()).await.unwrap();
    t.put(key(2), "not written".to_owned()).await.unwrap();
    let err = t.commit().await.expect_err("insert of an existing key");
    assert!(format!("{err:?}").contains("already_exist"), "{err:?}");
    let mut t = client.begin_optimistic().await.unwrap();
    assert_eq!(t.get(key(2)).await.unwrap(), Some(b"v2".to_vec()));
    t.rollback().await.unwrap();

    // Optimistic conflict: the second committer loses.
    let mut a = client.begin_optimistic().await.unwrap();
    let mut b = client.begin_optimistic().await.unwrap();
    a.put(key(50), "a".to_owned()).await.unwrap();
    b.put(key(50), "b".to_owned()).await.unwrap();
    a.commit().await.expect("first committer wins");
    let err = b.commit().await.expect_err("second committer conflicts");
    assert!(format!("{err:?}").contains("conflict"), "{err:?}");
    // lock_keys conflicts too, and a snapshot read at an old ts sees the old value.
    let mut c = client.begin_optimistic().await.unwrap();
    let mut d = client.begin_optimistic().await.unwrap();
    c.lock_keys(vec![key(51)]).await.unwrap();
    d.put(key(51), "d".to_owned()).await.unwrap();
    d.commit().await.unwrap();
    assert!(
        c.commit().await.is_err(),
        "a locked key written meanwhile conflicts"
    );
    let mut old = client.snapshot(
        tikv_client::Timestamp::from_version(snap_ts),
        TransactionOptions::new_optimistic(),
    );
    assert_eq!(old.get(key(50)).await.unwrap(), Some(b"v50".to_vec()));
    assert_eq!(old.get(key(75)).await.unwrap(), None);

    // scan_locks is empty once everything is committed or rolled back.
    let now = tikv_client::Timestamp::from_version(tso(&client).await);
    wait_until("no locks remain", Duration::from_secs(20), || async {
        let locks = client.scan_locks(&now, vec![].., 1000).await.unwrap();
        locks.is_empty()
    })
    .await;

    // The same through ctl, and its transactional reads and writes.
    let pd = cluster.pd.clone();
    let said = ctl(&pd, &["txn", "put", "ctl-key", "ctl-value"]);
    assert!(said.starts_with("committed at "), "{said}");
    assert_eq!(ctl(&pd, &["txn", "get", "ctl-key"]), "ctl-value");
    assert_eq!(ctl(&pd, &["txn", "get", "nobody"]), "(not found)");
    assert_eq!(ctl(&pd, &["txn", "locks"]), "0 lock(s)");
    assert!(ctl(&pd, &["txn", "gc-safepoint"]).starts_with("0 "));
    let mut t = client.begin_optimistic().await.unwrap();
    t.put("ctl-locked".to_owned(), "v".to_owned())
        .await
        .unwrap();
    let start = t.start_timestamp().version();
    t.rollback().await.unwrap();
    assert_eq!(
        ctl(&pd, &["txn", "status", &start.to_string(), "ctl-locked"]),
        "rolled back"
    );
}

type Kv = TikvClient<tonic::transport::Channel>;

/// A raw KvPrewrite of `pairs` with primary `primary`: what a client sends.
async fn prewrite(
    kv: &mut Kv,
    ctx: &Context,
    pairs: &[(&str, &str)],
    primary: &str,
    start_version: u64,
    lock_ttl: u64,
) -> kvrpcpb::PrewriteResponse {
    let mutations = pairs
        .iter()
        .map(|(k, v)| Mutation {
            op: Op::Put as i32,
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect();
    kv.kv_prewrite(kvrpcpb::PrewriteRequest {
        context: Some(ctx.clone()),
        mutations,
        primary_lock: primary.as_bytes().to_vec(),
        start_version,
        lock_ttl,
        ..Default::default()
    })
    .await
    .expect("KvPrewrite answers")
    .into_inner()
}

/// A raw KvCommit of `keys`.
async fn commit(
    kv: &mut Kv,
    ctx: &Context,
    keys: &[&str],
    start_version: u64,
    commit_version: u64,
) -> kvrpcpb::CommitResponse {
    kv.kv_commit(kvrpcpb::CommitRequest {
        context: Some(ctx.clone()),
        start_version,
        keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
        commit_version,
    })
    .await
    .expect("KvCommit answers")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_of_a_client_that_died_are_resolved_by_the_primary() {
    let (_cluster, admin, client) = v1_cluster(|_| {}).await;

    // A "client" that prewrites two transactions and dies: one after committing its primary,
    // one before.
    let (ctx, mut kv) = context_for(&admin, b"p1").await;
    let committed_start = tso(&client).await;
    let pairs = [("p1", "one"), ("s1", "one")];
    let resp = prewrite(&mut kv, &ctx, &pairs, "p1", committed_start, 60_000).await;
    assert!(
        resp.region_error.is_none() && resp.errors.is_empty(),
        "{resp:?}"
    );
    let commit_ts = tso(&client).await;
    let resp = commit(&mut kv, &ctx, &["p1"], committed_start, commit_ts).await;
    assert!(resp.error.is_none(), "{resp:?}");

    let abandoned_start = tso(&client).await;
    let pairs = [("p2", "two"), ("s2", "two")];
    let resp = prewrite(&mut kv, &ctx, &pairs, "p2", abandoned_start, 200).await;
    assert!(resp.errors.is_empty(), "{resp:?}");

    // A reader meets both secondaries' locks and resolves them by their primaries.
    let mut t = client.begin_optimistic().await.unwrap();
    assert_eq!(t.get("s1".to_owned()).await.unwrap(), Some(b"one".to_vec()));
    assert_eq!(t.get("s2".to_owned()).await.unwrap(), None);
    assert_eq!(t.get("p2".to_owned()).await.unwrap(), None);
    t.rollback().await.unwrap();

    // The rolled-back transaction can never commit now.
    let late = tso(&client).await;
    let resp = commit(&mut kv, &ctx, &["p2"], abandoned_start, late).await;
    let err = resp.error.expect("commit after rollback fails");
    assert!(err.retryable.contains("no lock"), "{err:?}");

    // Bad input: commit_ts not above start_ts is refused and writes nothing.
    let start = tso(&client).await;
    let resp = prewrite(&mut kv, &ctx, &[("p3", "three")], "p3", start, 60_000).await;
    assert!(resp.errors.is_empty(), "{resp:?}");
    let resp = commit(&mut kv, &ctx, &["p3"], start, start).await;
    assert!(
        resp.error
            .as_ref()
            .is_some_and(|e| e.abort.contains("not above")),
        "{resp:?}"
    );
    let status = kv
        .kv_check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            context: Some(ctx.clone()),
            primary_key: b"p3".to_vec(),
            lock_ts: start,
            current_ts: start,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.lock_info.is_some() && status.lock_ttl == 60_000,
        "{status:?}"
    );
    // A key outside the region is a region error, not a write.
    let mut elsewhere = ctx.clone();
    elsewhere.region_epoch = Some(proto::metapb::RegionEpoch {
        conf_ver: 1000,
        version: 1000,
    });
    let start = tso(&client).await;
    let resp = prewrite(&mut kv, &elsewhere, &[("p4", "four")], "p4", start, 60_000).await;
    assert!(resp.region_error.is_some(), "{resp:?}");
}

/// Pessimistic, async-commit and one-phase transactions, heartbeats, GC and range deletion,
/// through tikv-client unmodified, without a keyspace (API V1) or with one (API V2).
async fn pessimistic_async_commit_and_gc(client: &TransactionClient) {
    // Pessimistic: get_for_update locks, a competing writer fails until it is released.
    let mut t = client.begin_optimistic().await.unwrap();
    t.put("acct-a".to_owned(), "100".to_owned()).await.unwrap();
    t.put("acct-b".to_owned(), "0".to_owned()).await.unwrap();
    t.commit().await.unwrap();

    let mut p = client.begin_pessimistic().await.unwrap();
    assert_eq!(
        p.get_for_update("acct-a".to_owned()).await.unwrap(),
        Some(b"100".to_vec())
    );
    let got: Vec<_> = p
        .batch_get_for_update(vec!["acct-b".to_owned(), "acct-none".to_owned()])
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "a missing key is left out");
    let mut other = client.begin_pessimistic().await.unwrap();
    assert!(
        other.get_for_update("acct-a".to_owned()).await.is_err(),
        "a key locked pessimistically is locked for other writers"
    );
    other.rollback().await.unwrap();
    p.put("acct-a".to_owned(), "70".to_owned()).await.unwrap();
    p.put("acct-b".to_owned(), "30".to_owned()).await.unwrap();
    p.commit().await.expect("pessimistic commit");
    // A pessimistic rollback releases its locks.
    let mut r = client.begin_pessimistic().await.unwrap();
    r.get_for_update("acct-a".to_owned()).await.unwrap();
    r.rollback().await.unwrap();
    let mut check = client.begin_optimistic().await.unwrap();
    assert_eq!(
        check.get("acct-a".to_owned()).await.unwrap(),
        Some(b"70".to_vec())
    );
    assert_eq!(
        check.get("acct-b".to_owned()).await.unwrap(),
        Some(b"30".to_vec())
    );
    check.rollback().await.unwrap();

    // Async commit and one-phase commit.
    let mut a = client
        .begin_with_options(TransactionOptions::new_optimistic().use_async_commit())
        .await
        .unwrap();
    a.put("async-1".to_owned(), "x".to_owned()).await.unwrap();
    a.put("async-2".to_owned(), "y".to_owned()).await.unwrap();
    let commit_ts = a
        .commit()
        .await
        .expect("async commit")
        .expect("a commit ts");
    let mut o = client
        .begin_with_options(TransactionOptions::new_optimistic().try_one_pc())
        .await
        .unwrap();
    o.put("one-pc".to_owned(), "z".to_owned()).await.unwrap();
    o.commit().await.expect("one-phase commit");
    let mut after = client.begin_optimistic().await.unwrap();
    assert!(after.start_timestamp().version() > commit_ts.version());
    assert_eq!(
        after.get("async-2".to_owned()).await.unwrap(),
        Some(b"y".to_vec())
    );
    assert_eq!(
        after.get("one-pc".to_owned()).await.unwrap(),
        Some(b"z".to_vec())
    );
    after.rollback().await.unwrap();

    // Heartbeats extend a live transaction's primary lock.
    let mut h = client.begin_optimistic().await.unwrap();
    h.put("hb".to_owned(), "1".to_owned()).await.unwrap();
    h.lock_keys(vec!["hb-lock".to_owned()]).await.unwrap();
    assert!(
        h.send_heart_beat().await.is_err(),
        "no primary lock before prewrite"
    );
    h.rollback().await.unwrap();

    // GC at a safe point: no lock at or below it remains, reads above it are unchanged.
    let safe_point = client.current_timestamp().await.unwrap();
    assert!(client.gc(safe_point.clone()).await.expect("gc"));
    assert!(client
        .scan_locks(&safe_point, .., 100)
        .await
        .unwrap()
        .is_empty());
    let mut g = client.begin_optimistic().await.unwrap();
    assert_eq!(
        g.get("acct-a".to_owned()).await.unwrap(),
        Some(b"70".to_vec())
    );
    g.rollback().await.unwrap();

    // Range deletion on every store.
    client
        .unsafe_destroy_range("async-".to_owned().."async.".to_owned())
        .await
        .expect("unsafe destroy range");
    let mut d = client.begin_optimistic().await.unwrap();
    assert_eq!(d.get("async-1".to_owned()).await.unwrap(), None);
    assert_eq!(
        d.get("acct-a".to_owned()).await.unwrap(),
        Some(b"70".to_vec())
    );
    d.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_pessimistic_async_commit_and_gc_without_a_keyspace() {
    // tikv-client asks for the default lock wait (`wait_timeout` 0) and retries a locked
    // key about ten times: a short default keeps the competing writer's failure quick.
    let (_cluster, _admin, client) = v1_cluster(|cfg| {
        cfg.server.lock_wait_default_ms = 100;
    })
    .await;
    pessimistic_async_commit_and_gc(&client).await;
}

/// Two pessimistic transactions each wait for the other's lock, the two keys led by two
/// different stores: the scheduler's deadlock detector sees the cycle that neither store
/// sees alone, and one of them is answered Deadlock at once rather than after its wait;
/// the other then takes the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_deadlock_across_stores_is_refused_at_once() {
    let (_cluster, admin, client) = v1_cluster(|cfg| {
        cfg.server.lock_wait_default_ms = 20_000;
        cfg.server.lock_wait_max_ms = 20_000;
    })
    .await;
    split(&admin, encode(b"dl-b"), 2).await;
    // The two halves led by two stores.
    let left = admin.region_of(&encode(b"dl-a")).await.unwrap();
    let right = admin.region_of(&encode(b"dl-b")).await.unwrap();
    // Until the two leaders differ, move the right half's leader to a store that does not
    // lead the left half (the scheduler's own balancing may move leaders meanwhile).
    common::wait_ok("the leaders differ", Duration::from_secs(90), || {
        let admin = admin.clone();
        async move {
            let regions = admin.regions().await.map_err(|e| e.to_string())?;
            let find = |id: u64| regions.iter().find(|r| r.region.id == id);
            let left_leader = find(left)
                .and_then(|r| r.leader.as_ref())
                .map(|p| p.store_id);
            let right_info = find(right).ok_or("the right half is unknown")?;
            let right_leader = right_info.leader.as_ref().map(|p| p.store_id);
            if left_leader.is_some() && right_leader.is_some() && left_leader != right_leader {
                return Ok(());
            }
            let target = right_info
                .region
                .peers
                .iter()
                .map(|p| p.store_id)
                .find(|s| Some(*s) != left_leader)
                .ok_or("no peer on another store")?;
            let op = admin
                .transfer_leader(right, target)
                .await
                .map_err(|e| e.to_string())?;
            let _ = admin.wait_operator(&op, Duration::from_secs(10)).await;
            Err(format!("leaders {left_leader:?} and {right_leader:?}"))
        }
    })
    .await;

    let mut t1 = client.begin_pessimistic().await.unwrap();
    let mut t2 = client.begin_pessimistic().await.unwrap();
    t1.get_for_update("dl-a".to_owned()).await.unwrap();
    t2.get_for_update("dl-b".to_owned()).await.unwrap();
    let started = std::time::Instant::now();
    let first = tokio::spawn(async move {
        let r = t1.get_for_update("dl-b".to_owned()).await;
        (r.map(|_| ()).map_err(|e| e.to_string()), t1)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = t2.get_for_update("dl-a".to_owned()).await;
    let err = second
        .expect_err("closing the cycle is a deadlock")
        .to_string();
    assert!(err.contains("eadlock"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "found after {:?}, not at once",
        started.elapsed()
    );
    t2.rollback().await.unwrap();
    let (r, mut t1) = first.await.unwrap();
    r.expect("the first takes the lock once the other rolled back");
    t1.put("dl-b".to_owned(), "1".to_owned()).await.unwrap();
    t1.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_transactions_in_a_keyspace_under_api_version_2() {
    let cluster = ProcCluster::start_with_stores(3, |cfg| {
        cfg.api_version = api_version::ApiVersion::V2;
        cfg.server.lock_wait_default_ms = 100;
    });
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 5, 3).await;
    let client = TransactionClient::new_with_config(
        vec![cluster.pd.clone()],
        tikv_client::Config::default().with_default_keyspace(),
    )
    .await
    .expect("tikv-client with a keyspace connects");
    let mut t = client.begin_optimistic().await.unwrap();
    for i in 0..50 {
        t.put(key(i), format!("v{i}")).await.unwrap();
    }
    t.commit().await.unwrap();
    // A boundary inside the keyspace's transactional range, as a split would make it.
    split(
        &admin,
        encode(&[b"x\0\0\0", key(25).as_bytes()].concat()),
        6,
    )
    .await;
    let mut t = client.begin_optimistic().await.unwrap();
    let all: Vec<_> = t.scan(.., 100).await.unwrap().collect();
    assert_eq!(all.len(), 50);
    assert_eq!(Vec::<u8>::from(all[0].key().clone()), key(0).into_bytes());
    let rev: Vec<_> = t.scan_reverse(.., 100).await.unwrap().collect();
    assert_eq!(Vec::<u8>::from(rev[0].key().clone()), key(49).into_bytes());
    t.rollback().await.unwrap();
    pessimistic_async_commit_and_gc(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_below_the_safe_point_leaves_reads_above_it_unchanged() {
    let (cluster, _admin, client) = v1_cluster(|cfg| {
        cfg.gc.interval_ms = 300;
    })
    .await;
    // Ten versions of each key, the last few above the safe point; a delete in the middle.
    let mut snapshots = Vec::new();
    for round in 0..10 {
        let mut t = client.begin_optimistic().await.unwrap();
        for i in 0..20 {
            if round == 5 && i % 2 == 0 {
                t.delete(key(i)).await.unwrap();
            } else {
                t.put(key(i), format!("v{i}-{round}")).await.unwrap();
            }
        }
        t.commit().await.unwrap();
        if round >= 6 {
            snapshots.push(tso(&client).await);
        }
    }
    let read_all = |ts: u64| {
        let client = &client;
        async move {
            let mut s = client.snapshot(
                tikv_client::Timestamp::from_version(ts),
                TransactionOptions::new_optimistic(),
            );
            s.scan(key(0)..key(9999), 100)
                .await
                .unwrap()
                .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
                .collect::<Vec<_>>()
        }
    };
    let mut before = Vec::new();
    for &ts in &snapshots {
        before.push(read_all(ts).await);
    }
    // The safe point is the first snapshot's ts: versions 0..=5 of each key go (the newest at
    // or below it, round 6, stays).
    let safe_point = tikv_client::Timestamp::from_version(snapshots[0]);
    assert!(client.gc(safe_point).await.expect("gc"));
    wait_until(
        "the GC workers delete old versions",
        Duration::from_secs(30),
        || async {
            (0..3)
                .map(|i| cluster.metric(i, "regionstore_gc_versions_deleted_total"))
                .sum::<f64>()
                >= 20.0 * 6.0
        },
    )
    .await;
    for (ts, want) in snapshots.iter().zip(&before) {
        assert_eq!(&read_all(*ts).await, want, "reads at {ts} after GC");
    }
    assert_eq!(before[0].len(), 20);
}

/// A transaction of 1,000 keys of 15 KB: size splits happen under it (at whole user keys,
/// never between versions), and it commits across the new regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_commits_across_size_splits() {
    let (_cluster, admin, client) = v1_cluster(|cfg| {
        cfg.raftstore.region_split_size = 2 << 20;
        cfg.raftstore.region_max_size = 3 << 20;
        cfg.raftstore.split_region_check_tick_interval_ms = 200;
    })
    .await;
    let value = vec![b'v'; 15 << 10];
    let mut t = client.begin_optimistic().await.unwrap();
    for i in 0..1000 {
        t.put(key(i), value.clone()).await.unwrap();
    }
    t.commit().await.expect("a 15 MB transaction commits");
    wait_until("size splits", Duration::from_secs(60), || async {
        admin.regions().await.map(|r| r.len()).unwrap_or(0) >= 4
    })
    .await;
    for r in admin.regions().await.unwrap() {
        for k in [&r.region.start_key, &r.region.end_key] {
            if !k.is_empty() {
                let user = api_version::memcomparable::decode_exact("boundary", k)
                    .expect("every boundary is a whole encoded user key");
                assert!(user.starts_with(b"k"), "{user:?}");
            }
        }
    }
    // Overwrite half of it across the new regions, then read it all back.
    let mut t = client.begin_optimistic().await.unwrap();
    for i in (0..1000).step_by(2) {
        t.put(key(i), format!("new{i}")).await.unwrap();
    }
    t.commit().await.expect("commit across the split regions");
    let mut t = client.begin_optimistic().await.unwrap();
    let mut seen = 0;
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        let got: Vec<_> = t
            .batch_get(chunk.iter().map(|i| key(*i)).collect::<Vec<_>>())
            .await
            .unwrap()
            .collect();
        for pair in got {
            let k = String::from_utf8(Vec::<u8>::from(pair.key().clone())).unwrap();
            let i: usize = k[1..].parse().unwrap();
            if i % 2 == 0 {
                assert_eq!(pair.value(), &format!("new{i}").into_bytes());
            } else {
                assert_eq!(pair.value(), &value);
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 1000);
    t.rollback().await.unwrap();
}

/// Our client's transactions beside tikv-client's, on one cluster: each reads what the other
/// committed, conflicts are seen from both sides, and our resolver settles tikv-client's
/// abandoned locks.
async fn ours_beside_tikv(
    ours: &client::TransactionClient,
    tikv: &TransactionClient,
    admin: &client::Client,
    prefix: &[u8],
) {
    use client::TxnOptions;
    let k = |i: usize| format!("ob{i:03}");
    // Ours writes, tikv-client reads; and back.
    let mut t = ours.begin(TxnOptions::optimistic()).await.unwrap();
    for i in 0..40 {
        t.put(k(i), format!("ours{i}")).await.unwrap();
    }
    t.commit().await.expect("our commit");
    split(
        admin,
        encode(&[prefix, k(20).as_bytes()].concat()),
        2 + admin.regions().await.unwrap().len() - 1,
    )
    .await;
    let mut theirs = tikv.begin_optimistic().await.unwrap();
    assert_eq!(theirs.get(k(3)).await.unwrap(), Some(b"ours3".to_vec()));
    assert_eq!(theirs.get(k(33)).await.unwrap(), Some(b"ours33".to_vec()));
    theirs.put(k(1), "tikv1".to_owned()).await.unwrap();
    theirs.put(k(30), "tikv30".to_owned()).await.unwrap();
    theirs.commit().await.unwrap();
    let mut t = ours.begin(TxnOptions::optimistic()).await.unwrap();
    assert_eq!(t.get(k(1)).await.unwrap(), Some(b"tikv1".to_vec()));
    assert_eq!(t.get(k(30)).await.unwrap(), Some(b"tikv30".to_vec()));
    let scanned = t.scan(k(10), k(25), 100).await.unwrap();
    assert_eq!(scanned.len(), 15);
    assert_eq!(scanned[0].0, k(10).into_bytes());
    t.rollback().await.unwrap();

    // A conflict seen from our side: tikv-client commits first.
    let mut a = ours.begin(TxnOptions::optimistic()).await.unwrap();
    let mut b = tikv.begin_optimistic().await.unwrap();
    a.put(k(5), "a".to_owned()).await.unwrap();
    b.put(k(5), "b".to_owned()).await.unwrap();
    b.commit().await.unwrap();
    let err = a.commit().await.expect_err("conflict");
    assert!(err.is_write_conflict(), "{err}");

    // Pessimistic: ours locks, tikv-client's competing lock fails; then ours commits.
    let mut p = ours
        .begin(TxnOptions {
            lock_ttl_ms: 30_000,
            ..TxnOptions::pessimistic()
        })
        .await
        .unwrap();
    assert_eq!(
        p.get_for_update(k(6)).await.unwrap(),
        Some(b"ours6".to_vec())
    );
    let mut q = tikv
        .begin_with_options(
            TransactionOptions::new_pessimistic().drop_check(tikv_client::CheckLevel::None),
        )
        .await
        .unwrap();
    // tikv-client waits (backs off) on our live lock: it does not get the key.
    let competing = tokio::time::timeout(Duration::from_secs(1), q.get_for_update(k(6))).await;
    assert!(!matches!(competing, Ok(Ok(_))), "{competing:?}");
    q.rollback().await.unwrap();
    p.put(k(6), "pess".to_owned()).await.unwrap();
    p.commit().await.expect("our pessimistic commit");

    // Heartbeats keep a slow transaction's locks alive past their TTL: a competing writer
    // cannot roll it back, and it commits.
    let mut slow = ours
        .begin(TxnOptions {
            lock_ttl_ms: 600,
            ..TxnOptions::pessimistic()
        })
        .await
        .unwrap();
    slow.get_for_update(k(8)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut q = tikv
        .begin_with_options(
            TransactionOptions::new_pessimistic().drop_check(tikv_client::CheckLevel::None),
        )
        .await
        .unwrap();
    let competing = tokio::time::timeout(Duration::from_secs(1), q.get_for_update(k(8))).await;
    assert!(!matches!(competing, Ok(Ok(_))), "{competing:?}");
    q.rollback().await.unwrap();
    slow.put(k(8), "slow".to_owned()).await.unwrap();
    slow.commit()
        .await
        .expect("a transaction kept alive commits");

    // Async commit: committed once prewritten, readable by both.
    let mut c = ours
        .begin(TxnOptions::optimistic().with_async_commit())
        .await
        .unwrap();
    c.put(k(7), "async".to_owned()).await.unwrap();
    c.put(k(27), "async".to_owned()).await.unwrap();
    let commit_ts = c.commit().await.expect("async commit");
    assert!(commit_ts > c.start_ts());
    let mut theirs = tikv.begin_optimistic().await.unwrap();
    assert_eq!(theirs.get(k(27)).await.unwrap(), Some(b"async".to_vec()));
    theirs.rollback().await.unwrap();

    // Insert of an existing key through ours is refused.
    let mut i = ours.begin(TxnOptions::optimistic()).await.unwrap();
    assert_eq!(i.get(k(6)).await.unwrap(), Some(b"pess".to_vec()));
    i.rollback().await.unwrap();

    // Status and locks as ctl shows them.
    let now = ours.timestamp().await.unwrap();
    assert!(ours
        .scan_locks(b"", b"", now, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        ours.txn_status(k(7).as_bytes(), c.start_ts())
            .await
            .unwrap(),
        client::TxnStatus::Committed { .. }
    ));

    // Concurrent timestamps are batched into shared PD requests: each is still unique, and
    // one asked for after they all returned is above them all.
    let many = futures::future::join_all((0..200).map(|_| ours.timestamp())).await;
    let mut many: Vec<u64> = many.into_iter().map(|ts| ts.unwrap()).collect();
    many.sort_unstable();
    many.dedup();
    assert_eq!(many.len(), 200, "duplicate timestamps");
    assert!(ours.timestamp().await.unwrap() > many[199]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_transaction_client_beside_tikv_client() {
    let cluster = ProcCluster::start(3);
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 1, 3).await;
    let tikv = TransactionClient::new(vec![cluster.pd.clone()])
        .await
        .unwrap();
    let ours = client::TransactionClient::connect(
        std::slice::from_ref(&cluster.pd),
        client::ClientConfig::default(),
    )
    .await
    .unwrap();
    ours_beside_tikv(&ours, &tikv, &admin, b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_transaction_client_beside_tikv_client_in_a_keyspace() {
    let cluster = ProcCluster::start_with_stores(3, |cfg| {
        cfg.api_version = api_version::ApiVersion::V2;
    });
    let admin = cluster.client().await;
    cluster.wait_replicated(&admin, 5, 3).await;
    let tikv = TransactionClient::new_with_config(
        vec![cluster.pd.clone()],
        tikv_client::Config::default().with_default_keyspace(),
    )
    .await
    .unwrap();
    let ours = client::TransactionClient::connect(
        std::slice::from_ref(&cluster.pd),
        client::ClientConfig {
            keyspace: Some("DEFAULT".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ours_beside_tikv(&ours, &tikv, &admin, b"x\0\0\0").await;
}
