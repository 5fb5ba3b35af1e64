//! What a raw request's keys and values become in storage under the cluster's API version
//! (the byte rules are in the `api-version` crate):
//!
//! - `1`: keys and values as given; a TTL is refused.
//! - `1ttl`: keys as given; values carry their expiry.
//! - `2`: keys must be raw keys of a keyspace (`r` + 3-byte id) and are stored
//!   memcomparable-encoded, the form region boundaries take under V2; values carry their
//!   expiry. Ranges are clipped to the keyspace they start in, so a raw scan never reads
//!   another keyspace or transactional keys.
//!
//! Expiry is decided when the value is read, by the reader's clock: whether a replica has
//! dropped an expired value yet never changes an answer.

use api_version::keyspace::{self, KeyMode};
use api_version::{memcomparable, ttl, ApiVersion};

/// Why a request or a stored pair cannot be turned into the other form.
#[derive(Debug)]
pub enum CodecError {
    /// The request is wrong for this cluster's version: asking again will not help.
    Invalid(String),
    /// Stored bytes do not decode: the store's data is damaged.
    Corrupt(String),
}

type Result<T> = std::result::Result<T, CodecError>;

fn invalid(e: impl ToString) -> CodecError {
    CodecError::Invalid(e.to_string())
}

/// The raw API's view of storage under one API version.
#[derive(Clone, Copy, Debug)]
pub struct RawCodec {
    version: ApiVersion,
}

impl RawCodec {
    pub fn new(version: ApiVersion) -> RawCodec {
        RawCodec { version }
    }

    pub fn version(&self) -> ApiVersion {
        self.version
    }

    /// A request's `Context.api_version` against the cluster's. V1 and 1ttl clusters take V1
    /// requests (TiKV clients send V1 under 1ttl too); V2 clusters take V2 requests only.
    pub fn check_request_version(&self, asked: i32) -> Result<()> {
        let is_v2 = ApiVersion::request_is_v2(asked)
            .ok_or_else(|| invalid(format!("unknown API version {asked} in the request")))?;
        match (is_v2, self.version) {
            (true, ApiVersion::V2) | (false, ApiVersion::V1 | ApiVersion::V1Ttl) => Ok(()),
            (true, v) => Err(invalid(format!(
                "this cluster runs API version {v}: it takes API V1 requests (a client \
                 without a keyspace); keyspaces need a cluster started with api-version = \"2\""
            ))),
            (false, _) => Err(invalid(
                "this cluster runs API version 2: raw requests must be API V2 (a client with a \
                 keyspace, e.g. tikv-client's Config::default().with_default_keyspace())",
            )),
        }
    }

    /// The stored form of a key a raw request names.
    pub fn key(&self, key: &[u8]) -> Result<Vec<u8>> {
        match self.version {
            ApiVersion::V2 => {
                keyspace::check(key, KeyMode::Raw).map_err(invalid)?;
                Ok(memcomparable::encode(key))
            }
            ApiVersion::V1 | ApiVersion::V1Ttl => Ok(key.to_vec()),
        }
    }

    /// The stored form of the range `[lower, upper)` (`upper` empty: unbounded). Under V2,
    /// `lower` must be a raw key and `upper` is clipped to the end of `lower`'s keyspace: a
    /// client scanning "to the end" sends the next keyspace's prefix, or nothing.
    pub fn range(&self, lower: &[u8], upper: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        match self.version {
            ApiVersion::V2 => {
                let id = keyspace::check(lower, KeyMode::Raw).map_err(invalid)?;
                let keyspace_end = keyspace::prefix(KeyMode::Raw, id + 1);
                let upper = if upper.is_empty() || upper > keyspace_end.as_slice() {
                    keyspace_end.as_slice()
                } else {
                    upper
                };
                Ok((memcomparable::encode(lower), memcomparable::encode(upper)))
            }
            ApiVersion::V1 | ApiVersion::V1Ttl => Ok((lower.to_vec(), upper.to_vec())),
        }
    }

    /// The key a client sees for a stored key.
    pub fn user_key(&self, stored: &[u8]) -> Result<Vec<u8>> {
        match self.version {
            ApiVersion::V2 => memcomparable::decode_exact("stored key", stored)
                .map_err(|e| CodecError::Corrupt(e.to_string())),
            ApiVersion::V1 | ApiVersion::V1Ttl => Ok(stored.to_vec()),
        }
    }

    /// A write's TTL in seconds (0: none): refused where the version has no TTL, and beyond
    /// [`ttl::MAX_TTL_SECS`].
    pub fn check_ttl(&self, ttl: u64) -> Result<()> {
        if ttl == 0 {
            return Ok(());
        }
        if !self.version.has_ttl() {
            return Err(invalid(format!(
                "TTL {ttl} s refused: this cluster runs API version {}, which has no TTL \
                 (start it with api-version = \"1ttl\" or \"2\")",
                self.version
            )));
        }
        if ttl > ttl::MAX_TTL_SECS {
            return Err(invalid(format!(
                "TTL {ttl} s is over the limit of {} s (10 years): seconds, not milliseconds?",
                ttl::MAX_TTL_SECS
            )));
        }
        Ok(())
    }

