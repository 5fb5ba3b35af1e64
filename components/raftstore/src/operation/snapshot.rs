//! Snapshots on the peer's side: asking for one to be generated, sending one with its files,
//! taking in a received one, telling raft-rs how a send ended, and whether a snapshot's data is
//! still going in.
//!
//! Applying a received snapshot takes four durable steps, in this order: (1) the region
//! marked Applying (KV, synced), (2) its raft log replaced (raft-engine, synced), both made
//! durable by the poller from the [`SnapshotSteps`] the peer returns; (3) the data ingested
//! and (4) the region Normal with its apply state (synced), on the ApplyFsm
//! (`StoreContext::finish_snapshot`). A crash between any two is resumed at start. Files live
//! in `snap/`; their GC is store-level periodic work (`fsm/store.rs`).

use engine::KvEngine;
use prost::Message as _;
use proto::metapb::Region;
use proto::raft_serverpb::RaftApplyState;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::Message;

use crate::fsm::{PeerFsm, RaftPoller};
use crate::raft::Peer;
use crate::router::{send_internal, ApplyTask, Callback, PeerMsg};
use crate::snap::{SnapKey, SnapshotFiles};
use crate::storage::{persist_snapshot_steps, SnapshotSteps};
use crate::transport::Transport;
use crate::{Error, Result};

/// A snapshot this peer is applying.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    pub region: Region,
    pub key: crate::snap::SnapKey,
    pub meta: proto::raft_serverpb::SnapshotMeta,
    pub apply_state: RaftApplyState,
    /// Steps 1-2: the poller makes them durable before anything else of the round.
    pub steps: SnapshotSteps,
}

impl<EK: KvEngine> Peer<EK> {
    /// Takes in the raft side of a received snapshot, in memory; steps 1-2 travel in the
    /// result for the poller to make durable.
    pub(crate) fn prepare_snapshot(
        &mut self,
        snap: &raft::eraftpb::Snapshot,
    ) -> Result<ReceivedSnapshot> {
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
        let (apply_state, steps) = self.raw.mut_store().prepare_snapshot(snap, region.clone());
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
            steps,
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
}

impl<EK: KvEngine, T: Transport> RaftPoller<EK, T> {
    /// raft-rs asked this peer's storage for a snapshot: the ApplyFsm takes it.
    pub(crate) fn maybe_gen_snapshot(&self, fsm: &mut PeerFsm<EK>) {
        if fsm.peer.storage_mut().take_gen_request() {
            send_internal(
                &self.ctx.routers.apply,
                fsm.peer.region_id(),
                ApplyTask::GenSnapshot,
                &self.ctx.logger,
            );
        }
    }

    /// Hands a MsgSnapshot and its files to the transport; its outcome goes back to raft-rs.
    pub(crate) fn send_snapshot(&mut self, msg: RaftMessage) {
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
            let _ = self.ctx.routers.raft.force_send(region_id, status);
            return;
        };
        let (term, index) = snap
            .metadata
            .as_ref()
            .map_or((0, 0), |md| (md.term, md.index));
        let files = SnapshotFiles {
            mgr: self.ctx.snaps.mgr.clone(),
            key: SnapKey {
                region_id,
                term,
                index,
            },
            meta: data.meta.unwrap_or_default(),
        };
        let report = SnapshotReport {
            router: self.ctx.routers.raft.clone(),
            region_id,
            to_peer_id,
            reported: false,
        };
        let slot = match self.ctx.snaps.mgr.try_start_send(files.key) {
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

    /// A snapshot whose range overlaps another region here is not taken: applying it would
    /// clear that region's data. (The other region must go first, by removal or merge.)
    pub(crate) fn check_snapshot_range(
        &self,
        peer: &Peer<EK>,
        m: &Message,
    ) -> std::result::Result<(), &'static str> {
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

    /// A ready took in a snapshot: make steps 1-2 durable, record its range and hand its
    /// data to the ApplyFsm, ahead of any committed entries of the same ready.
    pub(crate) fn on_snapshot_ready(&mut self, fsm: &PeerFsm<EK>, snap: ReceivedSnapshot) {
        let region_id = fsm.peer.region_id();
        if let Err(e) = persist_snapshot_steps(
            &self.ctx.engines.kv,
            &self.ctx.engines.raft_log,
            &snap.steps,
        ) {
            self.ctx
                .fatal("persisting a received snapshot's raft state", &e);
        }
        if let Err(e) = self.ctx.meta().insert(snap.region.clone()) {
            slog::warn!(fsm.peer.logger(), "snapshot region not recorded"; "error" => %e);
        }
        send_internal(
            &self.ctx.routers.apply,
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
}

/// A MsgSnapshot must describe this region with a file list; the transport delivered it only
/// after writing and verifying those files.
pub(crate) fn check_snapshot_message<EK: KvEngine>(
    peer: &Peer<EK>,
    m: &Message,
) -> std::result::Result<(), &'static str> {
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
pub(crate) struct SnapshotReport<EK: KvEngine> {
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

pub(crate) fn is_snapshot(msg: &RaftMessage) -> bool {
    msg.message
        .as_ref()
        .is_some_and(|m| m.msg_type == raft::eraftpb::MessageType::MsgSnapshot as i32)
}
