use std::sync::Arc;

use engine::{keys, KvEngine, CF_RAFT};
use proto::eraftpb::HardState as WireHardState;
use proto::metapb::{PeerRole, Region};
use proto::raft_serverpb::{PeerState, RaftApplyState, RaftLocalState, RaftTruncatedState};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_log::{RaftLogBatch, RaftLogEngine};

use super::entry_cache::{CacheBudget, EntryCache};
use crate::{Error, Result};

/// Puts `region`'s `RegionLocalState` into `wb`: the one place a region's state record is
/// written. `applying` is the snapshot being applied (with `PeerState::Applying`).
pub fn put_region_state<WB: engine::WriteBatch>(
    wb: &mut WB,
    region: &Region,
    state: PeerState,
    applying: Option<RaftTruncatedState>,
) -> engine::Result<()> {
    let local = proto::raft_serverpb::RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
        applying_snapshot: applying,
    };
    wb.put_msg_cf(CF_RAFT, &keys::region_state_key(region.id), &local)
}

/// A region created by bootstrap or split starts its log here rather than at 0, so that a peer
/// created later from a raft message (log at 0) needs a snapshot: it cannot hold the data.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
pub const RAFT_INIT_LOG_TERM: u64 = 5;

fn is_initialized(region: &Region) -> bool {
    !region.peers.is_empty()
}

/// The raft state of a region that has nothing persisted yet.
pub fn initial_raft_state(region: &Region) -> RaftLocalState {
    if is_initialized(region) {
        RaftLocalState {
            hard_state: Some(WireHardState {
                term: RAFT_INIT_LOG_TERM,
                vote: 0,
                commit: RAFT_INIT_LOG_INDEX,
            }),
            last_index: RAFT_INIT_LOG_INDEX,
        }
    } else {
        RaftLocalState::default()
    }
}

/// The apply state of a region that has nothing persisted yet.
pub fn initial_apply_state(region: &Region) -> RaftApplyState {
    if is_initialized(region) {
        RaftApplyState {
            applied_index: RAFT_INIT_LOG_INDEX,
            truncated_state: Some(RaftTruncatedState {
                index: RAFT_INIT_LOG_INDEX,
                term: RAFT_INIT_LOG_TERM,
            }),
            commit_index: RAFT_INIT_LOG_INDEX,
            commit_term: RAFT_INIT_LOG_TERM,
        }
    } else {
        RaftApplyState::default()
    }
}

/// raft-rs membership from the region's peers, including joint states.
pub fn conf_state_from_region(region: &Region) -> ConfState {
    let mut cs = ConfState::default();
    let joint = region
        .peers
        .iter()
        .any(|p| matches!(p.role(), PeerRole::IncomingVoter | PeerRole::DemotingVoter));
    for peer in &region.peers {
        match peer.role() {
            PeerRole::Voter => {
                cs.voters.push(peer.id);
                if joint {
                    cs.voters_outgoing.push(peer.id);
                }
            }
            PeerRole::Learner => cs.learners.push(peer.id),
            PeerRole::IncomingVoter => cs.voters.push(peer.id),
            PeerRole::DemotingVoter => {
                cs.voters_outgoing.push(peer.id);
                cs.learners_next.push(peer.id);
            }
        }
    }
    // Every joint state is entered with an automatic leave (see `conf_change`).
    cs.auto_leave = joint;
    cs
}

/// raft-rs's `Storage` for one region: the log from the shared raft-engine plus the entry cache,
/// the hard state and last index kept in memory ahead of persistence (async ready), and the
/// apply state from the KV engine.
pub struct PeerStorage<EK: KvEngine> {
    kv: EK,
    raft: RaftLogEngine,
    region: Region,
    peer_state: PeerState,
    /// Includes entries handed to the raft log but not yet durable.
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    last_term: u64,
    cache: EntryCache,
    /// Snapshot generation for followers that need one (raft-rs asks through `snapshot()`).
    gen: std::cell::RefCell<GenState>,
}

/// Where this peer's snapshot generation is.
#[derive(Debug, Default)]
enum GenState {
    #[default]
    Idle,
    /// raft-rs asked; the peer has not handed the request to its ApplyFsm yet.
    Requested,
    Generating,
    Ready(Snapshot),
}

fn to_rs_hard_state(hs: &Option<WireHardState>) -> HardState {
    let hs = hs.unwrap_or_default();
    hs.into()
}

