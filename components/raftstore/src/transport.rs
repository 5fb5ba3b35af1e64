//! How raft messages leave the store. The test cluster implements it over channels, the server
//! over gRPC streams; the store does not know which.

use proto::raft_serverpb::RaftMessage;

/// Sends raft messages to other stores. Delivery is best effort: raft retransmits, so a send
/// that cannot be done (unknown store, full queue) drops the message and logs it.
pub trait Transport: Send + 'static {
    fn send(&mut self, msg: RaftMessage);

    /// Called at the end of every raft round: a transport that batches sends them now.
    fn flush(&mut self) {}
}
