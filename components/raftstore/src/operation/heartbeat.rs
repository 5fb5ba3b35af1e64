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
            // Not heard from since well before now, counting from when this peer became
            // leader: as a follower it heard only from the old leader, so the first report a
            // new leader sends (at once) would otherwise name the other members down, and the
            // scheduler would not balance the region until the next report (a hibernate
            // interval later if it then sleeps).
            let since = self.leader_since.unwrap_or(self.started);
            let heard = self.last_heard.get(id).map_or(since, |t| (*t).max(since));
            let silent = now.saturating_duration_since(heard) > down_after;
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
