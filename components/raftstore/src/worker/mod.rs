//! Threads beside the poller pools. The snap-generator pool lives in `system` and `fsm::store`
//! (it needs the store context); the split checker and the scheduler worker are here.

mod heartbeat;
mod split_check;

pub use heartbeat::HeartbeatTask;
pub use split_check::SplitTask;

/// An admin command for `region` as its leader `leader` sees it.
fn admin_command(
    region: &proto::metapb::Region,
    leader: proto::metapb::Peer,
    admin: proto::raft_cmdpb::AdminRequest,
) -> proto::raft_cmdpb::RaftCmdRequest {
    proto::raft_cmdpb::RaftCmdRequest {
        header: Some(proto::raft_cmdpb::RaftRequestHeader {
            region_id: region.id,
            peer: Some(leader),
            region_epoch: region.region_epoch,
            ..Default::default()
        }),
        requests: vec![],
        admin_request: Some(admin),
    }
}
