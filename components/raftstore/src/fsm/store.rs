use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use batch_system::Fsm;
use engine::{keys, KvEngine, WriteBatch, CF_RAFT};
use proto::metapb::Region;
use proto::raft_serverpb::{PeerState, RaftApplyState, RaftMessage, SnapshotData, SnapshotMeta};
use raft_log::RaftLogEngine;

use super::{ApplyFsm, PeerFsm};
use crate::raft::Peer;
use crate::router::{ApplyRouter, PeerMsg, RaftRouter};
use crate::snap::{SnapKey, SnapKind, SnapManager};
use crate::storage::{put_region_state, CacheBudget, PeerStorage};
use crate::{Config, Error, Result};

/// The store's control FSM. Its messages are handled by the raft poller with the
/// [`StoreContext`]; the FSM itself only marks the store's place in the batch system.
#[derive(Debug, Default)]
pub struct StoreFsm {
    pub(crate) ticks: u64,
}

impl Fsm for StoreFsm {
    type Message = crate::router::StoreMsg;
}

/// The regions hosted here. Their key ranges never overlap: a peer whose range overlaps an
/// existing one is refused. An uninitialized region (a peer created by a raft message, with
/// no data or members yet) has no range until its first snapshot.
#[derive(Debug, Default)]
pub struct StoreMeta {
    regions: HashMap<u64, Region>,
    /// Data end key (`keys::data_end_key`) → region id.
    ranges: BTreeMap<Vec<u8>, u64>,
    /// Vote requests for regions not here whose range a region here still covers: most likely
    /// a split this store has not applied yet. Replayed when the split creates the peer, so
    /// the new region does not wait an election timeout for its first leader.
    pending_votes: std::collections::VecDeque<RaftMessage>,
    /// Store id → peers here whose region has a peer there: the stores to send liveness
    /// heartbeats to.
    store_refs: HashMap<u64, usize>,
    /// Region → the store of its leader, as this store's peer last knew it, and the reverse:
    /// the regions to wake when a store is found down.
    leader_store: HashMap<u64, u64>,
    led_by: HashMap<u64, std::collections::BTreeSet<u64>>,
}

/// Vote requests kept for regions a split has not created here yet (oldest dropped first).
const PENDING_VOTES_CAPACITY: usize = 1024;

