//! Recent raft entries of one region, in memory.
//!
//! With raft-rs's async ready, raft asks Storage for entries that were handed to the raft log
//! but are not durable yet; those are always here. Durable entries stay as long as the
//! store-wide [`CacheBudget`] allows, so followers that are slightly behind are served without
//! reading raft-engine.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use prometheus::IntGauge;
use protobuf::Message as _;
use raft::eraftpb::Entry;

static CACHE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    let gauge = IntGauge::new(
        "regionstore_entry_cache_bytes",
        "Bytes held by the raft entry caches of all regions (bound: entry_cache_limit).",
    )
    .expect("static metric definition is valid");
    let _ = prometheus::default_registry().register(Box::new(gauge.clone()));
    gauge
});

/// Memory the entry caches of all regions on a store may use for durable entries. Entries not
/// yet durable are never evicted, so usage can exceed the limit briefly.
pub struct CacheBudget {
    used: AtomicUsize,
    limit: usize,
}

impl CacheBudget {
    /// The budget of a store configured with `config`.
    pub fn from_config(config: &crate::Config) -> Arc<CacheBudget> {
        CacheBudget::new(config.entry_cache_limit)
    }

    pub fn new(limit: usize) -> Arc<CacheBudget> {
        Arc::new(CacheBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        CACHE_BYTES.add(bytes as i64);
    }

    fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        CACHE_BYTES.sub(bytes as i64);
    }
}

/// What an entry costs in the cache: payload plus the struct itself.
fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + std::mem::size_of::<Entry>()
}

pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Entries with an index at or below this are durable in the raft log.
    persisted: u64,
    budget: Arc<CacheBudget>,
}

impl EntryCache {
    pub fn new(budget: Arc<CacheBudget>) -> EntryCache {
        EntryCache {
            entries: VecDeque::new(),
            bytes: 0,
            persisted: 0,
            budget,
        }
    }

    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.index)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Adds entries just handed to the raft log. Entries from an index the cache already holds
    /// replace the tail from there (a conflicting append from a new leader); a gap after the
    /// cached entries (after a snapshot) drops what was cached.
    /// The entries are moved in: raft-rs hands them over owned, and a clone would cost an
    /// atomic increment per payload (and, for a payload built from a `Vec`, an allocation).
    pub fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        match self.last_index() {
            Some(last) if first.index <= last => {
                while self.entries.back().is_some_and(|e| e.index >= first.index) {
                    self.pop_back();
                }
            }
            Some(last) if first.index > last + 1 => self.clear(),
            _ => {}
        }
        self.persisted = self.persisted.min(first.index.saturating_sub(1));
        let added: usize = entries.iter().map(entry_bytes).sum();
        self.entries.extend(entries);
        self.bytes += added;
        self.budget.add(added);
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        let pos = index.checked_sub(first)?;
        self.entries.get(usize::try_from(pos).ok()?)
    }

    /// Pushes entries `[low, high)` (which must be cached) onto `out` while the total encoded
    /// size stays within `max_size`; the first entry of the whole fetch (`out` empty) is always
    /// taken. `size` carries the running total across the raft-log and cache parts of a fetch.
    /// Returns false if it stopped because of the size limit.
    pub fn fetch(
        &self,
        low: u64,
        high: u64,
        max_size: u64,
        size: &mut u64,
        out: &mut Vec<Entry>,
    ) -> bool {
        for index in low..high {
            let Some(e) = self.entry(index) else {
                return false;
            };
            let entry_size = u64::from(e.compute_size());
            if !out.is_empty() && *size + entry_size > max_size {
                return false;
            }
            *size += entry_size;
            out.push(e.clone());
        }
        true
    }

    /// Records that the write holding entries up to `index` (whose entry at `index` had `term`)
    /// is durable. If the cached entry at `index` has another term, a conflicting append
    /// replaced it after that write was issued: the cached one is not durable, so nothing moves.
    /// Nor if the cache ends below `index`: a shorter conflicting append cut the tail after
    /// that write, and what it appended is not durable yet (several writes may be in flight,
    /// with the store writer).
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        match self.entry(index) {
            Some(e) if e.term != term => return,
            None if self.last_index().is_some_and(|last| index > last) => return,
            // Cached with its term, or below the cache (compacted or evicted, so durable).
            _ => {}
        }
        self.persisted = self.persisted.max(index);
    }

    /// Drops entries below `index` (log compaction).
    pub fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            self.pop_front();
        }
    }

    /// Drops the durable entries below `index`: nobody will ask for them (they are applied
    /// and every active follower has them), so they would only hold memory until the budget
    /// evicted them, and an eviction touches entries long out of the CPU's caches.
    pub fn release_below(&mut self, index: u64) {
        let below = index.min(self.persisted.saturating_add(1));
        let mut freed = 0;
        while let Some(e) = self.entries.front() {
            if e.index >= below {
                break;
            }
            freed += entry_bytes(e);
            self.entries.pop_front();
        }
        self.settle(freed);
    }

    /// While the store is over budget, drops this region's oldest durable entries.
    pub fn evict_if_over_budget(&mut self) {
        let mut freed = 0;
        while self.budget.used().saturating_sub(freed) > self.budget.limit {
            match self.entries.front() {
                Some(e) if e.index <= self.persisted => freed += entry_bytes(e),
                _ => break,
            }
            self.entries.pop_front();
        }
        self.settle(freed);
    }

    /// Accounts for `freed` bytes dropped from the front, once for the whole batch: the budget
    /// is shared by every region's cache, so each change is a contended atomic write.
    fn settle(&mut self, freed: usize) {
        if freed > 0 {
            self.bytes -= freed;
            self.budget.sub(freed);
        }
    }

    pub fn clear(&mut self) {
        self.budget.sub(self.bytes);
        self.bytes = 0;
        self.entries.clear();
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.release(&e);
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.release(&e);
        }
    }

    fn release(&mut self, e: &Entry) {
        let n = entry_bytes(e);
        self.bytes -= n;
        self.budget.sub(n);
    }
}

