//! Every command against every state a key can be in, from one transaction's point of view,
//! and the finer rules (async commit, one-phase commit, pushes, scans, overlapped rollbacks).

mod common;

use common::*;
use proto::kvrpcpb::{Action, Op};
use txn::commands::*;
use txn::{Error, Result};

/// The transaction under test: starts at 1000 ms, locks live 100 ms.
const S: u64 = 1000 << 18;
/// Its commit ts, when a state commits it.
const C: u64 = (1010 << 18) + 1;
/// "Now" while its lock is alive, and once it has expired.
const ALIVE: u64 = (1050 << 18) + 2;
const EXPIRED: u64 = (1200 << 18) + 3;
/// Another transaction: started before S, or committed after S.
const O: u64 = (990 << 18) + 4;
const O_LATE: u64 = (1001 << 18) + 5;
const O_LATE_COMMIT: u64 = (1002 << 18) + 6;

#[derive(Clone, Copy, Debug)]
enum State {
    NoLock,
    OwnLock,
    OtherLock,
    OwnPessimistic,
    Committed,
    RolledBack,
    NewerCommit,
}

fn setup(state: State) -> Store {
    let s = Store::new();
    s.must_prewrite(vec![put("k", "old")], "k", 1);
    s.commit(&["k"], 1, 2).unwrap();
    match state {
        State::NoLock => {}
        State::OwnLock => s.must_prewrite(vec![put("k", "new")], "k", S),
        State::OtherLock => s.must_prewrite(vec![put("k", "other")], "k", O),
        State::OwnPessimistic => {
            s.pessimistic_lock(&["k"], "k", S, S).unwrap();
        }
        State::Committed => {
            s.must_prewrite(vec![put("k", "new")], "k", S);
            s.commit(&["k"], S, C).unwrap();
        }
        State::RolledBack => s.rollback(&["k"], S).unwrap(),
        State::NewerCommit => {
            s.must_prewrite(vec![put("k", "late")], "k", O_LATE);
            s.commit(&["k"], O_LATE, O_LATE_COMMIT).unwrap();
        }
    }
    s
}

fn outcome<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::KeyIsLocked { .. }) => "locked".into(),
        Err(Error::WriteConflict { .. }) => "conflict".into(),
        Err(Error::TxnLockNotFound { .. }) => "lock_not_found".into(),
        Err(Error::PessimisticLockNotFound { .. }) => "pess_not_found".into(),
        Err(Error::TxnNotFound { .. }) => "txn_not_found".into(),
        Err(Error::Committed { .. }) => "committed".into(),
        Err(Error::LockTypeNotMatch { .. }) => "type_mismatch".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn prewrite_outcome(r: Result<PrewriteResult>) -> String {
    match r {
        Ok(res) if !res.locks.is_empty() => "locked".into(),
        other => outcome(other),
    }
}

fn status_outcome(r: Result<TxnStatus>) -> String {
    match r {
        Ok(TxnStatus::Locked { .. }) => "status:locked".into(),
        Ok(TxnStatus::Committed { .. }) => "status:committed".into(),
        Ok(TxnStatus::RolledBack { .. }) => "status:rolled_back".into(),
        other => outcome(other),
    }
}

const ACTIONS: [&str; 11] = [
    "prewrite",
    "pess_prewrite",
    "commit",
    "rollback",
    "cleanup",
    "status_alive",
    "status_expired",
    "heart_beat",
    "pess_lock",
    "pess_rollback",
    "read",
];

fn act(s: &Store, action: &str) -> String {
    match action {
        "prewrite" => prewrite_outcome(s.prewrite(vec![put("k", "new")], "k", S)),
        "pess_prewrite" => prewrite_outcome(s.prewrite_cmd(&Prewrite {
            mutations: vec![put("k", "new")],
            primary: b"k".to_vec(),
            start_ts: S,
            lock_ttl: 100,
            for_update_ts: S,
            pessimistic_actions: vec![PessimisticAction::DoPessimisticCheck],
            ..Default::default()
        })),
        "commit" => outcome(s.commit(&["k"], S, C + 10)),
        "rollback" => outcome(s.rollback(&["k"], S)),
        "cleanup" => outcome(s.cleanup("k", S, ALIVE)),
        "status_alive" => status_outcome(s.check_status("k", S, ALIVE)),
        "status_expired" => status_outcome(s.check_status("k", S, EXPIRED)),
        "heart_beat" => outcome(s.heart_beat("k", S, 500)),
        "pess_lock" => outcome(s.pessimistic_lock(&["k"], "k", S, S)),
        "pess_rollback" => outcome(s.pessimistic_rollback(&["k"], S, S)),
        "read" => outcome(s.get("k", u64::MAX - 1)),
        other => panic!("unknown action {other}"),
    }
}

