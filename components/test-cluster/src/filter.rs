//! Message filters of the channel transport: what a network can do to raft messages.

use std::collections::HashSet;
use std::time::Duration;

use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::MessageType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterAction {
    Pass,
    Drop,
    Delay(Duration),
}

pub trait Filter: Send + Sync {
    fn action(&self, msg: &RaftMessage) -> FilterAction;
}

fn stores(msg: &RaftMessage) -> (u64, u64) {
    (
        msg.from_peer.map_or(0, |p| p.store_id),
        msg.to_peer.map_or(0, |p| p.store_id),
    )
}

/// Drops every message between the two groups of stores (both directions).
#[derive(Debug)]
pub struct Partition {
    pub left: HashSet<u64>,
    pub right: HashSet<u64>,
}

impl Partition {
    pub fn new(left: &[u64], right: &[u64]) -> Partition {
        Partition {
            left: left.iter().copied().collect(),
            right: right.iter().copied().collect(),
        }
    }
}

impl Filter for Partition {
    fn action(&self, msg: &RaftMessage) -> FilterAction {
        let (from, to) = stores(msg);
        let across = (self.left.contains(&from) && self.right.contains(&to))
            || (self.right.contains(&from) && self.left.contains(&to));
        if across {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// Drops messages of one type and/or one region.
#[derive(Debug, Default)]
pub struct DropMessages {
    pub msg_type: Option<MessageType>,
    pub region_id: Option<u64>,
}

impl Filter for DropMessages {
    fn action(&self, msg: &RaftMessage) -> FilterAction {
        let type_matches = self
            .msg_type
            .is_none_or(|t| msg.message.as_ref().is_some_and(|m| m.msg_type == t as i32));
        let region_matches = self.region_id.is_none_or(|r| r == msg.region_id);
        if type_matches && region_matches {
            FilterAction::Drop
        } else {
            FilterAction::Pass
        }
    }
}

/// Delays every message (of one region, if set).
#[derive(Debug)]
pub struct Delay {
    pub duration: Duration,
    pub region_id: Option<u64>,
}

impl Filter for Delay {
    fn action(&self, msg: &RaftMessage) -> FilterAction {
        if self.region_id.is_none_or(|r| r == msg.region_id) {
            FilterAction::Delay(self.duration)
        } else {
            FilterAction::Pass
        }
    }
}
