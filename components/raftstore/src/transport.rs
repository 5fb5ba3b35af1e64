//! How raft messages leave the store. The test cluster implements it over channels, the server
//! over gRPC streams; the store does not know which.

use proto::raft_serverpb::RaftMessage;

use crate::router::Callback;
use crate::snap::SnapshotFiles;

/// Sends raft messages to other stores. Delivery is best effort: raft retransmits, so a send
/// that cannot be done (unknown store, full queue) drops the message and logs it.
pub trait Transport: Send + 'static {
    fn send(&mut self, msg: RaftMessage);

    /// Called after a round's early messages and at the end of every raft round: a transport
    /// that batches sends them now.
    fn flush(&mut self) {}

    /// Drops what a batching transport holds: the store stopped, and sends nothing more.
    fn discard(&mut self) {}

    /// Sends a MsgSnapshot with its files: the receiving store writes them with
    /// `SnapManager::receive` (chunks of at most 1 MiB), and only once they are complete and
    /// verified delivers `msg` to its peer. `done` reports whether that happened, so raft-rs
    /// can send again on failure.
    fn send_snapshot(&mut self, msg: RaftMessage, files: SnapshotFiles, done: Callback<()>) {
        done.invoke(Err(crate::Error::Snapshot {
            region_id: msg.region_id,
            key: files.key.to_string(),
            detail: "this transport cannot send snapshots".into(),
        }));
    }
}
