//! Membership changes (ChangePeerV2): the checks made before a change is proposed, the raft
//! conf change the proposal carries, and the apply half that computes the region's new peers
//! and epoch.
//!
//! One change is a simple raft conf change; several enter joint consensus. The region records
//! the joint state in its peers' roles (IncomingVoter, DemotingVoter; see
//! `storage::conf_state_from_region`), so a restart rebuilds raft-rs's configuration from the
//! region alone. raft-rs proposes the automatic leave (an empty ConfChangeV2 without our
//! command in its context) when the leader applies the entering entry; a leader elected while
//! the region is joint proposes it itself (`Peer::maybe_leave_joint`).
//!
//! Every check here is a pure function of the region, so all replicas decide the same way at
//! apply time. A change that fails at apply changes nothing and raft-rs is not told of it.

use std::time::{Duration, Instant};

use engine::KvEngine;
use prost::Message as _;
use proto::eraftpb::ConfChangeType;
use proto::metapb::{Peer as PeerMeta, PeerRole, Region};
use proto::raft_cmdpb::{ChangePeerRequest, RaftCmdRequest};
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeV2, Entry};

use crate::fsm::{PeerFsm, RaftPoller};
use crate::operation::heartbeat::PEER_CATCH_UP_LAG;
use crate::raft::Peer;
use crate::router::WriteCallback;
use crate::transport::Transport;
use crate::{Error, Result};

/// More changes than this in one request are refused: a region has a handful of peers.
pub const MAX_CHANGES_PER_REQUEST: usize = 8;

/// The region is between two configurations (some peer is incoming or demoting).
pub fn is_joint(region: &Region) -> bool {
    region
        .peers
        .iter()
        .any(|p| matches!(p.role(), PeerRole::IncomingVoter | PeerRole::DemotingVoter))
}

fn refuse(region: &Region, detail: String) -> Error {
    Error::ConfChange {
        region_id: region.id,
        detail,
    }
}

/// The region after `changes`, with `conf_ver` raised by their number; or why they cannot
/// apply to it.
pub fn region_after(region: &Region, changes: &[ChangePeerRequest]) -> Result<Region> {
    if changes.is_empty() {
        return Err(refuse(region, "the request has no changes".into()));
    }
    if changes.len() > MAX_CHANGES_PER_REQUEST {
        return Err(refuse(
            region,
            format!(
                "{} changes in one request; at most {MAX_CHANGES_PER_REQUEST}",
                changes.len()
            ),
        ));
    }
    if is_joint(region) {
        return Err(refuse(
            region,
            "the region is in a joint configuration, which it leaves by itself; retry then".into(),
        ));
    }
    let joint = changes.len() > 1;
    let mut new = region.clone();
    let mut named: Vec<(u64, u64)> = Vec::with_capacity(changes.len());
    for change in changes {
        let peer = change.peer.unwrap_or_default();
        if peer.id == 0 || peer.store_id == 0 {
            return Err(refuse(
                region,
                format!("a change names peer {} on store {}", peer.id, peer.store_id),
            ));
        }
        if named
            .iter()
            .any(|(id, store)| *id == peer.id || *store == peer.store_id)
        {
            return Err(refuse(
                region,
                format!(
                    "peer {} or store {} is named by two changes",
                    peer.id, peer.store_id
                ),
            ));
        }
        named.push((peer.id, peer.store_id));
        let kind = ConfChangeType::try_from(change.change_type).map_err(|_| {
            refuse(
                region,
                format!("unknown change type {}", change.change_type),
            )
        })?;
        let at = new.peers.iter().position(|p| p.id == peer.id);
        if let Some(other) = new
            .peers
            .iter()
            .find(|p| p.store_id == peer.store_id && p.id != peer.id)
        {
            return Err(refuse(
                region,
                format!(
                    "store {} already holds peer {} of the region",
                    peer.store_id, other.id
                ),
            ));
        }
        if let Some(i) = at {
            if new.peers[i].store_id != peer.store_id {
                return Err(refuse(
                    region,
                    format!(
                        "peer {} is on store {}, not {}",
                        peer.id, new.peers[i].store_id, peer.store_id
                    ),
                ));
            }
        }
        let member = |role| PeerMeta {
            id: peer.id,
            store_id: peer.store_id,
            role: role as i32,
            ..Default::default()
        };
        let voter = if joint {
            PeerRole::IncomingVoter
        } else {
            PeerRole::Voter
        };
        match (kind, at.map(|i| new.peers[i].role())) {
            (ConfChangeType::AddNode, None) => new.peers.push(member(voter)),
            (ConfChangeType::AddNode, Some(PeerRole::Learner)) => {
                new.peers[at.unwrap_or_default()].role = voter as i32
            }
            (ConfChangeType::AddLearnerNode, None) => new.peers.push(member(PeerRole::Learner)),
            (ConfChangeType::AddLearnerNode, Some(PeerRole::Voter)) => {
                let role = if joint {
                    PeerRole::DemotingVoter
                } else {
                    PeerRole::Learner
                };
                new.peers[at.unwrap_or_default()].role = role as i32;
            }
            (ConfChangeType::RemoveNode, Some(PeerRole::Learner)) => {
                new.peers.remove(at.unwrap_or_default());
            }
            (ConfChangeType::RemoveNode, Some(PeerRole::Voter)) if !joint => {
                new.peers.remove(at.unwrap_or_default());
            }
            (ConfChangeType::RemoveNode, Some(PeerRole::Voter)) => {
                return Err(refuse(
                    region,
                    format!(
                        "voter {} cannot be removed within a joint change: demote it \
                         (AddLearnerNode) here and remove it by a later change",
                        peer.id
                    ),
                ))
            }
            (ConfChangeType::RemoveNode, None) => {
                return Err(refuse(region, format!("peer {} is not a member", peer.id)))
            }
            (kind, Some(role)) => {
                return Err(refuse(
                    region,
                    format!(
                        "{} on peer {} that is already a {role:?}",
                        kind.as_str_name(),
                        peer.id
                    ),
                ))
            }
        }
    }
    if !new
        .peers
        .iter()
        .any(|p| matches!(p.role(), PeerRole::Voter | PeerRole::IncomingVoter))
    {
        return Err(refuse(region, "no voter would remain".into()));
    }
    // raft-rs enters a joint state for any multi-change request; the region can only record
    // one that changes a voter (and could never leave one that does not).
    if joint && !is_joint(&new) {
        return Err(refuse(
            region,
            "changes that touch only learners must be made one at a time".into(),
        ));
    }
    bump_conf_ver(&mut new, changes.len() as u64);
    Ok(new)
}

