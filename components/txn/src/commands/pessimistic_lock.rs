//! PessimisticLock: a pessimistic transaction locks keys as it reads them for update, and
//! fails at once on a newer committed version (the client retries with a newer
//! `for_update_ts`). Any failure writes nothing.

use proto::kvrpcpb::Mutation;

use crate::reader::CommitRecord;
use crate::snapshot::Snapshot;
use crate::{key, Error, Lock, LockType, MvccReader, MvccTxn, Result, WriteConflictReason};

#[derive(Clone, Debug, Default)]
pub struct PessimisticLock {
    /// Raw keys (op PessimisticLock).
    pub mutations: Vec<Mutation>,
    pub primary: Vec<u8>,
    pub start_ts: u64,
    pub lock_ttl: u64,
    pub for_update_ts: u64,
    pub min_commit_ts: u64,
    pub return_values: bool,
    pub check_existence: bool,
    pub lock_only_if_exists: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PessimisticLockResult {
    /// Per key, when values or existence were asked for: the newest value.
    pub values: Vec<Option<Vec<u8>>>,
}

impl PessimisticLock {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        self.mutations.iter().map(|m| key::encode(&m.key)).collect()
    }

    pub fn process<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
    ) -> Result<(PessimisticLockResult, MvccTxn)> {
        if self.start_ts == 0 || self.for_update_ts < self.start_ts {
            return Err(Error::Invalid(format!(
                "pessimistic lock with start_ts {} and for_update_ts {}",
                self.start_ts, self.for_update_ts
            )));
        }
        if self.lock_only_if_exists && !self.return_values {
            return Err(Error::Invalid(
                "lock_only_if_exists needs return_values".into(),
            ));
        }
        super::check_distinct(self.mutations.iter().map(|m| &m.key))?;
        let want_value = self.return_values || self.check_existence;
        let mut txn = MvccTxn::new();
        let mut result = PessimisticLockResult::default();
        for m in &self.mutations {
            let ek = key::encode(&m.key);
            let value = if want_value {
                reader.get(&ek, u64::MAX)?
            } else {
                None
            };
            match reader.load_lock(&ek)? {
                Some(lock) if lock.start_ts != self.start_ts => {
                    return Err(lock.locked_error(&m.key));
                }
                Some(mut lock) => {
                    // Held already (a retry), or prewritten: raise its for_update_ts.
                    if lock.lock_type == LockType::Pessimistic
                        && lock.for_update_ts < self.for_update_ts
                    {
                        lock.for_update_ts = self.for_update_ts;
                        txn.put_lock(&ek, &lock);
                    }
                }
                None => {
                    self.check_conflict(reader, &ek, &m.key)?;
                    if !(self.lock_only_if_exists && value.is_none()) {
                        let mut lock = Lock::new(
                            LockType::Pessimistic,
                            self.primary.clone(),
                            self.start_ts,
                            self.lock_ttl,
                        );
                        lock.for_update_ts = self.for_update_ts;
                        lock.min_commit_ts = self.min_commit_ts;
                        txn.put_lock(&ek, &lock);
                    }
                }
            }
            if want_value {
                result.values.push(value);
            }
        }
        Ok((result, txn))
    }

    fn check_conflict<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
        ek: &[u8],
        raw: &[u8],
    ) -> Result<()> {
        match reader.commit_record(ek, self.start_ts)? {
            CommitRecord::Committed { .. } | CommitRecord::RolledBack => {
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
        if let Some((commit_ts, write)) = reader.commit_above(ek, self.for_update_ts)? {
            {
                return Err(Error::WriteConflict {
                    start_ts: self.start_ts,
                    conflict_start_ts: write.start_ts,
                    conflict_commit_ts: commit_ts,
                    key: raw.to_vec(),
                    primary: self.primary.clone(),
                    reason: WriteConflictReason::PessimisticRetry,
                });
            }
        }
        Ok(())
    }
}
