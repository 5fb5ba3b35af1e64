//! The memcomparable encoding of byte strings that TiKV (and its clients) use for region
//! boundaries under API V2 and for transactional keys: the key in groups of 8 bytes, the last
//! padded with zeros, each group followed by a marker byte `0xFF - padding`. Byte order of the
//! encodings is the order of the keys, and no encoding is a prefix of another, so a suffix
//! (a timestamp) can follow an encoded key without changing its order.

use crate::{Error, Result};

const GROUP: usize = 8;
const MARKER: u8 = 0xFF;

/// The encoded length of a key of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    (len / GROUP + 1) * (GROUP + 1)
}

/// Encodes `key`.
pub fn encode(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(key.len()));
    encode_into(key, &mut out);
    out
}

/// Appends the encoding of `key` to `out`.
pub fn encode_into(key: &[u8], out: &mut Vec<u8>) {
    let mut groups = key.chunks_exact(GROUP);
    for group in groups.by_ref() {
        out.extend_from_slice(group);
        out.push(MARKER);
    }
    // The last group is always partial (possibly empty): it carries the end.
    let rest = groups.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.resize(out.len() + pad, 0);
    out.push(MARKER - pad as u8);
}

/// Decodes the encoded key at the start of `data`; returns it and what follows it (a
/// timestamp suffix, or nothing). `what` names the bytes in the error ("region start key").
pub fn decode<'a>(what: &'static str, data: &'a [u8]) -> Result<(Vec<u8>, &'a [u8])> {
    let bad = |detail| Error::BadEncoding {
        what,
        bytes: data.to_vec(),
        detail,
    };
    let mut key = Vec::with_capacity(data.len() / (GROUP + 1) * GROUP);
    let mut at = 0;
    loop {
        let Some(unit) = data.get(at..at + GROUP + 1) else {
            return Err(bad("it ends inside a group"));
        };
        at += GROUP + 1;
        let pad = usize::from(MARKER - unit[GROUP]);
        if pad == 0 {
            key.extend_from_slice(&unit[..GROUP]);
            continue;
        }
        if pad > GROUP {
            return Err(bad("a group's marker is out of range"));
        }
        let (bytes, padding) = unit[..GROUP].split_at(GROUP - pad);
        if padding.iter().any(|b| *b != 0) {
            return Err(bad("a group's padding is not zeros"));
        }
        key.extend_from_slice(bytes);
        return Ok((key, &data[at..]));
    }
}

/// Decodes `data`, which must be exactly one encoded key.
pub fn decode_exact(what: &'static str, data: &[u8]) -> Result<Vec<u8>> {
    let (key, rest) = decode(what, data)?;
    if !rest.is_empty() {
        return Err(Error::BadEncoding {
            what,
            bytes: data.to_vec(),
            detail: "bytes follow the encoded key",
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_encodings() {
        assert_eq!(encode(b""), [0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(encode(b"r"), [b'r', 0, 0, 0, 0, 0, 0, 0, 0xF8]);
        assert_eq!(
            encode(b"12345678"),
            [b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0xF7]
        );
        assert_eq!(encode(b"123456789").len(), encoded_len(9));
    }

    #[test]
    fn malformed_encodings_are_errors() {
        assert!(decode("k", b"").is_err());
        assert!(decode("k", &[1, 2, 3]).is_err());
        // Marker says 9 bytes of padding.
        assert!(decode("k", &[0, 0, 0, 0, 0, 0, 0, 0, 0xF6]).is_err());
        // Padding that is not zeros.
        assert!(decode("k", &[b'a', 1, 0, 0, 0, 0, 0, 0, 0xF8]).is_err());
        // A full group with nothing after it.
        assert!(decode("k", &[b'a'; 9].map(|_| 0xFF)).is_err());
        let mut trailing = encode(b"a");
        trailing.push(7);
        assert!(decode_exact("k", &trailing).is_err());
        assert_eq!(decode("k", &trailing).unwrap(), (b"a".to_vec(), &[7][..]));
    }

    proptest! {
        #[test]
        fn round_trips_and_keeps_order(a in proptest::collection::vec(any::<u8>(), 0..40),
                                       b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (ea, eb) = (encode(&a), encode(&b));
            prop_assert_eq!(decode_exact("a", &ea).unwrap(), a.clone());
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            if a != b {
                prop_assert!(!ea.starts_with(&eb) && !eb.starts_with(&ea));
            }
        }
    }
}
