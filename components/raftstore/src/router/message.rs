use std::fmt;
use std::time::Instant;

use engine::{keys, Snapshot};
use proto::metapb::Region;
use proto::raft_cmdpb::RaftCmdRequest;
use proto::raft_serverpb::{RaftApplyState, RaftMessage};
use raft::eraftpb::Entry;

use crate::{Error, Result};

/// Answers one request exactly once. Dropping it unanswered (a store shutting down) is seen by
/// an async caller as a cancelled channel, which the embedded API reports as `StoreStopped`.
pub struct Callback<T>(Box<dyn FnOnce(Result<T>) + Send>);

impl<T> Callback<T> {
    pub fn new(f: impl FnOnce(Result<T>) + Send + 'static) -> Callback<T> {
        Callback(Box::new(f))
    }

    pub fn invoke(self, result: Result<T>) {
        (self.0)(result)
    }
}

impl<T> fmt::Debug for Callback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}

pub type WriteCallback = Callback<()>;
pub type ReadCallback<S> = Callback<RegionSnapshot<S>>;

/// A linearizable, region-scoped view of the KV engine: reads outside the region are refused.
pub struct RegionSnapshot<S> {
    snapshot: std::sync::Arc<S>,
    region: Region,
    term: u64,
    applied_index: u64,
}

impl<S> Clone for RegionSnapshot<S> {
    fn clone(&self) -> Self {
        RegionSnapshot {
            snapshot: self.snapshot.clone(),
            region: self.region.clone(),
            term: self.term,
            applied_index: self.applied_index,
        }
    }
}

impl<S: Snapshot> RegionSnapshot<S> {
    pub fn new(snapshot: std::sync::Arc<S>, region: Region) -> RegionSnapshot<S> {
        RegionSnapshot {
            snapshot,
            region,
            term: 0,
            applied_index: 0,
        }
    }

    /// This view, marked as holding every entry up to `index` applied.
    pub fn with_applied_index(mut self, index: u64) -> RegionSnapshot<S> {
        self.applied_index = index;
        self
    }

    /// The region's applied index when the view was taken (0 if unknown): every entry at or
    /// below it is in the view, or was overwritten by another term's entry that is.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// This view, marked as read by the leader of `term`.
    pub fn with_term(mut self, term: u64) -> RegionSnapshot<S> {
        self.term = term;
        self
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The term of the leader that served the read (0 if unknown). A write that depends on
    /// this read (compare-and-swap) carries it, and is refused if leadership moved since.
    pub fn term(&self) -> u64 {
        self.term
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if keys::region_contains(&self.region, key) {
            return Ok(());
        }
        Err(Error::KeyNotInRegion {
            key: key.to_vec(),
            region_id: self.region.id,
            start_key: self.region.start_key.clone(),
            end_key: self.region.end_key.clone(),
        })
    }

    /// The value of user key `key` in `cf`.
    pub fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        self.snapshot
            .get_value_cf(cf, &keys::data_key(key))
            .map_err(|source| Error::Engine {
                region_id: self.region.id,
                source,
            })
    }

