//! The batch system: runs many finite state machines (FSMs) — one per region, plus one control
//! FSM per store — on a small pool of poller threads, handling them in batches so that work that
//! benefits from batching (group commit of raft logs, one RocksDB write per apply round) can be
//! done once per round instead of once per FSM.
//!
//! # Pieces
//! - [`Fsm`]: a state machine with a message type. It is owned by whoever is running it: either
//!   parked inside its mailbox (idle) or held by exactly one poller (notified).
//! - [`BasicMailbox`]: a bounded queue plus the FSM's ownership state. Sending a message to an
//!   idle FSM schedules it onto the pollers. The queue allocates only while messages wait, so
//!   an idle FSM's mailbox costs the same whatever its capacity.
//! - [`Router`]: id → mailbox for normal FSMs, one control mailbox, broadcast and close.
//! - [`BatchSystem`]: a pool of poller threads that take scheduled FSMs in batches and call a
//!   [`PollHandler`] (`begin`, `handle_control`, `handle_normal`, `end`).
//!
//! # Invariants
//! - An FSM is run by at most one thread at a time: its ownership state hands the boxed
//!   FSM to exactly one scheduler, and only the poller holding it may give it back.
//! - No wake-up is lost: a message is pushed before the FSM is notified, and a poller that
//!   releases an FSM re-checks its mailbox after the release and reclaims the FSM if a message
//!   slipped in between.
//! - Messages from one sender to one FSM are handled in the order they were sent.
//! - One FSM handles at most `messages_per_tick` messages per round; if others are waiting it goes
//!   to the back of the queue, so a flooded FSM cannot starve the rest.
//! - Every bound (mailbox capacity, batch size, messages per round, pool size) is a field of
//!   [`Config`] and has a metric in [`metrics`].
//!
//! # Must not depend on
//! raft, RocksDB, raft-engine, gRPC or any regionstore crate: this is a generic scheduler, and
//! `raftstore` builds on it, not the other way round.

mod config;
mod error;
mod fsm;
mod mailbox;
pub mod metrics;
mod router;
mod system;

pub use config::Config;
pub use error::{Error, SendError};
pub use fsm::Fsm;
pub use mailbox::BasicMailbox;
pub use router::Router;
pub use router::CONTROL_ADDR;
pub use system::{create_system, BatchSystem, HandlerBuilder, PollHandler, RouterAndSystem};