#[test]
fn every_command_against_every_state() {
    use State::*;
    #[rustfmt::skip]
    let table: [(State, [&str; 11]); 7] = [
        //              prewrite    pess_prewrite     commit            rollback     cleanup      status_alive         status_expired        heart_beat       pess_lock   pess_rollback read
        (NoLock,        ["ok",      "pess_not_found", "lock_not_found", "ok",        "ok",        "txn_not_found",     "txn_not_found",      "txn_not_found", "ok",       "ok",         "ok"]),
        (OwnLock,       ["ok",      "ok",             "ok",             "ok",        "locked",    "status:locked",     "status:rolled_back", "ok",            "ok",       "ok",         "locked"]),
        (OtherLock,     ["locked",  "locked",         "lock_not_found", "ok",        "ok",        "txn_not_found",     "txn_not_found",      "txn_not_found", "locked",   "ok",         "locked"]),
        (OwnPessimistic,["ok",      "ok",             "ok",             "ok",        "locked",    "status:locked",     "status:rolled_back", "ok",            "ok",       "ok",         "ok"]),
        (Committed,     ["ok",      "ok",             "ok",             "committed", "committed", "status:committed",  "status:committed",   "txn_not_found", "conflict", "ok",         "ok"]),
        (RolledBack,    ["conflict","pess_not_found", "lock_not_found", "ok",        "ok",        "status:rolled_back","status:rolled_back", "txn_not_found", "conflict", "ok",         "ok"]),
        (NewerCommit,   ["conflict","pess_not_found", "lock_not_found", "ok",        "ok",        "txn_not_found",     "txn_not_found",      "txn_not_found", "conflict", "ok",         "ok"]),
    ];
    let mut wrong = Vec::new();
    for (state, expected) in table {
        for (action, want) in ACTIONS.iter().zip(expected) {
            let got = act(&setup(state), action);
            if got != want {
                wrong.push(format!("{state:?} × {action}: expected {want}, got {got}"));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn a_transaction_commits_its_values_at_its_commit_ts() {
    let s = Store::new();
    let long = "x".repeat(300);
    s.must_prewrite(
        vec![put("a", "1"), put("b", &long), mutation(Op::Del, "c")],
        "a",
        10,
    );
    // Readers below the lock's start_ts are not blocked; above it they are.
    assert_eq!(s.must_get("a", 9), None);
    assert!(matches!(s.get("a", 11), Err(Error::KeyIsLocked { .. })));
    s.commit(&["a", "b", "c"], 10, 20).unwrap();
    assert_eq!(s.must_get("a", 19), None);
    assert_eq!(s.must_get("a", 20).as_deref(), Some("1"));
    assert_eq!(s.must_get("b", 25), Some(long.clone()));
    assert_eq!(s.must_get("c", 25), None);
    // Idempotent.
    s.commit(&["a", "b"], 10, 20).unwrap();
    // A later delete hides the value from later readers only.
    s.must_prewrite(vec![mutation(Op::Del, "a")], "a", 30);
    s.commit(&["a"], 30, 31).unwrap();
    assert_eq!(s.must_get("a", 30).as_deref(), Some("1"));
    assert_eq!(s.must_get("a", 31), None);
    // A Lock record changes nothing.
    s.must_prewrite(vec![mutation(Op::Lock, "b")], "b", 40);
    s.commit(&["b"], 40, 41).unwrap();
    assert_eq!(s.must_get("b", 50), Some(long));
}

#[test]
fn rollback_removes_the_long_value_and_blocks_a_late_prewrite() {
    let s = Store::new();
    let long = "y".repeat(400);
    s.must_prewrite(vec![put("a", &long)], "a", 10);
    s.rollback(&["a"], 10).unwrap();
    assert!(
        s.dump().iter().all(|(cf, _, _)| cf == "write"),
        "only the rollback record stays: {:?}",
        s.dump()
    );
    let late = s.prewrite(vec![put("a", "late")], "a", 10);
    assert!(matches!(late, Err(Error::WriteConflict { .. })), "{late:?}");
    assert!(matches!(
        s.commit(&["a"], 10, 11),
        Err(Error::TxnLockNotFound { .. })
    ));
}

#[test]
fn a_rollback_at_another_transactions_commit_ts_keeps_that_commit() {
    let s = Store::new();
    // Transaction 5 commits "k" at 10; transaction 10 is rolled back on "k": same write key.
    s.must_prewrite(vec![put("k", "v5")], "k", 5);
    s.commit(&["k"], 5, 10).unwrap();
    s.rollback(&["k"], 10).unwrap();
    assert_eq!(s.must_get("k", 11).as_deref(), Some("v5"));
    // Transaction 10 counts as rolled back, transaction 5 as committed.
    assert!(matches!(
        s.check_status("k", 10, u64::MAX),
        Ok(TxnStatus::RolledBack { .. })
    ));
    assert!(matches!(
        s.check_status("k", 5, u64::MAX),
        Ok(TxnStatus::Committed { commit_ts: 10 })
    ));
    let late = s.prewrite(vec![put("k", "v10")], "k", 10);
    assert!(matches!(late, Err(Error::WriteConflict { .. })), "{late:?}");
}

#[test]
fn check_txn_status_pushes_rolls_back_and_reports() {
    let s = Store::new();
    let start = at(1000);
    // A lock without min_commit_ts (tikv-client 0.4's) is not pushed: its client would not
    // retry the commit.
    s.must_prewrite(vec![put("old", "v")], "old", start);
    match s
        .status(CheckTxnStatus {
            primary: b"old".to_vec(),
            lock_ts: start,
            caller_start_ts: at(1020),
            current_ts: at(1030),
            ..Default::default()
        })
        .unwrap()
    {
        TxnStatus::Locked { lock, action, .. } => {
            assert_eq!(action, Action::NoAction);
            assert_eq!(lock.min_commit_ts, 0);
        }
        other => panic!("{other:?}"),
    }
    let r = s
        .prewrite_cmd(&Prewrite {
            mutations: vec![put("p", "v")],
            primary: b"p".to_vec(),
            start_ts: start,
            lock_ttl: 100,
            min_commit_ts: start + 1,
            ..Default::default()
        })
        .unwrap();
    assert!(r.locks.is_empty());
    // A reader at caller_start_ts pushes min_commit_ts above itself, then reads past it.
    let caller = at(1020);
    let status = s
        .status(CheckTxnStatus {
            primary: b"p".to_vec(),
            lock_ts: start,
            caller_start_ts: caller,
            current_ts: at(1030),
            ..Default::default()
        })
        .unwrap();
    match status {
        TxnStatus::Locked { ttl, lock, action } => {
            assert_eq!(ttl, 100);
            assert_eq!(action, Action::MinCommitTsPushed);
            assert!(lock.min_commit_ts > caller);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.must_get("p", caller),
        None,
        "the pushed lock no longer blocks"
    );
    assert!(matches!(
        s.commit(&["p"], start, caller),
        Err(Error::CommitTsExpired { .. })
    ));
    // u64::MAX as current_ts expires any lock.
    assert!(matches!(
        s.check_status("p", start, u64::MAX),
        Ok(TxnStatus::RolledBack {
            action: Action::TtlExpireRollback
        })
    ));
    // No lock and no record: rollback_if_not_exist writes the record.
    let missing = CheckTxnStatus {
        primary: b"q".to_vec(),
        lock_ts: 77,
        current_ts: at(2000),
        rollback_if_not_exist: true,
        ..Default::default()
    };
    assert!(matches!(
        s.status(missing),
        Ok(TxnStatus::RolledBack {
            action: Action::LockNotExistRollback
        })
    ));
    let late = s.prewrite(vec![put("q", "v")], "q", 77);
    assert!(late.is_err(), "{late:?}");
    // Resolving a pessimistic lock: a missing primary is "do nothing" (when the caller
    // allows a rollback at all; otherwise TxnNotFound, as for any missing primary).
    let pessimistic = CheckTxnStatus {
        primary: b"r".to_vec(),
        lock_ts: 88,
        current_ts: at(2000),
        resolving_pessimistic_lock: true,
        ..Default::default()
    };
    assert!(matches!(
        s.status(pessimistic.clone()),
        Err(Error::TxnNotFound { .. })
    ));
    let pessimistic = CheckTxnStatus {
        rollback_if_not_exist: true,
        ..pessimistic
    };
    assert!(matches!(
        s.status(pessimistic),
        Ok(TxnStatus::RolledBack {
            action: Action::LockNotExistDoNothing
        })
    ));
}

#[test]
fn heart_beats_only_grow_the_ttl() {
    let s = Store::new();
    s.must_prewrite(vec![put("p", "v")], "p", 10);
    assert_eq!(s.heart_beat("p", 10, 50).unwrap(), 100);
    assert_eq!(s.heart_beat("p", 10, 900).unwrap(), 900);
    assert_eq!(s.heart_beat("p", 10, 100).unwrap(), 900);
}

#[test]
fn async_commit_picks_min_commit_ts_above_every_read_and_reports_expired_primaries() {
    let s = Store::new();
    s.cm.update_max_ts(at(1500));
    let start = at(1000);
    let cmd = Prewrite {
        mutations: vec![put("p", "1"), put("s", "2")],
        primary: b"p".to_vec(),
        start_ts: start,
        lock_ttl: 100,
        secondaries: Some(keys(&["s"])),
        ..Default::default()
    };
    let r = s.prewrite_cmd(&cmd).unwrap();
    assert_eq!(r.min_commit_ts, at(1500) + 1);
    assert_eq!(r.one_pc_commit_ts, 0);
    // Readers below min_commit_ts read through the lock.
    assert_eq!(s.must_get("s", at(1500)), None);
    assert!(matches!(
        s.get("s", at(1600)),
        Err(Error::KeyIsLocked { .. })
    ));
    // Expired, the primary reports its lock: the secondaries decide.
    match s.check_status("p", start, u64::MAX).unwrap() {
        TxnStatus::Locked { lock, .. } => {
            assert!(lock.use_async_commit);
            assert_eq!(lock.secondaries, keys(&["s"]));
        }
        other => panic!("{other:?}"),
    }
    let check = CheckSecondaryLocks {
        keys: keys(&["s"]),
        start_ts: start,
    };
    match s.run(|rd| check.process(rd)).unwrap() {
        SecondaryLocksStatus::Locked(locks) => assert_eq!(locks.len(), 1),
        other => panic!("{other:?}"),
    }
    s.commit(&["p", "s"], start, r.min_commit_ts).unwrap();
    let check = CheckSecondaryLocks {
        keys: keys(&["s"]),
        start_ts: start,
    };
    assert_eq!(
        s.run(|rd| check.process(rd)).unwrap(),
        SecondaryLocksStatus::Committed(r.min_commit_ts)
    );
    // A secondary never prewritten rolls the transaction back there.
    let check = CheckSecondaryLocks {
        keys: keys(&["never"]),
        start_ts: at(3000),
    };
    assert_eq!(
        s.run(|rd| check.process(rd)).unwrap(),
        SecondaryLocksStatus::RolledBack
    );
    assert!(s.prewrite(vec![put("never", "v")], "p", at(3000)).is_err());
}

#[test]
fn an_in_flight_async_commit_lock_blocks_readers_before_it_is_applied() {
    let s = Store::new();
    let snap = s.snap();
    let cmd = Prewrite {
        mutations: vec![put("p", "1")],
        primary: b"p".to_vec(),
        start_ts: 10,
        lock_ttl: 100,
        secondaries: Some(vec![]),
        ..Default::default()
    };
    let (res, changes) = cmd.process(&txn::MvccReader::new(&snap), &s.cm).unwrap();
    assert_eq!(res.min_commit_ts, 11);
    // Not applied yet: the in-memory lock answers for it.
    assert!(matches!(s.get("p", 20), Err(Error::KeyIsLocked { .. })));
    let (modifies, guards) = changes.into_parts();
    s.apply(modifies);
    drop(guards);
    assert!(matches!(s.get("p", 20), Err(Error::KeyIsLocked { .. })));
    assert_eq!(s.cm.memory_lock_count(), 0);
}

#[test]
fn one_phase_commit_writes_no_lock() {
    let s = Store::new();
    s.cm.update_max_ts(50);
    let cmd = Prewrite {
        mutations: vec![put("a", "1"), put("b", "2")],
        primary: b"a".to_vec(),
        start_ts: 10,
        lock_ttl: 100,
        try_one_pc: true,
        ..Default::default()
    };
    let r = s.prewrite_cmd(&cmd).unwrap();
    assert_eq!(r.one_pc_commit_ts, 51);
    assert!(s.dump().iter().all(|(cf, _, _)| cf == "write"));
    assert_eq!(s.must_get("b", 51).as_deref(), Some("2"));
    assert_eq!(s.must_get("b", 50), None);
}

#[test]
fn insert_and_check_not_exists_see_the_newest_version() {
    let s = Store::new();
    s.must_prewrite(vec![put("a", "1")], "a", 10);
    s.commit(&["a"], 10, 11).unwrap();
    for op in [Op::Insert, Op::CheckNotExists] {
        let r = s.prewrite(vec![mutation(op, "a")], "a", 20);
        assert!(
            matches!(r, Err(Error::AlreadyExist { .. })),
            "{op:?}: {r:?}"
        );
    }
    s.must_prewrite(vec![mutation(Op::CheckNotExists, "b")], "b", 20);
    assert!(
        s.dump().iter().all(|(cf, _, _)| cf != "lock"),
        "CheckNotExists locks nothing"
    );
    s.must_prewrite(vec![mutation(Op::Del, "a")], "a", 30);
    s.commit(&["a"], 30, 31).unwrap();
    s.must_prewrite(vec![put("a", "again")], "a", 40);
}

#[test]
fn pessimistic_locks_conflict_on_for_update_ts_and_return_values() {
    let s = Store::new();
    s.must_prewrite(vec![put("a", "1")], "a", 10);
    s.commit(&["a"], 10, 20).unwrap();
    // for_update_ts below the newest commit: retry with a newer one.
    assert!(matches!(
        s.pessimistic_lock(&["a"], "a", 15, 15),
        Err(Error::WriteConflict { .. })
    ));
    let r = s.pessimistic_lock(&["a", "b"], "a", 15, 25).unwrap();
    assert_eq!(r.values, vec![Some(b"1".to_vec()), None]);
    // Readers are not blocked; other writers are.
    assert_eq!(s.must_get("a", 30).as_deref(), Some("1"));
    assert!(matches!(
        s.pessimistic_lock(&["b"], "b", 26, 26),
        Err(Error::KeyIsLocked { .. })
    ));
    // A failed request writes nothing, even for the keys before the failing one.
    let before = s.dump();
    assert!(s.pessimistic_lock(&["c", "b"], "c", 26, 26).is_err());
    assert_eq!(s.dump(), before);
    // Prewrite converts the lock; the statement-level rollback leaves it alone after that.
    let cmd = Prewrite {
        mutations: vec![put("a", "2")],
        primary: b"a".to_vec(),
        start_ts: 15,
        lock_ttl: 100,
        for_update_ts: 25,
        pessimistic_actions: vec![PessimisticAction::DoPessimisticCheck],
        ..Default::default()
    };
    assert!(s.prewrite_cmd(&cmd).unwrap().locks.is_empty());
    s.pessimistic_rollback(&["a", "b"], 15, 25).unwrap();
    assert!(matches!(s.get("a", 30), Err(Error::KeyIsLocked { .. })));
    assert!(s.get("b", 30).is_ok(), "b's pessimistic lock is gone");
    s.commit(&["a"], 15, 30).unwrap();
    assert_eq!(s.must_get("a", 30).as_deref(), Some("2"));
}

#[test]
fn resolve_lock_settles_each_transaction_by_its_status() {
    let s = Store::new();
    s.must_prewrite(vec![put("a", "1"), put("b", "1")], "a", 10);
    s.must_prewrite(vec![put("c", "2")], "c", 20);
    s.resolve(&["a", "b", "c"], &[(10, 15), (20, 0)]).unwrap();
    assert_eq!(s.must_get("a", 16).as_deref(), Some("1"));
    assert_eq!(s.must_get("b", 16).as_deref(), Some("1"));
    assert_eq!(s.must_get("c", 30), None);
    assert!(s.dump().iter().all(|(cf, _, _)| cf != "lock"));
}

#[test]
fn scans_merge_values_and_locks_in_both_directions() {
    let s = Store::new();
    let ks = ["a", "b", "c", "d", "e"];
    s.must_prewrite(
        ks.iter().map(|k| put(k, &format!("{k}1"))).collect(),
        "a",
        10,
    );
    s.commit(&ks, 10, 11).unwrap();
    s.must_prewrite(vec![put("b", "b2"), mutation(Op::Del, "d")], "b", 20);
    s.commit(&["b", "d"], 20, 21).unwrap();
    s.must_prewrite(vec![put("c", "c3"), put("f", "f3")], "c", 30);
    let ok = |k: &str, v: &str| (k.to_string(), Ok(v.to_string()));
    let locked = |k: &str| (k.to_string(), Err("locked by 30".to_string()));
    assert_eq!(
        s.scan("", "", 10, 25, false),
        vec![ok("a", "a1"), ok("b", "b2"), ok("c", "c1"), ok("e", "e1")]
    );
    assert_eq!(
        s.scan("", "", 10, 15, true),
        vec![
            ok("e", "e1"),
            ok("d", "d1"),
            ok("c", "c1"),
            ok("b", "b1"),
            ok("a", "a1")
        ]
    );
    assert_eq!(
        s.scan("b", "", 3, 35, false),
        vec![ok("b", "b2"), locked("c"), ok("e", "e1")]
    );
    assert_eq!(
        s.scan("f", "b", 3, 35, true),
        vec![ok("e", "e1"), locked("c"), ok("b", "b2")]
    );
    assert_eq!(
        s.scan("", "", 2, 35, true),
        vec![locked("f"), ok("e", "e1")]
    );
}

#[test]
fn a_prewrite_takes_the_first_actions_when_sent_the_whole_transactions() {
    // tikv-client sends every key's action with each region's share of the mutations.
    let s = Store::new();
    s.pessimistic_lock(&["a", "b", "c"], "a", 10, 10).unwrap();
    let share = |muts: Vec<proto::kvrpcpb::Mutation>, actions: usize| Prewrite {
        mutations: muts,
        primary: b"a".to_vec(),
        start_ts: 10,
        lock_ttl: 100,
        for_update_ts: 10,
        pessimistic_actions: vec![PessimisticAction::DoPessimisticCheck; actions],
        ..Default::default()
    };
    let r = s.prewrite_cmd(&share(vec![put("b", "2")], 3)).unwrap();
    assert!(r.locks.is_empty());
    // Fewer actions than mutations would leave a key unchecked.
    assert!(matches!(
        s.prewrite_cmd(&share(vec![put("a", "1"), put("c", "3")], 1)),
        Err(Error::Invalid(_))
    ));
    // The check still runs: a key this transaction never locked is refused.
    assert!(matches!(
        s.prewrite_cmd(&share(vec![put("d", "4")], 3)),
        Err(Error::PessimisticLockNotFound { .. })
    ));
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let s = Store::new();
    s.must_prewrite(vec![put("a", "1")], "a", 10);
    assert!(matches!(s.commit(&["a"], 10, 10), Err(Error::Invalid(_))));
    assert!(matches!(s.commit(&["a"], 10, 9), Err(Error::Invalid(_))));
    assert!(matches!(
        s.prewrite(vec![put("x", "1"), put("x", "2")], "x", 20),
        Err(Error::Invalid(_))
    ));
    let bad_op = proto::kvrpcpb::Mutation {
        op: 99,
        key: b"x".to_vec(),
        ..Default::default()
    };
    assert!(matches!(
        s.prewrite(vec![bad_op], "x", 20),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        s.prewrite(vec![mutation(Op::Rollback, "x")], "x", 20),
        Err(Error::Invalid(_))
    ));
    // Unknown transactions.
    assert!(matches!(
        s.check_status("zz", 5, 6),
        Err(Error::TxnNotFound { .. })
    ));
    assert!(matches!(
        s.heart_beat("zz", 5, 6),
        Err(Error::TxnNotFound { .. })
    ));
}

#[test]
fn gc_keeps_what_readers_at_or_above_the_safe_point_see() {
    let s = Store::new();
    let long = "L".repeat(300);
    // "a": put 10, put(long) 20, delete 30, put 40. "b": put 10, lock 15, rollback 25.
    // "c": put 10, delete 20.
    let steps: [(&str, Op, u64, u64); 8] = [
        ("a", Op::Put, 9, 10),
        ("a", Op::Put, 19, 20),
        ("a", Op::Del, 29, 30),
        ("a", Op::Put, 39, 40),
        ("b", Op::Put, 9, 10),
        ("b", Op::Lock, 14, 15),
        ("c", Op::Put, 8, 10),
        ("c", Op::Del, 18, 20),
    ];
    for (k, op, start, commit) in steps {
        let m = match op {
            Op::Put if start == 19 => put(k, &long),
            Op::Put => put(k, &format!("{k}{commit}")),
            other => mutation(other, k),
        };
        s.must_prewrite(vec![m], k, start);
        s.commit(&[k], start, commit).unwrap();
    }
    s.rollback(&["b"], 25).unwrap();
    let reads = |s: &Store| -> Vec<Option<String>> {
        let mut out = Vec::new();
        for ts in [25, 35, 45] {
            for k in ["a", "b", "c"] {
                out.push(s.must_get(k, ts));
            }
        }
        out
    };
    let before = reads(&s);
    let safe_point = 25;
    let mut start = Vec::new();
    loop {
        let (progress, changes) = txn::gc::gc(
            &txn::MvccReader::new(&s.snap()),
            (&start, &[]),
            safe_point,
            2,
        )
        .unwrap();
        s.apply(changes.into_parts().0);
        match progress.next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(
        reads(&s),
        before,
        "reads at or above the safe point are unchanged"
    );
    // What is left: a@40, a@30 (above), a@20 (newest at or below, with its long value);
    // b@10 only; nothing of c.
    let writes: Vec<_> = s
        .dump()
        .into_iter()
        .filter(|(cf, _, _)| cf == "write")
        .collect();
    assert_eq!(writes.len(), 4, "{writes:?}");
    let defaults = s
        .dump()
        .into_iter()
        .filter(|(cf, _, _)| cf == "default")
        .count();
    assert_eq!(defaults, 1, "the kept long value stays");
    assert_eq!(s.must_get("a", 25), Some(long));
}

#[test]
fn an_expired_pessimistic_primary_met_through_a_prewrite_lock_leaves_a_rollback_record() {
    let s = Store::new();
    let start = at(1000);
    s.pessimistic_lock(&["p"], "p", start, start).unwrap();
    match s.check_status("p", start, at(5000)).unwrap() {
        TxnStatus::RolledBack { action } => assert_eq!(action, Action::TtlExpireRollback),
        other => panic!("{other:?}"),
    }
    // A stale duplicate of the pessimistic lock request cannot take the key again.
    assert!(matches!(
        s.pessimistic_lock(&["p"], "p", start, start),
        Err(Error::WriteConflict { .. })
    ));
}

#[test]
fn a_commit_at_another_transactions_start_ts_keeps_its_rollback() {
    let s = Store::new();
    // Transaction 20 is rolled back on "k" (rollback record at k@20).
    s.rollback(&["k"], 20).unwrap();
    // An async-commit transaction commits "k" at exactly 20.
    s.cm.update_max_ts(19);
    let r = s
        .prewrite_cmd(&Prewrite {
            mutations: vec![put("k", "v")],
            primary: b"k".to_vec(),
            start_ts: 10,
            lock_ttl: 100,
            secondaries: Some(vec![]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.min_commit_ts, 20);
    s.commit(&["k"], 10, 20).unwrap();
    assert_eq!(s.must_get("k", 20).as_deref(), Some("v"));
    // Transaction 20 is still rolled back there: its late prewrite fails.
    assert!(matches!(
        s.check_status("k", 20, u64::MAX),
        Ok(TxnStatus::RolledBack { .. })
    ));
    assert!(s.prewrite(vec![put("k", "late")], "k", 20).is_err());
}

#[test]
fn async_commit_over_max_commit_ts_falls_back_to_two_phase_commit() {
    let s = Store::new();
    s.cm.update_max_ts(100);
    let r = s
        .prewrite_cmd(&Prewrite {
            mutations: vec![put("a", "1")],
            primary: b"a".to_vec(),
            start_ts: 10,
            lock_ttl: 100,
            secondaries: Some(vec![]),
            max_commit_ts: 50,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.min_commit_ts, r.one_pc_commit_ts), (0, 0));
    assert_eq!(s.cm.memory_lock_count(), 0);
    match s.check_status("a", 10, 11).unwrap() {
        TxnStatus::Locked { lock, .. } => assert!(!lock.use_async_commit),
        other => panic!("{other:?}"),
    }
    s.commit(&["a"], 10, 200).unwrap();
}

#[test]
fn resolve_lock_refuses_a_commit_ts_at_or_below_start_ts() {
    let s = Store::new();
    s.must_prewrite(vec![put("a", "1")], "a", 10);
    assert!(matches!(
        s.resolve(&["a"], &[(10, 10)]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        s.resolve(&["a"], &[(10, 5)]),
        Err(Error::Invalid(_))
    ));
}
