//! The `regionstore` library facade and the binary's commands: re-exports the components that
//! make up a store, so an embedding database depends on one crate, and holds what the
//! `regionstore` binary runs (`scheduler`, `store`, `playground`, `ctl`, `bench`).

pub use batch_system;
pub use engine;
pub use proto;
pub use raft_log;
pub use raftstore;

pub mod bench;
pub mod config;
pub mod ctl;
pub mod logging;
pub mod playground;
pub mod scheduler;
pub mod sim;
pub mod store;
