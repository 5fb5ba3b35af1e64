use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use batch_system::{Fsm, HandlerBuilder, PollHandler};
use engine::{KvEngine, WriteBatch};
use proto::metapb::Region;
use proto::raft_serverpb::RaftApplyState;

use super::{GenTask, StoreContext};
use crate::metrics::METRICS;
use crate::operation::apply::{apply_entries, Applied};
use crate::router::{send_internal, ApplyRes, ApplyTask, CommittedEntries, PeerMsg, WriteCallback};
use crate::snap::SnapKey;
use crate::{Error, Result};

/// Applies one region's committed entries. It owns the region's apply state; the peer learns
/// it through `ApplyRes` after each write.
pub struct ApplyFsm<EK: KvEngine> {
    region: Region,
    apply_state: RaftApplyState,
    applied_term: u64,
    /// Membership changes applied since the last `ApplyRes`.
    conf_changes: Vec<raft::eraftpb::ConfChangeV2>,
    /// Regions split off since the last `ApplyRes`.
    new_regions: Vec<Region>,
    stopped: bool,
    logger: slog::Logger,
    _engine: std::marker::PhantomData<EK>,
}

impl<EK: KvEngine> ApplyFsm<EK> {
    pub fn new(region: Region, apply_state: RaftApplyState, logger: slog::Logger) -> ApplyFsm<EK> {
        ApplyFsm {
            region,
            applied_term: apply_state.commit_term,
            apply_state,
            conf_changes: Vec::new(),
            new_regions: Vec::new(),
            stopped: false,
            logger,
            _engine: std::marker::PhantomData,
        }
    }

    /// Puts the entries' writes and the new apply state into `wb`, and pairs each proposal
    /// with its command's outcome (by index and slot): applied or refused, superseded when
    /// another term's entry holds its index, or undetermined when a snapshot covered it.
    fn apply(
        &mut self,
        kv: &EK,
        committed: CommittedEntries,
        wb: &mut EK::WriteBatch,
        applied: &mut Vec<Applied>,
        callbacks: &mut Vec<(WriteCallback, Result<()>, Instant)>,
    ) -> Result<bool> {
        let first = committed.entries.first().map_or(0, |e| e.index);
        if first > 0 && first <= self.apply_state.applied_index {
            // Entries redelivered after a restart whose apply state was already written.
            return Err(Error::InvalidState {
                region_id: self.region.id,
                detail: format!(
                    "entry {first} handed to apply, but applied index is already {}",
                    self.apply_state.applied_index
                ),
            });
        }
        applied.clear();
        let output = apply_entries::<EK>(
            kv,
            &mut self.region,
            &mut self.apply_state,
            &committed.entries,
            wb,
            applied,
        )?;
        self.conf_changes.extend(output.conf_changes);
        self.new_regions.extend(output.new_regions);
        if let Some(last) = committed.entries.last() {
            self.applied_term = last.term;
        }
        // Outcomes by index and slot (entries are in index order, an entry's commands in slot
        // order); a proposal takes its command's outcome only if the entry is its own (same
        // term).
        let mut outcomes: Vec<(u64, u32, u64, Option<Result<()>>)> = applied
            .drain(..)
            .map(|a| (a.index, a.slot, a.term, Some(a.result)))
            .collect();
        for p in committed.proposals {
            let first = outcomes.partition_point(|(index, ..)| *index < p.index);
            let entry = outcomes
                .get(first)
                .filter(|(index, ..)| *index == p.index)
                .map(|(_, _, term, _)| *term);
            let result = match entry {
                Some(term) if term == p.term => {
                    let own = outcomes[first..]
                        .iter_mut()
                        .take_while(|(index, ..)| *index == p.index)
                        .find(|(_, slot, ..)| *slot == p.slot)
                        .and_then(|(.., outcome)| outcome.take());
                    own.unwrap_or_else(|| {
                        Err(Error::InvalidState {
                            region_id: self.region.id,
                            detail: format!(
                                "entry {} term {term} has no command {} left for its proposal \
                                 (claimed twice, or lost to one that did not decode)",
                                p.index, p.slot
                            ),
                        })
                    })
                }
                Some(term) => Err(Error::StaleCommand {
                    region_id: self.region.id,
                    index: p.index,
                    term: p.term,
                    detail: format!("index {} was committed with term {term}", p.index),
                }),
                // The index was covered by a snapshot this peer applied: the entry there may be
                // this very proposal, committed by the next leader. Its fate is unknown (the
                // wait is filled in when the callback runs).
                None => Err(Error::Undetermined {
                    region_id: self.region.id,
                    index: p.index,
                    term: p.term,
                    waited_ms: 0,
                }),
            };
            callbacks.push((p.cb, result, p.propose_time));
        }
        Ok(output.sync)
    }
}

