use proto::errorpb;
use proto::metapb::{Peer as PeerMeta, Region};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("region {region_id}: KV engine: {source}")]
    Engine {
        region_id: u64,
        #[source]
        source: engine::Error,
    },
    #[error("region {region_id}: raft log: {source}")]
    RaftLog {
        region_id: u64,
        #[source]
        source: raft_log::Error,
    },
    #[error("key {key:?} is not in region {region_id} [{start_key:?}, {end_key:?})")]
    KeyNotInRegion {
        key: Vec<u8>,
        region_id: u64,
        start_key: Vec<u8>,
        end_key: Vec<u8>,
    },
    /// The request was made against another epoch of the region (split, merge or membership
    /// change since). `current_regions` is what the client should refresh its cache with.
    #[error(
        "region {region_id}: request epoch (conf_ver {request_conf_ver}, version \
         {request_version}) is stale; current regions are {current_regions:?}"
    )]
    EpochNotMatch {
        region_id: u64,
        request_conf_ver: u64,
        request_version: u64,
        current_regions: Vec<Region>,
    },
    #[error("region {region_id}: this peer is not the leader; the leader is {leader:?}")]
    NotLeader {
        region_id: u64,
        leader: Option<PeerMeta>,
    },
    #[error("region {region_id} is not on store {store_id}")]
    RegionNotFound { region_id: u64, store_id: u64 },
    #[error("request for store {request_store_id} reached store {actual_store_id}")]
    StoreNotMatch {
        request_store_id: u64,
        actual_store_id: u64,
    },
    #[error("region {region_id}: entry of {entry_size} bytes exceeds raft-entry-max-size {limit}")]
    RaftEntryTooLarge {
        region_id: u64,
        entry_size: u64,
        limit: u64,
    },
    #[error("region {region_id}: server is busy: {reason}")]
    ServerIsBusy { region_id: u64, reason: String },
    /// The proposal's log index was taken by another leader's entry (or truncated away): it
    /// will never be applied, and the client may retry.
    #[error("region {region_id}: proposal at index {index} term {term} was superseded: {detail}")]
    StaleCommand {
        region_id: u64,
        index: u64,
        term: u64,
        detail: String,
    },
    /// The proposal's fate is unknown: it may still commit under another leader. Retrying a
    /// non-idempotent command (compare-and-swap) could apply it twice.
    #[error(
        "region {region_id}: proposal at index {index} term {term} is undetermined after \
         {waited_ms} ms; it may still be applied"
    )]
    Undetermined {
        region_id: u64,
        index: u64,
        term: u64,
        waited_ms: u64,
    },
    /// A read could not be confirmed linearizable in time (no side effects; safe to retry).
    #[error("region {region_id}: read not served within {waited_ms} ms: {reason}")]
    ReadTimeout {
        region_id: u64,
        waited_ms: u64,
        reason: String,
    },
    /// The store stopped (shutdown or a fatal I/O error) before the request was answered. For
    /// a write this means its outcome is unknown.
    #[error("store {store_id} stopped before answering: {reason}")]
    StoreStopped { store_id: u64, reason: String },
    /// A membership change was refused before it changed anything (another one is pending,
    /// the region is joint, the change names a peer wrongly...).
    #[error("region {region_id}: membership change refused: {detail}")]
    ConfChange { region_id: u64, detail: String },
    #[error("region {region_id}: invalid command: {detail}")]
    InvalidCommand { region_id: u64, detail: String },
    #[error("region {region_id}: raft: {source}")]
    Raft {
        region_id: u64,
        #[source]
        source: raft::Error,
    },
    /// Persisted states contradict each other; the store must not start this region.
    #[error("region {region_id}: inconsistent persisted state: {detail}")]
    InvalidState { region_id: u64, detail: String },
    /// A snapshot file could not be written, read or applied.
    #[error("region {region_id}: snapshot {key}: {detail}")]
    Snapshot {
        region_id: u64,
        key: String,
        detail: String,
    },
    /// A snapshot file does not match its meta (size or crc32c): it must be fetched again, and
    /// nothing of it may be applied.
    #[error("region {region_id}: snapshot file {path} is corrupt: {detail}")]
    SnapshotCorrupt {
        region_id: u64,
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("store {store_id}: {detail}")]
    Store { store_id: u64, detail: String },
    /// The placement scheduler could not be asked (ids for a split, say).
    #[error("scheduler: {detail}")]
    Scheduler { detail: String },
}

