use std::time::Duration;

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

/// Sends a message that must not be lost between the store's own threads (committed entries
/// to apply, apply results back), waiting for room while the target's mailbox is full. Gives
/// up only when the target is gone or the system is shutting down.
pub fn send_blocking<N: Fsm, C: Fsm>(
    router: &batch_system::Router<N, C>,
    addr: u64,
    mut msg: N::Message,
    logger: &slog::Logger,
) {
    loop {
        match router.send_timeout(addr, msg, Duration::from_secs(1)) {
            Ok(()) => return,
            Err(SendError::Full { msg: m, .. }) => {
                slog::warn!(logger, "mailbox full, waiting for room"; "addr" => addr);
                msg = m;
            }
            Err(e) => {
                slog::info!(logger, "dropping an internal message"; "error" => %e);
                return;
            }
        }
    }
}
