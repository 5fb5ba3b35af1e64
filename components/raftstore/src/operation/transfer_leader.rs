//! Leader transfer: checked and started on the leader at propose time, never written to the
//! log. The lease is suspended while it runs (see `read`): the target may win an election
//! before the old lease would have expired.

use engine::KvEngine;
use proto::raft_cmdpb::RaftCmdRequest;

use crate::raft::Peer;
use crate::{Error, Result};

impl<EK: KvEngine> Peer<EK> {
    /// Starts moving leadership to the peer named in the request, which must be a caught-up
    /// member. Executed here, never written to the log.
    pub(crate) fn transfer_leader(&mut self, request: &RaftCmdRequest) -> Result<()> {
        self.check_request(request)?;
        let region_id = self.region_id();
        let target = request
            .admin_request
            .as_ref()
            .and_then(|a| a.transfer_leader.as_ref())
            .and_then(|t| t.peer)
            .ok_or_else(|| Error::InvalidCommand {
                region_id,
                detail: "TransferLeader without a target peer".into(),
            })?;
        if !self.region().peers.iter().any(|p| p.id == target.id) {
            return Err(Error::InvalidCommand {
                region_id,
                detail: format!("peer {} is not a member of the region", target.id),
            });
        }
        if target.id == self.peer_id {
            return Ok(());
        }
        let last = self.raw.raft.raft_log.last_index();
        let matched = self
            .raw
            .raft
            .prs()
            .get(target.id)
            .map_or(0, |pr| pr.matched);
        if matched < last {
            return Err(Error::InvalidCommand {
                region_id,
                detail: format!(
                    "peer {} has {matched} of {last} entries; transfer to a caught-up peer",
                    target.id
                ),
            });
        }
        slog::info!(self.logger, "transferring leadership"; "to" => target.id);
        self.lease.expire();
        self.transferring = true;
        self.raw.transfer_leader(target.id);
        Ok(())
    }
}
