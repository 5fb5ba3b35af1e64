//! PeerStorage under a real raft-rs `RawNode` with async ready (`advance_append_async` +
//! `on_persist_ready`): three peers of one region, each with its own raft-engine and KV engine,
//! exchanging messages in process. Shows elections, replication, a leader's conflicting tail
//! being replaced, and recovery from the raft log after a restart.

use std::collections::HashSet;
use std::path::Path;

use engine::MemEngine;
use proto::metapb::{Peer, Region};
use proto::raft_serverpb::PeerState;
use raft::eraftpb::{EntryType, Message};
use raft::{Config, RawNode, StateRole, Storage};
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::storage::{CacheBudget, PeerStorage, RAFT_INIT_LOG_INDEX};

fn region() -> Region {
    Region {
        id: 1,
        peers: (1..=3)
            .map(|id| Peer {
                id,
                store_id: id,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

struct Node {
    id: u64,
    raw: RawNode<PeerStorage<MemEngine>>,
    log: RaftLogEngine,
    applied: Vec<Vec<u8>>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn open_node(id: u64, dir: &Path, kv: &MemEngine) -> Node {
    let log =
        RaftLogEngine::open(&RaftLogConfig::new(dir.join(format!("raft-{id}")))).expect("open log");
    let storage = PeerStorage::open(
        kv.clone(),
        log.clone(),
        region(),
        PeerState::Normal,
        CacheBudget::new(1 << 20),
    )
    .expect("open storage");
    let cfg = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        pre_vote: true,
        check_quorum: true,
        max_inflight_msgs: 64,
        max_size_per_msg: 1 << 20,
        applied: storage.applied_index(),
        ..Default::default()
    };
    let raw = RawNode::new(&cfg, storage, &logger()).expect("raw node");
    Node {
        id,
        raw,
        log,
        applied: Vec::new(),
    }
}

impl Node {
    /// One ready, handled the way the store does: leader messages leave at once, entries and
    /// hard state go into one raft-log batch, persisted messages leave after the fsync.
    fn handle_ready(&mut self, outbox: &mut Vec<Message>) -> bool {
        if !self.raw.has_ready() {
            return false;
        }
        let mut rd = self.raw.ready();
        assert!(rd.snapshot().is_empty(), "no snapshots in this test");
        outbox.extend(rd.take_messages());
        for e in rd.take_committed_entries() {
            if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                self.applied.push(e.data.to_vec());
            }
        }
        let entries = rd.take_entries();
        let mut batch = self.log.batch();
        let store = self.raw.mut_store();
        store.append(&entries, &mut batch).expect("append");
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs);
        }
        if !entries.is_empty() || rd.hs().is_some() {
            store.write_raft_state(&mut batch).expect("raft state");
        }
        let persisted = rd.take_persisted_messages();
        let number = rd.number();
        self.raw.advance_append_async(rd);
        self.log.write(&mut batch, true).expect("fsync");
        if let Some(last) = entries.last() {
            self.raw.mut_store().on_persisted(last.index, last.term);
        }
        self.raw.on_persist_ready(number);
        outbox.extend(persisted);
        self.raw.advance_apply();
        true
    }
}

struct Cluster {
    nodes: Vec<Node>,
    /// Peers whose messages are dropped, both ways.
    isolated: HashSet<u64>,
}

impl Cluster {
    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    /// Handles readies and delivers messages until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut outbox = Vec::new();
            let mut progressed = false;
            for node in &mut self.nodes {
                while node.handle_ready(&mut outbox) {
                    progressed = true;
                }
            }
            for msg in outbox {
                if self.isolated.contains(&msg.from) || self.isolated.contains(&msg.to) {
                    continue;
                }
                progressed = true;
                self.node(msg.to).raw.step(msg).expect("step");
            }
            if !progressed {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    fn tick_until_leader(&mut self, exclude: &HashSet<u64>) -> u64 {
        for _ in 0..200 {
            for node in &mut self.nodes {
                node.raw.tick();
            }
            self.settle();
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter(|n| n.raw.raft.state == StateRole::Leader && !exclude.contains(&n.id))
                .map(|n| n.id)
                .collect();
            if let [leader] = leaders[..] {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    fn propose(&mut self, leader: u64, data: &[u8]) {
        self.node(leader)
            .raw
            .propose(vec![], data.to_vec())
            .expect("propose");
    }
}

fn start(dir: &Path, kvs: &[MemEngine]) -> Cluster {
    Cluster {
        nodes: (1..=3)
            .map(|id| open_node(id, dir, &kvs[id as usize - 1]))
            .collect(),
        isolated: HashSet::new(),
    }
}

#[test]
fn replicate_replace_conflicting_tail_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kvs: Vec<MemEngine> = (0..3).map(|_| MemEngine::new()).collect();
    let mut cluster = start(dir.path(), &kvs);
    let none = HashSet::new();

    let leader = cluster.tick_until_leader(&none);
    for i in 0..50u32 {
        cluster.propose(leader, format!("a{i}").as_bytes());
    }
    cluster.settle();
    for node in &cluster.nodes {
        assert_eq!(
            node.applied.len(),
            50,
            "node {} applied everything",
            node.id
        );
    }

    // The old leader, cut off, appends entries nobody else sees.
    cluster.isolated.insert(leader);
    for i in 0..10u32 {
        cluster.propose(leader, format!("lost{i}").as_bytes());
    }
    cluster.settle();
    let old_last = cluster.node(leader).raw.store().last_index().unwrap();
    assert!(
        old_last >= 55 + RAFT_INIT_LOG_INDEX,
        "the isolated leader appended its proposals"
    );
    let excluded: HashSet<u64> = [leader].into();
    let new_leader = cluster.tick_until_leader(&excluded);
    assert_ne!(new_leader, leader);
    for i in 0..5u32 {
        cluster.propose(new_leader, format!("b{i}").as_bytes());
    }
    cluster.settle();

    // Heal: the old leader's uncommitted tail is replaced by the new leader's log.
    cluster.isolated.clear();
    for _ in 0..30 {
        for node in &mut cluster.nodes {
            node.raw.tick();
        }
        cluster.settle();
    }
    let expected: Vec<Vec<u8>> = (0..50u32)
        .map(|i| format!("a{i}").into_bytes())
        .chain((0..5u32).map(|i| format!("b{i}").into_bytes()))
        .collect();
    for node in &cluster.nodes {
        assert_eq!(
            node.applied, expected,
            "node {} applied exactly the committed entries",
            node.id
        );
    }
    let last = cluster.node(new_leader).raw.store().last_index().unwrap();
    let reference: Vec<(u64, u64)> = {
        let s = cluster.node(new_leader).raw.store();
        (RAFT_INIT_LOG_INDEX + 1..=last)
            .map(|i| (i, s.term(i).unwrap()))
            .collect()
    };
    for node in &cluster.nodes {
        let s = node.raw.store();
        assert_eq!(
            s.last_index().unwrap(),
            last,
            "node {} has the same last index",
            node.id
        );
        let terms: Vec<(u64, u64)> = (RAFT_INIT_LOG_INDEX + 1..=last)
            .map(|i| (i, s.term(i).unwrap()))
            .collect();
        assert_eq!(terms, reference, "node {} has the same log", node.id);
    }

    // Restart every peer from its raft log: state and log come back exactly.
    let hard_states: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| n.raw.raft.hard_state())
        .collect();
    drop(cluster);
    let mut cluster = start(dir.path(), &kvs);
    for (node, hs) in cluster.nodes.iter().zip(&hard_states) {
        let state = node.raw.store().initial_state().unwrap();
        assert_eq!(state.hard_state.term, hs.term);
        assert_eq!(state.hard_state.vote, hs.vote);
        assert_eq!(node.raw.store().last_index().unwrap(), last);
    }
    let leader = cluster.tick_until_leader(&none);
    cluster.propose(leader, b"after-restart");
    cluster.settle();
    for node in &cluster.nodes {
        // Nothing was applied durably in this test, so each peer re-applies the whole log.
        assert_eq!(
            node.applied.last().map(Vec::as_slice),
            Some(&b"after-restart"[..])
        );
        assert_eq!(node.applied.len(), expected.len() + 1, "node {}", node.id);
    }
}
