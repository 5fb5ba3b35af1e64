//! CheckSecondaryLocks: the status of an async-commit transaction, decided by its
//! secondaries. If any secondary is neither locked nor committed, it is rolled back there
//! (so it can never be prewritten later) and the transaction counts as rolled back.

use proto::kvrpcpb::LockInfo;

use super::actions::{remove_lock, write_rollback_record};
use crate::reader::CommitRecord;
use crate::snapshot::Snapshot;
use crate::{key, LockType, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct CheckSecondaryLocks {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SecondaryLocksStatus {
    /// Every key still holds the transaction's lock.
    Locked(Vec<LockInfo>),
    /// Some key committed at this ts.
    Committed(u64),
    RolledBack,
}

impl CheckSecondaryLocks {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        super::latch_keys(&self.keys)
    }

    pub fn process<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
    ) -> Result<(SecondaryLocksStatus, MvccTxn)> {
        super::check_distinct(&self.keys)?;
        let mut txn = MvccTxn::new();
        let mut locks = Vec::new();
        for raw in &self.keys {
            let ek = key::encode(raw);
            match reader
                .load_lock(&ek)?
                .filter(|l| l.start_ts == self.start_ts)
            {
                Some(lock) if lock.lock_type != LockType::Pessimistic => {
                    locks.push(lock.to_lock_info(raw));
                }
                own_pessimistic => {
                    if let Some(lock) = own_pessimistic {
                        remove_lock(&mut txn, &ek, &lock);
                    }
                    match reader.commit_record(&ek, self.start_ts)? {
                        CommitRecord::Committed { commit_ts, .. } => {
                            return Ok((SecondaryLocksStatus::Committed(commit_ts), MvccTxn::new()))
                        }
                        CommitRecord::RolledBack => {}
                        CommitRecord::None { .. } => {
                            write_rollback_record(&mut txn, reader, &ek, raw, self.start_ts)?
                        }
                    }
                    // Rolled back on this key: the whole transaction is. Keep the rollback
                    // records written so far; the other keys' locks are the resolver's.
                    return Ok((SecondaryLocksStatus::RolledBack, txn));
                }
            }
        }
        Ok((SecondaryLocksStatus::Locked(locks), txn))
    }
}
