//! Garbage collection of old versions below the GC safe point. A reader at or above the safe
//! point sees, per key, the versions committed above it and the newest one at or below it:
//! everything else goes. That newest one goes too when it is a delete (nothing to see), and
//! Lock and Rollback records at or below the safe point change no value and go.

use crate::snapshot::Snapshot;
use crate::txn::CF_WRITE;
use crate::{key, MvccReader, MvccTxn, Result, Write, WriteType};

/// How far one pass got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcProgress {
    /// Where the next pass starts (an encoded key, or a version inside one); `None`: the
    /// range is done.
    pub next: Option<Vec<u8>>,
    pub versions_scanned: usize,
    pub versions_deleted: usize,
}

/// Collects the deletions for the write CF of `[start, end)` (encoded keys; `end` empty:
/// unbounded) at `safe_point`, stopping after about `limit` versions.
pub fn gc<S: Snapshot + ?Sized>(
    reader: &MvccReader<'_, S>,
    (start, end): (&[u8], &[u8]),
    safe_point: u64,
    limit: usize,
) -> Result<(GcProgress, MvccTxn)> {
    let mut txn = MvccTxn::new();
    let mut progress = GcProgress::default();
    // The key being walked, and whether its newest version at or below the safe point has
    // been met.
    let mut current: Option<(Vec<u8>, bool)> = None;
    let delete = |txn: &mut MvccTxn, ek: &[u8], commit_ts: u64, write: &Write| {
        txn.delete_write(ek, commit_ts);
        if write.write_type == WriteType::Put && write.short_value.is_none() {
            txn.delete_value(ek, write.start_ts);
        }
    };
    reader
        .snapshot()
        .scan_cf(CF_WRITE, start, end, false, &mut |k, v| {
            let (ek, commit_ts) = key::split_ts(k)?;
            if current.as_ref().is_none_or(|(c, _)| c.as_slice() != ek) {
                if progress.versions_scanned >= limit {
                    progress.next = Some(ek.to_vec());
                    return Ok(false);
                }
                current = Some((ek.to_vec(), false));
            } else if progress.versions_scanned >= limit.saturating_mul(8) {
                // A key with very many versions: stop inside it, and go on from this version
                // (the next pass may keep one more version of it than needed: never less).
                progress.next = Some(k.to_vec());
                return Ok(false);
            }
            progress.versions_scanned += 1;
            if commit_ts > safe_point {
                return Ok(true);
            }
            let write = Write::parse(v)?;
            let Some((_, found)) = current.as_mut() else {
                return Ok(true);
            };
            let keep = !*found && write.write_type == WriteType::Put;
            if matches!(write.write_type, WriteType::Put | WriteType::Delete) {
                *found = true;
            }
            if !keep {
                delete(&mut txn, ek, commit_ts, &write);
                progress.versions_deleted += 1;
            }
            Ok(true)
        })?;
    Ok((progress, txn))
}