    /// Up to `limit` user key/value pairs of `cf` in `[start, end)`, clipped to the region
    /// (an empty `end` means the region's end), in reverse order if asked.
    pub fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan_cf_with(cf, start, end, reverse, |key, value| {
            out.push((key.to_vec(), value.to_vec()));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Visits the pairs of `[start, end)` (end empty: unbounded) clipped to the region, in
    /// order (descending if `reverse`), with user keys, until `f` answers false.
    pub fn scan_cf_with<F>(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        mut f: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        let start = start.max(self.region.start_key.as_slice());
        let end = if end.is_empty()
            || (!self.region.end_key.is_empty() && end > self.region.end_key.as_slice())
        {
            self.region.end_key.as_slice()
        } else {
            end
        };
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        let data_start = keys::data_key(start);
        let data_end = keys::data_end_key(end);
        // The visitor's own error is kept apart from the engine's, and returned as it was.
        let mut failed = None;
        self.snapshot
            .scan_cf(cf, &data_start, &data_end, reverse, &mut |k, v| {
                let Some(user_key) = keys::origin_key(k) else {
                    return Ok(true);
                };
                match f(user_key, v) {
                    Ok(more) => Ok(more),
                    Err(e) => {
                        failed = Some(e);
                        Ok(false)
                    }
                }
            })
            .map_err(|source| Error::Engine {
                region_id: self.region.id,
                source,
            })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A proposal waiting for its entry to be applied.
#[derive(Debug)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
    /// Its command's place in the entry: writes proposed in one round share an entry
    /// (`operation::write::ProposalBatch`); 0 for an entry of one command.
    pub slot: u32,
    pub propose_time: Instant,
    pub cb: WriteCallback,
}

/// Messages to a region's PeerFsm.
pub enum PeerMsg<S> {
    /// A raft message from another store.
    RaftMessage(Box<RaftMessage>),
    /// A write to propose; `sent` is when it entered the mailbox (None for the store's own
    /// admin commands), for `regionstore_write_hop_seconds{hop="mailbox"}`.
    Command {
        request: RaftCmdRequest,
        cb: WriteCallback,
        sent: Option<Instant>,
    },
    /// A linearizable read.
    Read {
        request: RaftCmdRequest,
        cb: ReadCallback<S>,
    },
    /// The raft logical clock (awake peers only: see `fsm/ticks.rs`).
    Tick,
    /// A hibernating peer's rare tick: a leader reports the region to the scheduler, a
    /// follower checks it is still a member; both stay asleep.
    HibernateTick,
    /// The scheduler worker had no room for this leader's last region heartbeat: report again
    /// (without waking).
    ReportRegion,
    /// The store hosting this region's leader has been silent for an election timeout: a
    /// follower wakes and counts the election ticks it slept through.
    LeaderStoreDown { store_id: u64 },
    /// A store hosting a member of this region answers again after it was found down: a
    /// sleeping leader sends one heartbeat round (it may have been deposed meanwhile).
    MemberStoreUp { store_id: u64 },
    /// The ApplyFsm applied entries.
    ApplyRes(ApplyRes),
    /// Keeps the FSM scheduled: it has a ready that became available after its round's fsync.
    Wake,
    /// The store writer made this peer's readies up to `number` durable (`peer_id`: a notice
    /// for an earlier peer of the region is ignored).
    Persisted { peer_id: u64, number: u64 },
    /// Campaign now (tests and the scheduler's leader placement).
    Campaign,
    /// Split the region at `split_keys` (an admin request, or the scheduler). Refused unless
    /// this peer leads and `region_epoch` is the region's; `cb` answers once it is applied.
    AskSplit {
        region_epoch: Option<proto::metapb::RegionEpoch>,
        split_keys: Vec<Vec<u8>>,
        cb: Callback<()>,
    },
    /// Reports the peer's state (tests, status page).
    QueryStatus(Callback<PeerStatus>),
    /// The snap-generator pool finished this region's snapshot (`None`: it failed).
    SnapshotGenerated(Option<Box<raft::eraftpb::Snapshot>>),
    /// A snapshot sent to `to_peer_id` was received (and verified) or not.
    SnapshotStatus {
        to_peer_id: u64,
        ok: bool,
        /// It failed only because a transfer limit was reached: the snapshot itself is fine.
        busy: bool,
    },
    /// Removes this peer from the store: it stops, then its ApplyFsm deletes the region's data
    /// and raft log and marks it tombstone. `cb` is answered when that is durable.
    Destroy { cb: Callback<()> },
}

/// A peer's state as of one poll round.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub region: Region,
    pub peer_id: u64,
    pub is_leader: bool,
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The log holds entries after this index only.
    pub truncated_index: u64,
    pub pending_proposals: usize,
    /// Reads waiting for a ReadIndex round or for the apply to reach its index.
    pub pending_reads: usize,
    pub lease_valid: bool,
    /// The peer hibernates (not ticked; see `operation/hibernate.rs`).
    pub asleep: bool,
    /// Ticks the peer has taken since it started (a hibernating peer takes none).
    pub ticks: u64,
}

impl<S> fmt::Debug for PeerMsg<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMsg::RaftMessage(m) => write!(f, "RaftMessage(region {})", m.region_id),
            PeerMsg::Command { .. } => f.write_str("Command"),
            PeerMsg::Read { .. } => f.write_str("Read"),
            PeerMsg::Tick => f.write_str("Tick"),
            PeerMsg::HibernateTick => f.write_str("HibernateTick"),
            PeerMsg::ReportRegion => f.write_str("ReportRegion"),
            PeerMsg::LeaderStoreDown { store_id } => write!(f, "LeaderStoreDown({store_id})"),
            PeerMsg::MemberStoreUp { store_id } => write!(f, "MemberStoreUp({store_id})"),
            PeerMsg::ApplyRes(r) => write!(f, "ApplyRes({})", r.apply_state.applied_index),
            PeerMsg::Wake => f.write_str("Wake"),
            PeerMsg::Persisted { peer_id, number } => f
                .debug_struct("Persisted")
                .field("peer_id", peer_id)
                .field("number", number)
                .finish(),
            PeerMsg::Campaign => f.write_str("Campaign"),
            PeerMsg::AskSplit { split_keys, .. } => write!(f, "AskSplit({})", split_keys.len()),
            PeerMsg::QueryStatus(_) => f.write_str("QueryStatus"),
            PeerMsg::Destroy { .. } => f.write_str("Destroy"),
            PeerMsg::SnapshotGenerated(s) => write!(f, "SnapshotGenerated({})", s.is_some()),
            PeerMsg::SnapshotStatus { to_peer_id, ok, .. } => {
                write!(f, "SnapshotStatus({to_peer_id}, {ok})")
            }
        }
    }
}

