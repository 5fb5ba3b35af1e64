//! The prost mirror of eraftpb is wire-compatible with raft-rs's own encoding, conversions round
//! trip, and decoding untrusted bytes never panics.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use proto::raft_serverpb::{BatchRaftMessage, RaftMessage};
use proto::{decode_bounded, eraftpb as wire, ConvertError};
use protobuf::{Message as _, ProtobufEnum, RepeatedField, SingularPtrField};
use raft::eraftpb as rs;

fn entry() -> impl Strategy<Value = rs::Entry> {
    (
        0i32..3,
        any::<u64>(),
        any::<u64>(),
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(ty, term, index, data, context, sync_log)| rs::Entry {
            entry_type: rs::EntryType::from_i32(ty).unwrap_or_default(),
            term,
            index,
            data: Bytes::from(data),
            context: Bytes::from(context),
            sync_log,
            ..Default::default()
        })
}

fn snapshot() -> impl Strategy<Value = Option<rs::Snapshot>> {
    proptest::option::of(
        (
            vec(any::<u8>(), 0..64),
            any::<u64>(),
            any::<u64>(),
            vec(any::<u64>(), 0..5),
            vec(any::<u64>(), 0..3),
            any::<bool>(),
        )
            .prop_map(
                |(data, index, term, voters, learners, auto_leave)| rs::Snapshot {
                    data: Bytes::from(data),
                    metadata: SingularPtrField::some(rs::SnapshotMetadata {
                        conf_state: SingularPtrField::some(rs::ConfState {
                            voters: voters.clone(),
                            learners,
                            voters_outgoing: voters,
                            learners_next: vec![],
                            auto_leave,
                            ..Default::default()
                        }),
                        index,
                        term,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
    )
}

prop_compose! {
    fn message()(
        ty in 0i32..19,
        ids in (any::<u64>(), any::<u64>()),
        pos in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        entries in vec(entry(), 0..4),
        snapshot in snapshot(),
        flags in (any::<u64>(), any::<bool>(), any::<u64>(), vec(any::<u8>(), 0..8), any::<u64>(), any::<i64>()),
    ) -> rs::Message {
        let (term, log_term, index, commit, commit_term) = pos;
        let (request_snapshot, reject, reject_hint, context, deprecated_priority, priority) = flags;
        rs::Message {
            msg_type: rs::MessageType::from_i32(ty).unwrap_or_default(),
            to: ids.0,
            from: ids.1,
            term,
            log_term,
            index,
            entries: RepeatedField::from_vec(entries),
            commit,
            commit_term,
            snapshot: SingularPtrField::from_option(snapshot),
            request_snapshot,
            reject,
            reject_hint,
            context: Bytes::from(context),
            deprecated_priority,
            priority,
            ..Default::default()
        }
    }
}

proptest! {
    /// raft-rs → wire → prost bytes → wire → raft-rs is the identity.
    #[test]
    fn message_round_trips(msg in message()) {
        let bytes = wire::Message::from(msg.clone()).encode_to_vec();
        let decoded: wire::Message = decode_bounded(&bytes, usize::MAX).expect("decode");
        prop_assert_eq!(rs::Message::try_from(decoded).expect("convert"), msg);
    }

    /// The two encoders agree on the bytes' meaning: what rust-protobuf writes, prost reads as
    /// the same message, and the other way round. This is what proves the field numbers match.
    #[test]
    fn prost_and_rust_protobuf_agree(msg in message()) {
        let by_rust_protobuf = msg.write_to_bytes().expect("rust-protobuf encode");
        let read_by_prost: wire::Message = decode_bounded(&by_rust_protobuf, usize::MAX).expect("prost decode");
        prop_assert_eq!(&read_by_prost, &wire::Message::from(msg.clone()));

        let by_prost = read_by_prost.encode_to_vec();
        // Trusted input produced by this test, so rust-protobuf may read it here.
        let read_by_rust_protobuf = rs::Message::parse_from_bytes(&by_prost).expect("rust-protobuf decode");
        prop_assert_eq!(read_by_rust_protobuf, msg);
    }

    /// Garbage never panics: it is either rejected or decodes to something convertible or
    /// rejected by conversion.
    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(batch) = decode_bounded::<BatchRaftMessage>(&bytes, 1024) {
            for msg in batch.msgs {
                if let Some(m) = msg.message {
                    let _ = rs::Message::try_from(m);
                }
            }
        }
    }

    /// Flipping bytes of a valid encoding never panics either.
    #[test]
    fn corrupted_valid_batch_never_panics(msg in message(), flips in vec((any::<usize>(), any::<u8>()), 1..8)) {
        let batch = BatchRaftMessage { msgs: vec![RaftMessage { region_id: 7, message: Some(msg.into()), ..Default::default() }] };
        let mut bytes = batch.encode_to_vec();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] ^= value;
        }
        if let Ok(batch) = decode_bounded::<BatchRaftMessage>(&bytes, 1 << 20) {
            for msg in batch.msgs {
                if let Some(m) = msg.message {
                    let _ = rs::Message::try_from(m);
                }
            }
        }
    }
}

#[test]
fn unknown_enum_values_are_errors() {
    let m = wire::Message {
        msg_type: 99,
        ..Default::default()
    };
    assert_eq!(
        rs::Message::try_from(m).unwrap_err(),
        ConvertError::UnknownEnumValue {
            enum_name: "MessageType",
            field: "Message.msg_type",
            value: 99
        }
    );
    let m = wire::Message {
        entries: vec![wire::Entry {
            entry_type: -1,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(matches!(
        rs::Message::try_from(m),
        Err(ConvertError::UnknownEnumValue {
            field: "Entry.entry_type",
            value: -1,
            ..
        })
    ));
}

#[test]
fn conf_changes_round_trip() {
    let cc = rs::ConfChange {
        id: 3,
        change_type: rs::ConfChangeType::AddLearnerNode,
        node_id: 9,
        context: Bytes::from_static(b"ctx"),
        ..Default::default()
    };
    let back = rs::ConfChange::try_from(wire::ConfChange::from(cc.clone())).expect("convert");
    assert_eq!(back, cc);

    let cc2 = rs::ConfChangeV2 {
        transition: rs::ConfChangeTransition::Explicit,
        changes: RepeatedField::from_vec(vec![rs::ConfChangeSingle {
            change_type: rs::ConfChangeType::RemoveNode,
            node_id: 4,
            ..Default::default()
        }]),
        context: Bytes::from_static(b"v2"),
        ..Default::default()
    };
    let bytes = cc2.write_to_bytes().expect("encode");
    let decoded: wire::ConfChangeV2 = decode_bounded(&bytes, 1024).expect("decode");
    assert_eq!(rs::ConfChangeV2::try_from(decoded).expect("convert"), cc2);

    let hs = rs::HardState {
        term: 5,
        vote: 2,
        commit: 40,
        ..Default::default()
    };
    assert_eq!(rs::HardState::from(wire::HardState::from(hs.clone())), hs);
}

/// BatchCommands carries TiKV's field numbers (kvproto's tikvpb.proto), so a TiKV client's
/// batch decodes here command by command. The bytes are built field by field from those
/// numbers, not with our own types.
#[test]
fn batch_commands_use_tikv_field_numbers() {
    use prost::encoding::{encode_key, encode_varint, WireType};
    use proto::kvrpcpb;
    use proto::tikvpb::batch_commands_request::request::Cmd;
    use proto::tikvpb::batch_commands_response::response::Cmd as Answer;
    use proto::tikvpb::{batch_commands_response, BatchCommandsRequest, BatchCommandsResponse};

    fn field(tag: u32, body: &[u8], out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let put = kvrpcpb::RawPutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let get = kvrpcpb::GetRequest {
        key: b"g".to_vec(),
        version: 7,
        ..Default::default()
    };
    // kvproto: RawPut = 15, Get = 1, CheckSecondaryLocks = 33, Empty = 255, and a
    // coprocessor request (22), which regionstore does not serve.
    let mut wire = Vec::new();
    for (tag, body) in [
        (15, put.encode_to_vec()),
        (1, get.encode_to_vec()),
        (33, Vec::new()),
        (255, {
            let mut empty = Vec::new();
            encode_key(1, WireType::Varint, &mut empty);
            encode_varint(42, &mut empty);
            empty
        }),
        (22, Vec::new()),
    ] {
        let mut request = Vec::new();
        field(tag, &body, &mut request);
        field(1, &request, &mut wire);
    }
    // request_ids = 2, packed.
    let mut ids = Vec::new();
    for id in [10u64, 11, 12, 13, 14] {
        encode_varint(id, &mut ids);
    }
    field(2, &ids, &mut wire);
    let decoded = BatchCommandsRequest::decode(wire.as_slice()).expect("a TiKV batch decodes");
    assert_eq!(decoded.request_ids, [10, 11, 12, 13, 14]);
    let cmds: Vec<_> = decoded.requests.into_iter().map(|r| r.cmd).collect();
    assert_eq!(cmds[0], Some(Cmd::RawPut(put)));
    assert_eq!(cmds[1], Some(Cmd::Get(get)));
    assert!(matches!(cmds[2], Some(Cmd::CheckSecondaryLocks(_))));
    assert!(matches!(&cmds[3], Some(Cmd::Empty(e)) if e.test_id == 42));
    assert_eq!(cmds[4], None, "a command not served decodes as none");

    // And back: RawPut's answer is field 15 of a response, field 1 of the message.
    let answer = BatchCommandsResponse {
        responses: vec![batch_commands_response::Response {
            cmd: Some(Answer::RawPut(kvrpcpb::RawPutResponse {
                error: "e".into(),
                ..Default::default()
            })),
        }],
        request_ids: vec![10],
        ..Default::default()
    };
    let mut expected_body = Vec::new();
    field(
        15,
        &kvrpcpb::RawPutResponse {
            error: "e".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        &mut expected_body,
    );
    let mut expected = Vec::new();
    field(1, &expected_body, &mut expected);
    field(2, &[10], &mut expected);
    assert_eq!(answer.encode_to_vec(), expected);
}
