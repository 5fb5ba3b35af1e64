//! Store-to-store sending. Each raft poller owns a [`GrpcTransport`] clone that collects the
//! round's messages per target store and, at `flush`, queues one batch per store. One task per
//! target store drains its queue into a long-lived client stream, reconnecting with backoff
//! when the stream breaks. Snapshots go on a stream of their own, one per snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prost::Message;
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
        if let Some((addr, at)) = util::lock(&self.cached).get(&store_id) {
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
        util::lock(&self.cached).insert(store_id, (addr.clone(), Instant::now()));
        Ok(addr)
    }

    fn forget(&self, store_id: u64) {
        util::lock(&self.cached).remove(&store_id);
    }
}

/// The send queue of one peer store: batches with their sizes, and the bytes queued.
#[derive(Clone)]
struct StoreQueue {
    tx: mpsc::Sender<(BatchRaftMessage, usize)>,
    bytes: Arc<AtomicUsize>,
}

struct Shared {
    store_id: u64,
    cfg: Config,
    runtime: tokio::runtime::Handle,
    addresses: AddressCache,
    queues: Mutex<HashMap<u64, StoreQueue>>,
    logger: slog::Logger,
}

/// A queue idle this long (nothing to send) is closed with its task; the next message to
/// that store opens a new one. Stores that left the cluster stop costing a task.
const IDLE_QUEUE: Duration = Duration::from_secs(300);

/// Room kept below the gRPC message limit for a batch's framing.
const BATCH_HEADROOM: usize = 1 << 20;

/// How long a snapshot receiver may go without a chunk before the transfer is abandoned.
pub const SNAPSHOT_IDLE: Duration = Duration::from_secs(30);

/// The gRPC transport of one store. Cheap to clone; each clone batches its own messages.
pub struct GrpcTransport {
    shared: Arc<Shared>,
    /// Per target store: messages of this round and their encoded bytes.
    pending: HashMap<u64, (Vec<RaftMessage>, usize)>,
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

