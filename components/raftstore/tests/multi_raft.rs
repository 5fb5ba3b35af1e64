//! Regions replicated across three in-process stores by real raft-rs `RawNode`s over
//! `PeerStorage`, driven the way the store drives them: per store and per round, every region's
//! ready goes into one raft-log batch with one fsync (group commit), leader appends leave at
//! once, everything else after the fsync. No batch system or network yet: messages are handed
//! over directly, and a test can cut a store off.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use engine::MemEngine;
use proto::metapb::{Peer as PeerMeta, Region};
use proto::raft_serverpb::PeerState;
use raft::eraftpb::{EntryType, Message};
use raft::Storage;
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::raft::Peer;
use raftstore::storage::{CacheBudget, PeerStorage, RAFT_INIT_LOG_INDEX};
use raftstore::Config;

const STORES: u64 = 3;

/// Peer ids encode their place: region * 10 + store.
fn peer_id(region_id: u64, store_id: u64) -> u64 {
    region_id * 10 + store_id
}

fn region(id: u64) -> Region {
    Region {
        id,
        start_key: format!("r{id:04}").into_bytes(),
        end_key: format!("r{:04}", id + 1).into_bytes(),
        peers: (1..=STORES)
            .map(|store_id| PeerMeta {
                id: peer_id(id, store_id),
                store_id,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

struct Store {
    id: u64,
    log: RaftLogEngine,
    peers: BTreeMap<u64, Peer<MemEngine>>,
    applied: BTreeMap<u64, Vec<Vec<u8>>>,
    fsyncs: usize,
    entries_written: usize,
}

impl Store {
    fn open(id: u64, dir: &Path, kv: &MemEngine, regions: u64) -> Store {
        let log = RaftLogEngine::open(&RaftLogConfig::new(dir.join(format!("store-{id}"))))
            .expect("open raft log");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let budget = CacheBudget::new(1 << 20);
        let peers = (1..=regions)
            .map(|r| {
                let storage = PeerStorage::open(
                    kv.clone(),
                    log.clone(),
                    region(r),
                    PeerState::Normal,
                    budget.clone(),
                )
                .expect("open storage");
                let peer =
                    Peer::new(&Config::default(), peer_id(r, id), storage, &logger).expect("peer");
                (r, peer)
            })
            .collect();
        Store {
            id,
            log,
            peers,
            applied: BTreeMap::new(),
            fsyncs: 0,
            entries_written: 0,
        }
    }

    /// One poll round over every region of the store.
    fn round(&mut self, out: &mut Vec<Message>) -> bool {
        let mut batch = self.log.batch();
        let mut committed = Vec::new();
        let mut any = false;
        for (region_id, peer) in &mut self.peers {
            if !peer.has_ready() {
                continue;
            }
            any = true;
            committed.clear();
            self.entries_written += peer
                .handle_ready(&mut batch, out, &mut committed)
                .expect("ready");
            let applied = self.applied.entry(*region_id).or_default();
            for e in &committed {
                if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                    applied.push(e.data.to_vec());
                }
            }
            if let Some(last) = committed.last() {
                peer.on_applied(last.index);
            }
        }
        if !batch.is_empty() {
            self.log.write(&mut batch, true).expect("fsync");
            self.fsyncs += 1;
        }
        for peer in self.peers.values_mut() {
            peer.on_round_persisted(out);
        }
        any
    }
}

struct Cluster {
    stores: Vec<Store>,
    isolated: HashSet<u64>,
}

impl Cluster {
    fn start(dir: &Path, kvs: &[MemEngine], regions: u64) -> Cluster {
        Cluster {
            stores: (1..=STORES)
                .map(|id| Store::open(id, dir, &kvs[id as usize - 1], regions))
                .collect(),
            isolated: HashSet::new(),
        }
    }

    fn peer(&mut self, region_id: u64, store_id: u64) -> &mut Peer<MemEngine> {
        self.stores[store_id as usize - 1]
            .peers
            .get_mut(&region_id)
            .expect("peer")
    }

    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut out = Vec::new();
            let mut moved = false;
            for store in &mut self.stores {
                moved |= store.round(&mut out);
            }
            for msg in out {
                let (region_id, from, to) = (msg.to / 10, msg.from % 10, msg.to % 10);
                if self.isolated.contains(&from) || self.isolated.contains(&to) {
                    continue;
                }
                moved = true;
                self.peer(region_id, to).step(msg).expect("step");
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    fn tick(&mut self) {
        for store in &mut self.stores {
            for peer in store.peers.values_mut() {
                peer.tick();
            }
        }
        self.settle();
    }

    /// Ticks until `region_id` has exactly one leader outside `exclude`.
    fn wait_leader(&mut self, region_id: u64, exclude: &HashSet<u64>) -> u64 {
        for _ in 0..200 {
            let leaders: Vec<u64> = self
                .stores
                .iter()
                .filter(|s| !exclude.contains(&s.id) && s.peers[&region_id].is_leader())
                .map(|s| s.id)
                .collect();
            if let [leader] = leaders[..] {
                return leader;
            }
            self.tick();
        }
        panic!("region {region_id} elected no leader");
    }

    fn applied(&self, store_id: u64, region_id: u64) -> &[Vec<u8>] {
        self.stores[store_id as usize - 1]
            .applied
            .get(&region_id)
            .map_or(&[], Vec::as_slice)
    }
}

fn kvs() -> Vec<MemEngine> {
    (0..STORES).map(|_| MemEngine::new()).collect()
}

#[test]
fn replicate_replace_conflicting_tail_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = kvs();
    let mut cluster = Cluster::start(dir.path(), &kvs, 1);
    let none = HashSet::new();

    let leader = cluster.wait_leader(1, &none);
    for i in 0..50u32 {
        cluster
            .peer(1, leader)
            .propose(format!("a{i}").into_bytes())
            .unwrap();
    }
    cluster.settle();
    for store in 1..=STORES {
        assert_eq!(
            cluster.applied(store, 1).len(),
            50,
            "store {store} applied everything"
        );
    }

    // The old leader, cut off, appends entries nobody else sees.
    cluster.isolated.insert(leader);
    for i in 0..10u32 {
        cluster
            .peer(1, leader)
            .propose(format!("lost{i}").into_bytes())
            .unwrap();
    }
    cluster.settle();
    let old_last = cluster.peer(1, leader).storage().last_index().unwrap();
    assert!(
        old_last >= RAFT_INIT_LOG_INDEX + 60,
        "the isolated leader appended its proposals"
    );
    let new_leader = cluster.wait_leader(1, &[leader].into());
    for i in 0..5u32 {
        cluster
            .peer(1, new_leader)
            .propose(format!("b{i}").into_bytes())
            .unwrap();
    }
    cluster.settle();

    // Heal: the old leader's uncommitted tail is replaced by the new leader's log.
    cluster.isolated.clear();
    for _ in 0..30 {
        cluster.tick();
    }
    let expected: Vec<Vec<u8>> = (0..50u32)
        .map(|i| format!("a{i}").into_bytes())
        .chain((0..5u32).map(|i| format!("b{i}").into_bytes()))
        .collect();
    for store in 1..=STORES {
        assert_eq!(
            cluster.applied(store, 1),
            expected,
            "store {store} applied exactly the committed entries"
        );
    }
    let last = cluster.peer(1, new_leader).storage().last_index().unwrap();
    let log_of = |cluster: &mut Cluster, store: u64| -> Vec<u64> {
        let s = cluster.peer(1, store).storage();
        (RAFT_INIT_LOG_INDEX + 1..=last)
            .map(|i| s.term(i).unwrap())
            .collect()
    };
    let reference = log_of(&mut cluster, new_leader);
    for store in 1..=STORES {
        assert_eq!(
            cluster.peer(1, store).storage().last_index().unwrap(),
            last,
            "store {store}"
        );
        assert_eq!(
            log_of(&mut cluster, store),
            reference,
            "store {store} has the same log"
        );
    }

    // Restart every store from its raft log: hard state and log come back exactly.
    let hard_states: Vec<_> = (1..=STORES)
        .map(|s| cluster.peer(1, s).raw().raft.hard_state())
        .collect();
    drop(cluster);
    let mut cluster = Cluster::start(dir.path(), &kvs, 1);
    for (store, hs) in (1..=STORES).zip(&hard_states) {
        let state = cluster.peer(1, store).storage().initial_state().unwrap();
        assert_eq!(
            (state.hard_state.term, state.hard_state.vote),
            (hs.term, hs.vote)
        );
        assert_eq!(cluster.peer(1, store).storage().last_index().unwrap(), last);
    }
    let leader = cluster.wait_leader(1, &none);
    cluster
        .peer(1, leader)
        .propose(b"after-restart".to_vec())
        .unwrap();
    cluster.settle();
    for store in 1..=STORES {
        // No apply state is persisted in this test, so each peer re-applies its whole log.
        let applied = cluster.applied(store, 1);
        assert_eq!(applied.len(), expected.len() + 1, "store {store}");
        assert_eq!(
            applied.last().map(Vec::as_slice),
            Some(&b"after-restart"[..])
        );
    }
}

#[test]
fn many_regions_share_one_fsync_per_round() {
    let regions = 100;
    let dir = tempfile::tempdir().unwrap();
    let kvs = kvs();
    let mut cluster = Cluster::start(dir.path(), &kvs, regions);
    // Spread leaders over the stores.
    for r in 1..=regions {
        cluster.peer(r, r % STORES + 1).campaign().unwrap();
    }
    cluster.settle();
    let none = HashSet::new();
    let leaders: Vec<u64> = (1..=regions)
        .map(|r| cluster.wait_leader(r, &none))
        .collect();
    let before: Vec<(usize, usize)> = cluster
        .stores
        .iter()
        .map(|s| (s.fsyncs, s.entries_written))
        .collect();
    for (r, leader) in (1..=regions).zip(&leaders) {
        for i in 0..5u32 {
            cluster
                .peer(r, *leader)
                .propose(format!("{r}-{i}").into_bytes())
                .unwrap();
        }
    }
    cluster.settle();
    for r in 1..=regions {
        for store in 1..=STORES {
            assert_eq!(
                cluster.applied(store, r).len(),
                5,
                "region {r} on store {store}"
            );
        }
    }
    for (store, (fsyncs, entries)) in cluster.stores.iter().zip(before) {
        let (fsyncs, entries) = (store.fsyncs - fsyncs, store.entries_written - entries);
        assert_eq!(
            entries,
            5 * regions as usize,
            "store {} wrote every entry once",
            store.id
        );
        // One write per round, whatever the number of regions: the 500 entries of 100 regions
        // take a handful of fsyncs, not one per region.
        assert!(
            fsyncs <= 6,
            "store {} needed {fsyncs} fsyncs for {entries} entries",
            store.id
        );
    }
}
