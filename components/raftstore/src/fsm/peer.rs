use std::sync::Arc;
use std::time::Instant;

use batch_system::{Fsm, HandlerBuilder, PollHandler};
use engine::KvEngine;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::{Message, MessageType};
use raft_log::RaftLogBatch;

use super::writer::{PersistedReady, WriteTask};
use super::{StoreContext, StoreFsm};
use crate::metrics::METRICS;
use crate::operation::hibernate::{SleepState, WakeCause};
use crate::operation::snapshot::{check_snapshot_message, is_snapshot};
use crate::operation::write::{self, ProposalBatch};
use crate::raft::Peer;
use crate::router::{send_internal, ApplyRes, ApplyTask, Callback, PeerMsg, StoreMsg};
use crate::transport::Transport;
use crate::worker::{HeartbeatTask, SplitTask};
use crate::Error;

/// One region's peer in the batch system.
pub struct PeerFsm<EK: KvEngine> {
    pub(crate) peer: Peer<EK>,
    pub(crate) stopped: bool,
    /// How the tick registry files this peer (a new peer is filed awake).
    pub(crate) filed_state: SleepState,
    /// The leader's store as the store's leader index has it (0: none).
    pub(crate) indexed_leader_store: u64,
}

impl<EK: KvEngine> PeerFsm<EK> {
    pub fn new(peer: Peer<EK>) -> PeerFsm<EK> {
        PeerFsm {
            peer,
            stopped: false,
            filed_state: SleepState::Awake,
            indexed_leader_store: 0,
        }
    }

    pub fn peer(&self) -> &Peer<EK> {
        &self.peer
    }
}

impl<EK: KvEngine> Drop for PeerFsm<EK> {
    fn drop(&mut self) {
        // A store shutting down (or a poller unwinding): nobody will answer these any more.
        let store_id = self.peer.store_id();
        self.peer.fail_all(|| Error::StoreStopped {
            store_id,
            reason: "the region's peer was stopped".into(),
        });
        // Answers decided before the stop are delivered as decided.
        for reply in self.peer.take_effects().replies {
            reply.deliver();
        }
    }
}

impl<EK: KvEngine> Fsm for PeerFsm<EK> {
    type Message = PeerMsg<EK::Snapshot>;

    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

/// Runs raft rounds: every peer of the round steps its messages and puts its ready into one
/// raft-log batch; at the end of the round the batch is written with one fsync, and the
/// messages that waited for it are sent.
pub struct RaftPoller<EK: KvEngine, T: Transport> {
    pub(crate) ctx: Arc<StoreContext<EK>>,
    pub(crate) transport: T,
    pub(crate) batch: RaftLogBatch,
    /// Messages that may leave before the round's fsync (a leader's appends).
    pub(crate) early: Vec<RaftMessage>,
    pub(crate) late: Vec<RaftMessage>,
    pub(crate) raft_msgs: Vec<Message>,
    pub(crate) round_entries: usize,
    pub(crate) round_regions: usize,
    pub(crate) round_needs_sync: bool,
    /// A ready of the round took in a snapshot: the round is made durable before it ends
    /// (the snapshot's apply may answer before a store writer's notice would come, and
    /// raft-rs refuses an applied index above what it knows is durable).
    pub(crate) round_has_snapshot: bool,
    /// The store writer's queue (`store-io-pool-size = 1`); None: the round writes itself.
    pub(crate) writer: Option<crossbeam::channel::Sender<WriteTask>>,
    pub(crate) now: Instant,
    /// The writes of the region whose turn it is, proposed as one entry at the end of it.
    pub(crate) writes: ProposalBatch,
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    fn wrap(peer: &Peer<EK>, msgs: &mut Vec<Message>, out: &mut Vec<RaftMessage>) {
        for msg in msgs.drain(..) {
            let to = msg.to;
            match peer.to_raft_message(msg) {
                Some(m) => out.push(m),
                None => slog::warn!(peer.logger(), "dropping a message to an unknown peer";
                    "to" => to),
            }
        }
    }

