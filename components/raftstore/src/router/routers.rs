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
    let region_id = msg.region_id;
    match router.send(region_id, PeerMsg::RaftMessage(Box::new(msg))) {
        Ok(()) => true,
        Err(SendError::Disconnected { msg, .. }) => {
            let PeerMsg::RaftMessage(m) = msg else {
                return false;
            };
            router.send_control(StoreMsg::RaftMessage(m)).is_ok()
        }
        // Raft retransmits: dropping a message under overload is safe.
        Err(_) => false,
    }
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