impl StoreMeta {
    pub fn region(&self, region_id: u64) -> Option<&Region> {
        self.regions.get(&region_id)
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    pub fn region_ids(&self) -> Vec<u64> {
        self.regions.keys().copied().collect()
    }

    /// The region here whose range overlaps `region`'s, other than itself.
    pub fn overlapping(&self, region: &Region) -> Option<&Region> {
        if region.peers.is_empty() {
            return None;
        }
        let start = keys::data_key(&region.start_key);
        let end = keys::data_end_key(&region.end_key);
        let (_, id) = self
            .ranges
            .range((Bound::Excluded(start), Bound::Unbounded))
            .next()?;
        let other = self.regions.get(id)?;
        (other.id != region.id && keys::data_key(&other.start_key) < end).then_some(other)
    }

    /// Records `region` (new, or a new epoch of one already here).
    pub fn insert(&mut self, region: Region) -> Result<()> {
        if let Some(other) = self.overlapping(&region) {
            return Err(Error::InvalidState {
                region_id: region.id,
                detail: format!(
                    "range [{:?}, {:?}) overlaps region {} [{:?}, {:?})",
                    region.start_key, region.end_key, other.id, other.start_key, other.end_key
                ),
            });
        }
        let leader = self.leader_store.get(&region.id).copied();
        self.remove(region.id);
        if let Some(store) = leader {
            self.set_leader_store(region.id, store);
        }
        if !region.peers.is_empty() {
            self.ranges
                .insert(keys::data_end_key(&region.end_key), region.id);
        }
        for p in &region.peers {
            *self.store_refs.entry(p.store_id).or_default() += 1;
        }
        self.regions.insert(region.id, region);
        Ok(())
    }

    /// The stores hosting a peer of some region here (this one included), in id order.
    pub fn peer_stores(&self) -> Vec<u64> {
        let mut stores: Vec<u64> = self.store_refs.keys().copied().collect();
        stores.sort_unstable();
        stores
    }

    /// Records that region `region_id`'s leader is on `store_id` (0: unknown).
    pub fn set_leader_store(&mut self, region_id: u64, store_id: u64) {
        if let Some(old) = self.leader_store.remove(&region_id) {
            if let Some(set) = self.led_by.get_mut(&old) {
                set.remove(&region_id);
                if set.is_empty() {
                    self.led_by.remove(&old);
                }
            }
        }
        if store_id != 0 {
            self.leader_store.insert(region_id, store_id);
            self.led_by.entry(store_id).or_default().insert(region_id);
        }
    }

    /// The regions here whose leader is on `store_id`.
    pub fn led_by(&self, store_id: u64) -> Vec<u64> {
        self.led_by
            .get(&store_id)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The regions led by store `here` with a member on `store_id`: a scan of the regions
    /// `here` leads, done once each time `store_id` answers again.
    pub fn led_with_member_on(&self, here: u64, store_id: u64) -> Vec<u64> {
        let Some(led) = self.led_by.get(&here) else {
            return Vec::new();
        };
        led.iter()
            .copied()
            .filter(|r| {
                self.regions
                    .get(r)
                    .is_some_and(|region| region.peers.iter().any(|p| p.store_id == store_id))
            })
            .collect()
    }

    pub fn stash_vote(&mut self, msg: RaftMessage) {
        if self.pending_votes.len() >= PENDING_VOTES_CAPACITY {
            self.pending_votes.pop_front();
        }
        self.pending_votes.push_back(msg);
    }

    /// The stashed vote requests for `region_id`.
    pub fn take_votes(&mut self, region_id: u64) -> Vec<RaftMessage> {
        let (taken, kept): (std::collections::VecDeque<_>, _) =
            std::mem::take(&mut self.pending_votes)
                .into_iter()
                .partition(|m| m.region_id == region_id);
        self.pending_votes = kept;
        taken.into()
    }

    pub fn remove(&mut self, region_id: u64) -> Option<Region> {
        self.set_leader_store(region_id, 0);
        let old = self.regions.remove(&region_id)?;
        for p in &old.peers {
            if let Some(n) = self.store_refs.get_mut(&p.store_id) {
                *n -= 1;
                if *n == 0 {
                    self.store_refs.remove(&p.store_id);
                }
            }
        }
        let end = keys::data_end_key(&old.end_key);
        if self.ranges.get(&end) == Some(&region_id) {
            self.ranges.remove(&end);
        }
        Some(old)
    }
}

/// Counters of the group commit, per store (the prometheus metrics are process-wide).
#[derive(Debug, Default)]
pub struct StoreStats {
    pub fsyncs: AtomicU64,
    pub entries_written: AtomicU64,
    pub regions_written: AtomicU64,
    pub apply_writes: AtomicU64,
    pub entries_applied: AtomicU64,
    /// Peers of this store that lead their region now.
    pub leaders: std::sync::atomic::AtomicI64,
}

impl StoreStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the pollers of one store share.
pub struct StoreContext<EK: KvEngine> {
    pub store_id: u64,
    pub cfg: Arc<Config>,
    pub logger: slog::Logger,
    /// Where every time the store decides by comes from.
    pub clock: util::ClockRef,
    pub engines: Engines<EK>,
    pub routers: Routers<EK>,
    pub snaps: Snapshots<EK>,
    /// The regions of this store by id and by range.
    pub meta: Mutex<StoreMeta>,
    pub stats: StoreStats,
    /// Whether (and why) a fatal error stopped the store.
    pub stop: StopState,
    /// The queues of the threads beside the pollers.
    pub workers: WorkerQueues<EK>,
    pub scheduler: Arc<dyn crate::SchedulerClient>,
    /// Automatic split checks are off (maintenance, benchmarks); explicit splits still run.
    pub split_checks_paused: std::sync::atomic::AtomicBool,
    /// Seeds each peer's election-timeout randomness (see [`crate::raft::ElectionRng`]).
    pub election_seed: u64,
    /// Which peers the tick thread ticks (awake ones; see `fsm/ticks.rs`).
    pub ticks: super::ticks::TickRegistry,
    /// Which other stores answer (the control FSM updates it; hibernating leaders read it).
    pub liveness: Mutex<super::liveness::StoreLiveness>,
    /// Regions whose leader's region heartbeat found the scheduler worker's queue full: the
    /// worker asks them to report again as room frees up. At most one entry per region.
    pub owed_reports: Mutex<std::collections::BTreeSet<u64>>,
    /// The store writer's queue, as far as barriers need it (see `fsm/writer.rs`).
    pub log_writer: super::LogWriter,
}

/// The store's two engines, and the memory budget of the entry caches over the second.
pub struct Engines<EK: KvEngine> {
    pub kv: EK,
    pub raft_log: RaftLogEngine,
    pub cache_budget: Arc<CacheBudget>,
}

/// The mailboxes of this store's peers: their raft FSMs and their apply FSMs.
pub struct Routers<EK: KvEngine> {
    pub raft: RaftRouter<EK>,
    pub apply: ApplyRouter<EK>,
}

/// Snapshot files: where they live, and how the engine builds and ingests them.
pub struct Snapshots<EK: KvEngine> {
    pub mgr: SnapManager,
    /// `SnapManager::build` and `apply` need `SstExt`; these are made where the engine type is
    /// known, so the FSMs stay generic over any `KvEngine`.
    pub build: SnapshotBuilder<EK>,
    pub ingest: SnapshotIngester,
}

pub type SnapshotBuilder<EK> = Box<
    dyn Fn(&<EK as KvEngine>::Snapshot, &Region, SnapKey) -> Result<SnapshotMeta> + Send + Sync,
>;
pub type SnapshotIngester =
    Box<dyn Fn(&Region, SnapKey, &SnapshotMeta) -> Result<()> + Send + Sync>;

/// Whether a fatal error stopped the store, and why: requests are refused from then on.
#[derive(Default)]
pub struct StopState {
    reason: Mutex<Option<String>>,
    /// Mirrors `reason` for the hot paths.
    flag: std::sync::atomic::AtomicBool,
}

impl StopState {
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<String> {
        util::lock(&self.reason).clone()
    }

    /// Records the store as stopped; returns false if it already was (the first reason
    /// stays).
    fn stop(&self, reason: String) -> bool {
        let mut current = util::lock(&self.reason);
        let first = current.is_none();
        if first {
            *current = Some(reason);
        }
        self.flag.store(true, Ordering::Release);
        first
    }
}

/// The queues of the threads beside the pollers; each is taken at shutdown so its thread ends.
pub struct WorkerQueues<EK: KvEngine> {
    /// The snap-generator pool's queue.
    pub gen: Mutex<Option<crossbeam::channel::Sender<GenTask<EK>>>>,
    /// The split checker's queue (bounded: `split-check-queue-capacity`).
    pub split: Mutex<Option<crossbeam::channel::Sender<crate::worker::SplitTask>>>,
    /// The scheduler worker's queue (bounded: `heartbeat-queue-capacity`; a full queue drops
    /// a heartbeat).
    pub heartbeat: Mutex<Option<crossbeam::channel::Sender<crate::worker::HeartbeatTask>>>,
}

impl<EK: KvEngine> WorkerQueues<EK> {
    /// Closes every queue: the threads end once they have drained them.
    pub fn close(&self) {
        util::lock(&self.gen).take();
        util::lock(&self.split).take();
        util::lock(&self.heartbeat).take();
    }
}

/// A snapshot to write as files, for the snap-generator pool.
pub struct GenTask<EK: KvEngine> {
    pub region: Region,
    pub key: SnapKey,
    pub snapshot: EK::Snapshot,
}

impl<EK: KvEngine> StoreContext<EK> {
    pub fn meta(&self) -> MutexGuard<'_, StoreMeta> {
        // A poisoned lock means a poller panicked mid-update; the meta itself stays usable
        // and the store is being stopped anyway.
        util::lock(&self.meta)
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    pub fn stopped_reason(&self) -> Option<String> {
        self.stop.reason()
    }

    /// Stops the store on an error it must not retry or ignore (a failed fsync or write):
    /// logs a fatal line, refuses further requests, and unwinds the calling poller.
    pub fn fatal(&self, what: &str, err: &dyn std::fmt::Display) -> ! {
        let reason = format!("{what}: {err}");
        slog::crit!(self.logger, "fatal error, stopping the store"; "store_id" => self.store_id,
            "error" => &reason);
        self.stop.stop(reason.clone());
        panic!("store {} stopped: {reason}", self.store_id);
    }

    /// Queues a heartbeat for the scheduler worker. Returns false if the queue was full (or
    /// the store is stopping): the task is dropped and counted.
    pub fn send_heartbeat_task(&self, task: crate::worker::HeartbeatTask) -> bool {
        let queued = util::lock(&self.workers.heartbeat)
            .as_ref()
            .is_some_and(|tx| tx.try_send(task).is_ok());
        if !queued {
            crate::metrics::METRICS.heartbeats_dropped.inc();
        }
        queued
    }

    /// Queues work for the split checker; a full queue drops a check (the next tick asks
    /// again) and fails an explicit split with ServerIsBusy.
    pub fn send_split_task(&self, task: crate::worker::SplitTask) {
        use crate::worker::SplitTask;
        let sent = util::lock(&self.workers.split)
            .as_ref()
            .map(|tx| tx.try_send(task).map_err(|e| Box::new(e.into_inner())));
        let refused = match sent {
            Some(Ok(())) => return,
            Some(Err(task)) => *task,
            None => return,
        };
        if let SplitTask::Split { region, cb, .. } = refused {
            cb.invoke(Err(Error::ServerIsBusy {
                region_id: region.id,
                reason: "the split checker's queue is full".into(),
            }));
        }
    }

    pub fn send_gen_task(&self, task: GenTask<EK>) {
        let region_id = task.region.id;
        let sent = util::lock(&self.workers.gen)
            .as_ref()
            .is_some_and(|tx| tx.send(task).is_ok());
        if !sent {
            slog::info!(self.logger, "snapshot generation refused: store stopping";
                "region_id" => region_id);
        }
    }

    /// Builds one generated snapshot and tells the region's peer (`None` on failure).
    pub fn run_gen_task(&self, task: GenTask<EK>) {
        let GenTask {
            region,
            key,
            snapshot,
        } = task;
        let built = (self.snaps.build)(&snapshot, &region, key).map(|meta| {
            let data = SnapshotData {
                region: Some(region.clone()),
                file_size: meta.cf_files.iter().map(|f| f.size).sum(),
                meta: Some(meta),
            };
            let mut snap = raft::eraftpb::Snapshot::default();
            let md = snap.mut_metadata();
            md.index = key.index;
            md.term = key.term;
            md.set_conf_state(crate::storage::conf_state_from_region(&region));
            snap.data = prost::Message::encode_to_vec(&data).into();
            Box::new(snap)
        });
        let msg = match built {
            Ok(snap) => {
                slog::info!(self.logger, "snapshot generated"; "region_id" => region.id,
                    "index" => key.index, "term" => key.term);
                PeerMsg::SnapshotGenerated(Some(snap))
            }
            Err(e) => {
                slog::warn!(self.logger, "snapshot generation failed"; "region_id" => region.id,
                    "error" => %e);
                PeerMsg::SnapshotGenerated(None)
            }
        };
        let _ = self.routers.raft.force_send(region.id, msg);
    }

    /// Steps 3-4 of a snapshot apply: the region's data replaced by the received files, then
    /// (synced) the region Normal with the snapshot's apply state; the files go last.
    pub fn finish_snapshot(
        &self,
        region: &Region,
        key: SnapKey,
        meta: &SnapshotMeta,
        apply_state: &RaftApplyState,
        left_behind: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let region_id = region.id;
        (self.snaps.ingest)(region, key, meta)?;
        fail::fail_point!("snapshot_after_ingest");
        let mut wb = self.engines.kv.write_batch();
        // What the region no longer holds (it missed a split) goes with the Normal state: a
        // crash before this write leaves it behind (resumed applies do not know it), never
        // loses data.
        let mut clear = || -> engine::Result<()> {
            for (start, end) in left_behind {
                for cf in engine::DATA_CFS {
                    wb.delete_range_cf(cf, start, end)?;
                }
            }
            Ok(())
        };
        clear()
            .and_then(|()| put_region_state(&mut wb, region, PeerState::Normal, None))
            .and_then(|()| wb.put_msg_cf(CF_RAFT, &keys::apply_state_key(region_id), apply_state))
            .and_then(|()| self.engines.kv.write(&mut wb, true))
            .map_err(|source| Error::Engine { region_id, source })?;
        fail::fail_point!("snapshot_after_normal_state");
        // This one and any older one received for the region are of no use now.
        self.delete_received_snapshots(region_id, Some(key));
        slog::info!(self.logger, "snapshot applied"; "region_id" => region_id,
            "index" => key.index);
        Ok(())
    }

    /// The received snapshots on disk, by region: listed once at start, not once per region
    /// (100,000 directory listings took a good part of a start).
    pub(crate) fn received_snapshots(&self) -> std::collections::HashMap<u64, Vec<SnapKey>> {
        let mut by_region: std::collections::HashMap<u64, Vec<SnapKey>> = Default::default();
        for (kind, key) in self.snaps.mgr.list() {
            if kind == SnapKind::Received {
                by_region.entry(key.region_id).or_default().push(key);
            }
        }
        by_region
    }

    /// Deletes the received snapshots of `region_id` (up to `upto`, if given).
    pub fn delete_received_snapshots(&self, region_id: u64, upto: Option<SnapKey>) {
        let keys = self
            .received_snapshots()
            .remove(&region_id)
            .unwrap_or_default();
        for key in keys {
            if upto.is_none_or(|u| (key.term, key.index) <= (u.term, u.index)) {
                self.snaps.mgr.delete(SnapKind::Received, key);
            }
        }
    }

    /// Called when a poller unwinds (a panic inside raft-rs, raft-engine's own fsync panic, a
    /// failpoint): the regions it held are gone, so the whole store stops, with a fatal line.
    pub fn on_poller_panic(&self, poller: &str) {
        let reason = format!("{poller} poller panicked");
        if self.stop.stop(reason.clone()) {
            slog::crit!(self.logger, "fatal error, stopping the store"; "store_id" => self.store_id,
                "error" => &reason);
        }
    }

    /// Creates the peer and apply FSMs of `region` from its persisted state (or the initial
    /// state of a new region) and registers them.
    pub fn create_peer(&self, region: Region, peer_state: PeerState) -> Result<()> {
        let region_id = region.id;
        let Some(me) = region.peers.iter().find(|p| p.store_id == self.store_id) else {
            return Err(Error::InvalidState {
                region_id,
                detail: format!("region has no peer on store {}", self.store_id),
            });
        };
        let peer_id = me.id;
        self.create_peer_as(region, peer_state, peer_id, false)
    }

    /// [`Self::create_peer`] for a given peer id: an uninitialized region lists no peers.
    /// `split` marks a peer born by a split (it takes votes at once).
    pub(crate) fn create_peer_as(
        &self,
        region: Region,
        peer_state: PeerState,
        peer_id: u64,
        split: bool,
    ) -> Result<()> {
        let region_id = region.id;
        // The raft state it loads may be an earlier peer's (a vote) still queued.
        self.log_writer.barrier(self)?;
        self.meta().insert(region.clone())?;
        let opened = PeerStorage::open(
            self.engines.kv.clone(),
            self.engines.raft_log.clone(),
            region.clone(),
            peer_state,
            self.engines.cache_budget.clone(),
        )
        .and_then(|storage| {
            let apply_state = *storage.apply_state();
            Peer::new(
                &self.cfg,
                self.store_id,
                peer_id,
                storage,
                self.clock.now(),
                &self.logger,
            )
            .map(|mut peer| {
                peer.seed_elections(self.election_seed);
                (peer, apply_state)
            })
        });
        let (mut peer, apply_state) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.meta().remove(region_id);
                return Err(e);
            }
        };
        // Unless it voted before (a restart that applies the split again): then it may have
        // acknowledged a leader whose lease still runs.
        let voted_before = self
            .engines
            .raft_log
            .raft_state(region_id)
            .ok()
            .flatten()
            .is_some();
        if split && !voted_before {
            peer.take_votes_now(self.clock.now());
        }
        let apply = ApplyFsm::new(region, apply_state, peer.logger().clone());
        self.routers.apply.register(region_id, Box::new(apply));
        self.routers
            .raft
            .register(region_id, Box::new(PeerFsm::new(peer)));
        self.ticks
            .set(region_id, crate::operation::hibernate::SleepState::Awake);
        Ok(())
    }