impl<EK: KvEngine> Fsm for ApplyFsm<EK> {
    type Message = ApplyTask;

    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

/// The apply pool's control FSM: nothing to control yet.
#[derive(Debug, Default)]
pub struct ApplyControlFsm;

impl Fsm for ApplyControlFsm {
    type Message = ();
}

/// Runs apply rounds: the committed entries of every region in the round go into one KV write
/// batch with each region's apply state; callbacks run after the write.
pub struct ApplyPoller<EK: KvEngine> {
    ctx: Arc<StoreContext<EK>>,
    wb: EK::WriteBatch,
    applied: Vec<Applied>,
    callbacks: Vec<(WriteCallback, Result<()>, Instant)>,
    results: Vec<(u64, ApplyRes)>,
    destroys: Vec<(Region, WriteCallback)>,
    /// The round applied a log compaction (its write is synced before the log goes) or a
    /// split that created a region (synced before the new peers write raft state).
    sync: bool,
    round_entries: usize,
}

impl<EK: KvEngine> ApplyPoller<EK> {
    /// Writes what the round has put in its batch so far.
    fn write_batch(&mut self) {
        if self.wb.is_empty() {
            return;
        }
        METRICS
            .apply_batch_entries
            .observe(self.round_entries as f64);
        METRICS
            .apply_batch_bytes
            .observe(self.wb.data_size() as f64);
        fail::fail_point!("apply_before_write");
        // Not synced: the raft log is, and a lost apply is redone from it at restart
        // because the apply state is lost with the data it describes. Except when a log
        // compaction is in it (the entries below the new truncated index are about to be
        // deleted, so what they wrote must be durable first) or a split (see `admin`).
        let sync = std::mem::take(&mut self.sync);
        let started = self.ctx.clock.now();
        if let Err(e) = write_kv(&self.ctx.engines.kv, &mut self.wb, sync) {
            self.ctx
                .fatal("writing applied entries to the KV engine", &e);
        }
        let took = self.ctx.clock.now().saturating_duration_since(started);
        METRICS.write_hop.apply_write.observe(took.as_secs_f64());
        fail::fail_point!("apply_after_write");
        self.ctx.stats.apply_writes.fetch_add(1, Relaxed);
        self.ctx
            .stats
            .entries_applied
            .fetch_add(std::mem::take(&mut self.round_entries) as u64, Relaxed);
    }

    /// Hands a RocksDB snapshot taken at exactly the applied index to the snap-generator pool.
    fn gen_snapshot(&mut self, fsm: &ApplyFsm<EK>) {
        // Entries already in this round's batch count as applied: write them first.
        self.write_batch();
        let key = SnapKey {
            region_id: fsm.region.id,
            term: fsm.applied_term,
            index: fsm.apply_state.applied_index,
        };
        self.ctx.send_gen_task(GenTask {
            region: fsm.region.clone(),
            key,
            snapshot: self.ctx.engines.kv.snapshot(),
        });
    }

    /// Steps 3-4 of a snapshot apply, after every older entry of the region is written.
    fn apply_snapshot(
        &mut self,
        fsm: &mut ApplyFsm<EK>,
        region: Region,
        key: SnapKey,
        meta: &proto::raft_serverpb::SnapshotMeta,
        apply_state: RaftApplyState,
    ) {
        self.write_batch();
        fail::fail_point!("apply_snapshot_before_ingest");
        // Every earlier entry is applied: `fsm.region` is the region as it stands here.
        let left_behind = crate::storage::left_behind(&fsm.region, &region);
        if let Err(e) = self
            .ctx
            .finish_snapshot(&region, key, meta, &apply_state, &left_behind)
        {
            self.ctx.fatal("applying a snapshot", &e);
        }
        fsm.region = region;
        fsm.apply_state = apply_state;
        fsm.applied_term = apply_state.commit_term;
        // The snapshot's configuration includes them; raft-rs restored it already.
        fsm.conf_changes.clear();
    }
}

impl<EK: KvEngine> PollHandler<ApplyFsm<EK>, ApplyControlFsm> for ApplyPoller<EK> {
    fn begin(&mut self, _batch_size: usize) {
        self.round_entries = 0;
    }

    fn handle_control(&mut self, _control: &mut ApplyControlFsm, msgs: &mut Vec<()>) {
        msgs.clear();
    }

