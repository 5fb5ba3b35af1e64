//! Random interleavings of a few transactions (read-modify-write of counters) and readers
//! keep snapshot isolation: every read sees exactly the versions committed at or below its
//! timestamp, the first committer wins, and no update is lost.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use txn::Error;

const KEYS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Phase {
    Begin,
    Read,
    Prewrite,
    CommitPrimary,
    CommitSecondaries,
    Done,
}

#[derive(Debug)]
struct Txn {
    keys: Vec<&'static str>,
    phase: Phase,
    start_ts: u64,
    commit_ts: u64,
    read: BTreeMap<&'static str, u64>,
}

/// The committed history: key → [(commit_ts, value)], what every read is checked against.
#[derive(Default)]
struct Model {
    versions: BTreeMap<&'static str, Vec<(u64, u64)>>,
    /// (start_ts, commit_ts, keys) of committed transactions.
    committed: Vec<(u64, u64, Vec<&'static str>)>,
}

impl Model {
    fn at(&self, key: &str, ts: u64) -> u64 {
        self.versions
            .get(key)
            .and_then(|v| {
                v.iter()
                    .filter(|(c, _)| *c <= ts)
                    .map(|(_, v)| *v)
                    .next_back()
            })
            .unwrap_or(0)
    }
}

fn value(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |b| String::from_utf8(b).unwrap().parse().unwrap())
}

fn run(schedule: &[(usize, bool)], key_sets: &[Vec<usize>]) {
    let store = Store::new();
    let mut clock = 1u64;
    let mut next_ts = || {
        clock += 1;
        clock
    };
    let mut model = Model::default();
    let mut txns: Vec<Txn> = key_sets
        .iter()
        .map(|ks| Txn {
            keys: ks.iter().map(|&i| KEYS[i]).collect(),
            phase: Phase::Begin,
            start_ts: 0,
            commit_ts: 0,
            read: BTreeMap::new(),
        })
        .collect();
    for &(who, reader) in schedule {
        if reader {
            // A snapshot reader: every key at one ts, or nothing if a lock is in the way.
            let ts = next_ts();
            let mut seen = Vec::new();
            for k in KEYS {
                match store.get(k, ts) {
                    Ok(v) => seen.push((k, value(v))),
                    Err(Error::KeyIsLocked { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            for (k, v) in seen {
                assert_eq!(v, model.at(k, ts), "reader at {ts} sees {k}");
            }
            continue;
        }
        let t = &mut txns[who % key_sets.len()];
        let primary = t.keys[0];
        match t.phase {
            Phase::Begin => {
                t.start_ts = next_ts();
                t.phase = Phase::Read;
            }
            Phase::Read => {
                let mut ok = true;
                for &k in &t.keys {
                    match store.get(k, t.start_ts) {
                        Ok(v) => {
                            let v = value(v);
                            assert_eq!(v, model.at(k, t.start_ts), "txn {} reads {k}", t.start_ts);
                            t.read.insert(k, v);
                        }
                        Err(Error::KeyIsLocked { .. }) => ok = false,
                        Err(e) => panic!("{e}"),
                    }
                }
                t.phase = if ok { Phase::Prewrite } else { Phase::Done };
            }
            Phase::Prewrite => {
                let muts = t
                    .keys
                    .iter()
                    .map(|k| put(k, &(t.read[k] + 1).to_string()))
                    .collect();
                match store.prewrite(muts, primary, t.start_ts) {
                    Ok(r) if r.locks.is_empty() => t.phase = Phase::CommitPrimary,
                    Ok(_) | Err(Error::WriteConflict { .. }) => {
                        store.rollback(&t.keys, t.start_ts).unwrap();
                        t.phase = Phase::Done;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Phase::CommitPrimary => {
                t.commit_ts = next_ts();
                store.commit(&[primary], t.start_ts, t.commit_ts).unwrap();
                for &k in &t.keys {
                    model
                        .versions
                        .entry(k)
                        .or_default()
                        .push((t.commit_ts, t.read[k] + 1));
                }
                model
                    .committed
                    .push((t.start_ts, t.commit_ts, t.keys.clone()));
                t.phase = Phase::CommitSecondaries;
            }
            Phase::CommitSecondaries => {
                store.commit(&t.keys[1..], t.start_ts, t.commit_ts).unwrap();
                t.phase = Phase::Done;
            }
            Phase::Done => {}
        }
    }
    // First committer wins: overlapping committed transactions write disjoint keys.
    for (i, (s1, c1, k1)) in model.committed.iter().enumerate() {
        for (s2, c2, k2) in &model.committed[i + 1..] {
            let overlap = s1 < c2 && s2 < c1;
            assert!(
                !overlap || k1.iter().all(|k| !k2.contains(k)),
                "concurrent transactions {s1} and {s2} both committed a shared key"
            );
        }
    }
    // Settle the stragglers as their clients would: prewritten ones roll back, half-committed
    // ones finish.
    for t in &txns {
        match t.phase {
            Phase::CommitPrimary => store.rollback(&t.keys, t.start_ts).unwrap(),
            Phase::CommitSecondaries => {
                store.commit(&t.keys[1..], t.start_ts, t.commit_ts).unwrap()
            }
            _ => {}
        }
    }
    // No lost update: each counter counts the transactions that committed it.
    for k in KEYS {
        let writers = model
            .committed
            .iter()
            .filter(|(_, _, ks)| ks.contains(&k))
            .count();
        assert_eq!(
            value(store.get(k, u64::MAX - 1).unwrap()),
            writers as u64,
            "{k}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn interleavings_keep_snapshot_isolation(
        schedule in proptest::collection::vec((0usize..4, proptest::bool::weighted(0.2)), 10..60),
        key_sets in proptest::collection::vec(
            proptest::sample::subsequence(vec![0usize, 1, 2], 1..=3), 2..=4),
    ) {
        run(&schedule, &key_sets);
    }
}