    /// Handles `StoreMsg::CreatePeer`: persists the new region's state, then creates its peer.
    pub fn create_new_region(&self, region: Region) -> Result<()> {
        let region_id = region.id;
        if self.meta().region(region_id).is_some() {
            return Err(Error::InvalidState {
                region_id,
                detail: "a peer of this region is already on this store".into(),
            });
        }
        if let Some(other) = self.meta().overlapping(&region) {
            return Err(Error::InvalidState {
                region_id,
                detail: format!("range overlaps region {}", other.id),
            });
        }
        write_region_state(&self.engines.kv, &region, PeerState::Normal)?;
        self.create_peer(region, PeerState::Normal)
    }
}

impl<EK: KvEngine> StoreContext<EK> {
    /// A raft message for a region with no peer here: creates the (uninitialized) peer it is
    /// addressed to, unless the message is stale (the region was removed from this store at a
    /// newer membership), its range is taken by a region here, or it cannot start a peer.
    /// Returns the message back if a peer now exists to take it.
    pub fn maybe_create_peer(&self, msg: RaftMessage) -> Option<RaftMessage> {
        use raft::eraftpb::MessageType::*;
        let region_id = msg.region_id;
        let to = msg.to_peer.unwrap_or_default();
        let msg_type = msg.message.as_ref().map(|m| m.msg_type);
        let drop = |why: &str| {
            slog::debug!(self.logger, "raft message for a region not here dropped";
                "region_id" => region_id, "to" => to.id, "msg_type" => ?msg_type, "reason" => why);
            None
        };
        if to.store_id != self.store_id || to.id == 0 {
            return drop("addressed to another store");
        }
        if msg.is_tombstone {
            return drop("tombstone for a peer that is not here");
        }
        let starts = [
            MsgAppend,
            MsgHeartbeat,
            MsgSnapshot,
            MsgRequestVote,
            MsgRequestPreVote,
        ];
        if !starts.iter().any(|t| msg_type == Some(*t as i32)) {
            return drop("not a message that starts a peer");
        }
        {
            let mut meta = self.meta();
            if meta.region(region_id).is_some() {
                return drop("the region's peer is being destroyed");
            }
            let probe = Region {
                id: region_id,
                start_key: msg.start_key.clone(),
                end_key: msg.end_key.clone(),
                peers: vec![to],
                ..Default::default()
            };
            if let Some(other) = meta.overlapping(&probe) {
                slog::debug!(self.logger, "not creating a peer whose range overlaps a region here";
                    "region_id" => region_id, "other_region_id" => other.id);
                let vote = [MsgRequestVote, MsgRequestPreVote]
                    .iter()
                    .any(|t| msg_type == Some(*t as i32));
                if vote {
                    meta.stash_vote(msg);
                }
                return None;
            }
        }
        let their_conf_ver = msg.region_epoch.unwrap_or_default().conf_ver;
        match PeerStorage::<EK>::load_region_state(&self.engines.kv, region_id) {
            Ok(Some(state)) if state.state == PeerState::Tombstone as i32 => {
                let region = state.region.unwrap_or_default();
                let removed_at = region.region_epoch.unwrap_or_default().conf_ver;
                if their_conf_ver <= removed_at {
                    return drop("stale: the region was removed from this store");
                }
                // A peer told by a member that it was removed is destroyed before it applies
                // the removal, so its tombstone has the older conf_ver: a message sent to it
                // before the removal would re-create it, empty, and a heartbeat's commit index
                // would then panic raft-rs. Peer ids are never reused: one destroyed here
                // never comes back.
                let destroyed = region
                    .peers
                    .iter()
                    .any(|p| p.store_id == self.store_id && p.id >= to.id);
                if destroyed {
                    return drop("stale: this peer (or a newer one) was destroyed here");
                }
            }
            Ok(Some(state)) => {
                // A split wrote it but its peer was never created (the parent went away mid
                // apply, say): create it from its state.
                let region = state.region.unwrap_or_default();
                if state.state != PeerState::Normal as i32 || region.peers.is_empty() {
                    return drop("the region's state is here but its peer is not");
                }
                let created = self.create_peer(region, PeerState::Normal);
                return match created {
                    Ok(()) => {
                        slog::info!(self.logger, "created a peer from its stored state";
                            "region_id" => region_id);
                        Some(msg)
                    }
                    Err(e) => {
                        slog::warn!(self.logger, "cannot create a peer from its stored state";
                            "region_id" => region_id, "error" => %e);
                        None
                    }
                };
            }
            Ok(None) => {}
            Err(e) => {
                slog::warn!(self.logger, "cannot read a region's state"; "region_id" => region_id,
                    "error" => %e);
                return None;
            }
        }
        let region = Region {
            id: region_id,
            ..Default::default()
        };
        match self.create_peer_as(region, PeerState::Normal, to.id, false) {
            Ok(()) => {
                slog::info!(self.logger, "created a peer from a raft message";
                    "region_id" => region_id, "peer_id" => to.id, "msg_type" => ?msg_type);
                Some(msg)
            }
            Err(e) => {
                slog::warn!(self.logger, "cannot create a peer from a raft message";
                    "region_id" => region_id, "peer_id" => to.id, "error" => %e);
                None
            }
        }
    }

