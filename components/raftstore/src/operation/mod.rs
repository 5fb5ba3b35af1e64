//! One module per command. Each holds the command's propose-time checks (`impl Peer` blocks),
//! its apply (free functions over the write batch), and the handling of its applied result
//! (`impl RaftPoller` blocks); `fsm/` dispatches messages to them and `raft/` keeps the raft
//! core.
//!
//! - [`write`]: put, delete, delete-range per CF; proposing a command and tracking it.
//! - [`read`]: the lease and ReadIndex rules for linearizable reads.
//! - [`conf_change`]: membership changes (ChangePeerV2, joint consensus, leaving it).
//! - [`split`]: region split (BatchSplit), finding split keys, the peers a split creates.
//! - [`log_gc`]: when to compact a region's raft log, and the apply of `CompactLog`.
//! - [`snapshot`]: taking in a received snapshot, reporting sends.
//! - [`transfer_leader`]: leader transfer (executed at propose time, never logged).
//! - [`destroy`]: destroying a peer, and the tombstones that tell a removed peer it is gone.
//! - [`heartbeat`]: the region heartbeat to the scheduler (down and pending peers).
//! - [`hibernate`]: idle regions stop ticking: the leader's request, the members' agreement,
//!   what wakes a peer.
//! - [`admin`]: the apply-side dispatch of admin commands that enter the log (CompactLog,
//!   BatchSplit), shared by `log_gc` and `split`.
//! - [`apply`]: the dispatch from a committed entry to the operation that applies it.
//!
//! `admin` and `apply` are not commands but the two dispatch tables over them (entry kind →
//! operation, admin type → operation). They stay apart so that a module per command never
//! needs to know the others; each holds only the match and the apply state's bookkeeping.

pub mod admin;
pub mod apply;
pub mod conf_change;
pub mod destroy;
pub mod heartbeat;
pub mod hibernate;
pub mod log_gc;
pub mod read;
pub mod snapshot;
pub mod split;
pub mod transfer_leader;
pub mod write;