impl<EK: KvEngine> PeerStorage<EK> {
    /// Loads a region's storage. Missing states are initialised (see [`initial_raft_state`]);
    /// persisted states that contradict each other are [`Error::InvalidState`].
    pub fn open(
        kv: EK,
        raft: RaftLogEngine,
        region: Region,
        peer_state: PeerState,
        budget: Arc<CacheBudget>,
    ) -> Result<PeerStorage<EK>> {
        let region_id = region.id;
        let mut raft_state = raft
            .raft_state(region_id)
            .map_err(|source| Error::RaftLog { region_id, source })?
            .unwrap_or_else(|| initial_raft_state(&region));
        let apply_state = kv
            .get_msg_cf::<RaftApplyState>(CF_RAFT, &keys::apply_state_key(region_id))
            .map_err(|source| Error::Engine { region_id, source })?
            .unwrap_or_else(|| initial_apply_state(&region));

        // An initialized region whose raft state is an uninitialized peer's (created by a
        // message, then initialized by a split here): start its log where a split region's
        // starts, keeping the term and vote it may have given.
        if is_initialized(&region) && raft_state.last_index < RAFT_INIT_LOG_INDEX {
            let hs = raft_state.hard_state.get_or_insert_with(Default::default);
            hs.term = hs.term.max(RAFT_INIT_LOG_TERM);
            hs.commit = hs.commit.max(RAFT_INIT_LOG_INDEX);
            raft_state.last_index = RAFT_INIT_LOG_INDEX;
        }
        // Entries may have been applied under a commit index whose HardState never reached disk
        // (async ready): the apply state remembers it, so raise the hard state to match.
        let hard_state = raft_state.hard_state.get_or_insert_with(Default::default);
        if apply_state.commit_index > hard_state.commit {
            hard_state.commit = apply_state.commit_index;
        }

        let invalid = |detail: String| Error::InvalidState { region_id, detail };
        let truncated = apply_state.truncated_state.unwrap_or_default();
        let (applied, last, commit) = (
            apply_state.applied_index,
            raft_state.last_index,
            hard_state.commit,
        );
        if peer_state != PeerState::Applying {
            if !(truncated.index <= applied && applied <= last) {
                return Err(invalid(format!(
                    "need truncated_index {} <= applied_index {} <= last_index {}",
                    truncated.index, applied, last
                )));
            }
            if commit > last {
                return Err(invalid(format!(
                    "commit index {commit} is beyond last index {last}"
                )));
            }
        }
        let log_last = raft.last_index(region_id);
        let missing = || {
            invalid(format!(
                "raft state says the last index is {last} but the raft log holds entries up to \
                 {log_last:?} only"
            ))
        };
        let last_term = if last == truncated.index {
            truncated.term
        } else if log_last.is_none_or(|l| l < last) {
            return Err(missing());
        } else if last == apply_state.commit_index && apply_state.commit_term != 0 {
            // The last entry is applied (an idle region's is): the apply state has its term.
            // Reading it from the log would decompress the block that holds it, per region at
            // start (3.7 s of a 6.3 s restart with 10,000 regions and 1 GiB of log).
            apply_state.commit_term
        } else {
            match raft.entry(region_id, last) {
                Ok(Some(e)) => e.term,
                Ok(None) => return Err(missing()),
                Err(source) => return Err(Error::RaftLog { region_id, source }),
            }
        };
        if let Some(log_last) = log_last {
            if log_last > last && peer_state != PeerState::Applying {
                return Err(invalid(format!(
                    "raft log holds entries up to {log_last}, beyond the persisted last index {last}"
                )));
            }
        }
        if last > truncated.index && peer_state != PeerState::Applying {
            match raft.first_index(region_id) {
                Some(first) if first <= truncated.index + 1 => {}
                first => {
                    return Err(invalid(format!(
                        "raft log starts at {first:?}, but entries from truncated index {} + 1 \
                         to last index {last} must be there",
                        truncated.index
                    )))
                }
            }
        }
        let mut cache = EntryCache::new(budget);
        // Everything up to the persisted last index is durable.
        cache.on_persisted(last, last_term);
        Ok(PeerStorage {
            kv,
            raft,
            region,
            peer_state,
            raft_state,
            apply_state,
            last_term,
            cache,
            gen: Default::default(),
        })
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn region_id(&self) -> u64 {
        self.region.id
    }

    pub fn set_region(&mut self, region: Region) {
        self.region = region;
    }

    pub fn peer_state(&self) -> PeerState {
        self.peer_state
    }

    pub fn raft_state(&self) -> &RaftLocalState {
        &self.raft_state
    }

    pub fn apply_state(&self) -> &RaftApplyState {
        &self.apply_state
    }

    pub fn set_apply_state(&mut self, state: RaftApplyState) {
        self.apply_state = state;
    }

    pub fn applied_index(&self) -> u64 {
        self.apply_state.applied_index
    }

    pub fn truncated_index(&self) -> u64 {
        self.apply_state
            .truncated_state
            .as_ref()
            .map_or(0, |t| t.index)
    }

    pub fn truncated_term(&self) -> u64 {
        self.apply_state
            .truncated_state
            .as_ref()
            .map_or(0, |t| t.term)
    }

    pub fn last_term(&self) -> u64 {
        self.last_term
    }

    /// The log was compacted up to and including `index` (the truncated state, already in
    /// the apply state): the cache lets go of those entries too.
    pub fn on_log_compacted(&mut self, index: u64) {
        self.cache.compact_to(index + 1);
    }

    /// Entries below `index` are needed by nobody: the cache keeps only the durable ones at or
    /// above it (see [`EntryCache::release_below`]).
    pub fn release_cached_below(&mut self, index: u64) {
        self.cache.release_below(index);
    }

    pub fn kv_engine(&self) -> &EK {
        &self.kv
    }

    pub fn entry_cache(&self) -> &EntryCache {
        &self.cache
    }

    /// Hands `entries` to the raft log through `batch` and serves them from the cache until
    /// they are durable. The last index moves at once (async ready). An append that starts at
    /// or below the last index replaces the tail from there.
    pub fn append(&mut self, entries: Vec<Entry>, batch: &mut RaftLogBatch) -> Result<()> {
        let Some((last_index, last_term)) = entries.last().map(|e| (e.index, e.term)) else {
            return Ok(());
        };
        let region_id = self.region.id;
        batch
            .append(region_id, &entries)
            .map_err(|source| Error::RaftLog { region_id, source })?;
        self.cache.append(entries);
        self.raft_state.last_index = last_index;
        self.last_term = last_term;
        Ok(())
    }

    /// Records a new hard state; it reaches disk with the next [`Self::write_raft_state`].
    pub fn set_hard_state(&mut self, hs: &HardState) {
        self.raft_state.hard_state = Some(hs.clone().into());
    }

    /// Puts the in-memory raft state (hard state + last index) into `batch`: the same batch
    /// as the entries it describes, so they become durable together.
    pub fn write_raft_state(&self, batch: &mut RaftLogBatch) -> Result<()> {
        let region_id = self.region.id;
        batch
            .put_raft_state(region_id, &self.raft_state)
            .map_err(|source| Error::RaftLog { region_id, source })
    }

    /// The batch holding entries up to `index` (of `term`) is durable: they may now leave the
    /// cache, unless a later conflicting append replaced them.
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        self.cache.on_persisted(index, term);
        self.cache.evict_if_over_budget();
    }

