//! The cluster's key layout: the API version it runs and, under API V2, its keyspaces.
//!
//! - The first store to join chooses the version (its `api-version` setting); every later
//!   store must run the same one, since a store never serves data written under another. A
//!   cluster bootstrapped before the version was recorded runs V1: that is what its data was
//!   written under.
//! - Under V2, keyspace DEFAULT (id 0) always exists; more are created by name, with the next
//!   free id. Each keyspace's boundaries in both modes (`r` raw, `x` transactional) are region
//!   boundaries: [`Keyspaces::split_keys_inside`] names the ones a region still straddles,
//!   and the scheduler splits it there (PD does the same when a keyspace is created).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use api_version::keyspace::{self as ks, DEFAULT_KEYSPACE_ID, DEFAULT_KEYSPACE_NAME};
use api_version::ApiVersion;
use prost::Message as _;
use proto::keyspacepb::{KeyspaceMeta, KeyspaceState};

use crate::{Error, MetaStore, Result};

const API_VERSION_KEY: &[u8] = b"meta/api_version";
const KEYSPACE_PREFIX: &[u8] = b"keyspaces/";
/// Longest keyspace name.
pub const MAX_NAME_LEN: usize = 64;

fn keyspace_key(id: u32) -> Vec<u8> {
    let mut key = KEYSPACE_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

#[derive(Default)]
struct State {
    /// `None` until the first store's check records it.
    api_version: Option<ApiVersion>,
    keyspaces: BTreeMap<u32, KeyspaceMeta>,
}

pub struct Keyspaces {
    store: Arc<dyn MetaStore>,
    state: Mutex<State>,
}

impl Keyspaces {
    pub fn open(store: Arc<dyn MetaStore>) -> Result<Keyspaces> {
        let mut state = State::default();
        if let Some(v) = store.get(API_VERSION_KEY)? {
            state.api_version = Some(decode_version(&v)?);
        }
        for (key, value) in store.scan_prefix(KEYSPACE_PREFIX)? {
            let meta = KeyspaceMeta::decode(value.as_slice()).map_err(|e| Error::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                detail: e.to_string(),
            })?;
            state.keyspaces.insert(meta.id, meta);
        }
        Ok(Keyspaces {
            store,
            state: Mutex::new(state),
        })
    }

    /// The cluster's API version, if a store has chosen it.
    pub fn api_version(&self) -> Option<ApiVersion> {
        util::lock(&self.state).api_version
    }

    /// A joining store's version: recorded (synced) if it is the first, otherwise answered
    /// with the cluster's, which the store must match. `bootstrapped`: the cluster holds data
    /// already (so an unrecorded version is V1). Choosing V2 creates keyspace DEFAULT.
    pub fn check_api_version(
        &self,
        asked: ApiVersion,
        bootstrapped: bool,
        now_secs: i64,
    ) -> Result<ApiVersion> {
        let mut state = util::lock(&self.state);
        if let Some(v) = state.api_version {
            return Ok(v);
        }
        let chosen = if bootstrapped { ApiVersion::V1 } else { asked };
        let mut puts = vec![(API_VERSION_KEY.to_vec(), chosen.to_string().into_bytes())];
        let default = (chosen == ApiVersion::V2
            && !state.keyspaces.contains_key(&DEFAULT_KEYSPACE_ID))
        .then(|| meta(DEFAULT_KEYSPACE_ID, DEFAULT_KEYSPACE_NAME, now_secs));
        if let Some(m) = &default {
            puts.push((keyspace_key(m.id), m.encode_to_vec()));
        }
        self.store.put_batch(&puts, true)?;
        state.api_version = Some(chosen);
        if let Some(m) = default {
            state.keyspaces.insert(m.id, m);
        }
        Ok(chosen)
    }

    fn require_v2(state: &State) -> Result<()> {
        match state.api_version {
            Some(ApiVersion::V2) => Ok(()),
            other => Err(Error::KeyspacesNeedV2 {
                api_version: other.map_or_else(|| "not chosen yet".into(), |v| v.to_string()),
            }),
        }
    }

    /// The keyspace named `name`.
    pub fn load(&self, name: &str) -> Result<KeyspaceMeta> {
        let state = util::lock(&self.state);
        Self::require_v2(&state)?;
        state
            .keyspaces
            .values()
            .find(|m| m.name == name)
            .cloned()
            .ok_or_else(|| Error::KeyspaceNotFound {
                name: name.to_string(),
            })
    }

    /// Keyspaces from id `start` on, at most `limit` (0: all).
    pub fn list(&self, start: u32, limit: usize) -> Result<Vec<KeyspaceMeta>> {
        let state = util::lock(&self.state);
        Self::require_v2(&state)?;
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(state
            .keyspaces
            .range(start..)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    /// Creates keyspace `name` with the next free id (synced before it is answered).
    pub fn create(&self, name: &str, now_secs: i64) -> Result<KeyspaceMeta> {
        let invalid = |detail: String| Error::Invalid { detail };
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "keyspace name {name:?}: 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, _ and -"
            )));
        }
        let mut state = util::lock(&self.state);
        Self::require_v2(&state)?;
        if let Some(m) = state.keyspaces.values().find(|m| m.name == name) {
            return Err(invalid(format!(
                "keyspace {name:?} exists already (id {})",
                m.id
            )));
        }
        let id = state.keyspaces.keys().next_back().map_or(0, |id| id + 1);
        // The last id is never handed out: a client's "to the end of keyspace id" is the
        // prefix of id + 1, which for the last id wraps to keyspace 0 (tikv-client 0.4).
        if id >= ks::MAX_KEYSPACE_ID {
            return Err(invalid(format!(
                "no keyspace id left: ids go up to {}",
                ks::MAX_KEYSPACE_ID - 1
            )));
        }
        let m = meta(id, name, now_secs);
        self.store
            .put_batch(&[(keyspace_key(id), m.encode_to_vec())], true)?;
        state.keyspaces.insert(id, m.clone());
        Ok(m)
    }

    /// The keyspace boundaries (stored, encoded form) strictly inside `[start, end)` (`end`
    /// empty: unbounded), in order: where a region must still split. Empty unless V2. At
    /// most `max` (the rest split later). Work grows with the number of keyspaces.
    pub fn split_keys_inside(&self, start: &[u8], end: &[u8], max: usize) -> Vec<Vec<u8>> {
        let state = util::lock(&self.state);
        if state.api_version != Some(ApiVersion::V2) {
            return Vec::new();
        }
        let mut keys: Vec<Vec<u8>> = state
            .keyspaces
            .keys()
            .flat_map(|id| ks::split_keys(*id))
            .filter(|k| k.as_slice() > start && (end.is_empty() || k.as_slice() < end))
            .collect();
        keys.sort();
        keys.dedup();
        keys.truncate(max);
        keys
    }
}

