//! Regions replicated across three in-process stores by real raft-rs `RawNode`s over
//! `PeerStorage`, driven the way the store drives them: per store and per round, every region's
//! ready goes into one raft-log batch with one fsync (group commit), leader appends leave at
//! once, everything else after the fsync. Without the batch system or a network: messages are handed
//! over directly, and a test can cut a store off.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use engine::{keys, KvEngine, MemEngine, Peekable, WriteBatch, CF_DEFAULT};
use prost::Message as _;
use proto::build;
use proto::metapb::Region;
use proto::raft_cmdpb::{request::Cmd, PutRequest, RaftCmdRequest, RaftRequestHeader, Request};
use proto::raft_serverpb::PeerState;
use raft::eraftpb::{EntryType, Message};
use raft::Storage;
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::operation::apply::{apply_entries, Applied};
use raftstore::raft::Peer;
use raftstore::storage::{CacheBudget, PeerStorage, RAFT_INIT_LOG_INDEX};
use raftstore::Config;

const STORES: u64 = 3;

/// Peer ids encode their place: region * 10 + store.
fn peer_id(region_id: u64, store_id: u64) -> u64 {
    region_id * 10 + store_id
}

fn region(id: u64) -> Region {
    build::region(id)
        .range(format!("r{id:04}"), format!("r{:04}", id + 1))
        .peers((1..=STORES).map(|store_id| build::peer(peer_id(id, store_id), store_id)))
        .build()
}

/// A put of `key` = `key` in `region_id`, as a proposal carries it.
fn put_cmd(region_id: u64, key: &str) -> Vec<u8> {
    let key = format!("r{region_id:04}/{key}").into_bytes();
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id,
            ..Default::default()
        }),
        requests: vec![Request {
            cmd: Some(Cmd::Put(PutRequest {
                cf: String::new(),
                key: key.clone(),
                value: key,
            })),
        }],
        admin_request: None,
    }
    .encode_to_vec()
}

