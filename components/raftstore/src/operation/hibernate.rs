//! Hibernation: an idle region stops ticking, leader included, so 100k idle regions cost no
//! CPU. The peer's side (when to ask, when to agree, what wakes it) lives here; the store's
//! side (the tick registry, store liveness) is in `fsm/ticks.rs` and `fsm/liveness.rs`.
//!
//! The handshake: a leader that has seen nothing to do for `hibernate-idle-ticks` ticks, with
//! every live member holding its whole log, sends each live member a `HIBERNATE_REQUEST` at
//! its (term, last index). A follower that holds the same log agrees, goes to sleep and
//! answers `HIBERNATE_RESPONSE`. Once every live member agreed (and they are a quorum with the
//! leader), the leader sleeps too. Members silent for an election timeout are left out, so a
//! down follower does not keep the region awake (tikv#19070).
//!
//! Invariants:
//! - A sleeping follower does not tick, so it never campaigns on its own. It learns that its
//!   leader's store died from the store liveness heartbeat (`PeerMsg::LeaderStoreDown`, or a
//!   vote request once its store has not heard the leader's for nearly that long); it then
//!   counts the election ticks it missed, but never more than the wall time since it last
//!   heard from the leader: a leader's lease (shorter than an election timeout) is safe. One
//!   member per region campaigns at once; the rest wait out their randomized timeouts.
//! - Everything but a leader's heartbeat to a sleeping follower, and a caught-up follower's
//!   answer to it, wakes a peer. A step that changes the term, the leader or the role wakes it.
//! - A leader sleeps only after its lease ran out (`hibernate-idle-ticks` > election ticks),
//!   and a woken leader serves lease reads only from a lease renewed since.

use std::time::Instant;

use engine::KvEngine;
use proto::metapb::{Peer as PeerMeta, PeerRole, Region};
use proto::raft_serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};
use raft::eraftpb::{Message, MessageType};

use crate::fsm::liveness::{store_heartbeat, StoreEvent};
use crate::fsm::{PeerFsm, RaftPoller};
use crate::metrics::METRICS;
use crate::raft::Peer;
use crate::router::PeerMsg;
use crate::transport::Transport;

/// Why a sleeping peer woke, for `regionstore_hibernate_wakeups_total{cause}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeCause {
    Write,
    Read,
    /// A raft message other than a caught-up heartbeat.
    Raft,
    /// Split, campaign, snapshot or other store-internal work.
    Admin,
    /// The store hosting the region's leader stopped answering.
    StoreDown,
}

impl WakeCause {
    pub fn label(self) -> &'static str {
        match self {
            WakeCause::Write => "write",
            WakeCause::Read => "read",
            WakeCause::Raft => "raft",
            WakeCause::Admin => "admin",
            WakeCause::StoreDown => "store_down",
        }
    }
}

/// Of `region`'s voters off `down_store`, sorted by peer id, the one a hash of the region id
/// picks: the member that campaigns at once when the leader's store dies. (Not `id % n`: ids
/// are handed out in blocks, a region's id and then its peers', so region ids share their
/// low bits, and `% 2` chose the lowest peer, on the same store, for 98% of 3,334 regions.)
/// None in a joint configuration (its two majorities make the choice unclear) or without
/// such a voter.
pub(crate) fn first_campaigner(region: &Region, down_store: u64) -> Option<u64> {
    if super::conf_change::is_joint(region) {
        return None;
    }
    let mut voters: Vec<u64> = region
        .peers
        .iter()
        .filter(|p| p.role() == PeerRole::Voter && p.store_id != down_store)
        .map(|p| p.id)
        .collect();
    voters.sort_unstable();
    let n = voters.len() as u64;
    (n > 0).then(|| voters[(mix(region.id) % n) as usize])
}

/// splitmix64's finalizer: every bit of `x` moves every bit of the result.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the store's tick registry files a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepState {
    /// Ticked every base tick.
    Awake,
    /// Ticked once every `hibernate-heartbeat-interval` (`PeerMsg::HibernateTick`).
    Asleep,
}

