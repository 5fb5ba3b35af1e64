//! API V2 key prefixes: a mode byte ('r' raw, 'x' transactional) and a 3-byte big-endian
//! keyspace id. A keyspace of one mode is the key range `[prefix(id), prefix(id + 1))`.

use std::fmt;

use crate::{memcomparable, Error, Result};

pub const PREFIX_LEN: usize = 4;
/// The largest keyspace id: the id is 3 bytes.
pub const MAX_KEYSPACE_ID: u32 = (1 << 24) - 1;
/// The keyspace every V2 cluster has, named "DEFAULT".
pub const DEFAULT_KEYSPACE_ID: u32 = 0;
pub const DEFAULT_KEYSPACE_NAME: &str = "DEFAULT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyMode {
    Raw,
    Txn,
}

impl KeyMode {
    pub fn byte(self) -> u8 {
        match self {
            KeyMode::Raw => b'r',
            KeyMode::Txn => b'x',
        }
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyMode::Raw => "raw ('r')",
            KeyMode::Txn => "transactional ('x')",
        })
    }
}

/// The first key of keyspace `id` in `mode`. `id` may be `MAX_KEYSPACE_ID + 1`: the end of
/// the last keyspace, which is the next mode byte's first key.
pub fn prefix(mode: KeyMode, id: u32) -> Vec<u8> {
    if id > MAX_KEYSPACE_ID {
        return vec![mode.byte() + 1, 0, 0, 0];
    }
    let [_, a, b, c] = id.to_be_bytes();
    vec![mode.byte(), a, b, c]
}

/// The mode and keyspace id of a V2 key.
pub fn parse(key: &[u8]) -> Result<(KeyMode, u32)> {
    let no_keyspace = || Error::NoKeyspace { key: key.to_vec() };
    if key.len() < PREFIX_LEN {
        return Err(no_keyspace());
    }
    let mode = match key[0] {
        b'r' => KeyMode::Raw,
        b'x' => KeyMode::Txn,
        _ => return Err(no_keyspace()),
    };
    let id = u32::from_be_bytes([0, key[1], key[2], key[3]]);
    Ok((mode, id))
}

/// Checks that `key` is a V2 key of `mode`; returns its keyspace id.
pub fn check(key: &[u8], mode: KeyMode) -> Result<u32> {
    let (found, id) = parse(key)?;
    if found != mode {
        return Err(Error::WrongMode {
            key: key.to_vec(),
            found,
            wanted: mode,
        });
    }
    Ok(id)
}

/// The region boundaries that keep keyspace `id` apart from its neighbours in both modes, in
/// stored (encoded) form and in order: PD's split keys for a new keyspace.
pub fn split_keys(id: u32) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(4);
    for mode in [KeyMode::Raw, KeyMode::Txn] {
        keys.push(memcomparable::encode(&prefix(mode, id)));
        keys.push(memcomparable::encode(&prefix(mode, id + 1)));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_back_and_order_by_id() {
        assert_eq!(prefix(KeyMode::Raw, 0), b"r\0\0\0");
        assert_eq!(prefix(KeyMode::Txn, 0x010203), b"x\x01\x02\x03");
        assert_eq!(prefix(KeyMode::Raw, MAX_KEYSPACE_ID + 1), b"s\0\0\0");
        assert_eq!(parse(b"r\0\0\x07abc").unwrap(), (KeyMode::Raw, 7));
        assert!(prefix(KeyMode::Raw, 1) < prefix(KeyMode::Raw, 2));
        let keys = split_keys(0);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn keys_outside_a_keyspace_or_of_the_other_mode_are_refused() {
        assert!(matches!(parse(b"r\0\0"), Err(Error::NoKeyspace { .. })));
        assert!(matches!(parse(b"k0001"), Err(Error::NoKeyspace { .. })));
        assert!(matches!(
            check(b"x\0\0\0k", KeyMode::Raw),
            Err(Error::WrongMode { .. })
        ));
        assert_eq!(check(b"r\0\0\x01k", KeyMode::Raw).unwrap(), 1);
    }
}
