use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::KvEngine;
use prost::Message as _;
use proto::metapb::{Peer as PeerMeta, Region};
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, CompactLogRequest, RaftCmdRequest, RaftRequestHeader,
};
use proto::raft_serverpb::{RaftApplyState, RaftMessage};
use raft::eraftpb::{Entry, Message};
use raft::{RawNode, StateRole};
use raft_log::RaftLogBatch;

use crate::operation::read::{Lease, PendingReads};
use crate::operation::{admin, conf_change, log_gc, write};
use crate::router::{
    ApplyRes, Callback, CommittedEntries, PeerStatus, Proposal, ReadCallback, RegionSnapshot,
    WriteCallback,
};
use crate::storage::PeerStorage;
use crate::{Config, Error, Result};

/// A ready whose entries and hard state are in the round's batch but not yet durable.
struct Unpersisted {
    number: u64,
    /// The last entry it appended, to tell the entry cache what became durable.
    last_entry: Option<(u64, u64)>,
    /// Messages that may only leave once the ready is durable (votes, append responses...).
    messages: Vec<Message>,
}

/// What one ready produced for the store.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Entries added to the round's raft-log batch.
    pub entries_written: usize,
    /// The batch must be fsynced for this ready: it holds entries, or a new term or vote.
    /// A hard state whose only change is the commit index need not be durable (a restart
    /// learns the commit again, and the apply state remembers what was applied).
    pub needs_sync: bool,
    /// Committed entries (with their proposals) for the ApplyFsm.
    pub committed: Option<CommittedEntries>,
    /// A received snapshot whose raft side (steps 1-2) is durable: the ApplyFsm must put its
    /// data in, before `committed`.
    pub snapshot: Option<ReceivedSnapshot>,
    /// The peer became leader (`Some(true)`) or stopped being one (`Some(false)`).
    pub leadership: Option<bool>,
}

/// A snapshot this peer is applying.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    pub region: Region,
    pub key: crate::snap::SnapKey,
    pub meta: proto::raft_serverpb::SnapshotMeta,
    pub apply_state: RaftApplyState,
}

/// Election timeouts without hearing from a leader before a peer asks the members whether it
/// is still one of them.
const STALE_PEER_ELECTIONS: usize = 4;

/// A peer further behind the commit index than this is pending (not caught up).
const PEER_CATCH_UP_LAG: u64 = 100;

/// What an apply result changed for the store.
#[derive(Debug, Default)]
pub struct AppliedOutcome {
    /// The log was compacted to here: the caller deletes the raft-log entries up to it.
    pub compacted_to: Option<u64>,
    /// The region (membership or range) changed: the store's view must follow.
    pub region_changed: bool,
    /// A membership change removed this peer: it must be destroyed.
    pub removed: bool,
    /// Regions split off this one: their peers on this store must be created (whatever else
    /// the result says, their states are written).
    pub new_regions: Vec<Region>,
}

/// The time limits a peer enforces, from [`Config`].
#[derive(Clone, Copy, Debug)]
struct Limits {
    proposal_timeout: Duration,
    read_index_timeout: Duration,
    base_tick: Duration,
    entry_max_size: u64,
    gc_ticks: u64,
    gc_threshold: u64,
    gc_count_limit: u64,
    split_check_ticks: u64,
    heartbeat_ticks: u64,
}

/// One peer of one region on this store: the raft node and everything that does not depend on
/// the batch system (proposals, lease, pending reads).
pub struct Peer<EK: KvEngine> {
    store_id: u64,
    peer_id: u64,
    raw: RawNode<PeerStorage<EK>>,
    unpersisted: VecDeque<Unpersisted>,
    proposals: VecDeque<Proposal>,
    lease: Lease,
    /// When this peer last became leader; the lease starts from here once an entry of the
    /// term commits.
    leader_since: Option<Instant>,
    last_read: Option<Instant>,
    /// When this peer was created, and the election timeout: a peer that just started ignores
    /// votes for one election timeout (see [`Self::ignores_votes`]).
    started: Instant,
    election_timeout: Duration,
    /// A leader transfer was started; cleared (setting `renew_floor`) once it is over.
    transferring: bool,
    /// Lease renewals for messages sent before this instant are ignored.
    renew_floor: Option<Instant>,
    pending_reads: PendingReads<ReadCallback<EK::Snapshot>>,
    applied_term: u64,
    /// Ticks since the peer started, for the periodic checks.
    ticks: u64,
    /// The highest index a CompactLog was proposed for, so one is not proposed every check.
    compact_proposed: u64,
    /// Peers that sent messages but are not in the region as this peer knows it (an
    /// uninitialized peer knows no members): replies are addressed through it.
    peer_cache: std::collections::HashMap<u64, PeerMeta>,
    split_check_due: bool,
    heartbeat_due: bool,
    /// No leader heard from for a long while: ask the members whether this peer is still one.
    stale_probe_due: bool,
    /// When each member was last heard from (for down peers and the quorum check of
    /// membership changes).
    last_heard: std::collections::HashMap<u64, Instant>,
    /// What the store's leader count last learnt of this peer (see `ReadyOutput::leadership`).
    counted_leader: bool,
    /// The index of the last split this peer proposed as leader: until it is applied, the
    /// lease does not cover reads (followers may already serve the split-off range under a
    /// new region's leader).
    last_split_index: u64,
    limits: Limits,
    logger: slog::Logger,
}

