//! Pessimistic lock requests that meet another transaction's lock wait here (bounded, by
//! `wait_timeout`) until a command releases a lock on that key, instead of failing at once.
//! Whether a wait would deadlock is the cluster's detector's to say (see `deadlock`): a cycle
//! usually runs through locks that different stores lead.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why a request cannot wait.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitRefused {
    /// `capacity` requests wait already.
    Full { capacity: usize },
    /// A lock on the key changed since the request looked: look again now.
    Changed,
}

/// Release counters per key (hashed onto this many slots): a request notes its key's counter
/// before it looks, and does not wait if a release happened in between.
const RELEASE_SLOTS: usize = 4096;

#[derive(Default)]
struct State {
    /// Encoded key → the waiters' wake-up handles.
    waiters: HashMap<Vec<u8>, Vec<(u64, Arc<Notify>)>>,
    count: usize,
}

/// The store's lock-wait queue.
pub struct LockWaits {
    state: Mutex<State>,
    capacity: usize,
    releases: Vec<AtomicU64>,
}

/// One request's place in the queue; dropping it leaves the queue.
pub struct Waiting<'a> {
    waits: &'a LockWaits,
    key: Vec<u8>,
    start_ts: u64,
    notify: Arc<Notify>,
}

impl LockWaits {
    pub fn new(capacity: usize) -> LockWaits {
        LockWaits {
            state: Mutex::default(),
            capacity,
            releases: (0..RELEASE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(key: &[u8]) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % RELEASE_SLOTS as u64) as usize
    }

    /// The release counter of `key`, to pass to [`LockWaits::wait`]; read it before looking
    /// at the key.
    pub fn release_mark(&self, key: &[u8]) -> u64 {
        self.releases[Self::slot(key)].load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting now (a metric).
    pub fn len(&self) -> usize {
        self.state().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enqueues transaction `start_ts` on `key` (encoded) unless the key's release counter
    /// moved past `mark` (then the lock may be gone already).
    pub fn wait(&self, key: &[u8], start_ts: u64, mark: u64) -> Result<Waiting<'_>, WaitRefused> {
        let mut state = self.state();
        if self.release_mark(key) != mark {
            return Err(WaitRefused::Changed);
        }
        if state.count >= self.capacity {
            return Err(WaitRefused::Full {
                capacity: self.capacity,
            });
        }
        let notify = Arc::new(Notify::new());
        state
            .waiters
            .entry(key.to_vec())
            .or_default()
            .push((start_ts, notify.clone()));
        state.count += 1;
        Ok(Waiting {
            waits: self,
            key: key.to_vec(),
            start_ts,
            notify,
        })
    }

    /// A command changed these keys' locks: their waiters look again.
    pub fn wake<'k>(&self, keys: impl IntoIterator<Item = &'k Vec<u8>> + Clone) {
        for key in keys.clone() {
            self.releases[Self::slot(key)].fetch_add(1, Ordering::SeqCst);
        }
        let state = self.state();
        if state.count == 0 {
            return;
        }
        for key in keys {
            if let Some(waiters) = state.waiters.get(key) {
                for (_, notify) in waiters {
                    notify.notify_one();
                }
            }
        }
    }
}

impl Waiting<'_> {
    /// Waits until woken or `timeout`; `true` if woken.
    pub async fn until_woken(&self, timeout: std::time::Duration) -> bool {
        tokio::time::timeout(timeout, self.notify.notified())
            .await
            .is_ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.waits.state();
        if let Some(waiters) = state.waiters.get_mut(&self.key) {
            waiters.retain(|(ts, n)| !(*ts == self.start_ts && Arc::ptr_eq(n, &self.notify)));
            if waiters.is_empty() {
                state.waiters.remove(&self.key);
            }
        }
        state.count = state.count.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiter_is_woken_by_its_key_and_the_queue_is_bounded() {
        let waits = LockWaits::new(2);
        let a = waits.wait(b"k1", 10, 0).expect("10 waits");
        let b = waits.wait(b"k2", 20, 0).expect("20 waits");
        assert_eq!(
            waits.wait(b"k3", 30, 0).err(),
            Some(WaitRefused::Full { capacity: 2 })
        );
        waits.wake([&b"k1".to_vec()]);
        assert!(a.until_woken(Duration::from_secs(5)).await);
        assert!(
            !b.until_woken(Duration::from_millis(10)).await,
            "k2 was not released"
        );
        drop(a);
        assert_eq!(waits.len(), 1);
        // A release between looking and enqueueing: no wait at all.
        let mark = waits.release_mark(b"k5");
        waits.wake([&b"k5".to_vec()]);
        assert_eq!(
            waits.wait(b"k5", 60, mark).err(),
            Some(WaitRefused::Changed)
        );
        drop(b);
        assert!(waits.is_empty());
    }
}
