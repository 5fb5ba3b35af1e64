//! Store-to-store sending. Each raft poller owns a [`GrpcTransport`] clone that collects the
//! round's messages per target store and, at `flush`, queues one batch per store. One task per
//! target store drains its queue into a long-lived client stream, reconnecting with backoff
//! when the stream breaks. Snapshots go on a stream of their own, one per snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use proto::raft_serverpb::raft_transport_client::RaftTransportClient;
use proto::raft_serverpb::{BatchRaftMessage, RaftMessage, SnapshotChunk, SnapshotHeader};
use raftstore::router::Callback;
use raftstore::snap::SnapshotFiles;
use raftstore::Transport;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::metrics::METRICS;
use crate::{Config, Error, Result};

/// Where a store listens, as the scheduler knows it.
pub trait StoreResolver: Send + Sync + 'static {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String>>;
}

/// Addresses from a [`StoreResolver`], cached for `store-address-ttl-ms`.
struct AddressCache {
    resolver: Arc<dyn StoreResolver>,
    ttl: Duration,
    cached: Mutex<HashMap<u64, (String, Instant)>>,
}

impl AddressCache {
    async fn resolve(&self, store_id: u64) -> Result<String> {
        if let Some((addr, at)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&store_id)
        {
            if at.elapsed() < self.ttl {
                return Ok(addr.clone());
            }
        }
        let addr = self.resolver.resolve(store_id).await?;
        if addr.is_empty() {
            return Err(Error::Resolve {
                store_id,
                detail: "the scheduler has no address for it".into(),
            });
        }
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(store_id, (addr.clone(), Instant::now()));
        Ok(addr)
    }

    fn forget(&self, store_id: u64) {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&store_id);
    }
}

struct Shared {
    store_id: u64,
    cfg: Config,
    runtime: tokio::runtime::Handle,
    addresses: AddressCache,
    queues: Mutex<HashMap<u64, mpsc::Sender<BatchRaftMessage>>>,
    logger: slog::Logger,
}

/// The gRPC transport of one store. Cheap to clone; each clone batches its own messages.
pub struct GrpcTransport {
    shared: Arc<Shared>,
    pending: HashMap<u64, Vec<RaftMessage>>,
}

impl Clone for GrpcTransport {
    fn clone(&self) -> Self {
        GrpcTransport {
            shared: self.shared.clone(),
            pending: HashMap::new(),
        }
    }
}

impl GrpcTransport {
    /// A transport for store `store_id`; its connection tasks run on `runtime`.
    pub fn new(
        store_id: u64,
        cfg: Config,
        resolver: Arc<dyn StoreResolver>,
        runtime: tokio::runtime::Handle,
        logger: &slog::Logger,
    ) -> GrpcTransport {
        let ttl = Duration::from_millis(cfg.store_address_ttl_ms);
        GrpcTransport {
            shared: Arc::new(Shared {
                store_id,
                cfg,
                runtime,
                addresses: AddressCache {
                    resolver,
                    ttl,
                    cached: Mutex::default(),
                },
                queues: Mutex::default(),
                logger: logger.new(slog::o!("component" => "transport")),
            }),
            pending: HashMap::new(),
        }
    }

    fn queue(&self, to_store: u64) -> mpsc::Sender<BatchRaftMessage> {
        let mut queues = self.shared.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = queues.get(&to_store) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.shared.cfg.raft_msg_queue_capacity);
        let shared = self.shared.clone();
        self.shared.runtime.spawn(run_stream(shared, to_store, rx));
        queues.insert(to_store, tx.clone());
        tx
    }

    fn send_batch(&self, to_store: u64, msgs: Vec<RaftMessage>) {
        let count = msgs.len() as u64;
        match self.queue(to_store).try_send(BatchRaftMessage { msgs }) {
            Ok(()) => {
                METRICS.raft_batches_queued.inc();
                METRICS.raft_messages_sent.inc_by(count);
            }
            Err(mpsc::error::TrySendError::Full(_)) => METRICS
                .raft_messages_dropped
                .with_label_values(&["queue_full"])
                .inc_by(count),
            Err(mpsc::error::TrySendError::Closed(_)) => METRICS
                .raft_messages_dropped
                .with_label_values(&["closed"])
                .inc_by(count),
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, msg: RaftMessage) {
        let to_store = msg.to_peer.map_or(0, |p| p.store_id);
        if to_store == 0 || to_store == self.shared.store_id {
            METRICS
                .raft_messages_dropped
                .with_label_values(&["bad_target"])
                .inc();
            return;
        }
        let pending = self.pending.entry(to_store).or_default();
        pending.push(msg);
        if pending.len() >= self.shared.cfg.raft_msg_max_batch {
            let msgs = std::mem::take(pending);
            self.send_batch(to_store, msgs);
        }
    }

    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for (to_store, msgs) in pending.iter_mut() {
            if !msgs.is_empty() {
                self.send_batch(*to_store, std::mem::take(msgs));
            }
        }
        // Keeps the per-store vectors (and their capacity) for the next round.
        self.pending = pending;
    }

    fn send_snapshot(&mut self, msg: RaftMessage, files: SnapshotFiles, done: Callback<()>) {
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            let region_id = msg.region_id;
            let key = files.key.to_string();
            let result = send_snapshot(&shared, msg, files).await;
            let label = if result.is_ok() { "ok" } else { "failed" };
            METRICS.snapshots_sent.with_label_values(&[label]).inc();
            done.invoke(result.map_err(|e| {
                slog::warn!(shared.logger, "snapshot not sent";
                    "region_id" => region_id, "snapshot" => &key, "error" => %e);
                raftstore::Error::Snapshot {
                    region_id,
                    key,
                    detail: e.to_string(),
                }
            }));
        });
    }
}

