//! Snapshot files over real RocksDB engines: build, verify, apply, corruption, GC.

use std::path::Path;

use engine::{
    keys, KvEngine, Peekable, RocksConfig, RocksEngine, WriteBatch, CF_DEFAULT, CF_LOCK, CF_WRITE,
};
use proto::build;
use proto::metapb::Region;
use proto::raft_serverpb::SnapshotMeta;
use raftstore::snap::{SnapKey, SnapKind, SnapManager};
use raftstore::Error;

fn region() -> Region {
    build::region(7).range(b"b", b"m").build()
}

fn open(dir: &Path) -> RocksEngine {
    RocksEngine::open(dir, &RocksConfig::default()).unwrap()
}

fn put(kv: &RocksEngine, cf: &str, k: &[u8], v: &[u8]) {
    let mut wb = kv.write_batch();
    wb.put_cf(cf, &keys::data_key(k), v).unwrap();
    kv.write(&mut wb, false).unwrap();
}

fn get(kv: &RocksEngine, cf: &str, k: &[u8]) -> Option<Vec<u8>> {
    kv.get_value_cf(cf, &keys::data_key(k)).unwrap()
}

const KEY: SnapKey = SnapKey {
    region_id: 7,
    term: 6,
    index: 42,
};

/// A source engine with the region's data in three CFs and neighbours on both sides.
fn source(dir: &Path) -> RocksEngine {
    let kv = open(dir);
    for i in 0..500u32 {
        put(
            &kv,
            CF_DEFAULT,
            format!("c{i:04}").as_bytes(),
            &[i as u8; 100],
        );
    }
    put(&kv, CF_LOCK, b"d", b"lock");
    put(&kv, CF_WRITE, b"e", b"write");
    put(&kv, CF_DEFAULT, b"a", b"left neighbour");
    put(
        &kv,
        CF_DEFAULT,
        b"m",
        b"right neighbour (the region's end key)",
    );
    kv
}

/// A snapshot of a source engine (with data, or empty) built into a fresh snapshot dir.
fn built(with_data: bool) -> (tempfile::TempDir, SnapManager, SnapshotMeta) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src");
    let src = if with_data {
        source(&path)
    } else {
        open(&path)
    };
    let mgr = SnapManager::new(dir.path().join("snap")).unwrap();
    let meta = mgr.build(&src, &src.snapshot(), &region(), KEY).unwrap();
    (dir, mgr, meta)
}

#[test]
fn a_snapshot_replaces_the_region_and_only_the_region() {
    let (dir, mgr, meta) = built(true);
    let cfs: Vec<&str> = meta.cf_files.iter().map(|f| f.cf.as_str()).collect();
    assert_eq!(cfs, vec![CF_DEFAULT, CF_LOCK, CF_WRITE]);
    assert_eq!(
        mgr.read_meta(SnapKind::Generated, KEY).unwrap(),
        Some(meta.clone())
    );
    mgr.verify(SnapKind::Generated, KEY, &meta).unwrap();

    let dst = open(&dir.path().join("dst"));
    put(&dst, CF_DEFAULT, b"c9999", b"stale, inside the region");
    put(&dst, CF_WRITE, b"f", b"stale, other CF");
    put(&dst, CF_DEFAULT, b"a", b"dst left");
    put(&dst, CF_DEFAULT, b"m", b"dst right");
    mgr.apply(&dst, &region(), SnapKind::Generated, KEY, &meta)
        .unwrap();
    assert_eq!(
        get(&dst, CF_DEFAULT, b"c0499"),
        Some(vec![499u32 as u8; 100])
    );
    assert_eq!(get(&dst, CF_LOCK, b"d"), Some(b"lock".to_vec()));
    assert_eq!(get(&dst, CF_WRITE, b"e"), Some(b"write".to_vec()));
    assert_eq!(
        get(&dst, CF_DEFAULT, b"c9999"),
        None,
        "stale data in the range is gone"
    );
    assert_eq!(get(&dst, CF_WRITE, b"f"), None);
    assert_eq!(get(&dst, CF_DEFAULT, b"a"), Some(b"dst left".to_vec()));
    assert_eq!(
        get(&dst, CF_DEFAULT, b"m"),
        Some(b"dst right".to_vec()),
        "the next region's first key is untouched"
    );
    // The files are still there: an interrupted apply can be redone.
    mgr.apply(&dst, &region(), SnapKind::Generated, KEY, &meta)
        .unwrap();
    assert_eq!(get(&dst, CF_DEFAULT, b"c0000"), Some(vec![0u8; 100]));
}