    /// Executes what the peer asked for this round: answers its callers, then the work for the
    /// store's workers and other stores. The one place a peer's queued effects leave it.
    fn run_effects(&mut self, fsm: &mut PeerFsm<EK>) {
        let effects = fsm.peer.take_effects();
        for reply in effects.replies {
            reply.deliver();
        }
        self.late.extend(effects.messages);
        if effects.probe_members {
            self.probe_members(&fsm.peer);
        }
        let paused = self
            .ctx
            .split_checks_paused
            .load(std::sync::atomic::Ordering::Relaxed);
        if effects.split_check && !paused {
            self.ctx.send_split_task(SplitTask::Check {
                region: fsm.peer.region().clone(),
                leader: fsm.peer.meta(),
            });
        }
        if effects.heartbeat {
            if let Some(hb) = fsm.peer.region_heartbeat(self.now) {
                let region_id = hb.region.id;
                if !self
                    .ctx
                    .send_heartbeat_task(HeartbeatTask::Region(Box::new(hb)))
                {
                    // A sleeping leader would report again only at its next rare tick: the
                    // worker asks it again once its queue has room (see `owed_reports`).
                    util::lock(&self.ctx.owed_reports).insert(region_id);
                }
            }
        }
    }

    /// Takes the peer's part of the round: its ready's entries and hard state go into the
    /// round's batch, a received snapshot's steps 1-2 are made durable and its data handed to
    /// the ApplyFsm, committed entries go to the ApplyFsm, and messages wait in `early` (a
    /// leader's appends) or until the round's write.
    fn handle_ready(&mut self, fsm: &mut PeerFsm<EK>) {
        if !fsm.peer.has_ready() {
            return;
        }
        if let Some(number) = fsm.peer.queued_write() {
            if fsm.peer.has_pending_snapshot() {
                // The snapshot replaces the log outside the batch: the region's queued writes
                // go first, and then count as durable. (A compaction queued without a ready
                // may still land after the steps: below the snapshot's index, it is a no-op.)
                if self.ctx.log_writer.barrier(&self.ctx).is_err() {
                    // The store stopped: persist nothing more.
                    return;
                }
                fsm.peer.on_persisted(number, &mut self.raft_msgs);
                Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut self.late);
            }
        }
        let ready = match fsm
            .peer
            .handle_ready(&mut self.batch, &mut self.raft_msgs, self.now)
        {
            Ok(ready) => ready,
            Err(e) => self.ctx.fatal("handling a raft ready", &e),
        };
        Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut self.early);
        let had_snapshot = ready.snapshot.is_some();
        if let Some(snap) = ready.snapshot {
            self.on_snapshot_ready(fsm, snap);
        }
        self.maybe_gen_snapshot(fsm);
        if let Some(leader) = ready.leadership {
            let delta = if leader { 1 } else { -1 };
            self.ctx
                .stats
                .leaders
                .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
        self.round_needs_sync |= ready.needs_sync;
        self.round_has_snapshot |= had_snapshot;
        if ready.entries_written > 0 {
            self.round_entries += ready.entries_written;
            self.round_regions += 1;
        }
        if let Some(committed) = ready.committed {
            let region_id = committed.region_id;
            send_internal(
                &self.ctx.routers.apply,
                region_id,
                ApplyTask::Apply(committed),
                &self.ctx.logger,
            );
        }
    }

    /// The ApplyFsm applied entries: the peer records it, then each command's on-applied
    /// half runs. Returns true if the peer is gone (destroyed by its own removal).
    fn on_apply_res(&mut self, fsm: &mut PeerFsm<EK>, res: ApplyRes) -> bool {
        let members_before =
            (!res.conf_changes.is_empty()).then(|| fsm.peer.region().peers.clone());
        let split_parent = (!res.new_regions.is_empty()).then(|| res.region.clone());
        let mut outcome = fsm.peer.on_apply_res(res, self.now);
        if outcome.region_changed || !outcome.new_regions.is_empty() {
            fsm.peer.schedule_heartbeat();
        }
        if let Some(before) = members_before {
            self.on_membership_applied(fsm, before);
        }
        if outcome.region_changed && fsm.peer.is_initialized() {
            let region = fsm.peer.region().clone();
            if let Err(e) = self.ctx.meta().insert(region) {
                slog::error!(fsm.peer.logger(), "store meta refused the region"; "error" => %e);
            }
        }
        if let Some(parent) = split_parent {
            let new_regions = std::mem::take(&mut outcome.new_regions);
            self.on_split_applied(fsm, parent, new_regions);
        }
        if outcome.removed {
            slog::info!(
                fsm.peer.logger(),
                "removed from the region by a membership change"
            );
            self.destroy(fsm, Callback::new(|_| {}));
            return true;
        }
        if let Some(index) = outcome.compacted_to {
            self.on_log_compacted(fsm, index);
        }
        false
    }