/// A peer's hibernation state.
#[derive(Debug)]
pub(crate) struct Hibernation {
    enabled: bool,
    idle_threshold: usize,
    asleep: bool,
    /// Consecutive ticks the leader found nothing to do.
    idle_ticks: usize,
    /// The leader's request in flight: the log position it asked at and who has not agreed.
    asking: Option<Ask>,
    /// The last index when the leader last fell asleep (0: not yet): a split check before
    /// the next sleep if the log grew since.
    split_checked_at: u64,
}

#[derive(Debug)]
struct Ask {
    term: u64,
    index: u64,
    asked: Vec<u64>,
    waiting: Vec<u64>,
}

impl Hibernation {
    pub(crate) fn new(enabled: bool, idle_threshold: usize) -> Hibernation {
        Hibernation {
            enabled,
            idle_threshold,
            asleep: false,
            idle_ticks: 0,
            asking: None,
            split_checked_at: 0,
        }
    }
}

impl<EK: KvEngine> Peer<EK> {
    pub fn is_asleep(&self) -> bool {
        self.hibernation.asleep
    }

    pub fn sleep_state(&self) -> SleepState {
        match self.hibernation.asleep {
            false => SleepState::Awake,
            true => SleepState::Asleep,
        }
    }

    /// Something happened that keeps the region awake: the idle count starts again.
    pub(crate) fn on_activity(&mut self) {
        self.hibernation.idle_ticks = 0;
        self.hibernation.asking = None;
    }

    /// Wakes the peer. `leader_store_down`: the leader's store has been silent for an election
    /// timeout, so a follower counts the election ticks it slept through, up to the wall time
    /// since it last heard from the leader. Returns whether the peer was asleep.
    pub fn wake(&mut self, now: Instant, leader_store_down: bool) -> bool {
        if !self.hibernation.asleep {
            // Woken already (by a member's pre-vote, say, with its election count at zero):
            // the news still counts, or this member would ignore the campaigns for a whole
            // election timeout.
            if leader_store_down && !self.is_leader() {
                self.catch_up_election_ticks(now);
            }
            return false;
        }
        self.hibernation.asleep = false;
        // Idleness is counted afresh, so what runs before a sleep runs again before the next
        // (a follower caught up while its leader slept leaves a log to compact; without this
        // the leader slept again a tick after the catch-up, its log uncompacted).
        self.on_activity();
        if self.is_leader() {
            // Its quorum check starts afresh: the followers answer the next heartbeat. (The
            // lease is not renewed by this; only a quorum's acknowledgement renews it.)
            self.raw.raft.election_elapsed = 0;
        } else if leader_store_down {
            self.catch_up_election_ticks(now);
        }
        slog::debug!(self.logger, "woke from hibernation"; "leader_store_down" => leader_store_down);
        true
    }

    /// A follower whose leader's store is down: the election ticks it slept through count,
    /// so it campaigns within one (randomized) election timeout, not after a full one.
    fn catch_up_election_ticks(&mut self, now: Instant) {
        let heard = self
            .last_heard
            .get(&self.leader_id())
            .copied()
            .unwrap_or(self.started);
        let silent = now.saturating_duration_since(heard);
        let tick = self
            .limits
            .base_tick
            .max(std::time::Duration::from_millis(1));
        // One tick fewer: the time a message was heard is its round's start, which may be
        // a little before the leader's lease (renewed by that very message) started.
        let missed = ((silent.as_millis() / tick.as_millis()) as usize).saturating_sub(1);
        // Up to the minimum election timeout: the randomized part still spreads the
        // campaigns of the woken regions and their members over one election timeout.
        let elapsed = missed.min(self.raw.raft.election_timeout());
        if elapsed > self.raw.raft.election_elapsed {
            self.raw.raft.election_elapsed = elapsed;
        }
    }