#[test]
fn corrupt_or_truncated_files_are_rejected_before_anything_is_applied() {
    let (dir, mgr, meta) = built(true);
    let dst = open(&dir.path().join("dst"));
    put(&dst, CF_DEFAULT, b"c0001", b"before");

    let file = mgr.path(SnapKind::Generated, KEY, Some(CF_DEFAULT));
    let original = std::fs::read(&file).unwrap();
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    match mgr.apply(&dst, &region(), SnapKind::Generated, KEY, &meta) {
        Err(Error::SnapshotCorrupt { detail, .. }) => {
            assert!(detail.contains("crc32c"), "{detail}")
        }
        other => panic!("expected SnapshotCorrupt, got {other:?}"),
    }
    assert_eq!(
        get(&dst, CF_DEFAULT, b"c0001"),
        Some(b"before".to_vec()),
        "nothing applied"
    );

    std::fs::write(&file, &original[..original.len() - 10]).unwrap();
    match mgr.verify(SnapKind::Generated, KEY, &meta) {
        Err(Error::SnapshotCorrupt { detail, .. }) => assert!(detail.contains("bytes"), "{detail}"),
        other => panic!("expected SnapshotCorrupt, got {other:?}"),
    }
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(
        mgr.verify(SnapKind::Generated, KEY, &meta),
        Err(Error::SnapshotCorrupt { .. })
    ));
    std::fs::write(mgr.path(SnapKind::Generated, KEY, None), b"\xff\xff\xff").unwrap();
    assert!(matches!(
        mgr.read_meta(SnapKind::Generated, KEY),
        Err(Error::SnapshotCorrupt { .. })
    ));
}

#[test]
fn an_empty_region_clears_the_range_and_stale_snapshots_are_collected() {
    let (dir, mgr, meta) = built(false);
    assert!(meta.cf_files.is_empty());
    let dst = open(&dir.path().join("dst"));
    put(&dst, CF_DEFAULT, b"c", b"old");
    mgr.apply(&dst, &region(), SnapKind::Generated, KEY, &meta)
        .unwrap();
    assert_eq!(get(&dst, CF_DEFAULT, b"c"), None);

    // A leftover of a crash mid-build, and an older snapshot of the same region.
    let older = SnapKey { index: 10, ..KEY };
    std::fs::write(
        mgr.path(SnapKind::Received, older, Some(CF_WRITE))
            .with_extension("sst.tmp"),
        b"partial",
    )
    .unwrap();
    let mut listed = mgr.list();
    listed.sort_by_key(|(_, k)| k.index);
    assert_eq!(
        listed,
        vec![(SnapKind::Received, older), (SnapKind::Generated, KEY)]
    );
    assert_eq!(mgr.gc(|_, key| key.index >= 42), 1);
    assert_eq!(mgr.list(), vec![(SnapKind::Generated, KEY)]);
    mgr.delete(SnapKind::Generated, KEY);
    assert!(mgr.list().is_empty());
}

/// A built snapshot as the chunks a transport sends.
fn built_chunks() -> (tempfile::TempDir, SnapshotMeta, Vec<Vec<u8>>) {
    let (dir, mgr, meta) = built(true);
    let files = raftstore::snap::SnapshotFiles {
        mgr,
        key: KEY,
        meta: meta.clone(),
    };
    let chunks = files.chunks().map(|c| c.unwrap()).collect();
    (dir, meta, chunks)
}

#[test]
fn a_received_snapshot_is_written_chunk_by_chunk_and_a_failed_duplicate_leaves_it_alone() {
    use raftstore::snap::SNAP_CHUNK_SIZE;
    let (dir, meta, chunks) = built_chunks();
    assert!(chunks
        .iter()
        .all(|c| !c.is_empty() && c.len() <= SNAP_CHUNK_SIZE));
    let receiver = SnapManager::new(dir.path().join("rev")).unwrap();

    // A corrupt transfer is rejected and leaves nothing behind.
    let mut bad = chunks.clone();
    bad[0][3] ^= 1;
    assert!(matches!(
        receiver.receive(KEY, &meta, bad.into_iter().map(Ok)),
        Err(Error::SnapshotCorrupt { .. })
    ));
    assert!(receiver.list().is_empty(), "{:?}", receiver.list());
    // A truncated one too.
    let short = chunks[..chunks.len() - 1].to_vec();
    assert!(receiver
        .receive(KEY, &meta, short.into_iter().map(Ok))
        .is_err());
    assert!(receiver.list().is_empty());

    receiver
        .receive(KEY, &meta, chunks.clone().into_iter().map(Ok))
        .unwrap();
    receiver.verify(SnapKind::Received, KEY, &meta).unwrap();
    // A duplicate transfer that goes wrong does not touch the complete copy.
    let mut bad = chunks;
    bad[0][3] ^= 1;
    receiver
        .receive(KEY, &meta, bad.into_iter().map(Ok))
        .unwrap();
    receiver.verify(SnapKind::Received, KEY, &meta).unwrap();
}

