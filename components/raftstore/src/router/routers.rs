use batch_system::{Fsm, SendError};
use engine::KvEngine;
use proto::raft_serverpb::RaftMessage;

use super::{PeerMsg, StoreMsg};
use crate::fsm::{ApplyControlFsm, ApplyFsm, PeerFsm, StoreFsm};

/// Region id → PeerFsm, plus the StoreFsm as control.
pub type RaftRouter<EK> = batch_system::Router<PeerFsm<EK>, StoreFsm>;
/// Region id → ApplyFsm.
pub type ApplyRouter<EK> = batch_system::Router<ApplyFsm<EK>, ApplyControlFsm>;

/// Delivers a raft message from another store: to the region's peer, or to the store when the
/// region has no peer here.
pub fn deliver_raft_message<EK: KvEngine>(router: &RaftRouter<EK>, msg: RaftMessage) -> bool {
    if let Some(from_store) = crate::fsm::liveness::is_store_heartbeat(&msg) {
        return router
            .send_control(StoreMsg::StoreHeartbeat { from_store })
            .is_ok();
    }
    match router.send(msg.region_id, PeerMsg::RaftMessage(Box::new(msg))) {
        Ok(()) => true,
        Err(e) => on_refused(router, e),
    }
}

/// A message its region's mailbox refused: a region with no peer here is the store's to
/// handle; a full mailbox drops it (raft retransmits, so dropping under overload is safe).
fn on_refused<EK: KvEngine>(router: &RaftRouter<EK>, e: SendError<PeerMsg<EK::Snapshot>>) -> bool {
    match e {
        SendError::Disconnected {
            msg: PeerMsg::RaftMessage(m),
            ..
        } => router.send_control(StoreMsg::RaftMessage(m)).is_ok(),
        _ => false,
    }
}

/// Delivers the raft messages of one batch from another store (what its poller sent in one
/// round) so that the peers they wake are handled in one round here too: their appends share
/// one raft-log write and fsync. Returns how many were delivered.
pub fn deliver_raft_messages<EK: KvEngine>(
    router: &RaftRouter<EK>,
    msgs: impl IntoIterator<Item = RaftMessage>,
) -> usize {
    let mut delivered = 0;
    let mut to_peers = Vec::new();
    for msg in msgs {
        if let Some(from_store) = crate::fsm::liveness::is_store_heartbeat(&msg) {
            delivered += usize::from(
                router
                    .send_control(StoreMsg::StoreHeartbeat { from_store })
                    .is_ok(),
            );
            continue;
        }
        to_peers.push((msg.region_id, PeerMsg::RaftMessage(Box::new(msg))));
    }
    let sent = to_peers.len();
    let refused = router.send_group(to_peers);
    delivered += sent - refused.len();
    for e in refused {
        delivered += usize::from(on_refused(router, e));
    }
    delivered
}

/// Notes that store `from_store` was heard from (any raft traffic, not only its liveness
/// heartbeats, which a full send queue on a busy store may drop).
pub fn note_store_heard<EK: KvEngine>(router: &RaftRouter<EK>, from_store: u64) -> bool {
    from_store != 0
        && router
            .send_control(StoreMsg::StoreHeartbeat { from_store })
            .is_ok()
}

/// Sends a message between the store's own pollers (committed entries to apply, apply results
/// back, destroy): never refused for capacity, since a poller blocked on the other pool's full
/// mailbox while holding its own batch could deadlock both pools. Dropped only when the target
/// is gone or the system is shutting down.
pub fn send_internal<N: Fsm, C: Fsm>(
    router: &batch_system::Router<N, C>,
    addr: u64,
    msg: N::Message,
    logger: &slog::Logger,
) {
    if let Err(e) = router.force_send(addr, msg) {
        slog::info!(logger, "dropping an internal message"; "error" => %e);
    }
}