/// The region once it leaves its joint configuration: incoming voters become voters and
/// demoting voters learners.
pub fn region_after_leave(region: &Region) -> Region {
    let mut new = region.clone();
    for peer in &mut new.peers {
        match peer.role() {
            PeerRole::IncomingVoter => peer.role = PeerRole::Voter as i32,
            PeerRole::DemotingVoter => peer.role = PeerRole::Learner as i32,
            _ => {}
        }
    }
    bump_conf_ver(&mut new, 1);
    new
}

fn bump_conf_ver(region: &mut Region, by: u64) {
    let epoch = region.region_epoch.get_or_insert_with(Default::default);
    epoch.conf_ver += by;
}

/// The raft conf change for `changes`, carrying the proposed command in its context.
pub fn to_raft_conf_change(changes: &[ChangePeerRequest], command: Vec<u8>) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    for change in changes {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(match ConfChangeType::try_from(change.change_type) {
            Ok(ConfChangeType::AddLearnerNode) => raft::eraftpb::ConfChangeType::AddLearnerNode,
            Ok(ConfChangeType::RemoveNode) => raft::eraftpb::ConfChangeType::RemoveNode,
            _ => raft::eraftpb::ConfChangeType::AddNode,
        });
        single.node_id = change.peer.map_or(0, |p| p.id);
        cc.mut_changes().push(single);
    }
    cc.context = command.into();
    cc
}

/// Applies a committed `EntryConfChangeV2` to `region`: its new membership and the conf
/// change raft-rs must be told, or why it changes nothing.
pub fn apply_entry(region: &Region, entry: &Entry) -> Result<(Region, ConfChangeV2)> {
    let invalid = |detail: String| Error::InvalidCommand {
        region_id: region.id,
        detail,
    };
    let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| {
        invalid(format!(
            "entry {} does not decode as a conf change: {e}",
            entry.index
        ))
    })?;
    if cc.leave_joint() {
        if !is_joint(region) {
            return Err(refuse(
                region,
                "asked to leave a joint configuration the region is not in".into(),
            ));
        }
        return Ok((region_after_leave(region), cc));
    }
    let cmd = <RaftCmdRequest as prost::Message>::decode(cc.context.as_ref())
        .map_err(|e| invalid(format!("conf change context does not decode: {e}")))?;
    let changes = cmd
        .admin_request
        .as_ref()
        .and_then(|a| a.change_peer_v2.as_ref())
        .map(|c| c.changes.as_slice())
        .ok_or_else(|| invalid("conf change without a ChangePeerV2 command".into()))?;
    // Proposed against this membership: otherwise another change got in first.
    let current = region.region_epoch.unwrap_or_default();
    let requested = cmd.header.and_then(|h| h.region_epoch).unwrap_or_default();
    if requested != current {
        return Err(Error::EpochNotMatch {
            region_id: region.id,
            request_conf_ver: requested.conf_ver,
            request_version: requested.version,
            current_regions: vec![region.clone()],
        });
    }
    let same = cc.changes.len() == changes.len()
        && cc
            .changes
            .iter()
            .zip(changes)
            .all(|(single, change)| Some(single.node_id) == change.peer.map(|p| p.id));
    if !same {
        return Err(invalid(
            "the raft conf change and its command name different peers".into(),
        ));
    }
    Ok((region_after(region, changes)?, cc))
}