    fn handle_normal(&mut self, fsm: &mut ApplyFsm<EK>, tasks: &mut Vec<ApplyTask>) {
        METRICS.apply_mailbox_backlog.observe(tasks.len() as f64);
        if self.ctx.is_stopped() {
            tasks.clear();
            return;
        }
        let mut any = false;
        let now = self.ctx.clock.now();
        for task in tasks.drain(..) {
            match task {
                ApplyTask::Apply(committed) => {
                    let waited = now.saturating_duration_since(committed.committed_at);
                    METRICS.write_hop.apply_wait.observe(waited.as_secs_f64());
                    self.round_entries += committed.entries.len();
                    let applied = fsm.apply(
                        &self.ctx.engines.kv,
                        committed,
                        &mut self.wb,
                        &mut self.applied,
                        &mut self.callbacks,
                    );
                    match applied {
                        Ok(sync) => self.sync |= sync,
                        Err(e) => {
                            slog::crit!(fsm.logger, "cannot apply committed entries"; "error" => %e);
                            self.ctx.fatal("applying committed entries", &e);
                        }
                    }
                    any = true;
                }
                ApplyTask::GenSnapshot => self.gen_snapshot(fsm),
                ApplyTask::ApplySnapshot {
                    region,
                    key,
                    meta,
                    apply_state,
                } => {
                    self.apply_snapshot(fsm, *region, key, &meta, apply_state);
                    any = true;
                }
                ApplyTask::Destroy { cb } => {
                    fsm.stopped = true;
                    self.destroys.push((fsm.region.clone(), cb));
                    break;
                }
            }
        }
        if fsm.stopped {
            return;
        }
        if any {
            self.results.push((
                fsm.region.id,
                ApplyRes {
                    apply_state: fsm.apply_state,
                    applied_term: fsm.applied_term,
                    region: fsm.region.clone(),
                    conf_changes: std::mem::take(&mut fsm.conf_changes),
                    new_regions: std::mem::take(&mut fsm.new_regions),
                },
            ));
        }
    }

    fn end(&mut self, _normals: &mut [Box<ApplyFsm<EK>>]) {
        if self.ctx.is_stopped() {
            self.wb.clear();
            // Dropped unanswered: callers see StoreStopped.
            self.callbacks.clear();
            self.results.clear();
            self.destroys.clear();
            self.sync = false;
            return;
        }
        self.write_batch();
        let now = self.ctx.clock.now();
        for (cb, mut result, proposed) in self.callbacks.drain(..) {
            let waited = now.saturating_duration_since(proposed);
            METRICS.propose_to_apply.observe(waited.as_secs_f64());
            if let Err(Error::Undetermined { waited_ms, .. }) = &mut result {
                *waited_ms = waited.as_millis() as u64;
            }
            cb.invoke(result);
        }
        for (region, cb) in std::mem::take(&mut self.destroys) {
            // After the round's write: nothing applied for the region can land after this.
            match self.ctx.destroy_region(&region) {
                Ok(()) => {}
                // Another thread's error stopped the store (the barrier on the store writer
                // says so): destroy nothing more; a restart finishes the destroy.
                Err(Error::StoreStopped { .. }) if self.ctx.is_stopped() => return,
                Err(e) => self.ctx.fatal("destroying a region's data", &e),
            }
            cb.invoke(Ok(()));
        }
        for (region_id, res) in self.results.drain(..) {
            send_internal(
                &self.ctx.routers.raft,
                region_id,
                PeerMsg::ApplyRes(res),
                &self.ctx.logger,
            );
        }
    }
}

pub struct ApplyPollerBuilder<EK: KvEngine> {
    pub(crate) ctx: Arc<StoreContext<EK>>,
}

impl<EK: KvEngine> HandlerBuilder<ApplyFsm<EK>, ApplyControlFsm> for ApplyPollerBuilder<EK> {
    type Handler = ApplyPoller<EK>;

    fn build(&mut self) -> ApplyPoller<EK> {
        ApplyPoller {
            ctx: self.ctx.clone(),
            wb: self.ctx.engines.kv.write_batch(),
            applied: Vec::new(),
            callbacks: Vec::new(),
            results: Vec::new(),
            destroys: Vec::new(),
            sync: false,
            round_entries: 0,
        }
    }
}

impl<EK: KvEngine> Drop for ApplyPoller<EK> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.ctx.on_poller_panic("apply");
        }
    }
}

