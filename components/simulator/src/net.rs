//! The simulated network: every raft message between stores waits in one queue for its
//! delivery time, chosen by the seeded random stream, so messages are delayed, reordered,
//! duplicated and dropped the same way every run of a seed. Partitions cut links one way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use proto::raft_serverpb::RaftMessage;
use raftstore::router::Callback;
use raftstore::snap::{SnapManager, SnapshotFiles};
use raftstore::Transport;
use rand::rngs::StdRng;
use rand::Rng;

/// How links behave when no fault is on.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Delivery delay, uniformly in `[min, max]` ms: messages sent close together reorder.
    pub delay_ms: (u64, u64),
    /// Chance in a thousand that a message is lost.
    pub drop_per_mille: u32,
    /// Chance in a thousand that a message is delivered twice.
    pub duplicate_per_mille: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay_ms: (1, 3),
            drop_per_mille: 0,
            duplicate_per_mille: 0,
        }
    }
}

/// What the network did, for the report.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub snapshots: u64,
    pub snapshots_refused: u64,
}

pub(crate) struct NetState {
    rng: StdRng,
    now_ms: u64,
    seq: u64,
    /// (delivery time, sequence) → (from store, message).
    in_flight: BTreeMap<(u64, u64), (u64, RaftMessage)>,
    /// Links cut one way: (from, to).
    pub(crate) cut: BTreeSet<(u64, u64)>,
    /// Stores whose links lose every message that carries entries or a snapshot, while
    /// small ones (heartbeats, votes, answers) pass: a path-MTU black hole. The leader keeps
    /// its lease while nothing it proposes commits.
    pub(crate) big_lost: BTreeSet<u64>,
    pub(crate) link: LinkConfig,
    /// The running stores' snapshot directories (a snapshot is received into the target's).
    snap_mgrs: BTreeMap<u64, SnapManager>,
    pub(crate) stats: NetStats,
}

impl NetState {
    fn submit(&mut self, from: u64, msg: RaftMessage) {
        self.stats.sent += 1;
        let to = to_store(&msg);
        let big = msg
            .message
            .as_ref()
            .is_some_and(|m| !m.entries.is_empty() || m.snapshot.is_some());
        let big_lost = big && (self.big_lost.contains(&from) || self.big_lost.contains(&to));
        if big_lost
            || self.cut.contains(&(from, to))
            || self.rng.gen_range(0..1000) < self.link.drop_per_mille
        {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_range(0..1000) < self.link.duplicate_per_mille {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (min, max) = self.link.delay_ms;
            let at = self.now_ms + self.rng.gen_range(min..=max.max(min));
            self.seq += 1;
            self.in_flight.insert((at, self.seq), (from, msg.clone()));
        }
    }
}

fn to_store(msg: &RaftMessage) -> u64 {
    msg.to_peer.map_or(0, |p| p.store_id)
}

/// The network every store of a simulation sends through. Cheap to clone.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
}

impl SimNetwork {
    pub(crate) fn new(rng: StdRng, link: LinkConfig) -> SimNetwork {
        SimNetwork {
            state: Arc::new(Mutex::new(NetState {
                rng,
                now_ms: 0,
                seq: 0,
                in_flight: BTreeMap::new(),
                cut: BTreeSet::new(),
                big_lost: BTreeSet::new(),
                link,
                snap_mgrs: BTreeMap::new(),
                stats: NetStats::default(),
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, NetState> {
        util::lock(&self.state)
    }

    /// The transport of store `store_id`.
    pub fn transport(&self, store_id: u64) -> SimTransport {
        SimTransport {
            from: store_id,
            net: self.clone(),
        }
    }

    /// Messages due at `now_ms`, in delivery order, minus those whose link was cut while
    /// they were in flight.
    pub(crate) fn due(&self, now_ms: u64) -> Vec<RaftMessage> {
        let mut state = self.lock();
        state.now_ms = now_ms;
        let later = state.in_flight.split_off(&(now_ms + 1, 0));
        let due = std::mem::replace(&mut state.in_flight, later);
        let mut out = Vec::with_capacity(due.len());
        for (_, (from, msg)) in due {
            if state.cut.contains(&(from, to_store(&msg))) {
                state.stats.dropped += 1;
            } else {
                state.stats.delivered += 1;
                out.push(msg);
            }
        }
        out
    }

    pub(crate) fn set_cut(&self, from: u64, to: u64, cut: bool) {
        let mut state = self.lock();
        if cut {
            state.cut.insert((from, to));
        } else {
            state.cut.remove(&(from, to));
        }
    }

    pub(crate) fn heal(&self) {
        let mut state = self.lock();
        state.cut.clear();
        state.big_lost.clear();
        state.link = LinkConfig::default();
    }

    pub(crate) fn set_snap_manager(&self, store_id: u64, mgr: Option<SnapManager>) {
        let mut state = self.lock();
        match mgr {
            Some(mgr) => state.snap_mgrs.insert(store_id, mgr),
            None => state.snap_mgrs.remove(&store_id),
        };
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats.clone()
    }
}

/// One store's end of the network.
#[derive(Clone)]
pub struct SimTransport {
    from: u64,
    net: SimNetwork,
}

impl Transport for SimTransport {
    fn send(&mut self, msg: RaftMessage) {
        self.net.lock().submit(self.from, msg);
    }

    /// The snapshot's files are received into the target's directory at once (a cut link or
    /// a stopped target refuses it); its message then travels like any other.
    fn send_snapshot(&mut self, msg: RaftMessage, files: SnapshotFiles, done: Callback<()>) {
        let to = to_store(&msg);
        let mut state = self.net.lock();
        let refused = |detail: &str| raftstore::Error::Snapshot {
            region_id: msg.region_id,
            key: files.key.to_string(),
            detail: detail.into(),
        };
        let target = state.snap_mgrs.get(&to).cloned();
        let result = match target {
            _ if state.cut.contains(&(self.from, to)) => Err(refused("link cut")),
            None => Err(refused("target store is down")),
            Some(target) => target.receive(files.key, &files.meta, files.chunks()),
        };
        match result {
            Ok(()) => {
                state.stats.snapshots += 1;
                state.submit(self.from, msg);
            }
            Err(_) => state.stats.snapshots_refused += 1,
        }
        drop(state);
        done.invoke(result);
    }
}
