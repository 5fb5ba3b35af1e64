//! Reads at a timestamp: point get, batch get, forward and reverse scan, and lock scans.
//! A read first raises `max_ts` to its timestamp and checks the in-memory locks, and only
//! then reads its snapshot (see the concurrency module for why the order matters).

use crate::concurrency::ConcurrencyManager;
use crate::snapshot::Snapshot;
use crate::txn::CF_WRITE;
use crate::{key, Error, Lock, MvccReader, Result, Write, WriteType};

/// Where and how a read looks.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    pub ts: u64,
    /// Start timestamps of transactions whose locks the reader may ignore (the client
    /// resolved them: `Context.resolved_locks`).
    pub bypass_locks: Vec<u64>,
}

/// Raises `max_ts` and fails on an in-memory lock that blocks `key` (encoded) at `opts.ts`.
/// Call before taking the snapshot the read uses.
pub fn check_memory_lock(cm: &ConcurrencyManager, key: &[u8], opts: &ReadOptions) -> Result<()> {
    cm.update_max_ts(opts.ts);
    if let Some((raw, lock)) = cm.memory_lock(key) {
        if lock.blocks_read(opts.ts, &opts.bypass_locks) {
            return Err(lock.locked_error(&raw));
        }
    }
    Ok(())
}

/// Like [`check_memory_lock`] for every in-memory lock of `[start, end)` (encoded).
pub fn check_memory_range(
    cm: &ConcurrencyManager,
    start: &[u8],
    end: &[u8],
    opts: &ReadOptions,
) -> Result<()> {
    cm.update_max_ts(opts.ts);
    for (_, raw, lock) in cm.memory_locks_in(start, end) {
        if lock.blocks_read(opts.ts, &opts.bypass_locks) {
            return Err(lock.locked_error(&raw));
        }
    }
    Ok(())
}

fn check_lock(lock: Option<Lock>, raw: &[u8], opts: &ReadOptions) -> Result<()> {
    match lock {
        Some(lock) if lock.blocks_read(opts.ts, &opts.bypass_locks) => Err(lock.locked_error(raw)),
        _ => Ok(()),
    }
}

/// The value of `raw` at `opts.ts` (after [`check_memory_lock`]).
pub fn get<S: Snapshot + ?Sized>(
    reader: &MvccReader<'_, S>,
    raw: &[u8],
    opts: &ReadOptions,
) -> Result<Option<Vec<u8>>> {
    let ek = key::encode(raw);
    check_lock(reader.load_lock(&ek)?, raw, opts)?;
    reader.get(&ek, opts.ts)
}

/// A key's newest visible version while a scan walks its versions.
type Group = Option<(Vec<u8>, Option<(u64, Write)>)>;

/// One scanned key: its value, or the lock that hides it.
pub type ScanItem = (Vec<u8>, Result<Vec<u8>>);

/// Up to `limit` keys of `[start, end)` (encoded; `end` empty: unbounded) visible at
/// `opts.ts`, in order (descending if `reverse`). A blocking lock takes its key's place as
/// an error, and counts towards the limit, as TiKV answers.
pub fn scan<S: Snapshot + ?Sized>(
    reader: &MvccReader<'_, S>,
    (start, end): (&[u8], &[u8]),
    limit: usize,
    key_only: bool,
    reverse: bool,
    opts: &ReadOptions,
) -> Result<Vec<ScanItem>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // The first `limit` blocking locks are all that can make it into the answer.
    let mut locks: Vec<(Vec<u8>, Lock)> = Vec::new();
    let snap = reader.snapshot();
    snap.scan_cf(crate::txn::CF_LOCK, start, end, reverse, &mut |k, v| {
        let lock = Lock::parse(v)?;
        if lock.blocks_read(opts.ts, &opts.bypass_locks) {
            locks.push((k.to_vec(), lock));
        }
        Ok(locks.len() < limit)
    })?;
    // Likewise the first `limit` visible values.
    let mut values: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut group: Group = None;
    let finish = |group: Group, values: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<()> {
        if let Some((ek, Some((_, write)))) = group {
            if write.write_type == WriteType::Put {
                let value = if key_only {
                    Vec::new()
                } else {
                    reader.load_value(&ek, &write)?
                };
                values.push((ek, value));
            }
        }
        Ok(())
    };
    snap.scan_cf(CF_WRITE, start, end, reverse, &mut |k, v| {
        let (ek, commit_ts) = key::split_ts(k)?;
        if group.as_ref().is_none_or(|(g, _)| g.as_slice() != ek) {
            finish(group.take(), &mut values)?;
            if values.len() >= limit {
                return Ok(false);
            }
            group = Some((ek.to_vec(), None));
        }
        if commit_ts > opts.ts {
            return Ok(true);
        }
        let write = Write::parse(v)?;
        if !matches!(write.write_type, WriteType::Put | WriteType::Delete) {
            return Ok(true);
        }
        if let Some((_, newest)) = group.as_mut() {
            // Forward, the first visible version is the newest; in reverse, the last one.
            if reverse || newest.is_none() {
                *newest = Some((commit_ts, write));
            }
        }
        Ok(true)
    })?;
    finish(group.take(), &mut values)?;
    // Merge the two ordered lists; a locked key answers with its lock.
    let mut out: Vec<(Vec<u8>, Result<Vec<u8>>)> = Vec::with_capacity(limit);
    let (mut li, mut vi) = (locks.into_iter().peekable(), values.into_iter().peekable());
    while out.len() < limit {
        let take_lock = match (li.peek(), vi.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((lk, _)), Some((vk, _))) => {
                if lk == vk {
                    vi.next();
                    true
                } else {
                    (lk < vk) != reverse
                }
            }
        };
        if take_lock {
            if let Some((ek, lock)) = li.next() {
                let raw = key::decode(&ek)?;
                let err = lock.locked_error(&raw);
                out.push((raw, Err(err)));
            }
        } else if let Some((ek, value)) = vi.next() {
            out.push((key::decode(&ek)?, Ok(value)));
        }
    }
    Ok(out)
}

/// Locks of `[start, end)` (encoded) taken at or below `max_ts`, up to `limit` (0: all), as
/// clients see them.
pub fn scan_locks<S: Snapshot + ?Sized>(
    reader: &MvccReader<'_, S>,
    (start, end): (&[u8], &[u8]),
    max_ts: u64,
    limit: usize,
) -> Result<Vec<proto::kvrpcpb::LockInfo>> {
    reader
        .scan_locks(start, end, limit, |l| l.start_ts <= max_ts)?
        .into_iter()
        .map(|(ek, lock)| Ok::<_, Error>(lock.to_lock_info(&key::decode(&ek)?)))
        .collect()
}
