//! A client with a keyspace (API V2), as TiKV's clients do it: every key a caller names is
//! prefixed with the keyspace's raw prefix (`r` + its 3-byte id) before it is sent, and
//! stripped from every key that comes back. PD's routing table holds the memcomparable
//! encoding of such keys, so a lookup sends the encoded key and the region boundaries PD
//! (or a store's EpochNotMatch) returns are decoded before they enter the region cache: the
//! cache and every comparison with its boundaries stay in the form requests carry.

use api_version::keyspace::{self, KeyMode};
use api_version::memcomparable;
use proto::metapb;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub(crate) struct Keyspace {
    pub id: u32,
    prefix: Vec<u8>,
    /// The first key after the keyspace: where "to the end" stops.
    end: Vec<u8>,
}

impl Keyspace {
    /// Keyspace `id`'s keys of `mode` (raw: `r`, transactional: `x`).
    pub fn new(id: u32, mode: KeyMode) -> Keyspace {
        Keyspace {
            id,
            prefix: keyspace::prefix(mode, id),
            end: keyspace::prefix(mode, id + 1),
        }
    }

    /// The key a request carries for the caller's `key`.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    /// The range a request covers for the caller's `[start, end)` (empty `end`: to the end of
    /// the keyspace).
    pub fn range(&self, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let end = if end.is_empty() {
            self.end.clone()
        } else {
            self.key(end)
        };
        (self.key(start), end)
    }

    /// The caller's key for a key a store returned.
    pub fn user_key(&self, key: Vec<u8>) -> Vec<u8> {
        match key.strip_prefix(self.prefix.as_slice()) {
            Some(rest) => rest.to_vec(),
            None => key,
        }
    }

    /// A key as PD's routing table holds it.
    pub fn to_pd(key: &[u8]) -> Vec<u8> {
        if key.is_empty() {
            Vec::new()
        } else {
            memcomparable::encode(key)
        }
    }

    /// A region from PD or a store with its boundaries decoded into request form. Stricter
    /// than tikv-client, which ignores bytes after an encoded key: our stores never make such
    /// boundaries, and one would be a bug to surface, not to route around. A boundary that
    /// decodes to the empty key would read as "no bound" and is refused too.
    pub fn decode_region(mut region: metapb::Region) -> Result<metapb::Region> {
        let id = region.id;
        for key in [&mut region.start_key, &mut region.end_key] {
            if key.is_empty() {
                continue;
            }
            let decoded = memcomparable::decode_exact("region boundary", key).map_err(|e| {
                Error::NotFound {
                    what: format!("a usable boundary of region {id}: {e}"),
                }
            })?;
            if decoded.is_empty() {
                return Err(Error::NotFound {
                    what: format!("a usable boundary of region {id}: one decodes to the empty key"),
                });
            }
            *key = decoded;
        }
        Ok(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_out_and_stripped_back() {
        let ks = Keyspace::new(1, KeyMode::Raw);
        assert_eq!(ks.key(b"k"), b"r\0\0\x01k");
        assert_eq!(ks.user_key(b"r\0\0\x01k".to_vec()), b"k");
        assert_eq!(
            ks.range(b"a", b""),
            (b"r\0\0\x01a".to_vec(), b"r\0\0\x02".to_vec())
        );
        assert_eq!(Keyspace::to_pd(b""), b"");
        let region = metapb::Region {
            id: 9,
            start_key: Keyspace::to_pd(b"r\0\0\x01"),
            end_key: Vec::new(),
            ..Default::default()
        };
        let decoded = Keyspace::decode_region(region).unwrap();
        assert_eq!(decoded.start_key, b"r\0\0\x01");
        let bad = metapb::Region {
            start_key: b"raw".to_vec(),
            ..Default::default()
        };
        assert!(Keyspace::decode_region(bad).is_err());
        let empty = metapb::Region {
            end_key: memcomparable::encode(b""),
            ..Default::default()
        };
        assert!(Keyspace::decode_region(empty).is_err());
    }
}
