//! A peer's end: destroying it (its data goes with the ApplyFsm's next round), and the
//! tombstone messages that tell a removed peer it is gone, or that tell this peer so.
//!
//! A removed peer that missed its removal entry (cut off, or a learner that never campaigns)
//! would otherwise live on: members answer its messages with a tombstone, and a peer that has
//! heard from no leader for a long while asks the members ([`RaftPoller::probe_members`]).

use engine::KvEngine;
use proto::raft_serverpb::RaftMessage;

use crate::fsm::{PeerFsm, RaftPoller};
use crate::raft::Peer;
use crate::router::{send_internal, ApplyTask, Callback};
use crate::transport::Transport;
use crate::Error;

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// The membership side of a message from another store: `None` if it was handled here (a
    /// tombstone, a newer peer of this region on this store, or a non-member's message),
    /// otherwise whether the sender is a member as this peer knows the region.
    pub(crate) fn check_sender(
        &mut self,
        fsm: &mut PeerFsm<EK>,
        msg: &RaftMessage,
    ) -> Option<bool> {
        let to = msg.to_peer.unwrap_or_default();
        let from = msg.from_peer.unwrap_or_default();
        let their_conf_ver = msg.region_epoch.unwrap_or_default().conf_ver;
        let our_conf_ver = fsm.peer.region().region_epoch.unwrap_or_default().conf_ver;
        if to.id != fsm.peer.peer_id() {
            // Peer ids only grow: a newer id for this store means this peer was removed and
            // the store added again.
            if to.id > fsm.peer.peer_id() && their_conf_ver > our_conf_ver {
                slog::info!(fsm.peer.logger(), "a newer peer of the region is on this store";
                    "new_peer_id" => to.id);
                self.destroy(fsm, Callback::new(|_| {}));
            }
            return None;
        }
        if msg.is_tombstone {
            if !fsm.peer.is_initialized() || their_conf_ver > our_conf_ver {
                slog::info!(fsm.peer.logger(), "removed from the region, says a member";
                    "from" => from.id, "conf_ver" => their_conf_ver);
                self.destroy(fsm, Callback::new(|_| {}));
            }
            return None;
        }
        let member = fsm.peer.region().peers.iter().any(|p| p.id == from.id);
        if fsm.peer.is_initialized() && !member && their_conf_ver <= our_conf_ver {
            // Removed (older membership), or unknown at the same membership: not a peer.
            if their_conf_ver < our_conf_ver {
                self.send_tombstone(&fsm.peer, from);
            }
            slog::debug!(fsm.peer.logger(), "dropping a message from a non-member";
                "from" => from.id, "conf_ver" => their_conf_ver);
            return None;
        }
        Some(member)
    }

    /// Stops the peer: nothing more is proposed, persisted or sent for it, and the ApplyFsm,
    /// after the entries already handed to it, deletes the region from this store.
    pub(crate) fn destroy(&mut self, fsm: &mut PeerFsm<EK>, cb: crate::router::Callback<()>) {
        slog::info!(fsm.peer.logger(), "destroying peer");
        fsm.stopped = true;
        self.ctx.ticks.remove(fsm.peer.region_id());
        if fsm.peer.counted_as_leader() {
            self.ctx
                .stats
                .leaders
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (region_id, store_id) = (fsm.peer.region_id(), fsm.peer.store_id());
        fsm.peer.fail_all(|| Error::StoreStopped {
            store_id,
            reason: format!("region {region_id}'s peer is being removed from this store"),
        });
        send_internal(
            &self.ctx.routers.apply,
            region_id,
            ApplyTask::Destroy { cb },
            &self.ctx.logger,
        );
    }

    /// Tells a peer that is no longer a member (its messages carry an older membership) that
    /// it was removed, so it destroys itself: a removed peer that missed its removal entry
    /// would otherwise keep campaigning.
    pub(crate) fn send_tombstone(&mut self, peer: &Peer<EK>, to: proto::metapb::Peer) {
        if to.id == 0 || to.store_id == 0 {
            return;
        }
        let region = peer.region();
        slog::info!(peer.logger(), "telling a removed peer it is gone"; "to" => to.id,
            "store_id" => to.store_id);
        self.transport.send(RaftMessage {
            region_id: region.id,
            from_peer: Some(peer.meta()),
            to_peer: Some(to),
            message: None,
            region_epoch: region.region_epoch,
            is_tombstone: true,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
            extra: None,
        });
    }

    /// Sends every other member an empty message: a member that no longer counts this peer
    /// answers with a tombstone (see [`RaftPoller::check_sender`]), one that does ignores it.
    pub(crate) fn probe_members(&mut self, peer: &Peer<EK>) {
        let region = peer.region();
        if peer.is_asleep() {
            // The routine check of a hibernating follower, once per hibernate interval.
            slog::debug!(peer.logger(), "hibernating: asking the members");
        } else {
            slog::info!(
                peer.logger(),
                "no leader for a long while; asking the members"
            );
        }
        for to in region.peers.iter().filter(|p| p.id != peer.peer_id()) {
            self.transport.send(RaftMessage {
                region_id: region.id,
                from_peer: Some(peer.meta()),
                to_peer: Some(*to),
                message: None,
                region_epoch: region.region_epoch,
                is_tombstone: false,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                extra: None,
            });
        }
    }
}
