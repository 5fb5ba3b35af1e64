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
