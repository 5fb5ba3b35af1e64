//! Store-to-store codecs: a batch of 64 append messages (4 entries of 256 B each) encoded,
//! decoded and converted to raft-rs types, beside a plain copy of the same bytes as the
//! baseline.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;
use proto::build::{epoch, peer};
use proto::eraftpb::{Entry, Message, MessageType};
use proto::raft_serverpb::{BatchRaftMessage, RaftMessage};

const MESSAGES: usize = 64;
const ENTRIES: usize = 4;
const ENTRY_SIZE: usize = 256;

fn batch() -> BatchRaftMessage {
    let msgs = (0..MESSAGES as u64)
        .map(|i| RaftMessage {
            region_id: i + 1,
            from_peer: Some(peer(10 * i + 1, 1)),
            to_peer: Some(peer(10 * i + 2, 2)),
            message: Some(Message {
                msg_type: MessageType::MsgAppend as i32,
                to: 10 * i + 2,
                from: 10 * i + 1,
                term: 7,
                log_term: 7,
                index: 100,
                commit: 100,
                entries: (0..ENTRIES as u64)
                    .map(|e| Entry {
                        term: 7,
                        index: 101 + e,
                        data: vec![9u8; ENTRY_SIZE].into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            region_epoch: Some(epoch(1, 1)),
            ..Default::default()
        })
        .collect();
    BatchRaftMessage { msgs }
}

fn bench_codec(c: &mut Criterion) {
    let batch = batch();
    let bytes = batch.encode_to_vec();
    let mut group = c.benchmark_group("raft_batch_64_msgs_x4x256B");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("baseline_copy", |b| {
        b.iter(|| std::hint::black_box(bytes.clone()))
    });
    group.bench_function("encode", |b| b.iter(|| batch.encode_to_vec()));
    group.bench_function("decode_bounded", |b| {
        b.iter(|| proto::decode_bounded::<BatchRaftMessage>(&bytes, 16 << 20).expect("decodes"))
    });
    group.bench_function("decode_and_convert_to_raft_rs", |b| {
        b.iter(|| {
            let decoded =
                proto::decode_bounded::<BatchRaftMessage>(&bytes, 16 << 20).expect("decodes");
            decoded
                .msgs
                .into_iter()
                .map(|m| raft::eraftpb::Message::try_from(m.message.unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
                .expect("converts")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
