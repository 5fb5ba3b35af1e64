/// Why a transactional request failed. `Raft` errors are the region errors clients retry
/// (NotLeader, EpochNotMatch, KeyNotInRegion, ...) or an unknown outcome; `Txn` errors are
/// the per-key answers (locked, write conflict, ...); `Invalid` is a request that will never
/// work as sent. Only an `Undetermined` or `StoreStopped` raft error leaves the outcome
/// unknown; every other error means nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Raft(#[from] raftstore::Error),
    #[error(transparent)]
    Txn(#[from] txn::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
