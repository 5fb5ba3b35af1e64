//! A region's raft peer: `RawNode` over `PeerStorage`, with the async-ready bookkeeping that lets
//! many regions share one raft-log write per round. Nothing here knows the batch system.

mod peer;

pub use peer::{Peer, ReadyOutput, ReceivedSnapshot};
