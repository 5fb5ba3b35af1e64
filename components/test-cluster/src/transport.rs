//! The channel transport: a raft message goes straight into the target store's router, after
//! the cluster's filters had their say.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crossbeam::channel::{self, RecvTimeoutError, Sender};
use engine::RocksEngine;
use proto::raft_serverpb::RaftMessage;
use raftstore::router::{deliver_raft_message, RaftRouter};
use raftstore::Transport;

use crate::filter::{Filter, FilterAction};

pub(crate) type Routers = Arc<RwLock<HashMap<u64, RaftRouter<RocksEngine>>>>;
pub(crate) type Filters = Arc<RwLock<Vec<Arc<dyn Filter>>>>;

fn deliver(routers: &Routers, msg: RaftMessage) {
    let to = msg.to_peer.map_or(0, |p| p.store_id);
    let router = routers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&to)
        .cloned();
    // A stopped store is an unreachable one: the message is lost, as on a network.
    if let Some(router) = router {
        deliver_raft_message(&router, msg);
    }
}

#[derive(Clone)]
pub struct ChannelTransport {
    routers: Routers,
    filters: Filters,
    delayed: Sender<(Instant, RaftMessage)>,
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
                                deliver(&delay_routers, msg);
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
            routers,
            filters,
            delayed,
        }
    }
}

impl Transport for ChannelTransport {
    fn send(&mut self, msg: RaftMessage) {
        let filters = self
            .filters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for filter in &filters {
            match filter.action(&msg) {
                FilterAction::Pass => {}
                FilterAction::Drop => return,
                FilterAction::Delay(d) => {
                    let _ = self.delayed.send((Instant::now() + d, msg));
                    return;
                }
            }
        }
        deliver(&self.routers, msg);
    }
}