fn write_kv<EK: KvEngine>(kv: &EK, wb: &mut EK::WriteBatch, sync: bool) -> engine::Result<()> {
    fail::fail_point!("kv_write_error", |_| Err(engine::Error::Rocks {
        op: "write",
        detail: "injected by failpoint kv_write_error".into(),
    }));
    kv.write(wb, sync)
}

#[cfg(test)]
mod tests {
    use engine::MemEngine;
    use raft::eraftpb::Entry;

    use super::*;
    use crate::router::{Callback, Proposal};

    /// The ApplyFsm of `region`, applied up to index 10 (term 3).
    fn applied_to_10(region: Region) -> ApplyFsm<MemEngine> {
        let apply_state = RaftApplyState {
            applied_index: 10,
            commit_index: 10,
            commit_term: 3,
            ..Default::default()
        };
        ApplyFsm::new(
            region,
            apply_state,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
    }

    /// Applies `committed`: the outcome of each of its proposals, in their order.
    fn outcomes(fsm: &mut ApplyFsm<MemEngine>, committed: CommittedEntries) -> Vec<Result<()>> {
        let kv = MemEngine::new();
        let mut wb = kv.write_batch();
        let mut callbacks = Vec::new();
        fsm.apply(&kv, committed, &mut wb, &mut Vec::new(), &mut callbacks)
            .unwrap();
        callbacks.into_iter().map(|(_, r, _)| r).collect()
    }

    fn proposal(index: u64, term: u64) -> Proposal {
        Proposal {
            index,
            term,
            slot: 0,
            propose_time: Instant::now(),
            cb: Callback::new(|_| {}),
        }
    }

    /// Found by the simulator: a proposal whose index a snapshot covered may be committed
    /// there; it must be answered Undetermined, not StaleCommand ("nothing written").
    #[test]
    fn a_proposal_a_snapshot_covered_is_undetermined_and_one_overwritten_is_stale() {
        let region = proto::build::region(1)
            .range(vec![], vec![])
            .epoch(1, 1)
            .peers([proto::build::peer(101, 1)])
            .build();
        let mut fsm = applied_to_10(region);
        let entry = |index| Entry {
            index,
            term: 3,
            ..Default::default()
        };
        let committed = CommittedEntries {
            region_id: 1,
            commit: (12, 3),
            entries: vec![entry(11), entry(12)],
            proposals: vec![proposal(8, 2), proposal(11, 2), proposal(12, 3)],
            committed_at: Instant::now(),
        };
        let results = outcomes(&mut fsm, committed);
        assert!(
            matches!(results[0], Err(Error::Undetermined { index: 8, .. })),
            "{:?}",
            results[0]
        );
        assert!(
            matches!(results[1], Err(Error::StaleCommand { index: 11, .. })),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);
    }

    /// Writes batched into one entry: each proposal takes its own command's outcome; one of
    /// another term at that index is stale.
    #[test]
    fn the_proposals_of_a_batched_entry_take_their_own_outcomes() {
        use proto::raft_cmdpb::{
            request::Cmd, PutRequest, RaftCmdRequest, RaftRequestHeader, Request,
        };
        let region = proto::build::region(1)
            .range(b"a".to_vec(), b"m".to_vec())
            .epoch(1, 1)
            .peers([proto::build::peer(101, 1)])
            .build();
        let put = |key: &[u8]| RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: 1,
                region_epoch: region.region_epoch,
                ..Default::default()
            }),
            requests: vec![Request {
                cmd: Some(Cmd::Put(PutRequest {
                    cf: String::new(),
                    key: key.to_vec(),
                    value: b"v".to_vec(),
                })),
            }],
            admin_request: None,
        };
        let mut data = Vec::new();
        for key in [b"b", b"z", b"c"] {
            prost::Message::encode_length_delimited(&put(key), &mut data).unwrap();
        }
        let mut fsm = applied_to_10(region.clone());
        let slotted = |slot, term| Proposal {
            slot,
            ..proposal(11, term)
        };
        let committed = CommittedEntries {
            region_id: 1,
            commit: (11, 3),
            entries: vec![Entry {
                index: 11,
                term: 3,
                context: crate::operation::write::BATCH_CONTEXT.to_vec().into(),
                data: data.into(),
                ..Default::default()
            }],
            proposals: vec![slotted(0, 3), slotted(1, 3), slotted(2, 3), slotted(1, 2)],
            committed_at: Instant::now(),
        };
        let results = outcomes(&mut fsm, committed);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(Error::KeyNotInRegion { .. })),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);
        assert!(
            matches!(results[3], Err(Error::StaleCommand { index: 11, .. })),
            "{:?}",
            results[3]
        );
    }
}