impl<EK: KvEngine> Peer<EK> {
    pub fn new(
        config: &Config,
        store_id: u64,
        peer_id: u64,
        storage: PeerStorage<EK>,
        logger: &slog::Logger,
    ) -> Result<Peer<EK>> {
        let region_id = storage.region_id();
        let raft_config = raft::Config {
            id: peer_id,
            election_tick: config.raft_election_timeout_ticks,
            heartbeat_tick: config.raft_heartbeat_ticks,
            max_inflight_msgs: config.raft_max_inflight_msgs,
            max_size_per_msg: config.raft_max_size_per_msg,
            max_uncommitted_size: config.raft_max_uncommitted_size,
            applied: storage.applied_index(),
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        let logger = logger.new(slog::o!("region_id" => region_id, "peer_id" => peer_id));
        let applied_term = storage.apply_state().commit_term;
        let raw = RawNode::new(&raft_config, storage, &logger).map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })?;
        Ok(Peer {
            store_id,
            peer_id,
            raw,
            unpersisted: VecDeque::new(),
            proposals: VecDeque::new(),
            lease: Lease::new(config.max_leader_lease()),
            leader_since: None,
            last_read: None,
            started: Instant::now(),
            election_timeout: config.election_timeout(),
            transferring: false,
            renew_floor: None,
            pending_reads: PendingReads::default(),
            applied_term,
            ticks: 0,
            compact_proposed: 0,
            peer_cache: Default::default(),
            split_check_due: false,
            heartbeat_due: false,
            stale_probe_due: false,
            last_heard: Default::default(),
            counted_leader: false,
            last_split_index: 0,
            limits: Limits {
                proposal_timeout: config.proposal_timeout(),
                read_index_timeout: config.read_index_timeout(),
                base_tick: config.base_tick(),
                entry_max_size: config.raft_entry_max_size,
                gc_ticks: config.ticks_of(config.raft_log_gc_tick_interval_ms),
                gc_threshold: config.raft_log_gc_threshold,
                gc_count_limit: config.raft_log_gc_count_limit,
                split_check_ticks: config.ticks_of(config.split_region_check_tick_interval_ms),
                heartbeat_ticks: config.ticks_of(config.region_heartbeat_tick_interval_ms),
            },
            logger,
        })
    }

    pub fn region_id(&self) -> u64 {
        self.raw.store().region_id()
    }

    pub fn region(&self) -> &Region {
        self.raw.store().region()
    }

    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    /// This peer's metadata as the region lists it (or its bare id and store).
    pub fn meta(&self) -> PeerMeta {
        self.region()
            .peers
            .iter()
            .find(|p| p.id == self.peer_id)
            .copied()
            .unwrap_or(PeerMeta {
                id: self.peer_id,
                store_id: self.store_id,
                ..Default::default()
            })
    }

    /// The peer has its region's data and membership (a peer created by a raft message has
    /// neither until its first snapshot).
    pub fn is_initialized(&self) -> bool {
        !self.region().peers.is_empty()
    }

    /// Remembers how to reach a peer that is not (yet) a member as this peer knows it.
    pub fn remember_peer(&mut self, peer: PeerMeta) {
        if peer.id != 0 && !self.peer_cache.contains_key(&peer.id) {
            self.peer_cache.insert(peer.id, peer);
        }
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn logger(&self) -> &slog::Logger {
        &self.logger
    }

    /// The leader as the region knows it, for NotLeader hints.
    pub fn leader_meta(&self) -> Option<PeerMeta> {
        let leader = self.leader_id();
        self.region().peers.iter().find(|p| p.id == leader).copied()
    }

    pub fn storage(&self) -> &PeerStorage<EK> {
        self.raw.store()
    }

    pub fn storage_mut(&mut self) -> &mut PeerStorage<EK> {
        self.raw.mut_store()
    }

    /// The commit index and the term of the entry there.
    pub fn commit_index_term(&self) -> (u64, u64) {
        let committed = self.raw.raft.raft_log.committed;
        let term = self.raw.raft.raft_log.term(committed).unwrap_or(0);
        (committed, term)
    }

    pub fn raw(&self) -> &RawNode<PeerStorage<EK>> {
        &self.raw
    }

    pub fn pending_proposals(&self) -> usize {
        self.proposals.len()
    }

    pub fn pending_reads(&self) -> usize {
        self.pending_reads.len()
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    pub fn campaign(&mut self) -> Result<()> {
        let region_id = self.region_id();
        self.raw.campaign().map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })
    }

    pub fn step(&mut self, msg: Message) -> Result<()> {
        let region_id = self.region_id();
        self.raw.step(msg).map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })
    }

    /// Proposes raw entry data without checks or a callback (tests of the raft layer).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<()> {
        let region_id = self.region_id();
        self.raw.propose(vec![], data).map_err(|e| Error::Raft {
            region_id,
            detail: e.to_string(),
        })
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            region_id: self.region_id(),
            leader: self.leader_meta(),
        }
    }

    /// The checks every request passes before it is proposed or read: right store, leader
    /// here, current epoch.
    fn check_request(&self, request: &RaftCmdRequest) -> Result<()> {
        let header: RaftRequestHeader = request.header.unwrap_or_default();
        if let Some(peer) = &header.peer {
            if peer.store_id != 0 && peer.store_id != self.store_id {
                return Err(Error::StoreNotMatch {
                    request_store_id: peer.store_id,
                    actual_store_id: self.store_id,
                });
            }
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        // A request made for one term (a compare-and-swap that read at that term) must not
        // be proposed in another: a leader elected in between may have written the key.
        if header.term != 0 && header.term != self.term() {
            return Err(Error::StaleCommand {
                region_id: self.region_id(),
                index: 0,
                term: self.term(),
                detail: format!("the request was made for term {}", header.term),
            });
        }
        if self.raw.raft.lead_transferee.is_some() {
            // Leadership is moving: no hint, so a client retries and finds the new leader.
            return Err(Error::NotLeader {
                region_id: self.region_id(),
                leader: None,
            });
        }
        write::check_epoch(self.region(), request)
    }

    /// Proposes a write; `cb` is answered when its entry is applied, found superseded, or
    /// undetermined after `proposal-timeout-ms`. A request failing a check answers at once and
    /// proposes nothing.
    pub fn propose_write(&mut self, request: RaftCmdRequest, cb: WriteCallback, now: Instant) {
        let is_transfer = request
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::TransferLeader as i32);
        if is_transfer {
            let result = self.transfer_leader(&request);
            cb.invoke(result);
            return;
        }
        let is_conf_change = request
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::ChangePeerV2 as i32);
        if is_conf_change {
            self.propose_conf_change(request, cb, now);
            return;
        }
        if let Err(e) = self.check_write(&request) {
            cb.invoke(Err(e));
            return;
        }
        let is_split = request
            .admin_request
            .as_ref()
            .is_some_and(|a| a.cmd_type == AdminCmdType::BatchSplit as i32);
        let data = request.encode_to_vec();
        let before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(vec![], data).is_ok();
        // Dropped by raft while leading: too many bytes are uncommitted.
        let tracked =
            self.track_proposal(before, proposed, cb, now, |region_id| Error::ServerIsBusy {
                region_id,
                reason: "too many uncommitted entries (raft-max-uncommitted-size)".into(),
            });
        if tracked && is_split {
            self.last_split_index = self.raw.raft.raft_log.last_index();
        }
    }

    /// Waits for the entry raft just appended, or, if raft appended nothing, answers `cb` with
    /// `refused` while this peer still leads (and no transfer is under way), NotLeader
    /// otherwise. Returns whether the proposal is in the log.
    fn track_proposal(
        &mut self,
        before: u64,
        proposed: bool,
        cb: WriteCallback,
        now: Instant,
        refused: impl FnOnce(u64) -> Error,
    ) -> bool {
        let index = self.raw.raft.raft_log.last_index();
        if !proposed || index == before {
            let err = if self.is_leader() && self.raw.raft.lead_transferee.is_none() {
                refused(self.region_id())
            } else {
                self.not_leader()
            };
            cb.invoke(Err(err));
            return false;
        }
        self.proposals.push_back(Proposal {
            index,
            term: self.term(),
            propose_time: now,
            cb,
        });
        true
    }

    /// Proposes a membership change; `cb` is answered once it is applied.
    fn propose_conf_change(&mut self, request: RaftCmdRequest, cb: WriteCallback, now: Instant) {
        let changes = match self.check_conf_change(&request) {
            Ok(changes) => changes,
            Err(e) => {
                cb.invoke(Err(e));
                return;
            }
        };
        let cc = conf_change::to_raft_conf_change(&changes, request.encode_to_vec());
        let before = self.raw.raft.raft_log.last_index();
        // raft-rs replaces a conf change it refuses by an empty normal entry.
        let proposed = self.raw.propose_conf_change(vec![], cc).is_ok()
            && self
                .raw
                .raft
                .raft_log
                .unstable
                .entries
                .last()
                .is_some_and(|e| e.get_entry_type() == raft::eraftpb::EntryType::EntryConfChangeV2);
        let refused = |region_id| Error::ConfChange {
            region_id,
            detail: "raft refused the change (a membership change is pending)".into(),
        };
        if self.track_proposal(before, proposed, cb, now, refused) {
            slog::info!(self.logger, "proposed membership change";
                "index" => self.raw.raft.raft_log.last_index(), "changes" => ?changes);
        }
    }

    /// A membership change is decided against the membership the client saw, one at a time,
    /// and never removes or demotes the leader (transfer leadership first).
    fn check_conf_change(
        &self,
        request: &RaftCmdRequest,
    ) -> Result<Vec<proto::raft_cmdpb::ChangePeerRequest>> {
        self.check_request(request)?;
        let region = self.region();
        let region_id = region.id;
        let current = region.region_epoch.unwrap_or_default();
        let requested = request
            .header
            .and_then(|h| h.region_epoch)
            .unwrap_or_default();
        if requested.conf_ver != current.conf_ver {
            return Err(Error::EpochNotMatch {
                region_id,
                request_conf_ver: requested.conf_ver,
                request_version: requested.version,
                current_regions: vec![region.clone()],
            });
        }
        if self.raw.raft.has_pending_conf() {
            return Err(Error::ConfChange {
                region_id,
                detail: format!(
                    "another membership change (at index {}) is not applied yet; retry after it",
                    self.raw.raft.pending_conf_index
                ),
            });
        }
        let changes = request
            .admin_request
            .as_ref()
            .and_then(|a| a.change_peer_v2.as_ref())
            .map(|c| c.changes.clone())
            .ok_or_else(|| Error::InvalidCommand {
                region_id,
                detail: "ChangePeerV2 without its changes".into(),
            })?;
        let new = conf_change::region_after(region, &changes)?;
        // The new configuration must have a quorum of voters that are up and caught up, or
        // the region stops (adding a voter while another is down or behind needs every other
        // one to answer).
        let now = Instant::now();
        let voters: Vec<u64> = new
            .peers
            .iter()
            .filter(|p| {
                matches!(
                    p.role(),
                    proto::metapb::PeerRole::Voter | proto::metapb::PeerRole::IncomingVoter
                )
            })
            .map(|p| p.id)
            .collect();
        let healthy = voters
            .iter()
            .filter(|id| self.is_healthy(**id, now, self.election_timeout * 2))
            .count();
        if healthy < voters.len() / 2 + 1 {
            return Err(Error::ConfChange {
                region_id,
                detail: format!(
                    "only {healthy} of the {} voters after the change are up and caught up; \
                     a quorum needs {}",
                    voters.len(),
                    voters.len() / 2 + 1
                ),
            });
        }
        let stays_voter = new.peers.iter().any(|p| {
            p.id == self.peer_id
                && matches!(
                    p.role(),
                    proto::metapb::PeerRole::Voter | proto::metapb::PeerRole::IncomingVoter
                )
        });
        if !stays_voter {
            return Err(Error::ConfChange {
                region_id,
                detail: format!(
                    "the change removes or demotes the leader (peer {}); transfer leadership first",
                    self.peer_id
                ),
            });
        }
        let size = request.encoded_len() as u64;
        if size > self.limits.entry_max_size {
            return Err(Error::RaftEntryTooLarge {
                region_id,
                entry_size: size,
                limit: self.limits.entry_max_size,
            });
        }
        Ok(changes)
    }

    /// A leader of a joint region with no membership change in flight proposes the leave: raft-rs
    /// only does it when the entering entry is applied under the same leader.
    fn maybe_leave_joint(&mut self) -> bool {
        if !self.is_leader()
            || self.raw.raft.has_pending_conf()
            || !conf_change::is_joint(self.region())
        {
            return false;
        }
        slog::info!(self.logger, "proposing to leave the joint configuration");
        let leave = raft::eraftpb::ConfChangeV2::default();
        if let Err(e) = self.raw.propose_conf_change(vec![], leave) {
            slog::warn!(self.logger, "leaving the joint configuration failed"; "error" => %e);
            return false;
        }
        true
    }

    fn check_write(&self, request: &RaftCmdRequest) -> Result<()> {
        self.check_request(request)?;
        match &request.admin_request {
            Some(a) => admin::check_admin(self.region(), a)?,
            None => write::check_write(self.region(), request)?,
        }
        let size = request.encoded_len() as u64;
        if size > self.limits.entry_max_size {
            return Err(Error::RaftEntryTooLarge {
                region_id: self.region_id(),
                entry_size: size,
                limit: self.limits.entry_max_size,
            });
        }
        Ok(())
    }

    /// A linearizable read: served at once under a valid lease, otherwise after a ReadIndex
    /// round confirms leadership and the apply reaches the confirmed index.
    pub fn read(&mut self, request: &RaftCmdRequest, cb: ReadCallback<EK::Snapshot>, now: Instant) {
        if let Err(e) = self.check_request(request) {
            cb.invoke(Err(e));
            return;
        }
        self.last_read = Some(now);
        // The lease is checked against the clock now, not the round's start: a round can run
        // long, and the lease's margin is small.
        if self.can_read_locally(Instant::now()) {
            cb.invoke(Ok(self.snapshot()));
            return;
        }
        if let Some(id) = self.pending_reads.push(cb, now) {
            self.raw.read_index(id.to_be_bytes().to_vec());
        }
    }

    /// The lease holds and every write committed before this term is applied here. A leader
    /// transfer suspends the lease: the target may become leader before it would expire.
    pub fn can_read_locally(&self, now: Instant) -> bool {
        self.is_leader()
            && self.raw.raft.lead_transferee.is_none()
            && self.applied_term == self.term()
            && self.storage().applied_index() >= self.last_split_index
            && self.lease.is_valid(now)
    }

    /// Starts moving leadership to the peer named in the request, which must be a caught-up
    /// member. Executed here, never written to the log.
    fn transfer_leader(&mut self, request: &RaftCmdRequest) -> Result<()> {
        self.check_request(request)?;
        let region_id = self.region_id();
        let target = request
            .admin_request
            .as_ref()
            .and_then(|a| a.transfer_leader.as_ref())
            .and_then(|t| t.peer)
            .ok_or_else(|| Error::InvalidCommand {
                region_id,
                detail: "TransferLeader without a target peer".into(),
            })?;
        if !self.region().peers.iter().any(|p| p.id == target.id) {
            return Err(Error::InvalidCommand {
                region_id,
                detail: format!("peer {} is not a member of the region", target.id),
            });
        }
        if target.id == self.peer_id {
            return Ok(());
        }
        let last = self.raw.raft.raft_log.last_index();
        let matched = self
            .raw
            .raft
            .prs()
            .get(target.id)
            .map_or(0, |pr| pr.matched);
        if matched < last {
            return Err(Error::InvalidCommand {
                region_id,
                detail: format!(
                    "peer {} has {matched} of {last} entries; transfer to a caught-up peer",
                    target.id
                ),
            });
        }
        slog::info!(self.logger, "transferring leadership"; "to" => target.id);
        self.lease.expire();
        self.transferring = true;
        self.raw.transfer_leader(target.id);
        Ok(())
    }

    fn snapshot(&self) -> RegionSnapshot<EK::Snapshot> {
        let kv = self.storage().kv_engine();
        RegionSnapshot::new(Arc::new(kv.snapshot()), self.region().clone()).with_term(self.term())
    }

    /// Takes this peer's part of a poll round: its new entries and hard state go into `batch`
    /// (shared by every region of the round), messages that may leave before persistence (a
    /// leader's appends) into `out`, committed entries (with their proposals) into the
    /// output for the ApplyFsm. The rest waits for [`Self::on_round_persisted`].
    pub fn handle_ready(
        &mut self,
        batch: &mut RaftLogBatch,
        out: &mut Vec<Message>,
        now: Instant,
    ) -> Result<ReadyOutput> {
        if !self.raw.has_ready() {
            return Ok(ReadyOutput::default());
        }

        let mut ready = self.raw.ready();
        let snapshot = if ready.snapshot().is_empty() {
            None
        } else {
            let snap = ready.snapshot().clone();
            Some(self.prepare_snapshot(&snap)?)
        };
        let mut leadership = None;
        if let Some(ss) = ready.ss() {
            let was_leader = self.counted_leader;
            self.on_role_changed(ss.raft_state, ss.leader_id, now);
            let is_leader = ss.raft_state == StateRole::Leader;
            if was_leader != is_leader {
                leadership = Some(is_leader);
                self.counted_leader = is_leader;
            }
            if is_leader {
                // A new leader tells the scheduler at once, so clients find it quickly.
                self.heartbeat_due = true;
            }
        }
        let read_states = ready.take_read_states();
        if !read_states.is_empty() {
            for rs in &read_states {
                self.on_read_confirmed(&rs.request_ctx, rs.index);
            }
            // Confirmed at an index already applied: serve now, no apply will come for it.
            self.serve_reads();
        }
        out.extend(ready.take_messages());
        let committed = ready.take_committed_entries();
        let entries = ready.take_entries();
        let store = self.raw.mut_store();
        store.append(&entries, batch)?;
        let mut needs_sync = !entries.is_empty();
        if let Some(hs) = ready.hs() {
            let old = store.raft_state().hard_state.unwrap_or_default();
            needs_sync |= hs.term != old.term || hs.vote != old.vote;
            store.set_hard_state(hs);
        }
        if !entries.is_empty() || ready.hs().is_some() {
            store.write_raft_state(batch)?;
        }
        self.unpersisted.push_back(Unpersisted {
            number: ready.number(),
            last_entry: entries.last().map(|e| (e.index, e.term)),
            messages: ready.take_persisted_messages(),
        });
        self.raw.advance_append_async(ready);
        Ok(ReadyOutput {
            snapshot,
            entries_written: entries.len(),
            needs_sync,
            committed: self.take_committed(committed),
            leadership,
        })
    }

    /// The raft side of a received snapshot (steps 1-2, durable on return).
    fn prepare_snapshot(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<ReceivedSnapshot> {
        let region_id = self.region_id();
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        let bad = |detail: String| Error::Snapshot {
            region_id,
            key: format!("{region_id}_{term}_{index}"),
            detail,
        };
        let data = proto::raft_serverpb::SnapshotData::decode(snap.get_data())
            .map_err(|e| bad(format!("snapshot data does not decode: {e}")))?;
        let region = data
            .region
            .filter(|r| r.id == region_id)
            .ok_or_else(|| bad("snapshot data names another region".into()))?;
        let meta = data.meta.unwrap_or_default();
        slog::info!(self.logger, "applying snapshot"; "index" => index, "term" => term);
        let apply_state = self
            .raw
            .mut_store()
            .prepare_snapshot(snap, region.clone())?;
        self.applied_term = term;
        Ok(ReceivedSnapshot {
            region,
            key: crate::snap::SnapKey {
                region_id,
                term,
                index,
            },
            meta,
            apply_state,
        })
    }

    pub fn is_applying_snapshot(&self) -> bool {
        self.storage().peer_state() == proto::raft_serverpb::PeerState::Applying
    }

    /// Tells raft-rs whether a snapshot reached `to`. A failed send also forgets the
    /// generated snapshot, in case its files are what failed: the next one is built afresh
    /// (not when a transfer limit was all that stopped it).
    pub fn report_snapshot(&mut self, to: u64, ok: bool, busy: bool) {
        if !ok && !busy {
            self.raw.mut_store().forget_generated_snapshot();
        }
        let status = if ok {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    fn on_role_changed(&mut self, role: StateRole, leader_id: u64, now: Instant) {
        slog::info!(self.logger, "role changed";
            "role" => ?role, "term" => self.term(), "leader_id" => leader_id);
        if role == StateRole::Leader {
            self.leader_since = Some(now);
            self.transferring = false;
            self.renew_floor = None;
            return;
        }
        self.leader_since = None;
        self.lease.expire();
        // Reads have no side effects: failing them is always safe. Proposals stay: their
        // entries may still commit under the next leader.
        let err_leader = self.leader_meta();
        for read in self.pending_reads.take_all() {
            for cb in read.waiters {
                cb.invoke(Err(Error::NotLeader {
                    region_id: self.region_id(),
                    leader: err_leader,
                }));
            }
        }
    }

    /// Extends the lease to `sent + max lease`, except while leadership is being transferred
    /// (the target may win by a forced campaign that ignores followers' leases) and for
    /// anything sent before the end of the last transfer.
    fn renew_lease(&mut self, sent: Instant) {
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.transferring {
            self.transferring = false;
            self.renew_floor = Some(Instant::now());
        }
        if self.renew_floor.is_some_and(|floor| sent < floor) {
            return;
        }
        self.lease.renew(sent);
    }

    fn on_read_confirmed(&mut self, ctx: &[u8], index: u64) {
        let Ok(id) = <[u8; 8]>::try_from(ctx).map(u64::from_be_bytes) else {
            slog::warn!(self.logger, "read state with a foreign context"; "len" => ctx.len());
            return;
        };
        if let Some(issued) = self.pending_reads.confirm(id, index) {
            if self.is_leader() {
                // The heartbeats a quorum answered were sent after the request was issued.
                self.renew_lease(issued);
            }
        }
    }

    /// Hands committed entries to the apply with the proposals they resolve, and renews the
    /// lease: an entry of this term committed means a quorum acknowledged appends sent after it
    /// was proposed.
    fn take_committed(&mut self, entries: Vec<Entry>) -> Option<CommittedEntries> {
        let last = entries.last()?;
        let (last_index, last_term) = (last.index, last.term);
        let term = self.term();
        // Not a prefix of the queue: after a step-down and a shorter log, a later proposal can
        // have a lower index than one proposed before it.
        let mut proposals = Vec::new();
        let mut kept = VecDeque::with_capacity(self.proposals.len());
        for p in self.proposals.drain(..) {
            if p.index <= last_index {
                proposals.push(p);
            } else {
                kept.push_back(p);
            }
        }
        self.proposals = kept;
        proposals.sort_by_key(|p| (p.index, p.term));
        let renew_from = proposals
            .iter()
            .filter(|p| p.term == term)
            .map(|p| p.propose_time)
            .max();
        if self.is_leader() && entries.iter().any(|e| e.term == term) {
            if let Some(since) = self.leader_since.take() {
                self.renew_lease(since);
            }
            if let Some(t) = renew_from {
                self.renew_lease(t);
            }
        }
        Some(CommittedEntries {
            region_id: self.region_id(),
            commit: (last_index, last_term),
            entries,
            proposals,
        })
    }

    /// The round's batch is durable: release the messages that waited for it and tell raft.
    pub fn on_round_persisted(&mut self, out: &mut Vec<Message>) {
        let Some(number) = self.unpersisted.back().map(|u| u.number) else {
            return;
        };
        for done in self.unpersisted.drain(..) {
            if let Some((index, term)) = done.last_entry {
                self.raw.mut_store().on_persisted(index, term);
            }
            out.extend(done.messages);
        }
        self.raw.on_persist_ready(number);
    }

    /// Committed entries up to `index` have been applied (tests that apply synchronously).
    pub fn on_applied(&mut self, index: u64) {
        self.raw.advance_apply_to(index);
    }

    /// The ApplyFsm applied entries: record it (membership changes go to raft-rs before the
    /// new applied index) and serve the reads that waited for it.
    pub fn on_apply_res(&mut self, res: ApplyRes) -> AppliedOutcome {
        let ApplyRes {
            apply_state,
            applied_term,
            region,
            conf_changes,
            new_regions,
        } = res;
        let mut outcome = AppliedOutcome {
            new_regions,
            ..Default::default()
        };
        let applied = apply_state.applied_index;
        // A snapshot raft-rs took in but this peer has not prepared yet (stepped in this
        // round): its configuration already includes everything below it.
        if self
            .raw
            .raft
            .raft_log
            .unstable_snapshot()
            .as_ref()
            .is_some_and(|s| s.get_metadata().index > applied)
        {
            return outcome;
        }
        if self.storage().peer_state() == proto::raft_serverpb::PeerState::Applying {
            // Results of entries older than the snapshot being applied say nothing new.
            if applied < self.storage().truncated_index() {
                return outcome;
            }
            self.storage_mut().on_snapshot_applied();
        } else if applied <= self.storage().applied_index() && self.applied_term >= applied_term {
            return outcome;
        }
        for cc in &conf_changes {
            match self.raw.apply_conf_change(cc) {
                Ok(cs) => slog::info!(self.logger, "membership changed";
                    "voters" => ?cs.voters, "learners" => ?cs.learners,
                    "outgoing" => ?cs.voters_outgoing, "demoting" => ?cs.learners_next),
                // The apply checked the change against the same region on every replica.
                Err(e) => slog::error!(self.logger, "raft-rs refused an applied membership change";
                    "error" => %e),
            }
        }
        if region != *self.region() {
            outcome.region_changed = true;
            outcome.removed = self.is_initialized()
                && !conf_changes.is_empty()
                && !region.peers.iter().any(|p| p.id == self.peer_id);
            self.storage_mut().set_region(region);
        }
        let old_truncated = self.storage().truncated_index();
        self.storage_mut().set_apply_state(apply_state);
        self.applied_term = applied_term;
        self.raw.advance_apply_to(applied);
        self.serve_reads();
        let truncated = self.storage().truncated_index();
        if truncated > old_truncated {
            self.storage_mut().on_log_compacted(truncated);
            outcome.compacted_to = Some(truncated);
        }
        outcome
    }

    fn serve_reads(&mut self) {
        let ready = self
            .pending_reads
            .take_ready(self.storage().applied_index());
        if ready.iter().all(|r| r.waiters.is_empty()) {
            return;
        }
        let snapshot = self.snapshot();
        for read in ready {
            for cb in read.waiters {
                cb.invoke(Ok(snapshot.clone()));
            }
        }
    }

    /// Advances the logical clock and enforces the time limits. Returns true if raft has
    /// something to do.
    pub fn tick(&mut self, now: Instant) -> bool {
        // While a snapshot's data is going in, raft-rs's applied index is still the old one,
        // below the log's first index: a campaign would read compacted entries and panic.
        let applying = self.is_applying_snapshot();
        let mut work = !applying && self.raw.tick();
        self.ticks += 1;
        if self.is_leader() && self.ticks % self.limits.gc_ticks == 0 {
            work |= self.maybe_compact_log(now);
        }
        work |= self.maybe_leave_joint();
        if self.is_leader() && self.ticks % self.limits.split_check_ticks == 0 {
            self.split_check_due = true;
        }
        if self.is_leader() && self.ticks % self.limits.heartbeat_ticks == 0 {
            self.heartbeat_due = true;
        }
        // A peer removed while cut off may never hear of it (a learner never campaigns): after
        // STALE_PEER_ELECTIONS election timeouts without a leader, once per timeout, it asks.
        let election = self.raw.raft.randomized_election_timeout().max(1);
        let elapsed = self.raw.raft.election_elapsed;
        if !self.is_leader()
            && self.is_initialized()
            && elapsed >= STALE_PEER_ELECTIONS * election
            && elapsed % election == 0
        {
            self.stale_probe_due = true;
        }
        self.expire_proposals(now);
        for read in self.pending_reads.take_expired(
            now.checked_sub(self.limits.read_index_timeout)
                .unwrap_or(now),
        ) {
            for cb in read.waiters {
                cb.invoke(Err(Error::ReadTimeout {
                    region_id: self.region_id(),
                    waited_ms: self.limits.read_index_timeout.as_millis() as u64,
                    reason: "leadership could not be confirmed by a quorum".into(),
                }));
            }
        }
        if self.is_leader() {
            // raft-rs drops a ReadIndex until this term has a committed entry: ask again.
            let before = now.checked_sub(self.limits.base_tick).unwrap_or(now);
            for id in self.pending_reads.to_resend(before, now) {
                self.raw.read_index(id.to_be_bytes().to_vec());
                work = true;
            }
            // Renew the lease ahead of expiry for regions that are being read.
            let reading = self
                .last_read
                .is_some_and(|t| now.saturating_duration_since(t) < self.limits.read_index_timeout);
            let transferring = self.raw.raft.lead_transferee.is_some();
            if reading
                && !transferring
                && self.pending_reads.is_empty()
                && self.lease.needs_renewal(now)
            {
                let id = self.pending_reads.start(now);
                self.raw.read_index(id.to_be_bytes().to_vec());
                work = true;
            }
        }
        work
    }

    /// Proposes a log compaction when enough applied entries are in the log and every
    /// follower has them. Returns true if it proposed.
    fn maybe_compact_log(&mut self, now: Instant) -> bool {
        let me = self.peer_id;
        let matched: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, pr)| pr.matched)
            .collect();
        let first = self.storage().truncated_index() + 1;
        let applied = self.storage().applied_index();
        let Some(target) = log_gc::compact_target(
            first,
            applied,
            matched,
            self.limits.gc_threshold,
            self.limits.gc_count_limit,
        ) else {
            return false;
        };
        if target <= self.compact_proposed {
            return false;
        }
        let Ok(term) = self.raw.raft.raft_log.term(target) else {
            return false;
        };
        let region = self.region();
        let request = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                region_epoch: region.region_epoch,
                ..Default::default()
            }),
            requests: vec![],
            admin_request: Some(AdminRequest {
                cmd_type: AdminCmdType::CompactLog as i32,
                compact_log: Some(CompactLogRequest {
                    compact_index: target,
                    compact_term: term,
                }),
                ..Default::default()
            }),
        };
        slog::debug!(self.logger, "proposing log compaction"; "compact_index" => target);
        self.compact_proposed = target;
        let logger = self.logger.clone();
        self.propose_write(
            request,
            Callback::new(move |r| {
                if let Err(e) = r {
                    slog::debug!(logger, "log compaction not applied"; "error" => %e);
                }
            }),
            now,
        );
        true
    }

    /// Fails proposals whose fate is still unknown after the proposal timeout. They are not
    /// StaleCommand: the entry may still commit under the next leader.
    fn expire_proposals(&mut self, now: Instant) {
        let Some(deadline) = now.checked_sub(self.limits.proposal_timeout) else {
            return;
        };
        let mut kept = VecDeque::with_capacity(self.proposals.len());
        for p in self.proposals.drain(..) {
            if p.propose_time < deadline {
                slog::warn!(self.logger, "proposal undetermined after timeout";
                    "index" => p.index, "term" => p.term);
                p.cb.invoke(Err(Error::Undetermined {
                    region_id: self.raw.store().region_id(),
                    index: p.index,
                    term: p.term,
                    waited_ms: now.saturating_duration_since(p.propose_time).as_millis() as u64,
                }));
            } else {
                kept.push_back(p);
            }
        }
        self.proposals = kept;
    }

    /// A peer born by a split: its region never had another leader, so there is no lease to
    /// wait out before voting.
    pub fn take_votes_now(&mut self) {
        self.started = Instant::now()
            .checked_sub(self.election_timeout)
            .unwrap_or(self.started);
    }

    /// An explicit split may go ahead: this peer leads and the caller saw this version.
    pub fn check_split_ask(&self, region_epoch: Option<proto::metapb::RegionEpoch>) -> Result<()> {
        let request = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: self.region_id(),
                region_epoch,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.check_request(&request)
    }

    /// Whether this peer counts as a leader in the store's leader count.
    pub fn counted_as_leader(&self) -> bool {
        self.counted_leader
    }

    /// A region heartbeat is due (leaders only: periodically, after an election, a membership
    /// change or a split): the report, and the flag cleared.
    pub fn take_heartbeat(&mut self) -> Option<crate::RegionHeartbeat> {
        if !std::mem::take(&mut self.heartbeat_due) || !self.is_leader() {
            return None;
        }
        let region = self.region();
        let meta = |id: u64| region.peers.iter().find(|p| p.id == id).copied();
        let truncated = self.storage().truncated_index();
        let committed = self.raw.raft.raft_log.committed;
        let now = Instant::now();
        let down_after = self.election_timeout * 2;
        let mut down_peers = Vec::new();
        let mut pending_peers = Vec::new();
        for (id, pr) in self.raw.raft.prs().iter() {
            if *id == self.peer_id {
                continue;
            }
            let Some(peer) = meta(*id) else { continue };
            // Not heard from since well before now (or ever, once this peer has been up long
            // enough to have heard).
            let silent = match self.last_heard.get(id) {
                Some(t) => now.saturating_duration_since(*t) > down_after,
                None => now.saturating_duration_since(self.started) > down_after,
            };
            if silent {
                down_peers.push(peer);
            }
            if pr.state == raft::ProgressState::Snapshot
                || pr.matched < truncated
                || pr.matched + PEER_CATCH_UP_LAG < committed
            {
                pending_peers.push(peer);
            }
        }
        Some(crate::RegionHeartbeat {
            region: region.clone(),
            leader: self.meta(),
            down_peers,
            pending_peers,
            ..Default::default()
        })
    }

    /// A message from member `peer_id` arrived.
    pub fn heard_from(&mut self, peer_id: u64, now: Instant) {
        self.last_heard.insert(peer_id, now);
    }

    /// Member `peer_id` answered within `within`, and its log is within `PEER_CATCH_UP_LAG`
    /// entries of the commit index (this peer itself always is).
    fn is_healthy(&self, peer_id: u64, now: Instant, within: Duration) -> bool {
        if peer_id == self.peer_id {
            return true;
        }
        let heard = self
            .last_heard
            .get(&peer_id)
            .is_some_and(|t| now.saturating_duration_since(*t) <= within);
        let caught_up = self.raw.raft.prs().get(peer_id).is_some_and(|pr| {
            pr.state != raft::ProgressState::Snapshot
                && pr.matched + PEER_CATCH_UP_LAG >= self.raw.raft.raft_log.committed
        });
        heard && caught_up
    }

    /// Whether to ask the members if this peer is still one (see `tick`); clears it.
    pub fn take_stale_probe_due(&mut self) -> bool {
        std::mem::take(&mut self.stale_probe_due)
    }

    /// Asks for a heartbeat on the next round (after a membership change or a split).
    pub fn schedule_heartbeat(&mut self) {
        self.heartbeat_due = true;
    }

    /// The periodic split check is due (leaders only); clears it.
    pub fn take_split_check_due(&mut self) -> bool {
        std::mem::take(&mut self.split_check_due)
    }

    /// A peer that just (re)started does not know whether a leader's lease is running: raft-rs
    /// only ignores votes while it hears from a leader, and a fresh peer has none. So for one
    /// election timeout after start it ignores vote requests, except a leader transfer's.
    pub fn ignores_votes(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < self.election_timeout
    }

    pub fn status(&self, now: Instant) -> PeerStatus {
        PeerStatus {
            region: self.region().clone(),
            peer_id: self.peer_id,
            is_leader: self.is_leader(),
            leader_id: self.leader_id(),
            term: self.term(),
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.storage().applied_index(),
            truncated_index: self.storage().truncated_index(),
            pending_proposals: self.proposals.len(),
            lease_valid: self.can_read_locally(now),
        }
    }

    /// Wraps a raft message with the region routing a store needs. `None` if the target is
    /// not a member of the region as this peer knows it.
    pub fn to_raft_message(&self, msg: Message) -> Option<RaftMessage> {
        let region = self.region();
        let to_peer = *region
            .peers
            .iter()
            .find(|p| p.id == msg.to)
            .or_else(|| self.peer_cache.get(&msg.to))?;
        Some(RaftMessage {
            region_id: region.id,
            from_peer: Some(self.meta()),
            to_peer: Some(to_peer),
            message: Some(msg.into()),
            region_epoch: region.region_epoch,
            is_tombstone: false,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        })
    }

    /// Answers every waiting request with `make()`: the peer is going away. For writes the
    /// error must mean "outcome unknown" (`StoreStopped`), as their entries may still commit.
    pub fn fail_all(&mut self, make: impl Fn() -> Error) {
        for p in self.proposals.drain(..) {
            p.cb.invoke(Err(make()));
        }
        for read in self.pending_reads.take_all() {
            for cb in read.waiters {
                cb.invoke(Err(make()));
            }
        }
    }
}
