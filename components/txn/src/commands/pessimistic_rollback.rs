//! PessimisticRollback: releases pessimistic locks the transaction took at or below
//! `for_update_ts` (a statement that failed), leaving prewritten locks alone.

use crate::snapshot::Snapshot;
use crate::{key, LockType, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct PessimisticRollback {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
    pub for_update_ts: u64,
}

impl PessimisticRollback {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        super::latch_keys(&self.keys)
    }

    pub fn process<S: Snapshot + ?Sized>(&self, reader: &MvccReader<'_, S>) -> Result<MvccTxn> {
        super::check_distinct(&self.keys)?;
        let mut txn = MvccTxn::new();
        for raw in &self.keys {
            let ek = key::encode(raw);
            if let Some(lock) = reader.load_lock(&ek)? {
                if lock.start_ts == self.start_ts
                    && lock.lock_type == LockType::Pessimistic
                    && lock.for_update_ts <= self.for_update_ts
                {
                    txn.unlock_key(&ek);
                }
            }
        }
        Ok(txn)
    }
}
