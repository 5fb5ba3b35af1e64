//! PeerStorage against raft-rs's storage semantics, the entry cache in front of raft-engine,
//! restart, and the persisted-state invariant checks.

use std::path::Path;

use engine::{keys, KvEngine, MemEngine, RocksConfig, RocksEngine, WriteBatch, CF_RAFT};
use proto::build::{self, peer_with_role};
use proto::metapb::{PeerRole, Region};
use proto::raft_serverpb::{PeerState, RaftApplyState, RaftTruncatedState};
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};
use raft::{GetEntriesContext, Storage, StorageError};
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::storage::{conf_state_from_region, CacheBudget, PeerStorage, RAFT_INIT_LOG_INDEX};
use raftstore::Error;

/// Region `id` with peer `i` on store `i` in the `i`th role (from 1).
fn region(id: u64, roles: &[PeerRole]) -> Region {
    build::region(id)
        .peers(
            (1..)
                .zip(roles)
                .map(|(i, role)| peer_with_role(i, i, *role)),
        )
        .build()
}

fn voters(id: u64) -> Region {
    region(id, &[PeerRole::Voter, PeerRole::Voter, PeerRole::Voter])
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: vec![index as u8; 128].into(),
        ..Default::default()
    }
}

fn raft_log(dir: &Path) -> RaftLogEngine {
    RaftLogEngine::open(&RaftLogConfig::new(dir.join("raft-engine"))).expect("open raft log")
}

fn open<EK: KvEngine>(
    kv: &EK,
    log: &RaftLogEngine,
    region: Region,
    budget: usize,
) -> PeerStorage<EK> {
    PeerStorage::open(
        kv.clone(),
        log.clone(),
        region,
        PeerState::Normal,
        CacheBudget::new(budget),
    )
    .expect("open peer storage")
}

