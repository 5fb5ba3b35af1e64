//! The region heartbeat a leader sends the scheduler: the region, its leader, and which peers
//! are down (not heard from) or pending (behind the log).

use std::time::Instant;

use engine::KvEngine;

use crate::raft::Peer;

/// A peer further behind the commit index than this is pending (not caught up).
pub(crate) const PEER_CATCH_UP_LAG: u64 = 100;

impl<EK: KvEngine> Peer<EK> {
    /// The region heartbeat this peer would send now: `None` unless it leads.
    pub fn region_heartbeat(&self, now: Instant) -> Option<crate::RegionHeartbeat> {
        if !self.is_leader() {
            return None;
        }
        let region = self.region();
        let meta = |id: u64| region.peers.iter().find(|p| p.id == id).copied();
        let truncated = self.storage().truncated_index();
        let committed = self.raw.raft.raft_log.committed;
        let down_after = self.election_timeout * 2;
        let mut down_peers = Vec::new();
        let mut pending_peers = Vec::new();
        for (id, pr) in self.raw.raft.prs().iter() {
            if *id == self.peer_id {
                continue;
            }
            let Some(peer) = meta(*id) else { continue };
            // Not heard from since well before now (or ever, once this peer has been up long
            // enough to have heard).
            let silent = match self.last_heard.get(id) {
                Some(t) => now.saturating_duration_since(*t) > down_after,
                None => now.saturating_duration_since(self.started) > down_after,
            };
            if silent {
                down_peers.push(peer);
            }
            if pr.state == raft::ProgressState::Snapshot
                || pr.matched < truncated
                || pr.matched + PEER_CATCH_UP_LAG < committed
            {
                pending_peers.push(peer);
            }
        }
        Some(crate::RegionHeartbeat {
            region: region.clone(),
            leader: self.meta(),
            down_peers,
            pending_peers,
            ..Default::default()
        })
    }

    /// Asks for a heartbeat on the next round (after a membership change or a split).
    pub fn schedule_heartbeat(&mut self) {
        self.effects.heartbeat = true;
    }
}
