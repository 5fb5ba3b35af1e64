//! The in-memory raft log, for the simulator: the same batch, sync and read rules as the
//! raft-engine one, with a sync boundary a simulated power cut can lose. Never what ships.

use std::collections::{BTreeMap, VecDeque};

use raft::eraftpb::Entry;

use crate::{Error, Result};

/// One change of a batch, in the order it was added.
#[derive(Clone)]
pub(crate) enum MemOp {
    Append(u64, Vec<Entry>),
    PutState(u64, Vec<u8>),
    Compact(u64, u64),
    Clean(u64),
}

impl MemOp {
    pub(crate) fn size(&self) -> usize {
        match self {
            MemOp::Append(_, entries) => entries.iter().map(entry_size).sum(),
            MemOp::PutState(_, state) => state.len() + 8,
            MemOp::Compact(..) | MemOp::Clean(_) => 16,
        }
    }
}

#[derive(Clone, Default)]
struct RegionLog {
    /// Index of `entries[0]`.
    first: u64,
    entries: VecDeque<Entry>,
    state: Option<Vec<u8>>,
}

impl RegionLog {
    fn last(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64 - 1)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.state.is_none()
    }
}

type Logs = BTreeMap<u64, RegionLog>;

#[derive(Default)]
pub(crate) struct MemLog {
    live: Logs,
    durable: Logs,
    /// Batches written since the last sync, oldest first.
    unsynced: Vec<Vec<MemOp>>,
    /// A planted bug: fsync returns without making anything durable.
    pub(crate) sync_lies: bool,
    /// A disk fault: every fsync fails (the writes stay, not durable).
    pub(crate) sync_fails: bool,
    /// Batches written since it was made.
    pub(crate) writes: u64,
}

/// Rough encoded size of an entry, for `max_size` limits.
pub(crate) fn entry_size(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 16
}

fn apply(logs: &mut Logs, op: &MemOp) -> Result<()> {
    match op {
        MemOp::Append(region_id, entries) => {
            let Some(first_new) = entries.first().map(|e| e.index) else {
                return Ok(());
            };
            let log = logs.entry(*region_id).or_default();
            match log.last() {
                None => log.first = first_new,
                Some(last) if first_new > last + 1 => {
                    // raft-engine panics here; an error names the bug instead.
                    return Err(Error::Engine {
                        op: "append",
                        region_id: Some(*region_id),
                        detail: format!("gap: last index {last}, appending from {first_new}"),
                    });
                }
                Some(_) if first_new < log.first => {
                    log.entries.clear();
                    log.first = first_new;
                }
                Some(_) => log.entries.truncate((first_new - log.first) as usize),
            }
            log.entries.extend(entries.iter().cloned());
        }
        MemOp::PutState(region_id, state) => {
            logs.entry(*region_id).or_default().state = Some(state.clone());
        }
        MemOp::Compact(region_id, index) => {
            if let Some(log) = logs.get_mut(region_id) {
                while log.first < *index && !log.entries.is_empty() {
                    log.entries.pop_front();
                    log.first += 1;
                }
                if log.entries.is_empty() {
                    log.first = log.first.max(*index);
                }
                if log.is_empty() {
                    logs.remove(region_id);
                }
            }
        }
        MemOp::Clean(region_id) => {
            logs.remove(region_id);
        }
    }
    Ok(())
}

impl MemLog {
    pub(crate) fn write(&mut self, ops: Vec<MemOp>, sync: bool) -> Result<()> {
        self.writes += 1;
        for op in &ops {
            apply(&mut self.live, op)?;
        }
        self.unsynced.push(ops);
        if sync && self.sync_fails {
            return Err(Error::Engine {
                op: "fsync",
                region_id: None,
                detail: "injected disk fault: fsync failed".into(),
            });
        }
        if sync && !self.sync_lies {
            self.make_durable()?;
        }
        Ok(())
    }

    fn make_durable(&mut self) -> Result<()> {
        for op in std::mem::take(&mut self.unsynced).iter().flatten() {
            apply(&mut self.durable, op)?;
        }
        Ok(())
    }

    /// A power cut after the first `kept` unsynced batches reached the disk (a log survives as
    /// a prefix of whole batches: recovery drops a torn last one). Returns the changes lost.
    pub(crate) fn power_cut(&mut self, kept: usize) -> usize {
        let mut unsynced = std::mem::take(&mut self.unsynced);
        let lost = unsynced.split_off(kept.min(unsynced.len()));
        self.unsynced = unsynced;
        // Batches that applied to the live log apply to the durable one too.
        let _ = self.make_durable();
        self.live = self.durable.clone();
        lost.iter().map(Vec::len).sum()
    }

    pub(crate) fn unsynced_batches(&self) -> usize {
        self.unsynced.len()
    }

    pub(crate) fn fetch(
        &self,
        region_id: u64,
        low: u64,
        high: u64,
        max_size: Option<usize>,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        let unavailable = Error::Unavailable {
            region_id,
            low,
            high,
        };
        let Some(log) = self.live.get(&region_id) else {
            return Err(unavailable);
        };
        let Some(last) = log.last() else {
            return Err(unavailable);
        };
        if low < log.first {
            return Err(Error::Compacted {
                region_id,
                index: low,
            });
        }
        if high > last + 1 {
            return Err(unavailable);
        }
        let mut size = 0;
        let mut fetched = 0;
        for index in low..high {
            let e = &log.entries[(index - log.first) as usize];
            size += entry_size(e);
            if fetched > 0 && max_size.is_some_and(|max| size > max) {
                break;
            }
            out.push(e.clone());
            fetched += 1;
        }
        Ok(fetched)
    }

    pub(crate) fn entry(&self, region_id: u64, index: u64) -> Option<Entry> {
        let log = self.live.get(&region_id)?;
        let offset = index.checked_sub(log.first)?;
        log.entries.get(offset as usize).cloned()
    }

    pub(crate) fn first_index(&self, region_id: u64) -> Option<u64> {
        let log = self.live.get(&region_id)?;
        log.last().map(|_| log.first)
    }

    pub(crate) fn last_index(&self, region_id: u64) -> Option<u64> {
        self.live.get(&region_id)?.last()
    }

    pub(crate) fn state(&self, region_id: u64) -> Option<Vec<u8>> {
        self.live.get(&region_id)?.state.clone()
    }

    pub(crate) fn regions(&self) -> Vec<u64> {
        self.live.keys().copied().collect()
    }

    pub(crate) fn used_size(&self) -> usize {
        self.live
            .values()
            .map(|log| log.entries.iter().map(entry_size).sum::<usize>())
            .sum()
    }
}
