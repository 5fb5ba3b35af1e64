//! The cluster's GC safe point: the timestamp below which MVCC versions that are not the newest
//! may be removed. A client (TiDB's GC worker, or an operator) advances it with PD's
//! `UpdateGCSafePoint`; stores read it to decide what their GC may drop.
//!
//! It only moves forward: an update below the one in force changes nothing and answers the
//! one in force, as PD does. An update is written (synced) before it is answered, so a
//! restarted scheduler never hands out a lower safe point than one it answered.

use std::sync::{Arc, Mutex};

use crate::id::decode_u64;
use crate::{MetaStore, Result};

const GC_SAFE_POINT_KEY: &[u8] = b"meta/gc_safe_point";

pub struct GcSafePoint {
    store: Arc<dyn MetaStore>,
    /// The safe point in force; updates hold the lock through their write so two racing
    /// updates cannot persist out of order.
    current: Mutex<u64>,
}

impl GcSafePoint {
    pub fn open(store: Arc<dyn MetaStore>) -> Result<GcSafePoint> {
        let current = match store.get(GC_SAFE_POINT_KEY)? {
            Some(v) => decode_u64(GC_SAFE_POINT_KEY, &v)?,
            None => 0,
        };
        Ok(GcSafePoint {
            store,
            current: Mutex::new(current),
        })
    }

    /// The safe point in force (0 before any update).
    pub fn get(&self) -> u64 {
        *util::lock(&self.current)
    }

    /// Moves the safe point to `safe_point` if that is ahead of the one in force. Returns the
    /// safe point in force afterwards.
    pub fn update(&self, safe_point: u64) -> Result<u64> {
        let mut current = util::lock(&self.current);
        if safe_point > *current {
            self.store.put_batch(
                &[(
                    GC_SAFE_POINT_KEY.to_vec(),
                    safe_point.to_be_bytes().to_vec(),
                )],
                true,
            )?;
            *current = safe_point;
        }
        Ok(*current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<dyn MetaStore> {
        Arc::new(engine::MemEngine::new())
    }

    #[test]
    fn only_moves_forward_and_survives_a_restart() {
        let meta = store();
        let gc = GcSafePoint::open(meta.clone()).unwrap();
        assert_eq!(gc.get(), 0);
        assert_eq!(gc.update(100).unwrap(), 100);
        assert_eq!(
            gc.update(50).unwrap(),
            100,
            "a lower update answers the one in force"
        );
        assert_eq!(gc.update(100).unwrap(), 100);
        assert_eq!(gc.update(150).unwrap(), 150);
        let reopened = GcSafePoint::open(meta).unwrap();
        assert_eq!(reopened.get(), 150);
    }

    #[test]
    fn a_corrupt_stored_value_is_an_error_not_zero() {
        let meta = store();
        meta.put_batch(&[(GC_SAFE_POINT_KEY.to_vec(), vec![1, 2, 3])], true)
            .unwrap();
        assert!(GcSafePoint::open(meta).is_err());
    }
}
