//! From committed entries to KV writes: decode each entry, dispatch it to its operation, and
//! record the region's apply state in the same write batch.

use engine::{keys, KvEngine, WriteBatch, CF_RAFT};
use proto::metapb::Region;
use proto::raft_cmdpb::RaftCmdRequest;
use proto::raft_serverpb::{PeerState, RaftApplyState};
use raft::eraftpb::{ConfChangeV2, Entry, EntryType};

use super::{admin, conf_change, write};
use crate::storage::put_region_state;
use crate::{Error, Result};

/// The outcome of one applied command, for its proposal's callback.
#[derive(Debug)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// The command's place in its entry (see `write::ProposalBatch`).
    pub slot: u32,
    pub result: Result<()>,
}

/// What applying a run of entries asks of the apply round and the peer.
#[derive(Debug, Default)]
pub struct ApplyOutput {
    /// The batch must be synced (a log compaction, or a split that created a region, was
    /// applied).
    pub sync: bool,
    /// Membership changes applied, in log order, for raft-rs.
    pub conf_changes: Vec<ConfChangeV2>,
    /// Regions created by splits (their peers on this store must be created).
    pub new_regions: Vec<Region>,
}

/// Applies committed `entries` of one region into `wb` and records the new apply state (and,
/// after a membership change, the new region) in the same batch, so data and apply progress
/// become durable together. A command that fails its checks writes nothing; its error is in
/// `out`.
pub fn apply_entries<EK: KvEngine>(
    kv: &EK,
    region: &mut Region,
    apply_state: &mut RaftApplyState,
    entries: &[Entry],
    wb: &mut EK::WriteBatch,
    out: &mut Vec<Applied>,
) -> Result<ApplyOutput> {
    let mut output = ApplyOutput::default();
    let Some(last) = entries.last() else {
        return Ok(output);
    };
    for e in entries {
        // Admin commands compare against the applied index, which includes everything before
        // this entry in the same batch.
        apply_state.applied_index = e.index - 1;
        let result = match e.entry_type {
            // A new leader's empty entry.
            EntryType::EntryNormal if e.data.is_empty() => Ok(()),
            // Each command of the entry is checked and applied on its own. One that does not
            // decode fails alone, the same way on every replica; it must not stop the store
            // (it would again at every restart).
            EntryType::EntryNormal => {
                let commands = write::decode_commands(&e.context, &e.data);
                for (slot, cmd) in (0u32..).zip(commands) {
                    let result = match cmd {
                        Ok(cmd) => {
                            apply_command(kv, region, apply_state, &cmd, wb).map(|outcome| {
                                output.sync |= outcome.sync;
                                output.new_regions.extend(outcome.new_regions);
                            })
                        }
                        Err(err) => Err(Error::InvalidCommand {
                            region_id: region.id,
                            detail: format!(
                                "entry {} command {slot} does not decode: {err}",
                                e.index
                            ),
                        }),
                    };
                    out.push(Applied {
                        index: e.index,
                        term: e.term,
                        slot,
                        result,
                    });
                }
                continue;
            }
            EntryType::EntryConfChangeV2 => {
                apply_conf_change::<EK>(region, e, wb).map(|cc| output.conf_changes.push(cc))
            }
            EntryType::EntryConfChange => Err(Error::InvalidCommand {
                region_id: region.id,
                detail: format!(
                    "entry {} is a v1 conf change, which is never proposed",
                    e.index
                ),
            }),
        };
        out.push(Applied {
            index: e.index,
            term: e.term,
            slot: 0,
            result,
        });
    }
    apply_state.applied_index = last.index;
    // Only what is applied is recorded as committed: the log is durable up to here, while the
    // peer's commit index may point at entries not yet fsynced on this store, and a restart
    // raises the hard state's commit to this value.
    apply_state.commit_index = last.index;
    apply_state.commit_term = last.term;
    wb.put_msg_cf(CF_RAFT, &keys::apply_state_key(region.id), apply_state)
        .map_err(|source| Error::Engine {
            region_id: region.id,
            source,
        })?;
    Ok(output)
}

/// A membership change: the new region is written with the apply state, in the same batch.
fn apply_conf_change<EK: KvEngine>(
    region: &mut Region,
    entry: &Entry,
    wb: &mut EK::WriteBatch,
) -> Result<ConfChangeV2> {
    let (new, cc) = conf_change::apply_entry(region, entry)?;
    put_region_state(wb, &new, PeerState::Normal, None).map_err(|source| Error::Engine {
        region_id: region.id,
        source,
    })?;
    *region = new;
    Ok(cc)
}

fn apply_command<EK: KvEngine>(
    kv: &EK,
    region: &mut Region,
    apply_state: &mut RaftApplyState,
    cmd: &RaftCmdRequest,
    wb: &mut EK::WriteBatch,
) -> Result<admin::AdminOutcome> {
    match &cmd.admin_request {
        Some(admin) => {
            write::check_epoch(region, cmd)?;
            admin::apply_admin(kv, region, apply_state, admin, wb)
        }
        None => {
            // A planted bug (simulator tests only): the checks that make a command proposed
            // before a split harmless after it.
            let plant_skip = || {
                fail::fail_point!("plant_skip_epoch_check_at_apply", |_| true);
                false
            };
            if !plant_skip() {
                write::check_write(region, cmd)?;
            }
            write::write_cmd(region, cmd, wb)?;
            Ok(admin::AdminOutcome::default())
        }
    }
}