    /// Steps a message from another store, after checking it is one peers exchange and is
    /// between members of the region: bytes from the network are untrusted, and raft-rs panics
    /// on some malformed local-only messages (an empty MsgPropose, say). Messages that show
    /// this peer was removed destroy it; a removed peer that still talks gets a tombstone back.
    fn on_raft_message(&mut self, fsm: &mut PeerFsm<EK>, msg: RaftMessage) {
        let from = msg.from_peer.unwrap_or_default();
        let Some(member) = self.check_sender(fsm, &msg) else {
            return;
        };
        if member {
            // The clock now, not the round's start: a follower's count of the time since it
            // heard its leader bounds when it grants a vote, and a round can run long.
            fsm.peer.heard_from(from.id, self.ctx.clock.now());
        } else {
            // A newer membership than this peer has applied (or this peer knows none yet):
            // the sender may be the leader this peer must catch up from.
            fsm.peer.remember_peer(from);
        }
        if let Some(extra) = msg.extra {
            if member {
                self.on_extra_message(fsm, from, extra);
            }
            return;
        }
        let Some(wire) = msg.message else {
            return;
        };
        let m = match raft::eraftpb::Message::try_from(wire) {
            Ok(m) => m,
            Err(e) => {
                slog::warn!(fsm.peer.logger(), "dropping a malformed raft message"; "error" => %e);
                return;
            }
        };
        match check_peer_message(&fsm.peer, &m, self.ctx.clock.now()).and_then(|ok| {
            if ok && m.msg_type == MessageType::MsgSnapshot {
                self.check_snapshot_range(&fsm.peer, &m).map(|()| ok)
            } else {
                Ok(ok)
            }
        }) {
            Ok(true) => {}
            Ok(false) => return,
            Err(why) => {
                slog::warn!(fsm.peer.logger(), "dropping a raft message"; "reason" => why,
                    "msg_type" => ?m.msg_type, "from" => m.from, "to" => m.to);
                return;
            }
        }
        // A sleeping peer stays asleep for a heartbeat that brings nothing new (and its
        // answer), unless stepping it changed who leads.
        let asleep = fsm.peer.is_asleep() && fsm.peer.keeps_asleep(&m);
        if matches!(
            m.msg_type,
            MessageType::MsgRequestPreVote | MessageType::MsgRequestVote
        ) {
            self.on_campaign_heard(fsm);
        }
        if !asleep {
            self.wake(fsm, WakeCause::Raft);
        }
        let before = (fsm.peer.term(), fsm.peer.leader_id(), fsm.peer.is_leader());
        if let Err(e) = fsm.peer.step(m) {
            slog::debug!(fsm.peer.logger(), "raft rejected a message"; "error" => %e);
        }
        if asleep && before != (fsm.peer.term(), fsm.peer.leader_id(), fsm.peer.is_leader()) {
            self.wake(fsm, WakeCause::Raft);
        }
    }
}

impl<EK: KvEngine, T: Transport> PollHandler<PeerFsm<EK>, StoreFsm> for RaftPoller<EK, T> {
    fn begin(&mut self, _batch_size: usize) {
        self.now = self.ctx.clock.now();
        self.round_entries = 0;
        self.round_regions = 0;
        self.round_needs_sync = false;
        self.round_has_snapshot = false;
    }