fn meta(id: u32, name: &str, now_secs: i64) -> KeyspaceMeta {
    KeyspaceMeta {
        id,
        name: name.to_string(),
        state: KeyspaceState::Enabled as i32,
        created_at: now_secs,
        state_changed_at: now_secs,
        config: Default::default(),
    }
}

fn decode_version(v: &[u8]) -> Result<ApiVersion> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: String::from_utf8_lossy(API_VERSION_KEY).into_owned(),
            detail: format!("{v:?} is not an API version"),
        })
}

#[cfg(test)]
mod tests {
    use api_version::memcomparable::encode;

    use super::*;

    fn open() -> (Arc<dyn MetaStore>, Keyspaces) {
        let meta: Arc<dyn MetaStore> = Arc::new(engine::MemEngine::new());
        let ks = Keyspaces::open(meta.clone()).unwrap();
        (meta, ks)
    }

    #[test]
    fn the_first_store_chooses_and_the_choice_survives_a_restart() {
        let (meta, ks) = open();
        assert_eq!(ks.api_version(), None);
        assert_eq!(
            ks.check_api_version(ApiVersion::V2, false, 1).unwrap(),
            ApiVersion::V2
        );
        assert_eq!(
            ks.check_api_version(ApiVersion::V1, true, 1).unwrap(),
            ApiVersion::V2,
            "a later store is told the cluster's version"
        );
        let reopened = Keyspaces::open(meta).unwrap();
        assert_eq!(reopened.api_version(), Some(ApiVersion::V2));
        assert_eq!(reopened.load("DEFAULT").unwrap().id, 0);
    }

    #[test]
    fn a_cluster_bootstrapped_before_versions_were_recorded_runs_v1() {
        let (_, ks) = open();
        assert_eq!(
            ks.check_api_version(ApiVersion::V2, true, 1).unwrap(),
            ApiVersion::V1
        );
        assert!(matches!(
            ks.load("DEFAULT"),
            Err(Error::KeyspacesNeedV2 { .. })
        ));
        assert!(ks.split_keys_inside(b"", b"", 64).is_empty());
    }

    #[test]
    fn a_corrupt_record_is_an_error() {
        let (meta, _) = open();
        meta.put_batch(&[(API_VERSION_KEY.to_vec(), b"7".to_vec())], true)
            .unwrap();
        assert!(matches!(Keyspaces::open(meta), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn keyspaces_are_created_by_name_listed_and_persisted() {
        let (meta, ks) = open();
        ks.check_api_version(ApiVersion::V2, false, 10).unwrap();
        let a = ks.create("alpha", 20).unwrap();
        assert_eq!((a.id, a.created_at), (1, 20));
        assert!(ks.create("alpha", 21).is_err(), "names are unique");
        assert!(ks.create("", 21).is_err());
        assert!(ks.create("no spaces", 21).is_err());
        assert!(matches!(
            ks.load("nope"),
            Err(Error::KeyspaceNotFound { .. })
        ));
        let reopened = Keyspaces::open(meta).unwrap();
        let names: Vec<String> = reopened
            .list(0, 0)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["DEFAULT", "alpha"]);
        assert_eq!(reopened.list(1, 1).unwrap()[0].name, "alpha");
        assert_eq!(reopened.create("beta", 30).unwrap().id, 2);
    }

    #[test]
    fn regions_split_at_every_keyspace_boundary_they_straddle() {
        let (_, ks) = open();
        ks.check_api_version(ApiVersion::V2, false, 0).unwrap();
        let all = ks.split_keys_inside(b"", b"", 64);
        assert_eq!(
            all,
            [
                encode(b"r\0\0\0"),
                encode(b"r\0\0\x01"),
                encode(b"x\0\0\0"),
                encode(b"x\0\0\x01")
            ]
        );
        // A region already cut at them has nothing left to split.
        assert!(ks
            .split_keys_inside(&encode(b"r\0\0\0"), &encode(b"r\0\0\x01"), 64)
            .is_empty());
        ks.create("one", 0).unwrap();
        let inside = ks.split_keys_inside(&encode(b"r\0\0\x01"), &encode(b"x"), 64);
        assert_eq!(inside, [encode(b"r\0\0\x02")]);
        assert_eq!(ks.split_keys_inside(b"", b"", 2).len(), 2, "at most max");
    }
}