    fn check_range(&self, low: u64, high: u64) -> raft::Result<()> {
        if low > high {
            return Err(raft::Error::Store(StorageError::Other(
                format!(
                    "region {}: invalid entry range [{low}, {high})",
                    self.region.id
                )
                .into(),
            )));
        }
        if low <= self.truncated_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.raft_state.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(())
    }

    /// raft-rs tolerates `Compacted` (it then sends a snapshot) but treats `Other` as fatal.
    fn log_error(&self, e: raft_log::Error) -> raft::Error {
        if let raft_log::Error::Compacted { .. } = e {
            return raft::Error::Store(StorageError::Compacted);
        }
        let region_id = self.region.id;
        raft::Error::Store(StorageError::Other(Box::new(Error::RaftLog {
            region_id,
            source: e,
        })))
    }
}

impl<EK: KvEngine> raft::Storage for PeerStorage<EK> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: to_rs_hard_state(&self.raft_state.hard_state),
            conf_state: conf_state_from_region(&self.region),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.check_range(low, high)?;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        if low == high {
            return Ok(out);
        }
        let cache_first = self.cache.first_index().unwrap_or(high).max(low);
        let mut size = 0u64;
        if low < cache_first {
            let log_high = cache_first.min(high);
            let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
            self.raft
                .fetch_entries(self.region.id, low, log_high, Some(limit), &mut out)
                .map_err(|e| self.log_error(e))?;
            size = out.iter().map(|e| u64::from(e.compute_size())).sum();
            if (out.len() as u64) < log_high - low {
                // Stopped by the size limit.
                return Ok(out);
            }
        }
        if cache_first < high
            && !self
                .cache
                .fetch(cache_first, high, max_size, &mut size, &mut out)
            && out.is_empty()
        {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index() {
            return Ok(self.truncated_term());
        }
        self.check_range(idx, idx + 1)?;
        if idx == self.raft_state.last_index {
            return Ok(self.last_term);
        }
        if let Some(e) = self.cache.entry(idx) {
            return Ok(e.term);
        }
        match self.raft.entry(self.region.id, idx) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(self.log_error(e)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.last_index)
    }

    /// A generated snapshot at or past `request_index` and the truncated index is reused;
    /// otherwise one is requested and raft-rs is told "not yet" (any other error is fatal
    /// inside raft-rs) until it is ready.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut gen = self.gen.borrow_mut();
        if let GenState::Ready(snap) = &*gen {
            let index = snap.get_metadata().index;
            // A snapshot of an older epoch (before a split, say) describes a range the region
            // no longer has: a store holding the split-off region would refuse it forever.
            let epoch =
                <proto::raft_serverpb::SnapshotData as prost::Message>::decode(snap.get_data())
                    .ok()
                    .and_then(|d| d.region)
                    .and_then(|r| r.region_epoch);
            if index >= request_index
                && index >= self.truncated_index()
                && epoch == self.region.region_epoch
            {
                return Ok(snap.clone());
            }
            *gen = GenState::Idle;
        }
        if matches!(*gen, GenState::Idle) {
            *gen = GenState::Requested;
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

impl<EK: KvEngine> PeerStorage<EK> {
    /// True once when raft-rs has asked for a snapshot that nobody generates yet: the caller
    /// hands the request to the ApplyFsm.
    pub fn take_gen_request(&mut self) -> bool {
        let gen = self.gen.get_mut();
        if matches!(gen, GenState::Requested) {
            *gen = GenState::Generating;
            return true;
        }
        false
    }

    /// Drops a ready generated snapshot (its send failed); a generation in flight is kept.
    pub fn forget_generated_snapshot(&mut self) {
        let gen = self.gen.get_mut();
        if matches!(gen, GenState::Ready(_)) {
            *gen = GenState::Idle;
        }
    }

    /// The generation finished (`None`: it failed; raft-rs will ask again).
    pub fn on_snapshot_generated(&mut self, snapshot: Option<Snapshot>) {
        *self.gen.get_mut() = snapshot.map_or(GenState::Idle, GenState::Ready);
    }

    /// Takes in a received snapshot's raft side, in memory only: the region (as Applying), its
    /// log now ending at the snapshot, its apply state at the snapshot. Returns the apply state
    /// the region will have once the data is in, and steps 1-2 of the apply, which the caller
    /// must make durable ([`persist_snapshot_steps`]) before anything else of the round; the
    /// data (steps 3-4) is the ApplyFsm's job.
    pub fn prepare_snapshot(
        &mut self,
        snap: &Snapshot,
        region: Region,
    ) -> (RaftApplyState, SnapshotSteps) {
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        let truncated = RaftTruncatedState { index, term };
        let mut hs = self.raft_state.hard_state.unwrap_or_default();
        hs.commit = hs.commit.max(index);
        self.raft_state = RaftLocalState {
            hard_state: Some(hs),
            last_index: index,
        };
        let steps = SnapshotSteps {
            region: region.clone(),
            truncated,
            raft_state: self.raft_state,
        };
        self.apply_state = RaftApplyState {
            applied_index: index,
            truncated_state: Some(truncated),
            commit_index: index,
            commit_term: term,
        };
        self.last_term = term;
        self.cache.clear();
        self.cache.on_persisted(index, term);
        self.region = region;
        self.peer_state = PeerState::Applying;
        (self.apply_state, steps)
    }

    /// The ApplyFsm finished steps 3-4 of a snapshot.
    pub fn on_snapshot_applied(&mut self) {
        self.peer_state = PeerState::Normal;
    }

    /// Reads the region's persisted `RegionLocalState`, if any.
    pub fn load_region_state(
        kv: &EK,
        region_id: u64,
    ) -> Result<Option<proto::raft_serverpb::RegionLocalState>> {
        kv.get_msg_cf(CF_RAFT, &keys::region_state_key(region_id))
            .map_err(|source| Error::Engine { region_id, source })
    }
}

/// Steps 1 and 2 of applying a received snapshot, as [`PeerStorage::prepare_snapshot`] hands
/// them to the poller to make durable.
#[derive(Clone, Debug)]
pub struct SnapshotSteps {
    /// The region as the snapshot describes it.
    pub region: Region,
    /// The snapshot's index and term.
    pub truncated: RaftTruncatedState,
    /// The raft state of the log that starts after the snapshot.
    pub raft_state: RaftLocalState,
}

/// The data-key ranges of `old` outside `new` (empty when `old` is not initialized): what a
/// snapshot of a narrower region (its peer missed a split) leaves behind. `old` must be the
/// region as applied (the ApplyFsm's, every earlier entry applied): then no other region of
/// the store holds any of it. The peer's own copy may lag behind a split still being applied,
/// whose new region owns that range.
pub fn left_behind(old: &Region, new: &Region) -> Vec<(Vec<u8>, Vec<u8>)> {
    if old.peers.is_empty() {
        return Vec::new();
    }
    let (old_start, old_end) = keys::region_data_bounds(old);
    let (new_start, new_end) = keys::region_data_bounds(new);
    let mut out = Vec::new();
    if old_start < new_start {
        out.push((old_start.clone(), new_start.min(old_end.clone())));
    }
    if new_end < old_end {
        out.push((new_end.max(old_start), old_end));
    }
    out.retain(|(start, end)| start < end);
    out
}

/// Makes steps 1-2 of a snapshot apply durable, in this order: the region marked Applying with
/// the snapshot's index and term (KV, synced), then its raft log replaced by an empty one that
/// starts after the snapshot (raft-engine, synced). A crash after step 1 is resumed at start
/// (the region is found Applying).
pub fn persist_snapshot_steps<EK: KvEngine>(
    kv: &EK,
    raft: &RaftLogEngine,
    steps: &SnapshotSteps,
) -> Result<()> {
    let region_id = steps.region.id;
    let mut wb = kv.write_batch();
    put_region_state(
        &mut wb,
        &steps.region,
        PeerState::Applying,
        Some(steps.truncated),
    )
    .and_then(|()| kv.write(&mut wb, true))
    .map_err(|source| Error::Engine { region_id, source })?;
    fail::fail_point!("snapshot_after_applying_state");
    write_snapshot_raft_state(raft, region_id, &steps.raft_state)
}

/// Replaces a region's raft log with an empty one ending at `state.last_index` (snapshot apply
/// step 2, also redone at restart): clean, then the new state, synced.
pub fn write_snapshot_raft_state(
    raft: &RaftLogEngine,
    region_id: u64,
    state: &RaftLocalState,
) -> Result<()> {
    let raft_err = |source| Error::RaftLog { region_id, source };
    let mut batch = raft.batch();
    batch.clean_region(region_id);
    raft.write(&mut batch, false).map_err(raft_err)?;
    let mut batch = raft.batch();
    batch.put_raft_state(region_id, state).map_err(raft_err)?;
    raft.write(&mut batch, true).map_err(raft_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proto::build::{peer, region};

    use super::*;

    #[test]
    fn a_snapshot_that_narrows_the_region_leaves_behind_what_it_lost() {
        let of = |start: &str, end: &str| {
            region(1)
                .range(start.as_bytes().to_vec(), end.as_bytes().to_vec())
                .epoch(1, 1)
                .peers([peer(101, 1)])
                .build()
        };
        let key = |k: &str| keys::data_key(k.as_bytes());
        let max = keys::data_end_key(b"");
        // Missed a split on the right, on the left, on both sides.
        assert_eq!(
            left_behind(&of("", ""), &of("", "k")),
            vec![(key("k"), max.clone())]
        );
        assert_eq!(
            left_behind(&of("", ""), &of("k", "")),
            vec![(key(""), key("k"))]
        );
        assert_eq!(
            left_behind(&of("a", "z"), &of("c", "m")),
            vec![(key("a"), key("c")), (key("m"), key("z"))]
        );
        // Same or wider: nothing; an uninitialized peer held nothing.
        assert!(left_behind(&of("a", "z"), &of("a", "z")).is_empty());
        assert!(left_behind(&of("c", "m"), &of("a", "")).is_empty());
        let uninitialized = Region {
            id: 1,
            ..Default::default()
        };
        assert!(left_behind(&uninitialized, &of("a", "m")).is_empty());
        // Disjoint (the region moved entirely): all of the old range.
        assert_eq!(
            left_behind(&of("a", "c"), &of("m", "z")),
            vec![(key("a"), key("c"))]
        );
    }
}
