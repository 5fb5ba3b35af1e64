//! A store for the commands' tests: an in-memory engine, a concurrency manager, and helpers
//! that run one command the way the storage layer does (one snapshot, apply on success).

#![allow(dead_code)]

use engine::{KvEngine, MemEngine, MemSnapshot, Peekable, WriteBatch};
use proto::kvrpcpb::{Mutation, Op};
use txn::commands::read::{self, ReadOptions};
use txn::commands::*;
use txn::snapshot::ScanVisitor;
use txn::{ts, ConcurrencyManager, Error, Modify, MvccReader, MvccTxn, Result};

pub struct Snap(MemSnapshot);

impl txn::Snapshot for Snap {
    fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get_value_cf(cf, key).map_err(Error::snapshot)
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanVisitor<'_>,
    ) -> Result<()> {
        txn::snapshot::scan_forwarding_errors(f, |visit| {
            self.0.scan_cf(cf, start, end, reverse, visit)
        })
    }
}

/// Physical milliseconds of the tests' clock: timestamps are `ts::from_physical(ms) + n`.
pub fn at(ms: u64) -> u64 {
    ts::from_physical(ms)
}

pub fn put(k: &str, v: &str) -> Mutation {
    Mutation {
        op: Op::Put as i32,
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn mutation(op: Op, k: &str) -> Mutation {
    Mutation {
        op: op as i32,
        key: k.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn keys(ks: &[&str]) -> Vec<Vec<u8>> {
    ks.iter().map(|k| k.as_bytes().to_vec()).collect()
}

#[derive(Default)]
pub struct Store {
    pub engine: MemEngine,
    pub cm: ConcurrencyManager,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn snap(&self) -> Snap {
        Snap(self.engine.snapshot())
    }

    /// Every pair of the data CFs: what "nothing was written" compares.
    pub fn dump(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let snap = self.engine.snapshot();
        let mut out = Vec::new();
        for cf in ["default", "lock", "write"] {
            snap.scan_cf(cf, b"", b"", false, &mut |k, v| {
                out.push((cf.to_string(), k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .unwrap();
        }
        out
    }

    pub fn apply(&self, modifies: Vec<Modify>) {
        let mut wb = self.engine.write_batch();
        for m in modifies {
            match m {
                Modify::Put { cf, key, value } => wb.put_cf(cf, &key, &value).unwrap(),
                Modify::Delete { cf, key } => wb.delete_cf(cf, &key).unwrap(),
            }
        }
        self.engine.write(&mut wb, false).unwrap();
    }

    /// Runs a command on a fresh snapshot and applies its changes if it succeeds. A failure
    /// must come with no changes (checked: the engine is compared before and after).
    pub fn run<T>(
        &self,
        f: impl FnOnce(&MvccReader<'_, Snap>) -> Result<(T, MvccTxn)>,
    ) -> Result<T> {
        let before = self.dump();
        let snap = self.snap();
        match f(&MvccReader::new(&snap)) {
            Ok((out, txn)) => {
                let (modifies, _guards) = txn.into_parts();
                self.apply(modifies);
                Ok(out)
            }
            Err(e) => {
                assert_eq!(self.dump(), before, "a failed command wrote something");
                Err(e)
            }
        }
    }

    pub fn prewrite_cmd(&self, cmd: &Prewrite) -> Result<PrewriteResult> {
        let cm = self.cm.clone();
        self.run(|r| {
            let (res, txn) = cmd.process(r, &cm)?;
            if !res.locks.is_empty() {
                assert!(
                    txn.is_empty(),
                    "a prewrite that met locks must write nothing"
                );
            }
            Ok((res, txn))
        })
    }

    pub fn prewrite(
        &self,
        muts: Vec<Mutation>,
        primary: &str,
        start_ts: u64,
    ) -> Result<PrewriteResult> {
        self.prewrite_cmd(&Prewrite {
            mutations: muts,
            primary: primary.as_bytes().to_vec(),
            start_ts,
            lock_ttl: 100,
            ..Default::default()
        })
    }

    /// Prewrite that fails on a lock, as a client sees it.
    pub fn must_prewrite(&self, muts: Vec<Mutation>, primary: &str, start_ts: u64) {
        let r = self.prewrite(muts, primary, start_ts).expect("prewrite");
        assert!(r.locks.is_empty(), "prewrite met locks: {:?}", r.locks);
    }

    pub fn commit(&self, ks: &[&str], start_ts: u64, commit_ts: u64) -> Result<()> {
        let cmd = Commit {
            keys: keys(ks),
            start_ts,
            commit_ts,
        };
        self.run(|r| Ok(((), cmd.process(r)?)))
    }

    pub fn rollback(&self, ks: &[&str], start_ts: u64) -> Result<()> {
        let cmd = BatchRollback {
            keys: keys(ks),
            start_ts,
        };
        self.run(|r| Ok(((), cmd.process(r)?)))
    }

    pub fn cleanup(&self, k: &str, start_ts: u64, current_ts: u64) -> Result<()> {
        let cmd = Cleanup {
            key: k.as_bytes().to_vec(),
            start_ts,
            current_ts,
        };
        self.run(|r| Ok(((), cmd.process(r)?)))
    }

    pub fn status(&self, cmd: CheckTxnStatus) -> Result<TxnStatus> {
        let cm = self.cm.clone();
        self.run(|r| cmd.process(r, &cm))
    }

    pub fn check_status(&self, primary: &str, lock_ts: u64, current_ts: u64) -> Result<TxnStatus> {
        self.status(CheckTxnStatus {
            primary: primary.as_bytes().to_vec(),
            lock_ts,
            current_ts,
            ..Default::default()
        })
    }

    pub fn heart_beat(&self, primary: &str, start_ts: u64, ttl: u64) -> Result<u64> {
        let cmd = TxnHeartBeat {
            primary: primary.as_bytes().to_vec(),
            start_ts,
            advise_lock_ttl: ttl,
        };
        self.run(|r| cmd.process(r))
    }

    pub fn pessimistic_lock(
        &self,
        ks: &[&str],
        primary: &str,
        start_ts: u64,
        for_update_ts: u64,
    ) -> Result<PessimisticLockResult> {
        let cmd = PessimisticLock {
            mutations: ks
                .iter()
                .map(|k| mutation(Op::PessimisticLock, k))
                .collect(),
            primary: primary.as_bytes().to_vec(),
            start_ts,
            lock_ttl: 100,
            for_update_ts,
            return_values: true,
            ..Default::default()
        };
        self.run(|r| cmd.process(r))
    }

    pub fn pessimistic_rollback(
        &self,
        ks: &[&str],
        start_ts: u64,
        for_update_ts: u64,
    ) -> Result<()> {
        let cmd = PessimisticRollback {
            keys: keys(ks),
            start_ts,
            for_update_ts,
        };
        self.run(|r| Ok(((), cmd.process(r)?)))
    }

    pub fn resolve(&self, ks: &[&str], txn_status: &[(u64, u64)]) -> Result<()> {
        let cmd = ResolveLock {
            txn_status: txn_status.iter().copied().collect(),
            keys: keys(ks),
        };
        self.run(|r| Ok(((), cmd.process(r)?)))
    }

    pub fn get(&self, k: &str, ts: u64) -> Result<Option<Vec<u8>>> {
        let opts = ReadOptions {
            ts,
            bypass_locks: vec![],
        };
        read::check_memory_lock(&self.cm, &txn::key::encode(k.as_bytes()), &opts)?;
        read::get(&MvccReader::new(&self.snap()), k.as_bytes(), &opts)
    }

    pub fn must_get(&self, k: &str, ts: u64) -> Option<String> {
        self.get(k, ts)
            .expect("read")
            .map(|v| String::from_utf8(v).unwrap())
    }

    pub fn scan(
        &self,
        start: &str,
        end: &str,
        limit: usize,
        ts: u64,
        reverse: bool,
    ) -> Vec<(String, std::result::Result<String, String>)> {
        let enc = |k: &str| {
            if k.is_empty() {
                Vec::new()
            } else {
                txn::key::encode(k.as_bytes())
            }
        };
        let (lo, hi) = if reverse {
            (enc(end), enc(start))
        } else {
            (enc(start), enc(end))
        };
        let opts = ReadOptions {
            ts,
            bypass_locks: vec![],
        };
        read::scan(
            &MvccReader::new(&self.snap()),
            (&lo, &hi),
            limit,
            false,
            reverse,
            &opts,
        )
        .expect("scan")
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).unwrap(),
                v.map(|v| String::from_utf8(v).unwrap())
                    .map_err(|e| match e {
                        Error::KeyIsLocked { lock } => format!("locked by {}", lock.lock_version),
                        other => other.to_string(),
                    }),
            )
        })
        .collect()
    }
}