impl<EK: KvEngine> Peer<EK> {
    /// Proposes a membership change; `cb` is answered once it is applied.
    pub(crate) fn propose_conf_change(
        &mut self,
        request: RaftCmdRequest,
        cb: WriteCallback,
        now: Instant,
    ) {
        let changes = match self.check_conf_change(&request, now) {
            Ok(changes) => changes,
            Err(e) => {
                self.reply_write(cb, Err(e));
                return;
            }
        };
        let cc = to_raft_conf_change(&changes, request.encode_to_vec());
        let before = self.raw.raft.raft_log.last_index();
        // raft-rs replaces a conf change it refuses by an empty normal entry.
        let proposed = self.raw.propose_conf_change(vec![], cc).is_ok()
            && self
                .raw
                .raft
                .raft_log
                .unstable
                .entries
                .last()
                .is_some_and(|e| e.get_entry_type() == raft::eraftpb::EntryType::EntryConfChangeV2);
        let refused = |region_id| Error::ConfChange {
            region_id,
            detail: "raft refused the change (a membership change is pending)".into(),
        };
        if self.track_proposal(before, proposed, vec![cb], now, refused) {
            slog::info!(self.logger, "proposed membership change";
                "index" => self.raw.raft.raft_log.last_index(), "changes" => ?changes);
        }
    }

    /// A membership change is decided against the membership the client saw, one at a time,
    /// and never removes or demotes the leader (transfer leadership first).
    pub(crate) fn check_conf_change(
        &self,
        request: &RaftCmdRequest,
        now: Instant,
    ) -> Result<Vec<proto::raft_cmdpb::ChangePeerRequest>> {
        self.check_request(request)?;
        let region = self.region();
        let region_id = region.id;
        let current = region.region_epoch.unwrap_or_default();
        let requested = request
            .header
            .and_then(|h| h.region_epoch)
            .unwrap_or_default();
        if requested.conf_ver != current.conf_ver {
            return Err(Error::EpochNotMatch {
                region_id,
                request_conf_ver: requested.conf_ver,
                request_version: requested.version,
                current_regions: vec![region.clone()],
            });
        }
        if self.raw.raft.has_pending_conf() {
            return Err(Error::ConfChange {
                region_id,
                detail: format!(
                    "another membership change (at index {}) is not applied yet; retry after it",
                    self.raw.raft.pending_conf_index
                ),
            });
        }
        let changes = request
            .admin_request
            .as_ref()
            .and_then(|a| a.change_peer_v2.as_ref())
            .map(|c| c.changes.clone())
            .ok_or_else(|| Error::InvalidCommand {
                region_id,
                detail: "ChangePeerV2 without its changes".into(),
            })?;
        let new = region_after(region, &changes)?;
        // The new configuration must have a quorum of voters that are up and caught up, or
        // the region stops (adding a voter while another is down or behind needs every other
        // one to answer).
        let voters: Vec<u64> = new
            .peers
            .iter()
            .filter(|p| {
                matches!(
                    p.role(),
                    proto::metapb::PeerRole::Voter | proto::metapb::PeerRole::IncomingVoter
                )
            })
            .map(|p| p.id)
            .collect();
        let healthy = voters
            .iter()
            .filter(|id| self.is_healthy(**id, now, self.election_timeout * 2))
            .count();
        if healthy < voters.len() / 2 + 1 {
            return Err(Error::ConfChange {
                region_id,
                detail: format!(
                    "only {healthy} of the {} voters after the change are up and caught up; \
                     a quorum needs {}",
                    voters.len(),
                    voters.len() / 2 + 1
                ),
            });
        }
        let stays_voter = new.peers.iter().any(|p| {
            p.id == self.peer_id
                && matches!(
                    p.role(),
                    proto::metapb::PeerRole::Voter | proto::metapb::PeerRole::IncomingVoter
                )
        });
        if !stays_voter {
            return Err(Error::ConfChange {
                region_id,
                detail: format!(
                    "the change removes or demotes the leader (peer {}); transfer leadership first",
                    self.peer_id
                ),
            });
        }
        let size = request.encoded_len() as u64;
        if size > self.limits.entry_max_size {
            return Err(Error::RaftEntryTooLarge {
                region_id,
                entry_size: size,
                limit: self.limits.entry_max_size,
            });
        }
        Ok(changes)
    }

