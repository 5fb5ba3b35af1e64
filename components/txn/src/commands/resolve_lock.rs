//! ResolveLock: commits or rolls back the locks of transactions whose fate is known. The
//! runner finds the keys first (a lock scan of the region, or the keys the client names),
//! then this command re-reads each under its latch.

use std::collections::HashMap;

use super::actions::{commit_key, rollback_key};
use crate::snapshot::Snapshot;
use crate::{key, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct ResolveLock {
    /// start_ts → commit_ts (0: rolled back).
    pub txn_status: HashMap<u64, u64>,
    /// Raw keys to resolve.
    pub keys: Vec<Vec<u8>>,
}

impl ResolveLock {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        super::latch_keys(&self.keys)
    }

    pub fn process<S: Snapshot + ?Sized>(&self, reader: &MvccReader<'_, S>) -> Result<MvccTxn> {
        super::check_distinct(&self.keys)?;
        for (start_ts, commit_ts) in &self.txn_status {
            if *commit_ts != 0 && commit_ts <= start_ts {
                return Err(crate::Error::Invalid(format!(
                    "resolve lock: commit_ts {commit_ts} is not above start_ts {start_ts}"
                )));
            }
        }
        let mut txn = MvccTxn::new();
        // With one transaction, a named key without its lock is still settled (a rollback
        // record, or a commit check); with several, only keys locked by one of them.
        let only = (self.txn_status.len() == 1)
            .then(|| self.txn_status.iter().next().map(|(s, c)| (*s, *c)))
            .flatten();
        for raw in &self.keys {
            let ek = key::encode(raw);
            let target = match reader.load_lock(&ek)? {
                Some(lock) => self
                    .txn_status
                    .get(&lock.start_ts)
                    .map(|commit_ts| (lock.start_ts, *commit_ts))
                    .or(only),
                None => only,
            };
            match target {
                Some((start_ts, 0)) => rollback_key(&mut txn, reader, &ek, raw, start_ts)?,
                Some((start_ts, commit_ts)) => {
                    commit_key(&mut txn, reader, &ek, raw, start_ts, commit_ts)?
                }
                None => {}
            }
        }
        Ok(txn)
    }
}
