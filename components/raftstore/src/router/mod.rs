//! What travels between the store's threads: peer, store and apply messages, the callbacks
//! that answer requests, and the routers that deliver them.

mod message;
mod routers;

pub use message::{
    ApplyRes, ApplyTask, Callback, CommittedEntries, PeerMsg, PeerStatus, Proposal, ReadCallback,
    RegionSnapshot, StoreMsg, WriteCallback,
};
pub use routers::{
    deliver_raft_message, deliver_raft_messages, note_store_heard, send_internal, ApplyRouter,
    RaftRouter,
};
