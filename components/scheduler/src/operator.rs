//! Operators: what the scheduler asks of a region, as steps the region's leader executes one
//! at a time. The scheduler hands the current step back in every heartbeat response until the
//! region shows it done, then moves to the next; an operator that takes longer than its
//! timeout is dropped (a later check starts afresh).

use std::time::{Duration, Instant};

use proto::metapb::{Peer, PeerRole};

use crate::cluster::RegionInfo;

/// One thing a leader does for an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Adds `peer` as a learner.
    AddLearner {
        peer: Peer,
    },
    /// Makes learner `peer` a voter (once it has caught up).
    PromoteLearner {
        peer: Peer,
    },
    /// Removes `peer` (never the leader: a transfer comes first).
    RemovePeer {
        peer: Peer,
    },
    TransferLeader {
        to: Peer,
    },
    /// Splits the region at `keys`; done once its version is past `version`.
    Split {
        keys: Vec<Vec<u8>>,
        version: u64,
    },
}

/// Which limit an operator counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperatorKind {
    /// Brings a region to its replica count, or off a down store.
    Replica,
    /// Asked for by an administrator ([`AdminOp`]): no limit.
    Admin,
    /// Splits a region at the keyspace boundaries it straddles (API V2): no limit.
    KeyspaceSplit,
    BalanceLeader,
    BalanceRegion,
}

impl OperatorKind {
    /// The name the status page and `ListOperators` show.
    pub fn as_str(&self) -> &'static str {
        match self {
            OperatorKind::Replica => "replica",
            OperatorKind::Admin => "admin",
            OperatorKind::KeyspaceSplit => "keyspace-split",
            OperatorKind::BalanceLeader => "balance-leader",
            OperatorKind::BalanceRegion => "balance-region",
        }
    }
}

/// What an administrator may ask of one region (`Scheduler::add_admin_operator`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Split at these keys (each strictly inside the region).
    Split(Vec<Vec<u8>>),
    /// Move the leadership to the region's voter on this store.
    TransferLeader { to_store: u64 },
    /// Add a voter on this store: a learner first, promoted once it has caught up.
    AddPeer { store: u64 },
    /// Remove the region's peer on this store (not the leader: transfer it first).
    RemovePeer { store: u64 },
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub region_id: u64,
    pub kind: OperatorKind,
    pub description: String,
    pub steps: Vec<Step>,
    pub current: usize,
    pub created: Instant,
    pub timeout: Duration,
}

/// Where an operator stands after a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The leader should execute this step (again, if it is still not done).
    Run(Step),
    /// The step cannot run yet (a learner still catching up): nothing to send.
    Wait,
    Finished,
    TimedOut,
    /// The region moved so that the step can never run (the peer to remove leads now, the
    /// learner to promote is gone): dropped, a later check plans afresh.
    Cancelled,
}

fn role_of(info: &RegionInfo, peer_id: u64) -> Option<PeerRole> {
    info.region
        .peers
        .iter()
        .find(|p| p.id == peer_id)
        .map(|p| p.role())
}

impl Operator {
    pub fn new(
        region_id: u64,
        kind: OperatorKind,
        description: String,
        steps: Vec<Step>,
        timeout: Duration,
        now: Instant,
    ) -> Operator {
        Operator {
            region_id,
            kind,
            description,
            steps,
            current: 0,
            created: now,
            timeout,
        }
    }

    fn done(step: &Step, info: &RegionInfo) -> bool {
        match step {
            Step::AddLearner { peer } => role_of(info, peer.id).is_some(),
            Step::PromoteLearner { peer } => role_of(info, peer.id) == Some(PeerRole::Voter),
            Step::RemovePeer { peer } => role_of(info, peer.id).is_none(),
            Step::TransferLeader { to } => info.leader.is_some_and(|l| l.id == to.id),
            Step::Split { version, .. } => {
                info.region.region_epoch.unwrap_or_default().version > *version
            }
        }
    }

