//! The raft core of one peer: the `RawNode`, its ready handling (what a round persists and
//! sends), the apply results coming back, the tick and the peer's status. Each command's
//! propose, apply and on-applied halves live in `operation/`, as `impl Peer` blocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use engine::KvEngine;
use proto::metapb::{Peer as PeerMeta, Region};
use proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader};
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::{Entry, Message};
use raft::{RawNode, StateRole};
use raft_log::RaftLogBatch;

use crate::metrics::METRICS;
use crate::operation::read::{Lease, PendingReads, ReadWaiter};
pub use crate::operation::snapshot::ReceivedSnapshot;
use crate::operation::write;
use crate::raft::{Effects, Reply};
use crate::router::{
    ApplyRes, CommittedEntries, PeerStatus, Proposal, ReadCallback, RegionSnapshot, WriteCallback,
};
use crate::storage::PeerStorage;
use crate::{Config, Error, Result};

/// A ready whose entries and hard state are in the round's batch but not yet durable.
pub(crate) struct Unpersisted {
    number: u64,
    /// The last entry it appended, to tell the entry cache what became durable.
    last_entry: Option<(u64, u64)>,
    /// Messages that may only leave once the ready is durable (votes, append responses...).
    messages: Vec<Message>,
    /// Handed to the store writer (its messages went with it).
    queued: bool,
}

/// What one ready produced for the store. The caller must act on all of it; a received
/// snapshot's steps 1-2 in particular are not durable until it persists them.
#[derive(Debug, Default)]
#[must_use]
pub struct ReadyOutput {
    /// Entries added to the round's raft-log batch.
    pub entries_written: usize,
    /// The batch must be fsynced for this ready: it holds entries, or a new term or vote.
    /// A hard state whose only change is the commit index need not be durable (a restart
    /// learns the commit again, and the apply state remembers what was applied).
    pub needs_sync: bool,
    /// Committed entries (with their proposals) for the ApplyFsm.
    pub committed: Option<CommittedEntries>,
    /// A received snapshot: the poller makes its steps 1-2 durable, then the ApplyFsm puts its
    /// data in, before `committed`.
    pub snapshot: Option<ReceivedSnapshot>,
    /// The peer became leader (`Some(true)`) or stopped being one (`Some(false)`).
    pub leadership: Option<bool>,
}

/// Election timeouts without hearing from a leader before a peer asks the members whether it
/// is still one of them.
const STALE_PEER_ELECTIONS: usize = 4;

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
pub(crate) struct Limits {
    pub(crate) proposal_timeout: Duration,
    pub(crate) read_index_timeout: Duration,
    pub(crate) base_tick: Duration,
    pub(crate) entry_max_size: u64,
    pub(crate) gc_ticks: u64,
    pub(crate) gc_threshold: u64,
    pub(crate) gc_count_limit: u64,
    pub(crate) split_check_ticks: u64,
    pub(crate) heartbeat_ticks: u64,
}

/// One peer of one region on this store: the raft node and everything that does not depend on
/// the batch system (proposals, lease, pending reads).
pub struct Peer<EK: KvEngine> {
    pub(crate) store_id: u64,
    pub(crate) peer_id: u64,
    pub(crate) raw: RawNode<PeerStorage<EK>>,
    pub(crate) unpersisted: VecDeque<Unpersisted>,
    pub(crate) proposals: VecDeque<Proposal>,
    pub(crate) lease: Lease,
    /// When this peer last became leader; the lease starts from here once an entry of the
    /// term commits.
    pub(crate) leader_since: Option<Instant>,
    pub(crate) last_read: Option<Instant>,
    /// When this peer was created, and the election timeout: a peer that just started ignores
    /// votes for one election timeout (see [`Self::ignores_votes`]).
    pub(crate) started: Instant,
    pub(crate) election_timeout: Duration,
    /// A leader transfer was started; cleared (setting `renew_floor`) once it is over.
    pub(crate) transferring: bool,
    /// Lease renewals for messages sent before this instant are ignored.
    pub(crate) renew_floor: Option<Instant>,
    pub(crate) pending_reads: PendingReads<ReadWaiter<EK::Snapshot>>,
    pub(crate) applied_term: u64,
    /// Ticks since the peer started, for the periodic checks.
    pub(crate) ticks: u64,
    /// The highest index a CompactLog was proposed for, so one is not proposed every check.
    pub(crate) compact_proposed: u64,
    /// Peers that sent messages but are not in the region as this peer knows it (an
    /// uninitialized peer knows no members): replies are addressed through it.
    pub(crate) peer_cache: std::collections::HashMap<u64, PeerMeta>,
    /// What this peer asked the store to do, for the poller to execute (see [`Effects`]).
    pub(crate) effects: Effects<EK::Snapshot>,
    /// When each member was last heard from (for down peers and the quorum check of
    /// membership changes).
    pub(crate) last_heard: std::collections::HashMap<u64, Instant>,
    /// What the store's leader count last learnt of this peer (see `ReadyOutput::leadership`).
    pub(crate) counted_leader: bool,
    /// The index of the last split this peer proposed as leader: until it is applied, the
    /// lease does not cover reads (followers may already serve the split-off range under a
    /// new region's leader).
    pub(crate) last_split_index: u64,
    pub(crate) limits: Limits,
    pub(crate) logger: slog::Logger,
    /// Draws the randomized election timeout in place of raft-rs's thread-local generator.
    election_rng: super::ElectionRng,
    /// Whether the region sleeps, and the leader's handshake (`operation/hibernate.rs`).
    pub(crate) hibernation: crate::operation::hibernate::Hibernation,
}

