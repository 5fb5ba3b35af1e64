//! The changes one command makes, in the three column families' terms.

use crate::concurrency::MemoryLockGuard;
use crate::key;
use crate::snapshot::Modify;
use crate::{Lock, Write};

pub const CF_DEFAULT: &str = "default";
pub const CF_LOCK: &str = "lock";
pub const CF_WRITE: &str = "write";

/// Collects a command's modifications (keys are encoded user keys), and the in-memory locks
/// that must stay visible until those modifications are applied.
#[derive(Default)]
pub struct MvccTxn {
    modifies: Vec<Modify>,
    memory_locks: Vec<MemoryLockGuard>,
}

impl MvccTxn {
    pub fn new() -> MvccTxn {
        MvccTxn::default()
    }

    pub fn put_lock(&mut self, key: &[u8], lock: &Lock) {
        self.modifies.push(Modify::Put {
            cf: CF_LOCK,
            key: key.to_vec(),
            value: lock.to_bytes(),
        });
    }

    pub fn unlock_key(&mut self, key: &[u8]) {
        self.modifies.push(Modify::Delete {
            cf: CF_LOCK,
            key: key.to_vec(),
        });
    }

    pub fn put_value(&mut self, key: &[u8], start_ts: u64, value: Vec<u8>) {
        self.modifies.push(Modify::Put {
            cf: CF_DEFAULT,
            key: key::append_ts(key, start_ts),
            value,
        });
    }

    pub fn delete_value(&mut self, key: &[u8], start_ts: u64) {
        self.modifies.push(Modify::Delete {
            cf: CF_DEFAULT,
            key: key::append_ts(key, start_ts),
        });
    }

    pub fn put_write(&mut self, key: &[u8], commit_ts: u64, write: &Write) {
        self.modifies.push(Modify::Put {
            cf: CF_WRITE,
            key: key::append_ts(key, commit_ts),
            value: write.to_bytes(),
        });
    }

    pub fn delete_write(&mut self, key: &[u8], commit_ts: u64) {
        self.modifies.push(Modify::Delete {
            cf: CF_WRITE,
            key: key::append_ts(key, commit_ts),
        });
    }

    /// Keeps `guard`'s in-memory lock visible to readers until this command's changes apply.
    pub fn hold_memory_lock(&mut self, guard: MemoryLockGuard) {
        self.memory_locks.push(guard);
    }

    pub fn is_empty(&self) -> bool {
        self.modifies.is_empty()
    }

    pub fn modifies(&self) -> &[Modify] {
        &self.modifies
    }

    /// The changes, and the guards to drop once they are applied (or have failed).
    pub fn into_parts(self) -> (Vec<Modify>, Vec<MemoryLockGuard>) {
        (self.modifies, self.memory_locks)
    }
}
