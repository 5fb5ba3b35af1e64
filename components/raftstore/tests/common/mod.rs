//! Helpers shared by the raftstore integration tests.

use std::time::Instant;

use engine::MemEngine;
use raft_log::RaftLogEngine;
use raftstore::raft::Peer;

/// Makes a one-voter region's `peer` campaign and runs its ready rounds (log writes synced)
/// until it has nothing left to do: it is then the leader, its first entry persisted.
pub fn elect_alone(peer: &mut Peer<MemEngine>, log: &RaftLogEngine, now: Instant) {
    peer.campaign().expect("campaign");
    for _ in 0..10 {
        if !peer.has_ready() {
            break;
        }
        let mut batch = log.batch();
        let mut msgs = Vec::new();
        let ready = peer
            .handle_ready(&mut batch, &mut msgs, now)
            .expect("ready");
        log.write(&mut batch, true).expect("write");
        peer.on_round_persisted(&mut msgs);
        drop(ready);
    }
    assert!(peer.is_leader(), "a single voter elects itself");
}
