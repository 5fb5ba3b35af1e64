//! Prewrite: the first phase of two-phase commit. Locks every key of the transaction in this
//! region (or, with one-phase commit, commits them at once), after checking that nothing
//! committed after `start_ts` (optimistic) or that the pessimistic locks are still held.

use proto::kvrpcpb::{Mutation, Op};

use super::actions::{put_commit_record, write_for};
use crate::concurrency::ConcurrencyManager;
use crate::reader::CommitRecord;
use crate::snapshot::Snapshot;
use crate::{
    key, Error, Lock, LockType, MvccReader, MvccTxn, Result, ShortValue, WriteConflictReason,
};

/// What a pessimistic transaction's prewrite expects of each key (kvproto's
/// `PrewriteRequest.PessimisticAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PessimisticAction {
    /// Not locked pessimistically: checked as an optimistic key.
    SkipPessimisticCheck,
    /// Must hold this transaction's pessimistic lock.
    DoPessimisticCheck,
    /// Not locked, but checked for conflicts (lazy uniqueness checks).
    DoConstraintCheck,
}

#[derive(Clone, Debug, Default)]
pub struct Prewrite {
    /// Raw keys, as the client sends them.
    pub mutations: Vec<Mutation>,
    pub primary: Vec<u8>,
    pub start_ts: u64,
    /// Milliseconds.
    pub lock_ttl: u64,
    pub txn_size: u64,
    /// Non-zero for a pessimistic transaction.
    pub for_update_ts: u64,
    /// Empty (optimistic), or one per mutation.
    pub pessimistic_actions: Vec<PessimisticAction>,
    pub min_commit_ts: u64,
    /// 0: no limit.
    pub max_commit_ts: u64,
    /// `Some`: async commit; the primary's lock lists these secondaries.
    pub secondaries: Option<Vec<Vec<u8>>>,
    pub try_one_pc: bool,
    pub skip_constraint_check: bool,
}

#[derive(Debug, Default)]
pub struct PrewriteResult {
    /// Locks of other transactions met; when there are any, nothing is written.
    pub locks: Vec<Error>,
    /// Async commit: the smallest commit ts the transaction may use.
    pub min_commit_ts: u64,
    /// One-phase commit: the ts the keys committed at (0: not committed in one phase).
    pub one_pc_commit_ts: u64,
}

