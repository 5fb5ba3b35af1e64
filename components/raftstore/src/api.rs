//! The embedded API: what a database that links regionstore calls. Async, region-scoped, with
//! TiKV's request context (region id, epoch, peer) so routing errors come back as the same
//! region errors a TiKV client handles.

use std::sync::Arc;

use batch_system::SendError;
use engine::{keys, KvEngine, WriteBatch, CF_DEFAULT};
use futures::channel::oneshot;
use proto::kvrpcpb::Context;
use proto::raft_cmdpb::{
    request::Cmd, AdminRequest, DeleteRangeRequest, DeleteRequest, PutRequest, RaftCmdRequest,
    RaftRequestHeader, Request,
};

use crate::fsm::StoreContext;
use crate::metrics::METRICS;
use crate::router::{Callback, PeerMsg, RegionSnapshot};
use crate::{Error, Result};

/// One change in a write. `cf` is one of `default`, `lock`, `write` (empty means default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modify {
    Put {
        cf: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: String,
        key: Vec<u8>,
    },
    /// Deletes `[start, end)`; an empty `end` means to the region's end.
    DeleteRange {
        cf: String,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Modify {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Modify {
        Modify::Put {
            cf: CF_DEFAULT.into(),
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Modify {
        Modify::Delete {
            cf: CF_DEFAULT.into(),
            key: key.into(),
        }
    }

    fn into_request(self) -> Request {
        let cmd = match self {
            Modify::Put { cf, key, value } => Cmd::Put(PutRequest { cf, key, value }),
            Modify::Delete { cf, key } => Cmd::Delete(DeleteRequest { cf, key }),
            Modify::DeleteRange { cf, start, end } => Cmd::DeleteRange(DeleteRangeRequest {
                cf,
                start_key: start,
                end_key: end,
            }),
        };
        Request { cmd: Some(cmd) }
    }
}

/// A handle to one store's embedded API. Cheap to clone.
pub struct StoreApi<EK: KvEngine> {
    ctx: Arc<StoreContext<EK>>,
    /// Whether a full region mailbox is waited on (blocking the calling thread) or answered
    /// with ServerIsBusy at once, for callers on async threads that wait their own way.
    wait_on_full_mailbox: bool,
}

impl<EK: KvEngine> Clone for StoreApi<EK> {
    fn clone(&self) -> Self {
        StoreApi {
            ctx: self.ctx.clone(),
            wait_on_full_mailbox: self.wait_on_full_mailbox,
        }
    }
}

fn header(ctx: &Context) -> RaftRequestHeader {
    RaftRequestHeader {
        region_id: ctx.region_id,
        peer: ctx.peer,
        region_epoch: ctx.region_epoch,
        term: ctx.term,
    }
}

impl<EK: KvEngine> StoreApi<EK> {
    pub(crate) fn new(ctx: Arc<StoreContext<EK>>) -> StoreApi<EK> {
        StoreApi {
            ctx,
            wait_on_full_mailbox: true,
        }
    }

    /// This API, answering ServerIsBusy at once (nothing proposed) when a region's mailbox is
    /// full instead of blocking the thread for up to `mailbox-full-wait-ms`: for async
    /// servers, which must not block their threads and retry after a pause of their own.
    pub fn without_mailbox_wait(&self) -> StoreApi<EK> {
        StoreApi {
            ctx: self.ctx.clone(),
            wait_on_full_mailbox: false,
        }
    }

    /// How long a request may wait for room in a full mailbox (`mailbox-full-wait-ms`).
    pub fn mailbox_full_wait(&self) -> std::time::Duration {
        self.ctx.cfg.mailbox_full_wait()
    }

    pub fn store_id(&self) -> u64 {
        self.ctx.store_id
    }

    /// The store's clock (the server reads expiries through it).
    pub fn clock(&self) -> &util::ClockRef {
        &self.ctx.clock
    }

    /// Ids of the regions hosted here, and how many of them this store leads now (for status
    /// pages).
    pub fn region_status(&self) -> (Vec<u64>, i64) {
        let mut ids = self.ctx.meta().region_ids();
        ids.sort_unstable();
        let leaders = self
            .ctx
            .stats
            .leaders
            .load(std::sync::atomic::Ordering::Relaxed);
        (ids, leaders)
    }

    /// A request context for each region hosted here, naming this store's peer and the
    /// region's current epoch (for store-wide work such as GC: a region this store does not
    /// lead answers NotLeader).
    pub fn region_contexts(&self) -> Vec<Context> {
        let meta = self.ctx.meta();
        let mut out = Vec::with_capacity(meta.len());
        for id in meta.region_ids() {
            let Some(region) = meta.region(id) else {
                continue;
            };
            let Some(peer) = region
                .peers
                .iter()
                .find(|p| p.store_id == self.ctx.store_id)
            else {
                continue;
            };
            out.push(Context {
                region_id: region.id,
                region_epoch: region.region_epoch,
                peer: Some(*peer),
                ..Default::default()
            });
        }
        out
    }

    /// The cluster's GC safe point, from the scheduler (blocks the calling thread).
    pub fn gc_safe_point(&self) -> Result<u64> {
        self.ctx.scheduler.gc_safe_point()
    }

    /// A fresh timestamp from the scheduler's oracle (blocks the calling thread).
    pub fn tso(&self) -> Result<u64> {
        self.ctx.scheduler.tso()
    }

    /// The store's logger, for layers built on this API.
    pub fn logger(&self) -> &slog::Logger {
        &self.ctx.logger
    }

    /// Asks the cluster's deadlock detector whether a lock request may wait (blocks the
    /// calling thread); see [`crate::SchedulerClient::detect_deadlock`].
    pub fn detect_deadlock(
        &self,
        edge: proto::schedulerpb::WaitForEdge,
        ttl: std::time::Duration,
    ) -> Result<crate::DeadlockCheck> {
        self.ctx.scheduler.detect_deadlock(edge, ttl)
    }

    /// A waiting lock request stopped waiting (blocks the calling thread).
    pub fn clean_up_wait_for(&self, edge: proto::schedulerpb::WaitForEdge) -> Result<()> {
        self.ctx.scheduler.clean_up_wait_for(edge)
    }

    /// Deletes everything in `[start, end)` (stored keys; `end` empty: unbounded) from this
    /// store's data column families at once, without raft: TiKV's UnsafeDestroyRange, for a
    /// range no reader will ever look at again (a dropped table below the GC safe point).
    /// Every store is asked; until each has done it, replicas differ in that range.
    pub fn unsafe_destroy_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let (start, end) = (keys::data_key(start), keys::data_end_key(end));
        let engine_error = |source| Error::Engine {
            region_id: 0,
            source,
        };
        let kv = &self.ctx.engines.kv;
        let mut wb = kv.write_batch();
        for cf in engine::DATA_CFS {
            wb.delete_range_cf(cf, &start, &end).map_err(engine_error)?;
        }
        kv.write(&mut wb, true).map_err(engine_error)
    }

    /// Why the store stopped, if a fatal error stopped it.
    pub fn stopped_reason(&self) -> Option<String> {
        self.ctx.stopped_reason()
    }

    /// Replicates and applies `modifies` atomically in the region of `ctx`. `Ok` means applied
    /// on the leader and durable on a quorum. `Undetermined` and `StoreStopped` mean the
    /// outcome is unknown; every other error means nothing was written.
    pub async fn write(&self, ctx: &Context, modifies: Vec<Modify>) -> Result<()> {
        let request = RaftCmdRequest {
            header: Some(header(ctx)),
            requests: modifies.into_iter().map(Modify::into_request).collect(),
            admin_request: None,
        };
        self.command(request).await
    }

    /// Splits the region of `ctx` at `split_keys` (ascending, inside the region): the store
    /// asks the scheduler for the new ids and proposes the split. Answers once it is applied
    /// on the leader.
    pub async fn split(&self, ctx: &Context, split_keys: Vec<Vec<u8>>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let cb = Callback::new(move |r| {
            let _ = tx.send(r);
        });
        self.send(
            ctx.region_id,
            PeerMsg::AskSplit {
                region_epoch: ctx.region_epoch,
                split_keys,
                cb,
            },
        )?;
        rx.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Runs an admin command (leader transfer, membership change, or a split with its ids)
    /// against the region of `ctx`.
    pub async fn admin(&self, ctx: &Context, admin: AdminRequest) -> Result<()> {
        let request = RaftCmdRequest {
            header: Some(header(ctx)),
            requests: vec![],
            admin_request: Some(admin),
        };
        self.command(request).await
    }

    async fn command(&self, request: RaftCmdRequest) -> Result<()> {
        let region_id = request.header.map_or(0, |h| h.region_id);
        let (tx, rx) = oneshot::channel();
        let cb = Callback::new(move |r| {
            let _ = tx.send(r);
        });
        let sent = self.ctx.clock.now();
        let command = PeerMsg::Command {
            request,
            cb,
            sent: Some(sent),
        };
        self.send(region_id, command)?;
        let result = rx.await.unwrap_or_else(|_| Err(self.stopped()));
        let took = self.ctx.clock.now().saturating_duration_since(sent);
        METRICS.write_hop.total.observe(took.as_secs_f64());
        result
    }

    /// A linearizable read view of the region of `ctx`: it holds every write acknowledged
    /// before the call.
    pub async fn snapshot(&self, ctx: &Context) -> Result<RegionSnapshot<EK::Snapshot>> {
        let request = RaftCmdRequest {
            header: Some(header(ctx)),
            ..Default::default()
        };
        let (tx, rx) = oneshot::channel();
        let cb = Callback::new(move |r| {
            let _ = tx.send(r);
        });
        self.send(ctx.region_id, PeerMsg::Read { request, cb })?;
        rx.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> Error {
        Error::StoreStopped {
            store_id: self.ctx.store_id,
            reason: self
                .ctx
                .stopped_reason()
                .unwrap_or_else(|| "shut down before answering".into()),
        }
    }

    /// Hands a request to the region's peer. A full mailbox is waited on for
    /// `mailbox-full-wait-ms` (blocking this thread) before ServerIsBusy.
    fn send(&self, region_id: u64, msg: PeerMsg<EK::Snapshot>) -> Result<()> {
        if self.ctx.stopped_reason().is_some() {
            return Err(self.stopped());
        }
        let store_id = self.ctx.store_id;
        let result = match self.ctx.routers.raft.send(region_id, msg) {
            Err(SendError::Full { msg, .. }) if self.wait_on_full_mailbox => self
                .ctx
                .routers
                .raft
                .send_timeout(region_id, msg, self.ctx.cfg.mailbox_full_wait()),
            other => other,
        };
        match result {
            Ok(()) => Ok(()),
            Err(SendError::Full { capacity, .. }) => Err(Error::ServerIsBusy {
                region_id,
                reason: if self.wait_on_full_mailbox {
                    format!(
                        "region mailbox stayed full ({capacity} messages) for {} ms",
                        self.ctx.cfg.mailbox_full_wait_ms
                    )
                } else {
                    format!("region mailbox is full ({capacity} messages)")
                },
            }),
            Err(SendError::Disconnected { .. }) => Err(Error::RegionNotFound {
                region_id,
                store_id,
            }),
            Err(SendError::ShuttingDown { .. }) => Err(self.stopped()),
        }
    }
}
