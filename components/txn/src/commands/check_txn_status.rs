//! CheckTxnStatus: what became of the transaction at `lock_ts`, asked of its primary key by
//! someone who met one of its locks. Rolls back an expired transaction, pushes a live one's
//! min_commit_ts above the caller's start_ts, and answers exactly one of rolled back,
//! committed at a ts, or locked (with TTL and lock info).

use proto::kvrpcpb::{Action, LockInfo};

use super::actions::{remove_lock, write_rollback_record};
use crate::concurrency::ConcurrencyManager;
use crate::reader::CommitRecord;
use crate::snapshot::Snapshot;
use crate::{key, ts, Error, LockType, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct CheckTxnStatus {
    pub primary: Vec<u8>,
    pub lock_ts: u64,
    /// The start_ts of the reader or writer that asks (0: none): a live lock's
    /// min_commit_ts is pushed above it, so the caller need not wait.
    pub caller_start_ts: u64,
    /// Now, by the TSO: what TTLs are judged against. `u64::MAX` expires every lock.
    pub current_ts: u64,
    /// No lock and no record: write a rollback record (instead of TxnNotFound).
    pub rollback_if_not_exist: bool,
    /// Roll back an expired async-commit primary instead of reporting it.
    pub force_sync_commit: bool,
    /// The caller met a pessimistic lock: a missing primary is not an error.
    pub resolving_pessimistic_lock: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TxnStatus {
    RolledBack {
        action: Action,
    },
    Committed {
        commit_ts: u64,
    },
    Locked {
        ttl: u64,
        lock: Box<LockInfo>,
        action: Action,
    },
}

impl CheckTxnStatus {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        vec![key::encode(&self.primary)]
    }

    pub fn process<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
        cm: &ConcurrencyManager,
    ) -> Result<(TxnStatus, MvccTxn)> {
        if self.lock_ts == 0 {
            return Err(Error::Invalid("check_txn_status with lock_ts 0".into()));
        }
        // The caller will read at caller_start_ts: an async-commit transaction must commit
        // above it.
        cm.update_max_ts(self.caller_start_ts);
        let ek = key::encode(&self.primary);
        let mut txn = MvccTxn::new();
        let lock = reader
            .load_lock(&ek)?
            .filter(|l| l.start_ts == self.lock_ts);
        let Some(mut lock) = lock else {
            return self.no_lock(reader, &ek, txn);
        };
        if ts::lock_expired(lock.start_ts, lock.ttl, self.current_ts) {
            if lock.use_async_commit && !self.force_sync_commit {
                // Its fate is decided by its secondaries: the caller checks them.
                let info = lock.to_lock_info(&self.primary);
                return Ok((
                    TxnStatus::Locked {
                        ttl: info.lock_ttl,
                        lock: Box::new(info),
                        action: Action::NoAction,
                    },
                    txn,
                ));
            }
            if lock.lock_type == LockType::Pessimistic && self.resolving_pessimistic_lock {
                // The caller met a pessimistic lock: the transaction never prewrote, and
                // the lock just goes.
                txn.unlock_key(&ek);
                return Ok((
                    TxnStatus::RolledBack {
                        action: Action::TtlExpirePessimisticRollback,
                    },
                    txn,
                ));
            }
            remove_lock(&mut txn, &ek, &lock);
            write_rollback_record(&mut txn, reader, &ek, &self.primary, self.lock_ts)?;
            return Ok((
                TxnStatus::RolledBack {
                    action: Action::TtlExpireRollback,
                },
                txn,
            ));
        }
        let mut action = Action::NoAction;
        // A lock without min_commit_ts comes from a client that commits at a ts of its own
        // choosing and does not retry a CommitTsExpired: it is not pushed, the caller waits.
        if self.caller_start_ts != 0
            && self.caller_start_ts != u64::MAX
            && !lock.use_async_commit
            && lock.lock_type != LockType::Pessimistic
            && lock.min_commit_ts != 0
        {
            if lock.min_commit_ts <= self.caller_start_ts {
                lock.min_commit_ts = (self.caller_start_ts + 1).max(self.current_ts);
                txn.put_lock(&ek, &lock);
            }
            // Either way it commits above the caller, who may read past it.
            action = Action::MinCommitTsPushed;
        }
        let info = lock.to_lock_info(&self.primary);
        Ok((
            TxnStatus::Locked {
                ttl: info.lock_ttl,
                lock: Box::new(info),
                action,
            },
            txn,
        ))
    }

    fn no_lock<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
        ek: &[u8],
        mut txn: MvccTxn,
    ) -> Result<(TxnStatus, MvccTxn)> {
        match reader.commit_record(ek, self.lock_ts)? {
            CommitRecord::Committed { commit_ts, .. } => {
                Ok((TxnStatus::Committed { commit_ts }, txn))
            }
            CommitRecord::RolledBack => Ok((
                TxnStatus::RolledBack {
                    action: Action::NoAction,
                },
                txn,
            )),
            CommitRecord::None { .. } if !self.rollback_if_not_exist => Err(Error::TxnNotFound {
                start_ts: self.lock_ts,
                primary: self.primary.clone(),
            }),
            CommitRecord::None { .. } if self.resolving_pessimistic_lock => Ok((
                TxnStatus::RolledBack {
                    action: Action::LockNotExistDoNothing,
                },
                txn,
            )),
            CommitRecord::None { .. } => {
                write_rollback_record(&mut txn, reader, ek, &self.primary, self.lock_ts)?;
                Ok((
                    TxnStatus::RolledBack {
                        action: Action::LockNotExistRollback,
                    },
                    txn,
                ))
            }
        }
    }
}