    fn handle_control(&mut self, store: &mut StoreFsm, msgs: &mut Vec<StoreMsg>) {
        for msg in msgs.drain(..) {
            match msg {
                StoreMsg::StoreHeartbeat { from_store } => {
                    let now = self.ctx.clock.now();
                    util::lock(&self.ctx.liveness).heard(from_store, now);
                }
                StoreMsg::Tick => {
                    store.ticks += 1;
                    self.tick_liveness(store.ticks);
                    METRICS.regions.set(self.ctx.meta().len() as i64);
                    let cfg = &self.ctx.cfg;
                    if store.ticks % cfg.ticks_of(cfg.raft_engine_purge_interval_ms) == 0 {
                        self.ctx.purge_raft_log();
                        self.ctx.gc_snapshots();
                    }
                    if store.ticks % cfg.ticks_of(cfg.store_heartbeat_interval_ms) == 0 {
                        self.ctx.store_heartbeat();
                    }
                }
                StoreMsg::RaftMessage(m) => {
                    if let Some(m) = self.ctx.maybe_create_peer(*m) {
                        let region_id = m.region_id;
                        let msg = PeerMsg::RaftMessage(Box::new(m));
                        if let Err(e) = self.ctx.routers.raft.force_send(region_id, msg) {
                            slog::info!(self.ctx.logger, "new peer did not take its message";
                                "region_id" => region_id, "error" => %e);
                        }
                    }
                }
                StoreMsg::DestroyPeer { region_id, cb } => {
                    let msg = PeerMsg::Destroy { cb };
                    if let Err(e) = self.ctx.routers.raft.force_send(region_id, msg) {
                        let store_id = self.ctx.store_id;
                        if let PeerMsg::Destroy { cb } = e.into_inner() {
                            cb.invoke(Err(crate::Error::RegionNotFound {
                                region_id,
                                store_id,
                            }));
                        }
                    }
                }
                StoreMsg::CreatePeer { region, cb } => {
                    let region_id = region.id;
                    let result = self.ctx.create_new_region(*region);
                    if let Err(e) = &result {
                        slog::warn!(self.ctx.logger, "cannot create peer";
                            "region_id" => region_id, "error" => %e);
                    }
                    cb.invoke(result);
                }
            }
        }
    }

