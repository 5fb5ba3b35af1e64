//! TiKV's API versions, and what each one means for the bytes a store keeps.
//!
//! A cluster runs one version, chosen when its first store bootstraps and recorded in every
//! store's ident and in the scheduler; a store never serves data written under another.
//!
//! | version | clients | keys stored as | values stored as |
//! |---|---|---|---|
//! | `1` | raw *or* transactional, no TTL | the raw key as given | the value as given |
//! | `1ttl` | raw only, with TTL | the raw key as given | value ++ expiry ([`ttl`]) |
//! | `2` | raw and transactional together, keyspaces, TTL | [`memcomparable`] encoding of the keyspace-prefixed key | value ++ expiry |
//!
//! Region boundaries are always in the stored form, so a range check compares bytes and
//! never decodes. Under `2` they are memcomparable-encoded keys, which is what a TiKV client
//! with a keyspace expects from PD: it encodes a key before asking for its region and
//! decodes the boundaries it gets back.
//!
//! # Invariants
//! - [`memcomparable::encode`] preserves order: `a < b` iff `encode(a) < encode(b)`, and no
//!   encoding is a prefix of another.
//! - A value written under a TTL version always carries its 8-byte expiry, so decoding never
//!   guesses.
//!
//! # Must not depend on
//! Any engine, raftstore or gRPC crate: it is pure byte logic, used by the server (requests),
//! the scheduler (keyspace boundaries) and the clients.

pub mod keyspace;
pub mod memcomparable;
pub mod ttl;

use std::fmt;
use std::str::FromStr;

use proto::kvrpcpb;
use serde::{Deserialize, Serialize};

/// What can be wrong with a key, a value or a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown API version {0:?}: one of \"1\", \"1ttl\", \"2\"")]
    UnknownVersion(String),
    #[error(
        "key {key:?} is not in any keyspace: API V2 keys start with a mode byte ('r' raw, 'x' \
         transactional) and a 3-byte keyspace id"
    )]
    NoKeyspace { key: Vec<u8> },
    #[error("key {key:?} is a {found} key; this request takes {wanted} keys")]
    WrongMode {
        key: Vec<u8>,
        found: keyspace::KeyMode,
        wanted: keyspace::KeyMode,
    },
    #[error("{what} {bytes:?} is not a memcomparable encoding: {detail}")]
    BadEncoding {
        what: &'static str,
        bytes: Vec<u8>,
        detail: &'static str,
    },
    #[error("stored value of {len} bytes is too short for its 8-byte expiry")]
    CorruptValue { len: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A cluster's API version. Written in config files as `"1"`, `"1ttl"` or `"2"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ApiVersion {
    /// Raw or transactional clients, keys as given, no TTL.
    #[default]
    V1,
    /// Raw clients only, keys as given, values carry an expiry.
    V1Ttl,
    /// Keyspaces: raw and transactional clients together, encoded keys, values carry an
    /// expiry.
    V2,
}

impl ApiVersion {
    /// Whether values carry an expiry (and a RawPut may set a TTL).
    pub fn has_ttl(self) -> bool {
        matches!(self, ApiVersion::V1Ttl | ApiVersion::V2)
    }

    /// The version as TiKV's protocol numbers it (a store's ident, a request's context).
    pub fn to_proto(self) -> kvrpcpb::ApiVersion {
        match self {
            ApiVersion::V1 => kvrpcpb::ApiVersion::V1,
            ApiVersion::V1Ttl => kvrpcpb::ApiVersion::V1ttl,
            ApiVersion::V2 => kvrpcpb::ApiVersion::V2,
        }
    }

    pub fn from_proto(v: kvrpcpb::ApiVersion) -> ApiVersion {
        match v {
            kvrpcpb::ApiVersion::V1 => ApiVersion::V1,
            kvrpcpb::ApiVersion::V1ttl => ApiVersion::V1Ttl,
            kvrpcpb::ApiVersion::V2 => ApiVersion::V2,
        }
    }

    /// The version a request's context names: V1 and V1TTL clients both send V1 (the TTL is
    /// the cluster's choice, not the client's), V2 clients send V2.
    pub fn request_is_v2(ctx_api_version: i32) -> Option<bool> {
        match kvrpcpb::ApiVersion::try_from(ctx_api_version) {
            Ok(kvrpcpb::ApiVersion::V2) => Some(true),
            Ok(kvrpcpb::ApiVersion::V1 | kvrpcpb::ApiVersion::V1ttl) => Some(false),
            Err(_) => None,
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiVersion::V1 => "1",
            ApiVersion::V1Ttl => "1ttl",
            ApiVersion::V2 => "2",
        })
    }
}

impl FromStr for ApiVersion {
    type Err = Error;

    fn from_str(s: &str) -> Result<ApiVersion> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "v1" => Ok(ApiVersion::V1),
            "1ttl" | "v1ttl" => Ok(ApiVersion::V1Ttl),
            "2" | "v2" => Ok(ApiVersion::V2),
            _ => Err(Error::UnknownVersion(s.to_string())),
        }
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = Error;

    fn try_from(s: String) -> Result<ApiVersion> {
        s.parse()
    }
}

impl From<ApiVersion> for String {
    fn from(v: ApiVersion) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for v in [ApiVersion::V1, ApiVersion::V1Ttl, ApiVersion::V2] {
            assert_eq!(v.to_string().parse::<ApiVersion>().unwrap(), v);
            assert_eq!(ApiVersion::from_proto(v.to_proto()), v);
        }
        assert_eq!("V2".parse::<ApiVersion>().unwrap(), ApiVersion::V2);
        assert!(matches!(
            "3".parse::<ApiVersion>(),
            Err(Error::UnknownVersion(_))
        ));
        assert!(!ApiVersion::V1.has_ttl());
        assert!(ApiVersion::V1Ttl.has_ttl() && ApiVersion::V2.has_ttl());
    }
}
