//! Reading MVCC records from a snapshot: a key's lock, its versions, and the value a
//! version names. Keys here are encoded user keys (`key::encode`).

use crate::key;
use crate::snapshot::Snapshot;
use crate::txn::{CF_DEFAULT, CF_LOCK, CF_WRITE};
use crate::{Error, Lock, Result, Write, WriteType};

/// What the write CF says about one transaction (by start_ts) on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitRecord {
    /// Committed at `commit_ts` (a Put, Delete or Lock record).
    Committed { commit_ts: u64, write: Write },
    /// A rollback record (or an overlapped one) exists: it can never commit.
    RolledBack,
    /// Neither. `overlapped` is another transaction's record at commit_ts == start_ts, which
    /// a rollback must flag rather than overwrite.
    None { overlapped: Option<Write> },
}

pub struct MvccReader<'a, S: Snapshot + ?Sized> {
    snap: &'a S,
}

/// The exclusive end of every version of `key`: just past its oldest possible version.
fn versions_end(key: &[u8]) -> Vec<u8> {
    let mut end = key::append_ts(key, 0);
    end.push(0);
    end
}

impl<'a, S: Snapshot + ?Sized> MvccReader<'a, S> {
    pub fn new(snap: &'a S) -> MvccReader<'a, S> {
        MvccReader { snap }
    }

    pub fn snapshot(&self) -> &'a S {
        self.snap
    }

    pub fn load_lock(&self, key: &[u8]) -> Result<Option<Lock>> {
        match self.snap.get_cf(CF_LOCK, key)? {
            Some(bytes) => Ok(Some(Lock::parse(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Visits `key`'s versions with commit_ts at or below `ts`, newest first, until `f`
    /// answers false.
    pub fn versions(
        &self,
        key: &[u8],
        ts: u64,
        mut f: impl FnMut(u64, Write) -> Result<bool>,
    ) -> Result<()> {
        let start = key::append_ts(key, ts);
        let end = versions_end(key);
        self.snap
            .scan_cf(CF_WRITE, &start, &end, false, &mut |k, v| {
                let (_, commit_ts) = key::split_ts(k)?;
                f(commit_ts, Write::parse(v)?)
            })
    }

    /// The record at exactly `commit_ts`, if any.
    pub fn write_at(&self, key: &[u8], commit_ts: u64) -> Result<Option<Write>> {
        match self
            .snap
            .get_cf(CF_WRITE, &key::append_ts(key, commit_ts))?
        {
            Some(bytes) => Ok(Some(Write::parse(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The newest version of `key` with commit_ts at or below `ts`, of any type.
    pub fn seek_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let mut found = None;
        self.versions(key, ts, |commit_ts, write| {
            found = Some((commit_ts, write));
            Ok(false)
        })?;
        Ok(found)
    }

    /// The newest Put or Delete of `key` at or below `ts` (Lock and Rollback records change
    /// no value and are passed over).
    pub fn seek_data_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let mut found = None;
        self.versions(key, ts, |commit_ts, write| match write.write_type {
            WriteType::Put | WriteType::Delete => {
                found = Some((commit_ts, write));
                Ok(false)
            }
            WriteType::Lock | WriteType::Rollback => Ok(true),
        })?;
        Ok(found)
    }

    /// The newest commit on `key` (any type but Rollback, which changes nothing) above `ts`.
    pub fn commit_above(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let mut found = None;
        self.versions(key, u64::MAX, |commit_ts, write| {
            if commit_ts <= ts {
                return Ok(false);
            }
            if write.write_type == WriteType::Rollback {
                return Ok(true);
            }
            found = Some((commit_ts, write));
            Ok(false)
        })?;
        Ok(found)
    }

    /// What the write CF records for the transaction at `start_ts` on `key`.
    pub fn commit_record(&self, key: &[u8], start_ts: u64) -> Result<CommitRecord> {
        let mut record = CommitRecord::None { overlapped: None };
        // Its commit (if any) is at or above start_ts: look at everything down to there.
        self.versions(key, u64::MAX, |commit_ts, write| {
            if commit_ts < start_ts {
                return Ok(false);
            }
            if write.start_ts == start_ts {
                record = match write.write_type {
                    WriteType::Rollback => CommitRecord::RolledBack,
                    _ => CommitRecord::Committed { commit_ts, write },
                };
                return Ok(false);
            }
            if commit_ts == start_ts {
                record = if write.has_overlapped_rollback {
                    CommitRecord::RolledBack
                } else {
                    CommitRecord::None {
                        overlapped: Some(write),
                    }
                };
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(record)
    }

    /// The value a Put version names: inline, or in the default CF under its start_ts.
    pub fn load_value(&self, key: &[u8], write: &Write) -> Result<Vec<u8>> {
        if let Some(v) = &write.short_value {
            return Ok(v.as_bytes().to_vec());
        }
        self.snap
            .get_cf(CF_DEFAULT, &key::append_ts(key, write.start_ts))?
            .ok_or_else(|| Error::Corrupt {
                what: "default CF",
                detail: format!(
                    "no value for key {:?} at start_ts {}, which a write record names",
                    key, write.start_ts
                ),
            })
    }

    /// The value of `key` at `ts`, ignoring locks.
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        match self.seek_data_write(key, ts)? {
            Some((_, write)) if write.write_type == WriteType::Put => {
                Ok(Some(self.load_value(key, &write)?))
            }
            _ => Ok(None),
        }
    }

    /// Whether `key` has a value now (at the newest version).
    pub fn exists(&self, key: &[u8]) -> Result<Option<(u64, Write)>> {
        Ok(self
            .seek_data_write(key, u64::MAX)?
            .filter(|(_, w)| w.write_type == WriteType::Put))
    }

    /// Locks of `[start, end)` (encoded; `end` empty: unbounded) for which `keep` holds, in
    /// key order, up to `limit` (0: no limit).
    pub fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        mut keep: impl FnMut(&Lock) -> bool,
    ) -> Result<Vec<(Vec<u8>, Lock)>> {
        let mut out = Vec::new();
        self.snap.scan_cf(CF_LOCK, start, end, false, &mut |k, v| {
            let lock = Lock::parse(v)?;
            if keep(&lock) {
                out.push((k.to_vec(), lock));
            }
            Ok(limit == 0 || out.len() < limit)
        })?;
        Ok(out)
    }
}
