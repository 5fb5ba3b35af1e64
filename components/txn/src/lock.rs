//! The lock CF's record: a transaction's claim on a key between prewrite and commit.

use proto::kvrpcpb::{LockInfo, Op};

use crate::codec::{put_bytes, put_varint, Reader};
use crate::write::ShortValue;
use crate::Result;

const SHORT_VALUE_TAG: u8 = b'v';
const FOR_UPDATE_TS_TAG: u8 = b'f';
const TXN_SIZE_TAG: u8 = b't';
const MIN_COMMIT_TS_TAG: u8 = b'c';
const ASYNC_COMMIT_TAG: u8 = b'a';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockType {
    Put,
    Delete,
    /// Locks the key without changing it (`lock_keys`, CheckNotExists on commit).
    Lock,
    /// A pessimistic lock, taken before prewrite; it blocks no reader.
    Pessimistic,
}

impl LockType {
    fn byte(self) -> u8 {
        match self {
            LockType::Put => b'P',
            LockType::Delete => b'D',
            LockType::Lock => b'L',
            LockType::Pessimistic => b'S',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub lock_type: LockType,
    /// The transaction's primary key: its status decides the transaction's.
    pub primary: Vec<u8>,
    pub start_ts: u64,
    /// Milliseconds the lock lives from `start_ts`'s physical time, unless heartbeats extend it.
    pub ttl: u64,
    pub short_value: Option<ShortValue>,
    /// Pessimistic transactions: the timestamp their conflicts are checked against.
    pub for_update_ts: u64,
    pub txn_size: u64,
    /// No commit may happen below it (async commit, and readers pushing it).
    pub min_commit_ts: u64,
    pub use_async_commit: bool,
    /// Async commit: the other keys of the transaction, kept on the primary.
    pub secondaries: Vec<Vec<u8>>,
}

impl Lock {
    pub fn new(lock_type: LockType, primary: Vec<u8>, start_ts: u64, ttl: u64) -> Lock {
        Lock {
            lock_type,
            primary,
            start_ts,
            ttl,
            short_value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            secondaries: Vec::new(),
        }
    }

    /// What a client sees of this lock on `key` (raw, as the client names it).
    pub fn to_lock_info(&self, key: &[u8]) -> LockInfo {
        LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.start_ts,
            key: key.to_vec(),
            // A client reads a zero TTL as "no lock" (tikv-client's status decoding): a lock
            // always reports at least 1 ms.
            lock_ttl: self.ttl.max(1),
            txn_size: self.txn_size,
            lock_type: match self.lock_type {
                LockType::Put => Op::Put,
                LockType::Delete => Op::Del,
                LockType::Lock => Op::Lock,
                LockType::Pessimistic => Op::PessimisticLock,
            } as i32,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
            ..Default::default()
        }
    }

    /// Whether this lock hides `key`'s value from a reader at `ts`: it may commit at or below
    /// `ts`. Lock-only and pessimistic locks never change a value, a lock whose
    /// `min_commit_ts` is above `ts` commits above it, and the reader may already know the
    /// transaction's outcome (`bypass`: the request's resolved locks).
    pub fn blocks_read(&self, ts: u64, bypass: &[u64]) -> bool {
        self.start_ts <= ts
            && matches!(self.lock_type, LockType::Put | LockType::Delete)
            && self.min_commit_ts <= ts
            && !bypass.contains(&self.start_ts)
    }

    /// The error a reader (or a writer of another transaction) gets for meeting this lock.
    pub fn locked_error(&self, key: &[u8]) -> crate::Error {
        crate::Error::KeyIsLocked {
            lock: Box::new(self.to_lock_info(key)),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.primary.len());
        out.push(self.lock_type.byte());
        put_bytes(&mut out, &self.primary);
        put_varint(&mut out, self.start_ts);
        put_varint(&mut out, self.ttl);
        if let Some(v) = &self.short_value {
            out.push(SHORT_VALUE_TAG);
            v.encode_to(&mut out);
        }
        for (tag, value) in [
            (FOR_UPDATE_TS_TAG, self.for_update_ts),
            (TXN_SIZE_TAG, self.txn_size),
            (MIN_COMMIT_TS_TAG, self.min_commit_ts),
        ] {
            if value != 0 {
                out.push(tag);
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        if self.use_async_commit {
            out.push(ASYNC_COMMIT_TAG);
            put_varint(&mut out, self.secondaries.len() as u64);
            for key in &self.secondaries {
                put_bytes(&mut out, key);
            }
        }
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Lock> {
        let mut r = Reader::new("lock record", bytes);
        let lock_type = match r.byte()? {
            b'P' => LockType::Put,
            b'D' => LockType::Delete,
            b'L' => LockType::Lock,
            b'S' => LockType::Pessimistic,
            other => return Err(r.corrupt(format!("unknown lock type {other:#x}"))),
        };
        let primary = r.bytes()?.to_vec();
        let start_ts = r.varint()?;
        let ttl = r.varint()?;
        let mut lock = Lock::new(lock_type, primary, start_ts, ttl);
        while !r.is_empty() {
            match r.byte()? {
                SHORT_VALUE_TAG => lock.short_value = Some(ShortValue::decode_from(&mut r)?),
                FOR_UPDATE_TS_TAG => lock.for_update_ts = r.u64()?,
                TXN_SIZE_TAG => lock.txn_size = r.u64()?,
                MIN_COMMIT_TS_TAG => lock.min_commit_ts = r.u64()?,
                ASYNC_COMMIT_TAG => {
                    lock.use_async_commit = true;
                    let n = r.varint()?;
                    for _ in 0..n {
                        lock.secondaries.push(r.bytes()?.to_vec());
                    }
                }
                other => return Err(r.corrupt(format!("unknown field tag {other:#x}"))),
            }
        }
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Error;

    #[test]
    fn damage_is_an_error_not_a_default() {
        let good = Lock::new(LockType::Put, b"p".to_vec(), 5, 3000).to_bytes();
        assert!(Lock::parse(&good).is_ok());
        for bad in [
            &b""[..],
            b"X",
            &good[..good.len() - 1],
            &[good.as_slice(), b"?"].concat(),
            &[good.as_slice(), b"f\x00"].concat(),
            &[good.as_slice(), b"a\x02\x01k"].concat(),
        ] {
            assert!(
                matches!(Lock::parse(bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }

    fn lock_type() -> impl Strategy<Value = LockType> {
        prop_oneof![
            Just(LockType::Put),
            Just(LockType::Delete),
            Just(LockType::Lock),
            Just(LockType::Pessimistic),
        ]
    }

    proptest! {
        #[test]
        fn every_lock_round_trips(
            lock_type in lock_type(),
            primary in proptest::collection::vec(any::<u8>(), 0..40),
            start_ts in any::<u64>(),
            ttl in any::<u64>(),
            short_value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255)),
            for_update_ts in any::<u64>(),
            txn_size in any::<u64>(),
            min_commit_ts in any::<u64>(),
            secondaries in proptest::option::of(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 0..5)
            ),
        ) {
            let lock = Lock {
                lock_type,
                primary,
                start_ts,
                ttl,
                short_value: short_value.and_then(ShortValue::new),
                for_update_ts,
                txn_size,
                min_commit_ts,
                use_async_commit: secondaries.is_some(),
                secondaries: secondaries.unwrap_or_default(),
            };
            prop_assert_eq!(Lock::parse(&lock.to_bytes()).unwrap(), lock);
        }
    }
}
