//! Commit: the second phase. Turns the transaction's locks on these keys into write records
//! at `commit_ts`. Committing the primary decides the transaction.

use super::actions::commit_key;
use crate::snapshot::Snapshot;
use crate::{key, Error, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
    pub commit_ts: u64,
}

impl Commit {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        super::latch_keys(&self.keys)
    }

    pub fn process<S: Snapshot + ?Sized>(&self, reader: &MvccReader<'_, S>) -> Result<MvccTxn> {
        if self.commit_ts <= self.start_ts {
            return Err(Error::Invalid(format!(
                "commit_ts {} is not above start_ts {}",
                self.commit_ts, self.start_ts
            )));
        }
        super::check_distinct(&self.keys)?;
        let mut txn = MvccTxn::new();
        for raw in &self.keys {
            let ek = key::encode(raw);
            commit_key(&mut txn, reader, &ek, raw, self.start_ts, self.commit_ts)?;
        }
        Ok(txn)
    }
}
