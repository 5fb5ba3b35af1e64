//! Pessimistic lock requests that meet another transaction's lock wait here (bounded, by
//! `wait_timeout`) until a command releases a lock on that key, instead of failing at once.
//! Waiting transactions form a wait-for graph: a request whose wait would close a cycle is
//! answered Deadlock at once. The graph is this store's: a cycle through locks led by other
//! stores is broken by the waits' timeouts instead.

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
    /// Waiting would close a cycle: `holder` (transitively) waits for the requester.
    Deadlock { holder_ts: u64 },
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
    /// Waiting transaction (start_ts) → the transactions whose locks it waits for (one entry
    /// per waiting request).
    waits_for: HashMap<u64, Vec<u64>>,
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
    holder_ts: u64,
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

    /// Enqueues transaction `start_ts` on `key` (encoded), locked by `holder_ts`, unless the
    /// key's release counter moved past `mark` (then the lock may be gone already).
    pub fn wait(
        &self,
        key: &[u8],
        start_ts: u64,
        holder_ts: u64,
        mark: u64,
    ) -> Result<Waiting<'_>, WaitRefused> {
        let mut state = self.state();
        if self.release_mark(key) != mark {
            return Err(WaitRefused::Changed);
        }
        if state.count >= self.capacity {
            return Err(WaitRefused::Full {
                capacity: self.capacity,
            });
        }
        // Everything the holder (transitively) waits for: reaching the requester closes a
        // cycle.
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![holder_ts];
        while let Some(at) = stack.pop() {
            if at == start_ts {
                return Err(WaitRefused::Deadlock { holder_ts });
            }
            if seen.insert(at) {
                if let Some(next) = state.waits_for.get(&at) {
                    stack.extend(next.iter().copied());
                }
            }
        }
        let notify = Arc::new(Notify::new());
        state
            .waiters
            .entry(key.to_vec())
            .or_default()
            .push((start_ts, notify.clone()));
        state.waits_for.entry(start_ts).or_default().push(holder_ts);
        state.count += 1;
        Ok(Waiting {
            waits: self,
            key: key.to_vec(),
            start_ts,
            holder_ts,
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
        if let Some(holders) = state.waits_for.get_mut(&self.start_ts) {
            if let Some(i) = holders.iter().position(|h| *h == self.holder_ts) {
                holders.swap_remove(i);
            }
            if holders.is_empty() {
                state.waits_for.remove(&self.start_ts);
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
    async fn a_waiter_is_woken_by_its_key_and_cycles_are_refused() {
        let waits = LockWaits::new(2);
        let a = waits.wait(b"k1", 10, 20, 0).expect("10 waits for 20");
        // 20 waiting for 10 would close the cycle.
        assert_eq!(
            waits.wait(b"k2", 20, 10, 0).err(),
            Some(WaitRefused::Deadlock { holder_ts: 10 })
        );
        // 30 -> 10 -> 20 is no cycle; then the queue is full.
        let _b = waits.wait(b"k3", 30, 10, 0).expect("no cycle");
        assert_eq!(
            waits.wait(b"k4", 40, 50, 0).err(),
            Some(WaitRefused::Full { capacity: 2 })
        );
        waits.wake([&b"k1".to_vec()]);
        assert!(a.until_woken(Duration::from_secs(5)).await);
        drop(a);
        assert_eq!(waits.len(), 1);
        // 20 may wait for 10 now: 10 no longer waits.
        let c = waits.wait(b"k2", 20, 10, 0).expect("the cycle is gone");
        assert!(!c.until_woken(Duration::from_millis(10)).await);
        drop(c);
        // A release between looking and enqueueing: no wait at all.
        let mark = waits.release_mark(b"k5");
        waits.wake([&b"k5".to_vec()]);
        assert_eq!(
            waits.wait(b"k5", 60, 70, mark).err(),
            Some(WaitRefused::Changed)
        );
        drop(_b);
        // One transaction waiting on two keys keeps both edges.
        let _x = waits.wait(b"k6", 80, 90, 0).expect("80 waits for 90");
        let y = waits.wait(b"k7", 80, 91, 0).expect("and for 91");
        drop(y);
        assert_eq!(
            waits.wait(b"k8", 90, 80, 0).err(),
            Some(WaitRefused::Deadlock { holder_ts: 80 }),
            "80 still waits for 90"
        );
    }
}