    /// The stored form of a value written at `now` (Unix seconds) with `ttl` (checked).
    pub fn value(&self, value: &[u8], ttl: u64, now: u64) -> Vec<u8> {
        if self.version.has_ttl() {
            ttl::encode(value, ttl::expire_at(now, ttl))
        } else {
            value.to_vec()
        }
    }

    /// What a read at `now` sees of a stored value: nothing once it has expired.
    pub fn read_value<'a>(&self, stored: &'a [u8], now: u64) -> Result<Option<&'a [u8]>> {
        Ok(self.read(stored, now)?.map(|s| s.value))
    }

    /// Seconds left to live of a stored value at `now`: `None` once expired, `Some(0)` for a
    /// value without a TTL.
    pub fn ttl_left(&self, stored: &[u8], now: u64) -> Result<Option<u64>> {
        Ok(self.read(stored, now)?.map(|s| s.ttl_left(now)))
    }

    fn read<'a>(&self, stored: &'a [u8], now: u64) -> Result<Option<ttl::Stored<'a>>> {
        if !self.version.has_ttl() {
            return Ok(Some(ttl::Stored {
                value: stored,
                expire_at: 0,
            }));
        }
        let s = ttl::decode(stored).map_err(|e| CodecError::Corrupt(e.to_string()))?;
        Ok((!s.is_expired(now)).then_some(s))
    }
}

#[cfg(test)]
mod tests {
    use proto::kvrpcpb::ApiVersion as Wire;

    use super::*;

    #[test]
    fn each_version_takes_its_own_requests() {
        let v1 = RawCodec::new(ApiVersion::V1);
        let ttl = RawCodec::new(ApiVersion::V1Ttl);
        let v2 = RawCodec::new(ApiVersion::V2);
        assert!(v1.check_request_version(Wire::V1 as i32).is_ok());
        assert!(ttl.check_request_version(Wire::V1 as i32).is_ok());
        assert!(v2.check_request_version(Wire::V2 as i32).is_ok());
        assert!(v1.check_request_version(Wire::V2 as i32).is_err());
        assert!(v2.check_request_version(Wire::V1 as i32).is_err());
        assert!(v2.check_request_version(9).is_err());
    }

    #[test]
    fn v2_keys_are_raw_keyspace_keys_stored_encoded() {
        let v2 = RawCodec::new(ApiVersion::V2);
        let stored = v2.key(b"r\0\0\0k1").unwrap();
        assert_eq!(stored, memcomparable::encode(b"r\0\0\0k1"));
        assert_eq!(v2.user_key(&stored).unwrap(), b"r\0\0\0k1");
        assert!(matches!(v2.key(b"x\0\0\0k1"), Err(CodecError::Invalid(_))));
        assert!(matches!(v2.key(b"k1"), Err(CodecError::Invalid(_))));
        assert!(matches!(v2.user_key(b"k1"), Err(CodecError::Corrupt(_))));
        assert_eq!(RawCodec::new(ApiVersion::V1).key(b"k1").unwrap(), b"k1");
    }

    #[test]
    fn v2_ranges_end_at_their_keyspace() {
        let v2 = RawCodec::new(ApiVersion::V2);
        let end = memcomparable::encode(b"r\0\0\x08");
        for upper in [&b""[..], b"r\0\0\x08", b"r\0\0\x09", b"x\0\0\0"] {
            let (lo, hi) = v2.range(b"r\0\0\x07a", upper).unwrap();
            assert_eq!(lo, memcomparable::encode(b"r\0\0\x07a"));
            assert_eq!(hi, end, "upper {upper:?}");
        }
        let (_, hi) = v2.range(b"r\0\0\x07a", b"r\0\0\x07m").unwrap();
        assert_eq!(hi, memcomparable::encode(b"r\0\0\x07m"));
        assert!(v2.range(b"x\0\0\0", b"").is_err());
    }

    #[test]
    fn ttl_is_refused_without_a_ttl_version_and_values_expire_on_read() {
        let v1 = RawCodec::new(ApiVersion::V1);
        assert!(v1.check_ttl(0).is_ok());
        assert!(matches!(v1.check_ttl(5), Err(CodecError::Invalid(_))));
        assert_eq!(v1.value(b"v", 0, 100), b"v");
        let ttl = RawCodec::new(ApiVersion::V1Ttl);
        assert!(ttl.check_ttl(5).is_ok());
        assert!(ttl.check_ttl(ttl::MAX_TTL_SECS + 1).is_err());
        let stored = ttl.value(b"v", 10, 100);
        assert_eq!(ttl.read_value(&stored, 109).unwrap(), Some(&b"v"[..]));
        assert_eq!(ttl.read_value(&stored, 110).unwrap(), None);
        assert_eq!(ttl.ttl_left(&stored, 104).unwrap(), Some(6));
        let forever = ttl.value(b"v", 0, 100);
        assert_eq!(ttl.ttl_left(&forever, u64::MAX).unwrap(), Some(0));
        assert!(matches!(
            ttl.read_value(b"short", 0),
            Err(CodecError::Corrupt(_))
        ));
    }
}
