//! A peer's side effects, as values. `Peer` decides and records; the raft poller executes
//! (`RaftPoller::run_effects`, once per peer per round, after its messages and its ready).
//! So a peer never answers a caller, talks to a worker or writes anything itself, and a
//! driver other than the poller (a test, the simulator) sees every effect and chooses when it
//! happens.
//!
//! What a ready persists and sends is returned by `Peer::handle_ready` ([`ReadyOutput`]), and
//! what an apply result changed by `Peer::on_apply_res`: those the poller must act on in the
//! round's order of durable steps. Everything else a peer wants done is queued here.
//!
//! [`ReadyOutput`]: super::ReadyOutput

use proto::raft_serverpb::RaftMessage;

use crate::router::{ReadCallback, RegionSnapshot, WriteCallback};
use crate::Result;

/// An answer to a caller, decided by the peer and delivered by the poller.
pub enum Reply<S> {
    Write(WriteCallback, Result<()>),
    Read(ReadCallback<S>, Result<RegionSnapshot<S>>),
}

impl<S> Reply<S> {
    pub fn deliver(self) {
        match self {
            Reply::Write(cb, result) => cb.invoke(result),
            Reply::Read(cb, result) => cb.invoke(result),
        }
    }
}

/// What a peer asked the store to do since its effects were last taken.
pub struct Effects<S> {
    /// Answers, in the order the peer decided them.
    pub replies: Vec<Reply<S>>,
    /// The periodic split check is due (leaders only).
    pub split_check: bool,
    /// A region heartbeat to the scheduler is due: periodically, after an election, a
    /// membership change or a split. The poller builds it (`Peer::region_heartbeat`) when it
    /// runs the effects, so it reports the peer as it is after the whole round.
    pub heartbeat: bool,
    /// No leader heard from for a long while: ask the members whether this peer is still one.
    pub probe_members: bool,
    /// Messages that are not raft-rs's (hibernation's handshake), to send this round.
    pub messages: Vec<RaftMessage>,
}

impl<S> Default for Effects<S> {
    fn default() -> Self {
        Effects {
            replies: Vec::new(),
            split_check: false,
            heartbeat: false,
            probe_members: false,
            messages: Vec::new(),
        }
    }
}

impl<S> Effects<S> {
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
            && !self.split_check
            && !self.heartbeat
            && !self.probe_members
            && self.messages.is_empty()
    }
}
