//! Receiving side of the store-to-store streams.

use std::time::{Duration, Instant};

use engine::KvEngine;
use prost::Message;
use proto::raft_serverpb::raft_transport_server::RaftTransport;
use proto::raft_serverpb::{
    BatchRaftMessage, RaftDone, RaftMessage, SnapshotChunk, SnapshotData, SnapshotDone,
};
use raftstore::router::{
    deliver_raft_message, deliver_raft_messages, note_store_heard, RaftRouter,
};
use raftstore::snap::{SnapKey, SnapManager};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::METRICS;
use crate::transport::SNAPSHOT_IDLE;

/// Serves the `RaftTransport` streams of one store.
pub struct RaftService<EK: KvEngine> {
    store_id: u64,
    router: RaftRouter<EK>,
    snap_mgr: SnapManager,
    logger: slog::Logger,
}

impl<EK: KvEngine> RaftService<EK> {
    pub fn new(
        store_id: u64,
        router: RaftRouter<EK>,
        snap_mgr: SnapManager,
        logger: &slog::Logger,
    ) -> RaftService<EK> {
        RaftService {
            store_id,
            router,
            snap_mgr,
            logger: logger.new(slog::o!("component" => "raft-service")),
        }
    }

    fn addressed_here(&self, msg: &RaftMessage) -> bool {
        msg.to_peer.is_some_and(|p| p.store_id == self.store_id)
    }
}

/// Where the files of a MsgSnapshot belong, from the message itself.
fn snapshot_target(
    msg: &RaftMessage,
) -> Result<(SnapKey, proto::raft_serverpb::SnapshotMeta), String> {
    let snapshot = msg
        .message
        .as_ref()
        .and_then(|m| m.snapshot.as_ref())
        .ok_or("the header's message carries no snapshot")?;
    let metadata = snapshot
        .metadata
        .as_ref()
        .ok_or("the snapshot has no metadata")?;
    let data = SnapshotData::decode(snapshot.data.as_ref())
        .map_err(|e| format!("snapshot data does not decode: {e}"))?;
    let meta = data.meta.ok_or("snapshot data without a file list")?;
    Ok((
        SnapKey {
            region_id: msg.region_id,
            term: metadata.term,
            index: metadata.index,
        },
        meta,
    ))
}

#[tonic::async_trait]
impl<EK: KvEngine> RaftTransport for RaftService<EK> {
    async fn raft(
        &self,
        request: Request<Streaming<BatchRaftMessage>>,
    ) -> Result<Response<RaftDone>, Status> {
        let mut stream = request.into_inner();
        // Traffic from a store counts as hearing from it, noted at most this often.
        const NOTE_HEARD_EVERY: Duration = Duration::from_millis(10);
        let mut noted: Option<Instant> = None;
        while let Some(batch) = stream.message().await? {
            METRICS
                .raft_messages_received
                .inc_by(batch.msgs.len() as u64);
            if noted.is_none_or(|t| t.elapsed() >= NOTE_HEARD_EVERY) {
                let from_store = batch
                    .msgs
                    .first()
                    .and_then(|m| m.from_peer)
                    .map_or(0, |p| p.store_id);
                if note_store_heard(&self.router, from_store) {
                    noted = Some(Instant::now());
                }
            }
            // All checked before any is delivered: the batch is handed over as one unit.
            if let Some(msg) = batch.msgs.iter().find(|m| !self.addressed_here(m)) {
                // The sender's address for that store is stale (another store serves here
                // now): fail the stream so it asks the scheduler again.
                METRICS
                    .raft_messages_dropped
                    .with_label_values(&["wrong_store"])
                    .inc();
                return Err(Status::failed_precondition(format!(
                    "this is store {}, not store {}",
                    self.store_id,
                    msg.to_peer.map_or(0, |p| p.store_id)
                )));
            }
            deliver_raft_messages(&self.router, batch.msgs);
        }
        Ok(Response::new(RaftDone {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotDone>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let msg = first
            .header
            .and_then(|h| h.message)
            .ok_or_else(|| Status::invalid_argument("the first chunk must carry the header"))?;
        if !self.addressed_here(&msg) {
            return Err(Status::invalid_argument(format!(
                "snapshot for store {}, this is store {}",
                msg.to_peer.map_or(0, |p| p.store_id),
                self.store_id
            )));
        }
        let (key, meta) = snapshot_target(&msg).map_err(Status::invalid_argument)?;
        let (tx, mut rx) = mpsc::channel::<raftstore::Result<Vec<u8>>>(4);
        let mgr = self.snap_mgr.clone();
        let writer = tokio::task::spawn_blocking(move || {
            mgr.receive(key, &meta, std::iter::from_fn(|| rx.blocking_recv()))
        });
        loop {
            let next = tokio::time::timeout(SNAPSHOT_IDLE, stream.message()).await;
            let item = match next {
                Ok(Ok(Some(chunk))) => Ok(chunk.data),
                Ok(Ok(None)) => break,
                Ok(Err(status)) => Err(raftstore::Error::Snapshot {
                    region_id: key.region_id,
                    key: key.to_string(),
                    detail: format!("stream broke: {status}"),
                }),
                Err(_) => Err(raftstore::Error::Snapshot {
                    region_id: key.region_id,
                    key: key.to_string(),
                    detail: format!("no data for {SNAPSHOT_IDLE:?}"),
                }),
            };
            let failed = item.is_err();
            // The writer stopped early (refused or failed): its result says why.
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Status::internal(format!("snapshot writer task: {e}")))?;
        match written {
            Ok(()) => {
                METRICS.snapshots_received.with_label_values(&["ok"]).inc();
                slog::info!(self.logger, "snapshot received";
                    "region_id" => key.region_id, "snapshot" => %key);
                // The files stay: a retry finds them complete and does not copy them again.
                if !deliver_raft_message(&self.router, msg) {
                    return Err(Status::resource_exhausted(format!(
                        "region {} cannot take the snapshot message now",
                        key.region_id
                    )));
                }
                Ok(Response::new(SnapshotDone {}))
            }
            Err(e) => {
                METRICS
                    .snapshots_received
                    .with_label_values(&["refused"])
                    .inc();
                slog::warn!(self.logger, "snapshot refused";
                    "region_id" => key.region_id, "snapshot" => %key, "error" => %e);
                Err(match e {
                    raftstore::Error::ServerIsBusy { reason, .. } => {
                        Status::resource_exhausted(reason)
                    }
                    other => Status::aborted(other.to_string()),
                })
            }
        }
    }
}
