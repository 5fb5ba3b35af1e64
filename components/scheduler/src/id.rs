//! Ids for regions, peers and stores. The allocator persists an upper bound `batch` ids ahead
//! and hands out ids below it; a restart continues from the persisted bound, so ids lost in a
//! crash are skipped, never reused. Also the cluster's own id, chosen once.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, MetaStore, Result};

const ALLOC_BOUND_KEY: &[u8] = b"meta/alloc_id_bound";
const CLUSTER_ID_KEY: &[u8] = b"meta/cluster_id";

/// The cluster id kept in `store`, or a new one (persisted, synced) if there is none yet. As
/// PD does: seconds since the epoch in the high half, so clusters made on different days never
/// share an id; the low half mixes the nanoseconds with the pid, so two schedulers started in
/// the same second (tests, a script) differ too. Never 0: 0 means "unknown" on the wire.
pub fn load_or_init_cluster_id(store: &dyn MetaStore, wall: SystemTime) -> Result<u64> {
    if let Some(v) = store.get(CLUSTER_ID_KEY)? {
        let id = decode_u64(CLUSTER_ID_KEY, &v)?;
        if id == 0 {
            return Err(Error::Corrupt {
                key: String::from_utf8_lossy(CLUSTER_ID_KEY).into_owned(),
                detail: "cluster id 0".into(),
            });
        }
        return Ok(id);
    }
    let now = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let low = now.subsec_nanos() ^ std::process::id().rotate_left(16);
    let id = ((now.as_secs() << 32) | u64::from(low)).max(1);
    store.put_batch(
        &[(CLUSTER_ID_KEY.to_vec(), id.to_be_bytes().to_vec())],
        true,
    )?;
    Ok(id)
}

pub struct IdAllocator {
    store: Arc<dyn MetaStore>,
    batch: u64,
    /// (next id to hand out, persisted bound: ids below it may be handed out).
    state: Mutex<(u64, u64)>,
}

impl IdAllocator {
    /// Continues from the persisted bound (ids start at 1 in a new cluster).
    pub fn open(store: Arc<dyn MetaStore>, batch: u64) -> Result<IdAllocator> {
        let bound = match store.get(ALLOC_BOUND_KEY)? {
            Some(v) => decode_u64(ALLOC_BOUND_KEY, &v)?,
            None => 1,
        };
        Ok(IdAllocator {
            store,
            batch: batch.max(1),
            state: Mutex::new((bound, bound)),
        })
    }

    /// `count` new ids, ascending.
    pub fn alloc(&self, count: usize) -> Result<Vec<u64>> {
        let count = count as u64;
        let mut state = util::lock(&self.state);
        let (next, bound) = *state;
        if next + count > bound {
            let new_bound = next + count + self.batch;
            self.store.put_batch(
                &[(ALLOC_BOUND_KEY.to_vec(), new_bound.to_be_bytes().to_vec())],
                true,
            )?;
            state.1 = new_bound;
        }
        state.0 = next + count;
        Ok((next..next + count).collect())
    }

    pub fn alloc_one(&self) -> Result<u64> {
        self.alloc(1)?.pop().ok_or_else(|| Error::Invalid {
            detail: "no id allocated".into(),
        })
    }
}

pub(crate) fn decode_u64(key: &[u8], v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            detail: format!("{} bytes, expected 8", v.len()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::MemEngine;

    #[test]
    fn ids_continue_after_a_restart_and_are_never_reused() {
        let store: Arc<dyn MetaStore> = Arc::new(MemEngine::new());
        let ids = IdAllocator::open(store.clone(), 10).unwrap();
        let first = ids.alloc(3).unwrap();
        assert_eq!(first, vec![1, 2, 3]);
        let more = ids.alloc(20).unwrap();
        assert_eq!(more.first(), Some(&4));
        let last = *more.last().unwrap();
        drop(ids);
        // The restart skips what the lost allocator had reserved.
        let ids = IdAllocator::open(store, 10).unwrap();
        let after = ids.alloc_one().unwrap();
        assert!(after > last, "{after} <= {last}");
    }

    #[test]
    fn the_cluster_id_is_chosen_once_and_kept() {
        let store: Arc<dyn MetaStore> = Arc::new(MemEngine::new());
        let id = load_or_init_cluster_id(store.as_ref(), SystemTime::now()).unwrap();
        assert_ne!(id, 0);
        assert_eq!(
            load_or_init_cluster_id(store.as_ref(), SystemTime::now()).unwrap(),
            id
        );
        store
            .put_batch(&[(CLUSTER_ID_KEY.to_vec(), vec![1, 2])], true)
            .unwrap();
        assert!(matches!(
            load_or_init_cluster_id(store.as_ref(), SystemTime::now()),
            Err(Error::Corrupt { .. })
        ));
    }
}
