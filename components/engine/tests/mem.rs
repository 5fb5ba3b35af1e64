//! What only the in-memory engine does: lose unsynced writes in a simulated power cut, and
//! write and ingest its own SST files.

use engine::{
    DiskFault, KvEngine, MemEngine, Peekable, SstExt, SstWriter, WriteBatch, CF_DEFAULT, CF_WRITE,
};

fn put(engine: &MemEngine, key: &[u8], sync: bool) {
    let mut wb = engine.write_batch();
    wb.put_cf(CF_DEFAULT, key, b"v").unwrap();
    engine.write(&mut wb, sync).unwrap();
}

fn has(engine: &MemEngine, key: &[u8]) -> bool {
    engine.get_value_cf(CF_DEFAULT, key).unwrap().is_some()
}

#[test]
fn a_power_cut_loses_exactly_the_writes_after_the_last_sync() {
    let engine = MemEngine::new();
    put(&engine, b"a", false);
    put(&engine, b"b", true); // makes `a` durable too
    put(&engine, b"c", false);
    engine.sync().unwrap();
    put(&engine, b"d", false);
    let mut wb = engine.write_batch();
    wb.delete_cf(CF_DEFAULT, b"a").unwrap();
    engine.write(&mut wb, false).unwrap();
    assert!(
        has(&engine, b"d") && !has(&engine, b"a"),
        "visible before the cut"
    );
    let snapshot = engine.snapshot();
    assert_eq!(engine.unsynced_batches(), 2);
    assert_eq!(engine.power_cut(), 2);
    for (key, kept) in [(b"a", true), (b"b", true), (b"c", true), (b"d", false)] {
        assert_eq!(has(&engine, key), kept, "{:?}", key);
    }
    // A snapshot taken before keeps what it saw.
    assert!(snapshot.get_value_cf(CF_DEFAULT, b"d").unwrap().is_some());
    assert_eq!(engine.power_cut(), 0, "nothing left to lose");
}

#[test]
fn sst_files_round_trip_and_ingest_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = MemEngine::new();
    let path = dir.path().join("write.sst");
    let mut writer = engine.sst_writer(CF_WRITE, &path).unwrap();
    writer.put(b"k1", b"v1").unwrap();
    writer.put(b"k2", b"").unwrap();
    assert!(writer.put(b"k2", b"again").is_err(), "keys must ascend");
    let info = writer.finish().unwrap().expect("two keys");
    assert_eq!(info.keys, 2);
    let empty = engine
        .sst_writer(CF_WRITE, &dir.path().join("empty.sst"))
        .unwrap();
    assert_eq!(empty.finish().unwrap(), None);
    assert!(!dir.path().join("empty.sst").exists());

    engine
        .ingest_sst(CF_WRITE, std::slice::from_ref(&path))
        .unwrap();
    assert!(!path.exists(), "ingest moves the file in");
    engine.power_cut();
    assert_eq!(
        engine.get_value_cf(CF_WRITE, b"k1").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        engine.get_value_cf(CF_WRITE, b"k2").unwrap().as_deref(),
        Some(&b""[..])
    );
}

#[test]
fn a_truncated_sst_is_corruption_and_ingests_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = MemEngine::new();
    let path = dir.path().join("default.sst");
    let mut writer = engine.sst_writer(CF_DEFAULT, &path).unwrap();
    writer.put(b"k", b"value").unwrap();
    writer.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = engine.ingest_sst(CF_DEFAULT, &[path]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(!has(&engine, b"k"));
}

#[test]
fn a_power_cut_may_keep_a_prefix_of_whole_unsynced_batches() {
    let engine = MemEngine::new();
    put(&engine, b"a", false);
    let mut wb = engine.write_batch();
    wb.put_cf(CF_DEFAULT, b"b", b"v").unwrap();
    wb.put_cf(CF_DEFAULT, b"c", b"v").unwrap();
    engine.write(&mut wb, false).unwrap();
    put(&engine, b"d", false);
    // The first two batches reached the disk; the third did not.
    assert_eq!(engine.power_cut_keeping(2), 1);
    for (key, kept) in [(b"a", true), (b"b", true), (b"c", true), (b"d", false)] {
        assert_eq!(has(&engine, key), kept, "{:?}", key);
    }
    assert_eq!(engine.unsynced_batches(), 0, "what survived is durable");
    put(&engine, b"e", false);
    assert_eq!(
        engine.power_cut_keeping(5),
        0,
        "keeping more than there is keeps all"
    );
    assert!(has(&engine, b"e"));
}

#[test]
fn an_injected_disk_fault_refuses_writes_and_changes_nothing() {
    let engine = MemEngine::new();
    put(&engine, b"a", false);
    engine.set_fault(Some(DiskFault::SyncFails));
    put(&engine, b"b", false); // unsynced writes still go through
    let mut wb = engine.write_batch();
    wb.put_cf(CF_DEFAULT, b"c", b"v").unwrap();
    let err = engine.write(&mut wb, true).unwrap_err();
    assert!(
        err.to_string()
            .contains("injected disk fault: fsync failed"),
        "{err}"
    );
    assert!(engine.sync().is_err());
    assert!(!has(&engine, b"c"), "a refused write applies nothing");
    assert_eq!(engine.failed_writes(), 2);

    engine.set_fault(Some(DiskFault::Full));
    assert_eq!(engine.failed_writes(), 0, "counted per fault");
    let mut wb = engine.write_batch();
    wb.put_cf(CF_DEFAULT, b"d", b"v").unwrap();
    assert!(engine.write(&mut wb, false).is_err());
    assert!(!has(&engine, b"d"));

    engine.set_fault(None);
    put(&engine, b"e", true);
    assert!(has(&engine, b"a") && has(&engine, b"b") && has(&engine, b"e"));
    assert_eq!(
        engine.power_cut(),
        0,
        "the good write synced the earlier ones"
    );
}