    /// Advances past the steps the region shows done, and says what to do next (at `now`).
    pub fn check(&mut self, info: &RegionInfo, now: Instant) -> Progress {
        while let Some(step) = self.steps.get(self.current) {
            if !Self::done(step, info) {
                break;
            }
            self.current += 1;
        }
        let Some(step) = self.steps.get(self.current).cloned() else {
            return Progress::Finished;
        };
        if now.saturating_duration_since(self.created) > self.timeout {
            return Progress::TimedOut;
        }
        match &step {
            Step::PromoteLearner { peer } if role_of(info, peer.id).is_none() => {
                return Progress::Cancelled
            }
            // Planned on a stale view of the region: the store already holds another peer of
            // it (which a fresh plan would promote), and the store refuses a second one.
            Step::AddLearner { peer }
                if info
                    .region
                    .peers
                    .iter()
                    .any(|p| p.store_id == peer.store_id && p.id != peer.id) =>
            {
                return Progress::Cancelled
            }
            Step::RemovePeer { peer } if info.leader.is_some_and(|l| l.id == peer.id) => {
                return Progress::Cancelled
            }
            // Planned on a stale view (a restarted scheduler's routing table is what reached
            // its disk): the leader refuses a non-member, at every heartbeat, until timeout.
            Step::TransferLeader { to } if role_of(info, to.id) != Some(PeerRole::Voter) => {
                return Progress::Cancelled
            }
            Step::PromoteLearner { peer } if info.pending_peers.iter().any(|p| p.id == peer.id) => {
                return Progress::Wait
            }
            _ => {}
        }
        Progress::Run(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::build::{learner, peer, region};

    #[test]
    fn steps_advance_as_the_region_shows_them_done() {
        let t0 = Instant::now();
        let new = learner(9, 4);
        let old = peer(3, 3);
        let mut op = Operator::new(
            1,
            OperatorKind::Replica,
            "replace".into(),
            vec![
                Step::AddLearner { peer: new },
                Step::PromoteLearner { peer: new },
                Step::RemovePeer { peer: old },
            ],
            Duration::from_secs(60),
            t0,
        );
        let mut info = RegionInfo {
            region: region(1).peers([peer(1, 1), old]).build(),
            leader: Some(peer(1, 1)),
            ..Default::default()
        };
        assert_eq!(
            op.check(&info, t0),
            Progress::Run(Step::AddLearner { peer: new })
        );
        // A view where store 4 already holds another peer of the region cancels it.
        let mut stale = info.clone();
        stale.region.peers.push(learner(8, 4));
        assert_eq!(op.clone().check(&stale, t0), Progress::Cancelled);
        info.region.peers.push(new);
        info.pending_peers.push(new);
        assert_eq!(op.check(&info, t0), Progress::Wait);
        info.pending_peers.clear();
        assert_eq!(
            op.check(&info, t0),
            Progress::Run(Step::PromoteLearner { peer: new })
        );
        info.region.peers[2].role = PeerRole::Voter as i32;
        assert_eq!(
            op.check(&info, t0),
            Progress::Run(Step::RemovePeer { peer: old })
        );
        info.region.peers.remove(1);
        assert_eq!(op.check(&info, t0), Progress::Finished);
        let mut late = Operator::new(
            1,
            OperatorKind::Replica,
            "x".into(),
            vec![Step::RemovePeer { peer: new }],
            Duration::ZERO,
            t0,
        );
        info.region.peers.push(new);
        assert_eq!(
            late.check(&info, t0),
            Progress::Run(Step::RemovePeer { peer: new })
        );
        let later = t0 + Duration::from_millis(2);
        assert_eq!(late.check(&info, later), Progress::TimedOut);
    }

    #[test]
    fn a_transfer_to_a_peer_no_longer_a_voter_is_cancelled() {
        let t0 = Instant::now();
        let (leader, gone, newer) = (peer(1, 1), peer(3, 3), learner(9, 3));
        let mut op = Operator::new(
            1,
            OperatorKind::Admin,
            "transfer".into(),
            vec![Step::TransferLeader { to: gone }],
            Duration::from_secs(60),
            t0,
        );
        let mut info = RegionInfo {
            region: region(1).peers([leader, gone]).build(),
            leader: Some(leader),
            ..Default::default()
        };
        assert_eq!(
            op.check(&info, t0),
            Progress::Run(Step::TransferLeader { to: gone })
        );
        // The peer was removed and its store holds a learner of the region now.
        info.region.peers = vec![leader, newer];
        assert_eq!(op.clone().check(&info, t0), Progress::Cancelled);
        // A learner cannot lead either.
        info.region.peers = vec![leader, learner(3, 3)];
        assert_eq!(op.check(&info, t0), Progress::Cancelled);
    }
}
