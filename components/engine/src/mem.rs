//! The in-memory engine: a `BTreeMap` per column family, for fast tests and simulation. It is
//! never what a store ships with.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use crate::{
    check_range, Error, KvEngine, Peekable, RangeStats, Result, ScanCallback, Snapshot, WriteBatch,
    ALL_CFS,
};

type CfMap = BTreeMap<Vec<u8>, Vec<u8>>;

fn cf_index(cf: &str) -> Result<usize> {
    ALL_CFS
        .iter()
        .position(|name| *name == cf)
        .ok_or_else(|| Error::UnknownCf { cf: cf.to_owned() })
}

fn bounds<'a>(start: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    };
    (Bound::Included(start), upper)
}

fn scan_map(
    map: &CfMap,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    f: &mut ScanCallback<'_>,
) -> Result<()> {
    check_range(start, end)?;
    let range = map.range::<[u8], _>(bounds(start, end));
    if reverse {
        for (k, v) in range.rev() {
            if !f(k, v)? {
                break;
            }
        }
    } else {
        for (k, v) in range {
            if !f(k, v)? {
                break;
            }
        }
    }
    Ok(())
}

/// Copy-on-write: a snapshot shares each CF's map until the engine next writes to that CF.
#[derive(Clone)]
pub struct MemEngine {
    cfs: Arc<RwLock<Vec<Arc<CfMap>>>>,
}

// Not derived: a derived default would have no column families at all.
impl Default for MemEngine {
    fn default() -> Self {
        MemEngine::new()
    }
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine {
            cfs: Arc::new(RwLock::new(vec![Arc::default(); ALL_CFS.len()])),
        }
    }

    fn cfs(&self) -> Vec<Arc<CfMap>> {
        util::read(&self.cfs).clone()
    }
}

impl Peekable for MemEngine {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let idx = cf_index(cf)?;
        let cfs = util::read(&self.cfs);
        Ok(cfs[idx].get(key).cloned())
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        // Scan a snapshot so `f` may write to the engine without deadlocking.
        let map = self.cfs()[cf_index(cf)?].clone();
        scan_map(&map, start, end, reverse, f)
    }
}

enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeleteRange(usize, Vec<u8>, Vec<u8>),
}

#[derive(Default)]
pub struct MemWriteBatch {
    ops: Vec<Op>,
    size: usize,
}

impl WriteBatch for MemWriteBatch {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.size += key.len() + value.len();
        self.ops
            .push(Op::Put(cf_index(cf)?, key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        self.size += key.len();
        self.ops.push(Op::Delete(cf_index(cf)?, key.to_vec()));
        Ok(())
    }

    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        self.size += start.len() + end.len();
        self.ops
            .push(Op::DeleteRange(cf_index(cf)?, start.to_vec(), end.to_vec()));
        Ok(())
    }

    fn count(&self) -> usize {
        self.ops.len()
    }

    fn data_size(&self) -> usize {
        self.size
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.size = 0;
    }
}

pub struct MemSnapshot {
    cfs: Vec<Arc<CfMap>>,
}

impl Peekable for MemSnapshot {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs[cf_index(cf)?].get(key).cloned())
    }

    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanCallback<'_>,
    ) -> Result<()> {
        scan_map(&self.cfs[cf_index(cf)?], start, end, reverse, f)
    }
}

impl Snapshot for MemSnapshot {}

impl KvEngine for MemEngine {
    type Snapshot = MemSnapshot;
    type WriteBatch = MemWriteBatch;

    fn write_batch(&self) -> MemWriteBatch {
        MemWriteBatch::default()
    }

    fn write(&self, batch: &mut MemWriteBatch, _sync: bool) -> Result<()> {
        let mut cfs = util::write(&self.cfs);
        batch.size = 0;
        for op in batch.ops.drain(..) {
            match op {
                Op::Put(cf, k, v) => {
                    Arc::make_mut(&mut cfs[cf]).insert(k, v);
                }
                Op::Delete(cf, k) => {
                    Arc::make_mut(&mut cfs[cf]).remove(&k);
                }
                Op::DeleteRange(cf, start, end) => {
                    let map = Arc::make_mut(&mut cfs[cf]);
                    let doomed: Vec<Vec<u8>> = map
                        .range::<[u8], _>(bounds(&start, &end))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot { cfs: self.cfs() }
    }

    fn approximate_range_stats(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<RangeStats> {
        let mut stats = RangeStats::default();
        self.scan_cf(cf, start, end, false, &mut |k, v| {
            stats.size += (k.len() + v.len()) as u64;
            stats.keys += 1;
            Ok(true)
        })?;
        Ok(stats)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