    /// After its leader's store was found down: whether this follower is the one member that
    /// campaigns at once rather than after its randomized timeout. When every surviving
    /// member is woken by the same liveness check and waits out a random part of one election
    /// timeout, two of them often campaign in the same tick, split the vote and wait another
    /// election timeout; with thousands of regions failing over, some always do. One member
    /// per region, chosen by region id among the voters off the dead store (so the new leaders
    /// spread over the surviving stores), goes first; the others keep their random timeouts
    /// as the fallback. It campaigns only once its own count says the old leader's lease is
    /// over (a whole election timeout since it last heard from it).
    pub(crate) fn campaigns_first(&self, down_store: u64) -> bool {
        let raft = &self.raw.raft;
        raft.state == raft::StateRole::Follower
            && raft.election_elapsed >= raft.election_timeout()
            && first_campaigner(self.region(), down_store) == Some(self.peer_id)
    }

    /// Whether `m` may be stepped by this sleeping peer without waking it: a heartbeat from
    /// its leader that carries nothing new, or a caught-up follower's answer to one.
    pub fn keeps_asleep(&self, m: &Message) -> bool {
        if m.term != self.term() {
            return false;
        }
        let last = self.raw.raft.raft_log.last_index();
        match m.msg_type {
            MessageType::MsgHeartbeat => {
                !self.is_leader()
                    && m.from == self.leader_id()
                    && m.commit <= self.raw.raft.raft_log.committed
            }
            MessageType::MsgHeartbeatResponse => {
                self.is_leader()
                    && m.context.is_empty()
                    && self
                        .raw
                        .raft
                        .prs()
                        .get(m.from)
                        .is_some_and(|pr| pr.matched == last)
            }
            _ => false,
        }
    }

