//! Cleanup: rolls back one key of a transaction whose lock has expired (or any lock, when
//! `current_ts` is 0). A committed key answers with its commit ts instead.

use super::actions::rollback_key;
use crate::snapshot::Snapshot;
use crate::{key, ts, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct Cleanup {
    pub key: Vec<u8>,
    pub start_ts: u64,
    /// 0: roll back even a live lock.
    pub current_ts: u64,
}

impl Cleanup {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        vec![key::encode(&self.key)]
    }

    pub fn process<S: Snapshot + ?Sized>(&self, reader: &MvccReader<'_, S>) -> Result<MvccTxn> {
        let ek = key::encode(&self.key);
        if let Some(lock) = reader.load_lock(&ek)? {
            if lock.start_ts == self.start_ts
                && self.current_ts != 0
                && !ts::lock_expired(lock.start_ts, lock.ttl, self.current_ts)
            {
                return Err(lock.locked_error(&self.key));
            }
        }
        let mut txn = MvccTxn::new();
        rollback_key(&mut txn, reader, &ek, &self.key, self.start_ts)?;
        Ok(txn)
    }
}