#[test]
fn concurrent_transfers_are_bounded_and_refused_clearly() {
    let (dir, meta, chunks) = built_chunks();
    let receiver = SnapManager::with_limits(
        engine::StdFileSystem::shared(),
        dir.path().join("rev"),
        1,
        1,
    )
    .unwrap();

    // Sends: one slot, given back when the transfer ends.
    let slot = receiver.try_start_send(KEY).unwrap();
    let err = receiver.try_start_send(KEY).unwrap_err();
    assert!(
        matches!(&err, Error::ServerIsBusy { reason, .. } if reason.contains("snap-max-concurrent-sends")),
        "{err}"
    );
    drop(slot);
    drop(receiver.try_start_send(KEY).unwrap());

    // Receives: while one transfer is still streaming, another is refused before it writes.
    let (tx, rx) = crossbeam::channel::unbounded();
    let first = {
        let (receiver, meta) = (receiver.clone(), meta.clone());
        std::thread::spawn(move || receiver.receive(KEY, &meta, rx))
    };
    tx.send(Ok(chunks[0].clone())).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while receiver.transfers() != (0, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let other = SnapKey { index: 43, ..KEY };
    let err = receiver
        .receive(other, &meta, chunks.clone().into_iter().map(Ok))
        .unwrap_err();
    assert!(
        matches!(&err, Error::ServerIsBusy { reason, .. } if reason.contains("snap-max-concurrent-recvs")),
        "{err}"
    );
    assert!(receiver
        .read_meta(SnapKind::Received, other)
        .unwrap()
        .is_none());
    for chunk in &chunks[1..] {
        tx.send(Ok(chunk.clone())).unwrap();
    }
    drop(tx);
    first.join().unwrap().unwrap();
    receiver
        .receive(other, &meta, chunks.into_iter().map(Ok))
        .unwrap();
    receiver.verify(SnapKind::Received, other, &meta).unwrap();
}

fn put_mem(kv: &engine::MemEngine, k: &[u8], v: &[u8]) {
    let mut wb = kv.write_batch();
    wb.put_cf(CF_DEFAULT, &keys::data_key(k), v).unwrap();
    kv.write(&mut wb, true).unwrap();
}

/// On a disk that forgets (the simulator's): a snapshot whose meta was written survives a
/// power cut whole, sent or received, and applies; files written but never made durable
/// are gone, never mistaken for a snapshot.
#[test]
fn a_snapshot_survives_a_power_cut_once_its_meta_is_written() {
    use engine::{FileSystem, MemEngine, MemFileSystem};
    use std::io::Write;
    use std::sync::Arc;

    let src_fs = MemFileSystem::new();
    let src = MemEngine::with_file_system(Arc::new(src_fs.clone()));
    for i in 0..50u32 {
        put_mem(&src, format!("c{i:02}").as_bytes(), &[i as u8; 10]);
    }
    let mgr = SnapManager::with_limits(Arc::new(src_fs.clone()), "/s1/snap", 1, 1).unwrap();
    let meta = mgr.build(&src, &src.snapshot(), &region(), KEY).unwrap();
    // A file written after it, synced, but whose name was never made durable.
    let mut stray = src_fs
        .create(Path::new("/s1/snap/gen_7_6_43.meta"))
        .unwrap();
    stray.write_all(b"half").unwrap();
    stray.sync().unwrap();
    src_fs.power_cut(|_| 0);
    assert_eq!(mgr.list(), vec![(SnapKind::Generated, KEY)]);
    assert_eq!(
        mgr.read_meta(SnapKind::Generated, KEY).unwrap().as_ref(),
        Some(&meta)
    );
    mgr.verify(SnapKind::Generated, KEY, &meta).unwrap();

    let dst_fs = MemFileSystem::new();
    let dst = MemEngine::with_file_system(Arc::new(dst_fs.clone()));
    let receiver = SnapManager::with_limits(Arc::new(dst_fs.clone()), "/s2/snap", 1, 1).unwrap();
    let files = raftstore::snap::SnapshotFiles {
        mgr: mgr.clone(),
        key: KEY,
        meta: meta.clone(),
    };
    receiver.receive(KEY, &meta, files.chunks()).unwrap();
    dst_fs.power_cut(|unsynced| unsynced);
    receiver
        .apply(&dst, &region(), SnapKind::Received, KEY, &meta)
        .unwrap();
    assert_eq!(
        dst.get_value_cf(CF_DEFAULT, &keys::data_key(b"c07"))
            .unwrap(),
        Some(vec![7u8; 10])
    );
    // The ingested links are gone; the received files stay until deleted.
    assert_eq!(receiver.list(), vec![(SnapKind::Received, KEY)]);
    receiver.delete(SnapKind::Received, KEY);
    assert!(receiver.list().is_empty());
}
