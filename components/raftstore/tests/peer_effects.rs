//! `Peer` decides and records; it never answers a caller or asks a worker itself. Every answer
//! and every request for store work waits in its effects until the driver takes them, so a
//! driver (the raft poller, a test, a simulator) chooses when each happens.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::MemEngine;
use proto::build::{peer, region};
use proto::metapb::RegionEpoch;
use proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader};
use proto::raft_serverpb::PeerState;
use raft_log::{RaftLogConfig, RaftLogEngine};
use raftstore::fsm::PeerFsm;
use raftstore::raft::{Effects, Peer, Reply};
use raftstore::router::Callback;
use raftstore::storage::{CacheBudget, PeerStorage};
use raftstore::{Config, Error, Result};

const REGION: u64 = 1;
const PEER: u64 = 11;
const EPOCH: RegionEpoch = RegionEpoch {
    conf_ver: 1,
    version: 1,
};

/// A one-voter region's peer on store 1, elected leader, with its effects so far drained.
fn leader(dir: &std::path::Path, now: Instant) -> Peer<MemEngine> {
    let log = RaftLogEngine::open(&RaftLogConfig::new(dir.join("raft"))).expect("open raft log");
    let region = region(REGION)
        .epoch(EPOCH.conf_ver, EPOCH.version)
        .peers([peer(PEER, 1)])
        .build();
    let storage = PeerStorage::open(
        MemEngine::new(),
        log.clone(),
        region,
        PeerState::Normal,
        CacheBudget::new(1 << 20),
    )
    .expect("open storage");
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut peer = Peer::new(&Config::default(), 1, PEER, storage, now, &logger).expect("peer");
    common::elect_alone(&mut peer, &log, now);
    peer
}

/// The answers a callback received.
type Answers<T> = Arc<Mutex<Vec<Result<T>>>>;

/// A callback that records its answer.
fn recorder<T: Send + 'static>() -> (Callback<T>, Answers<T>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let cb = Callback::new(move |r| sink.lock().expect("lock").push(r));
    (cb, got)
}

/// A request for the region at its epoch.
fn request() -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: REGION,
            region_epoch: Some(EPOCH),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A request from a client with an old view of the region.
fn stale_request() -> RaftCmdRequest {
    let mut req = request();
    if let Some(h) = req.header.as_mut() {
        h.region_epoch = Some(RegionEpoch {
            conf_ver: 1,
            version: 0,
        });
    }
    req
}

fn deliver<S>(effects: Effects<S>) -> usize {
    let n = effects.replies.len();
    for reply in effects.replies {
        reply.deliver();
    }
    n
}

#[test]
fn answers_wait_in_the_effects_until_the_driver_delivers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Instant::now();
    let mut peer = leader(dir.path(), now);
    let became_leader = peer.take_effects();
    assert!(
        became_leader.heartbeat,
        "a new leader asks for a heartbeat at once"
    );

    // A write refused at propose time: decided now, answered only on delivery.
    let (cb, written) = recorder::<()>();
    peer.propose_write(stale_request(), cb, now);
    assert!(
        written.lock().expect("lock").is_empty(),
        "the peer answered by itself"
    );
    let effects = peer.take_effects();
    assert!(matches!(effects.replies[..], [Reply::Write(..)]));
    assert_eq!(deliver(effects), 1);
    let answers = written.lock().expect("lock");
    assert!(
        matches!(
            answers[..],
            [Err(Error::EpochNotMatch {
                region_id: REGION,
                ..
            })]
        ),
        "{answers:?}"
    );
    drop(answers);

    // A read the peer cannot serve yet (nothing of its term is applied) waits for a ReadIndex
    // round; when it times out, its answer too waits in the effects.
    let (cb, read) = recorder();
    peer.read(&request(), cb, now, now);
    assert_eq!(peer.pending_reads(), 1);
    assert!(peer.take_effects().replies.is_empty());
    let timeout = Config::default().read_index_timeout();
    peer.tick(now + timeout + Duration::from_millis(1));
    assert!(
        read.lock().expect("lock").is_empty(),
        "the peer answered by itself"
    );
    let effects = peer.take_effects();
    assert!(matches!(effects.replies[..], [Reply::Read(..)]));
    deliver(effects);
    let answers = read.lock().expect("lock");
    let errors: Vec<_> = answers.iter().map(|r| r.as_ref().err()).collect();
    assert!(
        matches!(
            errors[..],
            [Some(Error::ReadTimeout {
                region_id: REGION,
                ..
            })]
        ),
        "{errors:?}"
    );
}

#[test]
fn a_dropped_peer_fsm_delivers_what_its_peer_decided_and_fails_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Instant::now();
    let mut peer = leader(dir.path(), now);
    let _ = peer.take_effects();

    let (refused, refused_got) = recorder::<()>();
    peer.propose_write(stale_request(), refused, now);
    // A proposal that is in the log but not applied: its outcome is unknown.
    let (pending, pending_got) = recorder::<()>();
    let mut put = request();
    put.requests.push(proto::raft_cmdpb::Request {
        cmd: Some(proto::raft_cmdpb::request::Cmd::Put(
            proto::raft_cmdpb::PutRequest {
                cf: String::new(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        )),
    });
    peer.propose_write(put, pending, now);
    assert_eq!(peer.pending_proposals(), 1);
    assert!(refused_got.lock().expect("lock").is_empty());

    drop(PeerFsm::new(peer));
    let refused = refused_got.lock().expect("lock");
    assert!(
        matches!(refused[..], [Err(Error::EpochNotMatch { .. })]),
        "{refused:?}"
    );
    let pending = pending_got.lock().expect("lock");
    assert!(
        matches!(pending[..], [Err(Error::StoreStopped { .. })]),
        "{pending:?}"
    );
}

#[test]
fn the_periodic_work_a_tick_asks_for_is_an_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut now = Instant::now();
    let mut peer = leader(dir.path(), now);
    let _ = peer.take_effects();
    let cfg = Config::default();
    let heartbeat_ticks = cfg.ticks_of(cfg.region_heartbeat_tick_interval_ms);
    let mut asked = false;
    for _ in 0..heartbeat_ticks {
        now += Duration::from_millis(cfg.raft_base_tick_interval_ms);
        peer.tick(now);
        asked |= peer.take_effects().heartbeat;
    }
    assert!(
        asked,
        "a leader's heartbeat is due every {heartbeat_ticks} ticks"
    );
    assert!(peer.region_heartbeat(now).is_some());
}