    /// Removes a region's peer from this store for good: one synced KV write marks it
    /// tombstone and deletes its data and apply state, then its raft log is cleaned. A crash
    /// in between leaves a tombstone whose log [`Self::clean_tombstone_log`] removes at start.
    pub fn destroy_region(&self, region: &Region) -> Result<()> {
        let region_id = region.id;
        // Its raft-log writes still queued must not land after the clean.
        self.log_writer.barrier(self)?;
        if region.peers.is_empty() {
            // Uninitialized: no data, no tombstone, and its raft state (a vote it may have
            // cast) stays, so a peer re-created by a later message cannot vote twice.
            self.meta().remove(region_id);
            slog::info!(self.logger, "uninitialized peer removed"; "region_id" => region_id);
            return Ok(());
        }
        let engine_err = |source| Error::Engine { region_id, source };
        let mut wb = self.engines.kv.write_batch();
        put_region_state(&mut wb, region, PeerState::Tombstone, None).map_err(engine_err)?;
        wb.delete_cf(CF_RAFT, &keys::apply_state_key(region_id))
            .map_err(engine_err)?;
        let (start, end) = keys::region_data_bounds(region);
        for cf in engine::DATA_CFS {
            wb.delete_range_cf(cf, &start, &end).map_err(engine_err)?;
        }
        self.engines.kv.write(&mut wb, true).map_err(engine_err)?;
        self.clean_tombstone_log(region_id)?;
        self.meta().remove(region_id);
        slog::info!(self.logger, "region destroyed"; "region_id" => region_id);
        Ok(())
    }

