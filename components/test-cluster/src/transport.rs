//! The channel transport: the raft messages of a round go into the target stores' routers when
//! the round ends, one group per store as a gRPC batch would arrive, after the cluster's
//! filters had their say.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crossbeam::channel::{self, RecvTimeoutError, Sender};
use engine::RocksEngine;
use proto::raft_serverpb::RaftMessage;
use raftstore::router::{deliver_raft_messages, Callback, RaftRouter};
use raftstore::snap::{SnapManager, SnapshotFiles};
use raftstore::Transport;

use crate::filter::{Filter, FilterAction};

pub(crate) type Routers = Arc<RwLock<HashMap<u64, RaftRouter<RocksEngine>>>>;
pub(crate) type Filters = Arc<RwLock<Vec<Arc<dyn Filter>>>>;

fn to_store(msg: &RaftMessage) -> u64 {
    msg.to_peer.map_or(0, |p| p.store_id)
}

/// Delivers messages all bound for store `to`.
fn deliver(routers: &Routers, to: u64, msgs: impl IntoIterator<Item = RaftMessage>) {
    let router = util::read(routers).get(&to).cloned();
    // A stopped store is an unreachable one: the messages are lost, as on a network.
    if let Some(router) = router {
        deliver_raft_messages(&router, msgs);
    }
}

pub struct ChannelTransport {
    /// This clone's messages of the current round (each poller has its own clone).
    pending: Vec<RaftMessage>,
    routers: Routers,
    filters: Filters,
    delayed: Sender<(Instant, RaftMessage)>,
    /// The running stores' snapshot managers: a snapshot is received into the target's (and
    /// counts against its limit on concurrent receives).
    pub(crate) snap_mgrs: Arc<RwLock<HashMap<u64, SnapManager>>>,
    pub(crate) snapshot_faults: Arc<SnapshotFaults>,
}

/// What the transport does to snapshots, and what it saw.
#[derive(Debug, Default)]
pub struct SnapshotFaults {
    /// Flip a byte in the next snapshot chunk sent.
    pub corrupt_next_chunk: AtomicBool,
    pub sent: AtomicU64,
    pub rejected: AtomicU64,
}

impl ChannelTransport {
    pub(crate) fn new(routers: Routers, filters: Filters) -> ChannelTransport {
        let (delayed, rx) = channel::unbounded::<(Instant, RaftMessage)>();
        let delay_routers = routers.clone();
        // Ends when every clone of this transport (every store using it) is gone.
        std::thread::Builder::new()
            .name("test-transport-delay".into())
            .spawn(move || {
                let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
                let mut msgs: HashMap<u64, RaftMessage> = HashMap::new();
                let mut seq = 0u64;
                loop {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|Reverse((due, _))| *due <= now) {
                        if let Some(Reverse((_, id))) = heap.pop() {
                            if let Some(msg) = msgs.remove(&id) {
                                deliver(&delay_routers, to_store(&msg), [msg]);
                            }
                        }
                    }
                    let wait = heap
                        .peek()
                        .map_or(std::time::Duration::from_millis(100), |r| {
                            r.0 .0.saturating_duration_since(now)
                        });
                    match rx.recv_timeout(wait) {
                        Ok((due, msg)) => {
                            seq += 1;
                            msgs.insert(seq, msg);
                            heap.push(Reverse((due, seq)));
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawn the transport's delay thread");
        ChannelTransport {
            pending: Vec::new(),
            routers,
            filters,
            delayed,
            snap_mgrs: Arc::default(),
            snapshot_faults: Arc::default(),
        }
    }

    fn action(&self, msg: &RaftMessage) -> FilterAction {
        let filters = util::read(&self.filters).clone();
        for filter in &filters {
            match filter.action(msg) {
                FilterAction::Pass => {}
                other => return other,
            }
        }
        FilterAction::Pass
    }
}

impl Clone for ChannelTransport {
    fn clone(&self) -> Self {
        ChannelTransport {
            pending: Vec::new(),
            routers: self.routers.clone(),
            filters: self.filters.clone(),
            delayed: self.delayed.clone(),
            snap_mgrs: self.snap_mgrs.clone(),
            snapshot_faults: self.snapshot_faults.clone(),
        }
    }
}

impl Transport for ChannelTransport {
    fn send(&mut self, msg: RaftMessage) {
        match self.action(&msg) {
            FilterAction::Pass => self.pending.push(msg),
            FilterAction::Drop => {}
            FilterAction::Delay(d) => {
                let _ = self.delayed.send((Instant::now() + d, msg));
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Stable: each store's messages keep their order.
        self.pending.sort_by_key(to_store);
        let mut msgs = self.pending.drain(..).peekable();
        while let Some(first) = msgs.next() {
            let to = to_store(&first);
            let mut group = vec![first];
            while let Some(next) = msgs.next_if(|m| to_store(m) == to) {
                group.push(next);
            }
            deliver(&self.routers, to, group);
        }
    }

    fn discard(&mut self) {
        self.pending.clear();
    }

    /// Streams the files chunk by chunk over a channel to the receiving store's snapshot
    /// directory (as a network would), then delivers the message.
    fn send_snapshot(&mut self, msg: RaftMessage, files: SnapshotFiles, done: Callback<()>) {
        if self.action(&msg) == FilterAction::Drop {
            done.invoke(Err(raftstore::Error::Snapshot {
                region_id: msg.region_id,
                key: files.key.to_string(),
                detail: "dropped by a test filter".into(),
            }));
            return;
        }
        let to = msg.to_peer.map_or(0, |p| p.store_id);
        let target = util::read(&self.snap_mgrs).get(&to).cloned();
        let Some(target) = target else {
            done.invoke(Err(raftstore::Error::Snapshot {
                region_id: msg.region_id,
                key: files.key.to_string(),
                detail: format!("store {to} is not running"),
            }));
            return;
        };
        let routers = self.routers.clone();
        let faults = self.snapshot_faults.clone();
        let send = move || {
            faults.sent.fetch_add(1, Ordering::Relaxed);
            let (key, meta) = (files.key, files.meta.clone());
            let (tx, rx) = channel::bounded::<raftstore::Result<Vec<u8>>>(4);
            let sender_faults = faults.clone();
            let sender = std::thread::spawn(move || {
                for mut chunk in files.chunks() {
                    if let Ok(bytes) = chunk.as_mut() {
                        if !bytes.is_empty()
                            && sender_faults
                                .corrupt_next_chunk
                                .swap(false, Ordering::Relaxed)
                        {
                            let mid = bytes.len() / 2;
                            bytes[mid] ^= 0x5a;
                        }
                    }
                    if tx.send(chunk).is_err() {
                        return;
                    }
                }
            });
            let received = target.receive(key, &meta, rx);
            let _ = sender.join();
            match received {
                Ok(()) => {
                    deliver(&routers, to_store(&msg), [msg]);
                    done.invoke(Ok(()));
                }
                Err(e) => {
                    faults.rejected.fetch_add(1, Ordering::Relaxed);
                    done.invoke(Err(e));
                }
            }
        };
        // If no thread can be started the callback is dropped with the closure, and raft-rs
        // sends the snapshot again later.
        let _ = std::thread::Builder::new()
            .name("test-snapshot-send".into())
            .spawn(send);
    }
}
