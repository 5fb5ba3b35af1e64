//! Pessimistic lock requests that meet another transaction's lock wait here (bounded, by
//! `wait_timeout`) until a command releases a lock on that key, instead of failing at once.
//! Waiting transactions form a wait-for graph: a request whose wait would close a cycle is
//! answered Deadlock at once. The graph is this store's: a cycle through locks led by other
//! stores is broken by the waits' timeouts instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why a request cannot wait.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitRefused {
    /// `capacity` requests wait already.
    Full { capacity: usize },
    /// Waiting would close a cycle: `holder` (transitively) waits for the requester.
    Deadlock { holder_ts: u64 },
}

#[derive(Default)]
struct State {
    /// Encoded key → the waiters' wake-up handles.
    waiters: HashMap<Vec<u8>, Vec<(u64, Arc<Notify>)>>,
    /// Waiting transaction (start_ts) → the transaction whose lock it waits for.
    waits_for: HashMap<u64, u64>,
    count: usize,
}

/// The store's lock-wait queue.
pub struct LockWaits {
    state: Mutex<State>,
    capacity: usize,
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
        }
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

    /// Enqueues transaction `start_ts` on `key` (encoded), locked by `holder_ts`.
    pub fn wait(
        &self,
        key: &[u8],
        start_ts: u64,
        holder_ts: u64,
    ) -> Result<Waiting<'_>, WaitRefused> {
        let mut state = self.state();
        if state.count >= self.capacity {
            return Err(WaitRefused::Full {
                capacity: self.capacity,
            });
        }
        // Follow the chain from the holder: reaching the requester closes a cycle.
        let mut at = holder_ts;
        for _ in 0..=state.waits_for.len() {
            if at == start_ts {
                return Err(WaitRefused::Deadlock { holder_ts });
            }
            match state.waits_for.get(&at) {
                Some(next) => at = *next,
                None => break,
            }
        }
        let notify = Arc::new(Notify::new());
        state
            .waiters
            .entry(key.to_vec())
            .or_default()
            .push((start_ts, notify.clone()));
        state.waits_for.insert(start_ts, holder_ts);
        state.count += 1;
        Ok(Waiting {
            waits: self,
            key: key.to_vec(),
            start_ts,
            notify,
        })
    }

    /// A command changed these keys' locks: their waiters look again.
    pub fn wake<'k>(&self, keys: impl IntoIterator<Item = &'k Vec<u8>>) {
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
        state.waits_for.remove(&self.start_ts);
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
        let a = waits.wait(b"k1", 10, 20).expect("10 waits for 20");
        // 20 waiting for 10 would close the cycle.
        assert_eq!(
            waits.wait(b"k2", 20, 10).err(),
            Some(WaitRefused::Deadlock { holder_ts: 10 })
        );
        // 30 -> 10 -> 20 is no cycle; then the queue is full.
        let _b = waits.wait(b"k3", 30, 10).expect("no cycle");
        assert_eq!(
            waits.wait(b"k4", 40, 50).err(),
            Some(WaitRefused::Full { capacity: 2 })
        );
        waits.wake([&b"k1".to_vec()]);
        assert!(a.until_woken(Duration::from_secs(5)).await);
        drop(a);
        assert_eq!(waits.len(), 1);
        // 20 may wait for 10 now: 10 no longer waits.
        let c = waits.wait(b"k2", 20, 10).expect("the cycle is gone");
        assert!(!c.until_woken(Duration::from_millis(10)).await);
    }
}