    /// Deletes what the raft log still holds of a tombstone region.
    pub fn clean_tombstone_log(&self, region_id: u64) -> Result<()> {
        if self
            .engines
            .raft_log
            .raft_state(region_id)
            .ok()
            .flatten()
            .is_none()
            && self.engines.raft_log.last_index(region_id).is_none()
        {
            return Ok(());
        }
        let mut batch = self.engines.raft_log.batch();
        batch.clean_region(region_id);
        self.engines
            .raft_log
            .write(&mut batch, true)
            .map(|_| ())
            .map_err(|source| Error::RaftLog { region_id, source })
    }
}

/// Durably records `region` as hosted here in `state`.
pub fn write_region_state<EK: KvEngine>(kv: &EK, region: &Region, state: PeerState) -> Result<()> {
    let region_id = region.id;
    let mut wb = kv.write_batch();
    put_region_state(&mut wb, region, state, None)
        .and_then(|()| kv.write(&mut wb, true))
        .map_err(|source| Error::Engine { region_id, source })
}

/// Store-level periodic work, run on the store's control FSM ticks.
impl<EK: KvEngine> StoreContext<EK> {
    /// Deletes generated snapshots that a newer one of the same region replaced, and those of
    /// regions no longer here; received ones of regions not here once they are older than
    /// `snap-received-gc-grace-ms` (younger ones may be a transfer that is about to create its
    /// peer). Received ones of regions here are deleted by their apply.
    pub(crate) fn gc_snapshots(&self) {
        let listed = self.snaps.mgr.list();
        let mut newest = std::collections::HashMap::new();
        for (kind, key) in &listed {
            if *kind == SnapKind::Generated {
                let n = newest.entry(key.region_id).or_insert(*key);
                if (key.term, key.index) > (n.term, n.index) {
                    *n = *key;
                }
            }
        }
        let here: std::collections::HashSet<u64> = self.meta().region_ids().into_iter().collect();
        let mgr = &self.snaps.mgr;
        let grace = std::time::Duration::from_millis(self.cfg.snap_received_gc_grace_ms);
        let now = self.clock.now();
        let removed = mgr.gc(|kind, key| match kind {
            SnapKind::Generated => {
                here.contains(&key.region_id) && newest.get(&key.region_id) == Some(&key)
            }
            SnapKind::Received => here.contains(&key.region_id) || mgr.age(kind, key, now) < grace,
        });
        if removed > 0 {
            slog::info!(self.logger, "removed stale snapshots"; "count" => removed);
        }
    }

