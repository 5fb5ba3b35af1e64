//! The cluster's key layout: the API version it runs. The first store to join chooses it
//! (its `api-version` setting); every later store must run the same one, since a store never
//! serves data written under another version. A cluster bootstrapped before the version was
//! recorded runs V1: that is what its data was written under.

use std::sync::{Arc, Mutex};

use api_version::ApiVersion;

use crate::{Error, MetaStore, Result};

const API_VERSION_KEY: &[u8] = b"meta/api_version";

pub struct Keyspaces {
    store: Arc<dyn MetaStore>,
    /// `None` until the first store's check records it.
    api_version: Mutex<Option<ApiVersion>>,
}

impl Keyspaces {
    pub fn open(store: Arc<dyn MetaStore>) -> Result<Keyspaces> {
        let api_version = match store.get(API_VERSION_KEY)? {
            Some(v) => Some(decode_version(&v)?),
            None => None,
        };
        Ok(Keyspaces {
            store,
            api_version: Mutex::new(api_version),
        })
    }

    /// The cluster's API version, if a store has chosen it.
    pub fn api_version(&self) -> Option<ApiVersion> {
        *util::lock(&self.api_version)
    }

    /// A joining store's version: recorded (synced) if it is the first, otherwise answered
    /// with the cluster's, which the store must match. `bootstrapped`: the cluster holds data
    /// already (so an unrecorded version is V1).
    pub fn check_api_version(&self, asked: ApiVersion, bootstrapped: bool) -> Result<ApiVersion> {
        let mut current = util::lock(&self.api_version);
        if let Some(v) = *current {
            return Ok(v);
        }
        let chosen = if bootstrapped { ApiVersion::V1 } else { asked };
        self.store.put_batch(
            &[(API_VERSION_KEY.to_vec(), chosen.to_string().into_bytes())],
            true,
        )?;
        *current = Some(chosen);
        Ok(chosen)
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
    use super::*;

    #[test]
    fn the_first_store_chooses_and_the_choice_survives_a_restart() {
        let meta: Arc<dyn MetaStore> = Arc::new(engine::MemEngine::new());
        let ks = Keyspaces::open(meta.clone()).unwrap();
        assert_eq!(ks.api_version(), None);
        assert_eq!(
            ks.check_api_version(ApiVersion::V2, false).unwrap(),
            ApiVersion::V2
        );
        assert_eq!(
            ks.check_api_version(ApiVersion::V1, true).unwrap(),
            ApiVersion::V2,
            "a later store is told the cluster's version"
        );
        let reopened = Keyspaces::open(meta).unwrap();
        assert_eq!(reopened.api_version(), Some(ApiVersion::V2));
    }

    #[test]
    fn a_cluster_bootstrapped_before_versions_were_recorded_runs_v1() {
        let ks = Keyspaces::open(Arc::new(engine::MemEngine::new())).unwrap();
        assert_eq!(
            ks.check_api_version(ApiVersion::V2, true).unwrap(),
            ApiVersion::V1
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error() {
        let meta: Arc<dyn MetaStore> = Arc::new(engine::MemEngine::new());
        meta.put_batch(&[(API_VERSION_KEY.to_vec(), b"7".to_vec())], true)
            .unwrap();
        assert!(matches!(Keyspaces::open(meta), Err(Error::Corrupt { .. })));
    }
}
