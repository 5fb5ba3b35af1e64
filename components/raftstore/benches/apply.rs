//! The apply path (decode each committed command, check it, write its puts with the region's
//! apply state into one RocksDB write batch) against writing the same puts straight into a
//! write batch, side by side: 1,000 entries of 4 puts of 256 B per batch, written unsynced
//! as the apply pollers do.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::{keys, KvEngine, RocksConfig, RocksEngine, WriteBatch, CF_DEFAULT};
use prost::Message as _;
use proto::build::{self, peer};
use proto::metapb::Region;
use proto::raft_cmdpb::{request::Cmd, PutRequest, RaftCmdRequest, RaftRequestHeader, Request};
use proto::raft_serverpb::RaftApplyState;
use raft::eraftpb::Entry;
use raftstore::operation::apply::apply_entries;

const ENTRIES: u64 = 1000;
const PUTS_PER_ENTRY: u64 = 4;
const VALUE: usize = 256;

fn region() -> Region {
    build::region(2).epoch(1, 1).peers([peer(3, 1)]).build()
}

fn key(entry: u64, put: u64) -> Vec<u8> {
    format!("key-{entry:08}-{put}").into_bytes()
}

fn entries(round: u64) -> Vec<Entry> {
    (0..ENTRIES)
        .map(|i| {
            let cmd = RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id: 2,
                    region_epoch: region().region_epoch,
                    ..Default::default()
                }),
                requests: (0..PUTS_PER_ENTRY)
                    .map(|p| Request {
                        cmd: Some(Cmd::Put(PutRequest {
                            cf: String::new(),
                            key: key(i, p),
                            value: vec![7u8; VALUE],
                        })),
                    })
                    .collect(),
                admin_request: None,
            };
            Entry {
                index: round * ENTRIES + i + 1,
                term: 5,
                data: cmd.encode_to_vec().into(),
                ..Default::default()
            }
        })
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_1000_entries_x4x256B");
    group.throughput(Throughput::Elements(ENTRIES * PUTS_PER_ENTRY));
    group.sample_size(20);
    let dir = tempfile::tempdir().expect("tempdir");

    group.bench_function("baseline_write_batch", |b| {
        let kv =
            RocksEngine::open(&dir.path().join("baseline"), &RocksConfig::default()).expect("open");
        let value = vec![7u8; VALUE];
        b.iter(|| {
            let mut wb = kv.write_batch();
            for i in 0..ENTRIES {
                for p in 0..PUTS_PER_ENTRY {
                    wb.put_cf(CF_DEFAULT, &keys::data_key(&key(i, p)), &value)
                        .expect("put");
                }
            }
            kv.write(&mut wb, false).expect("write");
        });
    });

    group.bench_function("apply_entries", |b| {
        let kv =
            RocksEngine::open(&dir.path().join("apply"), &RocksConfig::default()).expect("open");
        let mut region = region();
        let mut state = RaftApplyState::default();
        let mut round = 0;
        b.iter_batched(
            || {
                round += 1;
                entries(round)
            },
            |entries| {
                let mut wb = kv.write_batch();
                let mut out = Vec::with_capacity(entries.len());
                apply_entries(&kv, &mut region, &mut state, &entries, &mut wb, &mut out)
                    .expect("apply");
                kv.write(&mut wb, false).expect("write");
                assert!(out.iter().all(|a| a.result.is_ok()));
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
