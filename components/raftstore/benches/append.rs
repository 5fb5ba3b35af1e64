//! The PeerStorage append path against raw raft-engine writes of the same data, side by side:
//! 1,000 regions, 10 entries of 256 B per region per batch, one fsync per batch.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::MemEngine;
use prost::Message as _;
use proto::build::{peer, region};
use proto::raft_serverpb::{PeerState, RaftLocalState};
use raft::eraftpb::{Entry, HardState};
use raft_engine::LogBatch;
use raft_log::{EntryExt, RaftLogConfig, RaftLogEngine};
use raftstore::storage::{CacheBudget, PeerStorage};

// The allocator the `regionstore` binary ships with: the entry cache keeps entries alive
// across rounds, and glibc's malloc (the default here) spends much of the PeerStorage side in
// consolidating their frees, a cost the store does not pay.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const REGIONS: u64 = 1000;
const ENTRIES_PER_REGION: u64 = 10;
const ENTRY_SIZE: usize = 256;

fn entries(first: u64) -> Vec<Entry> {
    (first..first + ENTRIES_PER_REGION)
        .map(|index| Entry {
            index,
            term: 6,
            data: vec![7u8; ENTRY_SIZE].into(),
            ..Default::default()
        })
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_1000_regions_x10x256B");
    group.throughput(Throughput::Elements(REGIONS * ENTRIES_PER_REGION));
    group.sample_size(20);

    // A healthy region: its entries are applied and replicated right after they are durable,
    // so the store lets the cache drop them (`Peer::release_cached_entries`).
    group.bench_function("peer_storage", |b| bench_peer_storage(b, true));
    // Entries nobody releases (apply behind, or a follower lagging): the cache fills to its
    // budget and every append then evicts old entries.
    group.bench_function("peer_storage_held_to_budget", |b| {
        bench_peer_storage(b, false)
    });

    group.bench_function("raw_raft_engine", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = raft_engine::Config {
            dir: dir
                .path()
                .join("raft-engine")
                .to_string_lossy()
                .into_owned(),
            ..Default::default()
        };
        let engine = raft_engine::Engine::open(cfg).expect("open");
        let mut last = vec![5u64; REGIONS as usize + 1];
        let mut batch = LogBatch::default();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for id in 1..=REGIONS {
                    let first = last[id as usize] + 1;
                    let ents = entries(first);
                    batch.add_entries::<EntryExt>(id, &ents).expect("add");
                    last[id as usize] = first + ENTRIES_PER_REGION - 1;
                    let state = RaftLocalState {
                        hard_state: Some(proto::eraftpb::HardState {
                            term: 6,
                            vote: 1,
                            commit: first,
                        }),
                        last_index: last[id as usize],
                    };
                    batch
                        .put(id, b"raft_state".to_vec(), state.encode_to_vec())
                        .expect("put");
                }
                engine.write(&mut batch, true).expect("write");
            }
            start.elapsed()
        });
    });
    group.finish();
}

/// Appends 10 entries to each of 1,000 regions per batch, one fsync; `release`: the entries
/// are released from the cache once durable, as the store does once they are applied.
fn bench_peer_storage(b: &mut criterion::Bencher, release: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        RaftLogEngine::open(&RaftLogConfig::new(dir.path().join("raft-engine"))).expect("open");
    let kv = MemEngine::new();
    let budget = CacheBudget::new(64 << 20);
    let mut peers: Vec<_> = (1..=REGIONS)
        .map(|id| {
            PeerStorage::open(
                kv.clone(),
                log.clone(),
                region(id).peers([peer(id, 1)]).build(),
                PeerState::Normal,
                budget.clone(),
            )
            .expect("open")
        })
        .collect();
    let mut batch = log.batch();
    b.iter_custom(|iters| {
        let start = Instant::now();
        for _ in 0..iters {
            for ps in &mut peers {
                let first = ps.raft_state().last_index + 1;
                let ents = entries(first);
                ps.append(ents, &mut batch).expect("append");
                ps.set_hard_state(&HardState {
                    term: 6,
                    vote: 1,
                    commit: first,
                    ..Default::default()
                });
                ps.write_raft_state(&mut batch).expect("raft state");
            }
            log.write(&mut batch, true).expect("write");
            for ps in &mut peers {
                let (last, term) = (ps.raft_state().last_index, ps.last_term());
                ps.on_persisted(last, term);
                if release {
                    ps.release_cached_below(last);
                }
            }
        }
        start.elapsed()
    });
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
