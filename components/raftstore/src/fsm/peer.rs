use std::sync::Arc;
use std::time::Instant;

use batch_system::{Fsm, HandlerBuilder, PollHandler};
use engine::KvEngine;
use prost::Message as _;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::Message;
use raft_log::RaftLogBatch;

use super::{StoreContext, StoreFsm};
use crate::metrics::METRICS;
use crate::raft::Peer;
use crate::router::{send_internal, ApplyTask, Callback, PeerMsg, StoreMsg};
use crate::snap::{SnapKey, SnapKind, SnapshotFiles};
use crate::transport::Transport;
use crate::worker::{HeartbeatTask, SplitTask};
use crate::Error;

/// One region's peer in the batch system.
pub struct PeerFsm<EK: KvEngine> {
    peer: Peer<EK>,
    stopped: bool,
}

impl<EK: KvEngine> PeerFsm<EK> {
    pub fn new(peer: Peer<EK>) -> PeerFsm<EK> {
        PeerFsm {
            peer,
            stopped: false,
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
    ctx: Arc<StoreContext<EK>>,
    transport: T,
    batch: RaftLogBatch,
    /// Messages that may leave before the round's fsync (a leader's appends).
    early: Vec<RaftMessage>,
    late: Vec<RaftMessage>,
    raft_msgs: Vec<Message>,
    round_entries: usize,
    round_regions: usize,
    round_needs_sync: bool,
    now: Instant,
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

    /// raft-rs asked this peer's storage for a snapshot: the ApplyFsm takes it.
    fn maybe_gen_snapshot(&self, fsm: &mut PeerFsm<EK>) {
        if fsm.peer.storage_mut().take_gen_request() {
            send_internal(
                &self.ctx.apply_router,
                fsm.peer.region_id(),
                ApplyTask::GenSnapshot,
                &self.ctx.logger,
            );
        }
    }

    /// Hands a MsgSnapshot and its files to the transport; its outcome goes back to raft-rs.
    fn send_snapshot(&mut self, msg: RaftMessage) {
        let region_id = msg.region_id;
        let to_peer_id = msg.to_peer.map_or(0, |p| p.id);
        let snap = msg.message.as_ref().and_then(|m| m.snapshot.as_ref());
        let data = snap
            .map(|s| proto::raft_serverpb::SnapshotData::decode(s.data.as_ref()))
            .transpose();
        let (Some(snap), Ok(Some(data))) = (snap, data) else {
            slog::warn!(self.ctx.logger, "dropping a MsgSnapshot without snapshot data";
                "region_id" => region_id);
            let status = PeerMsg::SnapshotStatus {
                to_peer_id,
                ok: false,
                busy: false,
            };
            let _ = self.ctx.router.force_send(region_id, status);
            return;
        };
        let (term, index) = snap
            .metadata
            .as_ref()
            .map_or((0, 0), |md| (md.term, md.index));
        let files = SnapshotFiles {
            mgr: self.ctx.snap_mgr.clone(),
            key: SnapKey {
                region_id,
                term,
                index,
            },
            meta: data.meta.unwrap_or_default(),
        };
        let report = SnapshotReport {
            router: self.ctx.router.clone(),
            region_id,
            to_peer_id,
            reported: false,
        };
        let slot = match self.ctx.snap_mgr.try_start_send(files.key) {
            Ok(slot) => slot,
            Err(e) => {
                slog::info!(self.ctx.logger, "snapshot send deferred"; "region_id" => region_id,
                    "to" => to_peer_id, "reason" => %e);
                report.report(false, true);
                return;
            }
        };
        let logger = self.ctx.logger.clone();
        let done = Callback::new(move |r: crate::Result<()>| {
            drop(slot);
            if let Err(e) = &r {
                slog::warn!(logger, "snapshot not delivered"; "region_id" => region_id,
                    "to" => to_peer_id, "error" => %e);
            }
            let busy = matches!(r, Err(Error::ServerIsBusy { .. }));
            report.report(r.is_ok(), busy);
        });
        self.transport.send_snapshot(msg, files, done);
    }

    /// Deletes generated snapshots that a newer one of the same region replaced, and those of
    /// regions no longer here; received ones of regions not here once they are older than
    /// `snap-received-gc-grace-ms` (younger ones may be a transfer that is about to create its
    /// peer). Received ones of regions here are deleted by their apply.
    fn gc_snapshots(&self) {
        let listed = self.ctx.snap_mgr.list();
        let mut newest = std::collections::HashMap::new();
        for (kind, key) in &listed {
            if *kind == SnapKind::Generated {
                let n = newest.entry(key.region_id).or_insert(*key);
                if (key.term, key.index) > (n.term, n.index) {
                    *n = *key;
                }
            }
        }
        let here: std::collections::HashSet<u64> =
            self.ctx.meta().region_ids().into_iter().collect();
        let mgr = &self.ctx.snap_mgr;
        let grace = std::time::Duration::from_millis(self.ctx.cfg.snap_received_gc_grace_ms);
        let removed = mgr.gc(|kind, key| match kind {
            SnapKind::Generated => {
                here.contains(&key.region_id) && newest.get(&key.region_id) == Some(&key)
            }
            SnapKind::Received => {
                here.contains(&key.region_id) || mgr.age(kind, key).is_some_and(|age| age < grace)
            }
        });
        if removed > 0 {
            slog::info!(self.ctx.logger, "removed stale snapshots"; "count" => removed);
        }
    }

    fn store_heartbeat(&self) {
        let (capacity, available) = disk_space(self.ctx.snap_mgr.dir()).unwrap_or((0, 0));
        let leaders = self
            .ctx
            .stats
            .leaders
            .load(std::sync::atomic::Ordering::Relaxed);
        let hb = crate::StoreHeartbeat {
            store_id: self.ctx.store_id,
            capacity,
            available,
            used: capacity.saturating_sub(available),
            region_count: self.ctx.meta().len() as u64,
            leader_count: leaders.max(0) as u64,
        };
        self.ctx.send_heartbeat_task(HeartbeatTask::Store(hb));
    }

    /// Lets raft-engine delete log files no region needs any more.
    fn purge_raft_log(&self) {
        match self.ctx.raft_log.purge_expired_files() {
            Ok(lagging) if !lagging.is_empty() => {
                slog::info!(self.ctx.logger, "raft-engine asks these regions to compact";
                    "regions" => ?lagging)
            }
            Ok(_) => {}
            Err(e) => slog::warn!(self.ctx.logger, "raft-engine purge failed"; "error" => %e),
        }
    }

    /// Stops the peer: nothing more is proposed, persisted or sent for it, and the ApplyFsm,
    /// after the entries already handed to it, deletes the region from this store.
    fn destroy(&mut self, fsm: &mut PeerFsm<EK>, cb: crate::router::Callback<()>) {
        slog::info!(fsm.peer.logger(), "destroying peer");
        fsm.stopped = true;
        if fsm.peer.counted_as_leader() {
            self.ctx
                .stats
                .leaders
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (region_id, store_id) = (fsm.peer.region_id(), fsm.peer.store_id());
        fsm.peer.fail_all(|| Error::StoreStopped {
            store_id,
            reason: format!("region {region_id}'s peer is being removed from this store"),
        });
        send_internal(
            &self.ctx.apply_router,
            region_id,
            ApplyTask::Destroy { cb },
            &self.ctx.logger,
        );
    }

    /// Steps a message from another store, after checking it is one peers exchange and is
    /// between members of the region: bytes from the network are untrusted, and raft-rs panics
    /// on some malformed local-only messages (an empty MsgPropose, say). Messages that show
    /// this peer was removed destroy it; a removed peer that still talks gets a tombstone back.
    fn on_raft_message(&mut self, fsm: &mut PeerFsm<EK>, msg: RaftMessage) {
        let to = msg.to_peer.unwrap_or_default();
        let from = msg.from_peer.unwrap_or_default();
        let their_conf_ver = msg.region_epoch.unwrap_or_default().conf_ver;
        let our_conf_ver = fsm.peer.region().region_epoch.unwrap_or_default().conf_ver;
        if to.id != fsm.peer.peer_id() {
            // Peer ids only grow: a newer id for this store means this peer was removed and
            // the store added again.
            if to.id > fsm.peer.peer_id() && their_conf_ver > our_conf_ver {
                slog::info!(fsm.peer.logger(), "a newer peer of the region is on this store";
                    "new_peer_id" => to.id);
                self.destroy(fsm, Callback::new(|_| {}));
            }
            return;
        }
        if msg.is_tombstone {
            if !fsm.peer.is_initialized() || their_conf_ver > our_conf_ver {
                slog::info!(fsm.peer.logger(), "removed from the region, says a member";
                    "from" => from.id, "conf_ver" => their_conf_ver);
                self.destroy(fsm, Callback::new(|_| {}));
            }
            return;
        }
        let member = fsm.peer.region().peers.iter().any(|p| p.id == from.id);
        if fsm.peer.is_initialized() && !member && their_conf_ver <= our_conf_ver {
            // Removed (older membership), or unknown at the same membership: not a peer.
            if their_conf_ver < our_conf_ver {
                self.send_tombstone(&fsm.peer, from);
            }
            slog::debug!(fsm.peer.logger(), "dropping a message from a non-member";
                "from" => from.id, "conf_ver" => their_conf_ver);
            return;
        }
        if member {
            fsm.peer.heard_from(from.id, self.now);
        } else {
            // A newer membership than this peer has applied (or this peer knows none yet):
            // the sender may be the leader this peer must catch up from.
            fsm.peer.remember_peer(from);
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
        match check_peer_message(&fsm.peer, &m).and_then(|ok| {
            if ok && m.msg_type == raft::eraftpb::MessageType::MsgSnapshot {
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
        if let Err(e) = fsm.peer.step(m) {
            slog::debug!(fsm.peer.logger(), "raft rejected a message"; "error" => %e);
        }
    }
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// Tells a peer that is no longer a member (its messages carry an older membership) that
    /// it was removed, so it destroys itself: a removed peer that missed its removal entry
    /// would otherwise keep campaigning.
    fn send_tombstone(&mut self, peer: &Peer<EK>, to: proto::metapb::Peer) {
        if to.id == 0 || to.store_id == 0 {
            return;
        }
        let region = peer.region();
        slog::info!(peer.logger(), "telling a removed peer it is gone"; "to" => to.id,
            "store_id" => to.store_id);
        self.transport.send(RaftMessage {
            region_id: region.id,
            from_peer: Some(peer.meta()),
            to_peer: Some(to),
            message: None,
            region_epoch: region.region_epoch,
            is_tombstone: true,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        });
    }

    /// Sends every other member an empty message: a member that no longer counts this peer
    /// answers with a tombstone (see `on_raft_message`), one that does ignores it.
    fn probe_members(&mut self, peer: &Peer<EK>) {
        let region = peer.region();
        slog::info!(
            peer.logger(),
            "no leader for a long while; asking the members"
        );
        for to in region.peers.iter().filter(|p| p.id != peer.peer_id()) {
            self.transport.send(RaftMessage {
                region_id: region.id,
                from_peer: Some(peer.meta()),
                to_peer: Some(*to),
                message: None,
                region_epoch: region.region_epoch,
                is_tombstone: false,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
            });
        }
    }

    /// A snapshot whose range overlaps another region here is not taken: applying it would
    /// clear that region's data. (The other region must go first, by removal or merge.)
    fn check_snapshot_range(&self, peer: &Peer<EK>, m: &Message) -> Result<(), &'static str> {
        let data = proto::raft_serverpb::SnapshotData::decode(m.get_snapshot().get_data())
            .map_err(|_| "snapshot data does not decode")?;
        let region = data.region.unwrap_or_default();
        if let Some(other) = self.ctx.meta().overlapping(&region) {
            slog::warn!(peer.logger(), "snapshot overlaps another region here";
                "other_region_id" => other.id);
            return Err("snapshot range overlaps another region on this store");
        }
        Ok(())
    }
}

impl<EK: KvEngine, T: Transport> PollHandler<PeerFsm<EK>, StoreFsm> for RaftPoller<EK, T> {
    fn begin(&mut self, _batch_size: usize) {
        self.now = Instant::now();
        self.round_entries = 0;
        self.round_regions = 0;
        self.round_needs_sync = false;
    }

    fn handle_control(&mut self, store: &mut StoreFsm, msgs: &mut Vec<StoreMsg>) {
        for msg in msgs.drain(..) {
            match msg {
                StoreMsg::Tick => {
                    store.ticks += 1;
                    METRICS.regions.set(self.ctx.meta().len() as i64);
                    let cfg = &self.ctx.cfg;
                    if store.ticks % cfg.ticks_of(cfg.raft_engine_purge_interval_ms) == 0 {
                        self.purge_raft_log();
                        self.gc_snapshots();
                    }
                    if store.ticks % cfg.ticks_of(cfg.store_heartbeat_interval_ms) == 0 {
                        self.store_heartbeat();
                    }
                }
                StoreMsg::RaftMessage(m) => {
                    if let Some(m) = self.ctx.maybe_create_peer(*m) {
                        let region_id = m.region_id;
                        let msg = PeerMsg::RaftMessage(Box::new(m));
                        if let Err(e) = self.ctx.router.force_send(region_id, msg) {
                            slog::info!(self.ctx.logger, "new peer did not take its message";
                                "region_id" => region_id, "error" => %e);
                        }
                    }
                }
                StoreMsg::DestroyPeer { region_id, cb } => {
                    let msg = PeerMsg::Destroy { cb };
                    if let Err(e) = self.ctx.router.force_send(region_id, msg) {
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
            return;
        }
        for msg in msgs.drain(..) {
            match msg {
                PeerMsg::RaftMessage(m) => {
                    self.on_raft_message(fsm, *m);
                    if fsm.stopped {
                        break;
                    }
                }
                PeerMsg::Command { request, cb } => fsm.peer.propose_write(request, cb, self.now),
                PeerMsg::Read { request, cb } => fsm.peer.read(&request, cb, self.now),
                PeerMsg::Tick => {
                    fsm.peer.tick(self.now);
                    if fsm.peer.take_stale_probe_due() {
                        self.probe_members(&fsm.peer);
                    }
                    let paused = self
                        .ctx
                        .split_checks_paused
                        .load(std::sync::atomic::Ordering::Relaxed);
                    if fsm.peer.take_split_check_due() && !paused {
                        self.ctx.send_split_task(SplitTask::Check {
                            region: fsm.peer.region().clone(),
                            leader: fsm.peer.meta(),
                        });
                    }
                }
                PeerMsg::AskSplit {
                    region_epoch,
                    split_keys,
                    cb,
                } => match fsm.peer.check_split_ask(region_epoch) {
                    Ok(()) => self.ctx.send_split_task(SplitTask::Split {
                        region: fsm.peer.region().clone(),
                        leader: fsm.peer.meta(),
                        split_keys,
                        cb,
                    }),
                    Err(e) => cb.invoke(Err(e)),
                },
                PeerMsg::ApplyRes(res) => {
                    let before =
                        (!res.conf_changes.is_empty()).then(|| fsm.peer.region().peers.clone());
                    let split_parent = (!res.new_regions.is_empty()).then(|| res.region.clone());
                    let mut outcome = fsm.peer.on_apply_res(res);
                    if outcome.region_changed || !outcome.new_regions.is_empty() {
                        fsm.peer.schedule_heartbeat();
                    }
                    if let (Some(before), true) = (before, fsm.peer.is_leader()) {
                        // Removed peers may never hear of their removal otherwise (a learner
                        // does not campaign).
                        let removed: Vec<_> = before
                            .into_iter()
                            .filter(|p| !fsm.peer.region().peers.iter().any(|q| q.id == p.id))
                            .collect();
                        for peer in removed {
                            self.send_tombstone(&fsm.peer, peer);
                        }
                    }
                    if outcome.region_changed && fsm.peer.is_initialized() {
                        let region = fsm.peer.region().clone();
                        if let Err(e) = self.ctx.meta().insert(region) {
                            slog::error!(fsm.peer.logger(), "store meta refused the region";
                                "error" => %e);
                        }
                    }
                    let new_regions = std::mem::take(&mut outcome.new_regions);
                    if let Some(parent) = split_parent {
                        // The parent's narrowed range, even if the peer ignored the result (a
                        // snapshot in flight): the new regions' ranges must be free.
                        if let Err(e) = self.ctx.meta().insert(parent.clone()) {
                            slog::error!(fsm.peer.logger(), "store meta refused the split parent";
                                "error" => %e);
                        }
                        slog::info!(fsm.peer.logger(), "region split";
                            "region" => ?parent, "new_regions" => new_regions.len());
                        self.ctx
                            .create_split_peers(&parent, new_regions, fsm.peer.is_leader());
                    }
                    if outcome.removed {
                        slog::info!(
                            fsm.peer.logger(),
                            "removed from the region by a membership change"
                        );
                        self.destroy(fsm, Callback::new(|_| {}));
                        break;
                    }
                    if let Some(index) = outcome.compacted_to {
                        // Losing this (a crash before the round's write) only leaves entries
                        // that the next compaction or raft-engine's purge removes.
                        self.batch.compact_to(fsm.peer.region_id(), index + 1);
                        METRICS.log_compactions.inc();
                    }
                }
                PeerMsg::Wake => {}
                PeerMsg::SnapshotGenerated(snapshot) => fsm
                    .peer
                    .storage_mut()
                    .on_snapshot_generated(snapshot.map(|s| *s)),
                PeerMsg::SnapshotStatus {
                    to_peer_id,
                    ok,
                    busy,
                } => fsm.peer.report_snapshot(to_peer_id, ok, busy),
                PeerMsg::QueryStatus(cb) => cb.invoke(Ok(fsm.peer.status(self.now))),
                PeerMsg::Destroy { cb } => {
                    self.destroy(fsm, cb);
                    // Whatever came after it is dropped with the FSM (callers see StoreStopped).
                    break;
                }
                PeerMsg::Campaign if fsm.peer.is_applying_snapshot() => {}
                PeerMsg::Campaign => {
                    if let Err(e) = fsm.peer.campaign() {
                        slog::warn!(fsm.peer.logger(), "campaign failed"; "error" => %e);
                    }
                }
            }
        }
        if fsm.stopped {
            return;
        }
        self.maybe_gen_snapshot(fsm);
        if let Some(hb) = fsm.peer.take_heartbeat() {
            self.ctx
                .send_heartbeat_task(HeartbeatTask::Region(Box::new(hb)));
        }
        if !fsm.peer.has_ready() {
            return;
        }
        let ready = match fsm
            .peer
            .handle_ready(&mut self.batch, &mut self.raft_msgs, self.now)
        {
            Ok(ready) => ready,
            Err(e) => self.ctx.fatal("handling a raft ready", &e),
        };
        Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut self.early);
        if let Some(snap) = ready.snapshot {
            let region_id = fsm.peer.region_id();
            if let Err(e) = self.ctx.meta().insert(snap.region.clone()) {
                slog::warn!(fsm.peer.logger(), "snapshot region not recorded"; "error" => %e);
            }
            send_internal(
                &self.ctx.apply_router,
                region_id,
                ApplyTask::ApplySnapshot {
                    region: Box::new(snap.region),
                    key: snap.key,
                    meta: snap.meta,
                    apply_state: snap.apply_state,
                },
                &self.ctx.logger,
            );
        }
        self.maybe_gen_snapshot(fsm);
        if let Some(leader) = ready.leadership {
            let delta = if leader { 1 } else { -1 };
            self.ctx
                .stats
                .leaders
                .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(hb) = fsm.peer.take_heartbeat() {
            self.ctx
                .send_heartbeat_task(HeartbeatTask::Region(Box::new(hb)));
        }
        self.round_needs_sync |= ready.needs_sync;
        if ready.entries_written > 0 {
            self.round_entries += ready.entries_written;
            self.round_regions += 1;
        }
        if let Some(committed) = ready.committed {
            let region_id = committed.region_id;
            send_internal(
                &self.ctx.apply_router,
                region_id,
                ApplyTask::Apply(committed),
                &self.ctx.logger,
            );
        }
    }

    fn end(&mut self, normals: &mut [Box<PeerFsm<EK>>]) {
        METRICS.ready_rounds.inc();
        if self.ctx.is_stopped() {
            self.batch = self.ctx.raft_log.batch();
            self.early.clear();
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
        if !self.batch.is_empty() {
            fail::fail_point!("raft_before_log_write");
            let sync = self.round_needs_sync;
            if let Err(e) = write_raft_log(&self.ctx.raft_log, &mut self.batch, sync) {
                self.ctx.fatal("writing the raft log", &e);
            }
            fail::fail_point!("raft_after_log_write");
        }
        if self.round_needs_sync {
            METRICS.log_fsyncs.inc();
            METRICS.entries_per_fsync.observe(self.round_entries as f64);
            METRICS.regions_per_fsync.observe(self.round_regions as f64);
            let stats = &self.ctx.stats;
            use std::sync::atomic::Ordering::Relaxed;
            stats.fsyncs.fetch_add(1, Relaxed);
            stats
                .entries_written
                .fetch_add(self.round_entries as u64, Relaxed);
            stats
                .regions_written
                .fetch_add(self.round_regions as u64, Relaxed);
        }
        for fsm in normals.iter_mut() {
            fsm.peer.on_round_persisted(&mut self.raft_msgs);
            Self::wrap(&fsm.peer, &mut self.raft_msgs, &mut self.late);
            if fsm.peer.has_ready() {
                // Persistence may have produced more work (commits, messages): come back next
                // round. A full mailbox already guarantees that.
                let _ = self.ctx.router.send(fsm.peer.region_id(), PeerMsg::Wake);
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

pub struct RaftPollerBuilder<EK: KvEngine, T: Transport + Clone> {
    pub(crate) ctx: Arc<StoreContext<EK>>,
    pub(crate) transport: T,
}

impl<EK: KvEngine, T: Transport + Clone> HandlerBuilder<PeerFsm<EK>, StoreFsm>
    for RaftPollerBuilder<EK, T>
{
    type Handler = RaftPoller<EK, T>;

    fn build(&mut self) -> RaftPoller<EK, T> {
        RaftPoller {
            ctx: self.ctx.clone(),
            transport: self.transport.clone(),
            batch: self.ctx.raft_log.batch(),
            early: Vec::new(),
            late: Vec::new(),
            raft_msgs: Vec::new(),
            round_entries: 0,
            round_regions: 0,
            round_needs_sync: false,
            now: Instant::now(),
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
fn check_peer_message<EK: KvEngine>(peer: &Peer<EK>, m: &Message) -> Result<bool, &'static str> {
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
    Ok(!(vote && !transfer && peer.ignores_votes(Instant::now())))
}

/// A MsgSnapshot must describe this region with a file list; the transport delivered it only
/// after writing and verifying those files.
fn check_snapshot_message<EK: KvEngine>(peer: &Peer<EK>, m: &Message) -> Result<(), &'static str> {
    let data = proto::raft_serverpb::SnapshotData::decode(m.get_snapshot().get_data())
        .map_err(|_| "snapshot data does not decode")?;
    if data.region.as_ref().map(|r| r.id) != Some(peer.region_id()) {
        return Err("snapshot of another region");
    }
    if data.meta.is_none() {
        return Err("snapshot without a file list");
    }
    Ok(())
}

/// Tells raft-rs how a snapshot send ended, exactly once: if the transport drops the callback
/// unanswered, the drop reports a failure (raft-rs would otherwise wait for it forever).
struct SnapshotReport<EK: KvEngine> {
    router: crate::router::RaftRouter<EK>,
    region_id: u64,
    to_peer_id: u64,
    reported: bool,
}

impl<EK: KvEngine> SnapshotReport<EK> {
    fn report(mut self, ok: bool, busy: bool) {
        self.send(ok, busy);
    }

    fn send(&mut self, ok: bool, busy: bool) {
        self.reported = true;
        let status = PeerMsg::SnapshotStatus {
            to_peer_id: self.to_peer_id,
            ok,
            busy,
        };
        let _ = self.router.force_send(self.region_id, status);
    }
}

impl<EK: KvEngine> Drop for SnapshotReport<EK> {
    fn drop(&mut self) {
        if !self.reported {
            self.send(false, false);
        }
    }
}

/// Total and free bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a properly sized out-parameter.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((stat.f_blocks as u64 * block, stat.f_bavail as u64 * block))
}

fn is_snapshot(msg: &RaftMessage) -> bool {
    msg.message
        .as_ref()
        .is_some_and(|m| m.msg_type == raft::eraftpb::MessageType::MsgSnapshot as i32)
}
