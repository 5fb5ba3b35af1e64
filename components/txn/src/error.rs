use proto::kvrpcpb::{self, KeyError, LockInfo};

pub type Result<T> = std::result::Result<T, Error>;

/// Why a conflicting write was refused (kvproto's `WriteConflict.Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteConflictReason {
    Optimistic,
    PessimisticRetry,
    SelfRolledBack,
}

/// What can go wrong reading or running a transactional command. Each variant with a key
/// names it as the client sent it (raw, not encoded).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(transparent)]
    Key(#[from] api_version::Error),
    #[error("reading the snapshot failed")]
    Snapshot {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("key {:?} is locked by transaction {} (primary {:?})", lock.key, lock.lock_version, lock.primary_lock)]
    KeyIsLocked { lock: Box<LockInfo> },
    #[error("write conflict on key {key:?}: transaction {start_ts} meets the version transaction {conflict_start_ts} committed at {conflict_commit_ts} ({reason:?})")]
    WriteConflict {
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        key: Vec<u8>,
        primary: Vec<u8>,
        reason: WriteConflictReason,
    },
    #[error("key {key:?} already exists")]
    AlreadyExist { key: Vec<u8> },
    #[error("transaction {start_ts} has no lock on key {key:?} to commit at {commit_ts} (rolled back, or never prewritten)")]
    TxnLockNotFound {
        start_ts: u64,
        commit_ts: u64,
        key: Vec<u8>,
    },
    #[error("transaction {start_ts} cannot commit key {key:?} at {commit_ts}: below its min_commit_ts {min_commit_ts}")]
    CommitTsExpired {
        start_ts: u64,
        commit_ts: u64,
        key: Vec<u8>,
        min_commit_ts: u64,
    },
    #[error("transaction {start_ts} with primary {primary:?} is not found")]
    TxnNotFound { start_ts: u64, primary: Vec<u8> },
    #[error("transaction {start_ts} holds no pessimistic lock on key {key:?}")]
    PessimisticLockNotFound { start_ts: u64, key: Vec<u8> },
    #[error("transaction {start_ts} already committed key {key:?} at {commit_ts}: it cannot be rolled back")]
    Committed {
        start_ts: u64,
        commit_ts: u64,
        key: Vec<u8>,
    },
    #[error("transaction {start_ts} locks key {key:?} as {lock_type:?}: cannot {action}")]
    LockTypeNotMatch {
        start_ts: u64,
        key: Vec<u8>,
        lock_type: crate::LockType,
        action: &'static str,
    },
    #[error("commit ts {commit_ts} would be over the transaction's max_commit_ts {max_commit_ts}")]
    CommitTsTooLarge { commit_ts: u64, max_commit_ts: u64 },
    #[error("deadlock: transaction {start_ts} waits for transaction {lock_ts} on key {lock_key:?}, which waits for it (a cycle of {} waits)", wait_chain.len())]
    Deadlock {
        start_ts: u64,
        lock_ts: u64,
        lock_key: Vec<u8>,
        /// The key the requester holds that closes the cycle, and its fingerprint.
        deadlock_key: Vec<u8>,
        deadlock_key_hash: u64,
        /// The cycle: the waits from the holder back to the requester, then its own.
        wait_chain: Vec<WaitFor>,
    },
    /// The request itself is wrong: asking again will not help.
    #[error("{0}")]
    Invalid(String),
}

/// One wait in a deadlock's cycle: transaction `txn` waits for `wait_for_txn`'s lock on `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitFor {
    pub txn: u64,
    pub wait_for_txn: u64,
    pub key: Vec<u8>,
    /// `key`'s fingerprint (farmhash fingerprint64, as TiDB hashes keys).
    pub key_hash: u64,
}

impl Error {
    /// The snapshot (engine or region) failed underneath a read.
    pub fn snapshot(source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Snapshot {
            source: Box::new(source),
        }
    }

    /// The `KeyError` a TiKV client expects for this error: the structured field where
    /// kvproto has one, `retryable` where restarting the transaction helps, `abort`
    /// otherwise. Errors that are not about keys (a failed snapshot) become `abort`.
    pub fn to_key_error(&self) -> KeyError {
        let mut e = KeyError::default();
        match self {
            Error::KeyIsLocked { lock } => e.locked = Some((**lock).clone()),
            Error::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => {
                e.retryable = self.to_string();
                e.conflict = Some(kvrpcpb::WriteConflict {
                    start_ts: *start_ts,
                    conflict_ts: *conflict_start_ts,
                    key: key.clone(),
                    primary: primary.clone(),
                    conflict_commit_ts: *conflict_commit_ts,
                    reason: match reason {
                        WriteConflictReason::Optimistic => {
                            kvrpcpb::write_conflict::Reason::Optimistic
                        }
                        WriteConflictReason::PessimisticRetry => {
                            kvrpcpb::write_conflict::Reason::PessimisticRetry
                        }
                        WriteConflictReason::SelfRolledBack => {
                            kvrpcpb::write_conflict::Reason::SelfRolledBack
                        }
                    } as i32,
                });
            }
            Error::AlreadyExist { key } => {
                e.already_exist = Some(kvrpcpb::AlreadyExist { key: key.clone() })
            }
            Error::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => {
                e.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                    start_ts: *start_ts,
                    attempted_commit_ts: *commit_ts,
                    key: key.clone(),
                    min_commit_ts: *min_commit_ts,
                })
            }
            Error::TxnNotFound { start_ts, primary } => {
                e.txn_not_found = Some(kvrpcpb::TxnNotFound {
                    start_ts: *start_ts,
                    primary_key: primary.clone(),
                })
            }
            Error::CommitTsTooLarge { commit_ts, .. } => {
                e.commit_ts_too_large = Some(kvrpcpb::CommitTsTooLarge {
                    commit_ts: *commit_ts,
                })
            }
            Error::Deadlock {
                lock_ts,
                lock_key,
                deadlock_key,
                deadlock_key_hash,
                wait_chain,
                ..
            } => {
                e.abort = self.to_string();
                e.deadlock = Some(kvrpcpb::Deadlock {
                    lock_ts: *lock_ts,
                    lock_key: lock_key.clone(),
                    deadlock_key_hash: *deadlock_key_hash,
                    wait_chain: wait_chain
                        .iter()
                        .map(|w| kvrpcpb::WaitForEntry {
                            txn: w.txn,
                            wait_for_txn: w.wait_for_txn,
                            key_hash: w.key_hash,
                            key: w.key.clone(),
                        })
                        .collect(),
                    deadlock_key: deadlock_key.clone(),
                });
            }
            Error::TxnLockNotFound { .. } | Error::PessimisticLockNotFound { .. } => {
                e.retryable = self.to_string()
            }
            Error::Corrupt { .. }
            | Error::Key(_)
            | Error::Snapshot { .. }
            | Error::Committed { .. }
            | Error::LockTypeNotMatch { .. }
            | Error::Invalid(_) => e.abort = self.to_string(),
        }
        e
    }
}