    pub(crate) fn store_heartbeat(&self) {
        let (capacity, available) = self.snaps.mgr.disk_space().unwrap_or((0, 0));
        let leaders = self.stats.leaders.load(Ordering::Relaxed);
        let hb = crate::StoreHeartbeat {
            store_id: self.store_id,
            capacity,
            available,
            used: capacity.saturating_sub(available),
            region_count: self.meta().len() as u64,
            leader_count: leaders.max(0) as u64,
        };
        // A dropped one is sent again at the next interval.
        let _ = self.send_heartbeat_task(crate::worker::HeartbeatTask::Store(Box::new(hb)));
    }

    /// Lets raft-engine delete log files no region needs any more.
    pub(crate) fn purge_raft_log(&self) {
        match self.engines.raft_log.purge_expired_files() {
            Ok(lagging) if !lagging.is_empty() => {
                slog::info!(self.logger, "raft-engine asks these regions to compact";
                    "regions" => ?lagging)
            }
            Ok(_) => {}
            Err(e) => slog::warn!(self.logger, "raft-engine purge failed"; "error" => %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            peers: vec![proto::metapb::Peer {
                id: id * 10,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn meta_refuses_overlapping_ranges() {
        let mut meta = StoreMeta::default();
        meta.insert(region(1, b"", b"b")).unwrap();
        meta.insert(region(2, b"b", b"d")).unwrap();
        meta.insert(region(3, b"f", b"")).unwrap();
        assert!(meta.insert(region(4, b"c", b"e")).is_err());
        assert!(meta.insert(region(4, b"a", b"")).is_err());
        assert!(meta.insert(region(4, b"x", b"")).is_err());
        meta.insert(region(4, b"d", b"f")).unwrap();
        // A new epoch of a region may keep its own range.
        meta.insert(region(2, b"b", b"d")).unwrap();
        assert_eq!(meta.len(), 4);
        assert_eq!(meta.remove(4).map(|r| r.id), Some(4));
        meta.insert(region(5, b"e", b"f")).unwrap();
        // An uninitialized region has no range: it overlaps nothing and removing it leaves the
        // range that ends at "" in place.
        let uninit = Region {
            id: 9,
            ..Default::default()
        };
        assert!(meta.overlapping(&uninit).is_none());
        meta.insert(uninit).unwrap();
        meta.remove(9);
        assert!(meta.insert(region(6, b"y", b"")).is_err());
    }

    #[test]
    fn the_leader_index_follows_leaders_epochs_and_removal() {
        let mut meta = StoreMeta::default();
        let with_peer_on = |mut r: Region, store_id: u64| {
            r.peers.push(proto::metapb::Peer {
                id: r.id * 10 + store_id,
                store_id,
                ..Default::default()
            });
            r
        };
        meta.insert(with_peer_on(region(1, b"", b"b"), 2)).unwrap();
        meta.insert(region(2, b"b", b"d")).unwrap();
        meta.insert(with_peer_on(region(3, b"d", b""), 3)).unwrap();
        for r in [1, 2, 3] {
            meta.set_leader_store(r, 1);
        }
        assert_eq!(meta.led_by(1), vec![1, 2, 3]);
        assert_eq!(meta.led_with_member_on(1, 2), vec![1]);
        assert_eq!(meta.led_with_member_on(1, 3), vec![3]);
        // The leader moves; a new epoch keeps the entry; removal drops it.
        meta.set_leader_store(3, 3);
        assert_eq!(meta.led_by(3), vec![3]);
        assert_eq!(meta.led_with_member_on(1, 3), Vec::<u64>::new());
        meta.insert(with_peer_on(region(1, b"", b"b"), 3)).unwrap();
        assert_eq!(meta.led_with_member_on(1, 3), vec![1]);
        meta.remove(2);
        assert_eq!(meta.led_by(1), vec![1]);
        assert_eq!(meta.peer_stores(), vec![1, 3]);
    }
}
