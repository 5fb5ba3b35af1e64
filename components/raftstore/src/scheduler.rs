//! What the store needs from the placement scheduler, as a trait: the scheduler crate serves
//! it in-process (test cluster) and the scheduler client over gRPC, and the store knows
//! neither.

use proto::metapb::Region;

use crate::Result;

pub trait SchedulerClient: Send + Sync + 'static {
    /// `count` ids for new regions and peers, never handed out before (across restarts too).
    fn alloc_ids(&self, count: usize) -> Result<Vec<u64>>;

    /// A leader applied a split: the scheduler learns the new regions now rather than at the
    /// next heartbeat. Best effort.
    fn report_split(&self, _parent: &Region, _new_regions: &[Region]) {}
}
