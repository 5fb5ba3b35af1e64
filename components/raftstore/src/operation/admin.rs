//! Admin commands: they change the region (its log, membership, leader or key range) rather
//! than its data. `CompactLog` is applied here (see `log_gc`); `TransferLeader` never enters the
//! log (the leader executes it at propose time); `ChangePeerV2` travels as a raft conf-change
//! entry (see `conf_change`), never as a normal entry; `BatchSplit` is applied here (see
//! `split`).

use engine::{keys, KvEngine, WriteBatch, CF_RAFT};
use proto::metapb::Region;
use proto::raft_cmdpb::{AdminCmdType, AdminRequest, BatchSplitRequest};
use proto::raft_serverpb::{PeerState, RaftApplyState, RegionLocalState};

use super::{log_gc, split};
use crate::storage::{initial_apply_state, put_region_state};
use crate::{Error, Result};

/// What an applied admin command asks of the apply round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdminOutcome {
    /// The round's KV write must be synced (the raft log is about to be compacted below it,
    /// or a split created regions whose peers will write raft state of their own).
    pub sync: bool,
    /// Regions a split created (their states are in the round's batch).
    pub new_regions: Vec<Region>,
}

fn cmd_type(admin: &AdminRequest) -> Option<AdminCmdType> {
    AdminCmdType::try_from(admin.cmd_type).ok()
}

/// Checks an admin command that is proposed into the log.
pub fn check_admin(region: &Region, admin: &AdminRequest) -> Result<()> {
    match cmd_type(admin) {
        Some(AdminCmdType::CompactLog) if admin.compact_log.is_some() => Ok(()),
        Some(AdminCmdType::BatchSplit) => match &admin.splits {
            Some(req) => split::check_split(region, req),
            None => Err(unsupported(region, admin)),
        },
        _ => Err(unsupported(region, admin)),
    }
}

/// Applies a committed admin command. Commands this build does not know change nothing.
pub fn apply_admin<EK: KvEngine>(
    kv: &EK,
    region: &mut Region,
    apply_state: &mut RaftApplyState,
    admin: &AdminRequest,
    wb: &mut EK::WriteBatch,
) -> Result<AdminOutcome> {
    match cmd_type(admin) {
        Some(AdminCmdType::CompactLog) if admin.compact_log.is_some() => {
            let req = admin
                .compact_log
                .as_ref()
                .ok_or_else(|| unsupported(region, admin))?;
            let compacted = log_gc::apply_compact_log(region, apply_state, req)?;
            // A bug planted for the simulator to catch: the log goes before the state that
            // says it may.
            let plant_skip_sync = || {
                fail::fail_point!("plant_skip_compact_log_sync", |_| true);
                false
            };
            Ok(AdminOutcome {
                sync: compacted && !plant_skip_sync(),
                ..Default::default()
            })
        }
        Some(AdminCmdType::BatchSplit) if admin.splits.is_some() => {
            let req = admin
                .splits
                .as_ref()
                .ok_or_else(|| unsupported(region, admin))?;
            apply_split(kv, region, req, wb)
        }
        _ => Err(unsupported(region, admin)),
    }
}

/// Writes the split regions' states (and each new region's initial apply state) into the
/// round's batch and narrows `region`. A new region whose state is already here (it reached
/// this store another way) is left as it is.
fn apply_split<EK: KvEngine>(
    kv: &EK,
    region: &mut Region,
    req: &BatchSplitRequest,
    wb: &mut EK::WriteBatch,
) -> Result<AdminOutcome> {
    let (parent, new_regions) = split::split_regions(region, req)?;
    let region_id = region.id;
    let engine_err = |source| Error::Engine { region_id, source };
    let put_state =
        |wb: &mut EK::WriteBatch, r: &Region| put_region_state(wb, r, PeerState::Normal, None);
    let mut created = Vec::with_capacity(new_regions.len());
    for new in new_regions {
        let existing: Option<RegionLocalState> = kv
            .get_msg_cf(CF_RAFT, &keys::region_state_key(new.id))
            .map_err(engine_err)?;
        if existing.is_some() {
            continue;
        }
        put_state(wb, &new).map_err(engine_err)?;
        wb.put_msg_cf(
            CF_RAFT,
            &keys::apply_state_key(new.id),
            &initial_apply_state(&new),
        )
        .map_err(engine_err)?;
        created.push(new);
    }
    put_state(wb, &parent).map_err(engine_err)?;
    *region = parent;
    // Synced: once the round's results reach the store, the new peers vote and append to
    // the raft log (which is synced). A power cut that then lost this write would leave a
    // raft log and a vote with no region state to open them with, and the parent may be
    // gone from this store by then, so nothing would redo the split.
    Ok(AdminOutcome {
        sync: !created.is_empty(),
        new_regions: created,
    })
}

fn unsupported(region: &Region, admin: &AdminRequest) -> Error {
    let name = cmd_type(admin)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|| format!("unknown admin command {}", admin.cmd_type));
    Error::InvalidCommand {
        region_id: region.id,
        detail: format!(
            "{name} is not supported by this build or not as a normal entry, or lacks its body"
        ),
    }
}

#[cfg(test)]
mod tests {
    use engine::{KvEngine, MemEngine};
    use proto::metapb::{Peer, RegionEpoch};

    use super::*;

    fn region() -> Region {
        Region {
            id: 1,
            start_key: b"b".to_vec(),
            end_key: b"x".to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![Peer {
                id: 11,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn split_at_m() -> AdminRequest {
        AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(split::build_request(
                &region(),
                vec![b"m".to_vec()],
                &[2, 21],
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_split_that_creates_a_region_is_synced() {
        let kv = MemEngine::new();
        let mut wb = kv.write_batch();
        let (mut r, mut state) = (region(), RaftApplyState::default());
        let outcome = apply_admin(&kv, &mut r, &mut state, &split_at_m(), &mut wb).unwrap();
        assert_eq!(outcome.new_regions.len(), 1);
        assert!(
            outcome.sync,
            "the new peer's raft state would outlive its region state"
        );
        assert_eq!(r.end_key, b"m");

        // The new region already reached this store another way: nothing new to make durable.
        kv.write(&mut wb, true).unwrap();
        let mut wb = kv.write_batch();
        let (mut r, mut state) = (region(), RaftApplyState::default());
        let outcome = apply_admin(&kv, &mut r, &mut state, &split_at_m(), &mut wb).unwrap();
        assert!(outcome.new_regions.is_empty());
        assert!(!outcome.sync);
    }
}
