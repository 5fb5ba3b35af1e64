//! The transactional commands, one module each. A command names its keys (raw, as the
//! client sends them: [`latch_keys`] gives the encoded keys its runner latches), reads one
//! snapshot and returns its outcome with the changes to replicate. On an error it returns no
//! changes: a failed command writes nothing.
//!
//! Reads ([`read`]) are not commands: they take no latches and change nothing, but raise
//! `max_ts` and respect in-memory locks.

mod actions;
pub mod check_secondary_locks;
pub mod check_txn_status;
pub mod cleanup;
pub mod commit;
pub mod heart_beat;
pub mod pessimistic_lock;
pub mod pessimistic_rollback;
pub mod prewrite;
pub mod read;
pub mod resolve_lock;
pub mod rollback;

pub use check_secondary_locks::{CheckSecondaryLocks, SecondaryLocksStatus};
pub use check_txn_status::{CheckTxnStatus, TxnStatus};
pub use cleanup::Cleanup;
pub use commit::Commit;
pub use heart_beat::TxnHeartBeat;
pub use pessimistic_lock::{PessimisticLock, PessimisticLockResult};
pub use pessimistic_rollback::PessimisticRollback;
pub use prewrite::{PessimisticAction, Prewrite, PrewriteResult};
pub use resolve_lock::ResolveLock;
pub use rollback::BatchRollback;

use crate::key;

/// The encoded keys of `raw_keys`, which a command's runner latches.
pub fn latch_keys<'a>(raw_keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<Vec<u8>> {
    raw_keys.into_iter().map(|k| key::encode(k)).collect()
}

/// Refuses a request that names a key twice: its changes to one key would overwrite each
/// other within one write.
pub(crate) fn check_distinct<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> crate::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !seen.insert(k.as_slice()) {
            return Err(crate::Error::Invalid(format!(
                "key {k:?} appears twice in one request"
            )));
        }
    }
    Ok(())
}
