//! BatchRollback: the client gives up its transaction on these keys. Each key keeps a
//! rollback record so that a late prewrite of the same transaction cannot lock it again.

use super::actions::rollback_key;
use crate::snapshot::Snapshot;
use crate::{key, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct BatchRollback {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
}

impl BatchRollback {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        super::latch_keys(&self.keys)
    }

    pub fn process<S: Snapshot + ?Sized>(&self, reader: &MvccReader<'_, S>) -> Result<MvccTxn> {
        super::check_distinct(&self.keys)?;
        let mut txn = MvccTxn::new();
        for raw in &self.keys {
            rollback_key(&mut txn, reader, &key::encode(raw), raw, self.start_ts)?;
        }
        Ok(txn)
    }
}
