//! Keys of the three column families: the encoded user key, with a descending timestamp
//! suffix in the write and default CFs.

use api_version::memcomparable;

use crate::{Error, Result};

const TS_LEN: usize = 8;

/// The lock CF's key for `user_key` (and the prefix of its versions).
pub fn encode(user_key: &[u8]) -> Vec<u8> {
    memcomparable::encode(user_key)
}

/// `encoded` with the timestamp `ts` appended so that newer versions sort first.
pub fn append_ts(encoded: &[u8], ts: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len() + TS_LEN);
    out.extend_from_slice(encoded);
    out.extend_from_slice(&(!ts).to_be_bytes());
    out
}

/// Splits a write or default CF key into the encoded user key and its timestamp.
pub fn split_ts(key: &[u8]) -> Result<(&[u8], u64)> {
    let Some(at) = key.len().checked_sub(TS_LEN) else {
        return Err(Error::Corrupt {
            what: "versioned key",
            detail: format!("{} bytes, shorter than its timestamp", key.len()),
        });
    };
    let (encoded, ts) = key.split_at(at);
    let mut b = [0u8; TS_LEN];
    b.copy_from_slice(ts);
    Ok((encoded, !u64::from_be_bytes(b)))
}

/// The user key of an encoded key (the lock CF's, or a versioned key's first part).
pub fn decode(encoded: &[u8]) -> Result<Vec<u8>> {
    Ok(memcomparable::decode_exact("transactional key", encoded)?)
}

/// A split key for a region holding transactional data: `key` without any timestamp after
/// its encoded user key, so both halves of a key's versions stay in one region.
pub fn truncate_ts(key: &[u8]) -> Result<&[u8]> {
    let (_, rest) = memcomparable::decode("transactional key", key)?;
    Ok(&key[..key.len() - rest.len()])
}

/// `key` without its timestamp if it looks like a versioned key (an encoded user key and
/// exactly 8 more bytes); otherwise `key` itself. For split keys of regions whose kind of
/// data is not known (raw keys do not decode, or decode whole).
pub fn strip_ts_if_versioned(key: &[u8]) -> &[u8] {
    match memcomparable::decode("transactional key", key) {
        Ok((_, rest)) if rest.len() == TS_LEN => &key[..key.len() - TS_LEN],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn versions_split_back_and_truncate_to_their_key() {
        let k = encode(b"k");
        let v = append_ts(&k, 42);
        assert_eq!(split_ts(&v).unwrap(), (k.as_slice(), 42));
        assert_eq!(truncate_ts(&v).unwrap(), k.as_slice());
        assert_eq!(truncate_ts(&k).unwrap(), k.as_slice());
        assert_eq!(decode(&k).unwrap(), b"k");
        assert!(split_ts(b"short").is_err());
        assert!(decode(b"not encoded").is_err());
        assert_eq!(strip_ts_if_versioned(&v), k.as_slice());
        assert_eq!(strip_ts_if_versioned(&k), k.as_slice());
        assert_eq!(strip_ts_if_versioned(b"raw key"), b"raw key");
    }

    proptest! {
        #[test]
        fn newer_versions_sort_first_and_keys_keep_their_order(
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(any::<u8>(), 0..20),
            ta in any::<u64>(),
            tb in any::<u64>(),
        ) {
            let (va, vb) = (append_ts(&encode(&a), ta), append_ts(&encode(&b), tb));
            if a == b {
                prop_assert_eq!(va.cmp(&vb), tb.cmp(&ta));
            } else {
                prop_assert_eq!(va.cmp(&vb), a.cmp(&b));
            }
        }
    }
}