impl Prewrite {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        self.mutations.iter().map(|m| key::encode(&m.key)).collect()
    }

    fn check(&self) -> Result<()> {
        if self.start_ts == 0 {
            return Err(Error::Invalid("prewrite with start_ts 0".into()));
        }
        if self.primary.is_empty() {
            return Err(Error::Invalid("prewrite without a primary key".into()));
        }
        // tikv-client (Rust) sends the actions of the whole transaction with every region's
        // share of the mutations; TiKV pairs them up by position and ignores the rest, so do
        // the same. Fewer actions than mutations would leave some keys unchecked: refuse.
        if !self.pessimistic_actions.is_empty()
            && self.pessimistic_actions.len() < self.mutations.len()
        {
            return Err(Error::Invalid(format!(
                "{} pessimistic actions for {} mutations: send at least one per mutation, or none",
                self.pessimistic_actions.len(),
                self.mutations.len()
            )));
        }
        super::check_distinct(self.mutations.iter().map(|m| &m.key))
    }

    fn is_async(&self) -> bool {
        self.secondaries.is_some()
    }

    pub fn process<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
        cm: &ConcurrencyManager,
    ) -> Result<(PrewriteResult, MvccTxn)> {
        match self.process_once(reader, cm) {
            // The commit ts async commit or 1PC would pick is over the client's limit: fall
            // back to plain two-phase commit (min_commit_ts and one_pc_commit_ts 0 say so).
            Err(Error::CommitTsTooLarge { .. }) => {
                let plain = Prewrite {
                    secondaries: None,
                    try_one_pc: false,
                    ..self.clone()
                };
                plain.process_once(reader, cm)
            }
            other => other,
        }
    }

    fn process_once<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
        cm: &ConcurrencyManager,
    ) -> Result<(PrewriteResult, MvccTxn)> {
        self.check()?;
        let mut txn = MvccTxn::new();
        let mut result = PrewriteResult::default();
        // One-phase commit: the locks that would have been written, committed below instead.
        let mut one_pc = Vec::new();
        for (i, m) in self.mutations.iter().enumerate() {
            let op = Op::try_from(m.op)
                .map_err(|_| Error::Invalid(format!("unknown mutation op {}", m.op)))?;
            let lock_type = match op {
                Op::Put | Op::Insert => LockType::Put,
                Op::Del => LockType::Delete,
                Op::Lock => LockType::Lock,
                Op::CheckNotExists => LockType::Lock,
                Op::Rollback | Op::PessimisticLock => {
                    return Err(Error::Invalid(format!(
                        "mutation op {op:?} does not belong in a prewrite"
                    )))
                }
            };
            let action = self
                .pessimistic_actions
                .get(i)
                .copied()
                .unwrap_or(PessimisticAction::SkipPessimisticCheck);
            let ek = key::encode(&m.key);
            let mut pessimistic_locked = false;
            match reader.load_lock(&ek)? {
                Some(lock) if lock.start_ts != self.start_ts => {
                    result.locks.push(lock.locked_error(&m.key));
                    continue;
                }
                Some(lock) if lock.lock_type == LockType::Pessimistic => pessimistic_locked = true,
                Some(lock) => {
                    // Prewritten already: a retry.
                    result.min_commit_ts = result.min_commit_ts.max(lock.min_commit_ts);
                    continue;
                }
                None if action == PessimisticAction::DoPessimisticCheck => {
                    match reader.commit_record(&ek, self.start_ts)? {
                        CommitRecord::Committed { .. } => continue,
                        _ => {
                            return Err(Error::PessimisticLockNotFound {
                                start_ts: self.start_ts,
                                key: m.key.clone(),
                            })
                        }
                    }
                }
                None => {
                    if self.check_for_newer_version(reader, &ek, &m.key)? {
                        // This transaction committed the key already: a late retry.
                        continue;
                    }
                }
            }
            if matches!(op, Op::Insert | Op::CheckNotExists)
                && (!self.skip_constraint_check || op == Op::CheckNotExists)
                && reader.exists(&ek)?.is_some()
            {
                return Err(Error::AlreadyExist { key: m.key.clone() });
            }
            if op == Op::CheckNotExists {
                continue;
            }
            let mut lock = Lock::new(
                lock_type,
                self.primary.clone(),
                self.start_ts,
                self.lock_ttl,
            );
            lock.for_update_ts = self.for_update_ts;
            lock.txn_size = self.txn_size;
            lock.min_commit_ts = self.min_commit_ts;
            if lock_type == LockType::Put {
                match ShortValue::new(m.value.clone()) {
                    Some(short) => lock.short_value = Some(short),
                    None => txn.put_value(&ek, self.start_ts, m.value.clone()),
                }
            }
            if self.is_async() {
                lock.use_async_commit = true;
                if m.key == self.primary {
                    lock.secondaries = self.secondaries.clone().unwrap_or_default();
                }
            }
            if self.is_async() || self.try_one_pc {
                // Publish first, then read max_ts (see the concurrency module).
                let guard = cm.lock_key(&ek, &m.key, lock.clone());
                let min_commit_ts = (cm.max_ts().max(self.start_ts).max(self.for_update_ts) + 1)
                    .max(self.min_commit_ts);
                if self.max_commit_ts != 0 && min_commit_ts > self.max_commit_ts {
                    return Err(Error::CommitTsTooLarge {
                        commit_ts: min_commit_ts,
                        max_commit_ts: self.max_commit_ts,
                    });
                }
                lock.min_commit_ts = min_commit_ts;
                guard.update(lock.clone());
                txn.hold_memory_lock(guard);
                result.min_commit_ts = result.min_commit_ts.max(min_commit_ts);
            }
            if self.try_one_pc {
                one_pc.push((ek, lock, pessimistic_locked));
            } else {
                txn.put_lock(&ek, &lock);
            }
        }
        if !result.locks.is_empty() {
            return Ok((result, MvccTxn::new()));
        }
        if self.try_one_pc {
            let commit_ts = result.min_commit_ts;
            for (ek, lock, pessimistic_locked) in one_pc {
                put_commit_record(&mut txn, reader, &ek, commit_ts, write_for(&lock))?;
                if pessimistic_locked {
                    txn.unlock_key(&ek);
                }
            }
            result.one_pc_commit_ts = commit_ts;
        }
        Ok((result, txn))
    }

    /// Optimistic conflict check: fails if another transaction committed the key after
    /// `start_ts`, or if this transaction was rolled back on it. `Ok(true)`: this
    /// transaction already committed the key.
    fn check_for_newer_version<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
        ek: &[u8],
        raw: &[u8],
    ) -> Result<bool> {
        match reader.commit_record(ek, self.start_ts)? {
            CommitRecord::Committed { .. } => return Ok(true),
            CommitRecord::RolledBack => {
                return Err(Error::WriteConflict {
                    start_ts: self.start_ts,
                    conflict_start_ts: self.start_ts,
                    conflict_commit_ts: 0,
                    key: raw.to_vec(),
                    primary: self.primary.clone(),
                    reason: WriteConflictReason::SelfRolledBack,
                })
            }
            CommitRecord::None { .. } => {}
        }
        let conflict = reader
            .commit_above(ek, self.start_ts)?
            .map(|(commit_ts, write)| (commit_ts, write.start_ts));
        match conflict {
            Some((conflict_commit_ts, conflict_start_ts)) => Err(Error::WriteConflict {
                start_ts: self.start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key: raw.to_vec(),
                primary: self.primary.clone(),
                reason: WriteConflictReason::Optimistic,
            }),
            None => Ok(false),
        }
    }
}
