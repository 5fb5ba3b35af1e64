//! TxnHeartBeat: a live transaction extends its primary lock's TTL. The TTL only grows.

use crate::snapshot::Snapshot;
use crate::{key, Error, MvccReader, MvccTxn, Result};

#[derive(Clone, Debug, Default)]
pub struct TxnHeartBeat {
    pub primary: Vec<u8>,
    pub start_ts: u64,
    pub advise_lock_ttl: u64,
}

impl TxnHeartBeat {
    pub fn latch_keys(&self) -> Vec<Vec<u8>> {
        vec![key::encode(&self.primary)]
    }

    /// The lock's TTL after the heartbeat.
    pub fn process<S: Snapshot + ?Sized>(
        &self,
        reader: &MvccReader<'_, S>,
    ) -> Result<(u64, MvccTxn)> {
        let ek = key::encode(&self.primary);
        let mut txn = MvccTxn::new();
        match reader.load_lock(&ek)? {
            Some(mut lock) if lock.start_ts == self.start_ts => {
                if self.advise_lock_ttl > lock.ttl {
                    lock.ttl = self.advise_lock_ttl;
                    txn.put_lock(&ek, &lock);
                }
                Ok((lock.ttl, txn))
            }
            _ => Err(Error::TxnNotFound {
                start_ts: self.start_ts,
                primary: self.primary.clone(),
            }),
        }
    }
}
