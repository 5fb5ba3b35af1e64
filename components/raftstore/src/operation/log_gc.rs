//! Raft log GC: the leader proposes `CompactLog` once enough applied entries pile up; the apply
//! records the new truncated state (with a synced KV write, since the log below it is about
//! to be deleted); the peer then compacts raft-engine and its entry cache.

use proto::metapb::Region;
use proto::raft_cmdpb::CompactLogRequest;
use proto::raft_serverpb::{RaftApplyState, RaftTruncatedState};

use crate::{Error, Result};

/// Where a leader may compact its region's log to, or `None` if not worth it yet.
///
/// - `first_index`: the log's first index; `applied`: the leader's applied index.
/// - `follower_matched`: the matched index of every other voter and learner. The log is not
///   compacted past the slowest of them, except one more than `count_limit` entries behind,
///   which will get a snapshot instead.
pub fn compact_target(
    first_index: u64,
    applied: u64,
    follower_matched: impl IntoIterator<Item = u64>,
    threshold: u64,
    count_limit: u64,
) -> Option<u64> {
    // A follower more than `count_limit` behind catches up by snapshot: do not wait for it.
    let slowest = follower_matched
        .into_iter()
        .filter(|m| applied.saturating_sub(*m) <= count_limit)
        .min()
        .unwrap_or(applied);
    let target = applied.min(slowest);
    // Keep the entry at `target` itself out of the count: entries [first, target] go.
    if target < first_index || target + 1 - first_index < threshold {
        return None;
    }
    Some(target)
}

/// Applies `CompactLog` to the apply state. Returns false (nothing to do) for a request at or
/// below the current truncated index, which a re-proposed or reordered request can be.
pub fn apply_compact_log(
    region: &Region,
    apply_state: &mut RaftApplyState,
    req: &CompactLogRequest,
) -> Result<bool> {
    let truncated = apply_state.truncated_state.unwrap_or_default();
    if req.compact_index <= truncated.index {
        return Ok(false);
    }
    if req.compact_index > apply_state.applied_index {
        return Err(Error::InvalidCommand {
            region_id: region.id,
            detail: format!(
                "compact index {} is beyond the applied index {}",
                req.compact_index, apply_state.applied_index
            ),
        });
    }
    if req.compact_term == 0 {
        return Err(Error::InvalidCommand {
            region_id: region.id,
            detail: "compact term is 0".into(),
        });
    }
    apply_state.truncated_state = Some(RaftTruncatedState {
        index: req.compact_index,
        term: req.compact_term,
    });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_past_the_slowest_follower_and_only_past_the_threshold() {
        let target = |first, applied, matched: &[u64], threshold| {
            compact_target(first, applied, matched.iter().copied(), threshold, 1000)
        };
        assert_eq!(target(6, 100, &[100, 100], 50), Some(100));
        assert_eq!(target(6, 100, &[100, 40], 50), None, "40 - 6 < 50");
        assert_eq!(target(6, 100, &[100, 70], 50), Some(70));
        assert_eq!(target(6, 40, &[100, 100], 50), None);
        assert_eq!(
            target(60, 100, &[30], 1),
            None,
            "a follower below the log start"
        );
        assert_eq!(target(6, 55, &[], 50), Some(55), "a single voter");
        assert_eq!(
            target(6, 2000, &[2000, 10], 50),
            Some(2000),
            "a follower 1990 behind gets a snapshot"
        );
    }

    #[test]
    fn compact_log_moves_the_truncated_state_forward_only() {
        let region = Region {
            id: 1,
            ..Default::default()
        };
        let mut state = RaftApplyState {
            applied_index: 100,
            truncated_state: Some(RaftTruncatedState { index: 5, term: 5 }),
            ..Default::default()
        };
        let req = |compact_index, compact_term| CompactLogRequest {
            compact_index,
            compact_term,
        };
        assert!(apply_compact_log(&region, &mut state, &req(80, 7)).unwrap());
        assert_eq!(state.truncated_state.unwrap().index, 80);
        assert!(!apply_compact_log(&region, &mut state, &req(60, 7)).unwrap());
        assert_eq!(state.truncated_state.unwrap().index, 80);
        assert!(apply_compact_log(&region, &mut state, &req(101, 7)).is_err());
        assert!(apply_compact_log(&region, &mut state, &req(90, 0)).is_err());
    }
}
