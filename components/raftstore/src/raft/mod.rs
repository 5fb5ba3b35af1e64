//! A region's raft peer: `RawNode` over `PeerStorage`, with the async-ready bookkeeping that lets
//! many regions share one raft-log write per round, and the effects it leaves for the poller to
//! execute. Nothing here knows the batch system.

mod effects;
mod election;
mod peer;

pub use effects::{Effects, Reply};
pub use election::{random_seed, ElectionRng};
pub use peer::{Peer, ReadyOutput, ReceivedSnapshot};