    /// The members a leader with nothing to do would ask to hibernate (those heard from
    /// within an election timeout), or `None` if it has something to do, a live member lags,
    /// or the live voters are no quorum.
    fn idle_members(&self, now: Instant) -> Option<Vec<PeerMeta>> {
        if !self.is_leader()
            || !self.is_initialized()
            || self.raw.raft.lead_transferee.is_some()
            || !self.proposals.is_empty()
            || !self.pending_reads.is_empty()
            || !self.unpersisted.is_empty()
            || self.is_applying_snapshot()
            || super::conf_change::is_joint(self.region())
        {
            return None;
        }
        let log = &self.raw.raft.raft_log;
        let last = log.last_index();
        // (Messages waiting in the ready, such as this tick's heartbeats, do not matter.)
        if log.committed != last || log.persisted != last || self.storage().applied_index() != last
        {
            return None;
        }
        let mut ask = Vec::new();
        let mut voters = 0usize;
        let mut live_voters = 0usize;
        for member in &self.region().peers {
            let voter = member.role() != PeerRole::Learner;
            voters += voter as usize;
            if member.id == self.peer_id {
                live_voters += voter as usize;
                continue;
            }
            let live = self
                .last_heard
                .get(&member.id)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.election_timeout);
            if !live {
                continue;
            }
            let pr = self.raw.raft.prs().get(member.id)?;
            if pr.matched != last || pr.state == raft::ProgressState::Snapshot {
                return None;
            }
            live_voters += voter as usize;
            ask.push(*member);
        }
        (live_voters * 2 > voters).then_some(ask)
    }

    /// Called every tick the peer is awake: counts a leader's idle ticks and, past the
    /// threshold, asks the live members to hibernate (again every election timeout while
    /// some have not agreed). A region whose only live member is the leader sleeps at once.
    pub(crate) fn tick_hibernation(&mut self, now: Instant) {
        if !self.hibernation.enabled {
            return;
        }
        if !self.is_leader() {
            self.maybe_ask_leader_to_wake();
            return;
        }
        let Some(members) = self.idle_members(now) else {
            self.on_activity();
            return;
        };
        let h = &mut self.hibernation;
        h.idle_ticks += 1;
        if h.idle_ticks < h.idle_threshold {
            return;
        }
        let first_idle = h.idle_ticks == h.idle_threshold;
        if first_idle && self.before_sleep(now) {
            self.on_activity();
            return;
        }
        if members.is_empty() {
            self.sleep();
            return;
        }
        let h = &self.hibernation;
        let since = h.idle_ticks - h.idle_threshold;
        if h.asking.is_some() && since % self.raw.raft.election_timeout().max(1) != 0 {
            return;
        }
        let (term, index) = (self.term(), self.raw.raft.raft_log.last_index());
        let asked: Vec<u64> = members.iter().map(|m| m.id).collect();
        self.hibernation.asking = Some(Ask {
            term,
            index,
            waiting: asked.clone(),
            asked,
        });
        for member in members {
            let msg = self.extra_message(member, ExtraMessageType::HibernateRequest, term, index);
            self.effects.messages.push(msg);
        }
    }

    /// Log GC and split checks run every so many ticks of an awake leader; a region that
    /// sleeps before its turn would keep its log (a follower that lagged, say, caught up
    /// since) or its size unchecked until it wakes. They get a turn before it sleeps: returns
    /// whether a compaction was proposed (the region stays awake until it applies).
    fn before_sleep(&mut self, now: Instant) -> bool {
        if self.maybe_compact_log(now) {
            return true;
        }
        // The first sleep only sets the mark: 10,000 regions falling asleep after a start
        // would otherwise queue 10,000 checks of regions nothing was written to.
        let last = self.raw.raft.raft_log.last_index();
        let mark = std::mem::replace(&mut self.hibernation.split_checked_at, last);
        if mark != 0 && last > mark {
            self.effects.split_check = true;
        }
        false
    }

    /// An awake member that has not heard from its leader for an election timeout asks it to
    /// wake, once per election timeout: the leader may sleep while this member, awake and
    /// behind (a learner that was cut off, which never campaigns), waits for it.
    fn maybe_ask_leader_to_wake(&mut self) {
        let timeout = self.raw.raft.election_timeout().max(1);
        let elapsed = self.raw.raft.election_elapsed;
        if elapsed < timeout || elapsed % timeout != 0 || !self.is_initialized() {
            return;
        }
        if let Some(leader) = self.leader_meta() {
            let (term, last) = (self.term(), self.raw.raft.raft_log.last_index());
            let msg = self.extra_message(leader, ExtraMessageType::WakeUp, term, last);
            self.effects.messages.push(msg);
        }
    }

    /// A leader's heartbeat round to its members, out of turn. To a sleeping leader's round,
    /// caught-up members answer without waking anyone; a member at a higher term (this leader
    /// was deposed while cut off), one that lags, or a store that no longer knows this peer (a
    /// tombstone) wakes or removes it.
    pub(crate) fn ping_members(&mut self) {
        if self.is_leader() {
            self.raw.raft.ping();
        }
    }

    fn sleep(&mut self) {
        self.hibernation.asleep = true;
        self.hibernation.asking = None;
        slog::debug!(self.logger, "hibernating"; "leader" => self.is_leader());
    }

    /// A leader asks this peer to hibernate at (`term`, `index`): agree, and sleep, if this
    /// peer follows that leader and holds exactly that log, all of it committed and durable.
    pub fn on_hibernate_request(&mut self, from: PeerMeta, term: u64, index: u64) {
        let log = &self.raw.raft.raft_log;
        let agree = self.hibernation.enabled
            && !self.is_leader()
            && self.leader_id() == from.id
            && self.term() == term
            && log.last_index() == index
            && log.committed == index
            && log.persisted == index
            && self.unpersisted.is_empty()
            // Proposals left from when it led expire on ticks: it must stay awake for that.
            && self.proposals.is_empty()
            && self.pending_reads.is_empty()
            && !self.is_applying_snapshot();
        if !agree {
            return;
        }
        if !self.hibernation.asleep {
            self.sleep();
        }
        let msg = self.extra_message(from, ExtraMessageType::HibernateResponse, term, index);
        self.effects.messages.push(msg);
    }

    /// Member `from_id` agreed to hibernate at (`term`, `index`): once every member asked has,
    /// and the region is still idle at that position, the leader sleeps.
    pub fn on_hibernate_response(&mut self, from_id: u64, term: u64, index: u64, now: Instant) {
        let Some(ask) = self.hibernation.asking.as_mut() else {
            return;
        };
        if ask.term != term || ask.index != index {
            return;
        }
        ask.waiting.retain(|id| *id != from_id);
        if !ask.waiting.is_empty() {
            return;
        }
        let asked = std::mem::take(&mut ask.asked);
        // Still idle at that position, and no member became live that was not asked (it
        // would stay awake behind a sleeping leader).
        let still_idle = self.term() == term
            && self.raw.raft.raft_log.last_index() == index
            && self
                .idle_members(now)
                .is_some_and(|live| live.iter().all(|m| asked.contains(&m.id)));
        if still_idle {
            self.sleep();
        } else {
            self.on_activity();
        }
    }

    /// Member `peer_id`'s store answered at `at`: for a sleeping leader, as good as hearing
    /// from the member itself.
    pub(crate) fn heard_from_store(&mut self, peer_id: u64, at: Instant) {
        let t = self.last_heard.entry(peer_id).or_insert(at);
        if *t < at {
            *t = at;
        }
    }

    fn extra_message(
        &self,
        to: PeerMeta,
        kind: ExtraMessageType,
        term: u64,
        index: u64,
    ) -> RaftMessage {
        let region = self.region();
        RaftMessage {
            region_id: region.id,
            from_peer: Some(self.meta()),
            to_peer: Some(to),
            region_epoch: region.region_epoch,
            extra: Some(ExtraMessage {
                r#type: kind as i32,
                term,
                index,
            }),
            ..Default::default()
        }
    }
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// Wakes the peer if it sleeps, counting why. A request (not a raft message: heartbeats
    /// flow while awake) also starts the idle count again.
    pub(crate) fn wake(&mut self, fsm: &mut PeerFsm<EK>, cause: WakeCause) {
        if cause != WakeCause::Raft {
            fsm.peer.on_activity();
        }
        let leader = fsm.peer.is_leader();
        if fsm.peer.wake(self.now, false) {
            METRICS
                .hibernate_wakeups
                .with_label_values(&[cause.label()])
                .inc();
            if leader {
                self.refresh_heard_from_stores(fsm);
            }
        }
    }

    /// Hibernation's handshake, from member `from`.
    pub(crate) fn on_extra_message(
        &mut self,
        fsm: &mut PeerFsm<EK>,
        from: PeerMeta,
        extra: ExtraMessage,
    ) {
        match ExtraMessageType::try_from(extra.r#type) {
            // Not behind a leader whose store this store finds down: the wake-up for that was
            // sent once, maybe before this request arrived.
            Ok(ExtraMessageType::HibernateRequest)
                if util::lock(&self.ctx.liveness).is_down(from.store_id) => {}
            Ok(ExtraMessageType::HibernateRequest) => {
                fsm.peer.on_hibernate_request(from, extra.term, extra.index)
            }
            Ok(ExtraMessageType::HibernateResponse) => {
                fsm.peer
                    .on_hibernate_response(from.id, extra.term, extra.index, self.now)
            }
            Ok(ExtraMessageType::WakeUp) => self.wake(fsm, WakeCause::Raft),
            _ => slog::debug!(fsm.peer.logger(), "dropping an unknown extra message";
                "type" => extra.r#type, "from" => from.id),
        }
    }

    /// A sleeping peer's rare tick. A leader reports the region to the scheduler, counting
    /// members on stores that answer liveness heartbeats as heard (it hears nothing else while
    /// asleep), and sends one heartbeat round: a leader deposed, or removed, while its store
    /// was cut off learns of it from the answers. A follower asks the members whether it is
    /// still one: a removed peer whose tombstone was lost would otherwise keep its data and
    /// range for ever.
    pub(crate) fn on_hibernate_tick(&mut self, fsm: &mut PeerFsm<EK>) {
        if !fsm.peer.is_asleep() {
            return;
        }
        if fsm.peer.is_leader() {
            self.refresh_heard_from_stores(fsm);
            fsm.peer.schedule_heartbeat();
            fsm.peer.ping_members();
        } else if fsm.peer.is_initialized() {
            fsm.peer.effects.probe_members = true;
        }
    }

    /// A sleeping leader hears nothing from its members: what their stores' liveness says
    /// stands in, or its report would name every member down.
    pub(crate) fn refresh_heard_from_stores(&self, fsm: &mut PeerFsm<EK>) {
        let liveness = util::lock(&self.ctx.liveness);
        let members: Vec<PeerMeta> = fsm.peer.region().peers.clone();
        for m in members {
            if let Some(t) = liveness.last_heard(m.store_id) {
                if !liveness.is_down(m.store_id) {
                    fsm.peer.heard_from_store(m.id, t);
                }
            }
        }
    }

    /// The store of this region's leader stopped answering: a sleeping follower wakes and
    /// counts the election ticks it slept through (see [`Peer::wake`]); the member chosen by
    /// [`Peer::campaigns_first`] campaigns at once.
    pub(crate) fn on_leader_store_down(&mut self, fsm: &mut PeerFsm<EK>, store_id: u64) {
        let leads_there = fsm
            .peer
            .leader_meta()
            .is_some_and(|l| l.store_id == store_id);
        if fsm.peer.is_leader() || !leads_there {
            return;
        }
        if fsm.peer.wake(self.now, true) {
            METRICS
                .hibernate_wakeups
                .with_label_values(&[WakeCause::StoreDown.label()])
                .inc();
        }
        if fsm.peer.campaigns_first(store_id) {
            slog::info!(fsm.peer.logger(), "leader's store is down: campaigning first";
                "leader_store_id" => store_id);
            if let Err(e) = fsm.peer.campaign() {
                slog::warn!(fsm.peer.logger(), "campaign failed"; "error" => %e);
            }
        }
    }

    /// A member campaigns while this follower still has a leader. If this store, too, has
    /// not heard from the leader's store for an election timeout less one liveness interval
    /// (the most the stores' checks, each on its own phase, can differ by), the follower
    /// counts the election ticks it missed now rather than at its own check. Otherwise
    /// raft-rs's check-quorum rule would have it ignore the vote while its count is below an
    /// election timeout, and the campaign of the member chosen to go first (see
    /// [`Peer::campaigns_first`]) would fail for a check that came a little later here. The
    /// count is still bounded by the time since it last heard from the leader itself, so the
    /// leader's lease stays safe; it never campaigns itself from here.
    pub(crate) fn on_campaign_heard(&mut self, fsm: &mut PeerFsm<EK>) {
        if fsm.peer.is_leader() {
            return;
        }
        let Some(leader) = fsm.peer.leader_meta() else {
            return;
        };
        let cfg = &self.ctx.cfg;
        let interval = cfg.raft_base_tick_interval_ms * cfg.raft_heartbeat_ticks as u64;
        let threshold = cfg
            .election_timeout()
            .saturating_sub(std::time::Duration::from_millis(interval));
        let now = self.ctx.clock.now();
        let silent = util::lock(&self.ctx.liveness)
            .last_heard(leader.store_id)
            .is_some_and(|t| now.saturating_duration_since(t) >= threshold);
        if silent && fsm.peer.wake(now, true) {
            METRICS
                .hibernate_wakeups
                .with_label_values(&[WakeCause::StoreDown.label()])
                .inc();
        }
    }

    /// A store with a member of this region answers again: a sleeping leader checks, with one
    /// heartbeat round, that it still leads (see [`Peer::ping_members`]).
    pub(crate) fn on_member_store_up(&mut self, fsm: &mut PeerFsm<EK>, store_id: u64) {
        let member_there = fsm
            .peer
            .region()
            .peers
            .iter()
            .any(|p| p.store_id == store_id);
        if fsm.peer.is_asleep() && member_there {
            fsm.peer.ping_members();
        }
    }

    /// After the peer's round: files its sleep state with the tick registry and its leader's
    /// store with the leader index, where they changed.
    pub(crate) fn file_peer(&mut self, fsm: &mut PeerFsm<EK>) {
        let region_id = fsm.peer.region_id();
        let state = fsm.peer.sleep_state();
        if state != fsm.filed_state {
            self.ctx.ticks.set(region_id, state);
            fsm.filed_state = state;
        }
        let leader_store = fsm.peer.leader_meta().map_or(0, |l| l.store_id);
        if leader_store != fsm.indexed_leader_store && fsm.peer.is_initialized() {
            self.ctx.meta().set_leader_store(region_id, leader_store);
            fsm.indexed_leader_store = leader_store;
        }
    }

    /// The store's share of liveness, every base tick: heartbeats to the other stores (every
    /// `raft-heartbeat-ticks`), the check for silent ones, and the paced wake-ups.
    pub(crate) fn tick_liveness(&mut self, store_ticks: u64) {
        let cfg = &self.ctx.cfg;
        let store_id = self.ctx.store_id;
        let now = self.ctx.clock.now();
        if store_ticks % cfg.raft_heartbeat_ticks.max(1) as u64 == 0 {
            self.ctx.ask_owed_reports();
            let stores: Vec<u64> = self
                .ctx
                .meta()
                .peer_stores()
                .into_iter()
                .filter(|s| *s != store_id)
                .collect();
            for s in &stores {
                self.transport.send(store_heartbeat(store_id, *s));
            }
            let change = util::lock(&self.ctx.liveness).check(stores, now, cfg.election_timeout());
            METRICS.stores_down.sub(change.forgotten as i64);
            for s in change.up {
                METRICS.stores_down.dec();
                let led = self.ctx.meta().led_with_member_on(store_id, s);
                slog::info!(self.ctx.logger, "store answers again: the regions led here with a \
                    member there check they still lead"; "other_store_id" => s,
                    "regions" => led.len());
                util::lock(&self.ctx.liveness).queue_wakes(s, StoreEvent::Up, led);
            }
            for s in change.down {
                METRICS.stores_down.inc();
                let led = self.ctx.meta().led_by(s);
                slog::warn!(self.ctx.logger, "store silent for an election timeout: waking the \
                    regions it leads"; "other_store_id" => s, "regions" => led.len(),
                    "per_tick" => cfg.hibernate_wake_batch);
                util::lock(&self.ctx.liveness).queue_wakes(s, StoreEvent::Down, led);
            }
        }
        let wakes = util::lock(&self.ctx.liveness).next_wakes(cfg.hibernate_wake_batch);
        for (region_id, store_id, event) in wakes {
            let msg = match event {
                StoreEvent::Down => PeerMsg::LeaderStoreDown { store_id },
                StoreEvent::Up => PeerMsg::MemberStoreUp { store_id },
            };
            // Never dropped for a full mailbox: it is sent once.
            let _ = self.ctx.routers.raft.force_send(region_id, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, peers: &[(u64, u64, PeerRole)]) -> Region {
        Region {
            id,
            peers: peers
                .iter()
                .map(|&(id, store_id, role)| PeerMeta {
                    id,
                    store_id,
                    role: role as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn one_voter_off_the_dead_store_campaigns_first_and_the_choice_spreads_over_stores() {
        use PeerRole::*;
        let peers = [
            (11, 1, Voter),
            (12, 2, Voter),
            (13, 3, Voter),
            (14, 4, Learner),
        ];
        // Store 1 died: 12 and 13 remain. Region ids come in blocks of four (a split hands
        // out the region's id and its three peers'), and still both are chosen about evenly.
        let mut chosen = std::collections::HashMap::new();
        for id in (1000..5000).step_by(4) {
            *chosen
                .entry(first_campaigner(&region(id, &peers), 1))
                .or_insert(0) += 1;
        }
        assert_eq!(chosen.len(), 2, "{chosen:?}");
        for id in [12, 13] {
            assert!((400..=600).contains(&chosen[&Some(id)]), "{chosen:?}");
        }
        // Never a learner, never a peer on the dead store.
        for id in 0..20 {
            let first = first_campaigner(&region(id, &peers), 3);
            assert!(matches!(first, Some(11) | Some(12)), "{first:?}");
        }
        // The order is by peer id, not by the order the region lists its peers.
        let shuffled = [(13, 3, Voter), (11, 1, Voter), (12, 2, Voter)];
        for id in 0..20 {
            assert_eq!(
                first_campaigner(&region(id, &shuffled), 1),
                first_campaigner(&region(id, &peers), 1)
            );
        }
        // A joint configuration, or no voter left: nobody goes first.
        let joint = [
            (11, 1, Voter),
            (12, 2, IncomingVoter),
            (13, 3, DemotingVoter),
        ];
        assert_eq!(first_campaigner(&region(100, &joint), 1), None);
        assert_eq!(first_campaigner(&region(100, &[(11, 1, Voter)]), 1), None);
    }
}
