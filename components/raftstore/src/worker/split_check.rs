//! The split checker: a leader's region is measured against the split thresholds off the
//! raft pollers (the key search scans up to `region-split-size` bytes), and a region that is
//! over them, or that was asked to split at given keys, gets ids from the scheduler and a
//! BatchSplit proposal through the peer's mailbox, like any command.

use engine::{keys, KvEngine, DATA_CFS};
use proto::metapb::{Peer as PeerMeta, Region};
use proto::raft_cmdpb::{AdminCmdType, AdminRequest};

use crate::fsm::StoreContext;
use crate::metrics::METRICS;
use crate::operation::split::{build_request, find_split_keys, SplitThresholds};
use crate::router::{Callback, PeerMsg, WriteCallback};
use crate::{Error, Result};

/// Work for the split checker.
pub enum SplitTask {
    /// Measure the region; split it if it is over the thresholds.
    Check { region: Region, leader: PeerMeta },
    /// Split at `split_keys` (an admin request or the scheduler); `cb` answers once applied.
    Split {
        region: Region,
        leader: PeerMeta,
        split_keys: Vec<Vec<u8>>,
        cb: WriteCallback,
    },
}

impl<EK: KvEngine> StoreContext<EK> {
    pub fn run_split_task(&self, task: SplitTask) {
        match task {
            SplitTask::Check { region, leader } => {
                let region_id = region.id;
                match self.split_keys_for(&region) {
                    Ok(found) if found.is_empty() => {}
                    Ok(found) => {
                        slog::info!(self.logger, "region is over the split thresholds";
                            "region_id" => region_id, "split_keys" => found.len());
                        let logger = self.logger.clone();
                        let cb = Callback::new(move |r: Result<()>| {
                            if let Err(e) = r {
                                slog::info!(logger, "split not applied"; "region_id" => region_id,
                                    "error" => %e);
                            }
                        });
                        self.propose_split(region, leader, found, cb);
                    }
                    Err(e) => slog::warn!(self.logger, "split check failed";
                        "region_id" => region_id, "error" => %e),
                }
            }
            SplitTask::Split {
                region,
                leader,
                split_keys,
                cb,
            } => self.propose_split(region, leader, split_keys, cb),
        }
    }

    fn split_keys_for(&self, region: &Region) -> Result<Vec<Vec<u8>>> {
        let (start, end) = keys::region_data_bounds(region);
        let (mut size, mut key_count) = (0, 0);
        for cf in DATA_CFS {
            let stats = self
                .engines
                .kv
                .approximate_range_stats(cf, &start, &end)
                .map_err(|source| Error::Engine {
                    region_id: region.id,
                    source,
                })?;
            size += stats.size;
            key_count += stats.keys;
        }
        METRICS.split_checks.inc();
        let cfg = &self.cfg;
        let thresholds = SplitThresholds {
            max_size: cfg.region_max_size,
            split_size: cfg.region_split_size,
            max_keys: cfg.region_max_keys,
            split_keys: cfg.region_split_keys,
            max_splits: cfg.max_splits_per_check,
        };
        find_split_keys(
            &self.engines.kv.snapshot(),
            region,
            (size, key_count),
            &thresholds,
        )
    }

    /// Asks the scheduler for the new regions' and peers' ids and proposes the split.
    fn propose_split(
        &self,
        region: Region,
        leader: PeerMeta,
        split_keys: Vec<Vec<u8>>,
        cb: WriteCallback,
    ) {
        let region_id = region.id;
        let count = split_keys.len() * (1 + region.peers.len());
        let ids = match self.scheduler.alloc_ids(count) {
            Ok(ids) if ids.len() == count => ids,
            Ok(ids) => {
                cb.invoke(Err(Error::Scheduler {
                    detail: format!("asked for {count} ids, got {}", ids.len()),
                }));
                return;
            }
            Err(e) => {
                cb.invoke(Err(e));
                return;
            }
        };
        let admin = AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(build_request(&region, split_keys, &ids)),
            ..Default::default()
        };
        let request = super::admin_command(&region, leader, admin);
        if let Err(e) = self.routers.raft.send(
            region_id,
            PeerMsg::Command {
                request,
                cb,
                sent: None,
            },
        ) {
            if let PeerMsg::Command { cb, .. } = e.into_inner() {
                cb.invoke(Err(Error::ServerIsBusy {
                    region_id,
                    reason: "the region's mailbox refused the split".into(),
                }));
            }
        }
    }
}