struct Store {
    id: u64,
    kv: MemEngine,
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
                // No log GC here: the test compares the applied entries with what it proposed.
                let config = Config {
                    raft_log_gc_tick_interval_ms: 1 << 40,
                    ..Default::default()
                };
                let peer = Peer::new(
                    &config,
                    id,
                    peer_id(r, id),
                    storage,
                    Instant::now(),
                    &logger,
                )
                .expect("peer");
                (r, peer)
            })
            .collect();
        Store {
            id,
            kv: kv.clone(),
            log,
            peers,
            applied: BTreeMap::new(),
            fsyncs: 0,
            entries_written: 0,
        }
    }

    /// One poll round over every region of the store: one raft-log write for all regions'
    /// entries, then one KV write applying all regions' committed entries with their apply
    /// states.
    fn round(&mut self, out: &mut Vec<Message>) -> bool {
        let mut batch = self.log.batch();
        let mut kv_batch = self.kv.write_batch();
        let mut results: Vec<Applied> = Vec::new();
        let mut applied_to = Vec::new();
        let mut any = false;
        for (region_id, peer) in &mut self.peers {
            if !peer.has_ready() {
                continue;
            }
            any = true;
            let ready = peer
                .handle_ready(&mut batch, out, Instant::now())
                .expect("ready");
            self.entries_written += ready.entries_written;
            let Some(committed) = ready.committed else {
                continue;
            };
            let committed = committed.entries;
            let Some(last) = committed.last() else {
                continue;
            };
            let mut region = peer.storage().region().clone();
            let mut state = *peer.storage().apply_state();
            results.clear();
            apply_entries::<MemEngine>(
                &self.kv,
                &mut region,
                &mut state,
                &committed,
                &mut kv_batch,
                &mut results,
            )
            .expect("apply");
            let applied = self.applied.entry(*region_id).or_default();
            for (e, r) in committed.iter().zip(&results) {
                if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                    assert!(r.result.is_ok(), "{:?}", r.result);
                    applied.push(e.data.to_vec());
                }
            }
            peer.storage_mut().set_apply_state(state);
            applied_to.push((*region_id, last.index));
        }
        if !batch.is_empty() {
            self.log.write(&mut batch, true).expect("fsync");
            self.fsyncs += 1;
        }
        if !kv_batch.is_empty() {
            self.kv.write(&mut kv_batch, false).expect("apply write");
        }
        for (region_id, index) in applied_to {
            if let Some(peer) = self.peers.get_mut(&region_id) {
                peer.on_applied(index);
            }
        }
        for peer in self.peers.values_mut() {
            peer.on_round_persisted(out);
        }
        any
    }

    fn get(&self, region_id: u64, key: &str) -> Option<Vec<u8>> {
        let key = format!("r{region_id:04}/{key}").into_bytes();
        self.kv
            .get_value_cf(CF_DEFAULT, &keys::data_key(&key))
            .expect("get")
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
                peer.tick(Instant::now());
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

    /// Proposes puts of `{prefix}0` .. `{prefix}{count-1}` to `region_id`'s peer on `store_id`.
    fn propose_puts(&mut self, region_id: u64, store_id: u64, prefix: &str, count: u32) {
        for i in 0..count {
            self.peer(region_id, store_id)
                .propose(put_cmd(region_id, &format!("{prefix}{i}")))
                .expect("propose");
        }
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
    cluster.propose_puts(1, leader, "a", 50);
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
    cluster.propose_puts(1, leader, "lost", 10);
    cluster.settle();
    let old_last = cluster.peer(1, leader).storage().last_index().unwrap();
    assert!(
        old_last >= RAFT_INIT_LOG_INDEX + 60,
        "the isolated leader appended its proposals"
    );
    let new_leader = cluster.wait_leader(1, &[leader].into());
    cluster.propose_puts(1, new_leader, "b", 5);
    cluster.settle();

    // Heal: the old leader's uncommitted tail is replaced by the new leader's log.
    cluster.isolated.clear();
    for _ in 0..30 {
        cluster.tick();
    }
    let expected: Vec<Vec<u8>> = (0..50u32)
        .map(|i| put_cmd(1, &format!("a{i}")))
        .chain((0..5u32).map(|i| put_cmd(1, &format!("b{i}"))))
        .collect();
    for store in 1..=STORES {
        assert_eq!(
            cluster.applied(store, 1),
            expected,
            "store {store} applied exactly the committed entries"
        );
        let s = &cluster.stores[store as usize - 1];
        assert_eq!(s.get(1, "a49"), Some(b"r0001/a49".to_vec()));
        assert_eq!(s.get(1, "b4"), Some(b"r0001/b4".to_vec()));
        assert_eq!(
            s.get(1, "lost0"),
            None,
            "the lost tail never reached the KV engine"
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
    for store in 1..=STORES {
        let applied_index = cluster.peer(1, store).storage().applied_index();
        assert!(
            applied_index >= RAFT_INIT_LOG_INDEX + 55,
            "store {store} recovered its applied index"
        );
    }
    let leader = cluster.wait_leader(1, &none);
    cluster
        .peer(1, leader)
        .propose(put_cmd(1, "after-restart"))
        .unwrap();
    cluster.settle();
    for store in 1..=STORES {
        // The apply state was persisted with the data, so nothing is applied twice.
        assert_eq!(
            cluster.applied(store, 1),
            vec![put_cmd(1, "after-restart")],
            "store {store}"
        );
        let s = &cluster.stores[store as usize - 1];
        assert_eq!(
            s.get(1, "after-restart"),
            Some(b"r0001/after-restart".to_vec())
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
        cluster.propose_puts(r, *leader, "k", 5);
    }
    cluster.settle();
    for r in 1..=regions {
        for store in 1..=STORES {
            assert_eq!(
                cluster.applied(store, r).len(),
                5,
                "region {r} on store {store}"
            );
            let s = &cluster.stores[store as usize - 1];
            assert_eq!(s.get(r, "k4"), Some(format!("r{r:04}/k4").into_bytes()));
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