    fn handle_normal(&mut self, fsm: &mut PeerFsm<EK>, msgs: &mut Vec<PeerMsg<EK::Snapshot>>) {
        METRICS.raft_mailbox_backlog.observe(msgs.len() as f64);
        if self.ctx.is_stopped() {
            // A fatal error stopped the store: persist nothing more, answer nothing as success.
            msgs.clear();
            // The error may have hit another thread (the store writer), leaving this peer's
            // proposals pending with nothing left to decide them: their outcome is unknown,
            // and their callers hear so now rather than never.
            let (region_id, store_id) = (fsm.peer.region_id(), fsm.peer.store_id());
            fsm.peer.fail_all(|| Error::StoreStopped {
                store_id,
                reason: format!("the store stopped with region {region_id}'s write pending"),
            });
            for reply in fsm.peer.take_effects().replies {
                reply.deliver();
            }
            return;
        }
        // Ticks that queued up while the poller lagged count once: run together they would
        // pass an election timeout in a moment of wall time, and a store too busy to keep up
        // would campaign instead (seen while splitting into 10,000 regions: seconds of ticks
        // per peer, campaigns every millisecond, no leader for minutes).
        let (mut ticked, mut pinged) = (false, false);
        // When this turn took the region's messages (read once, if a write needs it).
        let mut taken: Option<Instant> = None;
        for msg in msgs.drain(..) {
            // Batched writes are proposed before any other message (an admin command, a tick
            // that may step the leader down, an apply result...), so commands enter the log in
            // the order they came. Raft messages and reads may pass them: the writes are not
            // acknowledged yet, so it is as if they had come a little later.
            let keeps_writes = match &msg {
                PeerMsg::RaftMessage(_) | PeerMsg::Read { .. } | PeerMsg::Persisted { .. } => true,
                PeerMsg::Command { request, .. } => write::batchable(request),
                _ => false,
            };
            if !keeps_writes {
                fsm.peer.propose_batch(&mut self.writes, self.now);
            }
            match msg {
                PeerMsg::RaftMessage(m) => {
                    self.on_raft_message(fsm, *m);
                    if fsm.stopped {
                        break;
                    }
                }
                PeerMsg::Command { request, cb, sent } => {
                    if let Some(sent) = sent {
                        // Not the round's start: a command may have come after it.
                        let taken = *taken.get_or_insert_with(|| self.ctx.clock.now());
                        let waited = taken.saturating_duration_since(sent);
                        METRICS.write_hop.mailbox.observe(waited.as_secs_f64());
                    }
                    let cause = match request.admin_request {
                        Some(_) => WakeCause::Admin,
                        None => WakeCause::Write,
                    };
                    self.wake(fsm, cause);
                    if write::batchable(&request) {
                        fsm.peer
                            .batch_write(&mut self.writes, request, cb, self.now)
                    } else {
                        fsm.peer.propose_write(request, cb, self.now)
                    }
                }
                // The lease is checked against the clock now, not the round's start: a
                // round can run long, and the lease's margin is small.
                PeerMsg::Read { request, cb } => {
                    self.wake(fsm, WakeCause::Read);
                    let lease_now = self.ctx.clock.now();
                    fsm.peer.read(&request, cb, self.now, lease_now)
                }
                // A tick sent before the peer fell asleep.
                PeerMsg::Tick if fsm.peer.is_asleep() => {}
                PeerMsg::Tick if ticked => {
                    METRICS.ticks_coalesced.inc();
                    // A lagging leader still heartbeats once per batch, as the burst of
                    // ticks did, so followers on healthy stores do not time out on it.
                    if !std::mem::replace(&mut pinged, true) {
                        fsm.peer.ping_members();
                    }
                }
                PeerMsg::Tick => {
                    ticked = true;
                    fsm.peer.tick(self.now);
                }
                PeerMsg::HibernateTick => self.on_hibernate_tick(fsm),
                PeerMsg::ReportRegion => {
                    if fsm.peer.is_leader() {
                        if fsm.peer.is_asleep() {
                            self.refresh_heard_from_stores(fsm);
                        }
                        fsm.peer.schedule_heartbeat();
                    }
                }
                PeerMsg::LeaderStoreDown { store_id } => self.on_leader_store_down(fsm, store_id),
                PeerMsg::MemberStoreUp { store_id } => self.on_member_store_up(fsm, store_id),
                PeerMsg::AskSplit {
                    region_epoch,
                    split_keys,
                    cb,
                } => {
                    self.wake(fsm, WakeCause::Admin);
                    self.on_ask_split(fsm, region_epoch, split_keys, cb)
                }
                PeerMsg::ApplyRes(res) => {
                    if self.on_apply_res(fsm, res) {
                        break;
                    }
                }
                PeerMsg::Wake => {}
                PeerMsg::Persisted { peer_id, number } => {
                    // A notice for an earlier peer of the region (destroyed, created again)
                    // is not this one's.
                    if peer_id == fsm.peer.peer_id() {
                        fsm.peer.on_persisted(number, &mut self.raft_msgs);
                        Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut self.late);
                    }
                }
                PeerMsg::SnapshotGenerated(snapshot) => {
                    self.wake(fsm, WakeCause::Admin);
                    fsm.peer
                        .storage_mut()
                        .on_snapshot_generated(snapshot.map(|s| *s))
                }
                PeerMsg::SnapshotStatus {
                    to_peer_id,
                    ok,
                    busy,
                } => {
                    self.wake(fsm, WakeCause::Admin);
                    fsm.peer.report_snapshot(to_peer_id, ok, busy)
                }
                PeerMsg::QueryStatus(cb) => cb.invoke(Ok(fsm.peer.status(self.now))),
                PeerMsg::Destroy { cb } => {
                    self.destroy(fsm, cb);
                    // Whatever came after it is dropped with the FSM (callers see StoreStopped).
                    break;
                }
                PeerMsg::Campaign => {
                    self.wake(fsm, WakeCause::Admin);
                    if let Err(e) = fsm.peer.campaign() {
                        slog::warn!(fsm.peer.logger(), "campaign failed"; "error" => %e);
                    }
                }
            }
        }
        if fsm.stopped {
            // Writes not yet proposed wrote nothing: the region is simply not here any more.
            let (region_id, store_id) = (fsm.peer.region_id(), fsm.peer.store_id());
            for cb in self.writes.discard() {
                fsm.peer.reply_write(
                    cb,
                    Err(Error::RegionNotFound {
                        region_id,
                        store_id,
                    }),
                );
            }
            // Its callers learn now; the rest of its effects went with it.
            for reply in fsm.peer.take_effects().replies {
                reply.deliver();
            }
            return;
        }
        fsm.peer.propose_batch(&mut self.writes, self.now);
        self.maybe_gen_snapshot(fsm);
        self.handle_ready(fsm);
        self.run_effects(fsm);
        self.file_peer(fsm);
    }

    fn end(&mut self, normals: &mut [Box<PeerFsm<EK>>]) {
        METRICS.ready_rounds.inc();
        if self.ctx.is_stopped() {
            self.batch = self.ctx.engines.raft_log.batch();
            self.early.clear();
            self.late.clear();
            // The store's own sends of the round (liveness heartbeats) go nowhere either.
            self.transport.discard();
            return;
        }
        // A leader's appends may go out before its own fsync (raft allows it): the follower
        // persists in parallel.
        // Snapshots wait for the late path, with their files.
        for msg in self.early.drain(..) {
            if is_snapshot(&msg) {
                self.late.push(msg);
            } else {
                self.transport.send(msg);
            }
        }
        // Out now, not with the late messages: a batching transport would otherwise hold
        // them until after the fsync below, and the follower's fsync could not overlap ours.
        self.transport.flush();
        // A round with nothing to write, whose peers wait for no earlier write, is durable
        // as it is: it need not queue behind the writer.
        let waits = normals.iter().any(|fsm| fsm.peer.queued_write().is_some());
        let queue = self.writer.is_some() && (!self.batch.is_empty() || waits);
        if queue && !self.round_has_snapshot {
            self.queue_round(normals);
        } else {
            if queue && self.ctx.log_writer.barrier(&self.ctx).is_err() {
                // The store stopped: persist nothing more.
                self.batch = self.ctx.engines.raft_log.batch();
                self.late.clear();
                self.transport.discard();
                return;
            }
            // Written here, after what was queued before (so every queued ready of the
            // round's peers is durable too, which `on_round_persisted` then counts).
            write_round(
                &self.ctx,
                &mut self.batch,
                self.round_needs_sync,
                self.round_entries,
                self.round_regions,
            );
            for fsm in normals.iter_mut() {
                fsm.peer.on_round_persisted(&mut self.raft_msgs);
                Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut self.late);
                if fsm.peer.has_ready() {
                    // Persistence may have produced more work (commits, messages): come back
                    // next round. A full mailbox already guarantees that.
                    let _ = self
                        .ctx
                        .routers
                        .raft
                        .send(fsm.peer.region_id(), PeerMsg::Wake);
                }
            }
        }
        // Taken and put back so the buffer keeps its capacity across rounds.
        let mut late = std::mem::take(&mut self.late);
        for msg in late.drain(..) {
            if is_snapshot(&msg) {
                self.send_snapshot(msg);
            } else {
                self.transport.send(msg);
            }
        }
        self.late = late;
        self.transport.flush();
    }
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// Hands the round's batch to the store writer, with the messages that wait for it and
    /// the readies it makes durable; the peers hear of it by `PeerMsg::Persisted`.
    fn queue_round(&mut self, normals: &mut [Box<PeerFsm<EK>>]) {
        let mut readies = Vec::new();
        let mut messages = Vec::new();
        let mut wrapped = Vec::new();
        for fsm in normals.iter_mut() {
            if let Some(number) = fsm.peer.take_persisted_messages(&mut self.raft_msgs) {
                Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut wrapped);
                for msg in wrapped.drain(..) {
                    if is_snapshot(&msg) {
                        // A leader that stepped down in the round it made a MsgSnapshot has
                        // it among the persisted messages: it goes with its files, by the
                        // round's late path (its term was durable before it led).
                        self.late.push(msg);
                    } else {
                        messages.push(msg);
                    }
                }
                readies.push(PersistedReady {
                    region_id: fsm.peer.region_id(),
                    peer_id: fsm.peer.peer_id(),
                    number,
                });
            }
        }
        let batch = std::mem::replace(&mut self.batch, self.ctx.engines.raft_log.batch());
        let task = WriteTask {
            batch,
            sync: self.round_needs_sync,
            entries: self.round_entries,
            regions: self.round_regions,
            readies,
            messages,
            queued_at: self.ctx.clock.now(),
        };
        let queued = match &self.writer {
            Some(tx) => self.ctx.log_writer.submit(tx, task),
            None => false,
        };
        if !queued {
            // The writer is gone: only a stopped store loses it.
            self.ctx.on_poller_panic("store writer");
        }
    }
}

