//! Raw values under a TTL version (`1ttl`, `2`): the value followed by its expiry, 8 bytes
//! big-endian of Unix seconds, 0 for never. The expiry is computed once, by the leader that
//! proposes the write, so every replica stores the same bytes; whether a value has expired is
//! decided by whoever reads it, against its own clock, so no read depends on when a replica
//! dropped an expired value.

use crate::{Error, Result};

const EXPIRY_LEN: usize = 8;

/// The longest TTL a write may ask for: 10 years. Longer is surely a unit mistake (ms for s).
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// The stored form of `value` that expires at `expire_at` (Unix seconds; 0: never).
pub fn encode(value: &[u8], expire_at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + EXPIRY_LEN);
    out.extend_from_slice(value);
    out.extend_from_slice(&expire_at.to_be_bytes());
    out
}

/// The expiry of a write with `ttl` seconds made at `now` (Unix seconds). 0 is no TTL.
pub fn expire_at(now: u64, ttl: u64) -> u64 {
    if ttl == 0 {
        0
    } else {
        now.saturating_add(ttl)
    }
}

/// A stored value and its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    pub value: &'a [u8],
    /// Unix seconds; 0: never.
    pub expire_at: u64,
}

impl Stored<'_> {
    pub fn is_expired(&self, now: u64) -> bool {
        self.expire_at != 0 && self.expire_at <= now
    }

    /// Seconds left at `now` (0 for a value that never expires, as TiKV answers).
    pub fn ttl_left(&self, now: u64) -> u64 {
        if self.expire_at == 0 {
            0
        } else {
            self.expire_at.saturating_sub(now)
        }
    }
}

/// Splits a stored value into the value and its expiry.
pub fn decode(stored: &[u8]) -> Result<Stored<'_>> {
    let Some(split) = stored.len().checked_sub(EXPIRY_LEN) else {
        return Err(Error::CorruptValue { len: stored.len() });
    };
    let (value, expiry) = stored.split_at(split);
    let mut bytes = [0; EXPIRY_LEN];
    bytes.copy_from_slice(expiry);
    Ok(Stored {
        value,
        expire_at: u64::from_be_bytes(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_expiry() {
        let stored = encode(b"v", expire_at(1000, 30));
        let s = decode(&stored).unwrap();
        assert_eq!((s.value, s.expire_at), (&b"v"[..], 1030));
        assert!(!s.is_expired(1029) && s.is_expired(1030));
        assert_eq!(s.ttl_left(1000), 30);
        let forever = encode(b"", expire_at(1000, 0));
        let s = decode(&forever).unwrap();
        assert_eq!((s.value, s.expire_at), (&b""[..], 0));
        assert!(!s.is_expired(u64::MAX));
        assert_eq!(s.ttl_left(5), 0);
        assert!(matches!(
            decode(b"short"),
            Err(Error::CorruptValue { len: 5 })
        ));
        assert_eq!(expire_at(u64::MAX - 1, 10), u64::MAX);
    }
}
