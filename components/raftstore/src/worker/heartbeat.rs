//! The scheduler worker: sends region heartbeats (leaders, periodically and at once after an
//! election, a membership change or a split) and store heartbeats, and executes the step a
//! region heartbeat's answer carries by proposing it through the region's mailbox, like any
//! command (a duplicate is refused by the usual checks and asked again next heartbeat).

use engine::{keys, KvEngine, DATA_CFS};
use proto::metapb::Peer;
use proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, ChangePeerRequest, ChangePeerV2Request, TransferLeaderRequest,
};

use crate::fsm::StoreContext;
use crate::metrics::METRICS;
use crate::router::{Callback, PeerMsg};
use crate::scheduler::{RegionHeartbeat, SchedulerStep, StoreHeartbeat};

pub enum HeartbeatTask {
    /// Sizes are filled in by the worker.
    Region(Box<RegionHeartbeat>),
    /// Boxed like a region's, so a queue slot is two words.
    Store(Box<StoreHeartbeat>),
}

impl<EK: KvEngine> StoreContext<EK> {
    fn send_store_heartbeat(&self, hb: StoreHeartbeat) {
        match self.scheduler.store_heartbeat(hb) {
            // A sleeping leader's rare tick reports its region; an awake one reports on its
            // own ticks soon anyway and ignores it.
            Ok(waiting) => {
                if !waiting.is_empty() {
                    slog::debug!(self.logger, "regions with an operator report now";
                        "regions" => waiting.len());
                }
                for region_id in waiting {
                    let _ = self.routers.raft.send(region_id, PeerMsg::HibernateTick);
                }
            }
            Err(e) => slog::warn!(self.logger, "store heartbeat failed"; "error" => %e),
        }
    }

    /// A batch the worker took from its queue (up to `heartbeat-concurrency` tasks): the
    /// latest store heartbeat, then the region heartbeats all at once. Only the latest of
    /// each goes: sent concurrently, an older report of a region could arrive last, and
    /// store heartbeats piled up behind an unreachable scheduler would each wait out its
    /// timeout (and hold up a shutdown).
    pub fn run_heartbeat_tasks(&self, tasks: Vec<HeartbeatTask>) {
        // A scheduler that answers slowly, for the test of dropped reports.
        fail::fail_point!("heartbeat_worker_before_batch");
        let mut store = None;
        let mut regions: Vec<RegionHeartbeat> = Vec::new();
        for task in tasks {
            match task {
                HeartbeatTask::Store(hb) => store = Some(*hb),
                HeartbeatTask::Region(hb) => {
                    regions.retain(|r| r.region.id != hb.region.id);
                    regions.push(*hb);
                }
            }
        }
        if let Some(hb) = store {
            self.send_store_heartbeat(hb);
        }
        if !regions.is_empty() {
            METRICS.region_heartbeat_batch.observe(regions.len() as f64);
            self.send_region_heartbeats(regions);
        }
        self.ask_owed_reports();
    }

    /// Asks the leaders whose reports were dropped to report again, as many as half the
    /// queue's free room (the rest is for reports made meanwhile). A full queue drops them
    /// again and they stay owed: none is lost, and none is woken for it. Called after each
    /// batch and on the store's liveness ticks (an asked peer that no longer leads queues
    /// nothing, and the worker may then idle with reports still owed).
    pub(crate) fn ask_owed_reports(&self) {
        let room = util::lock(&self.workers.heartbeat)
            .as_ref()
            .map_or(0, |tx| {
                self.cfg.heartbeat_queue_capacity.saturating_sub(tx.len())
            });
        let asked: Vec<u64> = {
            let mut owed = util::lock(&self.owed_reports);
            std::iter::from_fn(|| owed.pop_first())
                .take(room.div_ceil(2))
                .collect()
        };
        for region_id in asked {
            // A region gone since needs no report; a full mailbox is asked again later.
            if let Err(batch_system::SendError::Full { .. }) =
                self.routers.raft.send(region_id, PeerMsg::ReportRegion)
            {
                util::lock(&self.owed_reports).insert(region_id);
            }
        }
    }

    fn send_region_heartbeats(&self, mut heartbeats: Vec<RegionHeartbeat>) {
        let mut targets = Vec::with_capacity(heartbeats.len());
        for hb in &mut heartbeats {
            let (start, end) = keys::region_data_bounds(&hb.region);
            for cf in DATA_CFS {
                if let Ok(stats) = self.engines.kv.approximate_range_stats(cf, &start, &end) {
                    hb.approximate_size += stats.size;
                    hb.approximate_keys += stats.keys;
                }
            }
            targets.push((hb.region.clone(), hb.leader));
        }
        let answers = self.scheduler.region_heartbeats(heartbeats);
        for ((region, leader), answer) in targets.into_iter().zip(answers) {
            match answer {
                Ok(Some(step)) => self.execute_step(&region, leader, step),
                Ok(None) => {}
                Err(e) => slog::warn!(self.logger, "region heartbeat failed";
                    "region_id" => region.id, "error" => %e),
            }
        }
    }

    fn execute_step(&self, region: &proto::metapb::Region, leader: Peer, step: SchedulerStep) {
        let region_id = region.id;
        slog::info!(self.logger, "executing a scheduler step"; "region_id" => region_id,
            "step" => ?step);
        let change = |kind: proto::eraftpb::ConfChangeType, peer: Peer| AdminRequest {
            cmd_type: AdminCmdType::ChangePeerV2 as i32,
            change_peer_v2: Some(ChangePeerV2Request {
                changes: vec![ChangePeerRequest {
                    change_type: kind as i32,
                    peer: Some(peer),
                }],
            }),
            ..Default::default()
        };
        use proto::eraftpb::ConfChangeType::*;
        let logger = self.logger.clone();
        let cb = Callback::new(move |r: crate::Result<()>| {
            if let Err(e) = r {
                slog::debug!(logger, "scheduler step not done"; "region_id" => region_id,
                    "error" => %e);
            }
        });
        let admin = match step {
            SchedulerStep::Split(split_keys) => {
                let ask = PeerMsg::AskSplit {
                    region_epoch: region.region_epoch,
                    split_keys,
                    cb,
                };
                let _ = self.routers.raft.send(region_id, ask);
                return;
            }
            SchedulerStep::AddLearner(peer) => change(AddLearnerNode, peer),
            SchedulerStep::PromoteLearner(peer) => change(AddNode, peer),
            SchedulerStep::RemovePeer(peer) => change(RemoveNode, peer),
            SchedulerStep::TransferLeader(peer) => AdminRequest {
                cmd_type: AdminCmdType::TransferLeader as i32,
                transfer_leader: Some(TransferLeaderRequest { peer: Some(peer) }),
                ..Default::default()
            },
        };
        let request = super::admin_command(region, leader, admin);
        // A full mailbox drops the step: the next heartbeat asks again.
        let _ = self.routers.raft.send(
            region_id,
            PeerMsg::Command {
                request,
                cb,
                sent: None,
            },
        );
    }
}
