//! Per-key steps several commands share: committing a lock and rolling a key back.

use crate::reader::CommitRecord;
use crate::snapshot::Snapshot;
use crate::{Error, Lock, LockType, MvccReader, MvccTxn, Result, Write, WriteType};

/// The write record a committed `lock` becomes.
pub(crate) fn write_for(lock: &Lock) -> Write {
    let write_type = match lock.lock_type {
        LockType::Put => WriteType::Put,
        LockType::Delete => WriteType::Delete,
        LockType::Lock | LockType::Pessimistic => WriteType::Lock,
    };
    Write::new(write_type, lock.start_ts, lock.short_value.clone())
}

/// Commits the transaction at `start_ts` on `key` (encoded; `raw` as the client names it)
/// at `commit_ts`. Idempotent: a key already committed by it is left alone.
pub(crate) fn commit_key<S: Snapshot + ?Sized>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &[u8],
    raw: &[u8],
    start_ts: u64,
    commit_ts: u64,
) -> Result<()> {
    match reader.load_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            if lock.lock_type == LockType::Pessimistic {
                // Never prewritten: the key is not part of what commits (its pessimistic
                // rollback was lost). Release it rather than fail the commit forever.
                txn.unlock_key(key);
                return Ok(());
            }
            if commit_ts < lock.min_commit_ts {
                return Err(Error::CommitTsExpired {
                    start_ts,
                    commit_ts,
                    key: raw.to_vec(),
                    min_commit_ts: lock.min_commit_ts,
                });
            }
            put_commit_record(txn, reader, key, commit_ts, write_for(&lock))?;
            txn.unlock_key(key);
            Ok(())
        }
        _ => match reader.commit_record(key, start_ts)? {
            CommitRecord::Committed { .. } => Ok(()),
            CommitRecord::RolledBack | CommitRecord::None { .. } => Err(Error::TxnLockNotFound {
                start_ts,
                commit_ts,
                key: raw.to_vec(),
            }),
        },
    }
}

/// Writes a commit record at `commit_ts`. Async-commit and one-phase commit timestamps are
/// not from the oracle, so one may equal another transaction's start_ts whose rollback
/// record sits at the same write CF key: the commit record then carries that rollback.
pub(crate) fn put_commit_record<S: Snapshot + ?Sized>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &[u8],
    commit_ts: u64,
    mut write: Write,
) -> Result<()> {
    if let Some(existing) = reader.write_at(key, commit_ts)? {
        if existing.write_type == WriteType::Rollback || existing.has_overlapped_rollback {
            write.has_overlapped_rollback = true;
        }
    }
    txn.put_write(key, commit_ts, &write);
    Ok(())
}

/// Removes `lock` (the transaction's own, on `key`) and the value it wrote.
pub(crate) fn remove_lock(txn: &mut MvccTxn, key: &[u8], lock: &Lock) {
    if lock.lock_type == LockType::Put && lock.short_value.is_none() {
        txn.delete_value(key, lock.start_ts);
    }
    txn.unlock_key(key);
}

/// Writes the record that stops the transaction at `start_ts` from ever committing on `key`,
/// unless the write CF already says what happened to it.
pub(crate) fn write_rollback_record<S: Snapshot + ?Sized>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &[u8],
    raw: &[u8],
    start_ts: u64,
) -> Result<()> {
    match reader.commit_record(key, start_ts)? {
        CommitRecord::Committed { commit_ts, .. } => Err(Error::Committed {
            start_ts,
            commit_ts,
            key: raw.to_vec(),
        }),
        CommitRecord::RolledBack => Ok(()),
        CommitRecord::None {
            overlapped: Some(mut write),
        } => {
            // Another transaction committed at exactly this start_ts: flag its record
            // instead of overwriting it.
            write.has_overlapped_rollback = true;
            txn.put_write(key, start_ts, &write);
            Ok(())
        }
        CommitRecord::None { overlapped: None } => {
            txn.put_write(
                key,
                start_ts,
                &Write::new(WriteType::Rollback, start_ts, None),
            );
            Ok(())
        }
    }
}

/// Rolls the transaction at `start_ts` back on `key`: its lock and value go, and a rollback
/// record stays. A key it already committed is [`Error::Committed`].
pub(crate) fn rollback_key<S: Snapshot + ?Sized>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &[u8],
    raw: &[u8],
    start_ts: u64,
) -> Result<()> {
    if let Some(lock) = reader.load_lock(key)?.filter(|l| l.start_ts == start_ts) {
        remove_lock(txn, key, &lock);
    }
    write_rollback_record(txn, reader, key, raw, start_ts)
}