    fn queue(&self, to_store: u64) -> StoreQueue {
        let mut queues = util::lock(&self.shared.queues);
        if let Some(q) = queues.get(&to_store) {
            if !q.tx.is_closed() {
                return q.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.shared.cfg.raft_msg_queue_capacity);
        let queue = StoreQueue {
            tx,
            bytes: Arc::default(),
        };
        let shared = self.shared.clone();
        self.shared
            .runtime
            .spawn(run_stream(shared, to_store, rx, queue.bytes.clone()));
        queues.insert(to_store, queue.clone());
        queue
    }

    fn send_batch(&self, to_store: u64, msgs: Vec<RaftMessage>, bytes: usize) {
        let count = msgs.len() as u64;
        let queue = self.queue(to_store);
        // Counted before it is queued: the stream's task subtracts a batch as soon as it takes
        // it, which could otherwise come first and wrap the counter below zero (seen with two
        // sending threads, a raft poller and the store writer).
        let queued = queue.bytes.fetch_add(bytes, Ordering::Relaxed);
        if queued.saturating_add(bytes) > self.shared.cfg.raft_msg_queue_bytes {
            queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
            METRICS
                .raft_messages_dropped
                .with_label_values(&["queue_bytes"])
                .inc_by(count);
            return;
        }
        // The gauges too, before: the stream's task lowers them as it takes the batch.
        METRICS.raft_batches_queued.inc();
        METRICS.raft_bytes_queued.add(bytes as i64);
        let sent = queue.tx.try_send((BatchRaftMessage { msgs }, bytes));
        if sent.is_err() {
            queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
            METRICS.raft_batches_queued.dec();
            METRICS.raft_bytes_queued.sub(bytes as i64);
        }
        match sent {
            Ok(()) => {
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

    fn max_batch_bytes(&self) -> usize {
        self.shared
            .cfg
            .grpc_max_message_size
            .saturating_sub(BATCH_HEADROOM)
            .max(1)
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
        let size = msg.encoded_len() + 8;
        let max_bytes = self.max_batch_bytes();
        let max_msgs = self.shared.cfg.raft_msg_max_batch;
        let (msgs, bytes) = self.pending.entry(to_store).or_default();
        // A batch must fit one gRPC message: cut it before it would not.
        if !msgs.is_empty() && *bytes + size > max_bytes {
            let (full, full_bytes) = (std::mem::take(msgs), std::mem::take(bytes));
            self.send_batch(to_store, full, full_bytes);
        }
        let (msgs, bytes) = self.pending.entry(to_store).or_default();
        msgs.push(msg);
        *bytes += size;
        if msgs.len() >= max_msgs {
            let (full, full_bytes) = (std::mem::take(msgs), std::mem::take(bytes));
            self.send_batch(to_store, full, full_bytes);
        }
    }

    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for (to_store, (msgs, bytes)) in pending.iter_mut() {
            if !msgs.is_empty() {
                let (full, full_bytes) = (std::mem::take(msgs), std::mem::take(bytes));
                self.send_batch(*to_store, full, full_bytes);
            }
        }
        self.pending = pending;
    }

    fn discard(&mut self) {
        self.pending.clear();
    }

    fn send_snapshot(&mut self, msg: RaftMessage, files: SnapshotFiles, done: Callback<()>) {
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            let region_id = msg.region_id;
            let key = files.key.to_string();
            let result = send_snapshot(&shared, msg, files).await;
            let label = match &result {
                Ok(()) => "ok",
                Err(raftstore::Error::ServerIsBusy { .. }) => "busy",
                Err(_) => "failed",
            };
            METRICS.snapshots_sent.with_label_values(&[label]).inc();
            if let Err(e) = &result {
                slog::warn!(shared.logger, "snapshot not sent";
                    "region_id" => region_id, "snapshot" => &key, "error" => %e);
            }
            done.invoke(result);
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

type Queue = mpsc::Receiver<(BatchRaftMessage, usize)>;

fn dequeued(bytes: &AtomicUsize, size: usize) {
    bytes.fetch_sub(size, Ordering::Relaxed);
    METRICS.raft_batches_queued.dec();
    METRICS.raft_bytes_queued.sub(size as i64);
}

/// Takes the queue out of the transport if it is still this task's and empty. Messages
/// queued after this are sent by a new task.
fn retire(shared: &Shared, to_store: u64, bytes: &Arc<AtomicUsize>, queue: &Queue) -> bool {
    let mut queues = util::lock(&shared.queues);
    let ours = queues
        .get(&to_store)
        .is_some_and(|q| Arc::ptr_eq(&q.bytes, bytes));
    if ours && queue.is_empty() {
        queues.remove(&to_store);
        return true;
    }
    !ours
}

/// Drains one target store's queue into a stream, connecting when there is something to
/// send and reconnecting with backoff. Ends when the queue has been idle for a while.
async fn run_stream(shared: Arc<Shared>, to_store: u64, mut queue: Queue, bytes: Arc<AtomicUsize>) {
    let min = Duration::from_millis(shared.cfg.reconnect_backoff_min_ms);
    let max = Duration::from_millis(shared.cfg.reconnect_backoff_max_ms);
    let mut backoff = min;
    let logger = shared.logger.new(slog::o!("to_store" => to_store));
    loop {
        let first = match tokio::time::timeout(IDLE_QUEUE, queue.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                if retire(&shared, to_store, &bytes, &queue) {
                    return;
                }
                continue;
            }
        };
        dequeued(&bytes, first.1);
        let sent = match connect(&shared, to_store).await {
            Ok(channel) => {
                METRICS.store_connections.inc();
                let sent = stream_batches(
                    &shared, to_store, channel, first.0, &mut queue, &bytes, &logger,
                )
                .await;
                METRICS.store_connections.dec();
                match sent {
                    None => return,
                    Some(n) => n,
                }
            }
            Err(e) => {
                slog::info!(logger, "store unreachable"; "error" => %e, "retry_in_ms" => backoff.as_millis() as u64);
                METRICS
                    .raft_messages_dropped
                    .with_label_values(&["unreachable"])
                    .inc_by(first.0.msgs.len() as u64);
                0
            }
        };
        METRICS.store_reconnects.inc();
        if sent > 1 {
            backoff = min;
        }
        // Messages queued while the store is unreachable are stale by the time it is back;
        // raft sends what is still needed again.
        let deadline = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                batch = queue.recv() => match batch {
                    Some((b, size)) => {
                        dequeued(&bytes, size);
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

/// Sends `first`, then forwards batches on one stream until it breaks. `None` when the queue
/// is closed for good, otherwise how many batches went out.
async fn stream_batches(
    shared: &Shared,
    to_store: u64,
    channel: Channel,
    first: BatchRaftMessage,
    queue: &mut Queue,
    bytes: &AtomicUsize,
    logger: &slog::Logger,
) -> Option<u64> {
    let (tx, rx) = mpsc::channel::<BatchRaftMessage>(16);
    let mut client = client(shared, channel);
    let call = client.raft(ReceiverStream::new(rx));
    tokio::pin!(call);
    if tx.send(first).await.is_err() {
        return Some(0);
    }
    let mut sent = 1u64;
    loop {
        tokio::select! {
            result = &mut call => {
                match result {
                    Ok(_) => slog::info!(logger, "raft stream closed by the peer store"),
                    Err(status) => {
                        slog::info!(logger, "raft stream broke"; "status" => %status);
                        // Another store answers at that address now.
                        if status.code() == tonic::Code::FailedPrecondition {
                            shared.addresses.forget(to_store);
                        }
                    }
                }
                return Some(sent);
            }
            batch = queue.recv() => {
                let (batch, size) = batch?;
                dequeued(bytes, size);
                if tx.send(batch).await.is_err() {
                    return Some(sent);
                }
                sent += 1;
            }
        }
    }
}

async fn send_snapshot(
    shared: &Shared,
    msg: RaftMessage,
    files: SnapshotFiles,
) -> raftstore::Result<()> {
    let to_store = msg.to_peer.map_or(0, |p| p.store_id);
    let region_id = msg.region_id;
    let key = files.key.to_string();
    let failed = |detail: String| raftstore::Error::Snapshot {
        region_id,
        key: key.clone(),
        detail,
    };
    let total: u64 = files.meta.cf_files.iter().map(|f| f.size).sum();
    // Generous: a stalled receiver must not hold the send slot forever.
    let deadline = Duration::from_secs(60) + Duration::from_millis(total / 1024);
    let channel = connect(shared, to_store)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let header = SnapshotChunk {
        header: Some(SnapshotHeader { message: Some(msg) }),
        data: Vec::new(),
    };
    tx.send(header)
        .await
        .map_err(|_| failed("snapshot stream closed".into()))?;
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
    let mut client = client(shared, channel);
    let answer = tokio::time::timeout(deadline, client.snapshot(ReceiverStream::new(rx))).await;
    let read = reader
        .await
        .map_err(|e| failed(format!("snapshot reader task: {e}")))?;
    read?;
    match answer {
        Err(_) => Err(failed(format!("not done within {deadline:?}"))),
        Ok(Ok(_)) => Ok(()),
        // The receiver has no room now: keep the snapshot and try again later.
        Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
            Err(raftstore::Error::ServerIsBusy {
                region_id,
                reason: format!("store {to_store}: {}", status.message()),
            })
        }
        Ok(Err(status)) => Err(failed(format!(
            "store {to_store} refused it: {}",
            status.message()
        ))),
    }
}