async fn connect(shared: &Shared, store_id: u64) -> Result<Channel> {
    let addr = shared.addresses.resolve(store_id).await?;
    let url = if addr.contains("://") {
        addr.clone()
    } else {
        format!("http://{addr}")
    };
    let connect_err = |detail: String| Error::Connect {
        store_id,
        addr: addr.clone(),
        detail,
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(Duration::from_millis(shared.cfg.connect_timeout_ms))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    match endpoint.connect().await {
        Ok(channel) => Ok(channel),
        Err(e) => {
            // The store may have moved: ask the scheduler again next time.
            shared.addresses.forget(store_id);
            Err(connect_err(format!(
                "{e}: {:?}",
                std::error::Error::source(&e)
            )))
        }
    }
}

fn client(shared: &Shared, channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(shared.cfg.grpc_max_message_size)
        .max_encoding_message_size(shared.cfg.grpc_max_message_size)
}

/// Drains one target store's queue into a stream, reconnecting with backoff. Ends when every
/// sender of the queue is gone (the transport was dropped).
async fn run_stream(
    shared: Arc<Shared>,
    to_store: u64,
    mut queue: mpsc::Receiver<BatchRaftMessage>,
) {
    let min = Duration::from_millis(shared.cfg.reconnect_backoff_min_ms);
    let max = Duration::from_millis(shared.cfg.reconnect_backoff_max_ms);
    let mut backoff = min;
    let logger = shared.logger.new(slog::o!("to_store" => to_store));
    loop {
        let sent = match connect(&shared, to_store).await {
            Ok(channel) => {
                METRICS.store_connections.inc();
                let sent = stream_batches(&shared, channel, &mut queue, &logger).await;
                METRICS.store_connections.dec();
                match sent {
                    None => return,
                    Some(n) => n,
                }
            }
            Err(e) => {
                slog::info!(logger, "store unreachable"; "error" => %e, "retry_in_ms" => backoff.as_millis() as u64);
                0
            }
        };
        METRICS.store_reconnects.inc();
        if sent > 0 {
            backoff = min;
        }
        // Messages queued while the store is unreachable are stale by the time it is back;
        // raft sends what is still needed again.
        let deadline = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                batch = queue.recv() => match batch {
                    Some(b) => {
                        METRICS.raft_batches_queued.dec();
                        METRICS
                            .raft_messages_dropped
                            .with_label_values(&["unreachable"])
                            .inc_by(b.msgs.len() as u64);
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(max);
    }
}

/// Forwards batches on one stream until it breaks. `None` when the queue is closed for good,
/// otherwise how many batches went out.
async fn stream_batches(
    shared: &Shared,
    channel: Channel,
    queue: &mut mpsc::Receiver<BatchRaftMessage>,
    logger: &slog::Logger,
) -> Option<u64> {
    let (tx, rx) = mpsc::channel::<BatchRaftMessage>(64);
    let mut client = client(shared, channel);
    let call = client.raft(ReceiverStream::new(rx));
    tokio::pin!(call);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            result = &mut call => {
                match result {
                    Ok(_) => slog::info!(logger, "raft stream closed by the peer store"),
                    Err(status) => slog::info!(logger, "raft stream broke"; "status" => %status),
                }
                return Some(sent);
            }
            batch = queue.recv() => {
                let batch = batch?;
                METRICS.raft_batches_queued.dec();
                if tx.send(batch).await.is_err() {
                    return Some(sent);
                }
                sent += 1;
            }
        }
    }
}

async fn send_snapshot(shared: &Shared, msg: RaftMessage, files: SnapshotFiles) -> Result<()> {
    let to_store = msg.to_peer.map_or(0, |p| p.store_id);
    let channel = connect(shared, to_store).await?;
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let header = SnapshotChunk {
        header: Some(SnapshotHeader { message: Some(msg) }),
        data: Vec::new(),
    };
    tx.send(header).await.map_err(|_| Error::Connect {
        store_id: to_store,
        addr: String::new(),
        detail: "snapshot stream closed".into(),
    })?;
    // File reads block: a blocking thread feeds the stream.
    let reader = tokio::task::spawn_blocking(move || -> raftstore::Result<()> {
        for chunk in files.chunks() {
            let data = chunk?;
            if tx
                .blocking_send(SnapshotChunk { header: None, data })
                .is_err()
            {
                // The receiver gave up; its answer says why.
                return Ok(());
            }
        }
        Ok(())
    });
    let answer = client(shared, channel)
        .snapshot(ReceiverStream::new(rx))
        .await;
    let read = reader.await.map_err(|e| Error::Io {
        what: "snapshot reader task".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    read?;
    answer.map(|_| ()).map_err(|status| Error::Connect {
        store_id: to_store,
        addr: String::new(),
        detail: format!("snapshot refused: {}", status.message()),
    })
}
