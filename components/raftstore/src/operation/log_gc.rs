//! Raft log GC: the leader proposes `CompactLog` once enough applied entries pile up; the apply
//! records the new truncated state (with a synced KV write, since the log below it is about
//! to be deleted); the peer then compacts raft-engine and its entry cache.

use std::time::Instant;

use engine::KvEngine;
use proto::metapb::Region;
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, CompactLogRequest, RaftCmdRequest, RaftRequestHeader,
};
use proto::raft_serverpb::{RaftApplyState, RaftTruncatedState};

use crate::fsm::{PeerFsm, RaftPoller};
use crate::metrics::METRICS;
use crate::raft::Peer;
use crate::router::Callback;
use crate::transport::Transport;
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

impl<EK: KvEngine> Peer<EK> {
    /// Proposes a log compaction when enough applied entries are in the log and every
    /// follower has them. Returns true if it proposed.
    pub(crate) fn maybe_compact_log(&mut self, now: Instant) -> bool {
        let me = self.peer_id;
        let matched: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, pr)| pr.matched)
            .collect();
        let first = self.storage().truncated_index() + 1;
        let applied = self.storage().applied_index();
        let Some(target) = compact_target(
            first,
            applied,
            matched,
            self.limits.gc_threshold,
            self.limits.gc_count_limit,
        ) else {
            return false;
        };
        if target <= self.compact_proposed {
            return false;
        }
        let Ok(term) = self.raw.raft.raft_log.term(target) else {
            return false;
        };
        let region = self.region();
        let request = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                region_epoch: region.region_epoch,
                ..Default::default()
            }),
            requests: vec![],
            admin_request: Some(AdminRequest {
                cmd_type: AdminCmdType::CompactLog as i32,
                compact_log: Some(CompactLogRequest {
                    compact_index: target,
                    compact_term: term,
                }),
                ..Default::default()
            }),
        };
        slog::debug!(self.logger, "proposing log compaction"; "compact_index" => target);
        self.compact_proposed = target;
        let logger = self.logger.clone();
        self.propose_write(
            request,
            Callback::new(move |r| {
                if let Err(e) = r {
                    slog::debug!(logger, "log compaction not applied"; "error" => %e);
                }
            }),
            now,
        );
        true
    }
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// A CompactLog was applied up to `index`: the raft-log entries up to it go with this
    /// round's write. Losing this (a crash before the write) only leaves entries that the next
    /// compaction or raft-engine's purge removes.
    pub(crate) fn on_log_compacted(&mut self, fsm: &PeerFsm<EK>, index: u64) {
        self.batch.compact_to(fsm.peer.region_id(), index + 1);
        METRICS.log_compactions.inc();
    }
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