/// Messages to the StoreFsm (the control FSM).
#[derive(Debug)]
pub enum StoreMsg {
    /// The store's clock: store-wide housekeeping and metrics.
    Tick,
    /// A raft message for a region that has no peer here.
    RaftMessage(Box<RaftMessage>),
    /// Store `from_store`'s liveness heartbeat (see `fsm/liveness.rs`).
    StoreHeartbeat { from_store: u64 },
    /// Creates a peer for a region whose state is not on this store yet (bootstrap of a new
    /// region, and later a replica added by a membership change). Refused if it overlaps a
    /// region already here.
    CreatePeer {
        region: Box<Region>,
        cb: Callback<()>,
    },
    /// Destroys the peer of a region hosted here (see `PeerMsg::Destroy`).
    DestroyPeer { region_id: u64, cb: Callback<()> },
}

/// Committed entries of one region, for its ApplyFsm.
#[derive(Debug)]
pub struct CommittedEntries {
    pub region_id: u64,
    /// The commit index and its term the entries were committed under.
    pub commit: (u64, u64),
    pub entries: Vec<Entry>,
    /// Proposals made here whose index is at or below the last entry's, in index order (one
    /// below the first entry's was covered by a snapshot).
    pub proposals: Vec<Proposal>,
    /// When the peer handed them to apply (`hop="apply_wait"`).
    pub committed_at: Instant,
}

/// Messages to a region's ApplyFsm.
#[derive(Debug)]
pub enum ApplyTask {
    Apply(CommittedEntries),
    /// raft-rs needs a snapshot of this region: take one at exactly the applied index and
    /// hand it to the snap-generator pool.
    GenSnapshot,
    /// Steps 3-4 of applying a received snapshot (the raft side is done): replace the
    /// region's data with the files, then record the region Normal with `apply_state`.
    ApplySnapshot {
        region: Box<Region>,
        key: crate::snap::SnapKey,
        meta: proto::raft_serverpb::SnapshotMeta,
        apply_state: RaftApplyState,
    },
    /// The peer has stopped: after this round's write, delete the region's data, apply state
    /// and raft log, mark it tombstone, then answer `cb`.
    Destroy {
        cb: Callback<()>,
    },
}

/// What an apply round did for one region, back to its PeerFsm.
#[derive(Debug, Clone)]
pub struct ApplyRes {
    pub apply_state: RaftApplyState,
    pub applied_term: u64,
    /// The region after the apply (admin commands may change it).
    pub region: Region,
    /// Membership changes applied, in log order: raft-rs must be told each of them before it
    /// learns the new applied index.
    pub conf_changes: Vec<raft::eraftpb::ConfChangeV2>,
    /// Regions split off this one, in key order: their peers on this store are created.
    pub new_regions: Vec<Region>,
}
