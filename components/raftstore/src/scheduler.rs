//! What the store needs from the placement scheduler, as a trait: the scheduler crate serves
//! it in-process (test cluster) and the scheduler client over gRPC, and the store knows
//! neither. Calls come from the store's worker threads, never from the pollers, so an
//! implementation may block.

use std::time::Duration;

use proto::metapb::{Peer, Region};
use proto::schedulerpb::WaitForEdge;

use crate::Result;

/// A leader's report on its region.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionHeartbeat {
    pub region: Region,
    pub leader: Peer,
    /// Peers the leader has not heard from within two election timeouts.
    pub down_peers: Vec<Peer>,
    /// Peers that need a snapshot or are far behind the log.
    pub pending_peers: Vec<Peer>,
    pub approximate_size: u64,
    pub approximate_keys: u64,
}

/// A store's report on itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreHeartbeat {
    pub store_id: u64,
    /// Bytes of the disk holding the store, and free on it (0: unknown).
    pub capacity: u64,
    pub available: u64,
    /// Approximate bytes of the regions' data.
    pub used: u64,
    pub region_count: u64,
    pub leader_count: u64,
}

/// One step of a scheduler operator, for the region's leader to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulerStep {
    AddLearner(Peer),
    PromoteLearner(Peer),
    RemovePeer(Peer),
    TransferLeader(Peer),
    /// Split at these keys (ids come from `alloc_ids`, as for any split).
    Split(Vec<Vec<u8>>),
}

pub trait SchedulerClient: Send + Sync + 'static {
    /// `count` ids for new regions and peers, never handed out before (across restarts too).
    fn alloc_ids(&self, count: usize) -> Result<Vec<u64>>;

    /// A leader applied a split: the scheduler learns the new regions now rather than at the
    /// next heartbeat. Best effort.
    fn report_split(&self, _parent: &Region, _new_regions: &[Region]) {}

    /// A leader's periodic report; the answer is what the scheduler wants done to the region.
    fn region_heartbeat(&self, _heartbeat: RegionHeartbeat) -> Result<Option<SchedulerStep>> {
        Ok(None)
    }

    /// Several leaders' reports at once, answered in order. The default sends them one after
    /// another; a networked client sends them concurrently (after a store failed, thousands of
    /// new leaders report together, and clients find them only through the scheduler).
    fn region_heartbeats(
        &self,
        heartbeats: Vec<RegionHeartbeat>,
    ) -> Vec<Result<Option<SchedulerStep>>> {
        heartbeats
            .into_iter()
            .map(|hb| self.region_heartbeat(hb))
            .collect()
    }

    /// A store's periodic report; the answer is the regions led here that have an operator
    /// waiting for their next region heartbeat (the store asks them to report now: a
    /// hibernating leader reports rarely).
    fn store_heartbeat(&self, _heartbeat: StoreHeartbeat) -> Result<Vec<u64>> {
        Ok(Vec::new())
    }

    /// The cluster's GC safe point: MVCC versions below it that are not the newest may be
    /// dropped. 0 before anyone set it.
    fn gc_safe_point(&self) -> Result<u64>;

    /// A timestamp from the cluster's oracle, above every one handed out before: a new
    /// leader raises its `max_ts` to it before it serves async commit.
    fn tso(&self) -> Result<u64>;

    /// A pessimistic lock request is about to wait (`edge`): the cluster's deadlock detector
    /// records the edge for at most `ttl`, or, if the edge would close a cycle of waiting
    /// transactions, records nothing and answers the cycle.
    fn detect_deadlock(&self, edge: WaitForEdge, ttl: Duration) -> Result<DeadlockCheck>;

    /// The request of `edge` (recorded by `detect_deadlock`) stopped waiting.
    fn clean_up_wait_for(&self, edge: WaitForEdge) -> Result<()>;
}

/// The cluster's deadlock detector's answer to a wait.
#[derive(Clone, Debug, PartialEq)]
pub enum DeadlockCheck {
    /// The edge is recorded: wait, then clean it up.
    Recorded,
    /// The detector is full: the edge is not recorded; the wait goes unchecked.
    NotRecorded,
    /// The wait would close this cycle: the edges from the holder back to the waiter.
    Deadlock(Vec<WaitForEdge>),
}