/// Appends `entries` and the hard state, writes them durably, and marks them persisted.
fn persist<EK: KvEngine>(
    ps: &mut PeerStorage<EK>,
    log: &RaftLogEngine,
    entries: &[Entry],
    commit: u64,
) {
    let mut batch = log.batch();
    ps.append(entries.to_vec(), &mut batch).unwrap();
    let term = entries.last().map_or(ps.last_term(), |e| e.term);
    ps.set_hard_state(&HardState {
        term,
        vote: 1,
        commit,
        ..Default::default()
    });
    ps.write_raft_state(&mut batch).unwrap();
    log.write(&mut batch, true).unwrap();
    ps.on_persisted(ps.raft_state().last_index, ps.last_term());
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn store_err<T: std::fmt::Debug>(r: raft::Result<T>) -> StorageError {
    match r {
        Err(raft::Error::Store(e)) => e,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// A region with entries 6..=10 (terms 6 6 7 7 8) after the initial log position 5/5.
fn populated(dir: &Path, budget: usize) -> (MemEngine, RaftLogEngine, PeerStorage<MemEngine>) {
    let kv = MemEngine::new();
    let log = raft_log(dir);
    let mut ps = open(&kv, &log, voters(1), budget);
    let entries: Vec<_> = [(6, 6), (7, 6), (8, 7), (9, 7), (10, 8)]
        .iter()
        .map(|(i, t)| entry(*i, *t))
        .collect();
    persist(&mut ps, &log, &entries, 8);
    (kv, log, ps)
}

#[test]
fn raft_storage_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let (_kv, _log, ps) = populated(dir.path(), usize::MAX);
    assert_eq!(ps.first_index().unwrap(), RAFT_INIT_LOG_INDEX + 1);
    assert_eq!(ps.last_index().unwrap(), 10);

    assert!(matches!(
        store_err(ps.entries(5, 7, None, ctx())),
        StorageError::Compacted
    ));
    assert!(matches!(
        store_err(ps.entries(6, 12, None, ctx())),
        StorageError::Unavailable
    ));
    let all = ps.entries(6, 11, None, ctx()).unwrap();
    assert_eq!(
        all.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
        vec![(6, 6), (7, 6), (8, 7), (9, 7), (10, 8)]
    );
    assert!(ps.entries(7, 7, None, ctx()).unwrap().is_empty());
    assert_eq!(
        ps.entries(6, 11, 0, ctx()).unwrap().len(),
        1,
        "max_size 0 still returns one entry"
    );
    let two = u64::from(all[0].compute_size() + all[1].compute_size());
    assert_eq!(ps.entries(6, 11, two, ctx()).unwrap().len(), 2);
    assert_eq!(ps.entries(6, 11, two + 1, ctx()).unwrap().len(), 2);

    assert_eq!(ps.term(5).unwrap(), 5, "term of the truncated index");
    assert!(matches!(store_err(ps.term(4)), StorageError::Compacted));
    assert!(matches!(store_err(ps.term(11)), StorageError::Unavailable));
    assert_eq!(ps.term(7).unwrap(), 6);
    assert_eq!(ps.term(10).unwrap(), 8);

    assert!(matches!(
        store_err(ps.snapshot(0, 2)),
        StorageError::SnapshotTemporarilyUnavailable
    ));
}

#[test]
fn entries_span_raft_log_and_unpersisted_cache() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of zero: durable entries leave the cache as soon as they are persisted.
    let (_kv, log, mut ps) = populated(dir.path(), 0);
    assert!(ps.entry_cache().is_empty(), "durable entries were evicted");
    assert_eq!(
        ps.entries(6, 11, None, ctx()).unwrap().len(),
        5,
        "served from raft-engine"
    );

    // Handed to the raft log but not written: only the cache has them.
    let mut pending = log.batch();
    ps.append(vec![entry(11, 8), entry(12, 8)], &mut pending)
        .unwrap();
    assert_eq!(
        ps.last_index().unwrap(),
        12,
        "last index moves before persistence"
    );
    assert_eq!(log.last_index(1), Some(10));
    let got = ps.entries(8, 13, None, ctx()).unwrap();
    assert_eq!(
        got.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![8, 9, 10, 11, 12]
    );
    assert_eq!(ps.term(11).unwrap(), 8);
    // The size limit spans both parts.
    let three = got[..3]
        .iter()
        .map(|e| u64::from(e.compute_size()))
        .sum::<u64>();
    assert_eq!(ps.entries(8, 13, three, ctx()).unwrap().len(), 3);
    let four = got[..4]
        .iter()
        .map(|e| u64::from(e.compute_size()))
        .sum::<u64>();
    assert_eq!(ps.entries(8, 13, four, ctx()).unwrap().len(), 4);
    assert_eq!(
        ps.entry_cache().len(),
        2,
        "unpersisted entries are never evicted"
    );
    log.write(&mut pending, true).unwrap();
    ps.on_persisted(12, 8);
    assert!(ps.entry_cache().is_empty());
    assert_eq!(ps.entries(11, 13, None, ctx()).unwrap().len(), 2);
}

#[test]
fn conflicting_append_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (kv, log, mut ps) = populated(dir.path(), usize::MAX);
    // A new leader at term 9 replaces index 9 onward.
    persist(&mut ps, &log, &[entry(9, 9)], 8);
    assert_eq!(ps.last_index().unwrap(), 9);
    assert_eq!(ps.term(9).unwrap(), 9);
    assert!(matches!(
        store_err(ps.entries(9, 11, None, ctx())),
        StorageError::Unavailable
    ));
    let hs_before = ps.initial_state().unwrap().hard_state;
    drop(ps);
    drop(log);

    let log = raft_log(dir.path());
    let ps = open(&kv, &log, voters(1), usize::MAX);
    assert_eq!(ps.last_index().unwrap(), 9, "last index recovered exactly");
    assert_eq!(ps.term(9).unwrap(), 9);
    assert_eq!(ps.term(8).unwrap(), 7);
    assert_eq!(
        ps.initial_state().unwrap().hard_state,
        hs_before,
        "hard state recovered exactly"
    );
    assert_eq!(
        log.last_index(1),
        Some(9),
        "the overwritten tail is gone from raft-engine too"
    );
}