impl Drop for EntryCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![0u8; 100].into(),
            ..Default::default()
        }
    }

    fn terms(cache: &EntryCache) -> Vec<(u64, u64)> {
        cache.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn conflicting_append_replaces_the_tail() {
        let budget = CacheBudget::new(usize::MAX);
        let mut cache = EntryCache::new(budget.clone());
        cache.append((1..=5).map(|i| entry(i, 1)).collect());
        cache.on_persisted(5, 1);
        cache.append(vec![entry(3, 2), entry(4, 2)]);
        assert_eq!(terms(&cache), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        assert_eq!(
            cache.persisted(),
            2,
            "overwritten entries are no longer durable"
        );
        assert_eq!(budget.used(), cache.bytes());
        assert_eq!(cache.bytes(), 4 * entry_bytes(&entry(1, 1)));
    }

    #[test]
    fn late_persist_of_a_replaced_write_is_ignored() {
        let mut cache = EntryCache::new(CacheBudget::new(usize::MAX));
        // Write A (entries 1..=10, term 1) is in flight when a new leader replaces 5.. with
        // term 2 entries, also in flight.
        cache.append((1..=10).map(|i| entry(i, 1)).collect());
        cache.append((5..=12).map(|i| entry(i, 2)).collect());
        cache.on_persisted(10, 1);
        assert_eq!(
            cache.persisted(),
            0,
            "the term-2 entries are not durable yet"
        );
        cache.on_persisted(12, 2);
        assert_eq!(cache.persisted(), 12);
    }

    #[test]
    fn late_persist_of_a_write_whose_tail_was_cut_is_ignored() {
        let mut cache = EntryCache::new(CacheBudget::new(usize::MAX));
        // Write A (1..=10, term 1) is in flight when a new leader replaces 7.. with a shorter
        // term-2 tail (7..=8), also in flight: the cache ends below A's last entry.
        cache.append((1..=10).map(|i| entry(i, 1)).collect());
        cache.append((7..=8).map(|i| entry(i, 2)).collect());
        cache.on_persisted(10, 1);
        assert_eq!(
            cache.persisted(),
            0,
            "7 and 8 of term 2 are not durable yet"
        );
        cache.on_persisted(8, 2);
        assert_eq!(cache.persisted(), 8);
    }

    #[test]
    fn release_drops_only_durable_entries_below_the_index() {
        let budget = CacheBudget::new(usize::MAX);
        let mut cache = EntryCache::new(budget.clone());
        cache.append((1..=10).map(|i| entry(i, 1)).collect());
        cache.on_persisted(6, 1);
        cache.release_below(4);
        assert_eq!(cache.first_index(), Some(4), "the entry at the index stays");
        // Applied (on a leader, committed by its followers) beyond what is durable here.
        cache.release_below(9);
        assert_eq!(
            cache.first_index(),
            Some(7),
            "entries not durable here stay"
        );
        assert_eq!(budget.used(), cache.bytes());
        assert_eq!(cache.bytes(), 4 * entry_bytes(&entry(1, 1)));
    }

    #[test]
    fn gap_drops_the_cache() {
        let mut cache = EntryCache::new(CacheBudget::new(usize::MAX));
        cache.append(vec![entry(1, 1), entry(2, 1)]);
        cache.append(vec![entry(10, 3)]);
        assert_eq!(terms(&cache), vec![(10, 3)]);
    }

    #[test]
    fn eviction_keeps_entries_that_are_not_durable() {
        let one = entry_bytes(&entry(1, 1));
        let budget = CacheBudget::new(2 * one);
        let mut cache = EntryCache::new(budget.clone());
        cache.append((1..=5).map(|i| entry(i, 1)).collect());
        cache.evict_if_over_budget();
        assert_eq!(cache.len(), 5, "nothing durable yet, nothing evicted");
        cache.on_persisted(4, 1);
        cache.evict_if_over_budget();
        assert_eq!(cache.first_index(), Some(4), "evicted down to the budget");
        assert_eq!(budget.used(), 2 * one);
        drop(cache);
        assert_eq!(budget.used(), 0, "dropping a cache returns its bytes");
    }

    #[test]
    fn fetch_honours_max_size_but_returns_one() {
        let mut cache = EntryCache::new(CacheBudget::new(usize::MAX));
        cache.append((1..=5).map(|i| entry(i, 1)).collect());
        let one = u64::from(entry(1, 1).compute_size());
        let (mut out, mut size) = (Vec::new(), 0);
        assert!(!cache.fetch(1, 6, 0, &mut size, &mut out));
        assert_eq!(out.len(), 1);
        let (mut out, mut size) = (Vec::new(), 0);
        assert!(!cache.fetch(1, 6, 3 * one, &mut size, &mut out));
        assert_eq!(out.len(), 3);
        let (mut out, mut size) = (Vec::new(), 0);
        assert!(cache.fetch(2, 6, u64::MAX, &mut size, &mut out));
        assert_eq!(out.len(), 4);
        cache.compact_to(3);
        assert_eq!(cache.first_index(), Some(3));
        assert!(cache.entry(2).is_none());
    }
}