/// Writes a round's raft-log batch (fsynced if `sync`) and counts it; a failed write stops
/// the store. Run by a raft poller at the end of its round, or by the store writer.
pub(crate) fn write_round<EK: KvEngine>(
    ctx: &StoreContext<EK>,
    batch: &mut RaftLogBatch,
    sync: bool,
    entries: usize,
    regions: usize,
) {
    if !batch.is_empty() {
        fail::fail_point!("raft_before_log_write");
        let started = ctx.clock.now();
        if let Err(e) = write_raft_log(&ctx.engines.raft_log, batch, sync) {
            ctx.fatal("writing the raft log", &e);
        }
        let took = ctx.clock.now().saturating_duration_since(started);
        METRICS.write_hop.log_write.observe(took.as_secs_f64());
        fail::fail_point!("raft_after_log_write");
    }
    if sync {
        METRICS.log_fsyncs.inc();
        METRICS.entries_per_fsync.observe(entries as f64);
        METRICS.regions_per_fsync.observe(regions as f64);
        let stats = &ctx.stats;
        use std::sync::atomic::Ordering::Relaxed;
        stats.fsyncs.fetch_add(1, Relaxed);
        stats.entries_written.fetch_add(entries as u64, Relaxed);
        stats.regions_written.fetch_add(regions as u64, Relaxed);
    }
}

