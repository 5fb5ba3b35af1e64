//! Per-key latches: commands that touch the same key run one at a time on this store, from
//! before their snapshot until their write's outcome is known.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A fixed array of slots; keys hash onto them (two keys may share one: they then wait for
/// each other, which is safe).
pub struct Latches {
    slots: Vec<Arc<Mutex<()>>>,
}

/// The slots one command holds; dropping it releases them.
pub struct LatchGuard {
    _held: Vec<OwnedMutexGuard<()>>,
}

impl Latches {
    pub fn new(slots: usize) -> Latches {
        Latches {
            slots: (0..slots.max(1))
                .map(|_| Arc::new(Mutex::new(())))
                .collect(),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn slot<K: Hash>(&self, key: &K) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.slots.len() as u64) as usize
    }

    /// Waits for the slots of `keys`, taken in index order so two holders never wait on
    /// each other.
    pub async fn acquire<K: Hash>(&self, keys: impl IntoIterator<Item = K>) -> LatchGuard {
        let slots: BTreeSet<usize> = keys.into_iter().map(|k| self.slot(&k)).collect();
        let mut held = Vec::with_capacity(slots.len());
        for i in slots {
            held.push(self.slots[i].clone().lock_owned().await);
        }
        LatchGuard { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_command_at_a_time() {
        let latches = Latches::new(16);
        let held = latches.acquire([b"a".as_slice(), b"b"]).await;
        let again = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            latches.acquire([b"b".as_slice()]),
        )
        .await;
        assert!(again.is_err(), "b is latched");
        drop(held);
        let _now = latches.acquire([b"b".as_slice(), b"a"]).await;
    }
}