    /// A leader of a joint region with no membership change in flight proposes the leave: raft-rs
    /// only does it when the entering entry is applied under the same leader.
    pub(crate) fn maybe_leave_joint(&mut self) -> bool {
        if !self.is_leader() || self.raw.raft.has_pending_conf() || !is_joint(self.region()) {
            return false;
        }
        slog::info!(self.logger, "proposing to leave the joint configuration");
        let leave = raft::eraftpb::ConfChangeV2::default();
        if let Err(e) = self.raw.propose_conf_change(vec![], leave) {
            slog::warn!(self.logger, "leaving the joint configuration failed"; "error" => %e);
            return false;
        }
        true
    }

    /// Member `peer_id` answered within `within`, and its log is within `PEER_CATCH_UP_LAG`
    /// entries of the commit index (this peer itself always is).
    pub(crate) fn is_healthy(&self, peer_id: u64, now: Instant, within: Duration) -> bool {
        if peer_id == self.peer_id {
            return true;
        }
        let heard = self
            .last_heard
            .get(&peer_id)
            .is_some_and(|t| now.saturating_duration_since(*t) <= within);
        let caught_up = self.raw.raft.prs().get(peer_id).is_some_and(|pr| {
            pr.state != raft::ProgressState::Snapshot
                && pr.matched + PEER_CATCH_UP_LAG >= self.raw.raft.raft_log.committed
        });
        heard && caught_up
    }
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// A membership change was applied (`before`: the members until then). A leader tells the
    /// removed peers: they may never hear of their removal otherwise (a learner does not
    /// campaign).
    pub(crate) fn on_membership_applied(&mut self, fsm: &PeerFsm<EK>, before: Vec<PeerMeta>) {
        if !fsm.peer.is_leader() {
            return;
        }
        let removed: Vec<_> = before
            .into_iter()
            .filter(|p| !fsm.peer.region().peers.iter().any(|q| q.id == p.id))
            .collect();
        for peer in removed {
            self.send_tombstone(&fsm.peer, peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::metapb::RegionEpoch;
    use proto::raft_cmdpb::{AdminCmdType, AdminRequest, ChangePeerV2Request, RaftRequestHeader};
    use raft::eraftpb::EntryType;

    use super::*;

    fn peer(id: u64, store_id: u64, role: PeerRole) -> PeerMeta {
        PeerMeta {
            id,
            store_id,
            role: role as i32,
            ..Default::default()
        }
    }

    fn region(peers: Vec<PeerMeta>) -> Region {
        Region {
            id: 7,
            region_epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 2,
            }),
            peers,
            ..Default::default()
        }
    }

    fn change(kind: ConfChangeType, id: u64, store_id: u64) -> ChangePeerRequest {
        ChangePeerRequest {
            change_type: kind as i32,
            peer: Some(PeerMeta {
                id,
                store_id,
                ..Default::default()
            }),
        }
    }

    fn roles(region: &Region) -> Vec<(u64, PeerRole)> {
        let mut r: Vec<_> = region.peers.iter().map(|p| (p.id, p.role())).collect();
        r.sort_by_key(|(id, _)| *id);
        r
    }

    fn three() -> Region {
        region(vec![
            peer(1, 1, PeerRole::Voter),
            peer(2, 2, PeerRole::Voter),
            peer(3, 3, PeerRole::Voter),
        ])
    }

    #[test]
    fn simple_changes() {
        use ConfChangeType::*;
        use PeerRole::*;
        let r = region_after(&three(), &[change(AddLearnerNode, 4, 4)]).unwrap();
        assert_eq!(roles(&r)[3], (4, Learner));
        assert_eq!(r.region_epoch.unwrap().conf_ver, 4);
        let r = region_after(&r, &[change(AddNode, 4, 4)]).unwrap();
        assert_eq!(roles(&r)[3], (4, Voter));
        let r = region_after(&r, &[change(RemoveNode, 2, 2)]).unwrap();
        assert_eq!(roles(&r), vec![(1, Voter), (3, Voter), (4, Voter)]);
        assert_eq!(r.region_epoch.unwrap().conf_ver, 6);
        assert!(!is_joint(&r));
    }

    #[test]
    fn joint_change_and_leave() {
        use ConfChangeType::*;
        use PeerRole::*;
        let r = region_after(
            &three(),
            &[change(AddNode, 4, 4), change(AddLearnerNode, 3, 3)],
        )
        .unwrap();
        assert!(is_joint(&r));
        assert_eq!(
            roles(&r),
            vec![
                (1, Voter),
                (2, Voter),
                (3, DemotingVoter),
                (4, IncomingVoter)
            ]
        );
        let cs = crate::storage::conf_state_from_region(&r);
        assert_eq!(cs.voters, vec![1, 2, 4]);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(cs.learners_next, vec![3]);
        // Nothing else while joint.
        let err = region_after(&r, &[change(AddLearnerNode, 5, 5)]).unwrap_err();
        assert!(err.to_string().contains("joint"), "{err}");
        let left = region_after_leave(&r);
        assert_eq!(
            roles(&left),
            vec![(1, Voter), (2, Voter), (3, Learner), (4, Voter)]
        );
        assert_eq!(left.region_epoch.unwrap().conf_ver, 6);
    }

    #[test]
    fn refused_changes_name_the_problem() {
        use ConfChangeType::*;
        let cases: Vec<(Vec<ChangePeerRequest>, &str)> = vec![
            (vec![], "no changes"),
            (vec![change(AddNode, 2, 2)], "already a Voter"),
            (vec![change(AddNode, 9, 2)], "store 2 already holds peer 2"),
            (vec![change(RemoveNode, 9, 9)], "not a member"),
            (vec![change(AddNode, 4, 0)], "names peer 4 on store 0"),
            (
                vec![change(AddNode, 4, 4), change(AddLearnerNode, 4, 4)],
                "named by two changes",
            ),
            (
                vec![change(AddNode, 4, 4), change(RemoveNode, 3, 3)],
                "demote it",
            ),
            (
                vec![change(AddLearnerNode, 4, 4), change(AddLearnerNode, 5, 5)],
                "only learners",
            ),
            (
                vec![change(RemoveNode, 1, 1)]
                    .into_iter()
                    .chain([change(RemoveNode, 2, 2)])
                    .collect(),
                "demote it",
            ),
        ];
        for (changes, want) in cases {
            let err = region_after(&three(), &changes).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        let one = region(vec![peer(1, 1, PeerRole::Voter)]);
        let err = region_after(&one, &[change(RemoveNode, 1, 1)]).unwrap_err();
        assert!(err.to_string().contains("no voter would remain"), "{err}");
    }

    fn entry(region: &Region, changes: Vec<ChangePeerRequest>, epoch_of: &Region) -> Entry {
        let cmd = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                region_epoch: epoch_of.region_epoch,
                ..Default::default()
            }),
            requests: vec![],
            admin_request: Some(AdminRequest {
                cmd_type: AdminCmdType::ChangePeerV2 as i32,
                change_peer_v2: Some(ChangePeerV2Request {
                    changes: changes.clone(),
                }),
                ..Default::default()
            }),
        };
        let cc = to_raft_conf_change(&changes, prost::Message::encode_to_vec(&cmd));
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChangeV2);
        e.index = 10;
        e.data = cc.write_to_bytes().unwrap().into();
        e
    }

    #[test]
    fn apply_checks_the_epoch_and_leaves_on_an_empty_entry() {
        use ConfChangeType::*;
        let r = three();
        let e = entry(
            &r,
            vec![change(AddNode, 4, 4), change(AddLearnerNode, 3, 3)],
            &r,
        );
        let (joint, cc) = apply_entry(&r, &e).unwrap();
        assert!(is_joint(&joint));
        assert_eq!(cc.enter_joint(), Some(true));
        // The same entry against the new epoch is stale.
        let err = apply_entry(&joint, &e).unwrap_err();
        assert!(matches!(err, Error::EpochNotMatch { .. }), "{err}");
        // raft-rs's automatic leave: no data at all.
        let mut leave = Entry::default();
        leave.set_entry_type(EntryType::EntryConfChangeV2);
        let (left, cc) = apply_entry(&joint, &leave).unwrap();
        assert!(cc.leave_joint());
        assert!(!is_joint(&left));
        assert!(apply_entry(&left, &leave).is_err());
    }
}
