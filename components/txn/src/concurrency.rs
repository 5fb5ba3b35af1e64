//! The leader-side state that keeps transactions and readers from missing each other (TiKV
//! calls it the concurrency manager): the largest timestamp any reader asked for (`max_ts`)
//! and the locks of async-commit and one-phase prewrites whose writes are still in flight.
//!
//! An async-commit prewrite picks its own `min_commit_ts` above `max_ts`. The race it must
//! win: a reader at `ts` that does not see the lock in the engine (its write is not applied
//! yet) must not later see the transaction commit at or below `ts`. Readers raise `max_ts`
//! first and then look at the in-memory locks; a prewrite publishes its in-memory lock first
//! and then reads `max_ts`. Either the reader sees the lock, or the prewrite sees the
//! reader's `ts` and commits above it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Lock;

/// Encoded key → (raw key, lock).
type Table = BTreeMap<Vec<u8>, (Vec<u8>, Lock)>;

#[derive(Default)]
struct Inner {
    max_ts: AtomicU64,
    /// Encoded key → (raw key, lock) of prewrites being replicated.
    memory_locks: Mutex<Table>,
}

/// Shared by every command and read on one store.
#[derive(Clone, Default)]
pub struct ConcurrencyManager {
    inner: Arc<Inner>,
}

impl ConcurrencyManager {
    pub fn new(max_ts: u64) -> ConcurrencyManager {
        let cm = ConcurrencyManager::default();
        cm.update_max_ts(max_ts);
        cm
    }

    pub fn max_ts(&self) -> u64 {
        self.inner.max_ts.load(Ordering::SeqCst)
    }

    /// Records that something read (or will read) at `ts`. `u64::MAX` ("the newest") is not a
    /// timestamp any transaction can commit above, so it is not recorded.
    pub fn update_max_ts(&self, ts: u64) {
        if ts != u64::MAX {
            self.inner.max_ts.fetch_max(ts, Ordering::SeqCst);
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the table cannot leave it half-changed (single inserts and
        // removes): keep serving.
        self.inner
            .memory_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `lock` on `key` (encoded; `raw_key` as the client names it) until the guard
    /// is dropped. The caller holds the key's latch, so no other guard exists for it.
    pub fn lock_key(&self, key: &[u8], raw_key: &[u8], lock: Lock) -> MemoryLockGuard {
        self.table().insert(key.to_vec(), (raw_key.to_vec(), lock));
        MemoryLockGuard {
            cm: self.clone(),
            key: key.to_vec(),
        }
    }

    /// The in-memory lock on `key`, if any.
    pub fn memory_lock(&self, key: &[u8]) -> Option<(Vec<u8>, Lock)> {
        self.table().get(key).cloned()
    }

    /// In-memory locks in `[start, end)` (`end` empty: unbounded), in key order.
    pub fn memory_locks_in(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>, Lock)> {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.to_vec())
        };
        self.table()
            .range((Bound::Included(start.to_vec()), upper))
            .map(|(k, (raw, lock))| (k.clone(), raw.clone(), lock.clone()))
            .collect()
    }

    /// How many in-memory locks exist now (a metric).
    pub fn memory_lock_count(&self) -> usize {
        self.table().len()
    }
}

/// Keeps an in-memory lock published; dropping it removes the lock.
pub struct MemoryLockGuard {
    cm: ConcurrencyManager,
    key: Vec<u8>,
}

impl MemoryLockGuard {
    /// Replaces the published lock (its min_commit_ts is decided after publishing).
    pub fn update(&self, lock: Lock) {
        if let Some(entry) = self.cm.table().get_mut(&self.key) {
            entry.1 = lock;
        }
    }
}

impl Drop for MemoryLockGuard {
    fn drop(&mut self) {
        self.cm.table().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LockType;

    #[test]
    fn max_ts_only_grows_and_memory_locks_live_as_long_as_their_guard() {
        let cm = ConcurrencyManager::new(10);
        cm.update_max_ts(5);
        cm.update_max_ts(u64::MAX);
        assert_eq!(cm.max_ts(), 10);
        cm.update_max_ts(12);
        assert_eq!(cm.max_ts(), 12);
        let guard = cm.lock_key(b"k", b"raw", Lock::new(LockType::Put, b"p".to_vec(), 3, 10));
        assert_eq!(cm.memory_locks_in(b"a", b"").len(), 1);
        assert!(cm.memory_locks_in(b"l", b"").is_empty());
        let mut pushed = Lock::new(LockType::Put, b"p".to_vec(), 3, 10);
        pushed.min_commit_ts = 13;
        guard.update(pushed);
        assert_eq!(cm.memory_lock(b"k").map(|(_, l)| l.min_commit_ts), Some(13));
        drop(guard);
        assert!(cm.memory_lock(b"k").is_none());
    }
}