#[test]
fn restart_with_rocksdb_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig {
        block_cache_size: 8 << 20,
        ..RocksConfig::default()
    };
    let db = dir.path().join("db");
    {
        let kv = RocksEngine::open(&db, &config).unwrap();
        let log = raft_log(dir.path());
        let mut ps = open(&kv, &log, voters(3), usize::MAX);
        persist(
            &mut ps,
            &log,
            &(6..=20).map(|i| entry(i, 6)).collect::<Vec<_>>(),
            15,
        );
        let mut wb = kv.write_batch();
        let apply = RaftApplyState {
            applied_index: 12,
            truncated_state: Some(RaftTruncatedState { index: 5, term: 5 }),
            commit_index: 12,
            commit_term: 6,
        };
        wb.put_msg_cf(CF_RAFT, &keys::apply_state_key(3), &apply)
            .unwrap();
        kv.write(&mut wb, true).unwrap();
    }
    let kv = RocksEngine::open(&db, &config).unwrap();
    let log = raft_log(dir.path());
    let ps = open(&kv, &log, voters(3), usize::MAX);
    assert_eq!(ps.last_index().unwrap(), 20);
    assert_eq!(ps.applied_index(), 12);
    let hs = ps.initial_state().unwrap().hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (6, 1, 15));
    assert_eq!(ps.entries(6, 21, None, ctx()).unwrap().len(), 15);
}

fn write_apply_state<EK: KvEngine>(
    kv: &EK,
    region_id: u64,
    applied: u64,
    truncated: u64,
    commit: u64,
) {
    let mut wb = kv.write_batch();
    let state = RaftApplyState {
        applied_index: applied,
        truncated_state: Some(RaftTruncatedState {
            index: truncated,
            term: 5,
        }),
        commit_index: commit,
        commit_term: 7,
    };
    wb.put_msg_cf(CF_RAFT, &keys::apply_state_key(region_id), &state)
        .unwrap();
    kv.write(&mut wb, true).unwrap();
}

#[test]
fn commit_is_raised_to_what_was_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (kv, log, ps) = populated(dir.path(), usize::MAX);
    assert_eq!(ps.initial_state().unwrap().hard_state.commit, 8);
    drop(ps);
    // Applied up to 9 under commit 9, but the HardState with commit 9 never reached disk.
    write_apply_state(&kv, 1, 9, 5, 9);
    let ps = open(&kv, &log, voters(1), usize::MAX);
    assert_eq!(ps.initial_state().unwrap().hard_state.commit, 9);
}

#[test]
fn inconsistent_states_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (kv, log, ps) = populated(dir.path(), usize::MAX);
    drop(ps);
    let try_open = |state: PeerState| {
        PeerStorage::open(
            kv.clone(),
            log.clone(),
            voters(1),
            state,
            CacheBudget::new(1 << 20),
        )
    };

    write_apply_state(&kv, 1, 20, 5, 8);
    let err = try_open(PeerState::Normal)
        .err()
        .expect("applied beyond last index");
    assert!(
        matches!(err, Error::InvalidState { region_id: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("applied_index 20 <= last_index 10"),
        "{err}"
    );
    assert!(
        try_open(PeerState::Applying).is_ok(),
        "a region applying a snapshot is exempt"
    );

    write_apply_state(&kv, 1, 7, 8, 8);
    let err = try_open(PeerState::Normal)
        .err()
        .expect("truncated beyond applied");
    assert!(
        err.to_string()
            .contains("truncated_index 8 <= applied_index 7"),
        "{err}"
    );

    write_apply_state(&kv, 1, 9, 5, 9);
    assert!(try_open(PeerState::Normal).is_ok());

    // The raft log lost entries the truncated state says must still be there.
    let mut batch = log.batch();
    batch.compact_to(1, 8);
    log.write(&mut batch, true).unwrap();
    let err = try_open(PeerState::Normal)
        .err()
        .expect("log compacted past the truncated index");
    assert!(
        err.to_string().contains("raft log starts at Some(8)"),
        "{err}"
    );
}

#[test]
fn uninitialized_region_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let kv = MemEngine::new();
    let log = raft_log(dir.path());
    let ps = open(
        &kv,
        &log,
        Region {
            id: 9,
            ..Default::default()
        },
        usize::MAX,
    );
    assert_eq!(ps.first_index().unwrap(), 1);
    assert_eq!(ps.last_index().unwrap(), 0);
    let state = ps.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState::default());
    assert!(state.conf_state.voters.is_empty());
    assert_eq!(ps.term(0).unwrap(), 0);
}

