//! Key encoding: every key regionstore writes to the KV engine, in one place.
//!
//! ```text
//! data keys (CFs default, lock, write)   'z' + user key
//! local keys (CF raft)                    0x01 + ...
//!   store ident                           0x01 0x01
//!   region state   (RegionLocalState)     0x01 0x03 + region_id (u64 BE) + 0x01
//!   apply state    (RaftApplyState)       0x01 0x02 + region_id (u64 BE) + 0x03
//! ```
//!
//! The 'z' prefix keeps user data after every local key, so a scan of user data can never
//! return engine metadata. The data key of an empty region end key (the end of the key space) is
//! [`DATA_MAX_KEY`] ('z' + 1), which sorts after every data key.

use proto::metapb::Region;

pub const DATA_PREFIX: u8 = b'z';
pub const DATA_PREFIX_KEY: &[u8] = b"z";
/// Sorts after every data key: the data end of a region that reaches the end of the key space.
pub const DATA_MAX_KEY: &[u8] = b"{";
/// Every local key starts with this.
pub const LOCAL_PREFIX: u8 = 0x01;
pub const LOCAL_MIN_KEY: &[u8] = &[LOCAL_PREFIX];
pub const LOCAL_MAX_KEY: &[u8] = &[LOCAL_PREFIX + 1];

pub const STORE_IDENT_KEY: &[u8] = &[LOCAL_PREFIX, 0x01];

const RAFT_STATE_PREFIX: u8 = 0x02;
const REGION_META_PREFIX: u8 = 0x03;
const APPLY_STATE_SUFFIX: u8 = 0x03;
const REGION_STATE_SUFFIX: u8 = 0x01;

/// The data key of `user_key`.
pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_key.len() + 1);
    key.push(DATA_PREFIX);
    key.extend_from_slice(user_key);
    key
}

/// The data key of a region's end key: an empty end key means the end of the key space.
pub fn data_end_key(region_end_key: &[u8]) -> Vec<u8> {
    if region_end_key.is_empty() {
        DATA_MAX_KEY.to_vec()
    } else {
        data_key(region_end_key)
    }
}

/// The user key inside a data key, or `None` if `key` is not a data key.
pub fn origin_key(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(DATA_PREFIX_KEY)
}

fn region_key(region_id: u64, prefix: u8, suffix: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.extend_from_slice(&[LOCAL_PREFIX, prefix]);
    key.extend_from_slice(&region_id.to_be_bytes());
    key.push(suffix);
    key
}

/// Where a region's `RegionLocalState` is kept (CF raft).
pub fn region_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, REGION_META_PREFIX, REGION_STATE_SUFFIX)
}

/// Where a region's `RaftApplyState` is kept (CF raft).
pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, RAFT_STATE_PREFIX, APPLY_STATE_SUFFIX)
}

/// The range of every region-state key, for scanning all regions at start-up.
pub fn region_state_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![LOCAL_PREFIX, REGION_META_PREFIX],
        vec![LOCAL_PREFIX, REGION_META_PREFIX + 1],
    )
}

/// The region id inside a region-state key.
pub fn region_id_of_state_key(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(&[LOCAL_PREFIX, REGION_META_PREFIX])?;
    let (id, suffix) = rest.split_first_chunk::<8>()?;
    (suffix == [REGION_STATE_SUFFIX]).then(|| u64::from_be_bytes(*id))
}

/// Whether `user_key` is inside `[start_key, end_key)` of `region` (empty end = unbounded).
pub fn region_contains(region: &Region, user_key: &[u8]) -> bool {
    user_key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || user_key < region.end_key.as_slice())
}

/// The data-key bounds `[start, end)` of a region's user data.
pub fn region_data_bounds(region: &Region) -> (Vec<u8>, Vec<u8>) {
    (data_key(&region.start_key), data_end_key(&region.end_key))
}

#[cfg(test)]
mod tests {
    use proto::build::region;

    use super::*;

    #[test]
    fn data_keys_sort_after_local_keys_and_before_max() {
        let keys = [
            STORE_IDENT_KEY.to_vec(),
            apply_state_key(u64::MAX),
            region_state_key(u64::MAX),
            data_key(b""),
            data_key(&[0xff; 16]),
            DATA_MAX_KEY.to_vec(),
        ];
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        assert!(region_state_key(5) < LOCAL_MAX_KEY.to_vec());
        assert!(STORE_IDENT_KEY > LOCAL_MIN_KEY);
    }

    #[test]
    fn origin_key_inverts_data_key() {
        assert_eq!(origin_key(&data_key(b"abc")), Some(&b"abc"[..]));
        assert_eq!(origin_key(b"abc"), None);
    }

    #[test]
    fn region_state_keys_parse_and_stay_in_range() {
        let (start, end) = region_state_range();
        for id in [0, 1, 42, u64::MAX] {
            let key = region_state_key(id);
            assert_eq!(region_id_of_state_key(&key), Some(id));
            assert!(key >= start && key < end);
            assert_eq!(region_id_of_state_key(&apply_state_key(id)), None);
        }
    }

    #[test]
    fn region_range_helpers() {
        let r = region(1).range(b"b", b"d").build();
        assert!(!region_contains(&r, b"a"));
        assert!(region_contains(&r, b"b"));
        assert!(region_contains(&r, b"c\xff"));
        assert!(!region_contains(&r, b"d"));
        let all = region(1).build();
        assert!(region_contains(&all, b""));
        assert!(region_contains(&all, &[0xff; 8]));
        assert_eq!(region_data_bounds(&r), (b"zb".to_vec(), b"zd".to_vec()));
        assert_eq!(region_data_bounds(&all), (b"z".to_vec(), b"{".to_vec()));
    }
}