pub struct RaftPollerBuilder<EK: KvEngine, T: Transport + Clone> {
    pub(crate) ctx: Arc<StoreContext<EK>>,
    pub(crate) transport: T,
    /// The store writer's queue, if the store has one.
    pub(crate) writer: Option<crossbeam::channel::Sender<WriteTask>>,
}

impl<EK: KvEngine, T: Transport + Clone> HandlerBuilder<PeerFsm<EK>, StoreFsm>
    for RaftPollerBuilder<EK, T>
{
    type Handler = RaftPoller<EK, T>;

    fn build(&mut self) -> RaftPoller<EK, T> {
        RaftPoller {
            ctx: self.ctx.clone(),
            transport: self.transport.clone(),
            batch: self.ctx.engines.raft_log.batch(),
            early: Vec::new(),
            late: Vec::new(),
            raft_msgs: Vec::new(),
            round_entries: 0,
            round_regions: 0,
            round_needs_sync: false,
            round_has_snapshot: false,
            writer: self.writer.clone(),
            now: self.ctx.clock.now(),
            writes: ProposalBatch::new(
                self.ctx.cfg.proposal_batch_max_commands,
                self.ctx
                    .cfg
                    .proposal_batch_max_bytes
                    .min(self.ctx.cfg.raft_entry_max_size),
            ),
        }
    }
}

impl<EK: KvEngine, T: Transport> Drop for RaftPoller<EK, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.ctx.on_poller_panic("raft");
        }
    }
}

fn write_raft_log(
    raft_log: &raft_log::RaftLogEngine,
    batch: &mut RaftLogBatch,
    sync: bool,
) -> raft_log::Result<usize> {
    fail::fail_point!("raft_log_write_error", |_| Err(raft_log::Error::Engine {
        op: "write",
        region_id: None,
        detail: "injected by failpoint raft_log_write_error".into(),
    }));
    raft_log.write(batch, sync)
}

/// Whether a message from another store may reach raft-rs: `Err` for a message that should
/// never arrive, `Ok(false)` for one dropped by rule (a vote too early after start).
fn check_peer_message<EK: KvEngine>(
    peer: &Peer<EK>,
    m: &Message,
    now: Instant,
) -> Result<bool, &'static str> {
    use raft::eraftpb::MessageType::*;
    match m.msg_type {
        MsgAppend
        | MsgAppendResponse
        | MsgRequestVote
        | MsgRequestVoteResponse
        | MsgRequestPreVote
        | MsgRequestPreVoteResponse
        | MsgSnapshot
        | MsgHeartbeat
        | MsgHeartbeatResponse
        | MsgTimeoutNow => {}
        // Proposals, reads and transfers are made on the leader itself; the rest is local.
        _ => return Err("not a message peers exchange"),
    }
    if m.to != peer.peer_id() {
        return Err("addressed to another peer");
    }
    // (The sender's membership is checked on the RaftMessage: an uninitialized peer knows no
    // members, and may still have to vote, as a voter of the new configuration.)
    let vote = matches!(m.msg_type, MsgRequestVote | MsgRequestPreVote);
    // While a snapshot's data is going in: no second snapshot (its apply would race the
    // first's) and no forced campaign (raft-rs's applied index is below the log's start).
    if peer.is_applying_snapshot() && matches!(m.msg_type, MsgSnapshot | MsgTimeoutNow) {
        return Ok(false);
    }
    if m.msg_type == MsgSnapshot {
        check_snapshot_message(peer, m)?;
    }
    let transfer = m.context.as_ref() == raft::CAMPAIGN_TRANSFER;
    Ok(!(vote && !transfer && peer.ignores_votes(now)))
}