#[test]
fn conf_state_follows_peer_roles() {
    let stable = region(1, &[PeerRole::Voter, PeerRole::Voter, PeerRole::Learner]);
    let cs = conf_state_from_region(&stable);
    assert_eq!(
        (cs.voters.clone(), cs.learners.clone()),
        (vec![1, 2], vec![3])
    );
    assert!(cs.voters_outgoing.is_empty());

    // Joint: peer 2 is being demoted, peer 3 promoted.
    let joint = region(
        1,
        &[
            PeerRole::Voter,
            PeerRole::DemotingVoter,
            PeerRole::IncomingVoter,
        ],
    );
    let cs = conf_state_from_region(&joint);
    assert_eq!(cs.voters, vec![1, 3]);
    assert_eq!(cs.voters_outgoing, vec![1, 2]);
    assert_eq!(cs.learners_next, vec![2]);
}

#[test]
fn cache_budget_is_shared_across_regions() {
    let dir = tempfile::tempdir().unwrap();
    let kv = MemEngine::new();
    let log = raft_log(dir.path());
    let budget = CacheBudget::new(usize::MAX);
    let mut a = PeerStorage::open(
        kv.clone(),
        log.clone(),
        voters(1),
        PeerState::Normal,
        budget.clone(),
    )
    .unwrap();
    let mut b = PeerStorage::open(
        kv.clone(),
        log.clone(),
        voters(2),
        PeerState::Normal,
        budget.clone(),
    )
    .unwrap();
    persist(&mut a, &log, &[entry(6, 6)], 5);
    persist(&mut b, &log, &[entry(6, 6), entry(7, 6)], 5);
    assert_eq!(
        budget.used(),
        a.entry_cache().bytes() + b.entry_cache().bytes()
    );
    assert!(budget.used() > 0);
    drop(a);
    drop(b);
    assert_eq!(budget.used(), 0);
}

/// A peer created by a message (raft state only: a term and a vote, no log) whose region is
/// then created by a split here: it opens at the split's initial state, term and vote kept.
#[test]
fn an_uninitialized_peer_s_raft_state_opens_as_a_split_region() {
    use raftstore::storage::initial_apply_state;
    let dir = tempfile::tempdir().unwrap();
    let log = raft_log(dir.path());
    let kv = MemEngine::new();
    let mut batch = log.batch();
    let state = proto::raft_serverpb::RaftLocalState {
        hard_state: Some(proto::eraftpb::HardState {
            term: 9,
            vote: 2,
            commit: 0,
        }),
        last_index: 0,
    };
    batch.put_raft_state(7, &state).unwrap();
    log.write(&mut batch, true).unwrap();
    let region = voters(7);
    let mut wb = kv.write_batch();
    wb.put_msg_cf(
        CF_RAFT,
        &keys::apply_state_key(7),
        &initial_apply_state(&region),
    )
    .unwrap();
    kv.write(&mut wb, true).unwrap();
    let storage = open(&kv, &log, region, 1 << 20);
    let rs = storage.initial_state().unwrap();
    assert_eq!(rs.hard_state.term, 9);
    assert_eq!(rs.hard_state.vote, 2);
    assert_eq!(rs.hard_state.commit, RAFT_INIT_LOG_INDEX);
    assert_eq!(storage.last_index().unwrap(), RAFT_INIT_LOG_INDEX);
}
