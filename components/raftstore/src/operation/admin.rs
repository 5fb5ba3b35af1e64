//! Admin commands: they change the region (its log, membership, leader or key range) rather
//! than its data. `CompactLog` is applied here (see `log_gc`); `TransferLeader` never enters the
//! log (the leader executes it at propose time); `ChangePeerV2` travels as a raft conf-change
//! entry (see `conf_change`), never as a normal entry. Split arrives with its issue; until then
//! it is rejected at propose time and, should one be in the log anyway, fails its apply
//! without touching the region.

use proto::metapb::Region;
use proto::raft_cmdpb::{AdminCmdType, AdminRequest};
use proto::raft_serverpb::RaftApplyState;

use super::log_gc;
use crate::{Error, Result};

/// What an applied admin command asks of the apply round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdminOutcome {
    /// The round's KV write must be synced (the raft log is about to be compacted below it).
    pub sync: bool,
}

fn cmd_type(admin: &AdminRequest) -> Option<AdminCmdType> {
    AdminCmdType::try_from(admin.cmd_type).ok()
}

/// Checks an admin command that is proposed into the log.
pub fn check_admin(region: &Region, admin: &AdminRequest) -> Result<()> {
    match cmd_type(admin) {
        Some(AdminCmdType::CompactLog) if admin.compact_log.is_some() => Ok(()),
        _ => Err(unsupported(region, admin)),
    }
}

/// Applies a committed admin command. Commands this build does not know change nothing.
pub fn apply_admin(
    region: &Region,
    apply_state: &mut RaftApplyState,
    admin: &AdminRequest,
) -> Result<AdminOutcome> {
    match (cmd_type(admin), &admin.compact_log) {
        (Some(AdminCmdType::CompactLog), Some(req)) => {
            let compacted = log_gc::apply_compact_log(region, apply_state, req)?;
            Ok(AdminOutcome { sync: compacted })
        }
        _ => Err(unsupported(region, admin)),
    }
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