impl Error {
    /// Asking again (after finding the leader, or after a pause) may succeed: nothing says the
    /// request itself is wrong. `Undetermined` and `StoreStopped` are among them, and mean the
    /// outcome is unknown: only an idempotent request may simply be sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::StaleCommand { .. }
                | Error::Undetermined { .. }
                | Error::ServerIsBusy { .. }
                | Error::ReadTimeout { .. }
                | Error::StoreStopped { .. }
                | Error::RegionNotFound { .. }
        )
    }

    /// For an answer to a write: whether it may have been applied anyway. Only these two
    /// leave the outcome unknown; every other error means nothing was written (the
    /// simulator holds the store to that).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Error::Undetermined { .. } | Error::StoreStopped { .. }
        )
    }

    /// The request was routed with a region that changed since (a split): look the region
    /// up again and send it there.
    pub fn is_stale_route(&self) -> bool {
        matches!(
            self,
            Error::EpochNotMatch { .. } | Error::KeyNotInRegion { .. }
        )
    }

    /// The region error a TiKV-compatible client understands, or `None` for errors that are
    /// not about routing (they travel as a plain message).
    pub fn to_region_error(&self) -> Option<errorpb::Error> {
        let mut e = errorpb::Error {
            message: self.to_string(),
            ..Default::default()
        };
        match self {
            Error::NotLeader { region_id, leader } => {
                e.not_leader = Some(errorpb::NotLeader {
                    region_id: *region_id,
                    leader: *leader,
                })
            }
            Error::RegionNotFound { region_id, .. } => {
                e.region_not_found = Some(errorpb::RegionNotFound {
                    region_id: *region_id,
                })
            }
            Error::KeyNotInRegion {
                key,
                region_id,
                start_key,
                end_key,
            } => {
                e.key_not_in_region = Some(errorpb::KeyNotInRegion {
                    key: key.clone(),
                    region_id: *region_id,
                    start_key: start_key.clone(),
                    end_key: end_key.clone(),
                })
            }
            Error::EpochNotMatch {
                current_regions, ..
            } => {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: current_regions.clone(),
                })
            }
            Error::ServerIsBusy { reason, .. } => {
                e.server_is_busy = Some(errorpb::ServerIsBusy {
                    reason: reason.clone(),
                    backoff_ms: 100,
                    ..Default::default()
                })
            }
            Error::StaleCommand { .. } => e.stale_command = Some(errorpb::StaleCommand {}),
            Error::StoreNotMatch {
                request_store_id,
                actual_store_id,
            } => {
                e.store_not_match = Some(errorpb::StoreNotMatch {
                    request_store_id: *request_store_id,
                    actual_store_id: *actual_store_id,
                })
            }
            Error::RaftEntryTooLarge {
                region_id,
                entry_size,
                ..
            } => {
                e.raft_entry_too_large = Some(errorpb::RaftEntryTooLarge {
                    region_id: *region_id,
                    entry_size: *entry_size,
                })
            }
            _ => return None,
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_errors_become_region_errors_and_the_rest_do_not() {
        let e = Error::NotLeader {
            region_id: 7,
            leader: Some(PeerMeta {
                id: 72,
                store_id: 2,
                ..Default::default()
            }),
        }
        .to_region_error()
        .unwrap();
        assert_eq!(e.not_leader.unwrap().leader.unwrap().store_id, 2);
        let e = Error::StaleCommand {
            region_id: 1,
            index: 9,
            term: 2,
            detail: "x".into(),
        }
        .to_region_error()
        .unwrap();
        assert!(e.stale_command.is_some());
        let undetermined = Error::Undetermined {
            region_id: 1,
            index: 9,
            term: 2,
            waited_ms: 10,
        };
        assert!(
            undetermined.to_region_error().is_none(),
            "an undetermined write must not look retryable (StaleCommand) to a client"
        );
    }
}
