//! Admin commands: they change the region (its log, membership, leader or key range) rather
//! than its data. The dispatch is in place so each command only adds its own module: log
//! compaction and membership arrive with the snapshot/membership issue, split with the
//! scheduler/split issue. Until then an admin command is rejected at propose time and, should
//! one be in the log anyway, fails its apply without touching the region.

use proto::metapb::Region;
use proto::raft_cmdpb::{AdminCmdType, AdminRequest};

use crate::{Error, Result};

/// Checks an admin command at propose time.
pub fn check_admin(region: &Region, admin: &AdminRequest) -> Result<()> {
    Err(unsupported(region, admin))
}

/// Applies a committed admin command. Commands this build does not know change nothing.
pub fn apply_admin(region: &Region, admin: &AdminRequest) -> Result<()> {
    Err(unsupported(region, admin))
}

fn unsupported(region: &Region, admin: &AdminRequest) -> Error {
    let name = AdminCmdType::try_from(admin.cmd_type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown admin command {}", admin.cmd_type));
    Error::InvalidCommand {
        region_id: region.id,
        detail: format!("{name} is not supported by this build yet"),
    }
}