impl<EK: KvEngine> Peer<EK> {
    pub fn new(
        config: &Config,
        store_id: u64,
        peer_id: u64,
        storage: PeerStorage<EK>,
        now: Instant,
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
        let raw = RawNode::new(&raft_config, storage, &logger)
            .map_err(|source| Error::Raft { region_id, source })?;
        Ok(Peer {
            store_id,
            peer_id,
            raw,
            unpersisted: VecDeque::new(),
            proposals: VecDeque::new(),
            lease: Lease::new(config.max_leader_lease()),
            leader_since: None,
            last_read: None,
            started: now,
            election_timeout: config.election_timeout(),
            transferring: false,
            renew_floor: None,
            pending_reads: PendingReads::default(),
            applied_term,
            ticks: 0,
            compact_proposed: 0,
            peer_cache: Default::default(),
            effects: Effects::default(),
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
            election_rng: super::ElectionRng::new(
                super::random_seed(),
                config.raft_election_timeout_ticks,
            ),
            hibernation: crate::operation::hibernate::Hibernation::new(
                config.hibernate_regions,
                config.hibernate_idle_ticks,
            ),
        })
    }

    /// Seeds this peer's election timeouts from `seed` (with the peer's ids mixed in, so
    /// peers differ) and draws the current one.
    pub fn seed_elections(&mut self, seed: u64) {
        let ids = self.region_id().wrapping_mul(0x9e37_79b9) ^ self.peer_id;
        self.election_rng.reseed(seed ^ ids.rotate_left(17));
        self.election_rng.redraw(&mut self.raw.raft);
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

    /// Campaigns now, unless a snapshot's data is going in (see [`Peer::tick`]): then it
    /// does nothing, and the campaign is left to the election timer.
    pub fn campaign(&mut self) -> Result<()> {
        if self.is_applying_snapshot() {
            return Ok(());
        }
        let region_id = self.region_id();
        let campaigned = self
            .raw
            .campaign()
            .map_err(|source| Error::Raft { region_id, source });
        self.election_rng.after_raft_call(&mut self.raw.raft);
        campaigned
    }

    pub fn step(&mut self, msg: Message) -> Result<()> {
        let region_id = self.region_id();
        let stepped = self
            .raw
            .step(msg)
            .map_err(|source| Error::Raft { region_id, source });
        self.election_rng.after_raft_call(&mut self.raw.raft);
        stepped
    }

    /// Proposes raw entry data without checks or a callback (tests of the raft layer).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<()> {
        let region_id = self.region_id();
        self.raw
            .propose(vec![], data)
            .map_err(|source| Error::Raft { region_id, source })
    }

    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeader {
            region_id: self.region_id(),
            leader: self.leader_meta(),
        }
    }

    /// The checks every request passes before it is proposed or read: right store, leader
    /// here, current epoch.
    pub(crate) fn check_request(&self, request: &RaftCmdRequest) -> Result<()> {
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
                self.effects.heartbeat = true;
            }
        }
        let read_states = ready.take_read_states();
        if !read_states.is_empty() {
            for rs in &read_states {
                self.on_read_confirmed(&rs.request_ctx, rs.index, now);
            }
            // Confirmed at an index already applied: serve now, no apply will come for it.
            self.serve_reads();
        }
        out.extend(ready.take_messages());
        let committed = ready.take_committed_entries();
        let entries = ready.take_entries();
        let entries_written = entries.len();
        let appended = entries_written > 0;
        let last_entry = entries.last().map(|e| (e.index, e.term));
        let store = self.raw.mut_store();
        store.append(entries, batch)?;
        let mut needs_sync = appended;
        if let Some(hs) = ready.hs() {
            let old = store.raft_state().hard_state.unwrap_or_default();
            needs_sync |= hs.term != old.term || hs.vote != old.vote;
            store.set_hard_state(hs);
        }
        if appended || ready.hs().is_some() {
            store.write_raft_state(batch)?;
        }
        self.unpersisted.push_back(Unpersisted {
            number: ready.number(),
            last_entry,
            messages: ready.take_persisted_messages(),
            queued: false,
        });
        self.raw.advance_append_async(ready);
        Ok(ReadyOutput {
            snapshot,
            entries_written,
            needs_sync,
            committed: self.take_committed(committed, now),
            leadership,
        })
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
            for ReadWaiter { cb, .. } in read.waiters {
                let err = Error::NotLeader {
                    region_id: self.region_id(),
                    leader: err_leader,
                };
                self.reply_read(cb, Err(err));
            }
        }
    }

    /// Hands committed entries to the apply with the proposals they resolve, and renews the
    /// lease: an entry of this term committed means a quorum acknowledged appends sent after it
    /// was proposed.
    fn take_committed(&mut self, entries: Vec<Entry>, now: Instant) -> Option<CommittedEntries> {
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
        // Each proposal whose own entry committed (the entry at its index has its term; the
        // leader's term may have moved on since).
        let first = entries[0].index;
        for p in &proposals {
            let at = p
                .index
                .checked_sub(first)
                .and_then(|i| entries.get(i as usize));
            if at.is_some_and(|e| e.term == p.term) {
                let waited = now.saturating_duration_since(p.propose_time);
                METRICS
                    .write_hop
                    .propose_to_commit
                    .observe(waited.as_secs_f64());
            }
        }
        if self.is_leader() && entries.iter().any(|e| e.term == term) {
            if let Some(since) = self.leader_since.take() {
                self.renew_lease(since, now);
            }
            if let Some(t) = renew_from {
                self.renew_lease(t, now);
            }
        }
        Some(CommittedEntries {
            region_id: self.region_id(),
            commit: (last_index, last_term),
            entries,
            proposals,
            committed_at: now,
        })
    }

    /// The round's batch is durable: release the messages that waited for it and tell raft.
    pub fn on_round_persisted(&mut self, out: &mut Vec<Message>) {
        if let Some(number) = self.unpersisted.back().map(|u| u.number) {
            self.on_persisted(number, out);
        }
    }

    /// The round's batch goes to the store writer: the messages of the readies not handed to
    /// it yet go into `out`, to leave once the batch is durable. Returns the last such
    /// ready's number, for the writer's notice (None: nothing new was handed over).
    pub fn take_persisted_messages(&mut self, out: &mut Vec<Message>) -> Option<u64> {
        let mut last = None;
        for u in self.unpersisted.iter_mut().filter(|u| !u.queued) {
            u.queued = true;
            out.append(&mut u.messages);
            last = Some(u.number);
        }
        last
    }

    /// The last ready handed to the store writer and not yet durable.
    pub fn queued_write(&self) -> Option<u64> {
        self.unpersisted
            .iter()
            .rev()
            .find(|u| u.queued)
            .map(|u| u.number)
    }

    /// Readies up to `number` are durable: release what waited for them (messages not handed
    /// to the writer go into `out`) and tell raft. An older notice than one already heard
    /// (a barrier counted the write as durable first) does nothing.
    pub fn on_persisted(&mut self, number: u64, out: &mut Vec<Message>) {
        let mut done_number = None;
        while self.unpersisted.front().is_some_and(|u| u.number <= number) {
            let Some(done) = self.unpersisted.pop_front() else {
                break;
            };
            if let Some((index, term)) = done.last_entry {
                self.raw.mut_store().on_persisted(index, term);
            }
            out.extend(done.messages);
            done_number = Some(done.number);
        }
        if let Some(number) = done_number {
            self.raw.on_persist_ready(number);
        }
    }

    /// raft-rs holds a received snapshot that the next ready will carry.
    pub fn has_pending_snapshot(&self) -> bool {
        self.raw.snap().is_some_and(|s| !s.is_empty())
    }

    /// Committed entries up to `index` have been applied (tests that apply synchronously).
    pub fn on_applied(&mut self, index: u64) {
        self.raw.advance_apply_to(index);
    }

    /// Lets the entry cache drop what nobody will read again: entries applied here and, on a
    /// leader, matched by every member heard from within the last election timeout (one that
    /// went quiet reads from raft-engine when it comes back, or gets a snapshot). The entry at
    /// the lowest such index stays: raft-rs asks for its term when it sends the next append.
    /// Without this, a healthy store's cache fills to its budget and every append then evicts
    /// entries long out of the CPU's caches. Runs on each apply result and each tick (a
    /// follower may catch up after the last apply of an idle region).
    pub(crate) fn release_cached_entries(&mut self, now: Instant) {
        let mut keep = self.storage().applied_index();
        if self.is_leader() {
            // Not raft-rs's `recent_active`: check-quorum clears it every election timeout,
            // live followers included, until they next answer.
            let live = |id: &u64| {
                self.last_heard
                    .get(id)
                    .is_some_and(|t| now.saturating_duration_since(*t) <= self.election_timeout)
            };
            for (id, pr) in self.raw.raft.prs().iter() {
                if *id != self.peer_id && live(id) {
                    keep = keep.min(pr.matched);
                }
            }
        }
        self.storage_mut().release_cached_below(keep);
    }

    /// The ApplyFsm applied entries: record it (membership changes go to raft-rs before the
    /// new applied index) and serve the reads that waited for it.
    pub fn on_apply_res(&mut self, res: ApplyRes, now: Instant) -> AppliedOutcome {
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
        self.release_cached_entries(now);
        self.serve_reads();
        let truncated = self.storage().truncated_index();
        if truncated > old_truncated {
            self.storage_mut().on_log_compacted(truncated);
            outcome.compacted_to = Some(truncated);
        }
        outcome
    }

    /// Advances the logical clock and enforces the time limits. Returns true if raft has
    /// something to do.
    pub fn tick(&mut self, now: Instant) -> bool {
        // While a snapshot's data is going in, raft-rs's applied index is still the old one,
        // below the log's first index: a campaign would read compacted entries and panic.
        let applying = self.is_applying_snapshot();
        let mut work = !applying && self.raw.tick();
        self.election_rng.after_raft_call(&mut self.raw.raft);
        self.ticks += 1;
        self.release_cached_entries(now);
        if self.is_leader() && self.ticks % self.limits.gc_ticks == 0 {
            work |= self.maybe_compact_log(now);
        }
        work |= self.maybe_leave_joint();
        if self.is_leader() && self.ticks % self.limits.split_check_ticks == 0 {
            self.effects.split_check = true;
        }
        if self.is_leader() && self.ticks % self.limits.heartbeat_ticks == 0 {
            self.effects.heartbeat = true;
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
            self.effects.probe_members = true;
        }
        self.expire_proposals(now);
        work |= self.tick_reads(now);
        self.tick_hibernation(now);
        work
    }

    /// Whether this peer counts as a leader in the store's leader count.
    pub fn counted_as_leader(&self) -> bool {
        self.counted_leader
    }

    /// A message from member `peer_id` arrived.
    pub fn heard_from(&mut self, peer_id: u64, now: Instant) {
        self.last_heard.insert(peer_id, now);
    }

    /// The effects recorded since the last call, for the caller to execute.
    pub fn take_effects(&mut self) -> Effects<EK::Snapshot> {
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn reply_write(&mut self, cb: WriteCallback, result: Result<()>) {
        self.effects.replies.push(Reply::Write(cb, result));
    }

    pub(crate) fn reply_read(
        &mut self,
        cb: ReadCallback<EK::Snapshot>,
        result: Result<RegionSnapshot<EK::Snapshot>>,
    ) {
        self.effects.replies.push(Reply::Read(cb, result));
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
            pending_reads: self.pending_reads.len(),
            lease_valid: self.can_read_locally(now),
            asleep: self.is_asleep(),
            ticks: self.ticks,
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
            extra: None,
        })
    }

    /// Queues an answer of `make()` for every waiting request: the peer is going away. For
    /// writes the error must mean "outcome unknown" (`StoreStopped`), as their entries may
    /// still commit.
    pub fn fail_all(&mut self, make: impl Fn() -> Error) {
        for p in std::mem::take(&mut self.proposals) {
            self.reply_write(p.cb, Err(make()));
        }
        for read in self.pending_reads.take_all() {
            for ReadWaiter { cb, .. } in read.waiters {
                self.reply_read(cb, Err(make()));
            }
        }
    }
}
